//! The scalar tape and the small-network fast path of training: each scalar
//! operation against finite differences and against the tensor rule it mirrors, and
//! whole training runs on the scalar path against the tensor path.

use chainrule::autodiff::Elementwise;
use chainrule::autodiff::scalar::{ScalarOp, ScalarTape};
use chainrule::data::{Dataset, Target};
use chainrule::loss::Loss;
use chainrule::nn::{Module, Sequential};
use chainrule::train::{TrainConfig, fit};
use chainrule::{Float, Tape, Tensor, Var};

const UNARY: [ScalarOp; 9] = [
    ScalarOp::Map(Elementwise::Scale { c: -2.5 }),
    ScalarOp::Map(Elementwise::Pow { p: 3.0 }),
    ScalarOp::Map(Elementwise::Exp),
    ScalarOp::Map(Elementwise::Log),
    ScalarOp::Map(Elementwise::Abs),
    ScalarOp::Map(Elementwise::Relu),
    ScalarOp::Map(Elementwise::LeakyRelu { slope: 0.1 }),
    ScalarOp::Map(Elementwise::Sigmoid),
    ScalarOp::Map(Elementwise::Tanh),
];
const BINARY: [ScalarOp; 4] = [ScalarOp::Add, ScalarOp::Sub, ScalarOp::Mul, ScalarOp::Div];

/// The tensor tape's version of a scalar operation.
fn on_tensor_tape<'t>(op: ScalarOp, a: Var<'t, f64>, b: Var<'t, f64>) -> Var<'t, f64> {
    match op {
        ScalarOp::Add => a + b,
        ScalarOp::Sub => a - b,
        ScalarOp::Mul => a * b,
        ScalarOp::Div => a / b,
        ScalarOp::Map(f) => a.map(f),
        ScalarOp::Leaf => a,
    }
}

#[test]
fn every_scalar_operation_matches_finite_differences_and_the_tensor_rule() {
    let points: [(f64, f64); 4] = [(0.7, 1.3), (1.9, -0.4), (0.25, 2.0), (-1.2, 0.6)];
    let h: f64 = 1e-6;
    for op in UNARY.into_iter().chain(BINARY) {
        for (a, b) in points {
            if op == ScalarOp::Map(Elementwise::Log) && a <= 0.0 {
                continue;
            }
            let out = op.forward(a, b);
            let (da, db) = op.local(a, b, out);
            let numeric_a = (op.forward(a + h, b) - op.forward(a - h, b)) / (2.0 * h);
            assert!(
                (da - numeric_a).abs() < 1e-6 * numeric_a.abs().max(1.0),
                "{op:?} ∂a at {a}: {da} vs {numeric_a}"
            );
            if BINARY.contains(&op) {
                let numeric_b = (op.forward(a, b + h) - op.forward(a, b - h)) / (2.0 * h);
                assert!(
                    (db - numeric_b).abs() < 1e-6 * numeric_b.abs().max(1.0),
                    "{op:?} ∂b: {db} vs {numeric_b}"
                );
            }
            // The tensor tape computes the same value and the same gradients.
            let tape = Tape::<f64>::new();
            let (ta, tb) = (tape.param_scalar(a), tape.param_scalar(b));
            let y = on_tensor_tape(op, ta, tb);
            let grads = y.backward().unwrap();
            let grad = |v| grads.wrt(v).map_or(0.0, |g| g.item().unwrap());
            assert_eq!(y.item().unwrap(), out, "{op:?} forward at {a}");
            assert!((grad(ta) - da).abs() <= 1e-15 * da.abs().max(1.0), "{op:?}");
            if BINARY.contains(&op) {
                assert!((grad(tb) - db).abs() <= 1e-15 * db.abs().max(1.0), "{op:?}");
            }
        }
    }
}

#[test]
fn the_scalar_tape_sums_the_paths_of_a_reused_value() {
    // y = x·x + eˣ: dy/dx = 2x + eˣ (x feeds three uses).
    let mut tape = ScalarTape::<f64>::new();
    let x = tape.param(0.5);
    let xx = tape.mul(x, x);
    let e = tape.exp(x);
    let y = tape.add(xx, e);
    tape.backward(y);
    assert!((tape.grad(x) - (2.0 * 0.5 + 0.5f64.exp())).abs() < 1e-15);
    // A constant gets no gradient; clearing keeps nothing.
    let c = tape.constant(3.0);
    let z = tape.mul(c, x);
    tape.backward(z);
    assert_eq!((tape.grad(c), tape.grad(x)), (0.0, 3.0));
    tape.clear();
    assert!(tape.is_empty());
}

fn train<F: Float>(
    model_json: &str,
    x: Tensor<F>,
    target: Target<F>,
    config: &str,
    scalar_path: bool,
) -> Vec<F> {
    let mut model = Sequential::<F>::from_json(model_json, 7).unwrap();
    let data = Dataset::new(x, target).unwrap();
    let mut config = TrainConfig::from_json(config).unwrap();
    config.scalar_path = scalar_path;
    fit(&mut model, &data, None, &config, |_| {}).unwrap();
    model
        .params()
        .iter()
        .flat_map(|p| p.value.to_vec())
        .collect()
}

#[track_caller]
fn close<F: Float>(fast: &[F], plain: &[F], tolerance: f64, what: &str) {
    assert_eq!(fast.len(), plain.len());
    for (a, b) in fast.iter().zip(plain) {
        let (a, b) = (a.as_f64(), b.as_f64());
        assert!(
            (a - b).abs() <= tolerance * b.abs().max(1.0),
            "{what}: {a} vs {b}"
        );
    }
}

fn xor<F: Float>() -> (Tensor<F>, Tensor<F>) {
    let c = F::from_f64;
    (
        Tensor::from_vec(
            [0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0].map(c).to_vec(),
            &[4, 2],
        )
        .unwrap(),
        Tensor::from_vec([0.0, 1.0, 1.0, 0.0].map(c).to_vec(), &[4, 1]).unwrap(),
    )
}

#[test]
fn training_on_the_scalar_path_equals_the_tensor_path() {
    // Summation order can differ (the matrix product may fuse a multiply-add), so the
    // comparison allows rounding: 1e-10 relative in f64 after hundreds of steps.
    let layers = |activation: &str| {
        format!(
            r#"{{"layers": [{{"type": "linear", "in": 2, "out": 3}}, {{"type": "{activation}"}}, {{"type": "linear", "in": 3, "out": 1}}]}}"#
        )
    };
    for activation in ["relu", "sigmoid", "tanh", "leaky_relu", "identity"] {
        for loss in ["mse", "sse", "half_sse", "mae"] {
            for optimizer in [
                r#"{"type": "sgd", "lr": 0.05}"#,
                r#"{"type": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": true}"#,
                r#"{"type": "adam", "lr": 0.01}"#,
            ] {
                for batch in [1, 3] {
                    let config = format!(
                        r#"{{"loss": "{loss}", "optimizer": {optimizer}, "batch_size": {batch}, "epochs": 60}}"#
                    );
                    let run = |scalar| {
                        let (x, y) = xor::<f64>();
                        train(&layers(activation), x, Target::Values(y), &config, scalar)
                    };
                    close(
                        &run(true),
                        &run(false),
                        1e-10,
                        &format!("{activation} {loss} {optimizer} batch {batch}"),
                    );
                }
            }
        }
    }
    // Cross-entropy over three classes, and f32 (W3's type), 1e-4 relative.
    let model = r#"{"layers": [{"type": "linear", "in": 2, "out": 4}, {"type": "tanh"}, {"type": "linear", "in": 4, "out": 3}]}"#;
    let config = r#"{"loss": "cross_entropy", "optimizer": {"type": "sgd", "lr": 0.1}, "batch_size": 2, "epochs": 100}"#;
    let run = |scalar| {
        let (x, _) = xor::<f64>();
        train(model, x, Target::Classes(vec![0, 1, 2, 1]), config, scalar)
    };
    close(&run(true), &run(false), 1e-10, "cross_entropy");
    let w3 = r#"{"layers": [{"type": "linear", "in": 2, "out": 2}, {"type": "relu"}, {"type": "linear", "in": 2, "out": 1}]}"#;
    let config = r#"{"loss": "mse", "optimizer": {"type": "sgd", "lr": 0.05}, "batch_size": 1, "epochs": 500}"#;
    let run = |scalar| {
        let (x, y) = xor::<f32>();
        train(w3, x, Target::Values(y), config, scalar)
    };
    close(&run(true), &run(false), 1e-4, "W3 in f32");
}

#[test]
fn what_the_scalar_path_cannot_express_trains_on_the_tensor_path() {
    // Softmax layers and BCE have no scalar form: the run falls back, with the same
    // result whether the path is on or off.
    let model = r#"{"layers": [{"type": "linear", "in": 2, "out": 2}, {"type": "softmax"}]}"#;
    let (x, _) = xor::<f64>();
    let y = Tensor::from_vec(vec![1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0], &[4, 2]).unwrap();
    for loss in ["mse", "bce"] {
        let config = format!(
            r#"{{"loss": "{loss}", "optimizer": {{"type": "sgd", "lr": 0.1}}, "batch_size": 2, "epochs": 5}}"#
        );
        let on = train(model, x.clone(), Target::Values(y.clone()), &config, true);
        let off = train(model, x.clone(), Target::Values(y.clone()), &config, false);
        assert_eq!(on, off, "{loss}");
    }
    assert!(
        Loss::Bce
            .compute_scalar(&mut ScalarTape::<f64>::new(), &[], 1, &Target::Values(y))
            .is_none()
    );
}
