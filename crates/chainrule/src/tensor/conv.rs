//! 2-D convolution over `[N, C, H, W]` tensors (PyTorch `nn.Conv2d`'s cross-correlation),
//! and the window geometry that convolution and pooling share.

use super::Tensor;
use super::pool;
use crate::{Error, Float, Result, parallel};
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
    /// A window from its four settings, each `[height, width]`.
    ///
    /// ```
    /// use chainrule::tensor::Window2d;
    /// let w = Window2d::new([3, 2], [2, 1], [1, 0], [1, 2]);
    /// assert_eq!((w.kernel, w.dilation), ([3, 2], [1, 2]));
    /// ```
    pub const fn new(
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
        dilation: [usize; 2],
    ) -> Self {
        Window2d {
            kernel,
            stride,
            padding,
            dilation,
        }
    }

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
        let (g, _) = conv_shapes(self, weight, bias, window)?;
        Ok(forward(&g, self, weight, bias))
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
// Convolution as matrix products through gemm, one sample at a time (conv/im2col.rs
// has the layout; docs/performance.md, "Convolution", the measurements behind it,
// against a whole-batch layout and a direct loop for few taps).
//
// Threads: samples are cut among the training team, one block of samples each, and
// each sample is computed alone, the same way whatever the thread count. The weight
// and bias gradients are summed over a fixed number of groups of samples (from the
// shapes alone), each group in order on one thread, and the groups' sums are then
// added in order: 1 and 2 threads give the same bits.

mod im2col;

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
    /// Kernel taps per output channel, C·kh·kw.
    fn taps(&self) -> usize {
        self.c * self.window.kernel[0] * self.window.kernel[1]
    }

    /// Output positions per sample, OH·OW.
    fn positions(&self) -> usize {
        self.oh * self.ow
    }

    /// Values of one input sample, C·H·W.
    fn sample(&self) -> usize {
        self.c * self.h * self.w
    }

    /// Every kernel tap, in the weight's (c, i, j) order, with where it reads.
    fn tap_list(&self) -> Vec<Tap> {
        let [kh, kw] = self.window.kernel;
        let mut taps = Vec::with_capacity(self.taps());
        for c in 0..self.c {
            for i in 0..kh {
                let (rows, row_offset) = self.window.reach(0, i, self.oh, self.h);
                for j in 0..kw {
                    let (cols, col_offset) = self.window.reach(1, j, self.ow, self.w);
                    taps.push(Tap {
                        start: c * self.h * self.w,
                        rows: rows.clone(),
                        row_offset,
                        cols,
                        col_offset,
                    });
                }
            }
        }
        taps
    }
}

/// One kernel tap (c, i, j): output position (p, q) reads input row
/// `p·stride + row_offset`, column `q·stride + col_offset` of channel c's plane,
/// which lies inside the input for `p` in `rows` and `q` in `cols` (else padding).
#[derive(Debug, Clone)]
struct Tap {
    /// Where channel c's plane starts in a sample.
    start: usize,
    rows: Range<usize>,
    row_offset: isize,
    cols: Range<usize>,
    col_offset: isize,
}

impl Tap {
    /// The flat index (in the sample) of the input row's start read by output row `p`
    /// (which must be in `rows`), and of the first value read there (at `cols.start`).
    fn line(&self, g: &Geometry, p: usize) -> (usize, usize) {
        let r = ((p * g.window.stride[0]) as isize + self.row_offset) as usize;
        let first = ((self.cols.start * g.window.stride[1]) as isize + self.col_offset) as usize;
        let row = self.start + r * g.w;
        (row, row + first)
    }
}

/// [`Tensor::conv2d`] on checked shapes.
fn forward<F: Float>(
    g: &Geometry,
    x: &Tensor<F>,
    weight: &Tensor<F>,
    bias: Option<&Tensor<F>>,
) -> Tensor<F> {
    let per_sample = g.o * g.positions();
    let mut y = pool::reused::<F>(&[g.n, g.o, g.oh, g.ow]);
    if y.is_empty() {
        return y;
    }
    let (taps, x, weight) = (g.tap_list(), x.values(), weight.values());
    let bias = bias.map(Tensor::values);
    let split = g.n * per_sample * g.taps() >= parallel::WORK_SPLIT_MIN;
    let sample = |s: usize| &x[s * g.sample()..(s + 1) * g.sample()];
    let kernel = im2col::Kernel::new(g, &weight, bias.as_deref());
    parallel::for_each_block_if(y.as_mut_slice(), per_sample, split, |start, block| {
        kernel.with_cols(g, |cols| {
            for (i, y) in block.chunks_exact_mut(per_sample).enumerate() {
                let s = start / per_sample + i;
                kernel.forward(g, &taps, sample(s), cols, y);
            }
        });
    });
    y
}

/// The input gradient of a convolution, one sample at a time.
fn input_gradient<F: Float>(g: &Geometry, weight: &Tensor<F>, grad: &Tensor<F>) -> Tensor<F> {
    let mut dx = pool::reused::<F>(&[g.n, g.c, g.h, g.w]);
    if dx.is_empty() {
        return dx;
    }
    let (taps, weight, grad) = (g.tap_list(), weight.values(), grad.values());
    let per_sample = g.o * g.positions();
    let dy = |s: usize| &grad[s * per_sample..(s + 1) * per_sample];
    let split = g.n * per_sample * g.taps() >= parallel::WORK_SPLIT_MIN;
    parallel::for_each_block_if(dx.as_mut_slice(), g.sample(), split, |start, block| {
        pool::with_scratch(g.taps() * g.positions(), |dcols: &mut [F]| {
            for (i, dx) in block.chunks_exact_mut(g.sample()).enumerate() {
                let s = start / g.sample() + i;
                im2col::input_gradient(g, &taps, &weight, dy(s), dcols, dx);
            }
        });
    });
    dx
}

/// The inputs of the weight and bias gradients' sums (see [`parameter_gradients`]);
/// the bias's are summed when the sums have a row for them.
struct Sums<'a, F: Float> {
    g: &'a Geometry,
    /// The taps whose weight gradient is summed (none when it is not needed).
    taps: &'a [Tap],
    x: &'a [F],
    grad: &'a [F],
}

impl<F: Float> Sums<'_, F> {
    /// Input sample `s`.
    fn x(&self, s: usize) -> &[F] {
        &self.x[s * self.g.sample()..(s + 1) * self.g.sample()]
    }

    /// The output gradient of sample `s`, `[O, OH·OW]`.
    fn dy(&self, s: usize) -> &[F] {
        let per_sample = self.g.o * self.g.positions();
        &self.grad[s * per_sample..(s + 1) * per_sample]
    }
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

/// The weight and bias gradients of a convolution, as `need` asks: for each output
/// channel o, `Σ_{n,p,q} ∂y[n,o,p,q] · x[n, c, p·s + i·d − pad, q·s + j·d − pad]` for
/// every tap (c, i, j), and `Σ_{n,p,q} ∂y[n,o,p,q]`; summed as `[k, O]`, the k rows
/// being the taps (when the weight's is needed) then the bias (when it is).
fn parameter_gradients<F: Float>(
    g: &Geometry,
    x: &Tensor<F>,
    grad: &Tensor<F>,
    need: [bool; 2],
) -> [Option<Tensor<F>>; 2] {
    let taps = if need[0] { g.taps() } else { 0 };
    let k = taps + usize::from(need[1]);
    let per_group = g.o * k;
    let sums = if per_group == 0 {
        Vec::new()
    } else {
        let groups = group_count(g.n, per_group);
        let (tap_list, x, grad) = (g.tap_list(), x.values(), grad.values());
        let tap_list = &tap_list[..taps];
        let work = g.n * g.o * g.positions() * k;
        let sums = Sums {
            g,
            taps: tap_list,
            x: &x,
            grad: &grad,
        };
        pool::with_scratch(groups * per_group, |partial: &mut [F]| {
            let split = work >= parallel::WORK_SPLIT_MIN;
            parallel::for_each_block_if(partial, per_group, split, |start, block| {
                pool::with_scratch(taps * g.positions(), |cols: &mut [F]| {
                    for (i, sum) in block.chunks_exact_mut(per_group).enumerate() {
                        let group = start / per_group + i;
                        sums.gemm(group * g.n / groups..(group + 1) * g.n / groups, cols, sum);
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
    // The sums are [k, O]: the weight's are its transpose, the bias's the last row.
    let dw = need[0].then(|| {
        let mut dw = pool::reused::<F>(&[g.o, g.c, kh, kw]);
        for (o, to) in dw.as_mut_slice().chunks_exact_mut(taps.max(1)).enumerate() {
            to.iter_mut()
                .zip(sums[o..].iter().step_by(g.o))
                .for_each(|(t, &s)| *t = s);
        }
        dw
    });
    let db = need[1].then(|| {
        let db = sums[(k - 1) * g.o..].to_vec();
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
                Window2d::new([3, 3], [2, 2], [1, 1], [1, 1]),
                true,
            ),
            // A non-square kernel, dilated, unequal strides and paddings, batch 1.
            case(
                [1, 2, 9, 8, 3],
                Window2d::new([2, 3], [1, 2], [0, 2], [2, 1]),
                false,
            ),
            // The kernel as large as the input: one output position.
            case(
                [3, 2, 5, 4, 2],
                Window2d::new([5, 4], [1, 1], [0, 0], [1, 1]),
                true,
            ),
            // Batch 1, one channel in and out, a 1×1 kernel, no bias.
            case([1, 1, 3, 5, 1], Window2d::square(1), false),
            // Padding wider than the kernel: some windows read only zeros.
            case(
                [1, 2, 3, 3, 2],
                Window2d::new([1, 1], [2, 2], [2, 2], [1, 1]),
                true,
            ),
            // No input channels: the output is the bias.
            case([2, 0, 4, 4, 3], Window2d::square(3), true),
            // More output channels than one forward product covers (FORWARD_ROWS).
            case(
                [2, 2, 6, 5, 97],
                Window2d::new([3, 2], [1, 1], [1, 0], [1, 1]),
                true,
            ),
            // Large stride and dilation with padding.
            case(
                [2, 2, 11, 13, 3],
                Window2d::new([2, 2], [3, 3], [1, 1], [3, 3]),
                true,
            ),
        ];
        let mut r = Shapes::new(14);
        while cases.len() < 40 {
            let window = r.window(4, 3, 2, 2);
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
            let (g, _) = conv_shapes(&x, &weight, bias.as_ref(), &case.window).unwrap();
            let [kh, kw] = case.window.kernel;
            let expected = naive::conv2d(&x, &weight, bias.as_ref(), &case.window);
            let [ex, ew, eb] = naive::conv2d_backward(&x, &weight, &grad, &case.window, [true; 3]);
            let [ex, ew, eb] = [ex.unwrap(), ew.unwrap(), eb.unwrap()];
            let forward_tolerance = sum_tolerance::<F>(case.c * kh * kw);
            let input_tolerance = sum_tolerance::<F>(case.o * kh * kw);
            let parameter_tolerance = sum_tolerance::<F>(case.n * g.positions());
            {
                let what = |op: &str| format!("{op} of {case:?}");
                poison::<F>(grad.shape());
                let y = forward(&g, &x, &weight, bias.as_ref());
                assert_close(&y, &expected, forward_tolerance, &what("conv2d"));
                poison::<F>(x.shape());
                let dx = input_gradient(&g, &weight, &grad);
                assert_close(&dx, &ex, input_tolerance, &what("input gradient"));
                for need in [[true, true], [true, false], [false, true]] {
                    poison::<F>(weight.shape());
                    let [dw, db] = parameter_gradients(&g, &x, &grad, need);
                    assert_eq!([dw.is_some(), db.is_some()], need);
                    if let Some(dw) = dw {
                        let what = what(&format!("weight gradient, need {need:?}"));
                        assert_close(&dw, &ew, parameter_tolerance, &what);
                    }
                    if let Some(db) = db {
                        let what = what(&format!("bias gradient, need {need:?}"));
                        assert_close(&db, &eb, parameter_tolerance, &what);
                    }
                }
            }
            // And through the public methods, which choose one.
            let what = |op: &str| format!("{op} of {case:?}");
            let y = x.conv2d(&weight, bias.as_ref(), &case.window).unwrap();
            assert_close(&y, &expected, forward_tolerance, &what("conv2d"));
            for need in [
                [true; 3],
                [false, true, true],
                [true, false, false],
                [false; 3],
            ] {
                let got = Tensor::conv2d_backward(&x, &weight, &grad, &case.window, need).unwrap();
                let tolerances = [input_tolerance, parameter_tolerance, parameter_tolerance];
                for (a, ((got, expected), tolerance)) in
                    got.iter().zip([&ex, &ew, &eb]).zip(tolerances).enumerate()
                {
                    assert_eq!(got.is_some(), need[a], "{}", what("need"));
                    if let Some(got) = got {
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
                window: Window2d::new([3, 3], [1, 1], [1, 1], [1, 1]),
                bias: true,
            },
            Case {
                n: 3,
                c: 6,
                h: 31,
                w: 17,
                o: 9,
                window: Window2d::new([3, 2], [2, 1], [1, 0], [1, 2]),
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
