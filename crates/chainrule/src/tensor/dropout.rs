//! Dropout's mask and its product, drawn and applied in one pass.
//!
//! Element `i`'s draw is a hash of the layer's stream and `i` (SplitMix64's
//! finaliser), so a mask depends on nothing but those: not on the order or the
//! threads that compute it.

use super::{Tensor, pool};
use crate::{Float, parallel};

/// SplitMix64's finaliser: a bijection of u64 whose outputs for consecutive inputs
/// look independent.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Element `i`'s draw from `stream`: the top 53 bits of its hash, `k`, which stand
/// for the uniform number k/2⁵³ in [0, 1).
#[inline(always)]
fn draw(stream: u64, i: u64) -> u64 {
    mix(stream.wrapping_add(i)) >> 11
}

/// The draws that drop an element with probability `p`: k/2⁵³ < p holds exactly
/// when the integer k is below ⌈p·2⁵³⌉ (p·2⁵³ is exact), so each draw is compared as
/// an integer instead of being converted to a float, with the same outcome for any
/// `p` (a NaN or negative `p` gives 0: nothing dropped; `p` ≥ 1 drops everything).
fn threshold(p: f64) -> u64 {
    (p * (1u64 << 53) as f64).ceil() as u64
}

/// Whether element `i` of the mask drawn from `stream` is dropped, `threshold`
/// being [`threshold`]`(p)`.
#[inline(always)]
fn dropped(stream: u64, i: u64, threshold: u64) -> bool {
    draw(stream, i) < threshold
}

/// Element `i` of the mask drawn from `stream`: 0 with probability `p`, else
/// 1/(1 − p), in f64 (for formulas).
pub(crate) fn mask_value(stream: u64, i: usize, p: f64) -> f64 {
    if dropped(stream, i as u64, threshold(p)) {
        0.0
    } else {
        1.0 / (1.0 - p)
    }
}

impl<F: Float> Tensor<F> {
    /// Dropout (PyTorch `dropout` in training): `x ⊙ mask`, where each element of
    /// the mask is 0 with probability `p` and 1/(1 − p) otherwise, drawn from
    /// `stream` (element `i`'s draw is a hash of `stream` and `i`, so the same
    /// stream gives the same mask on any number of threads). Returns the product and
    /// the mask, both written in one pass; each product is `x · m`, so a dropped
    /// infinity or NaN gives NaN, as PyTorch's.
    ///
    /// The mask is not PyTorch's: its random numbers come from another generator.
    ///
    /// ```
    /// use chainrule::Tensor;
    /// let x = Tensor::<f64>::full(&[1000], 3.0);
    /// let (y, mask) = x.dropout(0.25, 42);
    /// let kept = mask.to_vec().iter().filter(|&&m| m != 0.0).count();
    /// assert!((700..800).contains(&kept));
    /// assert!(y.to_vec().iter().zip(mask.to_vec()).all(|(&y, m)| y == 3.0 * m));
    /// assert!(mask.to_vec().iter().all(|&m| m == 0.0 || m == 1.0 / 0.75));
    /// assert_eq!(x.dropout(0.25, 42).1, mask); // the same stream, the same mask
    /// ```
    pub fn dropout(&self, p: f64, stream: u64) -> (Tensor<F>, Tensor<F>) {
        let x = self.values();
        let (keep, threshold) = (F::from_f64(1.0 / (1.0 - p)), threshold(p));
        // On kept storage, in blocks shared among the training team: each element is
        // its own draw, so neither changes a bit.
        let mut y = pool::reused::<F>(self.shape());
        let mut mask = pool::reused::<F>(self.shape());
        parallel::for_each_block_pair(
            y.as_mut_slice(),
            mask.as_mut_slice(),
            1,
            |start, y, mask| {
                let xs = &x[start..start + y.len()];
                for (i, ((y, m), &x)) in (start as u64..).zip(y.iter_mut().zip(mask).zip(xs)) {
                    *m = if dropped(stream, i, threshold) {
                        F::zero()
                    } else {
                        keep
                    };
                    *y = x * *m;
                }
            },
        );
        (y, mask)
    }

    /// The mask that [`Tensor::dropout`] draws from `stream` for a tensor of `shape`.
    ///
    /// ```
    /// use chainrule::Tensor;
    /// let x = Tensor::<f32>::ones(&[4, 5]);
    /// assert_eq!(Tensor::dropout_mask(&[4, 5], 0.5, 9), x.dropout(0.5, 9).1);
    /// ```
    pub fn dropout_mask(shape: &[usize], p: f64, stream: u64) -> Tensor<F> {
        let (keep, threshold) = (F::from_f64(1.0 / (1.0 - p)), threshold(p));
        let mut mask = pool::reused::<F>(shape);
        parallel::for_each_block(mask.as_mut_slice(), 1, |start, block| {
            for (m, i) in block.iter_mut().zip(start as u64..) {
                *m = if dropped(stream, i, threshold) {
                    F::zero()
                } else {
                    keep
                };
            }
        });
        mask
    }
}

#[cfg(test)]
mod tests {
    use super::super::naive::{for_f32_and_f64, on_1_and_2_threads, poison};
    use super::*;

    /// The two passes dropout took before it was one: the mask drawn alone, then
    /// multiplied in.
    fn two_passes<F: Float>(x: &Tensor<F>, p: f64, stream: u64) -> (Tensor<F>, Tensor<F>) {
        let keep = F::from_f64(1.0 / (1.0 - p));
        let mask: Vec<F> = (0..x.len() as u64)
            .map(|i| {
                let u = (mix(stream.wrapping_add(i)) >> 11) as f64 / (1u64 << 53) as f64;
                if u < p { F::zero() } else { keep }
            })
            .collect();
        let mask = Tensor::from_vec(mask, x.shape()).unwrap();
        (x.mul(&mask).unwrap(), mask)
    }

    #[test]
    fn the_integer_threshold_drops_exactly_the_draws_below_p() {
        let scale = (1u64 << 53) as f64;
        for p in [
            0.0,
            1e-300,
            f64::MIN_POSITIVE / 4.0,
            0.1,
            0.25,
            1.0 / 3.0,
            0.5,
            0.999_999_999,
            1.0 - f64::EPSILON / 2.0,
            1.0,
            1.5,
            f64::INFINITY,
            -0.1,
            f64::NAN,
        ] {
            let t = threshold(p);
            let edge = (p * scale).clamp(0.0, scale - 1.0).floor() as u64;
            let near = [
                0,
                1,
                2,
                edge.saturating_sub(1),
                edge,
                edge + 1,
                (1 << 53) - 1,
            ];
            let draws = near.into_iter().chain((0..1000).map(|i| draw(7, i)));
            for k in draws.filter(|&k| k < 1 << 53) {
                // The float comparison that dropout made before (k/2⁵³ < p).
                assert_eq!(k < t, (k as f64 / scale) < p, "p {p}, draw {k}");
            }
        }
    }

    for_f32_and_f64!(one_pass_dropout_gives_the_bits_of_the_two_passes, |F| {
        let bits = |t: &Tensor<F>| -> Vec<u64> {
            t.to_vec().iter().map(|v| v.as_f64().to_bits()).collect()
        };
        for (shape, p, stream) in [
            (vec![7], 0.5, 1),
            (vec![3, 5, 11], 0.25, 2),
            (vec![64, 1200], 0.5, 3),
            (vec![33, 17, 9, 9], 0.1, u64::MAX),
        ] {
            let mut values = Tensor::<F>::rand_uniform(&shape, -2.0, 2.0, stream)
                .unwrap()
                .to_vec();
            // Non-finite values and signed zeros keep their products' bits too.
            for (k, special) in [F::infinity(), F::nan(), -F::zero(), F::neg_infinity()]
                .into_iter()
                .enumerate()
            {
                if let Some(v) = values.get_mut(k * 3) {
                    *v = special;
                }
            }
            let x = Tensor::from_vec(values, &shape).unwrap();
            let (y0, mask0) = two_passes(&x, p, stream);
            let ((y1, mask1), (y2, mask2)) = on_1_and_2_threads(|| {
                poison::<F>(&shape);
                x.dropout(p, stream)
            });
            assert_eq!(bits(&y1), bits(&y0), "{shape:?}");
            assert_eq!(bits(&mask1), bits(&mask0), "{shape:?}");
            assert_eq!((bits(&y2), bits(&mask2)), (bits(&y1), bits(&mask1)));
            poison::<F>(&shape);
            assert_eq!(bits(&Tensor::dropout_mask(&shape, p, stream)), bits(&mask0));
            let values: Vec<f64> = (0..x.len()).map(|i| mask_value(stream, i, p)).collect();
            let as_f: Vec<F> = values.into_iter().map(F::from_f64).collect();
            assert_eq!(as_f, mask0.to_vec());
        }
    });
}
