//! Every activation of the element-wise table, through everything that reads the
//! table: the model file, derivations with numbers (the chain against autodiff),
//! closed forms (their derivatives against autodiff), drawings and gradient checks.
//! A function added to the table is covered here without a line of new test code.

use chainrule::autodiff::{Constant, Elementwise, Op};
use chainrule::loss::{Loss, Target};
use chainrule::nn::{Layer, Module, Sequential};
use chainrule::train::loss_and_grads;
use chainrule::{Tape, Tensor};
use chainrule_explain::check::check_model;
use chainrule_explain::derive::{ParamElement, explain};
use chainrule_explain::graph::Graph;
use chainrule_explain::symbolic::from_sequential;
use std::collections::BTreeMap;

/// Every activation layer with its defaults, and again with every constant changed
/// (a number scaled, a choice switched), so both are exercised.
fn activations() -> Vec<Elementwise> {
    let mut all = Vec::new();
    for f in Elementwise::LAYERS {
        all.push(f);
        let changed = f.constants().into_iter().fold(f, |g, (key, value)| {
            let value = match value {
                // softplus: β 2 and threshold 1 put some inputs on its linear side
                Constant::Number(v) => Constant::Number(if key == "threshold" {
                    1.0
                } else {
                    2.0 * v + 0.1
                }),
                Constant::Choice(c) => {
                    let other = f
                        .choices(key)
                        .iter()
                        .find(|o| **o != c)
                        .copied()
                        .unwrap_or(c);
                    Constant::Choice(other)
                }
            };
            g.with_constant(key, value).unwrap()
        });
        if changed != f {
            all.push(changed);
        }
    }
    all
}

fn model(f: Elementwise) -> Sequential<f64> {
    let layers = vec![
        Layer::Linear {
            inputs: 3,
            outputs: 4,
            bias: true,
        },
        Layer::Activation(f),
        Layer::Linear {
            inputs: 4,
            outputs: 2,
            bias: true,
        },
    ];
    // Through the model file and back: the activation's keys survive.
    let m = Sequential::<f64>::new(layers, 11).unwrap();
    let back = Sequential::<f64>::from_json(&m.to_json(), 11).unwrap();
    assert_eq!(back.layers(), m.layers(), "{f:?} through model.json");
    m
}

fn data() -> (Tensor<f64>, Target<f64>) {
    let x = Tensor::rand_uniform(&[3, 3], -2.0, 2.0, 5).unwrap();
    let y = Target::Values(Tensor::rand_uniform(&[3, 2], -1.0, 1.0, 6).unwrap());
    (x, y)
}

#[test]
fn every_activation_is_derived_with_numbers_that_agree_with_autodiff() {
    let (x, y) = data();
    for f in activations() {
        let m = model(f);
        for element in ["0.weight[1,2]", "0.bias[3]", "2.weight[0,1]"] {
            let d = explain(
                &m,
                &x,
                &y,
                Loss::Mse,
                0.1,
                &ParamElement::parse(element).unwrap(),
            )
            .unwrap();
            assert!(
                d.verified(),
                "{f:?} {element}: chain {} vs autodiff {}",
                d.gradient,
                d.autodiff
            );
            if element == "0.weight[1,2]" {
                // The local factor ∂a/∂z is written as the table declares it.
                let (z, a) = (&d.z, &d.a);
                let notation = f
                    .derivative_notation((&z.text(), &z.latex()), (&a.text(), &a.latex()), ("", ""))
                    .unwrap();
                assert_eq!(d.samples[0].factors[1].formula.0, notation.text, "{f:?}");
            }
        }
    }
}

#[test]
fn every_activation_is_written_out_and_its_derivatives_equal_autodiff() {
    let (x, y) = data();
    for f in activations() {
        let m = model(f);
        let s = from_sequential(&m, &x, &y, Loss::Mse, false).unwrap();
        let env = s.env();
        let (value, grads) = loss_and_grads(&m, &x, &y, Loss::Mse).unwrap();
        let close = |got: f64, want: f64| (got - want).abs() <= 1e-10 * want.abs().max(1.0);
        assert!(close(s.loss.eval(&env).unwrap(), value), "{f:?} loss");
        let grads: Vec<f64> = grads
            .iter()
            .flat_map(|g| g.as_ref().unwrap().to_vec())
            .collect();
        for ((symbol, d), want) in s.derivatives().iter().zip(grads) {
            let got = d.eval(&env).unwrap();
            assert!(close(got, want), "{f:?} ∂C/∂{symbol}: {got} vs {want}");
        }
        assert!(s.loss.sympy().len() > 10, "{f:?} has a sympy form");
    }
}

#[test]
fn every_activation_is_drawn_and_passes_the_gradient_check() {
    let (x, y) = data();
    for f in activations() {
        let m = model(f);
        let report = check_model(&m, &x, &y, Loss::Mse, 1e-6, 1e-6).unwrap();
        assert!(report.passed(), "{f:?}:\n{}", report.table());
        let tape = Tape::<f64>::new();
        let params = m.bind(&tape);
        let out = m.forward(&params, tape.constant(x.clone())).unwrap();
        let c = Loss::Mse.compute(out, &y).unwrap();
        let grads = c.backward_retain_all().unwrap();
        let g = Graph::from_tape(&tape, c.id(), &grads, &BTreeMap::new());
        let label = Op::Map(f).label();
        assert!(
            g.nodes.iter().any(|n| n.label == label),
            "{f:?}: no {label} node"
        );
    }
}
