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
//! ## Quick start
//!
//! A model built in Rust code, trained with [`train::fit`] on the two-moons data,
//! evaluated, saved and loaded back:
//!
//! ```
//! use chainrule::autodiff::Elementwise;
//! use chainrule::data::synthetic;
//! use chainrule::loss::Loss;
//! use chainrule::nn::{Layer, Sequential};
//! use chainrule::optim::OptimizerConfig;
//! use chainrule::train::{self, TrainConfig};
//!
//! // 400 points of two interleaved half-moons (2 features, 2 classes), a quarter
//! // held out.
//! let data = synthetic::generate::<f32>("moons", 400, 0.1, 0)?;
//! let (train_set, test_set) = data.split(0.25, 0)?;
//!
//! // 2 → 16 → 2, tanh between; PyTorch's default initialisation from seed 0.
//! let mut model = Sequential::<f32>::new(
//!     vec![
//!         Layer::Linear { inputs: 2, outputs: 16, bias: true },
//!         Layer::Activation(Elementwise::Tanh),
//!         Layer::Linear { inputs: 16, outputs: 2, bias: true },
//!     ],
//!     0,
//! )?;
//!
//! let mut config = TrainConfig::new(Loss::CrossEntropy, OptimizerConfig::named("adam", 0.05)?);
//! config.epochs = 60;
//! config.shuffle = true;
//! let history = train::fit(&mut model, &train_set, Some(&test_set), &config, |_| {})?;
//! assert_eq!(history.epochs.len(), 60);
//!
//! let metrics = train::evaluate(&mut model, &test_set, Loss::CrossEntropy)?;
//! assert!(metrics.accuracy.unwrap() > 0.95, "{metrics:?}");
//!
//! // model.json and params.safetensors (PyTorch's state_dict names).
//! let dir = std::env::temp_dir().join(format!("chainrule-quick-start-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).expect("a folder to save into");
//! model.save_checkpoint(&dir)?;
//! let mut loaded = Sequential::<f32>::load_checkpoint(&dir)?;
//! let (ours, theirs) = (train::predict(&mut model, &test_set.x)?, train::predict(&mut loaded, &test_set.x)?);
//! assert_eq!(ours.to_vec(), theirs.to_vec());
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok::<(), chainrule::Error>(())
//! ```
//!
//! ## The tape
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
