//! Closed-form expressions of a network's output and loss as functions of its
//! parameters, their partial derivatives, simplification, and printing as text,
//! LaTeX and sympy syntax.
//!
//! Expressions come from a layer stack ([`from_sequential`]) or from any tape of
//! scalar operations ([`from_scalar_tape`], which is how notebook 003's network with
//! its shared bias is written).

use crate::notation::number;
use chainrule::autodiff::{Elementwise, Formula, Style};
use chainrule::loss::{Loss, Target};
use chainrule::nn::{Module, Sequential};
use chainrule::{Error, Result, Tape, Tensor};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::ops::{Add as _, Mul as _, Neg as _};

/// A scalar expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A number.
    Num(f64),
    /// A named symbol (a parameter, or an input kept symbolic).
    Sym(String),
    /// A sum.
    Add(Vec<Expr>),
    /// A product.
    Mul(Vec<Expr>),
    /// A power with a constant exponent.
    Pow(Box<Expr>, f64),
    /// f(x) for a function of the element-wise table that its formula keeps whole
    /// (exp, log, tanh, relu, …): its value, derivative and notation come from there.
    Apply(Elementwise, Box<Expr>),
}

impl Formula for Expr {
    fn number(value: f64) -> Expr {
        Num(value)
    }
    fn call(f: Elementwise, x: Expr) -> Expr {
        Apply(f, b(x)).simplify()
    }
    fn plus(self, other: Expr) -> Expr {
        self.add(other)
    }
    fn times(self, other: Expr) -> Expr {
        self.mul(other)
    }
    fn power(self, p: f64) -> Expr {
        Pow(b(self), p).simplify()
    }
}

use Expr::*;

fn b(e: Expr) -> Box<Expr> {
    Box::new(e)
}

impl std::ops::Add for Expr {
    type Output = Expr;
    /// a + b, simplified.
    fn add(self, other: Expr) -> Expr {
        Add(vec![self, other]).simplify()
    }
}

impl std::ops::Mul for Expr {
    type Output = Expr;
    /// a · b, simplified.
    fn mul(self, other: Expr) -> Expr {
        Mul(vec![self, other]).simplify()
    }
}

impl std::ops::Neg for Expr {
    type Output = Expr;
    /// −a.
    fn neg(self) -> Expr {
        Num(-1.0) * self
    }
}

impl std::ops::Sub for Expr {
    type Output = Expr;
    /// a − b.
    fn sub(self, other: Expr) -> Expr {
        self + (-other)
    }
}

impl std::ops::Div for Expr {
    type Output = Expr;
    /// a / b.
    fn div(self, other: Expr) -> Expr {
        self * Pow(b(other), -1.0).simplify()
    }
}

impl Expr {
    /// f(self) as the element-wise table writes it (σ(a) = 1 / (1 + e⁻ᵃ), as notebook
    /// 003 writes it).
    ///
    /// ```
    /// use chainrule::autodiff::Elementwise;
    /// use chainrule_explain::symbolic::Expr;
    /// assert_eq!(Expr::Sym("z".into()).apply(Elementwise::Sigmoid).text(), "1/(exp(-z) + 1)");
    /// ```
    pub fn apply(self, f: Elementwise) -> Expr {
        f.formula(self)
    }

    /// Simplifies: folds constants, drops neutral elements, flattens nested sums and
    /// products, and collects like terms (x + x = 2x) and like factors (x·x = x²).
    ///
    /// ```
    /// use chainrule_explain::symbolic::Expr::{self, *};
    /// let w = Sym("w0".into());
    /// let e = Add(vec![w.clone(), Num(0.0), w.clone(), Mul(vec![Num(2.0), Num(3.0)])]).simplify();
    /// assert_eq!(e.text(), "2·w0 + 6");
    /// ```
    pub fn simplify(self) -> Expr {
        match self {
            Add(terms) => {
                let mut constant = 0.0;
                // (coefficient, rest) with like rests collected, in first-seen order.
                let mut collected: Vec<(f64, Expr)> = Vec::new();
                let push = |t: Expr, collected: &mut Vec<(f64, Expr)>, constant: &mut f64| match t {
                    Num(v) => *constant += v,
                    t => {
                        let (c, rest) = t.split_coefficient();
                        match collected.iter_mut().find(|(_, r)| *r == rest) {
                            Some(entry) => entry.0 += c,
                            None => collected.push((c, rest)),
                        }
                    }
                };
                for t in terms {
                    match t.simplify() {
                        Add(inner) => inner
                            .into_iter()
                            .for_each(|t| push(t, &mut collected, &mut constant)),
                        t => push(t, &mut collected, &mut constant),
                    }
                }
                let mut out: Vec<Expr> = collected
                    .into_iter()
                    .filter(|(c, _)| *c != 0.0)
                    .map(|(c, rest)| {
                        if c == 1.0 {
                            rest
                        } else {
                            Mul(vec![Num(c), rest]).simplify()
                        }
                    })
                    .collect();
                if constant != 0.0 || out.is_empty() {
                    out.push(Num(constant));
                }
                if out.len() == 1 {
                    out.pop().expect("one term")
                } else {
                    Add(out)
                }
            }
            Mul(factors) => {
                let mut constant = 1.0;
                let mut collected: Vec<(Expr, f64)> = Vec::new();
                let push = |f: Expr, collected: &mut Vec<(Expr, f64)>, constant: &mut f64| match f {
                    Num(v) => *constant *= v,
                    Pow(base, p) => match collected.iter_mut().find(|(e, _)| *e == *base) {
                        Some(entry) => entry.1 += p,
                        None => collected.push((*base, p)),
                    },
                    f => match collected.iter_mut().find(|(e, _)| *e == f) {
                        Some(entry) => entry.1 += 1.0,
                        None => collected.push((f, 1.0)),
                    },
                };
                for f in factors {
                    match f.simplify() {
                        Mul(inner) => inner
                            .into_iter()
                            .for_each(|f| push(f, &mut collected, &mut constant)),
                        f => push(f, &mut collected, &mut constant),
                    }
                }
                if constant == 0.0 {
                    return Num(0.0);
                }
                let mut out: Vec<Expr> = Vec::new();
                if constant != 1.0 || collected.is_empty() {
                    out.push(Num(constant));
                }
                out.extend(
                    collected
                        .into_iter()
                        .filter(|(_, p)| *p != 0.0)
                        .map(|(e, p)| if p == 1.0 { e } else { Pow(b(e), p) }),
                );
                if out.is_empty() {
                    return Num(1.0);
                }
                if out.len() == 1 {
                    out.pop().expect("one factor")
                } else {
                    Mul(out)
                }
            }
            Pow(base, p) => match (base.simplify(), p) {
                (_, 0.0) => Num(1.0),
                (e, 1.0) => e,
                (Num(v), p) => Num(v.powf(p)),
                (Pow(inner, q), p) => Pow(inner, q * p),
                (e, p) => Pow(b(e), p),
            },
            Apply(f, x) => match (f, x.simplify()) {
                (f, Num(v)) => Num(f.value(v)),
                // e^(ln x) = x and ln(eˣ) = x
                (Elementwise::Exp, Apply(Elementwise::Log, inner))
                | (Elementwise::Log, Apply(Elementwise::Exp, inner)) => *inner,
                (f, e) => Apply(f, b(e)),
            },
            e => e,
        }
    }

    /// A term as (numeric coefficient, the rest).
    fn split_coefficient(self) -> (f64, Expr) {
        match self {
            Mul(mut factors) if matches!(factors.first(), Some(Num(_))) => {
                let Num(c) = factors.remove(0) else {
                    unreachable!()
                };
                (
                    c,
                    if factors.len() == 1 {
                        factors.pop().expect("one")
                    } else {
                        Mul(factors)
                    },
                )
            }
            e => (1.0, e),
        }
    }

    /// ∂self/∂`symbol`, simplified.
    ///
    /// ```
    /// use chainrule_explain::symbolic::Expr::{self, *};
    /// let w = Sym("w".into());
    /// let e = (w.clone() * Num(3.0) + Num(-1.0)) * (w.clone() * Num(3.0) + Num(-1.0)); // (3w − 1)²
    /// let d = e.diff("w");
    /// let env = [("w".to_string(), 2.0)].into_iter().collect();
    /// assert_eq!(d.eval(&env).unwrap(), 30.0);
    /// ```
    pub fn diff(&self, symbol: &str) -> Expr {
        let d = match self {
            Num(_) => Num(0.0),
            Sym(s) => Num(if s == symbol { 1.0 } else { 0.0 }),
            Add(terms) => Add(terms.iter().map(|t| t.diff(symbol)).collect()),
            Mul(factors) => Add((0..factors.len())
                .map(|i| {
                    Mul(factors
                        .iter()
                        .enumerate()
                        .map(|(k, f)| if k == i { f.diff(symbol) } else { f.clone() })
                        .collect())
                })
                .collect()),
            Pow(base, p) => Mul(vec![Num(*p), Pow(base.clone(), p - 1.0), base.diff(symbol)]),
            // the chain rule through the table's derivative: f′(x)·x′
            Apply(f, x) => Mul(vec![f.derivative_formula((**x).clone()), x.diff(symbol)]),
        };
        d.simplify()
    }

    /// The value with symbols looked up in `env`, or `None` for an unknown symbol.
    pub fn eval(&self, env: &BTreeMap<String, f64>) -> Option<f64> {
        Some(match self {
            Num(v) => *v,
            Sym(s) => *env.get(s)?,
            Add(t) => t.iter().map(|e| e.eval(env)).sum::<Option<f64>>()?,
            Mul(f) => f.iter().map(|e| e.eval(env)).product::<Option<f64>>()?,
            Pow(x, p) => x.eval(env)?.powf(*p),
            Apply(f, x) => f.value(x.eval(env)?),
        })
    }

    fn render(&self, style: Style) -> String {
        let mut out = String::new();
        self.write(style, &mut out, 0);
        out
    }

    /// Unicode text.
    pub fn text(&self) -> String {
        self.render(Style::Text)
    }
    /// LaTeX.
    pub fn latex(&self) -> String {
        self.render(Style::Latex)
    }
    /// sympy-parsable syntax (`sympy.sympify` reads it).
    pub fn sympy(&self) -> String {
        self.render(Style::Sympy)
    }

    /// Writes with parentheses where `precedence` (0 sum, 1 product, 2 power) needs them.
    fn write(&self, style: Style, out: &mut String, precedence: u8) {
        match self {
            Num(v) => {
                let s = if style == Style::Sympy {
                    format!("{v:?}")
                } else {
                    number(*v)
                };
                if *v < 0.0 && precedence > 0 {
                    let _ = write!(out, "({s})");
                } else {
                    out.push_str(&s);
                }
            }
            Sym(s) => out.push_str(&if style == Style::Latex {
                latex_symbol(s)
            } else {
                s.clone()
            }),
            Add(terms) => {
                if precedence > 0 {
                    out.push('(');
                }
                // `1 − y`, not `-y + 1`: a sum that would open with a minus sign
                // opens with its positive constant instead, when it has one.
                let negative_first = terms.first().is_some_and(|t| {
                    t.clone().split_coefficient().0 < 0.0 || matches!(t, Num(v) if *v < 0.0)
                });
                let constant = terms.iter().position(|t| matches!(t, Num(v) if *v > 0.0));
                let reordered: Vec<Expr>;
                let terms = match constant {
                    Some(k) if negative_first && style != Style::Sympy => {
                        reordered = std::iter::once(terms[k].clone())
                            .chain(
                                terms
                                    .iter()
                                    .enumerate()
                                    .filter(|&(i, _)| i != k)
                                    .map(|(_, t)| t.clone()),
                            )
                            .collect();
                        &reordered
                    }
                    _ => terms,
                };
                for (i, t) in terms.iter().enumerate() {
                    let (c, _) = t.clone().split_coefficient();
                    let negative = c < 0.0 || matches!(t, Num(v) if *v < 0.0);
                    if i > 0 {
                        out.push_str(if negative { " - " } else { " + " });
                    } else if negative {
                        out.push('-');
                    }
                    if negative {
                        t.clone().neg().write(style, out, 1);
                    } else {
                        t.write(style, out, 1);
                    }
                }
                if precedence > 0 {
                    out.push(')');
                }
            }
            Mul(factors) if matches!(factors.first(), Some(Num(c)) if *c < 0.0) => {
                // −c·x reads as a negation, not as a product with a negative number.
                if precedence > 0 {
                    out.push('(');
                }
                out.push('-');
                self.clone().neg().write(style, out, 1);
                if precedence > 0 {
                    out.push(')');
                }
            }
            Mul(factors) => {
                // A reciprocal reads better as a fraction in LaTeX.
                let (den, num): (Vec<&Expr>, Vec<&Expr>) = factors
                    .iter()
                    .partition(|f| matches!(f, Pow(_, p) if *p < 0.0));
                if !den.is_empty() {
                    let flip = |f: &Expr| match f {
                        Pow(x, p) => Pow(x.clone(), -p).simplify(),
                        f => f.clone(),
                    };
                    let n = if num.is_empty() {
                        Num(1.0)
                    } else {
                        Mul(num.into_iter().cloned().collect()).simplify()
                    };
                    let d = Mul(den.into_iter().map(flip).collect()).simplify();
                    if style == Style::Latex {
                        let _ = write!(out, r"\frac{{{}}}{{{}}}", n.latex(), d.latex());
                    } else {
                        if precedence > 1 {
                            out.push('(');
                        }
                        n.write(style, out, 1);
                        out.push('/');
                        d.write(style, out, 2);
                        if precedence > 1 {
                            out.push(')');
                        }
                    }
                    return;
                }
                if precedence > 1 {
                    out.push('(');
                }
                let sep = match style {
                    Style::Text => "·",
                    Style::Latex => r" \cdot ",
                    Style::Sympy => "*",
                };
                for (i, f) in factors.iter().enumerate() {
                    if i > 0 {
                        out.push_str(sep);
                    }
                    f.write(style, out, 2);
                }
                if precedence > 1 {
                    out.push(')');
                }
            }
            Pow(x, p) if *p < 0.0 => {
                Mul(vec![Num(1.0), Pow(x.clone(), *p)]).write(style, out, precedence)
            }
            Pow(x, p) => match style {
                Style::Latex => {
                    out.push('{');
                    x.write(style, out, 3);
                    let _ = write!(out, "}}^{{{}}}", number(*p));
                }
                _ => {
                    x.write(style, out, 3);
                    let p = if style == Style::Sympy {
                        format!("{p:?}")
                    } else {
                        number(*p)
                    };
                    let _ = if p.starts_with('-') {
                        write!(out, "**({p})")
                    } else {
                        write!(out, "**{p}")
                    };
                }
            },
            Apply(f, x) => {
                let mut arg = String::new();
                x.write(style, &mut arg, 0);
                out.push_str(&f.render_call(style, &arg));
            }
        }
    }
}

/// `w2_1_3` → `w^{(2)}_{1,3}`; `x_2` → `x_{2}`; `w13` → `w_{13}`; anything else as is.
pub fn latex_symbol(s: &str) -> String {
    let digits = s.trim_start_matches(|c: char| c.is_ascii_alphabetic());
    if !s.contains('_') && !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit()) {
        return format!("{}_{{{digits}}}", &s[..s.len() - digits.len()]);
    }
    let parts: Vec<&str> = s.split('_').collect();
    match parts.as_slice() {
        [head, rest @ ..] if !rest.is_empty() && !head.is_empty() => {
            // The first character names the quantity (it may take several bytes).
            let (name, layer) = head.split_at(head.chars().next().map_or(0, char::len_utf8));
            let layer = if layer.is_empty() {
                String::new()
            } else {
                format!("^{{({layer})}}")
            };
            format!("{name}{layer}_{{{}}}", rest.join(","))
        }
        _ => s.replace('_', r"\_"),
    }
}

/// The symbol of a parameter element: `w{l}_{j}_{k}` or `b{l}_{j}` (layers and units
/// counted from 1, as the notebooks).
pub fn param_symbol(linear: usize, bias: bool, unit: usize, input: usize) -> String {
    if bias {
        format!("b{}_{}", linear + 1, unit + 1)
    } else {
        format!("w{}_{}_{}", linear + 1, unit + 1, input + 1)
    }
}

/// A network written out: its outputs and loss as expressions of its parameter
/// symbols (and input symbols), and their values.
#[derive(Debug, Clone)]
pub struct Symbolic {
    /// Output expressions, `[sample][output]`.
    pub outputs: Vec<Vec<Expr>>,
    /// The loss.
    pub loss: Expr,
    /// Parameter symbol → (PyTorch element name, value), in parameter order.
    pub params: Vec<(String, String, f64)>,
    /// Input symbol → value, when the inputs are kept symbolic: `x_k` for one
    /// sample, `x_n_k` for sample n of several (both from 1).
    pub inputs: Vec<(String, f64)>,
}

impl Symbolic {
    /// ∂loss/∂θ for every parameter, in parameter order.
    pub fn derivatives(&self) -> Vec<(String, Expr)> {
        self.params
            .iter()
            .map(|(s, _, _)| (s.clone(), self.loss.diff(s)))
            .collect()
    }

    /// Symbol → value (parameters and inputs), for [`Expr::eval`].
    pub fn env(&self) -> BTreeMap<String, f64> {
        self.params
            .iter()
            .map(|(s, _, v)| (s.clone(), *v))
            .chain(self.inputs.iter().cloned())
            .collect()
    }
}

/// Writes out every node of `tape` up to `root`, element by element: a leaf as the
/// expressions `leaf` gives it (its numbers otherwise), an operation as its
/// [`Op::formula_elements`](chainrule::autodiff::Op::formula_elements) over its
/// inputs'. This is the one place the symbolic engine reads a recorded graph: layers,
/// activations and losses are written out by their operations' own formulas.
fn write_out(
    tape: &Tape<f64>,
    root: usize,
    leaf: impl Fn(usize) -> Option<Vec<Expr>>,
) -> Result<Vec<Vec<Expr>>> {
    let mut written: Vec<Vec<Expr>> = Vec::with_capacity(root + 1);
    for id in 0..=root {
        let value = tape.value(id).ok_or_else(|| Error::InvalidValue {
            field: "symbolic".into(),
            message: format!("no node {id}"),
        })?;
        let Some(op) = tape.op(id) else {
            written.push(leaf(id).unwrap_or_else(|| value.to_vec().into_iter().map(Num).collect()));
            continue;
        };
        let inputs = tape.inputs(id);
        let shapes: Vec<Vec<usize>> = inputs
            .iter()
            .map(|&i| {
                tape.value(i)
                    .map(|v| v.shape().to_vec())
                    .unwrap_or_default()
            })
            .collect();
        let given: Vec<(&[usize], &[Expr])> = inputs
            .iter()
            .zip(&shapes)
            .map(|(&i, shape)| (shape.as_slice(), written[i].as_slice()))
            .collect();
        let elements =
            op.formula_elements(&given, value.shape())
                .ok_or_else(|| Error::InvalidValue {
                    field: "symbolic".into(),
                    message: format!(
                        "the operation {:?} is not written out symbolically",
                        op.label()
                    ),
                })?;
        written.push(elements);
    }
    Ok(written)
}

/// The most parameter elements × samples that [`from_sequential`] writes out as one
/// formula.
///
/// ```
/// use chainrule::{loss::{Loss, Target}, nn::Sequential, Tensor};
/// use chainrule_explain::symbolic::from_sequential;
/// // The spiral's default network: 4,547 parameter elements.
/// let m = Sequential::<f64>::from_json(r#"{"layers": [{"type": "linear", "in": 2, "out": 64}, {"type": "relu"},
///     {"type": "linear", "in": 64, "out": 64}, {"type": "relu"}, {"type": "linear", "in": 64, "out": 3}]}"#, 0)?;
/// let err = from_sequential(&m, &Tensor::zeros(&[1, 2]), &Target::Classes(vec![0]), Loss::CrossEntropy, false)
///     .unwrap_err().to_string();
/// assert!(err.contains("4547 parameter elements × 1 samples is more than 2000"), "{err}");
/// # Ok::<(), chainrule::Error>(())
/// ```
pub const MAX_SYMBOLIC_SIZE: usize = 2_000;

/// Writes out a layer stack on the inputs `x` (numbers substituted, as notebook 003
/// does, or kept as symbols when `symbolic_inputs`) with the loss against `target`:
/// the forward pass and the loss are recorded on a tape, as training records them,
/// and written out from it.
///
/// # Errors
/// Shape errors when the data does not fit the model or the loss.
///
/// ```
/// use chainrule::{loss::{Loss, Target}, nn::{Module, Sequential}, Tensor};
/// use chainrule_explain::symbolic::from_sequential;
/// let mut m = Sequential::<f64>::from_json(r#"{"layers": [{"type": "linear", "in": 1, "out": 1, "bias": false}]}"#, 0)?;
/// m.params_mut()[0].value = Tensor::full(&[1, 1], 2.0);
/// let s = from_sequential(&m, &Tensor::full(&[1, 1], 1.0), &Target::Values(Tensor::full(&[1, 1], 1.0)), Loss::Sse, false)?;
/// assert_eq!(s.loss.text(), "(w1_1_1 - 1)**2");
/// assert_eq!(s.derivatives()[0].1.eval(&s.env()), Some(2.0));
/// # Ok::<(), chainrule::Error>(())
/// ```
pub fn from_sequential(
    model: &Sequential<f64>,
    x: &Tensor<f64>,
    target: &Target<f64>,
    loss: Loss,
    symbolic_inputs: bool,
) -> Result<Symbolic> {
    model.check_input(x)?;
    // The closed form grows with every parameter and sample it holds, and it is
    // differentiated once per parameter: refuse before it takes the machine's
    // memory (a 2-64-64-3 network on one sample took 12 GB).
    let elements: usize = model.params().iter().map(|p| p.value.len()).sum();
    if elements * x.shape()[0].max(1) > MAX_SYMBOLIC_SIZE {
        return Err(Error::InvalidValue {
            field: "model".into(),
            message: format!(
                "symbolic writes the whole network as one formula: {} parameter elements × {} samples is more than {MAX_SYMBOLIC_SIZE}; explain derives one element at a time at any size",
                elements,
                x.shape()[0]
            ),
        });
    }
    // Symbols for every parameter element: w{l}_{j}_{k}, b{l}_{j}, l counting the
    // linear layers from 1.
    let mut params = Vec::new();
    let mut symbols: BTreeMap<usize, Vec<Expr>> = BTreeMap::new();
    for (
        linear,
        crate::derive::Dense {
            layer: i,
            offset,
            outputs,
            inputs,
            bias,
        },
    ) in crate::derive::dense_layers(model).into_iter().enumerate()
    {
        let mut name = |p: usize, symbol: String, element: String, value: f64| {
            params.push((symbol.clone(), element, value));
            symbols.entry(p).or_default().push(Sym(symbol));
        };
        let w = &model.params()[offset].value;
        for j in 0..outputs {
            for k in 0..inputs {
                let value = w.get(&[j, k]).unwrap_or(0.0);
                name(
                    offset,
                    param_symbol(linear, false, j, k),
                    format!("{i}.weight[{j},{k}]"),
                    value,
                );
            }
        }
        if bias {
            let b = &model.params()[offset + 1].value;
            for j in 0..outputs {
                let value = b.get(&[j]).unwrap_or(0.0);
                name(
                    offset + 1,
                    param_symbol(linear, true, j, 0),
                    format!("{i}.bias[{j}]"),
                    value,
                );
            }
        }
    }
    let (rows, features) = (x.shape()[0], x.shape()[1]);
    let inputs: Vec<(String, f64)> = if symbolic_inputs {
        (0..rows * features)
            .map(|e| {
                let (n, k) = (e / features, e % features);
                let name = if rows == 1 {
                    format!("x_{}", k + 1)
                } else {
                    format!("x_{}_{}", n + 1, k + 1)
                };
                (name, x.get(&[n, k]).unwrap_or(0.0))
            })
            .collect()
    } else {
        Vec::new()
    };

    let tape = Tape::<f64>::new();
    let bound = model.bind(&tape);
    let input = tape.constant(x.clone());
    let prediction = model.forward(&bound, input)?;
    let c = loss.compute(prediction, target)?;
    let leaves: BTreeMap<usize, Vec<Expr>> = bound
        .iter()
        .enumerate()
        .filter_map(|(p, v)| Some((v.id(), symbols.get(&p)?.clone())))
        .chain(symbolic_inputs.then(|| {
            (
                input.id(),
                inputs.iter().map(|(s, _)| Sym(s.clone())).collect(),
            )
        }))
        .collect();
    let written = write_out(&tape, c.id(), |id| leaves.get(&id).cloned())?;
    let width = prediction.value().len() / rows.max(1);
    let outputs = written[prediction.id()]
        .chunks(width.max(1))
        .map(<[Expr]>::to_vec)
        .collect();
    let loss = written[c.id()].first().cloned().unwrap_or(Num(f64::NAN));
    Ok(Symbolic {
        outputs,
        loss,
        params,
        inputs,
    })
}

/// Converts the scalar computation recorded on `tape` up to `root` into an
/// expression: leaves named in `names` become symbols, other leaves their numbers.
/// Understands every operation with a formula
/// ([`Op::formula_elements`](chainrule::autodiff::Op::formula_elements)).
///
/// # Errors
/// [`Error::InvalidValue`] for a root that is not a scalar or an operation without a
/// formula.
///
/// ```
/// use chainrule::Tape;
/// use chainrule_explain::symbolic::from_scalar_tape;
/// let tape = Tape::<f64>::new();
/// let w = tape.param_scalar(0.5);
/// let y = (w * 0.35 + w).sigmoid();
/// let names = [(w.id(), "w0".to_string())].into_iter().collect();
/// let e = from_scalar_tape(&tape, y.id(), &names)?;
/// assert_eq!(e.sympy(), "1.0/(exp(-1.35*w0) + 1.0)");
/// # Ok::<(), chainrule::Error>(())
/// ```
pub fn from_scalar_tape(
    tape: &Tape<f64>,
    root: usize,
    names: &BTreeMap<usize, String>,
) -> Result<Expr> {
    let written = write_out(tape, root, |id| {
        names.get(&id).map(|n| vec![Sym(n.clone())])
    })?;
    match written[root].as_slice() {
        [e] => Ok(e.clone()),
        other => Err(Error::InvalidValue {
            field: "symbolic".into(),
            message: format!("node {root} holds {} values, not one", other.len()),
        }),
    }
}
