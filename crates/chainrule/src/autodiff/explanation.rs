//! How each operation's gradient reads in an explanation: ∂C/∂(one element of one
//! input) as the sum it is over the output elements that element reaches, each term
//! with its factors' symbols and numbers. The explain layer walks a recorded graph
//! and asks every node's operation for this sum ([`Op::local_sum`]); it knows no
//! layer and no operation by name, so an operation declared here is explainable
//! wherever it is recorded.
//!
//! The sums are read from one forward and backward pass: the operation's input
//! values, its output, and ∂C/∂(its output). They add up to what [`Op::backward`]
//! computes (tests/local_sums.rs checks every operation here against it).

use super::Op;
use super::op::{broadcast_source, coordinates, flat_index as flat};
use crate::Tensor;

/// One term of a [`LocalSum`]: where it sits, its factors and their product.
#[derive(Debug, Clone, PartialEq)]
pub struct Term {
    /// Where in the sum, e.g. `n=0, p=3, q=1`.
    pub at: String,
    /// Each factor's symbol and value.
    pub factors: Vec<(String, f64)>,
    /// The product of the factors.
    pub value: f64,
    /// The output element whose ∂C/∂ the term carries back, when it carries one.
    pub output: Option<Vec<usize>>,
}

impl Term {
    fn new(at: String, factors: Vec<(String, f64)>, output: Option<Vec<usize>>) -> Term {
        let value = factors.iter().map(|(_, v)| v).product();
        Term {
            at,
            factors,
            value,
            output,
        }
    }
}

/// ∂C/∂(one input element) of an operation, as the sum over the output elements the
/// input element reaches.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalSum {
    /// The sum written with symbols, e.g. `Σₙ a[n,1] · ∂C/∂z[n,0]`.
    pub formula: String,
    /// Every term.
    pub terms: Vec<Term>,
    /// How many terms would read the padding (their input is 0), left out.
    pub padded: usize,
    /// Named numbers the terms need besides their factors: batch norm's μ and σ,
    /// the maximum of each window a max pooling did not route through.
    pub context: Vec<(String, f64)>,
}

impl LocalSum {
    /// The sum of the terms.
    ///
    /// ```
    /// use chainrule::{autodiff::Op, Tensor};
    /// // y = a · b element-wise; ∂C/∂a[0] = b[0] · ∂C/∂y[0] = 3 · 0.5
    /// let (a, b) = (Tensor::<f64>::from_vec(vec![2.0], &[1])?, Tensor::from_vec(vec![3.0], &[1])?);
    /// let g = Tensor::from_vec(vec![0.5], &[1])?;
    /// let sum = Op::Mul.local_sum(&[&a, &b], &Tensor::from_vec(vec![6.0], &[1])?, &g, 0, &[0]).unwrap();
    /// assert_eq!(sum.total(), 1.5);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn total(&self) -> f64 {
        self.terms.iter().map(|t| t.value).sum()
    }
}

/// `[1,0,2]` as `1,0,2`.
fn list(index: &[usize]) -> String {
    index
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// A tensor's values in f64 with its shape, read once.
struct Values {
    shape: Vec<usize>,
    data: Vec<f64>,
}

impl Values {
    fn of(t: &Tensor<f64>) -> Values {
        Values {
            shape: t.shape().to_vec(),
            data: t.to_vec(),
        }
    }
    fn at(&self, c: &[usize]) -> f64 {
        self.data[flat(c, &self.shape)]
    }
}

/// A normalisation's group of values: their flat indices, mean and biased variance.
fn moments(values: &[f64], members: &[usize]) -> (f64, f64) {
    let m = members.len().max(1) as f64;
    let mean = members.iter().map(|&i| values[i]).sum::<f64>() / m;
    let var = members
        .iter()
        .map(|&i| (values[i] - mean).powi(2))
        .sum::<f64>()
        / m;
    (mean, var)
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

/// Which values share a normalisation's statistics, and which parameter element
/// scales each value.
enum Grouping {
    /// Batch norm: a channel over the batch and the positions (`inner` values per
    /// sample and channel); γ and β per channel.
    Channels { channels: usize, inner: usize },
    /// Layer norm: each sample's trailing block of `size` values; γ and β shaped like
    /// the block.
    Trailing { size: usize },
}

impl Grouping {
    fn count(&self, total: usize) -> usize {
        match *self {
            Grouping::Channels { channels, .. } => channels,
            Grouping::Trailing { size } => total / size.max(1),
        }
    }
    fn group(&self, e: usize) -> usize {
        match *self {
            Grouping::Channels { channels, inner } => e / inner.max(1) % channels,
            Grouping::Trailing { size } => e / size.max(1),
        }
    }
    fn parameter(&self, e: usize) -> usize {
        match *self {
            Grouping::Channels { channels, inner } => e / inner.max(1) % channels,
            Grouping::Trailing { size } => e % size.max(1),
        }
    }
}

impl Op {
    /// ∂C/∂(element `at` of input `input`) as the sum over the output elements it
    /// reaches, from the operation's input values, its `output` and `grad`
    /// (∂C/∂output), all in f64. `None` for the operations whose explanation is a
    /// coupled whole (softmax, the losses, reductions): there the explain layer shows
    /// autodiff's number.
    ///
    /// ```
    /// use chainrule::{autodiff::Op, Tensor};
    /// // A dense layer z = x·Wᵀ over two samples: ∂C/∂W[0,1] = Σₙ x[n,1] · ∂C/∂z[n,0].
    /// let x = Tensor::<f64>::from_vec(vec![1.0, 2.0, 3.0, 4.0], &[2, 2])?;
    /// let w = Tensor::from_vec(vec![0.5, -1.0], &[1, 2])?;
    /// let z = Op::Linear.forward(&[&x, &w])?;
    /// let g = Tensor::from_vec(vec![1.0, 10.0], &[2, 1])?;
    /// let sum = Op::Linear.local_sum(&[&x, &w], &z, &g, 1, &[0, 1]).unwrap();
    /// assert_eq!(sum.formula, "Σₙ a[n,1] · ∂C/∂z[n,0]");
    /// assert_eq!(sum.total(), 2.0 * 1.0 + 4.0 * 10.0);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn local_sum(
        &self,
        inputs: &[&Tensor<f64>],
        output: &Tensor<f64>,
        grad: &Tensor<f64>,
        input: usize,
        at: &[usize],
    ) -> Option<LocalSum> {
        let x: Vec<Values> = inputs.iter().map(|t| Values::of(t)).collect();
        let (y, g) = (Values::of(output), Values::of(grad));
        if input >= x.len() || at.len() != x[input].shape.len() {
            return None;
        }
        if at.iter().zip(&x[input].shape).any(|(i, n)| i >= n) {
            return None;
        }
        let sum = |formula: String, terms: Vec<Term>| LocalSum {
            formula,
            terms,
            padded: 0,
            context: Vec::new(),
        };
        let dy = |c: &[usize], name: &str| (format!("∂C/∂{name}[{}]", list(c)), g.at(c));
        Some(match self {
            // d/dx f(x) = f′(x): one term, at the same place.
            Op::Map(f) => {
                let (z, a) = (x[0].at(at), y.at(at));
                sum(
                    format!("{}′(z) · ∂C/∂a", f.name()),
                    vec![Term::new(
                        String::new(),
                        vec![
                            (format!("{}′(z[{}])", f.name(), list(at)), f.grad(z, a, 1.0)),
                            dy(at, "a"),
                        ],
                        Some(at.to_vec()),
                    )],
                )
            }
            // y = a ± b, y = a · b, y = a / b with broadcasting: one term per output
            // element that reads this one.
            Op::Add | Op::Sub | Op::Mul | Op::Div => {
                let own = &x[input].shape;
                let element = flat(at, own);
                let other = &x[1 - input.min(1)];
                let mut terms = Vec::new();
                for i in 0..y.data.len() {
                    let c = coordinates(i, &y.shape);
                    if broadcast_source(&c, own) != element {
                        continue;
                    }
                    let o = || {
                        let source = broadcast_source(&c, &other.shape);
                        (list(&coordinates(source, &other.shape)), other.data[source])
                    };
                    let local = match (self, input) {
                        (Op::Add, _) | (Op::Sub, 0) => None,
                        (Op::Sub, _) => Some(("−1".to_string(), -1.0)),
                        (Op::Mul, _) => {
                            let (name, v) = o();
                            let symbol = if input == 0 { 'b' } else { 'a' };
                            Some((format!("{symbol}[{name}]"), v))
                        }
                        (_, 0) => {
                            let (name, v) = o();
                            Some((format!("1/b[{name}]"), 1.0 / v))
                        }
                        _ => {
                            let (name, a) = o();
                            let b = x[input].at(at);
                            Some((format!("−a[{name}]/b²"), -a / (b * b)))
                        }
                    };
                    let factors = local.into_iter().chain([dy(&c, "y")]).collect();
                    terms.push(Term::new(list(&c), factors, Some(c)));
                }
                let local = match (self, input) {
                    (Op::Add, _) | (Op::Sub, 0) => "",
                    (Op::Sub, _) => "−",
                    (Op::Mul, 0) => "b · ",
                    (Op::Mul, _) => "a · ",
                    (Op::Div, 0) => "(1/b) · ",
                    _ => "(−a/b²) · ",
                };
                sum(
                    format!("Σ {local}∂C/∂y over the outputs that read it"),
                    terms,
                )
            }
            // Dropout in training: y = x · m, m = 0 where dropped and 1/(1 − p) where
            // kept, drawn from the step's stream.
            Op::Dropout { p, stream } => {
                let m = crate::tensor::mask_value(*stream, flat(at, &x[0].shape), *p);
                sum(
                    format!("m · ∂C/∂y, m = 1/(1 − {p}) where kept, 0 where dropped"),
                    vec![Term::new(
                        if m == 0.0 { "dropped" } else { "kept" }.into(),
                        vec![(format!("m[{}]", list(at)), m), dy(at, "y")],
                        Some(at.to_vec()),
                    )],
                )
            }
            // The same elements under a new shape: ∂C/∂x = ∂C/∂y at the same place.
            Op::Reshape { .. } => {
                let c = coordinates(flat(at, &x[0].shape), &y.shape);
                sum(
                    format!("∂C/∂y[{}] (the same element, reshaped)", list(&c)),
                    vec![Term::new(String::new(), vec![dy(&c, "y")], Some(c))],
                )
            }
            // z = x·Wᵀ (+ b), relu(z) for the fused node.
            Op::Linear | Op::LinearRelu => {
                let relu = matches!(self, Op::LinearRelu);
                let dz = |n: usize, j: usize| {
                    let open = !relu || y.at(&[n, j]) > 0.0;
                    (
                        format!("∂C/∂z[{n},{j}]"),
                        if open { g.at(&[n, j]) } else { 0.0 },
                    )
                };
                let (rows, units) = (y.shape[0], y.shape[1]);
                match input {
                    // ∂C/∂W[j,k] = Σₙ a[n,k] · ∂C/∂z[n,j]
                    1 => {
                        let (j, k) = (at[0], at[1]);
                        let terms = (0..rows)
                            .map(|n| {
                                Term::new(
                                    format!("n={n}"),
                                    vec![(format!("a[{n},{k}]"), x[0].at(&[n, k])), dz(n, j)],
                                    Some(vec![n, j]),
                                )
                            })
                            .collect();
                        sum(format!("Σₙ a[n,{k}] · ∂C/∂z[n,{j}]"), terms)
                    }
                    // ∂C/∂b[j] = Σₙ ∂C/∂z[n,j]
                    2 => {
                        let j = at[0];
                        let terms = (0..rows)
                            .map(|n| Term::new(format!("n={n}"), vec![dz(n, j)], Some(vec![n, j])))
                            .collect();
                        sum(format!("Σₙ ∂C/∂z[n,{j}]"), terms)
                    }
                    // ∂C/∂a[n,k] = Σⱼ W[j,k] · ∂C/∂z[n,j]
                    _ => {
                        let (n, k) = (at[0], at[1]);
                        let terms = (0..units)
                            .map(|j| {
                                Term::new(
                                    format!("j={j}"),
                                    vec![(format!("w[{j},{k}]"), x[1].at(&[j, k])), dz(n, j)],
                                    Some(vec![n, j]),
                                )
                            })
                            .collect();
                        sum(format!("Σⱼ w[j,{k}] · ∂C/∂z[{n},j]"), terms)
                    }
                }
            }
            // z[n,o,p,q] = Σ_c Σᵢ Σⱼ K[o,c,i,j] · x[n,c,p·s+i·d−pad,q·s+j·d−pad] (+ b[o])
            Op::Conv2d { window } => {
                let [xn, xc, xh, xw] = x[0].shape[..] else {
                    return None;
                };
                let [_, yo, yh, yw] = y.shape[..] else {
                    return None;
                };
                let [kh, kw] = window.kernel;
                let mut terms = Vec::new();
                let mut padded = 0;
                let formula = match input {
                    1 | 2 => {
                        let bias = input == 2;
                        let (o, c, i, j) = if bias {
                            (at[0], 0, 0, 0)
                        } else {
                            (at[0], at[1], at[2], at[3])
                        };
                        for n in 0..xn {
                            for p in 0..yh {
                                for q in 0..yw {
                                    let dz = dy(&[n, o, p, q], "z");
                                    let place = format!("n={n}, p={p}, q={q}");
                                    let out = Some(vec![n, o, p, q]);
                                    if bias {
                                        terms.push(Term::new(place, vec![dz], out));
                                        continue;
                                    }
                                    match (window.source(0, p, i, xh), window.source(1, q, j, xw)) {
                                        (Some(r), Some(s)) => terms.push(Term::new(
                                            place,
                                            vec![
                                                (
                                                    format!("x[{n},{c},{r},{s}]"),
                                                    x[0].at(&[n, c, r, s]),
                                                ),
                                                dz,
                                            ],
                                            out,
                                        )),
                                        _ => padded += 1,
                                    }
                                }
                            }
                        }
                        if bias {
                            format!("Σₙ Σₚ Σ_q ∂C/∂z[n,{o},p,q]")
                        } else {
                            let ([s0, s1], [d0, d1], [p0, p1]) =
                                (window.stride, window.dilation, window.padding);
                            format!(
                                "Σₙ Σₚ Σ_q x[n, {c}, {}, {}] · ∂C/∂z[n,{o},p,q]",
                                position("p", s0, i * d0, p0),
                                position("q", s1, j * d1, p1)
                            )
                        }
                    }
                    // ∂C/∂x[n,c,r,s] = Σ over the kernel taps (o, i, j) whose window
                    // (p, q) reads it of K[o,c,i,j] · ∂C/∂z[n,o,p,q].
                    _ => {
                        let (n, c, r, s) = (at[0], at[1], at[2], at[3]);
                        let _ = xc;
                        for o in 0..yo {
                            for i in 0..kh {
                                for j in 0..kw {
                                    let p =
                                        (0..yh).find(|&p| window.source(0, p, i, xh) == Some(r));
                                    let q =
                                        (0..yw).find(|&q| window.source(1, q, j, xw) == Some(s));
                                    if let (Some(p), Some(q)) = (p, q) {
                                        terms.push(Term::new(
                                            format!("o={o}, i={i}, j={j}"),
                                            vec![
                                                (
                                                    format!("K[{o},{c},{i},{j}]"),
                                                    x[1].at(&[o, c, i, j]),
                                                ),
                                                dy(&[n, o, p, q], "z"),
                                            ],
                                            Some(vec![n, o, p, q]),
                                        ));
                                    }
                                }
                            }
                        }
                        format!(
                            "Σₒ Σᵢ Σⱼ K[o,{c},i,j] · ∂C/∂z[{n},o,p,q] over the windows (p,q) that read x[{}]",
                            list(at)
                        )
                    }
                };
                LocalSum {
                    formula,
                    terms,
                    padded,
                    context: Vec::new(),
                }
            }
            // A max pooling routes each window's ∂C/∂y to the window's first maximum
            // (row-major), an average pooling splits it evenly (padding counted).
            Op::MaxPool2d { window } | Op::AvgPool2d { window } => {
                let [_, _, xh, xw] = x[0].shape[..] else {
                    return None;
                };
                let [_, _, yh, yw] = y.shape[..] else {
                    return None;
                };
                let (n, c, r, s) = (at[0], at[1], at[2], at[3]);
                let max = matches!(self, Op::MaxPool2d { .. });
                let taps = window.kernel[0] * window.kernel[1];
                let mut terms = Vec::new();
                let mut passed = Vec::new();
                for p in 0..yh {
                    for q in 0..yw {
                        let inside = |axis: usize, o: usize, target: usize, size: usize| {
                            (0..window.kernel[axis])
                                .any(|k| window.source(axis, o, k, size) == Some(target))
                        };
                        if !(inside(0, p, r, xh) && inside(1, q, s, xw)) {
                            continue;
                        }
                        let out = vec![n, c, p, q];
                        if !max {
                            terms.push(Term::new(
                                format!("window ({p},{q})"),
                                vec![(format!("1/{taps}"), 1.0 / taps as f64), dy(&out, "y")],
                                Some(out),
                            ));
                            continue;
                        }
                        // The window's first maximum, row-major, as PyTorch's CPU kernel.
                        let mut first: Option<((usize, usize), f64)> = None;
                        for i in 0..window.kernel[0] {
                            let Some(a) = window.source(0, p, i, xh) else {
                                continue;
                            };
                            for j in 0..window.kernel[1] {
                                let Some(b) = window.source(1, q, j, xw) else {
                                    continue;
                                };
                                let v = x[0].at(&[n, c, a, b]);
                                if first.is_none_or(|(_, m)| v > m) {
                                    first = Some(((a, b), v));
                                }
                            }
                        }
                        match first {
                            Some((place, _)) if place == (r, s) => terms.push(Term::new(
                                format!("window ({p},{q})"),
                                vec![dy(&out, "y")],
                                Some(out),
                            )),
                            Some((_, m)) => passed.push((format!("window ({p},{q})'s maximum"), m)),
                            None => {}
                        }
                    }
                }
                LocalSum {
                    formula: if max {
                        "Σ ∂C/∂y over the windows whose maximum it is".into()
                    } else {
                        format!("Σ ∂C/∂y / {taps} over the windows that hold it")
                    },
                    terms,
                    padded: 0,
                    context: passed,
                }
            }
            // Batch norm over the batch (training) and layer norm over each sample's
            // trailing axes: y = γ·x̂ + β, x̂ = (x − μ)/√(σ² + ε).
            Op::BatchNorm { eps } | Op::LayerNorm { eps, .. } => {
                let shape = &x[0].shape;
                let data = &x[0].data;
                // Which group of values shares the statistics of element `e`, and which
                // parameter element scales it: a channel over the batch, or a sample's
                // trailing block.
                let layout = match self {
                    Op::BatchNorm { .. } => Grouping::Channels {
                        channels: *shape.get(1)?,
                        inner: shape[2..].iter().product(),
                    },
                    Op::LayerNorm { trailing, .. } => Grouping::Trailing {
                        size: shape[shape.len().checked_sub(*trailing)?..]
                            .iter()
                            .product(),
                    },
                    _ => unreachable!("a normalisation"),
                };
                let (count, group_of, param_of) = (
                    layout.count(data.len()),
                    |e| layout.group(e),
                    |e| layout.parameter(e),
                );
                let mut groups = vec![Vec::new(); count];
                for e in 0..data.len() {
                    groups[group_of(e)].push(e);
                }
                // Mean and √(σ² + ε) of each group, over its values in f64.
                let statistics: Vec<(f64, f64)> = groups
                    .iter()
                    .map(|members| {
                        let (mean, var) = moments(data, members);
                        (mean, (var + eps).sqrt())
                    })
                    .collect();
                let xhat = |e: usize| {
                    let (mean, sd) = statistics[group_of(e)];
                    (data[e] - mean) / sd
                };
                let affine = x.len() == 3;
                let gamma = |e: usize| if affine { x[1].data[param_of(e)] } else { 1.0 };
                let name = |e: usize| list(&coordinates(e, shape));
                match input {
                    // ∂C/∂γ = Σ x̂ · ∂C/∂y, ∂C/∂β = Σ ∂C/∂y over the values they scale
                    1 | 2 => {
                        let k = flat(at, &x[input].shape);
                        let terms = (0..data.len())
                            .filter(|&e| param_of(e) == k)
                            .map(|e| {
                                let dy = (format!("∂C/∂y[{}]", name(e)), g.data[e]);
                                let factors = if input == 2 {
                                    vec![dy]
                                } else {
                                    vec![(format!("x̂[{}]", name(e)), xhat(e)), dy]
                                };
                                Term::new(name(e), factors, Some(coordinates(e, shape)))
                            })
                            .collect();
                        sum(
                            if input == 2 {
                                "Σ ∂C/∂y over the values it shifts".into()
                            } else {
                                "Σ x̂ · ∂C/∂y over the values it scales, x̂ = (x − μ)/√(σ² + ε)"
                                    .into()
                            },
                            terms,
                        )
                    }
                    // ∂C/∂x along its three paths: through x̂ directly, through the
                    // mean μ and through the variance σ² that every value of its group
                    // shares: γ·∂C/∂y/σ − mean(γ·∂C/∂y)/σ − x̂ · mean(γ·∂C/∂y·x̂)/σ.
                    _ => {
                        let e = flat(at, shape);
                        let members = &groups[group_of(e)];
                        let (mean, sd) = statistics[group_of(e)];
                        let m = members.len() as f64;
                        let mean_g = members.iter().map(|&i| gamma(i) * g.data[i]).sum::<f64>() / m;
                        let mean_gx = members
                            .iter()
                            .map(|&i| gamma(i) * g.data[i] * xhat(i))
                            .sum::<f64>()
                            / m;
                        let path = |at: &str, symbol: &str, value: f64, out: Option<Vec<usize>>| {
                            Term::new(at.into(), vec![(symbol.into(), value)], out)
                        };
                        LocalSum {
                            formula: "γ·∂C/∂y/σ − mean(γ·∂C/∂y)/σ − x̂·mean(γ·∂C/∂y·x̂)/σ".into(),
                            terms: vec![
                                path(
                                    "through x̂",
                                    "γ·∂C/∂y/σ",
                                    gamma(e) * g.data[e] / sd,
                                    Some(at.to_vec()),
                                ),
                                path("through μ", "−mean(γ·∂C/∂y)/σ", -mean_g / sd, None),
                                path(
                                    "through σ²",
                                    "−x̂·mean(γ·∂C/∂y·x̂)/σ",
                                    -xhat(e) * mean_gx / sd,
                                    None,
                                ),
                            ],
                            padded: 0,
                            context: vec![
                                ("m (values that share μ and σ)".into(), m),
                                ("μ".into(), mean),
                                ("σ".into(), sd),
                            ],
                        }
                    }
                }
            }
            _ => return None,
        })
    }
}
