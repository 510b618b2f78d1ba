//! The layers of revision 2 beyond their PyTorch reference cases: dropout's masks
//! (their rate, their scale, their key), training and evaluation mode, a resumed run
//! that continues bit for bit with dropout and batch norm, and the whole-model shape
//! check's messages.

use chainrule::data::{Dataset, Target};
use chainrule::nn::{Mode, Module, Sequential};
use chainrule::optim::Optimizer;
use chainrule::train::{Position, Session, TrainConfig, TrainState, fit, fit_from};
use chainrule::{Tape, Tensor};

fn forward(model: &Sequential<f64>, x: &Tensor<f64>) -> Tensor<f64> {
    let tape = Tape::new();
    model
        .forward(&model.bind(&tape), tape.constant(x.clone()))
        .unwrap()
        .value()
}

#[test]
fn dropout_drops_at_its_rate_scales_the_rest_and_follows_its_key() {
    let mut model =
        Sequential::<f64>::from_json(r#"{"layers": [{"type": "dropout", "p": 0.3}]}"#, 0).unwrap();
    let x = Tensor::ones(&[200, 500]);
    model.set_noise_key(7);
    let a = forward(&model, &x).to_vec();
    let dropped = a.iter().filter(|&&v| v == 0.0).count() as f64 / a.len() as f64;
    // 100,000 draws: the rate's standard error is 0.0015.
    assert!((dropped - 0.3).abs() < 0.006, "dropped {dropped}");
    assert!(a.iter().all(|&v| v == 0.0 || v == 1.0 / 0.7));
    assert_eq!(
        a,
        forward(&model, &x).to_vec(),
        "the same key, the same mask"
    );
    model.set_noise_key(8);
    assert_ne!(a, forward(&model, &x).to_vec(), "another key, another mask");
    model.set_mode(Mode::Eval);
    assert_eq!(
        forward(&model, &x).to_vec(),
        x.to_vec(),
        "the identity in evaluation"
    );
}

#[test]
fn batch_norm_uses_batch_statistics_in_training_and_running_ones_in_evaluation() {
    let mut model = Sequential::<f64>::from_json(
        r#"{"layers": [{"type": "batch_norm1d", "num_features": 2, "momentum": 0.5}]}"#,
        0,
    )
    .unwrap();
    let x = Tensor::from_vec(vec![1.0, 10.0, 3.0, 30.0], &[2, 2]).unwrap();
    let y = forward(&model, &x).to_vec();
    // Channel 0: 1 and 3 (mean 2, variance 1); channel 1: 10 and 30 (20, 100).
    let (a, b) = (
        1.0 / (1.0 + 1e-5f64).sqrt(),
        10.0 / (100.0 + 1e-5f64).sqrt(),
    );
    let expected = [-a, -b, a, b];
    for (a, b) in y.iter().zip(expected) {
        assert!((a - b).abs() < 1e-12, "{y:?}");
    }
    // One step's statistics: mean (2, 20), unbiased variance (2, 200); momentum 0.5.
    model.update_buffers();
    let buffers: Vec<Vec<f64>> = model.buffers().iter().map(|b| b.value.to_vec()).collect();
    assert_eq!(buffers, vec![vec![1.0, 10.0], vec![1.5, 100.5], vec![1.0]]);
    model.set_mode(Mode::Eval);
    let z = forward(&model, &x).to_vec();
    let sd = |v: f64| (v + 1e-5).sqrt();
    let expected = [0.0, 0.0, 2.0 / sd(1.5), 20.0 / sd(100.5)];
    for (a, b) in z.iter().zip(expected) {
        assert!((a - b).abs() < 1e-12, "{z:?}");
    }
}

#[test]
fn a_resumed_run_with_dropout_and_batch_norm_continues_bit_for_bit() {
    let json = r#"{"input": [1, 6, 6], "layers": [
        {"type": "conv2d", "in_channels": 1, "out_channels": 3, "kernel_size": 3, "padding": 1},
        {"type": "batch_norm2d", "num_features": 3}, {"type": "relu"},
        {"type": "max_pool2d", "kernel_size": 2}, {"type": "dropout", "p": 0.4},
        {"type": "flatten"}, {"type": "linear", "in": 27, "out": 3}]}"#;
    let x = Tensor::<f64>::rand_uniform(&[24, 1, 6, 6], -1.0, 1.0, 3).unwrap();
    let data = Dataset::new(x, Target::Classes((0..24).map(|i| i % 3).collect())).unwrap();
    let config = TrainConfig::from_json(
        r#"{"loss": "cross_entropy", "optimizer": {"type": "adam", "lr": 0.01}, "batch_size": 5, "epochs": 3, "shuffle": true, "seed": 4}"#,
    )
    .unwrap();
    let mut whole = Sequential::<f64>::from_json(json, 1).unwrap();
    fit(&mut whole, &data, None, &config, |_| {}).unwrap();

    let mut first = config.clone();
    first.epochs = 1;
    let mut resumed = Sequential::<f64>::from_json(json, 1).unwrap();
    let mut optimizer = Optimizer::new(config.optimizer.clone());
    let session = Session {
        optimizer: &mut optimizer,
        start: TrainState::at(Position::default()),
        stop: None,
    };
    fit_from(&mut resumed, &data, None, &first, session, |_| {}).unwrap();
    let session = Session {
        optimizer: &mut optimizer,
        start: TrainState::at(Position { epoch: 1, batch: 0 }),
        stop: None,
    };
    fit_from(&mut resumed, &data, None, &config, session, |_| {}).unwrap();
    assert_eq!(resumed.state_dict(), whole.state_dict());
}

#[test]
fn the_whole_model_is_checked_when_read_naming_the_layers_at_fault() {
    let cases = [
        (
            r#"{"input": [3, 8, 8], "layers": [{"type": "conv2d", "in_channels": 1, "out_channels": 2, "kernel_size": 3}]}"#,
            "layers[0].in_channels: is 1 but the input produces 3 channels",
        ),
        (
            r#"{"input": [1, 8, 8], "layers": [{"type": "conv2d", "in_channels": 1, "out_channels": 2, "kernel_size": 3}, {"type": "batch_norm2d", "num_features": 4}]}"#,
            "layers[1].num_features: is 4 but layers[0] (conv2d) produces 2 channels",
        ),
        (
            r#"{"input": [1, 4, 4], "layers": [{"type": "conv2d", "in_channels": 1, "out_channels": 2, "kernel_size": 5}]}"#,
            "layers[0].kernel_size: [5, 5] (dilation [1, 1]) is larger than its padded input [4, 4]",
        ),
        (
            r#"{"input": [1, 8, 8], "layers": [{"type": "max_pool2d", "kernel_size": 2, "padding": 2}]}"#,
            "layers[0].padding: [2, 2] is more than half the window [2, 2]",
        ),
        (
            r#"{"input": [1, 8, 8], "layers": [{"type": "flatten"}, {"type": "linear", "in": 60, "out": 2}]}"#,
            "layers[1].in: is 60 but layers[0] (flatten) produces [64] per sample",
        ),
        (
            r#"{"input": [2, 4, 4], "layers": [{"type": "layer_norm", "normalized_shape": [4, 5]}]}"#,
            "layers[0].normalized_shape: [4, 5] is not the trailing dimensions of [2, 4, 4], which the input produces",
        ),
        (
            r#"{"layers": [{"type": "conv2d", "in_channels": 1, "out_channels": 2, "kernel_size": 3}]}"#,
            "layers[0]: conv2d needs the shape of its input: give the model a top-level \"input\" (e.g. [1, 28, 28])",
        ),
        (
            r#"{"layers": [{"type": "dropout", "p": 1.0}]}"#,
            "layers[0].p: 1 is not in [0, 1)",
        ),
    ];
    for (json, message) in cases {
        let err = Sequential::<f32>::from_json(json, 0).unwrap_err();
        assert_eq!(err.to_string(), message, "{json}");
    }
    // x must be [N, ...input].
    let m = Sequential::<f32>::from_json(
        r#"{"input": [1, 4, 4], "layers": [{"type": "flatten"}]}"#,
        0,
    )
    .unwrap();
    assert!(m.check_input(&Tensor::zeros(&[2, 1, 4, 4])).is_ok());
    assert!(m.check_input(&Tensor::zeros(&[2, 16])).is_err());
}

#[test]
fn a_model_file_round_trips_every_new_layer_and_its_buffers() {
    let json = r#"{"input": [2, 9, 8], "layers": [
        {"type": "conv2d", "in_channels": 2, "out_channels": 3, "kernel_size": [3, 2], "stride": [2, 1], "padding": 1, "dilation": [1, 2], "bias": false},
        {"type": "batch_norm2d", "num_features": 3, "eps": 0.001, "momentum": 0.2, "affine": false},
        {"type": "avg_pool2d", "kernel_size": 2, "stride": 1},
        {"type": "max_pool2d", "kernel_size": [2, 3], "padding": [1, 1]},
        {"type": "layer_norm", "normalized_shape": [3, 3], "elementwise_affine": true},
        {"type": "flatten"}, {"type": "dropout", "p": 0.1},
        {"type": "linear", "in": 27, "out": 4}, {"type": "batch_norm1d", "num_features": 4}]}"#;
    let m = Sequential::<f32>::from_json(json, 0).unwrap();
    let back = Sequential::<f32>::from_json(&m.to_json(), 0).unwrap();
    assert_eq!(back.layers(), m.layers());
    assert_eq!(back.input_shape(), Some(vec![2, 9, 8]));
    let names: Vec<String> = m.state_dict().into_keys().collect();
    assert!(
        names.contains(&"1.running_var".to_string()) && !names.contains(&"1.weight".to_string())
    );
    assert!(names.contains(&"8.num_batches_tracked".to_string()));
}
