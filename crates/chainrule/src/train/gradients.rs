//! A batch's gradients, in the form each tape produces them.

use crate::nn::Param;
use crate::optim::{Optimizer, clip_grad_norm, clip_grad_norm_flat};
use crate::{Float, Result, Tensor};

/// The gradients of one batch, ready for the optimizer.
#[derive(Debug)]
pub(super) enum Gradients<F: Float> {
    /// One tensor per parameter (`None` where no gradient reached it): the tensor tape's.
    PerParameter(Vec<Option<Tensor<F>>>),
    /// Every parameter's gradient, end to end in the parameters' order: the scalar
    /// tape's. It writes them into one kept vector, where a tensor per parameter
    /// would cost a check that its storage is not shared (an atomic operation) each
    /// step: on W3 (the 2-2-1 network), those checks were a tenth of the step.
    Flat(Vec<F>),
}

impl<F: Float> Gradients<F> {
    /// Clips the global norm to `max_norm`, as `torch.nn.utils.clip_grad_norm_`.
    pub(super) fn clip(&mut self, params: &[Param<F>], max_norm: f64) {
        match self {
            Gradients::PerParameter(grads) => {
                clip_grad_norm(grads, max_norm);
            }
            Gradients::Flat(grads) => {
                clip_grad_norm_flat(grads, params.iter().map(|p| p.value.len()), max_norm);
            }
        }
    }

    /// One optimizer step on `params`.
    pub(super) fn apply(
        &self,
        optimizer: &mut Optimizer<F>,
        params: &mut [Param<F>],
    ) -> Result<()> {
        match self {
            Gradients::PerParameter(grads) => optimizer.step(params, grads),
            Gradients::Flat(grads) => optimizer.step_flat(params, grads),
        }
    }
}
