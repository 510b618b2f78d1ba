//! Every training knob as a flag, the run folder's complete config.toml, `--json`'s
//! history and `--quiet`'s path (issue 15, item 7); what `eval` scores and what
//! `predict` prints (item 5).

use assert_cmd::Command;
use std::path::{Path, PathBuf};

fn scratch(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("chainrule-settings-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[track_caller]
fn ok(dir: &Path, args: &[&str]) -> String {
    let out = Command::cargo_bin("chainrule")
        .unwrap()
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[track_caller]
fn failure(dir: &Path, args: &[&str]) -> String {
    let out = Command::cargo_bin("chainrule")
        .unwrap()
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{args:?} should fail");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    stderr
}

fn config(run: &Path) -> String {
    std::fs::read_to_string(run.join("checkpoint/config.toml")).unwrap()
}

/// metrics.csv's rows, split.
fn metrics(run: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(run.join("checkpoint/metrics.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(String::from).collect())
        .collect()
}

#[track_caller]
fn holds(text: &str, lines: &[&str]) {
    for line in lines {
        assert!(text.contains(line), "{line:?} in\n{text}");
    }
}

#[test]
fn every_optimizer_and_loop_setting_is_a_flag_and_lands_in_config_toml() {
    let dir = scratch("flags");
    let out = ok(
        &dir,
        &[
            "train",
            "--optimizer",
            "sgd",
            "--lr",
            "0.05",
            "--momentum",
            "0.9",
            "--nesterov",
            "--weight-decay",
            "0.001",
            "--schedule",
            "step:step_size=1,gamma=0.5",
            "--clip-grad-norm",
            "2",
            "--drop-last",
            "--patience",
            "5",
            "--epochs",
            "2",
            "--name",
            "f",
            "--quiet",
        ],
    );
    // --quiet prints the run folder's path and nothing else.
    assert_eq!(out, format!("{}\n", Path::new("runs").join("f").display()));
    let run = dir.join("runs/f");
    holds(
        &config(&run),
        &[
            "type = \"sgd\"",
            "lr = 0.05",
            "momentum = 0.9",
            "nesterov = true",
            "weight_decay = 0.001",
            "dampening = 0.0",
            "[schedule]",
            "type = \"step\"",
            "step_size = 1",
            "gamma = 0.5",
            "clip_grad_norm = 2.0",
            "drop_last = true",
            "patience = 5",
        ],
    );
    // The schedule halves the rate each epoch: 0.05, then 0.025.
    let lrs: Vec<f64> = metrics(&run)
        .iter()
        .map(|r| r[5].parse().unwrap())
        .collect();
    assert_eq!(lrs, [0.05, 0.025]);
    // drop_last: 720 training rows (900 less 20%) in batches of 32 are 22 whole
    // batches and 16 rows left over: 22 steps an epoch, not 23.
    let state =
        chainrule::io::read_safetensors::<f32>(&run.join("checkpoint/optimizer.safetensors"))
            .unwrap();
    assert_eq!(state["0.weight.step"].item().unwrap(), 44.0);
    assert!(state.contains_key("0.weight.momentum_buffer"));

    // Adam's betas.
    ok(
        &dir,
        &[
            "train", "--betas", "0.8,0.99", "--epochs", "1", "--name", "b", "--quiet",
        ],
    );
    holds(
        &config(&dir.join("runs/b")),
        &["betas = [0.8, 0.99]", "type = \"adam\""],
    );
    assert!(
        failure(&dir, &["train", "--betas", "0.9"]).contains("--betas: two numbers"),
        "one beta"
    );
}

#[test]
fn config_toml_holds_every_setting_with_the_defaults_filled_in() {
    let dir = scratch("defaults");
    ok(&dir, &["train", "--epochs", "1", "--name", "d", "--quiet"]);
    let text = config(&dir.join("runs/d"));
    holds(
        &text,
        &[
            "data = \"builtin:spiral\"",
            "samples = 900",
            "noise = 0.2",
            "scale = \"standard\"",
            "layers = [2, 64, 64, 3]",
            "activation = \"relu\"",
            "init = \"pytorch\"",
            "loss = \"cross_entropy\"",
            "epochs = 1",
            "batch_size = 32",
            "shuffle = true",
            "drop_last = false",
            "skip_nonfinite = false",
            "validation_split = 0.2",
            "seed = 0",
            "[optimizer]",
            "type = \"adam\"",
            "lr = 0.01",
            "betas = [0.9, 0.999]",
            "eps = ",
            "weight_decay = 0.0",
            "amsgrad = false",
            "[schedule]",
            "type = \"constant\"",
            "# patience: not set (no early stopping)",
            "# clip_grad_norm: not set (no gradient clipping)",
        ],
    );
    // Read back, it trains the same run.
    ok(
        &dir,
        &[
            "train",
            "--config",
            "runs/d/checkpoint/config.toml",
            "--name",
            "again",
            "--quiet",
        ],
    );
    assert_eq!(
        metrics(&dir.join("runs/d"))[0][1],
        metrics(&dir.join("runs/again"))[0][1]
    );
}

#[test]
fn json_output_holds_the_history_of_every_epoch() {
    let dir = scratch("json");
    let out = ok(&dir, &["train", "--epochs", "3", "--name", "j", "--json"]);
    let value: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let history = value["history"].as_array().unwrap();
    let rows = metrics(&dir.join("runs/j"));
    assert_eq!(history.len(), 3);
    for (epoch, (h, row)) in history.iter().zip(&rows).enumerate() {
        assert_eq!(h["epoch"], epoch + 1);
        // metrics.csv writes each f64 in full: the same numbers.
        for (key, column) in [("train_loss", 1), ("validation_loss", 3), ("lr", 5)] {
            assert_eq!(
                h[key].as_f64().unwrap(),
                row[column].parse::<f64>().unwrap(),
                "{key} of epoch {}",
                epoch + 1
            );
        }
    }
    assert_eq!(value["train_loss"], history[2]["train_loss"]);
    // A resumed run's history has the earlier epochs too.
    let out = ok(
        &dir,
        &["train", "--resume", "runs/j", "--epochs", "4", "--json"],
    );
    let value: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let history = value["history"].as_array().unwrap();
    assert_eq!(history.len(), 4);
    assert_eq!(
        history[0]["train_loss"].as_f64().unwrap(),
        rows[0][1].parse::<f64>().unwrap()
    );
}

#[test]
fn eval_scores_the_held_out_split_and_refuses_data_that_does_not_fit() {
    let dir = scratch("eval");
    ok(
        &dir,
        &[
            "train",
            "--data",
            "builtin:circles",
            "--epochs",
            "3",
            "--name",
            "c",
            "--quiet",
        ],
    );
    let report: serde_json::Value =
        serde_json::from_str(&ok(&dir, &["eval", "runs/c", "--json"])).unwrap();
    // 20% of 900 rows held out.
    assert_eq!(report["rows"], 180);
    assert_eq!(report["data"], "validation split of builtin:circles");
    // The same split and parameters as the last epoch's validation.
    let last = metrics(&dir.join("runs/c")).pop().unwrap();
    let (loss, validation): (f64, f64) =
        (report["loss"].as_f64().unwrap(), last[3].parse().unwrap());
    assert!(
        (loss - validation).abs() <= 1e-6 * validation,
        "{loss} vs {validation}"
    );
    let text = ok(&dir, &["eval", "runs/c"]);
    assert!(
        text.starts_with("validation split of builtin:circles: 180 rows"),
        "{text}"
    );

    let message = failure(&dir, &["eval", "runs/c", "--data", "builtin:spiral"]);
    holds(
        &message,
        &[
            "--data: builtin:spiral has 2 features and 3 classes",
            "runs/c trained on builtin:circles with 2 features and 2 classes",
        ],
    );
    std::fs::write(dir.join("three.csv"), "a,b,c,y\n0,0,0,0\n1,1,1,1\n").unwrap();
    holds(
        &failure(&dir, &["eval", "runs/c", "--data", "csv:three.csv"]),
        &["csv:three.csv has 3 features", "with 2 features"],
    );
    // Data that fits is scored whole.
    let all: serde_json::Value = serde_json::from_str(&ok(
        &dir,
        &["eval", "runs/c", "--data", "builtin:circles", "--json"],
    ))
    .unwrap();
    assert_eq!(all["rows"], 900);
}

#[test]
fn predict_gives_class_names_back_and_rounds_the_probabilities() {
    let dir = scratch("predict");
    // Labels are strings: "dog" right of the y axis, "cat" left of it.
    let mut csv = String::from("a,b,animal\n");
    for i in 0..120 {
        let a = (i as f64 * 0.7).sin() * 2.0;
        let b = (i as f64 * 1.3).cos();
        csv += &format!("{a},{b},{}\n", if a > 0.0 { "dog" } else { "cat" });
    }
    std::fs::write(dir.join("pets.csv"), csv).unwrap();
    ok(
        &dir,
        &[
            "train",
            "--data",
            "csv:pets.csv",
            "--epochs",
            "20",
            "--name",
            "p",
            "--quiet",
        ],
    );
    std::fs::write(dir.join("x.csv"), "a,b\n1.5,0\n-1.5,0\n").unwrap();
    let out = ok(&dir, &["predict", "runs/p", "--x", "x.csv"]);
    let lines: Vec<&str> = out.lines().collect();
    let header: Vec<&str> = lines[0].split(',').collect();
    assert_eq!(header[0], "class");
    let mut names: Vec<&str> = header[1..]
        .iter()
        .map(|h| h.trim_start_matches("p_"))
        .collect();
    for (line, expected) in lines[1..].iter().zip(["dog", "cat"]) {
        let fields: Vec<&str> = line.split(',').collect();
        assert_eq!(fields[0], expected, "{out}");
        let p: Vec<f64> = fields[1..].iter().map(|v| v.parse().unwrap()).collect();
        // The class is the name of the most probable column.
        let best = (0..p.len()).max_by(|&i, &j| p[i].total_cmp(&p[j])).unwrap();
        assert_eq!(names[best], fields[0]);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-5);
        for v in &fields[1..] {
            // The digits of the mantissa, leading zeros aside.
            let mantissa = v.split('e').next().unwrap();
            let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
            let significant = digits.trim_start_matches('0').len();
            assert!(significant <= 6, "{v} has at most 6 significant digits");
        }
    }
    names.sort();
    assert_eq!(names, ["cat", "dog"]);
}
