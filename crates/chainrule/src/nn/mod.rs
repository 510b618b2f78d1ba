//! Networks: named parameters, layers and the [`Sequential`] model of the
//! interchange contract's model JSON.
//!
//! A model owns its parameters as plain tensors ([`Param`]). A forward pass binds
//! them to a tape ([`Module::bind`]) and computes with [`Var`]s, so training, the
//! optimizers and the explain layer all work with any model that implements
//! [`Module`], including hand-written ones like notebook 003's shared-bias network.

mod init;
mod layer;
mod sequential;

pub use init::Init;
pub use layer::Layer;
pub use sequential::{Architecture, MAX_PARAMETERS, Sequential};

use crate::{Float, Result, Tape, Tensor, Var};

/// A named parameter tensor, named as PyTorch's `state_dict()` names it.
///
/// ```
/// use chainrule::{nn::Param, Tensor};
/// let p = Param::new("0.weight", Tensor::<f32>::zeros(&[2, 3]));
/// assert_eq!(p.name, "0.weight");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Param<F: Float = f32> {
    /// The `state_dict()` name, e.g. `"0.weight"`.
    pub name: String,
    /// The current value.
    pub value: Tensor<F>,
}

impl<F: Float> Param<F> {
    /// A parameter from a name and a value.
    ///
    /// ```
    /// use chainrule::{nn::Param, Tensor};
    /// let p = Param::new("w", Tensor::<f64>::scalar(1.0));
    /// assert_eq!(p.value.item()?, 1.0);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn new(name: impl Into<String>, value: Tensor<F>) -> Self {
        Param {
            name: name.into(),
            value,
        }
    }
}

/// Whether a model computes as in training or in evaluation (PyTorch's
/// `module.train()` / `module.eval()`): batch norm normalises with the batch's
/// statistics and updates its running ones in training, and uses the running ones in
/// evaluation; dropout drops in training and is the identity in evaluation.
///
/// ```
/// use chainrule::nn::{Mode, Module, Sequential};
/// let mut m = Sequential::<f32>::from_json(r#"{"layers": [{"type": "dropout"}]}"#, 0)?;
/// assert_eq!(m.mode(), Mode::Train); // as a fresh PyTorch module
/// m.set_mode(Mode::Eval);
/// assert_eq!(m.mode(), Mode::Eval);
/// # Ok::<(), chainrule::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Training: batch statistics, dropout.
    Train,
    /// Evaluation: running statistics, no dropout.
    Eval,
}

/// A differentiable model with named parameters.
///
/// ```
/// use chainrule::nn::{Module, Param};
/// use chainrule::{Result, Tape, Tensor, Var};
///
/// /// y = a·x (one learnable scale)
/// struct Scale { params: Vec<Param<f64>> }
/// impl Module<f64> for Scale {
///     fn params(&self) -> &[Param<f64>] { &self.params }
///     fn params_mut(&mut self) -> &mut [Param<f64>] { &mut self.params }
///     fn forward<'t>(&self, p: &[Var<'t, f64>], x: Var<'t, f64>) -> Result<Var<'t, f64>> {
///         x.mul(p[0])
///     }
/// }
///
/// let model = Scale { params: vec![Param::new("a", Tensor::scalar(3.0))] };
/// let tape = Tape::new();
/// let p = model.bind(&tape);
/// let y = model.forward(&p, tape.constant_scalar(2.0))?;
/// assert_eq!(y.item()?, 6.0);
/// # Ok::<(), chainrule::Error>(())
/// ```
pub trait Module<F: Float>: 'static {
    /// The parameters, in a fixed order.
    fn params(&self) -> &[Param<F>];

    /// The parameters, mutable (for optimizers and loading).
    fn params_mut(&mut self) -> &mut [Param<F>];

    /// The output for input `x`, where `params[i]` is the tape's copy of
    /// `self.params()[i]` (see [`Module::bind`]).
    ///
    /// # Errors
    /// When `x`'s shape does not fit the model.
    fn forward<'t>(&self, params: &[Var<'t, F>], x: Var<'t, F>) -> Result<Var<'t, F>>;

    /// The buffers: state that is not trained but saved with the parameters (batch
    /// norm's running statistics), in a fixed order. None by default.
    fn buffers(&self) -> &[Param<F>] {
        &[]
    }

    /// The buffers, mutable (for loading).
    fn buffers_mut(&mut self) -> &mut [Param<F>] {
        &mut []
    }

    /// The current [`Mode`]; a model without mode-dependent layers is always in
    /// training mode.
    fn mode(&self) -> Mode {
        Mode::Train
    }

    /// Switches between training and evaluation; [`crate::train::fit`] sets
    /// training, [`crate::train::evaluate`] and [`crate::train::predict`] evaluation.
    fn set_mode(&mut self, _mode: Mode) {}

    /// Chooses the random draws of the next forward passes in training mode (the
    /// dropout masks): the same key gives the same masks, on any number of threads.
    /// Training sets one key per step, derived from the run's seed and the step.
    fn set_noise_key(&mut self, _key: u64) {}

    /// Folds the statistics that the last training-mode forward pass measured into
    /// the buffers (batch norm's running mean and variance, and its batch count):
    /// training calls it after each step it takes.
    fn update_buffers(&mut self) {}

    /// Puts every parameter on `tape` as a leaf that requires a gradient.
    ///
    /// ```
    /// use chainrule::nn::{Module, Sequential};
    /// let model = Sequential::<f32>::from_json(r#"{"layers": [{"type": "linear", "in": 2, "out": 1}]}"#, 0)?;
    /// let tape = chainrule::Tape::new();
    /// assert_eq!(model.bind(&tape).len(), 2);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    fn bind<'t>(&self, tape: &'t Tape<F>) -> Vec<Var<'t, F>> {
        self.params()
            .iter()
            .map(|p| tape.param(p.value.clone()))
            .collect()
    }
}
