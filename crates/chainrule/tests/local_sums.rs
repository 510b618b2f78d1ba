//! Every operation's explanation ([`Op::local_sum`]) adds up to the gradient that
//! backpropagation gives the same input element, for every element of every input,
//! on seeded random values: the sums that `explain` prints are the ones training
//! computes. The reference is the tape (each operation's backward rule, broadcasting
//! undone by the tape), with C = Σ y · G for a random G, so that ∂C/∂y = G.

use chainrule::autodiff::{Elementwise, Op};
use chainrule::tensor::Window2d;
use chainrule::{Tape, Tensor};

/// Seeded values in [−2, 2), or whole numbers in [−2, 2] when `ties` (for maxima
/// that tie inside a pooling window).
struct Random(u64);

impl Random {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64 * 4.0 - 2.0
    }
    fn tensor(&mut self, shape: &[usize], ties: bool) -> Tensor<f64> {
        let n = shape.iter().product();
        let values = (0..n)
            .map(|_| {
                let v = self.next();
                if ties { v.round() } else { v }
            })
            .collect();
        Tensor::from_vec(values, shape).unwrap()
    }
}

/// Checks `op` on `inputs`: each element's local sum against the tape's gradient.
#[track_caller]
fn check(op: Op, inputs: &[Tensor<f64>], random: &mut Random) {
    let tape = Tape::new();
    let vars: Vec<_> = inputs.iter().map(|t| tape.param(t.clone())).collect();
    let y = tape.apply(op.clone(), &vars).unwrap();
    let g = random.tensor(&y.shape(), false);
    let c = y
        .mul(tape.constant(g.clone()))
        .unwrap()
        .sum(&[], false)
        .unwrap();
    let grads = c.backward().unwrap();
    let values: Vec<&Tensor<f64>> = inputs.iter().collect();
    let output = y.value();
    let mut checked = 0;
    for (i, var) in vars.iter().enumerate() {
        let expected = grads.wrt(*var).unwrap().to_vec();
        let shape = inputs[i].shape().to_vec();
        for (flat, &want) in expected.iter().enumerate() {
            let mut at = vec![0; shape.len()];
            let mut rest = flat;
            for d in (0..shape.len()).rev() {
                at[d] = rest % shape[d];
                rest /= shape[d];
            }
            let sum = op
                .local_sum(&values, &output, &g, i, &at)
                .unwrap_or_else(|| panic!("{} declares its sum for input {i}", op.label()));
            let product: f64 = sum
                .terms
                .iter()
                .map(|t| t.factors.iter().map(|f| f.1).product::<f64>())
                .sum();
            assert!(
                (sum.total() - want).abs() <= 1e-10 * want.abs().max(1.0),
                "{} input {i} at {at:?}: {} ({}) against backprop's {want}",
                op.label(),
                sum.total(),
                sum.formula
            );
            assert_eq!(
                product,
                sum.total(),
                "each term is the product of its factors"
            );
            checked += 1;
        }
    }
    assert!(checked > 0);
}

#[test]
fn element_wise_functions_and_arithmetic_with_broadcasting() {
    let mut r = Random(0x9e37_79b9_7f4a_7c15);
    for f in [
        Elementwise::Relu,
        Elementwise::Sigmoid,
        Elementwise::Tanh,
        Elementwise::Exp,
        Elementwise::LeakyRelu { slope: 0.1 },
    ] {
        let x = r.tensor(&[3, 4], false);
        check(Op::Map(f), &[x], &mut r);
    }
    for op in [Op::Add, Op::Sub, Op::Mul, Op::Div] {
        let (a, b) = (r.tensor(&[2, 3, 4], false), r.tensor(&[3, 1], false));
        // Keep the divisor away from 0.
        let b = if op == Op::Div {
            b.map(|v| v.abs() + 0.5)
        } else {
            b
        };
        check(op.clone(), &[a.clone(), b.clone()], &mut r);
        check(op, &[b, a], &mut r);
    }
    let x = r.tensor(&[2, 3, 2], false);
    check(
        Op::Reshape { shape: vec![2, 6] },
        std::slice::from_ref(&x),
        &mut r,
    );
    check(Op::Dropout { p: 0.4, stream: 11 }, &[x], &mut r);
}

#[test]
fn dense_layers_with_and_without_their_relu() {
    let mut r = Random(0x2545_f491_4f6c_dd1d);
    for op in [Op::Linear, Op::LinearRelu] {
        let (x, w, b) = (
            r.tensor(&[5, 3], false),
            r.tensor(&[4, 3], false),
            r.tensor(&[4], false),
        );
        check(op.clone(), &[x.clone(), w.clone(), b], &mut r);
        check(op, &[x, w], &mut r);
    }
}

#[test]
fn convolutions_with_stride_padding_and_dilation() {
    let mut r = Random(0x1234_5678_9abc_def1);
    for (kernel, stride, padding, dilation, size) in [
        ([3, 3], [1, 1], [0, 0], [1, 1], [6, 5]),
        ([3, 2], [2, 1], [1, 2], [1, 2], [7, 6]),
        ([2, 2], [2, 3], [1, 0], [2, 1], [5, 8]),
    ] {
        let window = Window2d {
            kernel,
            stride,
            padding,
            dilation,
        };
        let x = r.tensor(&[2, 3, size[0], size[1]], false);
        let k = r.tensor(&[2, 3, kernel[0], kernel[1]], false);
        let b = r.tensor(&[2], false);
        check(Op::Conv2d { window }, &[x.clone(), k.clone(), b], &mut r);
        check(Op::Conv2d { window }, &[x, k], &mut r);
    }
}

#[test]
fn poolings_route_or_split_the_gradient_ties_included() {
    let mut r = Random(0x0bad_cafe_dead_beef);
    for (kernel, stride, padding, size) in [
        ([2, 2], [2, 2], [0, 0], [6, 6]),
        ([3, 3], [2, 2], [1, 1], [7, 5]),
        ([2, 3], [1, 2], [0, 1], [5, 7]),
    ] {
        let window = Window2d {
            kernel,
            stride,
            padding,
            dilation: [1, 1],
        };
        // Whole numbers in [−2, 2]: most windows hold a tied maximum.
        let x = r.tensor(&[2, 2, size[0], size[1]], true);
        check(Op::MaxPool2d { window }, std::slice::from_ref(&x), &mut r);
        check(Op::AvgPool2d { window }, &[x], &mut r);
    }
}

#[test]
fn normalisations_along_their_three_paths() {
    let mut r = Random(0xfeed_face_0123_4567);
    for shape in [vec![5, 3], vec![3, 2, 2, 3]] {
        let x = r.tensor(&shape, false);
        let (gamma, beta) = (r.tensor(&[shape[1]], false), r.tensor(&[shape[1]], false));
        check(
            Op::BatchNorm { eps: 1e-5 },
            &[x.clone(), gamma, beta],
            &mut r,
        );
        check(Op::BatchNorm { eps: 1e-5 }, &[x], &mut r);
    }
    let x = r.tensor(&[3, 2, 4], false);
    let (gamma, beta) = (r.tensor(&[2, 4], false), r.tensor(&[2, 4], false));
    check(
        Op::LayerNorm {
            trailing: 2,
            eps: 1e-5,
        },
        &[x.clone(), gamma, beta],
        &mut r,
    );
    check(
        Op::LayerNorm {
            trailing: 1,
            eps: 1e-5,
        },
        &[x],
        &mut r,
    );
}
