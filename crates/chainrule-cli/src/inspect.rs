//! `chainrule eval`, `predict` and `summary`: looking at a finished run.

use crate::config::{self, RunConfig};
use crate::plot;
use crate::run::RunState;
use anyhow::{Result, anyhow, bail};
use chainrule::Tensor;
use chainrule::autodiff::Op;
use chainrule::data::{Dataset, Target};
use chainrule::io::{npy_bytes, read_npy, write_atomic};
use chainrule::loss::Loss;
use chainrule::nn::{Layer, Module, Sequential};
use chainrule::train::{evaluate, predict};
use std::path::Path;

/// A finished run: its model, settings and saved facts.
pub struct Run {
    pub model: Sequential<f32>,
    pub config: RunConfig,
    pub state: RunState,
    pub loss: Loss,
}

/// Run `dir`'s checkpoint, checked (see [`crate::run::run_files`]).
pub fn open_run(dir: &Path) -> Result<Run> {
    let files = crate::run::run_files(dir)?;
    let state = RunState::read(&files.join("state.json"))?;
    let config = RunConfig::read(&files.join("config.toml"))?;
    let model = Sequential::<f32>::load_checkpoint(&files)?;
    let default = if state.classes.is_some() {
        "cross_entropy"
    } else {
        "mse"
    };
    let loss = Loss::from_name(config.loss.as_deref().unwrap_or(default))
        .map_err(|e| anyhow!("{}: {e}", files.join("config.toml").display()))?;
    Ok(Run {
        model,
        config,
        state,
        loss,
    })
}

fn class_names(state: &RunState, classes: usize) -> Vec<String> {
    state
        .class_names
        .clone()
        .unwrap_or_else(|| (0..classes).map(|c| c.to_string()).collect())
}

/// The position of the largest value (the first of ties).
pub fn argmax<F: PartialOrd + Copy>(row: &[F]) -> usize {
    row.iter()
        .enumerate()
        .fold(0, |best, (i, &v)| if v > row[best] { i } else { best })
}

/// The model's outputs `raw` as `predict` reports them: probabilities for the
/// losses that take logits (softmax for cross-entropy without a softmax layer,
/// the logistic function for bce_logits), the outputs themselves otherwise.
pub fn as_probabilities<F: chainrule::Float>(
    loss: Loss,
    model: &Sequential<F>,
    raw: &Tensor<F>,
) -> Result<Tensor<F>> {
    Ok(match loss {
        Loss::CrossEntropy if !matches!(model.layers().last(), Some(Layer::Softmax)) => {
            raw.softmax(1)?
        }
        Loss::BceLogits => raw.sigmoid(),
        _ => raw.clone(),
    })
}

/// `v` to 6 significant digits, without trailing zeros: 0.973412, 1.5e-9, 120.
pub fn rounded<F: chainrule::Float>(v: F) -> String {
    chainrule_explain::notation::significant(v.as_f64(), 6)
}

/// `chainrule eval RUN --data SOURCE`.
pub fn eval(dir: &Path, data: Option<String>, json: bool) -> Result<()> {
    let mut run = open_run(dir)?;
    let (data, scored) = match data {
        None => held_out(dir, &run)?,
        Some(other) => {
            let mut source_config = run.config.clone();
            source_config.data = Some(other.clone());
            let source = config::read_source(&source_config)?;
            check_matches(dir, &run, &other, &source)?;
            let data = run
                .state
                .scaler
                .apply_to(source.test.unwrap_or(source.all))?;
            (data, other)
        }
    };
    let data = Dataset::new(config::to_model_input(&run.model, data.x)?, data.target)?;
    let metrics = evaluate(&mut run.model, &data, run.loss)?;
    let mut report = serde_json::json!({ "data": scored, "rows": data.len(), "loss": metrics.loss, "accuracy": metrics.accuracy });
    let mut table = None;
    if let (Target::Classes(truth), Some(classes)) = (&data.target, run.state.classes) {
        let out = predict(&mut run.model, &data.x)?;
        let mut confusion = vec![vec![0usize; classes]; classes];
        for (row, &t) in out.to_vec().chunks_exact(out.shape()[1]).zip(truth) {
            if t >= classes {
                bail!("data: class {t} is outside the model's {classes} classes");
            }
            confusion[t][argmax(row).min(classes - 1)] += 1;
        }
        let names = class_names(&run.state, classes);
        let per_class: Vec<serde_json::Value> = (0..classes)
            .map(|c| {
                let predicted: usize = confusion.iter().map(|r| r[c]).sum();
                let support: usize = confusion[c].iter().sum();
                let ratio = |a: usize, b: usize| (b > 0).then(|| a as f64 / b as f64);
                serde_json::json!({ "class": names[c], "precision": ratio(confusion[c][c], predicted), "recall": ratio(confusion[c][c], support), "support": support })
            })
            .collect();
        plot::confusion_heatmap(&dir.join("confusion_matrix"), &confusion, &names)?;
        report["per_class"] = per_class.clone().into();
        report["confusion_matrix"] = serde_json::json!(confusion);
        table = Some((names, per_class, confusion));
    }
    if json {
        println!("{report}");
        return Ok(());
    }
    println!(
        "{scored}: {} rows  loss {:.4}{}",
        data.len(),
        metrics.loss,
        metrics
            .accuracy
            .map_or(String::new(), |a| format!("  accuracy {:.2}%", 100.0 * a))
    );
    if let Some((names, per_class, confusion)) = table {
        let width = names.iter().map(|n| n.len()).max().unwrap_or(1).max(5);
        println!(
            "\n{:>width$}  {:>9}  {:>9}  {:>7}",
            "class", "precision", "recall", "support"
        );
        for (name, stats) in names.iter().zip(&per_class) {
            let pct = |k: &str| {
                stats[k]
                    .as_f64()
                    .map_or("-".into(), |v| format!("{:.2}%", 100.0 * v))
            };
            println!(
                "{name:>width$}  {:>9}  {:>9}  {:>7}",
                pct("precision"),
                pct("recall"),
                stats["support"].to_string()
            );
        }
        let cell = confusion
            .iter()
            .flatten()
            .max()
            .map_or(1, |m| m.to_string().len())
            .max(width.min(6));
        println!("\nconfusion matrix (rows: true class, columns: predicted)");
        print!("{:>width$} ", "");
        for n in &names {
            print!(" {:>cell$}", n.chars().take(cell).collect::<String>());
        }
        println!();
        for (name, row) in names.iter().zip(&confusion) {
            print!("{name:>width$} ");
            for v in row {
                print!(" {v:>cell$}");
            }
            println!();
        }
        println!("\nheat map: {}", dir.join("confusion_matrix.png").display());
    }
    Ok(())
}

/// The data run `dir` held out, scaled, and what it is in words: the test set
/// (MNIST's), else the validation split, else (a run that held nothing out) its
/// training data, said so.
fn held_out(dir: &Path, run: &Run) -> Result<(Dataset<f32>, String)> {
    let splits = config::load_data(&run.config)?;
    let source = run.config.data.as_deref().unwrap_or("builtin:spiral");
    if splits.scaler != run.state.scaler {
        bail!(
            "{}: its data ({source}) is not what it trained on: the feature scaling fitted on it differs from the run's",
            dir.display()
        );
    }
    let config::Splits {
        train,
        validation,
        test,
        ..
    } = splits;
    Ok(match (test, validation) {
        (Some(test), _) => (test, format!("test set of {source}")),
        (None, Some(validation)) => (validation, format!("validation split of {source}")),
        (None, None) => (
            train,
            format!("training data of {source} (the run held none out)"),
        ),
    })
}

/// Fails, naming both, when data source `data` does not fit run `dir`: other
/// features, more classes, or classes where the run predicts values (or the reverse).
fn check_matches(dir: &Path, run: &Run, data: &str, source: &config::Source) -> Result<()> {
    let features = source.all.x.shape().get(1).copied().unwrap_or(0);
    let classes = config::class_count(source);
    let describe = |features: usize, classes: Option<usize>| match classes {
        Some(c) => format!("{features} features and {c} classes"),
        None => format!("{features} features and numeric targets"),
    };
    let fits = features == run.state.features
        && match (classes, run.state.classes) {
            (Some(have), Some(trained)) => have <= trained,
            (None, None) => true,
            _ => false,
        };
    if !fits {
        bail!(
            "--data: {data} has {}, but {} trained on {} with {}",
            describe(features, classes),
            dir.display(),
            run.config.data.as_deref().unwrap_or("builtin:spiral"),
            describe(run.state.features, run.state.classes)
        );
    }
    Ok(())
}

/// Reads inputs for prediction from `.npy` or `.csv` (a header, every column a feature).
pub fn read_inputs(path: &Path) -> Result<Tensor<f32>> {
    if path.extension().is_some_and(|e| e == "csv") {
        let text = chainrule::io::read_text(path)?;
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let header = lines
            .next()
            .ok_or_else(|| anyhow!("{}: empty file", path.display()))?;
        let columns = header.split(',').count();
        let mut values = Vec::new();
        for (i, line) in lines.enumerate() {
            let fields: Vec<&str> = line.split(',').collect();
            if fields.len() != columns {
                bail!(
                    "{}: line {}: {} fields, the header has {columns}",
                    path.display(),
                    i + 2,
                    fields.len()
                );
            }
            for f in fields {
                let v: f32 = f
                    .trim()
                    .parse()
                    .ok()
                    .filter(|v: &f32| v.is_finite())
                    .ok_or_else(|| {
                        anyhow!(
                            "{}: line {}: {f:?} is not a finite number",
                            path.display(),
                            i + 2
                        )
                    })?;
                values.push(v);
            }
        }
        let rows = values.len() / columns.max(1);
        return Ok(Tensor::from_vec(values, &[rows, columns])?);
    }
    let array = read_npy(path)?;
    if !array.is_float() && array.dtype() != "uint8" {
        bail!(
            "{}: dtype {} (expected float32, float64 or uint8)",
            path.display(),
            array.dtype()
        );
    }
    let x = array.to_tensor::<f32>()?;
    if !x.all_finite() {
        bail!("{}: holds a non-finite number", path.display());
    }
    Ok(x)
}

/// `chainrule predict RUN --x FILE [--out FILE]`.
pub fn predict_cmd(dir: &Path, x_path: &Path, out: Option<&Path>) -> Result<()> {
    let mut run = open_run(dir)?;
    let x = read_inputs(x_path)?;
    let x = if x.ndim() == 1 {
        x.reshape(&[1, x.len()])?
    } else {
        x
    };
    let x = run
        .state
        .scaler
        .apply(&x)
        .map_err(|e| anyhow!("{}: {e}", x_path.display()))?;
    let x =
        config::to_model_input(&run.model, x).map_err(|e| anyhow!("{}: {e}", x_path.display()))?;
    let raw = predict(&mut run.model, &x)?;
    let columns = raw.shape()[1];
    // Report probabilities for losses that take logits.
    let outputs = as_probabilities(run.loss, &run.model, &raw)?;
    let classification = run.state.classes.is_some();
    let values = outputs.to_vec();
    let rows: Vec<&[f32]> = values.chunks_exact(columns).collect();
    let header: Vec<String> = if classification {
        let names = class_names(&run.state, columns);
        std::iter::once("class".to_string())
            .chain(names.iter().map(|n| csv_field(&format!("p_{n}"))))
            .collect()
    } else {
        (0..columns).map(|i| format!("y{i}")).collect()
    };
    match out {
        Some(path) if path.extension().is_some_and(|e| e == "npy") => {
            let table: Vec<f32> = rows
                .iter()
                .flat_map(|r| {
                    classification
                        .then(|| argmax(r) as f32)
                        .into_iter()
                        .chain(r.iter().copied())
                })
                .collect();
            let tensor = Tensor::<f32>::from_vec(table, &[rows.len(), header.len()])?;
            write_atomic(path, &npy_bytes(&tensor))?;
        }
        _ => {
            // The class by its name from the training labels (a string label column
            // gives its strings back), the numbers to 6 significant digits.
            let names = class_names(&run.state, columns);
            let mut text = header.join(",") + "\n";
            for r in &rows {
                let fields: Vec<String> = classification
                    .then(|| csv_field(&names[argmax(r).min(names.len() - 1)]))
                    .into_iter()
                    .chain(r.iter().map(|&v| rounded(v)))
                    .collect();
                text.push_str(&fields.join(","));
                text.push('\n');
            }
            match out {
                Some(path) => write_atomic(path, text.as_bytes())?,
                None => print!("{text}"),
            }
        }
    }
    Ok(())
}

/// A CSV field: quoted when it holds a comma, a quote or a line break.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

/// `chainrule summary RUN|MODEL.json`.
pub fn summary(target: &Path) -> Result<()> {
    let model_file = if target.is_dir() {
        crate::run::run_files(target)?.join("model.json")
    } else {
        target.to_path_buf()
    };
    let text = chainrule::io::read_text(&model_file)?;
    let model = Sequential::<f32>::from_json(&text, 0)
        .map_err(|e| anyhow!("{}: {e}", model_file.display()))?;
    let shape_text = |shape: Option<&[usize]>| match shape {
        Some(dims) => format!(
            "[N, {}]",
            dims.iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => "[N, D]".to_string(),
    };
    println!(
        "{:<4} {:<34} {:<18} {:>12}",
        "#", "layer", "output shape", "parameters"
    );
    println!("{}", "-".repeat(71));
    let params = model.params();
    let mut total = 0;
    for (i, layer) in model.layers().iter().enumerate() {
        let first = model.param_offset(i).unwrap_or(params.len());
        let end = model.param_offset(i + 1).unwrap_or(params.len());
        let count: usize = params[first..end].iter().map(|p| p.value.len()).sum();
        total += count;
        println!(
            "{i:<4} {:<34} {:<18} {:>12}",
            layer_label(layer),
            shape_text(model.output_shape(i)),
            group(count)
        );
    }
    println!("{}", "-".repeat(71));
    println!("total parameters: {}", group(total));
    let buffers: usize = model.buffers().iter().map(|b| b.value.len()).sum();
    if buffers > 0 {
        println!(
            "buffers (running statistics, batch counts): {}",
            group(buffers)
        );
    }
    if let Some(shape) = model.input_shape() {
        println!("input: {}", shape_text(Some(&shape)));
    }
    Ok(())
}

/// A layer with its settings, as `summary` lists it.
pub fn layer_label(layer: &Layer) -> String {
    let pair = |[a, b]: [usize; 2]| {
        if a == b {
            a.to_string()
        } else {
            format!("{a}×{b}")
        }
    };
    match layer {
        Layer::Linear {
            inputs,
            outputs,
            bias,
        } => format!(
            "linear({inputs} → {outputs}{})",
            if *bias { "" } else { ", no bias" }
        ),
        Layer::Activation(f) => Op::Map(*f).label(),
        Layer::Conv2d {
            in_channels,
            out_channels,
            window,
            bias,
        } => {
            let mut text = format!(
                "conv2d({in_channels} → {out_channels}, {}×{}",
                window.kernel[0], window.kernel[1]
            );
            if window.stride != [1, 1] {
                text += &format!(", stride {}", pair(window.stride));
            }
            if window.padding != [0, 0] {
                text += &format!(", pad {}", pair(window.padding));
            }
            if window.dilation != [1, 1] {
                text += &format!(", dil {}", pair(window.dilation));
            }
            if !bias {
                text += ", no bias";
            }
            text + ")"
        }
        Layer::MaxPool2d { window } | Layer::AvgPool2d { window } => {
            let mut text = format!("{}({}", layer.type_name(), pair(window.kernel));
            if window.stride != window.kernel {
                text += &format!(", stride {}", pair(window.stride));
            }
            if window.padding != [0, 0] {
                text += &format!(", pad {}", pair(window.padding));
            }
            text + ")"
        }
        Layer::Dropout { p } => format!("dropout({p})"),
        Layer::BatchNorm { features, .. } => format!("{}({features})", layer.type_name()),
        Layer::LayerNorm { shape, .. } => format!("layer_norm({shape:?})"),
        other => other.type_name().to_string(),
    }
}

/// 1234567 → "1,234,567".
fn group(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
