//! Data: targets, data sets, mini-batch order, train/validation splits and feature
//! scaling fitted on the training split; data sets read from CSV files and MNIST's
//! IDX files.
//!
//! [`Target::from_npy`], the contract's `y.npy` read for a loss, lives with the
//! contract's other readers, so that data knows nothing of losses.

mod csv;
mod inputs;
mod mnist;
mod scale;
pub mod synthetic;

pub use csv::{CsvData, TargetKind, read_csv, read_csv_bytes};
pub use inputs::Inputs;
pub use mnist::read_mnist;
pub use scale::{MinMaxScaler, Standardizer};

use crate::error::invalid;
use crate::{Error, Float, Result, Tensor};
use rand::SeedableRng;

/// The most classes a classification data set may have (2¹⁶): far beyond any
/// classifier chainrule trains, far below a model's or a confusion matrix's memory
/// limit. A class index read from a file sizes the model's output layer, so an index
/// of this or more (a label of 30,000,000 in a 2 KB CSV) is refused where it is read.
pub const MAX_CLASSES: usize = 1 << 16;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

/// What a loss compares predictions with.
#[derive(Debug, Clone, PartialEq)]
pub enum Target<F: Float = f32> {
    /// Values of the prediction's shape (regression targets, probabilities, or class
    /// probabilities for cross-entropy).
    Values(Tensor<F>),
    /// One class index per row (cross-entropy only).
    Classes(Vec<usize>),
}

impl<F: Float> Target<F> {
    /// The number of rows (samples).
    ///
    /// ```
    /// use chainrule::loss::Target;
    /// assert_eq!(Target::<f32>::Classes(vec![0, 2, 1]).rows(), 3);
    /// ```
    pub fn rows(&self) -> usize {
        match self {
            Target::Values(t) => t.shape().first().copied().unwrap_or(1),
            Target::Classes(c) => c.len(),
        }
    }

    /// The targets of the given rows.
    ///
    /// # Errors
    /// [`crate::Error::Index`] for a row out of range.
    ///
    /// ```
    /// use chainrule::loss::Target;
    /// let t = Target::<f32>::Classes(vec![5, 6, 7]).select_rows(&[2, 0])?;
    /// assert_eq!(t, Target::Classes(vec![7, 5]));
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn select_rows(&self, rows: &[usize]) -> Result<Target<F>> {
        Ok(match self {
            Target::Values(t) => Target::Values(t.select_rows(rows)?),
            Target::Classes(c) => Target::Classes({
                let mut picked = Vec::with_capacity(rows.len());
                for &r in rows {
                    picked.push(*c.get(r).ok_or(crate::Error::Index {
                        op: "select_rows",
                        index: r,
                        len: c.len(),
                    })?);
                }
                picked
            }),
        })
    }
}

/// Inputs and targets, one row per sample.
///
/// The inputs are a [`Tensor`] (`Dataset<F>`), or any other [`Inputs`]: a view of
/// memory the caller lends (`Dataset<F, ndarray::ArrayViewD<'_, F>>`), read in place
/// by training and evaluation, whose batches ([`Dataset::rows`]) are always tensors.
///
/// ```
/// use chainrule::data::{Dataset, Target};
/// use chainrule::Tensor;
/// let x = Tensor::<f64>::from_vec((0..8).map(f64::from).collect(), &[4, 2])?;
/// let data = Dataset::new(x, Target::Classes(vec![0, 1, 0, 1]))?;
/// let (train, validation) = data.split(0.25, 7)?;
/// assert_eq!((train.len(), validation.len()), (3, 1));
///
/// // The same samples, their inputs lent instead of copied into a tensor.
/// let values: Vec<f64> = (0..8).map(f64::from).collect();
/// let lent = ndarray::ArrayViewD::from_shape(ndarray::IxDyn(&[4, 2]), &values[..]).unwrap();
/// let borrowed = Dataset::new(lent, Target::Classes(vec![0, 1, 0, 1]))?;
/// assert_eq!(borrowed.rows(&[2, 3])?, data.rows(&[2, 3])?);
/// assert_eq!(borrowed.split(0.25, 7)?, (train, validation));
/// # Ok::<(), chainrule::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset<F: Float = f32, X = Tensor<F>> {
    /// Inputs `[N, D]`, or `[N, ...]` (images: `[N, C, H, W]`).
    pub x: X,
    /// Targets, N rows.
    pub target: Target<F>,
}

impl<F: Float, X: Inputs<F>> Dataset<F, X> {
    /// Pairs inputs with targets.
    ///
    /// # Errors
    /// [`Error::Shape`] unless `x` has at least 2 axes and as many rows as `target`.
    ///
    /// ```
    /// use chainrule::data::{Dataset, Target};
    /// use chainrule::Tensor;
    /// assert!(Dataset::new(Tensor::<f32>::zeros(&[3, 2]), Target::Classes(vec![0, 1])).is_err());
    /// ```
    pub fn new(x: X, target: Target<F>) -> Result<Self> {
        if x.shape().len() < 2 || x.shape()[0] != target.rows() {
            return Err(Error::Shape {
                op: "dataset",
                message: format!(
                    "x must be [N, D] or [N, ...] with N = {} target rows",
                    target.rows()
                ),
                got: x.shape().to_vec(),
            });
        }
        Ok(Dataset { x, target })
    }

    /// The number of samples.
    ///
    /// ```
    /// use chainrule::data::{Dataset, Target};
    /// use chainrule::Tensor;
    /// let d = Dataset::new(Tensor::<f32>::zeros(&[3, 2]), Target::Classes(vec![0, 1, 1]))?;
    /// assert_eq!(d.len(), 3);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn len(&self) -> usize {
        self.x.shape()[0]
    }

    /// Whether there are no samples.
    ///
    /// ```
    /// use chainrule::data::{Dataset, Target};
    /// use chainrule::Tensor;
    /// assert!(Dataset::new(Tensor::<f32>::zeros(&[0, 2]), Target::Classes(vec![]))?.is_empty());
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The samples at `rows`, in that order, as a batch of its own. Consecutive rows
    /// of a tensor are taken without copying the inputs; rows of lent inputs are
    /// copied (see [`Inputs`]).
    ///
    /// # Errors
    /// [`Error::Index`] for a row out of range.
    ///
    /// ```
    /// use chainrule::data::{Dataset, Target};
    /// use chainrule::Tensor;
    /// let d = Dataset::new(Tensor::<f32>::zeros(&[3, 2]), Target::Classes(vec![0, 1, 2]))?;
    /// assert_eq!(d.rows(&[2, 0])?.target, Target::Classes(vec![2, 0]));
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn rows(&self, rows: &[usize]) -> Result<Dataset<F>> {
        let consecutive = !rows.is_empty() && rows.windows(2).all(|w| w[1] == w[0] + 1);
        let x = if consecutive {
            self.x.narrow_rows(rows[0], rows.len())?
        } else {
            self.x.select_rows(rows)?
        };
        let target = match (&self.target, consecutive) {
            (Target::Values(t), true) => Target::Values(t.narrow(0, rows[0], rows.len())?),
            _ => self.target.select_rows(rows)?,
        };
        Ok(Dataset { x, target })
    }

    /// Splits off a validation set: the rows are shuffled with `seed`, and the last
    /// `round(fraction · N)` of them form the validation set.
    ///
    /// # Errors
    /// [`crate::Error::InvalidValue`] unless 0 ≤ `fraction` < 1.
    ///
    /// ```
    /// use chainrule::data::{Dataset, Target};
    /// use chainrule::Tensor;
    /// let d = Dataset::new(Tensor::<f32>::zeros(&[10, 1]), Target::Classes(vec![0; 10]))?;
    /// let (train, val) = d.split(0.2, 0)?;
    /// assert_eq!((train.len(), val.len()), (8, 2));
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn split(&self, fraction: f64, seed: u64) -> Result<(Dataset<F>, Dataset<F>)> {
        if !(0.0..1.0).contains(&fraction) {
            return Err(invalid(
                "validation_split",
                format!("must be in [0, 1), got {fraction}"),
            ));
        }
        let mut order: Vec<usize> = (0..self.len()).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        let validation = (fraction * self.len() as f64).round() as usize;
        let (train, val) = order.split_at(self.len() - validation);
        Ok((self.rows(train)?, self.rows(val)?))
    }
}

/// The order in which a loader visits rows: batches of `batch_size`, in file order or
/// reshuffled every epoch from `seed` and the epoch number, the last batch kept
/// smaller or dropped (PyTorch `DataLoader`'s `shuffle` and `drop_last`).
///
/// ```
/// use chainrule::data::Batches;
/// let b = Batches { rows: 5, batch_size: 2, shuffle: false, seed: 0, drop_last: false };
/// assert_eq!(b.epoch(0), vec![vec![0, 1], vec![2, 3], vec![4]]);
/// let dropped = Batches { drop_last: true, ..b };
/// assert_eq!(dropped.epoch(0).len(), 2);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batches {
    /// Rows in the data set.
    pub rows: usize,
    /// Rows per batch (at least 1).
    pub batch_size: usize,
    /// Reshuffle every epoch.
    pub shuffle: bool,
    /// Seed of the shuffling.
    pub seed: u64,
    /// Drop a last batch smaller than `batch_size`.
    pub drop_last: bool,
}

impl Batches {
    /// The number of batches in every epoch.
    ///
    /// ```
    /// use chainrule::data::Batches;
    /// let b = Batches { rows: 10, batch_size: 4, shuffle: true, seed: 0, drop_last: false };
    /// assert_eq!(b.count(), 3);
    /// assert_eq!(Batches { drop_last: true, ..b }.count(), 2);
    /// ```
    pub fn count(&self) -> usize {
        let size = self.batch_size.max(1);
        if self.drop_last {
            self.rows / size
        } else {
            self.rows.div_ceil(size)
        }
    }

    /// The batches of `epoch`, as row indices.
    ///
    /// ```
    /// use chainrule::data::Batches;
    /// let b = Batches { rows: 100, batch_size: 10, shuffle: true, seed: 3, drop_last: false };
    /// assert_eq!(b.epoch(1), b.epoch(1));      // reproducible
    /// assert_ne!(b.epoch(1), b.epoch(2));      // reshuffled each epoch
    /// let mut seen: Vec<usize> = b.epoch(1).concat();
    /// seen.sort();
    /// assert_eq!(seen, (0..100).collect::<Vec<_>>());
    /// ```
    pub fn epoch(&self, epoch: usize) -> Vec<Vec<usize>> {
        let mut order: Vec<usize> = (0..self.rows).collect();
        if self.shuffle {
            order.shuffle(&mut ChaCha8Rng::seed_from_u64(
                self.seed.wrapping_add(epoch as u64),
            ));
        }
        order
            .chunks(self.batch_size.max(1))
            .filter(|chunk| !self.drop_last || chunk.len() == self.batch_size)
            .map(<[usize]>::to_vec)
            .collect()
    }
}
