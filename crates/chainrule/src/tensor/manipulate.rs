//! Shape manipulation: reshape, transpose, row slicing and gathering, concatenation.

use super::{Tensor, check_axis};
use crate::{Error, Float, Result};
use ndarray::{ArrayD, Axis, IxDyn, Slice};

impl<F: Float> Tensor<F> {
    /// The same elements (row-major order) under a new shape.
    ///
    /// # Errors
    /// [`Error::ElementCount`] when the shapes hold different numbers of elements.
    ///
    /// ```
    /// use chainrule::Tensor;
    /// let t = Tensor::<f64>::from_vec((0..6).map(f64::from).collect(), &[2, 3])?;
    /// assert_eq!(t.reshape(&[3, 2])?.get(&[2, 0]), Some(4.0));
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor<F>> {
        let expected: usize = shape.iter().product();
        if expected != self.len() {
            return Err(Error::ElementCount {
                shape: shape.to_vec(),
                expected,
                got: self.len(),
            });
        }
        let data = if self.data.is_standard_layout() {
            self.data.clone()
        } else {
            self.data.as_standard_layout().into_owned().into_shared()
        };
        let reshaped = data
            .into_shape_with_order(IxDyn(shape))
            .expect("element count checked, layout standard");
        Ok(Tensor::from_arc(reshaped))
    }

    /// Reorders the axes: axis `i` of the result is axis `axes[i]` of `self`.
    /// Zero-copy.
    ///
    /// # Errors
    /// [`Error::Shape`] when `axes` is not a permutation of `0..ndim`.
    ///
    /// ```
    /// use chainrule::Tensor;
    /// let t = Tensor::<f32>::zeros(&[2, 3, 4]).permute(&[2, 0, 1])?;
    /// assert_eq!(t.shape(), &[4, 2, 3]);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn permute(&self, axes: &[usize]) -> Result<Tensor<F>> {
        let mut seen = vec![false; self.ndim()];
        let valid = axes.len() == self.ndim()
            && axes
                .iter()
                .all(|&a| a < seen.len() && !std::mem::replace(&mut seen[a], true));
        if !valid {
            return Err(Error::Shape {
                op: "permute",
                message: format!("{axes:?} is not a permutation of the axes"),
                got: self.shape().to_vec(),
            });
        }
        Ok(Tensor::from_arc(
            self.data.clone().permuted_axes(IxDyn(axes)),
        ))
    }

    /// Swaps the last two axes (the matrix transpose of each matrix in a batch).
    /// Zero-copy.
    ///
    /// # Errors
    /// [`Error::Shape`] when the tensor has fewer than two axes.
    ///
    /// ```
    /// use chainrule::Tensor;
    /// let t = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3])?.t()?;
    /// assert_eq!(t.shape(), &[3, 2]);
    /// assert_eq!(t.get(&[2, 1]), Some(6.0));
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn t(&self) -> Result<Tensor<F>> {
        let rank = self.ndim();
        if rank < 2 {
            return Err(Error::Shape {
                op: "transpose",
                message: "needs at least two axes".into(),
                got: self.shape().to_vec(),
            });
        }
        let mut data = self.data.clone();
        data.swap_axes(rank - 2, rank - 1);
        Ok(Tensor::from_arc(data))
    }

    /// Rows `start .. start + len` along `axis` (PyTorch `narrow`). Zero-copy.
    ///
    /// # Errors
    /// [`Error::Axis`] for a bad axis, [`Error::Index`] when the range does not fit.
    ///
    /// ```
    /// use chainrule::Tensor;
    /// let t = Tensor::<f64>::from_vec((0..6).map(f64::from).collect(), &[3, 2])?;
    /// assert_eq!(t.narrow(0, 1, 2)?.to_vec(), vec![2.0, 3.0, 4.0, 5.0]);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn narrow(&self, axis: usize, start: usize, len: usize) -> Result<Tensor<F>> {
        check_axis("narrow", axis, self.ndim())?;
        let size = self.shape()[axis];
        if start + len > size {
            return Err(Error::Index {
                op: "narrow",
                index: start + len,
                len: size,
            });
        }
        let mut data = self.data.clone();
        data.slice_axis_inplace(Axis(axis), Slice::from(start..start + len));
        Ok(Tensor::from_arc(data))
    }

    /// The rows (entries of axis 0) at `indices`, in that order; an index may repeat.
    ///
    /// # Errors
    /// [`Error::Shape`] for a 0-d tensor, [`Error::Index`] for an index out of range.
    ///
    /// ```
    /// use chainrule::Tensor;
    /// let t = Tensor::<f64>::from_vec((0..6).map(f64::from).collect(), &[3, 2])?;
    /// assert_eq!(t.select_rows(&[2, 0])?.to_vec(), vec![4.0, 5.0, 0.0, 1.0]);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn select_rows(&self, indices: &[usize]) -> Result<Tensor<F>> {
        let rows = self.rows("select_rows")?;
        check_indices("select_rows", indices, rows)?;
        Ok(Tensor::from_array(self.data.select(Axis(0), indices)))
    }

    /// The inverse of [`Tensor::select_rows`] for gradients: a tensor of `rows` rows,
    /// zero except that row `indices[i]` accumulates row `i` of `self`.
    ///
    /// # Errors
    /// [`Error::Index`] for an index out of range, [`Error::Shape`] when `self` does
    /// not have one row per index.
    ///
    /// ```
    /// use chainrule::Tensor;
    /// let g = Tensor::<f64>::ones(&[3, 2]);
    /// assert_eq!(g.scatter_add_rows(&[1, 1, 0], 2)?.to_vec(), vec![1.0, 1.0, 2.0, 2.0]);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn scatter_add_rows(&self, indices: &[usize], rows: usize) -> Result<Tensor<F>> {
        if self.rows("scatter_add_rows")? != indices.len() {
            return Err(Error::Shape {
                op: "scatter_add_rows",
                message: format!("needs one row per index ({})", indices.len()),
                got: self.shape().to_vec(),
            });
        }
        check_indices("scatter_add_rows", indices, rows)?;
        let mut shape = self.shape().to_vec();
        shape[0] = rows;
        let mut out = ArrayD::<F>::zeros(IxDyn(&shape));
        for (src, &row) in self.data.outer_iter().zip(indices) {
            let mut dst = out.index_axis_mut(Axis(0), row);
            dst += &src;
        }
        Ok(Tensor::from_array(out))
    }

    /// Picks one element per row of a 2-D tensor: `out[i] = self[i, indices[i]]`
    /// (PyTorch `x.gather(1, idx[:, None]).squeeze(1)`), as cross-entropy picks the
    /// log-probability of each sample's class.
    ///
    /// # Errors
    /// [`Error::Shape`] unless `self` is `[indices.len(), C]`; [`Error::Index`] for an
    /// index not below `C`.
    ///
    /// ```
    /// use chainrule::Tensor;
    /// let t = Tensor::<f64>::from_vec(vec![0.1, 0.9, 0.7, 0.3], &[2, 2])?;
    /// assert_eq!(t.gather(&[1, 0])?.to_vec(), vec![0.9, 0.7]);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn gather(&self, indices: &[usize]) -> Result<Tensor<F>> {
        let classes = self.check_gather_shape(indices.len())?;
        check_indices("gather", indices, classes)?;
        let values = indices
            .iter()
            .enumerate()
            .map(|(row, &class)| self.data[[row, class]])
            .collect();
        Tensor::from_vec(values, &[indices.len()])
    }

    /// The inverse of [`Tensor::gather`] for gradients: a `[N, classes]` tensor that is
    /// zero except `out[i, indices[i]] = self[i]`.
    ///
    /// # Errors
    /// [`Error::Shape`] unless `self` is `[indices.len()]`; [`Error::Index`] for an
    /// index not below `classes`.
    ///
    /// ```
    /// use chainrule::Tensor;
    /// let g = Tensor::<f64>::from_vec(vec![5.0, 6.0], &[2])?;
    /// assert_eq!(g.scatter(&[1, 0], 2)?.to_vec(), vec![0.0, 5.0, 6.0, 0.0]);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn scatter(&self, indices: &[usize], classes: usize) -> Result<Tensor<F>> {
        if self.shape() != [indices.len()] {
            return Err(Error::Shape {
                op: "scatter",
                message: format!("needs shape [{}]", indices.len()),
                got: self.shape().to_vec(),
            });
        }
        check_indices("scatter", indices, classes)?;
        let mut out = ArrayD::<F>::zeros(IxDyn(&[indices.len(), classes]));
        for (row, (&class, &value)) in indices.iter().zip(self.data.iter()).enumerate() {
            out[[row, class]] = value;
        }
        Ok(Tensor::from_array(out))
    }

    /// Joins tensors along `axis`; all other axes must agree.
    ///
    /// # Errors
    /// [`Error::Shape`] for an empty list or mismatched shapes, [`Error::Axis`] for a
    /// bad axis.
    ///
    /// ```
    /// use chainrule::Tensor;
    /// let a = Tensor::<f64>::ones(&[1, 2]);
    /// let b = Tensor::<f64>::zeros(&[2, 2]);
    /// let c = Tensor::concat(&[&a, &b], 0)?;
    /// assert_eq!(c.shape(), &[3, 2]);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn concat(tensors: &[&Tensor<F>], axis: usize) -> Result<Tensor<F>> {
        let first = tensors.first().ok_or_else(|| Error::Shape {
            op: "concat",
            message: "needs at least one tensor".into(),
            got: vec![],
        })?;
        check_axis("concat", axis, first.ndim())?;
        for t in tensors {
            let agrees = t.ndim() == first.ndim()
                && (0..t.ndim()).all(|a| a == axis || t.shape()[a] == first.shape()[a]);
            if !agrees {
                return Err(Error::Shape {
                    op: "concat",
                    message: format!(
                        "every tensor must match {:?} outside axis {axis}",
                        first.shape()
                    ),
                    got: t.shape().to_vec(),
                });
            }
        }
        let views: Vec<_> = tensors.iter().map(|t| t.data.view()).collect();
        let joined = ndarray::concatenate(Axis(axis), &views).expect("shapes checked");
        Ok(Tensor::from_array(joined))
    }

    fn rows(&self, op: &'static str) -> Result<usize> {
        self.shape().first().copied().ok_or_else(|| Error::Shape {
            op,
            message: "needs at least one axis".into(),
            got: vec![],
        })
    }

    fn check_gather_shape(&self, rows: usize) -> Result<usize> {
        match self.shape() {
            &[r, classes] if r == rows => Ok(classes),
            _ => Err(Error::Shape {
                op: "gather",
                message: format!("needs a 2-D tensor with {rows} rows"),
                got: self.shape().to_vec(),
            }),
        }
    }
}

fn check_indices(op: &'static str, indices: &[usize], len: usize) -> Result<()> {
    match indices.iter().find(|&&i| i >= len) {
        Some(&index) => Err(Error::Index { op, index, len }),
        None => Ok(()),
    }
}
