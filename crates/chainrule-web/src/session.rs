//! The playground's state and operations in plain Rust (errors as
//! [`chainrule::Error`]), so that native tests call exactly what the page calls;
//! `lib.rs` only turns its errors into JavaScript exceptions.

use chainrule::data::{Batches, Dataset, Target, synthetic};
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
        let data_settings = &settings["data"];
        let name = data_settings["name"].as_str().unwrap_or("spiral");
        let samples = match &data_settings["samples"] {
            Value::Null => 300,
            v => v
                .as_u64()
                .filter(|&n| n >= 2 && n as usize <= MAX_SAMPLES)
                .ok_or_else(|| invalid("data.samples", format!("must be 2 to {MAX_SAMPLES}")))?
                as usize,
        };
        let noise = match &data_settings["noise"] {
            Value::Null => synthetic::default_noise(name),
            v => v
                .as_f64()
                .ok_or_else(|| invalid("data.noise", "must be a number"))?,
        };
        let data = synthetic::generate::<f64>(name, samples, noise, seed)?;
        let loss = Loss::from_name(settings["loss"].as_str().unwrap_or("cross_entropy"))?;
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
            steps: 0,
        };
        // Fail now, not at the first step, when the outputs do not fit the targets
        // (a class past the last output, say).
        session.loss()?;
        Ok(session)
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
        let Target::Classes(classes) = &self.data.target else {
            return Ok(0.0);
        };
        let classes = classes.clone();
        let out = train::predict(&mut self.model, &self.data.x)?;
        let width = out.shape().get(1).copied().unwrap_or(1).max(1);
        let values = out.to_vec();
        let right = values
            .chunks(width)
            .zip(&classes)
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
        let x = Tensor::from_vec(points, &[cells, 2])?;
        Ok(train::predict(&mut self.model, &x)?.to_vec())
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
        if !d.verified() {
            return Err(invalid(
                "param",
                format!(
                    "{param}: the chain's product {} differs from autodiff's {}",
                    d.gradient, d.autodiff
                ),
            ));
        }
        match format {
            "markdown" => Ok(d.markdown()),
            "text" => Ok(d.text()),
            "json" => Ok(d.json().to_string()),
            other => Err(invalid(
                "format",
                format!("{other:?} must be markdown, text or json"),
            )),
        }
    }

    /// The computation graph of the loss on point `sample` as SVG, each node with its
    /// value and gradient (`chainrule graph`'s drawing).
    ///
    /// # Errors
    /// A sample past the data; errors of the forward or backward pass.
    pub fn graph(&self, sample: usize) -> Result<String> {
        let (x, y) = self.sample(sample)?;
        let tape = chainrule::Tape::new();
        let params = self.model.bind(&tape);
        let input = tape.constant(x);
        let prediction = self.model.forward(&params, input)?;
        let loss = self.loss.compute(prediction, &y)?;
        let mut names: BTreeMap<usize, String> = self
            .model
            .params()
            .iter()
            .zip(&params)
            .map(|(p, v)| (v.id(), p.name.clone()))
            .collect();
        names.insert(input.id(), "x".into());
        let grads = loss.backward_retain_all()?;
        let drawing = chainrule_explain::graph::Graph::from_tape(&tape, loss.id(), &grads, &names);
        Ok(drawing.to_svg())
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
