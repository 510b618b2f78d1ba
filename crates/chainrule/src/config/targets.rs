//! The contract's `y.npy`: targets read for a loss, which decides what it accepts.

use crate::data::Target;
use crate::error::invalid;
use crate::io::NpyArray;
use crate::loss::Loss;
use crate::{Float, Result, Tensor};

impl<F: Float> Target<F> {
    /// Interprets a `y.npy` array for `loss` as the contract says: float targets
    /// `[N, out]` (`[N]` read as `[N, 1]` when out is 1), or for cross-entropy integer
    /// class indices `[N]` (int32/int64, each in `[0, out)`) or class probabilities
    /// `[N, out]`.
    ///
    /// # Errors
    /// [`crate::Error::InvalidValue`] (field `targets`) for a wrong dtype or shape, a
    /// class index out of range, or a non-finite value.
    ///
    /// ```
    /// use chainrule::{io::NpyArray, loss::{Loss, Target}};
    /// let y = NpyArray::I64(vec![2], vec![3, 0]);
    /// assert_eq!(Target::<f32>::from_npy(&y, Loss::CrossEntropy, 2, 4)?, Target::Classes(vec![3, 0]));
    /// assert!(Target::<f32>::from_npy(&y, Loss::Mse, 2, 1).is_err());
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn from_npy(y: &NpyArray, loss: Loss, rows: usize, outputs: usize) -> Result<Target<F>> {
        let (dtype, shape) = (y.dtype(), y.shape());
        match y {
            NpyArray::F32(..) | NpyArray::F64(..) => {
                Self::from_values(y.to_tensor::<F>()?, rows, outputs)
            }
            NpyArray::I32(_, v) => {
                let indices = v.iter().map(|&c| i64::from(c));
                Self::from_class_indices(dtype, shape, indices, loss, rows, outputs)
            }
            NpyArray::I64(_, v) => {
                let indices = v.iter().copied();
                Self::from_class_indices(dtype, shape, indices, loss, rows, outputs)
            }
            NpyArray::U8(..) => {
                integer_targets_allowed(dtype, loss)?;
                Err(invalid(
                    "targets",
                    format!("dtype {dtype} is not allowed (class indices must be int32 or int64)"),
                ))
            }
        }
    }

    /// Float targets `[N, out]` (`[N]` read as `[N, 1]` when out is 1), as
    /// [`Target::from_npy`] reads a float `y.npy`; for callers that already hold the
    /// values as a tensor (the Python bindings), so they are not copied again.
    ///
    /// # Errors
    /// [`crate::Error::InvalidValue`] (field `targets`) for a wrong shape or a
    /// non-finite value.
    ///
    /// ```
    /// use chainrule::{Tensor, loss::Target};
    /// let y = Tensor::<f64>::from_vec(vec![0.5, 1.5], &[2])?;
    /// let Target::Values(v) = Target::from_values(y, 2, 1)? else { unreachable!() };
    /// assert_eq!(v.shape(), &[2, 1]);
    /// assert!(Target::from_values(Tensor::<f64>::zeros(&[2, 3]), 2, 1).is_err());
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn from_values(values: Tensor<F>, rows: usize, outputs: usize) -> Result<Target<F>> {
        let bad = |message: String| invalid("targets", message);
        let shape = values.shape().to_vec();
        if !values.all_finite() {
            return Err(bad("holds a non-finite number".into()));
        }
        let values = if shape == [rows] && outputs == 1 {
            values.reshape(&[rows, 1])?
        } else {
            values
        };
        if values.shape() != [rows, outputs] {
            return Err(bad(format!(
                "must have shape [{rows}, {outputs}], got {shape:?}"
            )));
        }
        Ok(Target::Values(values))
    }

    /// Integer targets of NumPy dtype `dtype` and shape `shape` read for `loss`, as
    /// [`Target::from_npy`] reads an integer `y.npy`: class indices `[N]`, each in
    /// `[0, out)`, for cross-entropy only. The indices are read in one pass, so a
    /// caller holding them in another integer type (the Python bindings, from a NumPy
    /// array) converts them without an intermediate copy.
    ///
    /// # Errors
    /// [`crate::Error::InvalidValue`] (field `targets`) when `loss` is not
    /// cross-entropy, for a wrong shape, or for an index out of range.
    ///
    /// ```
    /// use chainrule::loss::{Loss, Target};
    /// let t = Target::<f32>::from_class_indices("uint8", &[2], [1i64, 0], Loss::CrossEntropy, 2, 3)?;
    /// assert_eq!(t, Target::Classes(vec![1, 0]));
    /// assert!(Target::<f32>::from_class_indices("int64", &[1], [3i64], Loss::CrossEntropy, 1, 3).is_err());
    /// assert!(Target::<f32>::from_class_indices("int64", &[1], [0i64], Loss::Mse, 1, 1).is_err());
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn from_class_indices(
        dtype: &str,
        shape: &[usize],
        indices: impl IntoIterator<Item = i64>,
        loss: Loss,
        rows: usize,
        outputs: usize,
    ) -> Result<Target<F>> {
        let bad = |message: String| invalid("targets", message);
        integer_targets_allowed(dtype, loss)?;
        if shape != [rows] {
            return Err(bad(format!(
                "class indices must have shape [{rows}], got {shape:?}"
            )));
        }
        let mut classes = Vec::with_capacity(rows);
        for c in indices {
            if c < 0 || c as u64 >= outputs as u64 {
                return Err(bad(format!("class index {c} is outside [0, {outputs})")));
            }
            classes.push(c as usize);
        }
        Ok(Target::Classes(classes))
    }
}

/// Integer targets are class indices, which only cross-entropy reads.
fn integer_targets_allowed(dtype: &str, loss: Loss) -> Result<()> {
    if loss == Loss::CrossEntropy {
        return Ok(());
    }
    Err(invalid(
        "targets",
        format!(
            "dtype {dtype} is not allowed for {} (targets must be float32 or float64)",
            loss.name()
        ),
    ))
}
