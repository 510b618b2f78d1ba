//! [`Sequential`]: the layer stack of the interchange contract's model JSON, with
//! PyTorch `nn.Sequential` parameter names.

use super::{Init, Module, Param};
use crate::autodiff::{Constant, Elementwise};
use crate::config::json::{Fields, parse};
use crate::error::invalid;
use crate::io::{read_file, read_safetensors, write_atomic, write_safetensors};
use crate::{Error, Float, Result, Tensor, Var};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// One layer of a [`Sequential`] model.
///
/// ```
/// use chainrule::nn::Layer;
/// use chainrule::autodiff::Elementwise;
/// let l = Layer::Linear { inputs: 2, outputs: 3, bias: true };
/// assert_eq!(l.type_name(), "linear");
/// assert_eq!(Layer::Activation(Elementwise::Tanh).type_name(), "tanh");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum Layer {
    /// `y = x · Wᵀ + b`, W `[outputs, inputs]`, b `[outputs]` (PyTorch `nn.Linear`).
    Linear {
        /// Input features (`in`).
        inputs: usize,
        /// Output features (`out`).
        outputs: usize,
        /// Whether the layer has a bias.
        bias: bool,
    },
    /// An activation: a function of the element-wise table applied to every element
    /// (`relu`, `leaky_relu`, `sigmoid`, `tanh`, …; see [`Elementwise::is_layer`]).
    Activation(Elementwise),
    /// Softmax over the last axis.
    Softmax,
    /// y = x.
    Identity,
}

impl Layer {
    /// The layer's `type` in the model JSON.
    ///
    /// ```
    /// use chainrule::{autodiff::Elementwise, nn::Layer};
    /// assert_eq!(Layer::Activation(Elementwise::Relu).type_name(), "relu");
    /// ```
    pub fn type_name(&self) -> &'static str {
        match self {
            Layer::Linear { .. } => "linear",
            Layer::Activation(f) => f.name(),
            Layer::Softmax => "softmax",
            Layer::Identity => "identity",
        }
    }

    /// Reads one layer object; `index` names it in errors (`layers[2].out`).
    fn from_json(index: usize, value: Value) -> Result<Layer> {
        let mut f = Fields::new(&format!("layers[{index}]"), value)?;
        let kind = f.required_string("type")?;
        let layer = match kind.as_str() {
            "linear" => {
                let mut size = |key: &str| -> Result<usize> {
                    match f.count(key)? {
                        None => Err(invalid(f.name(key), "is required")),
                        Some(0) => Err(invalid(f.name(key), "must be at least 1")),
                        Some(n) => {
                            usize::try_from(n).map_err(|_| invalid(f.name(key), "too large"))
                        }
                    }
                };
                let inputs = size("in")?;
                let outputs = size("out")?;
                let bias = f.boolean("bias")?.unwrap_or(true);
                Layer::Linear {
                    inputs,
                    outputs,
                    bias,
                }
            }
            "softmax" => Layer::Softmax,
            "identity" => Layer::Identity,
            other => match Elementwise::from_name(other).filter(|a| a.is_layer()) {
                Some(mut activation) => {
                    // Each constant of the function is a key, with the table's default.
                    for (key, default) in activation.constants() {
                        let value = match default {
                            Constant::Number(d) => Constant::Number(f.number(key)?.unwrap_or(d)),
                            Constant::Choice(d) => match f.string(key)? {
                                None => Constant::Choice(d),
                                Some(name) => activation
                                    .choices(key)
                                    .iter()
                                    .find(|c| **c == name)
                                    .map(|c| Constant::Choice(c))
                                    .ok_or_else(|| {
                                        invalid(
                                            f.name(key),
                                            format!(
                                                "{name:?} is not one of {:?}",
                                                activation.choices(key)
                                            ),
                                        )
                                    })?,
                            },
                        };
                        activation = activation
                            .with_constant(key, value)
                            .map_err(|message| invalid(f.name(key), message))?;
                    }
                    Layer::Activation(activation)
                }
                None => {
                    return Err(invalid(
                        f.name("type"),
                        format!(
                            "unknown layer type {other:?} (expected linear, softmax, identity or an activation: {})",
                            Elementwise::LAYERS
                                .iter()
                                .map(|a| a.name())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                }
            },
        };
        f.finish()?;
        Ok(layer)
    }
}

/// The most parameters a model may have (2³¹, 8 GiB in f32): larger sizes in a model
/// file are refused before anything is allocated.
pub const MAX_PARAMETERS: usize = 1 << 31;

/// Layers applied in order, with PyTorch `nn.Sequential` parameter names
/// (`"{i}.weight"`, `"{i}.bias"`, `i` counting activations too).
///
/// ```
/// use chainrule::nn::{Module, Sequential};
/// use chainrule::{Tape, Tensor};
/// let model = Sequential::<f64>::from_json(r#"{"layers": [
///     {"type": "linear", "in": 2, "out": 3}, {"type": "relu"},
///     {"type": "linear", "in": 3, "out": 1, "bias": false}]}"#, 0)?;
/// let names: Vec<_> = model.params().iter().map(|p| p.name.as_str()).collect();
/// assert_eq!(names, ["0.weight", "0.bias", "2.weight"]);
/// let tape = Tape::new();
/// let y = model.forward(&model.bind(&tape), tape.constant(Tensor::ones(&[4, 2])))?;
/// assert_eq!(y.shape(), vec![4, 1]);
/// # Ok::<(), chainrule::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Sequential<F: Float = f32> {
    layers: Vec<Layer>,
    params: Vec<Param<F>>,
    /// For each layer, the index of its first parameter in `params`.
    offsets: Vec<usize>,
}

impl<F: Float> Sequential<F> {
    /// Builds a model from layers, initialising each linear layer as PyTorch's
    /// `nn.Linear` does (weight and bias uniform in ±1/√in), from `seed`.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] for an empty list, a size of 0, or a linear layer
    /// whose `in` differs from the previous linear layer's `out` (naming both).
    ///
    /// ```
    /// use chainrule::nn::{Layer, Module, Sequential};
    /// let m = Sequential::<f32>::new(vec![Layer::Linear { inputs: 4, outputs: 2, bias: true }], 7)?;
    /// assert!(m.params()[0].value.to_vec().iter().all(|w| w.abs() <= 0.5));
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn new(layers: Vec<Layer>, seed: u64) -> Result<Self> {
        Self::with_init(layers, Init::PytorchDefault, seed)
    }

    /// Builds a model from layers with the given initializer for every linear layer,
    /// from `seed` (layer `i` draws from a seed derived from `seed` and `i`).
    ///
    /// # Errors
    /// As [`Sequential::new`].
    ///
    /// ```
    /// use chainrule::nn::{Init, Layer, Module, Sequential};
    /// let layers = vec![Layer::Linear { inputs: 4, outputs: 2, bias: true }];
    /// let m = Sequential::<f32>::with_init(layers, Init::HeUniform, 7)?;
    /// assert_eq!(m.params()[1].value.to_vec(), vec![0.0, 0.0]); // He: zero bias
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn with_init(layers: Vec<Layer>, init: Init, seed: u64) -> Result<Self> {
        if layers.is_empty() {
            return Err(invalid("layers", "must list at least one layer"));
        }
        // Refuse before allocating: a hostile model file could ask for terabytes.
        let mut total: usize = 0;
        for (i, layer) in layers.iter().enumerate() {
            if let &Layer::Linear {
                inputs, outputs, ..
            } = layer
            {
                total = inputs
                    .checked_mul(outputs)
                    .and_then(|w| w.checked_add(outputs))
                    .and_then(|n| total.checked_add(n))
                    .filter(|&n| n <= MAX_PARAMETERS)
                    .ok_or_else(|| {
                        invalid(
                            format!("layers[{i}]"),
                            format!("the model would exceed {MAX_PARAMETERS} parameters"),
                        )
                    })?;
            }
        }
        let mut previous: Option<(usize, usize)> = None;
        let mut params = Vec::new();
        let mut offsets = Vec::with_capacity(layers.len());
        for (i, layer) in layers.iter().enumerate() {
            offsets.push(params.len());
            if let &Layer::Linear {
                inputs,
                outputs,
                bias,
            } = layer
            {
                if inputs == 0 || outputs == 0 {
                    return Err(invalid(
                        format!("layers[{i}]"),
                        "in and out must be at least 1",
                    ));
                }
                if let Some((j, out)) = previous
                    && out != inputs
                {
                    return Err(invalid(
                        format!("layers[{i}].in"),
                        format!(
                            "is {inputs} but the previous linear layer, layers[{j}], has out {out}"
                        ),
                    ));
                }
                previous = Some((i, outputs));
                let layer_seed = seed.wrapping_mul(1_000_003).wrapping_add(i as u64);
                params.push(Param::new(
                    format!("{i}.weight"),
                    init.weight(&[outputs, inputs], layer_seed)?,
                ));
                if bias {
                    params.push(Param::new(
                        format!("{i}.bias"),
                        init.bias(outputs, inputs, layer_seed ^ 0x5eed)?,
                    ));
                }
            }
        }
        Ok(Sequential {
            layers,
            params,
            offsets,
        })
    }

    /// Reads the contract's model JSON (see `spec/interchange.md`) and initialises it
    /// from `seed` like [`Sequential::new`].
    ///
    /// # Errors
    /// [`Error::InvalidValue`] naming the field at fault: invalid JSON, an unknown
    /// key or layer type, an empty list, a size of 0, mismatched linear sizes.
    ///
    /// ```
    /// use chainrule::nn::Sequential;
    /// let err = Sequential::<f32>::from_json(r#"{"layers": [{"type": "relu", "slope": 0.1}]}"#, 0)
    ///     .unwrap_err();
    /// assert_eq!(err.to_string(), "layers[0].slope: unknown field");
    /// ```
    pub fn from_json(text: &str, seed: u64) -> Result<Self> {
        let mut top = Fields::new("", parse(text)?)?;
        let layers = match top.take("layers") {
            Some(Value::Array(items)) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| Layer::from_json(i, v))
                .collect::<Result<Vec<_>>>()?,
            Some(_) => return Err(invalid("layers", "expected an array of layers")),
            None => return Err(invalid("layers", "is required")),
        };
        top.finish()?;
        Self::new(layers, seed)
    }

    /// The model JSON of the interchange contract (defaults written out), which
    /// [`Sequential::from_json`] reads back.
    ///
    /// ```
    /// use chainrule::nn::Sequential;
    /// let m = Sequential::<f32>::from_json(r#"{"layers": [{"type": "linear", "in": 2, "out": 1}, {"type": "leaky_relu"}]}"#, 0)?;
    /// let json = m.to_json();
    /// assert!(json.contains(r#""slope": 0.01"#));
    /// assert_eq!(Sequential::<f32>::from_json(&json, 0)?.layers(), m.layers());
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn to_json(&self) -> String {
        let layers: Vec<String> = self
            .layers
            .iter()
            .map(|layer| match *layer {
                Layer::Linear {
                    inputs,
                    outputs,
                    bias,
                } => {
                    format!(
                        r#"{{"type": "linear", "in": {inputs}, "out": {outputs}, "bias": {bias}}}"#
                    )
                }
                Layer::Activation(f) => {
                    let mut fields = vec![format!(r#""type": "{}""#, f.name())];
                    for (key, value) in f.constants() {
                        fields.push(match value {
                            Constant::Number(v) => {
                                format!(r#""{key}": {}"#, serde_json::Value::from(v))
                            }
                            Constant::Choice(name) => format!(r#""{key}": "{name}""#),
                        });
                    }
                    format!("{{{}}}", fields.join(", "))
                }
                ref other => format!(r#"{{"type": "{}"}}"#, other.type_name()),
            })
            .collect();
        format!(
            "{{\n  \"layers\": [\n    {}\n  ]\n}}\n",
            layers.join(",\n    ")
        )
    }

    /// Writes `model.json` and `params.safetensors` (PyTorch names, atomically) into
    /// the folder `dir`, which must exist: a checkpoint PyTorch can load with
    /// `safetensors.torch.load_file` and [`Sequential::load_checkpoint`] reads back.
    ///
    /// # Errors
    /// [`Error::Io`] when the folder is missing or a write fails.
    ///
    /// ```
    /// use chainrule::nn::{Module, Sequential};
    /// let dir = std::env::temp_dir().join(format!("chainrule-ckpt-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir).unwrap();
    /// let m = Sequential::<f64>::from_json(r#"{"layers": [{"type": "linear", "in": 3, "out": 2}]}"#, 9)?;
    /// m.save_checkpoint(&dir)?;
    /// let back = Sequential::<f64>::load_checkpoint(&dir)?;
    /// assert_eq!(back.params(), m.params());
    /// std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn save_checkpoint(&self, dir: &Path) -> Result<()> {
        write_atomic(&dir.join("model.json"), self.to_json().as_bytes())?;
        let named = self
            .params
            .iter()
            .map(|p| (p.name.clone(), p.value.clone()))
            .collect();
        write_safetensors(&dir.join("params.safetensors"), &named)
    }

    /// Reads a checkpoint written by [`Sequential::save_checkpoint`] (or by PyTorch:
    /// a `model.json` and a `params.safetensors` of `state_dict()` names).
    ///
    /// # Errors
    /// [`Error::Io`]/[`Error::Format`] for unreadable or malformed files,
    /// [`Error::InvalidValue`] (prefixed with the file) for a bad model or a missing,
    /// extra or misshapen tensor.
    ///
    /// ```
    /// use chainrule::nn::Sequential;
    /// assert!(Sequential::<f32>::load_checkpoint(std::path::Path::new("/no/such/run")).is_err());
    /// ```
    pub fn load_checkpoint(dir: &Path) -> Result<Self> {
        let in_file = |path: &Path| {
            let path = path.display().to_string();
            move |e: Error| match e {
                Error::Io { .. } | Error::Format { .. } => e,
                other => Error::Format {
                    path: path.clone(),
                    message: other.to_string(),
                },
            }
        };
        let model_path = dir.join("model.json");
        let text = String::from_utf8(read_file(&model_path)?).map_err(|_| Error::Format {
            path: model_path.display().to_string(),
            message: "not UTF-8 text".into(),
        })?;
        let mut model = Self::from_json(&text, 0).map_err(in_file(&model_path))?;
        let params_path = dir.join("params.safetensors");
        model
            .load(read_safetensors(&params_path)?)
            .map_err(in_file(&params_path))?;
        Ok(model)
    }

    /// The forward pass, returning every layer's output in order (what the explain
    /// layer reads: the pre-activations z and activations a of each layer, on the
    /// tape that training uses).
    ///
    /// # Errors
    /// Shape errors when `x` does not fit the model.
    ///
    /// ```
    /// use chainrule::nn::{Module, Sequential};
    /// use chainrule::{Tape, Tensor};
    /// let m = Sequential::<f64>::from_json(r#"{"layers": [{"type": "linear", "in": 2, "out": 3}, {"type": "relu"}]}"#, 0)?;
    /// let tape = Tape::new();
    /// let outputs = m.forward_trace(&m.bind(&tape), tape.constant(Tensor::ones(&[1, 2])))?;
    /// assert_eq!(outputs.len(), 2);
    /// assert_eq!(outputs[1].value(), outputs[0].value().map(|z| z.max(0.0)));
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn forward_trace<'t>(
        &self,
        params: &[Var<'t, F>],
        x: Var<'t, F>,
    ) -> Result<Vec<Var<'t, F>>> {
        let mut outputs = Vec::with_capacity(self.layers.len());
        let mut h = x;
        for (layer, &offset) in self.layers.iter().zip(&self.offsets) {
            h = Self::layer_forward(layer, offset, params, h)?;
            outputs.push(h);
        }
        Ok(outputs)
    }

    /// One layer's operation on `h`; its parameters start at `params[offset]`.
    pub(crate) fn layer_forward<'t>(
        layer: &Layer,
        offset: usize,
        params: &[Var<'t, F>],
        h: Var<'t, F>,
    ) -> Result<Var<'t, F>> {
        Ok(match *layer {
            Layer::Linear { bias, .. } => {
                h.linear(params[offset], bias.then(|| params[offset + 1]))?
            }
            Layer::Activation(f) => h.map(f),
            Layer::Softmax => h.softmax(h.shape().len().saturating_sub(1))?,
            Layer::Identity => h,
        })
    }

    /// The index in [`Module::params`] of layer `layer`'s first parameter (its
    /// weight, for a linear layer).
    ///
    /// ```
    /// use chainrule::nn::Sequential;
    /// let m = Sequential::<f32>::from_json(r#"{"layers": [{"type": "linear", "in": 2, "out": 2}, {"type": "relu"}, {"type": "linear", "in": 2, "out": 1}]}"#, 0)?;
    /// assert_eq!(m.param_offset(2), Some(2));
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn param_offset(&self, layer: usize) -> Option<usize> {
        self.offsets.get(layer).copied()
    }

    /// The layers.
    ///
    /// ```
    /// use chainrule::{autodiff::Elementwise, nn::{Layer, Sequential}};
    /// let m = Sequential::<f32>::new(vec![Layer::Activation(Elementwise::Relu)], 0)?;
    /// assert_eq!(m.layers(), &[Layer::Activation(Elementwise::Relu)]);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// The number of input features (the first linear layer's `in`), if any.
    ///
    /// ```
    /// use chainrule::nn::Sequential;
    /// let m = Sequential::<f32>::from_json(r#"{"layers": [{"type": "linear", "in": 5, "out": 2}]}"#, 0)?;
    /// assert_eq!((m.input_features(), m.output_features()), (Some(5), Some(2)));
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn input_features(&self) -> Option<usize> {
        self.layers.iter().find_map(|l| match l {
            Layer::Linear { inputs, .. } => Some(*inputs),
            _ => None,
        })
    }

    /// The number of output features (the last linear layer's `out`), if any.
    ///
    /// ```
    /// use chainrule::{autodiff::Elementwise, nn::{Layer, Sequential}};
    /// let m = Sequential::<f32>::new(vec![Layer::Activation(Elementwise::Tanh)], 0)?;
    /// assert_eq!(m.output_features(), None);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn output_features(&self) -> Option<usize> {
        self.layers.iter().rev().find_map(|l| match l {
            Layer::Linear { outputs, .. } => Some(*outputs),
            _ => None,
        })
    }

    /// Replaces every parameter by the tensor of the same name.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] naming the tensor when one is missing, extra, or of
    /// the wrong shape; nothing is changed then.
    ///
    /// ```
    /// use chainrule::nn::{Module, Sequential};
    /// use chainrule::Tensor;
    /// let mut m = Sequential::<f64>::from_json(r#"{"layers": [{"type": "linear", "in": 2, "out": 1, "bias": false}]}"#, 0)?;
    /// let mut named = std::collections::BTreeMap::new();
    /// named.insert("0.weight".to_string(), Tensor::from_vec(vec![1.0, 2.0], &[1, 2])?);
    /// m.load(named)?;
    /// assert_eq!(m.params()[0].value.to_vec(), vec![1.0, 2.0]);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn load(&mut self, mut named: BTreeMap<String, Tensor<F>>) -> Result<()> {
        let mut loaded = Vec::with_capacity(self.params.len());
        for p in &self.params {
            let tensor = named
                .remove(&p.name)
                .ok_or_else(|| invalid(&p.name, "missing tensor"))?;
            if tensor.shape() != p.value.shape() {
                return Err(invalid(
                    &p.name,
                    format!(
                        "has shape {:?}, the model needs {:?}",
                        tensor.shape(),
                        p.value.shape()
                    ),
                ));
            }
            loaded.push(tensor);
        }
        if let Some(extra) = named.keys().next() {
            return Err(invalid(
                extra,
                "extra tensor: the model has no such parameter",
            ));
        }
        for (p, t) in self.params.iter_mut().zip(loaded) {
            p.value = t;
        }
        Ok(())
    }

    /// Checks that `x` is `[N, in]` with N ≥ 1 for this model.
    ///
    /// # Errors
    /// [`Error::Shape`] otherwise.
    ///
    /// ```
    /// use chainrule::nn::Sequential;
    /// use chainrule::Tensor;
    /// let m = Sequential::<f32>::from_json(r#"{"layers": [{"type": "linear", "in": 3, "out": 1}]}"#, 0)?;
    /// assert!(m.check_input(&Tensor::zeros(&[5, 3])).is_ok());
    /// assert!(m.check_input(&Tensor::zeros(&[5, 2])).is_err());
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn check_input(&self, x: &Tensor<F>) -> Result<()> {
        let fits = match (x.shape(), self.input_features()) {
            (&[n, _], None) => n >= 1,
            (&[n, d], Some(inputs)) => n >= 1 && d == inputs,
            _ => false,
        };
        if fits {
            Ok(())
        } else {
            Err(Error::Shape {
                op: "model input",
                message: format!(
                    "expected [N, {}] with N ≥ 1",
                    self.input_features().map_or("D".into(), |d| d.to_string())
                ),
                got: x.shape().to_vec(),
            })
        }
    }
}

impl<F: Float> Module<F> for Sequential<F> {
    fn params(&self) -> &[Param<F>] {
        &self.params
    }

    fn params_mut(&mut self) -> &mut [Param<F>] {
        &mut self.params
    }

    fn forward<'t>(&self, params: &[Var<'t, F>], x: Var<'t, F>) -> Result<Var<'t, F>> {
        Ok(self.forward_trace(params, x)?.pop().unwrap_or(x))
    }
}
