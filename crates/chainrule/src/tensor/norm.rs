//! Normalisation: batch norm's training-mode statistics over the batch (and the
//! spatial axes), per channel, and layer norm's over the trailing axes, per sample;
//! each as one fused forward and one fused backward.
//!
//! Both normalise a set S of m values as x̂ = (x − μ)/√(σ² + ε), with μ and σ² the
//! set's mean and biased variance, then scale and shift: y = γ·x̂ + β. Their backward
//! is the same formula over S, where the three paths through x, μ and σ² meet:
//! ∂L/∂x = (1/√(σ² + ε)) · (ĝ − mean_S(ĝ) − x̂ · mean_S(ĝ · x̂)), with ĝ = γ · ∂L/∂y.
//! Statistics are accumulated in f64 whatever the element type.
//!
//! The passes: batch norm reads each channel (N runs of the spatial axes, contiguous)
//! for its statistics, one channel after another and the channels shared among the
//! training team, then writes the output (or ∂x) one sample after another as an
//! affine map `a·g + b·(x − μ) + d` with per-channel coefficients; the backward's
//! sums Σg and Σg·(x − μ) ride along with the statistics, so each direction reads its
//! inputs from memory twice. Layer norm does the same per row, with γ and β per
//! element, and sums ∂γ and ∂β over the rows in order, columns shared among the
//! team. Every sum has a fixed order, so 1 and 2 threads give the same bits.

use super::{Tensor, pool};
use crate::parallel::{self, ELEMENTWISE_SPLIT_MIN};
use crate::{Error, Float, Result};

/// Independent f64 accumulators per sum: the compiler may not reorder one running
/// sum, but eight independent ones fill a vector register and keep the loop
/// vectorised. The lanes are added in order at the end: the same bits every run.
const LANES: usize = 8;

/// `Σ_{i < len} f(i)` for `K` sums at once, in f64, over [`LANES`] lanes.
#[inline(always)]
fn lane_sums<const K: usize>(len: usize, f: impl Fn(usize) -> [f64; K]) -> [f64; K] {
    let mut lanes = [[0.0; LANES]; K];
    let whole = len / LANES * LANES;
    for base in (0..whole).step_by(LANES) {
        for (l, i) in (base..base + LANES).enumerate() {
            let v = f(i);
            for k in 0..K {
                lanes[k][l] += v[k];
            }
        }
    }
    for (l, i) in (whole..len).enumerate() {
        let v = f(i);
        for k in 0..K {
            lanes[k][l] += v[k];
        }
    }
    lanes.map(|lanes| lanes.iter().sum())
}

/// The mean and biased variance of the values of `runs` (one normalisation set,
/// `m` values), in f64 and in two passes, the second over the deviations from the
/// mean (a one-pass Σx² − (Σx)²/m loses the variance of data far from 0). Batch norm
/// reads a channel's runs twice in a row, so the second pass finds them in cache.
fn moments<'a, F: Float>(runs: impl Iterator<Item = &'a [F]> + Clone, m: usize) -> (f64, f64) {
    let m = m as f64;
    let sum_of = |run: &[F]| lane_sums(run.len(), |i| [run[i].as_f64()])[0];
    let mean = runs.clone().map(sum_of).sum::<f64>() / m;
    let squares = |run: &[F]| {
        lane_sums(run.len(), |i| {
            let d = run[i].as_f64() - mean;
            [d * d]
        })[0]
    };
    (mean, runs.map(squares).sum::<f64>() / m)
}

/// `1/√(σ² + ε)`.
fn inverse_std(var: f64, eps: f64) -> f64 {
    1.0 / (var + eps).sqrt()
}

/// Batch norm's `[N, C, inner]` sizes: one set per channel, of `N` runs of `inner`
/// contiguous values.
#[derive(Debug, Clone, Copy)]
struct Channels {
    n: usize,
    c: usize,
    inner: usize,
}

impl Channels {
    /// The runs of channel `c` in `x`.
    fn runs<F: Float>(self, x: &[F], c: usize) -> impl Iterator<Item = &[F]> + Clone {
        (0..self.n).map(move |a| &x[(a * self.c + c) * self.inner..][..self.inner])
    }

    /// Values per set.
    fn m(self) -> usize {
        self.n * self.inner
    }

    /// Calls `f(channel, stats)` for every channel, with that channel's `K` slots of
    /// a `[C, K]` table, the channels cut among the training team for a large `x`
    /// (each channel on one thread: the same bits on any number).
    fn for_each_channel<const K: usize>(
        self,
        len: usize,
        f: impl Fn(usize, &mut [f64]) + Sync,
    ) -> Vec<f64> {
        let mut table = vec![0.0; self.c * K];
        let split = len >= ELEMENTWISE_SPLIT_MIN;
        parallel::for_each_block_if(&mut table, K, split, |start, block| {
            for (i, slots) in block.chunks_exact_mut(K).enumerate() {
                f(start / K + i, slots);
            }
        });
        table
    }

    /// `out = a·g + b·(x − μ) + d` for every value, with `[a, b, μ, d]` its channel's
    /// coefficients (`g` absent: no `a·g` term), the samples cut among the training
    /// team.
    fn affine_map<F: Float>(
        self,
        shape: &[usize],
        x: &[F],
        g: Option<&[F]>,
        coefficients: &[[f64; 4]],
    ) -> Tensor<F> {
        let mut out = pool::reused::<F>(shape);
        if out.is_empty() {
            return out;
        }
        parallel::for_each_block(out.as_mut_slice(), self.c * self.inner, |start, block| {
            for (i, run) in block.chunks_exact_mut(self.inner).enumerate() {
                let at = start + i * self.inner;
                let [a, b, mean, d] = coefficients[at / self.inner % self.c];
                let xs = &x[at..at + self.inner];
                match g.map(|g| &g[at..at + self.inner]) {
                    Some(gs) => {
                        for ((o, x), g) in run.iter_mut().zip(xs).zip(gs) {
                            *o = F::from_f64(a * g.as_f64() + b * (x.as_f64() - mean) + d);
                        }
                    }
                    None => {
                        for (o, x) in run.iter_mut().zip(xs) {
                            *o = F::from_f64(b * (x.as_f64() - mean) + d);
                        }
                    }
                }
            }
        });
        out
    }
}

/// Checks an optional affine parameter's shape.
fn check_affine<F: Float>(op: &'static str, p: Option<&Tensor<F>>, shape: &[usize]) -> Result<()> {
    match p {
        Some(p) if p.shape() != shape => Err(Error::Shape {
            op,
            message: format!("the weight and bias must be {shape:?}"),
            got: p.shape().to_vec(),
        }),
        _ => Ok(()),
    }
}

/// Batch norm's channels for `shape` (`[N, C, ...]`), checked.
fn channels(op: &'static str, shape: &[usize]) -> Result<Channels> {
    if shape.len() < 2 {
        return Err(Error::Shape {
            op,
            message: "expected [N, C] or [N, C, ...]".into(),
            got: shape.to_vec(),
        });
    }
    let channels = Channels {
        n: shape[0],
        c: shape[1],
        inner: shape[2..].iter().product(),
    };
    if channels.m() < 2 {
        return Err(Error::Shape {
            op,
            message: "expected more than 1 value per channel when training".into(),
            got: shape.to_vec(),
        });
    }
    Ok(channels)
}

/// Layer norm's `[rows, size]` for `shape`, normalising its last `trailing` axes.
fn row_sizes(op: &'static str, shape: &[usize], trailing: usize) -> Result<[usize; 2]> {
    if trailing == 0 || trailing > shape.len() {
        return Err(Error::Shape {
            op,
            message: format!("cannot normalise the last {trailing} axes"),
            got: shape.to_vec(),
        });
    }
    let split = shape.len() - trailing;
    Ok([
        shape[..split].iter().product(),
        shape[split..].iter().product(),
    ])
}

/// The values of an optional affine parameter, in f64 (1 or 0 when absent: `len`
/// of `default`).
fn affine<F: Float>(p: Option<&Tensor<F>>, len: usize, default: f64) -> Vec<f64> {
    p.map_or_else(
        || vec![default; len],
        |p| p.values().iter().map(|v| v.as_f64()).collect(),
    )
}

/// A `[len]` tensor from f64 values.
fn from_f64<F: Float>(values: impl Iterator<Item = f64>, shape: &[usize]) -> Tensor<F> {
    Tensor::from_vec(values.map(F::from_f64).collect(), shape).expect("sized")
}

impl<F: Float> Tensor<F> {
    /// Batch norm in training mode (PyTorch `batch_norm` with `training=True`) on
    /// `[N, C]` or `[N, C, H, W]`: each channel normalised with the batch's mean and
    /// biased variance, then scaled by `weight[c]` and shifted by `bias[c]`. Returns
    /// the output, and each channel's mean and biased variance (what the running
    /// statistics are updated from).
    ///
    /// # Errors
    /// [`Error::Shape`] for a rank below 2, a weight or bias that is not `[C]`, or only
    /// one value per channel.
    ///
    /// ```
    /// use chainrule::Tensor;
    /// let x = Tensor::<f64>::from_vec(vec![1.0, 10.0, 3.0, 30.0], &[2, 2])?;
    /// let (y, mean, var) = x.batch_norm(None, None, 0.0)?;
    /// assert_eq!(y.to_vec(), vec![-1.0, -1.0, 1.0, 1.0]);
    /// assert_eq!((mean.to_vec(), var.to_vec()), (vec![2.0, 20.0], vec![1.0, 100.0]));
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn batch_norm(
        &self,
        weight: Option<&Tensor<F>>,
        bias: Option<&Tensor<F>>,
        eps: f64,
    ) -> Result<(Tensor<F>, Tensor<F>, Tensor<F>)> {
        let (y, mean, var) = self.batch_norm_moments(weight, bias, eps)?;
        let c = [mean.len()];
        Ok((
            y,
            from_f64(mean.into_iter(), &c),
            from_f64(var.into_iter(), &c),
        ))
    }

    /// [`Tensor::batch_norm`] with each channel's mean and biased variance in f64, as
    /// computed: what a recorded batch norm keeps for its backward and for the
    /// running statistics.
    pub(crate) fn batch_norm_moments(
        &self,
        weight: Option<&Tensor<F>>,
        bias: Option<&Tensor<F>>,
        eps: f64,
    ) -> Result<(Tensor<F>, Vec<f64>, Vec<f64>)> {
        let ch = channels("batch_norm", self.shape())?;
        check_affine("batch_norm", weight, &[ch.c])?;
        check_affine("batch_norm", bias, &[ch.c])?;
        let x = self.values();
        let stats = ch.for_each_channel::<2>(x.len(), |c, slots| {
            let (mean, var) = moments(ch.runs(&x, c), ch.m());
            slots.copy_from_slice(&[mean, var]);
        });
        let (gamma, beta) = (affine(weight, ch.c, 1.0), affine(bias, ch.c, 0.0));
        // y = γ·(x − μ)/√(σ² + ε) + β.
        let coefficients: Vec<[f64; 4]> = (stats.chunks_exact(2).enumerate())
            .map(|(c, s)| [0.0, gamma[c] * inverse_std(s[1], eps), s[0], beta[c]])
            .collect();
        let y = ch.affine_map(self.shape(), &x, None, &coefficients);
        let (mean, var) = stats.chunks_exact(2).map(|s| (s[0], s[1])).unzip();
        Ok((y, mean, var))
    }

    /// The gradients of [`Tensor::batch_norm`] with respect to its input, weight and
    /// bias, given `grad` = ∂L/∂y; only those whose `need` flag is set are returned.
    ///
    /// # Errors
    /// As [`Tensor::batch_norm`], or a `grad` of another shape than `x`.
    ///
    /// ```
    /// use chainrule::Tensor;
    /// let x = Tensor::<f64>::from_vec(vec![1.0, 3.0], &[2, 1])?;
    /// let g = Tensor::from_vec(vec![1.0, 1.0], &[2, 1])?;
    /// // A gradient equal on every value of a channel does not reach x: the mean absorbs it.
    /// let [dx, _, db] = Tensor::batch_norm_backward(&x, None, &g, 1e-5, [true, false, true])?;
    /// assert_eq!(dx.unwrap().to_vec(), vec![0.0, 0.0]);
    /// assert_eq!(db.unwrap().to_vec(), vec![2.0]);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn batch_norm_backward(
        x: &Tensor<F>,
        weight: Option<&Tensor<F>>,
        grad: &Tensor<F>,
        eps: f64,
        need: [bool; 3],
    ) -> Result<[Option<Tensor<F>>; 3]> {
        Self::batch_norm_backward_moments(x, weight, grad, eps, need, None)
    }

    /// [`Tensor::batch_norm_backward`] from the channels' mean and biased variance
    /// that the forward computed (`moments`, as
    /// [`Tensor::batch_norm_moments`] gives them), which then are not computed again:
    /// one pass over x and g for Σg and Σg·(x − μ), one for ∂x. With `None`, it
    /// computes them first.
    pub(crate) fn batch_norm_backward_moments(
        x: &Tensor<F>,
        weight: Option<&Tensor<F>>,
        grad: &Tensor<F>,
        eps: f64,
        need: [bool; 3],
        moments_of_forward: Option<(&[f64], &[f64])>,
    ) -> Result<[Option<Tensor<F>>; 3]> {
        let ch = channels("batch_norm", x.shape())?;
        check_affine("batch_norm", weight, &[ch.c])?;
        check_same("batch_norm backward", grad, x)?;
        if let Some((mean, var)) = moments_of_forward
            && (mean.len() != ch.c || var.len() != ch.c)
        {
            return Err(Error::Shape {
                op: "batch_norm backward",
                message: format!("the saved statistics must have {} channels", ch.c),
                got: vec![mean.len(), var.len()],
            });
        }
        let (xv, g) = (x.values(), grad.values());
        // Per channel: μ, σ², Σg and Σg·(x − μ).
        let stats = ch.for_each_channel::<4>(xv.len(), |c, slots| {
            let (mean, var) = match moments_of_forward {
                Some((mean, var)) => (mean[c], var[c]),
                None => moments(ch.runs(&xv, c), ch.m()),
            };
            let [sum_g, sum_gx] = (ch.runs(&xv, c).zip(ch.runs(&g, c)))
                .map(|(xs, gs)| {
                    lane_sums(xs.len(), |i| {
                        let gy = gs[i].as_f64();
                        [gy, gy * (xs[i].as_f64() - mean)]
                    })
                })
                .fold([0.0; 2], |t, s| [t[0] + s[0], t[1] + s[1]]);
            slots.copy_from_slice(&[mean, var, sum_g, sum_gx]);
        });
        let stats: Vec<[f64; 4]> = stats
            .chunks_exact(4)
            .map(|s| [s[0], s[1], s[2], s[3]])
            .collect();
        let gamma = affine(weight, ch.c, 1.0);
        let m = ch.m() as f64;
        let dx = need[0].then(|| {
            // The module's formula with ĝ = γ·g and Σĝ·x̂ = γ·Σg(x − μ)/√(σ² + ε):
            // ∂x = a·g + b·(x − μ) + d.
            let coefficients: Vec<[f64; 4]> = (stats.iter().zip(&gamma))
                .map(|(&[mean, var, sum_g, sum_gx], &gamma)| {
                    let inv = inverse_std(var, eps);
                    let a = gamma * inv;
                    [a, -a * inv * inv * sum_gx / m, mean, -a * sum_g / m]
                })
                .collect();
            ch.affine_map(x.shape(), &xv, Some(&g), &coefficients)
        });
        let c = [ch.c];
        // ∂γ = Σ g·x̂ and ∂β = Σ g.
        let dw = need[1].then(|| {
            let dw = stats
                .iter()
                .map(|&[_, var, _, sum_gx]| sum_gx * inverse_std(var, eps));
            from_f64(dw, &c)
        });
        let db = need[2].then(|| from_f64(stats.iter().map(|s| s[2]), &c));
        Ok([dx, dw, db])
    }

    /// Layer norm (PyTorch `layer_norm`): each sample's last `trailing` axes
    /// normalised with their own mean and biased variance, then scaled and shifted
    /// element-wise by `weight` and `bias` (shaped like those axes).
    ///
    /// # Errors
    /// [`Error::Shape`] when `trailing` is 0 or above the rank, or the weight or bias
    /// has another shape than the trailing axes.
    ///
    /// ```
    /// use chainrule::Tensor;
    /// let x = Tensor::<f64>::from_vec(vec![1.0, 3.0, 10.0, 30.0], &[2, 2])?;
    /// assert_eq!(x.layer_norm(1, None, None, 0.0)?.to_vec(), vec![-1.0, 1.0, -1.0, 1.0]);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn layer_norm(
        &self,
        trailing: usize,
        weight: Option<&Tensor<F>>,
        bias: Option<&Tensor<F>>,
        eps: f64,
    ) -> Result<Tensor<F>> {
        let [_, size] = row_sizes("layer_norm", self.shape(), trailing)?;
        let normalised = &self.shape()[self.ndim() - trailing..];
        check_affine("layer_norm", weight, normalised)?;
        check_affine("layer_norm", bias, normalised)?;
        let x = self.values();
        let (gamma, beta) = (affine(weight, size, 1.0), affine(bias, size, 0.0));
        let mut y = pool::reused::<F>(self.shape());
        if y.is_empty() {
            return Ok(y);
        }
        parallel::for_each_block(y.as_mut_slice(), size, |start, block| {
            for (i, out) in block.chunks_exact_mut(size).enumerate() {
                let xs = &x[start + i * size..][..size];
                let (mean, var) = moments(std::iter::once(xs), size);
                let inv = inverse_std(var, eps);
                for (k, (o, x)) in out.iter_mut().zip(xs).enumerate() {
                    *o = F::from_f64((x.as_f64() - mean) * inv * gamma[k] + beta[k]);
                }
            }
        });
        Ok(y)
    }

    /// The gradients of [`Tensor::layer_norm`] with respect to its input, weight and
    /// bias, given `grad` = ∂L/∂y; only those whose `need` flag is set are returned.
    ///
    /// # Errors
    /// As [`Tensor::layer_norm`], or a `grad` of another shape than `x`.
    ///
    /// ```
    /// use chainrule::Tensor;
    /// let x = Tensor::<f64>::from_vec(vec![1.0, 3.0], &[1, 2])?;
    /// let g = Tensor::from_vec(vec![2.0, 5.0], &[1, 2])?;
    /// let [_, dw, db] = Tensor::layer_norm_backward(&x, 1, None, &g, 0.0, [false, true, true])?;
    /// assert_eq!(dw.unwrap().to_vec(), vec![-2.0, 5.0]); // g · x̂, x̂ = (−1, 1)
    /// assert_eq!(db.unwrap().to_vec(), vec![2.0, 5.0]);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn layer_norm_backward(
        x: &Tensor<F>,
        trailing: usize,
        weight: Option<&Tensor<F>>,
        grad: &Tensor<F>,
        eps: f64,
        need: [bool; 3],
    ) -> Result<[Option<Tensor<F>>; 3]> {
        let [rows, size] = row_sizes("layer_norm", x.shape(), trailing)?;
        let normalised = &x.shape()[x.ndim() - trailing..];
        check_affine("layer_norm", weight, normalised)?;
        check_same("layer_norm backward", grad, x)?;
        let (xv, g) = (x.values(), grad.values());
        let gamma = affine(weight, size, 1.0);
        let split = xv.len() >= ELEMENTWISE_SPLIT_MIN;
        // Per row: μ, 1/√(σ² + ε), Σĝ and Σĝ·(x − μ), with ĝ = γ·g.
        let mut stats = vec![0.0; 4 * rows];
        if size > 0 {
            parallel::for_each_block_if(&mut stats, 4, split, |start, block| {
                for (i, slots) in block.chunks_exact_mut(4).enumerate() {
                    let at = (start / 4 + i) * size;
                    let (xs, gs) = (&xv[at..at + size], &g[at..at + size]);
                    let (mean, var) = moments(std::iter::once(xs), size);
                    let [sum_g, sum_gx] = lane_sums(size, |k| {
                        let gh = gs[k].as_f64() * gamma[k];
                        [gh, gh * (xs[k].as_f64() - mean)]
                    });
                    slots.copy_from_slice(&[mean, inverse_std(var, eps), sum_g, sum_gx]);
                }
            });
        }
        let m = size as f64;
        let dx = need[0].then(|| {
            let mut dx = pool::reused::<F>(x.shape());
            if dx.is_empty() {
                return dx;
            }
            parallel::for_each_block(dx.as_mut_slice(), size, |start, block| {
                for (i, out) in block.chunks_exact_mut(size).enumerate() {
                    let row = start / size + i;
                    let [mean, inv, sum_g, sum_gx] = stats[4 * row..4 * row + 4] else {
                        unreachable!("four statistics per row")
                    };
                    let (mean_g, mean_gx) = (sum_g / m, inv * sum_gx / m);
                    let at = row * size;
                    let (xs, gs) = (&xv[at..at + size], &g[at..at + size]);
                    for (k, o) in out.iter_mut().enumerate() {
                        let xhat = (xs[k].as_f64() - mean) * inv;
                        let gh = gs[k].as_f64() * gamma[k];
                        *o = F::from_f64(inv * (gh - mean_g - xhat * mean_gx));
                    }
                }
            });
            dx
        });
        let [dw, db] = if need[1] || need[2] {
            // ∂γ[k] = Σ_rows g·x̂ and ∂β[k] = Σ_rows g, each summed over the rows in
            // order, the columns k cut among the team.
            let mut sums = vec![0.0; 2 * size];
            parallel::for_each_block_if(&mut sums, 2, split, |start, block| {
                let first = start / 2;
                for row in 0..rows {
                    let (mean, inv) = (stats[4 * row], stats[4 * row + 1]);
                    let at = row * size + first;
                    let n = block.len() / 2;
                    let (xs, gs) = (&xv[at..at + n], &g[at..at + n]);
                    for ((slots, x), g) in block.chunks_exact_mut(2).zip(xs).zip(gs) {
                        let gy = g.as_f64();
                        slots[0] += gy * (x.as_f64() - mean) * inv;
                        slots[1] += gy;
                    }
                }
            });
            let column = |k: usize| sums.iter().copied().skip(k).step_by(2);
            [
                need[1].then(|| from_f64(column(0), normalised)),
                need[2].then(|| from_f64(column(1), normalised)),
            ]
        } else {
            [None, None]
        };
        Ok([dx, dw, db])
    }
}

/// Checks that an incoming gradient has its input's shape.
fn check_same<F: Float>(op: &'static str, grad: &Tensor<F>, x: &Tensor<F>) -> Result<()> {
    if grad.shape() == x.shape() {
        Ok(())
    } else {
        Err(Error::Shape {
            op,
            message: format!("the gradient must be {:?}", x.shape()),
            got: grad.shape().to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::naive::{self, assert_close, for_f32_and_f64, on_1_and_2_threads, poison};
    use super::*;

    /// Within 1e-5 (f32) or 1e-12 (f64) of the naive f64 statistics, relative to
    /// `max(1, |value|)`.
    fn tolerance<F: Float>() -> f64 {
        if size_of::<F>() == 4 { 1e-5 } else { 1e-12 }
    }

    /// Inputs centred on `offset` (a large offset tests the statistics' numerical
    /// safety: a one-pass Σx² − (Σx)²/m would lose the variance to cancellation).
    fn input<F: Float>(shape: &[usize], offset: f64, seed: u64) -> Tensor<F> {
        Tensor::rand_uniform(shape, offset - 1.0, offset + 1.0, seed).unwrap()
    }

    fn to_t<F: Float>(v: Vec<F>, shape: &[usize]) -> Tensor<F> {
        Tensor::from_vec(v, shape).unwrap()
    }

    const BATCH_SHAPES: [&[usize]; 6] = [
        &[4, 3],
        &[2, 1],
        &[3, 2, 5],
        &[2, 3, 4, 5],
        &[1, 2, 3, 3],
        &[5, 4, 1, 7],
    ];

    for_f32_and_f64!(batch_norm_and_its_gradients_match_the_naive_loops, |F| {
        for (i, &shape) in BATCH_SHAPES.iter().enumerate() {
            for (offset, affine) in [(0.0, true), (0.0, false), (100.0, true)] {
                let seed = 10 * i as u64;
                let x = input::<F>(shape, offset, seed);
                let c = [shape[1]];
                let weight = affine.then(|| input::<F>(&c, 1.0, seed + 1));
                let bias = affine.then(|| input::<F>(&c, 0.0, seed + 2));
                let grad = input::<F>(shape, 0.0, seed + 3);
                let what = |op: &str| format!("{op}, {shape:?}, offset {offset}, affine {affine}");
                poison::<F>(shape);
                let (y, mean, var) = x.batch_norm(weight.as_ref(), bias.as_ref(), 1e-5).unwrap();
                let (ey, emean, evar) = naive::batch_norm(&x, weight.as_ref(), bias.as_ref(), 1e-5);
                let stat = |v: Vec<f64>| to_t(v.into_iter().map(F::from_f64).collect(), &c);
                assert_close(&y, &ey, tolerance::<F>(), &what("batch_norm"));
                assert_close(&mean, &stat(emean), tolerance::<F>(), &what("mean"));
                assert_close(&var, &stat(evar), tolerance::<F>(), &what("variance"));
                let expected = naive::batch_norm_backward(&x, weight.as_ref(), &grad, 1e-5);
                for need in [[true; 3], [true, false, false], [false, true, true]] {
                    poison::<F>(shape);
                    let got = Tensor::batch_norm_backward(&x, weight.as_ref(), &grad, 1e-5, need)
                        .unwrap();
                    for (a, (got, expected)) in got.into_iter().zip(&expected).enumerate() {
                        assert_eq!(got.is_some(), need[a]);
                        if let Some(got) = got {
                            let shape = if a == 0 { shape } else { &c[..] };
                            let expected = to_t(expected.clone(), shape);
                            assert_close(
                                &got,
                                &expected,
                                tolerance::<F>(),
                                &what(&format!("gradient {a}")),
                            );
                        }
                    }
                }
            }
        }
    });

    for_f32_and_f64!(
        batch_norm_backward_from_the_forwards_moments_gives_the_same_bits,
        |F| {
            for (i, &shape) in BATCH_SHAPES.iter().enumerate() {
                let seed = 10 * i as u64;
                let x = input::<F>(shape, 3.0, seed);
                let c = [shape[1]];
                let (w, b) = (input::<F>(&c, 1.0, seed + 1), input::<F>(&c, 0.0, seed + 2));
                let grad = input::<F>(shape, 0.0, seed + 3);
                let (y, mean, var) = x.batch_norm_moments(Some(&w), Some(&b), 1e-5).unwrap();
                let (public_y, public_mean, public_var) =
                    x.batch_norm(Some(&w), Some(&b), 1e-5).unwrap();
                assert!(y == public_y, "{shape:?}");
                let as_f = |v: &[f64]| to_t(v.iter().map(|&v| F::from_f64(v)).collect(), &c);
                assert!(as_f(&mean) == public_mean && as_f(&var) == public_var);
                let again = Tensor::batch_norm_backward(&x, Some(&w), &grad, 1e-5, [true; 3]);
                let saved = Some((&mean[..], &var[..]));
                let from_saved = Tensor::batch_norm_backward_moments(
                    &x,
                    Some(&w),
                    &grad,
                    1e-5,
                    [true; 3],
                    saved,
                );
                assert!(again.unwrap() == from_saved.unwrap(), "{shape:?}");
                let short = Some((&mean[1..], &var[..]));
                let wrong = Tensor::batch_norm_backward_moments(
                    &x,
                    Some(&w),
                    &grad,
                    1e-5,
                    [true; 3],
                    short,
                );
                assert!(wrong.is_err());
            }
        }
    );

    for_f32_and_f64!(layer_norm_and_its_gradients_match_the_naive_loops, |F| {
        for (i, (shape, trailing)) in [
            (&[4, 6][..], 1),
            (&[2, 3, 5], 1),
            (&[2, 3, 5], 2),
            (&[3, 2, 4, 5], 3),
            (&[3, 2, 4, 5], 4),
            (&[5, 1], 1),
        ]
        .into_iter()
        .enumerate()
        {
            for (offset, affine) in [(0.0, true), (0.0, false), (100.0, true)] {
                let seed = 10 * i as u64;
                let x = input::<F>(shape, offset, seed);
                let normalised = &shape[shape.len() - trailing..];
                let weight = affine.then(|| input::<F>(normalised, 1.0, seed + 1));
                let bias = affine.then(|| input::<F>(normalised, 0.0, seed + 2));
                let grad = input::<F>(shape, 0.0, seed + 3);
                let what = |op: &str| {
                    format!("{op}, {shape:?}/{trailing}, offset {offset}, affine {affine}")
                };
                poison::<F>(shape);
                let y = x
                    .layer_norm(trailing, weight.as_ref(), bias.as_ref(), 1e-5)
                    .unwrap();
                let ey = naive::layer_norm(&x, trailing, weight.as_ref(), bias.as_ref(), 1e-5);
                assert_close(&y, &ey, tolerance::<F>(), &what("layer_norm"));
                let expected =
                    naive::layer_norm_backward(&x, trailing, weight.as_ref(), &grad, 1e-5);
                for need in [[true; 3], [true, false, false], [false, true, true]] {
                    poison::<F>(shape);
                    let got = Tensor::layer_norm_backward(
                        &x,
                        trailing,
                        weight.as_ref(),
                        &grad,
                        1e-5,
                        need,
                    )
                    .unwrap();
                    for (a, (got, expected)) in got.into_iter().zip(&expected).enumerate() {
                        assert_eq!(got.is_some(), need[a]);
                        if let Some(got) = got {
                            let shape = if a == 0 { shape } else { normalised };
                            let expected = to_t(expected.clone(), shape);
                            assert_close(
                                &got,
                                &expected,
                                tolerance::<F>(),
                                &what(&format!("gradient {a}")),
                            );
                        }
                    }
                }
            }
        }
    });

    for_f32_and_f64!(normalisation_gives_the_same_bits_on_1_and_2_threads, |F| {
        let x = input::<F>(&[16, 8, 20, 20], 3.0, 1);
        let grad = input::<F>(x.shape(), 0.0, 2);
        let (w8, b8) = (input::<F>(&[8], 1.0, 3), input::<F>(&[8], 0.0, 4));
        let (w400, b400) = (input::<F>(&[20, 20], 1.0, 5), input::<F>(&[20, 20], 0.0, 6));
        let run = || {
            let (y, mean, var) = x.batch_norm(Some(&w8), Some(&b8), 1e-5).unwrap();
            let [a, b, c] =
                Tensor::batch_norm_backward(&x, Some(&w8), &grad, 1e-5, [true; 3]).unwrap();
            let z = x.layer_norm(2, Some(&w400), Some(&b400), 1e-5).unwrap();
            let [d, e, f] =
                Tensor::layer_norm_backward(&x, 2, Some(&w400), &grad, 1e-5, [true; 3]).unwrap();
            [
                y,
                mean,
                var,
                a.unwrap(),
                b.unwrap(),
                c.unwrap(),
                z,
                d.unwrap(),
                e.unwrap(),
                f.unwrap(),
            ]
        };
        let (one, two) = on_1_and_2_threads(run);
        assert!(one == two);
    });
}
