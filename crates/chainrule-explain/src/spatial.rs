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
pub use chainrule::autodiff::Term;
use chainrule::autodiff::{Gradients, LocalSum, Op};
use chainrule::loss::{Loss, Target};
use chainrule::nn::{Module, Sequential};
use chainrule::{Error, Result, Tape, Tensor};
use serde_json::json;

/// How many of the largest terms a derivation lists.
pub const SHOWN_TERMS: usize = 6;

/// Whether `model` records operations beyond the dense layers and element-wise
/// functions of [`crate::derive`] (convolution, pooling, reshaping, dropout,
/// normalisation): its derivations are sums over positions, written by this module.
/// Read from the operations one recorded forward pass of two zero samples makes (two:
/// batch norm in training mode needs more than one value per channel).
///
/// ```
/// use chainrule::nn::Sequential;
/// let m = Sequential::<f64>::from_json(r#"{"layers": [{"type": "linear", "in": 2, "out": 3}, {"type": "dropout"}]}"#, 0)?;
/// assert!(chainrule_explain::spatial::is_tensor_network(&m));
/// let mlp = Sequential::<f64>::from_json(r#"{"layers": [{"type": "linear", "in": 2, "out": 3}, {"type": "tanh"}]}"#, 0)?;
/// assert!(!chainrule_explain::spatial::is_tensor_network(&mlp));
/// # Ok::<(), chainrule::Error>(())
/// ```
pub fn is_tensor_network(model: &Sequential<f64>) -> bool {
    let Some(sample) = model.input_shape() else {
        return false;
    };
    let shape: Vec<usize> = std::iter::once(2).chain(sample).collect();
    let tape = Tape::new();
    let params = model.bind(&tape);
    let Ok(outputs) = model.forward_trace(&params, tape.constant(Tensor::zeros(&shape))) else {
        return false;
    };
    outputs.iter().any(|o| {
        !matches!(
            tape.op(o.id()),
            None | Some(Op::Linear | Op::LinearRelu | Op::Map(_) | Op::Softmax { .. })
        )
    })
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

/// One recorded forward and backward pass of a model and its loss: the tape that
/// training records, every node's gradient kept, and which node is which layer's
/// output (for naming only).
struct Pass {
    tape: Tape<f64>,
}

/// The nodes of a [`Pass`] that the derivations need, once recorded.
struct Recorded {
    /// Every node's gradient.
    grads: Gradients<f64>,
    /// Each parameter's node, in `model.params()` order.
    params: Vec<usize>,
    /// Each layer's output node, in layer order.
    outputs: Vec<usize>,
}

impl Pass {
    fn record(
        &self,
        model: &Sequential<f64>,
        x: &Tensor<f64>,
        y: &Target<f64>,
        loss: Loss,
    ) -> Result<Recorded> {
        let tape = &self.tape;
        let params = model.bind(tape);
        let input = tape.param(x.clone());
        let outputs = model.forward_trace(&params, input)?;
        let last = *outputs.last().ok_or_else(|| Error::InvalidValue {
            field: "model".into(),
            message: "has no layers".into(),
        })?;
        let c = loss.compute(last, y)?;
        Ok(Recorded {
            grads: c.backward_retain_all()?,
            params: params.iter().map(|p| p.id()).collect(),
            outputs: outputs.iter().map(|o| o.id()).collect(),
        })
    }

    /// The first node that reads node `id`, and at which of its inputs.
    fn consumer(&self, id: usize) -> Option<(usize, usize)> {
        (id + 1..self.tape.len())
            .find_map(|k| Some((k, self.tape.inputs(k).iter().position(|&i| i == id)?)))
    }

    /// ∂C/∂(element `at` of input `slot` of node `node`), as that node's operation
    /// declares it.
    fn local_sum(
        &self,
        grads: &Gradients<f64>,
        node: usize,
        slot: usize,
        at: &[usize],
    ) -> Option<LocalSum> {
        let tape = &self.tape;
        let inputs: Vec<Tensor<f64>> = tape
            .inputs(node)
            .iter()
            .map(|&i| tape.value(i))
            .collect::<Option<_>>()?;
        let output = tape.value(node)?;
        let grad = grads
            .by_id(node)
            .cloned()
            .unwrap_or_else(|| Tensor::zeros(output.shape()));
        let inputs: Vec<&Tensor<f64>> = inputs.iter().collect();
        tape.op(node)?.local_sum(&inputs, &output, &grad, slot, at)
    }

    /// `layer 3 (max_pool2d)` for a layer's output node, else the operation's label.
    fn name(&self, model: &Sequential<f64>, recorded: &Recorded, node: usize) -> String {
        match recorded.outputs.iter().position(|&o| o == node) {
            Some(layer) => format!("layer {layer} ({})", model.layers()[layer].type_name()),
            None => self.tape.label(node).unwrap_or_default(),
        }
    }
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
    let pass = Pass { tape: Tape::new() };
    let recorded = pass.record(model, x, y, loss)?;
    Ok(model
        .params()
        .iter()
        .zip(&recorded.params)
        .map(|(p, &id)| {
            let values = recorded
                .grads
                .by_id(id)
                .map(Tensor::to_vec)
                .unwrap_or_default();
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
/// the batch `x`, `y`, in the model's mode, with the update at `lr`: the sum that
/// the operation reading the parameter declares ([`Op::local_sum`]), and the way the
/// largest term's ∂C/∂ came down from the loss, one recorded operation at a time.
///
/// # Errors
/// [`Error::InvalidValue`] for an element the model does not have, or one no
/// recorded operation reads; shape errors when the data does not fit.
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
    let pass = Pass { tape: Tape::new() };
    let recorded = pass.record(model, x, y, loss)?;
    let unread = || invalid(format!("{name}: no recorded operation reads it"));
    // The operation that reads the parameter; a reshape on the way (batch norm's γ
    // in evaluation mode, broadcast per channel) passes each element on unchanged.
    let (mut node, mut slot) = pass
        .consumer(recorded.params[position])
        .ok_or_else(unread)?;
    let mut at = index.clone();
    let sum = loop {
        let sum = pass
            .local_sum(&recorded.grads, node, slot, &at)
            .ok_or_else(unread)?;
        match (pass.tape.op(node), sum.terms.first()) {
            (Some(Op::Reshape { .. }), Some(term)) if sum.terms.len() == 1 => {
                at = term.output.clone().ok_or_else(unread)?;
                (node, slot) = pass.consumer(node).ok_or_else(unread)?;
            }
            _ => break sum,
        }
    };
    let gradient = sum.total();
    let mut terms = sum.terms;
    terms.sort_by(|a, b| b.value.abs().total_cmp(&a.value.abs()));
    let rest_terms = terms.split_off(SHOWN_TERMS.min(terms.len()));
    let upstream = terms
        .first()
        .and_then(|t| t.output.clone())
        .map(|e| upstream(model, &pass, &recorded, node, e))
        .unwrap_or_default();
    let flat = flat_index(&index, &shape);
    let autodiff = recorded
        .grads
        .by_id(recorded.params[position])
        .map_or(0.0, |g| g.to_vec()[flat]);
    let old = model.params()[position].value.to_vec()[flat];
    Ok(SumDerivation {
        param: element.to_string(),
        formula: sum.formula,
        shown: terms,
        rest: (rest_terms.len(), rest_terms.iter().map(|t| t.value).sum()),
        padded: sum.padded,
        gradient,
        autodiff,
        upstream,
        update: (old, lr, old - lr * gradient),
        step: None,
    })
}

/// How ∂C/∂ of `element` of node `from`'s output came down from the loss: one line
/// per recorded operation above it, each the sum its operation declares with the
/// numbers, and autodiff's value beside it. The walk follows the largest term, and
/// stops at the loss or after an operation that has parameters of its own (the next
/// layer with weights, whose sum over its outputs the line shows).
fn upstream(
    model: &Sequential<f64>,
    pass: &Pass,
    recorded: &Recorded,
    from: usize,
    mut element: Vec<usize>,
) -> Vec<String> {
    let mut lines = Vec::new();
    let mut node = from;
    let at = |e: &[usize]| e.iter().map(usize::to_string).collect::<Vec<_>>().join(",");
    while let Some((next, slot)) = pass.consumer(node) {
        let g_here = recorded
            .grads
            .by_id(node)
            .map_or(0.0, |g| g.to_vec()[flat_index(&element, g.shape())]);
        let name = pass.name(model, recorded, next);
        let Some(sum) = pass.local_sum(&recorded.grads, next, slot, &element) else {
            lines.push(format!(
                "{name}: ∂C/∂a[{}] = {} (from the loss)",
                at(&element),
                number(g_here)
            ));
            break;
        };
        lines.push(sum_line(&name, &at(&element), &sum, g_here));
        let largest = sum
            .terms
            .iter()
            .max_by(|a, b| a.value.abs().total_cmp(&b.value.abs()));
        let has_parameters = pass
            .tape
            .inputs(next)
            .iter()
            .any(|i| *i != node && recorded.params.contains(i));
        match largest.and_then(|t| t.output.clone()) {
            Some(output) if !has_parameters => {
                element = output;
                node = next;
            }
            _ => break,
        }
    }
    lines
}

/// One line of the walk: `name [context]: ∂C/∂a[e] = formula = terms = total;
/// autodiff g ✓`. Up to four terms are shown in the operation's order; more are
/// shown largest first, three of them and the rest's total. A single term is not
/// repeated: its factors' product is the total.
fn sum_line(name: &str, element: &str, sum: &LocalSum, autodiff: f64) -> String {
    let single = sum.terms.len() == 1;
    let term = |t: &Term| {
        let factors: Vec<String> = t.factors.iter().map(|(_, v)| number(*v)).collect();
        let mut text = factors.join(" · ");
        if t.factors.len() > 1 && !single {
            text += &format!(" = {}", number(t.value));
        }
        if !t.at.is_empty() {
            text += &format!(" ({})", t.at);
        }
        text
    };
    let mut terms: Vec<&Term> = sum.terms.iter().collect();
    let mut parts: Vec<String> = Vec::new();
    if terms.len() > 4 {
        terms.sort_by(|a, b| b.value.abs().total_cmp(&a.value.abs()));
        parts.extend(terms[..3].iter().map(|t| term(t)));
        let rest: f64 = terms[3..].iter().map(|t| t.value).sum();
        parts.push(format!(
            "{} more terms, together {}",
            terms.len() - 3,
            number(rest)
        ));
    } else {
        parts.extend(terms.iter().map(|t| term(t)));
    }
    // A negative number is subtracted: a − b, not a + -b (a product keeps its
    // factors' signs and is added).
    let mut shown = String::new();
    for (i, text) in parts.iter().enumerate() {
        match text.strip_prefix('-') {
            _ if i == 0 => shown += text,
            Some(positive) if !text.contains(" · ") => shown += &format!(" − {positive}"),
            _ => shown += &format!(" + {text}"),
        }
    }
    let context = if sum.context.is_empty() {
        String::new()
    } else {
        let named: Vec<String> = sum
            .context
            .iter()
            .map(|(what, v)| format!("{what} = {}", number(*v)))
            .collect();
        format!(" [{}]", named.join(", "))
    };
    let total = sum.total();
    let verdict = if crate::derive::agrees(total, autodiff) {
        "✓"
    } else {
        "✗"
    };
    let body = match sum.terms.as_slice() {
        [] => format!("{} = 0", sum.formula),
        [t] if t.factors.len() == 1 && t.at.is_empty() => {
            format!("{} = {}", sum.formula, number(total))
        }
        [t] if t.factors.len() == 1 => format!("{} = {} ({})", sum.formula, number(total), t.at),
        _ => format!("{} = {shown} = {}", sum.formula, number(total)),
    };
    format!(
        "{name}{context}: ∂C/∂a[{element}] = {body}; autodiff {} {verdict}",
        number(autodiff)
    )
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
