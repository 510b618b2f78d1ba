//! `torch.optim.Adagrad`: at step t with learning-rate decay δ and weight decay λ,
//!
//! ```text
//! g ← g + λ·p
//! s ← s + g²                      (sum, starting at initial_accumulator_value)
//! p ← p − lr/(1 + (t − 1)·δ) · g / (√s + eps)
//! ```

use super::state::{Slices, StateBuffer};
use super::{OptimizerConfig, with_weight_decay};
use crate::Float;

/// Adagrad's state: the sum of squared gradients, from `initial_accumulator_value`.
pub(super) fn buffers(initial_accumulator_value: f64) -> [Option<(StateBuffer, f64)>; 3] {
    [
        Some((StateBuffer::Sum, initial_accumulator_value)),
        None,
        None,
    ]
}

/// One Adagrad step on `p` (a parameter or a block of one).
pub(super) fn update<F: Float>(
    config: &OptimizerConfig,
    state: &mut Slices<'_, F>,
    p: &mut [F],
    g: &[F],
) {
    let OptimizerConfig::Adagrad {
        lr,
        lr_decay,
        eps,
        weight_decay,
        initial_accumulator_value: _,
    } = *config
    else {
        unreachable!("Adagrad's update called for {config:?}")
    };
    let c = F::from_f64;
    let g = with_weight_decay(g, p, weight_decay);
    let Some(sum) = state.take(StateBuffer::Sum) else {
        unreachable!("buffers() asks for sum")
    };
    let clr = lr / (1.0 + (state.step - 1) as f64 * lr_decay);
    for ((p, &g), s) in p.iter_mut().zip(g.iter()).zip(sum.iter_mut()) {
        *s += g * g;
        *p += c(-clr) * g / (s.sqrt() + c(eps));
    }
}
