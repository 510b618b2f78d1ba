//! Chain-rule derivations of ∂C/∂(one parameter element), with every factor's
//! number, read from the tape of an ordinary forward and backward pass.
//!
//! For a weight w⁽ˡ⁾ⱼₖ of linear layer l (unit j, input k):
//!
//! ∂C/∂w⁽ˡ⁾ⱼₖ = ∂z⁽ˡ⁾ⱼ/∂w⁽ˡ⁾ⱼₖ · ∂a⁽ˡ⁾ⱼ/∂z⁽ˡ⁾ⱼ · ∂C/∂a⁽ˡ⁾ⱼ = a⁽ˡ⁻¹⁾ₖ · σ′(z⁽ˡ⁾ⱼ) · ∂C/∂a⁽ˡ⁾ⱼ
//!
//! where ∂C/∂a⁽ˡ⁾ⱼ is the loss's derivative at the output layer and, for a hidden
//! layer, the sum over the units it feeds (notebook 001):
//! Σᵢ ∂z⁽ˡ⁺¹⁾ᵢ/∂a⁽ˡ⁾ⱼ · ∂a⁽ˡ⁺¹⁾ᵢ/∂z⁽ˡ⁺¹⁾ᵢ · ∂C/∂a⁽ˡ⁺¹⁾ᵢ. Over a batch, the per-sample
//! terms are summed; the loss's reduction (1/N, 1/M, the factor 2) sits in ∂C/∂a.
//! Every number comes from the tape; the product is checked against autodiff.

use crate::notation::{Symbol, number, operand, partial_latex, partial_text, superscript};
use crate::step::Step;
use crate::symbolic::Expr;
use chainrule::autodiff::{Elementwise, Op};
use chainrule::loss::{Loss, Target};
use chainrule::nn::{Module, Sequential};
use chainrule::{Error, Result, Tape, Tensor, Var};
use serde_json::json;

/// Which parameter element: `"2.weight[0,1]"` (row, column, 0-based as in PyTorch)
/// or `"2.bias[0]"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamElement {
    /// The model layer (position in `layers`).
    pub layer: usize,
    /// `weight` or `bias`.
    pub bias: bool,
    /// Output unit (row), 0-based.
    pub unit: usize,
    /// Input (column) for a weight, 0-based.
    pub input: usize,
}

impl ParamElement {
    /// Parses `"{layer}.weight[j,k]"` or `"{layer}.bias[j]"`.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] (field `param`) for anything else.
    ///
    /// ```
    /// use chainrule_explain::derive::ParamElement;
    /// let p = ParamElement::parse("2.weight[0,1]")?;
    /// assert_eq!((p.layer, p.bias, p.unit, p.input), (2, false, 0, 1));
    /// assert!(ParamElement::parse("2.weight").is_err());
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn parse(text: &str) -> Result<ParamElement> {
        let bad = || Error::InvalidValue {
            field: "param".into(),
            message: format!("{text:?} is not LAYER.weight[ROW,COLUMN] or LAYER.bias[ROW]"),
        };
        let (name, rest) = text.split_once('[').ok_or_else(bad)?;
        let indices: Vec<usize> = rest
            .strip_suffix(']')
            .ok_or_else(bad)?
            .split(',')
            .map(|s| s.trim().parse().map_err(|_| bad()))
            .collect::<Result<_>>()?;
        let (layer, kind) = name.split_once('.').ok_or_else(bad)?;
        let layer = layer.parse().map_err(|_| bad())?;
        match (kind, indices.as_slice()) {
            ("weight", &[unit, input]) => Ok(ParamElement {
                layer,
                bias: false,
                unit,
                input,
            }),
            ("bias", &[unit]) => Ok(ParamElement {
                layer,
                bias: true,
                unit,
                input: 0,
            }),
            _ => Err(bad()),
        }
    }

    /// The PyTorch-style name, e.g. `"2.weight[0,1]"`.
    pub fn name(&self) -> String {
        if self.bias {
            format!("{}.bias[{}]", self.layer, self.unit)
        } else {
            format!("{}.weight[{},{}]", self.layer, self.unit, self.input)
        }
    }
}

/// One factor of a chain: its symbolic name, its formula, the formula with numbers,
/// and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Factor {
    /// e.g. `∂z⁽²⁾₁/∂w⁽²⁾₁,₁` (text) and its LaTeX.
    pub name: (String, String),
    /// e.g. `a⁽¹⁾₁` or `relu′(z⁽²⁾₁)` (text, LaTeX).
    pub formula: (String, String),
    /// The formula with numbers substituted (text), when that differs from the value.
    pub substituted: Option<String>,
    /// The factor's value.
    pub value: f64,
}

impl Factor {
    /// The formula's LaTeX as a factor of a product: in parentheses when it is a sum
    /// or a difference at its top level.
    ///
    /// ```
    /// use chainrule_explain::derive::Factor;
    /// let f = |latex: &str| Factor { name: (String::new(), String::new()), formula: (String::new(), latex.into()), substituted: None, value: 0.0 };
    /// assert_eq!(f(r"1 - \tanh^2(z)").latex_operand(), r"\left(1 - \tanh^2(z)\right)");
    /// assert_eq!(f(r"\sigma(z)(1 - \sigma(z))").latex_operand(), r"\sigma(z)(1 - \sigma(z))");
    /// assert_eq!(f("-x").latex_operand(), r"\left(-x\right)");
    /// ```
    pub fn latex_operand(&self) -> String {
        let latex = &self.formula.1;
        let mut depth = 0i32;
        let mut top_level_sum = latex.starts_with('-');
        for (i, c) in latex.char_indices() {
            match c {
                '(' | '{' | '[' => depth += 1,
                ')' | '}' | ']' => depth -= 1,
                '+' | '-' if depth == 0 && i > 0 => top_level_sum = true,
                _ => {}
            }
        }
        if top_level_sum {
            format!(r"\left({latex}\right)")
        } else {
            latex.clone()
        }
    }
}

/// ∂C/∂a of a hidden unit, as the sum over the units it feeds.
#[derive(Debug, Clone, PartialEq)]
pub struct HiddenSum {
    /// One term per unit i of the next layer: (w⁽ˡ⁺¹⁾ᵢⱼ, σ′(z⁽ˡ⁺¹⁾ᵢ), ∂C/∂a⁽ˡ⁺¹⁾ᵢ).
    pub terms: Vec<(f64, f64, f64)>,
    /// The next layer's number.
    pub next_layer: usize,
    /// The next layer's activation name.
    pub next_activation: String,
    /// The sum.
    pub value: f64,
}

/// The chain for one sample of the batch.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleChain {
    /// ∂z/∂θ, ∂a/∂z (absent for softmax, whose Jacobian is not diagonal: then the last
    /// factor is ∂C/∂z), ∂C/∂a.
    pub factors: Vec<Factor>,
    /// ∂C/∂a expanded over the next layer, for a hidden unit.
    pub hidden: Option<HiddenSum>,
    /// The product of the factors.
    pub term: f64,
}

/// A derivation of ∂C/∂θ for one parameter element θ.
#[derive(Debug, Clone, PartialEq)]
pub struct Derivation {
    /// The element, PyTorch-named.
    pub param: String,
    /// θ in the notebooks' notation.
    pub symbol: Symbol,
    /// The unit's pre-activation z⁽ˡ⁾ⱼ and activation a⁽ˡ⁾ⱼ symbols.
    pub z: Symbol,
    /// a⁽ˡ⁾ⱼ.
    pub a: Symbol,
    /// One chain per sample.
    pub samples: Vec<SampleChain>,
    /// How the loss reduces over the batch, in words.
    pub reduction: String,
    /// Σ of the per-sample terms.
    pub gradient: f64,
    /// What backprop computed for the same element (the check).
    pub autodiff: f64,
    /// The gradient-descent step: learning rate, old value, new value.
    pub update: (f64, f64, f64),
    /// A run's optimizer's step, shown instead of plain gradient descent when set.
    pub step: Option<Step>,
}

/// Where each linear layer's z and a live in the model's layer list.
struct Unit {
    /// The dense layer.
    dense: Dense,
    /// Position of the layer whose output is a (the last activation before the next
    /// linear layer, or the linear layer itself).
    output: usize,
    /// The activation between z and a, by name (`identity` if none; `composite` for
    /// more than one).
    activation: Activation,
}

/// What turns a unit's z into its a, as the recorded graph shows it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Activation {
    /// No operation between them (no activation, or an identity layer).
    Identity,
    /// A function of the element-wise table: σ′ comes from there.
    Function(Elementwise),
    /// Softmax or a stack of activations: no element-wise σ′.
    Coupled,
}

impl Activation {
    /// The activation recorded between node `z` and node `a` of `tape`.
    fn recorded(tape: &Tape<f64>, z: usize, a: usize) -> Activation {
        if a == z {
            return Activation::Identity;
        }
        match tape.op(a) {
            Some(Op::Map(f)) if tape.inputs(a) == [z] => Activation::Function(f),
            _ => Activation::Coupled,
        }
    }

    fn name(self) -> String {
        match self {
            Activation::Identity => "identity".into(),
            Activation::Function(Elementwise::Sigmoid) => "σ".into(),
            Activation::Function(f) => Op::Map(f).label(),
            Activation::Coupled => "softmax".into(),
        }
    }

    /// σ′ at z, given a = σ(z), from the element-wise table.
    fn derivative(self, z: f64, a: f64) -> Option<f64> {
        match self {
            Activation::Identity => Some(1.0),
            Activation::Function(f) => Some(f.derivative(z, a)),
            Activation::Coupled => None,
        }
    }

    /// σ′(z) written out (text, LaTeX) and with the numbers `z` and `a` put in (none
    /// for the identity, whose derivative is its value).
    fn formula(
        self,
        z: &Symbol,
        a: &Symbol,
        zn: f64,
        an: f64,
    ) -> ((String, String), Option<String>) {
        let f = match self {
            Activation::Function(f) => f,
            _ => return (("1".into(), "1".into()), None),
        };
        match f.derivative_notation(
            (&z.text(), &z.latex()),
            (&a.text(), &a.latex()),
            (&number(zn), &number(an)),
        ) {
            Some(n) => ((n.text, n.latex), Some(n.with_numbers)),
            None => {
                let d = f.derivative_formula(Expr::Sym("z".into()));
                ((d.text(), d.latex()), None)
            }
        }
    }
}

/// A dense layer, as its parameters show it: a 2-D weight `[outputs, inputs]` named
/// `{layer}.weight`, and a bias `{layer}.bias` when it has one. In the networks this
/// module derives (dense layers and element-wise functions between them) only the
/// dense layers have parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Dense {
    /// Position in the model's layers.
    pub layer: usize,
    /// Index of the weight in `model.params()`.
    pub offset: usize,
    /// Rows of the weight.
    pub outputs: usize,
    /// Columns of the weight.
    pub inputs: usize,
    /// Whether the bias follows the weight.
    pub bias: bool,
}

/// The dense layers of `model`, in order.
pub(crate) fn dense_layers(model: &Sequential<f64>) -> Vec<Dense> {
    let params = model.params();
    params
        .iter()
        .enumerate()
        .filter_map(|(offset, p)| {
            let layer = p.name.strip_suffix(".weight")?.parse().ok()?;
            let &[outputs, inputs] = p.value.shape() else {
                return None;
            };
            let bias = params
                .get(offset + 1)
                .is_some_and(|b| b.name == format!("{layer}.bias"));
            Some(Dense {
                layer,
                offset,
                outputs,
                inputs,
                bias,
            })
        })
        .collect()
}

/// Where each dense layer's z and a live in the model's layer list, with the
/// activation between them read from the tape that recorded `trace`.
fn units(model: &Sequential<f64>, tape: &Tape<f64>, trace: &[Var<'_, f64>]) -> Vec<Unit> {
    let dense = dense_layers(model);
    let mut units = Vec::new();
    for (d, layer) in dense.iter().enumerate() {
        let i = layer.layer;
        let next = dense.get(d + 1).map_or(trace.len(), |n| n.layer);
        let activations: Vec<usize> = (i + 1..next).collect();
        let output = activations.last().copied().unwrap_or(i);
        let activation = match activations.as_slice() {
            [] => Activation::Identity,
            [k] => Activation::recorded(tape, trace[i].id(), trace[*k].id()),
            _ => Activation::Coupled,
        };
        units.push(Unit {
            dense: *layer,
            output,
            activation,
        });
    }
    units
}

/// Explains ∂C/∂θ for parameter element `which` of `model` on the batch `(x, target)`,
/// with learning rate `lr` for the update.
///
/// # Errors
/// [`Error::InvalidValue`] when the element does not exist; shape errors when the
/// data does not fit the model.
///
/// ```
/// use chainrule::{loss::{Loss, Target}, nn::{Module, Sequential}, Tensor};
/// use chainrule_explain::derive::{explain, ParamElement};
/// // Notebook 001's first example: ŷ = w·x, C = (ŷ − y)², x = 1, w = 2, y = 1.
/// let mut m = Sequential::<f64>::from_json(r#"{"layers": [{"type": "linear", "in": 1, "out": 1, "bias": false}]}"#, 0)?;
/// m.params_mut()[0].value = Tensor::full(&[1, 1], 2.0);
/// let d = explain(&m, &Tensor::full(&[1, 1], 1.0), &Target::Values(Tensor::full(&[1, 1], 1.0)),
///                 Loss::Sse, 0.1, &ParamElement::parse("0.weight[0,0]")?)?;
/// assert_eq!(d.gradient, 2.0);               // x · 1 · 2(ŷ − y)
/// assert_eq!(d.update.2, 1.8);
/// # Ok::<(), chainrule::Error>(())
/// ```
pub fn explain(
    model: &Sequential<f64>,
    x: &Tensor<f64>,
    target: &Target<f64>,
    loss: Loss,
    lr: f64,
    which: &ParamElement,
) -> Result<Derivation> {
    let tape = Tape::new();
    let params = model.bind(&tape);
    let trace = model.forward_trace(&params, tape.constant(x.clone()))?;
    let units = units(model, &tape, &trace);
    let position = units
        .iter()
        .position(|u| u.dense.layer == which.layer)
        .ok_or_else(|| Error::InvalidValue {
            field: "param".into(),
            message: format!("layer {} is not a linear layer", which.layer),
        })?;
    let unit = &units[position];
    let Dense {
        inputs,
        outputs,
        bias,
        ..
    } = unit.dense;
    if which.unit >= outputs || (!which.bias && which.input >= inputs) || (which.bias && !bias) {
        return Err(Error::InvalidValue {
            field: "param".into(),
            message: format!(
                "{} does not exist in linear({inputs} → {outputs})",
                which.name()
            ),
        });
    }

    let c = loss.compute(*trace.last().expect("a layer"), target)?;
    let grads = c.backward_retain_all()?;
    let value = |layer: usize| trace[layer].value();
    let grad = |layer: usize| {
        grads
            .wrt(trace[layer])
            .cloned()
            .unwrap_or_else(|| Tensor::zeros(&trace[layer].shape()))
    };
    let at = |t: &Tensor<f64>, n: usize, j: usize| t.get(&[n, j]).unwrap_or(0.0);

    let l = position + 1;
    let (j, k) = (which.unit, which.input);
    let symbol = if which.bias {
        Symbol::new('b', Some(l), &[j + 1])
    } else {
        Symbol::new('w', Some(l), &[j + 1, k + 1])
    };
    let z = Symbol::new('z', Some(l), &[j + 1]);
    let a = Symbol::new('a', Some(l), &[j + 1]);
    // ∂z/∂w is the linear layer's own input: x itself only when nothing comes before
    // the layer; an activation before the first linear layer gives a⁽⁰⁾ = f(x).
    let prev = match (position, unit.dense.layer) {
        (0, 0) => Symbol::new('x', None, &[k + 1]),
        (0, _) => Symbol::new('a', Some(0), &[k + 1]),
        _ => Symbol::new('a', Some(l - 1), &[k + 1]),
    };
    let prev_values = match unit.dense.layer {
        0 => x.clone(),
        before => value(before - 1),
    };
    let (z_values, a_values, dc_da, dc_dz) = (
        value(unit.dense.layer),
        value(unit.output),
        grad(unit.output),
        grad(unit.dense.layer),
    );
    let rows = x.shape()[0];
    let last = position + 1 == units.len() && unit.output + 1 == model.layers().len();
    let y = Symbol::new('y', None, &[j + 1]);
    let count = trace.last().map_or(1, |t| t.value().len());
    let notation = loss.gradient_notation(
        (&a.text(), &a.latex()),
        (&y.text(), &y.latex()),
        count,
        rows,
    );
    let (loss_text, loss_latex, reduction) = (notation.text, notation.latex, notation.reduction);

    let mut samples = Vec::with_capacity(rows);
    for n in 0..rows {
        let mut factors = Vec::new();
        let dz = if which.bias {
            1.0
        } else {
            at(&prev_values, n, k)
        };
        factors.push(Factor {
            name: (
                partial_text(&z.text(), &symbol.text()),
                partial_latex(&z.latex(), &symbol.latex()),
            ),
            formula: if which.bias {
                ("1".into(), "1".into())
            } else {
                (prev.text(), prev.latex())
            },
            substituted: None,
            value: dz,
        });
        let (zn, an) = (at(&z_values, n, j), at(&a_values, n, j));
        let mut hidden = None;
        match unit.activation.derivative(zn, an) {
            Some(sigma) => {
                let ((text, latex), substituted) = unit.activation.formula(&z, &a, zn, an);
                factors.push(Factor {
                    name: (
                        partial_text(&a.text(), &z.text()),
                        partial_latex(&a.latex(), &z.latex()),
                    ),
                    formula: (text, latex),
                    substituted,
                    value: sigma,
                });
                let dca = at(&dc_da, n, j);
                let (formula, substituted) = if last {
                    let y_value = match target {
                        Target::Values(t) => at(t, n, j),
                        Target::Classes(c) => f64::from(u8::from(c.get(n) == Some(&j))),
                    };
                    (
                        (loss_text.clone(), loss_latex.clone()),
                        Some({
                            // softmax couples a row: its argument stays a placeholder
                            let a = if loss.couples_outputs() {
                                "·".to_string()
                            } else {
                                number(an)
                            };
                            let y = operand(y_value);
                            loss.gradient_notation((&a, &a), (&y, &y), count, rows).text
                        }),
                    )
                } else {
                    let next = &units[position + 1];
                    let w_next = model.params()[next.dense.offset].value.clone();
                    let (nz, na, nd) = (
                        value(next.dense.layer),
                        value(next.output),
                        grad(next.output),
                    );
                    let next_out = w_next.shape()[0];
                    let terms: Vec<(f64, f64, f64)> = (0..next_out)
                        .map(|i| {
                            let s = next.activation.derivative(at(&nz, n, i), at(&na, n, i));
                            // For a coupled next activation, ∂C/∂z stands in for σ′·∂C/∂a.
                            match s {
                                Some(s) => (w_next.get(&[i, j]).unwrap_or(0.0), s, at(&nd, n, i)),
                                None => (
                                    w_next.get(&[i, j]).unwrap_or(0.0),
                                    1.0,
                                    at(&grad(next.dense.layer), n, i),
                                ),
                            }
                        })
                        .collect();
                    let sum = terms.iter().map(|(w, s, d)| w * s * d).sum();
                    hidden = Some(HiddenSum {
                        terms,
                        next_layer: l + 1,
                        next_activation: next.activation.name(),
                        value: sum,
                    });
                    let up = superscript(l + 1);
                    let text = format!(
                        "Σᵢ ∂z⁽{up}⁾ᵢ/∂{} · ∂a⁽{up}⁾ᵢ/∂z⁽{up}⁾ᵢ · ∂C/∂a⁽{up}⁾ᵢ",
                        a.text()
                    );
                    let latex = format!(
                        r"\sum_i \frac{{\partial z^{{({0})}}_i}}{{\partial {1}}} \frac{{\partial a^{{({0})}}_i}}{{\partial z^{{({0})}}_i}} \frac{{\partial C}}{{\partial a^{{({0})}}_i}}",
                        l + 1,
                        a.latex()
                    );
                    ((text, latex), None)
                };
                factors.push(Factor {
                    name: (partial_text("C", &a.text()), partial_latex("C", &a.latex())),
                    formula,
                    substituted,
                    value: dca,
                });
            }
            None => {
                let dcz = at(&dc_dz, n, j);
                factors.push(Factor {
                    name: (partial_text("C", &z.text()), partial_latex("C", &z.latex())),
                    formula: (
                        "Σᵢ ∂aᵢ/∂zⱼ · ∂C/∂aᵢ (softmax couples the units)".into(),
                        r"\sum_i \frac{\partial a_i}{\partial z_j}\frac{\partial C}{\partial a_i}"
                            .into(),
                    ),
                    substituted: None,
                    value: dcz,
                });
            }
        }
        let term = factors.iter().map(|f| f.value).product();
        samples.push(SampleChain {
            factors,
            hidden,
            term,
        });
    }
    let gradient: f64 = samples.iter().map(|s| s.term).sum();
    let offset = unit.dense.offset + usize::from(which.bias);
    let param_value = &model.params()[offset].value;
    let index: Vec<usize> = if which.bias { vec![j] } else { vec![j, k] };
    let autodiff = grads
        .wrt(params[offset])
        .and_then(|g| g.get(&index))
        .unwrap_or(0.0);
    let old = param_value.get(&index).unwrap_or(0.0);
    Ok(Derivation {
        param: which.name(),
        symbol,
        z,
        a,
        samples,
        reduction,
        gradient,
        autodiff,
        update: (lr, old, old - lr * autodiff),
        step: None,
    })
}

/// Every parameter element of every linear layer, in `params()` order.
///
/// ```
/// use chainrule::nn::Sequential;
/// let m = Sequential::<f64>::from_json(r#"{"layers": [{"type": "linear", "in": 2, "out": 1}]}"#, 0)?;
/// let all = chainrule_explain::derive::all_elements(&m);
/// assert_eq!(all.iter().map(|p| p.name()).collect::<Vec<_>>(), ["0.weight[0,0]", "0.weight[0,1]", "0.bias[0]"]);
/// # Ok::<(), chainrule::Error>(())
/// ```
pub fn all_elements(model: &Sequential<f64>) -> Vec<ParamElement> {
    let mut out = Vec::new();
    for dense in dense_layers(model) {
        let layer = dense.layer;
        for unit in 0..dense.outputs {
            for input in 0..dense.inputs {
                out.push(ParamElement {
                    layer,
                    bias: false,
                    unit,
                    input,
                });
            }
        }
        if dense.bias {
            for unit in 0..dense.outputs {
                out.push(ParamElement {
                    layer,
                    bias: true,
                    unit,
                    input: 0,
                });
            }
        }
    }
    out
}

/// How many terms of a long sum are written out: the largest by magnitude; the rest
/// are counted and totalled.
pub const SHOWN_TERMS: usize = 6;

/// A sum of labelled terms as text: every term when there are at most
/// [`SHOWN_TERMS`], else the largest ones with their labels, then how many terms
/// are left and their total.
///
/// ```
/// use chainrule_explain::derive::largest_terms;
/// let terms: Vec<(String, f64)> = (1..=8).map(|i| (format!("unit {i}"), i as f64)).collect();
/// assert_eq!(largest_terms(&terms[..2], "units"), "1 + 2");
/// let zeros: Vec<(String, f64)> = (1..=8).map(|i| (format!("unit {i}"), 0.0)).collect();
/// assert_eq!(largest_terms(&zeros, "units"), "0 (all 8 units' terms are 0)");
/// assert_eq!(
///     largest_terms(&terms, "units"),
///     "8 (unit 8) + 7 (unit 7) + 6 (unit 6) + 5 (unit 5) + 4 (unit 4) + 3 (unit 3) + the other 2 units' 3"
/// );
/// ```
pub fn largest_terms(terms: &[(String, f64)], what: &str) -> String {
    if terms.len() <= SHOWN_TERMS {
        return join_terms(terms.iter().map(|(_, v)| operand(*v)));
    }
    if terms.iter().all(|(_, v)| *v == 0.0) {
        return format!("0 (all {} {what}' terms are 0)", terms.len());
    }
    let (shown, rest, rest_total) = largest_first(terms);
    let mut parts: Vec<String> = shown
        .iter()
        .map(|&i| format!("{} ({})", operand(terms[i].1), terms[i].0))
        .collect();
    parts.push(format!("the other {rest} {what}' {}", operand(rest_total)));
    join_terms(parts.into_iter())
}

/// The [`SHOWN_TERMS`] terms of largest magnitude (ties by position), how many
/// are left and the sum of those.
fn largest_first(terms: &[(String, f64)]) -> (Vec<usize>, usize, f64) {
    let mut order: Vec<usize> = (0..terms.len()).collect();
    order.sort_by(|&a, &b| {
        terms[b]
            .1
            .abs()
            .total_cmp(&terms[a].1.abs())
            .then(a.cmp(&b))
    });
    let rest = order.split_off(SHOWN_TERMS.min(order.len()));
    let rest_total = rest.iter().map(|&i| terms[i].1).sum();
    (order, rest.len(), rest_total)
}

/// [`largest_terms`] in LaTeX.
///
/// ```
/// use chainrule_explain::derive::largest_terms_latex;
/// let terms: Vec<(String, f64)> = (1..=8).map(|i| (format!("sample {i}"), -(i as f64))).collect();
/// assert!(largest_terms_latex(&terms, "samples").ends_with(r"\underbrace{-3}_{\text{the other 2 samples}}"));
/// ```
pub fn largest_terms_latex(terms: &[(String, f64)], what: &str) -> String {
    let latex_operand = |v: f64| {
        let n = number(v);
        if v < 0.0 {
            format!(r"\left({n}\right)")
        } else {
            n
        }
    };
    if terms.len() <= SHOWN_TERMS {
        return join_terms(terms.iter().map(|(_, v)| latex_operand(*v)));
    }
    let (shown, rest, rest_total) = largest_first(terms);
    let mut parts: Vec<String> = shown
        .iter()
        .map(|&i| {
            format!(
                r"\underbrace{{{}}}_{{\text{{{}}}}}",
                latex_operand(terms[i].1),
                terms[i].0
            )
        })
        .collect();
    parts.push(format!(
        r"\underbrace{{{}}}_{{\text{{the other {rest} {what}}}}}",
        number(rest_total)
    ));
    join_terms(parts.into_iter())
}

/// Terms joined with " + " (a negative operand is in parentheses, as `operand`
/// writes it).
fn join_terms(terms: impl Iterator<Item = String>) -> String {
    terms.collect::<Vec<_>>().join(" + ")
}

/// ∂C/∂a of a hidden unit written out over the units it feeds: the dead ones
/// (whose activation's derivative is 0, such as a ReLU below 0) named and left out,
/// the largest of the rest with their numbers.
fn hidden_sum_text(h: &HiddenSum, indent: &str) -> String {
    let up = superscript(h.next_layer);
    let (dead, live): (Vec<usize>, Vec<usize>) =
        (0..h.terms.len()).partition(|&i| h.terms[i].1 == 0.0);
    let terms: Vec<(String, f64)> = live
        .iter()
        .map(|&i| {
            let (w, sg, d) = h.terms[i];
            (format!("i = {}", i + 1), w * sg * d)
        })
        .collect();
    let written = if live.len() <= SHOWN_TERMS {
        join_terms(live.iter().map(|&i| {
            let (w, sg, d) = h.terms[i];
            format!("{} · {} · {}", operand(w), operand(sg), operand(d))
        }))
    } else {
        largest_terms(&terms, "units")
    };
    let units = if h.terms.len() == 1 {
        "the 1 unit".to_string()
    } else {
        format!("the {} units", h.terms.len())
    };
    let mut out = format!(
        "{indent}    = {}   (w⁽{up}⁾ᵢⱼ · {}′(z⁽{up}⁾ᵢ) · ∂C/∂a⁽{up}⁾ᵢ over {units} i of layer {} that a⁽{}⁾ⱼ feeds)\n",
        if written.is_empty() {
            "0".to_string()
        } else {
            written
        },
        h.next_activation,
        h.next_layer,
        superscript(h.next_layer - 1)
    );
    if !dead.is_empty() {
        const LISTED: usize = 12;
        let mut names: Vec<String> = dead
            .iter()
            .take(LISTED)
            .map(|i| (i + 1).to_string())
            .collect();
        if dead.len() > LISTED {
            names.push("…".into());
        }
        out += &format!(
            "{indent}      {} of them {} dead ({}′(z⁽{up}⁾ᵢ) = 0) and contribute 0: i = {}\n",
            dead.len(),
            if dead.len() == 1 { "is" } else { "are" },
            h.next_activation,
            names.join(", ")
        );
    }
    out
}

/// Whether a derivation's `gradient` equals backprop's `autodiff` (to 1e-12 relative).
pub(crate) fn agrees(gradient: f64, autodiff: f64) -> bool {
    (gradient - autodiff).abs() <= 1e-12 * autodiff.abs().max(1.0)
}

/// The last lines of a derivation in text: ∂c/∂s with autodiff's check, then the
/// update: the run's optimizer's `step` when given, else gradient descent (learning
/// rate, old value, new value).
pub(crate) fn closing_text(
    c: &str,
    s: &str,
    gradient: f64,
    autodiff: f64,
    (lr, old, new): (f64, f64, f64),
    step: Option<&Step>,
) -> String {
    let mark = if agrees(gradient, autodiff) {
        "✓"
    } else {
        "✗ MISMATCH"
    };
    let check = format!(
        "  ∂{c}/∂{s} = {}   (autodiff: {} {mark})\n",
        number(gradient),
        number(autodiff)
    );
    match step {
        Some(step) => check + &step.text("  "),
        None => {
            check
                + &format!(
                    "  update: {s} ← {s} − η·∂{c}/∂{s} = {} − {} · {} = {}\n",
                    number(old),
                    number(lr),
                    operand(autodiff),
                    number(new)
                )
        }
    }
}

impl Derivation {
    /// Whether the chain's product equals backprop's gradient (to 1e-12 relative).
    ///
    /// ```
    /// use chainrule::{loss::{Loss, Target}, nn::{Module, Sequential}, Tensor};
    /// use chainrule_explain::derive::{explain, ParamElement};
    /// let mut m = Sequential::<f64>::from_json(r#"{"layers": [{"type": "linear", "in": 1, "out": 1, "bias": false}]}"#, 0)?;
    /// m.params_mut()[0].value = Tensor::full(&[1, 1], 2.0);
    /// let d = explain(&m, &Tensor::full(&[1, 1], 1.0), &Target::Values(Tensor::full(&[1, 1], 1.0)),
    ///                 Loss::Sse, 0.1, &ParamElement::parse("0.weight[0,0]")?)?;
    /// assert!(d.verified());
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn verified(&self) -> bool {
        agrees(self.gradient, self.autodiff)
    }

    /// Unicode text for a terminal.
    ///
    /// ```
    /// use chainrule::{loss::{Loss, Target}, nn::{Module, Sequential}, Tensor};
    /// use chainrule_explain::derive::{explain, ParamElement};
    /// let mut m = Sequential::<f64>::from_json(r#"{"layers": [{"type": "linear", "in": 1, "out": 1, "bias": false}]}"#, 0)?;
    /// m.params_mut()[0].value = Tensor::full(&[1, 1], 2.0);
    /// let d = explain(&m, &Tensor::full(&[1, 1], 1.0), &Target::Values(Tensor::full(&[1, 1], 1.0)),
    ///                 Loss::Sse, 0.1, &ParamElement::parse("0.weight[0,0]")?)?;
    /// assert!(d.text().contains("= 2 − 0.1 · 2 = 1.8"));
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn text(&self) -> String {
        let s = self.symbol.text();
        let mut out = format!("{}   (parameter {})\n", partial_text("C", &s), self.param);
        let first = &self.samples[0];
        let names: Vec<&str> = first.factors.iter().map(|f| f.name.0.as_str()).collect();
        out += &format!("  chain rule:  ∂C/∂{s} = {}\n", names.join(" · "));
        let formulas: Vec<&str> = first.factors.iter().map(|f| f.formula.0.as_str()).collect();
        out += &format!("               = {}\n", formulas.join(" · "));
        let batch = self.samples.len() > 1;
        let shown = self.shown_samples();
        for &n in &shown {
            let sample = &self.samples[n];
            let indent = if batch {
                out += &format!("  sample {}:\n", n + 1);
                "    "
            } else {
                "  "
            };
            for f in &sample.factors {
                let value = number(f.value);
                // Each step once: no "= 1 = 1" when the formula is its own value.
                let mut line = format!("{indent}{} = {}", f.name.0, f.formula.0);
                if let Some(t) = f
                    .substituted
                    .as_ref()
                    .filter(|t| **t != f.formula.0 && **t != value)
                {
                    line += &format!(" = {t}");
                }
                if f.formula.0 != value {
                    line += &format!(" = {value}");
                }
                out += &line;
                out.push('\n');
                if let (Some(h), true) = (&sample.hidden, f.name.0.starts_with("∂C/∂a")) {
                    out += &hidden_sum_text(h, indent);
                }
            }
            let values: Vec<String> = sample.factors.iter().map(|f| operand(f.value)).collect();
            out += &format!(
                "{indent}product: {} = {}\n",
                values.join(" · "),
                number(sample.term)
            );
        }
        if batch {
            if shown.len() < self.samples.len() {
                out += &format!(
                    "  (the {} samples with the largest products are written out; the other {} follow the same chain)\n",
                    shown.len(),
                    self.samples.len() - shown.len()
                );
            }
            out += &format!(
                "  sum over the {} samples: {} = {}\n",
                self.samples.len(),
                largest_terms(&self.sample_terms(), "samples"),
                number(self.gradient)
            );
        }
        out += &format!("  reduction: {}\n", self.reduction);
        out += &closing_text(
            "C",
            &s,
            self.gradient,
            self.autodiff,
            self.update,
            self.step.as_ref(),
        );
        out
    }

    /// Each sample's product, labelled by the sample's number.
    fn sample_terms(&self) -> Vec<(String, f64)> {
        self.samples
            .iter()
            .enumerate()
            .map(|(n, t)| (format!("sample {}", n + 1), t.term))
            .collect()
    }

    /// The samples whose chains are written out in full: all of them up to
    /// [`SHOWN_TERMS`]` / 2`, else those with the largest products, in sample order.
    fn shown_samples(&self) -> Vec<usize> {
        let limit = SHOWN_TERMS / 2;
        let mut order: Vec<usize> = (0..self.samples.len()).collect();
        if order.len() > limit {
            order.sort_by(|&a, &b| {
                self.samples[b]
                    .term
                    .abs()
                    .total_cmp(&self.samples[a].term.abs())
                    .then(a.cmp(&b))
            });
            order.truncate(limit);
            order.sort_unstable();
        }
        order
    }

    /// Markdown with LaTeX (`$$ … $$` blocks).
    ///
    /// ```
    /// use chainrule::{loss::{Loss, Target}, nn::{Module, Sequential}, Tensor};
    /// use chainrule_explain::derive::{explain, ParamElement};
    /// let mut m = Sequential::<f64>::from_json(r#"{"layers": [{"type": "linear", "in": 1, "out": 1, "bias": false}]}"#, 0)?;
    /// m.params_mut()[0].value = Tensor::full(&[1, 1], 2.0);
    /// let d = explain(&m, &Tensor::full(&[1, 1], 1.0), &Target::Values(Tensor::full(&[1, 1], 1.0)),
    ///                 Loss::Sse, 0.1, &ParamElement::parse("0.weight[0,0]")?)?;
    /// assert!(d.markdown().contains(r"\leftarrow 2 - 0.1 \cdot 2 = 1.8"));
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn markdown(&self) -> String {
        let s = self.symbol.latex();
        let first = &self.samples[0];
        let names: Vec<&str> = first.factors.iter().map(|f| f.name.1.as_str()).collect();
        let formulas: Vec<String> = first.factors.iter().map(Factor::latex_operand).collect();
        let mut out = format!(
            "### `{}`\n\n$$\n{} = {} = {}\n$$\n\n",
            self.param,
            partial_latex("C", &s),
            names.join(r" \cdot "),
            formulas.join(r" \cdot ")
        );
        let shown = self.shown_samples();
        for &n in &shown {
            let sample = &self.samples[n];
            let values: Vec<String> = sample.factors.iter().map(|f| number(f.value)).collect();
            let label = if self.samples.len() > 1 {
                format!("Sample {}: ", n + 1)
            } else {
                String::new()
            };
            out += &format!(
                "{label}$${} \\cdot = {}$$\n\n",
                values.join(r" \cdot "),
                number(sample.term)
            )
            .replace(r" \cdot =", " =");
        }
        if self.samples.len() > 1 {
            if shown.len() < self.samples.len() {
                out += &format!(
                    "The {} samples with the largest products are written out; the other {} follow the same chain.\n\n",
                    shown.len(),
                    self.samples.len() - shown.len()
                );
            }
            out += &format!(
                "Sum over the {} samples: $${}$$\n\n",
                self.samples.len(),
                largest_terms_latex(&self.sample_terms(), "samples")
            );
        }
        out += &format!("{}\n\n", self.reduction);
        let (lr, old, new) = self.update;
        out += &format!(
            "$${} = {}$$ (autodiff agrees: {})\n\n",
            partial_latex("C", &s),
            number(self.gradient),
            self.verified()
        );
        match &self.step {
            Some(step) => out += &format!("```text\n{}```\n", step.text("")),
            None => {
                out += &format!(
                    "$${s} \\leftarrow {} - {} \\cdot {} = {}$$\n",
                    number(old),
                    number(lr),
                    number(self.autodiff),
                    number(new)
                )
            }
        }
        out
    }

    /// JSON: every factor with its name, formula and value.
    ///
    /// ```
    /// use chainrule::{loss::{Loss, Target}, nn::{Module, Sequential}, Tensor};
    /// use chainrule_explain::derive::{explain, ParamElement};
    /// let mut m = Sequential::<f64>::from_json(r#"{"layers": [{"type": "linear", "in": 1, "out": 1, "bias": false}]}"#, 0)?;
    /// m.params_mut()[0].value = Tensor::full(&[1, 1], 2.0);
    /// let d = explain(&m, &Tensor::full(&[1, 1], 1.0), &Target::Values(Tensor::full(&[1, 1], 1.0)),
    ///                 Loss::Sse, 0.1, &ParamElement::parse("0.weight[0,0]")?)?;
    /// assert_eq!(d.json()["update"]["new"], 1.8);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn json(&self) -> serde_json::Value {
        let samples: Vec<serde_json::Value> = self
            .samples
            .iter()
            .map(|s| {
                json!({
                    "factors": s.factors.iter().map(|f| json!({"name": f.name.0, "latex": f.name.1, "formula": f.formula.0, "value": f.value})).collect::<Vec<_>>(),
                    "hidden_sum": s.hidden.as_ref().map(|h| json!({"next_layer": h.next_layer, "terms": h.terms.iter().map(|(w, sg, d)| json!({"weight": w, "activation_derivative": sg, "dC_da": d})).collect::<Vec<_>>(), "value": h.value})),
                    "term": s.term,
                })
            })
            .collect();
        let (lr, old, new) = self.update;
        json!({
            "param": self.param,
            "symbol": self.symbol.text(),
            "latex": self.symbol.latex(),
            "samples": samples,
            "reduction": self.reduction,
            "gradient": self.gradient,
            "autodiff": self.autodiff,
            "verified": self.verified(),
            "update": match &self.step {
                Some(step) => step.json(),
                None => json!({"lr": lr, "old": old, "new": new}),
            },
        })
    }
}
