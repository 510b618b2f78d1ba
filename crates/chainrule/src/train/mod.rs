//! Training: [`fit`] with mini-batches, a validation set, metrics, learning-rate
//! schedules, gradient clipping and early stopping; [`evaluate`] and [`predict`];
//! [`loss_and_grads`] for one batch. The interchange contract's `train` is `fit` with
//! its [`TrainConfig`] read from JSON and no validation set; its `grad` is
//! `loss_and_grads` over all of x.

mod fused;
mod gradients;
mod scalar_path;

pub use crate::config::{EarlyStopping, MAX_EPOCHS, TrainConfig};

use crate::data::{Batches, Dataset, Inputs, Target};
use crate::loss::Loss;
use crate::nn::{Mode, Module, Param, Sequential};
use crate::optim::Optimizer;
use crate::parallel::Team;
use crate::{Float, Result, Tape, Tensor};
use gradients::Gradients;
use std::borrow::Cow;
#[cfg(not(target_arch = "wasm32"))]
use std::time::Instant;
#[cfg(target_arch = "wasm32")]
use wasm_clock::Instant;

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
    /// The epoch with the best monitored loss: the validation loss when there is a
    /// validation set (else, with early stopping on, the training loss).
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
        /// The epoch's training metrics so far: the running mean of the loss (and
        /// the accuracy) over its batches up to this one, a resumed epoch's earlier
        /// batches included; after the last batch, the epoch's `train` metrics.
        epoch_so_far: Metrics,
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

/// Combines per-batch losses (and correct counts) into the loss over all rows: the
/// running sums behind an epoch's training [`Metrics`]. Part of a [`TrainState`], so
/// that an epoch resumed part-way reports the metrics of all its batches, and early
/// stopping without a validation set sees the same loss as a run never stopped.
///
/// ```
/// use chainrule::train::Tally;
/// let t = Tally { weighted_loss: 3.0, rows: 4, correct: 3, judged: 4, classification: true };
/// let m = t.metrics(chainrule::loss::Loss::CrossEntropy);
/// assert_eq!((m.loss, m.accuracy), (0.75, Some(0.75)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Tally {
    /// The sum of the batch losses, each times its rows (for a loss that averages)
    /// or as it is (for one that sums, see [`Loss::sums`]).
    pub weighted_loss: f64,
    /// Rows added.
    pub rows: usize,
    /// Correct predictions, for a classification loss.
    pub correct: usize,
    /// Predictions judged (rows, or elements for `bce`).
    pub judged: usize,
    /// Whether the loss is a classification loss (so that there is an accuracy).
    pub classification: bool,
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

    /// The loss over the rows added so far, and the accuracy for classification.
    ///
    /// ```
    /// use chainrule::{loss::Loss, train::Tally};
    /// let t = Tally { weighted_loss: 6.0, rows: 3, ..Tally::default() };
    /// assert_eq!(t.metrics(Loss::Mse).loss, 2.0);   // averaged over the rows
    /// assert_eq!(t.metrics(Loss::Sse).loss, 6.0);   // summed
    /// assert_eq!(Tally::default().metrics(Loss::Mse).accuracy, None);
    /// ```
    pub fn metrics(&self, loss: Loss) -> Metrics {
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

/// What one batch's forward and backward pass produce, with the gradients in the
/// form of the tape that computed them (`G`): a tensor per parameter, or the scalar
/// tape's one vector.
struct BatchPass<F: Float, G> {
    loss: F,
    grads: G,
    prediction: Tensor<F>,
    /// Where non-finite values first appear, when the loss or a gradient is not finite.
    anomaly: Option<String>,
}

impl<F: Float, G> BatchPass<F, G> {
    /// The same pass with its gradients wrapped by `wrap`.
    fn wrap_grads<H>(self, wrap: impl FnOnce(G) -> H) -> BatchPass<F, H> {
        BatchPass {
            loss: self.loss,
            grads: wrap(self.grads),
            prediction: self.prediction,
            anomaly: self.anomaly,
        }
    }
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
) -> Result<BatchPass<F, Vec<Option<Tensor<F>>>>> {
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
) -> Result<BatchPass<F, Vec<Option<Tensor<F>>>>> {
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
/// thousand rows at a time. `x` is a tensor or other [`Inputs`]: lent inputs are
/// read in place, a thousand rows copied at a time.
///
/// # Errors
/// Shape errors when `x` does not fit the model.
///
/// ```
/// use chainrule::nn::{Module, Sequential};
/// use chainrule::{train, Tensor};
/// let mut m = Sequential::<f64>::from_json(r#"{"layers": [{"type": "linear", "in": 2, "out": 3}, {"type": "softmax"}]}"#, 0)?;
/// let p = train::predict(&mut m, &Tensor::zeros(&[5, 2]))?;
/// assert_eq!(p.shape(), &[5, 3]);
/// // The same from memory the caller lends.
/// let zeros = [0.0f64; 10];
/// let lent = ndarray::ArrayViewD::from_shape(ndarray::IxDyn(&[5, 2]), &zeros[..]).unwrap();
/// assert_eq!(train::predict(&mut m, &lent)?, p);
/// # Ok::<(), chainrule::Error>(())
/// ```
pub fn predict<F: Float, M: Module<F>, X: Inputs<F> + ?Sized>(
    model: &mut M,
    x: &X,
) -> Result<Tensor<F>> {
    model.set_mode(Mode::Eval);
    let model = &*model;
    let rows = x.shape().first().copied().unwrap_or(0);
    let mut parts = Vec::new();
    for start in (0..rows).step_by(EVAL_BATCH) {
        let tape = Tape::new();
        let out = tape.no_grad(|| {
            let params = model.bind(&tape);
            model.forward(
                &params,
                tape.constant(x.narrow_rows(start, EVAL_BATCH.min(rows - start))?),
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
/// classification, the accuracy of `model` on `data`, a thousand rows at a time
/// (lent inputs are read in place, a thousand rows copied at a time).
///
/// # Errors
/// Shape errors when the data does not fit the model and loss.
///
/// ```
/// use chainrule::data::{Dataset, Target};
/// use chainrule::loss::Loss;
/// use chainrule::nn::Sequential;
/// use chainrule::{train, Tensor};
/// let mut m = Sequential::<f64>::from_json(r#"{"layers": [{"type": "linear", "in": 2, "out": 3}]}"#, 0)?;
/// let data = Dataset::new(Tensor::zeros(&[4, 2]), Target::Classes(vec![0, 1, 2, 0]))?;
/// let metrics = train::evaluate(&mut m, &data, Loss::CrossEntropy)?;
/// assert!(metrics.accuracy.is_some());
/// // Inputs lent from the caller's memory give the same metrics.
/// let zeros = [0.0f64; 8];
/// let lent = ndarray::ArrayViewD::from_shape(ndarray::IxDyn(&[4, 2]), &zeros[..]).unwrap();
/// let lent = Dataset::new(lent, Target::Classes(vec![0, 1, 2, 0]))?;
/// assert_eq!(train::evaluate(&mut m, &lent, Loss::CrossEntropy)?, metrics);
/// # Ok::<(), chainrule::Error>(())
/// ```
pub fn evaluate<F: Float, M: Module<F>, X: Inputs<F>>(
    model: &mut M,
    data: &Dataset<F, X>,
    loss: Loss,
) -> Result<Metrics> {
    model.set_mode(Mode::Eval);
    let model = &*model;
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
/// The inputs of `train` and `validation` are tensors, or both another kind of
/// [`Inputs`]: lent inputs are read in place, each batch copying its own rows.
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
///
/// // The same step with the input lent from the caller's memory.
/// m.params_mut()[0].value = Tensor::full(&[1, 1], 2.0);
/// let one = [1.0f64];
/// let lent = ndarray::ArrayViewD::from_shape(ndarray::IxDyn(&[1, 1]), &one[..]).unwrap();
/// let data = Dataset::new(lent, Target::Values(Tensor::full(&[1, 1], 1.0)))?;
/// train::fit(&mut m, &data, Some(&data), &config, |_| {})?;
/// assert!((m.params()[0].value.item()? - 1.8).abs() < 1e-15);
/// # Ok::<(), chainrule::Error>(())
/// ```
pub fn fit<F: Float, M: Module<F>, X: Inputs<F>>(
    model: &mut M,
    train: &Dataset<F, X>,
    validation: Option<&Dataset<F, X>>,
    config: &TrainConfig,
    on_event: impl FnMut(&Event<'_>),
) -> Result<History> {
    let mut optimizer = Optimizer::new(config.optimizer.clone());
    let session = Session {
        optimizer: &mut optimizer,
        start: TrainState::default(),
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

/// The best epoch so far: the lowest monitored loss (validation, else training for
/// early stopping), the epoch that reached it, and the parameters after that epoch.
///
/// ```
/// use chainrule::nn::Param;
/// use chainrule::train::Best;
/// use chainrule::Tensor;
/// let best = Best { loss: 0.25, epoch: 3, params: vec![Param::new("w", Tensor::<f32>::zeros(&[2]))] };
/// assert_eq!(best.epoch, 3);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Best<F: Float> {
    /// The monitored loss (validation, else training) of `epoch`.
    pub loss: f64,
    /// The epoch, from 0.
    pub epoch: usize,
    /// The parameters after `epoch`, followed by the buffers (batch norm's running
    /// statistics); empty when a resumed run's checkpoint did not keep them.
    pub params: Vec<Param<F>>,
}

/// Where training is and what it remembers there, besides the model and the
/// optimizer: all that a run continued from it needs to take exactly the steps of a
/// run never stopped (the batch order and learning rates follow from the epoch
/// number alone).
///
/// ```
/// use chainrule::train::{Position, TrainState};
/// let state = TrainState::<f32>::at(Position { epoch: 2, batch: 5 });
/// assert!(state.best.is_none());
/// assert_eq!(state.epoch_so_far.rows, 0);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct TrainState<F: Float> {
    /// The first step not yet taken.
    pub position: Position,
    /// The best epoch so far (`None` before the first epoch ends, or with neither a
    /// validation set nor early stopping).
    pub best: Option<Best<F>>,
    /// The training metrics' sums over the batches of `position.epoch` taken
    /// before `position.batch`.
    pub epoch_so_far: Tally,
}

impl<F: Float> TrainState<F> {
    /// The state at `position` with nothing remembered: a new run, or one continued
    /// without early stopping's record (whose count then starts again).
    ///
    /// ```
    /// use chainrule::train::{Position, TrainState};
    /// assert_eq!(TrainState::<f64>::at(Position::default()), TrainState::default());
    /// ```
    pub fn at(position: Position) -> Self {
        TrainState {
            position,
            best: None,
            epoch_so_far: Tally::default(),
        }
    }
}

impl<F: Float> Default for TrainState<F> {
    fn default() -> Self {
        Self::at(Position::default())
    }
}

/// What a continued or interruptible run of [`fit_from`] brings along.
pub struct Session<'a, F: Float> {
    /// The optimizer, with whatever state it has (see [`Optimizer::load_state_dict`]).
    pub optimizer: &'a mut Optimizer<F>,
    /// Where to start, and what the run had recorded there
    /// ([`TrainState::default`] for a new run).
    pub start: TrainState<F>,
    /// When set (by a signal handler, say), training stops after the current step and
    /// [`History::interrupted`] says where to continue.
    pub stop: Option<&'a std::sync::atomic::AtomicBool>,
}

/// Why [`fit_checkpointed`] hands over a [`Checkpoint`].
///
/// ```
/// use chainrule::train::Moment;
/// // A caller that keeps a checkpoint every 5 epochs, and always when training stops:
/// let due = |moment: Moment, epochs_done: usize| moment != Moment::Epoch || epochs_done % 5 == 0;
/// assert!(due(Moment::Finished, 3) && due(Moment::Epoch, 10) && !due(Moment::Epoch, 3));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moment {
    /// An epoch ended (early stopping has taken it into account) and training goes on.
    Epoch,
    /// [`Session::stop`] ended training part-way; `state.position` is where to go on.
    Interrupted,
    /// Training ended: all epochs done or stopped early (best parameters restored).
    Finished,
}

/// Everything a run needs to continue from a point of [`fit_checkpointed`]: what a
/// checkpoint saves.
///
/// ```
/// use chainrule::data::{Dataset, Target};
/// use chainrule::nn::Sequential;
/// use chainrule::optim::Optimizer;
/// use chainrule::train::{self, Moment, Session, TrainConfig, TrainState};
/// use chainrule::Tensor;
/// let data = Dataset::new(Tensor::<f64>::zeros(&[4, 1]), Target::Values(Tensor::zeros(&[4, 1])))?;
/// let config = TrainConfig::from_json(r#"{"loss": "mse", "optimizer": {"type": "sgd"}, "epochs": 3}"#)?;
/// let mut m = Sequential::<f64>::from_json(r#"{"layers": [{"type": "linear", "in": 1, "out": 1}]}"#, 0)?;
/// let mut opt = Optimizer::new(config.optimizer.clone());
/// let session = Session { optimizer: &mut opt, start: TrainState::default(), stop: None };
/// let mut seen = Vec::new();
/// train::fit_checkpointed(&mut m, &data, None, &config, session, |_| {}, |c| {
///     seen.push((c.moment, c.state.position.epoch, c.history.epochs.len()));
///     Ok::<(), chainrule::Error>(())
/// })?;
/// assert_eq!(seen, [(Moment::Epoch, 1, 1), (Moment::Epoch, 2, 2), (Moment::Finished, 3, 3)]);
/// # Ok::<(), chainrule::Error>(())
/// ```
pub struct Checkpoint<'c, F: Float, M> {
    /// The model as it is now.
    pub model: &'c M,
    /// The optimizer, whose [`Optimizer::state_dict`] continues it.
    pub optimizer: &'c Optimizer<F>,
    /// The position and what training remembers there.
    pub state: &'c TrainState<F>,
    /// The epochs run in this call so far.
    pub history: &'c History,
    /// Why now.
    pub moment: Moment,
    /// The parameters and buffers of the last epoch, when early stopping has just
    /// replaced them in `model` by the best epoch's ([`Moment::Finished`] only);
    /// empty otherwise.
    pub last: &'c [Param<F>],
}

/// [`fit`] continuing a run from `session.start` with an optimizer that already holds
/// its state, and stopping early when `session.stop` is set. Batch order and learning
/// rates depend only on the epoch number, and `session.start` carries early stopping's
/// record and the partial epoch's metrics, so a run resumed at any step takes the
/// same steps as one never stopped, and ends with bit-identical parameters.
///
/// # Errors
/// As [`fit`].
///
/// ```
/// use chainrule::data::{Dataset, Target};
/// use chainrule::nn::{Module, Sequential};
/// use chainrule::optim::Optimizer;
/// use chainrule::train::{self, Position, Session, TrainConfig, TrainState};
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
/// let session = Session { optimizer: &mut opt, start: TrainState::default(), stop: Some(&stop) };
/// let mut steps = 0;
/// let history = train::fit_from(&mut part, &data, None, &config, session, |e| {
///     if let train::Event::Step { .. } = e { steps += 1; if steps == 2 { stop.store(true, std::sync::atomic::Ordering::Relaxed); } }
/// })?;
/// let at = history.interrupted.unwrap();
/// assert_eq!(at, Position { epoch: 0, batch: 2 });
/// let session = Session { optimizer: &mut opt, start: TrainState::at(at), stop: None };
/// train::fit_from(&mut part, &data, None, &config, session, |_| {})?;
/// assert_eq!(part.params(), whole.params());
/// # Ok::<(), chainrule::Error>(())
/// ```
pub fn fit_from<F: Float, M: Module<F>, X: Inputs<F>>(
    model: &mut M,
    train: &Dataset<F, X>,
    validation: Option<&Dataset<F, X>>,
    config: &TrainConfig,
    session: Session<'_, F>,
    on_event: impl FnMut(&Event<'_>),
) -> Result<History> {
    fit_checkpointed(model, train, validation, config, session, on_event, |_| {
        Ok::<(), crate::Error>(())
    })
}

/// [`fit_from`] that hands `save` a [`Checkpoint`] after every epoch that training
/// goes on from, when a stop request ends it part-way, and when it ends (after early
/// stopping has restored the best parameters). What `save` keeps of it (the model,
/// [`Optimizer::state_dict`], the [`TrainState`]) continues the run exactly; it
/// decides itself how often to keep anything. An error from `save` ends training
/// and is returned.
///
/// # Errors
/// As [`fit`], and whatever `save` returns.
///
/// ```
/// use chainrule::data::{Dataset, Target};
/// use chainrule::nn::{Module, Sequential};
/// use chainrule::optim::Optimizer;
/// use chainrule::train::{self, EarlyStopping, Moment, Session, TrainConfig, TrainState};
/// use chainrule::Tensor;
/// let data = Dataset::new(Tensor::<f64>::rand_uniform(&[20, 2], -1.0, 1.0, 0)?, Target::Classes(vec![0, 1].repeat(10)))?;
/// let mut config = TrainConfig::from_json(r#"{"loss": "cross_entropy", "optimizer": {"type": "adam", "lr": 0.5}, "batch_size": 4, "epochs": 30, "shuffle": true}"#)?;
/// config.early_stopping = Some(EarlyStopping { patience: 2, min_delta: 0.0, restore_best: true });
/// let json = r#"{"layers": [{"type": "linear", "in": 2, "out": 2}]}"#;
/// // A whole run that keeps what a checkpoint after its third epoch would hold.
/// let mut whole = Sequential::<f64>::from_json(json, 1)?;
/// let mut opt = Optimizer::new(config.optimizer.clone());
/// let mut kept = None;
/// let session = Session { optimizer: &mut opt, start: TrainState::default(), stop: None };
/// let history = train::fit_checkpointed(&mut whole, &data, None, &config, session, |_| {}, |c| {
///     if c.moment == Moment::Epoch && c.state.position.epoch == 3 {
///         kept = Some((c.model.clone(), c.optimizer.state_dict(c.model.params()), c.state.clone()));
///     }
///     Ok::<(), chainrule::Error>(())
/// })?;
/// // Continued from there, it stops early at the same epoch with the same parameters.
/// let (mut part, optimizer_state, state) = kept.unwrap();
/// let mut opt = Optimizer::new(config.optimizer.clone());
/// opt.load_state_dict(part.params(), &optimizer_state)?;
/// let session = Session { optimizer: &mut opt, start: state, stop: None };
/// let rest = train::fit_from(&mut part, &data, None, &config, session, |_| {})?;
/// assert_eq!(part.params(), whole.params());
/// assert_eq!((rest.stopped_early, rest.best_epoch), (history.stopped_early, history.best_epoch));
/// # Ok::<(), chainrule::Error>(())
/// ```
pub fn fit_checkpointed<F: Float, M: Module<F>, X: Inputs<F>, E: From<crate::Error>>(
    model: &mut M,
    train: &Dataset<F, X>,
    validation: Option<&Dataset<F, X>>,
    config: &TrainConfig,
    session: Session<'_, F>,
    on_event: impl FnMut(&Event<'_>),
    save: impl FnMut(&Checkpoint<'_, F, M>) -> std::result::Result<(), E>,
) -> std::result::Result<History, E> {
    // Threads that spin between the steps' matrix products, and flush denormals to
    // zero while training runs (see crate::parallel).
    Team::scope(crate::tensor::num_threads(), |_| {
        train_loop(model, train, validation, config, session, on_event, save)
    })
}

/// [`fit_checkpointed`]'s loop.
fn train_loop<F: Float, M: Module<F>, X: Inputs<F>, E: From<crate::Error>>(
    model: &mut M,
    train: &Dataset<F, X>,
    validation: Option<&Dataset<F, X>>,
    config: &TrainConfig,
    session: Session<'_, F>,
    mut on_event: impl FnMut(&Event<'_>),
    mut save: impl FnMut(&Checkpoint<'_, F, M>) -> std::result::Result<(), E>,
) -> std::result::Result<History, E> {
    let Session {
        optimizer,
        start: mut state,
        stop,
    } = session;
    // The record comes from a file: its parameters must fit before anything is
    // trained (restoring them at the end copies them over the model's).
    if let Some(best) = &state.best
        && !best.params.is_empty()
        && !same_names_and_shapes(&best.params, &snapshot(model))
    {
        return Err(crate::error::invalid(
            "early stopping's best parameters",
            "do not match the model's names and shapes",
        )
        .into());
    }
    let start = state.position;
    let stopping = || stop.is_some_and(|s| s.load(std::sync::atomic::Ordering::Relaxed));
    let base_lr = config.optimizer.lr();
    let order = Batches {
        rows: train.len(),
        batch_size: config.batch_size,
        shuffle: config.shuffle,
        seed: config.seed,
        drop_last: config.drop_last,
    };
    if start.batch > order.count() {
        return Err(crate::error::invalid(
            "start position",
            format!(
                "batch {} of an epoch of {} batches",
                start.batch,
                order.count()
            ),
        )
        .into());
    }
    let mut history = History::default();
    // Only for messages; saturating, since a start position may come from a file.
    let mut steps = start
        .epoch
        .saturating_mul(order.count())
        .saturating_add(start.batch);
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
        let (skip, mut tally) = if epoch == start.epoch {
            (start.batch, state.epoch_so_far)
        } else {
            (0, Tally::default())
        };
        for (batch_index, rows) in batches.iter().enumerate().skip(skip) {
            if batch_index > skip && stopping() {
                let at = Position {
                    epoch,
                    batch: batch_index,
                };
                history.interrupted = Some(at);
                state.position = at;
                state.epoch_so_far = tally;
                save(&Checkpoint {
                    model,
                    optimizer,
                    state: &state,
                    history: &history,
                    moment: Moment::Interrupted,
                    last: &[],
                })?;
                return Ok(history);
            }
            let batch = train.rows(rows)?;
            model.set_mode(Mode::Train);
            model.set_noise_key(noise_key(config.seed, steps));
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
                    pass.wrap_grads(Gradients::Flat)
                }
                None => {
                    if !scalar_proven {
                        scalar = None;
                    }
                    step_on_batch(model, &batch.x, &batch.target, config.loss, &mut tape, true)?
                        .wrap_grads(Gradients::PerParameter)
                }
            };
            steps = steps.saturating_add(1);
            if let Some(location) = anomaly {
                if config.skip_nonfinite {
                    continue;
                }
                return Err(crate::Error::NonFinite {
                    epoch: epoch + 1,
                    batch: batch_index + 1,
                    step: steps,
                    location,
                }
                .into());
            }
            if let Some(max_norm) = config.clip_grad_norm {
                grads.clip(model.params(), max_norm);
            }
            grads.apply(optimizer, model.params_mut())?;
            model.update_buffers();
            tally.add(config.loss, value.as_f64(), &prediction, &batch.target);
            match grads {
                // Flat gradients come from the scalar path, which keeps them.
                Gradients::Flat(grads) => {
                    if let Some(s) = scalar.as_mut() {
                        s.recycle(grads, prediction);
                    }
                }
                // Their storage serves the next step's operations (tensor::pool).
                Gradients::PerParameter(grads) => grads
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
                epoch_so_far: tally.metrics(config.loss),
            });
        }
        let validation_metrics = validation
            .map(|v| evaluate(&mut *model, v, config.loss))
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
        // Early stopping counts this epoch before anything is saved or a stop request
        // is honoured: a run continued from here must not count it again, nor miss it.
        let mut out_of_patience = false;
        // The best epoch is kept whenever there is a validation loss to rank epochs
        // by (a run's best checkpoint), and for early stopping on the training loss.
        if config.early_stopping.is_some() || validation.is_some() {
            let min_delta = config.early_stopping.map_or(0.0, |s| s.min_delta);
            let improved = state
                .best
                .as_ref()
                .is_none_or(|b| monitored < b.loss - min_delta);
            if improved {
                state.best = Some(Best {
                    loss: monitored,
                    epoch,
                    params: snapshot(model),
                });
            } else if let Some(stopping) = config.early_stopping
                && epoch - state.best.as_ref().map_or(0, |b| b.epoch) >= stopping.patience
            {
                out_of_patience = true;
            }
        }
        state.position = Position {
            epoch: epoch + 1,
            batch: 0,
        };
        state.epoch_so_far = Tally::default();
        if out_of_patience {
            history.stopped_early = true;
            break;
        }
        if epoch + 1 < config.epochs {
            let moment = if stopping() {
                history.interrupted = Some(state.position);
                Moment::Interrupted
            } else {
                Moment::Epoch
            };
            save(&Checkpoint {
                model,
                optimizer,
                state: &state,
                history: &history,
                moment,
                last: &[],
            })?;
            if moment == Moment::Interrupted {
                return Ok(history);
            }
        }
    }
    let mut last = Vec::new();
    if let Some(best) = &state.best {
        history.best_epoch = Some(best.epoch);
        if config.early_stopping.is_some_and(|s| s.restore_best) && !best.params.is_empty() {
            last = snapshot(model);
            // Checked at the start: the same names and shapes as the model's.
            let (params, buffers) = best.params.split_at(model.params().len());
            model.params_mut().clone_from_slice(params);
            model.buffers_mut().clone_from_slice(buffers);
        }
    }
    save(&Checkpoint {
        model,
        optimizer,
        state: &state,
        history: &history,
        moment: Moment::Finished,
        last: &last,
    })?;
    Ok(history)
}

/// A model's parameters followed by its buffers: what early stopping keeps of its
/// best epoch.
fn snapshot<F: Float, M: Module<F>>(model: &M) -> Vec<Param<F>> {
    model
        .params()
        .iter()
        .chain(model.buffers())
        .cloned()
        .collect()
}

/// The key of step `step`'s random draws (dropout) in a run seeded with `seed`: a
/// function of the two alone, so a resumed run draws what the uninterrupted one did
/// (see [`Module::set_noise_key`]).
///
/// ```
/// use chainrule::train::noise_key;
/// assert_eq!(noise_key(7, 3), noise_key(7, 3));
/// assert_ne!(noise_key(7, 3), noise_key(7, 4));
/// ```
pub fn noise_key(seed: u64, step: usize) -> u64 {
    seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (step as u64).wrapping_mul(0xd1b5_4a32_d192_ed03)
}

/// Whether two parameter lists have the same names and shapes, in order.
fn same_names_and_shapes<F: Float>(a: &[Param<F>], b: &[Param<F>]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(a, b)| a.name == b.name && a.value.shape() == b.value.shape())
}

/// The model as a [`Sequential`] stack, which training runs on its fast paths (fused
/// layers, the scalar tape of small networks); any other [`Module`] trains on its own
/// [`Module::forward`], one node per operation.
fn as_sequential<F: Float, M: Module<F>>(model: &M) -> Option<&Sequential<F>> {
    (model as &dyn std::any::Any).downcast_ref::<Sequential<F>>()
}

/// wasm32-unknown-unknown has no clock (`std::time::Instant::now` panics there): in
/// WebAssembly an epoch's recorded duration is 0 s, and the page times epochs itself.
#[cfg(target_arch = "wasm32")]
mod wasm_clock {
    use std::time::Duration;

    /// A stand-in for `std::time::Instant` whose elapsed time is always zero.
    #[derive(Clone, Copy, Debug)]
    pub(super) struct Instant;

    impl Instant {
        pub(super) fn now() -> Instant {
            Instant
        }

        pub(super) fn elapsed(&self) -> Duration {
            Duration::ZERO
        }
    }
}
