//! [`Inputs`]: where a data set's inputs live, and how a batch takes its rows.
//!
//! A [`Tensor`] owns its storage, so inputs that live in memory the caller owns (a
//! NumPy array's buffer, which the Python package lends for the duration of a call)
//! would have to be copied whole into a tensor before the first batch. Training,
//! evaluation and prediction take their batches through this trait instead, and an
//! ndarray view ([`ndarray::ArrayViewD`]) is [`Inputs`] too: such inputs are read in
//! place, and each batch copies only its own rows out of them, as a shuffled batch
//! gathers its rows from a tensor. A tensor's consecutive rows are still taken
//! without a copy.

use crate::{Error, Float, Result, Tensor};
use ndarray::{ArrayViewD, Axis, Slice};

/// Samples stacked along axis 0, from which batches take their rows: a [`Tensor`],
/// or an [`ndarray::ArrayViewD`] of memory the caller lends.
///
/// ```
/// use chainrule::data::Inputs;
/// use chainrule::Tensor;
/// // Six values that belong to the caller, lent as three rows of two.
/// let values = [0.0f64, 1.0, 2.0, 3.0, 4.0, 5.0];
/// let lent = ndarray::ArrayViewD::from_shape(ndarray::IxDyn(&[3, 2]), &values[..]).unwrap();
/// assert_eq!(Inputs::shape(&lent), &[3, 2]);
/// assert_eq!(lent.narrow_rows(1, 2)?.to_vec(), vec![2.0, 3.0, 4.0, 5.0]);
/// assert_eq!(Inputs::select_rows(&lent, &[2, 0])?.to_vec(), vec![4.0, 5.0, 0.0, 1.0]);
/// assert!(lent.narrow_rows(2, 2).is_err());
/// // A tensor of the same values gives the same rows.
/// let t = Tensor::from_vec(values.to_vec(), &[3, 2])?;
/// assert_eq!(t.narrow_rows(1, 2)?, lent.narrow_rows(1, 2)?);
/// # Ok::<(), chainrule::Error>(())
/// ```
pub trait Inputs<F: Float> {
    /// The shape: `[N, D]`, or `[N, ...]` (images: `[N, C, H, W]`), one sample per
    /// entry of axis 0.
    fn shape(&self) -> &[usize];

    /// Rows `start..start + len`, as a tensor: a tensor's own storage (no copy), a
    /// view's rows copied.
    ///
    /// # Errors
    /// [`Error::Shape`] for a 0-d array, [`Error::Index`] when the rows run past the
    /// last.
    fn narrow_rows(&self, start: usize, len: usize) -> Result<Tensor<F>>;

    /// The rows at `indices`, in that order (an index may repeat), copied into a
    /// tensor.
    ///
    /// # Errors
    /// [`Error::Shape`] for a 0-d array, [`Error::Index`] for an index out of range.
    fn select_rows(&self, indices: &[usize]) -> Result<Tensor<F>>;
}

/// The number of rows of `shape`, or [`Error::Shape`] for a 0-d array.
fn rows_of(op: &'static str, shape: &[usize]) -> Result<usize> {
    shape.first().copied().ok_or_else(|| Error::Shape {
        op,
        message: "needs at least one axis".into(),
        got: vec![],
    })
}

/// Checks that rows `start..start + len` exist among `rows`.
fn check_range(op: &'static str, start: usize, len: usize, rows: usize) -> Result<()> {
    match start.checked_add(len) {
        Some(end) if end <= rows => Ok(()),
        end => Err(Error::Index {
            op,
            index: end.unwrap_or(usize::MAX),
            len: rows,
        }),
    }
}

/// Checks that every index is below `rows`.
fn check_indices(op: &'static str, indices: &[usize], rows: usize) -> Result<()> {
    match indices.iter().find(|&&i| i >= rows) {
        Some(&index) => Err(Error::Index {
            op,
            index,
            len: rows,
        }),
        None => Ok(()),
    }
}

impl<F: Float> Inputs<F> for Tensor<F> {
    fn shape(&self) -> &[usize] {
        Tensor::shape(self)
    }

    fn narrow_rows(&self, start: usize, len: usize) -> Result<Tensor<F>> {
        check_range(
            "narrow_rows",
            start,
            len,
            rows_of("narrow_rows", self.shape())?,
        )?;
        self.narrow(0, start, len)
    }

    fn select_rows(&self, indices: &[usize]) -> Result<Tensor<F>> {
        Tensor::select_rows(self, indices)
    }
}

impl<F: Float> Inputs<F> for ArrayViewD<'_, F> {
    fn shape(&self) -> &[usize] {
        ndarray::ArrayBase::shape(self)
    }

    fn narrow_rows(&self, start: usize, len: usize) -> Result<Tensor<F>> {
        let rows = rows_of("narrow_rows", Inputs::shape(self))?;
        check_range("narrow_rows", start, len, rows)?;
        let mut shape = Inputs::shape(self).to_vec();
        shape[0] = len;
        match self.as_slice() {
            // Row-major (a C-contiguous NumPy array): the rows are one run of memory.
            Some(values) => {
                let row = values.len().checked_div(rows).unwrap_or(0);
                Tensor::from_vec(values[start * row..(start + len) * row].to_vec(), &shape)
            }
            None => Ok(Tensor::from_array(
                self.slice_axis(Axis(0), Slice::from(start..start + len))
                    .to_owned(),
            )),
        }
    }

    fn select_rows(&self, indices: &[usize]) -> Result<Tensor<F>> {
        let rows = rows_of("select_rows", Inputs::shape(self))?;
        check_indices("select_rows", indices, rows)?;
        let mut shape = Inputs::shape(self).to_vec();
        shape[0] = indices.len();
        match self.as_slice() {
            // Row-major: each row is one run of memory, appended in turn.
            Some(values) => {
                let row = values.len().checked_div(rows).unwrap_or(0);
                let mut picked = Vec::with_capacity(indices.len() * row);
                for &i in indices {
                    picked.extend_from_slice(&values[i * row..(i + 1) * row]);
                }
                Tensor::from_vec(picked, &shape)
            }
            None => Ok(Tensor::from_array(self.select(Axis(0), indices))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> Vec<f64> {
        (0..24).map(f64::from).collect()
    }

    /// The same rows from a view as from a tensor of the same values: the tensor's
    /// methods are the reference.
    fn same_rows_as_a_tensor(view: ArrayViewD<'_, f64>) {
        let t = Tensor::from_array(view.to_owned());
        let rows = Inputs::shape(&view)[0];
        for start in 0..=rows {
            for len in 0..=rows - start {
                assert_eq!(
                    view.narrow_rows(start, len).unwrap().to_vec(),
                    t.narrow_rows(start, len).unwrap().to_vec()
                );
            }
        }
        for indices in [vec![], vec![0], vec![3, 0, 3, 1], vec![1, 2]] {
            let got = Inputs::select_rows(&view, &indices).unwrap();
            let want = Tensor::select_rows(&t, &indices).unwrap();
            assert_eq!((got.shape(), got.to_vec()), (want.shape(), want.to_vec()));
        }
    }

    #[test]
    fn a_row_major_view_gives_the_rows_a_tensor_gives() {
        let v = values();
        same_rows_as_a_tensor(ArrayViewD::from_shape(ndarray::IxDyn(&[4, 2, 3]), &v[..]).unwrap());
    }

    #[test]
    fn a_strided_or_column_major_view_gives_the_rows_numpy_shows() {
        let v = values();
        let column_major = ArrayViewD::from_shape(ndarray::IxDyn(&[6, 4]), &v[..])
            .unwrap()
            .reversed_axes();
        same_rows_as_a_tensor(column_major);
        let every_other = ArrayViewD::from_shape(ndarray::IxDyn(&[4, 6]), &v[..]).unwrap();
        same_rows_as_a_tensor(every_other.slice_move(ndarray::s![.., ..;2]).into_dyn());
    }

    #[test]
    fn rows_out_of_range_are_errors_not_panics() {
        let v = values();
        let view = ArrayViewD::from_shape(ndarray::IxDyn(&[4, 6]), &v[..]).unwrap();
        assert!(matches!(
            view.narrow_rows(3, 2),
            Err(Error::Index {
                index: 5,
                len: 4,
                ..
            })
        ));
        assert!(view.narrow_rows(usize::MAX, 2).is_err());
        assert!(matches!(
            Inputs::select_rows(&view, &[0, 4]),
            Err(Error::Index {
                index: 4,
                len: 4,
                ..
            })
        ));
        let scalar = ArrayViewD::from_shape(ndarray::IxDyn(&[]), &v[..1]).unwrap();
        assert!(matches!(scalar.narrow_rows(0, 0), Err(Error::Shape { .. })));
        let t = Tensor::<f64>::zeros(&[2, 3]);
        assert!(t.narrow_rows(1, 2).is_err());
    }
}
