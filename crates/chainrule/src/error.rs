//! The library's one error type.

use thiserror::Error;

/// Everything that can go wrong in the `chainrule` library.
///
/// Variants are grouped by category and carry the operation, file or field at fault
/// together with the expected and actual shapes or values, so that a caller can print
/// one line that names the problem.
///
/// ```
/// use chainrule::{Error, Tensor};
/// let a = Tensor::<f64>::zeros(&[2, 3]);
/// let b = Tensor::<f64>::zeros(&[4]);
/// let err = a.add(&b).unwrap_err();
/// assert!(matches!(err, Error::Broadcast { .. }));
/// assert_eq!(err.to_string(), "add: shapes [2, 3] and [4] do not broadcast");
/// ```
#[derive(Debug, Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum Error {
    // --- shapes -----------------------------------------------------------------
    /// Two shapes are not compatible under NumPy broadcasting.
    #[error("{op}: shapes {lhs:?} and {rhs:?} do not broadcast")]
    Broadcast {
        /// The operation that broadcast.
        op: &'static str,
        /// Shape of the left operand.
        lhs: Vec<usize>,
        /// Shape of the right operand.
        rhs: Vec<usize>,
    },
    /// An operation got an operand of a shape it cannot take.
    #[error("{op}: {message} (got shape {got:?})")]
    Shape {
        /// The operation.
        op: &'static str,
        /// What was expected.
        message: String,
        /// The offending shape.
        got: Vec<usize>,
    },
    /// A data buffer does not hold as many elements as its shape says.
    #[error("shape {shape:?} needs {expected} elements but {got} were given")]
    ElementCount {
        /// The requested shape.
        shape: Vec<usize>,
        /// Elements the shape needs.
        expected: usize,
        /// Elements supplied.
        got: usize,
    },
    /// An axis is out of range for a tensor's rank.
    #[error("{op}: axis {axis} is out of range for a tensor of rank {rank}")]
    Axis {
        /// The operation.
        op: &'static str,
        /// The axis asked for.
        axis: usize,
        /// The tensor's rank.
        rank: usize,
    },
    /// An index (a row, a class) is out of range.
    #[error("{op}: index {index} is out of range for a dimension of size {len}")]
    Index {
        /// The operation.
        op: &'static str,
        /// The index.
        index: usize,
        /// The dimension's size.
        len: usize,
    },

    // --- autodiff ---------------------------------------------------------------
    /// `backward` was called on a value that is not a single number.
    #[error("backward needs a scalar (one element), got shape {shape:?}")]
    NonScalarBackward {
        /// Shape of the value backward was called on.
        shape: Vec<usize>,
    },
    /// Values from two different tapes were combined.
    #[error("{op}: operands come from different tapes")]
    ForeignTape {
        /// The operation.
        op: &'static str,
    },

    // --- files ------------------------------------------------------------------
    /// A file could not be read or written.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: String,
        /// What the operating system said.
        message: String,
    },
    /// A file's contents are not what its format requires.
    #[error("{path}: {message}")]
    Format {
        /// The file (or a description of the buffer).
        path: String,
        /// What is wrong, and where.
        message: String,
    },

    // --- training ---------------------------------------------------------------
    /// A non-finite loss or gradient appeared during training.
    #[error("non-finite values at epoch {epoch}, batch {batch} (step {step}): {location}")]
    NonFinite {
        /// The epoch, from 1.
        epoch: usize,
        /// The batch within the epoch, from 1.
        batch: usize,
        /// The optimizer step, from 1.
        step: usize,
        /// Where they first appear: a parameter, an operation's output, or a gradient.
        location: String,
    },

    // --- values -----------------------------------------------------------------
    /// A number is outside the range where it means something.
    #[error("{field}: {message}")]
    InvalidValue {
        /// The field or argument at fault.
        field: String,
        /// Why the value is rejected.
        message: String,
    },
}

/// `Result` with the library's [`enum@Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// [`Error::InvalidValue`] for `field`: the builder every module uses for a value
/// out of range, a missing or unknown field, or a wrong JSON type.
pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Error {
    Error::InvalidValue {
        field: field.into(),
        message: message.into(),
    }
}

/// The candidate nearest to `name` by edit distance (insertions, deletions,
/// substitutions), if one is near enough to be a misspelling of it: at most a third
/// of the name's length away (and at least 1). What "did you mean …?" hints use.
///
/// ```
/// use chainrule::nearest_name;
/// let fields = ["lr", "momentum", "dampening", "nesterov", "weight_decay"];
/// assert_eq!(nearest_name("momentom", &fields), Some("momentum"));
/// assert_eq!(nearest_name("weightdecay", &fields), Some("weight_decay"));
/// assert_eq!(nearest_name("colour", &fields), None);
/// ```
pub fn nearest_name<'a>(name: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let distance = |a: &str, b: &str| {
        let b: Vec<char> = b.chars().collect();
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut previous = row[0];
            row[0] = i + 1;
            for (j, &cb) in b.iter().enumerate() {
                let substitution = previous + usize::from(ca != cb);
                previous = row[j + 1];
                row[j + 1] = substitution.min(row[j] + 1).min(previous + 1);
            }
        }
        row[b.len()]
    };
    let limit = (name.chars().count() / 3).max(1);
    candidates
        .iter()
        .map(|c| (distance(name, c), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}
