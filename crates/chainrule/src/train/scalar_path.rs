//! The small-network fast path: a training step on the [`ScalarTape`], for networks
//! so small that the tensor tape's per-operation cost (a shape, a heap-allocated
//! tensor, a boxed rule per value) is all the work there is: the notebooks'
//! networks, W3 of the speed benchmark. Same loss, same gradients, same update
//! (`tests/training.rs` compares whole runs against the tensor path).

use super::BatchPass;
use crate::autodiff::scalar::{ScalarTape, ScalarVar};
use crate::data::Target;
use crate::loss::Loss;
use crate::nn::Module;
use crate::{Float, Tensor};

/// The largest batch work (rows × parameters) taken by the scalar path; above it, the
/// tensor tape's matrix products are faster.
pub const SCALAR_PATH_MAX_WORK: usize = 1 << 14;

/// A scalar tape and its buffers, kept from step to step.
pub(super) struct ScalarPath<F: Float> {
    tape: ScalarTape<F>,
    params: Vec<ScalarVar>,
    outputs: Vec<ScalarVar>,
}

impl<F: Float> ScalarPath<F> {
    /// The path for `model` at `batch_size` rows, if the work is small enough.
    pub(super) fn new<M: Module<F>>(model: &M, batch_size: usize) -> Option<Self> {
        let weights: usize = model.params().iter().map(|p| p.value.len()).sum();
        (weights.saturating_mul(batch_size) <= SCALAR_PATH_MAX_WORK).then(|| ScalarPath {
            tape: ScalarTape::new(),
            params: Vec::with_capacity(weights),
            outputs: Vec::new(),
        })
    }

    /// Loss, gradients and prediction of one batch, or `None` when the model or the
    /// loss has no scalar form, or when a value is not finite (the tensor path then
    /// redoes the step and says where).
    pub(super) fn step<M: Module<F>>(
        &mut self,
        model: &M,
        x: &Tensor<F>,
        target: &Target<F>,
        loss: Loss,
    ) -> Option<BatchPass<F>> {
        let ScalarPath {
            tape,
            params,
            outputs,
        } = self;
        tape.clear();
        params.clear();
        outputs.clear();
        for p in model.params() {
            for &v in p.value.as_slice()? {
                params.push(tape.param(v));
            }
        }
        let (rows, features) = match x.shape() {
            &[rows, features] => (rows, features),
            _ => return None,
        };
        let xs = x.as_slice()?;
        for row in xs.chunks(features.max(1)).take(rows) {
            if !model.forward_scalar(tape, params, row, outputs) {
                return None;
            }
        }
        let width = outputs.len() / rows.max(1);
        let root = loss.compute_scalar(tape, outputs, width, target)?;
        tape.backward(root);
        let value = tape.value(root);
        let mut grads = Vec::with_capacity(model.params().len());
        let mut next = 0;
        for p in model.params() {
            let g: Vec<F> = params[next..next + p.value.len()]
                .iter()
                .map(|&v| tape.grad(v))
                .collect();
            next += p.value.len();
            if !g.iter().all(|v| v.is_finite()) {
                return None;
            }
            grads.push(Some(Tensor::from_vec(g, p.value.shape()).ok()?));
        }
        if !value.is_finite() {
            return None;
        }
        let prediction: Vec<F> = outputs.iter().map(|&v| tape.value(v)).collect();
        Some(BatchPass {
            loss: value,
            grads,
            prediction: Tensor::from_vec(prediction, &[rows, width]).ok()?,
            anomaly: None,
        })
    }
}
