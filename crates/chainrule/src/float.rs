//! The element types a [`Tensor`](crate::Tensor) can hold: `f32` and `f64`.
//!
//! [`Float`] is deliberately small and sealed: user code names `f32` or `f64`, never
//! the trait's bounds.

use std::fmt::{Debug, Display};

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// A floating-point element type: implemented for `f32` and `f64` only.
///
/// ```
/// use chainrule::Float;
/// assert_eq!(<f32 as Float>::DTYPE, "F32");
/// assert_eq!(f64::from_f64(0.5), 0.5);
/// ```
pub trait Float:
    sealed::Sealed
    + num_traits::Float
    + ndarray::LinalgScalar
    + ndarray::ScalarOperand
    + std::ops::AddAssign
    + std::ops::SubAssign
    + std::ops::MulAssign
    + std::iter::Sum
    + Default
    + Debug
    + Display
    + Send
    + Sync
    + 'static
{
    /// The safetensors name of this type (`"F32"` or `"F64"`).
    const DTYPE: &'static str;

    /// Converts from `f64`, rounding to nearest for `f32`.
    fn from_f64(value: f64) -> Self;

    /// Widens (or copies) to `f64`.
    fn as_f64(self) -> f64;
}

impl Float for f32 {
    const DTYPE: &'static str = "F32";
    fn from_f64(value: f64) -> Self {
        value as f32
    }
    fn as_f64(self) -> f64 {
        f64::from(self)
    }
}

impl Float for f64 {
    const DTYPE: &'static str = "F64";
    fn from_f64(value: f64) -> Self {
        value
    }
    fn as_f64(self) -> f64 {
        self
    }
}
