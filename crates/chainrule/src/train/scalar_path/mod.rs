//! The small-network fast path: a training step on the [`ScalarTape`], for networks
//! so small that the tensor tape's per-operation cost (a shape, a heap-allocated
//! tensor per value) is all the work there is: the notebooks'
//! networks, W3 of the speed benchmark. Same loss, same gradients, same update
//! (`tests/scalar_path.rs` compares whole runs against the tensor path).

mod network;
mod tape;

use super::BatchPass;
use crate::data::Target;
use crate::loss::Loss;
use crate::nn::{Module, Sequential};
use crate::{Float, Tensor};
use tape::{ScalarTape, ScalarVar};

/// The largest batch work (rows × parameters) taken by the scalar path; above it, the
/// tensor tape's matrix products are faster.
pub(super) const SCALAR_PATH_MAX_WORK: usize = 1 << 14;

/// A scalar tape and its buffers, kept from step to step: with the gradients and the
/// prediction tensor handed back after each step ([`ScalarPath::recycle`]), a step
/// allocates nothing.
pub(super) struct ScalarPath<F: Float> {
    tape: ScalarTape<F>,
    params: Vec<ScalarVar>,
    outputs: Vec<ScalarVar>,
    spare_grads: Vec<F>,
    spare_prediction: Option<Tensor<F>>,
    /// The model's input features, when it fixes them: read once, as finding them
    /// builds the input shape.
    features: Option<usize>,
}

impl<F: Float> ScalarPath<F> {
    /// The path for `model` at `batch_size` rows, if the work is small enough.
    pub(super) fn new(model: &Sequential<F>, batch_size: usize) -> Option<Self> {
        let weights: usize = model.params().iter().map(|p| p.value.len()).sum();
        (weights.saturating_mul(batch_size) <= SCALAR_PATH_MAX_WORK).then(|| ScalarPath {
            tape: ScalarTape::new(),
            params: Vec::with_capacity(weights),
            outputs: Vec::new(),
            spare_grads: Vec::new(),
            spare_prediction: None,
            features: model.input_features(),
        })
    }

    /// Takes back a step's gradients and prediction tensor, to be filled again.
    pub(super) fn recycle(&mut self, grads: Vec<F>, prediction: Tensor<F>) {
        self.spare_grads = grads;
        self.spare_prediction = Some(prediction);
    }

    /// Loss, gradients and prediction of one batch, or `None` when the model or the
    /// loss has no scalar form, or when a value is not finite (the tensor path then
    /// redoes the step and says where).
    pub(super) fn step(
        &mut self,
        model: &Sequential<F>,
        x: &Tensor<F>,
        target: &Target<F>,
        loss: Loss,
    ) -> Option<BatchPass<F, Vec<F>>> {
        let ScalarPath {
            tape,
            params,
            outputs,
            spare_grads,
            spare_prediction,
            features: expected,
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
        if expected.is_some_and(|d| d != features) {
            return None;
        }
        let xs = x.as_slice()?;
        for row in xs.chunks(features.max(1)).take(rows) {
            if !network::forward_scalar(model, tape, params, row, outputs) {
                return None;
            }
        }
        let width = outputs.len() / rows.max(1);
        let root = network::loss_scalar(loss, tape, outputs, width, target)?;
        tape.backward(root);
        let value = tape.value(root);
        if !value.is_finite() {
            return None;
        }
        // Into last step's vector when it is handed back (no allocation).
        let mut grads = std::mem::take(spare_grads);
        grads.clear();
        grads.extend(params.iter().map(|&v| tape.grad(v)));
        if !crate::tensor::all_finite(&grads) {
            return None;
        }
        let mut prediction = match spare_prediction.take() {
            Some(t) if t.shape() == [rows, width] => t,
            _ => Tensor::zeros(&[rows, width]),
        };
        for (p, &v) in prediction.as_mut_slice().iter_mut().zip(outputs.iter()) {
            *p = tape.value(v);
        }
        Some(BatchPass {
            loss: value,
            grads,
            prediction,
            anomaly: None,
        })
    }
}
