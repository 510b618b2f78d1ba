//! `torch.optim.RMSprop`: with smoothing constant α, momentum μ and weight decay λ,
//!
//! ```text
//! g ← g + λ·p
//! s ← α·s + (1 − α)·g²                                      (square_avg)
//! a ← lerp(a, g, 1 − α), d ← √(s − a²) + eps   centered     (grad_avg)
//! d ← √s + eps                                  otherwise
//! b ← μ·b + g/d, p ← p − lr·b                   when μ > 0   (momentum_buffer)
//! p ← p − lr·g/d                                otherwise
//! ```

use super::state::{Slices, StateBuffer};
use super::{OptimizerConfig, lerp, with_weight_decay};
use crate::Float;

/// RMSprop's state: the squared average, with the momentum buffer when there is
/// momentum and the gradient's average when centred.
pub(super) fn buffers(momentum: f64, centered: bool) -> [Option<(StateBuffer, f64)>; 3] {
    [
        Some((StateBuffer::SquareAvg, 0.0)),
        (momentum > 0.0).then_some((StateBuffer::MomentumBuffer, 0.0)),
        centered.then_some((StateBuffer::GradAvg, 0.0)),
    ]
}

/// One RMSprop step on `p` (a parameter or a block of one).
pub(super) fn update<F: Float>(
    config: &OptimizerConfig,
    state: &mut Slices<'_, F>,
    p: &mut [F],
    g: &[F],
) {
    let OptimizerConfig::RmsProp {
        lr,
        alpha,
        eps,
        momentum,
        centered: _,
        weight_decay,
    } = *config
    else {
        unreachable!("RMSprop's update called for {config:?}")
    };
    let c = F::from_f64;
    let g = with_weight_decay(g, p, weight_decay);
    let Some(square_avg) = state.take(StateBuffer::SquareAvg) else {
        unreachable!("buffers() asks for square_avg")
    };
    square_avg
        .iter_mut()
        .zip(g.iter())
        .for_each(|(s, &g)| *s = *s * c(alpha) + c(1.0 - alpha) * g * g);
    let mut avg: Vec<F> = if let Some(grad_avg) = state.take(StateBuffer::GradAvg) {
        grad_avg
            .iter_mut()
            .zip(g.iter())
            .for_each(|(a, &g)| *a = lerp(*a, g, c(1.0 - alpha)));
        square_avg
            .iter()
            .zip(grad_avg.iter())
            .map(|(&s, &a)| (s + c(-1.0) * a * a).sqrt())
            .collect()
    } else {
        square_avg.iter().map(|s| s.sqrt()).collect()
    };
    avg.iter_mut().for_each(|a| *a += c(eps));
    if let Some(buf) = state.take(StateBuffer::MomentumBuffer) {
        for ((b, &g), &a) in buf.iter_mut().zip(g.iter()).zip(&avg) {
            *b = *b * c(momentum) + g / a;
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
