//! Normalisation: batch norm's training-mode statistics over the batch (and the
//! spatial axes), per channel, and layer norm's over the trailing axes, per sample;
//! each as one fused forward and one fused backward.
//!
//! Both normalise a set S of m values as x̂ = (x − μ)/√(σ² + ε), with μ and σ² the
//! set's mean and biased variance, then scale and shift: y = γ·x̂ + β. Their backward
//! is the same formula over S, where the three paths through x, μ and σ² meet:
//! ∂L/∂x = (1/√(σ² + ε)) · (ĝ − mean_S(ĝ) − x̂ · mean_S(ĝ · x̂)), with ĝ = γ · ∂L/∂y.
//! Statistics are accumulated in f64 whatever the element type.

use super::Tensor;
use crate::{Error, Float, Result};

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
    x: &[F],
    sets: Sets,
    mean: &[f64],
    var: &[f64],
    eps: f64,
    weight: Option<&[F]>,
    bias: Option<&[F]>,
) -> Vec<F> {
    let inv: Vec<f64> = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
    let mut y = vec![F::zero(); x.len()];
    sets.for_each(|s, k, i| {
        let xhat = (x[i].as_f64() - mean[s]) * inv[s];
        let g = weight.map_or(1.0, |w| w[k].as_f64());
        let b = bias.map_or(0.0, |b| b[k].as_f64());
        y[i] = F::from_f64(xhat * g + b);
    });
    y
}

/// The fused backward over the sets; see the module's formula.
fn normalise_backward<F: Float>(
    x: &[F],
    g: &[F],
    sets: Sets,
    eps: f64,
    weight: Option<&[F]>,
    affine_len: usize,
    need: [bool; 3],
) -> [Option<Vec<F>>; 3] {
    let (mean, var) = statistics(x, sets);
    let inv: Vec<f64> = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
    let m = sets.size() as f64;
    let xhat = |s: usize, i: usize| (x[i].as_f64() - mean[s]) * inv[s];
    let mut mean_g = vec![0.0; sets.count()];
    let mut mean_gx = vec![0.0; sets.count()];
    let mut dw = vec![0.0; affine_len];
    let mut db = vec![0.0; affine_len];
    sets.for_each(|s, k, i| {
        let gy = g[i].as_f64();
        let gh = gy * weight.map_or(1.0, |w| w[k].as_f64());
        mean_g[s] += gh;
        mean_gx[s] += gh * xhat(s, i);
        dw[k] += gy * xhat(s, i);
        db[k] += gy;
    });
    let dx = need[0].then(|| {
        let mut dx = vec![F::zero(); x.len()];
        sets.for_each(|s, k, i| {
            let gh = g[i].as_f64() * weight.map_or(1.0, |w| w[k].as_f64());
            dx[i] = F::from_f64(inv[s] * (gh - mean_g[s] / m - xhat(s, i) * mean_gx[s] / m));
        });
        dx
    });
    let to_f = |v: Vec<f64>| v.into_iter().map(F::from_f64).collect();
    [dx, need[1].then(|| to_f(dw)), need[2].then(|| to_f(db))]
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

/// Batch norm's sets for `shape` (`[N, C, ...]`).
fn channel_sets(op: &'static str, shape: &[usize]) -> Result<Sets> {
    if shape.len() < 2 {
        return Err(Error::Shape {
            op,
            message: "expected [N, C] or [N, C, ...]".into(),
            got: shape.to_vec(),
        });
    }
    let sets = Sets {
        outer: shape[0],
        channels: shape[1],
        inner: shape[2..].iter().product(),
        per_channel: true,
    };
    if sets.size() < 2 {
        return Err(Error::Shape {
            op,
            message: "expected more than 1 value per channel when training".into(),
            got: shape.to_vec(),
        });
    }
    Ok(sets)
}

/// Layer norm's sets for `shape`, normalising its last `trailing` axes.
fn trailing_sets(op: &'static str, shape: &[usize], trailing: usize) -> Result<Sets> {
    if trailing == 0 || trailing > shape.len() {
        return Err(Error::Shape {
            op,
            message: format!("cannot normalise the last {trailing} axes"),
            got: shape.to_vec(),
        });
    }
    let split = shape.len() - trailing;
    Ok(Sets {
        outer: shape[..split].iter().product(),
        channels: 1,
        inner: shape[split..].iter().product(),
        per_channel: false,
    })
}

fn slice_of<F: Float>(t: Option<&Tensor<F>>) -> Option<Vec<F>> {
    t.map(Tensor::to_vec)
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
        let sets = channel_sets("batch_norm", self.shape())?;
        check_affine("batch_norm", weight, &[sets.channels])?;
        check_affine("batch_norm", bias, &[sets.channels])?;
        let x = self.to_vec();
        let (mean, var) = statistics(&x, sets);
        let (w, b) = (slice_of(weight), slice_of(bias));
        let y = normalise(&x, sets, &mean, &var, eps, w.as_deref(), b.as_deref());
        let to_t = |v: &[f64]| {
            Tensor::from_vec(
                v.iter().map(|&v| F::from_f64(v)).collect(),
                &[sets.channels],
            )
        };
        Ok((
            Tensor::from_vec(y, self.shape())?,
            to_t(&mean)?,
            to_t(&var)?,
        ))
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
        let sets = channel_sets("batch_norm", x.shape())?;
        check_affine("batch_norm", weight, &[sets.channels])?;
        check_same("batch_norm backward", grad, x)?;
        let w = slice_of(weight);
        let [dx, dw, db] = normalise_backward(
            &x.to_vec(),
            &grad.to_vec(),
            sets,
            eps,
            w.as_deref(),
            sets.channels,
            need,
        );
        let c = [sets.channels];
        Ok([
            dx.map(|v| Tensor::from_vec(v, x.shape())).transpose()?,
            dw.map(|v| Tensor::from_vec(v, &c)).transpose()?,
            db.map(|v| Tensor::from_vec(v, &c)).transpose()?,
        ])
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
        let sets = trailing_sets("layer_norm", self.shape(), trailing)?;
        let affine = &self.shape()[self.ndim() - trailing..];
        check_affine("layer_norm", weight, affine)?;
        check_affine("layer_norm", bias, affine)?;
        let x = self.to_vec();
        let (mean, var) = statistics(&x, sets);
        let (w, b) = (slice_of(weight), slice_of(bias));
        Tensor::from_vec(
            normalise(&x, sets, &mean, &var, eps, w.as_deref(), b.as_deref()),
            self.shape(),
        )
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
        let sets = trailing_sets("layer_norm", x.shape(), trailing)?;
        let affine = &x.shape()[x.ndim() - trailing..];
        check_affine("layer_norm", weight, affine)?;
        check_same("layer_norm backward", grad, x)?;
        let w = slice_of(weight);
        let [dx, dw, db] = normalise_backward(
            &x.to_vec(),
            &grad.to_vec(),
            sets,
            eps,
            w.as_deref(),
            sets.inner,
            need,
        );
        Ok([
            dx.map(|v| Tensor::from_vec(v, x.shape())).transpose()?,
            dw.map(|v| Tensor::from_vec(v, affine)).transpose()?,
            db.map(|v| Tensor::from_vec(v, affine)).transpose()?,
        ])
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
