//! The contract's `y.npy`: targets read for a loss, which decides what it accepts.

use crate::data::Target;
use crate::error::invalid;
use crate::io::NpyArray;
use crate::loss::Loss;
use crate::{Float, Result};

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
        let bad = |message: String| invalid("targets", message);
        let shape = y.shape().to_vec();
        if !y.is_float() {
            if loss != Loss::CrossEntropy {
                return Err(bad(format!(
                    "dtype {} is not allowed for {} (targets must be float32 or float64)",
                    y.dtype(),
                    loss.name()
                )));
            }
            let classes: Vec<i64> = match y {
                NpyArray::I32(_, v) => v.iter().map(|&c| i64::from(c)).collect(),
                NpyArray::I64(_, v) => v.clone(),
                other => {
                    return Err(bad(format!(
                        "dtype {} is not allowed (class indices must be int32 or int64)",
                        other.dtype()
                    )));
                }
            };
            if shape != [rows] {
                return Err(bad(format!(
                    "class indices must have shape [{rows}], got {shape:?}"
                )));
            }
            if let Some(c) = classes
                .iter()
                .find(|&&c| c < 0 || c as u64 >= outputs as u64)
            {
                return Err(bad(format!("class index {c} is outside [0, {outputs})")));
            }
            return Ok(Target::Classes(
                classes.iter().map(|&c| c as usize).collect(),
            ));
        }
        let values = y.to_tensor::<F>()?;
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
}
