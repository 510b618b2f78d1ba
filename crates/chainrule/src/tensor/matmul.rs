//! Matrix multiplication, routed through the `gemm` crate.
//!
//! `gemm` takes row and column strides for every operand, so transposed views (as
//! backward passes produce: `grad · Wᵀ`, `xᵀ · grad`) are multiplied without copying.
//! Small products run on one thread; large ones use rayon's pool.

use super::Tensor;
use crate::{Error, Float, Result};
use ndarray::{Array2, ArrayD, ArrayView2, Axis, Ix2, IxDyn};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Threads for large matrix products; 0 means rayon's default (one per core).
static THREADS: AtomicUsize = AtomicUsize::new(0);

/// Products with fewer multiply-adds than this run on the calling thread: below it,
/// waking the pool costs more than it saves. Measured on 2 cores with `chainrule bench`
/// (median of 3): W1 (64×784×128 products) took 0.47 s/epoch at 2¹⁸, 0.46 s at 2²²
/// and 0.32 s at 2²⁴; W2's large products stay parallel.
const PARALLEL_MIN_FLOPS: usize = 1 << 24;

/// Sets how many threads large matrix products use (0: one per core).
///
/// ```
/// chainrule::tensor::set_num_threads(1);
/// chainrule::tensor::set_num_threads(0);
/// ```
pub fn set_num_threads(threads: usize) {
    THREADS.store(threads, Ordering::Relaxed);
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
            let out = matmul_2d(&self.matrix(None), &other.matrix(None), m, k, n);
            return Ok(Tensor::from_array(out.into_dyn()));
        }
        let batch = match (a.len(), b.len()) {
            (3, 3) if a[0] != b[0] => {
                return Err(shape_error(format!("batch sizes differ: {a:?} · {b:?}")));
            }
            (3, _) => a[0],
            _ => b[0],
        };
        let mut out = ArrayD::<F>::zeros(IxDyn(&[batch, m, n]));
        for (i, mut dst) in out.outer_iter_mut().enumerate() {
            let lhs = self.matrix((a.len() == 3).then_some(i));
            let rhs = other.matrix((b.len() == 3).then_some(i));
            dst.assign(&matmul_2d(&lhs, &rhs, m, k, n));
        }
        Ok(Tensor::from_array(out))
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

/// `lhs · rhs` for 2-D views of any strides.
fn matmul_2d<F: Float>(
    lhs: &ArrayView2<'_, F>,
    rhs: &ArrayView2<'_, F>,
    m: usize,
    k: usize,
    n: usize,
) -> Array2<F> {
    let mut out = Array2::<F>::zeros((m, n));
    if m == 0 || n == 0 || k == 0 {
        return out;
    }
    let parallelism = if m * n * k >= PARALLEL_MIN_FLOPS {
        gemm::Parallelism::Rayon(THREADS.load(Ordering::Relaxed))
    } else {
        gemm::Parallelism::None
    };
    let (ls, rs) = (lhs.strides(), rhs.strides());
    // SAFETY: the pointers and strides describe live views of exactly m×k, k×n and
    // m×n elements (ndarray guarantees every in-range stride offset is valid), the
    // destination does not alias the sources, and F is f32 or f64, which gemm
    // supports.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            lhs.as_ptr(),
            ls[1],
            ls[0],
            rhs.as_ptr(),
            rs[1],
            rs[0],
            F::zero(),
            F::one(),
            false,
            false,
            false,
            parallelism,
        );
    }
    out
}
