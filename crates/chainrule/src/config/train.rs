//! The contract's training config (`train.json`) and early stopping.

use super::json::{Fields, parse};
use super::{OptimizerConfig, Schedule};
use crate::Result;
use crate::error::invalid;
use crate::loss::Loss;

/// The most epochs a config may ask for: more is a typo (or an attack on the
/// machine's time), not a plan.
///
/// ```
/// use chainrule::train::{TrainConfig, MAX_EPOCHS};
/// let text = format!(r#"{{"loss": "mse", "optimizer": {{"type": "sgd"}}, "epochs": {}}}"#, MAX_EPOCHS + 1);
/// assert!(TrainConfig::from_json(&text).unwrap_err().to_string().starts_with("epochs:"));
/// ```
pub const MAX_EPOCHS: usize = 1_000_000;

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
    /// Drop a last batch smaller than `batch_size` (default false; not in the
    /// contract's JSON).
    pub drop_last: bool,
    /// Learning-rate schedule, stepped per epoch (default constant).
    pub schedule: Schedule,
    /// Clip the gradients' global norm to this value before each step (default none).
    pub clip_grad_norm: Option<f64>,
    /// Stop when the monitored loss stops improving (default none).
    pub early_stopping: Option<EarlyStopping>,
    /// On a non-finite loss or gradient, skip that step instead of stopping with
    /// [`crate::Error::NonFinite`] (default false).
    pub skip_nonfinite: bool,
}

/// Early stopping: monitor the validation loss (the training loss when there is no
/// validation set) and stop after `patience` epochs without an improvement larger
/// than `min_delta` (Keras `EarlyStopping(monitor="val_loss")`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EarlyStopping {
    /// Epochs without improvement before stopping.
    pub patience: usize,
    /// The smallest decrease that counts as an improvement.
    pub min_delta: f64,
    /// Put back the parameters of the best epoch when stopping or finishing.
    pub restore_best: bool,
}

impl TrainConfig {
    /// A config with `loss` and `optimizer` and every other setting at its default:
    /// batch 32, 1 epoch, file order, seed 0, no schedule, clipping, early stopping
    /// or skipping (the defaults of the contract's JSON, which
    /// [`TrainConfig::from_json`] starts from too). The fields are public: set the
    /// others on the result.
    ///
    /// ```
    /// use chainrule::loss::Loss;
    /// use chainrule::optim::OptimizerConfig;
    /// use chainrule::train::TrainConfig;
    /// let mut config = TrainConfig::new(Loss::Mse, OptimizerConfig::named("sgd", 0.1)?);
    /// config.epochs = 5;
    /// let json = TrainConfig::from_json(r#"{"loss": "mse", "optimizer": {"type": "sgd", "lr": 0.1}, "epochs": 5}"#)?;
    /// assert_eq!(config, json);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn new(loss: Loss, optimizer: OptimizerConfig) -> TrainConfig {
        TrainConfig {
            loss,
            optimizer,
            batch_size: 32,
            epochs: 1,
            shuffle: false,
            seed: 0,
            drop_last: false,
            schedule: Schedule::Constant,
            clip_grad_norm: None,
            early_stopping: None,
            skip_nonfinite: false,
        }
    }

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
    /// assert!(err.to_string().starts_with("epoch: unknown field"));
    /// assert!(err.to_string().ends_with("did you mean epochs?)"));
    /// ```
    pub fn from_json(text: &str) -> Result<TrainConfig> {
        let mut f = Fields::new("", parse(text)?)?;
        let loss = Loss::from_name(&f.required_string("loss")?)?;
        let optimizer = match f.take("optimizer") {
            Some(v) => OptimizerConfig::from_json(&v)?,
            None => return Err(invalid("optimizer", "is required")),
        };
        let mut config = TrainConfig::new(loss, optimizer);
        match f.count("batch_size")? {
            Some(0) => return Err(invalid("batch_size", "must be at least 1")),
            Some(n) => {
                config.batch_size =
                    usize::try_from(n).map_err(|_| invalid("batch_size", "too large"))?;
            }
            None => {}
        }
        match f.count("epochs")? {
            Some(n) if n > MAX_EPOCHS as u64 => {
                return Err(invalid("epochs", format!("{n} is more than {MAX_EPOCHS}")));
            }
            Some(n) => {
                config.epochs = usize::try_from(n).map_err(|_| invalid("epochs", "too large"))?;
            }
            None => {}
        }
        if let Some(shuffle) = f.boolean("shuffle")? {
            config.shuffle = shuffle;
        }
        if let Some(seed) = f.count("seed")? {
            config.seed = seed;
        }
        f.finish()?;
        Ok(config)
    }
}
