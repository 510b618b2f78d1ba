//! The operation table: every operation the tape records, as one closed enum, with
//! its forward and its local derivative side by side.
//!
//! Conventions, in every arm: `x` holds the inputs, `out` is the forward result,
//! `saved` is what the forward kept beside it ([`Saved`]: max pooling's maxima, batch
//! norm's statistics, dropout's mask), `g` is ∂L/∂out (the gradient flowing in from
//! above), and the backward arm returns ∂L/∂input for the inputs whose `need` flag is
//! set. A gradient may have the
//! broadcast shape of `out`: the tape reduces it to the input's shape in one place
//! ([`Tensor::sum_to_shape`]), so no arm deals with broadcasting. Element-wise
//! functions are one arm, [`Op::Map`], which reads the [`Elementwise`] table.
//!
//! Because the enum is closed, everything that reads a recorded graph (the grapher,
//! the symbolic engine, the derivations, the gradient checks) matches on it, and no
//! code recognises an operation by its label text.

use super::elementwise::{BCE_EPSILON, Elementwise, Formula};
use crate::tensor::Window2d;
use crate::{Error, Float, Result, Tensor};
use ndarray::{ArrayD, Axis, IxDyn, Slice, Zip};
use std::borrow::Cow;
use std::sync::Arc;

/// Gradients returned by an operation's backward: one entry per input, `None` where
/// not needed.
///
/// ```
/// use chainrule::{autodiff::InputGrads, Tensor};
/// let grads: InputGrads<f64> = vec![Some(Tensor::scalar(1.0)), None];
/// assert!(grads[1].is_none());
/// ```
pub type InputGrads<F> = Vec<Option<Tensor<F>>>;

/// What an operation's forward keeps beside its output ([`Op::forward_saving`]): what
/// its backward would otherwise compute again from the inputs, and what a layer
/// reads from the pass (batch norm's statistics, for its running ones). The tape
/// keeps it with the node ([`Tape::saved`](super::Tape::saved)). Cheap to clone: the
/// large parts are shared.
///
/// ```
/// use chainrule::autodiff::{Op, Saved};
/// use chainrule::{tensor::Window2d, Tensor};
/// let x = Tensor::<f64>::from_vec(vec![1.0, 5.0, 3.0, 2.0], &[1, 1, 2, 2])?;
/// let (y, saved) = Op::MaxPool2d { window: Window2d::square(2) }.forward_saving(&[&x])?;
/// assert_eq!(y.to_vec(), vec![5.0]);
/// assert!(matches!(saved, Saved::Argmax(at) if *at == vec![1]));
/// # Ok::<(), chainrule::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub enum Saved<F: Float> {
    /// Nothing: the backward needs only the inputs and the output.
    #[default]
    Nothing,
    /// Max pooling: for each output element, the flat index in its input plane of
    /// its window's first maximum ([`Tensor::max_pool2d_with_indices`]).
    Argmax(Arc<Vec<u32>>),
    /// Batch norm: each channel's batch mean and biased variance, in f64.
    Moments {
        /// The means, one per channel.
        mean: Vec<f64>,
        /// The biased variances, one per channel.
        var: Vec<f64>,
    },
    /// Dropout: the mask the product was taken with (0 or 1/(1 − p) per element).
    Mask(Tensor<F>),
}

impl<F: Float> Saved<F> {
    /// Hands the storage back for the next step's operations (tensor::pool), when
    /// nothing else shares it.
    pub(crate) fn recycle(self) {
        match self {
            Saved::Argmax(at) => {
                if let Ok(at) = Arc::try_unwrap(at) {
                    crate::tensor::pool::recycle_indices(at);
                }
            }
            Saved::Mask(mask) => crate::tensor::pool::recycle(mask),
            Saved::Nothing | Saved::Moments { .. } => {}
        }
    }
}

/// How many inputs an operation takes.
///
/// ```
/// use chainrule::autodiff::{Arity, Op};
/// assert_eq!(Op::Add.arity(), Arity::Exactly(2));
/// assert_eq!(Op::Linear.arity(), Arity::Between(2, 3));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arity {
    /// Exactly this many.
    Exactly(usize),
    /// From the first to the second, both included (an optional bias).
    Between(usize, usize),
    /// One or more.
    AtLeastOne,
}

impl Arity {
    /// Whether `n` inputs fit.
    ///
    /// ```
    /// assert!(chainrule::autodiff::Arity::AtLeastOne.accepts(3));
    /// ```
    pub fn accepts(self, n: usize) -> bool {
        match self {
            Arity::Exactly(k) => n == k,
            Arity::Between(lo, hi) => (lo..=hi).contains(&n),
            Arity::AtLeastOne => n >= 1,
        }
    }
}

/// One differentiable operation, with its constants (axes, indices, a function of the
/// element-wise table).
///
/// ```
/// use chainrule::autodiff::{Elementwise, Op, Tape};
/// let tape = Tape::<f64>::new();
/// let x = tape.param_scalar(2.0);
/// let y = tape.apply(Op::Map(Elementwise::Pow { p: 3.0 }), &[x])?; // x³
/// assert_eq!(y.item()?, 8.0);
/// assert_eq!(y.backward()?.wrt(x).unwrap().item()?, 12.0);       // 3x²
/// assert_eq!(tape.op(y.id()), Some(Op::Map(Elementwise::Pow { p: 3.0 })));
/// # Ok::<(), chainrule::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// a + b, broadcasting (a bias added to every row is this operation).
    Add,
    /// a − b, broadcasting.
    Sub,
    /// a · b element-wise, broadcasting.
    Mul,
    /// a / b element-wise, broadcasting.
    Div,
    /// max(a, b) element-wise; a tie sends half the gradient to each (`torch.maximum`).
    Maximum,
    /// min(a, b) element-wise; a tie splits the gradient.
    Minimum,
    /// A function of the element-wise table applied to every element.
    Map(Elementwise),
    /// The matrix product a · b (2-D, or batched with a leading axis).
    MatMul,
    /// A dense layer y = x·Wᵀ (+ b), x `[N, in]`, W `[out, in]`, b `[out]`: product,
    /// transpose and bias as one node, so no gradient is ever transposed.
    Linear,
    /// relu(x·Wᵀ (+ b)): a dense layer and the ReLU after it as one node, bit for bit
    /// the values of `Linear` then `Map(Relu)` (what training records).
    LinearRelu,
    /// Σ over axes (every axis when empty).
    Sum {
        /// The axes summed.
        axes: Vec<usize>,
        /// Whether they stay as size 1.
        keepdim: bool,
    },
    /// The mean over axes (every axis when empty).
    Mean {
        /// The axes averaged.
        axes: Vec<usize>,
        /// Whether they stay as size 1.
        keepdim: bool,
    },
    /// The maximum over axes; tied maxima share the gradient (`torch.amax`).
    Max {
        /// The axes reduced.
        axes: Vec<usize>,
        /// Whether they stay as size 1.
        keepdim: bool,
    },
    /// softmax along an axis.
    Softmax {
        /// The axis.
        axis: usize,
    },
    /// log_softmax along an axis.
    LogSoftmax {
        /// The axis.
        axis: usize,
    },
    /// out[i] = x[i, indices[i]]: one class per row, for cross-entropy.
    Gather {
        /// One column per row.
        indices: Vec<usize>,
    },
    /// The rows of x at indices (a mini-batch).
    SelectRows {
        /// The rows, repeats allowed.
        indices: Vec<usize>,
    },
    /// x[start .. start + len] along an axis.
    Narrow {
        /// The axis.
        axis: usize,
        /// The first index kept.
        start: usize,
        /// How many are kept.
        len: usize,
    },
    /// The inputs joined along an axis.
    Concat {
        /// The axis.
        axis: usize,
    },
    /// The same elements under a new shape.
    Reshape {
        /// The new shape.
        shape: Vec<usize>,
    },
    /// The axes reordered.
    Permute {
        /// The new order of the old axes.
        axes: Vec<usize>,
    },
    /// The last two axes swapped.
    Transpose,
    /// Binary cross-entropy of probabilities p against targets y, element-wise, logs
    /// clamped at −100 as PyTorch's `BCELoss`.
    BinaryCrossEntropy,
    /// Binary cross-entropy on logits, element-wise (PyTorch's `BCEWithLogitsLoss`).
    BinaryCrossEntropyWithLogits,
    /// Softmax cross-entropy of logits `[N, C]` against class indices, averaged over
    /// the rows (PyTorch's `CrossEntropyLoss`), as one node.
    SoftmaxCrossEntropy {
        /// One class per row.
        classes: Vec<usize>,
    },
    /// 2-D convolution of x `[N, C, H, W]` with W `[O, C, kh, kw]` (+ b `[O]`), as
    /// PyTorch's `conv2d` (see [`Tensor::conv2d`]).
    Conv2d {
        /// Kernel size, stride, padding and dilation.
        window: Window2d,
    },
    /// The maximum of each window of x `[N, C, H, W]`; a tied maximum sends its
    /// gradient to the first in the window's row-major order (PyTorch's CPU kernel).
    MaxPool2d {
        /// Window size, stride and (−∞) padding.
        window: Window2d,
    },
    /// Dropout in training: x ⊙ mask, each element of the mask 0 with probability
    /// `p` and 1/(1 − p) otherwise, drawn from `stream` (see [`Tensor::dropout`]);
    /// the forward keeps the mask for the backward, ∂L/∂x = g ⊙ mask.
    Dropout {
        /// The probability of dropping an element.
        p: f64,
        /// The random stream the mask is drawn from (the layer's, for one step).
        stream: u64,
    },
    /// The mean of each window of x `[N, C, H, W]`, padded zeros counted.
    AvgPool2d {
        /// Window size, stride and (zero) padding.
        window: Window2d,
    },
    /// Batch norm with the batch's statistics (training mode): x `[N, C, ...]`
    /// normalised per channel over the batch and the other axes, then scaled and
    /// shifted per channel (inputs x, and optionally γ `[C]` and β `[C]`).
    BatchNorm {
        /// Added to the variance under the square root.
        eps: f64,
    },
    /// Layer norm: each sample's last `trailing` axes normalised with their own
    /// statistics, then scaled and shifted element-wise (inputs x, and optionally γ
    /// and β shaped like those axes).
    LayerNorm {
        /// How many trailing axes are normalised together.
        trailing: usize,
        /// Added to the variance under the square root.
        eps: f64,
    },
}

impl Op {
    /// The operation's name (`"add"`, `"relu"`, `"sum"`): what drawings show and what
    /// the test builds' fault injection names.
    ///
    /// ```
    /// use chainrule::autodiff::{Elementwise, Op};
    /// assert_eq!(Op::Map(Elementwise::Tanh).name(), "tanh");
    /// assert_eq!(Op::Sum { axes: vec![1], keepdim: false }.name(), "sum");
    /// ```
    pub fn name(&self) -> &'static str {
        match self {
            Op::Add => "add",
            Op::Sub => "sub",
            Op::Mul => "mul",
            Op::Div => "div",
            Op::Maximum => "maximum",
            Op::Minimum => "minimum",
            Op::Map(f) => f.name(),
            Op::MatMul => "matmul",
            Op::Linear => "linear",
            Op::LinearRelu => "linear+relu",
            Op::Sum { .. } => "sum",
            Op::Mean { .. } => "mean",
            Op::Max { .. } => "max",
            Op::Softmax { .. } => "softmax",
            Op::LogSoftmax { .. } => "log_softmax",
            Op::Gather { .. } => "gather",
            Op::SelectRows { .. } => "select_rows",
            Op::Narrow { .. } => "narrow",
            Op::Concat { .. } => "concat",
            Op::Reshape { .. } => "reshape",
            Op::Permute { .. } => "permute",
            Op::Transpose => "transpose",
            Op::BinaryCrossEntropy => "bce",
            Op::BinaryCrossEntropyWithLogits => "bce_logits",
            Op::SoftmaxCrossEntropy { .. } => "cross_entropy",
            Op::Conv2d { .. } => "conv2d",
            Op::MaxPool2d { .. } => "max_pool2d",
            Op::AvgPool2d { .. } => "avg_pool2d",
            Op::Dropout { .. } => "dropout",
            Op::BatchNorm { .. } => "batch_norm",
            Op::LayerNorm { .. } => "layer_norm",
        }
    }

    /// The name with the operation's constants, for drawings and messages
    /// (`"sum[1]"`, `"leaky_relu(0.1)"`, `"pow(2)"`).
    ///
    /// ```
    /// use chainrule::autodiff::{Elementwise, Op};
    /// assert_eq!(Op::Map(Elementwise::Pow { p: 2.0 }).label(), "pow(2)");
    /// assert_eq!(Op::Softmax { axis: 1 }.label(), "softmax[1]");
    /// ```
    pub fn label(&self) -> String {
        match self {
            Op::Map(f) => {
                let constants: Vec<String> =
                    f.constants().iter().map(|(_, v)| v.to_string()).collect();
                if constants.is_empty() {
                    f.name().to_string()
                } else {
                    format!("{}({})", f.name(), constants.join(", "))
                }
            }
            Op::Sum { axes, .. } | Op::Mean { axes, .. } | Op::Max { axes, .. } => {
                format!("{}{axes:?}", self.name())
            }
            Op::Softmax { axis } | Op::LogSoftmax { axis } | Op::Concat { axis } => {
                format!("{}[{axis}]", self.name())
            }
            Op::Narrow { axis, start, len } => {
                format!("narrow[{axis}, {start}..{}]", start + len)
            }
            Op::Reshape { shape } => format!("reshape{shape:?}"),
            Op::Dropout { p, .. } => format!("dropout({p})"),
            Op::Permute { axes } => format!("permute{axes:?}"),
            Op::Conv2d { window } | Op::MaxPool2d { window } | Op::AvgPool2d { window } => {
                let Window2d {
                    kernel: [kh, kw],
                    stride: [sh, sw],
                    padding: [ph, pw],
                    dilation: [dh, dw],
                } = window;
                let mut text = format!("{}[{kh}×{kw}", self.name());
                // A convolution's stride is 1 unless said; a pooling's, its window.
                let usual = if matches!(self, Op::Conv2d { .. }) {
                    [1, 1]
                } else {
                    [*kh, *kw]
                };
                if [*sh, *sw] != usual {
                    text += &format!(", stride {sh}×{sw}");
                }
                if [*ph, *pw] != [0, 0] {
                    text += &format!(", padding {ph}×{pw}");
                }
                if [*dh, *dw] != [1, 1] {
                    text += &format!(", dilation {dh}×{dw}");
                }
                text + "]"
            }
            _ => self.name().to_string(),
        }
    }

    /// How many inputs the operation takes.
    ///
    /// ```
    /// use chainrule::autodiff::{Arity, Elementwise, Op};
    /// assert_eq!(Op::Map(Elementwise::Exp).arity(), Arity::Exactly(1));
    /// ```
    pub fn arity(&self) -> Arity {
        match self {
            Op::Add | Op::Sub | Op::Mul | Op::Div | Op::Maximum | Op::Minimum | Op::MatMul => {
                Arity::Exactly(2)
            }
            Op::BinaryCrossEntropy | Op::BinaryCrossEntropyWithLogits => Arity::Exactly(2),
            Op::Linear | Op::LinearRelu | Op::Conv2d { .. } => Arity::Between(2, 3),
            Op::BatchNorm { .. } | Op::LayerNorm { .. } => Arity::Between(1, 3),
            Op::Concat { .. } => Arity::AtLeastOne,
            _ => Arity::Exactly(1),
        }
    }

    /// The operation's value as a formula over its inputs' formulas, for the
    /// operations of scalar networks (arithmetic and the element-wise table); `None`
    /// for the tensor operations. This is how the symbolic engine and the path
    /// derivations read a recorded graph.
    ///
    /// ```
    /// use chainrule::autodiff::{Elementwise, Op};
    /// assert_eq!(Op::Div.formula(&[3.0f64, 2.0]), Some(1.5));
    /// assert_eq!(Op::Map(Elementwise::Relu).formula(&[-1.0f64]), Some(0.0));
    /// assert_eq!(Op::MatMul.formula(&[1.0f64, 2.0]), None);
    /// ```
    pub fn formula<E: Formula>(&self, x: &[E]) -> Option<E> {
        let minus = |e: E| E::number(-1.0).times(e);
        Some(match (self, x) {
            (Op::Add, [a, b]) => a.clone().plus(b.clone()),
            (Op::Sub, [a, b]) => a.clone().plus(minus(b.clone())),
            (Op::Mul, [a, b]) => a.clone().times(b.clone()),
            (Op::Div, [a, b]) => a.clone().times(b.clone().power(-1.0)),
            (Op::Map(f), [a]) => f.formula(a.clone()),
            _ => return None,
        })
    }

    /// Computes the output from the input values.
    ///
    /// # Errors
    /// When the inputs' shapes do not fit the operation, or their number does not
    /// fit its [`Arity`].
    ///
    /// ```
    /// use chainrule::{autodiff::Op, Tensor};
    /// let (a, b) = (Tensor::<f64>::scalar(2.0), Tensor::scalar(3.0));
    /// assert_eq!(Op::Mul.forward(&[&a, &b])?.item()?, 6.0);
    /// assert!(Op::Mul.forward(&[&a]).is_err());
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn forward<F: Float>(&self, x: &[&Tensor<F>]) -> Result<Tensor<F>> {
        self.check_arity(x.len())?;
        match self {
            Op::Add => x[0].add(x[1]),
            Op::Sub => x[0].sub(x[1]),
            Op::Mul => x[0].mul(x[1]),
            Op::Div => x[0].div(x[1]),
            Op::Maximum => x[0].zip_with(
                x[1],
                "maximum",
                |a, b| if a >= b || a.is_nan() { a } else { b },
            ),
            Op::Minimum => x[0].zip_with(
                x[1],
                "minimum",
                |a, b| if a <= b || a.is_nan() { a } else { b },
            ),
            // The ReLU with its function known at compile time (what convolutional
            // networks record after each convolution); the others through the table.
            Op::Map(Elementwise::Relu) => Ok(map_blocks(x[0], |v| Elementwise::Relu.value(v))),
            Op::Map(f) => Ok(map_blocks(x[0], |v| f.value(v))),
            Op::MatMul => x[0].matmul(x[1]),
            Op::Linear => linear_forward(x, false),
            Op::LinearRelu => linear_forward(x, true),
            Op::Sum { axes, keepdim } => x[0].sum(axes, *keepdim),
            Op::Mean { axes, keepdim } => x[0].mean(axes, *keepdim),
            Op::Max { axes, keepdim } => x[0].max(axes, *keepdim),
            Op::Softmax { axis } => x[0].softmax(*axis),
            Op::LogSoftmax { axis } => x[0].log_softmax(*axis),
            Op::Gather { indices } => x[0].gather(indices),
            Op::SelectRows { indices } => x[0].select_rows(indices),
            Op::Narrow { axis, start, len } => x[0].narrow(*axis, *start, *len),
            Op::Concat { axis } => Tensor::concat(x, *axis),
            Op::Reshape { shape } => x[0].reshape(shape),
            Op::Permute { axes } => x[0].permute(axes),
            Op::Transpose => x[0].t(),
            // −(y·max(ln p, −100) + (1 − y)·max(ln(1 − p), −100))
            Op::BinaryCrossEntropy => x[0].zip_with(x[1], "bce", |p, y| {
                let floor = F::from_f64(-100.0);
                -(y * p.ln().max(floor) + (F::one() - y) * (F::one() - p).ln().max(floor))
            }),
            // max(x, 0) − x·y + ln(1 + e^−|x|), stable for any x
            Op::BinaryCrossEntropyWithLogits => x[0].zip_with(x[1], "bce_logits", |x, y| {
                x.max(F::zero()) - x * y + (-x.abs()).exp().ln_1p()
            }),
            // (1/N) Σₙ (ln Σ_c e^{x_nc} − x_n,yₙ)
            Op::Conv2d { window } => x[0].conv2d(x[1], x.get(2).copied(), window),
            Op::MaxPool2d { window } => x[0].max_pool2d(window),
            Op::AvgPool2d { window } => x[0].avg_pool2d(window),
            Op::Dropout { p, stream } => {
                let (y, mask) = x[0].dropout(*p, *stream);
                crate::tensor::pool::recycle(mask);
                Ok(y)
            }
            Op::BatchNorm { eps } => Ok(x[0]
                .batch_norm(x.get(1).copied(), x.get(2).copied(), *eps)?
                .0),
            Op::LayerNorm { trailing, eps } => {
                x[0].layer_norm(*trailing, x.get(1).copied(), x.get(2).copied(), *eps)
            }
            Op::SoftmaxCrossEntropy { classes } => {
                let picked = x[0].log_softmax(1)?.gather(classes)?;
                let rows = F::from_f64(classes.len() as f64);
                Ok(picked
                    .sum(&[], false)?
                    .scale(F::one() / rows)
                    .scale(-F::one()))
            }
        }
    }

    /// An error unless `n` inputs fit the operation's [`Arity`].
    fn check_arity(&self, n: usize) -> Result<()> {
        if self.arity().accepts(n) {
            return Ok(());
        }
        Err(Error::Shape {
            op: "apply",
            message: format!("{} takes {:?} inputs, got {n}", self.name(), self.arity()),
            got: vec![],
        })
    }

    /// [`Op::forward`] that also returns what the backward reads beside the inputs
    /// and the output ([`Saved`]), computed in the same pass: what the tape records.
    /// The output is the same, bit for bit.
    ///
    /// # Errors
    /// As [`Op::forward`].
    ///
    /// ```
    /// use chainrule::autodiff::{Op, Saved};
    /// use chainrule::Tensor;
    /// let x = Tensor::<f64>::from_vec(vec![1.0, 10.0, 3.0, 30.0], &[2, 2])?;
    /// let (y, saved) = Op::BatchNorm { eps: 0.0 }.forward_saving(&[&x])?;
    /// assert_eq!(y.to_vec(), vec![-1.0, -1.0, 1.0, 1.0]);
    /// let Saved::Moments { mean, var } = saved else { unreachable!() };
    /// assert_eq!((mean, var), (vec![2.0, 20.0], vec![1.0, 100.0]));
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn forward_saving<F: Float>(&self, x: &[&Tensor<F>]) -> Result<(Tensor<F>, Saved<F>)> {
        self.check_arity(x.len())?;
        Ok(match self {
            Op::MaxPool2d { window } => {
                let (y, at) = x[0].max_pool2d_with_indices(window)?;
                (y, Saved::Argmax(Arc::new(at)))
            }
            Op::BatchNorm { eps } => {
                let (y, mean, var) =
                    x[0].batch_norm_moments(x.get(1).copied(), x.get(2).copied(), *eps)?;
                (y, Saved::Moments { mean, var })
            }
            Op::Dropout { p, stream } => {
                let (y, mask) = x[0].dropout(*p, *stream);
                (y, Saved::Mask(mask))
            }
            _ => (self.forward(x)?, Saved::Nothing),
        })
    }

    /// Computes ∂L/∂x for each input `i` with `need[i]`, from the inputs, the output,
    /// what the forward saved and `g` = ∂L/∂out: the chain rule's local step. With
    /// [`Saved::Nothing`] (or anything else than [`Op::forward_saving`] gave), an
    /// operation that saves something computes it again from the inputs.
    ///
    /// # Errors
    /// Only if the tensors are inconsistent with the forward pass.
    ///
    /// ```
    /// use chainrule::{autodiff::{Op, Saved}, Tensor};
    /// let (a, b) = (Tensor::<f64>::scalar(3.0), Tensor::scalar(4.0));
    /// let out = Op::Mul.forward(&[&a, &b])?;
    /// // mul returns (g·b, g·a); only the input that needs one gets it.
    /// let g = Tensor::scalar(1.0);
    /// let grads = Op::Mul.backward(&[&a, &b], &out, &Saved::Nothing, &g, &[true, false])?;
    /// assert_eq!(grads[0].as_ref().unwrap().item()?, 4.0);
    /// assert!(grads[1].is_none());
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn backward<F: Float>(
        &self,
        x: &[&Tensor<F>],
        out: &Tensor<F>,
        saved: &Saved<F>,
        g: &Tensor<F>,
        need: &[bool],
    ) -> Result<InputGrads<F>> {
        let grads = match self {
            // ∂/∂a = 1, ∂/∂b = 1
            Op::Add => vec![
                when(need[0], || Ok(g.clone()))?,
                when(need[1], || Ok(g.clone()))?,
            ],
            // ∂/∂a = 1, ∂/∂b = −1
            Op::Sub => vec![
                when(need[0], || Ok(g.clone()))?,
                when(need[1], || Ok(g.scale(-F::one())))?,
            ],
            // ∂/∂a = b, ∂/∂b = a
            Op::Mul => vec![
                when(need[0], || g.mul(x[1]))?,
                when(need[1], || g.mul(x[0]))?,
            ],
            // ∂/∂a = 1/b, ∂/∂b = −a/b² = −out/b
            Op::Div => vec![
                when(need[0], || g.div(x[1]))?,
                when(need[1], || {
                    g.mul(out)?.div(x[1]).map(|t| t.scale(-F::one()))
                })?,
            ],
            // the gradient goes to the larger input; a tie splits it
            Op::Maximum => pick_larger(x, g, need, |a, b| a > b)?,
            Op::Minimum => pick_larger(x, g, need, |a, b| a < b)?,
            // ∂L/∂x = g·f′(x), from the element-wise table
            // relu′ is 1 where the output is positive, else 0 (0 at 0, as PyTorch).
            Op::Map(Elementwise::Relu) if g.shape() == out.shape() => {
                vec![Some(relu_masked(out, g))]
            }
            Op::Map(f) => vec![Some(map_backward(*f, x[0], out, g)?)],
            // ∂/∂a = g · bᵀ, ∂/∂b = aᵀ · g
            Op::MatMul => vec![
                when(need[0], || g.matmul(&x[1].t()?))?,
                when(need[1], || x[0].t()?.matmul(g))?,
            ],
            // ∂/∂x = g·W, ∂/∂W = gᵀ·x, ∂/∂b = Σ over rows of g
            Op::Linear => linear_backward(x, g, need)?,
            // relu′(z) is 1 where z > 0, which is where out > 0: mask g, then as Linear
            Op::LinearRelu => {
                let masked = relu_masked(out, g);
                let grads = linear_backward(x, &masked, need);
                crate::tensor::pool::recycle(masked);
                grads?
            }
            // ∂/∂x = 1: g spread back over the summed axes
            Op::Sum { axes, .. } => vec![Some(expand_reduced(g, x[0].shape(), axes)?)],
            // ∂/∂x = 1/n for the n elements each output averages
            Op::Mean { axes, .. } => {
                let n = F::from_f64(x[0].reduced_count("mean", axes)? as f64);
                vec![Some(expand_reduced(
                    &g.scale(F::one() / n),
                    x[0].shape(),
                    axes,
                )?)]
            }
            // ∂/∂x = 1 at the maximum, 0 elsewhere; ties share equally
            Op::Max { axes, keepdim } => {
                let shape = x[0].shape();
                let peak = expand_reduced(out, shape, axes)?;
                let is_max =
                    x[0].zip_with(
                        &peak,
                        "max",
                        |v, m| if v == m { F::one() } else { F::zero() },
                    )?;
                let ties = expand_reduced(&is_max.sum(axes, *keepdim)?, shape, axes)?;
                vec![Some(
                    expand_reduced(g, shape, axes)?.mul(&is_max)?.div(&ties)?,
                )]
            }
            // ∂L/∂x = out ⊙ (g − Σ(g ⊙ out)), the sum along the axis
            Op::Softmax { axis } => {
                let dot = g.mul(out)?.sum(&[*axis], true)?;
                vec![Some(out.mul(&g.sub(&dot)?)?)]
            }
            // ∂L/∂x = g − softmax(x) ⊙ Σg = g − e^out ⊙ Σg
            Op::LogSoftmax { axis } => {
                let total = g.sum(&[*axis], true)?;
                vec![Some(g.sub(&out.map(F::exp).mul(&total)?)?)]
            }
            // ∂L/∂x[i, indices[i]] = g[i], 0 elsewhere
            Op::Gather { indices } => vec![Some(g.scatter(indices, x[0].shape()[1])?)],
            // g's rows accumulate back into the rows they came from
            Op::SelectRows { indices } => vec![Some(g.scatter_add_rows(indices, x[0].shape()[0])?)],
            // g in the range, 0 elsewhere
            Op::Narrow { axis, start, len } => {
                let mut grad = ArrayD::<F>::zeros(IxDyn(x[0].shape()));
                grad.slice_axis_mut(Axis(*axis), Slice::from(*start..*start + *len))
                    .assign(&g.view());
                vec![Some(Tensor::from_array(grad))]
            }
            // each input gets the slice of g it filled
            Op::Concat { axis } => {
                let mut start = 0;
                x.iter()
                    .zip(need)
                    .map(|(xi, &n)| {
                        let len = xi.shape()[*axis];
                        start += len;
                        when(n, || g.narrow(*axis, start - len, len))
                    })
                    .collect::<Result<_>>()?
            }
            // g under x's shape
            Op::Reshape { .. } => vec![Some(g.reshape(x[0].shape())?)],
            // g under the inverse permutation
            Op::Permute { axes } => {
                let mut inverse = vec![0; axes.len()];
                for (i, &a) in axes.iter().enumerate() {
                    inverse[a] = i;
                }
                vec![Some(g.permute(&inverse)?)]
            }
            // ∂L/∂x = gᵀ
            Op::Transpose => vec![Some(g.t()?)],
            // ∂/∂p = (p − y) / max(p(1 − p), ε), ε = f32(1e-12): PyTorch's formula, finite
            // at p = 0 or 1; ∂/∂y = max(ln(1 − p), −100) − max(ln p, −100)
            Op::BinaryCrossEntropy => {
                let eps = F::from_f64(BCE_EPSILON);
                let floor = F::from_f64(-100.0);
                vec![
                    when(need[0], || {
                        g.mul(&x[0].zip_with(x[1], "bce", |p, y| {
                            (p - y) / (p * (F::one() - p)).max(eps)
                        })?)
                    })?,
                    when(need[1], || {
                        g.mul(&x[0].map(|p| (F::one() - p).ln().max(floor) - p.ln().max(floor)))
                    })?,
                ]
            }
            // ∂/∂x = σ(x) − y; ∂/∂y = −x
            Op::BinaryCrossEntropyWithLogits => vec![
                when(need[0], || {
                    g.mul(&x[0].zip_with(x[1], "bce_logits", |x, y| crate::tensor::sigmoid(x) - y)?)
                })?,
                when(need[1], || g.mul(&x[0].scale(-F::one())))?,
            ],
            Op::Conv2d { window } => {
                let needs = [need[0], need[1], need.get(2) == Some(&true)];
                let [dx, dw, db] = Tensor::conv2d_backward(x[0], x[1], g, window, needs)?;
                let mut grads = vec![dx, dw];
                if x.len() == 3 {
                    grads.push(db);
                }
                grads
            }
            // g to each window's first maximum, at the index the forward found
            Op::MaxPool2d { window } => vec![Some(match saved {
                Saved::Argmax(at) => Tensor::max_pool2d_backward_indices(x[0].shape(), at, g)?,
                _ => Tensor::max_pool2d_backward(x[0], g, window)?,
            })],
            // ∂/∂x = mask
            Op::Dropout { p, stream } => vec![Some(match saved {
                Saved::Mask(mask) => g.mul(mask)?,
                _ => g.mul(&Tensor::dropout_mask(x[0].shape(), *p, *stream))?,
            })],
            Op::AvgPool2d { window } => {
                vec![Some(Tensor::avg_pool2d_backward(x[0].shape(), g, window)?)]
            }
            Op::BatchNorm { eps } => {
                let needs = [
                    need[0],
                    need.get(1) == Some(&true),
                    need.get(2) == Some(&true),
                ];
                // The statistics of the forward, when it kept them.
                let moments = match saved {
                    Saved::Moments { mean, var } => Some((&mean[..], &var[..])),
                    _ => None,
                };
                let weight = x.get(1).copied();
                let grads =
                    Tensor::batch_norm_backward_moments(x[0], weight, g, *eps, needs, moments)?;
                grads.into_iter().take(x.len()).collect()
            }
            Op::LayerNorm { trailing, eps } => {
                let needs = [
                    need[0],
                    need.get(1) == Some(&true),
                    need.get(2) == Some(&true),
                ];
                let grads = Tensor::layer_norm_backward(
                    x[0],
                    *trailing,
                    x.get(1).copied(),
                    g,
                    *eps,
                    needs,
                )?;
                grads.into_iter().take(x.len()).collect()
            }
            // ∂/∂x = (softmax(x) − onehot(y)) / N, in one pass
            Op::SoftmaxCrossEntropy { classes } => {
                let mut p = x[0].softmax(1)?;
                let columns = p.shape().get(1).copied().unwrap_or(1);
                let scale = g.item()? / F::from_f64(classes.len() as f64);
                let values = p.as_mut_slice();
                for (row, &class) in classes.iter().enumerate() {
                    values[row * columns + class] -= F::one();
                }
                values.iter_mut().for_each(|v| *v *= scale);
                vec![Some(p)]
            }
        };
        Ok(grads)
    }
}

/// `f` of every element of `x`, in blocks shared among the training team, into
/// storage from the pool.
fn map_blocks<F: Float>(x: &Tensor<F>, f: impl Fn(F) -> F + Sync) -> Tensor<F> {
    let values = x
        .as_slice()
        .map_or_else(|| Cow::Owned(x.to_vec()), Cow::Borrowed);
    let fill = |out: &mut [std::mem::MaybeUninit<F>]| {
        crate::parallel::for_each_block(out, 1, |start, block| {
            for (o, &v) in block.iter_mut().zip(&values[start..]) {
                o.write(f(v));
            }
        });
    };
    // SAFETY: the blocks cover the whole slice and each element is written once.
    // Every element-wise test (the table's gradient checks, the PyTorch reference
    // cases) goes through here, on fresh and on kept storage.
    unsafe { crate::tensor::pool::filled_uninit(x.shape(), fill) }
}

/// g where `out` > 0, else 0: the ReLU's mask applied to the incoming gradient, in
/// blocks shared among the training team, into storage from the pool.
fn relu_masked<F: Float>(out: &Tensor<F>, g: &Tensor<F>) -> Tensor<F> {
    let active = out
        .as_slice()
        .map_or_else(|| Cow::Owned(out.to_vec()), Cow::Borrowed);
    let g_values = g
        .as_slice()
        .map_or_else(|| Cow::Owned(g.to_vec()), Cow::Borrowed);
    let fill = |masked: &mut [std::mem::MaybeUninit<F>]| {
        crate::parallel::for_each_block(masked, 1, |start, block| {
            let values = g_values[start..].iter().zip(&active[start..]);
            // A select, not a branch: the signs are random, and the loop vectorizes.
            for (m, (&g, &y)) in block.iter_mut().zip(values) {
                m.write(if y > F::zero() { g } else { F::zero() });
            }
        });
    };
    // SAFETY: the blocks cover the whole slice and each element is written once
    // (tests/threads.rs trains fused layers bit for bit like unfused ones).
    unsafe { crate::tensor::pool::filled_uninit(out.shape(), fill) }
}

/// ∂L/∂x of an element-wise function: the table's `grad` at each (x, out, g).
fn map_backward<F: Float>(
    f: Elementwise,
    x: &Tensor<F>,
    out: &Tensor<F>,
    g: &Tensor<F>,
) -> Result<Tensor<F>> {
    let g: Cow<'_, Tensor<F>> = if g.shape() == out.shape() {
        Cow::Borrowed(g)
    } else {
        Cow::Owned(g.broadcast_to(out.shape())?)
    };
    let grad = Zip::from(&x.view())
        .and(&out.view())
        .and(&g.view())
        .map_collect(|&x, &out, &g| f.grad(x, out, g));
    Ok(Tensor::from_array(grad))
}

/// Computes a gradient only when it is needed.
fn when<F: Float>(
    need: bool,
    grad: impl FnOnce() -> Result<Tensor<F>>,
) -> Result<Option<Tensor<F>>> {
    if need { grad().map(Some) } else { Ok(None) }
}

/// `x·Wᵀ (+ b)` for [`Linear`] and [`LinearRelu`]: the bias row is added to the fresh
/// product in place and, with `relu`, max(·, 0) is taken in the same pass, exactly as
/// the `relu` rule takes it; large outputs are shared among the training team by rows.
fn linear_forward<F: Float>(x: &[&Tensor<F>], relu: bool) -> Result<Tensor<F>> {
    let mut y = x[0].matmul(&x[1].t()?)?;
    let columns = y.shape()[y.ndim() - 1];
    let bias = match x.get(2) {
        Some(b) if b.shape() == [columns] => Some(
            b.as_slice()
                .map_or_else(|| Cow::Owned(b.to_vec()), Cow::Borrowed),
        ),
        // Any other shape takes the broadcasting add (and its errors).
        Some(b) => {
            y = y.add(b)?;
            None
        }
        None => None,
    };
    if bias.is_none() && !relu {
        return Ok(y);
    }
    crate::parallel::for_each_block(y.as_mut_slice(), columns, |_, block| {
        for row in block.chunks_mut(columns.max(1)) {
            if let Some(bias) = &bias {
                row.iter_mut().zip(bias.iter()).for_each(|(v, &b)| *v += b);
            }
            if relu {
                row.iter_mut()
                    .for_each(|v| *v = if *v > F::zero() { *v } else { F::zero() });
            }
        }
    });
    Ok(y)
}

/// The input gradients of a dense layer from `g` = ∂L/∂y: g·W, gᵀ·x and the column
/// sums of g, each computed only when needed.
fn linear_backward<F: Float>(
    x: &[&Tensor<F>],
    g: &Tensor<F>,
    need: &[bool],
) -> Result<InputGrads<F>> {
    let mut grads = vec![
        when(need[0], || g.matmul(x[1]))?,
        when(need[1], || g.t()?.matmul(x[0]))?,
    ];
    if x.len() == 3 {
        grads.push(when(need[2], || g.sum(&[0], false))?);
    }
    Ok(grads)
}

/// Spreads a reduction's gradient (or output) back over the reduced axes of `shape`,
/// whether the reduction kept its axes or not.
fn expand_reduced<F: Float>(g: &Tensor<F>, shape: &[usize], axes: &[usize]) -> Result<Tensor<F>> {
    let kept: Vec<usize> = shape
        .iter()
        .enumerate()
        .map(|(i, &d)| {
            if axes.is_empty() || axes.contains(&i) {
                1
            } else {
                d
            }
        })
        .collect();
    g.reshape(&kept)?.broadcast_to(shape)
}

/// The gradient of an element-wise selection between two inputs: `wins(a, b)` sends g
/// to a, `wins(b, a)` to b, a tie splits it in half.
fn pick_larger<F: Float>(
    x: &[&Tensor<F>],
    g: &Tensor<F>,
    need: &[bool],
    wins: fn(F, F) -> bool,
) -> Result<InputGrads<F>> {
    let half = F::from_f64(0.5);
    let share = |first: bool| {
        let (a, b) = if first { (x[0], x[1]) } else { (x[1], x[0]) };
        let weight = a.zip_with(b, "select", |a, b| {
            if wins(a, b) {
                F::one()
            } else if a == b {
                half
            } else {
                F::zero()
            }
        })?;
        g.mul(&weight)
    };
    Ok(vec![
        when(need[0], || share(true))?,
        when(need[1], || share(false))?,
    ])
}

/// Row-major coordinates of element `flat` of `shape`.
pub(super) fn coordinates(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut c = vec![0; shape.len()];
    for (d, &n) in shape.iter().enumerate().rev() {
        c[d] = flat % n.max(1);
        flat /= n.max(1);
    }
    c
}

/// The flat row-major index of coordinates `c` in `shape`.
pub(super) fn flat_index(c: &[usize], shape: &[usize]) -> usize {
    c.iter().zip(shape).fold(0, |acc, (&i, &n)| acc * n + i)
}

/// The element of an input of shape `shape` that broadcasts to output coordinates `c`.
pub(super) fn broadcast_source(c: &[usize], shape: &[usize]) -> usize {
    let skip = c.len() - shape.len();
    let own: Vec<usize> = shape
        .iter()
        .enumerate()
        .map(|(d, &n)| if n == 1 { 0 } else { c[skip + d] })
        .collect();
    flat_index(&own, shape)
}

/// The input's elements grouped by the output element they reduce into, for a
/// reduction over `axes` (every axis when empty).
fn reduction_groups(shape: &[usize], axes: &[usize]) -> Vec<Vec<usize>> {
    let kept: Vec<usize> = (0..shape.len())
        .filter(|d| !(axes.is_empty() || axes.contains(d)))
        .collect();
    let kept_shape: Vec<usize> = kept.iter().map(|&d| shape[d]).collect();
    let mut groups = vec![Vec::new(); kept_shape.iter().product::<usize>().max(1)];
    for flat in 0..shape.iter().product() {
        let c = coordinates(flat, shape);
        let own: Vec<usize> = kept.iter().map(|&d| c[d]).collect();
        groups[flat_index(&own, &kept_shape)].push(flat);
    }
    groups
}

/// Σ of formulas, left to right (0 for none).
fn total<E: Formula>(terms: impl IntoIterator<Item = E>) -> E {
    terms
        .into_iter()
        .reduce(|a, b| a.plus(b))
        .unwrap_or_else(|| E::number(0.0))
}

/// max(a, b) = b + relu(a − b) as a formula.
fn larger<E: Formula>(a: E, b: E) -> E {
    let minus = |e: E| E::number(-1.0).times(e);
    b.clone().plus(Elementwise::Relu.formula(a.plus(minus(b))))
}

impl Op {
    /// The operation's value element by element as formulas, from each input's shape
    /// and its elements' formulas (row-major) and the recorded output's shape: how
    /// the symbolic engine writes out a whole recorded graph, layers and losses
    /// alike. `None` for what it does not write out (a batched matrix product).
    ///
    /// Kinks are written with the element-wise table's conventions; where PyTorch
    /// splits a gradient between tied inputs (maximum, max), the formula sends it to
    /// one of them.
    ///
    /// ```
    /// use chainrule::autodiff::Op;
    /// // x [1, 2] · Wᵀ with W [1, 2] and a bias: 1·3 + 2·4 + 0.5
    /// let y = Op::Linear.formula_elements(
    ///     &[(&[1, 2], &[1.0f64, 2.0]), (&[1, 2], &[3.0, 4.0]), (&[1], &[0.5])],
    ///     &[1, 1],
    /// );
    /// assert_eq!(y, Some(vec![11.5]));
    /// ```
    pub fn formula_elements<E: Formula>(
        &self,
        x: &[(&[usize], &[E])],
        out_shape: &[usize],
    ) -> Option<Vec<E>> {
        let minus = |e: E| E::number(-1.0).times(e);
        let out_len: usize = out_shape.iter().product();
        let elementwise = |f: &dyn Fn(E, E) -> E| -> Option<Vec<E>> {
            let [(sa, a), (sb, b)] = x else { return None };
            Some(
                (0..out_len)
                    .map(|i| {
                        let c = coordinates(i, out_shape);
                        f(
                            a[broadcast_source(&c, sa)].clone(),
                            b[broadcast_source(&c, sb)].clone(),
                        )
                    })
                    .collect(),
            )
        };
        let (shape, values) = *x.first()?;
        let at = |c: &[usize]| values[flat_index(c, shape)].clone();
        Some(match self {
            Op::Add => elementwise(&|a, b| a.plus(b))?,
            Op::Sub => elementwise(&|a, b| a.plus(minus(b)))?,
            Op::Mul => elementwise(&|a, b| a.times(b))?,
            Op::Div => elementwise(&|a, b| a.times(b.power(-1.0)))?,
            Op::Maximum => elementwise(&|a, b| larger(a, b))?,
            // min(a, b) = a − relu(a − b)
            Op::Minimum => elementwise(&|a, b| {
                a.clone()
                    .plus(minus(Elementwise::Relu.formula(a.plus(minus(b)))))
            })?,
            Op::Map(f) => values.iter().map(|v| f.formula(v.clone())).collect(),
            Op::MatMul | Op::Linear | Op::LinearRelu => {
                let transposed = !matches!(self, Op::MatMul);
                let (ws, w) = *x.get(1)?;
                if shape.len() != 2 || ws.len() != 2 {
                    return None;
                }
                let (rows, inner) = (shape[0], shape[1]);
                let columns = if transposed { ws[0] } else { ws[1] };
                let weight = |k: usize, j: usize| {
                    if transposed {
                        w[j * inner + k].clone()
                    } else {
                        w[k * columns + j].clone()
                    }
                };
                let mut out = Vec::with_capacity(rows * columns);
                for n in 0..rows {
                    for j in 0..columns {
                        // A layer reads w·x, as the notebooks write it; a product a·b.
                        let term = |k: usize| {
                            if transposed {
                                weight(k, j).times(at(&[n, k]))
                            } else {
                                at(&[n, k]).times(weight(k, j))
                            }
                        };
                        let mut z = total((0..inner).map(term));
                        if let Some((_, b)) = x.get(2).filter(|_| transposed) {
                            z = z.plus(b[j].clone());
                        }
                        if matches!(self, Op::LinearRelu) {
                            z = Elementwise::Relu.formula(z);
                        }
                        out.push(z);
                    }
                }
                out
            }
            Op::Sum { axes, .. } | Op::Mean { axes, .. } | Op::Max { axes, .. } => {
                reduction_groups(shape, axes)
                    .into_iter()
                    .map(|group| {
                        let n = group.len() as f64;
                        let items = group.into_iter().map(|i| values[i].clone());
                        match self {
                            Op::Sum { .. } => total(items),
                            Op::Mean { .. } => total(items).times(E::number(1.0 / n)),
                            _ => items.reduce(larger).unwrap_or_else(|| E::number(0.0)),
                        }
                    })
                    .collect()
            }
            Op::Softmax { axis } | Op::LogSoftmax { axis } => {
                let mut out = vec![E::number(0.0); values.len()];
                // One lane per position of the other axes: a reduction over `axis`.
                for lane in reduction_groups(shape, &[*axis]) {
                    let exps = lane
                        .iter()
                        .map(|&i| Elementwise::Exp.formula(values[i].clone()));
                    let sum = total(exps);
                    for &i in &lane {
                        out[i] = if matches!(self, Op::Softmax { .. }) {
                            Elementwise::Exp
                                .formula(values[i].clone())
                                .times(sum.clone().power(-1.0))
                        } else {
                            values[i]
                                .clone()
                                .plus(minus(Elementwise::Log.formula(sum.clone())))
                        };
                    }
                }
                out
            }
            Op::Gather { indices } => {
                let columns = *shape.get(1)?;
                indices
                    .iter()
                    .enumerate()
                    .map(|(n, &c)| values[n * columns + c].clone())
                    .collect()
            }
            Op::SelectRows { indices } => {
                let width = values.len() / shape.first().copied()?.max(1);
                indices
                    .iter()
                    .flat_map(|&r| values[r * width..(r + 1) * width].iter().cloned())
                    .collect()
            }
            Op::Narrow { axis, start, .. } => (0..out_len)
                .map(|i| {
                    let mut c = coordinates(i, out_shape);
                    c[*axis] += start;
                    at(&c)
                })
                .collect(),
            Op::Concat { axis } => (0..out_len)
                .map(|i| {
                    let mut c = coordinates(i, out_shape);
                    let mut k = 0;
                    while c[*axis] >= x[k].0[*axis] {
                        c[*axis] -= x[k].0[*axis];
                        k += 1;
                    }
                    x[k].1[flat_index(&c, x[k].0)].clone()
                })
                .collect(),
            Op::Reshape { .. } => values.to_vec(),
            // x · m, m the mask's element (0 or 1/(1 − p))
            Op::Dropout { p, stream } => (values.iter().enumerate())
                .map(|(i, v)| {
                    let m = crate::tensor::mask_value(*stream, i, *p);
                    v.clone().times(E::number(m))
                })
                .collect(),
            Op::Permute { axes } => (0..out_len)
                .map(|i| {
                    let c = coordinates(i, out_shape);
                    let mut source = vec![0; c.len()];
                    for (d, &a) in axes.iter().enumerate() {
                        source[a] = c[d];
                    }
                    at(&source)
                })
                .collect(),
            Op::Transpose => (0..out_len)
                .map(|i| {
                    let mut c = coordinates(i, out_shape);
                    let r = c.len();
                    c.swap(r - 1, r - 2);
                    at(&c)
                })
                .collect(),
            // −(y·ln p + (1 − y)·ln(1 − p)) (the clamp at −100 is not written)
            Op::BinaryCrossEntropy => elementwise(&|p, y| {
                let log = |e: E| Elementwise::Log.formula(e);
                let one_minus = |e: E| E::number(1.0).plus(minus(e));
                minus(
                    y.clone()
                        .times(log(p.clone()))
                        .plus(one_minus(y).times(log(one_minus(p)))),
                )
            })?,
            // relu(x) − x·y + ln(1 + e^−|x|)
            Op::BinaryCrossEntropyWithLogits => elementwise(&|x, y| {
                let tail = E::number(1.0)
                    .plus(Elementwise::Exp.formula(minus(Elementwise::Abs.formula(x.clone()))));
                Elementwise::Relu
                    .formula(x.clone())
                    .plus(minus(x.times(y)))
                    .plus(Elementwise::Log.formula(tail))
            })?,
            Op::Conv2d { window } => {
                let (&[n, c, h, w], &[o, _, oh, ow]) = (shape, out_shape) else {
                    return None;
                };
                let (kernel, bias) = (x.get(1)?.1, x.get(2).map(|b| b.1));
                let [kh, kw] = window.kernel;
                let mut out = Vec::with_capacity(out_len);
                for (ni, oi, p, q) in grid4(n, o, oh, ow) {
                    let mut terms = Vec::new();
                    for (ci, i, j) in grid3(c, kh, kw) {
                        if let (Some(r), Some(col)) =
                            (window.source(0, p, i, h), window.source(1, q, j, w))
                        {
                            terms.push(
                                kernel[((oi * c + ci) * kh + i) * kw + j]
                                    .clone()
                                    .times(at(&[ni, ci, r, col])),
                            );
                        }
                    }
                    let z = total(terms);
                    out.push(match bias {
                        Some(b) => z.plus(b[oi].clone()),
                        None => z,
                    });
                }
                out
            }
            Op::MaxPool2d { window } | Op::AvgPool2d { window } => {
                let (&[n, c, h, w], &[_, _, oh, ow]) = (shape, out_shape) else {
                    return None;
                };
                let [kh, kw] = window.kernel;
                let mut out = Vec::with_capacity(out_len);
                for (ni, ci, p, q) in grid4(n, c, oh, ow) {
                    let items = grid3(1, kh, kw).filter_map(|(_, i, j)| {
                        Some(at(&[
                            ni,
                            ci,
                            window.source(0, p, i, h)?,
                            window.source(1, q, j, w)?,
                        ]))
                    });
                    out.push(if matches!(self, Op::MaxPool2d { .. }) {
                        items.reduce(larger)?
                    } else {
                        total(items).times(E::number(1.0 / (kh * kw) as f64))
                    });
                }
                out
            }
            Op::BatchNorm { eps } | Op::LayerNorm { eps, .. } => {
                // One group per normalisation set; `affine[i]` the γ and β index of
                // element i.
                let (groups, affine): (Vec<Vec<usize>>, Vec<usize>) = match self {
                    Op::BatchNorm { .. } => {
                        let inner: usize = shape.get(2..)?.iter().product();
                        let channels = *shape.get(1)?;
                        let axes: Vec<usize> = (0..shape.len()).filter(|&a| a != 1).collect();
                        let affine = (0..values.len()).map(|i| i / inner % channels).collect();
                        (reduction_groups(shape, &axes), affine)
                    }
                    Op::LayerNorm { trailing, .. } => {
                        let axes: Vec<usize> =
                            (shape.len().checked_sub(*trailing)?..shape.len()).collect();
                        let size: usize = shape[shape.len() - trailing..].iter().product();
                        (
                            reduction_groups(shape, &axes),
                            (0..values.len()).map(|i| i % size).collect(),
                        )
                    }
                    _ => unreachable!("matched above"),
                };
                let mut out = vec![E::number(0.0); values.len()];
                for group in groups {
                    let m = E::number(1.0 / group.len() as f64);
                    let mean = total(group.iter().map(|&i| values[i].clone())).times(m.clone());
                    let centred = |i: usize| values[i].clone().plus(minus(mean.clone()));
                    let var = total(group.iter().map(|&i| centred(i).power(2.0))).times(m);
                    let inv = var.plus(E::number(*eps)).power(-0.5);
                    for &i in &group {
                        let mut y = centred(i).times(inv.clone());
                        if let Some((_, gamma)) = x.get(1) {
                            y = gamma[affine[i]].clone().times(y);
                        }
                        if let Some((_, beta)) = x.get(2) {
                            y = y.plus(beta[affine[i]].clone());
                        }
                        out[i] = y;
                    }
                }
                out
            }
            // (1/N) Σₙ (ln Σ_c e^{x_nc} − x_n,yₙ)
            Op::SoftmaxCrossEntropy { classes } => {
                let columns = *shape.get(1)?;
                let rows = classes.len() as f64;
                let terms = classes.iter().enumerate().map(|(n, &class)| {
                    let row = &values[n * columns..(n + 1) * columns];
                    let sum = total(row.iter().map(|v| Elementwise::Exp.formula(v.clone())));
                    Elementwise::Log
                        .formula(sum)
                        .plus(minus(row[class].clone()))
                });
                vec![total(terms).times(E::number(1.0 / rows))]
            }
        })
    }
}

/// Every `(a, b, c, d)` below the sizes, row-major.
fn grid4(
    a: usize,
    b: usize,
    c: usize,
    d: usize,
) -> impl Iterator<Item = (usize, usize, usize, usize)> {
    grid3(a, b, c).flat_map(move |(i, j, k)| (0..d).map(move |l| (i, j, k, l)))
}

/// Every `(a, b, c)` below the sizes, row-major.
fn grid3(a: usize, b: usize, c: usize) -> impl Iterator<Item = (usize, usize, usize)> {
    (0..a).flat_map(move |i| (0..b).flat_map(move |j| (0..c).map(move |k| (i, j, k))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(shape: &[usize], seed: u64) -> Tensor<f64> {
        Tensor::rand_uniform(shape, 0.1, 1.9, seed).unwrap()
    }

    #[test]
    fn every_formula_written_element_by_element_equals_the_forward() {
        let m = tensor(&[3, 4], 1);
        let w = tensor(&[2, 4], 2);
        let image = tensor(&[2, 3, 5, 6], 12);
        let odd_window = Window2d {
            kernel: [2, 3],
            stride: [2, 1],
            padding: [1, 0],
            dilation: [1, 2],
        };
        let pool_window = Window2d {
            kernel: [3, 2],
            stride: [2, 2],
            padding: [1, 1],
            dilation: [1, 1],
        };
        let cases: Vec<(Op, Vec<Tensor<f64>>)> = vec![
            (Op::Add, vec![m.clone(), tensor(&[4], 3)]),
            (Op::Sub, vec![tensor(&[3, 1], 4), m.clone()]),
            (Op::Mul, vec![m.clone(), tensor(&[3, 4], 5)]),
            (Op::Div, vec![m.clone(), tensor(&[1, 4], 6)]),
            (Op::Maximum, vec![m.clone(), tensor(&[3, 4], 7)]),
            (Op::Minimum, vec![m.clone(), tensor(&[3, 4], 7)]),
            (Op::Map(Elementwise::Tanh), vec![m.clone()]),
            (Op::MatMul, vec![m.clone(), tensor(&[4, 2], 8)]),
            (Op::Linear, vec![m.clone(), w.clone(), tensor(&[2], 9)]),
            (
                Op::LinearRelu,
                vec![m.clone(), w.scale(-1.0), tensor(&[2], 9)],
            ),
            (
                Op::Sum {
                    axes: vec![1],
                    keepdim: false,
                },
                vec![m.clone()],
            ),
            (
                Op::Mean {
                    axes: vec![0],
                    keepdim: true,
                },
                vec![m.clone()],
            ),
            (
                Op::Max {
                    axes: vec![],
                    keepdim: false,
                },
                vec![m.clone()],
            ),
            (Op::Softmax { axis: 1 }, vec![m.clone()]),
            (Op::LogSoftmax { axis: 0 }, vec![m.clone()]),
            (
                Op::Gather {
                    indices: vec![3, 0, 2],
                },
                vec![m.clone()],
            ),
            (
                Op::SelectRows {
                    indices: vec![2, 2, 0],
                },
                vec![m.clone()],
            ),
            (
                Op::Narrow {
                    axis: 1,
                    start: 1,
                    len: 2,
                },
                vec![m.clone()],
            ),
            (Op::Concat { axis: 0 }, vec![m.clone(), tensor(&[2, 4], 10)]),
            (Op::Reshape { shape: vec![2, 6] }, vec![m.clone()]),
            (Op::Permute { axes: vec![1, 0] }, vec![m.clone()]),
            (Op::Transpose, vec![m.clone()]),
            (
                Op::BinaryCrossEntropy,
                vec![m.scale(0.5), tensor(&[3, 4], 11).scale(0.5)],
            ),
            (
                Op::BinaryCrossEntropyWithLogits,
                vec![m.clone(), tensor(&[3, 4], 12)],
            ),
            (
                Op::SoftmaxCrossEntropy {
                    classes: vec![1, 3, 0],
                },
                vec![m.clone()],
            ),
            (
                Op::Conv2d { window: odd_window },
                vec![image.clone(), tensor(&[2, 3, 2, 3], 13), tensor(&[2], 14)],
            ),
            (
                Op::MaxPool2d {
                    window: pool_window,
                },
                vec![image.clone()],
            ),
            (
                Op::AvgPool2d {
                    window: pool_window,
                },
                vec![image.clone()],
            ),
            (Op::Dropout { p: 0.4, stream: 11 }, vec![image.clone()]),
            (
                Op::BatchNorm { eps: 1e-5 },
                vec![image.clone(), tensor(&[3], 15), tensor(&[3], 16)],
            ),
            (Op::BatchNorm { eps: 1e-3 }, vec![m.clone()]),
            (
                Op::LayerNorm {
                    trailing: 2,
                    eps: 1e-5,
                },
                vec![image.clone(), tensor(&[5, 6], 17), tensor(&[5, 6], 18)],
            ),
        ];
        for (op, inputs) in cases {
            let refs: Vec<&Tensor<f64>> = inputs.iter().collect();
            let out = op.forward(&refs).unwrap();
            let values: Vec<Vec<f64>> = inputs.iter().map(Tensor::to_vec).collect();
            let given: Vec<(&[usize], &[f64])> = inputs
                .iter()
                .zip(&values)
                .map(|(t, v)| (t.shape(), v.as_slice()))
                .collect();
            let written = op.formula_elements(&given, out.shape()).unwrap();
            assert_eq!(written.len(), out.len(), "{op:?}");
            for (a, b) in written.iter().zip(out.to_vec()) {
                assert!(
                    (a - b).abs() <= 1e-12 * b.abs().max(1.0),
                    "{op:?}: {a} vs {b}"
                );
            }
        }
    }
}
