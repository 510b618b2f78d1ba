//! Optimizers with `torch.optim`'s update rules, defaults and state names (PyTorch
//! 2.x, the single-tensor CPU implementation, operation for operation).
//!
//! | optimizer | file | state per parameter, as `optimizer.state_dict()` names it |
//! | --- | --- | --- |
//! | `SGD` | `sgd.rs` | `momentum_buffer` (when momentum ≠ 0) |
//! | `Adam`, `AdamW` | `adam.rs` | `exp_avg`, `exp_avg_sq`, `max_exp_avg_sq` (amsgrad) |
//! | `RMSprop` | `rmsprop.rs` | `square_avg`, `momentum_buffer` (momentum > 0), `grad_avg` (centered) |
//! | `Adagrad` | `adagrad.rs` | `sum` |
//! | `Adadelta` | `adadelta.rs` | `square_avg`, `acc_delta` |
//!
//! Every parameter's state also counts its `step`s (PyTorch's SGD keeps no `step`;
//! ours does, so that every checkpoint says how far it got).
//!
//! What the optimizers share is written once: [`Optimizer::step`] checks the
//! gradients and visits the parameters (here), `state.rs` holds the buffers,
//! `split.rs` cuts a large parameter's update among the training threads, and
//! `checkpoint.rs` saves and restores the state.

mod adadelta;
mod adagrad;
mod adam;
mod checkpoint;
mod clip;
mod rmsprop;
mod schedule;
mod sgd;
mod split;
mod state;

pub use crate::config::{OptimizerConfig, Schedule};
pub use clip::clip_grad_norm;
pub(crate) use clip::clip_grad_norm_flat;

use crate::nn::Param;
use crate::{Error, Float, Result, Tensor};
use state::{Slices, State};
use std::borrow::Cow;

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
    /// One state per parameter, in the order of the parameters.
    states: Vec<State<F>>,
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
        let config = &self.config;
        // The same for every parameter: read once, not per parameter.
        let wanted = buffers(config);
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
            let copy;
            let g = match grad.as_slice() {
                Some(g) => g,
                None => {
                    copy = grad.to_vec();
                    &copy
                }
            };
            update_parameter(config, wanted, state, param, g);
        }
        Ok(())
    }

    /// [`Optimizer::step`] with every parameter's gradient given, end to end in the
    /// parameters' order, in one slice: the scalar tape's gradients, written without a
    /// tensor for each parameter.
    pub(crate) fn step_flat(&mut self, params: &mut [Param<F>], grads: &[F]) -> Result<()> {
        let total: usize = params.iter().map(|p| p.value.len()).sum();
        if grads.len() != total {
            return Err(Error::Shape {
                op: "optimizer step",
                message: format!("needs {total} gradient values, one per parameter value"),
                got: vec![grads.len()],
            });
        }
        self.states.resize_with(params.len(), State::default);
        let config = &self.config;
        let wanted = buffers(config);
        let mut rest = grads;
        for (param, state) in params.iter_mut().zip(&mut self.states) {
            let (g, next) = rest.split_at(param.value.len());
            rest = next;
            update_parameter(config, wanted, state, param, g);
        }
        Ok(())
    }
}

/// One parameter's update from its gradient `g` (of its length).
#[inline]
fn update_parameter<F: Float>(
    config: &OptimizerConfig,
    wanted: [Option<(state::StateBuffer, f64)>; 3],
    state: &mut State<F>,
    param: &mut Param<F>,
    g: &[F],
) {
    let p = param.value.as_mut_slice();
    let mut slices = state.begin_step(wanted, p.len());
    split::update_in_blocks(p, g, &mut slices, |slices, p, g| {
        update(config, slices, p, g);
    });
}

/// The buffers `config` keeps per parameter, each with the value it starts from.
fn buffers(config: &OptimizerConfig) -> [Option<(state::StateBuffer, f64)>; 3] {
    match *config {
        OptimizerConfig::Sgd { momentum, .. } => sgd::buffers(momentum),
        OptimizerConfig::Adam { amsgrad, .. } => adam::buffers(amsgrad),
        OptimizerConfig::RmsProp {
            momentum, centered, ..
        } => rmsprop::buffers(momentum, centered),
        OptimizerConfig::Adagrad {
            initial_accumulator_value,
            ..
        } => adagrad::buffers(initial_accumulator_value),
        OptimizerConfig::Adadelta { .. } => adadelta::buffers(),
    }
}

/// One step of `config` on parameter `p` (a whole tensor, or a block of one) with
/// gradient `g` and the matching blocks of its state.
///
/// Never inlined: inlined, the optimizers make the closure that calls this too
/// large for LLVM to inline into [`Optimizer::step`], and the state was copied on
/// every call; out of line, it is one call per parameter with the state passed by
/// reference, as before the optimizers were split into files (docs/performance.md).
#[inline(never)]
fn update<F: Float>(config: &OptimizerConfig, state: &mut Slices<'_, F>, p: &mut [F], g: &[F]) {
    match config {
        OptimizerConfig::Sgd { .. } => sgd::update(config, state, p, g),
        OptimizerConfig::Adam { .. } => adam::update(config, state, p, g),
        OptimizerConfig::RmsProp { .. } => rmsprop::update(config, state, p, g),
        OptimizerConfig::Adagrad { .. } => adagrad::update(config, state, p, g),
        OptimizerConfig::Adadelta { .. } => adadelta::update(config, state, p, g),
    }
}

/// `x.lerp_(end, w)` as PyTorch computes it on the CPU.
fn lerp<F: Float>(x: F, end: F, w: F) -> F {
    if w < F::from_f64(0.5) {
        x + w * (end - x)
    } else {
        end - (end - x) * (F::one() - w)
    }
}

/// `g + wd·p` (PyTorch's `grad.add(param, alpha=weight_decay)`), copying `g` only
/// when there is a decay to add.
#[inline]
fn with_weight_decay<'g, F: Float>(g: &'g [F], p: &[F], weight_decay: f64) -> Cow<'g, [F]> {
    if weight_decay == 0.0 {
        return Cow::Borrowed(g);
    }
    let mut g = g.to_vec();
    g.iter_mut()
        .zip(p)
        .for_each(|(g, &p)| *g += p * F::from_f64(weight_decay));
    Cow::Owned(g)
}
