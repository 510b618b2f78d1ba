//! NumPy arrays in and out, with as few copies as the library's types allow.
//!
//! **Inputs (`x` of fit, predict, evaluate and grad): read in place when the layout
//! allows.** A C-contiguous array of the model's dtype is lent to the library for the
//! duration of the call ([`Input::Lent`]: rust-numpy's read-only borrow, held while
//! the GIL is released) and read in place: the library takes its batches from it
//! (`chainrule::data::Inputs` for an `ndarray` view), and a batch copies only its
//! own rows, as a shuffled batch gathers its rows from a tensor. No copy of the whole
//! array is made before batching (fit's batches, predict's and evaluate's passes of a
//! thousand rows); grad's one batch is the whole of `x`, so its rows are copied once,
//! as that batch. Any other layout (Fortran order, a slice with strides) or dtype (the
//! other float, an integer type) is converted once, in one pass that reads it in
//! logical (C) order, as NumPy shows it ([`Input::Converted`]), and its batches then
//! come from that tensor. Writing to a lent array from another thread while the call
//! runs gives undefined numbers, as with NumPy's own functions that release the GIL.
//!
//! **Everything else in: one copy.** Targets, parameters, and the inputs of the
//! explanations (which work in f64 on at most a few dozen samples) become tensors
//! that own their storage: a C-contiguous array of the right dtype by one `memcpy`,
//! any other by one converting pass. Class indices go the same way, in one pass, into
//! the library's index list. Conversions of large arrays (`crate::released_for`) run
//! with the GIL released too.
//! `Sequential`'s methods in the Python half add no copy of a NumPy array (they make
//! arrays of lists and of torch tensors, a CPU tensor's without a copy, and cast only
//! bools, and copy an array whose memory is not aligned for its dtype); `gradcheck`
//! makes its own float64 copies, which it hands to PyTorch too.
//!
//! **Out: no copy.** A tensor that holds its storage alone (predictions, gradients,
//! traces) hands it to NumPy as the array's buffer: the array's `base` is the Rust
//! allocation, freed when NumPy drops the array. A tensor whose storage the model
//! still holds (a parameter, in `state_dict`) is copied once, so that writing to the
//! array cannot change the model behind the library's back.

use crate::errors::{OrPy, invalid};
use crate::released_for;
use chainrule::data::{Inputs, Target};
use chainrule::loss::Loss;
use chainrule::nn::Sequential;
use chainrule::{Float, Tensor};
use numpy::ndarray::{ArrayD, ArrayViewD};
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

/// `values` as a tensor of `shape`, checked finite.
fn finite_tensor<F: Float>(
    values: Vec<F>,
    shape: &[usize],
    name: &str,
) -> chainrule::Result<Tensor<F>> {
    let t = Tensor::from_vec(values, shape)?;
    if t.all_finite() {
        Ok(t)
    } else {
        Err(non_finite(name))
    }
}

/// The array's elements converted to `F`, in logical order, and checked finite: one
/// pass, one copy, without the GIL for a large array.
fn convert<T: Number, F: Float>(
    py: Python<'_>,
    a: PyReadonlyArrayDyn<'_, T>,
    name: &str,
) -> chainrule::Result<Tensor<F>> {
    let view = a.as_array();
    released_for(py, view.len(), || {
        let values = view.iter().map(|&v| F::from_f64(v.to_f64())).collect();
        finite_tensor(values, view.shape(), name)
    })
}

/// The array's elements, already of dtype `F`, checked finite: one `memcpy` when they
/// are stored in C order, else one pass in logical order; without the GIL for a
/// large array.
fn copy<F: Float + Element>(
    py: Python<'_>,
    a: PyReadonlyArrayDyn<'_, F>,
    name: &str,
) -> chainrule::Result<Tensor<F>> {
    let view = a.as_array();
    released_for(py, view.len(), || {
        // ndarray's `as_slice` is C order only; numpy's would also accept Fortran
        // order, whose buffer is not in logical order.
        let values = match view.as_slice() {
            Some(contiguous) => contiguous.to_vec(),
            None => view.iter().copied().collect(),
        };
        finite_tensor(values, view.shape(), name)
    })
}

/// The error for an array that holds NaN or an infinity.
fn non_finite(name: &str) -> chainrule::Error {
    chainrule::Error::InvalidValue {
        field: name.into(),
        message: "holds a non-finite number".into(),
    }
}

/// An array (targets, parameters, the explanations' inputs, inputs that cannot be
/// lent) as a tensor of `F`, finite, copied once (see the module's documentation).
pub(crate) fn tensor<F: Float + Element>(
    array: &Bound<'_, PyAny>,
    name: &str,
) -> PyResult<Tensor<F>> {
    let py = array.py();
    let read = match array.extract::<PyReadonlyArrayDyn<'_, F>>() {
        Ok(same) => copy(py, same, name),
        Err(_) => by_dtype!(
            array,
            |a| convert::<_, F>(py, a, name),
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
    match read {
        Ok(t) => Ok(t),
        // Names the array already.
        Err(e @ chainrule::Error::InvalidValue { .. }) => Err(crate::errors::to_py(e)),
        Err(e) => Err::<Tensor<F>, _>(e).py_in(name),
    }
}

/// Counts the input arrays that [`input`] had to convert (their layout or dtype did
/// not allow reading them in place), for the test suite's proof that the others are
/// read without a copy.
static CONVERTED_INPUTS: AtomicUsize = AtomicUsize::new(0);

/// A hook for the test suite only: how many input arrays [`input`] has converted
/// since the module was loaded.
#[pyfunction]
pub(crate) fn _converted_inputs_for_tests() -> usize {
    CONVERTED_INPUTS.load(Ordering::Relaxed)
}

/// The inputs `x` of fit, predict, evaluate or grad, for a model of dtype `F`.
pub(crate) enum Input<'py, F: Float + Element> {
    /// A C-contiguous array of dtype `F`, borrowed read-only for the call and read in
    /// place.
    Lent(PyReadonlyArrayDyn<'py, F>),
    /// Any other array, converted once (and checked finite).
    Converted(Tensor<F>),
}

/// `array` as inputs for a model of dtype `F`: lent when it is C-contiguous of dtype
/// `F`, else converted once (see the module's documentation).
pub(crate) fn input<'py, F: Float + Element>(
    array: &Bound<'py, PyAny>,
    name: &str,
) -> PyResult<Input<'py, F>> {
    if let Ok(lent) = array.extract::<PyReadonlyArrayDyn<'py, F>>()
        && lent.is_c_contiguous()
    {
        return Ok(Input::Lent(lent));
    }
    CONVERTED_INPUTS.fetch_add(1, Ordering::Relaxed);
    Ok(Input::Converted(tensor::<F>(array, name)?))
}

impl<'py, F: Float + Element> Input<'py, F> {
    /// The inputs without their Python half, for the code that runs without the GIL.
    pub(crate) fn rows(&self) -> Rows<'_, F> {
        match self {
            Input::Lent(a) => Rows::Lent(a.as_array()),
            Input::Converted(t) => Rows::Converted(t),
        }
    }
}

/// An [`Input`]'s rows, which batches take (`chainrule::data::Inputs`): a lent array's
/// buffer, or the tensor it was converted into. Can cross into code that runs with
/// the GIL released.
#[derive(Clone)]
pub(crate) enum Rows<'a, F: Float> {
    /// A lent array, read in place: batches copy their rows out of it.
    Lent(ArrayViewD<'a, F>),
    /// A converted array: batches of consecutive rows share its storage.
    Converted(&'a Tensor<F>),
}

impl<F: Float> Inputs<F> for Rows<'_, F> {
    fn shape(&self) -> &[usize] {
        match self {
            Rows::Lent(v) => v.shape(),
            Rows::Converted(t) => t.shape(),
        }
    }

    fn narrow_rows(&self, start: usize, len: usize) -> chainrule::Result<Tensor<F>> {
        match self {
            Rows::Lent(v) => v.narrow_rows(start, len),
            Rows::Converted(t) => t.narrow_rows(start, len),
        }
    }

    fn select_rows(&self, indices: &[usize]) -> chainrule::Result<Tensor<F>> {
        match self {
            Rows::Lent(v) => Inputs::select_rows(v, indices),
            Rows::Converted(t) => Inputs::select_rows(*t, indices),
        }
    }
}

impl<F: Float> Rows<'_, F> {
    /// Checks that a lent array is finite (a converted one was checked as it was
    /// read): one pass over the lent memory, to be run without the GIL.
    pub(crate) fn check_finite(&self, name: &str) -> chainrule::Result<()> {
        let finite = match self {
            Rows::Lent(v) => match v.as_slice() {
                Some(values) => chainrule::tensor::all_finite(values),
                None => v.iter().all(|x| x.is_finite()),
            },
            Rows::Converted(_) => true,
        };
        if finite {
            Ok(())
        } else {
            Err(non_finite(name))
        }
    }

    /// Every row as one tensor (grad's one batch): a lent array's rows copied, a
    /// converted array's tensor shared.
    pub(crate) fn all(&self) -> chainrule::Result<Tensor<F>> {
        self.narrow_rows(0, self.shape()[0])
    }
}

/// Counts the output tensors that [`array`] had to copy (their storage was shared),
/// for the test suite's proof that results move to NumPy without one.
static COPIED_OUTPUTS: AtomicUsize = AtomicUsize::new(0);

/// A tensor as an owned ndarray array, keeping its storage (moved when the tensor
/// holds it alone, else copied once; see the module's documentation). Needs no GIL.
pub(crate) fn owned<F: Float>(t: Tensor<F>) -> ArrayD<F> {
    let storage = t.view().as_ptr();
    let owned = t.into_array();
    if owned.as_ptr() != storage {
        COPIED_OUTPUTS.fetch_add(1, Ordering::Relaxed);
    }
    owned
}

/// A tensor as a NumPy array of its dtype and shape, owning the tensor's storage
/// (see [`owned`]).
pub(crate) fn array<'py, F: Float + Element>(
    py: Python<'py>,
    t: Tensor<F>,
) -> PyResult<Bound<'py, PyAny>> {
    Ok(PyArray::from_owned_array(py, owned(t)).into_any())
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
    let py = y.py();
    let read = by_dtype!(
        y,
        |a| class_indices(py, a, &dtype, loss, rows, outputs),
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

/// Integer targets as class indices, converted in one pass with the GIL released.
fn class_indices<T: Number, F: Float>(
    py: Python<'_>,
    a: PyReadonlyArrayDyn<'_, T>,
    dtype: &str,
    loss: Loss,
    rows: usize,
    outputs: usize,
) -> chainrule::Result<Target<F>> {
    let view = a.as_array();
    released_for(py, view.len(), || {
        let indices = view.iter().map(|&c| c.to_index());
        Target::from_class_indices(dtype, view.shape(), indices, loss, rows, outputs)
    })
}

/// `y` read as `loss`'s targets for the inputs `x` of `model`, which it checks.
fn targets_for<F: Float + Element, X: Inputs<F> + ?Sized>(
    model: &Sequential<F>,
    (x, x_name): (&X, &str),
    (y, y_name): (&Bound<'_, PyAny>, &str),
    loss: Loss,
) -> PyResult<Target<F>> {
    model.check_input(x).py_in(x_name)?;
    let outputs = model.output_features().unwrap_or(x.shape()[1]);
    targets(y, y_name, loss, x.shape()[0], outputs)
}

/// The inputs `x` of fit, evaluate or grad (lent or converted, see [`input`]),
/// checked against the model, and `y` read as the loss's targets.
pub(crate) fn samples<'py, F: Float + Element>(
    model: &Sequential<F>,
    (x, x_name): (&Bound<'py, PyAny>, &str),
    (y, y_name): (&Bound<'py, PyAny>, &str),
    loss: Loss,
) -> PyResult<(Input<'py, F>, Target<F>)> {
    let x = input::<F>(x, x_name)?;
    let target = targets_for(model, (&x.rows(), x_name), (y, y_name), loss)?;
    Ok((x, target))
}

/// `x` as a tensor (one copy) checked against the model, and `y` read as the loss's
/// targets: the explanations' batch.
pub(crate) fn batch<F: Float + Element>(
    model: &Sequential<F>,
    (x, x_name): (&Bound<'_, PyAny>, &str),
    (y, y_name): (&Bound<'_, PyAny>, &str),
    loss: Loss,
) -> PyResult<(Tensor<F>, Target<F>)> {
    let x = tensor::<F>(x, x_name)?;
    let target = targets_for(model, (&x, x_name), (y, y_name), loss)?;
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

/// A dict of arrays from named tensors: the tensors' storage taken (copied when
/// shared; without the GIL when large), then handed to NumPy.
pub(crate) fn dict<'py, F: Float + Element>(
    py: Python<'py>,
    named: impl IntoIterator<Item = (String, Tensor<F>)>,
) -> PyResult<Bound<'py, PyDict>> {
    let named: Vec<(String, Tensor<F>)> = named.into_iter().collect();
    let elements = named.iter().map(|(_, t)| t.len()).sum();
    let arrays: Vec<(String, ArrayD<F>)> = released_for(py, elements, || {
        named.into_iter().map(|(k, t)| (k, owned(t))).collect()
    });
    let d = PyDict::new(py);
    for (k, v) in arrays {
        d.set_item(k, PyArray::from_owned_array(py, v))?;
    }
    Ok(d)
}

/// The loss named `name`.
pub(crate) fn loss(name: &str) -> PyResult<Loss> {
    Loss::from_name(name).py()
}
