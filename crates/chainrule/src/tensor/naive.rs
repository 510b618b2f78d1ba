//! The definitions of convolution, pooling and normalisation as plain loops over the
//! formulas: the oracle that the fast kernels in `conv.rs`, `pool2d.rs` and `norm.rs`
//! are tested against, and the shared helpers of those tests (seeded random shapes,
//! tolerances, one and two threads).
//!
//! Each function takes inputs that the public method has already checked and
//! computes what its doc comment states, one output element (or one gradient
//! contribution) at a time, in the order of the formula; normalisation statistics
//! are accumulated in f64.

use super::{Tensor, Window2d};
use crate::Float;

/// The `[N, C, H, W]` sizes of `x`.
fn dims<F: Float>(x: &Tensor<F>) -> [usize; 4] {
    x.shape().try_into().expect("[N, C, H, W]")
}

/// `Tensor::conv2d`: `y[n,o,p,q] = b[o] + Σ_{c,i,j} x[n, c, p·s + i·d − pad,
/// q·s + j·d − pad] · w[o,c,i,j]`.
pub(crate) fn conv2d<F: Float>(
    x: &Tensor<F>,
    weight: &Tensor<F>,
    bias: Option<&Tensor<F>>,
    window: &Window2d,
) -> Tensor<F> {
    let [n, c, h, w] = dims(x);
    let o = weight.shape()[0];
    let [oh, ow] = window.output_size([h, w]).expect("checked");
    let [kh, kw] = window.kernel;
    let (x, k) = (x.to_vec(), weight.to_vec());
    let b = bias.map(|b| b.to_vec());
    let mut y = vec![F::zero(); n * o * oh * ow];
    for ni in 0..n {
        for oi in 0..o {
            for p in 0..oh {
                for q in 0..ow {
                    let mut s = b.as_ref().map_or(F::zero(), |b| b[oi]);
                    for ci in 0..c {
                        for i in 0..kh {
                            let Some(r) = window.source(0, p, i, h) else {
                                continue;
                            };
                            for j in 0..kw {
                                let Some(col) = window.source(1, q, j, w) else {
                                    continue;
                                };
                                s += x[((ni * c + ci) * h + r) * w + col]
                                    * k[((oi * c + ci) * kh + i) * kw + j];
                            }
                        }
                    }
                    y[((ni * o + oi) * oh + p) * ow + q] = s;
                }
            }
        }
    }
    Tensor::from_vec(y, &[n, o, oh, ow]).expect("sized")
}

/// `Tensor::conv2d_backward`: every product `x·w` of the forward sum sends
/// `grad · w` to its `x` and `grad · x` to its `w`.
pub(crate) fn conv2d_backward<F: Float>(
    x: &Tensor<F>,
    weight: &Tensor<F>,
    grad: &Tensor<F>,
    window: &Window2d,
    need: [bool; 3],
) -> [Option<Tensor<F>>; 3] {
    let [n, c, h, w] = dims(x);
    let o = weight.shape()[0];
    let [oh, ow] = window.output_size([h, w]).expect("checked");
    let [kh, kw] = window.kernel;
    let (xv, k, g) = (x.to_vec(), weight.to_vec(), grad.to_vec());
    let mut dx = vec![F::zero(); xv.len()];
    let mut dw = vec![F::zero(); k.len()];
    let mut db = vec![F::zero(); o];
    for ni in 0..n {
        for oi in 0..o {
            for p in 0..oh {
                for q in 0..ow {
                    let gy = g[((ni * o + oi) * oh + p) * ow + q];
                    db[oi] += gy;
                    for ci in 0..c {
                        for i in 0..kh {
                            let Some(r) = window.source(0, p, i, h) else {
                                continue;
                            };
                            for j in 0..kw {
                                let Some(col) = window.source(1, q, j, w) else {
                                    continue;
                                };
                                let xi = ((ni * c + ci) * h + r) * w + col;
                                let ki = ((oi * c + ci) * kh + i) * kw + j;
                                dx[xi] += gy * k[ki];
                                dw[ki] += gy * xv[xi];
                            }
                        }
                    }
                }
            }
        }
    }
    let to_t = |v: Vec<F>, shape: &[usize]| Tensor::from_vec(v, shape).expect("sized");
    [
        need[0].then(|| to_t(dx, x.shape())),
        need[1].then(|| to_t(dw, weight.shape())),
        need[2].then(|| to_t(db, &[o])),
    ]
}

/// For every output element of a max pooling, the flat index (within its `[H, W]`
/// plane) of the window's maximum: the first in the window's row-major order when
/// tied, a NaN counting as larger than everything; `usize::MAX` when the window
/// holds only padding.
pub(crate) fn argmax<F: Float>(x: &Tensor<F>, window: &Window2d) -> Vec<usize> {
    let [n, c, h, w] = dims(x);
    let [oh, ow] = window.output_size([h, w]).expect("checked");
    let x = x.to_vec();
    let mut out = vec![usize::MAX; n * c * oh * ow];
    for plane in 0..n * c {
        let xs = &x[plane * h * w..(plane + 1) * h * w];
        for p in 0..oh {
            for q in 0..ow {
                let mut best: Option<(usize, F)> = None;
                for i in 0..window.kernel[0] {
                    let Some(r) = window.source(0, p, i, h) else {
                        continue;
                    };
                    for j in 0..window.kernel[1] {
                        let Some(col) = window.source(1, q, j, w) else {
                            continue;
                        };
                        let v = xs[r * w + col];
                        if best.is_none_or(|(_, m)| v > m || (v.is_nan() && !m.is_nan())) {
                            best = Some((r * w + col, v));
                        }
                    }
                }
                out[(plane * oh + p) * ow + q] = best.map_or(usize::MAX, |(at, _)| at);
            }
        }
    }
    out
}

/// `Tensor::max_pool2d`: each window's maximum, −∞ for a window of padding only.
pub(crate) fn max_pool2d<F: Float>(x: &Tensor<F>, window: &Window2d) -> Tensor<F> {
    let [n, c, h, w] = dims(x);
    let [oh, ow] = window.output_size([h, w]).expect("checked");
    let at = argmax(x, window);
    let xv = x.to_vec();
    let y = at
        .iter()
        .enumerate()
        .map(|(o, &i)| match i {
            usize::MAX => F::neg_infinity(),
            i => xv[o / (oh * ow) * h * w + i],
        })
        .collect();
    Tensor::from_vec(y, &[n, c, oh, ow]).expect("sized")
}

/// `Tensor::max_pool2d_backward`: each gradient element goes to its window's first
/// maximum.
pub(crate) fn max_pool2d_backward<F: Float>(
    x: &Tensor<F>,
    grad: &Tensor<F>,
    window: &Window2d,
) -> Tensor<F> {
    let [n, c, h, w] = dims(x);
    let [oh, ow] = window.output_size([h, w]).expect("checked");
    let at = argmax(x, window);
    let mut dx = vec![F::zero(); n * c * h * w];
    for (o, (&i, &g)) in at.iter().zip(grad.to_vec().iter()).enumerate() {
        if i != usize::MAX {
            dx[o / (oh * ow) * h * w + i] += g;
        }
    }
    Tensor::from_vec(dx, x.shape()).expect("sized")
}

/// `Tensor::avg_pool2d`: each window's sum, padded zeros included, over `kh·kw`.
pub(crate) fn avg_pool2d<F: Float>(x: &Tensor<F>, window: &Window2d) -> Tensor<F> {
    let [n, c, h, w] = dims(x);
    let [oh, ow] = window.output_size([h, w]).expect("checked");
    let x = x.to_vec();
    let scale = F::from_f64(1.0 / (window.kernel[0] * window.kernel[1]) as f64);
    let mut y = vec![F::zero(); n * c * oh * ow];
    for plane in 0..n * c {
        for p in 0..oh {
            for q in 0..ow {
                let mut s = F::zero();
                for i in 0..window.kernel[0] {
                    let Some(r) = window.source(0, p, i, h) else {
                        continue;
                    };
                    for j in 0..window.kernel[1] {
                        if let Some(col) = window.source(1, q, j, w) {
                            s += x[(plane * h + r) * w + col];
                        }
                    }
                }
                y[(plane * oh + p) * ow + q] = s * scale;
            }
        }
    }
    Tensor::from_vec(y, &[n, c, oh, ow]).expect("sized")
}

/// `Tensor::avg_pool2d_backward`: each gradient element, over `kh·kw`, goes to every
/// input of its window.
pub(crate) fn avg_pool2d_backward<F: Float>(
    shape: &[usize],
    grad: &Tensor<F>,
    window: &Window2d,
) -> Tensor<F> {
    let [n, c, h, w]: [usize; 4] = shape.try_into().expect("[N, C, H, W]");
    let [oh, ow] = window.output_size([h, w]).expect("checked");
    let g = grad.to_vec();
    let scale = F::from_f64(1.0 / (window.kernel[0] * window.kernel[1]) as f64);
    let mut dx = vec![F::zero(); n * c * h * w];
    for plane in 0..n * c {
        for p in 0..oh {
            for q in 0..ow {
                let gy = g[(plane * oh + p) * ow + q] * scale;
                for i in 0..window.kernel[0] {
                    let Some(r) = window.source(0, p, i, h) else {
                        continue;
                    };
                    for j in 0..window.kernel[1] {
                        if let Some(col) = window.source(1, q, j, w) {
                            dx[(plane * h + r) * w + col] += gy;
                        }
                    }
                }
            }
        }
    }
    Tensor::from_vec(dx, shape).expect("sized")
}

/// How the values of a tensor are grouped into normalisation sets.
#[derive(Debug, Clone, Copy)]
struct Sets {
    /// Batch norm: `[outer, channels, inner]`, one set per channel, its values
    /// `x[a, c, b]` for every `a`, `b`. Layer norm: `[rows, 1, size]`, one set per
    /// row.
    outer: usize,
    channels: usize,
    inner: usize,
    per_channel: bool,
}

impl Sets {
    /// Batch norm's sets for `[N, C, ...]`.
    fn channels(shape: &[usize]) -> Sets {
        Sets {
            outer: shape[0],
            channels: shape[1],
            inner: shape[2..].iter().product(),
            per_channel: true,
        }
    }

    /// Layer norm's sets for the last `trailing` axes of `shape`.
    fn trailing(shape: &[usize], trailing: usize) -> Sets {
        let split = shape.len() - trailing;
        Sets {
            outer: shape[..split].iter().product(),
            channels: 1,
            inner: shape[split..].iter().product(),
            per_channel: false,
        }
    }

    fn count(&self) -> usize {
        if self.per_channel {
            self.channels
        } else {
            self.outer
        }
    }

    fn size(&self) -> usize {
        if self.per_channel {
            self.outer * self.inner
        } else {
            self.inner
        }
    }

    /// The length of the affine parameters (γ and β).
    fn affine_len(&self) -> usize {
        if self.per_channel {
            self.channels
        } else {
            self.inner
        }
    }

    /// Calls `f(set, affine_index, flat_index)` for every value.
    fn for_each(&self, mut f: impl FnMut(usize, usize, usize)) {
        for a in 0..self.outer {
            for c in 0..self.channels {
                for b in 0..self.inner {
                    let flat = (a * self.channels + c) * self.inner + b;
                    if self.per_channel {
                        f(c, c, flat);
                    } else {
                        f(a, b, flat);
                    }
                }
            }
        }
    }
}

/// Mean and biased variance of each set, in f64.
fn statistics<F: Float>(x: &[F], sets: Sets) -> (Vec<f64>, Vec<f64>) {
    let m = sets.size() as f64;
    let mut mean = vec![0.0; sets.count()];
    sets.for_each(|s, _, i| mean[s] += x[i].as_f64());
    mean.iter_mut().for_each(|v| *v /= m);
    let mut var = vec![0.0; sets.count()];
    sets.for_each(|s, _, i| {
        let d = x[i].as_f64() - mean[s];
        var[s] += d * d;
    });
    var.iter_mut().for_each(|v| *v /= m);
    (mean, var)
}

/// y = γ·x̂ + β for every value.
fn normalise<F: Float>(
    x: &Tensor<F>,
    sets: Sets,
    eps: f64,
    weight: Option<&Tensor<F>>,
    bias: Option<&Tensor<F>>,
) -> (Tensor<F>, Vec<f64>, Vec<f64>) {
    let xv = x.to_vec();
    let (mean, var) = statistics(&xv, sets);
    let (weight, bias) = (weight.map(Tensor::to_vec), bias.map(Tensor::to_vec));
    let inv: Vec<f64> = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
    let mut y = vec![F::zero(); xv.len()];
    sets.for_each(|s, k, i| {
        let xhat = (xv[i].as_f64() - mean[s]) * inv[s];
        let g = weight.as_ref().map_or(1.0, |w| w[k].as_f64());
        let b = bias.as_ref().map_or(0.0, |b| b[k].as_f64());
        y[i] = F::from_f64(xhat * g + b);
    });
    (Tensor::from_vec(y, x.shape()).expect("sized"), mean, var)
}

/// The backward of [`normalise`] over the sets: ∂L/∂x = (1/√(σ² + ε)) · (ĝ −
/// mean_S(ĝ) − x̂ · mean_S(ĝ · x̂)), with ĝ = γ · ∂L/∂y; ∂L/∂γ = Σ ∂L/∂y · x̂ and
/// ∂L/∂β = Σ ∂L/∂y over the values each parameter touches.
fn normalise_backward<F: Float>(
    x: &Tensor<F>,
    g: &Tensor<F>,
    sets: Sets,
    eps: f64,
    weight: Option<&Tensor<F>>,
) -> [Vec<F>; 3] {
    let (x, g, weight) = (x.to_vec(), g.to_vec(), weight.map(Tensor::to_vec));
    let (mean, var) = statistics(&x, sets);
    let inv: Vec<f64> = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
    let m = sets.size() as f64;
    let xhat = |s: usize, i: usize| (x[i].as_f64() - mean[s]) * inv[s];
    let gamma = |k: usize| weight.as_ref().map_or(1.0, |w| w[k].as_f64());
    let mut mean_g = vec![0.0; sets.count()];
    let mut mean_gx = vec![0.0; sets.count()];
    let mut dw = vec![0.0; sets.affine_len()];
    let mut db = vec![0.0; sets.affine_len()];
    sets.for_each(|s, k, i| {
        let gy = g[i].as_f64();
        let gh = gy * gamma(k);
        mean_g[s] += gh;
        mean_gx[s] += gh * xhat(s, i);
        dw[k] += gy * xhat(s, i);
        db[k] += gy;
    });
    let mut dx = vec![F::zero(); x.len()];
    sets.for_each(|s, k, i| {
        let gh = g[i].as_f64() * gamma(k);
        dx[i] = F::from_f64(inv[s] * (gh - mean_g[s] / m - xhat(s, i) * mean_gx[s] / m));
    });
    let to_f = |v: Vec<f64>| v.into_iter().map(F::from_f64).collect();
    [dx, to_f(dw), to_f(db)]
}

/// `Tensor::batch_norm`: the output, and each channel's mean and biased variance.
pub(crate) fn batch_norm<F: Float>(
    x: &Tensor<F>,
    weight: Option<&Tensor<F>>,
    bias: Option<&Tensor<F>>,
    eps: f64,
) -> (Tensor<F>, Vec<f64>, Vec<f64>) {
    normalise(x, Sets::channels(x.shape()), eps, weight, bias)
}

/// `Tensor::batch_norm_backward`: `[dx, dweight, dbias]`, all three.
pub(crate) fn batch_norm_backward<F: Float>(
    x: &Tensor<F>,
    weight: Option<&Tensor<F>>,
    grad: &Tensor<F>,
    eps: f64,
) -> [Vec<F>; 3] {
    normalise_backward(x, grad, Sets::channels(x.shape()), eps, weight)
}

/// `Tensor::layer_norm`.
pub(crate) fn layer_norm<F: Float>(
    x: &Tensor<F>,
    trailing: usize,
    weight: Option<&Tensor<F>>,
    bias: Option<&Tensor<F>>,
    eps: f64,
) -> Tensor<F> {
    normalise(x, Sets::trailing(x.shape(), trailing), eps, weight, bias).0
}

/// `Tensor::layer_norm_backward`: `[dx, dweight, dbias]`, all three.
pub(crate) fn layer_norm_backward<F: Float>(
    x: &Tensor<F>,
    trailing: usize,
    weight: Option<&Tensor<F>>,
    grad: &Tensor<F>,
    eps: f64,
) -> [Vec<F>; 3] {
    normalise_backward(x, grad, Sets::trailing(x.shape(), trailing), eps, weight)
}

// --- helpers of the kernels' tests ------------------------------------------------

/// A small deterministic generator for test shapes (SplitMix64).
pub(crate) struct Shapes(u64);

impl Shapes {
    pub(crate) fn new(seed: u64) -> Shapes {
        Shapes(seed)
    }

    /// A number in `low..=high`.
    pub(crate) fn pick(&mut self, low: usize, high: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        low + (z % (high - low + 1) as u64) as usize
    }

    /// A window with each side's kernel in 1..=`kernel`, stride in 1..=`stride`,
    /// padding in 0..=`padding` and dilation in 1..=`dilation`.
    pub(crate) fn window(
        &mut self,
        kernel: usize,
        stride: usize,
        padding: usize,
        dilation: usize,
    ) -> Window2d {
        Window2d::new(
            [self.pick(1, kernel), self.pick(1, kernel)],
            [self.pick(1, stride), self.pick(1, stride)],
            [self.pick(0, padding), self.pick(0, padding)],
            [self.pick(1, dilation), self.pick(1, dilation)],
        )
    }
}

/// Asserts that `got` matches `expected` element by element within `tolerance`
/// relative to `max(1, |expected|)`.
#[track_caller]
pub(crate) fn assert_close<F: Float>(
    got: &Tensor<F>,
    expected: &Tensor<F>,
    tolerance: f64,
    what: &str,
) {
    assert_eq!(got.shape(), expected.shape(), "{what}: shapes");
    for (i, (g, e)) in got.to_vec().iter().zip(expected.to_vec()).enumerate() {
        let (g, e) = (g.as_f64(), e.as_f64());
        let same = g == e || (g.is_nan() && e.is_nan());
        assert!(
            same || (g - e).abs() <= tolerance * e.abs().max(1.0),
            "{what}: element {i} is {g}, expected {e} (tolerance {tolerance})"
        );
    }
}

/// The tolerance of a sum of `terms` products of values of about 1, in `F`: as
/// `matmul.rs`'s tests, the rounding of each term may add up.
pub(crate) fn sum_tolerance<F: Float>(terms: usize) -> f64 {
    let unit = if size_of::<F>() == 4 { 1e-6 } else { 1e-14 };
    unit * (terms.max(1) as f64)
}

/// `f` run on a training team of 1 and of 2 threads; both results.
pub(crate) fn on_1_and_2_threads<R>(f: impl Fn() -> R) -> (R, R) {
    let one = crate::parallel::Team::scope(1, |_| f());
    let two = crate::parallel::Team::scope(2, |team| {
        assert_eq!(team.size(), 2, "the second thread started");
        f()
    });
    (one, two)
}

/// Fills this thread's kept storage for `shape` with NaN-poisoned tensors, so that a
/// kernel writing its output on kept storage shows any element it skips.
pub(crate) fn poison<F: Float>(shape: &[usize]) {
    for _ in 0..2 {
        super::pool::recycle(Tensor::<F>::full(shape, F::nan()));
    }
}

/// Runs a numeric test body for both f32 and f64.
macro_rules! for_f32_and_f64 {
    ($name:ident, |$t:ident| $body:block) => {
        mod $name {
            use super::*;
            fn run<$t: Float>() $body
            #[test]
            fn f32() {
                run::<f32>()
            }
            #[test]
            fn f64() {
                run::<f64>()
            }
        }
    };
}
pub(crate) use for_f32_and_f64;
