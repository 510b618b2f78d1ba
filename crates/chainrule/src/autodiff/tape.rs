//! The tape: nodes in creation order (a topological order), recording and the
//! backward pass.

use super::{Gradients, InputGrads, Op, Saved, Var};
use crate::{Error, Float, Result, Tensor};
use smallvec::SmallVec;
use std::cell::{Cell, Ref, RefCell};
use std::fmt;

/// A recorded value: a leaf (parameter or constant) or the output of an operation.
pub(super) struct Node<F: Float> {
    pub(super) value: Tensor<F>,
    pub(super) op: Option<Op>,
    /// Input ids, inline up to four (no heap allocation per node).
    pub(super) inputs: Inputs,
    pub(super) requires_grad: bool,
    /// What the operation's forward kept for its backward ([`Op::forward_saving`]).
    pub(super) saved: Saved<F>,
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
    pub(super) nodes: RefCell<Vec<Node<F>>>,
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
            node.saved.recycle();
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
        self.push(value, None, Inputs::new(), true, Saved::Nothing)
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
        self.push(value, None, Inputs::new(), false, Saved::Nothing)
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

    /// Records `op` applied to `inputs` and returns its output. The node keeps what
    /// the operation's forward saved ([`Op::forward_saving`]), also under
    /// [`Tape::no_grad`]: batch norm's running statistics are updated from its batch's
    /// statistics in either case, as PyTorch's are.
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
        let (value, saved, requires_grad) = {
            let nodes = self.nodes.borrow();
            let values: SmallVec<[&Tensor<F>; 4]> =
                inputs.iter().map(|v| &nodes[v.id].value).collect();
            let (value, saved) = op.forward_saving(&values)?;
            let requires_grad = inputs.iter().any(|v| nodes[v.id].requires_grad);
            (value, saved, requires_grad)
        };
        Ok(if self.recording.get() {
            self.push(
                value,
                Some(op),
                inputs.iter().map(|v| v.id).collect(),
                requires_grad,
                saved,
            )
        } else {
            self.push(value, None, Inputs::new(), false, saved)
        })
    }

    pub(super) fn push(
        &self,
        value: Tensor<F>,
        op: Option<Op>,
        inputs: Inputs,
        requires_grad: bool,
        saved: Saved<F>,
    ) -> Var<'_, F> {
        let mut nodes = self.nodes.borrow_mut();
        nodes.push(Node {
            value,
            op,
            inputs,
            requires_grad,
            saved,
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

    /// What node `id`'s operation saved in its forward ([`Saved::Nothing`] for leaves
    /// and operations that save nothing; `None` for unknown ids): a cheap, shared
    /// copy.
    ///
    /// ```
    /// use chainrule::autodiff::{Op, Saved};
    /// use chainrule::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let x = tape.param(Tensor::from_vec(vec![1.0, 3.0], &[2, 1])?);
    /// let y = tape.apply(Op::BatchNorm { eps: 1e-5 }, &[x])?;
    /// let Some(Saved::Moments { mean, var }) = tape.saved(y.id()) else { unreachable!() };
    /// assert_eq!((mean, var), (vec![2.0], vec![1.0]));
    /// assert!(matches!(tape.saved(x.id()), Some(Saved::Nothing)));
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn saved(&self, id: usize) -> Option<Saved<F>> {
        self.nodes.borrow().get(id).map(|n| n.saved.clone())
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

    /// Backward pass from `root`, keeping every node's gradient when `retain_all`
    /// (for graphs and explanations), or only the leaves' otherwise.
    pub(super) fn backward_from(&self, root: usize, retain_all: bool) -> Result<Gradients<F>> {
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
            let input_grads = local_backward(op, &inputs, &node.value, &node.saved, &g, &need)?;
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
pub(crate) fn local_backward<F: Float>(
    op: &Op,
    inputs: &[&Tensor<F>],
    out: &Tensor<F>,
    saved: &Saved<F>,
    g: &Tensor<F>,
    need: &[bool],
) -> Result<InputGrads<F>> {
    let grads = op.backward(inputs, out, saved, g, need)?;
    #[cfg(feature = "fault-injection")]
    let grads = super::fault::corrupt(op, grads);
    Ok(grads)
}
