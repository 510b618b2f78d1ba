//! Loss functions with the meanings of the interchange contract (PyTorch's defaults).
//!
//! | loss | value | PyTorch |
//! | --- | --- | --- |
//! | `mse` | mean (p − y)² | `MSELoss()` |
//! | `sse` | Σ (p − y)² | `MSELoss(reduction="sum")` |
//! | `half_sse` | ½ Σ (p − y)² | (notebook 004) |
//! | `mae` | mean abs(p − y), gradient 0 at a zero residual | `L1Loss()` |
//! | `huber` | mean of ½r² for abs(r) ≤ 1, abs(r) − ½ beyond | `HuberLoss(delta=1.0)` |
//! | `bce` | mean BCE on probabilities, logs clamped at −100 | `BCELoss()` |
//! | `bce_logits` | mean BCE on logits | `BCEWithLogitsLoss()` |
//! | `cross_entropy` | mean over the batch of −log softmax(logits)\[target\] | `CrossEntropyLoss()` |

pub use crate::data::Target;

use crate::autodiff::Op;
use crate::error::invalid;
use crate::{Error, Float, Result, Tensor, Var};

/// A loss function; see the module table for the meanings.
///
/// ```
/// use chainrule::loss::{Loss, Target};
/// use chainrule::{Tape, Tensor};
/// let tape = Tape::<f64>::new();
/// let p = tape.param(Tensor::from_vec(vec![2.5], &[1, 1])?);
/// let y = Target::Values(Tensor::from_vec(vec![2.0], &[1, 1])?);
/// let loss = Loss::Sse.compute(p, &y)?;      // notebook 000: (2.5 − 2)²
/// assert_eq!(loss.item()?, 0.25);
/// assert_eq!(loss.backward()?.wrt(p).unwrap().to_vec(), vec![1.0]);
/// # Ok::<(), chainrule::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// Mean squared error.
    Mse,
    /// Sum of squared errors.
    Sse,
    /// Half the sum of squared errors.
    HalfSse,
    /// Mean absolute error.
    Mae,
    /// Huber loss with delta 1.
    Huber,
    /// Binary cross-entropy on probabilities.
    Bce,
    /// Binary cross-entropy on logits.
    BceLogits,
    /// Softmax cross-entropy on logits.
    CrossEntropy,
}

impl Loss {
    /// Every loss, in the contract's order.
    pub const ALL: [Loss; 8] = [
        Loss::Mse,
        Loss::Sse,
        Loss::HalfSse,
        Loss::Mae,
        Loss::Huber,
        Loss::Bce,
        Loss::BceLogits,
        Loss::CrossEntropy,
    ];

    /// The contract's name.
    ///
    /// ```
    /// assert_eq!(chainrule::loss::Loss::HalfSse.name(), "half_sse");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            Loss::Mse => "mse",
            Loss::Sse => "sse",
            Loss::HalfSse => "half_sse",
            Loss::Mae => "mae",
            Loss::Huber => "huber",
            Loss::Bce => "bce",
            Loss::BceLogits => "bce_logits",
            Loss::CrossEntropy => "cross_entropy",
        }
    }

    /// The loss of a contract name.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] for an unknown name, listing the known ones.
    ///
    /// ```
    /// use chainrule::loss::Loss;
    /// assert_eq!(Loss::from_name("mae")?, Loss::Mae);
    /// assert!(Loss::from_name("l2").is_err());
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn from_name(name: &str) -> Result<Loss> {
        Loss::ALL
            .into_iter()
            .find(|l| l.name() == name)
            .ok_or_else(|| {
                let known: Vec<_> = Loss::ALL.iter().map(|l| l.name()).collect();
                invalid(
                    "loss",
                    format!(
                        "unknown loss {name:?} (expected one of {})",
                        known.join(", ")
                    ),
                )
            })
    }

    /// How an explanation writes ∂C/∂a at an output `a` against its target `y` (each
    /// given as text and LaTeX: symbols or numbers), with `count` outputs in all over
    /// `rows` samples, and the reduction in words.
    ///
    /// ```
    /// use chainrule::loss::Loss;
    /// let n = Loss::Mse.gradient_notation(("a", "a"), ("y", "y"), 4, 2);
    /// assert_eq!(n.text, "2(a − y)/4");
    /// assert_eq!(n.latex, r"\frac{2(a - y)}{4}");
    /// ```
    pub fn gradient_notation(
        self,
        a: (&str, &str),
        y: (&str, &str),
        count: usize,
        rows: usize,
    ) -> GradientNotation {
        let ((a, al), (y, yl)) = (a, y);
        let (text, latex, reduction) = match self {
            Loss::Sse => (format!("2({a} − {y})"), format!("2({al} - {yl})"), "C = Σ (a − y)² sums over every output of every sample: no 1/N; the 2 comes from the square.".to_string()),
            Loss::HalfSse => (format!("{a} − {y}"), format!("{al} - {yl}"), "C = ½ Σ (a − y)²: the ½ cancels the square's 2; no 1/N.".into()),
            Loss::Mse => (format!("2({a} − {y})/{count}"), format!(r"\frac{{2({al} - {yl})}}{{{count}}}"), format!("C = (1/M) Σ (a − y)² averages over M = {count} outputs ({rows} samples): each ∂C/∂a carries 2/M.")),
            Loss::Mae => (format!("sign({a} − {y})/{count}"), format!(r"\frac{{\operatorname{{sign}}({al} - {yl})}}{{{count}}}"), format!("C = (1/M) Σ |a − y| over M = {count} outputs; sign(0) = 0.")),
            Loss::Huber => (format!("clamp({a} − {y}, −1, 1)/{count}"), format!(r"\frac{{\operatorname{{clamp}}({al} - {yl}, -1, 1)}}{{{count}}}"), format!("Huber (δ = 1) averages over M = {count} outputs.")),
            Loss::Bce => (format!("({a} − {y})/max({a}(1 − {a}), ε)/{count}"), format!(r"\frac{{{al} - {yl}}}{{{count}\,\max({al}(1 - {al}), \epsilon)}}"), format!("BCE averages over M = {count} outputs (ε = 1e-12 as PyTorch).")),
            Loss::BceLogits => (format!("(σ({a}) − {y})/{count}"), format!(r"\frac{{\sigma({al}) - {yl}}}{{{count}}}"), format!("BCE on logits averages over M = {count} outputs.")),
            // pⱼ = softmax(a)ⱼ, named after the target's symbol yⱼ (when y is a
            // number, the softmax is written out).
            Loss::CrossEntropy => {
                let (p, pl) = match (y.strip_prefix('y'), yl.strip_prefix('y')) {
                    (Some(sub), Some(sub_latex)) => (format!("p{sub}"), format!("p{sub_latex}")),
                    _ => (format!("softmax({a})"), format!(r"\mathrm{{softmax}}({al})")),
                };
                (format!("({p} − {y})/{rows}"), format!(r"\frac{{{pl} - {yl}}}{{{rows}}}"), format!("Cross-entropy averages over the N = {rows} samples: ∂C/∂logit = (p − y)/N with p = softmax(logits), y one-hot or probabilities."))
            }
        };
        GradientNotation {
            text,
            latex,
            reduction,
        }
    }

    /// Whether ∂C/∂a at one output depends on the other outputs of its row (softmax
    /// cross-entropy), so that it is not written with that output's number alone.
    ///
    /// ```
    /// assert!(chainrule::loss::Loss::CrossEntropy.couples_outputs());
    /// ```
    pub fn couples_outputs(self) -> bool {
        self == Loss::CrossEntropy
    }

    /// The loss of `prediction` against `target`, reduced to a scalar as the module
    /// table says.
    ///
    /// # Errors
    /// [`Error::Shape`] when the target does not fit the prediction;
    /// [`Error::InvalidValue`] for class targets with a loss other than
    /// cross-entropy, or for `bce` values outside [0, 1].
    ///
    /// ```
    /// use chainrule::loss::{Loss, Target};
    /// use chainrule::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let logits = tape.param(Tensor::zeros(&[2, 4]));
    /// let loss = Loss::CrossEntropy.compute(logits, &Target::Classes(vec![1, 3]))?;
    /// assert!((loss.item()? - 4f64.ln()).abs() < 1e-15);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn compute<'t, F: Float>(
        self,
        prediction: Var<'t, F>,
        target: &Target<F>,
    ) -> Result<Var<'t, F>> {
        let tape = prediction.tape();
        let values = match (self, target) {
            (Loss::CrossEntropy, Target::Classes(classes)) => {
                let shape = prediction.shape();
                if shape.len() != 2 || shape[0] != classes.len() {
                    return Err(Error::Shape {
                        op: "cross_entropy",
                        message: format!(
                            "logits must be [N, C] with N = {} targets",
                            classes.len()
                        ),
                        got: shape,
                    });
                }
                // One fused node (its forward validates the class indices).
                return tape.apply(
                    Op::SoftmaxCrossEntropy {
                        classes: classes.clone(),
                    },
                    &[prediction],
                );
            }
            (_, Target::Classes(_)) => {
                return Err(invalid(
                    "y",
                    format!(
                        "class-index targets are only for cross_entropy, not {}",
                        self.name()
                    ),
                ));
            }
            (_, Target::Values(values)) => values,
        };
        if values.shape() != prediction.shape().as_slice() {
            return Err(Error::Shape {
                op: "loss",
                message: format!(
                    "target shape {:?} must equal the prediction's",
                    values.shape()
                ),
                got: prediction.shape(),
            });
        }
        let y = tape.constant(values.clone());
        let half = F::from_f64(0.5);
        Ok(match self {
            Loss::Mse => prediction.sub(y)?.powf(2.0).mean(&[], false)?,
            Loss::Sse => prediction.sub(y)?.powf(2.0).sum(&[], false)?,
            Loss::HalfSse => prediction.sub(y)?.powf(2.0).sum(&[], false)? * half,
            Loss::Mae => prediction.sub(y)?.abs().mean(&[], false)?,
            Loss::Huber => {
                // ½·min(|r|, 1)² + (|r| − min(|r|, 1)): the quadratic part, then the
                // linear part beyond delta = 1.
                let r = prediction.sub(y)?.abs();
                let inner = r.minimum(tape.constant_scalar(F::one()))?;
                (inner.powf(2.0) * half + r.sub(inner)?).mean(&[], false)?
            }
            Loss::Bce => {
                let outside = |t: &Tensor<F>| {
                    t.to_vec()
                        .into_iter()
                        .find(|v| !(*v >= F::zero() && *v <= F::one()))
                };
                if let Some(v) = outside(&prediction.value()) {
                    return Err(invalid("bce", format!("prediction {v} is outside [0, 1]")));
                }
                if let Some(v) = outside(values) {
                    return Err(invalid("bce", format!("target {v} is outside [0, 1]")));
                }
                tape.apply(Op::BinaryCrossEntropy, &[prediction, y])?
                    .mean(&[], false)?
            }
            Loss::BceLogits => tape
                .apply(Op::BinaryCrossEntropyWithLogits, &[prediction, y])?
                .mean(&[], false)?,
            Loss::CrossEntropy => {
                let shape = prediction.shape();
                if shape.len() != 2 {
                    return Err(Error::Shape {
                        op: "cross_entropy",
                        message: "logits must be [N, C]".into(),
                        got: shape,
                    });
                }
                let per_row = prediction.log_softmax(1)?.mul(y)?.sum(&[1], false)?;
                -per_row.mean(&[], false)?
            }
        })
    }
}

/// How an explanation writes a loss's ∂C/∂a: see [`Loss::gradient_notation`].
///
/// ```
/// let n = chainrule::loss::Loss::Sse.gradient_notation(("a", "a"), ("y", "y"), 1, 1);
/// assert!(n.reduction.contains("no 1/N"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GradientNotation {
    /// In text.
    pub text: String,
    /// In LaTeX.
    pub latex: String,
    /// How the loss reduces over the batch, in words.
    pub reduction: String,
}
