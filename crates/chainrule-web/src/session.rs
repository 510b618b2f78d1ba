//! The playground's state and operations in plain Rust (errors as
//! [`chainrule::Error`]), so that native tests call exactly what the page calls;
//! `lib.rs` only turns its errors into JavaScript exceptions.

use chainrule::data::{Batches, Dataset, Target, synthetic};
use chainrule::io::{read_npy_bytes, safetensors_bytes, safetensors_from_bytes};
use chainrule::loss::Loss;
use chainrule::nn::{Mode, Module, Sequential};
use chainrule::optim::{Optimizer, OptimizerConfig};
use chainrule::{Error, Result, Tensor, train};
use chainrule_explain::derive::{ParamElement, all_elements, explain};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// At most this many grid cells per prediction (a 512 × 512 picture).
pub const MAX_GRID_CELLS: usize = 512 * 512;
/// At most this many rows in a gradient check (each element costs two forward
/// passes over them).
pub const MAX_CHECK_ROWS: usize = 64;
/// At most this many samples in a generated data set.
pub const MAX_SAMPLES: usize = 100_000;

fn invalid(field: &str, message: impl Into<String>) -> Error {
    Error::InvalidValue {
        field: field.into(),
        message: message.into(),
    }
}

/// A network, its optimizer and its data: what one page holds. Everything is in
/// f64, the precision explanations need, so the numbers trained and the numbers
/// explained are the same ones.
#[derive(Debug, Clone)]
pub struct Session {
    model: Sequential<f64>,
    optimizer: Optimizer<f64>,
    loss: Loss,
    data: Dataset<f64>,
    /// The held-out points (none unless `data.validation` > 0).
    validation: Dataset<f64>,
    batches: Batches,
    /// Steps taken so far (batches seen).
    steps: usize,
}

impl Session {
    /// Builds a session from the settings JSON:
    ///
    /// ```json
    /// {"model": {"layers": [...]}, "data": {"name": "spiral", "samples": 300,
    ///  "noise": 0.2}, "loss": "cross_entropy", "optimizer": {"type": "adam",
    ///  "lr": 0.01}, "batch_size": 32, "seed": 0}
    /// ```
    ///
    /// `model` is the contract's model JSON (as `chainrule train` reads it), `data`
    /// a built-in data set of `chainrule::data::synthetic` (noise defaults to the
    /// data set's own), `optimizer` the config's optimizer table. Defaults: loss
    /// `cross_entropy`, optimizer SGD with lr 0.1, batch size 32, seed 0, 300 samples.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] naming the field at fault (bad JSON, unknown data set,
    /// loss or optimizer, a model whose input is not 2 features); shape errors when
    /// the model's outputs do not fit the data's classes.
    pub fn new(settings: &str) -> Result<Session> {
        Session::build(settings, None)
    }

    /// As [`Session::new`], with the data read from `.npy` files (their bytes)
    /// instead of a built-in data set: `x` `[N, D]` floats, `y` as `chainrule train
    /// --x --y` reads it for the loss (class indices or values). `data.validation`
    /// still applies; `data.name`, `samples` and `noise` are ignored.
    ///
    /// # Errors
    /// As [`Session::new`], and [`Error::Format`] for a malformed `.npy`.
    pub fn with_data(settings: &str, x: &[u8], y: &[u8]) -> Result<Session> {
        Session::build(settings, Some((x, y)))
    }

    fn build(settings: &str, files: Option<(&[u8], &[u8])>) -> Result<Session> {
        let settings: Value = serde_json::from_str(settings)
            .map_err(|e| invalid("settings", format!("invalid JSON: {e}")))?;
        let seed = match &settings["seed"] {
            Value::Null => 0,
            v => v
                .as_u64()
                .ok_or_else(|| invalid("seed", "must be a whole number ≥ 0"))?,
        };
        let model_json = match &settings["model"] {
            Value::Object(_) => settings["model"].to_string(),
            Value::String(text) => text.clone(),
            _ => return Err(invalid("model", "needed: the model JSON")),
        };
        let model = Sequential::<f64>::from_json(&model_json, seed)?;
        let loss = Loss::from_name(settings["loss"].as_str().unwrap_or("cross_entropy"))?;
        let data_settings = &settings["data"];
        let data = match files {
            Some((x, y)) => {
                let x: Tensor<f64> = read_npy_bytes(x, "x.npy")?.to_tensor()?;
                let rows = x.shape().first().copied().unwrap_or(0);
                let outputs = model.output_features().unwrap_or(1);
                let y = Target::from_npy(&read_npy_bytes(y, "y.npy")?, loss, rows, outputs)?;
                Dataset::new(x, y)?
            }
            None => generated(data_settings, seed)?,
        };
        let fraction = match &data_settings["validation"] {
            Value::Null => 0.0,
            v => v
                .as_f64()
                .filter(|f| (0.0..0.9).contains(f))
                .ok_or_else(|| invalid("data.validation", "must be a fraction in [0, 0.9)"))?,
        };
        // Without a validation share the points keep their order (split shuffles).
        let (data, validation) = if fraction > 0.0 {
            data.split(fraction, seed)?
        } else {
            let none = data.rows(&[])?;
            (data, none)
        };
        let optimizer = match &settings["optimizer"] {
            Value::Null => OptimizerConfig::from_json(&json!({"type": "sgd", "lr": 0.1}))?,
            v => OptimizerConfig::from_json(v)?,
        };
        let batch_size = match &settings["batch_size"] {
            Value::Null => 32,
            v => v
                .as_u64()
                .filter(|&b| b >= 1)
                .ok_or_else(|| invalid("batch_size", "must be a whole number ≥ 1"))?
                as usize,
        };
        model.check_input(&data.x)?;
        let session = Session {
            model,
            optimizer: Optimizer::new(optimizer),
            loss,
            batches: Batches {
                rows: data.len(),
                batch_size,
                shuffle: true,
                seed,
                drop_last: false,
            },
            data,
            validation,
            steps: 0,
        };
        // Fail now, not at the first step, when the outputs do not fit the targets
        // (a class past the last output, say).
        session.loss()?;
        Ok(session)
    }

    /// Replaces the parameters with those of a safetensors file (its bytes), as
    /// `chainrule train --params` reads it: every tensor of the model by name, f32 or
    /// f64. The optimizer's state starts afresh.
    ///
    /// # Errors
    /// [`Error::Format`] for a malformed file; a missing tensor or a shape that does
    /// not fit the model.
    pub fn load_parameters(&mut self, bytes: &[u8]) -> Result<()> {
        let named = safetensors_from_bytes::<f64>(bytes, "params.safetensors")?;
        let mut model = self.model.clone();
        model.load(named)?;
        self.model = model;
        self.optimizer = Optimizer::new(self.optimizer.config().clone());
        Ok(())
    }

    /// The parameters (and buffers) as a safetensors file in f64, the names
    /// `state_dict` gives (`0.weight`, …): what `chainrule` and PyTorch load.
    ///
    /// # Errors
    /// Errors of the writer (none for a well-formed model).
    pub fn parameters_safetensors(&self) -> Result<Vec<u8>> {
        safetensors_bytes(&self.model.state_dict())
    }

    /// The model.
    pub fn model(&self) -> &Sequential<f64> {
        &self.model
    }

    /// The data set.
    pub fn data(&self) -> &Dataset<f64> {
        &self.data
    }

    /// Steps taken so far.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// The points, `[x₀, y₀, x₁, y₁, …]`.
    pub fn points(&self) -> Vec<f64> {
        self.data.x.to_vec()
    }

    /// Each point's class (empty for regression targets).
    pub fn labels(&self) -> Vec<u32> {
        match &self.data.target {
            Target::Classes(c) => c.iter().map(|&k| k as u32).collect(),
            Target::Values(_) => Vec::new(),
        }
    }

    fn rows(&self, rows: &[usize]) -> Result<(Tensor<f64>, Target<f64>)> {
        let part = self.data.rows(rows)?;
        Ok((part.x, part.target))
    }

    fn loss_on(&self, rows: &[usize]) -> Result<f64> {
        let (x, y) = self.rows(rows)?;
        Ok(train::loss_and_grads(&self.model, &x, &y, self.loss)?.0)
    }

    /// Takes `steps` optimizer steps, each on the next mini-batch (reshuffled every
    /// epoch, as `chainrule train` does), and returns each step's batch loss
    /// (before its update).
    ///
    /// # Errors
    /// [`Error::InvalidValue`] when a loss or gradient is not finite (the step is not
    /// applied); errors of the forward pass.
    pub fn train(&mut self, steps: usize) -> Result<Vec<f64>> {
        // `predict` leaves the model in evaluation mode (dropout off, running
        // statistics); training steps run in training mode, as `chainrule train`'s.
        self.model.set_mode(Mode::Train);
        let per_epoch = self.batches.count().max(1);
        let mut losses = Vec::with_capacity(steps);
        let mut order = self.batches.epoch(self.steps / per_epoch);
        for _ in 0..steps {
            let (epoch, index) = (self.steps / per_epoch, self.steps % per_epoch);
            if index == 0 && self.steps > 0 {
                order = self.batches.epoch(epoch);
            }
            let (x, y) = self.rows(&order[index])?;
            let (loss, grads) = train::loss_and_grads(&self.model, &x, &y, self.loss)?;
            if !loss.is_finite() || grads.iter().flatten().any(|g| !g.all_finite()) {
                return Err(invalid(
                    "training",
                    format!(
                        "step {}: the loss or a gradient is not finite (lower the learning rate)",
                        self.steps
                    ),
                ));
            }
            self.optimizer.step(self.model.params_mut(), &grads)?;
            self.steps += 1;
            losses.push(loss);
        }
        Ok(losses)
    }

    /// The loss over the whole data set.
    ///
    /// # Errors
    /// Errors of the forward pass.
    pub fn loss(&self) -> Result<f64> {
        let rows: Vec<usize> = (0..self.data.len()).collect();
        self.loss_on(&rows)
    }

    /// The share of points whose largest output is their class (0 for regression).
    ///
    /// # Errors
    /// Errors of the forward pass.
    pub fn accuracy(&mut self) -> Result<f64> {
        let data = self.data.clone();
        self.accuracy_on(&data)
    }

    /// The loss over the validation points (`None` when there are none).
    ///
    /// # Errors
    /// Errors of the forward pass.
    pub fn validation_loss(&self) -> Result<Option<f64>> {
        if self.validation.is_empty() {
            return Ok(None);
        }
        let (x, y) = (&self.validation.x, &self.validation.target);
        Ok(Some(train::loss_and_grads(&self.model, x, y, self.loss)?.0))
    }

    /// The share of validation points classified right (`None` when there are none).
    ///
    /// # Errors
    /// Errors of the forward pass.
    pub fn validation_accuracy(&mut self) -> Result<Option<f64>> {
        if self.validation.is_empty() {
            return Ok(None);
        }
        let data = self.validation.clone();
        self.accuracy_on(&data).map(Some)
    }

    /// The validation points, `[x₀, y₀, x₁, y₁, …]`.
    pub fn validation_points(&self) -> Vec<f64> {
        self.validation.x.to_vec()
    }

    /// Each validation point's class.
    pub fn validation_labels(&self) -> Vec<u32> {
        match &self.validation.target {
            Target::Classes(c) => c.iter().map(|&k| k as u32).collect(),
            Target::Values(_) => Vec::new(),
        }
    }

    fn accuracy_on(&mut self, data: &Dataset<f64>) -> Result<f64> {
        let Target::Classes(classes) = &data.target else {
            return Ok(0.0);
        };
        let out = train::predict(&mut self.model, &data.x)?;
        let width = out.shape().get(1).copied().unwrap_or(1).max(1);
        let values = out.to_vec();
        let right = values
            .chunks(width)
            .zip(classes)
            .filter(|(row, k)| argmax(row) == **k)
            .count();
        Ok(right as f64 / classes.len().max(1) as f64)
    }

    /// The model's outputs on an `nx × ny` grid over `[x_min, x_max] × [y_min, y_max]`
    /// (cell centres, row by row from `y_min`), flattened: `nx · ny · outputs` values.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] for an empty or too large grid (more than
    /// [`MAX_GRID_CELLS`]) or bounds that are not finite.
    pub fn predict_grid(
        &mut self,
        x_range: (f64, f64),
        y_range: (f64, f64),
        nx: usize,
        ny: usize,
    ) -> Result<Vec<f64>> {
        let x = grid(x_range, y_range, nx, ny)?;
        Ok(train::predict(&mut self.model, &x)?.to_vec())
    }

    /// Layer `layer`'s outputs (every unit) on the grid of [`Session::predict_grid`]:
    /// `nx · ny · width` values, a cell's units together. For the small heat map of
    /// each hidden unit.
    ///
    /// # Errors
    /// As [`Session::predict_grid`], and [`Error::InvalidValue`] for a layer past the
    /// last.
    pub fn layer_grid(
        &mut self,
        layer: usize,
        x_range: (f64, f64),
        y_range: (f64, f64),
        nx: usize,
        ny: usize,
    ) -> Result<Vec<f64>> {
        if layer >= self.model.layers().len() {
            return Err(invalid(
                "layer",
                format!(
                    "{layer} is past the last layer ({})",
                    self.model.layers().len() - 1
                ),
            ));
        }
        let x = grid(x_range, y_range, nx, ny)?;
        self.model.set_mode(Mode::Eval);
        let tape = chainrule::Tape::new();
        let params = self.model.bind(&tape);
        let outputs = self.model.forward_trace(&params, tape.constant(x))?;
        Ok(outputs[layer].value().to_vec())
    }

    /// One sample's pass through the network, for the step-through mode, as JSON:
    /// `{"x": [...], "layers": [{"type", "value": [...], "grad": [...]}, …],
    /// "loss": C, "lr": η, "params": {"0.weight": {"value": [...], "grad": [...],
    /// "new": [...]}, …}}`: each layer's output on the sample (z after a linear layer,
    /// a after an activation) and ∂C/∂ of it, each parameter's gradient on this one
    /// sample and its value after one plain gradient-descent step `θ − η·∂C/∂θ` (the
    /// update `explain` shows, whatever optimizer trains the network).
    ///
    /// # Errors
    /// A sample past the data; errors of the forward or backward pass.
    pub fn trace(&self, sample: usize) -> Result<Value> {
        let (x, y) = self.sample(sample)?;
        let mut model = self.model.clone();
        model.set_mode(Mode::Train);
        let tape = chainrule::Tape::new();
        let params = model.bind(&tape);
        let input = tape.constant(x.clone());
        let outputs = model.forward_trace(&params, input)?;
        let last = *outputs
            .last()
            .ok_or_else(|| invalid("model", "has no layers"))?;
        let loss = self.loss.compute(last, &y)?;
        let grads = loss.backward_retain_all()?;
        let lr = self.optimizer.config().lr();
        let layers: Vec<Value> = outputs
            .iter()
            .zip(model.layers())
            .map(|(out, layer)| {
                json!({
                    "type": layer.type_name(),
                    "value": out.value().to_vec(),
                    "grad": grads.wrt(*out).map(|g| g.to_vec()).unwrap_or_default(),
                })
            })
            .collect();
        let named: BTreeMap<String, Value> = model
            .params()
            .iter()
            .zip(&params)
            .map(|(p, v)| {
                let value = p.value.to_vec();
                let grad = grads.wrt(*v).map(|g| g.to_vec()).unwrap_or_default();
                let new: Vec<f64> = value.iter().zip(&grad).map(|(w, g)| w - lr * g).collect();
                (
                    p.name.clone(),
                    json!({"value": value, "grad": grad, "new": new}),
                )
            })
            .collect();
        Ok(json!({
            "x": x.to_vec(),
            "layers": layers,
            "loss": loss.value().to_vec().first().copied().unwrap_or(f64::NAN),
            "lr": lr,
            "params": named,
        }))
    }

    /// Outputs per sample.
    pub fn outputs(&self) -> usize {
        self.model.output_features().unwrap_or(1)
    }

    /// Every weight and bias element that [`Session::explain`] takes, as
    /// `"0.weight[1,0]"`, layer by layer.
    pub fn elements(&self) -> Vec<String> {
        all_elements(&self.model).iter().map(element_name).collect()
    }

    /// The parameters by name (`"0.weight"`, …): `{"shape": [...], "values": [...]}`.
    pub fn parameters(&self) -> Value {
        let named: BTreeMap<String, Value> = self
            .model
            .state_dict()
            .into_iter()
            .map(|(name, t)| (name, json!({"shape": t.shape(), "values": t.to_vec()})))
            .collect();
        json!(named)
    }

    fn sample(&self, sample: usize) -> Result<(Tensor<f64>, Target<f64>)> {
        if sample >= self.data.len() {
            return Err(invalid(
                "sample",
                format!(
                    "{sample} is past the last point ({})",
                    self.data.len().saturating_sub(1)
                ),
            ));
        }
        self.rows(&[sample])
    }

    /// The chain-rule derivation of ∂C/∂`param` on one point `sample`, with the
    /// update at the optimizer's learning rate, as `chainrule explain` prints it:
    /// `format` is `markdown` (with LaTeX), `text` or `json`.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] for a malformed or missing element, a sample past the
    /// data, an unknown format, or a derivation whose product differs from autodiff's.
    pub fn explain(&self, param: &str, sample: usize, format: &str) -> Result<String> {
        let which = ParamElement::parse(param)?;
        let (x, y) = self.sample(sample)?;
        let lr = self.optimizer.config().lr();
        let d = explain(&self.model, &x, &y, self.loss, lr, &which)?;
        checked_rendering(
            param,
            "the chain's product",
            (d.gradient, d.autodiff, d.verified()),
            format,
            [&|| d.markdown(), &|| d.text(), &|| d.json().to_string()],
        )
    }

    /// The computation graph of the loss on point `sample` as SVG, each node with its
    /// value and gradient (`chainrule graph`'s drawing).
    ///
    /// # Errors
    /// A sample past the data; errors of the forward or backward pass.
    pub fn graph(&self, sample: usize) -> Result<String> {
        use chainrule_explain::graph::{Detail, Graph};
        let (x, y) = self.sample(sample)?;
        let pass = Graph::of_model(&self.model, &x, &y, self.loss, Detail::Auto)?;
        Ok(pass.graph.to_svg())
    }

    /// A central-difference gradient check (step `1e-6`, tolerance `1e-6`) of every
    /// parameter tensor on the first `rows` points, as `chainrule gradcheck`'s table;
    /// the second value says whether every tensor passed.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] for 0 rows or more than [`MAX_CHECK_ROWS`].
    pub fn gradcheck(&self, rows: usize) -> Result<(String, bool)> {
        if rows == 0 || rows > MAX_CHECK_ROWS {
            return Err(invalid("rows", format!("must be 1 to {MAX_CHECK_ROWS}")));
        }
        let picked: Vec<usize> = (0..rows.min(self.data.len())).collect();
        let (x, y) = self.rows(&picked)?;
        let report =
            chainrule_explain::check::check_model(&self.model, &x, &y, self.loss, 1e-6, 1e-6)?;
        Ok((report.table(), report.passed()))
    }
}

/// The cell centres of an `nx × ny` grid over the rectangle, row by row from
/// `y_range.0`, as an `[nx · ny, 2]` tensor.
fn grid(x_range: (f64, f64), y_range: (f64, f64), nx: usize, ny: usize) -> Result<Tensor<f64>> {
    let cells = nx.saturating_mul(ny);
    if cells == 0 || cells > MAX_GRID_CELLS {
        return Err(invalid(
            "grid",
            format!("must have 1 to {MAX_GRID_CELLS} cells"),
        ));
    }
    if ![x_range.0, x_range.1, y_range.0, y_range.1]
        .iter()
        .all(|v| v.is_finite())
    {
        return Err(invalid("grid", "bounds must be finite"));
    }
    let mut points = Vec::with_capacity(cells * 2);
    for j in 0..ny {
        let y = y_range.0 + (y_range.1 - y_range.0) * (j as f64 + 0.5) / ny as f64;
        for i in 0..nx {
            points.push(x_range.0 + (x_range.1 - x_range.0) * (i as f64 + 0.5) / nx as f64);
            points.push(y);
        }
    }
    Tensor::from_vec(points, &[cells, 2])
}

/// The derivation of ∂L/∂`param` in a formula file, with the update at `lr`, as
/// `chainrule explain FILE.formula` prints it (`markdown`, `text` or `json`).
///
/// # Errors
/// A formula that does not parse, an unknown parameter or format, or a derivation
/// whose sum of paths differs from autodiff's.
pub fn explain_formula(formula: &str, param: &str, lr: f64, format: &str) -> Result<String> {
    let parsed = chainrule_explain::formula::Formula::parse(formula)?;
    let d = parsed.explain(param, lr)?;
    checked_rendering(
        param,
        "the paths' sum",
        (d.gradient, d.autodiff, d.verified()),
        format,
        [&|| d.markdown(), &|| d.text(), &|| d.json().to_string()],
    )
}

/// A derivation in `format` (its markdown, text and json renderings, in that order),
/// refused when its `sum` (gradient) differs from autodiff's: both kinds of
/// derivation are checked and rendered alike.
fn checked_rendering(
    param: &str,
    sum: &str,
    (gradient, autodiff, verified): (f64, f64, bool),
    format: &str,
    [markdown, text, json]: [&dyn Fn() -> String; 3],
) -> Result<String> {
    if !verified {
        return Err(invalid(
            "param",
            format!("{param}: {sum} {gradient} differs from autodiff's {autodiff}"),
        ));
    }
    match format {
        "markdown" => Ok(markdown()),
        "text" => Ok(text()),
        "json" => Ok(json()),
        other => Err(invalid(
            "format",
            format!("{other:?} must be markdown, text or json"),
        )),
    }
}

/// A built-in data set from the settings' `data` table: one of
/// `chainrule::data::synthetic`'s, or `blobs` (three Gaussian clusters, made here).
fn generated(settings: &Value, seed: u64) -> Result<Dataset<f64>> {
    let name = settings["name"].as_str().unwrap_or("spiral");
    let samples = match &settings["samples"] {
        Value::Null => 300,
        v => v
            .as_u64()
            .filter(|&n| n >= 2 && n as usize <= MAX_SAMPLES)
            .ok_or_else(|| invalid("data.samples", format!("must be 2 to {MAX_SAMPLES}")))?
            as usize,
    };
    let default_noise = if name == "blobs" {
        BLOBS_NOISE
    } else {
        synthetic::default_noise(name)
    };
    let noise = match &settings["noise"] {
        Value::Null => default_noise,
        v => v
            .as_f64()
            .filter(|n| n.is_finite() && *n >= 0.0)
            .ok_or_else(|| invalid("data.noise", "must be a number ≥ 0"))?,
    };
    if name == "blobs" {
        blobs(samples, noise, seed)
    } else {
        synthetic::generate::<f64>(name, samples, noise, seed)
    }
}

/// The blobs' standard deviation unless the settings give one.
pub const BLOBS_NOISE: f64 = 0.35;

/// Three Gaussian clusters of equal size, centred on a circle of radius 1.5 at 90°,
/// 210° and 330°, each coordinate with standard deviation `noise`; point `i` is
/// class `i mod 3`. Normal deviates by Box–Muller from a SplitMix64 stream of `seed`
/// (the library's generators are private to its synthetic module).
fn blobs(samples: usize, noise: f64, seed: u64) -> Result<Dataset<f64>> {
    let mut state = seed ^ 0x9E37_79B9_7F4A_7C15;
    let mut uniform = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // In (0, 1]: ln of it is finite.
        ((z >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    };
    let mut x = Vec::with_capacity(samples * 2);
    let mut classes = Vec::with_capacity(samples);
    for i in 0..samples {
        let k = i % 3;
        let angle = std::f64::consts::FRAC_PI_2 + k as f64 * 2.0 * std::f64::consts::PI / 3.0;
        let (u, v) = (uniform(), uniform());
        let r = (-2.0 * u.ln()).sqrt();
        let (g0, g1) = (
            r * (std::f64::consts::TAU * v).cos(),
            r * (std::f64::consts::TAU * v).sin(),
        );
        x.push(1.5 * angle.cos() + noise * g0);
        x.push(1.5 * angle.sin() + noise * g1);
        classes.push(k);
    }
    Dataset::new(
        Tensor::from_vec(x, &[samples, 2])?,
        Target::Classes(classes),
    )
}

/// `"0.weight[1,0]"` or `"2.bias[0]"`: what [`ParamElement::parse`] reads.
fn element_name(e: &ParamElement) -> String {
    if e.bias {
        format!("{}.bias[{}]", e.layer, e.unit)
    } else {
        format!("{}.weight[{},{}]", e.layer, e.unit, e.input)
    }
}

/// The index of the largest value (the first of ties).
fn argmax(row: &[f64]) -> usize {
    row.iter()
        .enumerate()
        .fold((0, f64::NEG_INFINITY), |(bi, bv), (i, &v)| {
            if v > bv { (i, v) } else { (bi, bv) }
        })
        .0
}
