//! NumPy arrays in and out, with as few copies as the library's types allow.
//!
//! **In: exactly one copy.** A [`Tensor`] owns its storage (an `ndarray::ArcArray`
//! that it may share with its clones, never with NumPy), so an input array is copied
//! once, into the tensor, and never again: a C-contiguous array of the model's dtype
//! by one `memcpy` of its buffer; any other layout (Fortran order, a slice with
//! strides) or dtype (the other float, an integer type) by one pass that reads it in
//! logical (C) order, as NumPy shows it, converting each element. Class indices go
//! the same way, in one pass, into the library's index list. `Sequential`'s methods
//! in the Python half add no copy of a NumPy array (they make arrays of lists and of
//! torch tensors, a CPU tensor's without a copy, and cast only bools); `gradcheck`
//! makes its own float64 copies, which it hands to PyTorch too.
//!
//! **Out: no copy.** A tensor that holds its storage alone (predictions, gradients,
//! traces) hands it to NumPy as the array's buffer: the array's `base` is the Rust
//! allocation, freed when NumPy drops the array. A tensor whose storage the model
//! still holds (a parameter, in `state_dict`) is copied once, so that writing to the
//! array cannot change the model behind the library's back.

use crate::errors::{OrPy, invalid};
use chainrule::data::Target;
use chainrule::loss::Loss;
use chainrule::nn::Sequential;
use chainrule::{Float, Tensor};
use numpy::{
    Element, PyArray, PyArrayDescrMethods, PyReadonlyArrayDyn, PyUntypedArray,
    PyUntypedArrayMethods,
};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

/// An element type that inputs and targets may have, read as a number.
trait Number: Element + Copy {
    /// The value as an f64 (exact for every type but the widest integers).
    fn to_f64(self) -> f64;
    /// The value as a class index (u64 beyond i64's range saturates, and is then
    /// reported out of range).
    fn to_index(self) -> i64;
}

macro_rules! numbers {
    ($($t:ty),*) => {
        $(impl Number for $t {
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn to_index(self) -> i64 {
                i64::try_from(self as i128).unwrap_or(i64::MAX)
            }
        })*
    };
}
numbers!(f32, f64, i8, i16, i32, i64, u8, u16, u32, u64);

/// Calls `$read(array)` with the array borrowed as the first element type in the
/// list that it has; `None` when it has none of them.
macro_rules! by_dtype {
    ($array:expr, $read:expr, [$($t:ty),*]) => {{
        let array = $array;
        $(if let Ok(a) = array.extract::<PyReadonlyArrayDyn<'_, $t>>() {
            Some($read(a))
        } else)* {
            None
        }
    }};
}

/// The allowed dtypes, for messages.
const NUMBER_DTYPES: &str = "float32, float64 or an integer type";

/// The dtype of `array` as NumPy names it.
fn dtype_name(array: &Bound<'_, PyAny>) -> String {
    array
        .getattr("dtype")
        .map(|d| d.to_string())
        .unwrap_or_else(|_| array.get_type().to_string())
}

/// The array's elements converted to `F`, in logical order: one pass, one copy.
fn convert<T: Number, F: Float>(a: PyReadonlyArrayDyn<'_, T>) -> chainrule::Result<Tensor<F>> {
    let values = a
        .as_array()
        .iter()
        .map(|&v| F::from_f64(v.to_f64()))
        .collect();
    Tensor::from_vec(values, a.shape())
}

/// The array's elements, already of dtype `F`: one `memcpy` when they are stored in
/// C order, else one pass in logical order.
fn copy<F: Float + Element>(a: PyReadonlyArrayDyn<'_, F>) -> chainrule::Result<Tensor<F>> {
    let view = a.as_array();
    // ndarray's `as_slice` is C order only; numpy's would also accept Fortran order,
    // whose buffer is not in logical order.
    let values = match view.as_slice() {
        Some(contiguous) => contiguous.to_vec(),
        None => view.iter().copied().collect(),
    };
    Tensor::from_vec(values, a.shape())
}

/// An input array (inputs, parameters, float targets) as a tensor of `F`, finite,
/// copied once (see the module's documentation).
pub(crate) fn tensor<F: Float + Element>(
    array: &Bound<'_, PyAny>,
    name: &str,
) -> PyResult<Tensor<F>> {
    let read = match array.extract::<PyReadonlyArrayDyn<'_, F>>() {
        Ok(same) => copy(same),
        Err(_) => by_dtype!(
            array,
            convert::<_, F>,
            [f64, f32, i64, i32, i16, i8, u64, u32, u16, u8]
        )
        .ok_or_else(|| {
            invalid(
                name,
                format!(
                    "dtype {} is not allowed ({NUMBER_DTYPES})",
                    dtype_name(array)
                ),
            )
        })?,
    };
    let t = read.py_in(name)?;
    if !t.all_finite() {
        return Err(invalid(name, "holds a non-finite number"));
    }
    Ok(t)
}

/// Counts the output tensors that [`array`] had to copy (their storage was shared),
/// for the test suite's proof that results move to NumPy without one.
static COPIED_OUTPUTS: AtomicUsize = AtomicUsize::new(0);

/// A tensor as a NumPy array of its dtype and shape, owning the tensor's storage
/// (moved when the tensor holds it alone, else copied once; see the module's
/// documentation).
pub(crate) fn array<'py, F: Float + Element>(
    py: Python<'py>,
    t: Tensor<F>,
) -> PyResult<Bound<'py, PyAny>> {
    let storage = t.view().as_ptr();
    let owned = t.into_array();
    if owned.as_ptr() != storage {
        COPIED_OUTPUTS.fetch_add(1, Ordering::Relaxed);
    }
    Ok(PyArray::from_owned_array(py, owned).into_any())
}

/// A hook for the test suite only: how many output tensors [`array`] has copied
/// since the module was loaded.
#[pyfunction]
pub(crate) fn _copied_outputs_for_tests() -> usize {
    COPIED_OUTPUTS.load(Ordering::Relaxed)
}

/// `y` read as `loss`'s targets for `rows` samples and `outputs` outputs, copied
/// once: float values as a tensor, integers as class indices.
fn targets<F: Float + Element>(
    y: &Bound<'_, PyAny>,
    y_name: &str,
    loss: Loss,
    rows: usize,
    outputs: usize,
) -> PyResult<Target<F>> {
    let is_float = y
        .cast::<PyUntypedArray>()
        .is_ok_and(|a| a.dtype().kind() == b'f');
    if is_float {
        let values = tensor::<F>(y, y_name)?;
        return Target::from_values(values, rows, outputs).py_in(y_name);
    }
    let dtype = dtype_name(y);
    let read = by_dtype!(
        y,
        |a| class_indices(a, &dtype, loss, rows, outputs),
        [i64, i32, i16, i8, u64, u32, u16, u8]
    );
    read.ok_or_else(|| {
        invalid(
            y_name,
            format!("dtype {dtype} is not allowed ({NUMBER_DTYPES})"),
        )
    })?
    .py_in(y_name)
}

/// Integer targets as class indices, converted in one pass.
fn class_indices<T: Number, F: Float>(
    a: PyReadonlyArrayDyn<'_, T>,
    dtype: &str,
    loss: Loss,
    rows: usize,
    outputs: usize,
) -> chainrule::Result<Target<F>> {
    let view = a.as_array();
    let indices = view.iter().map(|&c| c.to_index());
    Target::from_class_indices(dtype, a.shape(), indices, loss, rows, outputs)
}

/// `x` checked against the model, and `y` read as the loss's targets.
pub(crate) fn batch<F: Float + Element>(
    model: &Sequential<F>,
    (x, x_name): (&Bound<'_, PyAny>, &str),
    (y, y_name): (&Bound<'_, PyAny>, &str),
    loss: Loss,
) -> PyResult<(Tensor<F>, Target<F>)> {
    let x = tensor::<F>(x, x_name)?;
    model.check_input(&x).py_in(x_name)?;
    let outputs = model.output_features().unwrap_or(x.shape()[1]);
    let target = targets(y, y_name, loss, x.shape()[0], outputs)?;
    Ok((x, target))
}

/// Named tensors from a dict of arrays.
pub(crate) fn named<F: Float + Element>(
    dict: &Bound<'_, PyDict>,
) -> PyResult<BTreeMap<String, Tensor<F>>> {
    let mut out = BTreeMap::new();
    for (k, v) in dict.iter() {
        let name: String = k.extract()?;
        let t = tensor::<F>(&v, &name)?;
        out.insert(name, t);
    }
    Ok(out)
}

/// A dict of arrays from named tensors.
pub(crate) fn dict<'py, F: Float + Element>(
    py: Python<'py>,
    named: impl IntoIterator<Item = (String, Tensor<F>)>,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (k, v) in named {
        d.set_item(k, array(py, v)?)?;
    }
    Ok(d)
}

/// The loss named `name`.
pub(crate) fn loss(name: &str) -> PyResult<Loss> {
    Loss::from_name(name).py()
}
