//! `torch.optim.Adadelta`: with decay ρ and weight decay λ,
//!
//! ```text
//! g ← g + λ·p
//! s ← ρ·s + (1 − ρ)·g²                          (square_avg)
//! d ← √(a + eps) / √(s + eps) · g
//! a ← ρ·a + (1 − ρ)·d²                          (acc_delta)
//! p ← p − lr·d
//! ```
//!
//! The order is PyTorch's single-tensor code: the squared average is updated before
//! it divides, the accumulated update after it multiplies (so the first step's
//! numerator is √eps).

use super::state::{Slices, StateBuffer};
use super::{OptimizerConfig, with_weight_decay};
use crate::Float;

/// Adadelta's state: the running means of the squared gradient and of the squared
/// update, both from 0.
pub(super) fn buffers() -> [Option<(StateBuffer, f64)>; 3] {
    [
        Some((StateBuffer::SquareAvg, 0.0)),
        Some((StateBuffer::AccDelta, 0.0)),
        None,
    ]
}

/// One Adadelta step on `p` (a parameter or a block of one).
pub(super) fn update<F: Float>(
    config: &OptimizerConfig,
    state: &mut Slices<'_, F>,
    p: &mut [F],
    g: &[F],
) {
    let OptimizerConfig::Adadelta {
        lr,
        rho,
        eps,
        weight_decay,
    } = *config
    else {
        unreachable!("Adadelta's update called for {config:?}")
    };
    let c = F::from_f64;
    let g = with_weight_decay(g, p, weight_decay);
    let (Some(square_avg), Some(acc_delta)) = (
        state.take(StateBuffer::SquareAvg),
        state.take(StateBuffer::AccDelta),
    ) else {
        unreachable!("buffers() asks for square_avg and acc_delta")
    };
    let elements = p.iter_mut().zip(g.iter()).zip(square_avg).zip(acc_delta);
    for (((p, &g), s), a) in elements {
        // square_avg.mul_(rho).addcmul_(grad, grad, value=1 - rho)
        *s = *s * c(rho) + c(1.0 - rho) * g * g;
        // std = square_avg.add(eps).sqrt_()
        // delta = acc_delta.add(eps).sqrt_().div_(std).mul_(grad)
        let delta = (*a + c(eps)).sqrt() / (*s + c(eps)).sqrt() * g;
        // acc_delta.mul_(rho).addcmul_(delta, delta, value=1 - rho)
        *a = *a * c(rho) + c(1.0 - rho) * delta * delta;
        // param.add_(delta, alpha=-lr)
        *p += c(-lr) * delta;
    }
}

#[cfg(test)]
mod tests {
    use crate::Tensor;
    use crate::nn::Param;
    use crate::optim::{Optimizer, OptimizerConfig};

    #[test]
    fn two_steps_by_hand() {
        // rho = 0.75, eps = 1, lr = 1, weight 1, gradient 2 twice:
        // step 1: s = 0.25·4 = 1, d = √(0 + 1)/√(1 + 1)·2 = √2, a = 0.25·2 = 0.5,
        //         p = 1 − √2;
        // step 2: s = 0.75·1 + 0.25·4 = 1.75, d = √1.5/√2.75·2,
        //         a = 0.75·0.5 + 0.25·d², p = 1 − √2 − d.
        let config = OptimizerConfig::from_json(
            &serde_json::json!({"type": "adadelta", "rho": 0.75, "eps": 1.0}),
        )
        .unwrap();
        let mut opt = Optimizer::new(config);
        let mut p = vec![Param::new("w", Tensor::<f64>::scalar(1.0))];
        let g = [Some(Tensor::scalar(2.0))];
        opt.step(&mut p, &g).unwrap();
        assert!((p[0].value.item().unwrap() - (1.0 - 2f64.sqrt())).abs() < 1e-15);
        opt.step(&mut p, &g).unwrap();
        let d = 1.5f64.sqrt() / 2.75f64.sqrt() * 2.0;
        assert!((p[0].value.item().unwrap() - (1.0 - 2f64.sqrt() - d)).abs() < 1e-15);
        let state = opt.state_dict(&p);
        let value = |key: &str| state[key].item().unwrap();
        assert_eq!(value("w.square_avg"), 1.75);
        assert!((value("w.acc_delta") - (0.375 + 0.25 * d * d)).abs() < 1e-15);
        assert_eq!(value("w.step"), 2.0);
    }
}
