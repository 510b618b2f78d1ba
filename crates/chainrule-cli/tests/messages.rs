//! The error messages a new user met (issue 15, item 6), each now saying what is
//! wrong, where, and what to do: one line on stderr, a non-zero exit.

use assert_cmd::Command;
use chainrule::Tensor;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn scratch(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("chainrule-messages-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::cargo_bin("chainrule")
        .unwrap()
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

#[track_caller]
fn ok(dir: &Path, args: &[&str]) -> String {
    let out = run(dir, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The one line `args` fails with.
#[track_caller]
fn failure(dir: &Path, args: &[&str]) -> String {
    let out = run(dir, args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{args:?} should fail");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    stderr
}

#[track_caller]
fn says(message: &str, needles: &[&str]) {
    for n in needles {
        assert!(message.contains(n), "{message:?} should contain {n:?}");
    }
}

const TINY: [&str; 8] = [
    "--data",
    "builtin:moons",
    "--samples",
    "60",
    "--layers",
    "2,4,2",
    "--epochs",
    "1",
];

#[test]
fn an_unknown_toml_field_gets_its_own_line_and_the_name_meant() {
    let dir = scratch("toml");
    // learning_rate is on line 2; it belongs in the optimizer table.
    std::fs::write(dir.join("c.toml"), "epochs = 3\nlearning_rate = 0.1\n").unwrap();
    says(
        &failure(&dir, &["train", "--config", "c.toml"]),
        &[
            "c.toml",
            "line 2:",
            "learning_rate",
            "did you mean [optimizer] lr?",
        ],
    );
    // A misspelling: the nearest field by spelling, with the valid names.
    std::fs::write(dir.join("d.toml"), "# a comment\n\nepoch = 3\n").unwrap();
    says(
        &failure(&dir, &["train", "--config", "d.toml"]),
        &["d.toml", "line 3:", "did you mean epochs?", "valid: data"],
    );
    // An optimizer setting at the top level.
    std::fs::write(dir.join("e.toml"), "momentum = 0.9\n").unwrap();
    says(
        &failure(&dir, &["train", "--config", "e.toml"]),
        &["line 1:", "did you mean [optimizer] momentum?"],
    );
}

#[test]
fn an_unknown_optimizer_setting_names_the_file_the_line_and_the_valid_names() {
    let dir = scratch("optimizer");
    std::fs::write(
        dir.join("c.toml"),
        "epochs = 2\n\n[optimizer]\ntype = \"sgd\"\nmomentom = 0.9\n",
    )
    .unwrap();
    says(
        &failure(&dir, &["train", "--config", "c.toml"]),
        &[
            "c.toml",
            "line 5:",
            "optimizer.momentom: unknown field",
            "valid: type, lr, momentum",
            "did you mean momentum?",
        ],
    );
}

#[test]
fn a_negative_number_reaches_the_check_of_its_value() {
    let dir = scratch("negative");
    // clap took "-1" for a flag ("unexpected argument"): the value is now read and
    // refused for what it is.
    // The flag typed is named first, the config field beside it.
    let lr = failure(&dir, &["train", "--lr", "-1"]);
    says(&lr, &["optimizer.lr", "must be ≥ 0, got -1"]);
    assert!(lr.starts_with("chainrule: --lr: "), "{lr}");
    let clip = failure(&dir, &["train", "--clip-grad-norm", "-1"]);
    says(
        &clip,
        &["clip_grad_norm", "must be a positive number, got -1"],
    );
    assert!(clip.starts_with("chainrule: --clip-grad-norm: "), "{clip}");
    // From a config file, the field alone.
    std::fs::write(dir.join("c.toml"), "[optimizer]\ntype = \"sgd\"\nlr = -1\n").unwrap();
    let from_file = failure(&dir, &["train", "--config", "c.toml"]);
    assert!(!from_file.contains("--lr"), "{from_file}");
}

#[test]
fn a_resume_asked_for_another_architecture_says_what_differs() {
    let dir = scratch("resume");
    let mut args = vec!["train", "--name", "r", "--quiet"];
    args.extend(TINY);
    ok(&dir, &args);
    says(
        &failure(
            &dir,
            &[
                "train", "--resume", "runs/r", "--layers", "2,8,2", "--epochs", "2",
            ],
        ),
        &[
            "--layers",
            "keeps its architecture",
            "[2, 4, 2]",
            "[2, 8, 2]",
            "without --resume",
        ],
    );
    says(
        &failure(
            &dir,
            &[
                "train",
                "--resume",
                "runs/r",
                "--activation",
                "tanh",
                "--epochs",
                "2",
            ],
        ),
        &["--activation", "relu", "tanh"],
    );
    // The same flags as the run's are no change.
    ok(
        &dir,
        &[
            "train", "--resume", "runs/r", "--layers", "2,4,2", "--epochs", "2", "--quiet",
        ],
    );
}

#[test]
fn a_missing_run_folder_is_named_alike_by_resume_eval_and_explain() {
    let dir = scratch("missing");
    for args in [
        vec!["train", "--resume", "runs/nowhere"],
        vec!["eval", "runs/nowhere"],
        vec!["predict", "runs/nowhere", "--x", "x.csv"],
    ] {
        says(&failure(&dir, &args), &["runs/nowhere: no such run folder"]);
    }
    says(
        &failure(&dir, &["explain", "runs/nowhere"]),
        &["runs/nowhere: no such folder"],
    );
}

#[test]
fn a_folder_without_a_model_is_not_asked_for_a_loss() {
    let dir = scratch("empty");
    std::fs::create_dir_all(dir.join("empty")).unwrap();
    let message = failure(&dir, &["explain", "empty"]);
    says(
        &message,
        &["empty: neither a run folder", "no model.json", "--model"],
    );
    assert!(!message.contains("--loss"), "{message}");
}

#[test]
fn float64_parameters_start_training_and_a_wrong_dtype_is_explained() {
    let dir = scratch("f64");
    std::fs::write(
        dir.join("m.json"),
        r#"{"layers": [{"type": "linear", "in": 2, "out": 4}, {"type": "relu"}, {"type": "linear", "in": 4, "out": 2}]}"#,
    )
    .unwrap();
    let params: BTreeMap<String, Tensor<f64>> = [
        ("0.weight", vec![4, 2]),
        ("0.bias", vec![4]),
        ("2.weight", vec![2, 4]),
        ("2.bias", vec![2]),
    ]
    .into_iter()
    .map(|(k, shape)| (k.to_string(), Tensor::full(&shape, 0.25)))
    .collect();
    chainrule::io::write_safetensors(&dir.join("p64.safetensors"), &params).unwrap();
    // Every tensor F64: read, rounded to f32 (it was refused with "expected F32
    // like the other tensors").
    let mut args = vec![
        "train",
        "--model",
        "m.json",
        "--params",
        "p64.safetensors",
        "--name",
        "f",
        "--quiet",
    ];
    args.extend(&TINY[..4]);
    args.extend(&TINY[6..]);
    ok(&dir, &args);
    let trained =
        chainrule::io::read_safetensors::<f32>(&dir.join("runs/f/checkpoint/params.safetensors"))
            .unwrap();
    assert_eq!(trained.len(), 4);
}

#[test]
fn the_clipping_flag_exists_and_is_not_mistaken_for_lr() {
    let dir = scratch("clip");
    let mut args = vec!["train", "--clip-grad-norm", "0.5", "--name", "c", "--quiet"];
    args.extend(TINY);
    ok(&dir, &args);
    let config = std::fs::read_to_string(dir.join("runs/c/checkpoint/config.toml")).unwrap();
    assert!(config.contains("clip_grad_norm = 0.5"), "{config}");
}
