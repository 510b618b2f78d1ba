//! The gradient-flow audit: after a backward pass, the signs that a network has
//! silently stopped learning.

use chainrule::autodiff::{Elementwise, Op};
use chainrule::loss::{Loss, Target};
use chainrule::nn::{Module, Sequential};
use chainrule::{Float, Result, Tape, Tensor};

/// Below this ratio ‖∂C/∂W‖ / ‖W‖ a layer's gradient is called vanishing.
pub const VANISHING: f64 = 1e-6;
/// Above this ratio ‖∂C/∂W‖ / ‖W‖ a layer's gradient is called exploding.
pub const EXPLODING: f64 = 1e2;

/// One finding.
#[derive(Debug, Clone, PartialEq)]
pub enum Finding {
    /// Every element of a parameter's gradient is exactly zero.
    ZeroGradient {
        /// The parameter.
        param: String,
    },
    /// A parameter's gradient holds NaN or ±∞.
    NonFiniteGradient {
        /// The parameter.
        param: String,
    },
    /// ReLU units whose input is ≤ 0 for every sample of the batch: no gradient
    /// reaches their weights.
    DeadRelu {
        /// The ReLU layer's position in `layers`.
        layer: usize,
        /// The dead units (0-based).
        units: Vec<usize>,
        /// Units in the layer.
        of: usize,
    },
    /// ‖∂C/∂W‖ / ‖W‖ below [`VANISHING`].
    Vanishing {
        /// The parameter.
        param: String,
        /// The ratio.
        ratio: f64,
    },
    /// ‖∂C/∂W‖ / ‖W‖ above [`EXPLODING`].
    Exploding {
        /// The parameter.
        param: String,
        /// The ratio.
        ratio: f64,
    },
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Finding::ZeroGradient { param } => write!(
                f,
                "{param}: the gradient is exactly zero: this parameter is not learning"
            ),
            Finding::NonFiniteGradient { param } => {
                write!(f, "{param}: the gradient is not finite (NaN or ∞)")
            }
            Finding::DeadRelu { layer, units, of } => {
                let shown: Vec<String> = units.iter().take(10).map(|u| u.to_string()).collect();
                let more = if units.len() > 10 { ", …" } else { "" };
                write!(
                    f,
                    "layer {layer} (relu): {} of {of} units are dead (never active over the batch): [{}{more}]",
                    units.len(),
                    shown.join(", ")
                )
            }
            Finding::Vanishing { param, ratio } => write!(
                f,
                "{param}: vanishing gradient, ‖∂C/∂W‖/‖W‖ = {ratio:.2e} < {VANISHING:e}"
            ),
            Finding::Exploding { param, ratio } => write!(
                f,
                "{param}: exploding gradient, ‖∂C/∂W‖/‖W‖ = {ratio:.2e} > {EXPLODING:e}"
            ),
        }
    }
}

fn norm<F: Float>(t: &Tensor<F>) -> f64 {
    t.to_vec()
        .iter()
        .map(|v| v.as_f64() * v.as_f64())
        .sum::<f64>()
        .sqrt()
}

/// Runs one forward and backward pass of `model` on `(x, target)` and reports zero or
/// non-finite gradients, dead ReLU units and vanishing or exploding layers. An empty
/// list means the gradient flows.
///
/// # Errors
/// Shape errors when the data does not fit the model and loss.
///
/// ```
/// use chainrule::{loss::{Loss, Target}, nn::{Module, Sequential}, Tensor};
/// use chainrule_explain::audit::{audit, Finding};
/// let mut m = Sequential::<f64>::from_json(r#"{"layers": [{"type": "linear", "in": 2, "out": 3}, {"type": "relu"}, {"type": "linear", "in": 3, "out": 1}]}"#, 0)?;
/// // A bias of -100 kills every ReLU unit: nothing reaches the first layer.
/// m.params_mut()[1].value = Tensor::full(&[3], -100.0);
/// let x = Tensor::rand_uniform(&[8, 2], -1.0, 1.0, 1)?;
/// let findings = audit(&m, &x, &Target::Values(Tensor::zeros(&[8, 1])), Loss::Mse)?;
/// assert!(findings.contains(&Finding::DeadRelu { layer: 1, units: vec![0, 1, 2], of: 3 }));
/// assert!(findings.contains(&Finding::ZeroGradient { param: "0.weight".into() }));
/// # Ok::<(), chainrule::Error>(())
/// ```
pub fn audit<F: Float>(
    model: &Sequential<F>,
    x: &Tensor<F>,
    target: &Target<F>,
    loss: Loss,
) -> Result<Vec<Finding>> {
    let tape = Tape::new();
    let params = model.bind(&tape);
    let trace = model.forward_trace(&params, tape.constant(x.clone()))?;
    let c = loss.compute(*trace.last().expect("a layer"), target)?;
    let grads = c.backward()?;
    let mut findings = Vec::new();
    for (layer, output) in trace.iter().enumerate() {
        if tape.op(output.id()) != Some(Op::Map(Elementwise::Relu)) || layer == 0 {
            continue;
        }
        let input = trace[layer - 1].value();
        let units = *input.shape().last().unwrap_or(&0);
        let values = input.to_vec();
        let dead: Vec<usize> = (0..units)
            .filter(|&u| {
                values
                    .iter()
                    .skip(u)
                    .step_by(units.max(1))
                    .all(|v| *v <= F::zero())
            })
            .collect();
        if !dead.is_empty() {
            findings.push(Finding::DeadRelu {
                layer,
                units: dead,
                of: units,
            });
        }
    }
    for (param, var) in model.params().iter().zip(&params) {
        let Some(g) = grads.wrt(*var) else {
            findings.push(Finding::ZeroGradient {
                param: param.name.clone(),
            });
            continue;
        };
        if !g.all_finite() {
            findings.push(Finding::NonFiniteGradient {
                param: param.name.clone(),
            });
        } else if g.to_vec().iter().all(|v| *v == F::zero()) {
            findings.push(Finding::ZeroGradient {
                param: param.name.clone(),
            });
        } else if param.name.ends_with("weight") {
            let ratio = norm(g) / norm(&param.value).max(f64::MIN_POSITIVE);
            if ratio < VANISHING {
                findings.push(Finding::Vanishing {
                    param: param.name.clone(),
                    ratio,
                });
            } else if ratio > EXPLODING {
                findings.push(Finding::Exploding {
                    param: param.name.clone(),
                    ratio,
                });
            }
        }
    }
    Ok(findings)
}
