//! Feature scaling, fitted on the training split and applied to every split.

use crate::{Error, Float, Result, Tensor};

/// The columns of a non-empty `[N, D]` tensor, each as its values in f64.
fn column_values<F: Float>(x: &Tensor<F>) -> Result<Vec<Vec<f64>>> {
    let (n, d) = columns(x)?;
    if n == 0 {
        return Err(Error::Shape {
            op: "scaler",
            message: "needs at least one row".into(),
            got: x.shape().to_vec(),
        });
    }
    let v = x.to_vec();
    Ok((0..d)
        .map(|j| v.iter().skip(j).step_by(d).map(|e| e.as_f64()).collect())
        .collect())
}

fn columns<F: Float>(x: &Tensor<F>) -> Result<(usize, usize)> {
    match x.shape() {
        &[n, d] => Ok((n, d)),
        other => Err(Error::Shape {
            op: "scaler",
            message: "needs a 2-D [N, D] tensor".into(),
            got: other.to_vec(),
        }),
    }
}

/// Per-column standardisation, (x − mean) / std, with the population standard
/// deviation (scikit-learn's `StandardScaler`); a constant column is only centred.
///
/// ```
/// use chainrule::data::Standardizer;
/// use chainrule::Tensor;
/// let x = Tensor::<f64>::from_vec(vec![1.0, 10.0, 3.0, 10.0], &[2, 2])?;
/// let s = Standardizer::fit(&x)?;
/// assert_eq!(s.transform(&x)?.to_vec(), vec![-1.0, 0.0, 1.0, 0.0]);
/// # Ok::<(), chainrule::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Standardizer {
    /// Column means.
    pub mean: Vec<f64>,
    /// Column standard deviations (1 where a column is constant).
    pub std: Vec<f64>,
}

impl Standardizer {
    /// Fits the column means and standard deviations of `x` `[N, D]`.
    ///
    /// # Errors
    /// [`Error::Shape`] unless `x` is 2-D with at least one row.
    ///
    /// ```
    /// use chainrule::data::Standardizer;
    /// use chainrule::Tensor;
    /// let s = Standardizer::fit(&Tensor::<f32>::from_vec(vec![0.0, 2.0], &[2, 1])?)?;
    /// assert_eq!((s.mean[0], s.std[0]), (1.0, 1.0));
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn fit<F: Float>(x: &Tensor<F>) -> Result<Self> {
        let columns = column_values(x)?;
        let mean: Vec<f64> = columns
            .iter()
            .map(|c| c.iter().sum::<f64>() / c.len() as f64)
            .collect();
        let std = columns
            .iter()
            .zip(&mean)
            .map(|(c, m)| {
                let s = (c.iter().map(|e| (e - m).powi(2)).sum::<f64>() / c.len() as f64).sqrt();
                if s > 0.0 { s } else { 1.0 }
            })
            .collect();
        Ok(Standardizer { mean, std })
    }

    /// Applies the fitted scaling to `x` `[N, D]`.
    ///
    /// # Errors
    /// [`Error::Shape`] when `x` does not have the fitted number of columns.
    ///
    /// ```
    /// use chainrule::data::Standardizer;
    /// use chainrule::Tensor;
    /// let s = Standardizer { mean: vec![1.0], std: vec![2.0] };
    /// assert_eq!(s.transform(&Tensor::<f64>::full(&[1, 1], 5.0))?.to_vec(), vec![2.0]);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn transform<F: Float>(&self, x: &Tensor<F>) -> Result<Tensor<F>> {
        affine(x, &self.mean, &self.std)
    }
}

/// Per-column min-max scaling to [0, 1], (x − min) / (max − min); a constant column
/// maps to 0.
///
/// ```
/// use chainrule::data::MinMaxScaler;
/// use chainrule::Tensor;
/// let x = Tensor::<f64>::from_vec(vec![2.0, 4.0, 6.0], &[3, 1])?;
/// let s = MinMaxScaler::fit(&x)?;
/// assert_eq!(s.transform(&x)?.to_vec(), vec![0.0, 0.5, 1.0]);
/// # Ok::<(), chainrule::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct MinMaxScaler {
    /// Column minima.
    pub min: Vec<f64>,
    /// Column ranges, max − min (1 where a column is constant).
    pub range: Vec<f64>,
}

impl MinMaxScaler {
    /// Fits the column minima and ranges of `x` `[N, D]`.
    ///
    /// # Errors
    /// [`Error::Shape`] unless `x` is 2-D with at least one row.
    ///
    /// ```
    /// use chainrule::data::MinMaxScaler;
    /// use chainrule::Tensor;
    /// let s = MinMaxScaler::fit(&Tensor::<f32>::from_vec(vec![3.0, 5.0], &[2, 1])?)?;
    /// assert_eq!((s.min[0], s.range[0]), (3.0, 2.0));
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn fit<F: Float>(x: &Tensor<F>) -> Result<Self> {
        let columns = column_values(x)?;
        let min: Vec<f64> = columns
            .iter()
            .map(|c| c.iter().copied().fold(f64::INFINITY, f64::min))
            .collect();
        let range = columns
            .iter()
            .zip(&min)
            .map(|(c, lo)| {
                let r = c.iter().copied().fold(f64::NEG_INFINITY, f64::max) - lo;
                if r > 0.0 { r } else { 1.0 }
            })
            .collect();
        Ok(MinMaxScaler { min, range })
    }

    /// Applies the fitted scaling to `x` `[N, D]` (values outside the fitted range
    /// map outside [0, 1]).
    ///
    /// # Errors
    /// [`Error::Shape`] when `x` does not have the fitted number of columns.
    ///
    /// ```
    /// use chainrule::data::MinMaxScaler;
    /// use chainrule::Tensor;
    /// let s = MinMaxScaler { min: vec![0.0], range: vec![4.0] };
    /// assert_eq!(s.transform(&Tensor::<f64>::full(&[1, 1], 8.0))?.to_vec(), vec![2.0]);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn transform<F: Float>(&self, x: &Tensor<F>) -> Result<Tensor<F>> {
        affine(x, &self.min, &self.range)
    }
}

/// (x − shift) / scale per column.
fn affine<F: Float>(x: &Tensor<F>, shift: &[f64], scale: &[f64]) -> Result<Tensor<F>> {
    let (_, d) = columns(x)?;
    if d != shift.len() {
        return Err(Error::Shape {
            op: "scaler",
            message: format!("was fitted on {} columns", shift.len()),
            got: x.shape().to_vec(),
        });
    }
    let shift = Tensor::from_vec(shift.iter().map(|&v| F::from_f64(v)).collect(), &[d])?;
    let scale = Tensor::from_vec(scale.iter().map(|&v| F::from_f64(v)).collect(), &[d])?;
    x.sub(&shift)?.div(&scale)
}
