//! The interchange contract's configuration: plain structs with PyTorch's names and
//! defaults, and their strict readers. Every field is typed, and an unknown field is
//! an error that names it (a typo must never be silently ignored).
//!
//! - `json.rs`: reading the fields of a JSON object ([`json::Fields`]).
//! - `train.rs`: `train.json` ([`TrainConfig`], with [`EarlyStopping`]).
//! - `optimizer.rs`: its `optimizer` object ([`OptimizerConfig`]).
//! - `schedule.rs`: a learning-rate schedule ([`Schedule`]).
//!
//! The types are used through [`crate::train`] and [`crate::optim`], which re-export
//! them; what they do (an optimizer's step, a schedule's rate) lives there.

pub(crate) mod json;
mod optimizer;
mod schedule;
mod train;

pub use optimizer::OptimizerConfig;
pub use schedule::Schedule;
pub use train::{EarlyStopping, TrainConfig};
