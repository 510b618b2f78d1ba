//! [`Sequential`]: the layer stack of the interchange contract's model JSON, with
//! PyTorch `nn.Sequential` parameter names.

use super::layer::too_large;
use super::{Init, Layer, Mode, Module, Param};
use crate::autodiff::{Op, Saved};
use crate::config::json::{Fields, parse};
use crate::data::Inputs;
use crate::error::invalid;
use crate::io::{read_file, read_safetensors, write_atomic, write_safetensors};
use crate::{Error, Float, Result, Tensor, Var};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

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
#[derive(Debug)]
pub struct Sequential<F: Float = f32> {
    layers: Vec<Layer>,
    params: Vec<Param<F>>,
    /// For each layer, the index of its first parameter in `params`.
    offsets: Vec<usize>,
    /// The shape of one sample, when the model file gives it (`input`).
    input: Option<Vec<usize>>,
    /// The shape of one sample after each layer, where it is known.
    shapes: Vec<Option<Vec<usize>>>,
    /// Batch norm's running statistics and batch counts, PyTorch's buffers.
    buffers: Vec<Param<F>>,
    /// For each layer, the index of its first buffer in `buffers`.
    buffer_offsets: Vec<usize>,
    mode: Mode,
    /// Chooses the dropout masks of training-mode forward passes.
    noise_key: u64,
    /// For each layer, the batch statistics (mean, biased variance, values per
    /// channel) that the last training-mode forward pass measured, until
    /// [`Module::update_buffers`] folds them into the running ones.
    measured: Mutex<Vec<Option<Moments>>>,
}

impl<F: Float> Clone for Sequential<F> {
    fn clone(&self) -> Self {
        Sequential {
            layers: self.layers.clone(),
            params: self.params.clone(),
            offsets: self.offsets.clone(),
            input: self.input.clone(),
            shapes: self.shapes.clone(),
            buffers: self.buffers.clone(),
            buffer_offsets: self.buffer_offsets.clone(),
            mode: self.mode,
            noise_key: self.noise_key,
            measured: Mutex::new(vec![None; self.layers.len()]),
        }
    }
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
        Self::with_input(None, layers, init, seed)
    }

    /// Builds a model whose samples have the shape `input` (channels, height, width
    /// for images; `None` when the first layers fix it), checking every layer's input
    /// shape against what the layers before it produce.
    ///
    /// # Errors
    /// As [`Sequential::new`], and [`Error::InvalidValue`] naming the layer whose
    /// input does not fit (a convolution's channels, a window larger than its padded
    /// input, a linear layer's `in`), or a convolution with no known input shape.
    ///
    /// ```
    /// use chainrule::nn::{Init, Layer, Module, Sequential};
    /// use chainrule::tensor::Window2d;
    /// let conv = Layer::Conv2d { in_channels: 1, out_channels: 4, window: Window2d::square(3), bias: true };
    /// let m = Sequential::<f32>::with_input(Some(vec![1, 8, 8]), vec![conv, Layer::Flatten], Init::PytorchDefault, 0)?;
    /// assert_eq!(m.output_shape(1), Some(&[4 * 6 * 6][..]));
    /// assert_eq!(m.params()[0].value.shape(), &[4, 1, 3, 3]);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn with_input(
        input: Option<Vec<usize>>,
        layers: Vec<Layer>,
        init: Init,
        seed: u64,
    ) -> Result<Self> {
        Self::from_architecture(Architecture::new(input, layers)?, init, seed)
    }

    /// Initialises the parameters of a checked [`Architecture`] (as
    /// [`Sequential::with_input`]), after checking that they fit in the memory
    /// available: a 55-byte model file can ask for 2³¹ weights.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] (`layers`) when the parameters and buffers need more
    /// memory than is available.
    ///
    /// ```
    /// use chainrule::nn::{Architecture, Init, Module, Sequential};
    /// let plan = Architecture::from_json(r#"{"layers": [{"type": "linear", "in": 3, "out": 2}]}"#)?;
    /// let m = Sequential::<f32>::from_architecture(plan, Init::PytorchDefault, 0)?;
    /// assert_eq!(m.params()[0].value.shape(), &[2, 3]);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn from_architecture(architecture: Architecture, init: Init, seed: u64) -> Result<Self> {
        let Architecture {
            input,
            layers,
            output_shapes: shapes,
            parameters,
            buffers,
        } = architecture;
        // Refuse before allocating: the memory is checked, not only the count.
        let values = parameters.iter().chain(&buffers).sum::<usize>() as u64;
        let bytes = values.saturating_mul(std::mem::size_of::<F>() as u64);
        if let Some(available) = crate::io::available_memory()
            && bytes > available
        {
            return Err(invalid(
                "layers",
                format!(
                    "{values} parameters and buffers need {bytes} bytes, more than the {available} bytes of memory available"
                ),
            ));
        }
        let mut params = Vec::new();
        let mut buffers = Vec::new();
        let mut offsets = Vec::with_capacity(layers.len());
        let mut buffer_offsets = Vec::with_capacity(layers.len());
        for (i, layer) in layers.iter().enumerate() {
            offsets.push(params.len());
            buffer_offsets.push(buffers.len());
            let layer_seed = seed.wrapping_mul(1_000_003).wrapping_add(i as u64);
            for (name, shape, start) in parameter_shapes(layer) {
                let value = match start {
                    Start::Weight => init.weight(&shape, layer_seed)?,
                    Start::Bias { fan_in } => init.bias(shape[0], fan_in, layer_seed ^ 0x5eed)?,
                    Start::Fill(v) => Tensor::full(&shape, F::from_f64(v)),
                };
                let param = Param::new(format!("{i}.{name}"), value);
                if matches!(start, Start::Fill(_)) && is_buffer(name) {
                    buffers.push(param);
                } else {
                    params.push(param);
                }
            }
        }
        let count = layers.len();
        Ok(Sequential {
            layers,
            params,
            offsets,
            input,
            shapes,
            buffers,
            buffer_offsets,
            mode: Mode::Train,
            noise_key: 0,
            measured: Mutex::new(vec![None; count]),
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
    /// assert!(err.to_string().starts_with("layers[0].slope: unknown field"));
    /// ```
    pub fn from_json(text: &str, seed: u64) -> Result<Self> {
        Self::from_architecture(Architecture::from_json(text)?, Init::PytorchDefault, seed)
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
        let layers: Vec<String> = self.layers.iter().map(Layer::to_json).collect();
        let input = self
            .input
            .as_ref()
            .map_or(String::new(), |shape| format!("  \"input\": {shape:?},\n"));
        format!(
            "{{\n{input}  \"layers\": [\n    {}\n  ]\n}}\n",
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
        write_safetensors(&dir.join("params.safetensors"), &self.state_dict())
    }

    /// The parameters and the buffers by name, as PyTorch's `state_dict()` holds
    /// them (a batch count as a scalar of `F`; the safetensors writer stores it as
    /// I64, as PyTorch does).
    ///
    /// ```
    /// use chainrule::nn::Sequential;
    /// let m = Sequential::<f32>::from_json(r#"{"layers": [{"type": "batch_norm1d", "num_features": 3}]}"#, 0)?;
    /// let names: Vec<_> = m.state_dict().into_keys().collect();
    /// assert_eq!(names, ["0.bias", "0.num_batches_tracked", "0.running_mean", "0.running_var", "0.weight"]);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn state_dict(&self) -> BTreeMap<String, Tensor<F>> {
        self.params
            .iter()
            .chain(&self.buffers)
            .map(|p| (p.name.clone(), p.value.clone()))
            .collect()
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
        for index in 0..self.layers.len() {
            h = self.layer_forward(index, params, h)?;
            outputs.push(h);
        }
        Ok(outputs)
    }

    /// Layer `index`'s operation on `h`, in the model's mode; its parameters start at
    /// `params[self.offsets[index]]`.
    pub(crate) fn layer_forward<'t>(
        &self,
        index: usize,
        params: &[Var<'t, F>],
        h: Var<'t, F>,
    ) -> Result<Var<'t, F>> {
        let offset = self.offsets[index];
        let tape = h.tape();
        // The layer's parameters after its first (weight), when it has them.
        let after = |k: usize| params[offset + k];
        Ok(match self.layers[index] {
            Layer::Linear { bias, .. } => h.linear(after(0), bias.then(|| after(1)))?,
            Layer::Activation(f) => h.map(f),
            Layer::Softmax => h.softmax(h.shape().len().saturating_sub(1))?,
            Layer::Identity => h,
            Layer::Conv2d { window, bias, .. } => {
                let mut inputs = vec![h, after(0)];
                if bias {
                    inputs.push(after(1));
                }
                tape.apply(Op::Conv2d { window }, &inputs)?
            }
            Layer::MaxPool2d { window } => tape.apply(Op::MaxPool2d { window }, &[h])?,
            Layer::AvgPool2d { window } => tape.apply(Op::AvgPool2d { window }, &[h])?,
            Layer::Flatten => {
                let shape = h.shape();
                let rows = shape.first().copied().unwrap_or(1);
                h.reshape(&[rows, shape.iter().skip(1).product()])?
            }
            Layer::Dropout { p } => {
                if self.mode == Mode::Eval || p == 0.0 {
                    h
                } else {
                    let stream = dropout_stream(self.noise_key, index);
                    tape.apply(Op::Dropout { p, stream }, &[h])?
                }
            }
            Layer::BatchNorm { eps, affine, .. } => {
                let mut inputs = vec![h];
                if affine {
                    inputs.extend([after(0), after(1)]);
                }
                match self.mode {
                    Mode::Train => {
                        let y = tape.apply(Op::BatchNorm { eps }, &inputs)?;
                        // The running statistics are updated from the very numbers
                        // the forward normalised with (on the training team).
                        if let Some(Saved::Moments { mean, var }) = tape.saved(y.id())
                            && let Ok(mut measured) = self.measured.lock()
                        {
                            let count = h.value().len() / mean.len().max(1);
                            measured[index] = Some((mean, var, count));
                        }
                        y
                    }
                    Mode::Eval => self.batch_norm_eval(index, &inputs, eps)?,
                }
            }
            Layer::LayerNorm {
                ref shape,
                eps,
                affine,
            } => {
                let mut inputs = vec![h];
                if affine {
                    inputs.extend([after(0), after(1)]);
                }
                let trailing = shape.len();
                tape.apply(Op::LayerNorm { trailing, eps }, &inputs)?
            }
        })
    }

    /// Batch norm in evaluation mode: (x − running mean) / √(running var + ε), then
    /// γ and β, per channel, as operations on the tape.
    fn batch_norm_eval<'t>(
        &self,
        index: usize,
        inputs: &[Var<'t, F>],
        eps: f64,
    ) -> Result<Var<'t, F>> {
        let h = inputs[0];
        let tape = h.tape();
        let rank = h.shape().len();
        let first = self.buffer_offsets[index];
        let (mean, var) = (&self.buffers[first].value, &self.buffers[first + 1].value);
        // [1, C, 1, …]: one value per channel, broadcast over the batch and the image.
        let mut per_channel = vec![1; rank.max(2)];
        per_channel[1] = mean.len();
        let inverse_sd = var.map(|v| F::one() / (v + F::from_f64(eps)).sqrt());
        let mut y = h
            .sub(tape.constant(mean.reshape(&per_channel)?))?
            .mul(tape.constant(inverse_sd.reshape(&per_channel)?))?;
        if let [_, gamma, beta] = *inputs {
            y = y
                .mul(gamma.reshape(&per_channel)?)?
                .add(beta.reshape(&per_channel)?)?;
        }
        Ok(y)
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

    /// The shape of one sample: the model file's `input`, else what the first layers
    /// fix (a linear layer's `in`, a `batch_norm1d`'s features, a `layer_norm`'s
    /// shape), if any.
    ///
    /// ```
    /// use chainrule::nn::Sequential;
    /// let m = Sequential::<f32>::from_json(r#"{"layers": [{"type": "tanh"}, {"type": "linear", "in": 5, "out": 2}]}"#, 0)?;
    /// assert_eq!(m.input_shape(), Some(vec![5]));
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn input_shape(&self) -> Option<Vec<usize>> {
        input_shape_of(self.input.as_ref(), &self.layers, &self.shapes)
    }

    /// The shape of one sample after layer `index`, when known.
    ///
    /// ```
    /// use chainrule::nn::Sequential;
    /// let m = Sequential::<f32>::from_json(r#"{"input": [1, 6, 6], "layers": [{"type": "max_pool2d", "kernel_size": 2}]}"#, 0)?;
    /// assert_eq!(m.output_shape(0), Some(&[1, 3, 3][..]));
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn output_shape(&self, index: usize) -> Option<&[usize]> {
        self.shapes.get(index)?.as_deref()
    }

    /// The number of input features, when a sample is a vector.
    ///
    /// ```
    /// use chainrule::nn::Sequential;
    /// let m = Sequential::<f32>::from_json(r#"{"layers": [{"type": "linear", "in": 5, "out": 2}]}"#, 0)?;
    /// assert_eq!((m.input_features(), m.output_features()), (Some(5), Some(2)));
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn input_features(&self) -> Option<usize> {
        match self.input_shape()?.as_slice() {
            &[d] => Some(d),
            _ => None,
        }
    }

    /// The number of output features, when the model's output is a vector per
    /// sample of known size.
    ///
    /// ```
    /// use chainrule::{autodiff::Elementwise, nn::{Layer, Sequential}};
    /// let m = Sequential::<f32>::new(vec![Layer::Activation(Elementwise::Tanh)], 0)?;
    /// assert_eq!(m.output_features(), None);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn output_features(&self) -> Option<usize> {
        match self.shapes.last()?.as_deref()? {
            &[d] => Some(d),
            _ => None,
        }
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
        let mut loaded = Vec::with_capacity(self.params.len() + self.buffers.len());
        for p in self.params.iter().chain(&self.buffers) {
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
        if let Some(p) = self
            .buffers
            .iter()
            .zip(&loaded[self.params.len()..])
            .find_map(|(p, t)| {
                let bad = if p.name.ends_with(".num_batches_tracked") {
                    t.to_vec()
                        .iter()
                        .any(|v| *v < F::zero() || v.fract() != F::zero())
                } else if p.name.ends_with(".running_var") {
                    t.to_vec().iter().any(|v| *v < F::zero())
                } else {
                    false
                };
                bad.then_some(&p.name)
            })
        {
            return Err(invalid(
                p,
                "is out of range (a negative variance or a count that is not a whole number ≥ 0)",
            ));
        }
        for (p, t) in self.params.iter_mut().chain(&mut self.buffers).zip(loaded) {
            p.value = t;
        }
        Ok(())
    }

    /// Checks that `x` (a tensor, or other [`Inputs`]) is `[N, in]` with N ≥ 1 for
    /// this model.
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
    /// let lent = [0.0f32; 6];
    /// assert!(m.check_input(&ndarray::ArrayViewD::from_shape(ndarray::IxDyn(&[2, 3]), &lent[..]).unwrap()).is_ok());
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn check_input<X: Inputs<F> + ?Sized>(&self, x: &X) -> Result<()> {
        let expected = self.input_shape();
        let fits = match (x.shape().split_first(), &expected) {
            (Some((&n, sample)), Some(shape)) => n >= 1 && sample == shape.as_slice(),
            (Some((&n, sample)), None) => n >= 1 && sample.len() == 1,
            (None, _) => false,
        };
        if fits {
            Ok(())
        } else {
            let sample = expected.map_or("D".to_string(), |s| {
                s.iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            });
            Err(Error::Shape {
                op: "model input",
                message: format!("expected [N, {sample}] with N ≥ 1"),
                got: x.shape().to_vec(),
            })
        }
    }
}

/// A batch's statistics per channel: mean, biased variance (both in f64), and how
/// many values each channel has.
type Moments = (Vec<f64>, Vec<f64>, usize);

/// A model's layers checked against each other, with every layer's output shape
/// and tensor sizes, before any parameter exists: what `chainrule summary` lists and
/// what [`Sequential::from_architecture`] checks against the memory available.
///
/// ```
/// use chainrule::nn::Architecture;
/// // 46340² weights: counted, never allocated.
/// let plan = Architecture::from_json(r#"{"layers": [{"type": "linear", "in": 46340, "out": 46340}]}"#)?;
/// assert_eq!(plan.parameters, vec![46340 * 46340 + 46340]);
/// assert_eq!(plan.input_shape(), Some(vec![46340]));
/// # Ok::<(), chainrule::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Architecture {
    /// The model file's `input` (the shape of one sample), if it gives one.
    pub input: Option<Vec<usize>>,
    /// The layers.
    pub layers: Vec<Layer>,
    /// Each layer's output shape for one sample, when known.
    pub output_shapes: Vec<Option<Vec<usize>>>,
    /// Each layer's count of trained values (weights, biases, γ, β).
    pub parameters: Vec<usize>,
    /// Each layer's count of buffer values (running statistics, batch counts).
    pub buffers: Vec<usize>,
}

impl Architecture {
    /// Checks `layers` on samples of shape `input` (see [`Sequential::with_input`]).
    ///
    /// # Errors
    /// As [`Sequential::with_input`], and [`Error::InvalidValue`] when the model has
    /// more than [`MAX_PARAMETERS`] values.
    ///
    /// ```
    /// use chainrule::nn::{Architecture, Layer};
    /// let plan = Architecture::new(None, vec![Layer::Linear { inputs: 4, outputs: 2, bias: true }])?;
    /// assert_eq!((plan.parameters, plan.output_shapes), (vec![10], vec![Some(vec![2])]));
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn new(input: Option<Vec<usize>>, layers: Vec<Layer>) -> Result<Architecture> {
        if layers.is_empty() {
            return Err(invalid("layers", "must list at least one layer"));
        }
        if let Some(shape) = &input
            && (shape.is_empty()
                || shape.contains(&0)
                || shape
                    .iter()
                    .try_fold(1usize, |a, &d| a.checked_mul(d))
                    .is_none_or(|n| n > MAX_PARAMETERS))
        {
            return Err(invalid(
                "input",
                format!("{shape:?} must list sizes of at least 1, {MAX_PARAMETERS} values at most"),
            ));
        }
        // Every layer's input shape, checked, before anything is allocated.
        let mut shapes = Vec::with_capacity(layers.len());
        let mut shape = input.clone();
        let mut from = "the input".to_string();
        for (i, layer) in layers.iter().enumerate() {
            let next = layer.output_shape(i, shape.as_deref(), &from)?;
            if let Some(n) = &next
                && n.iter()
                    .try_fold(1usize, |a, &d| a.checked_mul(d))
                    .is_none_or(|n| n > MAX_PARAMETERS)
            {
                return Err(invalid(
                    format!("layers[{i}]"),
                    format!("its output {n:?} is too large"),
                ));
            }
            if next != shape {
                from = format!("layers[{i}] ({})", layer.type_name());
            }
            shapes.push(next.clone());
            shape = next;
        }
        // Refuse before allocating: a hostile model file could ask for terabytes.
        let mut total: usize = 0;
        let mut parameters = Vec::with_capacity(layers.len());
        let mut buffers = Vec::with_capacity(layers.len());
        for (i, layer) in layers.iter().enumerate() {
            let (mut trained, mut kept) = (0, 0);
            for (name, shape, start) in parameter_shapes(layer) {
                let n = shape
                    .iter()
                    .try_fold(1usize, |a, &d| a.checked_mul(d))
                    .and_then(|n| total.checked_add(n).map(|t| (n, t)))
                    .filter(|&(_, t)| t <= MAX_PARAMETERS)
                    .ok_or_else(|| too_large(i, MAX_PARAMETERS))?;
                total = n.1;
                if matches!(start, Start::Fill(_)) && is_buffer(name) {
                    kept += n.0;
                } else {
                    trained += n.0;
                }
            }
            parameters.push(trained);
            buffers.push(kept);
        }
        Ok(Architecture {
            input,
            layers,
            output_shapes: shapes,
            parameters,
            buffers,
        })
    }

    /// Reads the contract's model JSON (see `spec/interchange.md`) without
    /// initialising it.
    ///
    /// # Errors
    /// As [`Sequential::from_json`], except memory (nothing is allocated).
    ///
    /// ```
    /// use chainrule::nn::Architecture;
    /// let err = Architecture::from_json(r#"{"layers": []}"#).unwrap_err();
    /// assert_eq!(err.to_string(), "layers: must list at least one layer");
    /// ```
    pub fn from_json(text: &str) -> Result<Architecture> {
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
        let input = top
            .counts("input")?
            .map(|dims| {
                dims.into_iter()
                    .map(|d| usize::try_from(d).map_err(|_| invalid("input", "too large")))
                    .collect::<Result<Vec<_>>>()
            })
            .transpose()?;
        top.finish()?;
        Architecture::new(input, layers)
    }

    /// The shape of one sample (see [`Sequential::input_shape`]).
    ///
    /// ```
    /// use chainrule::nn::Architecture;
    /// let plan = Architecture::from_json(r#"{"layers": [{"type": "tanh"}, {"type": "linear", "in": 5, "out": 2}]}"#)?;
    /// assert_eq!(plan.input_shape(), Some(vec![5]));
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn input_shape(&self) -> Option<Vec<usize>> {
        input_shape_of(self.input.as_ref(), &self.layers, &self.output_shapes)
    }
}

/// The shape of one sample: `input`, else what the first layers fix (a linear
/// layer's `in`, a `batch_norm1d`'s features, a `layer_norm`'s shape), if any.
fn input_shape_of(
    input: Option<&Vec<usize>>,
    layers: &[Layer],
    shapes: &[Option<Vec<usize>>],
) -> Option<Vec<usize>> {
    if input.is_some() {
        return input.cloned();
    }
    // Without `input`, the first layer whose output is known fixed it; the layers
    // before it keep the shape.
    let first = shapes.iter().position(Option::is_some)?;
    match &layers[first] {
        Layer::Linear { inputs, .. } => Some(vec![*inputs]),
        _ => shapes[first].clone(),
    }
}

/// How a parameter or buffer starts.
#[derive(Debug, Clone, Copy)]
enum Start {
    /// The initializer's weight.
    Weight,
    /// The initializer's bias for a layer of `fan_in` inputs.
    Bias { fan_in: usize },
    /// Every element this value (batch norm's and layer norm's γ = 1, β = 0, and
    /// the running statistics).
    Fill(f64),
}

/// Whether a layer's tensor of this name is a buffer rather than a parameter.
fn is_buffer(name: &str) -> bool {
    matches!(name, "running_mean" | "running_var" | "num_batches_tracked")
}

/// The tensors of a layer, in PyTorch's `state_dict()` order: name, shape and start.
fn parameter_shapes(layer: &Layer) -> Vec<(&'static str, Vec<usize>, Start)> {
    match *layer {
        Layer::Linear {
            inputs,
            outputs,
            bias,
        } => {
            let mut out = vec![("weight", vec![outputs, inputs], Start::Weight)];
            if bias {
                out.push(("bias", vec![outputs], Start::Bias { fan_in: inputs }));
            }
            out
        }
        Layer::Conv2d {
            in_channels,
            out_channels,
            window,
            bias,
        } => {
            let [kh, kw] = window.kernel;
            let shape = vec![out_channels, in_channels, kh, kw];
            let mut out = vec![("weight", shape, Start::Weight)];
            if bias {
                let fan_in = in_channels.saturating_mul(kh).saturating_mul(kw);
                out.push(("bias", vec![out_channels], Start::Bias { fan_in }));
            }
            out
        }
        Layer::BatchNorm {
            features, affine, ..
        } => {
            let mut out = Vec::new();
            if affine {
                out.push(("weight", vec![features], Start::Fill(1.0)));
                out.push(("bias", vec![features], Start::Fill(0.0)));
            }
            out.push(("running_mean", vec![features], Start::Fill(0.0)));
            out.push(("running_var", vec![features], Start::Fill(1.0)));
            out.push(("num_batches_tracked", vec![], Start::Fill(0.0)));
            out
        }
        Layer::LayerNorm {
            ref shape, affine, ..
        } if affine => vec![
            ("weight", shape.clone(), Start::Fill(1.0)),
            ("bias", shape.clone(), Start::Fill(0.0)),
        ],
        _ => Vec::new(),
    }
}

/// The random stream of dropout layer `layer`'s mask under `key` (one per step):
/// element `i` of the mask is a hash of the stream and `i` ([`Tensor::dropout`]), so
/// the mask depends on nothing but the key, the layer and `i`.
fn dropout_stream(key: u64, layer: usize) -> u64 {
    use crate::tensor::mix;
    mix(key ^ mix(layer as u64 + 0x9e37_79b9_7f4a_7c15))
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

    fn buffers(&self) -> &[Param<F>] {
        &self.buffers
    }

    fn buffers_mut(&mut self) -> &mut [Param<F>] {
        &mut self.buffers
    }

    fn mode(&self) -> Mode {
        self.mode
    }

    fn set_mode(&mut self, mode: Mode) {
        self.mode = mode;
    }

    fn set_noise_key(&mut self, key: u64) {
        self.noise_key = key;
    }

    /// PyTorch's update: running ← (1 − momentum)·running + momentum·batch, the
    /// variance unbiased (·n/(n − 1)), and the batch count + 1.
    fn update_buffers(&mut self) {
        // Each slot is emptied where it lies: this runs after every training step, and
        // rebuilding the slots cost a model without batch norm (W3) an allocation a
        // step.
        let Ok(measured) = self.measured.get_mut() else {
            return;
        };
        for (index, slot) in measured.iter_mut().enumerate() {
            let Some((mean, var, count)) = slot.take() else {
                continue;
            };
            let Layer::BatchNorm { momentum, .. } = self.layers[index] else {
                continue;
            };
            let first = self.buffer_offsets[index];
            let unbiased = count as f64 / (count as f64 - 1.0).max(1.0);
            let update = |running: &mut Tensor<F>, batch: &[f64], scale: f64| {
                for (r, b) in running.as_mut_slice().iter_mut().zip(batch) {
                    *r = F::from_f64((1.0 - momentum) * r.as_f64() + momentum * b * scale);
                }
            };
            update(&mut self.buffers[first].value, &mean, 1.0);
            update(&mut self.buffers[first + 1].value, &var, unbiased);
            let tracked = &mut self.buffers[first + 2].value;
            *tracked = tracked.map(|n| n + F::one());
        }
    }
}
