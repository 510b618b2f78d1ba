//! `torch.optim.SGD`: with momentum μ, dampening τ and weight decay λ,
//!
//! ```text
//! g ← g + λ·p
//! b ← g at the first step, else μ·b + (1 − τ)·g        (momentum_buffer, when μ ≠ 0)
//! p ← p − lr·(g + μ·b)  with Nesterov,  p − lr·b  without,  p − lr·g  when μ = 0
//! ```

use super::state::{Slices, StateBuffer};
use super::{OptimizerConfig, with_weight_decay};
use crate::Float;

/// SGD's state: the momentum buffer, when there is momentum.
pub(super) fn buffers(momentum: f64) -> [Option<(StateBuffer, f64)>; 3] {
    [
        (momentum != 0.0).then_some((StateBuffer::MomentumBuffer, 0.0)),
        None,
        None,
    ]
}

/// One SGD step on `p` (a parameter or a block of one).
#[inline]
pub(super) fn update<F: Float>(
    config: &OptimizerConfig,
    state: &mut Slices<'_, F>,
    p: &mut [F],
    g: &[F],
) {
    let OptimizerConfig::Sgd {
        lr,
        momentum,
        dampening,
        nesterov,
        weight_decay,
    } = *config
    else {
        unreachable!("SGD's update called for {config:?}")
    };
    let c = F::from_f64;
    let mut g = with_weight_decay(g, p, weight_decay);
    let Some(buf) = state.take(StateBuffer::MomentumBuffer) else {
        p.iter_mut()
            .zip(g.iter())
            .for_each(|(p, &g)| *p += g * c(-lr));
        return;
    };
    if state.fresh {
        buf.copy_from_slice(&g);
    } else {
        for (b, &g) in buf.iter_mut().zip(g.iter()) {
            *b = *b * c(momentum) + g * c(1.0 - dampening);
        }
    }
    // The step direction: g + momentum·buf (Nesterov) or buf itself, the latter
    // applied straight from the buffer (no copy on the hot path).
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
}
