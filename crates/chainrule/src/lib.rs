//! # chainrule
//!
//! Neural networks whose backpropagation you can see.
//!
//! - [`Tensor`]: n-dimensional `f32`/`f64` arrays with NumPy broadcasting.
//! - [`autodiff`]: a tape that records operations and runs the chain rule backwards;
//!   every operation is one [`autodiff::Op`] with its forward and local derivative
//!   side by side, and every element-wise function (relu, tanh, exp, …) is written
//!   once in the [`autodiff::Elementwise`] table.
//! - [`gradcheck`]: central finite differences against backprop.
//! - [`nn`], [`loss`], [`optim`], [`train`]: models, losses and optimizers with
//!   PyTorch's semantics, and the training loop.
//! - [`io`]: NumPy `.npy` and safetensors files, written atomically.
//!
//! ```
//! use chainrule::autodiff::Tape;
//! // micrograd style: scalars on a tape
//! let tape = Tape::<f64>::new();
//! let w = tape.param_scalar(2.0);
//! let x = tape.constant_scalar(3.0);
//! let loss = (w * x - 1.0).powf(2.0);        // (wx - 1)²
//! let grads = loss.backward()?;
//! assert_eq!(grads.wrt(w).unwrap().item()?, 2.0 * 5.0 * 3.0); // 2(wx-1)·x
//! # Ok::<(), chainrule::Error>(())
//! ```
#![warn(missing_docs)]

pub mod autodiff;
mod config;
pub mod data;
mod error;
mod float;
pub mod gradcheck;
pub mod io;
pub mod loss;
pub mod nn;
pub mod optim;
mod parallel;
pub mod tensor;
pub mod train;

pub use autodiff::{Gradients, Tape, Var};
pub use error::{Error, Result, nearest_name};
pub use float::Float;
pub use tensor::Tensor;
