//! [`Tensor`]: an n-dimensional, row-major array of `f32` or `f64` values.
//!
//! A `Tensor` is a plain value: it knows nothing of gradients. Storage is an
//! [`ndarray::ArcArray`], so cloning a tensor, transposing it or slicing rows never
//! copies the elements. The operations that autodiff records (in
//! [`crate::autodiff`]) are built from the methods here.
//!
//! Shapes follow NumPy: a 0-d tensor (shape `[]`) holds one number; binary
//! element-wise operations broadcast (trailing axes aligned, size-1 axes stretched).

mod conv;
mod dropout;
mod manipulate;
mod math;
mod matmul;
#[cfg(test)]
mod naive;
mod norm;
pub(crate) mod pool;
mod pool2d;

pub use conv::Window2d;
pub(crate) use dropout::{mask_value, mix};
pub use pool2d::NO_MAXIMUM;

pub use math::broadcast_shape;
pub(crate) use math::sigmoid;
pub(crate) use matmul::num_threads;
pub use matmul::set_num_threads;

use crate::{Error, Float, Result};

/// Runs `f` with a training team of `threads` threads (the caller one of them), as
/// `train::fit` runs its loop, so that convolution and the large products inside `f`
/// are shared among them; for the benchmarks of those kernels. Denormals are
/// flushed meanwhile, as in training.
#[doc(hidden)]
pub fn with_training_team<R>(threads: usize, f: impl FnOnce() -> R) -> R {
    crate::parallel::Team::scope(threads, |_| f())
}

/// Hands `tensor`'s storage back for the next output of its size on this thread, as
/// the training loop does with a step's tensors; for the benchmarks of the kernels
/// that write their outputs on kept storage.
#[doc(hidden)]
pub fn recycle<F: Float>(tensor: Tensor<F>) {
    pool::recycle(tensor);
}

/// Hands an index buffer (max pooling's, [`Tensor::max_pool2d_with_indices`]) back
/// for the next one of its length on this thread, as the tape does; for the
/// benchmarks.
#[doc(hidden)]
pub fn recycle_indices(indices: Vec<u32>) {
    pool::recycle_indices(indices);
}
use ndarray::{ArcArray, ArrayD, IxDyn};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use std::fmt;

/// An n-dimensional, row-major array of `f32` (default) or `f64` values.
///
/// ```
/// use chainrule::Tensor;
/// let t = Tensor::<f64>::from_vec(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3])?;
/// assert_eq!(t.shape(), &[2, 3]);
/// assert_eq!(t.get(&[1, 2]), Some(6.0));
/// let total = t.sum(&[], false)?;
/// assert_eq!(total.item()?, 21.0);
/// # Ok::<(), chainrule::Error>(())
/// ```
#[derive(Clone, PartialEq)]
pub struct Tensor<F: Float = f32> {
    data: ArcArray<F, IxDyn>,
}

impl<F: Float> Tensor<F> {
    // --- creation -------------------------------------------------------------

    /// Wraps an owned ndarray array.
    ///
    /// ```
    /// use chainrule::Tensor;
    /// let t = Tensor::from_array(ndarray::arr2(&[[1.0f64, 2.0]]).into_dyn());
    /// assert_eq!(t.shape(), &[1, 2]);
    /// ```
    pub fn from_array(array: ArrayD<F>) -> Self {
        Tensor {
            data: array.into_shared(),
        }
    }

    pub(crate) fn from_arc(data: ArcArray<F, IxDyn>) -> Self {
        Tensor { data }
    }

    /// A tensor of the given shape filled with `value`.
    ///
    /// ```
    /// use chainrule::Tensor;
    /// assert_eq!(Tensor::<f64>::full(&[2], 7.0).to_vec(), vec![7.0, 7.0]);
    /// ```
    pub fn full(shape: &[usize], value: F) -> Self {
        Self::from_array(ArrayD::from_elem(IxDyn(shape), value))
    }

    /// A tensor of zeros.
    ///
    /// ```
    /// use chainrule::Tensor;
    /// assert_eq!(Tensor::<f32>::zeros(&[2, 2]).to_vec(), vec![0.0; 4]);
    /// ```
    pub fn zeros(shape: &[usize]) -> Self {
        Self::full(shape, F::zero())
    }

    /// A tensor of ones.
    ///
    /// ```
    /// use chainrule::Tensor;
    /// assert_eq!(Tensor::<f32>::ones(&[3]).to_vec(), vec![1.0; 3]);
    /// ```
    pub fn ones(shape: &[usize]) -> Self {
        Self::full(shape, F::one())
    }

    /// A 0-d tensor holding one number.
    ///
    /// ```
    /// use chainrule::Tensor;
    /// let s = Tensor::scalar(2.5f64);
    /// assert_eq!(s.shape(), &[] as &[usize]);
    /// assert_eq!(s.item()?, 2.5);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn scalar(value: F) -> Self {
        Self::full(&[], value)
    }

    /// A tensor from row-major `data` and a `shape`.
    ///
    /// # Errors
    /// [`Error::ElementCount`] when `data.len()` differs from the product of `shape`.
    ///
    /// ```
    /// use chainrule::Tensor;
    /// let t = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2])?;
    /// assert_eq!(t.get(&[1, 0]), Some(3.0));
    /// assert!(Tensor::from_vec(vec![1.0f32], &[2]).is_err());
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn from_vec(data: Vec<F>, shape: &[usize]) -> Result<Self> {
        let expected: usize = shape.iter().product();
        let representable = shape
            .iter()
            .filter(|&&d| d != 0)
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .is_some_and(|n| n <= isize::MAX as usize);
        if expected != data.len() || !representable {
            return Err(Error::ElementCount {
                shape: shape.to_vec(),
                expected,
                got: data.len(),
            });
        }
        let array =
            ArrayD::from_shape_vec(IxDyn(shape), data).map_err(|_| Error::ElementCount {
                shape: shape.to_vec(),
                expected,
                got: 0,
            })?;
        Ok(Self::from_array(array))
    }

    /// Samples from a normal distribution with the given mean and standard deviation,
    /// using a ChaCha8 generator seeded with `seed` (the same seed gives the same
    /// tensor on every machine).
    ///
    /// # Errors
    /// [`Error::InvalidValue`] when `std` is negative or not finite.
    ///
    /// ```
    /// use chainrule::Tensor;
    /// let a = Tensor::<f64>::rand_normal(&[1000], 0.0, 2.0, 7)?;
    /// let b = Tensor::<f64>::rand_normal(&[1000], 0.0, 2.0, 7)?;
    /// assert_eq!(a, b);
    /// let var = a.map(|v| v * v).mean(&[], false)?.item()?;
    /// assert!((var - 4.0).abs() < 0.5);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn rand_normal(shape: &[usize], mean: f64, std: f64, seed: u64) -> Result<Self> {
        let normal = Normal::new(mean, std).map_err(|e| Error::InvalidValue {
            field: "std".into(),
            message: e.to_string(),
        })?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let n: usize = shape.iter().product();
        let data = (0..n)
            .map(|_| F::from_f64(normal.sample(&mut rng)))
            .collect();
        Self::from_vec(data, shape)
    }

    /// Samples uniformly from `[low, high)`, seeded like [`Tensor::rand_normal`].
    ///
    /// # Errors
    /// [`Error::InvalidValue`] when `low > high` or either bound is not finite.
    ///
    /// ```
    /// use chainrule::Tensor;
    /// let t = Tensor::<f32>::rand_uniform(&[100], -1.0, 1.0, 3)?;
    /// assert!(t.to_vec().iter().all(|v| (-1.0..1.0).contains(v)));
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn rand_uniform(shape: &[usize], low: f64, high: f64, seed: u64) -> Result<Self> {
        if !(low.is_finite() && high.is_finite() && low <= high) {
            return Err(Error::InvalidValue {
                field: "rand_uniform".into(),
                message: format!("bounds [{low}, {high}) are not a finite interval"),
            });
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let n: usize = shape.iter().product();
        let data = (0..n)
            .map(|_| F::from_f64(low + (high - low) * rng.random::<f64>()))
            .collect();
        Self::from_vec(data, shape)
    }

    /// One-hot rows: `out[i, indices[i]] = 1`, shape `[indices.len(), classes]`.
    ///
    /// # Errors
    /// [`Error::Index`] when an index is not below `classes`.
    ///
    /// ```
    /// use chainrule::Tensor;
    /// let t = Tensor::<f64>::one_hot(&[2, 0], 3)?;
    /// assert_eq!(t.to_vec(), vec![0.0, 0.0, 1.0, 1.0, 0.0, 0.0]);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn one_hot(indices: &[usize], classes: usize) -> Result<Self> {
        let mut out = ArrayD::zeros(IxDyn(&[indices.len(), classes]));
        for (row, &class) in indices.iter().enumerate() {
            if class >= classes {
                return Err(Error::Index {
                    op: "one_hot",
                    index: class,
                    len: classes,
                });
            }
            out[[row, class]] = F::one();
        }
        Ok(Self::from_array(out))
    }

    // --- access ---------------------------------------------------------------

    /// The shape, outermost axis first.
    ///
    /// ```
    /// use chainrule::Tensor;
    /// assert_eq!(Tensor::<f32>::zeros(&[4, 5]).shape(), &[4, 5]);
    /// ```
    pub fn shape(&self) -> &[usize] {
        self.data.shape()
    }

    /// The number of axes (0 for a scalar).
    ///
    /// ```
    /// use chainrule::Tensor;
    /// assert_eq!(Tensor::scalar(1.0f32).ndim(), 0);
    /// ```
    pub fn ndim(&self) -> usize {
        self.data.ndim()
    }

    /// The number of elements.
    ///
    /// ```
    /// use chainrule::Tensor;
    /// assert_eq!(Tensor::<f32>::zeros(&[4, 5]).len(), 20);
    /// ```
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the tensor has no elements (some axis has size 0).
    ///
    /// ```
    /// use chainrule::Tensor;
    /// assert!(Tensor::<f32>::zeros(&[0, 3]).is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The elements in row-major order.
    ///
    /// ```
    /// use chainrule::Tensor;
    /// let t = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 4.0], &[2, 2])?.t()?;
    /// assert_eq!(t.to_vec(), vec![1.0, 3.0, 2.0, 4.0]);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn to_vec(&self) -> Vec<F> {
        match self.data.as_slice() {
            Some(slice) => slice.to_vec(),
            None => self.data.iter().copied().collect(),
        }
    }

    /// The one element of a tensor that holds exactly one.
    ///
    /// # Errors
    /// [`Error::Shape`] when the tensor has more or fewer than one element.
    ///
    /// ```
    /// use chainrule::Tensor;
    /// assert_eq!(Tensor::<f64>::full(&[1, 1], 3.0).item()?, 3.0);
    /// assert!(Tensor::<f64>::zeros(&[2]).item().is_err());
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn item(&self) -> Result<F> {
        if self.len() != 1 {
            return Err(Error::Shape {
                op: "item",
                message: "needs exactly one element".into(),
                got: self.shape().to_vec(),
            });
        }
        Ok(*self.data.iter().next().expect("one element"))
    }

    /// The element at `index`, or `None` when the index is out of range.
    ///
    /// ```
    /// use chainrule::Tensor;
    /// let t = Tensor::<f32>::ones(&[2, 2]);
    /// assert_eq!(t.get(&[1, 1]), Some(1.0));
    /// assert_eq!(t.get(&[2, 0]), None);
    /// ```
    pub fn get(&self, index: &[usize]) -> Option<F> {
        self.data.get(IxDyn(index)).copied()
    }

    /// A read-only ndarray view.
    ///
    /// ```
    /// use chainrule::Tensor;
    /// let t = Tensor::<f32>::ones(&[2, 3]);
    /// assert_eq!(t.view().sum(), 6.0);
    /// ```
    pub fn view(&self) -> ndarray::ArrayViewD<'_, F> {
        self.data.view()
    }

    /// The elements as a contiguous row-major slice, when they are stored that way
    /// (not after a zero-copy transpose, say).
    ///
    /// ```
    /// use chainrule::Tensor;
    /// let t = Tensor::<f32>::ones(&[2, 3]);
    /// assert_eq!(t.as_slice().map(|s| s.len()), Some(6));
    /// ```
    pub fn as_slice(&self) -> Option<&[F]> {
        self.data.as_slice()
    }

    /// The tensor as an owned ndarray array (the inverse of [`Tensor::from_array`]):
    /// its storage handed over without copying when this tensor is the only holder
    /// of it, else its elements copied (storage shared with a clone stays unchanged).
    /// The array keeps the tensor's strides, so a transposed tensor stays transposed.
    ///
    /// ```
    /// use chainrule::Tensor;
    /// let t = Tensor::<f64>::from_vec(vec![1.0, 2.0, 3.0, 4.0], &[2, 2])?;
    /// let storage = t.as_slice().unwrap().as_ptr();
    /// let a = t.into_array();
    /// assert_eq!(a.as_ptr(), storage); // moved, not copied
    /// assert_eq!(a.shape(), &[2, 2]);
    ///
    /// let shared = Tensor::<f64>::ones(&[2]);
    /// let clone = shared.clone();
    /// assert_ne!(shared.into_array().as_ptr(), clone.as_slice().unwrap().as_ptr());
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn into_array(self) -> ArrayD<F> {
        self.data.into_owned()
    }

    /// The elements in row-major order: borrowed when they are stored that way,
    /// else copied (for kernels that read a whole tensor as one slice).
    pub(crate) fn values(&self) -> std::borrow::Cow<'_, [F]> {
        self.data
            .as_slice()
            .map_or_else(|| self.to_vec().into(), Into::into)
    }

    /// The elements as a mutable row-major slice, copying them first only if they are
    /// shared with another tensor or not stored contiguously.
    ///
    /// ```
    /// use chainrule::Tensor;
    /// let mut t = Tensor::<f32>::zeros(&[2]);
    /// let view = t.clone();
    /// t.as_mut_slice()[0] = 5.0;
    /// assert_eq!((t.to_vec(), view.to_vec()), (vec![5.0, 0.0], vec![0.0, 0.0]));
    /// ```
    pub fn as_mut_slice(&mut self) -> &mut [F] {
        if !self.data.is_standard_layout() {
            self.data = self.data.as_standard_layout().into_owned().into_shared();
        }
        self.data.as_slice_mut().expect("standard layout")
    }

    /// Converts every element to another float type.
    ///
    /// ```
    /// use chainrule::Tensor;
    /// let t: Tensor<f32> = Tensor::<f64>::full(&[2], 0.5).cast();
    /// assert_eq!(t.to_vec(), vec![0.5f32, 0.5]);
    /// ```
    pub fn cast<G: Float>(&self) -> Tensor<G> {
        Tensor::from_array(self.data.mapv(|v| G::from_f64(v.as_f64())))
    }

    /// Whether every element is finite (neither NaN nor infinite).
    ///
    /// ```
    /// use chainrule::Tensor;
    /// assert!(Tensor::<f64>::ones(&[2]).all_finite());
    /// assert!(!Tensor::<f64>::full(&[2], f64::NAN).all_finite());
    /// ```
    pub fn all_finite(&self) -> bool {
        match self.data.as_slice() {
            Some(values) => all_finite(values),
            None => self.data.iter().all(|v| v.is_finite()),
        }
    }
}

/// Whether every value is finite (neither NaN nor infinite): [`Tensor::all_finite`]
/// for values in memory, such as an array a caller lends.
///
/// ```
/// assert!(chainrule::tensor::all_finite(&[1.0f32, -2.0]));
/// assert!(!chainrule::tensor::all_finite(&[1.0f64, f64::INFINITY]));
/// ```
pub fn all_finite<F: Float>(values: &[F]) -> bool {
    // No early exit: the OR-fold vectorizes, and training checks every gradient every
    // step (anomaly detection), where almost all values are finite. Large tensors (a
    // layer's gradient) are checked by the training team in parallel, one block per
    // thread.
    crate::parallel::all_blocks(values, |block| {
        !block.iter().fold(false, |bad, v| bad | !v.is_finite())
    })
}

impl<F: Float> fmt::Debug for Tensor<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor<{}>{:?} {}", F::DTYPE, self.shape(), self.data)
    }
}

impl<F: Float> fmt::Display for Tensor<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.data, f)
    }
}

/// Checks that `axis < rank`, naming the operation otherwise.
pub(crate) fn check_axis(op: &'static str, axis: usize, rank: usize) -> Result<()> {
    if axis < rank {
        Ok(())
    } else {
        Err(Error::Axis { op, axis, rank })
    }
}
