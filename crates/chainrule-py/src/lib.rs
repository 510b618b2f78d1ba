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
//! `chainrule.InternalError` (a `chainrule.Error`), never an abort. Every one that
//! does real work does it in [`released`], without the GIL.
#![warn(missing_docs)]

mod convert;
mod errors;
mod explain;
mod model;

use pyo3::marker::Ungil;
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

/// Runs `f` with the GIL released, so that other Python threads run while chainrule
/// computes: every entry point that does real work runs it here (inputs already read
/// or borrowed, results turned into Python objects afterwards). `f` may take the GIL
/// back itself (`Python::attach`), as `fit`'s listener does and as an error's
/// construction does. tests/test_threads.py checks, call by call, that another
/// thread runs meanwhile.
pub(crate) fn released<T: Ungil>(py: Python<'_>, f: impl Ungil + FnOnce() -> T) -> T {
    py.detach(f)
}

/// The fewest elements for which a conversion (an array read into a tensor, a model
/// cast to f64, parameters copied out) runs in [`released`]: below it, the pass takes
/// less than releasing the GIL costs, and taking the GIL back may wait for another
/// thread for up to the interpreter's switch interval (5 ms); NumPy likewise keeps the
/// GIL for small arrays. Above it, the pass runs without the GIL.
const RELEASE_FROM: usize = 1 << 16;

/// Runs `f`, a pass over `elements` elements, in [`released`] when they are
/// [`RELEASE_FROM`] or more, else with the GIL held.
pub(crate) fn released_for<T: Ungil>(
    py: Python<'_>,
    elements: usize,
    f: impl Ungil + FnOnce() -> T,
) -> T {
    if elements >= RELEASE_FROM {
        released(py, f)
    } else {
        f()
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
    m.add_function(wrap_pyfunction!(convert::_converted_inputs_for_tests, m)?)?;
    explain::register(m)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
