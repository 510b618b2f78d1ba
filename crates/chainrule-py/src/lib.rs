//! # chainrule-py
//!
//! The native half of the `chainrule` Python package (`chainrule._chainrule`): a
//! thin layer of conversions between NumPy arrays and the library's tensors, and of
//! the library's typed errors into Python exceptions. Everything it computes is
//! computed by `chainrule` and `chainrule-explain`; the Python half
//! (`python/chainrule/`) gives it PyTorch's API shape and Jupyter's displays.
//!
//! Its functions are documented for Python users in the docstrings of
//! `python/chainrule/__init__.py` and in the stubs `python/chainrule/_chainrule.pyi`.
//!
//! Every entry point runs inside [`guard`]: a Rust panic becomes
//! `chainrule.InternalError` (a `chainrule.Error`), never an abort.
#![warn(missing_docs)]

mod convert;
mod errors;
mod explain;
mod model;

use pyo3::prelude::*;

/// Runs `f`, turning a panic into `chainrule.InternalError` with the panic's message.
///
/// PyO3 alone would raise `pyo3_runtime.PanicException`, which derives from
/// `BaseException` and so escapes `except Exception:`; a `chainrule.Error` is caught
/// where users catch the library's other errors.
pub(crate) fn guard<T>(f: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(errors::raise(
                "InternalError",
                format!("internal error (a bug in chainrule, please report it): {message}"),
            ))
        }
    }
}

/// A hook for the test suite only: panics inside [`guard`], so that a test can see a
/// panic arrive as `chainrule.InternalError`.
#[pyfunction]
fn _panic_for_tests(message: &str) -> PyResult<()> {
    guard(|| panic!("{message}"))
}

/// The extension module `chainrule._chainrule`.
#[pymodule]
fn _chainrule(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<model::Model>()?;
    m.add_function(wrap_pyfunction!(_panic_for_tests, m)?)?;
    m.add_function(wrap_pyfunction!(convert::_copied_outputs_for_tests, m)?)?;
    explain::register(m)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
