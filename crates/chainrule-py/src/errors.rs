//! The library's typed errors as Python exceptions.
//!
//! The exception classes live in Python (`chainrule/errors.py`), where a class can
//! derive from two bases: `chainrule.ShapeError` is both a `chainrule.Error` and a
//! `ValueError`, `chainrule.FileNotFoundError` both a `chainrule.Error` and the
//! built-in `FileNotFoundError`. The message is the library's one line, unchanged.

use chainrule::Error;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

/// The exception `chainrule.errors.<class>(message)`.
pub(crate) fn raise(class: &str, message: String) -> PyErr {
    Python::attach(|py| {
        let made = py
            .import("chainrule.errors")
            .and_then(|m| m.getattr(class))
            .and_then(|c| c.call1((message.clone(),)));
        match made {
            Ok(instance) => PyErr::from_value(instance),
            // The package's Python half is missing (the native module imported on
            // its own): still an exception with the same message.
            Err(_) => PyRuntimeError::new_err(message),
        }
    })
}

/// The exception class of a library error.
fn class_of(e: &Error) -> &'static str {
    match e {
        Error::Broadcast { .. }
        | Error::Shape { .. }
        | Error::ElementCount { .. }
        | Error::Axis { .. }
        | Error::Index { .. } => "ShapeError",
        Error::Io { message, .. }
            if message.contains("os error 2") || message.contains("No such file") =>
        {
            "FileNotFoundError"
        }
        Error::Io { .. } => "IOError",
        Error::Format { .. } => "FormatError",
        Error::NonFinite { .. } => "NonFiniteError",
        Error::InvalidValue { .. } => "InvalidValueError",
        _ => "Error",
    }
}

/// A library error as the matching `chainrule` exception.
pub(crate) fn to_py(e: Error) -> PyErr {
    raise(class_of(&e), e.to_string())
}

/// `chainrule.InvalidValueError` for `field`.
pub(crate) fn invalid(field: &str, message: impl std::fmt::Display) -> PyErr {
    raise("InvalidValueError", format!("{field}: {message}"))
}

/// Converts library results.
pub(crate) trait OrPy<T> {
    /// The result, its error as a Python exception.
    fn py(self) -> PyResult<T>;
    /// The result, its error prefixed with `what` (a file, an argument).
    fn py_in(self, what: &str) -> PyResult<T>;
}

impl<T> OrPy<T> for chainrule::Result<T> {
    fn py(self) -> PyResult<T> {
        self.map_err(to_py)
    }

    fn py_in(self, what: &str) -> PyResult<T> {
        self.map_err(|e| match e {
            // These already name their file.
            Error::Io { .. } | Error::Format { .. } => to_py(e),
            other => raise(class_of(&other), format!("{what}: {other}")),
        })
    }
}
