//! `chainrule._chainrule.Model`: a [`Sequential`] in f32 or f64, with the contract's
//! operations (grad, fit, evaluate, predict, save) on NumPy arrays.

use crate::convert::{array, batch, dict, loss, named};
use crate::errors::{OrPy, invalid, to_py};
use crate::guard;
use chainrule::data::Dataset;
use chainrule::io::{read_safetensors, read_text, safetensors_dtype};
use chainrule::nn::{Mode, Module, Sequential};
use chainrule::optim::Optimizer;
use chainrule::train::{self, Event, Session, TrainConfig, TrainState, noise_key};
use chainrule::{Float, Tensor};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// The model in the dtype its parameters have.
#[derive(Clone)]
pub(crate) enum Net {
    F32(Sequential<f32>),
    F64(Sequential<f64>),
}

/// Runs the same generic code on either dtype.
macro_rules! each {
    ($net:expr, $m:ident => $body:expr) => {
        match $net {
            Net::F32($m) => $body,
            Net::F64($m) => $body,
        }
    };
}

impl Net {
    /// The model in f64 (explanations and checks need exact numbers).
    pub(crate) fn f64(&self) -> PyResult<Sequential<f64>> {
        match self {
            Net::F64(m) => Ok(m.clone()),
            Net::F32(m) => {
                let mut wide = Sequential::<f64>::from_json(&m.to_json(), 0).py()?;
                wide.set_mode(m.mode());
                wide.load(
                    m.state_dict()
                        .into_iter()
                        .map(|(k, v)| (k, v.cast()))
                        .collect(),
                )
                .py()?;
                Ok(wide)
            }
        }
    }
}

/// A layer stack with its parameters (see `chainrule.Sequential` for the Python API).
#[pyclass(module = "chainrule._chainrule")]
pub struct Model {
    pub(crate) net: Net,
}

/// Builds a model of dtype `F` from its JSON and, if given, its tensors.
fn build<F: Float>(
    text: &str,
    tensors: Option<&Bound<'_, PyDict>>,
    seed: u64,
) -> PyResult<Sequential<F>> {
    let mut m = Sequential::<F>::from_json(text, seed).py_in("model")?;
    if let Some(tensors) = tensors {
        m.load(named::<F>(tensors)?).py_in("params")?;
    }
    Ok(m)
}

/// Reads model.json and params.safetensors in the parameters' dtype.
fn read<F: Float>(model: &Path, params: &Path) -> PyResult<Sequential<F>> {
    let text = read_text(model).py()?;
    let mut m = Sequential::<F>::from_json(&text, 0).py_in(&model.display().to_string())?;
    m.load(read_safetensors::<F>(params).py()?)
        .py_in(&params.display().to_string())?;
    Ok(m)
}

fn history<'py>(py: Python<'py>, h: &train::History) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for e in &h.epochs {
        list.append(epoch(py, e)?)?;
    }
    Ok(list)
}

fn epoch<'py>(py: Python<'py>, e: &train::EpochMetrics) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("epoch", e.epoch)?;
    d.set_item("loss", e.train.loss)?;
    d.set_item("accuracy", e.train.accuracy)?;
    d.set_item("val_loss", e.validation.map(|v| v.loss))?;
    d.set_item("val_accuracy", e.validation.and_then(|v| v.accuracy))?;
    d.set_item("lr", e.lr)?;
    d.set_item("seconds", e.seconds)?;
    Ok(d)
}

fn grad_as<'py, F: Float + numpy::Element>(
    py: Python<'py>,
    m: &Sequential<F>,
    x: &Bound<'py, PyAny>,
    y: &Bound<'py, PyAny>,
    loss_name: &str,
    seed: u64,
) -> PyResult<(f64, Bound<'py, PyDict>)> {
    let loss = loss(loss_name)?;
    let (x, target) = batch(m, (x, "x"), (y, "y"), loss)?;
    let mut m = m.clone();
    if m.mode() == Mode::Train {
        m.set_noise_key(noise_key(seed, 0));
    }
    let (value, grads) = train::loss_and_grads(&m, &x, &target, loss).py()?;
    let grads = m.params().iter().zip(grads).map(|(p, g)| {
        (
            p.name.clone(),
            g.unwrap_or_else(|| Tensor::zeros(p.value.shape())),
        )
    });
    Ok((value.as_f64(), dict(py, grads)?))
}

#[allow(clippy::too_many_arguments)]
fn fit_as<'py, F: Float + numpy::Element>(
    py: Python<'py>,
    m: &mut Sequential<F>,
    x: &Bound<'py, PyAny>,
    y: &Bound<'py, PyAny>,
    config: &str,
    val_x: Option<&Bound<'py, PyAny>>,
    val_y: Option<&Bound<'py, PyAny>>,
    on_event: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyList>> {
    let config = TrainConfig::from_json(config).py()?;
    let (x, target) = batch(m, (x, "x"), (y, "y"), config.loss)?;
    let data = Dataset::new(x, target).py()?;
    let validation = match (val_x, val_y) {
        (Some(vx), Some(vy)) => {
            let (vx, vt) = batch(m, (vx, "validation x"), (vy, "validation y"), config.loss)?;
            Some(Dataset::new(vx, vt).py_in("validation")?)
        }
        _ => None,
    };
    let stop = AtomicBool::new(false);
    let mut failure: Option<PyErr> = None;
    let mut optimizer = Optimizer::new(config.optimizer.clone());
    let session = Session {
        optimizer: &mut optimizer,
        start: TrainState::default(),
        stop: Some(&stop),
    };
    let result = train::fit_from(m, &data, validation.as_ref(), &config, session, |event| {
        if failure.is_some() {
            return;
        }
        // Ctrl-C (KeyboardInterrupt) and the callback's own errors stop training after
        // the current step; the error is raised once `fit` returns.
        let outcome = py.check_signals().and_then(|()| match (event, on_event) {
            (
                Event::Step {
                    epoch,
                    batch,
                    batches,
                    loss,
                    ..
                },
                Some(f),
            ) => f
                .call1(("step", (*epoch, *batch, *batches, *loss)))
                .map(drop),
            (Event::Epoch(e), Some(f)) => f.call1(("epoch", epoch(py, e)?)).map(drop),
            _ => Ok(()),
        });
        if let Err(e) = outcome {
            failure = Some(e);
            stop.store(true, Ordering::Relaxed);
        }
    });
    if let Some(e) = failure {
        return Err(e);
    }
    let h = result.map_err(to_py)?;
    if let Some(p) = m.params().iter().find(|p| !p.value.all_finite()) {
        return Err(crate::errors::raise(
            "NonFiniteError",
            format!(
                "training diverged: parameter {} is no longer finite",
                p.name
            ),
        ));
    }
    history(py, &h)
}

#[pymethods]
impl Model {
    /// Builds a model from the contract's model JSON; `params` (name → array) replace
    /// the initial values (PyTorch's default initialisation, from `seed`).
    #[staticmethod]
    #[pyo3(signature = (text, params=None, dtype="float32", seed=0))]
    fn from_json(
        text: &str,
        params: Option<&Bound<'_, PyDict>>,
        dtype: &str,
        seed: u64,
    ) -> PyResult<Model> {
        guard(|| {
            let net = match dtype {
                "float32" => Net::F32(build(text, params, seed)?),
                "float64" => Net::F64(build(text, params, seed)?),
                other => {
                    return Err(invalid(
                        "dtype",
                        format!("{other:?} must be \"float32\" or \"float64\""),
                    ));
                }
            };
            Ok(Model { net })
        })
    }

    /// Reads a run folder (its checkpoint's model.json + params.safetensors), a folder
    /// holding those two, or a model.json and its parameters file, in the parameters'
    /// dtype.
    #[staticmethod]
    #[pyo3(signature = (path, params=None))]
    fn load(path: PathBuf, params: Option<PathBuf>) -> PyResult<Model> {
        guard(|| {
            // A `chainrule train` run keeps its checkpoint in `checkpoint/`.
            let path = if path.join("checkpoint").is_dir() {
                path.join("checkpoint")
            } else {
                path
            };
            let (model, params) = if path.is_dir() {
                (
                    path.join("model.json"),
                    params.unwrap_or_else(|| path.join("params.safetensors")),
                )
            } else {
                let sibling = path.with_file_name("params.safetensors");
                (path, params.unwrap_or(sibling))
            };
            // The model file first: a wrong path is reported as that path.
            read_text(&model).py()?;
            let net = match safetensors_dtype(&params).py()? {
                "F32" => Net::F32(read(&model, &params)?),
                _ => Net::F64(read(&model, &params)?),
            };
            Ok(Model { net })
        })
    }

    /// The model JSON (defaults written out).
    fn to_json(&self) -> String {
        each!(&self.net, m => m.to_json())
    }

    /// "float32" or "float64".
    #[getter]
    fn dtype(&self) -> &'static str {
        match self.net {
            Net::F32(_) => "float32",
            Net::F64(_) => "float64",
        }
    }

    /// Whether the model runs in training mode (batch statistics, dropout).
    #[getter]
    fn training(&self) -> bool {
        each!(&self.net, m => m.mode() == Mode::Train)
    }

    /// Switches between training and evaluation mode.
    fn set_training(&mut self, training: bool) {
        let mode = if training { Mode::Train } else { Mode::Eval };
        each!(&mut self.net, m => m.set_mode(mode))
    }

    /// The trainable parameters' names, in order.
    fn param_names(&self) -> Vec<String> {
        each!(&self.net, m => m.params().iter().map(|p| p.name.clone()).collect())
    }

    /// Parameters and buffers by name, as arrays (PyTorch's `state_dict()`).
    fn state_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        each!(&self.net, m => dict(py, m.state_dict()))
    }

    /// The same model in another dtype.
    fn astype(&self, dtype: &str) -> PyResult<Model> {
        guard(|| {
            let text = self.to_json();
            let state = each!(&self.net, m => m.state_dict().into_iter().map(|(k, v)| (k, v.cast::<f64>())).collect::<std::collections::BTreeMap<_, _>>());
            let training = self.training();
            let mut net = match dtype {
                "float64" => {
                    let mut m = Sequential::<f64>::from_json(&text, 0).py()?;
                    m.load(state).py()?;
                    Net::F64(m)
                }
                "float32" => {
                    let mut m = Sequential::<f32>::from_json(&text, 0).py()?;
                    m.load(state.into_iter().map(|(k, v)| (k, v.cast())).collect())
                        .py()?;
                    Net::F32(m)
                }
                other => {
                    return Err(invalid(
                        "dtype",
                        format!("{other:?} must be \"float32\" or \"float64\""),
                    ));
                }
            };
            let mode = if training { Mode::Train } else { Mode::Eval };
            each!(&mut net, m => m.set_mode(mode));
            Ok(Model { net })
        })
    }

    /// Writes model.json and params.safetensors into the folder `path` (which must exist).
    fn save(&self, path: PathBuf) -> PyResult<()> {
        guard(|| each!(&self.net, m => m.save_checkpoint(&path)).py())
    }

    /// The loss on (x, y) as one batch and its gradient for every parameter.
    #[pyo3(signature = (x, y, loss, seed=0))]
    fn grad<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        y: &Bound<'py, PyAny>,
        loss: &str,
        seed: u64,
    ) -> PyResult<(f64, Bound<'py, PyDict>)> {
        guard(|| each!(&self.net, m => grad_as(py, m, x, y, loss, seed)))
    }

    /// The outputs for `x`, in evaluation mode.
    fn predict<'py>(
        &mut self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        guard(|| {
            each!(&mut self.net, m => {
                let x = crate::convert::tensor(x, "x")?;
                m.check_input(&x).py_in("x")?;
                let mode = m.mode();
                let out = train::predict(m, &x);
                m.set_mode(mode);
                array(py, &out.py()?)
            })
        })
    }

    /// Loss (and accuracy, for classification) over (x, y), in evaluation mode.
    fn evaluate<'py>(
        &mut self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        y: &Bound<'py, PyAny>,
        loss: &str,
    ) -> PyResult<Bound<'py, PyDict>> {
        guard(|| {
            let loss = crate::convert::loss(loss)?;
            let metrics = each!(&mut self.net, m => {
                let (x, target) = batch(m, (x, "x"), (y, "y"), loss)?;
                let data = Dataset::new(x, target).py()?;
                let mode = m.mode();
                let metrics = train::evaluate(m, &data, loss);
                m.set_mode(mode);
                metrics.py()?
            });
            let d = PyDict::new(py);
            d.set_item("loss", metrics.loss)?;
            d.set_item("accuracy", metrics.accuracy)?;
            Ok(d)
        })
    }

    /// Trains as the contract's training config (JSON) says; calls
    /// `on_event("step", (epoch, batch, batches, loss))` after each step and
    /// `on_event("epoch", metrics)` after each epoch. Returns the per-epoch history.
    #[pyo3(signature = (x, y, config, val_x=None, val_y=None, on_event=None))]
    #[allow(clippy::too_many_arguments)]
    fn fit<'py>(
        &mut self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        y: &Bound<'py, PyAny>,
        config: &str,
        val_x: Option<&Bound<'py, PyAny>>,
        val_y: Option<&Bound<'py, PyAny>>,
        on_event: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyList>> {
        guard(|| {
            // Training leaves the model in training mode, as PyTorch's loop does.
            each!(&mut self.net, m => fit_as(py, m, x, y, config, val_x, val_y, on_event))
        })
    }
}
