//! Gradient checks of whole models: finite differences against backprop for every
//! parameter tensor, and, when they disagree, the operation whose local derivative
//! is wrong.

use crate::formula::Formula;
use chainrule::loss::{Loss, Target};
use chainrule::nn::Module;
use chainrule::train::loss_and_grads;
use chainrule::{Result, Tape, Tensor};

/// The worst disagreement within one parameter tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorCheck {
    /// The parameter's name.
    pub name: String,
    /// Elements checked.
    pub elements: usize,
    /// |backprop − numeric| / max(1, |backprop|, |numeric|), worst over the elements.
    pub worst_error: f64,
    /// Where the worst error is (row-major index).
    pub worst_element: usize,
    /// Backprop's value there.
    pub backprop: f64,
    /// The central difference there.
    pub numeric: f64,
}

/// One recorded operation whose local derivative was checked.
#[derive(Debug, Clone, PartialEq)]
pub struct OpCheck {
    /// The node on the tape.
    pub node: usize,
    /// The operation's label (`relu`, `matmul`, ...).
    pub label: String,
    /// The worst error of its local derivative.
    pub error: f64,
}

/// The result of [`check_model`].
#[derive(Debug, Clone, PartialEq)]
pub struct ModelCheck {
    /// One entry per parameter tensor.
    pub tensors: Vec<TensorCheck>,
    /// Operations whose local derivative disagrees with finite differences (only
    /// looked for when a tensor fails).
    pub culprits: Vec<OpCheck>,
    /// The tolerance the check used.
    pub tolerance: f64,
}

impl ModelCheck {
    /// Whether every tensor is within the tolerance.
    pub fn passed(&self) -> bool {
        self.tensors.iter().all(|t| t.worst_error <= self.tolerance)
    }

    /// A table for a terminal.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:<16} {:>9} {:>12} {:>9} {:>14} {:>14}\n",
            "tensor", "elements", "worst error", "element", "backprop", "numeric"
        );
        for t in &self.tensors {
            let mark = if t.worst_error <= self.tolerance {
                "✓"
            } else {
                "✗"
            };
            out += &format!(
                "{:<16} {:>9} {:>12.3e} {:>9} {:>14.6e} {:>14.6e} {mark}\n",
                t.name, t.elements, t.worst_error, t.worst_element, t.backprop, t.numeric
            );
        }
        out
    }
}

/// Elements checked per tensor at most: beyond it, an even sample of them.
pub const MAX_ELEMENTS_PER_TENSOR: usize = 2000;

/// Compares backprop's gradient of `loss` with central differences (step `step`) for
/// every parameter element of `model` (an even sample of at most
/// [`MAX_ELEMENTS_PER_TENSOR`] per tensor), in f64. When a tensor exceeds
/// `tolerance`, checks each recorded operation's local derivative and lists those
/// that disagree.
///
/// # Errors
/// Shape errors when the data does not fit the model and loss.
///
/// ```
/// use chainrule::{loss::{Loss, Target}, nn::Sequential, Tensor};
/// let m = Sequential::<f64>::from_json(r#"{"layers": [{"type": "linear", "in": 3, "out": 4}, {"type": "tanh"}, {"type": "linear", "in": 4, "out": 2}]}"#, 1)?;
/// let x = Tensor::rand_uniform(&[5, 3], -1.0, 1.0, 2)?;
/// let report = chainrule_explain::check::check_model(&m, &x, &Target::Classes(vec![0, 1, 1, 0, 1]), Loss::CrossEntropy, 1e-6, 1e-6)?;
/// assert!(report.passed());
/// # Ok::<(), chainrule::Error>(())
/// ```
pub fn check_model<M: Module<f64> + Clone>(
    model: &M,
    x: &Tensor<f64>,
    target: &Target<f64>,
    loss: Loss,
    tolerance: f64,
    step: f64,
) -> Result<ModelCheck> {
    let (_, grads) = loss_and_grads(model, x, target, loss)?;
    let value_at = |m: &M| -> Result<f64> {
        let tape = Tape::new();
        let params = m.bind(&tape);
        let c = tape.no_grad(|| -> Result<_> {
            loss.compute(m.forward(&params, tape.constant(x.clone()))?, target)
        })?;
        c.item()
    };
    let mut tensors = Vec::new();
    let mut probe = model.clone();
    for (index, param) in model.params().iter().enumerate() {
        let values = param.value.to_vec();
        let backprop = grads[index]
            .as_ref()
            .map_or_else(|| vec![0.0; values.len()], Tensor::to_vec);
        let stride = values.len().div_ceil(MAX_ELEMENTS_PER_TENSOR).max(1);
        let mut check = TensorCheck {
            name: param.name.clone(),
            elements: 0,
            worst_error: 0.0,
            worst_element: 0,
            backprop: 0.0,
            numeric: 0.0,
        };
        for e in (0..values.len()).step_by(stride) {
            let mut at = |delta: f64| -> Result<f64> {
                let mut nudged = values.clone();
                nudged[e] += delta;
                probe.params_mut()[index].value = Tensor::from_vec(nudged, param.value.shape())?;
                value_at(&probe)
            };
            let numeric = (at(step)? - at(-step)?) / (2.0 * step);
            let error = chainrule::gradcheck::relative_error(backprop[e], numeric);
            check.elements += 1;
            if error > check.worst_error || error.is_nan() {
                check = TensorCheck {
                    worst_error: error,
                    worst_element: e,
                    backprop: backprop[e],
                    numeric,
                    ..check
                };
            }
        }
        probe.params_mut()[index].value = param.value.clone();
        tensors.push(check);
    }
    let mut report = ModelCheck {
        tensors,
        culprits: Vec::new(),
        tolerance,
    };
    if !report.passed() {
        let tape = Tape::new();
        let params = model.bind(&tape);
        let c = loss.compute(model.forward(&params, tape.constant(x.clone()))?, target)?;
        report.culprits = culprits(&tape, c.id(), tolerance, step)?;
    }
    Ok(report)
}

/// The recorded operations up to `root` whose local derivative disagrees with finite
/// differences by more than `tolerance`.
fn culprits(tape: &Tape<f64>, root: usize, tolerance: f64, step: f64) -> Result<Vec<OpCheck>> {
    let mut found = Vec::new();
    for node in 0..=root {
        if let (Some(label), Some(error)) = (
            tape.label(node),
            chainrule::gradcheck::check_local_derivative(tape, node, step)?,
        ) && error > tolerance
        {
            found.push(OpCheck { node, label, error });
        }
    }
    Ok(found)
}

/// [`check_model`] for a network written as formulas: each parameter (a scalar) is one
/// row of the report.
///
/// # Errors
/// Only if the tape fails to read a scalar back.
///
/// ```
/// use chainrule_explain::{check::check_formula, formula::Formula};
/// let f = Formula::parse("input x = 0.5\nparam w = 2\nL = log(1 + exp(w*x))")?;
/// assert!(check_formula(&f, 1e-6, 1e-6)?.passed());
/// # Ok::<(), chainrule::Error>(())
/// ```
pub fn check_formula(formula: &Formula, tolerance: f64, step: f64) -> Result<ModelCheck> {
    let loss_at = |f: &Formula| -> Result<f64> {
        let tape = Tape::new();
        let vars = f.record(&tape);
        vars[f.loss_name()].item()
    };
    let tape = Tape::new();
    let vars = formula.record(&tape);
    let root = vars[formula.loss_name()];
    let grads = root.backward()?;
    let mut tensors = Vec::new();
    let mut probe = formula.clone();
    for (name, value) in formula.params() {
        let backprop = grads.wrt(vars[&name]).map_or(Ok(0.0), |g| g.item())?;
        let mut at = |delta: f64| -> Result<f64> {
            probe.set_param(&name, value + delta)?;
            loss_at(&probe)
        };
        let numeric = (at(step)? - at(-step)?) / (2.0 * step);
        probe.set_param(&name, value)?;
        tensors.push(TensorCheck {
            worst_error: chainrule::gradcheck::relative_error(backprop, numeric),
            name,
            elements: 1,
            worst_element: 0,
            backprop,
            numeric,
        });
    }
    let mut report = ModelCheck {
        tensors,
        culprits: Vec::new(),
        tolerance,
    };
    if !report.passed() {
        report.culprits = culprits(&tape, root.id(), tolerance, step)?;
    }
    Ok(report)
}
