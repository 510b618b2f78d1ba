//! Derivations for networks of tensor layers (convolution, pooling, normalisation,
//! dropout): a parameter element's gradient written as the sum it is, over samples
//! and positions, with its largest terms and their numbers, and the way the gradient
//! reached the layer's output (routed by a max pooling, split by an average pooling,
//! dropped by dropout, or through batch norm's three paths).
//!
//! For a convolution kernel element (stride s, dilation d, padding pad):
//!
//! ∂C/∂K[o,c,i,j] = Σₙ Σₚ Σ_q x[n, c, p·s + i·d − pad, q·s + j·d − pad] · ∂C/∂z[n,o,p,q]
//!
//! and for its bias ∂C/∂b[o] = Σₙ Σₚ Σ_q ∂C/∂z[n,o,p,q]; for batch norm's scale and
//! shift ∂C/∂γ[c] = Σ x̂ · ∂C/∂y and ∂C/∂β[c] = Σ ∂C/∂y over the channel's values.
//! Every number is read from one recorded forward and backward pass, and the sum is
//! checked against autodiff's gradient.

use crate::notation::number;
use crate::step::Step;
use chainrule::loss::{Loss, Target};
use chainrule::nn::{Layer, Mode, Module, Sequential};
use chainrule::tensor::Window2d;
use chainrule::{Error, Result, Tape, Tensor, Var};
use serde_json::json;

/// How many of the largest terms a derivation lists.
pub const SHOWN_TERMS: usize = 6;

/// Whether `model` has layers beyond the linear stack of [`crate::derive`]
/// (convolution, pooling, flatten, dropout, normalisation): its derivations are sums
/// over positions, written by this module.
///
/// ```
/// use chainrule::nn::Sequential;
/// let m = Sequential::<f64>::from_json(r#"{"layers": [{"type": "linear", "in": 2, "out": 3}, {"type": "dropout"}]}"#, 0)?;
/// assert!(chainrule_explain::spatial::is_tensor_network(&m));
/// # Ok::<(), chainrule::Error>(())
/// ```
pub fn is_tensor_network(model: &Sequential<f64>) -> bool {
    model.layers().iter().any(|l| {
        !matches!(
            l,
            Layer::Linear { .. } | Layer::Activation(_) | Layer::Softmax | Layer::Identity
        )
    })
}

/// One term of a gradient's sum: where it is, its factors, and their product.
#[derive(Debug, Clone, PartialEq)]
pub struct Term {
    /// Where in the sum (`n=0, p=3, q=1`).
    pub at: String,
    /// Each factor's symbol and value.
    pub factors: Vec<(String, f64)>,
    /// The product of the factors.
    pub value: f64,
}

/// The derivation of one parameter element's gradient as a sum of terms.
#[derive(Debug, Clone, PartialEq)]
pub struct SumDerivation {
    /// The element, e.g. `0.weight[1,0,2,2]`.
    pub param: String,
    /// The sum written with symbols.
    pub formula: String,
    /// The largest terms, by magnitude.
    pub shown: Vec<Term>,
    /// How many terms are not shown, and their total.
    pub rest: (usize, f64),
    /// The terms that fall in the padding (their input is 0).
    pub padded: usize,
    /// The sum of every term.
    pub gradient: f64,
    /// Autodiff's gradient for the element.
    pub autodiff: f64,
    /// How ∂C/∂z reached the largest term's output element, one line per layer above.
    pub upstream: Vec<String>,
    /// The parameter's value, the learning rate, and the value after plain gradient
    /// descent.
    pub update: (f64, f64, f64),
    /// A run's optimizer's step, shown instead of plain gradient descent when set.
    pub step: Option<Step>,
}

impl SumDerivation {
    /// Whether the sum equals autodiff's gradient (relative 1e-9).
    ///
    /// ```
    /// # use chainrule_explain::spatial::SumDerivation;
    /// let d = SumDerivation { param: "p".into(), formula: String::new(), shown: vec![], rest: (0, 0.0),
    ///     padded: 0, gradient: 1.0, autodiff: 1.0, upstream: vec![], update: (0.0, 0.1, -0.1), step: None };
    /// assert!(d.verified());
    /// ```
    pub fn verified(&self) -> bool {
        (self.gradient - self.autodiff).abs() <= 1e-9 * self.autodiff.abs().max(1.0)
    }

    /// Plain text (Unicode).
    ///
    /// ```
    /// # use chainrule_explain::spatial::SumDerivation;
    /// let d = SumDerivation { param: "0.bias[0]".into(), formula: "Σ ∂C/∂z".into(), shown: vec![], rest: (0, 0.0),
    ///     padded: 0, gradient: 1.0, autodiff: 1.0, upstream: vec![], update: (0.0, 0.1, -0.1), step: None };
    /// assert!(d.text().contains("∂C/∂0.bias[0] = Σ ∂C/∂z"));
    /// ```
    pub fn text(&self) -> String {
        let mut out = format!("∂C/∂{} = {}\n", self.param, self.formula);
        let total = self.shown.len() + self.rest.0;
        out += &format!(
            "  {total} terms{}; the {} largest:\n",
            if self.padded > 0 {
                format!(" ({} more fall in the padding, where x = 0)", self.padded)
            } else {
                String::new()
            },
            self.shown.len()
        );
        for t in &self.shown {
            let factors: Vec<String> = t
                .factors
                .iter()
                .map(|(s, v)| format!("{s} = {}", number(*v)))
                .collect();
            out += &format!(
                "    {:<18} {:<60} → {}\n",
                t.at,
                factors.join(" · "),
                number(t.value)
            );
        }
        if self.rest.0 > 0 {
            out += &format!(
                "    … {} more terms, together {}\n",
                self.rest.0,
                number(self.rest.1)
            );
        }
        out += &format!(
            "  sum = {}   autodiff: {} {}\n",
            number(self.gradient),
            number(self.autodiff),
            if self.verified() { "✓" } else { "✗" }
        );
        if !self.upstream.is_empty() {
            out += "  where the largest term's ∂C/∂z came from:\n";
            for line in &self.upstream {
                out += &format!("    {line}\n");
            }
        }
        let (old, lr, new) = self.update;
        match &self.step {
            Some(step) => out += &step.text("  "),
            None => {
                out += &format!(
                    "  update: {} ← {} − {} · {} = {}\n",
                    self.param,
                    number(old),
                    number(lr),
                    number(self.gradient),
                    number(new)
                )
            }
        }
        out
    }

    /// Markdown: the text in a block, as the terms are a table of numbers.
    ///
    /// ```
    /// # use chainrule_explain::spatial::SumDerivation;
    /// let d = SumDerivation { param: "p".into(), formula: String::new(), shown: vec![], rest: (0, 0.0),
    ///     padded: 0, gradient: 1.0, autodiff: 1.0, upstream: vec![], update: (0.0, 0.1, -0.1), step: None };
    /// assert!(d.markdown().starts_with("### ∂C/∂p"));
    /// ```
    pub fn markdown(&self) -> String {
        format!("### ∂C/∂{}\n\n```text\n{}```\n", self.param, self.text())
    }

    /// JSON: every number of the derivation.
    ///
    /// ```
    /// # use chainrule_explain::spatial::SumDerivation;
    /// let d = SumDerivation { param: "p".into(), formula: String::new(), shown: vec![], rest: (2, 0.5),
    ///     padded: 0, gradient: 1.0, autodiff: 1.0, upstream: vec![], update: (0.0, 0.1, -0.1), step: None };
    /// assert_eq!(d.json()["rest"]["count"], 2);
    /// ```
    pub fn json(&self) -> serde_json::Value {
        json!({
            "param": self.param,
            "formula": self.formula,
            "terms": self.shown.iter().map(|t| json!({
                "at": t.at,
                "factors": t.factors.iter().map(|(s, v)| json!({"symbol": s, "value": v})).collect::<Vec<_>>(),
                "value": t.value,
            })).collect::<Vec<_>>(),
            "rest": {"count": self.rest.0, "total": self.rest.1},
            "padded": self.padded,
            "gradient": self.gradient,
            "autodiff": self.autodiff,
            "verified": self.verified(),
            "upstream": self.upstream,
            "update": match &self.step {
                Some(step) => step.json(),
                None => json!({"value": self.update.0, "lr": self.update.1, "new": self.update.2}),
            },
        })
    }
}

/// Parses `"{layer}.{weight|bias}[i,j,…]"` into the tensor's name and the index.
///
/// # Errors
/// [`Error::InvalidValue`] (field `param`) otherwise.
///
/// ```
/// let (name, index) = chainrule_explain::spatial::parse_element("0.weight[1,0,2,2]")?;
/// assert_eq!((name.as_str(), index), ("0.weight", vec![1, 0, 2, 2]));
/// # Ok::<(), chainrule::Error>(())
/// ```
pub fn parse_element(text: &str) -> Result<(String, Vec<usize>)> {
    let bad = || Error::InvalidValue {
        field: "param".into(),
        message: format!("{text:?} is not LAYER.NAME[INDEX,…], e.g. 0.weight[1,0,2,2]"),
    };
    let (name, rest) = text.split_once('[').ok_or_else(bad)?;
    let index = rest
        .strip_suffix(']')
        .ok_or_else(bad)?
        .split(',')
        .map(|s| s.trim().parse().map_err(|_| bad()))
        .collect::<Result<Vec<usize>>>()?;
    Ok((name.to_string(), index))
}

/// One recorded forward and backward pass, with every layer's output and gradient.
struct Pass {
    /// The input and each layer's output.
    values: Vec<Tensor<f64>>,
    /// ∂C/∂ of the input and each layer's output (zeros where none flows).
    grads: Vec<Tensor<f64>>,
    /// Each parameter's gradient, in `model.params()` order.
    param_grads: Vec<Tensor<f64>>,
}

fn record(model: &Sequential<f64>, x: &Tensor<f64>, y: &Target<f64>, loss: Loss) -> Result<Pass> {
    let tape = Tape::new();
    let params = model.bind(&tape);
    let input = tape.param(x.clone());
    let outputs = model.forward_trace(&params, input)?;
    let last = *outputs.last().ok_or_else(|| Error::InvalidValue {
        field: "model".into(),
        message: "has no layers".into(),
    })?;
    let c = loss.compute(last, y)?;
    let grads = c.backward_retain_all()?;
    let all: Vec<Var<'_, f64>> = std::iter::once(input).chain(outputs).collect();
    let grad_of = |v: &Var<'_, f64>| {
        grads
            .wrt(*v)
            .cloned()
            .unwrap_or_else(|| Tensor::zeros(&v.shape()))
    };
    Ok(Pass {
        values: all.iter().map(|v| v.value()).collect(),
        grads: all.iter().map(grad_of).collect(),
        param_grads: params.iter().map(grad_of).collect(),
    })
}

/// For each parameter tensor, the element whose gradient is largest: what `explain`
/// shows for a tensor network when no element is asked for.
///
/// # Errors
/// When the data does not fit the model and loss.
///
/// ```
/// use chainrule::{data::Target, loss::Loss, nn::Sequential, Tensor};
/// let m = Sequential::<f64>::from_json(r#"{"input": [1, 3, 3], "layers": [{"type": "conv2d", "in_channels": 1, "out_channels": 1, "kernel_size": 2}, {"type": "flatten"}]}"#, 0)?;
/// let x = Tensor::ones(&[1, 1, 3, 3]);
/// let y = Target::Values(Tensor::zeros(&[1, 4]));
/// let picked = chainrule_explain::spatial::largest_elements(&m, &x, &y, Loss::Mse)?;
/// assert_eq!(picked.len(), 2); // the kernel and the bias
/// # Ok::<(), chainrule::Error>(())
/// ```
pub fn largest_elements(
    model: &Sequential<f64>,
    x: &Tensor<f64>,
    y: &Target<f64>,
    loss: Loss,
) -> Result<Vec<String>> {
    let pass = record(model, x, y, loss)?;
    Ok(model
        .params()
        .iter()
        .zip(&pass.param_grads)
        .map(|(p, g)| {
            let values = g.to_vec();
            let flat = (0..values.len())
                .max_by(|&a, &b| values[a].abs().total_cmp(&values[b].abs()))
                .unwrap_or(0);
            let index: Vec<String> = unravel(flat, p.value.shape())
                .iter()
                .map(usize::to_string)
                .collect();
            format!("{}[{}]", p.name, index.join(","))
        })
        .collect())
}

/// The derivation of `element` (`"0.weight[1,0,2,2]"`) of `model`'s parameters on
/// the batch `x`, `y`, in the model's mode, with the update at `lr`.
///
/// # Errors
/// [`Error::InvalidValue`] for an element the model does not have, or of a layer
/// this module does not derive (a linear stack's are [`crate::derive`]'s); shape
/// errors when the data does not fit.
///
/// ```
/// use chainrule::{data::Target, loss::Loss, nn::Sequential, Tensor};
/// let m = Sequential::<f64>::from_json(r#"{"input": [1, 3, 3], "layers": [{"type": "conv2d", "in_channels": 1, "out_channels": 1, "kernel_size": 2}, {"type": "flatten"}]}"#, 0)?;
/// let x = Tensor::from_vec((0..9).map(f64::from).collect(), &[1, 1, 3, 3])?;
/// let y = Target::Values(Tensor::zeros(&[1, 4]));
/// let d = chainrule_explain::spatial::explain_element(&m, &x, &y, Loss::Sse, 0.1, "0.weight[0,0,1,1]")?;
/// assert!(d.verified());
/// assert_eq!(d.shown.len() + d.rest.0, 4); // one term per output position
/// # Ok::<(), chainrule::Error>(())
/// ```
pub fn explain_element(
    model: &Sequential<f64>,
    x: &Tensor<f64>,
    y: &Target<f64>,
    loss: Loss,
    lr: f64,
    element: &str,
) -> Result<SumDerivation> {
    let (name, index) = parse_element(element)?;
    let invalid = |message: String| Error::InvalidValue {
        field: "param".into(),
        message,
    };
    let position = model
        .params()
        .iter()
        .position(|p| p.name == name)
        .ok_or_else(|| invalid(format!("the model has no parameter {name:?}")))?;
    let shape = model.params()[position].value.shape().to_vec();
    if index.len() != shape.len() || index.iter().zip(&shape).any(|(i, s)| i >= s) {
        return Err(invalid(format!(
            "{element} is outside {name}'s shape {shape:?}"
        )));
    }
    let layer_index: usize = name
        .split('.')
        .next()
        .and_then(|l| l.parse().ok())
        .ok_or_else(|| invalid(format!("{name:?} does not start with its layer")))?;
    let is_bias = name.ends_with(".bias");
    let pass = record(model, x, y, loss)?;
    let input = &pass.values[layer_index];
    let output_grad = &pass.grads[layer_index + 1];
    let layer = &model.layers()[layer_index];
    let (formula, mut terms, padded) = match *layer {
        Layer::Conv2d { window, .. } => conv_terms(input, output_grad, &window, &index, is_bias),
        Layer::Linear { .. } => linear_terms(input, output_grad, &index, is_bias),
        Layer::BatchNorm { eps, .. } => {
            let per_channel = model.mode() == Mode::Train;
            let running = running_statistics(model, layer_index);
            norm_terms(
                input,
                output_grad,
                index[0],
                is_bias,
                NormSets::Channel {
                    eps,
                    running: if per_channel { None } else { running },
                },
            )
        }
        Layer::LayerNorm { ref shape, eps, .. } => norm_terms(
            input,
            output_grad,
            flat_index(&index, shape),
            is_bias,
            NormSets::Trailing {
                size: shape.iter().product(),
                eps,
            },
        ),
        _ => {
            return Err(invalid(format!(
                "{name}: {} layers have no parameters to derive",
                layer.type_name()
            )));
        }
    };
    terms.sort_by(|a, b| b.term.value.abs().total_cmp(&a.term.value.abs()));
    let gradient: f64 = terms.iter().map(|t| t.term.value).sum();
    let rest_terms = terms.split_off(SHOWN_TERMS.min(terms.len()));
    let upstream = terms
        .first()
        .and_then(|t| t.output.clone())
        .map(|e| upstream(model, &pass, layer_index + 1, e))
        .unwrap_or_default();
    let autodiff = pass.param_grads[position].to_vec()[flat_index(&index, &shape)];
    let old = model.params()[position].value.to_vec()[flat_index(&index, &shape)];
    Ok(SumDerivation {
        param: element.to_string(),
        formula,
        shown: terms.into_iter().map(|t| t.term).collect(),
        rest: (
            rest_terms.len(),
            rest_terms.iter().map(|t| t.term.value).sum(),
        ),
        padded,
        gradient,
        autodiff,
        upstream,
        update: (old, lr, old - lr * gradient),
        step: None,
    })
}

/// A term, and the layer output element whose gradient it multiplies.
struct Located {
    term: Term,
    output: Option<Vec<usize>>,
}

impl Located {
    fn new(at: String, factors: Vec<(String, f64)>, output: Vec<usize>) -> Located {
        let value = factors.iter().map(|(_, v)| v).product();
        Located {
            term: Term { at, factors, value },
            output: Some(output),
        }
    }
}

fn conv_terms(
    x: &Tensor<f64>,
    g: &Tensor<f64>,
    window: &Window2d,
    index: &[usize],
    bias: bool,
) -> (String, Vec<Located>, usize) {
    let (xs, gs) = (x.shape().to_vec(), g.shape().to_vec());
    let (xv, gv) = (x.to_vec(), g.to_vec());
    let (o, c, i, j) = if bias {
        (index[0], 0, 0, 0)
    } else {
        (index[0], index[1], index[2], index[3])
    };
    let mut terms = Vec::new();
    let mut padded = 0;
    for n in 0..gs[0] {
        for p in 0..gs[2] {
            for q in 0..gs[3] {
                let dz = gv[((n * gs[1] + o) * gs[2] + p) * gs[3] + q];
                let dz_symbol = format!("∂C/∂z[{n},{o},{p},{q}]");
                if bias {
                    terms.push(Located::new(
                        format!("n={n}, p={p}, q={q}"),
                        vec![(dz_symbol, dz)],
                        vec![n, o, p, q],
                    ));
                    continue;
                }
                let r =
                    (p * window.stride[0] + i * window.dilation[0]).checked_sub(window.padding[0]);
                let s =
                    (q * window.stride[1] + j * window.dilation[1]).checked_sub(window.padding[1]);
                match (r.filter(|&r| r < xs[2]), s.filter(|&s| s < xs[3])) {
                    (Some(r), Some(s)) => terms.push(Located::new(
                        format!("n={n}, p={p}, q={q}"),
                        vec![
                            (
                                format!("x[{n},{c},{r},{s}]"),
                                xv[((n * xs[1] + c) * xs[2] + r) * xs[3] + s],
                            ),
                            (dz_symbol, dz),
                        ],
                        vec![n, o, p, q],
                    )),
                    _ => padded += 1,
                }
            }
        }
    }
    let formula = if bias {
        format!("Σₙ Σₚ Σ_q ∂C/∂z[n,{o},p,q]")
    } else {
        let [s0, s1] = window.stride;
        let [d0, d1] = window.dilation;
        let [p0, p1] = window.padding;
        format!(
            "Σₙ Σₚ Σ_q x[n, {c}, {}, {}] · ∂C/∂z[n,{o},p,q]",
            position("p", s0, i * d0, p0),
            position("q", s1, j * d1, p1)
        )
    };
    (formula, terms, padded)
}

/// `p·s + offset − pad`, written simply.
fn position(var: &str, stride: usize, offset: usize, pad: usize) -> String {
    let mut text = if stride == 1 {
        var.to_string()
    } else {
        format!("{stride}{var}")
    };
    let shift = offset as i64 - pad as i64;
    if shift > 0 {
        text += &format!("+{shift}");
    } else if shift < 0 {
        text += &format!("−{}", -shift);
    }
    text
}

fn linear_terms(
    x: &Tensor<f64>,
    g: &Tensor<f64>,
    index: &[usize],
    bias: bool,
) -> (String, Vec<Located>, usize) {
    let (xv, gv) = (x.to_vec(), g.to_vec());
    let (rows, inputs, outputs) = (x.shape()[0], x.shape()[1], g.shape()[1]);
    let j = index[0];
    let terms = (0..rows)
        .map(|n| {
            let dz = (format!("∂C/∂z[{n},{j}]"), gv[n * outputs + j]);
            let factors = if bias {
                vec![dz]
            } else {
                let k = index[1];
                vec![(format!("a[{n},{k}]"), xv[n * inputs + k]), dz]
            };
            Located::new(format!("n={n}"), factors, vec![n, j])
        })
        .collect();
    let formula = if bias {
        format!("Σₙ ∂C/∂z[n,{j}]")
    } else {
        format!("Σₙ a[n,{}] · ∂C/∂z[n,{j}]", index[1])
    };
    (formula, terms, 0)
}

/// Which values a normalisation's parameter element scales.
enum NormSets {
    /// Batch norm: channel `c` of every sample and position; with the running
    /// statistics in evaluation mode.
    Channel {
        eps: f64,
        running: Option<(Vec<f64>, Vec<f64>)>,
    },
    /// Layer norm: element `k` of each sample's trailing block of `size`.
    Trailing { size: usize, eps: f64 },
}

fn norm_terms(
    x: &Tensor<f64>,
    g: &Tensor<f64>,
    k: usize,
    bias: bool,
    sets: NormSets,
) -> (String, Vec<Located>, usize) {
    let (xv, gv) = (x.to_vec(), g.to_vec());
    let shape = x.shape().to_vec();
    let mut terms = Vec::new();
    let mut add = |i: usize, mean: f64, var: f64, eps: f64| {
        let at = unravel(i, &shape);
        let name = at
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let dy = (format!("∂C/∂y[{name}]"), gv[i]);
        let factors = if bias {
            vec![dy]
        } else {
            let xhat = (xv[i] - mean) / (var + eps).sqrt();
            vec![(format!("x̂[{name}]"), xhat), dy]
        };
        terms.push(Located::new(name.clone(), factors, at));
    };
    match sets {
        NormSets::Channel { eps, running } => {
            let channels = shape[1];
            let inner: usize = shape[2..].iter().product();
            let members: Vec<usize> = (0..xv.len())
                .filter(|i| i / inner % channels == k)
                .collect();
            let (mean, var) = match running {
                Some((m, v)) => (m[k], v[k]),
                None => moments(members.iter().map(|&i| xv[i])),
            };
            for &i in &members {
                add(i, mean, var, eps);
            }
        }
        NormSets::Trailing { size, eps } => {
            for row in 0..xv.len() / size {
                let (mean, var) = moments(xv[row * size..(row + 1) * size].iter().copied());
                add(row * size + k, mean, var, eps);
            }
        }
    }
    let formula = if bias {
        "Σ ∂C/∂y over the values it shifts".to_string()
    } else {
        "Σ x̂ · ∂C/∂y over the values it scales, x̂ = (x − μ)/√(σ² + ε)".to_string()
    };
    (formula, terms, 0)
}

/// Mean and biased variance.
fn moments(values: impl Iterator<Item = f64> + Clone) -> (f64, f64) {
    let n = values.clone().count().max(1) as f64;
    let mean = values.clone().sum::<f64>() / n;
    let var = values.map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    (mean, var)
}

/// A batch norm layer's running mean and variance.
fn running_statistics(model: &Sequential<f64>, layer: usize) -> Option<(Vec<f64>, Vec<f64>)> {
    let find = |suffix: &str| {
        model
            .buffers()
            .iter()
            .find(|b| b.name == format!("{layer}.{suffix}"))
            .map(|b| b.value.to_vec())
    };
    Some((find("running_mean")?, find("running_var")?))
}

/// How ∂C/∂ of `element` of the output of layer `first − 1` was made by the layers
/// from `first` on, one line per layer, until a layer with parameters or the loss.
fn upstream(
    model: &Sequential<f64>,
    pass: &Pass,
    first: usize,
    mut element: Vec<usize>,
) -> Vec<String> {
    let mut lines = Vec::new();
    let at = |e: &[usize]| e.iter().map(usize::to_string).collect::<Vec<_>>().join(",");
    for layer_index in first..model.layers().len() {
        let (input, output) = (&pass.values[layer_index], &pass.values[layer_index + 1]);
        let (g_in, g_out) = (&pass.grads[layer_index], &pass.grads[layer_index + 1]);
        let here = flat_index(&element, input.shape());
        let g_here = g_in.to_vec()[here];
        let name = format!(
            "layer {layer_index} ({})",
            model.layers()[layer_index].type_name()
        );
        match &model.layers()[layer_index] {
            Layer::Activation(f) => {
                let z = input.to_vec()[here];
                let da = g_out.to_vec()[here];
                lines.push(format!(
                    "{name}: ∂C/∂z[{}] = ∂C/∂a · {}′(z) = {} · {} = {}",
                    at(&element),
                    f.name(),
                    number(da),
                    number(f.grad(z, output.to_vec()[here], 1.0)),
                    number(g_here)
                ));
            }
            Layer::Dropout { p } => {
                let kept = output.to_vec()[here] != 0.0 || input.to_vec()[here] == 0.0;
                lines.push(if model.mode() == Mode::Eval {
                    format!("{name}: the identity in evaluation mode")
                } else if kept {
                    format!(
                        "{name}: kept, so ∂C/∂a = ∂C/∂d · 1/(1 − {p}) = {}",
                        number(g_here)
                    )
                } else {
                    format!("{name}: dropped, so no gradient reaches it (0)")
                });
            }
            Layer::MaxPool2d { window } | Layer::AvgPool2d { window } => {
                let [_, _, oh, ow] = output.shape() else {
                    break;
                };
                let (n, c, r, s) = (element[0], element[1], element[2], element[3]);
                let windows: Vec<(usize, usize)> = (0..*oh)
                    .flat_map(|p| (0..*ow).map(move |q| (p, q)))
                    .filter(|&(p, q)| covers(window, p, r, 0) && covers(window, q, s, 1))
                    .collect();
                let xs = input.shape();
                let xv = input.to_vec();
                let gv = g_out.to_vec();
                let out_at = |p: usize, q: usize| ((n * xs[1] + c) * oh + p) * ow + q;
                let max_pool = matches!(model.layers()[layer_index], Layer::MaxPool2d { .. });
                let mut parts = Vec::new();
                for &(p, q) in &windows {
                    if max_pool {
                        let first_max = first_maximum(&xv, xs, n, c, window, p, q);
                        parts.push(if first_max == Some((r, s)) {
                            format!(
                                "the maximum of window ({p},{q}): receives its ∂C/∂y = {}",
                                number(gv[out_at(p, q)])
                            )
                        } else {
                            let m = first_max.map_or(f64::NAN, |(a, b)| {
                                xv[((n * xs[1] + c) * xs[2] + a) * xs[3] + b]
                            });
                            format!(
                                "not the maximum of window ({p},{q}) (that is {}): nothing",
                                number(m)
                            )
                        });
                    } else {
                        parts.push(format!(
                            "window ({p},{q}): ∂C/∂y / {} = {}",
                            window.kernel[0] * window.kernel[1],
                            number(gv[out_at(p, q)] / (window.kernel[0] * window.kernel[1]) as f64)
                        ));
                    }
                }
                lines.push(format!(
                    "{name}: a[{}] = {}: {}; total {}",
                    at(&element),
                    number(xv[here]),
                    parts.join("; "),
                    number(g_here)
                ));
                if let Some(&(p, q)) = windows.iter().find(|&&(p, q)| {
                    !max_pool || first_maximum(&xv, xs, n, c, window, p, q) == Some((r, s))
                }) {
                    element = vec![n, c, p, q];
                    continue;
                }
                break;
            }
            Layer::Flatten => {
                let flat = flat_index(&element[1..], &input.shape()[1..]);
                lines.push(format!(
                    "{name}: a[{}] is element {flat} of sample {}'s row",
                    at(&element),
                    element[0]
                ));
                element = vec![element[0], flat];
                continue;
            }
            Layer::BatchNorm { eps, affine, .. } if model.mode() == Mode::Train => {
                lines.push(batch_norm_paths(
                    model,
                    pass,
                    layer_index,
                    &element,
                    *eps,
                    *affine,
                ));
                break;
            }
            Layer::Identity => continue,
            other => {
                lines.push(format!(
                    "{name}: ∂C/∂a[{}] = {} (the sum over the {} outputs it feeds)",
                    at(&element),
                    number(g_here),
                    other.type_name()
                ));
                break;
            }
        }
    }
    lines
}

/// Batch norm's backward for one input element, as its three paths: directly through
/// x̂, through the batch mean, and through the batch variance.
fn batch_norm_paths(
    model: &Sequential<f64>,
    pass: &Pass,
    layer: usize,
    element: &[usize],
    eps: f64,
    affine: bool,
) -> String {
    let (x, gy) = (&pass.values[layer], &pass.grads[layer + 1]);
    let shape = x.shape();
    let (xv, gv) = (x.to_vec(), gy.to_vec());
    let channels = shape[1];
    let inner: usize = shape[2..].iter().product();
    let c = element[1];
    let gamma = if affine {
        model
            .param_offset(layer)
            .map_or(1.0, |o| model.params()[o].value.to_vec()[c])
    } else {
        1.0
    };
    let members: Vec<usize> = (0..xv.len())
        .filter(|i| i / inner % channels == c)
        .collect();
    let (mean, var) = moments(members.iter().map(|&i| xv[i]));
    let sd = (var + eps).sqrt();
    let m = members.len() as f64;
    let xhat = |i: usize| (xv[i] - mean) / sd;
    let mean_g = members.iter().map(|&i| gamma * gv[i]).sum::<f64>() / m;
    let mean_gx = members
        .iter()
        .map(|&i| gamma * gv[i] * xhat(i))
        .sum::<f64>()
        / m;
    let i = flat_index(element, shape);
    let direct = gamma * gv[i] / sd;
    let through_mean = -mean_g / sd;
    let through_var = -xhat(i) * mean_gx / sd;
    format!(
        "layer {layer} (batch norm, channel {c}, {} values, μ = {}, σ = {}): ∂C/∂x = {} (through x̂) {} (through μ) {} (through σ²) = {}; autodiff {}",
        members.len(),
        number(mean),
        number(sd),
        number(direct),
        signed(through_mean),
        signed(through_var),
        number(direct + through_mean + through_var),
        number(pass.grads[layer].to_vec()[i])
    )
}

fn signed(v: f64) -> String {
    if v < 0.0 {
        format!("− {}", number(-v))
    } else {
        format!("+ {}", number(v))
    }
}

/// Whether output position `o` of a window reads input position `i` along `axis`.
fn covers(window: &Window2d, o: usize, i: usize, axis: usize) -> bool {
    (0..window.kernel[axis]).any(|k| window.source(axis, o, k, usize::MAX) == Some(i))
}

/// The first maximum (row-major) of window (p, q) of plane (n, c).
fn first_maximum(
    x: &[f64],
    shape: &[usize],
    n: usize,
    c: usize,
    window: &Window2d,
    p: usize,
    q: usize,
) -> Option<(usize, usize)> {
    let mut best: Option<((usize, usize), f64)> = None;
    for i in 0..window.kernel[0] {
        let Some(r) = window.source(0, p, i, shape[2]) else {
            continue;
        };
        for j in 0..window.kernel[1] {
            let Some(s) = window.source(1, q, j, shape[3]) else {
                continue;
            };
            let v = x[((n * shape[1] + c) * shape[2] + r) * shape[3] + s];
            if best.is_none_or(|(_, m)| v > m) {
                best = Some(((r, s), v));
            }
        }
    }
    best.map(|(at, _)| at)
}

/// The row-major flat index of `index` in `shape`.
fn flat_index(index: &[usize], shape: &[usize]) -> usize {
    index.iter().zip(shape).fold(0, |acc, (i, s)| acc * s + i)
}

/// The index of row-major position `flat` in `shape`.
fn unravel(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut index = vec![0; shape.len()];
    for (i, &s) in shape.iter().enumerate().rev() {
        index[i] = flat % s.max(1);
        flat /= s.max(1);
    }
    index
}
