//! Symbolic derivatives, evaluated at the parameters, equal autodiff's gradients:
//! for the notebooks' layer stacks and for notebook 003's shared-bias network.

mod common;

#[path = "../../chainrule/examples/notebook_003.rs"]
#[allow(dead_code)]
mod notebook_003;

use chainrule::Tape;
use chainrule::train::loss_and_grads;
use chainrule_explain::symbolic::{from_scalar_tape, from_sequential};

#[track_caller]
fn close(got: f64, want: f64, what: &str) {
    assert!(
        (got - want).abs() <= 1e-10 * want.abs().max(1.0),
        "{what}: symbolic {got} vs autodiff {want}"
    );
}

#[test]
fn symbolic_derivatives_of_the_notebook_networks_equal_autodiff() {
    for name in common::NOTEBOOKS {
        let common::Notebook {
            model, x, y, loss, ..
        } = common::notebook(name);
        for symbolic_inputs in [false, true] {
            let s = from_sequential(&model, &x, &y, loss, symbolic_inputs).unwrap();
            let mut env = s.env();
            for k in 0..x.shape()[1] {
                env.insert(format!("x_{}", k + 1), x.get(&[0, k]).unwrap());
            }
            let (value, grads) = loss_and_grads(&model, &x, &y, loss).unwrap();
            close(s.loss.eval(&env).unwrap(), value, &format!("{name} loss"));
            let grads: Vec<f64> = grads
                .iter()
                .flat_map(|g| g.as_ref().unwrap().to_vec())
                .collect();
            for ((symbol, d), want) in s.derivatives().iter().zip(grads) {
                close(d.eval(&env).unwrap(), want, &format!("{name} ∂C/∂{symbol}"));
            }
        }
    }
}

#[test]
fn notebook_003_shared_bias_network_is_written_out_and_differentiated() {
    let tape = Tape::<f64>::new();
    let vars: Vec<_> = notebook_003::START
        .iter()
        .map(|&w| tape.param_scalar(w))
        .collect();
    let (f5, loss) = notebook_003::network(&vars);
    let names = vars
        .iter()
        .zip(notebook_003::NAMES)
        .map(|(v, n)| (v.id(), n.to_string()))
        .collect();
    let output = from_scalar_tape(&tape, f5.id(), &names).unwrap();
    let loss_expr = from_scalar_tape(&tape, loss.id(), &names).unwrap();
    let env = notebook_003::NAMES
        .iter()
        .map(|n| n.to_string())
        .zip(notebook_003::START)
        .collect();
    // The notebook prints f5 = 0.649864477526152 at the starting weights.
    close(output.eval(&env).unwrap(), 0.649864477526152, "f5");
    // The shared bias enters each weighted input: z3 = 0.35·w13 + 0.9·w23 + 2·w0.
    let text = output.text();
    assert!(text.contains("2·w0"), "{text}");
    let autodiff = notebook_003::gradient(&notebook_003::START).unwrap();
    for (name, want) in notebook_003::NAMES.iter().zip(autodiff) {
        close(loss_expr.diff(name).eval(&env).unwrap(), want, name);
    }
}

/// Every loss and a softmax layer are written out from the recorded graph, on
/// several samples, with inputs as numbers or as one symbol per sample and feature.
#[test]
fn every_loss_is_written_out_and_its_derivatives_equal_autodiff() {
    use chainrule::Tensor;
    use chainrule::loss::{Loss, Target};
    use chainrule::nn::Sequential;
    let x = Tensor::<f64>::rand_uniform(&[3, 2], -1.0, 1.0, 1).unwrap();
    let values = Target::Values(Tensor::rand_uniform(&[3, 2], 0.1, 0.9, 2).unwrap());
    let classes = Target::Classes(vec![1, 0, 1]);
    let model = |last: &str| {
        Sequential::<f64>::from_json(
            &format!(
                r#"{{"layers": [{{"type": "linear", "in": 2, "out": 3}}, {{"type": "tanh"}}, {{"type": "linear", "in": 3, "out": 2}}{last}]}}"#
            ),
            4,
        )
        .unwrap()
    };
    let cases = [
        (Loss::Mse, model(""), &values),
        (Loss::Sse, model(""), &values),
        (Loss::HalfSse, model(r#", {"type": "softmax"}"#), &values),
        (Loss::Mae, model(""), &values),
        (Loss::Huber, model(""), &values),
        (Loss::Bce, model(r#", {"type": "sigmoid"}"#), &values),
        (Loss::BceLogits, model(""), &values),
        (Loss::CrossEntropy, model(""), &classes),
        (Loss::CrossEntropy, model(""), &values),
    ];
    for (loss, m, y) in cases {
        for symbolic_inputs in [false, true] {
            let s = from_sequential(&m, &x, y, loss, symbolic_inputs).unwrap();
            let env = s.env();
            // One symbol per sample and feature (x_1_1 … x_3_2), each with its number.
            assert_eq!(s.inputs.len(), if symbolic_inputs { 6 } else { 0 });
            let (value, grads) = loss_and_grads(&m, &x, y, loss).unwrap();
            close(s.loss.eval(&env).unwrap(), value, &format!("{loss:?} loss"));
            let grads: Vec<f64> = grads
                .iter()
                .flat_map(|g| g.as_ref().unwrap().to_vec())
                .collect();
            for ((symbol, d), want) in s.derivatives().iter().zip(grads) {
                close(
                    d.eval(&env).unwrap(),
                    want,
                    &format!("{loss:?} ∂C/∂{symbol}"),
                );
            }
        }
    }
}
