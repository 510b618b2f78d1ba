//! The conventions and invariants of the autodiff core, each checked against a value
//! worked out by hand (the math is in the comments) or against an independent form.

use chainrule::{Error, Float, Tape, Tensor, Var};

/// Runs a numeric test body for both f32 and f64.
macro_rules! for_f32_and_f64 {
    ($name:ident, |$t:ident| $body:block) => {
        mod $name {
            use super::*;
            fn run<$t: Float>() $body
            #[test]
            fn f32() { run::<f32>() }
            #[test]
            fn f64() { run::<f64>() }
        }
    };
}

fn grad_at<F: Float>(x: f64, f: impl for<'t> Fn(Var<'t, F>) -> Var<'t, F>) -> f64 {
    let tape = Tape::<F>::new();
    let v = tape.param_scalar(F::from_f64(x));
    let grads = f(v).backward().unwrap();
    grads.wrt(v).unwrap().item().unwrap().as_f64()
}

for_f32_and_f64!(relu_derivative_at_zero_is_zero, |F| {
    assert_eq!(grad_at::<F>(0.0, |x| x.relu()), 0.0);
    assert_eq!(grad_at::<F>(1e-3, |x| x.relu()), 1.0);
});

for_f32_and_f64!(leaky_relu_derivative_at_zero_is_its_slope, |F| {
    let slope = grad_at::<F>(0.0, |x| x.leaky_relu(0.01));
    assert!((slope - 0.01).abs() < 1e-7);
});

for_f32_and_f64!(abs_derivative_at_zero_is_zero, |F| {
    assert_eq!(grad_at::<F>(0.0, |x| x.abs()), 0.0);
});

for_f32_and_f64!(clamp_passes_the_gradient_at_its_bounds, |F| {
    // PyTorch: d/dx clamp(x, lo, hi) = 1 for lo ≤ x ≤ hi.
    assert_eq!(grad_at::<F>(1.0, |x| x.clamp(0.0, 1.0)), 1.0);
    assert_eq!(grad_at::<F>(1.5, |x| x.clamp(0.0, 1.0)), 0.0);
});

for_f32_and_f64!(a_value_used_twice_accumulates_both_gradients, |F| {
    // y = x·x + x  ⇒  dy/dx = 2x + 1 = 7 at x = 3.
    assert_eq!(grad_at::<F>(3.0, |x| x * x + x), 7.0);
});

for_f32_and_f64!(sigmoid_is_finite_at_extreme_inputs, |F| {
    let tape = Tape::<F>::new();
    let x = tape.param(Tensor::from_vec(vec![F::from_f64(-1e4), F::from_f64(1e4)], &[2]).unwrap());
    let y = x.sigmoid();
    assert_eq!(y.value().to_vec(), vec![F::zero(), F::one()]);
    let g = y.sum(&[], false).unwrap().backward().unwrap();
    assert!(g.wrt(x).unwrap().all_finite());
});

for_f32_and_f64!(log_softmax_is_finite_for_logits_of_ten_thousand, |F| {
    let tape = Tape::<F>::new();
    let logits = [1e4, -1e4, 0.0].map(F::from_f64).to_vec();
    let x = tape.param(Tensor::from_vec(logits, &[1, 3]).unwrap());
    let out = x.log_softmax(1).unwrap();
    // log_softmax = x − max − log Σ e^(x − max) = x − 1e4 − log(1 + tiny) = x − 1e4.
    let expected = [0.0, -2e4, -1e4].map(F::from_f64).to_vec();
    assert_eq!(out.value().to_vec(), expected);
    let g = out
        .gather(&[0])
        .unwrap()
        .sum(&[], false)
        .unwrap()
        .backward()
        .unwrap();
    assert!(g.wrt(x).unwrap().all_finite());
});

#[test]
fn softmax_equals_its_composed_form_in_value_and_gradient() {
    // Oracle: softmax(x) = exp(x) / Σ exp(x), built from primitive rules.
    let x0 = Tensor::<f64>::rand_uniform(&[3, 5], -3.0, 3.0, 1).unwrap();
    let w = Tensor::<f64>::rand_uniform(&[3, 5], -1.0, 1.0, 2).unwrap();
    let run = |fused: bool| {
        let tape = Tape::new();
        let x = tape.param(x0.clone());
        let p = if fused {
            x.softmax(1).unwrap()
        } else {
            let e = x.exp();
            e.div(e.sum(&[1], true).unwrap()).unwrap()
        };
        let loss = p
            .mul(tape.constant(w.clone()))
            .unwrap()
            .sum(&[], false)
            .unwrap();
        let g = loss.backward().unwrap();
        (p.value().to_vec(), g.wrt(x).unwrap().to_vec())
    };
    let (fused, composed) = (run(true), run(false));
    for (a, b) in fused
        .0
        .iter()
        .chain(&fused.1)
        .zip(composed.0.iter().chain(&composed.1))
    {
        assert!((a - b).abs() < 1e-14, "{a} vs {b}");
    }
}

#[test]
fn log_softmax_equals_log_of_softmax_in_value_and_gradient() {
    let x0 = Tensor::<f64>::rand_uniform(&[4, 3], -3.0, 3.0, 3).unwrap();
    let run = |fused: bool| {
        let tape = Tape::new();
        let x = tape.param(x0.clone());
        let l = if fused {
            x.log_softmax(1).unwrap()
        } else {
            x.softmax(1).unwrap().log()
        };
        let loss = l.gather(&[0, 2, 1, 1]).unwrap().mean(&[], false).unwrap();
        let g = loss.backward().unwrap();
        (l.value().to_vec(), g.wrt(x).unwrap().to_vec())
    };
    let (fused, composed) = (run(true), run(false));
    for (a, b) in fused
        .0
        .iter()
        .chain(&fused.1)
        .zip(composed.0.iter().chain(&composed.1))
    {
        assert!((a - b).abs() < 1e-13, "{a} vs {b}");
    }
}

/// The naive triple loop, as the reference the GEMM routing is tested against.
fn naive_matmul(a: &Tensor<f64>, b: &Tensor<f64>) -> Vec<f64> {
    let (m, k, n) = (a.shape()[0], a.shape()[1], b.shape()[1]);
    let mut out = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            out[i * n + j] = (0..k)
                .map(|p| a.get(&[i, p]).unwrap() * b.get(&[p, j]).unwrap())
                .sum();
        }
    }
    out
}

#[test]
fn matmul_matches_a_naive_reference_for_every_layout_and_size() {
    // Sizes below and above the threshold where products go multi-threaded; with
    // k = 256 (f64) and 512 (f32) the transposed right operand's columns are 2 KiB
    // apart, and the product copies it with padded columns first.
    for (i, &(m, k, n)) in [
        (1, 1, 1),
        (3, 5, 2),
        (17, 33, 9),
        (70, 80, 90),
        (128, 64, 200),
        (40, 256, 24),
        (9, 512, 130),
    ]
    .iter()
    .enumerate()
    {
        let seed = 100 * i as u64;
        let a = Tensor::<f64>::rand_uniform(&[m, k], -1.0, 1.0, seed).unwrap();
        let b = Tensor::<f64>::rand_uniform(&[k, n], -1.0, 1.0, seed + 1).unwrap();
        let expected = naive_matmul(&a, &b);
        let close = |got: Vec<f64>| {
            got.iter()
                .zip(&expected)
                .all(|(g, e)| (g - e).abs() < 1e-12 * k as f64)
        };
        assert!(close(a.matmul(&b).unwrap().to_vec()), "{m}x{k}x{n}");
        // The same product from transposed (strided) operands.
        let at = a.t().unwrap().reshape(&[k, m]).unwrap().t().unwrap();
        let bt = b.t().unwrap().reshape(&[n, k]).unwrap().t().unwrap();
        assert!(
            close(at.matmul(&bt).unwrap().to_vec()),
            "strided {m}x{k}x{n}"
        );
        // And in f32, to f32 accuracy, from contiguous and from strided operands.
        for (lhs, rhs) in [(&a, &b), (&at, &bt)] {
            let got32 = lhs
                .cast::<f32>()
                .matmul(&rhs.cast::<f32>())
                .unwrap()
                .to_vec();
            assert!(
                got32
                    .iter()
                    .zip(&expected)
                    .all(|(g, e)| (f64::from(*g) - e).abs() < 1e-5 * k as f64),
                "f32 {m}x{k}x{n}"
            );
        }
    }
}

#[test]
fn a_chain_of_100_thousand_operations_backpropagates_without_recursion() {
    // y = x + 1 + 1 + ... ; dy/dx = 1. A recursive topological sort would overflow.
    let tape = Tape::<f64>::new();
    let x = tape.param_scalar(0.0);
    let mut y = x;
    for _ in 0..100_000 {
        y = y + 1.0;
    }
    assert_eq!(y.item().unwrap(), 100_000.0);
    assert_eq!(y.backward().unwrap().wrt(x).unwrap().item().unwrap(), 1.0);
}

#[test]
fn no_grad_records_no_history_and_detach_stops_the_gradient() {
    let tape = Tape::<f64>::new();
    let w = tape.param_scalar(2.0);
    let frozen = tape.no_grad(|| w * w);
    assert!(!frozen.requires_grad());
    assert!(tape.inputs(frozen.id()).is_empty());
    // y = w · stop(w²) ⇒ dy/dw = w² = 4 (not 3w² = 12).
    let y = w * (w * w).detach();
    assert_eq!(y.backward().unwrap().wrt(w).unwrap().item().unwrap(), 4.0);
}

#[test]
fn backward_from_a_non_scalar_is_an_error() {
    let tape = Tape::<f64>::new();
    let x = tape.param(Tensor::ones(&[2]));
    assert!(matches!(
        x.exp().backward(),
        Err(Error::NonScalarBackward { .. })
    ));
}

#[test]
fn mixing_two_tapes_is_an_error() {
    let (a, b) = (Tape::<f64>::new(), Tape::<f64>::new());
    let x = a.param_scalar(1.0);
    let y = b.param_scalar(1.0);
    assert!(matches!(x.add(y), Err(Error::ForeignTape { .. })));
}

#[test]
fn shape_errors_name_the_operation_and_both_shapes() {
    let tape = Tape::<f64>::new();
    let a = tape.param(Tensor::zeros(&[2, 3]));
    let b = tape.param(Tensor::zeros(&[2, 4]));
    let err = a.matmul(b).unwrap_err().to_string();
    assert!(
        err.contains("matmul") && err.contains("[2, 3]") && err.contains("[2, 4]"),
        "{err}"
    );
}
