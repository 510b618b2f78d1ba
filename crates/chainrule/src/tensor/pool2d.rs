//! 2-D max and average pooling over `[N, C, H, W]` tensors (PyTorch `nn.MaxPool2d`,
//! `nn.AvgPool2d` with `count_include_pad=True`).

use super::Tensor;
use super::conv::{Window2d, image_shape};
use super::pool;
use crate::{Error, Float, Result, parallel};
use smallvec::SmallVec;

/// The input and output sizes of a pooling, checked.
fn pool_shapes(
    op: &'static str,
    shape: &[usize],
    window: &Window2d,
) -> Result<([usize; 4], [usize; 2])> {
    let [n, c, h, w] = image_shape(op, shape)?;
    let out = window.output_size([h, w]).ok_or_else(|| Error::Shape {
        op,
        message: format!("the window {window:?} does not fit the input"),
        got: shape.to_vec(),
    })?;
    Ok(([n, c, h, w], out))
}

/// The sizes of one pooling's planes (`[H, W]` in, `[OH, OW]` out) and its window.
#[derive(Debug, Clone, Copy)]
struct Planes {
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    window: Window2d,
}

impl Planes {
    fn new([_, _, h, w]: [usize; 4], [oh, ow]: [usize; 2], window: &Window2d) -> Planes {
        Planes {
            h,
            w,
            oh,
            ow,
            window: *window,
        }
    }

    /// Calls `f(position, taps)` for every output position of a plane, in order,
    /// with the flat indices (within the input plane) of the window's taps that lie
    /// inside the input, in the window's row-major order.
    fn for_each_window(&self, mut f: impl FnMut(usize, &[usize])) {
        let Window2d {
            kernel: [kh, kw],
            stride: [sh, sw],
            ..
        } = self.window;
        let rows: SmallVec<[_; 8]> = (0..kh)
            .map(|i| self.window.reach(0, i, self.oh, self.h))
            .collect();
        let cols: SmallVec<[_; 8]> = (0..kw)
            .map(|j| self.window.reach(1, j, self.ow, self.w))
            .collect();
        let mut taps: SmallVec<[usize; 16]> = SmallVec::new();
        for p in 0..self.oh {
            for q in 0..self.ow {
                taps.clear();
                for (_, row_offset) in rows.iter().filter(|(ps, _)| ps.contains(&p)) {
                    let r = (p * sh) as isize + row_offset;
                    for (_, offset) in cols.iter().filter(|(qs, _)| qs.contains(&q)) {
                        let column = (q * sw) as isize + offset;
                        taps.push((r * self.w as isize + column) as usize);
                    }
                }
                f(p * self.ow + q, &taps);
            }
        }
    }

    /// Whether the windows are 2×2 and tile the input (the MNIST network's pooling),
    /// which [`Planes::max_2x2`] and [`Planes::max_2x2_backward`] compute a whole
    /// output row at a time.
    fn two_by_two(&self) -> bool {
        self.window.kernel == [2, 2] && self.window.tiles()
    }

    /// Max pooling of one `plane` into `out` (`[OH, OW]`) by 2×2 windows that tile it.
    fn max_2x2<F: Float>(&self, plane: &[F], out: &mut [F]) {
        for (p, out) in out.chunks_exact_mut(self.ow).enumerate() {
            let rows = &plane[2 * p * self.w..(2 * p + 2) * self.w];
            let (r0, r1) = rows.split_at(self.w);
            let windows = r0.chunks_exact(2).zip(r1.chunks_exact(2));
            for (o, (a, b)) in out.iter_mut().zip(windows) {
                *o = first_max([a[0], a[1], b[0], b[1]]).1;
            }
        }
    }

    /// The gradient of [`Planes::max_2x2`] for one plane: each window's gradient
    /// (from `gy`, `[OH, OW]`) at its first maximum and 0 at its other three values,
    /// 0 outside every window; every value of `dx` written once.
    fn max_2x2_backward<F: Float>(&self, plane: &[F], gy: &[F], dx: &mut [F]) {
        let w = self.w;
        let (windows, rest) = dx.split_at_mut(2 * self.oh * w);
        rest.fill(F::zero());
        for (p, (d, gy)) in windows
            .chunks_exact_mut(2 * w)
            .zip(gy.chunks_exact(self.ow))
            .enumerate()
        {
            let (d0, d1) = d.split_at_mut(w);
            d0[2 * self.ow..].fill(F::zero());
            d1[2 * self.ow..].fill(F::zero());
            let rows = &plane[2 * p * w..(2 * p + 2) * w];
            let (r0, r1) = rows.split_at(w);
            // Slices of exactly the lengths the loop indexes, so that its bounds are
            // checked once and it vectorises (two-strided loads and stores).
            let ow = self.ow;
            let (r0, r1, gy) = (&r0[..2 * ow], &r1[..2 * ow], &gy[..ow]);
            let (d0, d1) = (&mut d0[..2 * ow], &mut d1[..2 * ow]);
            for (q, &g) in gy.iter().enumerate() {
                let (i, j) = (2 * q, 2 * q + 1);
                let (wins, _) = first_max([r0[i], r0[j], r1[i], r1[j]]);
                // 0 + g, as the definition adds the gradient to a zeroed input.
                let share = |wins: bool| if wins { F::zero() + g } else { F::zero() };
                (d0[i], d0[j], d1[i], d1[j]) = (
                    share(wins[0]),
                    share(wins[1]),
                    share(wins[2]),
                    share(wins[3]),
                );
            }
        }
    }

    /// [`Planes::for_each_maximum`] for windows that tile the input (all inside it).
    #[inline(always)]
    fn tiled_maxima<F: Float>(
        &self,
        plane: &[F],
        [kh, kw]: [usize; 2],
        f: &mut impl FnMut(usize, Option<(usize, F)>),
    ) {
        for p in 0..self.oh {
            for q in 0..self.ow {
                let first = p * kh * self.w + q * kw;
                let (mut at, mut m) = (first, plane[first]);
                for i in 0..kh {
                    for j in 0..kw {
                        let k = first + i * self.w + j;
                        if beats(plane[k], m) {
                            (at, m) = (k, plane[k]);
                        }
                    }
                }
                f(p * self.ow + q, Some((at, m)));
            }
        }
    }

    /// Calls `f(position, maximum)` for every output position of `plane`, in order,
    /// with the flat index and value of its window's maximum: the first in the
    /// window's row-major order when tied (as PyTorch's CPU kernel), a NaN counting
    /// as larger than everything; `None` for a window of padding only.
    fn for_each_maximum<F: Float>(
        &self,
        plane: &[F],
        mut f: impl FnMut(usize, Option<(usize, F)>),
    ) {
        if self.window.tiles() {
            return self.tiled_maxima(plane, self.window.kernel, &mut f);
        }
        self.for_each_window(|position, taps| {
            let mut best: Option<(usize, F)> = None;
            for &at in taps {
                if best.is_none_or(|(_, m)| beats(plane[at], m)) {
                    best = Some((at, plane[at]));
                }
            }
            f(position, best);
        });
    }
}

/// Whether `v` replaces `m` as a window's maximum: larger, or a NaN over a number.
/// Ties keep the first (in the window's row-major order, as PyTorch's CPU kernel).
#[inline(always)]
fn beats<F: Float>(v: F, m: F) -> bool {
    // `|` and `&`, not `||` and `&&`: no branches, so that loops of it vectorise.
    (v > m) | (v.is_nan() & !m.is_nan())
}

/// The value of the first maximum of a window's four values (see [`beats`]), and
/// which of them it is, as one flag per value: by selects and masks rather than
/// branches or an index, so that a row of windows vectorises.
#[inline(always)]
fn first_max<F: Float>([a, b, c, d]: [F; 4]) -> ([bool; 4], F) {
    let (b_wins, m) = (beats(b, a), a);
    let m = if b_wins { b } else { m };
    let c_wins = beats(c, m);
    let m = if c_wins { c } else { m };
    let d_wins = beats(d, m);
    let m = if d_wins { d } else { m };
    let c_wins = c_wins & !d_wins;
    let b_wins = b_wins & !c_wins & !d_wins;
    let a_wins = !b_wins & !c_wins & !d_wins;
    ([a_wins, b_wins, c_wins, d_wins], m)
}

impl<F: Float> Tensor<F> {
    /// Max pooling (PyTorch `max_pool2d`): each output element is the largest input
    /// element in its window; padding counts as −∞.
    ///
    /// # Errors
    /// [`Error::Shape`] when `self` is not `[N, C, H, W]` or the window does not fit.
    ///
    /// ```
    /// use chainrule::{tensor::Window2d, Tensor};
    /// let x = Tensor::<f32>::from_vec(vec![1.0, 5.0, 3.0, 2.0], &[1, 1, 2, 2])?;
    /// assert_eq!(x.max_pool2d(&Window2d::square(2))?.to_vec(), vec![5.0]);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn max_pool2d(&self, window: &Window2d) -> Result<Tensor<F>> {
        let (dims, [oh, ow]) = pool_shapes("max_pool2d", self.shape(), window)?;
        let g = Planes::new(dims, [oh, ow], window);
        let x = self.values();
        let mut y = pool::reused::<F>(&[dims[0], dims[1], oh, ow]);
        parallel::for_each_block(y.as_mut_slice(), oh * ow, |start, block| {
            for (i, out) in block.chunks_exact_mut(oh * ow).enumerate() {
                let plane = &x[(start / (oh * ow) + i) * g.h * g.w..][..g.h * g.w];
                if g.two_by_two() {
                    g.max_2x2(plane, out);
                    continue;
                }
                g.for_each_maximum(plane, |k, best| {
                    out[k] = best.map_or(F::neg_infinity(), |(_, v)| v);
                });
            }
        });
        Ok(y)
    }

    /// The gradient of [`Tensor::max_pool2d`] with respect to its input `x`: each
    /// element of `grad` goes to its window's maximum (the first, when tied).
    ///
    /// # Errors
    /// [`Error::Shape`] when the shapes do not fit.
    ///
    /// ```
    /// use chainrule::{tensor::Window2d, Tensor};
    /// let x = Tensor::<f32>::from_vec(vec![5.0, 5.0, 3.0, 2.0], &[1, 1, 2, 2])?;
    /// let g = Tensor::from_vec(vec![1.5], &[1, 1, 1, 1])?;
    /// let dx = Tensor::max_pool2d_backward(&x, &g, &Window2d::square(2))?;
    /// assert_eq!(dx.to_vec(), vec![1.5, 0.0, 0.0, 0.0]); // the first of the tied maxima
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn max_pool2d_backward(
        x: &Tensor<F>,
        grad: &Tensor<F>,
        window: &Window2d,
    ) -> Result<Tensor<F>> {
        let (dims, [oh, ow]) = pool_shapes("max_pool2d", x.shape(), window)?;
        check_grad("max_pool2d backward", grad, [dims[0], dims[1], oh, ow])?;
        let g = Planes::new(dims, [oh, ow], window);
        let (xv, gv) = (x.values(), grad.values());
        let mut dx = pool::reused::<F>(x.shape());
        let size = g.h * g.w;
        parallel::for_each_block(dx.as_mut_slice(), size, |start, block| {
            for (i, dx) in block.chunks_exact_mut(size).enumerate() {
                let plane = start / size + i;
                let gy = &gv[plane * oh * ow..][..oh * ow];
                let plane = &xv[plane * size..][..size];
                if g.two_by_two() {
                    g.max_2x2_backward(plane, gy, dx);
                    continue;
                }
                dx.fill(F::zero());
                g.for_each_maximum(plane, |k, best| {
                    if let Some((at, _)) = best {
                        dx[at] += gy[k];
                    }
                });
            }
        });
        Ok(dx)
    }

    /// Average pooling (PyTorch `avg_pool2d` with `count_include_pad=True`): each
    /// output element is the sum of its window divided by `kh·kw`, padded zeros
    /// counted.
    ///
    /// # Errors
    /// [`Error::Shape`] when `self` is not `[N, C, H, W]` or the window does not fit.
    ///
    /// ```
    /// use chainrule::{tensor::Window2d, Tensor};
    /// let x = Tensor::<f32>::from_vec(vec![1.0, 5.0, 3.0, 3.0], &[1, 1, 2, 2])?;
    /// assert_eq!(x.avg_pool2d(&Window2d::square(2))?.to_vec(), vec![3.0]);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn avg_pool2d(&self, window: &Window2d) -> Result<Tensor<F>> {
        let (dims, [oh, ow]) = pool_shapes("avg_pool2d", self.shape(), window)?;
        let g = Planes::new(dims, [oh, ow], window);
        let x = self.values();
        let scale = F::from_f64(1.0 / (window.kernel[0] * window.kernel[1]) as f64);
        let mut y = pool::reused::<F>(&[dims[0], dims[1], oh, ow]);
        parallel::for_each_block(y.as_mut_slice(), oh * ow, |start, block| {
            for (i, out) in block.chunks_exact_mut(oh * ow).enumerate() {
                let plane = &x[(start / (oh * ow) + i) * g.h * g.w..][..g.h * g.w];
                g.for_each_window(|k, taps| {
                    out[k] = taps.iter().fold(F::zero(), |s, &at| s + plane[at]) * scale;
                });
            }
        });
        Ok(y)
    }

    /// The gradient of [`Tensor::avg_pool2d`] with respect to an input of `shape`:
    /// each element of `grad`, divided by `kh·kw`, goes to every input of its window.
    ///
    /// # Errors
    /// [`Error::Shape`] when the shapes do not fit.
    ///
    /// ```
    /// use chainrule::{tensor::Window2d, Tensor};
    /// let g = Tensor::<f32>::from_vec(vec![4.0], &[1, 1, 1, 1])?;
    /// let dx = Tensor::avg_pool2d_backward(&[1, 1, 2, 2], &g, &Window2d::square(2))?;
    /// assert_eq!(dx.to_vec(), vec![1.0; 4]);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn avg_pool2d_backward(
        shape: &[usize],
        grad: &Tensor<F>,
        window: &Window2d,
    ) -> Result<Tensor<F>> {
        let (dims, [oh, ow]) = pool_shapes("avg_pool2d", shape, window)?;
        check_grad("avg_pool2d backward", grad, [dims[0], dims[1], oh, ow])?;
        let g = Planes::new(dims, [oh, ow], window);
        let gv = grad.values();
        let scale = F::from_f64(1.0 / (window.kernel[0] * window.kernel[1]) as f64);
        let mut dx = pool::reused::<F>(shape);
        let size = g.h * g.w;
        parallel::for_each_block(dx.as_mut_slice(), size, |start, block| {
            for (i, dx) in block.chunks_exact_mut(size).enumerate() {
                let gy = &gv[(start / size + i) * oh * ow..][..oh * ow];
                dx.fill(F::zero());
                g.for_each_window(|k, taps| {
                    let share = gy[k] * scale;
                    taps.iter().for_each(|&at| dx[at] += share);
                });
            }
        });
        Ok(dx)
    }
}

/// Checks that a pooling's incoming gradient has the output's shape.
fn check_grad<F: Float>(op: &'static str, grad: &Tensor<F>, shape: [usize; 4]) -> Result<()> {
    if grad.shape() == shape {
        Ok(())
    } else {
        Err(Error::Shape {
            op,
            message: format!("the gradient must be {shape:?}"),
            got: grad.shape().to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::naive::{
        self, Shapes, assert_close, for_f32_and_f64, on_1_and_2_threads, poison, sum_tolerance,
    };
    use super::*;

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

    /// Input shapes and windows: the named ones, then seeded random ones.
    fn cases() -> Vec<([usize; 4], Window2d)> {
        let two = window([2, 2], [2, 2], [0, 0], [1, 1]);
        let mut cases = vec![
            // The MNIST network's pooling (stride = kernel), smaller; odd sizes leave a
            // row and a column out.
            ([2, 3, 8, 8], two),
            ([1, 2, 7, 9], two),
            // Overlapping windows with padding (−∞ for max, zeros for the average).
            ([2, 2, 7, 6], window([3, 3], [2, 2], [1, 1], [1, 1])),
            // Non-square, dilated, unequal strides.
            ([1, 3, 9, 10], window([2, 3], [1, 2], [1, 1], [2, 1])),
            // The window as large as the input.
            ([3, 1, 5, 4], window([5, 4], [1, 1], [0, 0], [1, 1])),
            // Windows of padding only.
            ([1, 1, 3, 3], window([1, 1], [2, 2], [1, 1], [1, 1])),
            // stride = kernel but not 2, and stride = kernel with padding.
            ([2, 2, 9, 9], window([3, 3], [3, 3], [0, 0], [1, 1])),
            ([1, 2, 6, 7], window([2, 2], [2, 2], [1, 1], [1, 1])),
        ];
        let mut r = Shapes::new(2);
        while cases.len() < 40 {
            let window = window(
                [r.pick(1, 4), r.pick(1, 4)],
                [r.pick(1, 3), r.pick(1, 3)],
                [r.pick(0, 2), r.pick(0, 2)],
                [r.pick(1, 2), r.pick(1, 2)],
            );
            let shape = [r.pick(1, 3), r.pick(1, 3), r.pick(1, 11), r.pick(1, 11)];
            if window.output_size([shape[2], shape[3]]).is_some() {
                cases.push((shape, window));
            }
        }
        cases
    }

    /// Values in {−1, −½, 0, ½, 1}, so that most windows hold a tie for the maximum,
    /// and, when `nans`, a NaN every 37 values.
    fn tied<F: Float>(shape: &[usize], seed: u64, nans: bool) -> Tensor<F> {
        let x = Tensor::<F>::rand_uniform(shape, -1.0, 1.0, seed).unwrap();
        let values = (x.to_vec().into_iter().enumerate())
            .map(|(i, v)| match nans && i % 37 == 36 {
                true => F::nan(),
                false => (v * F::from_f64(2.0)).round() / F::from_f64(2.0),
            })
            .collect();
        Tensor::from_vec(values, shape).unwrap()
    }

    for_f32_and_f64!(max_pooling_and_its_gradient_match_the_naive_loops, |F| {
        for (i, &(shape, window)) in cases().iter().enumerate() {
            for nans in [false, true] {
                let x = tied::<F>(&shape, i as u64, nans);
                let [oh, ow] = window.output_size([shape[2], shape[3]]).unwrap();
                let out = [shape[0], shape[1], oh, ow];
                let grad = Tensor::<F>::rand_uniform(&out, -1.0, 1.0, 50 + i as u64).unwrap();
                let what = |op: &str| format!("{op}, {shape:?}, {window:?}, NaN: {nans}");
                poison::<F>(&out);
                let y = x.max_pool2d(&window).unwrap();
                assert_close(
                    &y,
                    &naive::max_pool2d(&x, &window),
                    0.0,
                    &what("max_pool2d"),
                );
                poison::<F>(&shape);
                let dx = Tensor::max_pool2d_backward(&x, &grad, &window).unwrap();
                let expected = naive::max_pool2d_backward(&x, &grad, &window);
                // Overlapping windows add up their gradients at a shared maximum.
                let overlap = window.kernel[0] * window.kernel[1];
                assert_close(
                    &dx,
                    &expected,
                    sum_tolerance::<F>(overlap),
                    &what("backward"),
                );
            }
        }
    });

    for_f32_and_f64!(
        average_pooling_and_its_gradient_match_the_naive_loops,
        |F| {
            for (i, &(shape, window)) in cases().iter().enumerate() {
                let x = Tensor::<F>::rand_uniform(&shape, -1.0, 1.0, i as u64).unwrap();
                let [oh, ow] = window.output_size([shape[2], shape[3]]).unwrap();
                let out = [shape[0], shape[1], oh, ow];
                let grad = Tensor::<F>::rand_uniform(&out, -1.0, 1.0, 50 + i as u64).unwrap();
                let what = |op: &str| format!("{op}, {shape:?}, {window:?}");
                let terms = window.kernel[0] * window.kernel[1];
                poison::<F>(&out);
                let y = x.avg_pool2d(&window).unwrap();
                let tolerance = sum_tolerance::<F>(terms);
                assert_close(
                    &y,
                    &naive::avg_pool2d(&x, &window),
                    tolerance,
                    &what("avg_pool2d"),
                );
                poison::<F>(&shape);
                let dx = Tensor::avg_pool2d_backward(&shape, &grad, &window).unwrap();
                let expected = naive::avg_pool2d_backward(&shape, &grad, &window);
                assert_close(&dx, &expected, tolerance, &what("backward"));
            }
        }
    );

    for_f32_and_f64!(pooling_gives_the_same_bits_on_1_and_2_threads, |F| {
        for (shape, window) in [
            ([16, 64, 24, 24], window([2, 2], [2, 2], [0, 0], [1, 1])),
            ([4, 8, 33, 35], window([3, 3], [2, 2], [1, 1], [1, 1])),
        ] {
            let x = tied::<F>(&shape, 3, true);
            let [oh, ow] = window.output_size([shape[2], shape[3]]).unwrap();
            let grad =
                Tensor::<F>::rand_uniform(&[shape[0], shape[1], oh, ow], -1.0, 1.0, 4).unwrap();
            let run = || {
                [
                    x.max_pool2d(&window).unwrap(),
                    Tensor::max_pool2d_backward(&x, &grad, &window).unwrap(),
                    x.avg_pool2d(&window).unwrap(),
                    Tensor::avg_pool2d_backward(&shape, &grad, &window).unwrap(),
                ]
            };
            let (one, two) = on_1_and_2_threads(run);
            for (a, b) in one.iter().zip(&two) {
                let bits = |t: &Tensor<F>| {
                    t.to_vec()
                        .iter()
                        .map(|v| v.as_f64().to_bits())
                        .collect::<Vec<_>>()
                };
                assert_eq!(bits(a), bits(b), "{shape:?}, {window:?}");
            }
        }
    });
}
