//! # chainrule-web
//!
//! chainrule compiled to WebAssembly for the backpropagation playground (`web/`):
//! build a network from model JSON, generate a built-in data set, train it step by
//! step, predict a grid for the decision boundary, and explain any weight with the
//! same chain-rule derivation `chainrule explain` prints. No server does the math.
//!
//! The state and its operations are [`session::Session`], plain Rust that the native
//! tests call; [`Playground`] is its JavaScript face, where every error becomes a
//! thrown `Error` whose message is the library's (never a panic).
#![warn(missing_docs)]

pub mod session;

use session::Session;
use wasm_bindgen::prelude::*;

/// A library error as a JavaScript exception (an `Error` with the message).
fn js(e: impl std::fmt::Display) -> JsValue {
    js_sys_error(&e.to_string())
}

#[wasm_bindgen]
extern "C" {
    /// JavaScript's `Error` constructor, so that exceptions carry a stack.
    #[wasm_bindgen(js_name = Error)]
    fn js_sys_error(message: &str) -> JsValue;
}

/// The derivation of ∂L/∂`param` in a formula file (`chainrule explain`'s
/// `.formula` networks, as notebook 003's), with the update at `lr`: `format` is
/// `markdown`, `text` or `json`.
///
/// # Errors
/// Throws for a formula that does not parse, an unknown parameter or format.
#[wasm_bindgen]
pub fn explain_formula(
    formula: &str,
    param: &str,
    lr: f64,
    format: &str,
) -> Result<String, JsValue> {
    session::explain_formula(formula, param, lr, format).map_err(js)
}

/// The parameters of a formula file, as JSON `[["w0", 0.1], …]`.
///
/// # Errors
/// Throws for a formula that does not parse.
#[wasm_bindgen]
pub fn formula_params(formula: &str) -> Result<String, JsValue> {
    let parsed = chainrule_explain::formula::Formula::parse(formula).map_err(js)?;
    serde_json::to_string(&parsed.params()).map_err(js)
}

/// One page's network, optimizer and data ([`Session`] for JavaScript).
#[wasm_bindgen]
pub struct Playground(Session);

#[wasm_bindgen]
impl Playground {
    /// Builds a playground from the settings JSON described at [`Session::new`].
    ///
    /// # Errors
    /// Throws when a setting is invalid (the message names the field).
    #[wasm_bindgen(constructor)]
    pub fn new(settings: &str) -> Result<Playground, JsValue> {
        Session::new(settings).map(Playground).map_err(js)
    }

    /// As the constructor, with the data from `.npy` files' bytes (`x` `[N, D]`,
    /// `y` as `chainrule train --y` reads it) instead of a built-in data set.
    ///
    /// # Errors
    /// Throws for invalid settings or a malformed `.npy`.
    pub fn with_data(settings: &str, x: &[u8], y: &[u8]) -> Result<Playground, JsValue> {
        Session::with_data(settings, x, y)
            .map(Playground)
            .map_err(js)
    }

    /// Replaces the parameters with a safetensors file's (its bytes).
    ///
    /// # Errors
    /// Throws for a malformed file, a missing tensor or a wrong shape.
    pub fn load_parameters(&mut self, bytes: &[u8]) -> Result<(), JsValue> {
        self.0.load_parameters(bytes).map_err(js)
    }

    /// The parameters as a safetensors file in f64 (a `Uint8Array`).
    ///
    /// # Errors
    /// Throws if the writer fails.
    pub fn parameters_safetensors(&self) -> Result<Vec<u8>, JsValue> {
        self.0.parameters_safetensors().map_err(js)
    }

    /// The validation loss (`undefined` without validation points).
    ///
    /// # Errors
    /// Throws on a failed forward pass.
    pub fn validation_loss(&self) -> Result<Option<f64>, JsValue> {
        self.0.validation_loss().map_err(js)
    }

    /// The validation accuracy (`undefined` without validation points).
    ///
    /// # Errors
    /// Throws on a failed forward pass.
    pub fn validation_accuracy(&mut self) -> Result<Option<f64>, JsValue> {
        self.0.validation_accuracy().map_err(js)
    }

    /// The validation points, `[x₀, y₀, …]`.
    pub fn validation_points(&self) -> Vec<f64> {
        self.0.validation_points()
    }

    /// Each validation point's class.
    pub fn validation_labels(&self) -> Vec<u32> {
        self.0.validation_labels()
    }

    /// Layer `layer`'s outputs on the grid of `predict_grid`, a cell's units
    /// together (for each hidden unit's heat map).
    ///
    /// # Errors
    /// Throws for a bad grid or layer.
    #[allow(clippy::too_many_arguments)]
    pub fn layer_grid(
        &mut self,
        layer: usize,
        x_min: f64,
        x_max: f64,
        y_min: f64,
        y_max: f64,
        nx: usize,
        ny: usize,
    ) -> Result<Vec<f64>, JsValue> {
        self.0
            .layer_grid(layer, (x_min, x_max), (y_min, y_max), nx, ny)
            .map_err(js)
    }

    /// One sample's forward and backward pass as JSON (see `Session::trace`).
    ///
    /// # Errors
    /// Throws for a sample past the data.
    pub fn trace(&self, sample: usize) -> Result<String, JsValue> {
        self.0.trace(sample).map(|v| v.to_string()).map_err(js)
    }

    /// The number of training points.
    pub fn samples(&self) -> usize {
        self.0.data().len()
    }

    /// The points, `[x₀, y₀, x₁, y₁, …]` (a `Float64Array`).
    pub fn points(&self) -> Vec<f64> {
        self.0.points()
    }

    /// Each point's class (a `Uint32Array`).
    pub fn labels(&self) -> Vec<u32> {
        self.0.labels()
    }

    /// Outputs per sample (the classes, for cross-entropy).
    pub fn outputs(&self) -> usize {
        self.0.outputs()
    }

    /// Optimizer steps taken so far.
    pub fn steps(&self) -> usize {
        self.0.steps()
    }

    /// Takes `steps` steps on successive mini-batches; returns each step's loss.
    ///
    /// # Errors
    /// Throws when the loss or a gradient stops being finite.
    pub fn train(&mut self, steps: usize) -> Result<Vec<f64>, JsValue> {
        self.0.train(steps).map_err(js)
    }

    /// The loss over the whole data set.
    ///
    /// # Errors
    /// Throws on a failed forward pass.
    pub fn loss(&self) -> Result<f64, JsValue> {
        self.0.loss().map_err(js)
    }

    /// The share of points classified right.
    ///
    /// # Errors
    /// Throws on a failed forward pass.
    pub fn accuracy(&mut self) -> Result<f64, JsValue> {
        self.0.accuracy().map_err(js)
    }

    /// The outputs on an `nx × ny` grid of cell centres over the rectangle, row by
    /// row from `y_min`: `nx · ny · outputs()` values.
    ///
    /// # Errors
    /// Throws for an empty or too large grid or non-finite bounds.
    pub fn predict_grid(
        &mut self,
        x_min: f64,
        x_max: f64,
        y_min: f64,
        y_max: f64,
        nx: usize,
        ny: usize,
    ) -> Result<Vec<f64>, JsValue> {
        self.0
            .predict_grid((x_min, x_max), (y_min, y_max), nx, ny)
            .map_err(js)
    }

    /// Every explainable element (`"0.weight[1,0]"`, …), as a JSON array.
    pub fn elements(&self) -> String {
        serde_json::to_string(&self.0.elements()).unwrap_or_else(|_| "[]".into())
    }

    /// The parameters as JSON: `{"0.weight": {"shape": [...], "values": [...]}, …}`.
    pub fn parameters(&self) -> String {
        self.0.parameters().to_string()
    }

    /// The model JSON (the contract's, as `chainrule` and PyTorch read it).
    pub fn model_json(&self) -> String {
        self.0.model().to_json()
    }

    /// The derivation of ∂C/∂`param` on point `sample`: `format` is `markdown`,
    /// `text` or `json`.
    ///
    /// # Errors
    /// Throws for an unknown element, sample or format.
    pub fn explain(&self, param: &str, sample: usize, format: &str) -> Result<String, JsValue> {
        self.0.explain(param, sample, format).map_err(js)
    }

    /// The computation graph of the loss on point `sample`, as SVG.
    ///
    /// # Errors
    /// Throws for a sample past the data.
    pub fn graph(&self, sample: usize) -> Result<String, JsValue> {
        self.0.graph(sample).map_err(js)
    }

    /// The gradient check's table on the first `rows` points, with a last line
    /// saying whether every tensor passed.
    ///
    /// # Errors
    /// Throws for 0 rows or too many.
    pub fn gradcheck(&self, rows: usize) -> Result<String, JsValue> {
        let (table, passed) = self.0.gradcheck(rows).map_err(js)?;
        let verdict = if passed {
            "every tensor within 1e-6 ✓"
        } else {
            "some tensor exceeds 1e-6 ✗"
        };
        Ok(format!("{table}{verdict}\n"))
    }
}
