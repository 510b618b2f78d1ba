//! Gradient checking: backprop against central finite differences, in `f64`.

use crate::autodiff::local_backward;
use crate::{Float, Result, Tape, Tensor, Var};

/// The finite-difference step used by [`gradcheck`] when none is given: small enough
/// that the truncation error (∝ h²) is ~1e-12, large enough that rounding
/// (∝ ε/h ≈ 1e-16/1e-6) stays ~1e-10 for values of order 1.
pub const DEFAULT_STEP: f64 = 1e-6;

/// The error between a backprop value and a finite-difference estimate:
/// `|backprop − numeric| / max(1, |backprop|, |numeric|)`, relative for values larger
/// than 1 and absolute below, so gradients near zero are not judged by a meaningless
/// ratio. Every gradient check in chainrule uses it.
///
/// ```
/// use chainrule::gradcheck::relative_error;
/// assert_eq!(relative_error(200.0, 202.0), 2.0 / 202.0);
/// assert_eq!(relative_error(1e-9, 0.0), 1e-9);
/// ```
pub fn relative_error(backprop: f64, numeric: f64) -> f64 {
    (backprop - numeric).abs() / 1f64.max(backprop.abs()).max(numeric.abs())
}

/// How far backprop and finite differences disagree for one input.
#[derive(Debug, Clone, PartialEq)]
pub struct InputCheck {
    /// The input's position in the list given to [`gradcheck`].
    pub input: usize,
    /// The largest error over the input's elements, see [`gradcheck`].
    pub worst_error: f64,
    /// The element (row-major index) where the error is largest.
    pub worst_element: usize,
    /// Backprop's value at that element.
    pub backprop: f64,
    /// The finite-difference estimate at that element.
    pub numeric: f64,
}

/// The result of [`gradcheck`]: one entry per input.
#[derive(Debug, Clone, PartialEq)]
pub struct GradCheck {
    /// Per input, the worst disagreement.
    pub inputs: Vec<InputCheck>,
}

impl GradCheck {
    /// The worst error over all inputs (0 when there are none).
    ///
    /// ```
    /// use chainrule::{gradcheck::gradcheck, Tensor};
    /// let report = gradcheck(|_, x| Ok(x[0].exp().sum(&[], false)?),
    ///                        &[Tensor::from_vec(vec![0.1, -0.4], &[2])?], None)?;
    /// assert!(report.worst_error() < 1e-8);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn worst_error(&self) -> f64 {
        self.inputs
            .iter()
            .map(|c| c.worst_error)
            .fold(0.0, f64::max)
    }
}

/// Compares the gradient backprop computes for a scalar function `f` of `inputs` with
/// central finite differences `(f(x + h) − f(x − h)) / 2h`, element by element.
///
/// The error at an element is `|backprop − numeric| / max(1, |backprop|, |numeric|)`:
/// relative for gradients larger than 1, absolute below (so gradients near zero are
/// not judged by a meaningless ratio). `step` defaults to [`DEFAULT_STEP`].
///
/// # Errors
/// Whatever `f` returns, or [`crate::Error::NonScalarBackward`] if `f`'s result is
/// not a single number.
///
/// ```
/// use chainrule::{gradcheck::gradcheck, Tensor};
/// // f(a, b) = Σ (a·b)²
/// let a = Tensor::from_vec(vec![0.3, -1.2, 2.0], &[3])?;
/// let b = Tensor::from_vec(vec![1.5, 0.7, -0.2], &[3])?;
/// let report = gradcheck(|_, x| Ok(x[0].mul(x[1])?.powf(2.0).sum(&[], false)?), &[a, b], None)?;
/// assert_eq!(report.inputs.len(), 2);
/// assert!(report.worst_error() < 1e-8);
/// # Ok::<(), chainrule::Error>(())
/// ```
pub fn gradcheck<Fun>(f: Fun, inputs: &[Tensor<f64>], step: Option<f64>) -> Result<GradCheck>
where
    Fun: for<'t> Fn(&'t Tape<f64>, &[Var<'t, f64>]) -> Result<Var<'t, f64>>,
{
    let h = step.unwrap_or(DEFAULT_STEP);
    let evaluate = |values: &[Tensor<f64>]| -> Result<f64> {
        let tape = Tape::new();
        let vars: Vec<_> = values.iter().map(|v| tape.constant(v.clone())).collect();
        let out = tape.no_grad(|| f(&tape, &vars))?;
        out.item()
    };

    let tape = Tape::new();
    let vars: Vec<_> = inputs.iter().map(|v| tape.param(v.clone())).collect();
    let out = f(&tape, &vars)?;
    let grads = out.backward()?;

    let mut checks = Vec::with_capacity(inputs.len());
    for (index, var) in vars.iter().enumerate() {
        let analytic = grads
            .wrt(*var)
            .map(Tensor::to_vec)
            .unwrap_or_else(|| vec![0.0; inputs[index].len()]);
        let mut check = InputCheck {
            input: index,
            worst_error: 0.0,
            worst_element: 0,
            backprop: 0.0,
            numeric: 0.0,
        };
        let base = inputs[index].to_vec();
        for (element, &backprop) in analytic.iter().enumerate() {
            let mut shifted = inputs.to_vec();
            let mut nudge = |delta: f64| -> Result<f64> {
                let mut values = base.clone();
                values[element] += delta;
                shifted[index] = Tensor::from_vec(values, inputs[index].shape())?;
                evaluate(&shifted)
            };
            let numeric = (nudge(h)? - nudge(-h)?) / (2.0 * h);
            let error = relative_error(backprop, numeric);
            if error > check.worst_error || error.is_nan() {
                check = InputCheck {
                    input: index,
                    worst_error: error,
                    worst_element: element,
                    backprop,
                    numeric,
                };
            }
        }
        checks.push(check);
    }
    Ok(GradCheck { inputs: checks })
}

/// Checks node `id`'s local derivative in isolation: its operation's backward against
/// central finite differences of its forward, at the node's recorded inputs, with
/// fixed pseudo-random output weights. Returns the worst error (as
/// [`gradcheck`] defines it), or `None` for a leaf. This is how a
/// failing gradient check names the operation at fault.
///
/// # Errors
/// Only if the operation fails on its own recorded inputs.
///
/// ```
/// let tape = chainrule::Tape::<f64>::new();
/// let x = tape.param_scalar(0.3);
/// let y = x.tanh();
/// use chainrule::gradcheck::check_local_derivative;
/// assert!(check_local_derivative(&tape, y.id(), 1e-6)?.unwrap() < 1e-8);
/// assert!(check_local_derivative(&tape, x.id(), 1e-6)?.is_none());
/// # Ok::<(), chainrule::Error>(())
/// ```
pub fn check_local_derivative<F: Float>(
    tape: &Tape<F>,
    id: usize,
    step: f64,
) -> Result<Option<f64>> {
    let (Some(op), Some(value)) = (tape.op(id), tape.value(id)) else {
        return Ok(None);
    };
    let inputs: Vec<Tensor<F>> = tape
        .inputs(id)
        .iter()
        .filter_map(|&i| tape.value(i))
        .collect();
    // Output weights: a fixed, irregular pattern, so every element's gradient counts.
    let weights = Tensor::from_vec(
        (0..value.len())
            .map(|i| F::from_f64(((i * 7919 + 13) % 97) as f64 / 97.0 - 0.45))
            .collect(),
        value.shape(),
    )?;
    let refs: Vec<&Tensor<F>> = inputs.iter().collect();
    // The backward reads what the recorded forward saved, as in training.
    let saved = tape.saved(id).unwrap_or_default();
    let need = vec![true; inputs.len()];
    let analytic = local_backward(&op, &refs, &value, &saved, &weights, &need)?;
    let weighted = |values: &[Tensor<F>]| -> Result<f64> {
        let refs: Vec<&Tensor<F>> = values.iter().collect();
        let out = op.forward(&refs)?;
        Ok(out
            .to_vec()
            .iter()
            .zip(weights.to_vec())
            .map(|(o, w)| o.as_f64() * w.as_f64())
            .sum())
    };
    let mut worst: f64 = 0.0;
    for (k, grad) in analytic.into_iter().enumerate() {
        let Some(grad) = grad else { continue };
        let grad = grad.sum_to_shape(inputs[k].shape())?.to_vec();
        for (e, g) in grad.iter().enumerate() {
            let mut nudged = inputs.clone();
            let mut at = |delta: f64| -> Result<f64> {
                let mut values = inputs[k].to_vec();
                values[e] = F::from_f64(values[e].as_f64() + delta);
                nudged[k] = Tensor::from_vec(values, inputs[k].shape())?;
                weighted(&nudged)
            };
            let numeric = (at(step)? - at(-step)?) / (2.0 * step);
            let g = g.as_f64();
            let error = relative_error(g, numeric);
            if error > worst || error.is_nan() {
                worst = error;
            }
        }
    }
    Ok(Some(worst))
}
