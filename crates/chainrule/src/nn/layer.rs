//! [`Layer`]: one layer of the interchange contract's model JSON: how it is read and
//! written, and the shape of one sample after it.

use crate::autodiff::{Constant, Elementwise};
use crate::config::json::Fields;
use crate::error::invalid;
use crate::tensor::Window2d;
use crate::{Error, Result};
use serde_json::Value;

/// One layer of a [`Sequential`](super::Sequential) model.
///
/// ```
/// use chainrule::nn::Layer;
/// use chainrule::autodiff::Elementwise;
/// let l = Layer::Linear { inputs: 2, outputs: 3, bias: true };
/// assert_eq!(l.type_name(), "linear");
/// assert_eq!(Layer::Activation(Elementwise::Tanh).type_name(), "tanh");
/// assert_eq!(Layer::Flatten.type_name(), "flatten");
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
    /// 2-D convolution (PyTorch `nn.Conv2d`, zero padding): weight
    /// `[out_channels, in_channels, kh, kw]`, bias `[out_channels]`.
    Conv2d {
        /// Channels of the input.
        in_channels: usize,
        /// Channels of the output (kernels).
        out_channels: usize,
        /// Kernel size, stride, padding and dilation.
        window: Window2d,
        /// Whether the layer has a bias.
        bias: bool,
    },
    /// Max pooling (PyTorch `nn.MaxPool2d`).
    MaxPool2d {
        /// Window size, stride and padding (dilation 1).
        window: Window2d,
    },
    /// Average pooling, padded zeros counted (PyTorch `nn.AvgPool2d`).
    AvgPool2d {
        /// Window size, stride and padding (dilation 1).
        window: Window2d,
    },
    /// `[N, C, H, W]` to `[N, C·H·W]`, row-major (PyTorch `nn.Flatten()`).
    Flatten,
    /// In training, zeroes each element with probability `p` and scales the others
    /// by `1/(1 − p)`; the identity in evaluation (PyTorch `nn.Dropout`).
    Dropout {
        /// The probability of zeroing, in [0, 1).
        p: f64,
    },
    /// Batch norm over `[N, C]` (`batch_norm1d`) or `[N, C, H, W]` (`batch_norm2d`),
    /// with running statistics (PyTorch `nn.BatchNorm1d`/`2d`).
    BatchNorm {
        /// `batch_norm2d` (input `[N, C, H, W]`) rather than `batch_norm1d`.
        spatial: bool,
        /// Channels (`num_features`).
        features: usize,
        /// Added to the variance.
        eps: f64,
        /// The running statistics' update weight.
        momentum: f64,
        /// Whether it has a learnable scale and shift.
        affine: bool,
    },
    /// Layer norm over the trailing axes `shape` (PyTorch `nn.LayerNorm`).
    LayerNorm {
        /// The trailing axes normalised together (`normalized_shape`).
        shape: Vec<usize>,
        /// Added to the variance.
        eps: f64,
        /// Whether it has a learnable element-wise scale and shift
        /// (`elementwise_affine`).
        affine: bool,
    },
}

/// The largest size any one axis of a layer may have: larger values in a model
/// file are refused before anything is computed from them.
const MAX_AXIS: u64 = 1 << 31;

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
            Layer::Conv2d { .. } => "conv2d",
            Layer::MaxPool2d { .. } => "max_pool2d",
            Layer::AvgPool2d { .. } => "avg_pool2d",
            Layer::Flatten => "flatten",
            Layer::Dropout { .. } => "dropout",
            Layer::BatchNorm { spatial: false, .. } => "batch_norm1d",
            Layer::BatchNorm { spatial: true, .. } => "batch_norm2d",
            Layer::LayerNorm { .. } => "layer_norm",
        }
    }

    /// Reads one layer object; `index` names it in errors (`layers[2].out`).
    pub(super) fn from_json(index: usize, value: Value) -> Result<Layer> {
        let mut f = Fields::new(&format!("layers[{index}]"), value)?;
        let kind = f.required_string("type")?;
        let layer = match kind.as_str() {
            "linear" => Layer::Linear {
                inputs: positive(&mut f, "in")?,
                outputs: positive(&mut f, "out")?,
                bias: f.boolean("bias")?.unwrap_or(true),
            },
            "softmax" => Layer::Softmax,
            "identity" => Layer::Identity,
            "flatten" => Layer::Flatten,
            "conv2d" => {
                let in_channels = positive(&mut f, "in_channels")?;
                let out_channels = positive(&mut f, "out_channels")?;
                let kernel = pair(&mut f, "kernel_size", None, 1)?;
                let window = Window2d {
                    kernel,
                    stride: pair(&mut f, "stride", Some([1, 1]), 1)?,
                    padding: pair(&mut f, "padding", Some([0, 0]), 0)?,
                    dilation: pair(&mut f, "dilation", Some([1, 1]), 1)?,
                };
                Layer::Conv2d {
                    in_channels,
                    out_channels,
                    window,
                    bias: f.boolean("bias")?.unwrap_or(true),
                }
            }
            "max_pool2d" | "avg_pool2d" => {
                let kernel = pair(&mut f, "kernel_size", None, 1)?;
                let window = Window2d {
                    kernel,
                    stride: pair(&mut f, "stride", Some(kernel), 1)?,
                    padding: pair(&mut f, "padding", Some([0, 0]), 0)?,
                    dilation: [1, 1],
                };
                // PyTorch refuses it too: a window could then see only padding.
                if window.padding[0] > kernel[0] / 2 || window.padding[1] > kernel[1] / 2 {
                    return Err(invalid(
                        f.name("padding"),
                        format!(
                            "{:?} is more than half the window {kernel:?}",
                            window.padding
                        ),
                    ));
                }
                if kind == "max_pool2d" {
                    Layer::MaxPool2d { window }
                } else {
                    Layer::AvgPool2d { window }
                }
            }
            "dropout" => {
                let p = f.number("p")?.unwrap_or(0.5);
                if !(0.0..1.0).contains(&p) {
                    return Err(invalid(f.name("p"), format!("{p} is not in [0, 1)")));
                }
                Layer::Dropout { p }
            }
            "batch_norm1d" | "batch_norm2d" => {
                let features = positive(&mut f, "num_features")?;
                let eps = non_negative(&mut f, "eps", 1e-5)?;
                let momentum = f.number("momentum")?.unwrap_or(0.1);
                if !(0.0..=1.0).contains(&momentum) {
                    return Err(invalid(
                        f.name("momentum"),
                        format!("{momentum} is not in [0, 1]"),
                    ));
                }
                Layer::BatchNorm {
                    spatial: kind == "batch_norm2d",
                    features,
                    eps,
                    momentum,
                    affine: f.boolean("affine")?.unwrap_or(true),
                }
            }
            "layer_norm" => {
                let shape = f
                    .counts("normalized_shape")?
                    .ok_or_else(|| invalid(f.name("normalized_shape"), "is required"))?;
                if shape.is_empty() || shape.iter().any(|&d| d == 0 || d > MAX_AXIS) {
                    return Err(invalid(
                        f.name("normalized_shape"),
                        format!("{shape:?} must list sizes from 1 to {MAX_AXIS}"),
                    ));
                }
                Layer::LayerNorm {
                    shape: shape.into_iter().map(|d| d as usize).collect(),
                    eps: non_negative(&mut f, "eps", 1e-5)?,
                    affine: f.boolean("elementwise_affine")?.unwrap_or(true),
                }
            }
            other => match Elementwise::from_name(other).filter(|a| a.is_layer()) {
                Some(activation) => Layer::Activation(activation_constants(&mut f, activation)?),
                None => {
                    return Err(invalid(
                        f.name("type"),
                        format!(
                            "unknown layer type {other:?} (expected linear, conv2d, max_pool2d, avg_pool2d, flatten, dropout, batch_norm1d, batch_norm2d, layer_norm, softmax, identity or an activation: {})",
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

    /// The layer as a JSON object of the model file, defaults written out.
    pub(super) fn to_json(&self) -> String {
        let pair = |[a, b]: [usize; 2]| format!("[{a}, {b}]");
        let number = |v: f64| serde_json::Value::from(v).to_string();
        let fields = match self {
            Layer::Linear {
                inputs,
                outputs,
                bias,
            } => format!(r#""in": {inputs}, "out": {outputs}, "bias": {bias}"#),
            Layer::Activation(f) => f
                .constants()
                .iter()
                .map(|(key, value)| match value {
                    Constant::Number(v) => format!(r#""{key}": {}"#, number(*v)),
                    Constant::Choice(name) => format!(r#""{key}": "{name}""#),
                })
                .collect::<Vec<_>>()
                .join(", "),
            Layer::Conv2d {
                in_channels,
                out_channels,
                window,
                bias,
            } => format!(
                r#""in_channels": {in_channels}, "out_channels": {out_channels}, "kernel_size": {}, "stride": {}, "padding": {}, "dilation": {}, "bias": {bias}"#,
                pair(window.kernel),
                pair(window.stride),
                pair(window.padding),
                pair(window.dilation)
            ),
            Layer::MaxPool2d { window } | Layer::AvgPool2d { window } => format!(
                r#""kernel_size": {}, "stride": {}, "padding": {}"#,
                pair(window.kernel),
                pair(window.stride),
                pair(window.padding)
            ),
            Layer::Dropout { p } => format!(r#""p": {}"#, number(*p)),
            Layer::BatchNorm {
                features,
                eps,
                momentum,
                affine,
                ..
            } => format!(
                r#""num_features": {features}, "eps": {}, "momentum": {}, "affine": {affine}"#,
                number(*eps),
                number(*momentum)
            ),
            Layer::LayerNorm { shape, eps, affine } => format!(
                r#""normalized_shape": {shape:?}, "eps": {}, "elementwise_affine": {affine}"#,
                number(*eps)
            ),
            Layer::Softmax | Layer::Identity | Layer::Flatten => String::new(),
        };
        if fields.is_empty() {
            format!(r#"{{"type": "{}"}}"#, self.type_name())
        } else {
            format!(r#"{{"type": "{}", {fields}}}"#, self.type_name())
        }
    }

    /// The shape of one sample after this layer (layer `index`), from the shape
    /// before it, `None` when that is not known yet (a model file without `input`
    /// fixes it at its first linear, batch norm or layer norm). `from` names what
    /// produced the input shape, for errors.
    pub(super) fn output_shape(
        &self,
        index: usize,
        input: Option<&[usize]>,
        from: &str,
    ) -> Result<Option<Vec<usize>>> {
        let at = format!("layers[{index}]");
        let needs_shape = || {
            invalid(
                &at,
                format!(
                    "{} needs the shape of its input: give the model a top-level \"input\" (e.g. [1, 28, 28])",
                    self.type_name()
                ),
            )
        };
        let disagree = |key: &str, message: String| invalid(format!("{at}{key}"), message);
        Ok(match self {
            Layer::Activation(_) | Layer::Softmax | Layer::Identity | Layer::Dropout { .. } => {
                input.map(<[usize]>::to_vec)
            }
            &Layer::Linear {
                inputs, outputs, ..
            } => match input {
                None => Some(vec![outputs]),
                Some(shape) if shape.last() == Some(&inputs) => {
                    let mut out = shape.to_vec();
                    *out.last_mut().expect("not empty") = outputs;
                    Some(out)
                }
                Some(shape) => {
                    return Err(disagree(
                        ".in",
                        format!("is {inputs} but {from} produces {shape:?} per sample"),
                    ));
                }
            },
            Layer::Conv2d {
                in_channels,
                out_channels,
                window,
                ..
            } => {
                let &[c, h, w] = input.ok_or_else(needs_shape)? else {
                    return Err(disagree(
                        "",
                        format!(
                            "conv2d takes [channels, height, width] per sample but {from} produces {:?}",
                            input.unwrap_or_default()
                        ),
                    ));
                };
                if c != *in_channels {
                    return Err(disagree(
                        ".in_channels",
                        format!("is {in_channels} but {from} produces {c} channels"),
                    ));
                }
                let [oh, ow] = window.output_size([h, w]).ok_or_else(|| {
                    disagree(
                        ".kernel_size",
                        format!(
                            "{:?} (dilation {:?}) is larger than its padded input {:?}",
                            window.kernel,
                            window.dilation,
                            [h + 2 * window.padding[0], w + 2 * window.padding[1]]
                        ),
                    )
                })?;
                Some(vec![*out_channels, oh, ow])
            }
            Layer::MaxPool2d { window } | Layer::AvgPool2d { window } => {
                let &[c, h, w] = input.ok_or_else(needs_shape)? else {
                    return Err(disagree(
                        "",
                        format!(
                            "{} takes [channels, height, width] per sample but {from} produces {:?}",
                            self.type_name(),
                            input.unwrap_or_default()
                        ),
                    ));
                };
                let [oh, ow] = window.output_size([h, w]).ok_or_else(|| {
                    disagree(
                        ".kernel_size",
                        format!(
                            "{:?} is larger than its padded input {:?}",
                            window.kernel,
                            [h + 2 * window.padding[0], w + 2 * window.padding[1]]
                        ),
                    )
                })?;
                Some(vec![c, oh, ow])
            }
            Layer::Flatten => Some(vec![input.ok_or_else(needs_shape)?.iter().product()]),
            &Layer::BatchNorm {
                spatial, features, ..
            } => match input {
                None if !spatial => Some(vec![features]),
                None => return Err(needs_shape()),
                Some(shape) => {
                    let fits = if spatial {
                        shape.len() == 3
                    } else {
                        shape.len() == 1
                    };
                    if !fits {
                        return Err(disagree(
                            "",
                            format!(
                                "{} takes [{}] per sample but {from} produces {shape:?}",
                                self.type_name(),
                                if spatial {
                                    "channels, height, width"
                                } else {
                                    "features"
                                }
                            ),
                        ));
                    }
                    if shape[0] != features {
                        return Err(disagree(
                            ".num_features",
                            format!("is {features} but {from} produces {} channels", shape[0]),
                        ));
                    }
                    Some(shape.to_vec())
                }
            },
            Layer::LayerNorm {
                shape: trailing, ..
            } => match input {
                None => Some(trailing.clone()),
                Some(shape) if shape.ends_with(trailing) => Some(shape.to_vec()),
                Some(shape) => {
                    return Err(disagree(
                        ".normalized_shape",
                        format!(
                            "{trailing:?} is not the trailing dimensions of {shape:?}, which {from} produces"
                        ),
                    ));
                }
            },
        })
    }
}

/// A required integer key of at least 1.
fn positive(f: &mut Fields, key: &str) -> Result<usize> {
    match f.count(key)? {
        None => Err(invalid(f.name(key), "is required")),
        Some(0) => Err(invalid(f.name(key), "must be at least 1")),
        Some(n) if n > MAX_AXIS => Err(invalid(f.name(key), format!("{n} is too large"))),
        Some(n) => Ok(n as usize),
    }
}

/// An optional finite number of at least 0.
fn non_negative(f: &mut Fields, key: &str, default: f64) -> Result<f64> {
    let v = f.number(key)?.unwrap_or(default);
    if v < 0.0 {
        return Err(invalid(f.name(key), format!("{v} is negative")));
    }
    Ok(v)
}

/// A key that takes an integer or `[h, w]`, each at least `min`.
fn pair(f: &mut Fields, key: &str, default: Option<[usize; 2]>, min: u64) -> Result<[usize; 2]> {
    let Some(values) = f.counts(key)? else {
        return default.ok_or_else(|| invalid(f.name(key), "is required"));
    };
    let [h, w] = match *values.as_slice() {
        [v] => [v, v],
        [h, w] => [h, w],
        _ => {
            return Err(invalid(
                f.name(key),
                "expected an integer or [height, width]",
            ));
        }
    };
    for v in [h, w] {
        if v < min || v > MAX_AXIS {
            return Err(invalid(
                f.name(key),
                format!("{v} is not between {min} and {MAX_AXIS}"),
            ));
        }
    }
    Ok([h as usize, w as usize])
}

/// Reads an activation's constants (each a key, with the table's default).
fn activation_constants(f: &mut Fields, mut activation: Elementwise) -> Result<Elementwise> {
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
                            format!("{name:?} is not one of {:?}", activation.choices(key)),
                        )
                    })?,
            },
        };
        activation = activation
            .with_constant(key, value)
            .map_err(|message| invalid(f.name(key), message))?;
    }
    Ok(activation)
}

/// An error for a model too large to build, naming layer `index`.
pub(super) fn too_large(index: usize, limit: usize) -> Error {
    invalid(
        format!("layers[{index}]"),
        format!("the model would exceed {limit} parameters"),
    )
}
