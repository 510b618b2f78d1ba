//! 2-D max and average pooling over `[N, C, H, W]` tensors (PyTorch `nn.MaxPool2d`,
//! `nn.AvgPool2d` with `count_include_pad=True`).

use super::Tensor;
use super::conv::{Window2d, image_shape};
use super::pool;
use crate::{Error, Float, Result, parallel};
use smallvec::SmallVec;
use std::ops::Range;

/// In max pooling's indices ([`Tensor::max_pool2d_with_indices`]): a window of
/// padding only, which has no maximum and receives no gradient.
pub const NO_MAXIMUM: u32 = u32::MAX;

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

    /// Whether the windows are 2×2 and tile the input (the MNIST network's pooling),
    /// which [`Planes::max_2x2`] and [`Planes::max_2x2_indices`] compute a whole
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
                *o = first_max([a[0], a[1], b[0], b[1]]);
            }
        }
    }

    /// [`Planes::max_2x2`] that also writes, in `at`, each maximum's flat index in
    /// the plane. The index rides in `u32` lanes beside the values (the same width
    /// as `f32`), chosen by the same selects, so that the row still vectorises.
    fn max_2x2_indices<F: Float>(&self, plane: &[F], out: &mut [F], at: &mut [u32]) {
        let (w, ow) = (self.w, self.ow);
        let rows = out.chunks_exact_mut(ow).zip(at.chunks_exact_mut(ow));
        for (p, (out, at)) in rows.enumerate() {
            let rows = &plane[2 * p * w..(2 * p + 2) * w];
            let (r0, r1) = rows.split_at(w);
            let windows = r0.chunks_exact(2).zip(r1.chunks_exact(2));
            // The window's top left in the plane, and the offsets of its four taps.
            let top = (2 * p * w) as u32;
            let offsets = [0, 1, w as u32, w as u32 + 1];
            for (q, ((o, at), (a, b))) in out.iter_mut().zip(at).zip(windows).enumerate() {
                let corner = top + 2 * q as u32;
                let (mut m, mut k) = (a[0], corner);
                for (&v, &offset) in [a[1], b[0], b[1]].iter().zip(&offsets[1..]) {
                    let take = beats(v, m);
                    k = if take { corner + offset } else { k };
                    m = if take { v } else { m };
                }
                *o = m;
                *at = k;
            }
        }
    }

    /// The window's taps in row-major order, each with the reach of its row and of
    /// its column (see [`Window2d::reach`]).
    fn taps(&self) -> Taps {
        let [kh, kw] = self.window.kernel;
        let rows = (0..kh).map(|i| self.window.reach(0, i, self.oh, self.h));
        let rows: SmallVec<[_; 8]> = rows.collect();
        let cols = (0..kw).map(|j| self.window.reach(1, j, self.ow, self.w));
        let cols: SmallVec<[_; 8]> = cols.collect();
        let taps = rows
            .iter()
            .flat_map(|row| cols.iter().map(move |col| (row.clone(), col.clone())));
        taps.collect()
    }

    /// Calls `f(columns, first)` for every tap that output row `p` reads inside the
    /// input, in the window's order: `columns` are the output columns whose tap lies
    /// inside the input, and `first` the flat index in the plane of the value read
    /// for the first of them; the next ones are a stride apart.
    fn for_each_tap(&self, taps: &Taps, p: usize, mut f: impl FnMut(Range<usize>, usize)) {
        let [sh, sw] = self.window.stride;
        for ((rows, row_offset), (cols, col_offset)) in taps {
            if rows.contains(&p) && !cols.is_empty() {
                let r = ((p * sh) as isize + row_offset) as usize;
                let c = ((cols.start * sw) as isize + col_offset) as usize;
                f(cols.clone(), r * self.w + c);
            }
        }
    }

    /// Output row `p` of a max pooling (any window): each window's maximum in `m`,
    /// −∞ for a window of padding only, the taps taken one after another over the
    /// whole row. Starting from −∞ gives every window's first maximum its value (a
    /// first value of −∞ leaves −∞, a NaN takes over), without tracking which taps
    /// were inside.
    fn max_row<F: Float>(&self, taps: &Taps, plane: &[F], p: usize, m: &mut [F]) {
        m.fill(F::neg_infinity());
        let stride = self.window.stride[1];
        self.for_each_tap(taps, p, |columns, first| {
            let values = plane[first..].iter().step_by(stride);
            for (m, &v) in m[columns].iter_mut().zip(values) {
                *m = if beats(v, *m) { v } else { *m };
            }
        });
    }

    /// [`Planes::max_row`] that also writes, in `at`, each maximum's flat index in
    /// the plane ([`NO_MAXIMUM`] for a window of padding only), chosen by selects
    /// beside the values'.
    fn argmax_row<F: Float>(
        &self,
        taps: &Taps,
        plane: &[F],
        p: usize,
        m: &mut [F],
        at: &mut [u32],
    ) {
        m.fill(F::neg_infinity());
        at.fill(NO_MAXIMUM);
        let stride = self.window.stride[1];
        self.for_each_tap(taps, p, |columns, first| {
            let values = plane[first..].iter().step_by(stride);
            let slots = m[columns.clone()].iter_mut().zip(&mut at[columns]);
            for (k, ((m, at), &v)) in slots.zip(values).enumerate() {
                // The first value inside the window is taken whatever it is.
                let take = beats(v, *m) | (*at == NO_MAXIMUM);
                *m = if take { v } else { *m };
                *at = if take {
                    (first + k * stride) as u32
                } else {
                    *at
                };
            }
        });
    }
}

/// A window's taps: for each, the reach of its row and of its column.
type Taps = SmallVec<[((Range<usize>, isize), (Range<usize>, isize)); 16]>;

/// Whether `v` replaces `m` as a window's maximum: larger, or a NaN over a number.
/// Ties keep the first (in the window's row-major order, as PyTorch's CPU kernel).
#[inline(always)]
fn beats<F: Float>(v: F, m: F) -> bool {
    // `|` and `&`, not `||` and `&&`: no branches, so that loops of it vectorise.
    (v > m) | (v.is_nan() & !m.is_nan())
}

/// The first maximum of a window's values (see [`beats`]), by selects rather than
/// branches, so that a row of windows vectorises.
#[inline(always)]
fn first_max<F: Float>(values: [F; 4]) -> F {
    let mut m = values[0];
    for &v in &values[1..] {
        m = if beats(v, m) { v } else { m };
    }
    m
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
        let taps = g.taps();
        parallel::for_each_block(y.as_mut_slice(), oh * ow, |start, block| {
            for (i, out) in block.chunks_exact_mut(oh * ow).enumerate() {
                let plane = &x[(start / (oh * ow) + i) * g.h * g.w..][..g.h * g.w];
                if g.two_by_two() {
                    g.max_2x2(plane, out);
                    continue;
                }
                for (p, out) in out.chunks_exact_mut(ow).enumerate() {
                    g.max_row(&taps, plane, p, out);
                }
            }
        });
        Ok(y)
    }

    /// [`Tensor::max_pool2d`] that also says where each maximum is: for every output
    /// element (row-major, as the output), the flat index in its input plane
    /// (`[H, W]`, as PyTorch's `return_indices=True` gives) of its window's first
    /// maximum in the window's row-major order, or [`NO_MAXIMUM`] for a window of
    /// padding only. [`Tensor::max_pool2d_backward_indices`] sends the gradient
    /// through them.
    ///
    /// # Errors
    /// As [`Tensor::max_pool2d`], and [`Error::Shape`] for planes of 2³² − 1 values
    /// or more (their indices would not fit in `u32`).
    ///
    /// ```
    /// use chainrule::{tensor::Window2d, Tensor};
    /// let x = Tensor::<f32>::from_vec(vec![1.0, 5.0, 5.0, 2.0], &[1, 1, 2, 2])?;
    /// let (y, at) = x.max_pool2d_with_indices(&Window2d::square(2))?;
    /// assert_eq!((y.to_vec(), at), (vec![5.0], vec![1])); // the first of the tied 5s
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn max_pool2d_with_indices(&self, window: &Window2d) -> Result<(Tensor<F>, Vec<u32>)> {
        let (dims, [oh, ow]) = pool_shapes("max_pool2d", self.shape(), window)?;
        check_plane("max_pool2d", self.shape())?;
        let g = Planes::new(dims, [oh, ow], window);
        let x = self.values();
        let mut y = pool::reused::<F>(&[dims[0], dims[1], oh, ow]);
        let mut at = pool::indices(y.len());
        let taps = g.taps();
        let per = oh * ow;
        parallel::for_each_block_pair(y.as_mut_slice(), &mut at, per, |start, block, at| {
            let planes = block.chunks_exact_mut(per).zip(at.chunks_exact_mut(per));
            for (i, (out, at)) in planes.enumerate() {
                let plane = &x[(start / per + i) * g.h * g.w..][..g.h * g.w];
                if g.two_by_two() {
                    g.max_2x2_indices(plane, out, at);
                    continue;
                }
                let rows = out.chunks_exact_mut(ow).zip(at.chunks_exact_mut(ow));
                for (p, (out, at)) in rows.enumerate() {
                    g.argmax_row(&taps, plane, p, out, at);
                }
            }
        });
        Ok((y, at))
    }

    /// The gradient of a max pooling with respect to its input of `shape`
    /// (`[N, C, H, W]`), from the indices [`Tensor::max_pool2d_with_indices`] gave:
    /// each element of `grad` added at its index in its plane, in the output's order
    /// (so that overlapping windows add up their gradients at a shared maximum in the
    /// definition's order). An index outside the plane ([`NO_MAXIMUM`]) sends nothing.
    ///
    /// # Errors
    /// [`Error::Shape`] when `shape` is not `[N, C, H, W]`, `grad` is not
    /// `[N, C, OH, OW]`, or the indices are not one per element of `grad`.
    ///
    /// ```
    /// use chainrule::{tensor::Window2d, Tensor};
    /// let x = Tensor::<f32>::from_vec(vec![1.0, 5.0, 5.0, 2.0], &[1, 1, 2, 2])?;
    /// let (_, at) = x.max_pool2d_with_indices(&Window2d::square(2))?;
    /// let g = Tensor::from_vec(vec![1.5], &[1, 1, 1, 1])?;
    /// let dx = Tensor::max_pool2d_backward_indices(x.shape(), &at, &g)?;
    /// assert_eq!(dx.to_vec(), vec![0.0, 1.5, 0.0, 0.0]);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn max_pool2d_backward_indices(
        shape: &[usize],
        indices: &[u32],
        grad: &Tensor<F>,
    ) -> Result<Tensor<F>> {
        let op = "max_pool2d backward";
        let [n, c, h, w] = image_shape(op, shape)?;
        let per = match grad.shape() {
            &[gn, gc, oh, ow] if [gn, gc] == [n, c] && indices.len() == grad.len() => oh * ow,
            other => {
                return Err(Error::Shape {
                    op,
                    message: format!(
                        "the gradient must be [{n}, {c}, OH, OW] with one index per element ({} indices)",
                        indices.len()
                    ),
                    got: other.to_vec(),
                });
            }
        };
        let gv = grad.values();
        let mut dx = pool::reused::<F>(shape);
        let size = h * w;
        if dx.is_empty() {
            return Ok(dx);
        }
        parallel::for_each_block(dx.as_mut_slice(), size, |start, block| {
            for (i, dx) in block.chunks_exact_mut(size).enumerate() {
                let plane = start / size + i;
                let (gy, at) = (&gv[plane * per..][..per], &indices[plane * per..][..per]);
                dx.fill(F::zero());
                for (&k, &g) in at.iter().zip(gy) {
                    if let Some(d) = dx.get_mut(k as usize) {
                        *d += g;
                    }
                }
            }
        });
        Ok(dx)
    }

    /// The gradient of [`Tensor::max_pool2d`] with respect to its input `x`: each
    /// element of `grad` goes to its window's maximum (the first, when tied). It
    /// finds the maxima again; a recorded max pooling keeps them from its forward
    /// ([`Tensor::max_pool2d_with_indices`]) instead.
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
        let (y, at) = x.max_pool2d_with_indices(window)?;
        pool::recycle(y);
        let dx = Self::max_pool2d_backward_indices(x.shape(), &at, grad);
        pool::recycle_indices(at);
        dx
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
        let taps = g.taps();
        parallel::for_each_block(y.as_mut_slice(), oh * ow, |start, block| {
            for (i, out) in block.chunks_exact_mut(oh * ow).enumerate() {
                let plane = &x[(start / (oh * ow) + i) * g.h * g.w..][..g.h * g.w];
                for (p, out) in out.chunks_exact_mut(ow).enumerate() {
                    // Each window's sum over its taps in order, as the definition.
                    out.fill(F::zero());
                    g.for_each_tap(&taps, p, |columns, first| {
                        let from = plane[first..].iter().step_by(window.stride[1]);
                        out[columns]
                            .iter_mut()
                            .zip(from)
                            .for_each(|(o, &v)| *o += v);
                    });
                    out.iter_mut().for_each(|v| *v *= scale);
                }
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
        let taps = g.taps();
        parallel::for_each_block(dx.as_mut_slice(), size, |start, block| {
            for (i, dx) in block.chunks_exact_mut(size).enumerate() {
                let gy = &gv[(start / size + i) * oh * ow..][..oh * ow];
                dx.fill(F::zero());
                for (p, gy) in gy.chunks_exact(ow).enumerate() {
                    g.for_each_tap(&taps, p, |columns, first| {
                        let to = dx[first..].iter_mut().step_by(window.stride[1]);
                        to.zip(&gy[columns]).for_each(|(d, &g)| *d += g * scale);
                    });
                }
            }
        });
        Ok(dx)
    }
}

/// Checks that a plane's flat indices fit in `u32` below [`NO_MAXIMUM`].
fn check_plane(op: &'static str, shape: &[usize]) -> Result<()> {
    let plane = shape[2..].iter().product::<usize>();
    if plane < NO_MAXIMUM as usize {
        Ok(())
    } else {
        Err(Error::Shape {
            op,
            message: "planes of 2³² − 1 values or more have no u32 indices".into(),
            got: shape.to_vec(),
        })
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

    /// Input shapes and windows: the named ones, then seeded random ones.
    fn cases() -> Vec<([usize; 4], Window2d)> {
        let two = Window2d::new([2, 2], [2, 2], [0, 0], [1, 1]);
        let mut cases = vec![
            // The MNIST network's pooling (stride = kernel), smaller; odd sizes leave a
            // row and a column out.
            ([2, 3, 8, 8], two),
            ([1, 2, 7, 9], two),
            // Overlapping windows with padding (−∞ for max, zeros for the average).
            ([2, 2, 7, 6], Window2d::new([3, 3], [2, 2], [1, 1], [1, 1])),
            // Non-square, dilated, unequal strides.
            ([1, 3, 9, 10], Window2d::new([2, 3], [1, 2], [1, 1], [2, 1])),
            // The window as large as the input.
            ([3, 1, 5, 4], Window2d::new([5, 4], [1, 1], [0, 0], [1, 1])),
            // Windows of padding only.
            ([1, 1, 3, 3], Window2d::new([1, 1], [2, 2], [1, 1], [1, 1])),
            // stride = kernel but not 2, and stride = kernel with padding.
            ([2, 2, 9, 9], Window2d::new([3, 3], [3, 3], [0, 0], [1, 1])),
            ([1, 2, 6, 7], Window2d::new([2, 2], [2, 2], [1, 1], [1, 1])),
        ];
        let mut r = Shapes::new(2);
        while cases.len() < 40 {
            let window = r.window(4, 3, 2, 2);
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

    /// Kept index buffers of `len` filled with an index no window has, so that a
    /// kernel that skips an output element shows.
    fn poison_indices(len: usize) {
        for _ in 0..2 {
            pool::recycle_indices(vec![NO_MAXIMUM - 1; len]);
        }
    }

    for_f32_and_f64!(saved_maxima_and_their_backward_match_the_naive_loops, |F| {
        // The cases above (stride > 1, padding, dilation, odd sizes, windows of padding
        // only) with tied values and NaNs, then larger seeded random ones so that the
        // kernels' storage comes from the pool and the planes are cut among the team.
        let mut all = cases();
        let mut r = Shapes::new(7);
        while all.len() < 60 {
            let window = r.window(3, 3, 1, 2);
            let shape = [r.pick(1, 4), r.pick(1, 5), r.pick(5, 33), r.pick(5, 33)];
            if window.output_size([shape[2], shape[3]]).is_some() {
                all.push((shape, window));
            }
        }
        for (i, &(shape, window)) in all.iter().enumerate() {
            for nans in [false, true] {
                let x = tied::<F>(&shape, 100 + i as u64, nans);
                let [oh, ow] = window.output_size([shape[2], shape[3]]).unwrap();
                let out = [shape[0], shape[1], oh, ow];
                let grad = Tensor::<F>::rand_uniform(&out, -1.0, 1.0, 150 + i as u64).unwrap();
                let what = |op: &str| format!("{op}, {shape:?}, {window:?}, NaN: {nans}");
                let (run, threads) = on_1_and_2_threads(|| {
                    poison::<F>(&out);
                    poison_indices(out.iter().product());
                    let (y, at) = x.max_pool2d_with_indices(&window).unwrap();
                    poison::<F>(&shape);
                    let dx = Tensor::max_pool2d_backward_indices(&shape, &at, &grad).unwrap();
                    (y, at, dx)
                });
                let bits = |t: &Tensor<F>| -> Vec<u64> {
                    t.to_vec().iter().map(|v| v.as_f64().to_bits()).collect()
                };
                let same = bits(&run.0) == bits(&threads.0)
                    && run.1 == threads.1
                    && bits(&run.2) == bits(&threads.2);
                assert!(same, "{}", what("1 and 2 threads"));
                let (y, at, dx) = run;
                assert_close(&y, &x.max_pool2d(&window).unwrap(), 0.0, &what("value"));
                let expected: Vec<u32> = naive::argmax(&x, &window)
                    .into_iter()
                    .map(|i| u32::try_from(i).unwrap_or(NO_MAXIMUM))
                    .collect();
                assert_eq!(at, expected, "{}", what("indices"));
                // The same additions in the same order as the naive loop: equal bits.
                let naive_dx = naive::max_pool2d_backward(&x, &grad, &window);
                assert_close(&dx, &naive_dx, 0.0, &what("backward"));
            }
        }
    });

    #[test]
    fn backward_from_indices_refuses_what_does_not_fit() {
        let grad = Tensor::<f32>::ones(&[1, 2, 2, 2]);
        let shape = [1, 2, 4, 4];
        assert!(Tensor::max_pool2d_backward_indices(&shape, &[0; 8], &grad).is_ok());
        assert!(Tensor::max_pool2d_backward_indices(&shape, &[0; 7], &grad).is_err());
        assert!(Tensor::max_pool2d_backward_indices(&[2, 2, 4, 4], &[0; 8], &grad).is_err());
        assert!(Tensor::max_pool2d_backward_indices(&[2, 4, 4], &[0; 8], &grad).is_err());
        // Indices outside the plane send nothing (and do not panic).
        let dx =
            Tensor::max_pool2d_backward_indices(&shape, &[16, NO_MAXIMUM, 3, 3, 0, 0, 0, 0], &grad)
                .unwrap();
        assert_eq!(dx.to_vec()[..16].iter().sum::<f32>(), 2.0);
    }

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
            (
                [16, 64, 24, 24],
                Window2d::new([2, 2], [2, 2], [0, 0], [1, 1]),
            ),
            (
                [4, 8, 33, 35],
                Window2d::new([3, 3], [2, 2], [1, 1], [1, 1]),
            ),
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
