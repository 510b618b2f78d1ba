//! Matrix multiplication, routed through the `gemm` crate.
//!
//! `gemm` takes row and column strides for every operand, so transposed views (as
//! backward passes produce: `grad · Wᵀ`, `xᵀ · grad`) are multiplied without copying.
//! Small products run on one thread; large ones use rayon's pool.

use super::Tensor;
use crate::{Error, Float, Result};
use ndarray::{ArrayView2, ArrayViewMut2, Axis, Ix2, ShapeBuilder};
use std::any::Any;
use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Threads for large matrix products; 0 means rayon's default (one per core).
static THREADS: AtomicUsize = AtomicUsize::new(0);

/// Products with fewer multiply-adds than this run on the calling thread: below it,
/// waking rayon's sleeping pool costs more than it saves. It keeps an MNIST layer's
/// products at batch 64 (64 × 784 × 128) on one thread and lets products the size of
/// W2's go parallel (docs/performance.md has the measurements behind the value).
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
const PARALLEL_MIN_FLOPS: usize = 1 << 24;

/// Inside a training loop, products with at least this many multiply-adds are cut
/// among the loop's spinning threads ([`crate::parallel::Team`]), which take a job
/// far sooner than rayon's sleeping workers wake, so much smaller products pay.
const SPLIT_MIN_FLOPS: usize = 1 << 18;

/// Sets how many threads large matrix products and training use (0: one per core);
/// more than the machine's available parallelism counts as that many.
///
/// ```
/// chainrule::tensor::set_num_threads(1);
/// chainrule::tensor::set_num_threads(0);
/// ```
pub fn set_num_threads(threads: usize) {
    THREADS.store(threads, Ordering::Relaxed);
}

/// The threads large computations may use: [`set_num_threads`]'s setting, or one per
/// core, and never more than the machine's available parallelism (more threads
/// than cores only wait for each other, and a hostile config could ask for 100,000).
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn num_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    match THREADS.load(Ordering::Relaxed) {
        0 => rayon::current_num_threads().min(cores),
        t => t.min(cores),
    }
}

/// WebAssembly has no threads: every computation runs on the calling one, whatever
/// [`set_num_threads`] says.
#[cfg(target_arch = "wasm32")]
pub(crate) fn num_threads() -> usize {
    1
}

impl<F: Float> Tensor<F> {
    /// Matrix product. `[m, k] · [k, n] → [m, n]`; with a leading batch axis,
    /// `[b, m, k] · [b, k, n] → [b, m, n]`, where a 2-D operand is shared by every
    /// matrix of the batch (NumPy `matmul` broadcasting).
    ///
    /// # Errors
    /// [`Error::Shape`] when an operand is not 2-D or 3-D, the inner sizes differ, or
    /// the batch sizes differ.
    ///
    /// ```
    /// use chainrule::Tensor;
    /// let a = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 4.0], &[2, 2])?;
    /// let b = Tensor::from_vec(vec![5.0f64, 6.0, 7.0, 8.0], &[2, 2])?;
    /// assert_eq!(a.matmul(&b)?.to_vec(), vec![19.0, 22.0, 43.0, 50.0]);
    /// // aᵀ·b without copying a:
    /// assert_eq!(a.t()?.matmul(&b)?.to_vec(), vec![26.0, 30.0, 38.0, 44.0]);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn matmul(&self, other: &Tensor<F>) -> Result<Tensor<F>> {
        let (a, b) = (self.shape(), other.shape());
        let shape_error = |message: String| Error::Shape {
            op: "matmul",
            message,
            got: if (2..=3).contains(&a.len()) {
                b.to_vec()
            } else {
                a.to_vec()
            },
        };
        if !(2..=3).contains(&a.len()) || !(2..=3).contains(&b.len()) {
            return Err(shape_error(format!(
                "operands must be 2-D or 3-D, got {a:?} · {b:?}"
            )));
        }
        let (m, k) = (a[a.len() - 2], a[a.len() - 1]);
        let (k2, n) = (b[b.len() - 2], b[b.len() - 1]);
        if k != k2 {
            return Err(shape_error(format!("inner sizes differ: {a:?} · {b:?}")));
        }
        if a.len() == 2 && b.len() == 2 {
            let (lhs, rhs) = (self.matrix(None), other.matrix(None));
            let fill = |values: &mut [MaybeUninit<F>]| {
                let dst = ArrayViewMut2::from_shape((m, n), values).expect("m·n values");
                matmul_into(dst, &lhs, &rhs);
            };
            // SAFETY: matmul_into writes every element of its destination (and reads
            // none): tests/autodiff_conventions.rs compares products on fresh and on
            // NaN-poisoned kept storage with a naive loop.
            return Ok(unsafe { super::pool::filled_uninit(&[m, n], fill) });
        }
        let batch = match (a.len(), b.len()) {
            (3, 3) if a[0] != b[0] => {
                return Err(shape_error(format!("batch sizes differ: {a:?} · {b:?}")));
            }
            (3, _) => a[0],
            _ => b[0],
        };
        let fill = |values: &mut [MaybeUninit<F>]| {
            for (i, block) in values.chunks_mut((m * n).max(1)).take(batch).enumerate() {
                let lhs = self.matrix((a.len() == 3).then_some(i));
                let rhs = other.matrix((b.len() == 3).then_some(i));
                let dst = ArrayViewMut2::from_shape((m, n), block).expect("m·n values");
                matmul_into(dst, &lhs, &rhs);
            }
        };
        // SAFETY: the blocks cover all batch·m·n values (m·n each; none when m·n = 0)
        // and matmul_into writes every element of each.
        Ok(unsafe { super::pool::filled_uninit(&[batch, m, n], fill) })
    }

    /// The 2-D view of this tensor, or of matrix `index` of a batch.
    fn matrix(&self, index: Option<usize>) -> ArrayView2<'_, F> {
        let view = self.data.view();
        let view = match index {
            Some(i) => view.index_axis_move(Axis(0), i),
            None => view,
        };
        view.into_dimensionality::<Ix2>().expect("rank checked")
    }
}

/// `dst = lhs · rhs` for 2-D views of any strides, writing every element of `dst`
/// (gemm does not read the destination's old values).
fn matmul_into<F: Float>(
    mut dst: ArrayViewMut2<'_, MaybeUninit<F>>,
    lhs: &ArrayView2<'_, F>,
    rhs: &ArrayView2<'_, F>,
) {
    let ((m, n), k) = (dst.dim(), lhs.ncols());
    if m == 0 || n == 0 || k == 0 {
        dst.fill(MaybeUninit::new(F::zero()));
        return;
    }
    let work = m * n * k;
    if work >= SPLIT_MIN_FLOPS {
        // In a training loop: cut the output among the team's spinning threads.
        let split = crate::parallel::with_current(|team| match team {
            Some(team) if team.size() > 1 => {
                split_gemm(team, dst.view_mut(), lhs.view(), rhs.view());
                true
            }
            _ => false,
        });
        if split {
            return;
        }
    }
    #[cfg(not(target_arch = "wasm32"))]
    let parallelism = if work >= PARALLEL_MIN_FLOPS {
        gemm::Parallelism::Rayon(THREADS.load(Ordering::Relaxed))
    } else {
        gemm::Parallelism::None
    };
    // No rayon (nor threads) in WebAssembly: every product runs on this thread.
    #[cfg(target_arch = "wasm32")]
    let parallelism = gemm::Parallelism::None;
    gemm_into(dst, lhs, rhs, parallelism, false);
}

/// The element types a product can be written into: `F` itself, or storage for an
/// `F` not yet initialised (`MaybeUninit<F>`, the same layout).
pub(crate) trait Slot<F>: Send {
    /// Whether the destination holds initialised values, so that a product may be
    /// added to them.
    const INITIALISED: bool;
    /// A slot holding 0.
    fn zero() -> Self;
}

impl<F: Float> Slot<F> for F {
    const INITIALISED: bool = true;
    fn zero() -> Self {
        F::zero()
    }
}

impl<F: Float> Slot<F> for MaybeUninit<F> {
    const INITIALISED: bool = false;
    fn zero() -> Self {
        MaybeUninit::new(F::zero())
    }
}

/// `dst = lhs · rhs` on the calling thread, for views of any strides (every element
/// of `dst` is written, none read): for kernels that cut their own work among the
/// training team (convolution), so that each product has the same shape, and thus
/// the same order of summation, whatever the number of threads.
pub(crate) fn product_into<F: Float, D: Slot<F>>(
    dst: ArrayViewMut2<'_, D>,
    lhs: &ArrayView2<'_, F>,
    rhs: &ArrayView2<'_, F>,
) {
    if dst.is_empty() {
        return;
    }
    if lhs.ncols() == 0 {
        return dst.into_iter().for_each(|d| *d = D::zero());
    }
    gemm_into(dst, lhs, rhs, gemm::Parallelism::None, false);
}

/// `dst += lhs · rhs` on the calling thread, for views of any strides.
pub(crate) fn add_product_into<F: Float>(
    dst: ArrayViewMut2<'_, F>,
    lhs: &ArrayView2<'_, F>,
    rhs: &ArrayView2<'_, F>,
) {
    if !dst.is_empty() && lhs.ncols() > 0 {
        gemm_into(dst, lhs, rhs, gemm::Parallelism::None, true);
    }
}

/// `gemm` reads a right operand with unit row stride (the `Wᵀ` of a layer's `x·Wᵀ`)
/// one column at a time from where it lies; when its columns are a multiple of this
/// many bytes apart (a weight of 512, 1024, 1536 or 2048 inputs in `f32`) the reads
/// contend for the same cache sets, and the product runs markedly slower than with
/// the columns padded apart (docs/performance.md has the figures).
const CONFLICTING_STRIDE_BYTES: usize = 2048;

/// The padding that [`gemm_into`] puts between the columns of such an operand.
const COLUMN_PAD_BYTES: usize = 64;

thread_local! {
    /// Each thread's buffers for padded copies of right operands, kept between calls,
    /// one per element type.
    static PADDED_F32: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static PADDED_F64: RefCell<Vec<f64>> = const { RefCell::new(Vec::new()) };
}

/// Calls `f` with this thread's padding buffer for `F`, or with `None` when it is
/// already in use on this thread (or the thread is ending).
fn with_padded<F: Float, R>(f: impl FnOnce(Option<&mut Vec<F>>) -> R) -> R {
    fn open<T: 'static, F: Float, R>(
        buffer: &RefCell<Vec<T>>,
        f: impl FnOnce(Option<&mut Vec<F>>) -> R,
    ) -> R {
        match buffer.try_borrow_mut() {
            Ok(mut buffer) => {
                let buffer: &mut dyn Any = &mut *buffer;
                f(buffer.downcast_mut())
            }
            Err(_) => f(None),
        }
    }
    let mut f = Some(f);
    let mut call = |buffer: Option<&mut Vec<F>>| f.take().expect("called once")(buffer);
    let result = if std::any::TypeId::of::<F>() == std::any::TypeId::of::<f32>() {
        PADDED_F32.try_with(|b| open(b, &mut call))
    } else {
        PADDED_F64.try_with(|b| open(b, &mut call))
    };
    result.unwrap_or_else(|_| call(None))
}

/// `dst = lhs · rhs` through `gemm`, for views of any strides; every element of `dst`
/// is written (gemm does not read the destination's old values).
/// A right operand whose column stride would make gemm's reads contend for cache sets
/// ([`CONFLICTING_STRIDE_BYTES`]) is copied first, with padded columns, into this
/// thread's buffer; the values and their order of summation are unchanged.
fn gemm_into<F: Float, D: Slot<F>>(
    dst: ArrayViewMut2<'_, D>,
    lhs: &ArrayView2<'_, F>,
    rhs: &ArrayView2<'_, F>,
    parallelism: gemm::Parallelism,
    accumulate: bool,
) {
    let (k, n) = rhs.dim();
    let column_bytes = rhs.strides()[1].unsigned_abs() * size_of::<F>();
    let conflicting = rhs.strides()[0] == 1
        && k > 1
        && n > 1
        && column_bytes.is_multiple_of(CONFLICTING_STRIDE_BYTES);
    if !conflicting {
        return gemm_call(dst, lhs, rhs, parallelism, accumulate);
    }
    with_padded::<F, _>(|buffer| {
        let Some(buffer) = buffer else {
            return gemm_call(dst, lhs, rhs, parallelism, accumulate);
        };
        let stride = k + COLUMN_PAD_BYTES / size_of::<F>();
        if buffer.len() < stride * n {
            buffer.resize(stride * n, F::zero());
        }
        let padded = &mut buffer[..stride * n];
        for (j, column) in rhs.columns().into_iter().enumerate() {
            let to = &mut padded[j * stride..j * stride + k];
            match column.as_slice() {
                Some(values) => to.copy_from_slice(values),
                None => to.iter_mut().zip(column).for_each(|(t, &v)| *t = v),
            }
        }
        let padded = ArrayView2::from_shape((k, n).strides((1, stride)), &*padded)
            .expect("k·n values with columns `stride` apart fit the buffer");
        gemm_call(dst, lhs, &padded, parallelism, accumulate);
    });
}

/// The one call of `gemm::gemm`: `dst = lhs · rhs` (or `dst += lhs · rhs` when
/// `accumulate`, for an initialised destination only) for views of any strides.
fn gemm_call<F: Float, D: Slot<F>>(
    mut dst: ArrayViewMut2<'_, D>,
    lhs: &ArrayView2<'_, F>,
    rhs: &ArrayView2<'_, F>,
    parallelism: gemm::Parallelism,
    accumulate: bool,
) {
    assert!(
        D::INITIALISED || !accumulate,
        "gemm reads only initialised values"
    );
    let ((m, n), k) = (dst.dim(), lhs.ncols());
    let (ds, ls, rs) = (dst.strides(), lhs.strides(), rhs.strides());
    let ds = [ds[0], ds[1]];
    // SAFETY: gemm takes raw pointers and strides; this call is the one place they
    // are made. They describe live views of exactly m×k, k×n and m×n elements
    // (ndarray guarantees every in-range stride offset is valid); the destination is
    // borrowed mutably, so it aliases neither source, and split_gemm hands each
    // concurrent call a disjoint block; its elements are F or MaybeUninit<F> (Slot),
    // both F's layout, and gemm reads them only when accumulating, which the assert
    // above allows for initialised ones only; F is f32 or f64, which gemm supports. Tests
    // that would catch a wrong stride or block: gemm against a naive product for
    // contiguous, transposed, padded and batched operands
    // (`a_product_equals_the_naive_sum_for_every_layout` below, and
    // tests/autodiff_conventions.rs), and split products against one thread
    // (tests/threads.rs).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr().cast::<F>(),
            ds[1],
            ds[0],
            accumulate,
            lhs.as_ptr(),
            ls[1],
            ls[0],
            rhs.as_ptr(),
            rs[1],
            rs[0],
            if accumulate { F::one() } else { F::zero() },
            F::one(),
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// `out = lhs · rhs` with the output cut into one block of columns (or of rows, when
/// it is taller than wide) per member of `team`, each block a single-threaded GEMM.
/// Every element is still one kernel's sum over the whole inner dimension, so the
/// result does not depend on the number of blocks.
fn split_gemm<F: Float>(
    team: &crate::parallel::Team,
    out: ArrayViewMut2<'_, MaybeUninit<F>>,
    lhs: ArrayView2<'_, F>,
    rhs: ArrayView2<'_, F>,
) {
    let (m, n) = out.dim();
    let parts = team.size().min(m.max(n));
    let by_columns = n >= m;
    let side = if by_columns { n } else { m };
    let mut jobs: smallvec::SmallVec<[_; 4]> = smallvec::SmallVec::new();
    let mut rest = out;
    let (mut lhs_rest, mut rhs_rest) = (lhs, rhs);
    let mut start = 0;
    for i in 0..parts {
        let end = side * (i + 1) / parts;
        let axis = Axis(usize::from(by_columns));
        let (block, tail) = rest.split_at(axis, end - start);
        rest = tail;
        let (l, r) = if by_columns {
            let (r, tail) = rhs_rest.split_at(Axis(1), end - start);
            rhs_rest = tail;
            (lhs, r)
        } else {
            let (l, tail) = lhs_rest.split_at(Axis(0), end - start);
            lhs_rest = tail;
            (l, rhs)
        };
        jobs.push(move || gemm_into(block, &l, &r, gemm::Parallelism::None, false));
        start = end;
    }
    team.run(jobs);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `a · b` by the definition, in f64.
    fn naive(a: &[f64], b: &[f64], (m, k, n): (usize, usize, usize)) -> Vec<f64> {
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        out
    }

    fn check<F: Float>(got: &Tensor<F>, expected: &[f64], k: usize, what: &str) {
        let tolerance = if size_of::<F>() == 4 { 1e-5 } else { 1e-12 } * k as f64;
        let got = got.to_vec();
        assert_eq!(got.len(), expected.len(), "{what}");
        for (g, e) in got.iter().zip(expected) {
            assert!(
                (g.as_f64() - e).abs() < tolerance,
                "{what}: {g} against {e}"
            );
        }
    }

    #[test]
    fn a_product_equals_the_naive_sum_for_every_layout() {
        // k = 512 puts an f32 Wᵀ's columns 2 KiB apart, and k = 256 an f64 one's: both
        // go through the padded copy, in turn on this thread's buffers of each type.
        for &(m, k, n) in &[(7, 512, 33), (5, 256, 40), (3, 512, 64), (300, 20, 260)] {
            let a = Tensor::<f64>::rand_uniform(&[m, k], -1.0, 1.0, 1).unwrap();
            let w = Tensor::<f64>::rand_uniform(&[n, k], -1.0, 1.0, 2).unwrap();
            let wt = w.t().unwrap(); // [k, n], unit row stride
            let expected = naive(&a.to_vec(), &wt.to_vec(), (m, k, n));
            check(&a.matmul(&wt).unwrap(), &expected, k, "f64 x·Wᵀ");
            let (a32, wt32) = (a.cast::<f32>(), w.cast::<f32>().t().unwrap());
            check(&a32.matmul(&wt32).unwrap(), &expected, k, "f32 x·Wᵀ");
            // Kept storage poisoned with NaN: the product overwrites every element.
            for _ in 0..2 {
                super::super::pool::recycle(Tensor::<f32>::full(&[m, n], f32::NAN));
            }
            check(
                &a32.matmul(&wt32).unwrap(),
                &expected,
                k,
                "f32 on kept storage",
            );
            // Batched: a 3-D left operand against the shared 2-D right one.
            let batch = Tensor::concat(&[&a, &a], 0)
                .unwrap()
                .reshape(&[2, m, k])
                .unwrap();
            let twice: Vec<f64> = expected.iter().chain(&expected).copied().collect();
            check(&batch.matmul(&wt).unwrap(), &twice, k, "batched");
        }
    }

    #[test]
    fn products_into_given_storage_overwrite_or_add_to_it() {
        for &(m, k, n) in &[(64, 289, 576), (32, 676, 10), (5, 0, 7), (3, 1, 4)] {
            let a = Tensor::<f64>::rand_uniform(&[m, k], -1.0, 1.0, 1).unwrap();
            let b = Tensor::<f64>::rand_uniform(&[n, k], -1.0, 1.0, 2).unwrap();
            let bt = b.t().unwrap(); // strided, as the weight gradient's colsᵀ
            let expected = naive(&a.to_vec(), &bt.to_vec(), (m, k, n));
            let (a, bt) = (a.matrix(None), bt.matrix(None));
            // Overwritten: NaN before.
            let mut out = vec![f64::NAN; m * n];
            product_into(
                ArrayViewMut2::from_shape((m, n), &mut out[..]).unwrap(),
                &a,
                &bt,
            );
            let got = Tensor::from_vec(out.clone(), &[m, n]).unwrap();
            check(&got, &expected, k.max(1), "product_into");
            // Added to: the product again on top of the first.
            add_product_into(
                ArrayViewMut2::from_shape((m, n), &mut out[..]).unwrap(),
                &a,
                &bt,
            );
            let twice: Vec<f64> = expected.iter().map(|v| 2.0 * v).collect();
            check(
                &Tensor::from_vec(out, &[m, n]).unwrap(),
                &twice,
                2 * k + 1,
                "add_product_into",
            );
        }
    }
}
