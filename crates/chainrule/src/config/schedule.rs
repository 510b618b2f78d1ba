//! Learning-rate schedules, as the run configs write them.

use super::json::Fields;
use crate::Result;
use crate::error::invalid;
use serde_json::Value;

/// A learning-rate schedule, stepped once per epoch like PyTorch's epoch schedulers.
///
/// ```
/// use chainrule::optim::Schedule;
/// let s = Schedule::Step { step_size: 2, gamma: 0.5 };
/// assert_eq!((0..5).map(|e| s.lr(1.0, e)).collect::<Vec<_>>(), vec![1.0, 1.0, 0.5, 0.5, 0.25]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Schedule {
    /// The base learning rate throughout.
    Constant,
    /// `StepLR`: multiply by `gamma` every `step_size` epochs.
    Step {
        /// Epochs between decays.
        step_size: usize,
        /// Decay factor.
        gamma: f64,
    },
    /// `ExponentialLR`: multiply by `gamma` every epoch.
    Exponential {
        /// Decay factor.
        gamma: f64,
    },
    /// `CosineAnnealingLR`: from the base rate down to `eta_min` over `t_max` epochs,
    /// lr = eta_min + (base − eta_min)·(1 + cos(π·epoch/t_max))/2.
    Cosine {
        /// Epochs of the half cosine.
        t_max: usize,
        /// The smallest learning rate.
        eta_min: f64,
    },
    /// `LinearLR` as warm-up: the factor grows linearly from `start_factor` to 1 over
    /// `warmup_epochs` epochs, then stays 1.
    LinearWarmup {
        /// The factor at epoch 0.
        start_factor: f64,
        /// Epochs to reach the base rate.
        warmup_epochs: usize,
    },
}

impl Schedule {
    /// Reads a schedule object: `{"type": "constant"}`,
    /// `{"type": "step", "step_size": 2, "gamma": 0.5}`,
    /// `{"type": "exponential", "gamma": 0.9}`,
    /// `{"type": "cosine", "t_max": 10, "eta_min": 0.0}` or
    /// `{"type": "linear_warmup", "start_factor": 0.1, "warmup_epochs": 5}`
    /// (`gamma` defaults to 0.1 for step, `eta_min` to 0, `start_factor` to 1/3 and
    /// `warmup_epochs` to 5, as PyTorch's).
    ///
    /// # Errors
    /// [`Error::InvalidValue`] naming the field for an unknown type or field, a wrong
    /// JSON type, or a value out of range (a step size or t_max of 0, a negative
    /// gamma, a start factor outside (0, 1]).
    ///
    /// ```
    /// use chainrule::optim::Schedule;
    /// let s = Schedule::from_json(&serde_json::json!({"type": "exponential", "gamma": 0.9}))?;
    /// assert_eq!(s, Schedule::Exponential { gamma: 0.9 });
    /// assert!(Schedule::from_json(&serde_json::json!({"type": "step"})).is_err()); // step_size is required
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn from_json(value: &Value) -> Result<Schedule> {
        let mut f = Fields::new("schedule", value.clone())?;
        let kind = f.required_string("type")?;
        let positive = |f: &mut Fields, key: &str, default: Option<u64>| -> Result<usize> {
            match f.count(key)?.or(default) {
                None => Err(invalid(f.name(key), "is required")),
                Some(0) => Err(invalid(f.name(key), "must be at least 1")),
                Some(n) => usize::try_from(n).map_err(|_| invalid(f.name(key), "too large")),
            }
        };
        let gamma = |f: &mut Fields, default: Option<f64>| -> Result<f64> {
            match f.number("gamma")?.or(default) {
                None => Err(invalid(f.name("gamma"), "is required")),
                Some(g) if g < 0.0 => {
                    Err(invalid(f.name("gamma"), format!("must be ≥ 0, got {g}")))
                }
                Some(g) => Ok(g),
            }
        };
        let schedule = match kind.as_str() {
            "constant" => Schedule::Constant,
            "step" => Schedule::Step {
                step_size: positive(&mut f, "step_size", None)?,
                gamma: gamma(&mut f, Some(0.1))?,
            },
            "exponential" => Schedule::Exponential {
                gamma: gamma(&mut f, None)?,
            },
            "cosine" => Schedule::Cosine {
                t_max: positive(&mut f, "t_max", None)?,
                eta_min: f.number("eta_min")?.unwrap_or(0.0),
            },
            "linear_warmup" => {
                let start_factor = f.number("start_factor")?.unwrap_or(1.0 / 3.0);
                if !(start_factor > 0.0 && start_factor <= 1.0) {
                    return Err(invalid(
                        f.name("start_factor"),
                        format!("must be in (0, 1], got {start_factor}"),
                    ));
                }
                Schedule::LinearWarmup {
                    start_factor,
                    warmup_epochs: positive(&mut f, "warmup_epochs", Some(5))?,
                }
            }
            other => {
                return Err(invalid(
                    f.name("type"),
                    format!(
                        "unknown schedule {other:?} (expected constant, step, exponential, cosine or linear_warmup)"
                    ),
                ));
            }
        };
        f.finish()?;
        Ok(schedule)
    }

    /// Every setting as the `schedule` object names it, defaults included:
    /// [`Schedule::from_json`] reads it back to the same schedule.
    ///
    /// ```
    /// use chainrule::optim::Schedule;
    /// let s = Schedule::from_json(&serde_json::json!({"type": "cosine", "t_max": 50}))?;
    /// assert_eq!(s.to_json(), serde_json::json!({"type": "cosine", "t_max": 50, "eta_min": 0.0}));
    /// assert_eq!(Schedule::from_json(&s.to_json())?, s);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn to_json(&self) -> Value {
        match *self {
            Schedule::Constant => serde_json::json!({"type": "constant"}),
            Schedule::Step { step_size, gamma } => {
                serde_json::json!({"type": "step", "step_size": step_size, "gamma": gamma})
            }
            Schedule::Exponential { gamma } => {
                serde_json::json!({"type": "exponential", "gamma": gamma})
            }
            Schedule::Cosine { t_max, eta_min } => {
                serde_json::json!({"type": "cosine", "t_max": t_max, "eta_min": eta_min})
            }
            Schedule::LinearWarmup {
                start_factor,
                warmup_epochs,
            } => serde_json::json!({"type": "linear_warmup", "start_factor": start_factor,
                "warmup_epochs": warmup_epochs}),
        }
    }
}
