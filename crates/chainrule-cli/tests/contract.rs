//! The contract commands through the `chainrule` binary: every PyTorch reference
//! case (made by tools/make_reference.py), and the bad-input rules of
//! spec/interchange.md.

use chainrule::io::read_safetensors;
use chainrule::{Float, Tensor};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn reference_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../chainrule/tests/reference")
}

/// A fresh, empty folder for one test's outputs.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("chainrule-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn chainrule(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chainrule"))
        .args(args)
        .output()
        .unwrap()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn grad_args<'a>(case: &'a Path, loss: &'a str, out: &'a Path) -> Vec<String> {
    let f = |n: &str| case.join(n).display().to_string();
    vec![
        "grad".into(),
        "--model".into(),
        f("model.json"),
        "--params".into(),
        f("params.safetensors"),
        "--x".into(),
        f("x.npy"),
        "--y".into(),
        f("y.npy"),
        "--loss".into(),
        loss.into(),
        "--out".into(),
        p(out).into(),
    ]
}

fn close<F: Float>(
    got: &BTreeMap<String, Tensor<F>>,
    want: &BTreeMap<String, Tensor<F>>,
    tol: f64,
) -> bool {
    got.len() == want.len()
        && want.iter().all(|(k, w)| {
            got.get(k).is_some_and(|g| {
                g.shape() == w.shape()
                    && g.to_vec().iter().zip(w.to_vec()).all(|(a, b)| {
                        (a.as_f64() - b.as_f64()).abs() <= tol * b.as_f64().abs().max(1.0)
                    })
            })
        })
}

fn check_case<F: Float>(case: &Path, out_dir: &Path, tol: f64) {
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(case.join("config.json")).unwrap()).unwrap();
    let loss = config["loss"].as_str().unwrap();
    let grads_out = out_dir.join("g.safetensors");
    // Cases in evaluation mode say so in extra.json (see tools/make_reference.py).
    let eval = std::fs::read_to_string(case.join("extra.json"))
        .is_ok_and(|text| text.contains(r#""eval": true"#));
    let out = Command::new(env!("CARGO_BIN_EXE_chainrule"))
        .args(grad_args(case, loss, &grads_out))
        .args(eval.then_some("--eval"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{case:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        stdout.lines().count(),
        1,
        "{case:?}: grad prints exactly one line"
    );
    let printed: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(case.join("expected.json")).unwrap())
            .unwrap();
    let (got, want) = (
        printed["loss"].as_f64().unwrap(),
        expected["loss"].as_f64().unwrap(),
    );
    assert!(
        (got - want).abs() <= tol * want.abs().max(1.0),
        "{case:?}: loss {got} vs {want}"
    );
    assert!(
        close::<F>(
            &read_safetensors(&grads_out).unwrap(),
            &read_safetensors(&case.join("grads.safetensors")).unwrap(),
            tol
        ),
        "{case:?}: gradients"
    );

    if case.join("extra.json").exists() {
        return; // trained with options beyond the contract: the library test covers it
    }
    let trained_out = out_dir.join("p2.safetensors");
    let f = |n: &str| case.join(n).display().to_string();
    let out = chainrule(&[
        "train",
        "--model",
        &f("model.json"),
        "--params",
        &f("params.safetensors"),
        "--x",
        &f("x.npy"),
        "--y",
        &f("y.npy"),
        "--config",
        &f("config.json"),
        "--out",
        p(&trained_out),
    ]);
    assert!(
        out.status.success(),
        "{case:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        close::<F>(
            &read_safetensors(&trained_out).unwrap(),
            &read_safetensors(&case.join("trained.safetensors")).unwrap(),
            tol
        ),
        "{case:?}: trained parameters"
    );
}

#[test]
fn binary_matches_pytorch_on_every_reference_case() {
    let dir = scratch("reference");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(reference_root())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    cases.sort();
    assert!(cases.len() >= 76);
    for case in &cases {
        if case
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("f64")
        {
            check_case::<f64>(case, &dir, 1e-10);
        } else {
            check_case::<f32>(case, &dir, 1e-5);
        }
    }
    // Outputs were replaced in place each time; no temporary file is left behind.
    let mut left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    left.sort();
    assert_eq!(left, ["g.safetensors", "p2.safetensors"]);
}

/// A writable copy of one reference case, to damage one file at a time.
fn copy_case(name: &str) -> PathBuf {
    let dir = scratch(name);
    let src = reference_root().join("f64_loss_mse");
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    dir
}

/// Runs `grad` (or `train` when `config` is set) on `dir` and asserts a clean failure:
/// non-zero exit, exactly one stderr line containing every `needle`, no output file.
#[track_caller]
fn assert_bad_input(dir: &Path, loss: &str, train: bool, needles: &[&str]) {
    let out_file = dir.join("out.safetensors");
    let mut args = grad_args(dir, loss, &out_file);
    if train {
        args[0] = "train".into();
        args[9] = "--config".into();
        args[10] = dir.join("config.json").display().to_string();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_chainrule"))
        .args(&args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "should fail: {needles:?}");
    assert_eq!(stderr.lines().count(), 1, "exactly one line: {stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "{stderr:?} should name {needle:?}");
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!out_file.exists(), "no output on failure");
    let temps: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(temps.is_empty(), "temporary files left: {temps:?}");
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

#[test]
fn missing_and_truncated_files_name_the_file() {
    let dir = copy_case("missing");
    std::fs::remove_file(dir.join("x.npy")).unwrap();
    assert_bad_input(&dir, "mse", false, &["x.npy"]);

    let dir = copy_case("truncated");
    let bytes = std::fs::read(dir.join("y.npy")).unwrap();
    std::fs::write(dir.join("y.npy"), &bytes[..bytes.len() - 3]).unwrap();
    assert_bad_input(&dir, "mse", false, &["y.npy", "bytes"]);

    let dir = copy_case("truncated_params");
    let bytes = std::fs::read(dir.join("params.safetensors")).unwrap();
    std::fs::write(dir.join("params.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    assert_bad_input(&dir, "mse", false, &["params.safetensors"]);
}

#[test]
fn model_errors_name_the_model_file_and_field() {
    let dir = copy_case("model");
    write(
        &dir,
        "model.json",
        r#"{"layers": [{"type": "linear", "in": 3, "out": 4}, {"type": "mish"}, {"type": "linear", "in": 4, "out": 2}]}"#,
    );
    assert_bad_input(
        &dir,
        "mse",
        false,
        &["model.json", "layers[1].type", "mish"],
    );
    write(
        &dir,
        "model.json",
        r#"{"layers": [{"type": "linear", "in": 3, "out": 4}, {"type": "relu", "slope": 0.1}, {"type": "linear", "in": 4, "out": 2}]}"#,
    );
    assert_bad_input(
        &dir,
        "mse",
        false,
        &["model.json", "layers[1].slope", "unknown"],
    );
    write(
        &dir,
        "model.json",
        r#"{"layers": [{"type": "linear", "in": 3, "out": 4}, {"type": "linear", "in": 5, "out": 2}]}"#,
    );
    assert_bad_input(
        &dir,
        "mse",
        false,
        &["model.json", "layers[1].in", "layers[0]"],
    );
    write(&dir, "model.json", r#"{"layers": []}"#);
    assert_bad_input(&dir, "mse", false, &["model.json", "layers"]);
    write(
        &dir,
        "model.json",
        r#"{"layers": [{"type": "linear", "in": 0, "out": 2}]}"#,
    );
    assert_bad_input(&dir, "mse", false, &["model.json", "layers[0].in"]);
}

#[test]
fn parameter_errors_name_the_tensor() {
    let dir = copy_case("params");
    // A model whose second layer is wider: the file's 2.weight has the wrong shape.
    write(
        &dir,
        "model.json",
        r#"{"layers": [{"type": "linear", "in": 3, "out": 4}, {"type": "relu"}, {"type": "linear", "in": 4, "out": 3}]}"#,
    );
    assert_bad_input(
        &dir,
        "mse",
        false,
        &["params.safetensors", "2.weight", "shape"],
    );
    // No bias in layer 2: the file has an extra tensor.
    write(
        &dir,
        "model.json",
        r#"{"layers": [{"type": "linear", "in": 3, "out": 4}, {"type": "relu"}, {"type": "linear", "in": 4, "out": 2, "bias": false}]}"#,
    );
    assert_bad_input(
        &dir,
        "mse",
        false,
        &["params.safetensors", "2.bias", "extra"],
    );
}

#[test]
fn data_errors_name_the_data_file() {
    let dir = copy_case("data");
    // x with 2 features where the model takes 3.
    std::fs::copy(
        reference_root().join("f64_loss_mse/y.npy"),
        dir.join("x.npy"),
    )
    .unwrap();
    assert_bad_input(&dir, "mse", false, &["x.npy", "[N, 3]"]);

    let dir = copy_case("classes");
    std::fs::copy(
        reference_root().join("f64_loss_cross_entropy_indices/y.npy"),
        dir.join("y.npy"),
    )
    .unwrap();
    assert_bad_input(&dir, "mse", false, &["y.npy", "int64"]);
    // Class 3 is out of range for the regression model's 2 outputs.
    assert_bad_input(&dir, "cross_entropy", false, &["y.npy", "class index 3"]);
}

#[test]
fn config_errors_name_the_field() {
    let dir = copy_case("config");
    assert_bad_input(&dir, "l2", false, &["loss", "l2"]);
    let cases: [(&str, &[&str]); 9] = [
        (
            r#"{"loss": "mse", "optimizer": {"type": "sgd"}, "epoch": 2}"#,
            &["config.json", "epoch", "unknown"],
        ),
        (
            r#"{"loss": "mse", "optimizer": {"type": "sgd", "lr": -0.1}}"#,
            &["config.json", "optimizer.lr"],
        ),
        (
            r#"{"loss": "mse", "optimizer": {"type": "sgd", "nesterov": true}}"#,
            &["config.json", "optimizer.nesterov"],
        ),
        (
            r#"{"loss": "mse", "optimizer": {"type": "adam", "betas": [0.9, 1.0]}}"#,
            &["config.json", "optimizer.betas"],
        ),
        (
            r#"{"loss": "mse", "optimizer": {"type": "adadelta", "rho": 1.5}}"#,
            &["config.json", "optimizer.rho", "[0, 1]"],
        ),
        (
            r#"{"loss": "mse", "optimizer": {"type": "adadelta", "momentum": 0.9}}"#,
            &["config.json", "optimizer.momentum", "unknown"],
        ),
        (
            r#"{"loss": "mse", "optimizer": {"type": "lbfgs"}}"#,
            &["config.json", "optimizer.type", "lbfgs"],
        ),
        (
            r#"{"loss": "mse", "optimizer": {"type": "sgd"}, "batch_size": 0}"#,
            &["config.json", "batch_size"],
        ),
        (
            r#"{"loss": "mse", "optimizer": {"type": "sgd", "lr": "0.1"}}"#,
            &["config.json", "optimizer.lr", "string"],
        ),
    ];
    for (config, needles) in cases {
        write(&dir, "config.json", config);
        assert_bad_input(&dir, "mse", true, needles);
    }
}

#[test]
fn a_missing_output_folder_is_an_error() {
    let dir = copy_case("outdir");
    let out = chainrule(&[
        "grad",
        "--model",
        p(&dir.join("model.json")),
        "--params",
        p(&dir.join("params.safetensors")),
        "--x",
        p(&dir.join("x.npy")),
        "--y",
        p(&dir.join("y.npy")),
        "--loss",
        "mse",
        "--out",
        p(&dir.join("no/such/g.safetensors")),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1);
    assert!(
        stderr.contains("no/such/g.safetensors") && stderr.contains("folder"),
        "{stderr}"
    );
}

#[test]
fn zero_epochs_writes_the_parameters_unchanged() {
    let dir = copy_case("zero_epochs");
    write(
        &dir,
        "config.json",
        r#"{"loss": "mse", "optimizer": {"type": "adam"}, "epochs": 0}"#,
    );
    let out_file = dir.join("p2.safetensors");
    let out = chainrule(&[
        "train",
        "--model",
        p(&dir.join("model.json")),
        "--params",
        p(&dir.join("params.safetensors")),
        "--x",
        p(&dir.join("x.npy")),
        "--y",
        p(&dir.join("y.npy")),
        "--config",
        p(&dir.join("config.json")),
        "--out",
        p(&out_file),
    ]);
    assert!(out.status.success());
    let before = read_safetensors::<f64>(&dir.join("params.safetensors")).unwrap();
    assert_eq!(read_safetensors::<f64>(&out_file).unwrap(), before);
}
