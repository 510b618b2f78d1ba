//! explain, graph, gradcheck and symbolic on a trained run folder (issue 15, item 1):
//! the model, parameters, loss, scaling and optimizer come from the run, samples by
//! index from its data or from files. Each test trains a tiny run, then checks the
//! printed numbers against the library's autodiff, a hand-written optimizer step,
//! or `predict`.

use assert_cmd::Command;
use chainrule::Tensor;
use chainrule::data::{Target, synthetic};
use chainrule::io::read_safetensors;
use chainrule::loss::Loss;
use chainrule::nn::{Module, Sequential};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "chainrule-run-explain-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `chainrule ARGS` in `dir`, which must succeed; its stdout.
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
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `chainrule ARGS` in `dir`, which must fail with one line holding every needle.
#[track_caller]
fn fails(dir: &Path, args: &[&str], needles: &[&str]) {
    let out = Command::cargo_bin("chainrule")
        .unwrap()
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} should fail");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    for n in needles {
        assert!(stderr.contains(n), "{stderr:?} should contain {n:?}");
    }
}

/// Trains moons (100 rows, 2-4-2, 3 epochs) as run `name`, with `extra` flags.
fn train(dir: &Path, name: &str, extra: &[&str]) {
    let mut args = vec![
        "train",
        "--data",
        "builtin:moons",
        "--samples",
        "100",
        "--layers",
        "2,4,2",
        "--epochs",
        "3",
        "--name",
        name,
        "--quiet",
    ];
    args.extend_from_slice(extra);
    ok(dir, &args);
}

/// The run's scaling from its state.json: (shift, scale) per feature.
fn scaler(run: &Path) -> (Vec<f64>, Vec<f64>) {
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("checkpoint/state.json")).unwrap())
            .unwrap();
    let list =
        |k: &str| -> Vec<f64> { serde_json::from_value(state["scaler"][k].clone()).unwrap() };
    (list("shift"), list("scale"))
}

/// The run's model in f64, read with the library.
fn model(run: &Path) -> Sequential<f64> {
    let dir = run.join("checkpoint");
    let text = std::fs::read_to_string(dir.join("model.json")).unwrap();
    let mut model = Sequential::<f64>::from_json(&text, 0).unwrap();
    let params: BTreeMap<String, Tensor<f64>> =
        read_safetensors::<f32>(&dir.join("params.safetensors"))
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k, v.cast()))
            .collect();
    model.load(params).unwrap();
    model
}

/// Moons' validation row `i` as the run split it (100 rows, seed 0, 20% held out),
/// unscaled.
fn validation_row(i: usize) -> (Vec<f32>, usize) {
    let data =
        synthetic::generate::<f32>("moons", 100, synthetic::default_noise("moons"), 0).unwrap();
    let (_, validation) = data.split(0.2, 0).unwrap();
    let row = validation.rows(&[i]).unwrap();
    let Target::Classes(c) = row.target else {
        panic!("moons is classification")
    };
    (row.x.to_vec(), c[0])
}

/// `raw` scaled as the run scales its f32 data: (x − shift)/scale in f32.
fn scaled(raw: &[f32], shift: &[f64], scale: &[f64]) -> Vec<f64> {
    raw.iter()
        .zip(shift.iter().zip(scale))
        .map(|(&v, (&a, &b))| f64::from((v - a as f32) / b as f32))
        .collect()
}

fn write_point(dir: &Path, x: &[f32], class: usize) {
    std::fs::write(dir.join("x.csv"), format!("a,b\n{},{}\n", x[0], x[1])).unwrap();
    std::fs::write(dir.join("y.csv"), format!("label\n{class}\n")).unwrap();
}

#[test]
fn explain_on_a_run_matches_autodiff_and_shows_adams_step_from_the_saved_state() {
    let dir = scratch("adam");
    train(&dir, "r", &[]);
    let run = dir.join("runs/r");
    let element = "0.weight[1,0]";
    let json: serde_json::Value = serde_json::from_str(&ok(
        &dir,
        &[
            "explain", "runs/r", "--sample", "3", "--param", element, "--format", "json",
        ],
    ))
    .unwrap();
    let d = &json[0];

    // The gradient, by the library's autodiff on the same point, scaled by hand with
    // the run's saved scaling.
    let (raw, class) = validation_row(3);
    let (shift, scale) = scaler(&run);
    let x = scaled(&raw, &shift, &scale);
    let model = model(&run);
    let (_, grads) = chainrule::train::loss_and_grads(
        &model,
        &Tensor::from_vec(x, &[1, 2]).unwrap(),
        &Target::Classes(vec![class]),
        Loss::CrossEntropy,
    )
    .unwrap();
    let g = grads[0].as_ref().unwrap().get(&[1, 0]).unwrap();
    let printed = d["gradient"].as_f64().unwrap();
    assert!(
        (printed - g).abs() <= 1e-12 * g.abs().max(1.0),
        "{printed} vs {g}"
    );

    // Adam's next step, by hand from optimizer.safetensors: 100 rows, 80 to train in
    // batches of 32 → 3 steps an epoch, 9 after 3 epochs; the update is step 10.
    let state = read_safetensors::<f32>(&run.join("checkpoint/optimizer.safetensors")).unwrap();
    let at = |k: &str| f64::from(state[k].get(&[1, 0]).unwrap());
    assert_eq!(state["0.weight.step"].item().unwrap(), 9.0);
    let t = 10.0;
    let (b1, b2, lr, eps) = (0.9, 0.999, 0.01, 1e-8);
    let m = b1 * at("0.weight.exp_avg") + (1.0 - b1) * g;
    let v = b2 * at("0.weight.exp_avg_sq") + (1.0 - b2) * g * g;
    let old = model.params()[0].value.get(&[1, 0]).unwrap();
    let new =
        old - lr * (m / (1.0 - f64::powf(b1, t))) / ((v / (1.0 - f64::powf(b2, t))).sqrt() + eps);
    let update = &d["update"];
    assert_eq!(update["optimizer"], "Adam");
    assert_eq!(update["t"], 10);
    assert_eq!(update["verified"], true);
    let shown = update["new"].as_f64().unwrap();
    assert!((shown - new).abs() < 1e-12, "{shown} vs {new}");

    // The same point given as files gives the same derivation.
    write_point(&dir, &raw, class);
    let from_files: serde_json::Value = serde_json::from_str(&ok(
        &dir,
        &[
            "explain", "runs/r", "--x", "x.csv", "--y", "y.csv", "--param", element, "--format",
            "json",
        ],
    ))
    .unwrap();
    let again = from_files[0]["gradient"].as_f64().unwrap();
    assert!((again - printed).abs() <= 1e-6 * printed.abs().max(1.0));

    // The text names the run, the samples and the saved moments.
    let text = ok(
        &dir,
        &["explain", "runs/r", "--samples", "0..2", "--param", element],
    );
    assert!(
        text.starts_with("runs/r: samples 0..2 of the validation split"),
        "{text}"
    );
    assert!(
        text.contains("update by the run's optimizer, Adam (step 10"),
        "{text}"
    );
    assert!(
        text.contains("(saved exp_avg)") && text.contains("(saved exp_avg_sq)"),
        "{text}"
    );
    assert!(text.contains("m̂ = m/(1 − β₁ᵗ)"), "{text}");
}

#[test]
fn explain_on_a_run_writes_out_sgd_momentum_from_its_buffer() {
    let dir = scratch("sgd");
    std::fs::write(
        dir.join("c.toml"),
        "[optimizer]\ntype = \"sgd\"\nlr = 0.1\nmomentum = 0.9\n",
    )
    .unwrap();
    train(&dir, "s", &["--config", "c.toml"]);
    let json: serde_json::Value = serde_json::from_str(&ok(
        &dir,
        &[
            "explain",
            "runs/s",
            "--param",
            "2.bias[1]",
            "--format",
            "json",
        ],
    ))
    .unwrap();
    let d = &json[0];
    let g = d["autodiff"].as_f64().unwrap();
    let state =
        read_safetensors::<f32>(&dir.join("runs/s/checkpoint/optimizer.safetensors")).unwrap();
    let b = 0.9 * f64::from(state["2.bias.momentum_buffer"].get(&[1]).unwrap()) + g;
    let old = model(&dir.join("runs/s")).params()[3]
        .value
        .get(&[1])
        .unwrap();
    let update = &d["update"];
    assert_eq!(update["optimizer"], "SGD");
    let new = update["new"].as_f64().unwrap();
    assert!(
        (new - (old - 0.1 * b)).abs() < 1e-12,
        "{new} vs {}",
        old - 0.1 * b
    );
}

#[test]
fn graph_on_a_run_shows_the_class_and_loss_that_predict_gives() {
    let dir = scratch("graph");
    train(&dir, "g", &[]);
    let (raw, class) = validation_row(5);
    write_point(&dir, &raw, class);
    let graph = ok(
        &dir,
        &[
            "graph", "runs/g", "--x", "x.csv", "--y", "y.csv", "--out", "g.svg",
        ],
    );
    assert!(dir.join("g.svg").is_file() && dir.join("g.dot").is_file());
    let predicted = ok(&dir, &["predict", "runs/g", "--x", "x.csv"]);
    let row: Vec<&str> = predicted.lines().nth(1).unwrap().split(',').collect();
    let p: Vec<f64> = row[1..].iter().map(|v| v.parse().unwrap()).collect();
    assert!(
        graph.contains(&format!("sample 1: class {} ", row[0])),
        "graph's class is predict's {}: {graph}",
        row[0]
    );
    // Cross-entropy of one sample is −ln p(target).
    let loss_line = graph
        .lines()
        .find(|l| l.contains("loss cross_entropy"))
        .unwrap();
    let loss: f64 = loss_line.rsplit(' ').next().unwrap().parse().unwrap();
    let expected = -p[class].ln();
    assert!(
        (loss - expected).abs() < 1e-4 * expected.max(1.0),
        "{loss} vs −ln {}",
        p[class]
    );
}

#[test]
fn gradcheck_and_symbolic_read_a_run_and_agree_with_autodiff() {
    let dir = scratch("check");
    train(&dir, "c", &[]);
    let out = ok(&dir, &["gradcheck", "runs/c", "--samples", "0..4"]);
    assert!(out.contains("all 4 tensors within"), "{out}");
    let json: serde_json::Value = serde_json::from_str(&ok(
        &dir,
        &["symbolic", "runs/c", "--sample", "1", "--format", "json"],
    ))
    .unwrap();
    let derivatives = json["derivatives"].as_object().unwrap();
    assert_eq!(derivatives.len(), 2 * 4 + 4 + 4 * 2 + 2);
    for (name, d) in derivatives {
        let (value, autodiff) = (
            d["value"].as_f64().unwrap(),
            d["autodiff"].as_f64().unwrap(),
        );
        assert!(
            (value - autodiff).abs() <= 1e-9 * autodiff.abs().max(1.0),
            "{name}: {value} vs {autodiff}"
        );
    }
    // The training split too, by name.
    ok(
        &dir,
        &[
            "explain",
            "runs/c",
            "--split",
            "train",
            "--sample",
            "79",
            "--param",
            "0.bias[0]",
        ],
    );
}

#[test]
fn bad_sample_choices_on_a_run_get_one_line_saying_what_exists() {
    let dir = scratch("bad");
    train(&dir, "b", &[]);
    fails(
        &dir,
        &["explain", "runs/b", "--sample", "20"],
        &["--sample", "row 20", "validation split (20 rows)"],
    );
    fails(
        &dir,
        &["explain", "runs/b", "--samples", "3..1"],
        &["--samples", "empty"],
    );
    fails(
        &dir,
        &["explain", "runs/b", "--split", "test"],
        &["--split", "no test split"],
    );
    fails(
        &dir,
        &["explain", "runs/b", "--x", "x.csv"],
        &["--y", "needed with --x"],
    );
    fails(
        &dir,
        &["explain", "runs/b", "--model", "m.json"],
        &["--model", "brings its own model"],
    );
}

#[test]
fn explaining_every_parameter_of_a_larger_model_prints_a_table_and_pointers() {
    let dir = scratch("table");
    // 2·16 + 16 + 16·2 + 2 = 82 elements: more than explain derives one by one.
    ok(
        &dir,
        &[
            "train",
            "--data",
            "builtin:moons",
            "--samples",
            "100",
            "--layers",
            "2,16,2",
            "--epochs",
            "2",
            "--name",
            "t",
            "--quiet",
        ],
    );
    let text = ok(&dir, &["explain", "runs/t", "--sample", "2"]);
    assert!(text.contains("82 parameter elements"), "{text}");
    for name in ["0.weight", "0.bias", "2.weight", "2.bias"] {
        assert!(
            text.lines().any(|l| l.starts_with(name)),
            "{name} row in {text}"
        );
    }
    // The pointer to the largest gradient is the element autodiff finds largest.
    let run = dir.join("runs/t");
    let (raw, class) = validation_row(2);
    let (shift, scale) = scaler(&run);
    let x = scaled(&raw, &shift, &scale);
    let model = model(&run);
    let (_, grads) = chainrule::train::loss_and_grads(
        &model,
        &Tensor::from_vec(x, &[1, 2]).unwrap(),
        &Target::Classes(vec![class]),
        Loss::CrossEntropy,
    )
    .unwrap();
    let mut best = (String::new(), 0.0f64);
    for (p, g) in model.params().iter().zip(&grads) {
        let g = g.as_ref().unwrap();
        let shape = g.shape().to_vec();
        for (i, v) in g.to_vec().into_iter().enumerate() {
            if v.abs() > best.1.abs() {
                let index = if shape.len() == 2 {
                    format!("{},{}", i / shape[1], i % shape[1])
                } else {
                    i.to_string()
                };
                best = (format!("{}[{index}]", p.name), v);
            }
        }
    }
    assert!(
        text.contains(&format!("the largest gradient:  {}", best.0)),
        "{} in {text}",
        best.0
    );
    // …and the pointer works.
    ok(
        &dir,
        &["explain", "runs/t", "--sample", "2", "--param", &best.0],
    );
}

/// The gradient a derivation's text states, on its `(autodiff: …)` line.
fn stated_gradient(text: &str) -> String {
    let line = text.lines().find(|l| l.contains("(autodiff:")).unwrap();
    let (_, rest) = line.split_once(" = ").unwrap();
    rest.split_whitespace().next().unwrap().to_string()
}

#[test]
fn digits_round_the_text_and_full_gives_every_digit() {
    let dir = scratch("digits");
    train(&dir, "d", &[]);
    let args = [
        "explain",
        "runs/d",
        "--sample",
        "4",
        "--param",
        "0.weight[0,1]",
    ];
    let json: serde_json::Value =
        serde_json::from_str(&ok(&dir, &[&args[..], &["--format", "json"]].concat())).unwrap();
    let g = json[0]["gradient"].as_f64().unwrap();
    // Default: 6 significant digits, within half a unit of the 6th.
    let short = stated_gradient(&ok(&dir, &args));
    let digits: String = short.chars().filter(char::is_ascii_digit).collect();
    assert!(digits.trim_start_matches('0').len() <= 6, "{short}");
    let value: f64 = short.parse().unwrap();
    assert!((value - g).abs() <= 5e-6 * g.abs(), "{short} vs {g}");
    // --digits full: the exact f64, as JSON has it.
    let full = stated_gradient(&ok(&dir, &[&args[..], &["--digits", "full"]].concat()));
    assert_eq!(full.parse::<f64>().unwrap(), g);
    let three = stated_gradient(&ok(&dir, &[&args[..], &["--digits", "3"]].concat()));
    assert!(
        (three.parse::<f64>().unwrap() - g).abs() <= 5e-3 * g.abs(),
        "{three}"
    );
    fails(
        &dir,
        &[&args[..], &["--digits", "many"]].concat(),
        &["--digits", "full"],
    );
}
