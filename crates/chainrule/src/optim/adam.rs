//! `torch.optim.Adam` and, with decoupled weight decay, `AdamW`: at step t with
//! betas (β₁, β₂) and weight decay λ,
//!
//! ```text
//! p ← p·(1 − lr·λ) (AdamW)            or   g ← g + λ·p (Adam)
//! m ← lerp(m, g, 1 − β₁)                                   (exp_avg)
//! v ← β₂·v + (1 − β₂)·g²                                   (exp_avg_sq)
//! v̂ ← max(v̂, v) with amsgrad, else v                      (max_exp_avg_sq)
//! p ← p − lr/(1 − β₁ᵗ) · m / (√v̂ / √(1 − β₂ᵗ) + eps)
//! ```

use super::state::{Slices, StateBuffer};
use super::{OptimizerConfig, lerp, with_weight_decay};
use crate::Float;
use std::borrow::Cow;

/// Adam's state: both moments, and their running maximum with amsgrad.
pub(super) fn buffers(amsgrad: bool) -> [Option<(StateBuffer, f64)>; 3] {
    [
        Some((StateBuffer::ExpAvg, 0.0)),
        Some((StateBuffer::ExpAvgSq, 0.0)),
        amsgrad.then_some((StateBuffer::MaxExpAvgSq, 0.0)),
    ]
}

/// One Adam or AdamW step on `p` (a parameter or a block of one).
pub(super) fn update<F: Float>(
    config: &OptimizerConfig,
    state: &mut Slices<'_, F>,
    p: &mut [F],
    g: &[F],
) {
    let OptimizerConfig::Adam {
        lr,
        betas: (beta1, beta2),
        eps,
        weight_decay,
        amsgrad: _,
        decoupled,
    } = *config
    else {
        unreachable!("Adam's update called for {config:?}")
    };
    let c = F::from_f64;
    let g = if decoupled {
        p.iter_mut().for_each(|p| *p *= c(1.0 - lr * weight_decay));
        Cow::Borrowed(g)
    } else {
        with_weight_decay(g, p, weight_decay)
    };
    let (Some(exp_avg), Some(exp_avg_sq)) = (
        state.take(StateBuffer::ExpAvg),
        state.take(StateBuffer::ExpAvgSq),
    ) else {
        unreachable!("buffers() asks for both moments")
    };
    for ((m, v), &g) in exp_avg.iter_mut().zip(exp_avg_sq.iter_mut()).zip(g.iter()) {
        *m = lerp(*m, g, c(1.0 - beta1));
        *v = *v * c(beta2) + c(1.0 - beta2) * g * g;
    }
    let step = state.step as f64;
    let step_size = lr / (1.0 - beta1.powf(step));
    let correction2_sqrt = c((1.0 - beta2.powf(step)).sqrt());
    let second_moment: &[F] = match state.take(StateBuffer::MaxExpAvgSq) {
        Some(max) => {
            max.iter_mut()
                .zip(exp_avg_sq.iter())
                .for_each(|(mx, &v)| *mx = mx.max(v));
            max
        }
        None => exp_avg_sq,
    };
    for ((p, &m), &v) in p.iter_mut().zip(exp_avg.iter()).zip(second_moment) {
        let denom = v.sqrt() / correction2_sqrt + c(eps);
        *p += c(-step_size) * m / denom;
    }
}
