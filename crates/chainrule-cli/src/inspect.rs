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
use chainrule::nn::{Architecture, Layer, Sequential};
use chainrule::train::{evaluate, predict};
use std::path::Path;

/// A finished run: its model, settings and saved facts.
pub struct Run {
    pub model: Sequential<f32>,
    pub config: RunConfig,
    pub state: RunState,
    pub loss: Loss,
}

/// Which parameters of a run to load: those it ended with, its best epoch's, or its
/// last epoch's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Weights {
    /// `params.safetensors`: the last epoch's, or the best epoch's when early
    /// stopping restored them.
    Final,
    /// `best.safetensors`: the epoch with the lowest validation loss.
    Best,
    /// The last epoch's: `last.safetensors` when early stopping replaced them in
    /// `params.safetensors`, else `params.safetensors` itself.
    Last,
}

/// Run `dir`'s checkpoint, checked (see [`crate::run::run_files`]), with its final
/// parameters.
pub fn open_run(dir: &Path) -> Result<Run> {
    open_run_with(dir, Weights::Final)
}

/// Run `dir`'s checkpoint, checked, with the parameters `weights` names.
pub fn open_run_with(dir: &Path, weights: Weights) -> Result<Run> {
    let files = crate::run::run_files(dir)?;
    let state = RunState::read(&files.join("state.json"))?;
    let config = RunConfig::read(&files.join("config.toml"))?;
    let mut model = Sequential::<f32>::load_checkpoint(&files)?;
    let other = match weights {
        Weights::Final => None,
        Weights::Best => Some((
            "best.safetensors",
            "it has no validation split to rank epochs by",
        )),
        Weights::Last => files
            .join("last.safetensors")
            .exists()
            .then_some(("last.safetensors", "")),
    };
    if let Some((name, why_missing)) = other {
        let path = files.join(name);
        if !path.exists() {
            bail!("{}: the run has no {name}: {why_missing}", dir.display());
        }
        model
            .load(chainrule::io::read_safetensors::<f32>(&path)?)
            .map_err(|e| anyhow!("{}: {e}", path.display()))?;
    }
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

/// `chainrule eval RUN --data SOURCE [--out-dir DIR]`: the confusion matrix's
/// pictures go into `out_dir`, else into the run folder when it is writable; a
/// read-only run is evaluated all the same, without them.
pub fn eval(
    dir: &Path,
    weights: Weights,
    data: Option<String>,
    json: bool,
    out_dir: Option<&Path>,
) -> Result<()> {
    let pictures = match out_dir {
        Some(folder) => {
            std::fs::create_dir_all(folder).map_err(|e| anyhow!("{}: {e}", folder.display()))?;
            Some(folder.to_path_buf())
        }
        None => crate::run::writable(dir).is_ok().then(|| dir.to_path_buf()),
    };
    let mut run = open_run_with(dir, weights)?;
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
        match &pictures {
            Some(folder) => {
                plot::confusion_heatmap(&folder.join("confusion_matrix"), &confusion, &names)?
            }
            None => eprintln!(
                "chainrule: {}: not writable, so no heat map of the confusion matrix (name a folder for it with --out-dir)",
                dir.display()
            ),
        }
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
        if let Some(folder) = &pictures {
            println!(
                "\nheat map: {}",
                folder.join("confusion_matrix.png").display()
            );
        }
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

/// Rows predicted at a time from a CSV file: a multiple of the library's
/// evaluation batch (1,024 rows), so that the predictions are those of one call on
/// the whole file, while memory holds only this many rows (a 1 GB CSV once took
/// 6.8 GB: its text, its values, their scaled copy and the output text, all whole).
const PREDICT_ROWS: usize = 4096;

/// The longest CSV line `predict` reads: a row of 784 pixels takes about 4 KB.
const MAX_LINE: u64 = 1 << 24;

/// Opens `path` if it is a regular file (a FIFO or a device may never end).
fn open_regular(path: &Path) -> Result<std::fs::File> {
    let meta = std::fs::metadata(path).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    if !meta.is_file() {
        bail!(
            "{}: not a regular file (a folder, a FIFO or a device): refusing to read it",
            path.display()
        );
    }
    std::fs::File::open(path).map_err(|e| anyhow!("{}: {e}", path.display()))
}

/// Inputs for prediction from `.npy` (read whole: its header gives its size, which
/// the reader checks against memory) or `.csv` (a header, every column a feature;
/// read a block of rows at a time).
enum Inputs {
    Npy(Option<Tensor<f32>>),
    Csv {
        lines: std::io::BufReader<std::fs::File>,
        columns: usize,
        /// The number of the last line read, from 1.
        line: usize,
    },
}

impl Inputs {
    fn open(path: &Path) -> Result<Inputs> {
        if path.extension().is_some_and(|e| e == "csv") {
            let mut lines = std::io::BufReader::new(open_regular(path)?);
            let mut line = 0;
            let header = next_line(&mut lines, path, &mut line)?
                .ok_or_else(|| anyhow!("{}: empty file", path.display()))?;
            let columns = header.split(',').count();
            return Ok(Inputs::Csv {
                lines,
                columns,
                line,
            });
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
        let x = if x.ndim() == 1 {
            x.reshape(&[1, x.len()])?
        } else {
            x
        };
        Ok(Inputs::Npy(Some(x)))
    }

    /// The next block of rows, `None` at the end.
    fn next_block(&mut self, path: &Path) -> Result<Option<Tensor<f32>>> {
        let (lines, columns, line) = match self {
            Inputs::Npy(x) => return Ok(x.take()),
            Inputs::Csv {
                lines,
                columns,
                line,
            } => (lines, *columns, line),
        };
        let mut values = Vec::with_capacity(PREDICT_ROWS * columns);
        let mut rows = 0;
        while rows < PREDICT_ROWS {
            let Some(text) = next_line(lines, path, line)? else {
                break;
            };
            let fields: Vec<&str> = text.split(',').collect();
            if fields.len() != columns {
                bail!(
                    "{}: line {line}: {} fields, the header has {columns}",
                    path.display(),
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
                            "{}: line {line}: {f:?} is not a finite number",
                            path.display()
                        )
                    })?;
                values.push(v);
            }
            rows += 1;
        }
        Ok((rows > 0)
            .then(|| Tensor::from_vec(values, &[rows, columns]))
            .transpose()?)
    }
}

/// Reads inputs for prediction whole, from `.npy` or `.csv` (a header, every column a
/// feature): for the few samples `explain` and its kin take.
pub fn read_inputs(path: &Path) -> Result<Tensor<f32>> {
    let mut inputs = Inputs::open(path)?;
    let mut blocks = Vec::new();
    while let Some(block) = inputs.next_block(path)? {
        blocks.push(block);
    }
    match blocks.len() {
        0 => bail!("{}: no rows", path.display()),
        1 => Ok(blocks.pop().expect("one block")),
        _ => {
            let columns = blocks[0].shape()[1];
            let rows = blocks.iter().map(|b| b.shape()[0]).sum::<usize>();
            let values = blocks.iter().flat_map(|b| b.to_vec()).collect();
            Ok(Tensor::from_vec(values, &[rows, columns])?)
        }
    }
}

/// The next line of `lines` that is not blank, without its line break; `line`
/// counts the lines read.
fn next_line(
    lines: &mut std::io::BufReader<std::fs::File>,
    path: &Path,
    line: &mut usize,
) -> Result<Option<String>> {
    use std::io::{BufRead, Read};
    loop {
        let mut bytes = Vec::new();
        lines
            .by_ref()
            .take(MAX_LINE)
            .read_until(b'\n', &mut bytes)
            .map_err(|e| anyhow!("{}: {e}", path.display()))?;
        if bytes.is_empty() {
            return Ok(None);
        }
        *line += 1;
        if bytes.len() as u64 == MAX_LINE && !bytes.ends_with(b"\n") {
            bail!(
                "{}: line {line}: longer than {MAX_LINE} bytes",
                path.display()
            );
        }
        let text = String::from_utf8(bytes)
            .map_err(|_| anyhow!("{}: line {line}: not UTF-8 text", path.display()))?;
        if !text.trim().is_empty() {
            return Ok(Some(text.trim_end_matches(['\n', '\r']).to_string()));
        }
    }
}

/// The predictions of a block of rows: the probabilities a loss that takes logits
/// implies, or the outputs as they are.
fn predict_block(run: &mut Run, x: Tensor<f32>, x_path: &Path) -> Result<Tensor<f32>> {
    let x = run
        .state
        .scaler
        .apply(&x)
        .map_err(|e| anyhow!("{}: {e}", x_path.display()))?;
    let x =
        config::to_model_input(&run.model, x).map_err(|e| anyhow!("{}: {e}", x_path.display()))?;
    let raw = predict(&mut run.model, &x)?;
    as_probabilities(run.loss, &run.model, &raw)
}

/// `chainrule predict RUN --x FILE [--out FILE]`: a CSV is read, predicted and
/// written a block of rows at a time.
pub fn predict_cmd(dir: &Path, weights: Weights, x_path: &Path, out: Option<&Path>) -> Result<()> {
    let mut run = open_run_with(dir, weights)?;
    let mut inputs = Inputs::open(x_path)?;
    let classification = run.state.classes.is_some();
    // Each output row: the class (for classification), then the outputs.
    let row_values = |r: &[f32]| -> Vec<f32> {
        classification
            .then(|| argmax(r) as f32)
            .into_iter()
            .chain(r.iter().copied())
            .collect()
    };
    let header = |state: &RunState, columns: usize| -> Vec<String> {
        if classification {
            let names = class_names(state, columns);
            std::iter::once("class".to_string())
                .chain(names.iter().map(|n| csv_field(&format!("p_{n}"))))
                .collect()
        } else {
            (0..columns).map(|i| format!("y{i}")).collect()
        }
    };
    let no_rows = || anyhow!("{}: no rows to predict", x_path.display());
    if let Some(path) = out
        && path.extension().is_some_and(|e| e == "npy")
    {
        // An .npy header states the row count: the (small) output table is kept.
        let (mut table, mut rows, mut width) = (Vec::new(), 0, 0);
        while let Some(x) = inputs.next_block(x_path)? {
            let outputs = predict_block(&mut run, x, x_path)?;
            let columns = outputs.shape()[1];
            width = header(&run.state, columns).len();
            for r in outputs.to_vec().chunks_exact(columns) {
                table.extend(row_values(r));
                rows += 1;
            }
        }
        if rows == 0 {
            return Err(no_rows());
        }
        let tensor = Tensor::<f32>::from_vec(table, &[rows, width])?;
        write_atomic(path, &npy_bytes(&tensor))?;
        return Ok(());
    }
    let mut write_csv = |w: &mut dyn std::io::Write| -> Result<()> {
        let mut first = true;
        while let Some(x) = inputs.next_block(x_path)? {
            let outputs = predict_block(&mut run, x, x_path)?;
            let columns = outputs.shape()[1];
            if first {
                writeln!(w, "{}", header(&run.state, columns).join(","))?;
                first = false;
            }
            // The class by its name from the training labels (a string label column
            // gives its strings back), the numbers to 6 significant digits.
            let names = class_names(&run.state, columns);
            for r in outputs.to_vec().chunks_exact(columns) {
                let fields: Vec<String> = classification
                    .then(|| csv_field(&names[argmax(r).min(names.len() - 1)]))
                    .into_iter()
                    .chain(r.iter().map(|&v| rounded(v)))
                    .collect();
                writeln!(w, "{}", fields.join(","))?;
            }
        }
        if first {
            return Err(no_rows());
        }
        Ok(())
    };
    match out {
        Some(path) => chainrule::io::write_atomic_with(path, |w| write_csv(w)),
        None => {
            let mut w = std::io::BufWriter::new(std::io::stdout().lock());
            write_csv(&mut w)?;
            std::io::Write::flush(&mut w)?;
            Ok(())
        }
    }
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
    // The layers' shapes and counts, without the parameters: a model file may ask
    // for more memory than there is, and a summary needs none of it.
    let plan =
        Architecture::from_json(&text).map_err(|e| anyhow!("{}: {e}", model_file.display()))?;
    print!("{}", architecture_table(&plan));
    Ok(())
}

/// The model summary that `summary` prints and `train` shows before training: one
/// row per layer with its output shape and parameter count, then the totals, as
/// Keras counts them (batch norm's running statistics are the non-trainable ones).
pub fn architecture_table(plan: &Architecture) -> String {
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
    let mut out = format!(
        "{:<4} {:<34} {:<18} {:>12}\n{}\n",
        "#",
        "layer",
        "output shape",
        "parameters",
        "-".repeat(71)
    );
    for (i, layer) in plan.layers.iter().enumerate() {
        out += &format!(
            "{i:<4} {:<34} {:<18} {:>12}\n",
            layer_label(layer),
            shape_text(plan.output_shapes[i].as_deref()),
            group(plan.parameters[i])
        );
    }
    out += &format!("{}\n", "-".repeat(71));
    let trainable: usize = plan.parameters.iter().sum();
    let buffers: usize = plan.buffers.iter().sum();
    out += &format!("total parameters: {}\n", group(trainable + buffers));
    out += &format!("  trainable: {}\n", group(trainable));
    out += &format!(
        "  non-trainable (running statistics, batch counts): {}\n",
        group(buffers)
    );
    if let Some(shape) = plan.input_shape() {
        out += &format!("input: {}\n", shape_text(Some(&shape)));
    }
    out
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
pub fn group(n: usize) -> String {
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
