//! Deliberately wrong derivatives, for testing that gradient checks catch them and
//! name the operation: with the `fault-injection` feature, every operation whose
//! [`Op::name`] is the target has its gradients doubled. The target is set per thread
//! with [`inject_fault`], or for a whole process by the environment variable
//! `CHAINRULE_INJECT_FAULT=<name>`. Never enabled in normal builds.

use super::{InputGrads, Op};
use crate::Float;
use std::cell::RefCell;

thread_local! {
    static TARGET: RefCell<Option<String>> =
        RefCell::new(std::env::var("CHAINRULE_INJECT_FAULT").ok());
}

/// Makes the operations named `name` wrong on this thread (`None`: none).
///
/// ```
/// use chainrule::autodiff::inject_fault;
/// let tape = chainrule::Tape::<f64>::new();
/// let x = tape.param_scalar(0.5);
/// inject_fault(Some("tanh"));
/// let wrong = x.tanh().backward()?.wrt(x).unwrap().item()?;
/// inject_fault(None);
/// assert_eq!(wrong, 2.0 * (1.0 - 0.5f64.tanh().powi(2)));
/// # Ok::<(), chainrule::Error>(())
/// ```
pub fn inject_fault(name: Option<&str>) {
    TARGET.with(|t| *t.borrow_mut() = name.map(str::to_string));
}

pub(super) fn corrupt<F: Float>(op: &Op, grads: InputGrads<F>) -> InputGrads<F> {
    let hit = TARGET.with(|t| t.borrow().as_deref() == Some(op.name()));
    if !hit {
        return grads;
    }
    grads
        .into_iter()
        .map(|g| g.map(|g| g.scale(F::from_f64(2.0))))
        .collect()
}
