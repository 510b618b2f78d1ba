//! The scalar form of what the fast path trains: a [`Sequential`] model's layers and
//! the losses, one number per node of the [`ScalarTape`]. Softmax layers and the
//! losses without a scalar form (bce, bce_logits, huber) are left to the tensor tape.

use super::tape::{ScalarOp, ScalarTape, ScalarVar};
use crate::autodiff::Elementwise;
use crate::data::Target;
use crate::loss::Loss;
use crate::nn::{Layer, Sequential};
use crate::{Float, Tensor};

/// Linear layers and element-wise activations, one scalar node per multiply, add
/// and activation; a linear unit sums Σₖ wⱼₖ·xₖ left to right, then adds bⱼ, as
/// the tensor path does. Softmax layers are left to the tensor tape.
// Kept out of line: inlined into the step, it measured 3% more instructions.
#[inline(never)]
pub(super) fn forward_scalar<F: Float>(
    model: &Sequential<F>,
    tape: &mut ScalarTape<F>,
    params: &[ScalarVar],
    x: &[F],
    out: &mut Vec<ScalarVar>,
) -> bool {
    // The sample's activations live at out[base..]: each layer appends its
    // outputs, then drops its inputs.
    let base = out.len();
    out.extend(x.iter().map(|&v| tape.constant(v)));
    let mut flat = 0;
    for layer in model.layers() {
        let width = out.len() - base;
        match *layer {
            Layer::Linear {
                inputs,
                outputs,
                bias,
            } => {
                if inputs != width || flat + outputs * (inputs + usize::from(bias)) > params.len() {
                    return false;
                }
                for j in 0..outputs {
                    let mut acc = tape.mul(params[flat + j * inputs], out[base]);
                    for k in 1..inputs {
                        let term = tape.mul(params[flat + j * inputs + k], out[base + k]);
                        acc = tape.add(acc, term);
                    }
                    if bias {
                        acc = tape.add(acc, params[flat + outputs * inputs + j]);
                    }
                    out.push(acc);
                }
                flat += outputs * (inputs + usize::from(bias));
            }
            Layer::Identity => continue,
            Layer::Activation(f) => {
                for k in 0..width {
                    let a = tape.unary(ScalarOp::Map(f), out[base + k]);
                    out.push(a);
                }
            }
            // Softmax couples a row's outputs; the image layers, dropout and the
            // normalisations are the tensor tape's.
            _ => return false,
        }
        out.drain(base..base + width);
    }
    true
}

/// The loss on a [`ScalarTape`], for the small-network fast path of training:
/// `prediction` holds N rows of `outputs` values, row-major. The same formulas as
/// [`Loss::compute`](crate::loss::Loss::compute), one number per node (training tests compare the two); `None`
/// for the losses left to the tensor tape (bce, bce_logits, huber) and for
/// targets that do not fit.
// Kept out of line: inlined into the step, it measured 3% more instructions.
#[inline(never)]
pub(super) fn loss_scalar<F: Float>(
    loss: Loss,
    tape: &mut ScalarTape<F>,
    prediction: &[ScalarVar],
    outputs: usize,
    target: &Target<F>,
) -> Option<ScalarVar> {
    let count = prediction.len();
    if outputs == 0 || !count.is_multiple_of(outputs) || count == 0 {
        return None;
    }
    let rows = count / outputs;
    let mean = |tape: &mut ScalarTape<F>, total: ScalarVar, n: usize| {
        let inverse = (F::one() / F::from_f64(n as f64)).as_f64();
        tape.scale(total, inverse)
    };
    let residuals = |tape: &mut ScalarTape<F>, values: &Tensor<F>, op: ScalarOp| {
        let y = values.as_slice()?;
        (values.shape() == [rows, outputs]).then_some(())?;
        // A running sum, left to right (no list of terms: a step allocates nothing).
        let mut total = None;
        for (&p, &y) in prediction.iter().zip(y) {
            let y = tape.constant(y);
            let r = tape.sub(p, y);
            let term = tape.unary(op, r);
            total = Some(total.map_or(term, |t| tape.add(t, term)));
        }
        total
    };
    match (loss, target) {
        (Loss::Mse, Target::Values(y)) => {
            let total = residuals(tape, y, ScalarOp::Map(Elementwise::Pow { p: 2.0 }))?;
            Some(mean(tape, total, count))
        }
        (Loss::Sse, Target::Values(y)) => {
            residuals(tape, y, ScalarOp::Map(Elementwise::Pow { p: 2.0 }))
        }
        (Loss::HalfSse, Target::Values(y)) => {
            let total = residuals(tape, y, ScalarOp::Map(Elementwise::Pow { p: 2.0 }))?;
            Some(tape.scale(total, 0.5))
        }
        (Loss::Mae, Target::Values(y)) => {
            let total = residuals(tape, y, ScalarOp::Map(Elementwise::Abs))?;
            Some(mean(tape, total, count))
        }
        (Loss::CrossEntropy, Target::Classes(classes)) if classes.len() == rows => {
            // −mean over rows of (z_c − log Σₖ e^(zₖ − m) − m), m the row's maximum
            // (a constant: the shift does not change the value or the gradient).
            let mut picked_total: Option<ScalarVar> = None;
            for (row, &class) in prediction.chunks(outputs).zip(classes) {
                let z_c = *row.get(class)?;
                let m = row
                    .iter()
                    .fold(F::neg_infinity(), |m, &z| m.max(tape.value(z)));
                let m = tape.constant(m);
                let mut total: Option<ScalarVar> = None;
                for &z in row {
                    let shifted = tape.sub(z, m);
                    let e = tape.exp(shifted);
                    total = Some(total.map_or(e, |t| tape.add(t, e)));
                }
                let log_total = tape.log(total?);
                let log_total = tape.add(log_total, m);
                let picked = tape.sub(z_c, log_total);
                picked_total = Some(picked_total.map_or(picked, |t| tape.add(t, picked)));
            }
            let average = mean(tape, picked_total?, rows);
            Some(tape.scale(average, -1.0))
        }
        _ => None,
    }
}
