//! Gradient clipping, as `torch.nn.utils.clip_grad_norm_`.

use crate::{Float, Tensor};

/// Scales the gradients so that their global 2-norm (over all tensors) is at most
/// `max_norm`, as `torch.nn.utils.clip_grad_norm_` does: every gradient is multiplied
/// by min(1, max_norm / (norm + 1e-6)). Returns the norm before clipping.
///
/// ```
/// use chainrule::{optim::clip_grad_norm, Tensor};
/// let mut grads = vec![Some(Tensor::<f64>::from_vec(vec![3.0, 4.0], &[2])?), None];
/// let norm = clip_grad_norm(&mut grads, 1.0);
/// assert_eq!(norm, 5.0);
/// let clipped = grads[0].as_ref().unwrap().to_vec();
/// assert!((clipped[0] - 0.6).abs() < 1e-6 && (clipped[1] - 0.8).abs() < 1e-6);
/// # Ok::<(), chainrule::Error>(())
/// ```
pub fn clip_grad_norm<F: Float>(grads: &mut [Option<Tensor<F>>], max_norm: f64) -> f64 {
    let norms: Vec<F> = grads.iter().flatten().map(|g| norm(&g.to_vec())).collect();
    let (total, coefficient) = global_norm_and_coefficient(&norms, max_norm);
    for g in grads.iter_mut().flatten() {
        *g = g.scale(coefficient);
    }
    total.as_f64()
}

/// [`clip_grad_norm`] for gradients end to end in one slice, parameter after
/// parameter (`lengths`): the same norms, in the same order, and the same products.
pub(crate) fn clip_grad_norm_flat<F: Float>(
    grads: &mut [F],
    lengths: impl Iterator<Item = usize>,
    max_norm: f64,
) -> f64 {
    let mut rest = &grads[..];
    let norms: Vec<F> = lengths
        .map(|n| {
            let (g, next) = rest.split_at(n);
            rest = next;
            norm(g)
        })
        .collect();
    let (total, coefficient) = global_norm_and_coefficient(&norms, max_norm);
    grads.iter_mut().for_each(|g| *g *= coefficient);
    total.as_f64()
}

/// One gradient's 2-norm.
fn norm<F: Float>(g: &[F]) -> F {
    g.iter().fold(F::zero(), |s, &v| s + v * v).sqrt()
}

/// The global norm over the gradients' norms, and the factor min(1, max_norm / (norm + 1e-6)).
fn global_norm_and_coefficient<F: Float>(norms: &[F], max_norm: f64) -> (F, F) {
    let total = norms.iter().fold(F::zero(), |s, &n| s + n * n).sqrt();
    let coefficient = (F::from_f64(max_norm) / (total + F::from_f64(1e-6))).min(F::one());
    (total, coefficient)
}
