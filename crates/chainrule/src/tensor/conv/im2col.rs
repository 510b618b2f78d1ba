//! Convolution as matrix products (im2col). For one sample, the input values that
//! meet each kernel tap are laid out as `cols`, `[C·kh·kw, OH·OW]`: row (c, i, j),
//! column (p, q) holds x[c, p·s + i·d − pad, q·s + j·d − pad] (0 in the padding).
//! Then
//!
//! - forward: `y[n] = W · cols[n]` (`[O, C·kh·kw] · [C·kh·kw, OH·OW]`);
//! - weight gradient: `∂W = Σ_n ∂y[n] · cols[n]ᵀ`;
//! - input gradient: `∂cols = Wᵀ · ∂y[n]`, added back where each value was read
//!   (col2im).
//!
//! One sample at a time: its `cols` (663 KB for the MNIST network's second layer in
//! f32) is still in the core's cache when the product reads it, where the whole
//! batch's would be 42 MB, and each sample's output is a contiguous block of y,
//! where one product over the whole batch would leave `[O, N, OH·OW]` to permute.
//! In the forward, a bias rides along as one more column of W and a row of ones in
//! `cols`, so that the product adds it without a pass of its own. Every product is
//! single-threaded, its shape fixed by the convolution's.

use super::super::matmul::{add_product_into, product_into};
use super::{Geometry, Sums, Tap};
use crate::Float;
use crate::tensor::pool;
use ndarray::{ArrayView2, ArrayViewMut2, s};
use std::borrow::Cow;
use std::ops::Range;

/// `to.copy_from_slice(from)` for the short runs of im2col (one output row, tens of
/// values), in blocks of 8 that compile to a few vector moves where
/// `copy_from_slice` calls `memcpy` once per run, which costs im2col markedly more
/// (docs/performance.md has the figures).
fn copy_run<F: Copy>(to: &mut [F], from: &[F]) {
    let (mut to_blocks, mut from_blocks) = (to.chunks_exact_mut(8), from.chunks_exact(8));
    for (t, f) in (&mut to_blocks).zip(&mut from_blocks) {
        let t: &mut [F; 8] = t.try_into().expect("blocks of 8");
        *t = f.try_into().expect("blocks of 8");
    }
    let rest = to_blocks.into_remainder().iter_mut();
    rest.zip(from_blocks.remainder()).for_each(|(t, &f)| *t = f);
}

/// Writes the first `taps.len()` rows of `cols` (`[taps, OH·OW]`) for one sample
/// `x` (`[C, H, W]`).
fn im2col<F: Float>(g: &Geometry, taps: &[Tap], x: &[F], cols: &mut [F]) {
    let sw = g.window.stride[1];
    for (tap, row) in taps.iter().zip(cols.chunks_exact_mut(g.positions())) {
        for (p, out) in row.chunks_exact_mut(g.ow).enumerate() {
            if !tap.rows.contains(&p) || tap.cols.is_empty() {
                out.fill(F::zero());
                continue;
            }
            let (line, first) = tap.line(g, p);
            let line = &x[first..line + g.w];
            let (before, rest) = out.split_at_mut(tap.cols.start);
            let (inside, after) = rest.split_at_mut(tap.cols.len());
            before.fill(F::zero());
            after.fill(F::zero());
            if sw == 1 {
                copy_run(inside, &line[..inside.len()]);
            } else {
                let read = line.iter().step_by(sw);
                inside.iter_mut().zip(read).for_each(|(o, &v)| *o = v);
            }
        }
    }
}

/// The adjoint of [`im2col`]: each value of `dcols` (`[taps, OH·OW]`) added to the
/// input position it was read from, into one sample `dx` (`[C, H, W]`, zeroed
/// first). The order of the additions is fixed: taps, then positions.
fn col2im<F: Float>(g: &Geometry, taps: &[Tap], dcols: &[F], dx: &mut [F]) {
    let sw = g.window.stride[1];
    dx.fill(F::zero());
    for (tap, row) in taps.iter().zip(dcols.chunks_exact(g.positions())) {
        if tap.cols.is_empty() {
            continue;
        }
        for p in tap.rows.clone() {
            let (line, first) = tap.line(g, p);
            let to = &mut dx[first..line + g.w];
            let from = &row[p * g.ow..][tap.cols.clone()];
            if sw == 1 {
                to.iter_mut().zip(from).for_each(|(d, &v)| *d += v);
            } else {
                let to = to.iter_mut().step_by(sw);
                to.zip(from).for_each(|(d, &v)| *d += v);
            }
        }
    }
}

/// The forward's products cover at most this many output channels each. gemm
/// computes `W · cols` as `(colsᵀ · Wᵀ)ᵀ`, and copies (packs) its left operand,
/// here the whole of `cols`, before multiplying when the right one is wider than 48
/// columns (8 × its microkernel's 6 with AVX-512); below that it reads `cols` where
/// it lies, which is faster for the MNIST network's second layer (64 channels:
/// docs/performance.md). 48, a multiple of 6, also leaves the microkernel no narrow
/// last panel but the final block's.
const FORWARD_ROWS: usize = 48;

/// The forward's left operand: W as `[O, C·kh·kw]`, with the bias as one more
/// column when there is one.
pub(super) struct Kernel<'a, F: Float> {
    values: Cow<'a, [F]>,
    /// Columns: the taps, and the bias's.
    k: usize,
    taps: usize,
    o: usize,
}

impl<'a, F: Float> Kernel<'a, F> {
    pub(super) fn new(g: &Geometry, weight: &'a [F], bias: Option<&[F]>) -> Kernel<'a, F> {
        let taps = g.taps();
        let values = match bias {
            None => Cow::Borrowed(weight),
            Some(bias) => {
                let mut values = Vec::with_capacity(g.o * (taps + 1));
                for (o, &b) in bias.iter().enumerate() {
                    values.extend_from_slice(&weight[o * taps..(o + 1) * taps]);
                    values.push(b);
                }
                Cow::Owned(values)
            }
        };
        Kernel {
            k: taps + usize::from(bias.is_some()),
            values,
            taps,
            o: g.o,
        }
    }

    /// Calls `f` with scratch storage for one sample's `cols`, the bias's row of
    /// ones already written.
    pub(super) fn with_cols(&self, g: &Geometry, f: impl FnOnce(&mut [F])) {
        pool::with_scratch(self.k * g.positions(), |cols: &mut [F]| {
            cols[self.taps * g.positions()..].fill(F::one());
            f(cols);
        });
    }

    /// One sample's output `y` (`[O, OH·OW]`) from its input `x`, in blocks of at
    /// most [`FORWARD_ROWS`] output channels.
    pub(super) fn forward(&self, g: &Geometry, taps: &[Tap], x: &[F], cols: &mut [F], y: &mut [F]) {
        im2col(g, taps, x, cols);
        let positions = g.positions();
        let kernel = ArrayView2::from_shape((self.o, self.k), &self.values[..]).expect("O·k");
        let cols = ArrayView2::from_shape((self.k, positions), &*cols).expect("k·P values");
        let mut y = ArrayViewMut2::from_shape((self.o, positions), y).expect("O·P values");
        for start in (0..self.o).step_by(FORWARD_ROWS) {
            let end = (start + FORWARD_ROWS).min(self.o);
            let y = y.slice_mut(s![start..end, ..]);
            product_into(y, &kernel.slice(s![start..end, ..]), &cols);
        }
    }
}

/// One sample's input gradient `dx` from its output gradient `dy`: `Wᵀ · dy` into
/// `dcols`, then col2im.
pub(super) fn input_gradient<F: Float>(
    g: &Geometry,
    taps: &[Tap],
    weight: &[F],
    dy: &[F],
    dcols: &mut [F],
    dx: &mut [F],
) {
    let (k, positions) = (taps.len(), g.positions());
    let weight_t = ArrayView2::from_shape((g.o, k), weight)
        .expect("O·k")
        .reversed_axes();
    let dy = ArrayView2::from_shape((g.o, positions), dy).expect("O·P values");
    let to = ArrayViewMut2::from_shape((k, positions), &mut *dcols).expect("k·P values");
    product_into(to, &weight_t, &dy);
    col2im(g, taps, dcols, dx);
}

impl<F: Float> Sums<'_, F> {
    /// The sums of a group of samples into `sum` (`[k, O]`): the weight's,
    /// `Σ_n cols[n] · ∂y[n]ᵀ`, the products added one sample after another (`cols`
    /// is scratch for `[taps, OH·OW]`); then the bias's, `Σ_n` of `∂y[n]`'s rows.
    /// The weight's is the transpose of `∂y · colsᵀ`, which gemm computes markedly
    /// slower for these shapes; the bias's is summed apart because a row of ones in
    /// `cols` would add a last, one-column-wide pass to every product
    /// (docs/performance.md).
    pub(super) fn gemm(&self, samples: Range<usize>, cols: &mut [F], sum: &mut [F]) {
        let (g, taps, positions) = (self.g, self.taps.len(), self.g.positions());
        let (weight_sum, bias_sum) = sum.split_at_mut(taps * g.o);
        if samples.is_empty() {
            return sum.fill(F::zero());
        }
        for s in samples.clone() {
            let dy = self.dy(s);
            if taps > 0 {
                im2col(g, self.taps, self.x(s), cols);
                let dy_t = ArrayView2::from_shape((g.o, positions), dy)
                    .expect("O·P values")
                    .reversed_axes();
                let cols = ArrayView2::from_shape((taps, positions), &*cols).expect("taps·P");
                let to = ArrayViewMut2::from_shape((taps, g.o), &mut *weight_sum).expect("taps·O");
                if s == samples.start {
                    product_into(to, &cols, &dy_t);
                } else {
                    add_product_into(to, &cols, &dy_t);
                }
            }
            for (b, row) in bias_sum.iter_mut().zip(dy.chunks_exact(positions)) {
                let total = row_sum(row);
                *b = if s == samples.start {
                    total
                } else {
                    *b + total
                };
            }
        }
    }
}

/// `Σ row`, over eight lanes (so that the sum vectorises) added in order at the end.
fn row_sum<F: Float>(row: &[F]) -> F {
    let mut lanes = [F::zero(); 8];
    let blocks = row.chunks_exact(8);
    let rest = blocks.remainder();
    for block in blocks {
        lanes.iter_mut().zip(block).for_each(|(l, &v)| *l += v);
    }
    lanes.iter_mut().zip(rest).for_each(|(l, &v)| *l += v);
    lanes.iter().fold(F::zero(), |s, &l| s + l)
}
