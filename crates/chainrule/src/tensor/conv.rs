//! 2-D convolution over `[N, C, H, W]` tensors (PyTorch `nn.Conv2d`'s cross-correlation),
//! and the window geometry that convolution and pooling share.

use super::Tensor;
use crate::{Error, Float, Result};

/// The window of a 2-D convolution or pooling: kernel size, stride, zero padding and
/// dilation, each as `[height, width]`.
///
/// ```
/// use chainrule::tensor::Window2d;
/// let w = Window2d { kernel: [3, 3], stride: [2, 2], padding: [1, 1], dilation: [1, 1] };
/// assert_eq!(w.output_size([28, 28]), Some([14, 14]));
/// assert_eq!(Window2d::square(5).output_size([4, 4]), None); // larger than the input
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window2d {
    /// Kernel (or pooling window) height and width.
    pub kernel: [usize; 2],
    /// Step between windows.
    pub stride: [usize; 2],
    /// Zeros (or, for max pooling, −∞) added on each side.
    pub padding: [usize; 2],
    /// Spacing between kernel taps (1: adjacent).
    pub dilation: [usize; 2],
}

impl Window2d {
    /// A `k × k` window with stride 1, no padding and no dilation.
    ///
    /// ```
    /// assert_eq!(chainrule::tensor::Window2d::square(3).kernel, [3, 3]);
    /// ```
    pub fn square(k: usize) -> Self {
        Window2d {
            kernel: [k, k],
            stride: [1, 1],
            padding: [0, 0],
            dilation: [1, 1],
        }
    }

    /// The output height and width for an input of `[h, w]`, or `None` when the
    /// (dilated) window is larger than the padded input or a size is 0.
    ///
    /// ```
    /// use chainrule::tensor::Window2d;
    /// assert_eq!(Window2d::square(3).output_size([28, 28]), Some([26, 26]));
    /// ```
    pub fn output_size(&self, input: [usize; 2]) -> Option<[usize; 2]> {
        let mut out = [0; 2];
        for a in 0..2 {
            if self.kernel[a] == 0 || self.stride[a] == 0 || self.dilation[a] == 0 {
                return None;
            }
            let padded = input[a].checked_add(2usize.checked_mul(self.padding[a])?)?;
            let span = self.dilation[a].checked_mul(self.kernel[a] - 1)? + 1;
            if padded < span || input[a] == 0 {
                return None;
            }
            out[a] = (padded - span) / self.stride[a] + 1;
        }
        Some(out)
    }

    /// The input row (or column, for `axis` 1) that output position `o` reads with
    /// kernel tap `k`, or `None` when it falls in the padding.
    pub(crate) fn source(&self, axis: usize, o: usize, k: usize, size: usize) -> Option<usize> {
        (o * self.stride[axis] + k * self.dilation[axis])
            .checked_sub(self.padding[axis])
            .filter(|&i| i < size)
    }
}

/// The `[N, C, H, W]` sizes of `x`, or a shape error for `op`.
pub(crate) fn image_shape(op: &'static str, shape: &[usize]) -> Result<[usize; 4]> {
    match *shape {
        [n, c, h, w] => Ok([n, c, h, w]),
        _ => Err(Error::Shape {
            op,
            message: "expected a [N, C, H, W] input".into(),
            got: shape.to_vec(),
        }),
    }
}

/// Checks `x`, `weight` and `bias` of a convolution and returns `[N, C, H, W]`,
/// `[O, kh, kw]` and the output size.
fn conv_shapes<F: Float>(
    x: &Tensor<F>,
    weight: &Tensor<F>,
    bias: Option<&Tensor<F>>,
    window: &Window2d,
) -> Result<([usize; 4], usize, [usize; 2])> {
    let [n, c, h, w] = image_shape("conv2d", x.shape())?;
    let error = |message: String, got: &[usize]| Error::Shape {
        op: "conv2d",
        message,
        got: got.to_vec(),
    };
    let &[o, wc, kh, kw] = weight.shape() else {
        return Err(error(
            "the weight must be [out, in, kh, kw]".into(),
            weight.shape(),
        ));
    };
    if wc != c || [kh, kw] != window.kernel {
        return Err(error(
            format!(
                "the weight must be [{o}, {c}, {}, {}] for this input and window",
                window.kernel[0], window.kernel[1]
            ),
            weight.shape(),
        ));
    }
    if let Some(b) = bias
        && b.shape() != [o]
    {
        return Err(error(format!("the bias must be [{o}]"), b.shape()));
    }
    let out = window.output_size([h, w]).ok_or_else(|| {
        error(
            format!("the window {window:?} does not fit the input"),
            x.shape(),
        )
    })?;
    Ok(([n, c, h, w], o, out))
}

impl<F: Float> Tensor<F> {
    /// 2-D convolution (cross-correlation, as PyTorch's `conv2d`): `self` is
    /// `[N, C, H, W]`, `weight` `[O, C, kh, kw]`, `bias` `[O]`; the result is
    /// `[N, O, OH, OW]` with `y[n,o,p,q] = b[o] + Σ_{c,i,j} x[n, c, p·s + i·d − pad,
    /// q·s + j·d − pad] · w[o,c,i,j]`, padded positions reading 0.
    ///
    /// # Errors
    /// [`Error::Shape`] when the shapes do not fit each other or the window.
    ///
    /// ```
    /// use chainrule::{tensor::Window2d, Tensor};
    /// let x = Tensor::<f64>::from_vec((0..9).map(f64::from).collect(), &[1, 1, 3, 3])?;
    /// let w = Tensor::from_vec(vec![1.0, 0.0, 0.0, 1.0], &[1, 1, 2, 2])?;
    /// let y = x.conv2d(&w, None, &Window2d::square(2))?;
    /// assert_eq!(y.to_vec(), vec![4.0, 6.0, 10.0, 12.0]); // x[i,j] + x[i+1,j+1]
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn conv2d(
        &self,
        weight: &Tensor<F>,
        bias: Option<&Tensor<F>>,
        window: &Window2d,
    ) -> Result<Tensor<F>> {
        let ([n, c, h, w], o, [oh, ow]) = conv_shapes(self, weight, bias, window)?;
        let [kh, kw] = window.kernel;
        let (x, k) = (self.to_vec(), weight.to_vec());
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
        Tensor::from_vec(y, &[n, o, oh, ow])
    }

    /// The gradients of [`Tensor::conv2d`] with respect to its input, weight and bias,
    /// given `grad` = ∂L/∂y (`[N, O, OH, OW]`); only those whose `need` flag is set
    /// are computed.
    ///
    /// # Errors
    /// [`Error::Shape`] when the shapes do not fit each other.
    ///
    /// ```
    /// use chainrule::{tensor::Window2d, Tensor};
    /// let x = Tensor::<f64>::ones(&[1, 1, 3, 3]);
    /// let w = Tensor::<f64>::ones(&[1, 1, 2, 2]);
    /// let g = Tensor::<f64>::ones(&[1, 1, 2, 2]);
    /// let [dx, dw, _] = Tensor::conv2d_backward(&x, &w, &g, &Window2d::square(2), [true, true, false])?;
    /// assert_eq!(dx.unwrap().to_vec(), vec![1.0, 2.0, 1.0, 2.0, 4.0, 2.0, 1.0, 2.0, 1.0]);
    /// assert_eq!(dw.unwrap().to_vec(), vec![4.0; 4]);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn conv2d_backward(
        x: &Tensor<F>,
        weight: &Tensor<F>,
        grad: &Tensor<F>,
        window: &Window2d,
        need: [bool; 3],
    ) -> Result<[Option<Tensor<F>>; 3]> {
        let ([n, c, h, w], o, [oh, ow]) = conv_shapes(x, weight, None, window)?;
        if grad.shape() != [n, o, oh, ow] {
            return Err(Error::Shape {
                op: "conv2d backward",
                message: format!("the gradient must be [{n}, {o}, {oh}, {ow}]"),
                got: grad.shape().to_vec(),
            });
        }
        let [kh, kw] = window.kernel;
        let (xv, k, g) = (x.to_vec(), weight.to_vec(), grad.to_vec());
        let mut dx = vec![F::zero(); if need[0] { xv.len() } else { 0 }];
        let mut dw = vec![F::zero(); if need[1] { k.len() } else { 0 }];
        let mut db = vec![F::zero(); if need[2] { o } else { 0 }];
        for ni in 0..n {
            for oi in 0..o {
                for p in 0..oh {
                    for q in 0..ow {
                        let gy = g[((ni * o + oi) * oh + p) * ow + q];
                        if need[2] {
                            db[oi] += gy;
                        }
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
                                    if need[0] {
                                        dx[xi] += gy * k[ki];
                                    }
                                    if need[1] {
                                        dw[ki] += gy * xv[xi];
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        Ok([
            need[0]
                .then(|| Tensor::from_vec(dx, x.shape()))
                .transpose()?,
            need[1]
                .then(|| Tensor::from_vec(dw, weight.shape()))
                .transpose()?,
            need[2].then(|| Tensor::from_vec(db, &[o])).transpose()?,
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::super::naive::{
        self, Shapes, assert_close, for_f32_and_f64, on_1_and_2_threads, poison, sum_tolerance,
    };
    use super::*;

    /// One convolution to check: input `[n, c, h, w]`, `o` output channels.
    #[derive(Debug, Clone, Copy)]
    struct Case {
        n: usize,
        c: usize,
        h: usize,
        w: usize,
        o: usize,
        window: Window2d,
        bias: bool,
    }

    fn window(
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
        dilation: [usize; 2],
    ) -> Window2d {
        Window2d {
            kernel,
            stride,
            padding,
            dilation,
        }
    }

    /// The shapes named in the kernels' brief, then seeded random ones.
    fn cases() -> Vec<Case> {
        let case = |[n, c, h, w, o]: [usize; 5], window: Window2d, bias: bool| Case {
            n,
            c,
            h,
            w,
            o,
            window,
            bias,
        };
        let mut cases = vec![
            // The MNIST network's first layer (C = 1), smaller.
            case([2, 1, 10, 10, 4], Window2d::square(3), true),
            // Stride 2 with padding, odd sizes.
            case(
                [2, 3, 7, 9, 5],
                window([3, 3], [2, 2], [1, 1], [1, 1]),
                true,
            ),
            // A non-square kernel, dilated, unequal strides and paddings, batch 1.
            case(
                [1, 2, 9, 8, 3],
                window([2, 3], [1, 2], [0, 2], [2, 1]),
                false,
            ),
            // The kernel as large as the input: one output position.
            case(
                [3, 2, 5, 4, 2],
                window([5, 4], [1, 1], [0, 0], [1, 1]),
                true,
            ),
            // Batch 1, one channel in and out, a 1×1 kernel, no bias.
            case([1, 1, 3, 5, 1], Window2d::square(1), false),
            // Padding wider than the kernel: some windows read only zeros.
            case(
                [1, 2, 3, 3, 2],
                window([1, 1], [2, 2], [2, 2], [1, 1]),
                true,
            ),
            // Large stride and dilation with padding.
            case(
                [2, 2, 11, 13, 3],
                window([2, 2], [3, 3], [1, 1], [3, 3]),
                true,
            ),
        ];
        let mut r = Shapes::new(14);
        while cases.len() < 40 {
            let window = window(
                [r.pick(1, 4), r.pick(1, 4)],
                [r.pick(1, 3), r.pick(1, 3)],
                [r.pick(0, 2), r.pick(0, 2)],
                [r.pick(1, 2), r.pick(1, 2)],
            );
            let (h, w) = (r.pick(1, 12), r.pick(1, 12));
            if window.output_size([h, w]).is_some() {
                let dims = [r.pick(1, 3), r.pick(1, 4), h, w, r.pick(1, 5)];
                cases.push(case(dims, window, r.pick(0, 1) == 1));
            }
        }
        cases
    }

    struct Inputs<F: Float> {
        x: Tensor<F>,
        weight: Tensor<F>,
        bias: Option<Tensor<F>>,
        grad: Tensor<F>,
    }

    fn inputs<F: Float>(case: &Case, seed: u64) -> Inputs<F> {
        let [kh, kw] = case.window.kernel;
        let [oh, ow] = case.window.output_size([case.h, case.w]).unwrap();
        let rand =
            |shape: &[usize], seed| Tensor::<F>::rand_uniform(shape, -1.0, 1.0, seed).unwrap();
        Inputs {
            x: rand(&[case.n, case.c, case.h, case.w], seed),
            weight: rand(&[case.o, case.c, kh, kw], seed + 1),
            bias: case.bias.then(|| rand(&[case.o], seed + 2)),
            grad: rand(&[case.n, case.o, oh, ow], seed + 3),
        }
    }

    for_f32_and_f64!(convolution_and_its_gradients_match_the_naive_loops, |F| {
        for (i, case) in cases().iter().enumerate() {
            let Inputs {
                x,
                weight,
                bias,
                grad,
            } = inputs::<F>(case, 100 * i as u64);
            let what = |op: &str| format!("{op} of {case:?}");
            let [kh, kw] = case.window.kernel;
            poison::<F>(grad.shape());
            let y = x.conv2d(&weight, bias.as_ref(), &case.window).unwrap();
            let expected = naive::conv2d(&x, &weight, bias.as_ref(), &case.window);
            let terms = case.c * kh * kw;
            assert_close(&y, &expected, sum_tolerance::<F>(terms), &what("conv2d"));
            let [ex, ew, eb] = naive::conv2d_backward(&x, &weight, &grad, &case.window, [true; 3]);
            let positions = grad.len() / (case.n * case.o);
            let tolerances = [
                sum_tolerance::<F>(case.o * kh * kw),
                sum_tolerance::<F>(case.n * positions),
                sum_tolerance::<F>(case.n * positions),
            ];
            for need in [
                [true; 3],
                [false, true, true],
                [true, false, false],
                [false; 3],
            ] {
                poison::<F>(x.shape());
                poison::<F>(weight.shape());
                let got = Tensor::conv2d_backward(&x, &weight, &grad, &case.window, need).unwrap();
                for (a, ((got, expected), tolerance)) in
                    got.iter().zip([&ex, &ew, &eb]).zip(tolerances).enumerate()
                {
                    assert_eq!(got.is_some(), need[a], "{}", what("need"));
                    if let (Some(got), Some(expected)) = (got, expected) {
                        assert_close(got, expected, tolerance, &what(&format!("gradient {a}")));
                    }
                }
            }
        }
    });

    for_f32_and_f64!(convolution_gives_the_same_bits_on_1_and_2_threads, |F| {
        // Large enough for every product to be split among the team.
        for case in [
            Case {
                n: 8,
                c: 1,
                h: 28,
                w: 28,
                o: 32,
                window: Window2d::square(3),
                bias: true,
            },
            Case {
                n: 5,
                c: 16,
                h: 14,
                w: 12,
                o: 24,
                window: window([3, 3], [1, 1], [1, 1], [1, 1]),
                bias: true,
            },
            Case {
                n: 3,
                c: 6,
                h: 31,
                w: 17,
                o: 9,
                window: window([3, 2], [2, 1], [1, 0], [1, 2]),
                bias: false,
            },
        ] {
            let Inputs {
                x,
                weight,
                bias,
                grad,
            } = inputs::<F>(&case, 7);
            let run = || {
                let y = x.conv2d(&weight, bias.as_ref(), &case.window).unwrap();
                let grads =
                    Tensor::conv2d_backward(&x, &weight, &grad, &case.window, [true; 3]).unwrap();
                (y, grads)
            };
            let (one, two) = on_1_and_2_threads(run);
            assert!(one == two, "{case:?}");
        }
    });
}
