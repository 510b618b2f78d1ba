//! What `train` shows and keeps (issue 15, item 8): the model summary and the
//! splits before training, the best and the last epoch's parameters, each loadable,
//! and the summary saying which one params.safetensors holds.

mod common;

use common::{chainrule, scratch};
use std::path::Path;

#[track_caller]
fn ok(dir: &Path, args: &[&str]) -> String {
    let out = chainrule(dir, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The validation loss column of a run's metrics.csv.
fn validation_losses(run: &Path) -> Vec<f64> {
    std::fs::read_to_string(run.join("checkpoint/metrics.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(3).unwrap().parse().unwrap())
        .collect()
}

/// `eval RUN --weights WHICH`'s loss on the validation split.
fn eval_loss(dir: &Path, weights: &str) -> f64 {
    let out = ok(dir, &["eval", "runs/r", "--json", "--weights", weights]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["data"], "validation split of builtin:spiral");
    v["loss"].as_f64().unwrap()
}

#[test]
fn early_stopping_keeps_the_best_epoch_in_params_and_the_last_one_beside_it() {
    let dir = scratch("output", "restored");
    // A learning rate this large makes the validation loss rise after epoch 1.
    let out = ok(
        &dir,
        &[
            "train",
            "--name",
            "r",
            "--epochs",
            "8",
            "--patience",
            "2",
            "--lr",
            "0.5",
        ],
    );
    let losses = validation_losses(&dir.join("runs/r"));
    let best = (0..losses.len())
        .min_by(|&a, &b| losses[a].total_cmp(&losses[b]))
        .unwrap();
    assert!(
        best + 1 < losses.len(),
        "the last epoch is not the best: {losses:?}"
    );
    assert!(
        out.contains(&format!(
            "params.safetensors holds the best epoch, {} (lowest validation loss)",
            best + 1
        )),
        "{out}"
    );
    // Each file scores the validation loss that its epoch recorded.
    assert_eq!(eval_loss(&dir, "final"), losses[best]);
    assert_eq!(eval_loss(&dir, "best"), losses[best]);
    assert_eq!(eval_loss(&dir, "last"), *losses.last().unwrap());
}

#[test]
fn without_early_stopping_the_best_epoch_is_kept_beside_the_last() {
    let dir = scratch("output", "kept");
    let out = ok(
        &dir,
        &["train", "--name", "r", "--epochs", "3", "--lr", "0.5"],
    );
    let losses = validation_losses(&dir.join("runs/r"));
    let best = (0..losses.len())
        .min_by(|&a, &b| losses[a].total_cmp(&losses[b]))
        .unwrap();
    assert!(
        out.contains(&format!(
            "params.safetensors holds the last epoch; the best, epoch {} (lowest validation loss), is best.safetensors",
            best + 1
        )),
        "{out}"
    );
    assert!(!dir.join("runs/r/checkpoint/last.safetensors").exists());
    assert_eq!(eval_loss(&dir, "final"), *losses.last().unwrap());
    assert_eq!(eval_loss(&dir, "last"), *losses.last().unwrap());
    assert_eq!(eval_loss(&dir, "best"), losses[best]);
}

#[test]
fn the_summary_before_training_counts_trainable_and_running_statistics_and_the_splits() {
    let dir = scratch("output", "summary");
    // 600 rows (200 per class), 20% held out. linear 2→8: 16 + 8; batch norm: γ, β
    // (8 + 8) trained, running mean and variance (8 + 8) and the batch count (1)
    // not; linear 8→3: 24 + 3.
    std::fs::write(
        dir.join("model.json"),
        r#"{"layers": [{"type": "linear", "in": 2, "out": 8}, {"type": "batch_norm1d", "num_features": 8}, {"type": "relu"}, {"type": "linear", "in": 8, "out": 3}]}"#,
    )
    .unwrap();
    let out = ok(
        &dir,
        &[
            "train",
            "--model",
            "model.json",
            "--epochs",
            "1",
            "--samples",
            "600",
            "--validation-split",
            "0.2",
        ],
    );
    let trainable = 16 + 8 + 8 + 8 + 24 + 3;
    let running = 8 + 8 + 1;
    for line in [
        format!("  trainable: {trainable}"),
        format!("  non-trainable (running statistics, batch counts): {running}"),
        format!("total parameters: {}", trainable + running),
        "data: 480 training, 120 validation, none test rows; 2 features, 3 classes".into(),
    ] {
        assert!(out.lines().any(|l| l == line), "{line:?} in {out}");
    }
    // Before training: the summary comes before the results.
    let summary = out.find("total parameters").unwrap();
    assert!(summary < out.find("Finished 1 epochs").unwrap(), "{out}");
}

#[test]
fn asking_for_a_best_epoch_that_a_run_without_validation_lacks_is_one_line() {
    let dir = scratch("output", "nobest");
    ok(
        &dir,
        &[
            "train",
            "--name",
            "r",
            "--epochs",
            "1",
            "--validation-split",
            "0",
        ],
    );
    let out = chainrule(&dir, &["eval", "runs/r", "--weights", "best"]);
    common::refused(&out, &["runs/r", "best.safetensors", "no validation split"]);
}
