//! A tape of scalar operations for small networks: each node is a few words in a
//! flat vector (no heap allocation per operation, none at all once the tape has
//! grown to a step's size and is [cleared](ScalarTape::clear) for the next), and
//! each operation's forward and local derivative sit side by side in
//! [`ScalarOp::forward`] and [`ScalarOp::local`].
//!
//! The tensor tape pays for shapes, broadcasting and a heap-allocated tensor per
//! value; for the notebooks' networks, where every value is one number, that cost is
//! all there is. Training uses this tape for small dense networks (see
//! [`crate::train::TrainConfig::scalar_path`]) and gets the same results as the
//! tensor tape (a test compares them).
//!
//! ```
//! use chainrule::autodiff::scalar::ScalarTape;
//! let mut tape = ScalarTape::<f64>::new();
//! let w = tape.param(3.0);
//! let x = tape.constant(2.0);
//! let wx = tape.mul(w, x);
//! let y = tape.relu(wx);          // relu(w·x)
//! tape.backward(y);
//! assert_eq!((tape.value(y), tape.grad(w)), (6.0, 2.0));
//! tape.clear();                    // ready for the next step, allocation kept
//! assert!(tape.is_empty());
//! ```

use super::Elementwise;
use crate::Float;

/// A value on a [`ScalarTape`]: its index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScalarVar(u32);

impl ScalarVar {
    /// The node's index on its tape.
    ///
    /// ```
    /// let mut tape = chainrule::autodiff::scalar::ScalarTape::<f32>::new();
    /// assert_eq!(tape.param(1.0).index(), 0);
    /// ```
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// A scalar operation: arithmetic, or a function of the element-wise table (which
/// holds its constants, a slope or an exponent).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ScalarOp {
    /// A parameter or a constant (no inputs).
    Leaf,
    /// a + b.
    ///
    /// ```
    /// let mut tape = chainrule::autodiff::scalar::ScalarTape::<f64>::new();
    /// let (a, b) = (tape.param(1.0), tape.param(2.0));
    /// let y = tape.add(a, b);
    /// assert_eq!(tape.value(y), 3.0);
    /// ```
    Add,
    /// a − b.
    ///
    /// ```
    /// let mut tape = chainrule::autodiff::scalar::ScalarTape::<f64>::new();
    /// let (a, b) = (tape.param(1.0), tape.param(2.0));
    /// let y = tape.sub(a, b);
    /// tape.backward(y);
    /// assert_eq!((tape.value(y), tape.grad(b)), (-1.0, -1.0));
    /// ```
    Sub,
    /// a · b.
    ///
    /// ```
    /// let mut tape = chainrule::autodiff::scalar::ScalarTape::<f64>::new();
    /// let (a, b) = (tape.param(3.0), tape.param(4.0));
    /// let y = tape.mul(a, b);
    /// tape.backward(y);
    /// assert_eq!((tape.grad(a), tape.grad(b)), (4.0, 3.0));
    /// ```
    Mul,
    /// a / b.
    Div,
    /// f(a) for a function of the element-wise table.
    ///
    /// ```
    /// use chainrule::autodiff::{scalar::{ScalarOp, ScalarTape}, Elementwise};
    /// let mut tape = ScalarTape::<f64>::new();
    /// let a = tape.param(0.0);
    /// let y = tape.unary(ScalarOp::Map(Elementwise::Exp), a);
    /// tape.backward(y);
    /// assert_eq!((tape.value(y), tape.grad(a)), (1.0, 1.0));
    /// ```
    Map(Elementwise),
}

impl ScalarOp {
    /// The output from the inputs (`b` is ignored by one-input operations).
    ///
    /// ```
    /// use chainrule::autodiff::{scalar::ScalarOp, Elementwise};
    /// assert_eq!(ScalarOp::Map(Elementwise::Pow { p: 2.0 }).forward(3.0f64, 0.0), 9.0);
    /// ```
    pub fn forward<F: Float>(self, a: F, b: F) -> F {
        match self {
            ScalarOp::Leaf => a,
            ScalarOp::Add => a + b,
            ScalarOp::Sub => a - b,
            ScalarOp::Mul => a * b,
            ScalarOp::Div => a / b,
            ScalarOp::Map(f) => f.value(a),
        }
    }

    /// The local derivatives (∂out/∂a, ∂out/∂b) at inputs `a`, `b` and output `out`.
    ///
    /// ```
    /// use chainrule::autodiff::scalar::ScalarOp;
    /// // d(a/b) = (1/b, −a/b²)
    /// assert_eq!(ScalarOp::Div.local(3.0f64, 2.0, 1.5), (0.5, -0.75));
    /// ```
    pub fn local<F: Float>(self, a: F, b: F, out: F) -> (F, F) {
        let (zero, one) = (F::zero(), F::one());
        match self {
            ScalarOp::Leaf => (zero, zero),
            ScalarOp::Add => (one, one),
            ScalarOp::Sub => (one, -one),
            ScalarOp::Mul => (b, a),
            ScalarOp::Div => (one / b, -out / b),
            ScalarOp::Map(f) => (f.derivative(a, out), zero),
        }
    }

    fn binary(self) -> bool {
        matches!(
            self,
            ScalarOp::Add | ScalarOp::Sub | ScalarOp::Mul | ScalarOp::Div
        )
    }
}

#[derive(Debug, Clone, Copy)]
struct Node {
    op: ScalarOp,
    a: u32,
    b: u32,
    /// Whether a parameter is upstream (what backward visits).
    requires_grad: bool,
}

/// A flat tape of scalar operations: values and gradients in parallel vectors.
#[derive(Debug, Clone, Default)]
pub struct ScalarTape<F: Float> {
    nodes: Vec<Node>,
    values: Vec<F>,
    grads: Vec<F>,
}

impl<F: Float> ScalarTape<F> {
    /// An empty tape.
    ///
    /// ```
    /// assert!(chainrule::autodiff::scalar::ScalarTape::<f32>::new().is_empty());
    /// ```
    pub fn new() -> Self {
        ScalarTape {
            nodes: Vec::new(),
            values: Vec::new(),
            grads: Vec::new(),
        }
    }

    /// Forgets every node, keeping the memory for the next pass.
    ///
    /// ```
    /// let mut tape = chainrule::autodiff::scalar::ScalarTape::<f64>::new();
    /// tape.param(1.0);
    /// tape.clear();
    /// assert_eq!(tape.len(), 0);
    /// ```
    pub fn clear(&mut self) {
        self.nodes.clear();
        self.values.clear();
        self.grads.clear();
    }

    /// The number of nodes.
    ///
    /// ```
    /// let mut tape = chainrule::autodiff::scalar::ScalarTape::<f64>::new();
    /// let a = tape.param(1.0);
    /// tape.exp(a);
    /// assert_eq!(tape.len(), 2);
    /// ```
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the tape is empty.
    ///
    /// ```
    /// let mut tape = chainrule::autodiff::scalar::ScalarTape::<f64>::new();
    /// assert!(tape.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    fn push(&mut self, op: ScalarOp, a: ScalarVar, b: ScalarVar, requires_grad: bool) -> ScalarVar {
        let (va, vb) = (self.values[a.index()], self.values[b.index()]);
        self.push_value(op.forward(va, vb), op, a, b, requires_grad)
    }

    fn push_value(
        &mut self,
        value: F,
        op: ScalarOp,
        a: ScalarVar,
        b: ScalarVar,
        requires_grad: bool,
    ) -> ScalarVar {
        let id = ScalarVar(self.nodes.len() as u32);
        self.nodes.push(Node {
            op,
            a: a.0,
            b: b.0,
            requires_grad,
        });
        self.values.push(value);
        id
    }

    /// A leaf that receives a gradient.
    ///
    /// ```
    /// let mut tape = chainrule::autodiff::scalar::ScalarTape::<f64>::new();
    /// let w = tape.param(3.0);
    /// let y = tape.scale(w, 2.0);
    /// tape.backward(y);
    /// assert_eq!(tape.grad(w), 2.0);
    /// ```
    pub fn param(&mut self, value: F) -> ScalarVar {
        let me = ScalarVar(self.nodes.len() as u32);
        self.push_value(value, ScalarOp::Leaf, me, me, true)
    }

    /// A leaf that does not.
    ///
    /// ```
    /// let mut tape = chainrule::autodiff::scalar::ScalarTape::<f64>::new();
    /// let c = tape.constant(3.0);
    /// let y = tape.scale(c, 2.0);
    /// tape.backward(y);
    /// assert_eq!(tape.grad(c), 0.0);
    /// ```
    pub fn constant(&mut self, value: F) -> ScalarVar {
        let me = ScalarVar(self.nodes.len() as u32);
        self.push_value(value, ScalarOp::Leaf, me, me, false)
    }

    /// Records a one-input operation on `a`.
    ///
    /// ```
    /// use chainrule::autodiff::scalar::{ScalarOp, ScalarTape};
    /// let mut tape = ScalarTape::<f64>::new();
    /// let a = tape.param(-2.0);
    /// let y = tape.unary(ScalarOp::Map(chainrule::autodiff::Elementwise::LeakyRelu { slope: 0.1 }), a);
    /// assert_eq!(tape.value(y), -0.2);
    /// ```
    pub fn unary(&mut self, op: ScalarOp, a: ScalarVar) -> ScalarVar {
        debug_assert!(!op.binary() && op != ScalarOp::Leaf);
        let rg = self.nodes[a.index()].requires_grad;
        self.push(op, a, a, rg)
    }

    /// Records a two-input operation.
    ///
    /// ```
    /// use chainrule::autodiff::scalar::{ScalarOp, ScalarTape};
    /// let mut tape = ScalarTape::<f64>::new();
    /// let (a, b) = (tape.param(6.0), tape.constant(4.0));
    /// let y = tape.binary(ScalarOp::Div, a, b);
    /// assert_eq!(tape.value(y), 1.5);
    /// ```
    pub fn binary(&mut self, op: ScalarOp, a: ScalarVar, b: ScalarVar) -> ScalarVar {
        debug_assert!(op.binary());
        let rg = self.nodes[a.index()].requires_grad || self.nodes[b.index()].requires_grad;
        self.push(op, a, b, rg)
    }

    /// a + b.
    pub fn add(&mut self, a: ScalarVar, b: ScalarVar) -> ScalarVar {
        self.binary(ScalarOp::Add, a, b)
    }

    /// a − b.
    pub fn sub(&mut self, a: ScalarVar, b: ScalarVar) -> ScalarVar {
        self.binary(ScalarOp::Sub, a, b)
    }

    /// a · b.
    pub fn mul(&mut self, a: ScalarVar, b: ScalarVar) -> ScalarVar {
        self.binary(ScalarOp::Mul, a, b)
    }

    /// eᵃ.
    pub fn exp(&mut self, a: ScalarVar) -> ScalarVar {
        self.unary(ScalarOp::Map(Elementwise::Exp), a)
    }

    /// ln a.
    pub fn log(&mut self, a: ScalarVar) -> ScalarVar {
        self.unary(ScalarOp::Map(Elementwise::Log), a)
    }

    /// max(a, 0).
    ///
    /// ```
    /// let mut tape = chainrule::autodiff::scalar::ScalarTape::<f64>::new();
    /// let a = tape.param(0.0);
    /// let y = tape.relu(a);
    /// tape.backward(y);
    /// assert_eq!(tape.grad(a), 0.0); // relu′(0) = 0, as PyTorch
    /// ```
    pub fn relu(&mut self, a: ScalarVar) -> ScalarVar {
        self.unary(ScalarOp::Map(Elementwise::Relu), a)
    }

    /// c · a.
    ///
    /// ```
    /// let mut tape = chainrule::autodiff::scalar::ScalarTape::<f64>::new();
    /// let a = tape.param(2.0);
    /// let y = tape.scale(a, -1.5);
    /// assert_eq!(tape.value(y), -3.0);
    /// ```
    pub fn scale(&mut self, a: ScalarVar, c: f64) -> ScalarVar {
        self.unary(ScalarOp::Map(Elementwise::Scale { c }), a)
    }

    /// Σ of `terms` (left to right), or a zero constant for none.
    ///
    /// ```
    /// let mut tape = chainrule::autodiff::scalar::ScalarTape::<f64>::new();
    /// let t = [tape.param(1.0), tape.param(2.0), tape.param(3.0)];
    /// let s = tape.sum(&t);
    /// assert_eq!(tape.value(s), 6.0);
    /// ```
    pub fn sum(&mut self, terms: &[ScalarVar]) -> ScalarVar {
        match terms.split_first() {
            None => self.constant(F::zero()),
            Some((&first, rest)) => rest.iter().fold(first, |acc, &t| self.add(acc, t)),
        }
    }

    /// The value of `v`.
    ///
    /// ```
    /// let mut tape = chainrule::autodiff::scalar::ScalarTape::<f64>::new();
    /// let a = tape.param(2.5);
    /// assert_eq!(tape.value(a), 2.5);
    /// ```
    pub fn value(&self, v: ScalarVar) -> F {
        self.values[v.index()]
    }

    /// ∂root/∂v after [`ScalarTape::backward`] (0 before, for constants and for
    /// values that do not reach the root).
    ///
    /// ```
    /// let mut tape = chainrule::autodiff::scalar::ScalarTape::<f64>::new();
    /// let (a, b) = (tape.param(2.0), tape.param(5.0));
    /// let y = tape.mul(a, a); // b does not reach y
    /// tape.backward(y);
    /// assert_eq!((tape.grad(a), tape.grad(b)), (4.0, 0.0));
    /// ```
    pub fn grad(&self, v: ScalarVar) -> F {
        self.grads.get(v.index()).copied().unwrap_or_else(F::zero)
    }

    /// Backpropagates from `root`: walks the tape once, from the end, multiplying each
    /// node's gradient by its operation's local derivatives.
    ///
    /// ```
    /// let mut tape = chainrule::autodiff::scalar::ScalarTape::<f64>::new();
    /// let x = tape.param(3.0);
    /// let x2 = tape.mul(x, x);
    /// let y = tape.add(x2, x); // x² + x
    /// tape.backward(y);
    /// assert_eq!(tape.grad(x), 7.0);
    /// ```
    pub fn backward(&mut self, root: ScalarVar) {
        let n = root.index() + 1;
        self.grads.clear();
        self.grads.resize(n, F::zero());
        self.grads[root.index()] = F::one();
        for id in (0..n).rev() {
            let node = self.nodes[id];
            let g = self.grads[id];
            if node.op == ScalarOp::Leaf || !node.requires_grad {
                continue;
            }
            let (a, b) = (node.a as usize, node.b as usize);
            let (da, db) = node
                .op
                .local(self.values[a], self.values[b], self.values[id]);
            if self.nodes[a].requires_grad {
                self.grads[a] += g * da;
            }
            if node.op.binary() && self.nodes[b].requires_grad {
                self.grads[b] += g * db;
            }
        }
    }
}
