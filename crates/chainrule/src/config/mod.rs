//! The interchange contract's readers: its configuration, as plain structs with
//! PyTorch's names and defaults read strictly (every field typed, and an unknown
//! field an error that names it: a typo must never be silently ignored), and its
//! targets file, read for the loss that will use it.
//!
//! - `json.rs`: reading the fields of a JSON object ([`json::Fields`]).
//! - `train.rs`: `train.json` ([`TrainConfig`], with [`EarlyStopping`]).
//! - `optimizer.rs`: its `optimizer` object ([`OptimizerConfig`]).
//! - `schedule.rs`: a learning-rate schedule ([`Schedule`]).
//! - `targets.rs`: `y.npy` read as the targets of a loss
//!   ([`Target::from_npy`](crate::data::Target::from_npy)).
//!
//! The types are used through [`crate::train`] and [`crate::optim`], which re-export
//! them; what they do (an optimizer's step, a schedule's rate) lives there.

pub(crate) mod json;
mod optimizer;
mod schedule;
mod targets;
mod train;

pub use optimizer::OptimizerConfig;
pub use schedule::Schedule;
pub use train::{EarlyStopping, MAX_EPOCHS, TrainConfig};
