//! [`Var`]: a handle to a value on a tape, with one method per operation, and the
//! arithmetic operators.

use super::{Elementwise, Gradients, Op, Tape};
use crate::{Error, Float, Result, Tensor};
use std::fmt;

/// A handle to a value on a [`Tape`]: cheap to copy, used like a tensor.
///
/// ```
/// let tape = chainrule::Tape::<f64>::new();
/// let x = tape.param_scalar(3.0);
/// let y = x * x + x;                 // x² + x
/// let grads = y.backward()?;
/// assert_eq!(grads.wrt(x).unwrap().item()?, 7.0); // 2x + 1
/// # Ok::<(), chainrule::Error>(())
/// ```
#[derive(Clone, Copy)]
pub struct Var<'t, F: Float = f32> {
    pub(super) tape: &'t Tape<F>,
    pub(super) id: usize,
}

impl<F: Float> fmt::Debug for Var<'_, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Var#{} {:?}", self.id, self.value())
    }
}

/// Generates the `Var` methods that record one rule, each with its doc example.
macro_rules! unary {
    ($($(#[$doc:meta])* $name:ident => $rule:ident;)*) => {
        $(
            $(#[$doc])*
            // `neg` is also the `Neg` operator's body; the method keeps PyTorch's name.
            #[allow(clippy::should_implement_trait)]
            pub fn $name(self) -> Var<'t, F> {
                self.tape
                    .apply(Op::Map(Elementwise::$rule), &[self])
                    .expect("an element-wise function accepts any shape")
            }
        )*
    };
}

macro_rules! binary {
    ($($(#[$doc:meta])* $name:ident => $rule:ident;)*) => {
        $(
            $(#[$doc])*
            ///
            /// # Errors
            /// [`Error::Broadcast`] when the shapes do not broadcast;
            /// [`Error::ForeignTape`] when `other` is on another tape.
            // Fallible on purpose: the `+ - * /` operators are built on these.
            #[allow(clippy::should_implement_trait)]
            pub fn $name(self, other: Var<'t, F>) -> Result<Var<'t, F>> {
                self.tape.apply(Op::$rule, &[self, other])
            }
        )*
    };
}

impl<'t, F: Float> Var<'t, F> {
    /// The node id on the tape (creation order).
    ///
    /// ```
    /// let tape = chainrule::Tape::<f64>::new();
    /// assert_eq!(tape.param_scalar(1.0).id(), 0);
    /// ```
    pub fn id(self) -> usize {
        self.id
    }

    /// The tape this value lives on.
    ///
    /// ```
    /// let tape = chainrule::Tape::<f64>::new();
    /// let x = tape.param_scalar(1.0);
    /// assert!(std::ptr::eq(x.tape(), &tape));
    /// ```
    pub fn tape(self) -> &'t Tape<F> {
        self.tape
    }

    /// The value (a cheap, shared copy).
    ///
    /// ```
    /// let tape = chainrule::Tape::<f64>::new();
    /// assert_eq!(tape.param_scalar(1.5).value().item()?, 1.5);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn value(self) -> Tensor<F> {
        self.tape.nodes.borrow()[self.id].value.clone()
    }

    /// The value's shape.
    ///
    /// ```
    /// use chainrule::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// assert_eq!(tape.constant(Tensor::zeros(&[2, 3])).shape(), vec![2, 3]);
    /// ```
    pub fn shape(self) -> Vec<usize> {
        self.tape.nodes.borrow()[self.id].value.shape().to_vec()
    }

    /// The value of a one-element var.
    ///
    /// # Errors
    /// [`Error::Shape`] when the value has more than one element.
    ///
    /// ```
    /// let tape = chainrule::Tape::<f64>::new();
    /// assert_eq!((tape.param_scalar(2.0) * 3.0).item()?, 6.0);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn item(self) -> Result<F> {
        self.tape.nodes.borrow()[self.id].value.item()
    }

    /// Whether a gradient flows to this value (it depends on a parameter).
    ///
    /// ```
    /// let tape = chainrule::Tape::<f64>::new();
    /// let w = tape.param_scalar(1.0);
    /// let c = tape.constant_scalar(1.0);
    /// assert!((w * c).requires_grad());
    /// assert!(!(c * c).requires_grad());
    /// ```
    pub fn requires_grad(self) -> bool {
        self.tape.nodes.borrow()[self.id].requires_grad
    }

    /// The same value as a constant: gradients stop here.
    ///
    /// ```
    /// let tape = chainrule::Tape::<f64>::new();
    /// let w = tape.param_scalar(2.0);
    /// let y = w * w.detach();            // d/dw = detached w = 2
    /// assert_eq!(y.backward()?.wrt(w).unwrap().item()?, 2.0);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn detach(self) -> Var<'t, F> {
        self.tape.constant(self.value())
    }

    /// Computes ∂self/∂v for every `v` on the tape that requires a gradient.
    /// Intermediate gradients are dropped as soon as they have been passed on.
    ///
    /// # Errors
    /// [`Error::NonScalarBackward`] unless `self` holds exactly one element.
    ///
    /// ```
    /// let tape = chainrule::Tape::<f64>::new();
    /// let a = tape.param_scalar(2.0);
    /// let b = tape.param_scalar(5.0);
    /// let grads = (a * b).backward()?;
    /// assert_eq!(grads.wrt(a).unwrap().item()?, 5.0);
    /// assert_eq!(grads.wrt(b).unwrap().item()?, 2.0);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn backward(self) -> Result<Gradients<F>> {
        self.tape.backward_from(self.id, false)
    }

    /// Like [`Var::backward`] but keeps the gradient of every intermediate value too
    /// (what graphs and derivations show).
    ///
    /// # Errors
    /// [`Error::NonScalarBackward`] unless `self` holds exactly one element.
    ///
    /// ```
    /// let tape = chainrule::Tape::<f64>::new();
    /// let w = tape.param_scalar(2.0);
    /// let z = w * 3.0;
    /// let loss = z.relu();
    /// let grads = loss.backward_retain_all()?;
    /// assert_eq!(grads.wrt(z).unwrap().item()?, 1.0); // relu'(6) = 1
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn backward_retain_all(self) -> Result<Gradients<F>> {
        self.tape.backward_from(self.id, true)
    }

    /// A constant with the same tape, from a tensor (used to mix vars and numbers).
    fn constant_like(self, value: Tensor<F>) -> Var<'t, F> {
        self.tape.constant(value)
    }

    fn record(self, op: Op, inputs: &[Var<'t, F>]) -> Result<Var<'t, F>> {
        self.tape.apply(op, inputs)
    }

    /// An element-wise function of the table applied to every element.
    ///
    /// ```
    /// use chainrule::autodiff::Elementwise;
    /// let tape = chainrule::Tape::<f64>::new();
    /// let x = tape.param_scalar(-2.0);
    /// assert_eq!(x.map(Elementwise::LeakyRelu { slope: 0.1 }).item()?, -0.2);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn map(self, f: Elementwise) -> Var<'t, F> {
        self.record(Op::Map(f), &[self])
            .expect("an element-wise function accepts any shape")
    }

    binary! {
        /// Element-wise `self + other` with broadcasting (a bias row added to a batch).
        ///
        /// ```
        /// use chainrule::{Tape, Tensor};
        /// let tape = Tape::<f64>::new();
        /// let x = tape.constant(Tensor::ones(&[2, 3]));
        /// let b = tape.param(Tensor::zeros(&[3]));
        /// let y = x.add(b)?.sum(&[], false)?;
        /// assert_eq!(y.backward()?.wrt(b).unwrap().to_vec(), vec![2.0, 2.0, 2.0]);
        /// # Ok::<(), chainrule::Error>(())
        /// ```
        add => Add;
        /// Element-wise `self - other` with broadcasting.
        ///
        /// ```
        /// let tape = chainrule::Tape::<f64>::new();
        /// let (a, b) = (tape.param_scalar(1.0), tape.param_scalar(4.0));
        /// assert_eq!(a.sub(b)?.backward()?.wrt(b).unwrap().item()?, -1.0);
        /// # Ok::<(), chainrule::Error>(())
        /// ```
        sub => Sub;
        /// Element-wise `self * other` with broadcasting.
        ///
        /// ```
        /// let tape = chainrule::Tape::<f64>::new();
        /// let (a, b) = (tape.param_scalar(3.0), tape.param_scalar(4.0));
        /// assert_eq!(a.mul(b)?.backward()?.wrt(a).unwrap().item()?, 4.0);
        /// # Ok::<(), chainrule::Error>(())
        /// ```
        mul => Mul;
        /// Element-wise `self / other` with broadcasting.
        ///
        /// ```
        /// let tape = chainrule::Tape::<f64>::new();
        /// let (a, b) = (tape.param_scalar(3.0), tape.param_scalar(2.0));
        /// // d(a/b)/db = -a/b² = -0.75
        /// assert_eq!(a.div(b)?.backward()?.wrt(b).unwrap().item()?, -0.75);
        /// # Ok::<(), chainrule::Error>(())
        /// ```
        div => Div;
        /// Element-wise maximum; a tie sends half the gradient to each input.
        ///
        /// ```
        /// let tape = chainrule::Tape::<f64>::new();
        /// let (a, b) = (tape.param_scalar(3.0), tape.param_scalar(2.0));
        /// let g = a.maximum(b)?.backward()?;
        /// assert_eq!((g.wrt(a).unwrap().item()?, g.wrt(b).unwrap().item()?), (1.0, 0.0));
        /// # Ok::<(), chainrule::Error>(())
        /// ```
        maximum => Maximum;
        /// Element-wise minimum; a tie sends half the gradient to each input.
        ///
        /// ```
        /// let tape = chainrule::Tape::<f64>::new();
        /// let (a, b) = (tape.param_scalar(3.0), tape.param_scalar(3.0));
        /// let g = a.minimum(b)?.backward()?;
        /// assert_eq!(g.wrt(a).unwrap().item()?, 0.5);
        /// # Ok::<(), chainrule::Error>(())
        /// ```
        minimum => Minimum;
        /// Matrix product (2-D, or batched with a leading axis), see [`Tensor::matmul`].
        ///
        /// ```
        /// use chainrule::{Tape, Tensor};
        /// let tape = Tape::<f64>::new();
        /// let x = tape.constant(Tensor::from_vec(vec![1.0, 2.0], &[1, 2])?);
        /// let w = tape.param(Tensor::from_vec(vec![3.0, 4.0], &[2, 1])?);
        /// let y = x.matmul(w)?.sum(&[], false)?;
        /// assert_eq!(y.item()?, 11.0);
        /// assert_eq!(y.backward()?.wrt(w).unwrap().to_vec(), vec![1.0, 2.0]);
        /// # Ok::<(), chainrule::Error>(())
        /// ```
        matmul => MatMul;
    }

    unary! {
        /// −x.
        ///
        /// ```
        /// let tape = chainrule::Tape::<f64>::new();
        /// assert_eq!(tape.param_scalar(2.0).neg().item()?, -2.0);
        /// # Ok::<(), chainrule::Error>(())
        /// ```
        neg => Neg;
        /// eˣ.
        ///
        /// ```
        /// let tape = chainrule::Tape::<f64>::new();
        /// let x = tape.param_scalar(0.0);
        /// assert_eq!(x.exp().backward()?.wrt(x).unwrap().item()?, 1.0);
        /// # Ok::<(), chainrule::Error>(())
        /// ```
        exp => Exp;
        /// Natural logarithm.
        ///
        /// ```
        /// let tape = chainrule::Tape::<f64>::new();
        /// let x = tape.param_scalar(4.0);
        /// assert_eq!(x.log().backward()?.wrt(x).unwrap().item()?, 0.25);
        /// # Ok::<(), chainrule::Error>(())
        /// ```
        log => Log;
        /// √x.
        ///
        /// ```
        /// let tape = chainrule::Tape::<f64>::new();
        /// let x = tape.param_scalar(4.0);
        /// assert_eq!(x.sqrt().backward()?.wrt(x).unwrap().item()?, 0.25);
        /// # Ok::<(), chainrule::Error>(())
        /// ```
        sqrt => Sqrt;
        /// |x| (derivative 0 at 0).
        ///
        /// ```
        /// let tape = chainrule::Tape::<f64>::new();
        /// let x = tape.param_scalar(-3.0);
        /// assert_eq!(x.abs().backward()?.wrt(x).unwrap().item()?, -1.0);
        /// # Ok::<(), chainrule::Error>(())
        /// ```
        abs => Abs;
        /// max(x, 0), derivative 0 at 0.
        ///
        /// ```
        /// let tape = chainrule::Tape::<f64>::new();
        /// let x = tape.param_scalar(0.0);
        /// assert_eq!(x.relu().backward()?.wrt(x).unwrap().item()?, 0.0);
        /// # Ok::<(), chainrule::Error>(())
        /// ```
        relu => Relu;
        /// The logistic sigmoid.
        ///
        /// ```
        /// let tape = chainrule::Tape::<f64>::new();
        /// let x = tape.param_scalar(0.0);
        /// assert_eq!(x.sigmoid().backward()?.wrt(x).unwrap().item()?, 0.25);
        /// # Ok::<(), chainrule::Error>(())
        /// ```
        sigmoid => Sigmoid;
        /// Hyperbolic tangent.
        ///
        /// ```
        /// let tape = chainrule::Tape::<f64>::new();
        /// let x = tape.param_scalar(0.0);
        /// assert_eq!(x.tanh().backward()?.wrt(x).unwrap().item()?, 1.0);
        /// # Ok::<(), chainrule::Error>(())
        /// ```
        tanh => Tanh;
    }

    /// A dense layer: `self · wᵀ + b` for `self` `[N, in]`, `w` `[out, in]` and an optional
    /// bias `[out]` (PyTorch `nn.functional.linear`), as one recorded operation.
    ///
    /// # Errors
    /// [`Error::Shape`]/[`Error::Broadcast`] when the shapes do not fit.
    ///
    /// ```
    /// use chainrule::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let x = tape.constant(Tensor::from_vec(vec![1.0, 2.0], &[1, 2])?);
    /// let w = tape.param(Tensor::from_vec(vec![3.0, 4.0], &[1, 2])?);
    /// let b = tape.param(Tensor::from_vec(vec![0.5], &[1])?);
    /// let y = x.linear(w, Some(b))?;
    /// assert_eq!(y.value().to_vec(), vec![11.5]);
    /// let g = y.sum(&[], false)?.backward()?;
    /// assert_eq!(g.wrt(w).unwrap().to_vec(), vec![1.0, 2.0]);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn linear(self, w: Var<'t, F>, b: Option<Var<'t, F>>) -> Result<Var<'t, F>> {
        match b {
            Some(b) => self.record(Op::Linear, &[self, w, b]),
            None => self.record(Op::Linear, &[self, w]),
        }
    }

    /// `relu(self · wᵀ + b)`: a dense layer and the ReLU after it as one recorded
    /// operation, with the same values, bit for bit, as [`Var::linear`] followed by
    /// [`Var::relu`] and one pass less over the activations each way (what training
    /// records for a linear layer followed by a ReLU).
    ///
    /// # Errors
    /// As [`Var::linear`].
    ///
    /// ```
    /// use chainrule::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let x = tape.constant(Tensor::from_vec(vec![1.0, 2.0], &[1, 2])?);
    /// let w = tape.param(Tensor::from_vec(vec![3.0, 4.0, -3.0, -4.0], &[2, 2])?);
    /// let y = x.linear_relu(w, None)?;
    /// assert_eq!(y.value().to_vec(), vec![11.0, 0.0]);
    /// let g = y.sum(&[], false)?.backward()?;
    /// // Only the active unit's weights get a gradient.
    /// assert_eq!(g.wrt(w).unwrap().to_vec(), vec![1.0, 2.0, 0.0, 0.0]);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn linear_relu(self, w: Var<'t, F>, b: Option<Var<'t, F>>) -> Result<Var<'t, F>> {
        match b {
            Some(b) => self.record(Op::LinearRelu, &[self, w, b]),
            None => self.record(Op::LinearRelu, &[self, w]),
        }
    }

    /// xᵖ for a constant exponent.
    ///
    /// ```
    /// let tape = chainrule::Tape::<f64>::new();
    /// let x = tape.param_scalar(3.0);
    /// assert_eq!(x.powf(2.0).backward()?.wrt(x).unwrap().item()?, 6.0);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn powf(self, p: f64) -> Var<'t, F> {
        self.map(Elementwise::Pow { p })
    }

    /// leaky_relu with the given negative slope (derivative = slope at 0).
    ///
    /// ```
    /// let tape = chainrule::Tape::<f64>::new();
    /// let x = tape.param_scalar(-2.0);
    /// assert_eq!(x.leaky_relu(0.01).item()?, -0.02);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn leaky_relu(self, slope: f64) -> Var<'t, F> {
        self.map(Elementwise::LeakyRelu { slope })
    }

    /// Clamps into `[min, max]`; the derivative is 1 inside (bounds included), 0 out.
    ///
    /// ```
    /// let tape = chainrule::Tape::<f64>::new();
    /// let x = tape.param_scalar(5.0);
    /// assert_eq!(x.clamp(0.0, 1.0).item()?, 1.0);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn clamp(self, min: f64, max: f64) -> Var<'t, F> {
        self.map(Elementwise::Clamp { min, max })
    }

    /// Σ over `axes` (every axis when empty), keeping them as size 1 when `keepdim`.
    ///
    /// # Errors
    /// [`Error::Axis`] when an axis is out of range.
    ///
    /// ```
    /// use chainrule::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let x = tape.param(Tensor::ones(&[2, 3]));
    /// assert_eq!(x.sum(&[1], false)?.shape(), vec![2]);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn sum(self, axes: &[usize], keepdim: bool) -> Result<Var<'t, F>> {
        let op = Op::Sum {
            axes: axes.to_vec(),
            keepdim,
        };
        self.record(op, &[self])
    }

    /// The mean over `axes` (every axis when empty).
    ///
    /// # Errors
    /// [`Error::Axis`] when an axis is out of range.
    ///
    /// ```
    /// use chainrule::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let x = tape.param(Tensor::ones(&[4]));
    /// let g = x.mean(&[], false)?.backward()?;
    /// assert_eq!(g.wrt(x).unwrap().to_vec(), vec![0.25; 4]);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn mean(self, axes: &[usize], keepdim: bool) -> Result<Var<'t, F>> {
        let op = Op::Mean {
            axes: axes.to_vec(),
            keepdim,
        };
        self.record(op, &[self])
    }

    /// The maximum over `axes` (every axis when empty); ties share the gradient.
    ///
    /// # Errors
    /// [`Error::Axis`] when an axis is out of range.
    ///
    /// ```
    /// use chainrule::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let x = tape.param(Tensor::from_vec(vec![1.0, 5.0, 5.0], &[3])?);
    /// let g = x.max(&[], false)?.backward()?;
    /// assert_eq!(g.wrt(x).unwrap().to_vec(), vec![0.0, 0.5, 0.5]);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn max(self, axes: &[usize], keepdim: bool) -> Result<Var<'t, F>> {
        let op = Op::Max {
            axes: axes.to_vec(),
            keepdim,
        };
        self.record(op, &[self])
    }

    /// Softmax along `axis` (numerically stable).
    ///
    /// # Errors
    /// [`Error::Axis`] when `axis` is out of range.
    ///
    /// ```
    /// use chainrule::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let x = tape.param(Tensor::zeros(&[1, 4]));
    /// assert_eq!(x.softmax(1)?.value().to_vec(), vec![0.25; 4]);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn softmax(self, axis: usize) -> Result<Var<'t, F>> {
        self.record(Op::Softmax { axis }, &[self])
    }

    /// Log-softmax along `axis` (numerically stable).
    ///
    /// # Errors
    /// [`Error::Axis`] when `axis` is out of range.
    ///
    /// ```
    /// use chainrule::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let x = tape.param(Tensor::from_vec(vec![1e4, 0.0], &[1, 2])?);
    /// assert_eq!(x.log_softmax(1)?.value().to_vec(), vec![0.0, -1e4]);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn log_softmax(self, axis: usize) -> Result<Var<'t, F>> {
        self.record(Op::LogSoftmax { axis }, &[self])
    }

    /// One element per row of a `[N, C]` value: `out[i] = self[i, indices[i]]`.
    ///
    /// # Errors
    /// [`Error::Shape`] or [`Error::Index`] when the indices do not fit.
    ///
    /// ```
    /// use chainrule::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let x = tape.param(Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], &[2, 2])?);
    /// let picked = x.gather(&[1, 0])?;
    /// assert_eq!(picked.value().to_vec(), vec![2.0, 3.0]);
    /// let g = picked.sum(&[], false)?.backward()?;
    /// assert_eq!(g.wrt(x).unwrap().to_vec(), vec![0.0, 1.0, 1.0, 0.0]);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn gather(self, indices: &[usize]) -> Result<Var<'t, F>> {
        self.record(
            Op::Gather {
                indices: indices.to_vec(),
            },
            &[self],
        )
    }

    /// The rows at `indices` (a mini-batch), see [`Tensor::select_rows`].
    ///
    /// # Errors
    /// [`Error::Index`] for an index out of range.
    ///
    /// ```
    /// use chainrule::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let x = tape.param(Tensor::ones(&[3, 2]));
    /// let g = x.select_rows(&[0, 0])?.sum(&[], false)?.backward()?;
    /// assert_eq!(g.wrt(x).unwrap().to_vec(), vec![2.0, 2.0, 0.0, 0.0, 0.0, 0.0]);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn select_rows(self, indices: &[usize]) -> Result<Var<'t, F>> {
        self.record(
            Op::SelectRows {
                indices: indices.to_vec(),
            },
            &[self],
        )
    }

    /// Elements `start .. start + len` along `axis`, see [`Tensor::narrow`].
    ///
    /// # Errors
    /// [`Error::Axis`] or [`Error::Index`] when the range does not fit.
    ///
    /// ```
    /// use chainrule::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let x = tape.param(Tensor::ones(&[4]));
    /// let g = x.narrow(0, 1, 2)?.sum(&[], false)?.backward()?;
    /// assert_eq!(g.wrt(x).unwrap().to_vec(), vec![0.0, 1.0, 1.0, 0.0]);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn narrow(self, axis: usize, start: usize, len: usize) -> Result<Var<'t, F>> {
        self.record(Op::Narrow { axis, start, len }, &[self])
    }

    /// Joins vars along `axis`.
    ///
    /// # Errors
    /// [`Error::Shape`] when the shapes do not agree outside `axis`.
    ///
    /// ```
    /// use chainrule::{Tape, Tensor, Var};
    /// let tape = Tape::<f64>::new();
    /// let one = tape.constant(Tensor::ones(&[1, 1]));
    /// let x = tape.param(Tensor::full(&[1, 1], 2.0));
    /// assert_eq!(Var::concat(&[one, x], 0)?.value().to_vec(), vec![1.0, 2.0]);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn concat(vars: &[Var<'t, F>], axis: usize) -> Result<Var<'t, F>> {
        let first = vars.first().ok_or_else(|| Error::Shape {
            op: "concat",
            message: "needs at least one input".into(),
            got: vec![],
        })?;
        first.record(Op::Concat { axis }, vars)
    }

    /// The same elements under a new shape.
    ///
    /// # Errors
    /// [`Error::ElementCount`] when the element counts differ.
    ///
    /// ```
    /// use chainrule::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let x = tape.param(Tensor::ones(&[2, 3]));
    /// assert_eq!(x.reshape(&[6])?.shape(), vec![6]);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn reshape(self, shape: &[usize]) -> Result<Var<'t, F>> {
        self.record(
            Op::Reshape {
                shape: shape.to_vec(),
            },
            &[self],
        )
    }

    /// Reorders the axes, see [`Tensor::permute`].
    ///
    /// # Errors
    /// [`Error::Shape`] when `axes` is not a permutation.
    ///
    /// ```
    /// use chainrule::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let x = tape.param(Tensor::ones(&[2, 3, 4]));
    /// assert_eq!(x.permute(&[1, 2, 0])?.shape(), vec![3, 4, 2]);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn permute(self, axes: &[usize]) -> Result<Var<'t, F>> {
        self.record(
            Op::Permute {
                axes: axes.to_vec(),
            },
            &[self],
        )
    }

    /// Swaps the last two axes.
    ///
    /// # Errors
    /// [`Error::Shape`] when there are fewer than two axes.
    ///
    /// ```
    /// use chainrule::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let w = tape.param(Tensor::ones(&[3, 2]));
    /// assert_eq!(w.t()?.shape(), vec![2, 3]);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn t(self) -> Result<Var<'t, F>> {
        self.record(Op::Transpose, &[self])
    }
}

// --- operators: shorthand for the methods above, panicking on shape mismatch ----

macro_rules! operators {
    ($($trait:ident :: $method:ident => $rule:ident),*) => {$(
        /// Operator form of the method of the same name.
        ///
        /// # Panics
        /// When the shapes do not broadcast or the operands are on different tapes;
        /// use the method to get a `Result` instead.
        impl<'t, F: Float> std::ops::$trait for Var<'t, F> {
            type Output = Var<'t, F>;
            fn $method(self, rhs: Var<'t, F>) -> Var<'t, F> {
                match Var::$method(self, rhs) {
                    Ok(v) => v,
                    Err(e) => panic!("{e}"),
                }
            }
        }

        /// Operator form with a number on the right, broadcast to the var's shape.
        impl<'t, F: Float> std::ops::$trait<F> for Var<'t, F> {
            type Output = Var<'t, F>;
            fn $method(self, rhs: F) -> Var<'t, F> {
                let rhs = self.constant_like(Tensor::scalar(rhs));
                self.record(Op::$rule, &[self, rhs]).expect("a 0-d operand always broadcasts")
            }
        }
    )*};
}

operators!(Add::add => Add, Sub::sub => Sub, Mul::mul => Mul, Div::div => Div);

impl<'t, F: Float> std::ops::Neg for Var<'t, F> {
    type Output = Var<'t, F>;
    fn neg(self) -> Var<'t, F> {
        Var::neg(self)
    }
}
