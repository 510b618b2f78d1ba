//! Networks: named parameters, layers and the [`Sequential`] model of the
//! interchange contract's model JSON.
//!
//! A model owns its parameters as plain tensors ([`Param`]). A forward pass binds
//! them to a tape ([`Module::bind`]) and computes with [`Var`]s, so training, the
//! optimizers and the explain layer all work with any model that implements
//! [`Module`], including hand-written ones like notebook 003's shared-bias network.

mod init;
mod sequential;

pub use init::Init;
pub use sequential::{Layer, Sequential};

use crate::autodiff::scalar::{ScalarTape, ScalarVar};
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
pub trait Module<F: Float> {
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

    /// The same output as [`Module::forward`], bit for bit, recorded with fewer
    /// nodes where a fused rule exists (a linear layer and the ReLU after it become
    /// one [`Var::linear_relu`]). Training records this (see
    /// [`crate::train::TrainConfig`]'s `fused_layers`); explanations and drawings
    /// record [`Module::forward`], one node per layer. The default is `forward`.
    ///
    /// # Errors
    /// As [`Module::forward`].
    ///
    /// ```
    /// use chainrule::nn::{Module, Sequential};
    /// use chainrule::Tape;
    /// let m = Sequential::<f32>::from_json(r#"{"layers": [{"type": "linear", "in": 2, "out": 3}, {"type": "relu"}, {"type": "linear", "in": 3, "out": 1}]}"#, 0)?;
    /// let x = chainrule::Tensor::from_vec(vec![0.5, -1.0], &[1, 2])?;
    /// let (plain, fused) = (Tape::new(), Tape::new());
    /// let a = m.forward(&m.bind(&plain), plain.constant(x.clone()))?;
    /// let b = m.forward_fused(&m.bind(&fused), fused.constant(x))?;
    /// assert_eq!(a.value(), b.value());
    /// assert_eq!((plain.len(), fused.len()), (8, 7)); // 4 parameters, x, then 3 nodes or 2
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    fn forward_fused<'t>(&self, params: &[Var<'t, F>], x: Var<'t, F>) -> Result<Var<'t, F>> {
        self.forward(params, x)
    }

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

    /// Records the forward pass of one sample `x` on a [`ScalarTape`], one number per
    /// node, pushing the outputs onto `out`; `params` holds every parameter element
    /// as a leaf, in [`Module::params`] order, each tensor row-major. This is the
    /// small-network fast path of training (see [`crate::train::TrainConfig`]); a
    /// module that cannot (the default) returns `false` and is trained on the tensor
    /// tape.
    ///
    /// ```
    /// use chainrule::autodiff::scalar::ScalarTape;
    /// use chainrule::nn::{Module, Sequential};
    /// let m = Sequential::<f64>::from_json(r#"{"layers": [{"type": "linear", "in": 2, "out": 1}, {"type": "relu"}]}"#, 0)?;
    /// let mut tape = ScalarTape::new();
    /// let params: Vec<_> = m.params().iter().flat_map(|p| p.value.to_vec()).map(|v| tape.param(v)).collect();
    /// let mut out = Vec::new();
    /// assert!(m.forward_scalar(&mut tape, &params, &[1.0, 2.0], &mut out));
    /// let w = m.params()[0].value.to_vec();
    /// let b = m.params()[1].value.item()?;
    /// assert_eq!(tape.value(out[0]), (w[0] * 1.0 + w[1] * 2.0 + b).max(0.0));
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    fn forward_scalar(
        &self,
        tape: &mut ScalarTape<F>,
        params: &[ScalarVar],
        x: &[F],
        out: &mut Vec<ScalarVar>,
    ) -> bool {
        let _ = (tape, params, x, out);
        false
    }
}
