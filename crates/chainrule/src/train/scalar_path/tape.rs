//! A tape of scalar operations for small networks: each node is a few words in a
//! flat vector (no heap allocation per operation, none at all once the tape has
//! grown to a step's size and is [cleared](ScalarTape::clear) for the next), and
//! each operation's forward and local derivative sit side by side in
//! [`ScalarOp::forward`] and [`ScalarOp::local`].
//!
//! The tensor tape pays for shapes, broadcasting and a heap-allocated tensor per
//! value; for the notebooks' networks, where every value is one number, that cost is
//! all there is. Training uses this tape for small dense networks and gets the same
//! results as the tensor tape (the tests compare them).

use crate::Float;
use crate::autodiff::Elementwise;

/// A value on a [`ScalarTape`]: its index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ScalarVar(u32);

impl ScalarVar {
    /// The node's index on its tape.
    pub(crate) fn index(self) -> usize {
        self.0 as usize
    }
}

/// A scalar operation: arithmetic, or a function of the element-wise table (which
/// holds its constants, a slope or an exponent).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum ScalarOp {
    /// a + b.
    Add,
    /// a − b.
    Sub,
    /// a · b.
    Mul,
    /// f(a) for a function of the element-wise table.
    Map(Elementwise),
}

impl ScalarOp {
    /// The output from the inputs (`b` is ignored by one-input operations).
    pub(crate) fn forward<F: Float>(self, a: F, b: F) -> F {
        match self {
            ScalarOp::Add => a + b,
            ScalarOp::Sub => a - b,
            ScalarOp::Mul => a * b,
            ScalarOp::Map(f) => f.value(a),
        }
    }

    /// The local derivatives (∂out/∂a, ∂out/∂b) at inputs `a`, `b` and output `out`.
    pub(crate) fn local<F: Float>(self, a: F, b: F, out: F) -> (F, F) {
        let (zero, one) = (F::zero(), F::one());
        match self {
            ScalarOp::Add => (one, one),
            ScalarOp::Sub => (one, -one),
            ScalarOp::Mul => (b, a),
            ScalarOp::Map(f) => (f.derivative(a, out), zero),
        }
    }

    fn binary(self) -> bool {
        matches!(self, ScalarOp::Add | ScalarOp::Sub | ScalarOp::Mul)
    }
}

/// A recorded operation: where its inputs are and what it passes back to each.
///
/// The local derivatives are taken when the node is recorded, from the one
/// definition in [`ScalarOp::local`], so that the backward pass is a plain loop of
/// multiply-adds with no match on the operation (on W3, the 2-2-1 network's step,
/// that match was a tenth of the step's time).
#[derive(Debug, Clone, Copy)]
struct Node<F> {
    a: u32,
    b: u32,
    /// ∂out/∂a and ∂out/∂b (0 for an input that receives nothing).
    da: F,
    db: F,
    /// Whether a parameter is upstream (what backward visits).
    requires_grad: bool,
    /// Whether `a` and `b` receive a gradient: inputs that require one, and `b` only
    /// for two-input operations.
    to_a: bool,
    to_b: bool,
}

/// A flat tape of scalar operations: values and gradients in parallel vectors.
#[derive(Debug, Clone, Default)]
pub(crate) struct ScalarTape<F: Float> {
    nodes: Vec<Node<F>>,
    values: Vec<F>,
    grads: Vec<F>,
}

impl<F: Float> ScalarTape<F> {
    /// An empty tape.
    pub(crate) fn new() -> Self {
        ScalarTape {
            nodes: Vec::new(),
            values: Vec::new(),
            grads: Vec::new(),
        }
    }

    /// Forgets every node, keeping the memory for the next pass.
    pub(crate) fn clear(&mut self) {
        self.nodes.clear();
        self.values.clear();
        self.grads.clear();
    }

    /// Records `op` on `a` (and `b` for two-input operations): its value, and the
    /// local derivatives toward the inputs that lead to a parameter.
    fn push(&mut self, op: ScalarOp, a: ScalarVar, b: ScalarVar) -> ScalarVar {
        let (va, vb) = (self.values[a.index()], self.values[b.index()]);
        let out = op.forward(va, vb);
        let to_a = self.nodes[a.index()].requires_grad;
        let to_b = op.binary() && self.nodes[b.index()].requires_grad;
        let requires_grad = to_a || to_b;
        let (da, db) = match requires_grad {
            true => op.local(va, vb, out),
            false => (F::zero(), F::zero()),
        };
        let id = ScalarVar(self.nodes.len() as u32);
        self.nodes.push(Node {
            a: a.0,
            b: b.0,
            da,
            db,
            requires_grad,
            to_a,
            to_b,
        });
        self.values.push(out);
        id
    }

    /// A leaf: no inputs, nothing passed back.
    fn push_leaf(&mut self, value: F, requires_grad: bool) -> ScalarVar {
        let id = ScalarVar(self.nodes.len() as u32);
        self.nodes.push(Node {
            a: id.0,
            b: id.0,
            da: F::zero(),
            db: F::zero(),
            requires_grad,
            to_a: false,
            to_b: false,
        });
        self.values.push(value);
        id
    }

    /// A leaf that receives a gradient.
    pub(crate) fn param(&mut self, value: F) -> ScalarVar {
        self.push_leaf(value, true)
    }

    /// A leaf that does not.
    pub(crate) fn constant(&mut self, value: F) -> ScalarVar {
        self.push_leaf(value, false)
    }

    /// Records a one-input operation on `a`.
    pub(crate) fn unary(&mut self, op: ScalarOp, a: ScalarVar) -> ScalarVar {
        debug_assert!(!op.binary());
        self.push(op, a, a)
    }

    /// Records a two-input operation.
    pub(crate) fn binary(&mut self, op: ScalarOp, a: ScalarVar, b: ScalarVar) -> ScalarVar {
        debug_assert!(op.binary());
        self.push(op, a, b)
    }

    /// a + b.
    pub(crate) fn add(&mut self, a: ScalarVar, b: ScalarVar) -> ScalarVar {
        self.binary(ScalarOp::Add, a, b)
    }

    /// a − b.
    pub(crate) fn sub(&mut self, a: ScalarVar, b: ScalarVar) -> ScalarVar {
        self.binary(ScalarOp::Sub, a, b)
    }

    /// a · b.
    pub(crate) fn mul(&mut self, a: ScalarVar, b: ScalarVar) -> ScalarVar {
        self.binary(ScalarOp::Mul, a, b)
    }

    /// eᵃ.
    pub(crate) fn exp(&mut self, a: ScalarVar) -> ScalarVar {
        self.unary(ScalarOp::Map(Elementwise::Exp), a)
    }

    /// ln a.
    pub(crate) fn log(&mut self, a: ScalarVar) -> ScalarVar {
        self.unary(ScalarOp::Map(Elementwise::Log), a)
    }

    /// c · a.
    pub(crate) fn scale(&mut self, a: ScalarVar, c: f64) -> ScalarVar {
        self.unary(ScalarOp::Map(Elementwise::Scale { c }), a)
    }

    /// The value of `v`.
    pub(crate) fn value(&self, v: ScalarVar) -> F {
        self.values[v.index()]
    }

    /// ∂root/∂v after [`ScalarTape::backward`] (0 before, for constants and for
    /// values that do not reach the root).
    pub(crate) fn grad(&self, v: ScalarVar) -> F {
        self.grads.get(v.index()).copied().unwrap_or_else(F::zero)
    }

    /// Backpropagates from `root`: walks the tape once, from the end, multiplying each
    /// node's gradient by its operation's local derivatives.
    pub(crate) fn backward(&mut self, root: ScalarVar) {
        let n = root.index() + 1;
        self.grads.clear();
        self.grads.resize(n, F::zero());
        self.grads[root.index()] = F::one();
        for id in (0..n).rev() {
            let node = self.nodes[id];
            let g = self.grads[id];
            if node.to_a {
                self.grads[node.a as usize] += g * node.da;
            }
            if node.to_b {
                self.grads[node.b as usize] += g * node.db;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Tape;

    const UNARY: [Elementwise; 9] = [
        Elementwise::Scale { c: -2.5 },
        Elementwise::Pow { p: 3.0 },
        Elementwise::Exp,
        Elementwise::Log,
        Elementwise::Abs,
        Elementwise::Relu,
        Elementwise::LeakyRelu { slope: 0.1 },
        Elementwise::Sigmoid,
        Elementwise::Tanh,
    ];
    const BINARY: [ScalarOp; 3] = [ScalarOp::Add, ScalarOp::Sub, ScalarOp::Mul];

    #[test]
    fn every_scalar_operation_matches_finite_differences_and_the_tensor_tape() {
        let points: [(f64, f64); 4] = [(0.7, 1.3), (1.9, -0.4), (0.25, 2.0), (-1.2, 0.6)];
        let h: f64 = 1e-6;
        for op in UNARY.map(ScalarOp::Map).into_iter().chain(BINARY) {
            for (a, b) in points {
                if op == ScalarOp::Map(Elementwise::Log) && a <= 0.0 {
                    continue;
                }
                let out = op.forward(a, b);
                let (da, db) = op.local(a, b, out);
                let numeric_a = (op.forward(a + h, b) - op.forward(a - h, b)) / (2.0 * h);
                assert!(
                    (da - numeric_a).abs() < 1e-6 * numeric_a.abs().max(1.0),
                    "{op:?} ∂a at {a}: {da} vs {numeric_a}"
                );
                if BINARY.contains(&op) {
                    let numeric_b = (op.forward(a, b + h) - op.forward(a, b - h)) / (2.0 * h);
                    assert!(
                        (db - numeric_b).abs() < 1e-6 * numeric_b.abs().max(1.0),
                        "{op:?} ∂b: {db} vs {numeric_b}"
                    );
                }
                // The tensor tape computes the same value and the same gradients.
                let tape = Tape::<f64>::new();
                let (ta, tb) = (tape.param_scalar(a), tape.param_scalar(b));
                let y = match op {
                    ScalarOp::Add => ta + tb,
                    ScalarOp::Sub => ta - tb,
                    ScalarOp::Mul => ta * tb,
                    ScalarOp::Map(f) => ta.map(f),
                };
                let grads = y.backward().unwrap();
                let grad = |v| grads.wrt(v).map_or(0.0, |g| g.item().unwrap());
                assert_eq!(y.item().unwrap(), out, "{op:?} forward at {a}");
                assert!((grad(ta) - da).abs() <= 1e-15 * da.abs().max(1.0), "{op:?}");
                if BINARY.contains(&op) {
                    assert!((grad(tb) - db).abs() <= 1e-15 * db.abs().max(1.0), "{op:?}");
                }
            }
        }
    }

    #[test]
    fn the_scalar_tape_sums_the_paths_of_a_reused_value() {
        // y = x·x + eˣ: dy/dx = 2x + eˣ (x feeds three uses).
        let mut tape = ScalarTape::<f64>::new();
        let x = tape.param(0.5);
        let xx = tape.mul(x, x);
        let e = tape.exp(x);
        let y = tape.add(xx, e);
        tape.backward(y);
        assert!((tape.grad(x) - (2.0 * 0.5 + 0.5f64.exp())).abs() < 1e-15);
        // A constant gets no gradient; clearing keeps nothing.
        let c = tape.constant(3.0);
        let z = tape.mul(c, x);
        tape.backward(z);
        assert_eq!((tape.grad(c), tape.grad(x)), (0.0, 3.0));
        tape.clear();
        assert!(tape.nodes.is_empty());
    }

    #[test]
    fn relu_at_zero_has_derivative_zero() {
        let mut tape = ScalarTape::<f64>::new();
        let a = tape.param(0.0);
        let y = tape.unary(ScalarOp::Map(Elementwise::Relu), a);
        tape.backward(y);
        assert_eq!(tape.grad(a), 0.0); // relu′(0) = 0, as PyTorch
    }
}
