//! Training: [`fit`] with mini-batches, a validation set, metrics, learning-rate
//! schedules, gradient clipping and early stopping; [`evaluate`] and [`predict`];
//! [`loss_and_grads`] for one batch. The interchange contract's `train` is `fit` with
//! its [`TrainConfig`] read from JSON and no validation set; its `grad` is
//! `loss_and_grads` over all of x.

mod fused;
mod scalar_path;

pub use crate::config::{EarlyStopping, MAX_EPOCHS, TrainConfig};

use crate::data::{Batches, Dataset, Target};
use crate::loss::Loss;
use crate::nn::{Module, Param, Sequential};
use crate::optim::{Optimizer, clip_grad_norm};
use crate::parallel::Team;
use crate::{Float, Result, Tape, Tensor};
use std::borrow::Cow;
use std::time::Instant;

/// Loss (and accuracy, for classification) over a data set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metrics {
    /// The loss over the whole set, as if it were one batch.
    pub loss: f64,
    /// The fraction of correct predictions, for classification losses (`cross_entropy`:
    /// arg-max; `bce`: p ≥ 0.5; `bce_logits`: logit ≥ 0; targets ≥ 0.5 are positive).
    pub accuracy: Option<f64>,
}

/// What one epoch of [`fit`] measured.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochMetrics {
    /// The epoch, from 0.
    pub epoch: usize,
    /// The training loss and accuracy, accumulated over the epoch's batches (with
    /// the parameters as they were at each step).
    pub train: Metrics,
    /// The validation metrics after the epoch, when there is a validation set.
    pub validation: Option<Metrics>,
    /// The learning rate used in this epoch.
    pub lr: f64,
    /// Wall-clock seconds of the epoch (training and validation).
    pub seconds: f64,
}

/// The record of a [`fit`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct History {
    /// One entry per epoch run.
    pub epochs: Vec<EpochMetrics>,
    /// Whether early stopping ended the run.
    pub stopped_early: bool,
    /// The epoch with the best monitored loss, when early stopping was on.
    pub best_epoch: Option<usize>,
    /// Where a run stopped by [`Session::stop`] should continue.
    pub interrupted: Option<Position>,
}

/// A progress report from [`fit`].
#[derive(Debug)]
pub enum Event<'a> {
    /// After an optimizer step.
    Step {
        /// The epoch, from 0.
        epoch: usize,
        /// The batch within the epoch, from 0.
        batch: usize,
        /// Batches in this epoch.
        batches: usize,
        /// Rows in this batch.
        rows: usize,
        /// The batch loss before the step.
        loss: f64,
    },
    /// After an epoch (and its validation).
    Epoch(&'a EpochMetrics),
}

impl Loss {
    /// Whether the loss sums over samples (`sse`, `half_sse`) rather than averaging.
    ///
    /// ```
    /// assert!(chainrule::loss::Loss::Sse.sums());
    /// assert!(!chainrule::loss::Loss::Mse.sums());
    /// ```
    pub fn sums(self) -> bool {
        matches!(self, Loss::Sse | Loss::HalfSse)
    }
}

/// Combines per-batch losses (and correct counts) into the loss over all rows.
#[derive(Debug, Default)]
struct Tally {
    weighted_loss: f64,
    rows: usize,
    correct: usize,
    judged: usize,
    classification: bool,
}

impl Tally {
    fn add<F: Float>(
        &mut self,
        loss: Loss,
        value: f64,
        prediction: &Tensor<F>,
        target: &Target<F>,
    ) {
        let rows = target.rows();
        self.weighted_loss += if loss.sums() {
            value
        } else {
            value * rows as f64
        };
        self.rows += rows;
        if let Some((correct, judged)) = correct_predictions(loss, prediction, target) {
            self.classification = true;
            self.correct += correct;
            self.judged += judged;
        }
    }

    fn metrics(&self, loss: Loss) -> Metrics {
        let rows = self.rows.max(1) as f64;
        Metrics {
            loss: if loss.sums() {
                self.weighted_loss
            } else {
                self.weighted_loss / rows
            },
            accuracy: self
                .classification
                .then(|| self.correct as f64 / self.judged.max(1) as f64),
        }
    }
}

/// (correct, judged) predictions for a classification loss, `None` otherwise.
fn correct_predictions<F: Float>(
    loss: Loss,
    prediction: &Tensor<F>,
    target: &Target<F>,
) -> Option<(usize, usize)> {
    if !matches!(loss, Loss::CrossEntropy | Loss::Bce | Loss::BceLogits) {
        return None; // regression: no accuracy, and no copy of the predictions
    }
    let p = prediction
        .as_slice()
        .map_or_else(|| Cow::Owned(prediction.to_vec()), Cow::Borrowed);
    let argmax = |row: &[F]| {
        row.iter()
            .enumerate()
            .fold(0, |best, (i, &v)| if v > row[best] { i } else { best })
    };
    let columns = *prediction.shape().last()?;
    match (loss, target) {
        (Loss::CrossEntropy, Target::Classes(classes)) => {
            let correct = p
                .chunks_exact(columns)
                .zip(classes)
                .filter(|&(row, &c)| argmax(row) == c)
                .count();
            Some((correct, classes.len()))
        }
        (Loss::CrossEntropy, Target::Values(y)) => {
            let y = y.to_vec();
            let correct = p
                .chunks_exact(columns)
                .zip(y.chunks_exact(columns))
                .filter(|(a, b)| argmax(a) == argmax(b))
                .count();
            Some((correct, y.len() / columns))
        }
        (Loss::Bce | Loss::BceLogits, Target::Values(y)) => {
            let threshold = if loss == Loss::Bce { 0.5 } else { 0.0 };
            let half = F::from_f64(0.5);
            let correct = p
                .iter()
                .zip(y.to_vec())
                .filter(|&(&p, y)| (p >= F::from_f64(threshold)) == (y >= half))
                .count();
            Some((correct, p.len()))
        }
        _ => None,
    }
}

/// The loss of `model` on the batch `(x, target)` and its gradient with respect to
/// every parameter (in `model.params()` order; `None` where the loss does not
/// depend on a parameter).
///
/// # Errors
/// Shape errors when `x` or `target` does not fit the model and loss.
///
/// ```
/// use chainrule::data::Target;
/// use chainrule::loss::Loss;
/// use chainrule::nn::{Module, Sequential};
/// use chainrule::{train, Tensor};
/// let mut m = Sequential::<f64>::from_json(r#"{"layers": [{"type": "linear", "in": 1, "out": 1, "bias": false}]}"#, 0)?;
/// m.params_mut()[0].value = Tensor::full(&[1, 1], 2.0);
/// let x = Tensor::full(&[1, 1], 1.0);
/// let y = Target::Values(Tensor::full(&[1, 1], 1.0));
/// let (loss, grads) = train::loss_and_grads(&m, &x, &y, Loss::Sse)?;
/// assert_eq!(loss, 1.0);                                       // (2 − 1)²
/// assert_eq!(grads[0].as_ref().unwrap().to_vec(), vec![2.0]); // 2(2 − 1)·1
/// # Ok::<(), chainrule::Error>(())
/// ```
pub fn loss_and_grads<F: Float, M: Module<F>>(
    model: &M,
    x: &Tensor<F>,
    target: &Target<F>,
    loss: Loss,
) -> Result<(F, Vec<Option<Tensor<F>>>)> {
    let pass = step_on_batch(model, x, target, loss, &mut Tape::new(), false)?;
    Ok((pass.loss, pass.grads))
}

/// What one batch's forward and backward pass produce.
struct BatchPass<F: Float> {
    loss: F,
    grads: Vec<Option<Tensor<F>>>,
    prediction: Tensor<F>,
    /// Where non-finite values first appear, when the loss or a gradient is not finite.
    anomaly: Option<String>,
}

/// Loss, gradients and prediction for one batch; a non-finite loss or gradient comes
/// with a description of where the non-finite values first appear (anomaly detection).
fn step_on_batch<F: Float, M: Module<F>>(
    model: &M,
    x: &Tensor<F>,
    target: &Target<F>,
    loss: Loss,
    tape: &mut Tape<F>,
    fused: bool,
) -> Result<BatchPass<F>> {
    tape.clear();
    let mut pass = record_and_differentiate(model, x, target, loss, tape, fused)?;
    // Emptied (its node list keeps its capacity), the tape no longer shares the
    // parameters' storage, so the optimizer updates them in place instead of copying
    // each one first.
    tape.clear();
    if fused && pass.anomaly.is_some() {
        // Locate the non-finite values on the unfused record, one node per layer.
        let plain = record_and_differentiate(model, x, target, loss, tape, false)?;
        tape.clear();
        pass.anomaly = plain.anomaly.or(pass.anomaly);
    }
    Ok(pass)
}

/// One forward and backward pass of `model` on a batch, recorded on `tape`, with
/// fused layers when `fused` and the model is a [`Sequential`] stack.
fn record_and_differentiate<F: Float, M: Module<F>>(
    model: &M,
    x: &Tensor<F>,
    target: &Target<F>,
    loss: Loss,
    tape: &Tape<F>,
    fused: bool,
) -> Result<BatchPass<F>> {
    let params = model.bind(tape);
    let x = tape.constant(x.clone());
    let prediction = match as_sequential(model).filter(|_| fused) {
        Some(layers) => fused::forward_fused(layers, &params, x)?,
        None => model.forward(&params, x)?,
    };
    let value = loss.compute(prediction, target)?;
    let mut grads = value.backward()?;
    let grads: Vec<Option<Tensor<F>>> = params.iter().map(|&p| grads.take(p)).collect();
    let loss_value = value.item()?;
    let anomaly = (!loss_value.is_finite() || grads.iter().flatten().any(|g| !g.all_finite()))
        .then(|| locate_nonfinite(model, tape, &params, &grads, value.id(), loss_value));
    Ok(BatchPass {
        loss: loss_value,
        grads,
        prediction: prediction.value(),
        anomaly,
    })
}

/// Where non-finite values first appear: a parameter, else the first operation whose
/// output is non-finite (forward order), else the first non-finite gradient.
fn locate_nonfinite<F: Float, M: Module<F>>(
    model: &M,
    tape: &Tape<F>,
    params: &[crate::Var<'_, F>],
    grads: &[Option<Tensor<F>>],
    root: usize,
    loss: F,
) -> String {
    let layer_of = |name: &str| {
        name.split('.')
            .next()
            .filter(|l| l.parse::<usize>().is_ok())
            .map_or(String::new(), |l| format!(" (layer {l})"))
    };
    if let Some(p) = model.params().iter().find(|p| !p.value.all_finite()) {
        return format!(
            "parameter {}{} holds non-finite values before the step",
            p.name,
            layer_of(&p.name)
        );
    }
    let param_ids: Vec<usize> = params.iter().map(|p| p.id()).collect();
    for id in 0..=root {
        if param_ids.contains(&id) {
            continue;
        }
        if let (Some(label), Some(value)) = (tape.label(id), tape.value(id))
            && !value.all_finite()
        {
            let consumer = model
                .params()
                .iter()
                .zip(&param_ids)
                .find(|(_, pid)| tape.inputs(id).contains(pid));
            let layer = consumer.map_or(String::new(), |(p, _)| {
                format!(" in the layer of {}{}", p.name, layer_of(&p.name))
            });
            return format!(
                "the output of `{label}` (node {id}{layer}) is non-finite in the forward pass; the loss is {loss}"
            );
        }
    }
    match model
        .params()
        .iter()
        .zip(grads)
        .find(|(_, g)| g.as_ref().is_some_and(|g| !g.all_finite()))
    {
        Some((p, _)) => format!(
            "the gradient of {}{} is non-finite (the forward pass is finite)",
            p.name,
            layer_of(&p.name)
        ),
        None => format!("the loss is {loss}"),
    }
}

/// Rows per forward pass in [`evaluate`] and [`predict`].
const EVAL_BATCH: usize = 1024;

/// The model's outputs for `x` `[N, D]`, computed without recording gradients, a
/// thousand rows at a time.
///
/// # Errors
/// Shape errors when `x` does not fit the model.
///
/// ```
/// use chainrule::nn::{Module, Sequential};
/// use chainrule::{train, Tensor};
/// let m = Sequential::<f64>::from_json(r#"{"layers": [{"type": "linear", "in": 2, "out": 3}, {"type": "softmax"}]}"#, 0)?;
/// let p = train::predict(&m, &Tensor::zeros(&[5, 2]))?;
/// assert_eq!(p.shape(), &[5, 3]);
/// # Ok::<(), chainrule::Error>(())
/// ```
pub fn predict<F: Float, M: Module<F>>(model: &M, x: &Tensor<F>) -> Result<Tensor<F>> {
    let rows = x.shape().first().copied().unwrap_or(0);
    let mut parts = Vec::new();
    for start in (0..rows).step_by(EVAL_BATCH) {
        let tape = Tape::new();
        let out = tape.no_grad(|| {
            let params = model.bind(&tape);
            model.forward(
                &params,
                tape.constant(x.narrow(0, start, EVAL_BATCH.min(rows - start))?),
            )
        })?;
        parts.push(out.value());
    }
    if parts.is_empty() {
        return Err(crate::Error::Shape {
            op: "predict",
            message: "needs at least one row".into(),
            got: x.shape().to_vec(),
        });
    }
    Tensor::concat(&parts.iter().collect::<Vec<_>>(), 0)
}

/// The loss (over the whole set, as one batch would give it) and, for
/// classification, the accuracy of `model` on `data`.
///
/// # Errors
/// Shape errors when the data does not fit the model and loss.
///
/// ```
/// use chainrule::data::{Dataset, Target};
/// use chainrule::loss::Loss;
/// use chainrule::nn::Sequential;
/// use chainrule::{train, Tensor};
/// let m = Sequential::<f64>::from_json(r#"{"layers": [{"type": "linear", "in": 2, "out": 3}]}"#, 0)?;
/// let data = Dataset::new(Tensor::zeros(&[4, 2]), Target::Classes(vec![0, 1, 2, 0]))?;
/// let metrics = train::evaluate(&m, &data, Loss::CrossEntropy)?;
/// assert!(metrics.accuracy.is_some());
/// # Ok::<(), chainrule::Error>(())
/// ```
pub fn evaluate<F: Float, M: Module<F>>(
    model: &M,
    data: &Dataset<F>,
    loss: Loss,
) -> Result<Metrics> {
    let mut tally = Tally::default();
    for start in (0..data.len()).step_by(EVAL_BATCH) {
        let rows: Vec<usize> = (start..data.len().min(start + EVAL_BATCH)).collect();
        let batch = data.rows(&rows)?;
        let tape = Tape::new();
        let (value, prediction) = tape.no_grad(|| -> Result<_> {
            let params = model.bind(&tape);
            let prediction = model.forward(&params, tape.constant(batch.x.clone()))?;
            Ok((
                loss.compute(prediction, &batch.target)?.item()?,
                prediction.value(),
            ))
        })?;
        tally.add(loss, value.as_f64(), &prediction, &batch.target);
    }
    Ok(tally.metrics(loss))
}

/// Trains `model` on `train` as `config` says: each epoch sets the scheduled
/// learning rate, visits the rows in batches (see [`Batches`]), and per batch
/// computes the loss, backpropagates, clips the gradients if asked and takes one
/// optimizer step; then evaluates `validation` if given, reports to `on_event`, and
/// applies early stopping.
///
/// Unlike PyTorch by default, on x86_64 training flushes denormal numbers to zero (as
/// `torch.set_flush_denormal(True)`): results below 2⁻¹²⁶ in f32 (2⁻¹⁰²² in f64)
/// become 0, so that they never slow a step down. The calling thread's setting is
/// put back when training returns.
///
/// # Errors
/// Shape errors when the data does not fit the model and loss.
///
/// ```
/// use chainrule::data::{Dataset, Target};
/// use chainrule::nn::{Module, Sequential};
/// use chainrule::train::{self, TrainConfig};
/// use chainrule::Tensor;
/// let mut m = Sequential::<f64>::from_json(r#"{"layers": [{"type": "linear", "in": 1, "out": 1, "bias": false}]}"#, 0)?;
/// m.params_mut()[0].value = Tensor::full(&[1, 1], 2.0);
/// let config = TrainConfig::from_json(r#"{"loss": "sse", "optimizer": {"type": "sgd", "lr": 0.1}}"#)?;
/// let data = Dataset::new(Tensor::full(&[1, 1], 1.0), Target::Values(Tensor::full(&[1, 1], 1.0)))?;
/// let history = train::fit(&mut m, &data, None, &config, |_| {})?;
/// assert!((m.params()[0].value.item()? - 1.8).abs() < 1e-15);   // notebook 001
/// assert_eq!(history.epochs[0].train.loss, 1.0);
/// # Ok::<(), chainrule::Error>(())
/// ```
pub fn fit<F: Float, M: Module<F>>(
    model: &mut M,
    train: &Dataset<F>,
    validation: Option<&Dataset<F>>,
    config: &TrainConfig,
    on_event: impl FnMut(&Event<'_>),
) -> Result<History> {
    let mut optimizer = Optimizer::new(config.optimizer.clone());
    let session = Session {
        optimizer: &mut optimizer,
        start: Position::default(),
        stop: None,
    };
    fit_from(model, train, validation, config, session, on_event)
}

/// A place in training: the epoch, and the batch within it (both from 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    /// The epoch.
    pub epoch: usize,
    /// The batch within the epoch.
    pub batch: usize,
}

/// What a continued or interruptible run of [`fit_from`] brings along.
pub struct Session<'a, F: Float> {
    /// The optimizer, with whatever state it has (see [`Optimizer::load_state_dict`]).
    pub optimizer: &'a mut Optimizer<F>,
    /// Where to start: the first step not yet taken.
    pub start: Position,
    /// When set (by a signal handler, say), training stops after the current step and
    /// [`History::interrupted`] says where to continue.
    pub stop: Option<&'a std::sync::atomic::AtomicBool>,
}

/// [`fit`] continuing a run from `session.start` with an optimizer that already holds
/// its state, and stopping early when `session.stop` is set. Batch order and learning
/// rates depend only on the epoch number, so a run resumed at any step takes the same
/// steps as one never stopped, and ends with bit-identical parameters. (Early stopping
/// restarts its count; a resumed epoch's training metrics cover its remaining batches.)
///
/// # Errors
/// As [`fit`].
///
/// ```
/// use chainrule::data::{Dataset, Target};
/// use chainrule::nn::{Module, Sequential};
/// use chainrule::optim::Optimizer;
/// use chainrule::train::{self, Position, Session, TrainConfig};
/// use chainrule::Tensor;
/// let data = Dataset::new(Tensor::<f64>::rand_uniform(&[20, 2], -1.0, 1.0, 0)?, Target::Classes(vec![0, 1].repeat(10)))?;
/// let config = TrainConfig::from_json(r#"{"loss": "cross_entropy", "optimizer": {"type": "adam"}, "batch_size": 4, "epochs": 4, "shuffle": true}"#)?;
/// let json = r#"{"layers": [{"type": "linear", "in": 2, "out": 2}]}"#;
/// let mut whole = Sequential::<f64>::from_json(json, 1)?;
/// train::fit(&mut whole, &data, None, &config, |_| {})?;
/// // Stop after the second step, then resume there with the optimizer's state.
/// let mut part = Sequential::<f64>::from_json(json, 1)?;
/// let mut opt = Optimizer::new(config.optimizer.clone());
/// let stop = std::sync::atomic::AtomicBool::new(false);
/// let session = Session { optimizer: &mut opt, start: Position::default(), stop: Some(&stop) };
/// let mut steps = 0;
/// let history = train::fit_from(&mut part, &data, None, &config, session, |e| {
///     if let train::Event::Step { .. } = e { steps += 1; if steps == 2 { stop.store(true, std::sync::atomic::Ordering::Relaxed); } }
/// })?;
/// let at = history.interrupted.unwrap();
/// assert_eq!(at, Position { epoch: 0, batch: 2 });
/// let session = Session { optimizer: &mut opt, start: at, stop: None };
/// train::fit_from(&mut part, &data, None, &config, session, |_| {})?;
/// assert_eq!(part.params(), whole.params());
/// # Ok::<(), chainrule::Error>(())
/// ```
pub fn fit_from<F: Float, M: Module<F>>(
    model: &mut M,
    train: &Dataset<F>,
    validation: Option<&Dataset<F>>,
    config: &TrainConfig,
    session: Session<'_, F>,
    on_event: impl FnMut(&Event<'_>),
) -> Result<History> {
    // Threads that spin between the steps' matrix products, and flush denormals to
    // zero while training runs (see crate::parallel).
    Team::scope(crate::tensor::num_threads(), |_| {
        train_loop(model, train, validation, config, session, on_event)
    })
}

/// [`fit_from`]'s loop.
fn train_loop<F: Float, M: Module<F>>(
    model: &mut M,
    train: &Dataset<F>,
    validation: Option<&Dataset<F>>,
    config: &TrainConfig,
    session: Session<'_, F>,
    mut on_event: impl FnMut(&Event<'_>),
) -> Result<History> {
    let Session {
        optimizer,
        start,
        stop,
    } = session;
    let stopping = || stop.is_some_and(|s| s.load(std::sync::atomic::Ordering::Relaxed));
    let base_lr = config.optimizer.lr();
    let order = Batches {
        rows: train.len(),
        batch_size: config.batch_size,
        shuffle: config.shuffle,
        seed: config.seed,
        drop_last: config.drop_last,
    };
    let mut history = History::default();
    let mut steps = start.epoch * order.count() + start.batch;
    let mut best: Option<(f64, usize, Vec<Param<F>>)> = None;
    let mut scalar = as_sequential(model)
        .and_then(|layers| scalar_path::ScalarPath::new(layers, config.batch_size));
    // Whether the scalar path has taken a step: until it has, a refusal means the
    // model or the loss has no scalar form, and the path is dropped.
    let mut scalar_proven = false;
    let mut tape = Tape::new();
    for epoch in start.epoch..config.epochs {
        let started = Instant::now();
        let lr = config.schedule.lr(base_lr, epoch);
        optimizer.set_lr(lr);
        let batches = order.epoch(epoch);
        let mut tally = Tally::default();
        let skip = if epoch == start.epoch { start.batch } else { 0 };
        for (batch_index, rows) in batches.iter().enumerate().skip(skip) {
            if batch_index > skip && stopping() {
                history.interrupted = Some(Position {
                    epoch,
                    batch: batch_index,
                });
                return Ok(history);
            }
            let batch = train.rows(rows)?;
            let BatchPass {
                loss: value,
                mut grads,
                prediction,
                anomaly,
            } = match scalar
                .as_mut()
                .zip(as_sequential(model))
                .and_then(|(s, layers)| s.step(layers, &batch.x, &batch.target, config.loss))
            {
                Some(pass) => {
                    scalar_proven = true;
                    pass
                }
                None => {
                    if !scalar_proven {
                        scalar = None;
                    }
                    step_on_batch(model, &batch.x, &batch.target, config.loss, &mut tape, true)?
                }
            };
            steps += 1;
            if let Some(location) = anomaly {
                if config.skip_nonfinite {
                    continue;
                }
                return Err(crate::Error::NonFinite {
                    epoch: epoch + 1,
                    batch: batch_index + 1,
                    step: steps,
                    location,
                });
            }
            if let Some(max_norm) = config.clip_grad_norm {
                clip_grad_norm(&mut grads, max_norm);
            }
            optimizer.step(model.params_mut(), &grads)?;
            tally.add(config.loss, value.as_f64(), &prediction, &batch.target);
            match scalar.as_mut() {
                Some(s) => s.recycle(grads, prediction),
                // Their storage serves the next step's operations (tensor::pool).
                None => grads
                    .into_iter()
                    .flatten()
                    .chain([prediction])
                    .for_each(crate::tensor::pool::recycle),
            }
            on_event(&Event::Step {
                epoch,
                batch: batch_index,
                batches: batches.len(),
                rows: rows.len(),
                loss: value.as_f64(),
            });
        }
        let validation_metrics = validation
            .map(|v| evaluate(model, v, config.loss))
            .transpose()?;
        let metrics = EpochMetrics {
            epoch,
            train: tally.metrics(config.loss),
            validation: validation_metrics,
            lr,
            seconds: started.elapsed().as_secs_f64(),
        };
        on_event(&Event::Epoch(&metrics));
        let monitored = metrics.validation.map_or(metrics.train.loss, |m| m.loss);
        history.epochs.push(metrics);
        if epoch + 1 < config.epochs && stopping() {
            history.interrupted = Some(Position {
                epoch: epoch + 1,
                batch: 0,
            });
            return Ok(history);
        }
        if let Some(stopping) = config.early_stopping {
            let improved = best
                .as_ref()
                .is_none_or(|(b, _, _)| monitored < b - stopping.min_delta);
            if improved {
                let snapshot = if stopping.restore_best {
                    model.params().to_vec()
                } else {
                    Vec::new()
                };
                best = Some((monitored, epoch, snapshot));
            } else if epoch - best.as_ref().map_or(0, |b| b.1) >= stopping.patience {
                history.stopped_early = true;
                break;
            }
        }
    }
    if let (Some(stopping), Some((_, epoch, snapshot))) = (config.early_stopping, best) {
        history.best_epoch = Some(epoch);
        if stopping.restore_best {
            model.params_mut().clone_from_slice(&snapshot);
        }
    }
    Ok(history)
}

/// The model as a [`Sequential`] stack, which training runs on its fast paths (fused
/// layers, the scalar tape of small networks); any other [`Module`] trains on its own
/// [`Module::forward`], one node per operation.
fn as_sequential<F: Float, M: Module<F>>(model: &M) -> Option<&Sequential<F>> {
    (model as &dyn std::any::Any).downcast_ref::<Sequential<F>>()
}
