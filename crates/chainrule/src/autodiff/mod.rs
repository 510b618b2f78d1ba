//! Reverse-mode automatic differentiation on a flat tape.
//!
//! # How it works
//! A [`Tape`] records every operation as a node: its value, its [`Op`], the ids
//! of its inputs and what the operation's forward kept for its backward ([`Saved`]). Nodes are appended after their inputs, so creation order is a
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
pub mod explanation;
pub mod op;

mod gradients;
mod tape;
mod var;

#[cfg(feature = "fault-injection")]
mod fault;

pub use elementwise::{Constant, DerivativeNotation, Elementwise, Formula, Style};
pub use explanation::{LocalSum, Term};
#[cfg(feature = "fault-injection")]
pub use fault::inject_fault;
pub use gradients::Gradients;
pub use op::{Arity, InputGrads, Op, Saved};
pub use tape::Tape;
pub(crate) use tape::local_backward;
pub use var::Var;
