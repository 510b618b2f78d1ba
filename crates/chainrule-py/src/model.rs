//! `chainrule._chainrule.Model`: a [`Sequential`] in f32 or f64, with the contract's
//! operations (grad, fit, evaluate, predict, save) on NumPy arrays.

use crate::convert::{array, dict, input, loss, named, samples};
use crate::errors::{OrPy, invalid, to_py};
use crate::{guard, released, released_for};
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
use std::time::{Duration, Instant};

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
    /// The model in f64 (explanations and checks need exact numbers): a float32
    /// model cast (without the GIL when it is large), a float64 one shared.
    pub(crate) fn f64(&self, py: Python<'_>) -> PyResult<Sequential<f64>> {
        match self {
            Net::F64(m) => Ok(m.clone()),
            Net::F32(m) => {
                let elements = m.params().iter().map(|p| p.value.len()).sum();
                released_for(py, elements, || cast(m))
            }
        }
    }

    /// The model in `dtype` ("float32" or "float64").
    fn astype(&self, dtype: &str) -> PyResult<Net> {
        match dtype {
            "float32" => Ok(Net::F32(each!(self, m => cast(m))?)),
            "float64" => Ok(Net::F64(each!(self, m => cast(m))?)),
            other => Err(unknown_dtype(other)),
        }
    }
}

/// The error for a dtype that is neither "float32" nor "float64".
fn unknown_dtype(dtype: &str) -> PyErr {
    invalid(
        "dtype",
        format!("{dtype:?} must be \"float32\" or \"float64\""),
    )
}

/// The same model in dtype `G`: rebuilt from its model JSON, with its parameters and
/// buffers converted and its mode kept. The one place a model changes dtype.
fn cast<F: Float, G: Float>(m: &Sequential<F>) -> PyResult<Sequential<G>> {
    let mut cast = Sequential::<G>::from_json(&m.to_json(), 0).py()?;
    cast.set_mode(m.mode());
    let state = m.state_dict().into_iter().map(|(k, v)| (k, v.cast()));
    cast.load(state.collect()).py()?;
    Ok(cast)
}

/// A layer stack with its parameters (see `chainrule.Sequential` for the Python API).
#[pyclass(module = "chainrule._chainrule")]
pub struct Model {
    pub(crate) net: Net,
}

/// Builds a model of dtype `F` from its JSON and, if given, its tensors (read first,
/// with the GIL; the model is built and loaded without it).
fn build<F: Float + numpy::Element>(
    py: Python<'_>,
    text: &str,
    tensors: Option<&Bound<'_, PyDict>>,
    seed: u64,
) -> PyResult<Sequential<F>> {
    let tensors = tensors.map(named::<F>).transpose()?;
    released(py, || {
        let mut m = Sequential::<F>::from_json(text, seed).py_in("model")?;
        if let Some(tensors) = tensors {
            m.load(tensors).py_in("params")?;
        }
        Ok(m)
    })
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
    let (x, target) = samples(m, (x, "x"), (y, "y"), loss)?;
    let x = x.rows();
    let (value, grads) = released(py, || -> chainrule::Result<_> {
        x.check_finite("x")?;
        // The one batch is the whole of x: a lent array's rows are copied into it.
        let x = x.all()?;
        let mut m = m.clone();
        if m.mode() == Mode::Train {
            m.set_noise_key(noise_key(seed, 0));
        }
        let (value, grads) = train::loss_and_grads(&m, &x, &target, loss)?;
        let grads: Vec<(String, Tensor<F>)> = m
            .params()
            .iter()
            .zip(grads)
            .map(|(p, g)| {
                (
                    p.name.clone(),
                    g.unwrap_or_else(|| Tensor::zeros(p.value.shape())),
                )
            })
            .collect();
        Ok((value, grads))
    })
    .py()?;
    Ok((value.as_f64(), dict(py, grads)?))
}

/// How often training, which runs without the GIL, takes it back when no Python
/// callback wants the event: to check for Ctrl-C (`Python::check_signals`) and to let
/// the progress bar redraw, which it does at most ten times a second anyway. Taking
/// the GIL after every step would make each step wait for whichever Python thread
/// holds it, up to the interpreter's switch interval (5 ms by default).
const ATTACH_INTERVAL: Duration = Duration::from_millis(100);

/// What `fit` does between steps, with the GIL released.
struct Listener {
    /// `on_event(kind, data)`, if any.
    on_event: Option<Py<PyAny>>,
    /// Whether `on_event` wants every step (a user's callback), or a step now and
    /// then (the progress bar).
    every_step: bool,
    /// When the GIL was last taken.
    last_attach: Instant,
    /// The first error: Ctrl-C (KeyboardInterrupt), or the callback's own.
    failure: Option<PyErr>,
}

impl Listener {
    /// Takes the GIL when `event` is due: checks for Ctrl-C and hands the event to
    /// `on_event`. An error is kept, and `stop` set: training ends after this step.
    fn hear(&mut self, event: &Event<'_>, stop: &AtomicBool) {
        let due = match (event, &self.on_event) {
            _ if self.failure.is_some() => false,
            (Event::Epoch(_), Some(_)) => true,
            (Event::Step { .. }, Some(_)) if self.every_step => true,
            _ => self.last_attach.elapsed() >= ATTACH_INTERVAL,
        };
        if !due {
            return;
        }
        let outcome = Python::attach(|py| {
            py.check_signals()?;
            let Some(f) = &self.on_event else {
                return Ok(());
            };
            match event {
                Event::Step {
                    epoch,
                    batch,
                    batches,
                    loss,
                    ..
                } => f.call1(py, ("step", (*epoch, *batch, *batches, *loss))),
                Event::Epoch(e) => f.call1(py, ("epoch", epoch(py, e)?)),
            }
            .map(drop)
        });
        self.last_attach = Instant::now();
        if let Err(e) = outcome {
            self.failure = Some(e);
            stop.store(true, Ordering::Relaxed);
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn fit_as<'py, F: Float + numpy::Element>(
    py: Python<'py>,
    m: &mut Sequential<F>,
    x: &Bound<'py, PyAny>,
    y: &Bound<'py, PyAny>,
    config: &str,
    validation: Option<(&Bound<'py, PyAny>, &Bound<'py, PyAny>)>,
    on_event: Option<&Bound<'py, PyAny>>,
    every_step: bool,
) -> PyResult<Bound<'py, PyList>> {
    let config = TrainConfig::from_json(config).py()?;
    let (x, target) = samples(m, (x, "x"), (y, "y"), config.loss)?;
    let data = Dataset::new(x.rows(), target).py()?;
    let (validation_x, validation_target) = validation
        .map(|(vx, vy)| samples(m, (vx, "validation x"), (vy, "validation y"), config.loss))
        .transpose()?
        .unzip();
    let validation = match (&validation_x, validation_target) {
        (Some(vx), Some(vt)) => Some(Dataset::new(vx.rows(), vt).py_in("validation")?),
        _ => None,
    };
    let mut listener = Listener {
        on_event: on_event.map(|f| f.clone().unbind()),
        every_step,
        last_attach: Instant::now(),
        failure: None,
    };
    let stop = AtomicBool::new(false);
    let mut optimizer = Optimizer::new(config.optimizer.clone());
    // Training needs no Python object: other Python threads run meanwhile, and the
    // listener takes the GIL back between steps.
    let result = released(py, || {
        data.x.check_finite("x")?;
        if let Some(v) = &validation {
            v.x.check_finite("validation x")?;
        }
        let session = Session {
            optimizer: &mut optimizer,
            start: TrainState::default(),
            stop: Some(&stop),
        };
        train::fit_from(m, &data, validation.as_ref(), &config, session, |event| {
            listener.hear(event, &stop)
        })
    });
    if let Some(e) = listener.failure {
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
        py: Python<'_>,
        text: &str,
        params: Option<&Bound<'_, PyDict>>,
        dtype: &str,
        seed: u64,
    ) -> PyResult<Model> {
        guard(|| {
            let net = match dtype {
                "float32" => Net::F32(build(py, text, params, seed)?),
                "float64" => Net::F64(build(py, text, params, seed)?),
                other => return Err(unknown_dtype(other)),
            };
            Ok(Model { net })
        })
    }

    /// Reads a run folder (its checkpoint's model.json + params.safetensors), a folder
    /// holding those two, or a model.json and its parameters file, in the parameters'
    /// dtype.
    #[staticmethod]
    #[pyo3(signature = (path, params=None))]
    fn load(py: Python<'_>, path: PathBuf, params: Option<PathBuf>) -> PyResult<Model> {
        guard(|| {
            released(py, || {
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
    fn astype(&self, py: Python<'_>, dtype: &str) -> PyResult<Model> {
        guard(|| {
            Ok(Model {
                net: released(py, || self.net.astype(dtype))?,
            })
        })
    }

    /// Writes model.json and params.safetensors into the folder `path` (which must exist).
    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        guard(|| released(py, || each!(&self.net, m => m.save_checkpoint(&path))).py())
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

    /// The outputs for `x`, in evaluation mode (on a copy of the model, which shares
    /// its parameters' storage: the model's own mode is kept, and other threads may
    /// use it meanwhile).
    fn predict<'py>(&self, py: Python<'py>, x: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        guard(|| {
            each!(&self.net, m => {
                let x = input(x, "x")?;
                let x = x.rows();
                m.check_input(&x).py_in("x")?;
                let out = released(py, || {
                    x.check_finite("x")?;
                    train::predict(&mut m.clone(), &x)
                });
                array(py, out.py()?)
            })
        })
    }

    /// Loss (and accuracy, for classification) over (x, y), in evaluation mode (on a
    /// copy of the model, as `predict`).
    fn evaluate<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        y: &Bound<'py, PyAny>,
        loss: &str,
    ) -> PyResult<Bound<'py, PyDict>> {
        guard(|| {
            let loss = crate::convert::loss(loss)?;
            let metrics = each!(&self.net, m => {
                let (x, target) = samples(m, (x, "x"), (y, "y"), loss)?;
                let data = Dataset::new(x.rows(), target).py()?;
                released(py, || {
                    data.x.check_finite("x")?;
                    train::evaluate(&mut m.clone(), &data, loss)
                })
                .py()?
            });
            let d = PyDict::new(py);
            d.set_item("loss", metrics.loss)?;
            d.set_item("accuracy", metrics.accuracy)?;
            Ok(d)
        })
    }

    /// Trains as the contract's training config (JSON) says, with the GIL released;
    /// calls `on_event("step", (epoch, batch, batches, loss))` after each step (when
    /// `every_step`, else after a step now and then) and `on_event("epoch", metrics)`
    /// after each epoch. Ctrl-C stops training after the current step and raises
    /// KeyboardInterrupt. Returns the per-epoch history.
    #[pyo3(signature = (x, y, config, val_x=None, val_y=None, on_event=None, every_step=true))]
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
        every_step: bool,
    ) -> PyResult<Bound<'py, PyList>> {
        let validation = val_x.zip(val_y);
        guard(|| {
            // Training leaves the model in training mode, as PyTorch's loop does.
            each!(&mut self.net, m => fit_as(py, m, x, y, config, validation, on_event, every_step))
        })
    }
}
