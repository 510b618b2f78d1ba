//! The backward of every convolution, pooling and normalisation operation against
//! central finite differences of its forward, on seeded random inputs with odd
//! shapes, strides, padding and dilation.

use chainrule::autodiff::{Gradients, Op, Saved};
use chainrule::gradcheck::gradcheck;
use chainrule::tensor::Window2d;
use chainrule::{Tape, Tensor, Var};

fn random(shape: &[usize], seed: u64) -> Tensor<f64> {
    Tensor::rand_uniform(shape, -1.0, 1.0, seed).unwrap()
}

/// The gradients of Σ r ⊙ y: backward hands `r` to the operation that made `y`.
fn backward_of_weighted_sum(y: Var<'_, f64>, r: &Tensor<f64>) -> Gradients<f64> {
    let tape = y.tape();
    y.mul(tape.constant(r.clone()))
        .unwrap()
        .sum(&[], false)
        .unwrap()
        .backward()
        .unwrap()
}

/// Σ r ⊙ op(inputs) for a fixed random r, so every output element's gradient is
/// checked with its own weight.
fn check(op: Op, inputs: Vec<Tensor<f64>>) {
    let refs: Vec<&Tensor<f64>> = inputs.iter().collect();
    let out_shape = op.forward(&refs).unwrap().shape().to_vec();
    let r = random(&out_shape, 99);
    let report = gradcheck(
        |tape: &Tape<f64>, x| {
            let y = tape.apply(op.clone(), x)?;
            y.mul(tape.constant(r.clone()))?.sum(&[], false)
        },
        &inputs,
        None,
    )
    .unwrap();
    assert!(report.worst_error() < 1e-6, "{op:?}: {report:?}");
}

#[test]
fn convolution_gradients_match_finite_differences() {
    let cases = [
        (
            [1, 1, 5, 5],
            2,
            Window2d::new([3, 3], [1, 1], [0, 0], [1, 1]),
        ),
        (
            [2, 3, 7, 6],
            4,
            Window2d::new([3, 2], [2, 1], [1, 2], [1, 1]),
        ),
        (
            [2, 2, 9, 8],
            3,
            Window2d::new([2, 3], [3, 2], [2, 1], [2, 3]),
        ),
        (
            [1, 2, 4, 4],
            1,
            Window2d::new([4, 4], [1, 1], [0, 0], [1, 1]),
        ),
    ];
    for (i, (shape, out, w)) in cases.into_iter().enumerate() {
        let seed = 10 * i as u64;
        let x = random(&shape, seed);
        let k = random(&[out, shape[1], w.kernel[0], w.kernel[1]], seed + 1);
        check(
            Op::Conv2d { window: w },
            vec![x.clone(), k.clone(), random(&[out], seed + 2)],
        );
        check(Op::Conv2d { window: w }, vec![x, k]);
    }
}

#[test]
fn pooling_gradients_match_finite_differences() {
    for w in [
        Window2d::new([2, 2], [2, 2], [0, 0], [1, 1]),
        Window2d::new([3, 2], [1, 2], [1, 1], [1, 1]),
        Window2d::new([3, 3], [2, 2], [1, 1], [1, 1]),
    ] {
        // Distinct values, so that no window's maximum is tied and a step of h cannot
        // change which element is the largest.
        let x = random(&[2, 3, 7, 5], 5);
        check(Op::MaxPool2d { window: w }, vec![x.clone()]);
        check(Op::AvgPool2d { window: w }, vec![x]);
    }
}

#[test]
fn normalisation_gradients_match_finite_differences() {
    let image = random(&[3, 2, 4, 5], 7);
    let (g, b) = (random(&[2], 8), random(&[2], 9));
    check(Op::BatchNorm { eps: 1e-5 }, vec![image.clone(), g, b]);
    check(Op::BatchNorm { eps: 1e-5 }, vec![random(&[5, 3], 10)]);
    let (g, b) = (random(&[4, 5], 11), random(&[4, 5], 12));
    check(
        Op::LayerNorm {
            trailing: 2,
            eps: 1e-5,
        },
        vec![image.clone(), g, b],
    );
    check(
        Op::LayerNorm {
            trailing: 1,
            eps: 1e-5,
        },
        vec![image],
    );
}

#[test]
fn a_tied_maximum_sends_its_gradient_to_the_first_in_the_window() {
    // Two windows of [[3, 3], [1, 3]] and [[0, 2], [2, 1]]: the first 3 and the first 2 win.
    let x = Tensor::<f64>::from_vec(vec![3.0, 3.0, 0.0, 2.0, 1.0, 3.0, 2.0, 1.0], &[1, 1, 2, 4])
        .unwrap();
    let g = Tensor::from_vec(vec![10.0, 20.0], &[1, 1, 1, 2]).unwrap();
    let w = Window2d::new([2, 2], [2, 2], [0, 0], [1, 1]);
    let dx = Tensor::max_pool2d_backward(&x, &g, &w).unwrap();
    assert_eq!(dx.to_vec(), vec![10.0, 0.0, 0.0, 20.0, 0.0, 0.0, 0.0, 0.0]);
}

#[test]
fn dropout_gradient_matches_finite_differences() {
    for (p, stream) in [(0.3, 1), (0.5, 2)] {
        check(Op::Dropout { p, stream }, vec![random(&[4, 3, 5], 13)]);
    }
}

/// The gradient of each operation that keeps state from its forward, through a
/// recorded tape (which passes the saved state to the backward), against the same
/// backward told nothing (which computes it again from the inputs): equal bits.
#[test]
fn what_a_forward_saves_gives_the_backward_it_would_compute_again() {
    let image = random(&[3, 4, 9, 7], 14);
    let (gamma, beta) = (random(&[4], 15), random(&[4], 16));
    let cases: Vec<(Op, Vec<Tensor<f64>>)> = vec![
        (
            Op::MaxPool2d {
                window: Window2d::new([2, 2], [2, 2], [0, 0], [1, 1]),
            },
            vec![image.map(|v| (v * 2.0).round())],
        ),
        (
            Op::MaxPool2d {
                window: Window2d::new([3, 2], [2, 1], [1, 1], [2, 1]),
            },
            vec![image.map(|v| (v * 2.0).round())],
        ),
        (
            Op::BatchNorm { eps: 1e-5 },
            vec![image.clone(), gamma, beta],
        ),
        (Op::BatchNorm { eps: 1e-3 }, vec![image.clone()]),
        (
            Op::Dropout {
                p: 0.25,
                stream: 17,
            },
            vec![image.clone()],
        ),
    ];
    for (op, inputs) in cases {
        let tape = Tape::<f64>::new();
        let vars: Vec<_> = inputs.iter().map(|t| tape.param(t.clone())).collect();
        let y = tape.apply(op.clone(), &vars).unwrap();
        let saved = tape.saved(y.id()).unwrap();
        assert!(!matches!(saved, Saved::Nothing), "{op:?} saves its state");
        let r = random(&y.shape(), 18);
        let grads = backward_of_weighted_sum(y, &r);
        let refs: Vec<&Tensor<f64>> = inputs.iter().collect();
        let plain = op.forward(&refs).unwrap();
        assert_eq!(plain, y.value(), "{op:?}: forward and forward_saving");
        let need = vec![true; inputs.len()];
        let again = op
            .backward(&refs, &plain, &Saved::Nothing, &r, &need)
            .unwrap();
        for (v, g) in vars.iter().zip(again) {
            assert_eq!(grads.wrt(*v).unwrap(), &g.unwrap(), "{op:?}");
        }
    }
}

/// Dropout's one node against its composed form, the product with a constant mask
/// (what was recorded before it had its own rule): the same values and gradients.
#[test]
fn dropout_is_the_product_with_its_mask() {
    let x = random(&[6, 50], 19);
    let tape = Tape::<f64>::new();
    let v = tape.param(x.clone());
    let (p, stream) = (0.4, 23);
    let one = tape.apply(Op::Dropout { p, stream }, &[v]).unwrap();
    let mask = Tensor::dropout_mask(x.shape(), p, stream);
    let composed = v.mul(tape.constant(mask)).unwrap();
    assert_eq!(one.value(), composed.value());
    let r = random(&[6, 50], 20);
    let grad = |y| backward_of_weighted_sum(y, &r).wrt(v).unwrap().clone();
    assert_eq!(grad(one), grad(composed));
    assert_eq!(tape.label(one.id()), Some("dropout(0.4)".into()));
}
