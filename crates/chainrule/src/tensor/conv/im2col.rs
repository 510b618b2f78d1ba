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
//! A bias rides along as one more column of W and a row of ones in `cols`, so the
//! product adds it (and the weight gradient's product sums the bias gradient)
//! without a pass of its own. Every product is single-threaded, its shape fixed by
//! the convolution's.

use super::super::matmul::{add_product_into, product_into};
use super::{Geometry, Sums, Tap};
use crate::Float;
use crate::tensor::pool;
use ndarray::{ArrayView2, ArrayViewMut2};
use std::borrow::Cow;
use std::ops::Range;

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
                inside.copy_from_slice(&line[..inside.len()]);
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
                for (row, &b) in weight.chunks_exact(taps.max(1)).zip(bias) {
                    values.extend_from_slice(&row[..taps]);
                    values.push(b);
                }
                values.resize(g.o * (taps + 1), F::zero());
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

    /// One sample's output `y` (`[O, OH·OW]`) from its input `x`.
    pub(super) fn forward(&self, g: &Geometry, taps: &[Tap], x: &[F], cols: &mut [F], y: &mut [F]) {
        im2col(g, taps, x, cols);
        let positions = g.positions();
        let kernel = ArrayView2::from_shape((self.o, self.k), &self.values[..]).expect("O·k");
        let cols = ArrayView2::from_shape((self.k, positions), &*cols).expect("k·P values");
        let y = ArrayViewMut2::from_shape((self.o, positions), y).expect("O·P values");
        product_into(y, &kernel, &cols);
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
    /// The sums of a group of samples into `sum` (`[k, O]`): `Σ_n cols[n] · ∂y[n]ᵀ`,
    /// the products added one sample after another; `cols` is scratch for
    /// `[k, OH·OW]`. (The transpose of `∂y · colsᵀ`, which gemm computes markedly
    /// slower for these shapes: docs/performance.md.)
    pub(super) fn gemm(&self, samples: Range<usize>, cols: &mut [F], sum: &mut [F]) {
        let (g, k, positions) = (self.g, self.k(), self.g.positions());
        if samples.is_empty() {
            return sum.fill(F::zero());
        }
        cols[self.taps.len() * positions..].fill(F::one());
        for s in samples.clone() {
            im2col(g, self.taps, self.x(s), cols);
            let dy_t = ArrayView2::from_shape((g.o, positions), self.dy(s))
                .expect("O·P values")
                .reversed_axes();
            let cols = ArrayView2::from_shape((k, positions), &*cols).expect("k·P values");
            let to = ArrayViewMut2::from_shape((k, g.o), &mut *sum).expect("k·O values");
            if s == samples.start {
                product_into(to, &cols, &dy_t);
            } else {
                add_product_into(to, &cols, &dy_t);
            }
        }
    }
}
