//! Fused layers: what training records for a [`Sequential`] model, with each linear
//! layer that a ReLU follows recorded as one node ([`Var::linear_relu`]): the same
//! values, bit for bit, as one node per layer, with one pass less over the
//! activations each way. Explanations and drawings record one node per layer.

use crate::autodiff::Elementwise;
use crate::nn::{Layer, Sequential};
use crate::{Float, Result, Var};

/// The output of `model` for `x`, as [`Sequential::forward_trace`]'s last output, with each linear layer that a
/// ReLU follows recorded together with it as one [`Var::linear_relu`].
pub(super) fn forward_fused<'t, F: Float>(
    model: &Sequential<F>,
    params: &[Var<'t, F>],
    x: Var<'t, F>,
) -> Result<Var<'t, F>> {
    let mut h = x;
    let mut layers = model.layers().iter().enumerate().peekable();
    while let Some((index, layer)) = layers.next() {
        h = match *layer {
            Layer::Linear { bias, .. }
                if layers
                    .next_if(|(_, next)| **next == Layer::Activation(Elementwise::Relu))
                    .is_some() =>
            {
                let offset = model.param_offset(index).unwrap_or(0);
                h.linear_relu(params[offset], bias.then(|| params[offset + 1]))?
            }
            _ => model.layer_forward(index, params, h)?,
        };
    }
    Ok(h)
}
