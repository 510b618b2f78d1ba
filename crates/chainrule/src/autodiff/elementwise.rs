//! The element-wise function table: every function applied to each element on its
//! own, with its value, its derivative and its formula side by side.
//!
//! This is the one place where the math of `relu`, `tanh`, `exp`, … is written. The
//! tensor tape ([`Op::Map`](super::Op::Map)), the scalar tape of small networks, the
//! symbolic engine and the derivations of `chainrule-explain`, the formula files and
//! the model file's activation layers all read it. A new function is one arm in each
//! `match` below, and nothing else.
//!
//! Conventions, in every arm: `x` is the input, `out` = f(x) the output, `g` the
//! gradient ∂L/∂out flowing in; [`Elementwise::grad`] returns ∂L/∂x = g·f′(x).
//! Where f′ is undefined (a kink), the value is PyTorch's and the arm says so.
//!
//! ```
//! use chainrule::autodiff::Elementwise;
//! let f = Elementwise::Tanh;
//! let (x, out) = (0.5f64, 0.5f64.tanh());
//! assert_eq!(f.value(x), out);
//! assert_eq!(f.derivative(x, out), 1.0 - out * out);   // tanh′ = 1 − tanh²
//! assert_eq!(Elementwise::Relu.derivative(0.0f64, 0.0), 0.0); // relu′(0) = 0, as PyTorch
//! ```

use crate::Float;

/// PyTorch's floor on p(1 − p) in BCE's gradient: the f32 value of 1e-12, in every
/// dtype (read by the loss rules, kept beside the functions they use).
pub(crate) const BCE_EPSILON: f64 = 1e-12_f32 as f64;

/// An element-wise function, with its constants (a slope, an exponent).
///
/// ```
/// use chainrule::autodiff::Elementwise;
/// assert_eq!(Elementwise::LeakyRelu { slope: 0.1 }.value(-2.0f64), -0.2);
/// assert_eq!(Elementwise::from_name("sigmoid"), Some(Elementwise::Sigmoid));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Elementwise {
    /// −x.
    Neg,
    /// c·x for a constant c.
    Scale {
        /// The factor c.
        c: f64,
    },
    /// xᵖ for a constant p.
    Pow {
        /// The exponent p.
        p: f64,
    },
    /// eˣ.
    Exp,
    /// ln x.
    Log,
    /// √x.
    Sqrt,
    /// |x|.
    Abs,
    /// sign x: −1, 0 or 1.
    Sign,
    /// The unit step: 1 for x > 0, else 0 (relu′, 0 at 0 as PyTorch).
    Step,
    /// clamp(x, min, max).
    Clamp {
        /// The lower bound.
        min: f64,
        /// The upper bound.
        max: f64,
    },
    /// max(x, 0).
    Relu,
    /// x for x > 0, slope·x otherwise.
    LeakyRelu {
        /// The negative slope (PyTorch's default 0.01).
        slope: f64,
    },
    /// σ(x) = 1/(1 + e⁻ˣ).
    Sigmoid,
    /// tanh x.
    Tanh,
    /// The error function erf x = (2/√π) ∫₀ˣ e^(−t²) dt.
    Erf,
    /// GELU (PyTorch's `nn.GELU`): x·Φ(x), Φ the normal distribution function; with
    /// `tanh`, the approximation 0.5x(1 + tanh(√(2/π)(x + 0.044715x³))).
    Gelu {
        /// Whether to use the tanh approximation (`approximate="tanh"`).
        tanh: bool,
    },
    /// SiLU (swish): x·σ(x).
    Silu,
    /// ELU: x for x > 0, alpha·(eˣ − 1) otherwise.
    Elu {
        /// The scale of the negative side (PyTorch's default 1).
        alpha: f64,
    },
    /// Softplus: ln(1 + e^(βx))/β, and x itself where βx > threshold.
    Softplus {
        /// β (PyTorch's default 1).
        beta: f64,
        /// Where it turns linear (PyTorch's default 20).
        threshold: f64,
    },
}

use Elementwise::*;

/// √(2/π), GELU's tanh approximation's scale.
const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
/// The cubic coefficient of GELU's tanh approximation.
const GELU_CUBIC: f64 = 0.044_715;

/// How a formula is written: in plain Unicode text, in LaTeX, or in sympy's syntax.
///
/// ```
/// use chainrule::autodiff::{Elementwise, Style};
/// assert_eq!(Elementwise::Relu.render_call(Style::Sympy, "x"), "Max(0, x)");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Unicode text (`relu(z)`).
    Text,
    /// LaTeX (`\max\left(0, z\right)`).
    Latex,
    /// sympy syntax (`Max(0, z)`), which `sympy.parse_expr` reads.
    Sympy,
}

/// What the table's formulas are written in: numbers, calls of the table's functions
/// and arithmetic. The symbolic engine of `chainrule-explain` implements it; so does
/// `f64`, which evaluates a formula (the tests compare that with [`Elementwise::value`]
/// and [`Elementwise::derivative`]).
///
/// ```
/// use chainrule::autodiff::{Elementwise, Formula};
/// // σ as notebook 003 writes it, 1/(1 + e^−x), evaluated at 0:
/// assert_eq!(Elementwise::Sigmoid.formula(0.0f64), 0.5);
/// ```
pub trait Formula: Clone {
    /// A number.
    fn number(value: f64) -> Self;
    /// f(x), kept as a call of `f`.
    fn call(f: Elementwise, x: Self) -> Self;
    /// self + other.
    fn plus(self, other: Self) -> Self;
    /// self · other.
    fn times(self, other: Self) -> Self;
    /// selfᵖ.
    fn power(self, p: f64) -> Self;
}

impl Formula for f64 {
    fn number(value: f64) -> Self {
        value
    }
    fn call(f: Elementwise, x: Self) -> Self {
        f.value(x)
    }
    fn plus(self, other: Self) -> Self {
        self + other
    }
    fn times(self, other: Self) -> Self {
        self * other
    }
    fn power(self, p: f64) -> Self {
        self.powf(p)
    }
}

/// c·e, written with the table's vocabulary.
fn scaled<E: Formula>(c: f64, e: E) -> E {
    E::number(c).times(e)
}

impl Elementwise {
    /// f(x).
    ///
    /// ```
    /// use chainrule::autodiff::Elementwise;
    /// assert_eq!(Elementwise::Pow { p: 2.0 }.value(3.0f64), 9.0);
    /// ```
    // Always inlined so that a pass over a tensor with a known function (the ReLU's
    // fast path) compiles to a vector loop instead of a call per element; a plain
    // `#[inline]` left the call (the match is too large for LLVM's estimate).
    #[inline(always)]
    pub fn value<F: Float>(self, x: F) -> F {
        let zero = F::zero();
        match self {
            Neg => -x,
            Scale { c } => F::from_f64(c) * x,
            // x² as one product, as PyTorch computes it (and a tenth of `powf`'s cost:
            // the squared error of every regression step goes through here).
            Pow { p: 2.0 } => x * x,
            Pow { p } => x.powf(F::from_f64(p)),
            Exp => x.exp(),
            Log => x.ln(),
            Sqrt => x.sqrt(),
            Abs => x.abs(),
            Sign => sign(x),
            Step => step(x),
            Clamp { min, max } => x.max(F::from_f64(min)).min(F::from_f64(max)),
            Relu => {
                if x > zero {
                    x
                } else {
                    zero
                }
            }
            LeakyRelu { slope } => {
                if x > zero {
                    x
                } else {
                    F::from_f64(slope) * x
                }
            }
            Sigmoid => crate::tensor::sigmoid(x),
            Tanh => x.tanh(),
            Erf => erf(x),
            // x·Φ(x) = 0.5x(1 + erf(x/√2))
            Gelu { tanh: false } => {
                let half = F::from_f64(0.5);
                x * half * (F::one() + erf(x * F::from_f64(std::f64::consts::FRAC_1_SQRT_2)))
            }
            Gelu { tanh: true } => {
                let half = F::from_f64(0.5);
                let inner = F::from_f64(SQRT_2_OVER_PI) * (x + F::from_f64(GELU_CUBIC) * x * x * x);
                half * x * (F::one() + inner.tanh())
            }
            Silu => x * crate::tensor::sigmoid(x),
            Elu { alpha } => {
                if x > zero {
                    x
                } else {
                    F::from_f64(alpha) * x.exp_m1()
                }
            }
            Softplus { beta, threshold } => {
                let bx = F::from_f64(beta) * x;
                if bx > F::from_f64(threshold) {
                    x
                } else {
                    bx.exp().ln_1p() / F::from_f64(beta)
                }
            }
        }
    }

    /// ∂L/∂x = g·f′(x), from the input `x`, the output `out` = f(x) and `g` = ∂L/∂out.
    /// Written as the chain-rule product, so that a zero derivative is a select (a NaN
    /// in `g` does not leak through relu's flat side, as in PyTorch).
    ///
    /// ```
    /// use chainrule::autodiff::Elementwise;
    /// // d/dx eˣ = eˣ = out
    /// assert_eq!(Elementwise::Exp.grad(0.0f64, 1.0, 3.0), 3.0);
    /// ```
    #[inline]
    pub fn grad<F: Float>(self, x: F, out: F, g: F) -> F {
        let (zero, one) = (F::zero(), F::one());
        match self {
            // d/dx (−x) = −1
            Neg => -g,
            // d/dx c·x = c
            Scale { c } => g * F::from_f64(c),
            // d/dx xᵖ = p·xᵖ⁻¹
            // (x¹ = x exactly: the same number as `powf` gives, without the call)
            Pow { p: 2.0 } => g * (F::from_f64(2.0) * x),
            Pow { p } => {
                let p = F::from_f64(p);
                g * (p * x.powf(p - one))
            }
            // d/dx eˣ = eˣ = out
            Exp => g * out,
            // d/dx ln x = 1/x
            Log => g / x,
            // d/dx √x = 1/(2√x) = 1/(2·out)
            Sqrt => g / (out * F::from_f64(2.0)),
            // d/dx |x| = sign x, 0 at 0 (as PyTorch)
            Abs => {
                if x > zero {
                    g
                } else if x < zero {
                    -g
                } else {
                    zero
                }
            }
            // sign and step are flat wherever they are differentiable
            Sign | Step => zero,
            // d/dx clamp = 1 inside [min, max], bounds included (as PyTorch), else 0
            Clamp { min, max } => {
                if x >= F::from_f64(min) && x <= F::from_f64(max) {
                    g
                } else {
                    zero
                }
            }
            // relu′ = 1 for x > 0, 0 for x ≤ 0 (0 at 0, as PyTorch and the notebooks)
            Relu => {
                if x > zero {
                    g
                } else {
                    zero
                }
            }
            // leaky_relu′ = 1 for x > 0, slope for x ≤ 0 (the slope at 0, as PyTorch)
            LeakyRelu { slope } => {
                if x > zero {
                    g
                } else {
                    F::from_f64(slope) * g
                }
            }
            // σ′ = σ(1 − σ) = out·(1 − out)
            Sigmoid => g * (out * (one - out)),
            // tanh′ = 1 − tanh² = 1 − out²
            Tanh => g * (one - out * out),
            // erf′ = (2/√π)·e^(−x²)
            Erf => g * (F::from_f64(std::f64::consts::FRAC_2_SQRT_PI) * (-x * x).exp()),
            // gelu′ = Φ(x) + x·φ(x), φ(x) = e^(−x²/2)/√(2π)
            Gelu { tanh: false } => {
                let half = F::from_f64(0.5);
                let cdf = half * (one + erf(x * F::from_f64(std::f64::consts::FRAC_1_SQRT_2)));
                let pdf = F::from_f64(
                    0.5 * std::f64::consts::FRAC_2_SQRT_PI * std::f64::consts::FRAC_1_SQRT_2,
                ) * (-half * x * x).exp();
                g * (cdf + x * pdf)
            }
            // with t = tanh(k(x + cx³)): 0.5(1 + t) + 0.5x(1 − t²)·k(1 + 3cx²)
            Gelu { tanh: true } => {
                let (half, k, c) = (
                    F::from_f64(0.5),
                    F::from_f64(SQRT_2_OVER_PI),
                    F::from_f64(GELU_CUBIC),
                );
                let t = (k * (x + c * x * x * x)).tanh();
                let inner = k * (one + F::from_f64(3.0) * c * x * x);
                g * (half * (one + t) + half * x * (one - t * t) * inner)
            }
            // silu′ = σ(x)(1 + x(1 − σ(x)))
            Silu => {
                let s = crate::tensor::sigmoid(x);
                g * (s * (one + x * (one - s)))
            }
            // elu′ = 1 for x > 0, alpha·eˣ for x ≤ 0 (alpha at 0, as PyTorch)
            Elu { alpha } => {
                if x > zero {
                    g
                } else {
                    g * (F::from_f64(alpha) * x.exp())
                }
            }
            // softplus′ = σ(βx) = e^(βx)/(e^(βx) + 1), and 1 where βx > threshold
            Softplus { beta, threshold } => {
                let bx = F::from_f64(beta) * x;
                if bx > F::from_f64(threshold) {
                    g
                } else {
                    let z = bx.exp();
                    g * z / (z + one)
                }
            }
        }
    }

    /// f′(x), given `out` = f(x): [`Elementwise::grad`] with g = 1.
    ///
    /// ```
    /// use chainrule::autodiff::Elementwise;
    /// assert_eq!(Elementwise::Sigmoid.derivative(0.0f64, 0.5), 0.25);
    /// ```
    pub fn derivative<F: Float>(self, x: F, out: F) -> F {
        self.grad(x, out, F::one())
    }

    /// f(x) as a formula: a call of `f` for the functions the symbolic engine keeps
    /// whole, or the closed form the notebooks write (σ as 1/(1 + e⁻ˣ), √x as x^0.5).
    ///
    /// ```
    /// use chainrule::autodiff::Elementwise;
    /// assert_eq!(Elementwise::LeakyRelu { slope: 0.1 }.formula(-2.0f64), -0.2);
    /// ```
    pub fn formula<E: Formula>(self, x: E) -> E {
        match self {
            Neg => scaled(-1.0, x),
            Scale { c } => scaled(c, x),
            Pow { p } => x.power(p),
            Sqrt => x.power(0.5),
            // 1/(1 + e^−x), as notebook 003
            Sigmoid => E::number(1.0)
                .plus(E::call(Exp, scaled(-1.0, x)))
                .power(-1.0),
            // relu(x) − slope·relu(−x)
            LeakyRelu { slope } => {
                E::call(Relu, x.clone()).plus(scaled(-slope, E::call(Relu, scaled(-1.0, x))))
            }
            // min(max(x, lo), hi) = lo + relu(x − lo) − relu(x − hi)
            Clamp { min, max } => E::number(min)
                .plus(E::call(Relu, x.clone().plus(E::number(-min))))
                .plus(scaled(-1.0, E::call(Relu, x.plus(E::number(-max))))),
            Exp
            | Log
            | Abs
            | Sign
            | Step
            | Relu
            | Tanh
            | Erf
            | Gelu { .. }
            | Silu
            | Elu { .. }
            | Softplus { .. } => E::call(self, x),
        }
    }

    /// f′(x) as a formula, for the functions [`Elementwise::formula`] keeps as a call
    /// (the symbolic engine differentiates the others through their closed form).
    ///
    /// ```
    /// use chainrule::autodiff::Elementwise;
    /// let x = 0.3f64;
    /// assert_eq!(Elementwise::Tanh.derivative_formula(x), 1.0 - x.tanh().powf(2.0));
    /// ```
    pub fn derivative_formula<E: Formula>(self, x: E) -> E {
        match self {
            // eˣ
            Exp => E::call(Exp, x),
            // 1/x
            Log => x.power(-1.0),
            // sign x
            Abs => E::call(Sign, x),
            // step x
            Relu => E::call(Step, x),
            // 1 − tanh²x
            Tanh => E::number(1.0).plus(scaled(-1.0, E::call(Tanh, x).power(2.0))),
            Sign | Step => E::number(0.0),
            // The closed forms: differentiated in their own terms.
            Neg => E::number(-1.0),
            Scale { c } => E::number(c),
            Pow { p } => scaled(p, x.power(p - 1.0)),
            Sqrt => scaled(0.5, x.power(-0.5)),
            Sigmoid => {
                let s = self.formula(x);
                s.clone().times(E::number(1.0).plus(scaled(-1.0, s)))
            }
            LeakyRelu { slope } => {
                E::call(Step, x.clone()).plus(scaled(slope, E::call(Step, scaled(-1.0, x))))
            }
            Clamp { min, max } => E::call(Step, x.clone().plus(E::number(-min)))
                .plus(scaled(-1.0, E::call(Step, x.plus(E::number(-max))))),
            // (2/√π)·e^(−x²)
            Erf => scaled(
                std::f64::consts::FRAC_2_SQRT_PI,
                E::call(Exp, scaled(-1.0, x.power(2.0))),
            ),
            // 0.5(1 + erf(x/√2)) + x·e^(−x²/2)/√(2π)
            Gelu { tanh: false } => scaled(
                0.5,
                E::number(1.0).plus(E::call(
                    Erf,
                    scaled(std::f64::consts::FRAC_1_SQRT_2, x.clone()),
                )),
            )
            .plus(scaled(
                0.5 * std::f64::consts::FRAC_2_SQRT_PI * std::f64::consts::FRAC_1_SQRT_2,
                x.clone().times(E::call(Exp, scaled(-0.5, x.power(2.0)))),
            )),
            // 0.5(1 + t) + 0.5x(1 − t²)·k(1 + 3cx²), t = tanh(k(x + cx³))
            Gelu { tanh: true } => {
                let t = E::call(
                    Tanh,
                    scaled(
                        SQRT_2_OVER_PI,
                        x.clone().plus(scaled(GELU_CUBIC, x.clone().power(3.0))),
                    ),
                );
                let inner = scaled(
                    SQRT_2_OVER_PI,
                    E::number(1.0).plus(scaled(3.0 * GELU_CUBIC, x.clone().power(2.0))),
                );
                scaled(0.5, E::number(1.0).plus(t.clone())).plus(
                    scaled(0.5, x)
                        .times(E::number(1.0).plus(scaled(-1.0, t.power(2.0))))
                        .times(inner),
                )
            }
            // σ(x)(1 + x(1 − σ(x)))
            Silu => {
                let s = Sigmoid.formula(x.clone());
                s.clone()
                    .times(E::number(1.0).plus(x.times(E::number(1.0).plus(scaled(-1.0, s)))))
            }
            // step(x) + alpha·eˣ·(1 − step(x)): alpha at 0, as PyTorch
            Elu { alpha } => E::call(Step, x.clone()).plus(scaled(
                alpha,
                E::call(Exp, x.clone()).times(E::number(1.0).plus(scaled(-1.0, E::call(Step, x)))),
            )),
            // step(βx − threshold) + (1 − step(βx − threshold))·σ(βx)
            Softplus { beta, threshold } => {
                let linear = E::call(Step, scaled(beta, x.clone()).plus(E::number(-threshold)));
                linear.clone().plus(
                    E::number(1.0)
                        .plus(scaled(-1.0, linear))
                        .times(Sigmoid.formula(scaled(beta, x))),
                )
            }
        }
    }

    /// The function's name: in formula files, in the model file (for the activation
    /// layers) and in drawings.
    ///
    /// ```
    /// assert_eq!(chainrule::autodiff::Elementwise::LeakyRelu { slope: 0.2 }.name(), "leaky_relu");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            Neg => "neg",
            Scale { .. } => "scale",
            Pow { .. } => "pow",
            Exp => "exp",
            Log => "log",
            Sqrt => "sqrt",
            Abs => "abs",
            Sign => "sign",
            Step => "step",
            Clamp { .. } => "clamp",
            Relu => "relu",
            LeakyRelu { .. } => "leaky_relu",
            Sigmoid => "sigmoid",
            Tanh => "tanh",
            Erf => "erf",
            Gelu { .. } => "gelu",
            Silu => "silu",
            Elu { .. } => "elu",
            Softplus { .. } => "softplus",
        }
    }

    /// The function's constants as (name, value), named as the model file's keys.
    ///
    /// ```
    /// use chainrule::autodiff::{Constant, Elementwise};
    /// assert_eq!(Elementwise::LeakyRelu { slope: 0.2 }.constants(), vec![("slope", Constant::Number(0.2))]);
    /// ```
    pub fn constants(self) -> Vec<(&'static str, Constant)> {
        use Constant::Number;
        match self {
            Scale { c } => vec![("c", Number(c))],
            Pow { p } => vec![("p", Number(p))],
            Clamp { min, max } => vec![("min", Number(min)), ("max", Number(max))],
            LeakyRelu { slope } => vec![("slope", Number(slope))],
            Gelu { tanh } => vec![(
                "approximate",
                Constant::Choice(if tanh { "tanh" } else { "none" }),
            )],
            Elu { alpha } => vec![("alpha", Number(alpha))],
            Softplus { beta, threshold } => {
                vec![("beta", Number(beta)), ("threshold", Number(threshold))]
            }
            Neg | Exp | Log | Sqrt | Abs | Sign | Step | Relu | Sigmoid | Tanh | Erf | Silu => {
                vec![]
            }
        }
    }

    /// The function a formula file or an activation layer names, with its default
    /// constants (`sigmoid` and `σ`, `relu`, `leaky_relu` with slope 0.01, …).
    ///
    /// ```
    /// use chainrule::autodiff::Elementwise;
    /// assert_eq!(Elementwise::from_name("σ"), Some(Elementwise::Sigmoid));
    /// assert_eq!(Elementwise::from_name("pow"), None); // needs an exponent
    /// ```
    pub fn from_name(name: &str) -> Option<Elementwise> {
        Some(match name {
            "exp" => Exp,
            "log" | "ln" => Log,
            "sqrt" => Sqrt,
            "abs" => Abs,
            "sign" => Sign,
            "step" => Step,
            "relu" => Relu,
            "leaky_relu" => LeakyRelu { slope: 0.01 },
            "sigmoid" | "σ" => Sigmoid,
            "tanh" => Tanh,
            "erf" => Erf,
            "gelu" => Gelu { tanh: false },
            "silu" => Silu,
            "elu" => Elu { alpha: 1.0 },
            "softplus" => Softplus {
                beta: 1.0,
                threshold: 20.0,
            },
            _ => return None,
        })
    }

    /// The same function with its constant `key` set to `value` (the model file's
    /// `{"type": "leaky_relu", "slope": 0.2}`).
    ///
    /// # Errors
    /// A message for the model file when the function has no such constant or the
    /// value is not one it takes.
    ///
    /// ```
    /// use chainrule::autodiff::{Constant, Elementwise};
    /// let f = Elementwise::from_name("leaky_relu").unwrap();
    /// assert_eq!(f.with_constant("slope", Constant::Number(0.2)), Ok(Elementwise::LeakyRelu { slope: 0.2 }));
    /// assert!(f.with_constant("alpha", Constant::Number(0.2)).is_err());
    /// ```
    pub fn with_constant(self, key: &str, value: Constant) -> Result<Elementwise, String> {
        use Constant::Number;
        Ok(match (self, key, value) {
            (Scale { .. }, "c", Number(c)) => Scale { c },
            (Pow { .. }, "p", Number(p)) => Pow { p },
            (Clamp { max, .. }, "min", Number(min)) => Clamp { min, max },
            (Clamp { min, .. }, "max", Number(max)) => Clamp { min, max },
            (LeakyRelu { .. }, "slope", Number(slope)) => LeakyRelu { slope },
            (Gelu { .. }, "approximate", Constant::Choice(c)) if c == "none" || c == "tanh" => {
                Gelu { tanh: c == "tanh" }
            }
            (Elu { .. }, "alpha", Number(alpha)) => Elu { alpha },
            (Softplus { threshold, .. }, "beta", Number(beta)) if beta != 0.0 => {
                Softplus { beta, threshold }
            }
            (Softplus { beta, .. }, "threshold", Number(threshold)) => Softplus { beta, threshold },
            (_, key, value) => {
                return Err(format!("{} takes no {key} of {value}", self.name()));
            }
        })
    }

    /// The activation layers of the model file, with their default constants.
    pub const LAYERS: [Elementwise; 8] = [
        Relu,
        LeakyRelu { slope: 0.01 },
        Sigmoid,
        Tanh,
        Gelu { tanh: false },
        Silu,
        Elu { alpha: 1.0 },
        Softplus {
            beta: 1.0,
            threshold: 20.0,
        },
    ];

    /// Whether the function is an activation layer of the model file (one of
    /// [`Elementwise::LAYERS`], with any constants).
    ///
    /// ```
    /// use chainrule::autodiff::Elementwise;
    /// assert!(Elementwise::Tanh.is_layer() && !Elementwise::Exp.is_layer());
    /// ```
    pub fn is_layer(self) -> bool {
        let kind = std::mem::discriminant(&self);
        Self::LAYERS
            .iter()
            .any(|l| std::mem::discriminant(l) == kind)
    }

    /// The names a [`Constant::Choice`] constant `key` accepts (empty for the others).
    ///
    /// ```
    /// use chainrule::autodiff::Elementwise;
    /// assert!(Elementwise::Relu.choices("slope").is_empty());
    /// ```
    pub fn choices(self, key: &str) -> &'static [&'static str] {
        match (self, key) {
            (Gelu { .. }, "approximate") => &["none", "tanh"],
            _ => &[],
        }
    }

    /// f(`arg`) written in `style`, for a call kept whole by [`Elementwise::formula`]
    /// (`arg` is already rendered).
    ///
    /// ```
    /// use chainrule::autodiff::{Elementwise, Style};
    /// assert_eq!(Elementwise::Exp.render_call(Style::Latex, "z"), "e^{z}");
    /// assert_eq!(Elementwise::Tanh.render_call(Style::Text, "z"), "tanh(z)");
    /// ```
    pub fn render_call(self, style: Style, arg: &str) -> String {
        match (self, style) {
            (Exp, Style::Latex) => format!("e^{{{arg}}}"),
            (Relu, Style::Latex) => format!(r"\max\left(0, {arg}\right)"),
            (Relu, Style::Sympy) => format!("Max(0, {arg})"),
            (Step, Style::Latex) => format!(r"\theta\left({arg}\right)"),
            (Step, Style::Sympy) => format!("Heaviside({arg}, 0)"),
            (Abs, Style::Latex) => format!(r"\left|{arg}\right|"),
            (Abs, Style::Sympy) => format!("Abs({arg})"),
            (Sign, Style::Latex) => format!(r"\operatorname{{sign}}\left({arg}\right)"),
            // sympy has no gelu, silu, elu or softplus: their definitions
            (Gelu { tanh: false }, Style::Sympy) => {
                format!(
                    "(0.5*({arg})*(1 + erf(({arg})*{:?})))",
                    std::f64::consts::FRAC_1_SQRT_2
                )
            }
            (Gelu { tanh: true }, Style::Sympy) => format!(
                "(0.5*({arg})*(1 + tanh({SQRT_2_OVER_PI:?}*(({arg}) + {GELU_CUBIC:?}*({arg})**3))))"
            ),
            (Silu, Style::Sympy) => format!("(({arg})/(1 + exp(-({arg}))))"),
            (Elu { alpha }, Style::Sympy) => {
                format!("Piecewise((({arg}), ({arg}) > 0), ({alpha:?}*(exp({arg}) - 1), True))")
            }
            (Softplus { beta, threshold }, Style::Sympy) => format!(
                "Piecewise((({arg}), {beta:?}*({arg}) > {threshold:?}), (log(1 + exp({beta:?}*({arg})))/{beta:?}, True))"
            ),
            (Log | Tanh, Style::Latex) => format!(r"\{}\left({arg}\right)", self.name()),
            (_, Style::Latex) => format!(r"\operatorname{{{}}}\left({arg}\right)", self.name()),
            _ => format!("{}({arg})", self.name()),
        }
    }

    /// The local derivative ∂a/∂z of an activation as the notebooks write it, for
    /// a = f(z): text and LaTeX from the symbols of `z` and `a` (text, LaTeX each), and
    /// the text with the numbers `z` and `a` put in (already formatted). `None` for
    /// the functions that are not activation layers: explanations write their
    /// derivative out from [`Elementwise::derivative_formula`].
    ///
    /// ```
    /// use chainrule::autodiff::Elementwise;
    /// let n = Elementwise::Sigmoid.derivative_notation(("z", "z"), ("a", "a"), ("0", "0.5")).unwrap();
    /// assert_eq!(n.text, "σ(z)(1 − σ(z)) = a(1 − a)");
    /// assert_eq!(n.with_numbers, "0.5(1 − 0.5)");
    /// let relu = Elementwise::Relu.derivative_notation(("z", "z"), ("a", "a"), ("0.5", "0.5"));
    /// assert_eq!(relu.unwrap().with_numbers, "relu′(0.5)");
    /// assert!(Elementwise::Exp.derivative_notation(("z", "z"), ("a", "a"), ("0", "1")).is_none());
    /// ```
    pub fn derivative_notation(
        self,
        z: (&str, &str),
        a: (&str, &str),
        numbers: (&str, &str),
    ) -> Option<DerivativeNotation> {
        if !self.is_layer() {
            return None;
        }
        let (zn, an) = numbers;
        Some(match self {
            Sigmoid => DerivativeNotation {
                text: format!("σ({0})(1 − σ({0})) = {1}(1 − {1})", z.0, a.0),
                latex: format!(r"\sigma({0})(1 - \sigma({0}))", z.1),
                with_numbers: format!("{an}(1 − {an})"),
            },
            Tanh => DerivativeNotation {
                text: format!("1 − tanh²({}) = 1 − {}²", z.0, a.0),
                latex: format!(r"1 - \tanh^2({})", z.1),
                with_numbers: format!("1 − {an}²"),
            },
            _ => {
                let constants: Vec<String> = self
                    .constants()
                    .iter()
                    .map(|(_, v)| v.to_string())
                    .collect();
                let name = if constants.is_empty() {
                    self.name().to_string()
                } else {
                    format!("{}({})", self.name(), constants.join(", "))
                };
                let latex_name = if constants.is_empty() {
                    self.name().to_string()
                } else {
                    format!("{}_{{{}}}", self.name(), constants.join(", "))
                };
                DerivativeNotation {
                    text: format!("{name}′({})", z.0),
                    latex: format!(r"\mathrm{{{latex_name}}}'({})", z.1),
                    with_numbers: format!("{name}′({zn})"),
                }
            }
        })
    }
}

/// The value of a function's constant: a number (a slope) or a choice among names
/// (GELU's approximation).
///
/// ```
/// use chainrule::autodiff::Constant;
/// assert_eq!(Constant::Number(0.5).to_string(), "0.5");
/// assert_eq!(Constant::Choice("tanh").to_string(), "tanh");
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Constant {
    /// A number.
    Number(f64),
    /// One of the names the function accepts.
    Choice(&'static str),
}

impl std::fmt::Display for Constant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Constant::Number(v) => write!(f, "{v}"),
            Constant::Choice(name) => write!(f, "{name}"),
        }
    }
}

/// How a local derivative ∂a/∂z is written: see [`Elementwise::derivative_notation`].
///
/// ```
/// use chainrule::autodiff::Elementwise;
/// let n = Elementwise::Tanh.derivative_notation(("z", "z"), ("a", "a"), ("0", "0")).unwrap();
/// assert_eq!(n.latex, r"1 - \tanh^2(z)");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DerivativeNotation {
    /// In text, with symbols.
    pub text: String,
    /// In LaTeX, with symbols.
    pub latex: String,
    /// In text, with the numbers.
    pub with_numbers: String,
}

/// sign x: −1, 0 or 1 (0 at 0; NaN stays NaN).
fn sign<F: Float>(x: F) -> F {
    if x > F::zero() {
        F::one()
    } else if x < F::zero() {
        -F::one()
    } else {
        x * F::zero()
    }
}

/// erf x, computed in f64 (libm's, to within an ulp) and rounded to `F`.
fn erf<F: Float>(x: F) -> F {
    F::from_f64(libm::erf(x.as_f64()))
}

/// 1 for x > 0, else 0.
fn step<F: Float>(x: F) -> F {
    if x > F::zero() { F::one() } else { F::zero() }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every function of the table, with constants that exercise them.
    pub(crate) const ALL: [Elementwise; 22] = [
        Neg,
        Scale { c: -2.5 },
        Pow { p: 3.0 },
        Exp,
        Log,
        Sqrt,
        Abs,
        Sign,
        Step,
        Clamp {
            min: -0.5,
            max: 0.7,
        },
        Relu,
        LeakyRelu { slope: 0.1 },
        Sigmoid,
        Tanh,
        Erf,
        Gelu { tanh: false },
        Gelu { tanh: true },
        Silu,
        Elu { alpha: 1.0 },
        Elu { alpha: 0.4 },
        Softplus {
            beta: 1.0,
            threshold: 20.0,
        },
        Softplus {
            beta: 2.0,
            threshold: 1.5,
        },
    ];

    const POINTS: [f64; 7] = [-1.7, -0.6, -0.2, 0.3, 0.65, 1.1, 2.4];

    fn domain(f: Elementwise, x: f64) -> bool {
        !matches!(f, Log | Sqrt) || x > 0.0
    }

    #[test]
    fn every_derivative_matches_central_differences_of_its_value() {
        // f64, step 1e-6: truncation error ~1e-12·f‴, rounding ~1e-10; kinks are away
        // from the points.
        let h = 1e-6;
        for f in ALL {
            for x in POINTS.into_iter().filter(|&x| domain(f, x)) {
                let numeric = (f.value(x + h) - f.value(x - h)) / (2.0 * h);
                let analytic = f.derivative(x, f.value(x));
                assert!(
                    (numeric - analytic).abs() < 1e-6,
                    "{f:?} at {x}: {analytic} vs {numeric}"
                );
            }
        }
    }

    #[test]
    fn every_formula_evaluates_to_the_value_and_its_derivative() {
        for f in ALL {
            for x in POINTS.into_iter().filter(|&x| domain(f, x)) {
                let value = f.value(x);
                assert!((f.formula(x) - value).abs() < 1e-12, "{f:?}({x})");
                let d = f.derivative(x, value);
                assert!(
                    (f.derivative_formula(x) - d).abs() < 1e-12,
                    "{f:?}′({x}): {} vs {d}",
                    f.derivative_formula(x)
                );
            }
        }
    }

    #[test]
    fn kinks_take_pytorchs_values() {
        assert_eq!(Relu.derivative(0.0f64, 0.0), 0.0);
        assert_eq!(LeakyRelu { slope: 0.1 }.derivative(0.0f64, 0.0), 0.1);
        assert_eq!(Abs.derivative(0.0f64, 0.0), 0.0);
        // clamp's bounds belong to the inside
        assert_eq!(Clamp { min: 0.0, max: 1.0 }.derivative(1.0f64, 1.0), 1.0);
        // a NaN gradient does not leak through relu's flat side
        assert_eq!(Relu.grad(-1.0f64, 0.0, f64::NAN), 0.0);
        // elu′(0) = alpha; softplus is x, with derivative 1, where βx > threshold
        assert_eq!(Elu { alpha: 0.4 }.derivative(0.0f64, 0.0), 0.4);
        let softplus = Softplus {
            beta: 2.0,
            threshold: 1.5,
        };
        assert_eq!(
            (softplus.value(1.0f64), softplus.derivative(1.0f64, 1.0)),
            (1.0, 1.0)
        );
    }

    #[test]
    fn the_new_activations_take_known_values() {
        // gelu(1) = Φ(1) = 0.8413447460685429 (the normal CDF at 1); its tanh
        // approximation 0.8411919906082768; silu(1) = σ(1) = 0.7310585786300049;
        // elu(−1) = e⁻¹ − 1; softplus(0) = ln 2.
        assert!((Gelu { tanh: false }.value(1.0f64) - 0.841_344_746_068_542_9).abs() < 1e-15);
        assert!((Gelu { tanh: true }.value(1.0f64) - 0.841_191_990_608_276_8).abs() < 1e-15);
        assert!((Silu.value(1.0f64) - 0.731_058_578_630_004_9).abs() < 1e-15);
        assert!((Elu { alpha: 1.0 }.value(-1.0f64) - ((-1.0f64).exp() - 1.0)).abs() < 1e-16);
        assert!(
            (Softplus {
                beta: 1.0,
                threshold: 20.0
            }
            .value(0.0f64)
                - 2f64.ln())
            .abs()
                < 1e-16
        );
    }

    #[test]
    fn names_read_back_to_the_same_function() {
        for f in ALL {
            if let Some(back) = Elementwise::from_name(f.name()) {
                let back = f
                    .constants()
                    .into_iter()
                    .fold(back, |b, (k, v)| b.with_constant(k, v).unwrap());
                assert_eq!(back, f);
            }
        }
    }
}
