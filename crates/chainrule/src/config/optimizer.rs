//! The contract's `optimizer` object: which optimizer, and its hyper-parameters.

use super::json::Fields;
use crate::Result;
use crate::error::invalid;
use serde_json::Value;

/// An optimizer and its hyper-parameters (PyTorch's names and defaults).
///
/// ```
/// use chainrule::optim::OptimizerConfig;
/// let c = OptimizerConfig::from_json(&serde_json::json!({"type": "adam"}))?;
/// assert_eq!(c, OptimizerConfig::Adam { lr: 1e-3, betas: (0.9, 0.999), eps: 1e-8,
///                                       weight_decay: 0.0, amsgrad: false, decoupled: false });
/// # Ok::<(), chainrule::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum OptimizerConfig {
    /// `torch.optim.SGD`.
    Sgd {
        /// Learning rate (default 1e-3).
        lr: f64,
        /// Momentum factor (default 0).
        momentum: f64,
        /// Dampening for momentum (default 0).
        dampening: f64,
        /// Nesterov momentum (default false).
        nesterov: bool,
        /// L2 penalty added to the gradient (default 0).
        weight_decay: f64,
    },
    /// `torch.optim.Adam`, or `AdamW` when `decoupled`.
    Adam {
        /// Learning rate (default 1e-3).
        lr: f64,
        /// Decay rates of the first and second moments (default (0.9, 0.999)).
        betas: (f64, f64),
        /// Added to the denominator (default 1e-8).
        eps: f64,
        /// Weight decay (default 0 for Adam, 1e-2 for AdamW).
        weight_decay: f64,
        /// Keep the running maximum of the second moment (default false).
        amsgrad: bool,
        /// AdamW: decay the weights directly instead of adding to the gradient.
        decoupled: bool,
    },
    /// `torch.optim.RMSprop`.
    RmsProp {
        /// Learning rate (default 1e-2).
        lr: f64,
        /// Smoothing constant (default 0.99).
        alpha: f64,
        /// Added to the denominator (default 1e-8).
        eps: f64,
        /// Momentum factor (default 0).
        momentum: f64,
        /// Normalise by the centred second moment (default false).
        centered: bool,
        /// L2 penalty (default 0).
        weight_decay: f64,
    },
    /// `torch.optim.Adagrad`.
    Adagrad {
        /// Learning rate (default 1e-2).
        lr: f64,
        /// Learning-rate decay (default 0).
        lr_decay: f64,
        /// Added to the denominator (default 1e-10).
        eps: f64,
        /// L2 penalty (default 0).
        weight_decay: f64,
        /// Starting value of the squared-gradient sums (default 0).
        initial_accumulator_value: f64,
    },
    /// `torch.optim.Adadelta` (revision 2 of the contract).
    Adadelta {
        /// Learning rate, scaling the update (default 1.0).
        lr: f64,
        /// Decay of the running means of the squared gradient and update, in [0, 1]
        /// (default 0.9).
        rho: f64,
        /// Added inside both square roots (default 1e-6).
        eps: f64,
        /// L2 penalty (default 0).
        weight_decay: f64,
    },
}

impl OptimizerConfig {
    /// The optimizer `kind` (`sgd`, `adam`, `adamw`, `rmsprop`, `adagrad`,
    /// `adadelta`) with learning rate `lr` and torch.optim's defaults for the rest:
    /// the contract's `{"type": kind, "lr": lr}`.
    ///
    /// # Errors
    /// As [`OptimizerConfig::from_json`]: an unknown kind, a negative or non-finite lr.
    ///
    /// ```
    /// use chainrule::optim::OptimizerConfig;
    /// let adadelta = OptimizerConfig::named("adadelta", 1.0)?;
    /// assert_eq!(adadelta, OptimizerConfig::Adadelta { lr: 1.0, rho: 0.9, eps: 1e-6, weight_decay: 0.0 });
    /// assert!(OptimizerConfig::named("adam", -0.1).is_err());
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn named(kind: &str, lr: f64) -> Result<OptimizerConfig> {
        if !lr.is_finite() {
            return Err(invalid("optimizer.lr", format!("must be finite, got {lr}")));
        }
        OptimizerConfig::from_json(&serde_json::json!({ "type": kind, "lr": lr }))
    }

    /// Reads the contract's `optimizer` object, applying PyTorch's defaults and
    /// rejecting what PyTorch rejects.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] naming the field: a missing or unknown `type`, an
    /// unknown field, a wrong JSON type, a value out of range (negative lr, eps,
    /// momentum, weight decay, alpha, lr_decay or initial accumulator; betas outside
    /// [0, 1); rho outside [0, 1]; nesterov without momentum or with dampening).
    ///
    /// ```
    /// use chainrule::optim::OptimizerConfig;
    /// let err = OptimizerConfig::from_json(&serde_json::json!({"type": "sgd", "lr": -1}))
    ///     .unwrap_err();
    /// assert_eq!(err.to_string(), "optimizer.lr: must be ≥ 0, got -1");
    /// let adadelta = OptimizerConfig::from_json(&serde_json::json!({"type": "adadelta"}))?;
    /// assert_eq!(adadelta, OptimizerConfig::Adadelta { lr: 1.0, rho: 0.9, eps: 1e-6, weight_decay: 0.0 });
    /// let err = OptimizerConfig::from_json(&serde_json::json!({"type": "adadelta", "rho": 1.5}))
    ///     .unwrap_err();
    /// assert_eq!(err.to_string(), "optimizer.rho: must be in [0, 1], got 1.5");
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn from_json(value: &Value) -> Result<OptimizerConfig> {
        let mut f = Fields::new("optimizer", value.clone())?;
        let kind = f.required_string("type")?;
        let non_negative = |f: &mut Fields, key: &str, default: f64| -> Result<f64> {
            let v = f.number(key)?.unwrap_or(default);
            if v < 0.0 {
                return Err(invalid(f.name(key), format!("must be ≥ 0, got {v}")));
            }
            Ok(v)
        };
        let config = match kind.as_str() {
            "sgd" => {
                let lr = non_negative(&mut f, "lr", 1e-3)?;
                let momentum = non_negative(&mut f, "momentum", 0.0)?;
                let dampening = f.number("dampening")?.unwrap_or(0.0);
                let nesterov = f.boolean("nesterov")?.unwrap_or(false);
                let weight_decay = non_negative(&mut f, "weight_decay", 0.0)?;
                if nesterov && (momentum <= 0.0 || dampening != 0.0) {
                    return Err(invalid(
                        f.name("nesterov"),
                        "Nesterov momentum requires a momentum > 0 and zero dampening",
                    ));
                }
                OptimizerConfig::Sgd {
                    lr,
                    momentum,
                    dampening,
                    nesterov,
                    weight_decay,
                }
            }
            "adam" | "adamw" => {
                let decoupled = kind == "adamw";
                let lr = non_negative(&mut f, "lr", 1e-3)?;
                let betas = f.pair("betas")?.unwrap_or((0.9, 0.999));
                for (i, beta) in [betas.0, betas.1].into_iter().enumerate() {
                    if !(0.0..1.0).contains(&beta) {
                        return Err(invalid(
                            f.name("betas"),
                            format!("beta {i} must be in [0, 1), got {beta}"),
                        ));
                    }
                }
                let eps = non_negative(&mut f, "eps", 1e-8)?;
                let weight_decay =
                    non_negative(&mut f, "weight_decay", if decoupled { 1e-2 } else { 0.0 })?;
                let amsgrad = f.boolean("amsgrad")?.unwrap_or(false);
                OptimizerConfig::Adam {
                    lr,
                    betas,
                    eps,
                    weight_decay,
                    amsgrad,
                    decoupled,
                }
            }
            "rmsprop" => OptimizerConfig::RmsProp {
                lr: non_negative(&mut f, "lr", 1e-2)?,
                alpha: non_negative(&mut f, "alpha", 0.99)?,
                eps: non_negative(&mut f, "eps", 1e-8)?,
                momentum: non_negative(&mut f, "momentum", 0.0)?,
                centered: f.boolean("centered")?.unwrap_or(false),
                weight_decay: non_negative(&mut f, "weight_decay", 0.0)?,
            },
            "adagrad" => OptimizerConfig::Adagrad {
                lr: non_negative(&mut f, "lr", 1e-2)?,
                lr_decay: non_negative(&mut f, "lr_decay", 0.0)?,
                eps: non_negative(&mut f, "eps", 1e-10)?,
                weight_decay: non_negative(&mut f, "weight_decay", 0.0)?,
                initial_accumulator_value: non_negative(&mut f, "initial_accumulator_value", 0.0)?,
            },
            "adadelta" => {
                let lr = non_negative(&mut f, "lr", 1.0)?;
                let rho = f.number("rho")?.unwrap_or(0.9);
                if !(0.0..=1.0).contains(&rho) {
                    return Err(invalid(
                        f.name("rho"),
                        format!("must be in [0, 1], got {rho}"),
                    ));
                }
                OptimizerConfig::Adadelta {
                    lr,
                    rho,
                    eps: non_negative(&mut f, "eps", 1e-6)?,
                    weight_decay: non_negative(&mut f, "weight_decay", 0.0)?,
                }
            }
            other => {
                return Err(invalid(
                    f.name("type"),
                    format!(
                        "unknown optimizer {other:?} (expected sgd, adam, adamw, rmsprop, adagrad or adadelta)"
                    ),
                ));
            }
        };
        f.finish()?;
        Ok(config)
    }

    /// The learning rate.
    ///
    /// ```
    /// use chainrule::optim::OptimizerConfig;
    /// let c = OptimizerConfig::from_json(&serde_json::json!({"type": "rmsprop"}))?;
    /// assert_eq!(c.lr(), 0.01);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn lr(&self) -> f64 {
        match *self {
            OptimizerConfig::Sgd { lr, .. }
            | OptimizerConfig::Adam { lr, .. }
            | OptimizerConfig::RmsProp { lr, .. }
            | OptimizerConfig::Adagrad { lr, .. }
            | OptimizerConfig::Adadelta { lr, .. } => lr,
        }
    }

    /// The same optimizer with learning rate `lr` (what a schedule sets for an
    /// epoch).
    ///
    /// ```
    /// use chainrule::optim::OptimizerConfig;
    /// let c = OptimizerConfig::from_json(&serde_json::json!({"type": "sgd", "momentum": 0.9}))?;
    /// assert_eq!(c.with_lr(0.5), OptimizerConfig::from_json(&serde_json::json!({"type": "sgd", "momentum": 0.9, "lr": 0.5}))?);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn with_lr(mut self, lr: f64) -> OptimizerConfig {
        *self.lr_mut() = lr;
        self
    }

    /// Every hyper-parameter as the `optimizer` object names it, defaults included:
    /// [`OptimizerConfig::from_json`] reads it back to the same optimizer.
    ///
    /// ```
    /// use chainrule::optim::OptimizerConfig;
    /// for kind in ["sgd", "adam", "adamw", "rmsprop", "adagrad", "adadelta"] {
    ///     let c = OptimizerConfig::from_json(&serde_json::json!({"type": kind}))?;
    ///     assert_eq!(OptimizerConfig::from_json(&c.to_json())?, c);
    /// }
    /// let adam = OptimizerConfig::from_json(&serde_json::json!({"type": "adam"}))?;
    /// assert_eq!(adam.to_json()["betas"], serde_json::json!([0.9, 0.999]));
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn to_json(&self) -> Value {
        match *self {
            OptimizerConfig::Sgd {
                lr,
                momentum,
                dampening,
                nesterov,
                weight_decay,
            } => serde_json::json!({"type": "sgd", "lr": lr, "momentum": momentum,
                "dampening": dampening, "nesterov": nesterov, "weight_decay": weight_decay}),
            OptimizerConfig::Adam {
                lr,
                betas,
                eps,
                weight_decay,
                amsgrad,
                decoupled,
            } => serde_json::json!({"type": if decoupled { "adamw" } else { "adam" }, "lr": lr,
                "betas": [betas.0, betas.1], "eps": eps, "weight_decay": weight_decay,
                "amsgrad": amsgrad}),
            OptimizerConfig::RmsProp {
                lr,
                alpha,
                eps,
                momentum,
                centered,
                weight_decay,
            } => serde_json::json!({"type": "rmsprop", "lr": lr, "alpha": alpha, "eps": eps,
                "momentum": momentum, "centered": centered, "weight_decay": weight_decay}),
            OptimizerConfig::Adagrad {
                lr,
                lr_decay,
                eps,
                weight_decay,
                initial_accumulator_value,
            } => serde_json::json!({"type": "adagrad", "lr": lr, "lr_decay": lr_decay,
                "eps": eps, "weight_decay": weight_decay,
                "initial_accumulator_value": initial_accumulator_value}),
            OptimizerConfig::Adadelta {
                lr,
                rho,
                eps,
                weight_decay,
            } => serde_json::json!({"type": "adadelta", "lr": lr, "rho": rho, "eps": eps,
                "weight_decay": weight_decay}),
        }
    }

    pub(crate) fn lr_mut(&mut self) -> &mut f64 {
        match self {
            OptimizerConfig::Sgd { lr, .. }
            | OptimizerConfig::Adam { lr, .. }
            | OptimizerConfig::RmsProp { lr, .. }
            | OptimizerConfig::Adagrad { lr, .. }
            | OptimizerConfig::Adadelta { lr, .. } => lr,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::OptimizerConfig;
    use serde_json::json;

    fn error(config: serde_json::Value) -> String {
        OptimizerConfig::from_json(&config).unwrap_err().to_string()
    }

    #[test]
    fn adadelta_takes_torch_optims_defaults_and_settings() {
        // torch.optim.Adadelta(params): lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.
        assert_eq!(
            OptimizerConfig::from_json(&json!({"type": "adadelta"})).unwrap(),
            OptimizerConfig::Adadelta {
                lr: 1.0,
                rho: 0.9,
                eps: 1e-6,
                weight_decay: 0.0
            }
        );
        let set =
            json!({"type": "adadelta", "lr": 0.5, "rho": 0.8, "eps": 1e-4, "weight_decay": 0.05});
        assert_eq!(
            OptimizerConfig::from_json(&set).unwrap(),
            OptimizerConfig::Adadelta {
                lr: 0.5,
                rho: 0.8,
                eps: 1e-4,
                weight_decay: 0.05
            }
        );
    }

    #[test]
    fn adadelta_rejects_what_torch_optim_rejects_naming_the_field() {
        // PyTorch: `0 <= lr`, `0 <= rho <= 1`, `0 <= eps`, `0 <= weight_decay`; the
        // ends of rho's range are accepted (PyTorch accepts them too).
        for rho in [0.0, 1.0] {
            assert!(OptimizerConfig::from_json(&json!({"type": "adadelta", "rho": rho})).is_ok());
        }
        let cases = [
            (json!({"lr": -1.0}), "optimizer.lr: must be ≥ 0, got -1"),
            (
                json!({"rho": -0.1}),
                "optimizer.rho: must be in [0, 1], got -0.1",
            ),
            (
                json!({"rho": 1.5}),
                "optimizer.rho: must be in [0, 1], got 1.5",
            ),
            (
                json!({"eps": -1e-6}),
                "optimizer.eps: must be ≥ 0, got -0.000001",
            ),
            (
                json!({"weight_decay": -0.5}),
                "optimizer.weight_decay: must be ≥ 0, got -0.5",
            ),
            (
                json!({"rho": "0.9"}),
                "optimizer.rho: expected a number, got a string",
            ),
            (json!({"momentum": 0.9}), "optimizer.momentum"),
        ];
        for (fields, message) in cases {
            let mut config = fields.clone();
            config["type"] = json!("adadelta");
            let err = error(config);
            assert!(err.starts_with(message), "{fields}: {err}");
        }
        assert!(error(json!({"type": "adadelta", "momentum": 0.9})).contains("unknown"));
    }

    #[test]
    fn an_unknown_type_lists_every_optimizer() {
        let err = error(json!({"type": "lbfgs"}));
        for name in ["sgd", "adam", "adamw", "rmsprop", "adagrad", "adadelta"] {
            assert!(err.contains(name), "{name} in {err}");
        }
    }
}
