//! Element-wise arithmetic with NumPy broadcasting, reductions and softmax.

use super::{Tensor, check_axis};
use crate::{Error, Float, Result};
use ndarray::{Axis, IxDyn, Zip};

/// The NumPy broadcast of two shapes: trailing axes aligned, size-1 axes stretched.
///
/// # Errors
/// [`Error::Broadcast`] when two aligned axes differ and neither is 1.
///
/// ```
/// use chainrule::tensor::broadcast_shape;
/// assert_eq!(broadcast_shape("add", &[4, 1, 3], &[2, 1])?, vec![4, 2, 3]);
/// assert!(broadcast_shape("add", &[2, 3], &[4]).is_err());
/// # Ok::<(), chainrule::Error>(())
/// ```
pub fn broadcast_shape(op: &'static str, lhs: &[usize], rhs: &[usize]) -> Result<Vec<usize>> {
    let rank = lhs.len().max(rhs.len());
    let dim = |shape: &[usize], i: usize| {
        let offset = rank - shape.len();
        if i < offset { 1 } else { shape[i - offset] }
    };
    (0..rank)
        .map(|i| match (dim(lhs, i), dim(rhs, i)) {
            (a, b) if a == b => Ok(a),
            (1, b) => Ok(b),
            (a, 1) => Ok(a),
            _ => Err(Error::Broadcast {
                op,
                lhs: lhs.to_vec(),
                rhs: rhs.to_vec(),
            }),
        })
        .collect()
}

/// Normalises an axis list: empty means every axis; sorted, deduplicated, checked.
fn reduction_axes(op: &'static str, axes: &[usize], rank: usize) -> Result<Vec<usize>> {
    let mut axes: Vec<usize> = if axes.is_empty() {
        (0..rank).collect()
    } else {
        axes.to_vec()
    };
    for &axis in &axes {
        check_axis(op, axis, rank)?;
    }
    axes.sort_unstable();
    axes.dedup();
    Ok(axes)
}

impl<F: Float> Tensor<F> {
    /// Applies `f` to every element.
    ///
    /// ```
    /// use chainrule::Tensor;
    /// let t = Tensor::<f64>::full(&[2], 3.0).map(|v| v * v);
    /// assert_eq!(t.to_vec(), vec![9.0, 9.0]);
    /// ```
    pub fn map(&self, f: impl Fn(F) -> F) -> Tensor<F> {
        Tensor::from_array(self.data.mapv(f))
    }

    /// Combines two tensors element by element after broadcasting them to a common
    /// shape; `op` names the operation in errors.
    ///
    /// # Errors
    /// [`Error::Broadcast`] when the shapes do not broadcast.
    ///
    /// ```
    /// use chainrule::Tensor;
    /// let a = Tensor::from_vec(vec![1.0f64, 2.0], &[2, 1])?;
    /// let b = Tensor::from_vec(vec![10.0f64, 20.0, 30.0], &[3])?;
    /// let c = a.zip_with(&b, "add", |x, y| x + y)?;
    /// assert_eq!(c.shape(), &[2, 3]);
    /// assert_eq!(c.to_vec(), vec![11.0, 21.0, 31.0, 12.0, 22.0, 32.0]);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn zip_with(
        &self,
        other: &Tensor<F>,
        op: &'static str,
        f: impl Fn(F, F) -> F + Sync,
    ) -> Result<Tensor<F>> {
        if let (true, Some(a), Some(b)) = (
            self.shape() == other.shape(),
            self.as_slice(),
            other.as_slice(),
        ) {
            // The common case in training (a dropout mask, a gradient times a
            // value): kept storage, in blocks shared among the training team.
            let mut out = super::pool::reused::<F>(self.shape());
            crate::parallel::for_each_block(out.as_mut_slice(), 1, |start, block| {
                let pairs = a[start..].iter().zip(&b[start..]);
                block
                    .iter_mut()
                    .zip(pairs)
                    .for_each(|(o, (&x, &y))| *o = f(x, y));
            });
            return Ok(out);
        }
        if self.shape() == other.shape() {
            let out = Zip::from(&self.data)
                .and(&other.data)
                .map_collect(|&x, &y| f(x, y));
            return Ok(Tensor::from_array(out));
        }
        let shape = broadcast_shape(op, self.shape(), other.shape())?;
        let dim = IxDyn(&shape);
        let (x, y) = (
            self.data.broadcast(dim.clone()).expect("checked shape"),
            other.data.broadcast(dim).expect("checked shape"),
        );
        Ok(Tensor::from_array(
            Zip::from(&x).and(&y).map_collect(|&x, &y| f(x, y)),
        ))
    }

    /// Element-wise `self + other`, broadcasting.
    ///
    /// # Errors
    /// [`Error::Broadcast`] when the shapes do not broadcast.
    ///
    /// ```
    /// use chainrule::Tensor;
    /// let x = Tensor::<f64>::ones(&[2, 3]);
    /// let bias = Tensor::from_vec(vec![1.0, 2.0, 3.0], &[3])?;
    /// assert_eq!(x.add(&bias)?.to_vec(), vec![2.0, 3.0, 4.0, 2.0, 3.0, 4.0]);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    #[allow(clippy::should_implement_trait)] // fallible: shapes must broadcast
    pub fn add(&self, other: &Tensor<F>) -> Result<Tensor<F>> {
        self.zip_with(other, "add", |x, y| x + y)
    }

    /// Element-wise `self - other`, broadcasting.
    ///
    /// # Errors
    /// [`Error::Broadcast`] when the shapes do not broadcast.
    ///
    /// ```
    /// use chainrule::Tensor;
    /// let d = Tensor::scalar(5.0f64).sub(&Tensor::scalar(2.0))?;
    /// assert_eq!(d.item()?, 3.0);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    #[allow(clippy::should_implement_trait)] // fallible: shapes must broadcast
    pub fn sub(&self, other: &Tensor<F>) -> Result<Tensor<F>> {
        self.zip_with(other, "sub", |x, y| x - y)
    }

    /// Element-wise `self * other`, broadcasting.
    ///
    /// # Errors
    /// [`Error::Broadcast`] when the shapes do not broadcast.
    ///
    /// ```
    /// use chainrule::Tensor;
    /// let p = Tensor::scalar(5.0f64).mul(&Tensor::scalar(2.0))?;
    /// assert_eq!(p.item()?, 10.0);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    #[allow(clippy::should_implement_trait)] // fallible: shapes must broadcast
    pub fn mul(&self, other: &Tensor<F>) -> Result<Tensor<F>> {
        self.zip_with(other, "mul", |x, y| x * y)
    }

    /// Element-wise `self / other`, broadcasting.
    ///
    /// # Errors
    /// [`Error::Broadcast`] when the shapes do not broadcast.
    ///
    /// ```
    /// use chainrule::Tensor;
    /// let q = Tensor::scalar(5.0f64).div(&Tensor::scalar(2.0))?;
    /// assert_eq!(q.item()?, 2.5);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    #[allow(clippy::should_implement_trait)] // fallible: shapes must broadcast
    pub fn div(&self, other: &Tensor<F>) -> Result<Tensor<F>> {
        self.zip_with(other, "div", |x, y| x / y)
    }

    /// Multiplies every element by `factor`.
    ///
    /// ```
    /// use chainrule::Tensor;
    /// assert_eq!(Tensor::<f64>::ones(&[2]).scale(3.0).to_vec(), vec![3.0, 3.0]);
    /// ```
    pub fn scale(&self, factor: F) -> Tensor<F> {
        self.map(|v| v * factor)
    }

    /// The logistic sigmoid `1 / (1 + e^-x)`, computed without overflow for large |x|.
    ///
    /// ```
    /// use chainrule::Tensor;
    /// let s = Tensor::from_vec(vec![0.0f64, -1000.0, 1000.0], &[3])?.sigmoid();
    /// assert_eq!(s.to_vec(), vec![0.5, 0.0, 1.0]);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn sigmoid(&self) -> Tensor<F> {
        self.map(sigmoid)
    }

    /// Sums over `axes` (all axes when empty), keeping them as size 1 when `keepdim`.
    ///
    /// # Errors
    /// [`Error::Axis`] when an axis is out of range.
    ///
    /// ```
    /// use chainrule::Tensor;
    /// let t = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3])?;
    /// assert_eq!(t.sum(&[0], false)?.to_vec(), vec![5.0, 7.0, 9.0]);
    /// assert_eq!(t.sum(&[1], true)?.shape(), &[2, 1]);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn sum(&self, axes: &[usize], keepdim: bool) -> Result<Tensor<F>> {
        // Fast path: summing the leading axis of contiguous data adds whole rows.
        if let (Some(values), [0], false) = (self.data.as_slice(), axes, keepdim)
            && self.ndim() >= 1
        {
            let row: usize = self.shape()[1..].iter().product();
            let mut out = vec![F::zero(); row];
            if row > 0 {
                for chunk in values.chunks_exact(row) {
                    out.iter_mut().zip(chunk).for_each(|(o, &v)| *o += v);
                }
            }
            return Tensor::from_vec(out, &self.shape()[1..]);
        }
        self.reduce("sum", axes, keepdim, |lane| {
            lane.iter().fold(F::zero(), |acc, &v| acc + v)
        })
    }

    /// The mean over `axes` (all axes when empty), see [`Tensor::sum`].
    ///
    /// # Errors
    /// [`Error::Axis`] when an axis is out of range.
    ///
    /// ```
    /// use chainrule::Tensor;
    /// let t = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3])?;
    /// assert_eq!(t.mean(&[1], false)?.to_vec(), vec![2.0, 5.0]);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn mean(&self, axes: &[usize], keepdim: bool) -> Result<Tensor<F>> {
        let count = self.reduced_count("mean", axes)?;
        Ok(self
            .sum(axes, keepdim)?
            .scale(F::one() / F::from_f64(count as f64)))
    }

    /// The maximum over `axes` (all axes when empty), see [`Tensor::sum`]. NaN wins.
    ///
    /// # Errors
    /// [`Error::Axis`] when an axis is out of range; [`Error::Shape`] when reducing
    /// an axis of size 0.
    ///
    /// ```
    /// use chainrule::Tensor;
    /// let t = Tensor::from_vec(vec![1.0f64, 7.0, 3.0, 4.0, 5.0, 6.0], &[2, 3])?;
    /// assert_eq!(t.max(&[1], false)?.to_vec(), vec![7.0, 6.0]);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn max(&self, axes: &[usize], keepdim: bool) -> Result<Tensor<F>> {
        if self.reduced_count("max", axes)? == 0 {
            return Err(Error::Shape {
                op: "max",
                message: "cannot take the maximum of an empty axis".into(),
                got: self.shape().to_vec(),
            });
        }
        self.reduce("max", axes, keepdim, |lane| {
            lane.iter().fold(F::neg_infinity(), |acc, &v| {
                if v > acc || v.is_nan() { v } else { acc }
            })
        })
    }

    /// How many elements each output of a reduction over `axes` combines.
    pub(crate) fn reduced_count(&self, op: &'static str, axes: &[usize]) -> Result<usize> {
        let axes = reduction_axes(op, axes, self.ndim())?;
        Ok(axes.iter().map(|&a| self.shape()[a]).product())
    }

    /// Reduces the given axes with `f`, applied to each lane of the reduced elements.
    fn reduce(
        &self,
        op: &'static str,
        axes: &[usize],
        keepdim: bool,
        f: impl Fn(&[F]) -> F,
    ) -> Result<Tensor<F>> {
        let rank = self.ndim();
        let axes = reduction_axes(op, axes, rank)?;
        // Move the reduced axes last, then each output element reduces one
        // contiguous chunk.
        let kept: Vec<usize> = (0..rank).filter(|a| !axes.contains(a)).collect();
        let order: Vec<usize> = kept.iter().chain(axes.iter()).copied().collect();
        let permuted = self.data.view().permuted_axes(IxDyn(&order));
        let standard = permuted.as_standard_layout();
        let chunk: usize = axes.iter().map(|&a| self.shape()[a]).product();
        let flat = standard.as_slice().expect("standard layout");
        let values: Vec<F> = if chunk == 0 {
            let outputs: usize = kept.iter().map(|&a| self.shape()[a]).product();
            (0..outputs).map(|_| f(&[])).collect()
        } else {
            flat.chunks_exact(chunk).map(&f).collect()
        };
        let shape: Vec<usize> = if keepdim {
            (0..rank)
                .map(|a| {
                    if axes.contains(&a) {
                        1
                    } else {
                        self.shape()[a]
                    }
                })
                .collect()
        } else {
            kept.iter().map(|&a| self.shape()[a]).collect()
        };
        Tensor::from_vec(values, &shape)
    }

    /// Reduces a broadcast result back to `shape` by summing the axes that
    /// broadcasting added or stretched: the one place where autodiff undoes
    /// broadcasting.
    ///
    /// # Errors
    /// [`Error::Broadcast`] when `shape` does not broadcast to this tensor's shape.
    ///
    /// ```
    /// use chainrule::Tensor;
    /// let g = Tensor::<f64>::ones(&[4, 2, 3]);
    /// assert_eq!(g.sum_to_shape(&[2, 1])?.to_vec(), vec![12.0, 12.0]);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn sum_to_shape(&self, shape: &[usize]) -> Result<Tensor<F>> {
        if self.shape() == shape {
            return Ok(self.clone());
        }
        let target = broadcast_shape("sum_to_shape", shape, self.shape())?;
        if target != self.shape() {
            return Err(Error::Broadcast {
                op: "sum_to_shape",
                lhs: shape.to_vec(),
                rhs: self.shape().to_vec(),
            });
        }
        let lead = self.ndim() - shape.len();
        let mut axes: Vec<usize> = (0..lead).collect();
        axes.extend(
            shape
                .iter()
                .enumerate()
                .filter(|&(i, &d)| d == 1 && self.shape()[lead + i] != 1)
                .map(|(i, _)| lead + i),
        );
        if axes.is_empty() {
            return self.reshape(shape);
        }
        self.sum(&axes, true)?.reshape(shape)
    }

    /// Broadcasts to `shape` (NumPy rules), materialising the result.
    ///
    /// # Errors
    /// [`Error::Broadcast`] when this tensor does not broadcast to `shape`.
    ///
    /// ```
    /// use chainrule::Tensor;
    /// let b = Tensor::<f64>::from_vec(vec![1.0, 2.0], &[2])?.broadcast_to(&[2, 2])?;
    /// assert_eq!(b.to_vec(), vec![1.0, 2.0, 1.0, 2.0]);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn broadcast_to(&self, shape: &[usize]) -> Result<Tensor<F>> {
        match self.data.broadcast(IxDyn(shape)) {
            Some(view) => Ok(Tensor::from_array(view.to_owned())),
            None => Err(Error::Broadcast {
                op: "broadcast_to",
                lhs: self.shape().to_vec(),
                rhs: shape.to_vec(),
            }),
        }
    }

    /// Softmax along `axis`, computed as `exp(x - max) / sum(exp(x - max))` so large
    /// logits do not overflow.
    ///
    /// # Errors
    /// [`Error::Axis`] when `axis` is out of range.
    ///
    /// ```
    /// use chainrule::Tensor;
    /// let p = Tensor::from_vec(vec![1000.0f64, 1000.0], &[1, 2])?.softmax(1)?;
    /// assert_eq!(p.to_vec(), vec![0.5, 0.5]);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn softmax(&self, axis: usize) -> Result<Tensor<F>> {
        self.map_lanes("softmax", axis, |lane, out| {
            let max = lane.iter().fold(F::neg_infinity(), |m, &v| m.max(v));
            let mut total = F::zero();
            for (o, &v) in out.iter_mut().zip(lane) {
                *o = (v - max).exp();
                total += *o;
            }
            for o in out.iter_mut() {
                *o = *o / total;
            }
        })
    }

    /// Log-softmax along `axis`: `x - max - log(sum(exp(x - max)))`.
    ///
    /// # Errors
    /// [`Error::Axis`] when `axis` is out of range.
    ///
    /// ```
    /// use chainrule::Tensor;
    /// let l = Tensor::from_vec(vec![0.0f64, 0.0], &[2])?.log_softmax(0)?;
    /// assert!((l.to_vec()[0] + 2f64.ln()).abs() < 1e-15);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn log_softmax(&self, axis: usize) -> Result<Tensor<F>> {
        self.map_lanes("log_softmax", axis, |lane, out| {
            let max = lane.iter().fold(F::neg_infinity(), |m, &v| m.max(v));
            let total = lane.iter().fold(F::zero(), |s, &v| s + (v - max).exp());
            let log_total = total.ln() + max;
            for (o, &v) in out.iter_mut().zip(lane) {
                *o = v - log_total;
            }
        })
    }

    /// Computes each output lane along `axis` from the matching input lane.
    fn map_lanes(
        &self,
        op: &'static str,
        axis: usize,
        f: impl Fn(&[F], &mut [F]),
    ) -> Result<Tensor<F>> {
        check_axis(op, axis, self.ndim())?;
        // Every lane of the output is written: storage left by an earlier step will do.
        let mut result =
            super::pool::take(self.shape()).unwrap_or_else(|| Tensor::zeros(self.shape()));
        let out = &mut result.data;
        let n = self.shape()[axis];
        // The last axis of contiguous values (softmax over a batch's logits): each
        // lane is a row of the input and of the output, used in place.
        if let (true, Some(input), Some(output)) = (
            axis + 1 == self.ndim() && n > 0,
            self.data.as_slice(),
            out.as_slice_mut(),
        ) {
            for (src, dst) in input.chunks_exact(n).zip(output.chunks_exact_mut(n)) {
                f(src, dst);
            }
            return Ok(result);
        }
        let mut lane_in = vec![F::zero(); n];
        let mut lane_out = vec![F::zero(); n];
        for (src, mut dst) in self
            .data
            .lanes(Axis(axis))
            .into_iter()
            .zip(out.lanes_mut(Axis(axis)))
        {
            lane_in
                .iter_mut()
                .zip(src.iter())
                .for_each(|(d, &s)| *d = s);
            f(&lane_in, &mut lane_out);
            dst.iter_mut().zip(&lane_out).for_each(|(d, &s)| *d = s);
        }
        Ok(result)
    }
}

/// The logistic sigmoid of one number, stable for large |x|.
pub(crate) fn sigmoid<F: Float>(x: F) -> F {
    if x >= F::zero() {
        F::one() / (F::one() + (-x).exp())
    } else {
        let e = x.exp();
        e / (F::one() + e)
    }
}
