//! [`Gradients`]: the store a backward pass returns, keyed by node.

use super::Var;
use crate::{Float, Tensor};

/// Gradients from one backward pass, looked up by the [`Var`] they belong to.
///
/// ```
/// let tape = chainrule::Tape::<f64>::new();
/// let w = tape.param_scalar(1.0);
/// let c = tape.constant_scalar(2.0);
/// let grads = (w * c).backward()?;
/// assert_eq!(grads.wrt(w).unwrap().item()?, 2.0);
/// assert!(grads.wrt(c).is_none()); // constants get no gradient
/// # Ok::<(), chainrule::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Gradients<F: Float = f32> {
    pub(super) grads: Vec<Option<Tensor<F>>>,
}

impl<F: Float> Gradients<F> {
    /// ∂root/∂var, or `None` when no gradient reached `var` (a constant, or a value
    /// the root does not depend on).
    ///
    /// ```
    /// let tape = chainrule::Tape::<f64>::new();
    /// let (a, b) = (tape.param_scalar(1.0), tape.param_scalar(2.0));
    /// let grads = (a * 3.0).backward()?;
    /// assert!(grads.wrt(b).is_none());
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn wrt(&self, var: Var<'_, F>) -> Option<&Tensor<F>> {
        self.by_id(var.id)
    }

    /// The gradient of node `id`, see [`Gradients::wrt`].
    ///
    /// ```
    /// let tape = chainrule::Tape::<f64>::new();
    /// let a = tape.param_scalar(1.0);
    /// let grads = (a * 3.0).backward()?;
    /// assert_eq!(grads.by_id(a.id()).unwrap().item()?, 3.0);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn by_id(&self, id: usize) -> Option<&Tensor<F>> {
        self.grads.get(id)?.as_ref()
    }

    /// Takes the gradient of `var` out of the store (no copy).
    ///
    /// ```
    /// let tape = chainrule::Tape::<f64>::new();
    /// let a = tape.param_scalar(1.0);
    /// let mut grads = (a * 3.0).backward()?;
    /// assert!(grads.take(a).is_some());
    /// assert!(grads.wrt(a).is_none());
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn take(&mut self, var: Var<'_, F>) -> Option<Tensor<F>> {
        self.grads.get_mut(var.id)?.take()
    }
}
