//! The small-network fast path of training (the scalar tape, private to `train`):
//! whole training runs of [`Sequential`] models, which take it, against the same
//! models behind a plain [`Module`], which train on the tensor tape one node per
//! operation.

use chainrule::data::{Dataset, Target};
use chainrule::nn::{Module, Param, Sequential};
use chainrule::train::{TrainConfig, fit};
use chainrule::{Float, Result, Tensor, Var};

/// A model that is not a [`Sequential`] stack: training records its own forward,
/// one node per operation, on the tensor tape (no fast path).
struct OnePerOperation<F: Float>(Sequential<F>);

impl<F: Float> Module<F> for OnePerOperation<F> {
    fn params(&self) -> &[Param<F>] {
        self.0.params()
    }
    fn params_mut(&mut self) -> &mut [Param<F>] {
        self.0.params_mut()
    }
    fn forward<'t>(&self, p: &[Var<'t, F>], x: Var<'t, F>) -> Result<Var<'t, F>> {
        self.0.forward(p, x)
    }
}

fn train<F: Float>(
    model_json: &str,
    x: Tensor<F>,
    target: Target<F>,
    config: &str,
    clip_grad_norm: Option<f64>,
    scalar_path: bool,
) -> Vec<F> {
    let model = Sequential::<F>::from_json(model_json, 7).unwrap();
    let data = Dataset::new(x, target).unwrap();
    let mut config = TrainConfig::from_json(config).unwrap();
    config.clip_grad_norm = clip_grad_norm;
    let params = if scalar_path {
        let mut model = model;
        fit(&mut model, &data, None, &config, |_| {}).unwrap();
        model.params().to_vec()
    } else {
        let mut model = OnePerOperation(model);
        fit(&mut model, &data, None, &config, |_| {}).unwrap();
        model.params().to_vec()
    };
    params.iter().flat_map(|p| p.value.to_vec()).collect()
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
                // Clipping (a norm of 0.1 clips nearly every step) runs on each
                // path's own form of the gradients.
                for (batch, clip) in [(1, None), (3, None), (2, Some(0.1))] {
                    let config = format!(
                        r#"{{"loss": "{loss}", "optimizer": {optimizer}, "batch_size": {batch}, "epochs": 60}}"#
                    );
                    let run = |scalar| {
                        let (x, y) = xor::<f64>();
                        train(
                            &layers(activation),
                            x,
                            Target::Values(y),
                            &config,
                            clip,
                            scalar,
                        )
                    };
                    close(
                        &run(true),
                        &run(false),
                        1e-10,
                        &format!("{activation} {loss} {optimizer} batch {batch} clip {clip:?}"),
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
        train(
            model,
            x,
            Target::Classes(vec![0, 1, 2, 1]),
            config,
            None,
            scalar,
        )
    };
    close(&run(true), &run(false), 1e-10, "cross_entropy");
    let w3 = r#"{"layers": [{"type": "linear", "in": 2, "out": 2}, {"type": "relu"}, {"type": "linear", "in": 2, "out": 1}]}"#;
    let config = r#"{"loss": "mse", "optimizer": {"type": "sgd", "lr": 0.05}, "batch_size": 1, "epochs": 500}"#;
    let run = |scalar| {
        let (x, y) = xor::<f32>();
        train(w3, x, Target::Values(y), config, None, scalar)
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
        let run = |scalar| {
            train(
                model,
                x.clone(),
                Target::Values(y.clone()),
                &config,
                None,
                scalar,
            )
        };
        let (on, off) = (run(true), run(false));
        assert_eq!(on, off, "{loss}");
    }
}
