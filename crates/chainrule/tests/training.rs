//! Training beyond the contract: data sets, batching, scaling, CSV, initializers,
//! fit with validation and early stopping, evaluate/predict, checkpoints. Each test
//! checks an invariant or a value computed independently.

use chainrule::autodiff::Elementwise;
use chainrule::data::{Batches, Dataset, MinMaxScaler, Standardizer, Target, TargetKind, read_csv};
use chainrule::loss::Loss;
use chainrule::nn::{Init, Layer, Module, Sequential};
use chainrule::optim::{Schedule, clip_grad_norm};
use chainrule::train::{EarlyStopping, Event, TrainConfig, evaluate, fit, loss_and_grads, predict};
use chainrule::{Error, Tensor};
use std::path::PathBuf;

fn scratch(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("chainrule-training-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn regression_data(rows: usize, seed: u64) -> Dataset<f64> {
    let x = Tensor::<f64>::rand_uniform(&[rows, 3], -1.0, 1.0, seed).unwrap();
    let y = x.sum(&[1], true).unwrap().map(|v| v.sin());
    Dataset::new(x, Target::Values(y)).unwrap()
}

fn mlp() -> Sequential<f64> {
    Sequential::from_json(
        r#"{"layers": [{"type": "linear", "in": 3, "out": 8}, {"type": "tanh"}, {"type": "linear", "in": 8, "out": 1}]}"#,
        1,
    )
    .unwrap()
}

fn config(json: &str) -> TrainConfig {
    TrainConfig::from_json(json).unwrap()
}

#[test]
fn evaluate_gives_the_loss_of_the_whole_set_as_one_batch() {
    // 2500 rows: evaluate works in chunks of 1024 and must combine them exactly.
    let data = regression_data(2500, 3);
    let mut model = mlp();
    for loss in [Loss::Mse, Loss::Sse, Loss::Mae, Loss::Huber] {
        let (whole, _) = loss_and_grads(&model, &data.x, &data.target, loss).unwrap();
        let chunked = evaluate(&mut model, &data, loss).unwrap().loss;
        assert!(
            (chunked - whole).abs() <= 1e-12 * whole.abs().max(1.0),
            "{loss:?}: {chunked} vs {whole}"
        );
    }
}

#[test]
fn accuracy_counts_the_arg_max_class() {
    // Logits chosen by hand: rows 0 and 2 predict their class, row 1 does not.
    let mut model = Sequential::<f64>::new(vec![Layer::Identity], 0).unwrap();
    let x = Tensor::from_vec(vec![2.0, 1.0, 0.0, 1.0, 1.0, 3.0], &[3, 2]).unwrap();
    let data = Dataset::new(x, Target::Classes(vec![0, 0, 1])).unwrap();
    let metrics = evaluate(&mut model, &data, Loss::CrossEntropy).unwrap();
    assert_eq!(metrics.accuracy, Some(2.0 / 3.0));
    assert_eq!(
        evaluate(&mut model, &data.clone(), Loss::CrossEntropy).unwrap(),
        metrics
    );
}

#[test]
fn fit_reports_validation_metrics_equal_to_evaluate_and_follows_the_schedule() {
    let (train, validation) = regression_data(200, 5).split(0.25, 9).unwrap();
    let mut model = mlp();
    let mut cfg = config(
        r#"{"loss": "mse", "optimizer": {"type": "adam", "lr": 0.01}, "batch_size": 16, "epochs": 4, "shuffle": true, "seed": 3}"#,
    );
    cfg.schedule = Schedule::Step {
        step_size: 2,
        gamma: 0.5,
    };
    let mut steps = 0;
    let history = fit(&mut model, &train, Some(&validation), &cfg, |e| {
        if let Event::Step { .. } = e {
            steps += 1;
        }
    })
    .unwrap();
    assert_eq!(steps, 4 * 150_usize.div_ceil(16));
    let lrs: Vec<f64> = history.epochs.iter().map(|m| m.lr).collect();
    assert_eq!(lrs, [0.01, 0.01, 0.005, 0.005]);
    let last = history.epochs.last().unwrap().validation.unwrap();
    assert_eq!(last, evaluate(&mut model, &validation, Loss::Mse).unwrap());
    assert!(
        last.loss < history.epochs[0].validation.unwrap().loss,
        "training should help"
    );
}

#[test]
fn drop_last_skips_the_partial_batch() {
    let data = regression_data(10, 1);
    let mut cfg =
        config(r#"{"loss": "mse", "optimizer": {"type": "sgd"}, "batch_size": 4, "epochs": 2}"#);
    cfg.drop_last = true;
    let mut rows = Vec::new();
    fit(&mut mlp(), &data, None, &cfg, |e| {
        if let Event::Step { rows: r, .. } = e {
            rows.push(*r);
        }
    })
    .unwrap();
    assert_eq!(rows, [4, 4, 4, 4]);
}

#[test]
fn each_step_reports_the_running_mean_of_its_epoch_so_far() {
    // Independently of the tally: the mean of the batch losses weighted by their
    // rows (mse averages over a batch), step by step; after an epoch's last batch it
    // is the epoch's training loss.
    let data = regression_data(10, 1);
    let cfg =
        config(r#"{"loss": "mse", "optimizer": {"type": "sgd"}, "batch_size": 4, "epochs": 2}"#);
    let mut sums = [(0.0, 0usize); 2];
    let mut finals = Vec::new();
    let history = fit(&mut mlp(), &data, None, &cfg, |e| match e {
        Event::Step {
            epoch,
            rows,
            loss,
            epoch_so_far,
            ..
        } => {
            let (sum, count) = &mut sums[*epoch];
            *sum += loss * *rows as f64;
            *count += rows;
            let mean = *sum / *count as f64;
            assert!(
                (epoch_so_far.loss - mean).abs() <= 1e-12 * mean.abs(),
                "{epoch_so_far:?} vs {mean}"
            );
            assert_eq!(
                epoch_so_far.accuracy, None,
                "a regression loss has no accuracy"
            );
            finals.push((*epoch, epoch_so_far.loss));
        }
        Event::Epoch(_) => {}
    })
    .unwrap();
    for (epoch, metrics) in history.epochs.iter().enumerate() {
        let last = finals.iter().rev().find(|(e, _)| *e == epoch).unwrap().1;
        assert_eq!(last, metrics.train.loss);
    }
}

#[test]
fn the_best_epoch_is_kept_whenever_there_is_a_validation_set() {
    // No early stopping: training runs every epoch, and the best epoch by validation
    // loss is the one with the lowest validation loss in the history. A learning rate
    // this large makes the validation loss go down, then up.
    let train = regression_data(64, 2);
    let validation = regression_data(32, 3);
    let cfg = config(
        r#"{"loss": "mse", "optimizer": {"type": "sgd", "lr": 0.5}, "batch_size": 8, "epochs": 3}"#,
    );
    let mut model = mlp();
    let mut best = None;
    let history = chainrule::train::fit_checkpointed(
        &mut model,
        &train,
        Some(&validation),
        &cfg,
        chainrule::train::Session {
            optimizer: &mut chainrule::optim::Optimizer::new(cfg.optimizer.clone()),
            start: chainrule::train::TrainState::default(),
            stop: None,
        },
        |_| {},
        |c| {
            best = c.state.best.as_ref().map(|b| (b.epoch, b.params.clone()));
            assert!(c.last.is_empty(), "nothing was restored");
            Ok::<(), Error>(())
        },
    )
    .unwrap();
    assert_eq!(history.epochs.len(), 3);
    let lowest = (0..3)
        .min_by(|&a, &b| {
            let v = |e: usize| history.epochs[e].validation.unwrap().loss;
            v(a).total_cmp(&v(b))
        })
        .unwrap();
    let (epoch, params) = best.unwrap();
    assert_eq!((history.best_epoch, epoch), (Some(lowest), lowest));
    // Here the second epoch is best: neither the first nor the last.
    assert_eq!(lowest, 1);
    // The kept parameters are that epoch's: they score its validation loss.
    let mut at_best = mlp();
    let count = at_best.params().len();
    at_best.params_mut().clone_from_slice(&params[..count]);
    assert_eq!(
        evaluate(&mut at_best, &validation, Loss::Mse).unwrap(),
        history.epochs[lowest].validation.unwrap()
    );
}

#[test]
fn early_stopping_stops_after_patience_and_restores_the_best_parameters() {
    // The validation targets are the negated training targets: the better the model
    // fits the training set, the worse the validation loss, which therefore peaks
    // (is best) at the first epoch.
    let train = regression_data(64, 2);
    let Target::Values(y) = &train.target else {
        unreachable!()
    };
    let validation = Dataset::new(train.x.clone(), Target::Values(y.scale(-1.0))).unwrap();
    let mut cfg = config(
        r#"{"loss": "mse", "optimizer": {"type": "adam", "lr": 0.05}, "batch_size": 8, "epochs": 50}"#,
    );
    cfg.early_stopping = Some(EarlyStopping {
        patience: 3,
        min_delta: 0.0,
        restore_best: true,
    });
    let mut model = mlp();
    let history = fit(&mut model, &train, Some(&validation), &cfg, |_| {}).unwrap();
    assert!(history.stopped_early);
    let best = history.best_epoch.unwrap();
    assert_eq!(
        history.epochs.len(),
        best + 4,
        "stops `patience` epochs after the best"
    );
    let best_loss = history.epochs[best].validation.unwrap().loss;
    assert_eq!(
        evaluate(&mut model, &validation, Loss::Mse).unwrap().loss,
        best_loss
    );
}

#[test]
fn predict_matches_the_forward_pass_row_by_row() {
    let data = regression_data(1500, 4);
    let mut model = mlp();
    let all = predict(&mut model, &data.x).unwrap();
    let row = predict(&mut model, &data.x.narrow(0, 1234, 1).unwrap()).unwrap();
    assert_eq!(all.narrow(0, 1234, 1).unwrap().to_vec(), row.to_vec());
}

#[test]
fn batches_visit_every_row_once_per_epoch() {
    for shuffle in [false, true] {
        let b = Batches {
            rows: 103,
            batch_size: 10,
            shuffle,
            seed: 5,
            drop_last: false,
        };
        let mut seen = b.epoch(3).concat();
        seen.sort_unstable();
        assert_eq!(seen, (0..103).collect::<Vec<_>>());
    }
}

#[test]
fn split_is_disjoint_covering_and_reproducible() {
    let x = Tensor::<f64>::from_vec((0..20).map(f64::from).collect(), &[20, 1]).unwrap();
    let data = Dataset::new(x, Target::Classes((0..20).collect())).unwrap();
    let (a, b) = data.split(0.3, 11).unwrap();
    let (Target::Classes(a), Target::Classes(b)) = (a.target, b.target) else {
        unreachable!()
    };
    assert_eq!((a.len(), b.len()), (14, 6));
    let mut all = [a.clone(), b].concat();
    all.sort_unstable();
    assert_eq!(all, (0..20).collect::<Vec<_>>());
    let (again, _) = data.split(0.3, 11).unwrap();
    assert_eq!(again.target, Target::Classes(a));
    assert!(data.split(1.0, 0).is_err());
}

#[test]
fn scalers_fitted_on_training_data_normalise_it() {
    let x = Tensor::<f64>::rand_uniform(&[500, 4], -3.0, 7.0, 8).unwrap();
    let standardized = Standardizer::fit(&x).unwrap().transform(&x).unwrap();
    let mean = standardized.mean(&[0], false).unwrap().to_vec();
    let var = standardized
        .map(|v| v * v)
        .mean(&[0], false)
        .unwrap()
        .to_vec();
    assert!(mean.iter().all(|m| m.abs() < 1e-12) && var.iter().all(|v| (v - 1.0).abs() < 1e-12));
    let scaled = MinMaxScaler::fit(&x).unwrap().transform(&x).unwrap();
    assert_eq!(scaled.max(&[0], false).unwrap().to_vec(), vec![1.0; 4]);
    assert!(scaled.to_vec().iter().all(|v| (0.0..=1.0).contains(v)));
}

#[test]
fn initializers_have_their_documented_spread() {
    let (fan_out, fan_in) = (256, 512);
    let variance = |init: Init| {
        let w = init.weight::<f64>(&[fan_out, fan_in], 4).unwrap().to_vec();
        w.iter().map(|v| v * v).sum::<f64>() / w.len() as f64
    };
    let expected = [
        (Init::PytorchDefault, 1.0 / (3.0 * fan_in as f64)), // U(±1/√in): b²/3
        (Init::XavierUniform, 2.0 / (fan_in + fan_out) as f64),
        (Init::XavierNormal, 2.0 / (fan_in + fan_out) as f64),
        (Init::HeUniform, 2.0 / fan_in as f64),
        (Init::HeNormal, 2.0 / fan_in as f64),
    ];
    for (init, want) in expected {
        let got = variance(init);
        assert!(
            (got / want - 1.0).abs() < 0.02,
            "{init:?}: variance {got}, expected {want}"
        );
    }
    let bound = (6.0 / (fan_in + fan_out) as f64).sqrt();
    let w = Init::XavierUniform
        .weight::<f64>(&[fan_out, fan_in], 1)
        .unwrap();
    assert!(w.to_vec().iter().all(|v| v.abs() <= bound));
    assert_eq!(
        w,
        Init::XavierUniform
            .weight::<f64>(&[fan_out, fan_in], 1)
            .unwrap()
    );
}

#[test]
fn clipping_bounds_the_global_norm_and_leaves_small_gradients_alone() {
    let g = |seed| Some(Tensor::<f64>::rand_normal(&[10, 10], 0.0, 1.0, seed).unwrap());
    let norm = |grads: &[Option<Tensor<f64>>]| -> f64 {
        grads
            .iter()
            .flatten()
            .flat_map(|t| t.to_vec())
            .map(|v| v * v)
            .sum::<f64>()
            .sqrt()
    };
    let mut grads = vec![g(1), None, g(2)];
    let before = norm(&grads);
    assert!((clip_grad_norm(&mut grads, 1.0) - before).abs() < 1e-12);
    assert!((norm(&grads) - 1.0).abs() < 1e-5);
    let mut small = vec![g(3)];
    let copy = small.clone();
    clip_grad_norm(&mut small, 1e6);
    assert_eq!(small, copy);
}

#[test]
fn model_json_round_trips_every_layer_type() {
    let layers = vec![
        Layer::Linear {
            inputs: 3,
            outputs: 4,
            bias: false,
        },
        Layer::Activation(Elementwise::LeakyRelu { slope: 0.2 }),
        Layer::Linear {
            inputs: 4,
            outputs: 4,
            bias: true,
        },
        Layer::Activation(Elementwise::Relu),
        Layer::Activation(Elementwise::Sigmoid),
        Layer::Activation(Elementwise::Tanh),
        Layer::Identity,
        Layer::Softmax,
    ];
    let model = Sequential::<f32>::new(layers.clone(), 0).unwrap();
    assert_eq!(
        Sequential::<f32>::from_json(&model.to_json(), 0)
            .unwrap()
            .layers(),
        layers.as_slice()
    );
}

#[test]
fn a_checkpoint_round_trips_and_names_a_damaged_file() {
    let dir = scratch("checkpoint");
    let model = mlp();
    model.save_checkpoint(&dir).unwrap();
    assert_eq!(
        Sequential::<f64>::load_checkpoint(&dir).unwrap().params(),
        model.params()
    );
    std::fs::write(
        dir.join("model.json"),
        r#"{"layers": [{"type": "linear", "in": 3, "out": 9}]}"#,
    )
    .unwrap();
    let err = Sequential::<f64>::load_checkpoint(&dir)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("params.safetensors") && err.contains("0.weight"),
        "{err}"
    );
}

#[test]
fn csv_reads_classes_values_and_names_a_bad_cell() {
    let dir = scratch("csv");
    let path = dir.join("d.csv");
    std::fs::write(&path, "x1, x2, label\n0.5, 1, 2\n-1, 2.5, 0\n").unwrap();
    let data = read_csv::<f64>(&path, "label", TargetKind::Classes).unwrap();
    assert_eq!(data.dataset.target, Target::Classes(vec![2, 0]));
    assert_eq!(data.feature_names, ["x1", "x2"]);
    let values = read_csv::<f64>(&path, "x2", TargetKind::Values).unwrap();
    assert_eq!(values.dataset.x.to_vec(), vec![0.5, 2.0, -1.0, 0.0]);
    assert_eq!(
        values.dataset.target,
        Target::Values(Tensor::from_vec(vec![1.0, 2.5], &[2, 1]).unwrap())
    );

    std::fs::write(&path, "x1,label\n0.5,a\nabc,b\n").unwrap();
    let err = read_csv::<f64>(&path, "label", TargetKind::Classes).unwrap_err();
    assert!(matches!(err, Error::Format { .. }));
    let text = err.to_string();
    assert!(
        text.contains("d.csv") && text.contains("line 3") && text.contains("x1"),
        "{text}"
    );
    assert!(
        read_csv::<f64>(&path, "nope", TargetKind::Classes)
            .unwrap_err()
            .to_string()
            .contains("nope")
    );
}

#[test]
fn a_nan_parameter_stops_training_naming_the_step_batch_layer_and_tensor() {
    let data = regression_data(32, 7);
    let mut model = mlp();
    let mut weight = model.params()[2].value.to_vec(); // 2.weight
    weight[3] = f64::NAN;
    model.params_mut()[2].value = Tensor::from_vec(weight, &[1, 8]).unwrap();
    let cfg =
        config(r#"{"loss": "mse", "optimizer": {"type": "sgd"}, "batch_size": 8, "epochs": 1}"#);
    let err = fit(&mut model, &data, None, &cfg, |_| {}).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(
            err,
            Error::NonFinite {
                epoch: 1,
                batch: 1,
                step: 1,
                ..
            }
        ),
        "{text}"
    );
    assert!(
        text.contains("2.weight") && text.contains("layer 2"),
        "{text}"
    );
}

#[test]
fn a_diverging_run_names_the_operation_where_infinity_first_appears() {
    let data = regression_data(32, 8);
    let mut model = mlp();
    let cfg = config(
        r#"{"loss": "mse", "optimizer": {"type": "sgd", "lr": 1e200}, "batch_size": 8, "epochs": 3}"#,
    );
    let text = fit(&mut model, &data, None, &cfg, |_| {})
        .unwrap_err()
        .to_string();
    assert!(text.contains("step 2") || text.contains("step 3"), "{text}");
    assert!(text.contains('`'), "names an operation or tensor: {text}");
}

#[test]
fn skip_nonfinite_skips_the_bad_steps_and_leaves_the_parameters_finite() {
    let data = regression_data(32, 9);
    let mut model = mlp();
    let before = model.params().to_vec();
    // A target that overflows the loss only in the first batch.
    let Target::Values(y) = &data.target else {
        unreachable!()
    };
    let mut values = y.to_vec();
    values[0] = 1e300;
    let data = Dataset::new(
        data.x.clone(),
        Target::Values(Tensor::from_vec(values, &[32, 1]).unwrap()),
    )
    .unwrap();
    let mut cfg = config(
        r#"{"loss": "mse", "optimizer": {"type": "sgd", "lr": 0.01}, "batch_size": 8, "epochs": 1}"#,
    );
    cfg.skip_nonfinite = true;
    let mut steps = 0;
    fit(&mut model, &data, None, &cfg, |e| {
        if let Event::Step { .. } = e {
            steps += 1;
        }
    })
    .unwrap();
    assert_eq!(steps, 3, "the first of four batches is skipped");
    assert!(model.params().iter().all(|p| p.value.all_finite()));
    assert_ne!(model.params(), before.as_slice());
}

#[test]
fn bce_at_probabilities_of_exactly_zero_and_one_is_finite_as_in_pytorch() {
    use chainrule::Tape;
    // PyTorch: BCELoss()(p, y) with logs clamped at -100; the gradient
    // (p - y) / max(p(1 - p), 1e-12) / N.
    let tape = Tape::<f64>::new();
    let p = tape.param(Tensor::from_vec(vec![0.0, 1.0, 0.0, 1.0], &[4, 1]).unwrap());
    let y = Target::Values(Tensor::from_vec(vec![1.0, 0.0, 0.0, 1.0], &[4, 1]).unwrap());
    let loss = Loss::Bce.compute(p, &y).unwrap();
    assert_eq!(loss.item().unwrap(), (100.0 + 100.0) / 4.0);
    let g = loss.backward().unwrap().wrt(p).unwrap().to_vec();
    let eps = f64::from(1e-12_f32);
    assert_eq!(g, vec![-1.0 / eps / 4.0, 1.0 / eps / 4.0, 0.0, 0.0]);
}

#[test]
fn bce_with_logits_of_ten_thousand_is_finite() {
    use chainrule::Tape;
    let tape = Tape::<f64>::new();
    let x = tape.param(Tensor::from_vec(vec![1e4, -1e4], &[2, 1]).unwrap());
    let y = Target::Values(Tensor::from_vec(vec![0.0, 0.0], &[2, 1]).unwrap());
    let loss = Loss::BceLogits.compute(x, &y).unwrap();
    assert_eq!(loss.item().unwrap(), 1e4 / 2.0); // max(x,0) − x·y + ln(1 + e^−|x|)
    assert_eq!(
        loss.backward().unwrap().wrt(x).unwrap().to_vec(),
        vec![0.5, 0.0]
    ); // (σ(x) − y)/2
}
