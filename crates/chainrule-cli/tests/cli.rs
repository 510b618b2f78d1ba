//! The richer CLI through the binary: `train` with no arguments, config/flag
//! precedence, resuming, `eval`, `predict`, `summary`, and one-line errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("chainrule-cli-run-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `chainrule` in `cwd`.
fn chainrule(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chainrule"))
        .current_dir(cwd)
        .args(args)
        .output()
        .unwrap()
}

#[track_caller]
fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[track_caller]
fn fails_with(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "should fail: {needles:?}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    for n in needles {
        assert!(stderr.contains(n), "{stderr:?} should contain {n:?}");
    }
}

fn metrics(run: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(run.join("checkpoint/metrics.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(String::from).collect())
        .collect()
}

#[test]
fn train_with_no_arguments_learns_the_spiral_and_fills_the_run_folder() {
    let dir = scratch("default");
    let out = chainrule(&dir, &["train"]);
    let stdout = ok(&out);
    assert!(stdout.contains("runs/spiral-001"), "{stdout}");
    // Not a terminal: one plain line per epoch on stderr, no progress bar.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.lines().filter(|l| l.starts_with("epoch ")).count(),
        50
    );
    let run = dir.join("runs/spiral-001");
    for file in [
        "model.json",
        "params.safetensors",
        "optimizer.safetensors",
        "config.toml",
        "state.json",
        "metrics.csv",
        "manifest.json",
    ] {
        assert!(run.join("checkpoint").join(file).is_file(), "{file}");
    }
    for plot in ["training", "decision_boundary"] {
        let png = std::fs::read(run.join(format!("{plot}.png"))).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{plot}.png is a PNG");
        let svg = std::fs::read_to_string(run.join(format!("{plot}.svg"))).unwrap();
        assert!(svg.contains("<svg") && svg.contains("feature 1") == (plot == "decision_boundary"));
    }
    let svg = std::fs::read_to_string(run.join("training.svg")).unwrap();
    assert!(
        svg.contains("epoch") && svg.contains("validation"),
        "labelled axes and legend"
    );
    let rows = metrics(&run);
    assert_eq!(rows.len(), 50);
    let val_accuracy: f64 = rows.last().unwrap()[4].parse().unwrap();
    assert!(val_accuracy >= 0.95, "validation accuracy {val_accuracy}");
    // A second run gets the next folder.
    ok(&chainrule(&dir, &["train", "--epochs", "1", "--quiet"]));
    assert!(dir.join("runs/spiral-002").is_dir());
}

#[test]
fn flags_override_the_config_file_and_the_resolved_config_is_saved() {
    let dir = scratch("precedence");
    std::fs::write(
        dir.join("c.toml"),
        "data = \"builtin:moons\"\nsamples = 200\nepochs = 5\nlayers = [2, 8, 2]\n\n[optimizer]\ntype = \"sgd\"\nlr = 0.5\nmomentum = 0.9\n",
    )
    .unwrap();
    ok(&chainrule(
        &dir,
        &[
            "train", "--config", "c.toml", "--epochs", "2", "--lr", "0.05", "--name", "p",
            "--quiet",
        ],
    ));
    let run = dir.join("runs/p");
    assert_eq!(metrics(&run).len(), 2, "--epochs wins over the file");
    let saved = std::fs::read_to_string(run.join("checkpoint/config.toml")).unwrap();
    for line in [
        "data = \"builtin:moons\"",
        "epochs = 2",
        "lr = 0.05",
        "momentum = 0.9",
        "type = \"sgd\"",
        "layers = [2, 8, 2]",
    ] {
        assert!(saved.contains(line), "{line} in\n{saved}");
    }
    assert!(
        metrics(&run).iter().all(|r| r[5] == "0.05"),
        "the lr flag is used"
    );
    // The saved config reproduces the run exactly.
    ok(&chainrule(
        &dir,
        &[
            "train",
            "--config",
            "runs/p/checkpoint/config.toml",
            "--name",
            "again",
            "--quiet",
        ],
    ));
    assert_eq!(
        std::fs::read(run.join("checkpoint/params.safetensors")).unwrap(),
        std::fs::read(dir.join("runs/again/checkpoint/params.safetensors")).unwrap()
    );
}

#[test]
fn a_resumed_run_ends_where_an_uninterrupted_one_does() {
    let dir = scratch("resume");
    // The PyTorch MNIST example's optimizer: Adadelta at lr 1.0, the rate multiplied
    // by 0.7 after every epoch (StepLR(step_size=1, gamma=0.7)).
    std::fs::write(
        dir.join("adadelta.toml"),
        "[optimizer]\ntype = \"adadelta\"\nlr = 1.0\n\n[schedule]\ntype = \"step\"\nstep_size = 1\ngamma = 0.7\n",
    )
    .unwrap();
    let setups: [(&str, &[&str]); 2] =
        [("adam", &[]), ("adadelta", &["--config", "adadelta.toml"])];
    for (optimizer, config) in setups {
        let (whole, part) = (format!("whole-{optimizer}"), format!("part-{optimizer}"));
        let mut common = vec!["--data", "builtin:xor", "--layers", "2,8,2", "--quiet"];
        common.extend(config);
        let mut args = vec!["train", "--epochs", "4", "--name", &whole];
        args.extend(&common);
        ok(&chainrule(&dir, &args));
        let mut args = vec!["train", "--epochs", "2", "--name", &part];
        args.extend(&common);
        ok(&chainrule(&dir, &args));
        let part_dir = format!("runs/{part}");
        ok(&chainrule(
            &dir,
            &["train", "--resume", &part_dir, "--epochs", "4", "--quiet"],
        ));
        assert_eq!(metrics(&dir.join(&part_dir)).len(), 4, "{optimizer}");
        assert_eq!(
            std::fs::read(dir.join(&part_dir).join("checkpoint/params.safetensors")).unwrap(),
            std::fs::read(
                dir.join("runs")
                    .join(&whole)
                    .join("checkpoint/params.safetensors")
            )
            .unwrap(),
            "{optimizer}: bit-identical parameters"
        );
        fails_with(
            &chainrule(&dir, &["train", "--resume", &part_dir, "--quiet"]),
            &["epochs", "already has 4"],
        );
    }
    // PyTorch's StepLR rates, epoch by epoch, across the resumption.
    let rates: Vec<f64> = metrics(&dir.join("runs/part-adadelta"))
        .iter()
        .map(|row| row[5].parse().unwrap())
        .collect();
    for (got, want) in rates.iter().zip([1.0, 0.7, 0.49, 0.343]) {
        assert!((got - want).abs() < 1e-12, "lr {rates:?}");
    }
    // Adadelta's state is saved under torch.optim's names.
    let state = chainrule::io::read_safetensors::<f32>(
        &dir.join("runs/part-adadelta/checkpoint/optimizer.safetensors"),
    )
    .unwrap();
    let keys: Vec<&str> = state
        .keys()
        .filter(|k| k.starts_with("0.weight."))
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        ["0.weight.acc_delta", "0.weight.square_avg", "0.weight.step"]
    );
}

#[test]
fn eval_predict_and_summary_work_on_a_run() {
    let dir = scratch("inspect");
    ok(&chainrule(
        &dir,
        &[
            "train",
            "--data",
            "builtin:circles",
            "--epochs",
            "5",
            "--name",
            "c",
            "--quiet",
        ],
    ));
    let report: serde_json::Value =
        serde_json::from_str(&ok(&chainrule(&dir, &["eval", "runs/c", "--json"]))).unwrap();
    // The held-out validation split: 20% of 900 rows.
    assert_eq!(report["rows"], 180);
    let confusion: Vec<Vec<u64>> =
        serde_json::from_value(report["confusion_matrix"].clone()).unwrap();
    let correct = (confusion[0][0] + confusion[1][1]) as f64 / 180.0;
    assert!(
        (correct - report["accuracy"].as_f64().unwrap()).abs() < 1e-12,
        "the matrix agrees with the accuracy"
    );
    assert!(dir.join("runs/c/confusion_matrix.png").is_file());
    let table = ok(&chainrule(&dir, &["eval", "runs/c"]));
    assert!(table.contains("precision") && table.contains("confusion matrix"));

    std::fs::write(dir.join("x.csv"), "a,b\n0.0,0.0\n1.0,0.0\n").unwrap();
    let predictions = ok(&chainrule(&dir, &["predict", "runs/c", "--x", "x.csv"]));
    let lines: Vec<&str> = predictions.lines().collect();
    assert_eq!(lines[0], "class,p_0,p_1");
    for line in &lines[1..] {
        let p: Vec<f64> = line
            .split(',')
            .skip(1)
            .map(|v| v.parse().unwrap())
            .collect();
        assert!(
            (p.iter().sum::<f64>() - 1.0).abs() < 1e-5,
            "probabilities sum to 1"
        );
    }
    ok(&chainrule(
        &dir,
        &["predict", "runs/c", "--x", "x.csv", "--out", "p.npy"],
    ));
    assert_eq!(
        &std::fs::read(dir.join("p.npy")).unwrap()[..6],
        b"\x93NUMPY"
    );

    let summary = ok(&chainrule(&dir, &["summary", "runs/c"]));
    // 2·64+64 + 64·64+64 + 64·2+2 = 4,482
    assert!(summary.contains("total parameters: 4,482"), "{summary}");
}

#[test]
fn json_output_is_one_object_and_quiet_prints_only_the_run_folder() {
    let dir = scratch("json");
    let out = ok(&chainrule(&dir, &["train", "--epochs", "2", "--json"]));
    let value: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(value["epochs"], 2);
    let quiet = chainrule(&dir, &["train", "--epochs", "1", "--quiet"]);
    assert_eq!(ok(&quiet), "runs/spiral-002\n");
    assert!(quiet.stderr.is_empty());
}

#[test]
fn bad_input_gets_one_line_naming_the_field_or_file() {
    let dir = scratch("bad");
    std::fs::write(dir.join("typo.toml"), "epoch = 3\n").unwrap();
    fails_with(
        &chainrule(&dir, &["train", "--config", "typo.toml"]),
        &["typo.toml", "line 1", "epoch"],
    );
    std::fs::write(dir.join("syntax.toml"), "epochs = [\n").unwrap();
    fails_with(
        &chainrule(&dir, &["train", "--config", "syntax.toml"]),
        &["syntax.toml", "line"],
    );
    fails_with(
        &chainrule(&dir, &["train", "--layers", "3,8,3"]),
        &["layers", "first size is 3", "2 features"],
    );
    fails_with(
        &chainrule(&dir, &["train", "--layers", "2,8,5"]),
        &["layers", "last size is 5", "3 classes"],
    );
    std::fs::write(
        dir.join("layers.toml"),
        "[[layer]]\ntype = \"linear\"\nin = 2\nout = 8\n[[layer]]\ntype = \"relu\"\n[[layer]]\ntype = \"linear\"\nin = 4\nout = 3\n",
    )
    .unwrap();
    fails_with(
        &chainrule(&dir, &["train", "--config", "layers.toml"]),
        &["layers[2].in", "layers[0]"],
    );
    fails_with(
        &chainrule(&dir, &["train", "--data", "builtin:swirl"]),
        &["data", "swirl"],
    );
    fails_with(
        &chainrule(&dir, &["train", "--data", "mnist:nowhere"]),
        &["nowhere"],
    );
    fails_with(
        &chainrule(&dir, &["train", "--activation", "mish"]),
        &["activation", "mish"],
    );
    fails_with(
        &chainrule(&dir, &["train", "--optimizer", "adam", "--lr=-1"]),
        &["optimizer.lr"],
    );
    fails_with(
        &chainrule(&dir, &["train", "--x", "x.npy"]),
        &["--x and --y"],
    );
    fails_with(
        &chainrule(&dir, &["train", "--out", "p.safetensors"]),
        &["--out", "--model"],
    );
    fails_with(
        &chainrule(&dir, &["eval", "nowhere"]),
        &["nowhere", "run folder"],
    );
    fails_with(
        &chainrule(&dir, &["summary", "nowhere.json"]),
        &["nowhere.json"],
    );
    fails_with(
        &chainrule(&dir, &["train", "--epochs", "many"]),
        &["epochs", "many"],
    );
}

fn notebooks() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/notebooks")
}

#[test]
fn explain_prints_the_notebook_derivation() {
    let out = ok(&chainrule(
        &notebooks(),
        &["explain", "000", "--param", "2.weight[0,0]"],
    ));
    assert!(
        out.contains("1.5 · 1 · 1 = 1.5") && out.contains("= 0.985"),
        "{out}"
    );
    let json: serde_json::Value = serde_json::from_str(&ok(&chainrule(
        &notebooks(),
        &["explain", "001_single_weight", "--format", "json"],
    )))
    .unwrap();
    assert_eq!(json[0]["update"]["new"], 1.8);
    let md = ok(&chainrule(
        &notebooks(),
        &[
            "explain",
            "004",
            "--param",
            "0.bias[0]",
            "--format",
            "markdown",
        ],
    ));
    assert!(
        md.contains(r"\frac{\partial C}") && md.contains("-8.534"),
        "{md}"
    );
    fails_with(
        &chainrule(
            &notebooks(),
            &["explain", "000", "--param", "9.weight[0,0]"],
        ),
        &["param", "9"],
    );
}

#[test]
fn notebook_003_formula_is_explained_written_out_and_drawn() {
    let json: serde_json::Value = serde_json::from_str(&ok(&chainrule(
        &notebooks(),
        &["explain", "003", "--format", "json"],
    )))
    .unwrap();
    // The notebook prints f5 = 0.649864477526152 at the starting weights.
    let f5 = json["forward"]["f5"].as_f64().unwrap();
    assert!((f5 - 0.649864477526152).abs() < 1e-15, "{f5}");
    let derivations = json["derivations"].as_array().unwrap();
    assert_eq!(derivations.len(), 7, "one per weight");
    for d in derivations {
        assert_eq!(d["verified"], true, "{d}");
        let (lr, old, new) = (
            d["update"]["lr"].as_f64().unwrap(),
            d["update"]["old"].as_f64().unwrap(),
            d["update"]["new"].as_f64().unwrap(),
        );
        assert_eq!(lr, 0.3, "explain.json's learning rate");
        // (JSON text round-trips to within an ulp.)
        let want = old - lr * d["autodiff"].as_f64().unwrap();
        assert!((new - want).abs() < 1e-15, "{new} vs {want}");
    }
    assert_eq!(derivations[0]["paths"].as_array().unwrap().len(), 3, "w0");
    let text = ok(&chainrule(
        &notebooks(),
        &["explain", "003", "--param", "w0"],
    ));
    // The forward pass is rounded as the derivations are (6 significant digits),
    // and exact with --digits full.
    assert!(
        text.contains("f5 = 0.649864 (output)") && text.contains("sum over the 3 paths"),
        "{text}"
    );
    let full = ok(&chainrule(
        &notebooks(),
        &["explain", "003", "--param", "w0", "--digits", "full"],
    ));
    assert!(full.contains("f5 = 0.6498644775261518 (output)"), "{full}");
    let symbolic: serde_json::Value = serde_json::from_str(&ok(&chainrule(
        &notebooks(),
        &["symbolic", "003", "--format", "json"],
    )))
    .unwrap();
    let output = symbolic["output_value"].as_f64().unwrap();
    assert!((output - f5).abs() < 1e-15);
    for (name, d) in symbolic["derivatives"].as_object().unwrap() {
        let (value, autodiff) = (
            d["value"].as_f64().unwrap(),
            d["autodiff"].as_f64().unwrap(),
        );
        assert!(
            (value - autodiff).abs() < 1e-12,
            "{name}: {value} vs {autodiff}"
        );
    }
    let out = scratch("graph003").join("g.svg");
    ok(&chainrule(
        &notebooks(),
        &["graph", "003", "--out", out.to_str().unwrap()],
    ));
    let svg = std::fs::read_to_string(&out).unwrap();
    assert!(svg.contains("f5 = sigmoid") && svg.contains("w0"), "{svg}");
    fails_with(
        &chainrule(&notebooks(), &["explain", "003", "--param", "w99"]),
        &["param", "w99", "w45"],
    );
    let dir = scratch("formula");
    std::fs::write(dir.join("bad.formula"), "param w = 1\nL = w * v\n").unwrap();
    fails_with(
        &chainrule(&dir, &["explain", "--formula", "bad.formula"]),
        &["bad.formula", "line 2", "`v`"],
    );
}

#[test]
fn bench_reports_the_workloads_and_names_bad_arguments() {
    // W3 needs no data. Its timing is not asserted (benchmarks measure, tests do
    // not); its allocation count shows that it ran on the scalar path, whose steps
    // allocate nothing once running (the count is the per-epoch bookkeeping: six
    // allocations per epoch of four steps), where the tensor tape allocates over a
    // hundred per step.
    let json: serde_json::Value = serde_json::from_str(&ok(&chainrule(
        &scratch("bench"),
        &["bench", "--workloads", "w3", "--runs", "1", "--json"],
    )))
    .unwrap();
    let w3 = &json[0];
    assert_eq!(w3["workload"], "W3");
    assert_eq!(w3["units"], 100000.0);
    assert_eq!(w3["seconds"].as_array().unwrap().len(), 1);
    let allocations = w3["allocations_per_step"].as_f64().unwrap();
    assert!((1.0..4.0).contains(&allocations), "{allocations}");
    fails_with(
        &chainrule(&scratch("bench"), &["bench", "--workloads", "w1"]),
        &["--data", "MNIST"],
    );
    fails_with(
        &chainrule(&scratch("bench"), &["bench", "--workloads", "w9"]),
        &["--workloads", "w9"],
    );
    fails_with(
        &chainrule(
            &scratch("bench"),
            &["bench", "--workloads", "w3", "--runs", "0"],
        ),
        &["--runs"],
    );
}

#[test]
fn gradcheck_passes_and_names_an_injected_wrong_derivative() {
    let out = ok(&chainrule(&notebooks(), &["gradcheck", "000"]));
    assert!(out.contains("all 4 tensors within"), "{out}");
    let faulty = Command::new(env!("CARGO_BIN_EXE_chainrule"))
        .current_dir(notebooks())
        .args(["gradcheck", "000"])
        .env("CHAINRULE_INJECT_FAULT", "relu")
        .output()
        .unwrap();
    fails_with(&faulty, &["exceeds the tolerance", "`relu`"]);
    assert!(
        String::from_utf8_lossy(&faulty.stdout).contains('✗'),
        "the table marks the failing tensors"
    );
    // A formula network (notebook 003): one row per weight, and the wrong sigmoid
    // named.
    let out = ok(&chainrule(&notebooks(), &["gradcheck", "003"]));
    assert!(out.contains("all 7 tensors within"), "{out}");
    let faulty = Command::new(env!("CARGO_BIN_EXE_chainrule"))
        .current_dir(notebooks())
        .args(["gradcheck", "003"])
        .env("CHAINRULE_INJECT_FAULT", "sigmoid")
        .output()
        .unwrap();
    fails_with(&faulty, &["exceeds the tolerance", "`sigmoid`"]);
}

#[test]
fn graph_writes_svg_and_dot_with_values_and_gradients() {
    let dir = scratch("graph");
    let out = dir.join("g.svg");
    ok(&chainrule(
        &notebooks(),
        &["graph", "000", "--out", out.to_str().unwrap()],
    ));
    let svg = std::fs::read_to_string(&out).unwrap();
    assert!(
        svg.starts_with("<svg")
            && svg.contains("2.weight [1, 2]")
            && svg.contains("grad [1.5, 0.5]"),
        "{svg}"
    );
    let dot = std::fs::read_to_string(dir.join("g.dot")).unwrap();
    assert!(dot.starts_with("digraph") && dot.contains("->"));
}

#[test]
fn the_audit_says_when_a_network_stops_learning() {
    let dir = scratch("audit");
    let healthy = ok(&chainrule(
        &dir,
        &[
            "train",
            "--data",
            "builtin:moons",
            "--epochs",
            "3",
            "--activation",
            "tanh",
            "--audit",
            "--name",
            "ok",
        ],
    ));
    assert!(
        healthy.contains("Gradient-flow audit: no zero"),
        "{healthy}"
    );
    // A learning rate of 5 blows the ReLU network up: every unit dies.
    let dead = ok(&chainrule(
        &dir,
        &[
            "train",
            "--epochs",
            "3",
            "--optimizer",
            "sgd",
            "--lr",
            "5",
            "--audit",
            "--name",
            "dead",
        ],
    ));
    assert!(
        dead.contains("units are dead") && dead.contains("the gradient is exactly zero"),
        "{dead}"
    );
    let findings: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("runs/dead/audit.json")).unwrap())
            .unwrap();
    assert!(!findings.is_empty());
}

#[test]
fn symbolic_writes_out_the_network_and_its_derivatives_match_autodiff() {
    let text = ok(&chainrule(&notebooks(), &["symbolic", "001_two_weights"]));
    assert!(text.contains("C = (w2_1_1·w1_1_1 - 1)**2"), "{text}");
    let json: serde_json::Value = serde_json::from_str(&ok(&chainrule(
        &notebooks(),
        &["symbolic", "004", "--format", "json"],
    )))
    .unwrap();
    let derivatives = json["derivatives"].as_object().unwrap();
    assert_eq!(derivatives.len(), 13);
    for (symbol, d) in derivatives {
        let (value, autodiff) = (
            d["value"].as_f64().unwrap(),
            d["autodiff"].as_f64().unwrap(),
        );
        assert!(
            (value - autodiff).abs() <= 1e-10 * autodiff.abs().max(1.0),
            "{symbol}: {value} vs {autodiff}"
        );
    }
    let latex = ok(&chainrule(
        &notebooks(),
        &[
            "symbolic",
            "001_sigmoid_biases",
            "--format",
            "latex",
            "--symbolic-inputs",
        ],
    ));
    assert!(
        latex.contains(r"\frac{1}{e^{") && latex.contains("x_{1}"),
        "{latex}"
    );
}

#[test]
fn explain_and_gradcheck_run_a_cnn_in_either_mode() {
    // The PyTorch reference case with dropout and batch norm, in evaluation mode (as
    // PyTorch computed its gradients) and in training mode with a dropout seed.
    let dir = scratch("cnn-modes");
    let case = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../chainrule/tests/reference/f64_spatial_eval_dropout_batch_norm");
    let file = |n: &str| case.join(n).display().to_string();
    let common = [
        "--model",
        &file("model.json"),
        "--params",
        &file("params.safetensors"),
        "--x",
        &file("x.npy"),
        "--y",
        &file("y.npy"),
        "--loss",
        "cross_entropy",
    ];
    for mode in [&["--eval"][..], &["--seed", "3"][..]] {
        let mut args = vec!["gradcheck"];
        args.extend(common);
        args.extend(mode);
        assert!(ok(&chainrule(&dir, &args)).contains("all 10 tensors within"));
        let mut args = vec!["explain", "--param", "0.weight[1,0,2,1]"];
        args.extend(common);
        args.extend(mode);
        let text = ok(&chainrule(&dir, &args));
        assert!(text.contains("autodiff") && text.contains('✓'), "{text}");
    }
}
