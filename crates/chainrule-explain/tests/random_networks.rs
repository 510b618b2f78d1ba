//! A property test of the derivations: random layer stacks (every activation of the
//! table, one before the first linear layer or not, a softmax or not, biases or not)
//! under every loss, on 1 to 3 samples; every parameter element's derivation must
//! equal autodiff's gradient. Issue 15's outside check found the first case wrong
//! (an activation before the first linear layer): it is among these.

mod common;

use chainrule::Tensor;
use chainrule::autodiff::Elementwise;
use chainrule::loss::{Loss, Target};
use chainrule::nn::{Layer, Sequential};
use chainrule_explain::derive::{all_elements, explain};
use common::Stream;

/// An activation layer of the table, drawn from `rng`.
fn activation(rng: &mut Stream) -> Layer {
    Layer::Activation(Elementwise::LAYERS[rng.below(Elementwise::LAYERS.len())])
}

const LOSSES: [Loss; 8] = [
    Loss::Mse,
    Loss::Sse,
    Loss::HalfSse,
    Loss::Mae,
    Loss::Huber,
    Loss::Bce,
    Loss::BceLogits,
    Loss::CrossEntropy,
];

#[test]
fn every_derivation_of_random_networks_equals_autodiff() {
    let mut rng = Stream(0x9e37_79b9_7f4a_7c15);
    let mut checked = 0;
    for case in 0..48 {
        let loss = LOSSES[case % LOSSES.len()];
        let inputs = 1 + rng.below(3);
        let mut layers = Vec::new();
        if rng.below(2) == 0 {
            layers.push(activation(&mut rng));
        }
        let depth = 1 + rng.below(3);
        let mut width = inputs;
        for d in 0..depth {
            let last = d + 1 == depth;
            let outputs = if last {
                1 + rng.below(3)
            } else {
                1 + rng.below(4)
            };
            layers.push(Layer::Linear {
                inputs: width,
                outputs,
                bias: rng.below(4) != 0,
            });
            width = outputs;
            if !last {
                layers.push(activation(&mut rng));
            }
        }
        match loss {
            Loss::Bce => layers.push(Layer::Activation(Elementwise::Sigmoid)),
            Loss::Mse | Loss::Sse if rng.below(3) == 0 => layers.push(Layer::Softmax),
            _ => {}
        }
        let model = Sequential::<f64>::new(layers.clone(), case as u64).unwrap();
        let rows = 1 + rng.below(3);
        let x = Tensor::<f64>::rand_uniform(&[rows, inputs], -1.5, 1.5, case as u64).unwrap();
        let target = match loss {
            Loss::CrossEntropy => Target::Classes((0..rows).map(|_| rng.below(width)).collect()),
            Loss::Bce | Loss::BceLogits => Target::Values(
                Tensor::rand_uniform(&[rows, width], 0.0, 1.0, 100 + case as u64).unwrap(),
            ),
            _ => Target::Values(
                Tensor::rand_uniform(&[rows, width], -1.0, 1.0, 100 + case as u64).unwrap(),
            ),
        };
        for element in all_elements(&model) {
            let d = explain(&model, &x, &target, loss, 0.1, &element).unwrap();
            assert!(
                d.verified(),
                "case {case}: {layers:?}, {loss:?}, {rows} rows: {} = {} but autodiff {}",
                element.name(),
                d.gradient,
                d.autodiff
            );
            checked += 1;
        }
    }
    assert!(checked > 200, "{checked} derivations");
}
