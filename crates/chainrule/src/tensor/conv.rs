//! 2-D convolution over `[N, C, H, W]` tensors (PyTorch `nn.Conv2d`'s cross-correlation),
//! and the window geometry that convolution and pooling share.

use super::Tensor;
use super::matmul::{add_product_into, product_into};
use super::pool;
use crate::{Error, Float, Result, parallel};
use ndarray::{ArrayView2, ArrayViewMut2};
use std::borrow::Cow;
use std::ops::Range;

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
    /// kernel tap `k`, in an input of `size` rows (columns), or `None` when it falls
    /// in the padding.
    ///
    /// ```
    /// use chainrule::tensor::Window2d;
    /// let w = Window2d { kernel: [3, 3], stride: [2, 2], padding: [1, 1], dilation: [1, 1] };
    /// assert_eq!(w.source(0, 0, 0, 5), None);    // row −1: padding
    /// assert_eq!(w.source(0, 1, 2, 5), Some(3)); // 1·2 + 2 − 1
    /// ```
    pub fn source(&self, axis: usize, o: usize, k: usize, size: usize) -> Option<usize> {
        (o * self.stride[axis] + k * self.dilation[axis])
            .checked_sub(self.padding[axis])
            .filter(|&i| i < size)
    }

    /// Along `axis` (0: rows, 1: columns), for kernel tap `tap`: the output
    /// positions `o < out` that read inside an input of `size` (a range, since the
    /// input index `o·stride + offset` grows with `o`), and that `offset`.
    pub(crate) fn reach(
        &self,
        axis: usize,
        tap: usize,
        out: usize,
        size: usize,
    ) -> (Range<usize>, isize) {
        let offset = (tap * self.dilation[axis]) as isize - self.padding[axis] as isize;
        let stride = self.stride[axis];
        let start = if offset < 0 {
            offset.unsigned_abs().div_ceil(stride)
        } else {
            0
        };
        let end = match (size as isize).checked_sub(offset) {
            Some(room) if room > 0 => (room as usize).div_ceil(stride).min(out),
            _ => 0,
        };
        (start.min(end)..end, offset)
    }

    /// Whether the windows tile the input without overlap or padding (stride =
    /// kernel, no padding, no dilation): every input value is in at most one window.
    pub(crate) fn tiles(&self) -> bool {
        self.stride == self.kernel && self.padding == [0, 0] && self.dilation == [1, 1]
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

/// Checks `x`, `weight` and `bias` of a convolution and returns its geometry and
/// the output's shape.
fn conv_shapes<F: Float>(
    x: &Tensor<F>,
    weight: &Tensor<F>,
    bias: Option<&Tensor<F>>,
    window: &Window2d,
) -> Result<(Geometry, [usize; 4])> {
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
    let geometry = Geometry {
        n,
        c,
        h,
        w,
        o,
        oh: out[0],
        ow: out[1],
        window: *window,
    };
    Ok((geometry, [n, o, out[0], out[1]]))
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
        let (geometry, _) = conv_shapes(self, weight, bias, window)?;
        Ok(forward(&geometry, self, weight, bias))
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
        let (g, [n, o, oh, ow]) = conv_shapes(x, weight, None, window)?;
        if grad.shape() != [n, o, oh, ow] {
            return Err(Error::Shape {
                op: "conv2d backward",
                message: format!("the gradient must be {:?}", [n, o, oh, ow]),
                got: grad.shape().to_vec(),
            });
        }
        let dx = need[0].then(|| input_gradient(&g, weight, grad));
        let [dw, db] = parameter_gradients(&g, x, grad, [need[1], need[2]]);
        Ok([dx, dw, db])
    }
}

// --- kernels ----------------------------------------------------------------------
//
// Convolution as matrix products (im2col). For one sample, the input values that meet
// each kernel tap are laid out as `cols`, [C·kh·kw, OH·OW]: row (c, i, j), column
// (p, q) holds x[c, p·s + i·d − pad, q·s + j·d − pad] (0 in the padding). Then
//   forward:          y[n] = W · cols[n]            ([O, C·kh·kw] · [C·kh·kw, OH·OW])
//   weight gradient:  ∂W  = Σ_n ∂y[n] · cols[n]ᵀ
//   input gradient:   ∂cols = Wᵀ · ∂y[n], added back where each value was read
//                     (col2im).
// One sample at a time: its `cols` (663 KB for the MNIST network's second layer in
// f32) is still in the core's cache when the product reads it, where the whole
// batch's would be 42 MB, and each sample's output is a contiguous block of y, where
// one product over the whole batch would leave it [O, N, OH·OW] to permute
// (docs/performance.md, "Convolution", has the measurements). A bias rides along as
// one more column of W and a row of ones in `cols`, so the product adds it (and the
// weight gradient's product sums the bias gradient) without a pass of its own.
//
// Threads: samples are cut among the training team, one block of samples each, and
// each sample's products are single-threaded products of the same shape whatever
// the thread count. The weight gradient is summed over a fixed number of groups of
// samples (from the shapes alone), each group in order on one thread, and the
// groups' sums are added in order: 1 and 2 threads give the same bits.

/// The sizes of one convolution, checked.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    oh: usize,
    ow: usize,
    window: Window2d,
}

impl Geometry {
    /// Kernel taps per output channel, C·kh·kw: the rows of `cols`.
    fn taps(&self) -> usize {
        self.c * self.window.kernel[0] * self.window.kernel[1]
    }

    /// Output positions per sample, OH·OW: the columns of `cols`.
    fn positions(&self) -> usize {
        self.oh * self.ow
    }

    /// Values of one input sample, C·H·W.
    fn sample(&self) -> usize {
        self.c * self.h * self.w
    }
}

/// The rows (`axis` 0) or columns (1) of the input that kernel tap `tap` reads (see
/// [`Window2d::reach`]).
fn tap_range(g: &Geometry, axis: usize, tap: usize) -> (Range<usize>, isize) {
    let (out, size) = [(g.oh, g.h), (g.ow, g.w)][axis];
    g.window.reach(axis, tap, out, size)
}

/// Writes the first [`Geometry::taps`] rows of `cols` (`[taps, positions]`, see the
/// section's comment) for one sample `x` (`[C, H, W]`).
fn im2col<F: Float>(g: &Geometry, x: &[F], cols: &mut [F]) {
    let [kh, kw] = g.window.kernel;
    let [sh, sw] = g.window.stride;
    let mut rows = cols.chunks_exact_mut(g.positions());
    for plane in x.chunks_exact(g.h * g.w) {
        for i in 0..kh {
            let (ps, row_offset) = tap_range(g, 0, i);
            for j in 0..kw {
                let (qs, offset) = tap_range(g, 1, j);
                let row = rows.next().expect("one row per tap");
                for (p, out) in row.chunks_exact_mut(g.ow).enumerate() {
                    if !ps.contains(&p) || qs.is_empty() {
                        out.fill(F::zero());
                        continue;
                    }
                    let r = ((p * sh) as isize + row_offset) as usize;
                    let first = ((qs.start * sw) as isize + offset) as usize;
                    let line = &plane[r * g.w + first..(r + 1) * g.w];
                    out[..qs.start].fill(F::zero());
                    out[qs.end..].fill(F::zero());
                    let out = &mut out[qs.clone()];
                    if sw == 1 {
                        out.copy_from_slice(&line[..out.len()]);
                    } else {
                        out.iter_mut()
                            .zip(line.iter().step_by(sw))
                            .for_each(|(o, &v)| *o = v);
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: each value of `dcols` (`[taps, positions]`) added to
/// the input position it was read from, into one sample `dx` (`[C, H, W]`, zeroed
/// first). The order of the additions is fixed: taps, then positions.
fn col2im<F: Float>(g: &Geometry, dcols: &[F], dx: &mut [F]) {
    let [kh, kw] = g.window.kernel;
    let [sh, sw] = g.window.stride;
    dx.fill(F::zero());
    let mut rows = dcols.chunks_exact(g.positions());
    for plane in dx.chunks_exact_mut(g.h * g.w) {
        for i in 0..kh {
            let (ps, row_offset) = tap_range(g, 0, i);
            for j in 0..kw {
                let (qs, offset) = tap_range(g, 1, j);
                let row = rows.next().expect("one row per tap");
                if qs.is_empty() {
                    continue;
                }
                for p in ps.clone() {
                    let r = ((p * sh) as isize + row_offset) as usize;
                    let first = ((qs.start * sw) as isize + offset) as usize;
                    let line = &mut plane[r * g.w + first..(r + 1) * g.w];
                    let from = &row[p * g.ow + qs.start..p * g.ow + qs.end];
                    if sw == 1 {
                        line.iter_mut().zip(from).for_each(|(d, &v)| *d += v);
                    } else {
                        line.iter_mut()
                            .step_by(sw)
                            .zip(from)
                            .for_each(|(d, &v)| *d += v);
                    }
                }
            }
        }
    }
}

/// [`Tensor::conv2d`] on checked shapes.
fn forward<F: Float>(
    g: &Geometry,
    x: &Tensor<F>,
    weight: &Tensor<F>,
    bias: Option<&Tensor<F>>,
) -> Tensor<F> {
    let (taps, positions) = (g.taps(), g.positions());
    let mut y = pool::reused::<F>(&[g.n, g.o, g.oh, g.ow]);
    if y.is_empty() {
        return y;
    }
    // W, with the bias as one more column.
    let k = taps + usize::from(bias.is_some());
    let kernel = match bias {
        None => weight.values(),
        Some(bias) => {
            let (weight, bias) = (weight.values(), bias.values());
            let mut kernel = Vec::with_capacity(g.o * k);
            for (o, &b) in bias.iter().enumerate() {
                kernel.extend_from_slice(&weight[o * taps..(o + 1) * taps]);
                kernel.push(b);
            }
            Cow::Owned(kernel)
        }
    };
    let kernel = ArrayView2::from_shape((g.o, k), &kernel[..]).expect("O·k values");
    let x = x.values();
    let per_sample = g.o * positions;
    let split = g.n * per_sample * k >= parallel::WORK_SPLIT_MIN;
    parallel::for_each_block_if(y.as_mut_slice(), per_sample, split, |start, block| {
        pool::with_scratch(k * positions, |cols: &mut [F]| {
            // The bias's row of ones (none without a bias).
            cols[taps * positions..].fill(F::one());
            for (i, y) in block.chunks_exact_mut(per_sample).enumerate() {
                let s = start / per_sample + i;
                im2col(g, &x[s * g.sample()..(s + 1) * g.sample()], cols);
                let cols = ArrayView2::from_shape((k, positions), &*cols).expect("k·P values");
                let y = ArrayViewMut2::from_shape((g.o, positions), y).expect("O·P values");
                product_into(y, &kernel, &cols);
            }
        });
    });
    y
}

/// The input gradient of a convolution: per sample, `Wᵀ · ∂y[n]`, then col2im.
fn input_gradient<F: Float>(g: &Geometry, weight: &Tensor<F>, grad: &Tensor<F>) -> Tensor<F> {
    let (taps, positions) = (g.taps(), g.positions());
    let mut dx = pool::reused::<F>(&[g.n, g.c, g.h, g.w]);
    if dx.is_empty() {
        return dx;
    }
    let weight = weight.values();
    let weight_t = ArrayView2::from_shape((g.o, taps), &weight[..])
        .expect("O·taps values")
        .reversed_axes();
    let grad = grad.values();
    let per_sample = g.o * positions;
    let split = g.n * taps * per_sample >= parallel::WORK_SPLIT_MIN;
    parallel::for_each_block_if(dx.as_mut_slice(), g.sample(), split, |start, block| {
        pool::with_scratch(taps * positions, |dcols: &mut [F]| {
            for (i, dx) in block.chunks_exact_mut(g.sample()).enumerate() {
                let s = start / g.sample() + i;
                let dy = &grad[s * per_sample..(s + 1) * per_sample];
                let dy = ArrayView2::from_shape((g.o, positions), dy).expect("O·P values");
                let to = ArrayViewMut2::from_shape((taps, positions), &mut *dcols)
                    .expect("taps·P values");
                product_into(to, &weight_t, &dy);
                col2im(g, dcols, dx);
            }
        });
    });
    dx
}

/// How many groups of samples the weight gradient is summed in (see the section's
/// comment): up to 8, enough for a team on a common machine to share them, fewer
/// when their sums (`len` values each) would take much memory. From the shapes
/// alone, never the thread count.
fn group_count(n: usize, len: usize) -> usize {
    let mut groups = n.clamp(1, 8);
    while groups > 1 && groups * len > 1 << 22 {
        groups /= 2;
    }
    groups
}

/// The weight and bias gradients of a convolution, as `need` asks: `Σ_n ∂y[n] ·
/// cols[n]ᵀ`, with a row of ones in `cols` for the bias (`Σ_n,p ∂y[n, o, p]`).
fn parameter_gradients<F: Float>(
    g: &Geometry,
    x: &Tensor<F>,
    grad: &Tensor<F>,
    need: [bool; 2],
) -> [Option<Tensor<F>>; 2] {
    let (taps, positions) = (g.taps(), g.positions());
    let weight_rows = if need[0] { taps } else { 0 };
    let k = weight_rows + usize::from(need[1]);
    let per_group = g.o * k;
    let sums = if per_group == 0 {
        Vec::new()
    } else {
        let groups = group_count(g.n, per_group);
        let (x, grad) = (x.values(), grad.values());
        let per_sample = g.o * positions;
        let split = g.n * per_sample * k >= parallel::WORK_SPLIT_MIN;
        pool::with_scratch(groups * per_group, |partial: &mut [F]| {
            parallel::for_each_block_if(partial, per_group, split, |start, block| {
                pool::with_scratch(k * positions, |cols: &mut [F]| {
                    cols[weight_rows * positions..].fill(F::one());
                    for (i, sum) in block.chunks_exact_mut(per_group).enumerate() {
                        let group = start / per_group + i;
                        let samples = group * g.n / groups..(group + 1) * g.n / groups;
                        if samples.is_empty() {
                            sum.fill(F::zero());
                        }
                        for s in samples.clone() {
                            if need[0] {
                                im2col(g, &x[s * g.sample()..(s + 1) * g.sample()], cols);
                            }
                            let dy = &grad[s * per_sample..(s + 1) * per_sample];
                            let dy =
                                ArrayView2::from_shape((g.o, positions), dy).expect("O·P values");
                            let cols_t = ArrayView2::from_shape((k, positions), &*cols)
                                .expect("k·P values")
                                .reversed_axes();
                            let to =
                                ArrayViewMut2::from_shape((g.o, k), &mut *sum).expect("O·k values");
                            if s == samples.start {
                                product_into(to, &dy, &cols_t);
                            } else {
                                add_product_into(to, &dy, &cols_t);
                            }
                        }
                    }
                });
            });
            // The groups' sums, added in order.
            let (total, rest) = partial.split_at_mut(per_group);
            for sum in rest.chunks_exact(per_group) {
                total.iter_mut().zip(sum).for_each(|(t, &v)| *t += v);
            }
            total.to_vec()
        })
    };
    let [kh, kw] = g.window.kernel;
    let dw = need[0].then(|| {
        let mut dw = pool::reused::<F>(&[g.o, g.c, kh, kw]);
        if taps > 0 {
            let rows = dw.as_mut_slice().chunks_exact_mut(taps);
            for (to, from) in rows.zip(sums.chunks_exact(k)) {
                to.copy_from_slice(&from[..taps]);
            }
        }
        dw
    });
    let db = need[1].then(|| {
        let db = sums.chunks_exact(k.max(1)).map(|s| s[k - 1]).collect();
        Tensor::from_vec(db, &[g.o]).expect("O values")
    });
    [dw, db]
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
        // Large enough for every product to be split among the team; the first has
        // more samples than the weight gradient has groups.
        for case in [
            Case {
                n: 19,
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
