//! The multithreaded path against the single-threaded one. In a training loop every
//! large product is cut into one block of output per thread (crate::parallel) and
//! large parameters are updated one block per thread. Each output element is one
//! `gemm` kernel's sum over the inner dimension, but `gemm` picks its blocking of that
//! dimension from the shape it is given, so for some shapes (k = 784 with a block 64
//! wide: W1's first layer) a block sums in a different order than the whole product:
//! results then agree to rounding. For a given thread count they are the same from
//! run to run. Fused layers (a linear layer and its ReLU as one node) against the same
//! layers recorded one node each, on one and on two threads. (Its own test binary:
//! the thread count is process-wide.)

use chainrule::data::{Dataset, Target};
use chainrule::nn::{Module, Param, Sequential};
use chainrule::tensor::set_num_threads;
use chainrule::train::{TrainConfig, fit};
use chainrule::{Result, Tensor, Var};

/// A model that is not a [`Sequential`] stack: training records its own forward, one
/// node per layer (no fused layers).
struct OnePerLayer(Sequential<f32>);

impl Module<f32> for OnePerLayer {
    fn params(&self) -> &[Param<f32>] {
        self.0.params()
    }
    fn params_mut(&mut self) -> &mut [Param<f32>] {
        self.0.params_mut()
    }
    fn forward<'t>(&self, p: &[Var<'t, f32>], x: Var<'t, f32>) -> Result<Var<'t, f32>> {
        self.0.forward(p, x)
    }
}

/// The thread count is process-wide and the tests run in parallel: one run at a time.
static ONE_RUN_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Trains `model` on `threads` threads and returns its parameters' values.
fn trained<M: Module<f32>>(
    mut model: M,
    data: &Dataset<f32>,
    config: &TrainConfig,
    threads: usize,
) -> Vec<f32> {
    let _turn = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    set_num_threads(threads);
    fit(&mut model, data, None, config, |_| {}).unwrap();
    set_num_threads(0);
    model
        .params()
        .iter()
        .flat_map(|p| p.value.to_vec())
        .collect()
}

fn model(json: &str) -> Sequential<f32> {
    Sequential::<f32>::from_json(json, 3).unwrap()
}

fn train(json: &str, data: &Dataset<f32>, config: &TrainConfig, threads: usize) -> Vec<f32> {
    trained(model(json), data, config, threads)
}

fn train_one_node_per_layer(
    json: &str,
    data: &Dataset<f32>,
    config: &TrainConfig,
    threads: usize,
) -> Vec<f32> {
    trained(OnePerLayer(model(json)), data, config, threads)
}

#[track_caller]
fn close(a: &[f32], b: &[f32], tolerance: f32, what: &str) {
    let worst = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / y.abs().max(1.0))
        .fold(0.0f32, f32::max);
    assert!(worst <= tolerance, "{what}: worst difference {worst}");
}

#[test]
fn every_optimizer_trains_the_same_on_one_two_and_three_threads() {
    // Products of 2^25 multiply-adds, cut by columns (forward) and by rows (weight
    // gradients); three threads make uneven blocks. These shapes block alike whole
    // and cut, so here the results are equal bit for bit.
    let x = Tensor::<f32>::rand_uniform(&[512, 256], -1.0, 1.0, 1).unwrap();
    let data = Dataset::new(x, Target::Classes((0..512).map(|i| i % 10).collect())).unwrap();
    let json = r#"{"layers": [{"type": "linear", "in": 256, "out": 512}, {"type": "relu"}, {"type": "linear", "in": 512, "out": 256}, {"type": "relu"}, {"type": "linear", "in": 256, "out": 10}]}"#;
    for optimizer in [
        r#"{"type": "adam", "amsgrad": true}"#,
        r#"{"type": "sgd", "lr": 0.01, "momentum": 0.9, "nesterov": true, "weight_decay": 0.01}"#,
        r#"{"type": "rmsprop", "lr": 0.001, "momentum": 0.5, "centered": true}"#,
        r#"{"type": "adagrad", "lr": 0.01}"#,
        r#"{"type": "adadelta", "rho": 0.8, "weight_decay": 0.01}"#,
    ] {
        let config = TrainConfig::from_json(&format!(
            r#"{{"loss": "cross_entropy", "optimizer": {optimizer}, "batch_size": 256, "epochs": 2}}"#
        ))
        .unwrap();
        let one = train(json, &data, &config, 1);
        assert_eq!(
            one,
            train(json, &data, &config, 2),
            "{optimizer}, 2 threads"
        );
        assert_eq!(
            one,
            train(json, &data, &config, 3),
            "{optimizer}, 3 threads"
        );
    }
}

#[test]
fn w1_shapes_agree_to_rounding_and_repeat_exactly() {
    // W1's network: its first layer's products (64 × 784 × 128) sum over k in another
    // order when cut, so one and two threads differ in the last bits (measured: 3e-8
    // after two epochs); two runs on two threads are identical.
    let x = Tensor::<f32>::rand_uniform(&[640, 784], 0.0, 1.0, 1).unwrap();
    let data = Dataset::new(x, Target::Classes((0..640).map(|i| i % 10).collect())).unwrap();
    let config = TrainConfig::from_json(r#"{"loss": "cross_entropy", "optimizer": {"type": "sgd", "lr": 0.1}, "batch_size": 64, "epochs": 2}"#).unwrap();
    let json = r#"{"layers": [{"type": "linear", "in": 784, "out": 128}, {"type": "relu"}, {"type": "linear", "in": 128, "out": 10}]}"#;
    let one = train(json, &data, &config, 1);
    let two = train(json, &data, &config, 2);
    close(&two, &one, 1e-6, "W1, 2 threads against 1");
    assert_eq!(two, train(json, &data, &config, 2), "W1, 2 threads, twice");
}

#[test]
fn fused_layers_train_bit_for_bit_like_one_node_per_layer() {
    // Activations of 256 × 512 values are biased, rectified and masked in one block
    // per thread; the 10-wide ones at once. A ReLU after the last layer and layers
    // without bias take the other branches of the fused rule.
    let x = Tensor::<f32>::rand_uniform(&[512, 256], -1.0, 1.0, 4).unwrap();
    let classes = Dataset::new(
        x.clone(),
        Target::Classes((0..512).map(|i| i % 10).collect()),
    )
    .unwrap();
    let y = Tensor::<f32>::rand_uniform(&[512, 4], 0.0, 1.0, 5).unwrap();
    let values = Dataset::new(x, Target::Values(y)).unwrap();
    let classifier = r#"{"layers": [{"type": "linear", "in": 256, "out": 512}, {"type": "relu"}, {"type": "linear", "in": 512, "out": 64}, {"type": "relu"}, {"type": "linear", "in": 64, "out": 10}]}"#;
    let regressor = r#"{"layers": [{"type": "linear", "in": 256, "out": 512, "bias": false}, {"type": "relu"}, {"type": "linear", "in": 512, "out": 4}, {"type": "relu"}]}"#;
    let runs = [
        (
            classifier,
            &classes,
            r#""cross_entropy", "optimizer": {"type": "sgd", "lr": 0.1, "momentum": 0.9}"#,
        ),
        (
            regressor,
            &values,
            r#""mse", "optimizer": {"type": "adam", "lr": 0.01}"#,
        ),
    ];
    for threads in [1, 2] {
        for (json, data, loss_and_optimizer) in runs {
            let config = TrainConfig::from_json(&format!(
                r#"{{"loss": {loss_and_optimizer}, "batch_size": 256, "epochs": 3}}"#
            ))
            .unwrap();
            let fused = train(json, data, &config, threads);
            let plain = train_one_node_per_layer(json, data, &config, threads);
            assert_eq!(fused, plain, "{loss_and_optimizer}, {threads} threads");
        }
    }
}

#[test]
fn a_convolutional_network_with_dropout_and_batch_norm_trains_alike_on_one_and_two_threads() {
    // The kernels cut their work by samples and planes, and dropout's masks are a
    // function of the run's seed, the step and the element: not of the threads.
    let json = r#"{"input": [2, 12, 12], "layers": [
        {"type": "conv2d", "in_channels": 2, "out_channels": 8, "kernel_size": 3, "padding": 1},
        {"type": "batch_norm2d", "num_features": 8}, {"type": "relu"},
        {"type": "conv2d", "in_channels": 8, "out_channels": 16, "kernel_size": 3, "stride": 2},
        {"type": "relu"}, {"type": "max_pool2d", "kernel_size": 2}, {"type": "dropout", "p": 0.3},
        {"type": "flatten"}, {"type": "linear", "in": 64, "out": 10}]}"#;
    let x = Tensor::<f32>::rand_uniform(&[192, 2, 12, 12], -1.0, 1.0, 6).unwrap();
    let data = Dataset::new(x, Target::Classes((0..192).map(|i| i % 10).collect())).unwrap();
    let config = TrainConfig::from_json(r#"{"loss": "cross_entropy", "optimizer": {"type": "adadelta"}, "batch_size": 64, "epochs": 2, "shuffle": true}"#).unwrap();
    let one = train(json, &data, &config, 1);
    let two = train(json, &data, &config, 2);
    close(&two, &one, 1e-6, "CNN, 2 threads against 1");
    assert_eq!(two, train(json, &data, &config, 2), "CNN, 2 threads, twice");
}
