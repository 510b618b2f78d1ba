//! Optimizers with `torch.optim`'s update rules and defaults (PyTorch 2.x, the
//! single-tensor CPU implementation, operation for operation).

use crate::json::{Fields, invalid};
use crate::nn::Param;
use crate::{Error, Float, Result, Tensor};
use serde_json::Value;
use smallvec::SmallVec;
use std::borrow::Cow;

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
}

impl OptimizerConfig {
    /// Reads the contract's `optimizer` object, applying PyTorch's defaults and
    /// rejecting what PyTorch rejects.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] naming the field: a missing or unknown `type`, an
    /// unknown field, a wrong JSON type, a value out of range (negative lr, eps,
    /// momentum, weight decay, alpha, lr_decay or initial accumulator; betas outside
    /// [0, 1); nesterov without momentum or with dampening).
    ///
    /// ```
    /// use chainrule::optim::OptimizerConfig;
    /// let err = OptimizerConfig::from_json(&serde_json::json!({"type": "sgd", "lr": -1}))
    ///     .unwrap_err();
    /// assert_eq!(err.to_string(), "optimizer.lr: must be ≥ 0, got -1");
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
            other => {
                return Err(invalid(
                    f.name("type"),
                    format!(
                        "unknown optimizer {other:?} (expected sgd, adam, adamw, rmsprop or adagrad)"
                    ),
                ));
            }
        };
        f.finish()?;
        Ok(config)
    }
}

/// The per-parameter state an optimizer keeps between steps.
#[derive(Debug, Clone, Default)]
struct State<F> {
    step: u64,
    /// SGD/RMSprop momentum buffer, Adam's first moment, RMSprop's centred average.
    first: Option<Vec<F>>,
    /// Adam's/RMSprop's second moment, Adagrad's sum of squares.
    second: Option<Vec<F>>,
    /// AMSGrad's running maximum of the second moment.
    second_max: Option<Vec<F>>,
}

/// An optimizer with its state, stepping a model's parameters.
///
/// ```
/// use chainrule::nn::Param;
/// use chainrule::optim::{Optimizer, OptimizerConfig};
/// use chainrule::Tensor;
/// let config = OptimizerConfig::from_json(&serde_json::json!({"type": "sgd", "lr": 0.1}))?;
/// let mut opt = Optimizer::new(config);
/// let mut params = vec![Param::new("w", Tensor::<f64>::scalar(1.0))];
/// opt.step(&mut params, &[Some(Tensor::scalar(2.0))])?;
/// assert_eq!(params[0].value.item()?, 0.8);
/// # Ok::<(), chainrule::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Optimizer<F: Float = f32> {
    config: OptimizerConfig,
    states: Vec<State<F>>,
}

/// `x.lerp_(end, w)` as PyTorch computes it on the CPU.
fn lerp<F: Float>(x: F, end: F, w: F) -> F {
    if w < F::from_f64(0.5) {
        x + w * (end - x)
    } else {
        end - (end - x) * (F::one() - w)
    }
}

impl<F: Float> Optimizer<F> {
    /// A fresh optimizer (no state yet).
    ///
    /// ```
    /// use chainrule::optim::{Optimizer, OptimizerConfig};
    /// let c = OptimizerConfig::from_json(&serde_json::json!({"type": "adagrad"}))?;
    /// let opt = Optimizer::<f32>::new(c.clone());
    /// assert_eq!(opt.config(), &c);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn new(config: OptimizerConfig) -> Self {
        Optimizer {
            config,
            states: Vec::new(),
        }
    }

    /// The hyper-parameters.
    ///
    /// ```
    /// use chainrule::optim::{Optimizer, OptimizerConfig};
    /// let c = OptimizerConfig::from_json(&serde_json::json!({"type": "rmsprop"}))?;
    /// assert!(matches!(Optimizer::<f64>::new(c).config(), OptimizerConfig::RmsProp { .. }));
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn config(&self) -> &OptimizerConfig {
        &self.config
    }

    /// One update of every parameter from its gradient; a parameter whose gradient is
    /// `None` is skipped, as PyTorch skips parameters with no `.grad`.
    ///
    /// # Errors
    /// [`Error::Shape`] when the number of gradients or a gradient's shape does not
    /// match the parameters.
    ///
    /// ```
    /// use chainrule::nn::Param;
    /// use chainrule::optim::{Optimizer, OptimizerConfig};
    /// use chainrule::Tensor;
    /// // Adam's first step moves each weight by lr·sign(g) (up to eps).
    /// let c = OptimizerConfig::from_json(&serde_json::json!({"type": "adam", "lr": 0.1}))?;
    /// let mut opt = Optimizer::new(c);
    /// let mut p = vec![Param::new("w", Tensor::<f64>::scalar(1.0))];
    /// opt.step(&mut p, &[Some(Tensor::scalar(-5.0))])?;
    /// assert!((p[0].value.item()? - 1.1).abs() < 1e-8);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn step(&mut self, params: &mut [Param<F>], grads: &[Option<Tensor<F>>]) -> Result<()> {
        if grads.len() != params.len() {
            return Err(Error::Shape {
                op: "optimizer step",
                message: format!("needs one gradient per parameter ({})", params.len()),
                got: vec![grads.len()],
            });
        }
        self.states.resize_with(params.len(), State::default);
        for ((param, grad), state) in params.iter_mut().zip(grads).zip(&mut self.states) {
            let Some(grad) = grad else { continue };
            if grad.shape() != param.value.shape() {
                return Err(Error::Shape {
                    op: "optimizer step",
                    message: format!(
                        "the gradient of {} must have its shape {:?}",
                        param.name,
                        param.value.shape()
                    ),
                    got: grad.shape().to_vec(),
                });
            }
            let g = match grad.as_slice() {
                Some(g) => Cow::Borrowed(g),
                None => Cow::Owned(grad.to_vec()),
            };
            let p = param.value.as_mut_slice();
            state.step += 1;
            let fresh = state.prepare(&self.config, p.len());
            let step = state.step;
            // The update is memory-bound, like the element-wise passes the team splits.
            let parts = if p.len() >= crate::parallel::ELEMENTWISE_SPLIT_MIN {
                crate::parallel::with_current(|team| team.map_or(1, |t| t.size()))
            } else {
                1
            };
            let config = &self.config;
            if parts <= 1 {
                let buffers = Buffers {
                    step,
                    fresh,
                    first: state.first.as_deref_mut(),
                    second: state.second.as_deref_mut(),
                    second_max: state.second_max.as_deref_mut(),
                };
                update(config, buffers, p, g);
                continue;
            }
            // One block per thread of the training loop (the same arithmetic per
            // element, so the same result).
            let n = p.len();
            let cuts: SmallVec<[usize; 4]> = (1..=parts).map(|i| n * i / parts).collect();
            let mut p_blocks = blocks(Some(p), &cuts).into_iter();
            let mut first = blocks(state.first.as_deref_mut(), &cuts).into_iter();
            let mut second = blocks(state.second.as_deref_mut(), &cuts).into_iter();
            let mut second_max = blocks(state.second_max.as_deref_mut(), &cuts).into_iter();
            let mut start = 0;
            let mut jobs: SmallVec<[_; 4]> = SmallVec::new();
            for &end in &cuts {
                let buffers = Buffers {
                    step,
                    fresh,
                    first: first.next().flatten(),
                    second: second.next().flatten(),
                    second_max: second_max.next().flatten(),
                };
                let g_block = &g[start..end];
                let p_block = p_blocks.next().flatten().expect("a block of p");
                jobs.push(move || update(config, buffers, p_block, Cow::Borrowed(g_block)));
                start = end;
            }
            crate::parallel::with_current(|team| {
                team.expect("a team of `parts` threads").run(jobs);
            });
        }
        Ok(())
    }
}

/// A parameter's state buffers for one step, as slices (a whole parameter or one
/// block of it): each `Some` exactly when `config` uses it ([`State::prepare`]).
struct Buffers<'a, F> {
    /// The optimizer step count, 1 at the first step.
    step: u64,
    /// The momentum buffer has no value yet (SGD's first step copies the gradient).
    fresh: bool,
    first: Option<&'a mut [F]>,
    second: Option<&'a mut [F]>,
    second_max: Option<&'a mut [F]>,
}

impl<F: Float> State<F> {
    /// Creates the buffers `config` needs for `n` elements; says whether the
    /// momentum buffer is new.
    fn prepare(&mut self, config: &OptimizerConfig, n: usize) -> bool {
        let zeros = || vec![F::zero(); n];
        let (first, second, second_max) = match *config {
            OptimizerConfig::Sgd { momentum, .. } => (momentum != 0.0, false, false),
            OptimizerConfig::Adam { amsgrad, .. } => (true, true, amsgrad),
            OptimizerConfig::RmsProp {
                momentum, centered, ..
            } => (momentum > 0.0, true, centered),
            OptimizerConfig::Adagrad {
                initial_accumulator_value,
                ..
            } => {
                self.second
                    .get_or_insert_with(|| vec![F::from_f64(initial_accumulator_value); n]);
                (false, false, false)
            }
        };
        let fresh = first && self.first.is_none();
        if first {
            self.first.get_or_insert_with(zeros);
        }
        if second {
            self.second.get_or_insert_with(zeros);
        }
        if second_max {
            self.second_max.get_or_insert_with(zeros);
        }
        fresh
    }
}

/// One step of `config` on parameter `p` (a whole tensor, or a block of one) with
/// gradient `g` and the matching blocks of its state.
fn update<F: Float>(
    config: &OptimizerConfig,
    state: Buffers<'_, F>,
    p: &mut [F],
    mut g: Cow<'_, [F]>,
) {
    let c = F::from_f64;
    // g + wd·p, copying g only when there is a decay to add.
    let with_weight_decay = |g: &mut Cow<'_, [F]>, p: &[F], wd: f64| {
        if wd != 0.0 {
            g.to_mut()
                .iter_mut()
                .zip(p)
                .for_each(|(g, &p)| *g += p * c(wd));
        }
    };
    let Buffers {
        step,
        fresh,
        first,
        second,
        second_max,
    } = state;
    match *config {
        OptimizerConfig::Sgd {
            lr,
            momentum,
            dampening,
            nesterov,
            weight_decay,
        } => {
            with_weight_decay(&mut g, p, weight_decay);
            if let Some(buf) = first {
                if fresh {
                    buf.copy_from_slice(&g);
                } else {
                    for (b, &g) in buf.iter_mut().zip(g.iter()) {
                        *b = *b * c(momentum) + g * c(1.0 - dampening);
                    }
                }
                // The step direction: g + momentum·buf (Nesterov) or buf itself, the
                // latter applied straight from the buffer (no copy on the hot path).
                if nesterov {
                    g.to_mut()
                        .iter_mut()
                        .zip(buf.iter())
                        .for_each(|(g, &b)| *g += b * c(momentum));
                    p.iter_mut()
                        .zip(g.iter())
                        .for_each(|(p, &g)| *p += g * c(-lr));
                } else {
                    p.iter_mut()
                        .zip(buf.iter())
                        .for_each(|(p, &b)| *p += b * c(-lr));
                }
            } else {
                p.iter_mut()
                    .zip(g.iter())
                    .for_each(|(p, &g)| *p += g * c(-lr));
            }
        }
        OptimizerConfig::Adam {
            lr,
            betas: (beta1, beta2),
            eps,
            weight_decay,
            amsgrad: _,
            decoupled,
        } => {
            if decoupled {
                p.iter_mut().for_each(|p| *p *= c(1.0 - lr * weight_decay));
            } else {
                with_weight_decay(&mut g, p, weight_decay);
            }
            let (Some(m), Some(v)) = (first, second) else {
                unreachable!("prepared")
            };
            for ((m, v), &g) in m.iter_mut().zip(v.iter_mut()).zip(g.iter()) {
                *m = lerp(*m, g, c(1.0 - beta1));
                *v = *v * c(beta2) + c(1.0 - beta2) * g * g;
            }
            let step = step as f64;
            let step_size = lr / (1.0 - beta1.powf(step));
            let correction2_sqrt = c((1.0 - beta2.powf(step)).sqrt());
            let second: &[F] = match second_max {
                Some(max) => {
                    max.iter_mut()
                        .zip(v.iter())
                        .for_each(|(mx, &v)| *mx = mx.max(v));
                    max
                }
                None => v,
            };
            for ((p, &m), &v) in p.iter_mut().zip(m.iter()).zip(second) {
                let denom = v.sqrt() / correction2_sqrt + c(eps);
                *p += c(-step_size) * m / denom;
            }
        }
        OptimizerConfig::RmsProp {
            lr,
            alpha,
            eps,
            momentum: _,
            centered: _,
            weight_decay,
        } => {
            with_weight_decay(&mut g, p, weight_decay);
            let Some(square) = second else {
                unreachable!("prepared")
            };
            square
                .iter_mut()
                .zip(g.iter())
                .for_each(|(s, &g)| *s = *s * c(alpha) + c(1.0 - alpha) * g * g);
            let mut avg: Vec<F> = if let Some(mean) = second_max {
                mean.iter_mut()
                    .zip(g.iter())
                    .for_each(|(a, &g)| *a = lerp(*a, g, c(1.0 - alpha)));
                square
                    .iter()
                    .zip(mean.iter())
                    .map(|(&s, &a)| (s + c(-1.0) * a * a).sqrt())
                    .collect()
            } else {
                square.iter().map(|s| s.sqrt()).collect()
            };
            avg.iter_mut().for_each(|a| *a += c(eps));
            if let (Some(buf), OptimizerConfig::RmsProp { momentum, .. }) = (first, config) {
                for ((b, &g), &a) in buf.iter_mut().zip(g.iter()).zip(&avg) {
                    *b = *b * c(*momentum) + g / a;
                }
                p.iter_mut()
                    .zip(buf.iter())
                    .for_each(|(p, &b)| *p += b * c(-lr));
            } else {
                for ((p, &g), &a) in p.iter_mut().zip(g.iter()).zip(&avg) {
                    *p += c(-lr) * g / a;
                }
            }
        }
        OptimizerConfig::Adagrad {
            lr,
            lr_decay,
            eps,
            weight_decay,
            initial_accumulator_value: _,
        } => {
            with_weight_decay(&mut g, p, weight_decay);
            let Some(sum) = second else {
                unreachable!("prepared")
            };
            let clr = lr / (1.0 + (step - 1) as f64 * lr_decay);
            for ((p, &g), s) in p.iter_mut().zip(g.iter()).zip(sum.iter_mut()) {
                *s += g * g;
                *p += c(-clr) * g / (s.sqrt() + c(eps));
            }
        }
    }
}

/// Splits `slice` into `parts` consecutive blocks of the lengths `cuts` gives.
fn blocks<'a, T>(slice: Option<&'a mut [T]>, cuts: &[usize]) -> SmallVec<[Option<&'a mut [T]>; 4]> {
    let mut out = SmallVec::new();
    let mut rest = slice;
    let mut at = 0;
    for &end in cuts {
        match rest.take() {
            Some(r) => {
                let (head, tail) = r.split_at_mut(end - at);
                out.push(Some(head));
                rest = Some(tail);
            }
            None => out.push(None),
        }
        at = end;
    }
    out
}

impl OptimizerConfig {
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
            | OptimizerConfig::Adagrad { lr, .. } => lr,
        }
    }

    fn lr_mut(&mut self) -> &mut f64 {
        match self {
            OptimizerConfig::Sgd { lr, .. }
            | OptimizerConfig::Adam { lr, .. }
            | OptimizerConfig::RmsProp { lr, .. }
            | OptimizerConfig::Adagrad { lr, .. } => lr,
        }
    }
}

impl<F: Float> Optimizer<F> {
    /// Changes the learning rate for the next steps, keeping the state (what a
    /// PyTorch scheduler does to `param_groups[0]["lr"]`).
    ///
    /// ```
    /// use chainrule::optim::{Optimizer, OptimizerConfig};
    /// let mut opt = Optimizer::<f32>::new(OptimizerConfig::from_json(&serde_json::json!({"type": "sgd"}))?);
    /// opt.set_lr(0.5);
    /// assert_eq!(opt.config().lr(), 0.5);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn set_lr(&mut self, lr: f64) {
        *self.config.lr_mut() = lr;
    }
}

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

    /// The learning rate for `epoch` (0-based) from the base rate.
    ///
    /// ```
    /// use chainrule::optim::Schedule;
    /// let cosine = Schedule::Cosine { t_max: 10, eta_min: 0.0 };
    /// assert_eq!(cosine.lr(0.1, 0), 0.1);
    /// assert!((cosine.lr(0.1, 5) - 0.05).abs() < 1e-15);
    /// assert!(cosine.lr(0.1, 10).abs() < 1e-15);
    /// let warmup = Schedule::LinearWarmup { start_factor: 0.25, warmup_epochs: 3 };
    /// assert_eq!(warmup.lr(1.0, 0), 0.25);
    /// assert_eq!(warmup.lr(1.0, 3), 1.0);
    /// ```
    pub fn lr(&self, base: f64, epoch: usize) -> f64 {
        match *self {
            Schedule::Constant => base,
            Schedule::Step { step_size, gamma } => {
                base * gamma.powi((epoch / step_size.max(1)) as i32)
            }
            Schedule::Exponential { gamma } => base * gamma.powi(epoch as i32),
            Schedule::Cosine { t_max, eta_min } => {
                let phase = std::f64::consts::PI * epoch as f64 / t_max.max(1) as f64;
                eta_min + (base - eta_min) * (1.0 + phase.cos()) / 2.0
            }
            Schedule::LinearWarmup {
                start_factor,
                warmup_epochs,
            } => {
                let progress = (epoch.min(warmup_epochs) as f64) / warmup_epochs.max(1) as f64;
                base * (start_factor + (1.0 - start_factor) * progress)
            }
        }
    }
}

/// Scales the gradients so that their global 2-norm (over all tensors) is at most
/// `max_norm`, as `torch.nn.utils.clip_grad_norm_` does: every gradient is multiplied
/// by min(1, max_norm / (norm + 1e-6)). Returns the norm before clipping.
///
/// ```
/// use chainrule::{optim::clip_grad_norm, Tensor};
/// let mut grads = vec![Some(Tensor::<f64>::from_vec(vec![3.0, 4.0], &[2])?), None];
/// let norm = clip_grad_norm(&mut grads, 1.0);
/// assert_eq!(norm, 5.0);
/// let clipped = grads[0].as_ref().unwrap().to_vec();
/// assert!((clipped[0] - 0.6).abs() < 1e-6 && (clipped[1] - 0.8).abs() < 1e-6);
/// # Ok::<(), chainrule::Error>(())
/// ```
pub fn clip_grad_norm<F: Float>(grads: &mut [Option<Tensor<F>>], max_norm: f64) -> f64 {
    let norms: Vec<F> = grads
        .iter()
        .flatten()
        .map(|g| g.to_vec().iter().fold(F::zero(), |s, &v| s + v * v).sqrt())
        .collect();
    let total = norms.iter().fold(F::zero(), |s, &n| s + n * n).sqrt();
    let coefficient = (F::from_f64(max_norm) / (total + F::from_f64(1e-6))).min(F::one());
    for g in grads.iter_mut().flatten() {
        *g = g.scale(coefficient);
    }
    total.as_f64()
}

impl<F: Float> Optimizer<F> {
    /// The optimizer's state as named tensors, for checkpoints: for parameter `name`,
    /// `"{name}.step"` (a scalar) and whichever buffers the optimizer keeps
    /// (`"{name}.first"`, `"{name}.second"`, `"{name}.second_max"`).
    ///
    /// ```
    /// use chainrule::nn::Param;
    /// use chainrule::optim::{Optimizer, OptimizerConfig};
    /// use chainrule::Tensor;
    /// let mut opt = Optimizer::new(OptimizerConfig::from_json(&serde_json::json!({"type": "adam"}))?);
    /// let mut p = vec![Param::new("w", Tensor::<f64>::zeros(&[2]))];
    /// opt.step(&mut p, &[Some(Tensor::ones(&[2]))])?;
    /// let state = opt.state_dict(&p);
    /// assert_eq!(state.keys().collect::<Vec<_>>(), ["w.first", "w.second", "w.step"]);
    /// let mut restored = Optimizer::new(opt.config().clone());
    /// restored.load_state_dict(&p, &state)?;
    /// assert_eq!(restored.state_dict(&p), state);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn state_dict(&self, params: &[Param<F>]) -> std::collections::BTreeMap<String, Tensor<F>> {
        let mut out = std::collections::BTreeMap::new();
        for (param, state) in params.iter().zip(&self.states) {
            if state.step == 0 {
                continue;
            }
            out.insert(
                format!("{}.step", param.name),
                Tensor::scalar(F::from_f64(state.step as f64)),
            );
            for (suffix, buffer) in [
                ("first", &state.first),
                ("second", &state.second),
                ("second_max", &state.second_max),
            ] {
                if let Some(values) = buffer {
                    let tensor = Tensor::from_vec(values.clone(), param.value.shape())
                        .expect("buffer matches its parameter");
                    out.insert(format!("{}.{suffix}", param.name), tensor);
                }
            }
        }
        out
    }

    /// Restores a state saved by [`Optimizer::state_dict`] for the same parameters.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] naming the tensor when a buffer has the wrong shape or
    /// a tensor belongs to no parameter.
    ///
    /// ```
    /// use chainrule::nn::Param;
    /// use chainrule::optim::{Optimizer, OptimizerConfig};
    /// use chainrule::Tensor;
    /// let mut opt = Optimizer::<f64>::new(OptimizerConfig::from_json(&serde_json::json!({"type": "sgd"}))?);
    /// let p = vec![Param::new("w", Tensor::zeros(&[2]))];
    /// let mut bad = std::collections::BTreeMap::new();
    /// bad.insert("v.step".to_string(), Tensor::scalar(1.0));
    /// assert!(opt.load_state_dict(&p, &bad).is_err());
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn load_state_dict(
        &mut self,
        params: &[Param<F>],
        state: &std::collections::BTreeMap<String, Tensor<F>>,
    ) -> Result<()> {
        let mut states = vec![State::default(); params.len()];
        for (key, tensor) in state {
            let (name, suffix) = key
                .rsplit_once('.')
                .ok_or_else(|| invalid(key, "not an optimizer state name"))?;
            let index = params
                .iter()
                .position(|p| p.name == name)
                .ok_or_else(|| invalid(key, "belongs to no parameter of the model"))?;
            let slot = &mut states[index];
            if suffix == "step" {
                slot.step = tensor.item()?.as_f64() as u64;
                continue;
            }
            if tensor.shape() != params[index].value.shape() {
                return Err(invalid(
                    key,
                    format!(
                        "has shape {:?}, the parameter has {:?}",
                        tensor.shape(),
                        params[index].value.shape()
                    ),
                ));
            }
            let buffer = Some(tensor.to_vec());
            match suffix {
                "first" => slot.first = buffer,
                "second" => slot.second = buffer,
                "second_max" => slot.second_max = buffer,
                _ => return Err(invalid(key, "not an optimizer state name")),
            }
        }
        self.states = states;
        Ok(())
    }
}
