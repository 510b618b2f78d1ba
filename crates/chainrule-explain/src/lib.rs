//! # chainrule-explain
//!
//! Explanations of what backpropagation computed, read from the same tape that
//! training uses: chain-rule derivations with the numbers in them ([`derive`](mod@derive) for
//! layer stacks, [`formula`] for networks written as named scalar formulas), closed
//! forms ([`symbolic`]), drawings ([`graph`]), gradient checks ([`check`]),
//! gradient-flow audits ([`audit`]), a run's optimizer's step written out ([`step`]), and the notation they are written in
//! ([`notation`]).
#![warn(missing_docs)]

pub mod audit;
pub mod check;
pub mod derive;
pub mod formula;
pub mod graph;
pub mod notation;
pub mod spatial;
pub mod step;
pub mod symbolic;
