//! Reverse-mode automatic differentiation on a flat tape.
//!
//! # How it works
//! A [`Tape`] records every operation as a node: its value, its [`Op`] and the ids
//! of its inputs. Nodes are appended after their inputs, so creation order is a
//! topological order and `backward` simply walks the tape from the end: for each node
//! that received a gradient it asks the node's operation for the inputs' gradients (the
//! chain rule: ∂L/∂x = ∂L/∂out · ∂out/∂x), reduces each to its input's shape (undoing
//! broadcasting) and adds it to what that input already received (a value used twice
//! gets both contributions). No recursion, no hashing: deterministic and safe on
//! graphs of any depth.
//!
//! A [`Var`] is a cheap `Copy` handle (tape reference + node id). Operations on vars
//! return vars; the fallible ones (shapes that must agree) return [`Result`], and the
//! arithmetic operators `+ - * /` call them and panic on a shape mismatch, the way
//! ndarray's operators do. Code that handles user input uses the methods.
//!
//! Invariant: a node's inputs always have smaller ids than the node.

pub mod elementwise;
pub mod op;

/// Deliberately wrong derivatives, for testing that gradient checks catch them and
/// name the operation: with the `fault-injection` feature, every operation whose
/// [`Op::name`] is the target has its gradients doubled. The target is set per thread
/// with [`inject_fault`], or for a whole process by the environment variable
/// `CHAINRULE_INJECT_FAULT=<name>`. Never enabled in normal builds.
#[cfg(feature = "fault-injection")]
mod fault {
    use super::{InputGrads, Op};
    use crate::Float;
    use std::cell::RefCell;

    thread_local! {
        static TARGET: RefCell<Option<String>> =
            RefCell::new(std::env::var("CHAINRULE_INJECT_FAULT").ok());
    }

    /// Makes the operations named `name` wrong on this thread (`None`: none).
    ///
    /// ```
    /// use chainrule::autodiff::inject_fault;
    /// let tape = chainrule::Tape::<f64>::new();
    /// let x = tape.param_scalar(0.5);
    /// inject_fault(Some("tanh"));
    /// let wrong = x.tanh().backward()?.wrt(x).unwrap().item()?;
    /// inject_fault(None);
    /// assert_eq!(wrong, 2.0 * (1.0 - 0.5f64.tanh().powi(2)));
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn inject_fault(name: Option<&str>) {
        TARGET.with(|t| *t.borrow_mut() = name.map(str::to_string));
    }

    pub(super) fn corrupt<F: Float>(op: &Op, grads: InputGrads<F>) -> InputGrads<F> {
        let hit = TARGET.with(|t| t.borrow().as_deref() == Some(op.name()));
        if !hit {
            return grads;
        }
        grads
            .into_iter()
            .map(|g| g.map(|g| g.scale(F::from_f64(2.0))))
            .collect()
    }
}
pub use elementwise::{Constant, DerivativeNotation, Elementwise, Formula, Style};
#[cfg(feature = "fault-injection")]
pub use fault::inject_fault;
pub use op::{Arity, InputGrads, Op};

use crate::{Error, Float, Result, Tensor};
use smallvec::SmallVec;
use std::cell::{Cell, Ref, RefCell};
use std::fmt;

/// A recorded value: a leaf (parameter or constant) or the output of an operation.
struct Node<F: Float> {
    value: Tensor<F>,
    op: Option<Op>,
    /// Input ids, inline up to four (no heap allocation per node).
    inputs: Inputs,
    requires_grad: bool,
}

/// A node's input ids: inline for up to four inputs, as almost every operation has.
type Inputs = SmallVec<[usize; 4]>;

/// The record of a computation, which [`Var::backward`] differentiates.
///
/// Create one per forward pass (or [`Tape::clear`] and reuse it). Interior
/// mutability lets every [`Var`] share it by reference.
///
/// ```
/// use chainrule::{Tape, Tensor};
/// let tape = Tape::<f64>::new();
/// let x = tape.param(Tensor::from_vec(vec![1.0, 2.0, 3.0], &[3])?);
/// let y = x.mul(x)?.sum(&[], false)?; // Σx²
/// let grads = y.backward()?;
/// assert_eq!(grads.wrt(x).unwrap().to_vec(), vec![2.0, 4.0, 6.0]);
/// # Ok::<(), chainrule::Error>(())
/// ```
pub struct Tape<F: Float = f32> {
    nodes: RefCell<Vec<Node<F>>>,
    recording: Cell<bool>,
}

impl<F: Float> Default for Tape<F> {
    fn default() -> Self {
        Self::new()
    }
}

impl<F: Float> fmt::Debug for Tape<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tape({} nodes)", self.len())
    }
}

impl<F: Float> Tape<F> {
    /// An empty tape that records.
    ///
    /// ```
    /// let tape = chainrule::Tape::<f32>::new();
    /// assert!(tape.is_empty());
    /// ```
    pub fn new() -> Self {
        Tape {
            nodes: RefCell::new(Vec::new()),
            recording: Cell::new(true),
        }
    }

    /// Removes every node, keeping the allocation for the next pass.
    ///
    /// Takes `&mut self`, so no [`Var`] of the old pass can outlive it.
    ///
    /// ```
    /// let mut tape = chainrule::Tape::<f32>::new();
    /// tape.constant_scalar(1.0);
    /// tape.clear();
    /// assert_eq!(tape.len(), 0);
    /// ```
    pub fn clear(&mut self) {
        // The values' storage serves the next pass's operations (tensor::pool).
        for node in self.nodes.get_mut().drain(..) {
            crate::tensor::pool::recycle(node.value);
        }
    }

    /// The number of recorded nodes.
    ///
    /// ```
    /// let tape = chainrule::Tape::<f32>::new();
    /// let x = tape.param_scalar(1.0);
    /// let _ = x.exp();
    /// assert_eq!(tape.len(), 2);
    /// ```
    pub fn len(&self) -> usize {
        self.nodes.borrow().len()
    }

    /// Whether nothing is recorded.
    ///
    /// ```
    /// assert!(chainrule::Tape::<f64>::new().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A leaf that requires a gradient (a parameter, or an input to differentiate).
    ///
    /// ```
    /// use chainrule::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let w = tape.param(Tensor::ones(&[2, 2]));
    /// assert!(w.requires_grad());
    /// ```
    pub fn param(&self, value: Tensor<F>) -> Var<'_, F> {
        self.push(value, None, Inputs::new(), true)
    }

    /// A leaf without a gradient (data, targets, fixed numbers).
    ///
    /// ```
    /// use chainrule::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let x = tape.constant(Tensor::ones(&[2]));
    /// assert!(!x.requires_grad());
    /// ```
    pub fn constant(&self, value: Tensor<F>) -> Var<'_, F> {
        self.push(value, None, Inputs::new(), false)
    }

    /// A 0-d parameter: the notebooks' `w1`, `b1`.
    ///
    /// ```
    /// let tape = chainrule::Tape::<f64>::new();
    /// assert_eq!(tape.param_scalar(0.5).item()?, 0.5);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn param_scalar(&self, value: F) -> Var<'_, F> {
        self.param(Tensor::scalar(value))
    }

    /// A 0-d constant.
    ///
    /// ```
    /// let tape = chainrule::Tape::<f64>::new();
    /// assert!(!tape.constant_scalar(2.0).requires_grad());
    /// ```
    pub fn constant_scalar(&self, value: F) -> Var<'_, F> {
        self.constant(Tensor::scalar(value))
    }

    /// Runs `f` without recording: results are constants with no history, so nothing
    /// is kept for a backward pass (evaluation, prediction).
    ///
    /// ```
    /// let tape = chainrule::Tape::<f64>::new();
    /// let w = tape.param_scalar(3.0);
    /// let y = tape.no_grad(|| w * w);
    /// assert_eq!(y.item()?, 9.0);
    /// assert!(!y.requires_grad());
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn no_grad<R>(&self, f: impl FnOnce() -> R) -> R {
        let before = self.recording.replace(false);
        let result = f();
        self.recording.set(before);
        result
    }

    /// Records `op` applied to `inputs` and returns its output.
    ///
    /// # Errors
    /// The operation's forward error (shapes that do not fit, a wrong number of
    /// inputs), or [`Error::ForeignTape`] when an input belongs to another tape.
    ///
    /// ```
    /// use chainrule::autodiff::{Elementwise, Op, Tape};
    /// let tape = Tape::<f64>::new();
    /// let x = tape.param_scalar(1.5);
    /// let y = tape.apply(Op::Map(Elementwise::Scale { c: 2.0 }), &[x])?;
    /// assert_eq!(y.item()?, 3.0);
    /// assert_eq!(y.backward()?.wrt(x).unwrap().item()?, 2.0);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn apply<'t>(&'t self, op: Op, inputs: &[Var<'t, F>]) -> Result<Var<'t, F>> {
        if inputs.iter().any(|v| !std::ptr::eq(v.tape, self)) {
            return Err(Error::ForeignTape { op: "apply" });
        }
        let (value, requires_grad) = {
            let nodes = self.nodes.borrow();
            let values: SmallVec<[&Tensor<F>; 4]> =
                inputs.iter().map(|v| &nodes[v.id].value).collect();
            let value = op.forward(&values)?;
            let requires_grad = inputs.iter().any(|v| nodes[v.id].requires_grad);
            (value, requires_grad)
        };
        Ok(if self.recording.get() {
            self.push(
                value,
                Some(op),
                inputs.iter().map(|v| v.id).collect(),
                requires_grad,
            )
        } else {
            self.push(value, None, Inputs::new(), false)
        })
    }

    fn push(
        &self,
        value: Tensor<F>,
        op: Option<Op>,
        inputs: Inputs,
        requires_grad: bool,
    ) -> Var<'_, F> {
        let mut nodes = self.nodes.borrow_mut();
        nodes.push(Node {
            value,
            op,
            inputs,
            requires_grad,
        });
        Var {
            tape: self,
            id: nodes.len() - 1,
        }
    }

    /// The label of node `id`'s operation (`None` for leaves), for drawings and
    /// messages: [`Op::label`].
    ///
    /// ```
    /// let tape = chainrule::Tape::<f64>::new();
    /// let x = tape.param_scalar(1.0);
    /// let y = x.relu();
    /// assert_eq!(tape.label(y.id()), Some("relu".to_string()));
    /// assert_eq!(tape.label(x.id()), None);
    /// ```
    pub fn label(&self, id: usize) -> Option<String> {
        self.nodes.borrow().get(id)?.op.as_ref().map(Op::label)
    }

    /// The operation that made node `id` (`None` for leaves and unknown ids): what
    /// everything that reads a recorded graph matches on.
    ///
    /// ```
    /// use chainrule::autodiff::{Elementwise, Op};
    /// let tape = chainrule::Tape::<f64>::new();
    /// let x = tape.param_scalar(1.0);
    /// let y = x.sigmoid();
    /// assert_eq!(tape.op(y.id()), Some(Op::Map(Elementwise::Sigmoid)));
    /// assert_eq!(tape.op(x.id()), None);
    /// ```
    pub fn op(&self, id: usize) -> Option<Op> {
        self.nodes.borrow().get(id)?.op.clone()
    }

    /// The value of node `id` (a cheap, shared copy), if it exists.
    ///
    /// ```
    /// let tape = chainrule::Tape::<f64>::new();
    /// let x = tape.param_scalar(2.0);
    /// assert_eq!(tape.value(x.id()).unwrap().item()?, 2.0);
    /// assert!(tape.value(9).is_none());
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn value(&self, id: usize) -> Option<Tensor<F>> {
        self.nodes.borrow().get(id).map(|n| n.value.clone())
    }

    /// The input ids of node `id` (empty for leaves).
    ///
    /// ```
    /// let tape = chainrule::Tape::<f64>::new();
    /// let a = tape.param_scalar(1.0);
    /// let b = tape.param_scalar(2.0);
    /// let c = a * b;
    /// assert_eq!(tape.inputs(c.id()), vec![a.id(), b.id()]);
    /// ```
    pub fn inputs(&self, id: usize) -> Vec<usize> {
        self.nodes
            .borrow()
            .get(id)
            .map(|n| n.inputs.to_vec())
            .unwrap_or_default()
    }

    /// Checks node `id`'s local derivative in isolation: its rule's backward against
    /// central finite differences of its forward, at the node's recorded inputs, with
    /// fixed pseudo-random output weights. Returns the worst error (as
    /// [`crate::gradcheck::gradcheck`] defines it), or `None` for a leaf. This is how a
    /// failing gradient check names the operation at fault.
    ///
    /// # Errors
    /// Only if the rule fails on its own recorded inputs.
    ///
    /// ```
    /// let tape = chainrule::Tape::<f64>::new();
    /// let x = tape.param_scalar(0.3);
    /// let y = x.tanh();
    /// assert!(tape.check_local_derivative(y.id(), 1e-6)?.unwrap() < 1e-8);
    /// assert!(tape.check_local_derivative(x.id(), 1e-6)?.is_none());
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn check_local_derivative(&self, id: usize, step: f64) -> Result<Option<f64>> {
        let nodes = self.nodes.borrow();
        let Some(node) = nodes.get(id) else {
            return Ok(None);
        };
        let Some(op) = node.op.as_ref() else {
            return Ok(None);
        };
        let inputs: Vec<Tensor<F>> = node
            .inputs
            .iter()
            .map(|&i| nodes[i].value.clone())
            .collect();
        // Output weights: a fixed, irregular pattern, so every element's gradient counts.
        let weights = Tensor::from_vec(
            (0..node.value.len())
                .map(|i| F::from_f64(((i * 7919 + 13) % 97) as f64 / 97.0 - 0.45))
                .collect(),
            node.value.shape(),
        )?;
        let refs: Vec<&Tensor<F>> = inputs.iter().collect();
        let analytic = local_backward(op, &refs, &node.value, &weights, &vec![true; inputs.len()])?;
        let weighted = |values: &[Tensor<F>]| -> Result<f64> {
            let refs: Vec<&Tensor<F>> = values.iter().collect();
            let out = op.forward(&refs)?;
            Ok(out
                .to_vec()
                .iter()
                .zip(weights.to_vec())
                .map(|(o, w)| o.as_f64() * w.as_f64())
                .sum())
        };
        let mut worst: f64 = 0.0;
        for (k, grad) in analytic.into_iter().enumerate() {
            let Some(grad) = grad else { continue };
            let grad = grad.sum_to_shape(inputs[k].shape())?.to_vec();
            for (e, g) in grad.iter().enumerate() {
                let mut nudged = inputs.clone();
                let mut at = |delta: f64| -> Result<f64> {
                    let mut values = inputs[k].to_vec();
                    values[e] = F::from_f64(values[e].as_f64() + delta);
                    nudged[k] = Tensor::from_vec(values, inputs[k].shape())?;
                    weighted(&nudged)
                };
                let numeric = (at(step)? - at(-step)?) / (2.0 * step);
                let g = g.as_f64();
                let error = crate::gradcheck::relative_error(g, numeric);
                if error > worst || error.is_nan() {
                    worst = error;
                }
            }
        }
        Ok(Some(worst))
    }

    /// Backward pass from `root`, keeping every node's gradient when `retain_all`
    /// (for graphs and explanations), or only the leaves' otherwise.
    fn backward_from(&self, root: usize, retain_all: bool) -> Result<Gradients<F>> {
        let nodes: Ref<'_, Vec<Node<F>>> = self.nodes.borrow();
        let root_value = &nodes[root].value;
        if root_value.len() != 1 {
            return Err(Error::NonScalarBackward {
                shape: root_value.shape().to_vec(),
            });
        }
        let mut grads: Vec<Option<Tensor<F>>> = vec![None; root + 1];
        grads[root] = Some(Tensor::ones(root_value.shape()));
        for id in (0..=root).rev() {
            let node = &nodes[id];
            let Some(op) = node.op.as_ref().filter(|_| node.requires_grad) else {
                continue;
            };
            let Some(g) = (if retain_all {
                grads[id].clone()
            } else {
                grads[id].take()
            }) else {
                continue;
            };
            let inputs: SmallVec<[&Tensor<F>; 4]> =
                node.inputs.iter().map(|&i| &nodes[i].value).collect();
            let need: SmallVec<[bool; 4]> = node
                .inputs
                .iter()
                .map(|&i| nodes[i].requires_grad)
                .collect();
            let input_grads = local_backward(op, &inputs, &node.value, &g, &need)?;
            // Used up: its storage can serve a later operation (tensor::pool).
            crate::tensor::pool::recycle(g);
            for ((&input, grad), needed) in node.inputs.iter().zip(input_grads).zip(need) {
                let Some(grad) = grad.filter(|_| needed) else {
                    continue;
                };
                let grad = grad.sum_to_shape(nodes[input].value.shape())?;
                grads[input] = Some(match grads[input].take() {
                    Some(sum) => {
                        let total = sum.add(&grad)?;
                        crate::tensor::pool::recycle(sum);
                        crate::tensor::pool::recycle(grad);
                        total
                    }
                    None => grad,
                });
            }
        }
        Ok(Gradients { grads })
    }
}

/// An operation's backward, the one place the tape calls it (and, in
/// fault-injection test builds, corrupts it).
fn local_backward<F: Float>(
    op: &Op,
    inputs: &[&Tensor<F>],
    out: &Tensor<F>,
    g: &Tensor<F>,
    need: &[bool],
) -> Result<InputGrads<F>> {
    let grads = op.backward(inputs, out, g, need)?;
    #[cfg(feature = "fault-injection")]
    let grads = fault::corrupt(op, grads);
    Ok(grads)
}

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
    tape: &'t Tape<F>,
    id: usize,
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

/// Gradients from one backward pass, looked up by the [`Var`] they belong to.
///
/// ```
/// let tape = chainrule::Tape::<f64>::new();
/// let w = tape.param_scalar(1.0);
/// let c = tape.constant_scalar(2.0);
/// let grads = (w * c).backward()?;
/// assert_eq!(grads.wrt(w).unwrap().item()?, 2.0);
/// assert!(grads.wrt(c).is_none()); // constants get no gradient
/// # Ok::<(), chainrule::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Gradients<F: Float = f32> {
    grads: Vec<Option<Tensor<F>>>,
}

impl<F: Float> Gradients<F> {
    /// ∂root/∂var, or `None` when no gradient reached `var` (a constant, or a value
    /// the root does not depend on).
    ///
    /// ```
    /// let tape = chainrule::Tape::<f64>::new();
    /// let (a, b) = (tape.param_scalar(1.0), tape.param_scalar(2.0));
    /// let grads = (a * 3.0).backward()?;
    /// assert!(grads.wrt(b).is_none());
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn wrt(&self, var: Var<'_, F>) -> Option<&Tensor<F>> {
        self.by_id(var.id)
    }

    /// The gradient of node `id`, see [`Gradients::wrt`].
    ///
    /// ```
    /// let tape = chainrule::Tape::<f64>::new();
    /// let a = tape.param_scalar(1.0);
    /// let grads = (a * 3.0).backward()?;
    /// assert_eq!(grads.by_id(a.id()).unwrap().item()?, 3.0);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn by_id(&self, id: usize) -> Option<&Tensor<F>> {
        self.grads.get(id)?.as_ref()
    }

    /// Takes the gradient of `var` out of the store (no copy).
    ///
    /// ```
    /// let tape = chainrule::Tape::<f64>::new();
    /// let a = tape.param_scalar(1.0);
    /// let mut grads = (a * 3.0).backward()?;
    /// assert!(grads.take(a).is_some());
    /// assert!(grads.wrt(a).is_none());
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn take(&mut self, var: Var<'_, F>) -> Option<Tensor<F>> {
        self.grads.get_mut(var.id)?.take()
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
