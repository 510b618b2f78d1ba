//! Gradients and training as the interchange contract defines them: the whole data
//! set as one batch for `grad`; consecutive (or seeded, shuffled) mini-batches with
//! one optimizer step each for `train`.

use crate::io::NpyArray;
use crate::json::{Fields, invalid, parse};
use crate::loss::{Loss, Target};
use crate::nn::Module;
use crate::optim::{Optimizer, OptimizerConfig};
use crate::{Float, Result, Tape, Tensor};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

/// The contract's training config.
///
/// ```
/// use chainrule::train::TrainConfig;
/// let c = TrainConfig::from_json(r#"{"loss": "mse", "optimizer": {"type": "sgd", "lr": 0.1}}"#)?;
/// assert_eq!((c.batch_size, c.epochs, c.shuffle, c.seed), (32, 1, false, 0));
/// # Ok::<(), chainrule::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    /// The loss (required).
    pub loss: Loss,
    /// The optimizer (required).
    pub optimizer: OptimizerConfig,
    /// Rows per batch (default 32; the last batch may be smaller).
    pub batch_size: usize,
    /// Passes over the data (default 1; 0 leaves the parameters unchanged).
    pub epochs: usize,
    /// Reshuffle the rows every epoch (default false: file order).
    pub shuffle: bool,
    /// Seed of the shuffling (default 0).
    pub seed: u64,
}

impl TrainConfig {
    /// Reads the contract's training config JSON.
    ///
    /// # Errors
    /// [`crate::Error::InvalidValue`] naming the field: a missing `loss` or
    /// `optimizer`, an unknown field anywhere, a wrong type or an out-of-range value.
    ///
    /// ```
    /// use chainrule::train::TrainConfig;
    /// let err = TrainConfig::from_json(r#"{"loss": "mse", "optimizer": {"type": "sgd"}, "epoch": 2}"#)
    ///     .unwrap_err();
    /// assert_eq!(err.to_string(), "epoch: unknown field");
    /// ```
    pub fn from_json(text: &str) -> Result<TrainConfig> {
        let mut f = Fields::new("", parse(text)?)?;
        let loss = Loss::from_name(&f.required_string("loss")?)?;
        let optimizer = match f.take("optimizer") {
            Some(v) => OptimizerConfig::from_json(&v)?,
            None => return Err(invalid("optimizer", "is required")),
        };
        let batch_size = match f.count("batch_size")? {
            Some(0) => return Err(invalid("batch_size", "must be at least 1")),
            Some(n) => usize::try_from(n).map_err(|_| invalid("batch_size", "too large"))?,
            None => 32,
        };
        let epochs = match f.count("epochs")? {
            Some(n) => usize::try_from(n).map_err(|_| invalid("epochs", "too large"))?,
            None => 1,
        };
        let shuffle = f.boolean("shuffle")?.unwrap_or(false);
        let seed = f.count("seed")?.unwrap_or(0);
        f.finish()?;
        Ok(TrainConfig {
            loss,
            optimizer,
            batch_size,
            epochs,
            shuffle,
            seed,
        })
    }
}

impl<F: Float> Target<F> {
    /// Interprets a `y.npy` array for `loss` as the contract says: float targets
    /// `[N, out]` (`[N]` read as `[N, 1]` when out is 1), or for cross-entropy integer
    /// class indices `[N]` (int32/int64, each in `[0, out)`) or class probabilities
    /// `[N, out]`.
    ///
    /// # Errors
    /// [`crate::Error::InvalidValue`] (field `targets`) for a wrong dtype or shape, a
    /// class index out of range, or a non-finite value.
    ///
    /// ```
    /// use chainrule::{io::NpyArray, loss::{Loss, Target}};
    /// let y = NpyArray::I64(vec![2], vec![3, 0]);
    /// assert_eq!(Target::<f32>::from_npy(&y, Loss::CrossEntropy, 2, 4)?, Target::Classes(vec![3, 0]));
    /// assert!(Target::<f32>::from_npy(&y, Loss::Mse, 2, 1).is_err());
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn from_npy(y: &NpyArray, loss: Loss, rows: usize, outputs: usize) -> Result<Target<F>> {
        let bad = |message: String| invalid("targets", message);
        let shape = y.shape().to_vec();
        if !y.is_float() {
            if loss != Loss::CrossEntropy {
                return Err(bad(format!(
                    "dtype {} is not allowed for {} (targets must be float32 or float64)",
                    y.dtype(),
                    loss.name()
                )));
            }
            let classes: Vec<i64> = match y {
                NpyArray::I32(_, v) => v.iter().map(|&c| i64::from(c)).collect(),
                NpyArray::I64(_, v) => v.clone(),
                other => {
                    return Err(bad(format!(
                        "dtype {} is not allowed (class indices must be int32 or int64)",
                        other.dtype()
                    )));
                }
            };
            if shape != [rows] {
                return Err(bad(format!(
                    "class indices must have shape [{rows}], got {shape:?}"
                )));
            }
            if let Some(c) = classes
                .iter()
                .find(|&&c| c < 0 || c as u64 >= outputs as u64)
            {
                return Err(bad(format!("class index {c} is outside [0, {outputs})")));
            }
            return Ok(Target::Classes(
                classes.iter().map(|&c| c as usize).collect(),
            ));
        }
        let values = y.to_tensor::<F>()?;
        if !values.all_finite() {
            return Err(bad("holds a non-finite number".into()));
        }
        let values = if shape == [rows] && outputs == 1 {
            values.reshape(&[rows, 1])?
        } else {
            values
        };
        if values.shape() != [rows, outputs] {
            return Err(bad(format!(
                "must have shape [{rows}, {outputs}], got {shape:?}"
            )));
        }
        Ok(Target::Values(values))
    }

    /// The number of rows (samples).
    ///
    /// ```
    /// use chainrule::loss::Target;
    /// assert_eq!(Target::<f32>::Classes(vec![0, 2, 1]).rows(), 3);
    /// ```
    pub fn rows(&self) -> usize {
        match self {
            Target::Values(t) => t.shape().first().copied().unwrap_or(1),
            Target::Classes(c) => c.len(),
        }
    }

    /// The targets of the given rows.
    ///
    /// # Errors
    /// [`crate::Error::Index`] for a row out of range.
    ///
    /// ```
    /// use chainrule::loss::Target;
    /// let t = Target::<f32>::Classes(vec![5, 6, 7]).select_rows(&[2, 0])?;
    /// assert_eq!(t, Target::Classes(vec![7, 5]));
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn select_rows(&self, rows: &[usize]) -> Result<Target<F>> {
        Ok(match self {
            Target::Values(t) => Target::Values(t.select_rows(rows)?),
            Target::Classes(c) => Target::Classes(
                rows.iter()
                    .map(|&r| {
                        c.get(r).copied().ok_or(crate::Error::Index {
                            op: "select_rows",
                            index: r,
                            len: c.len(),
                        })
                    })
                    .collect::<Result<_>>()?,
            ),
        })
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
/// use chainrule::loss::{Loss, Target};
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
    let tape = Tape::new();
    let params = model.bind(&tape);
    let prediction = model.forward(&params, tape.constant(x.clone()))?;
    let value = loss.compute(prediction, target)?;
    let mut grads = value.backward()?;
    let grads = params.iter().map(|&p| grads.take(p)).collect();
    Ok((value.item()?, grads))
}

/// Trains `model` on `(x, target)` as `config` says: per epoch, the rows in file
/// order (or shuffled from `seed` and the epoch number), cut into batches of
/// `batch_size` (the last may be smaller), one optimizer step per batch. Calls
/// `on_step(epoch, batch, loss)` after each step.
///
/// # Errors
/// Shape errors when the data does not fit the model and loss.
///
/// ```
/// use chainrule::loss::Target;
/// use chainrule::nn::{Module, Sequential};
/// use chainrule::train::{self, TrainConfig};
/// use chainrule::Tensor;
/// let mut m = Sequential::<f64>::from_json(r#"{"layers": [{"type": "linear", "in": 1, "out": 1, "bias": false}]}"#, 0)?;
/// m.params_mut()[0].value = Tensor::full(&[1, 1], 2.0);
/// let config = TrainConfig::from_json(r#"{"loss": "sse", "optimizer": {"type": "sgd", "lr": 0.1}}"#)?;
/// let x = Tensor::full(&[1, 1], 1.0);
/// train::fit(&mut m, &x, &Target::Values(Tensor::full(&[1, 1], 1.0)), &config, |_, _, _| {})?;
/// assert!((m.params()[0].value.item()? - 1.8).abs() < 1e-15);   // notebook 001
/// # Ok::<(), chainrule::Error>(())
/// ```
pub fn fit<F: Float, M: Module<F>>(
    model: &mut M,
    x: &Tensor<F>,
    target: &Target<F>,
    config: &TrainConfig,
    mut on_step: impl FnMut(usize, usize, F),
) -> Result<()> {
    let rows = x.shape().first().copied().unwrap_or(0);
    let mut optimizer = Optimizer::new(config.optimizer.clone());
    let mut order: Vec<usize> = (0..rows).collect();
    for epoch in 0..config.epochs {
        if config.shuffle {
            order = (0..rows).collect();
            let mut rng = ChaCha8Rng::seed_from_u64(config.seed.wrapping_add(epoch as u64));
            order.shuffle(&mut rng);
        }
        for (batch, indices) in order.chunks(config.batch_size).enumerate() {
            let contiguous = indices.windows(2).all(|w| w[1] == w[0] + 1);
            let xb = if contiguous {
                x.narrow(0, indices[0], indices.len())?
            } else {
                x.select_rows(indices)?
            };
            let yb = target.select_rows(indices)?;
            let (loss, grads) = loss_and_grads(model, &xb, &yb, config.loss)?;
            optimizer.step(model.params_mut(), &grads)?;
            on_step(epoch, batch, loss);
        }
    }
    Ok(())
}
