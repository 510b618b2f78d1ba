//! NumPy arrays in and out.
//!
//! Arrays come in as float32/float64 (inputs, parameters, targets) or int32/int64
//! (class indices); the Python half has already turned lists and torch tensors into
//! arrays. They are read in logical (C) order whatever their strides, so a
//! Fortran-ordered or sliced array reads as NumPy shows it.

use crate::errors::{OrPy, invalid};
use chainrule::data::Target;
use chainrule::io::NpyArray;
use chainrule::loss::Loss;
use chainrule::nn::Sequential;
use chainrule::{Float, Tensor};
use numpy::{PyArray1, PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::collections::BTreeMap;

/// A NumPy array as an [`NpyArray`] (the library's typed array, as `.npy` files give it).
pub(crate) fn npy(array: &Bound<'_, PyAny>, name: &str) -> PyResult<NpyArray> {
    fn read<T: numpy::Element + Copy>(a: &PyReadonlyArrayDyn<'_, T>) -> (Vec<usize>, Vec<T>) {
        (a.shape().to_vec(), a.as_array().iter().copied().collect())
    }
    if let Ok(a) = array.extract::<PyReadonlyArrayDyn<'_, f64>>() {
        let (s, v) = read(&a);
        return Ok(NpyArray::F64(s, v));
    }
    if let Ok(a) = array.extract::<PyReadonlyArrayDyn<'_, f32>>() {
        let (s, v) = read(&a);
        return Ok(NpyArray::F32(s, v));
    }
    if let Ok(a) = array.extract::<PyReadonlyArrayDyn<'_, i64>>() {
        let (s, v) = read(&a);
        return Ok(NpyArray::I64(s, v));
    }
    if let Ok(a) = array.extract::<PyReadonlyArrayDyn<'_, i32>>() {
        let (s, v) = read(&a);
        return Ok(NpyArray::I32(s, v));
    }
    let dtype = array
        .getattr("dtype")
        .map(|d| d.to_string())
        .unwrap_or_else(|_| array.get_type().to_string());
    Err(invalid(
        name,
        format!("dtype {dtype} is not allowed (float32, float64, int32 or int64)"),
    ))
}

/// A float array (inputs, parameters) as a tensor of `F`, finite.
pub(crate) fn tensor<F: Float>(array: &Bound<'_, PyAny>, name: &str) -> PyResult<Tensor<F>> {
    let a = npy(array, name)?;
    if !a.is_float() {
        return Err(invalid(
            name,
            format!(
                "dtype {} is not allowed (must be float32 or float64)",
                a.dtype()
            ),
        ));
    }
    let t = a.to_tensor::<F>().py_in(name)?;
    if !t.all_finite() {
        return Err(invalid(name, "holds a non-finite number"));
    }
    Ok(t)
}

/// A tensor as a NumPy array of its dtype.
pub(crate) fn array<'py, F: Float + numpy::Element>(
    py: Python<'py>,
    t: &Tensor<F>,
) -> PyResult<Bound<'py, PyAny>> {
    let flat = PyArray1::from_vec(py, t.to_vec());
    Ok(flat.reshape(t.shape())?.into_any())
}

/// `x` checked against the model, and `y` read as the loss's targets.
pub(crate) fn batch<F: Float>(
    model: &Sequential<F>,
    (x, x_name): (&Bound<'_, PyAny>, &str),
    (y, y_name): (&Bound<'_, PyAny>, &str),
    loss: Loss,
) -> PyResult<(Tensor<F>, Target<F>)> {
    let x = tensor::<F>(x, x_name)?;
    model.check_input(&x).py_in(x_name)?;
    let outputs = model.output_features().unwrap_or(x.shape()[1]);
    let y = npy(y, y_name)?;
    if y.is_float() {
        let finite = match &y {
            NpyArray::F64(_, v) => v.iter().all(|v| v.is_finite()),
            NpyArray::F32(_, v) => v.iter().all(|v| v.is_finite()),
            _ => true,
        };
        if !finite {
            return Err(invalid(y_name, "holds a non-finite number"));
        }
    }
    let target = Target::from_npy(&y, loss, x.shape()[0], outputs).py_in(y_name)?;
    Ok((x, target))
}

/// Named tensors from a dict of arrays.
pub(crate) fn named<F: Float>(dict: &Bound<'_, PyDict>) -> PyResult<BTreeMap<String, Tensor<F>>> {
    let mut out = BTreeMap::new();
    for (k, v) in dict.iter() {
        let name: String = k.extract()?;
        let t = tensor::<F>(&v, &name)?;
        out.insert(name, t);
    }
    Ok(out)
}

/// A dict of arrays from named tensors.
pub(crate) fn dict<'py, F: Float + numpy::Element>(
    py: Python<'py>,
    named: impl IntoIterator<Item = (String, Tensor<F>)>,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (k, v) in named {
        d.set_item(k, array(py, &v)?)?;
    }
    Ok(d)
}

/// The loss named `name`.
pub(crate) fn loss(name: &str) -> PyResult<Loss> {
    Loss::from_name(name).py()
}
