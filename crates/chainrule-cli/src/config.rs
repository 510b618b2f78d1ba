//! The run configuration: a TOML or JSON file, overridden by flags, resolved with
//! defaults into everything a training run needs.

use anyhow::{Result, anyhow, bail};
use chainrule::Tensor;
use chainrule::autodiff::Elementwise;
use chainrule::data::{
    Dataset, MAX_CLASSES, MinMaxScaler, Standardizer, Target, TargetKind, read_csv, read_mnist,
    synthetic,
};
use chainrule::io::{NpyArray, read_npy};
use chainrule::loss::Loss;
use chainrule::nn::{Init, Layer, Sequential};
use chainrule::optim::{OptimizerConfig, Schedule};
use chainrule::train::{EarlyStopping, TrainConfig};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Every knob of a training run. All fields are optional in a file; the resolved
/// copy written to a run folder has them all. Documented in examples/configs/.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// `builtin:NAME`, `mnist:DIR`, `csv:FILE`, `npy:X,Y`.
    pub data: Option<String>,
    /// CSV: the target column (default: the last column).
    pub target: Option<String>,
    /// CSV/npy: `classification` or `regression`.
    pub task: Option<String>,
    /// Built-in data: rows to generate.
    pub samples: Option<usize>,
    /// Built-in data: Gaussian noise.
    pub noise: Option<f64>,
    /// Feature scaling fitted on the training split: `none`, `standard`, `minmax`.
    pub scale: Option<String>,
    /// Layer sizes, input to output (`[2, 64, 64, 3]`).
    pub layers: Option<Vec<usize>>,
    /// Activation between the linear layers of `layers`.
    pub activation: Option<String>,
    /// Explicit layers, as the model JSON writes them (instead of `layers`).
    pub layer: Option<Vec<serde_json::Value>>,
    /// The shape of one sample for `layer` (`[1, 28, 28]`: channels, height, width):
    /// each row of the data is reshaped to it after scaling.
    pub input: Option<Vec<usize>>,
    /// Weight initializer: `pytorch`, `xavier_uniform`, `xavier_normal`, `he_uniform`, `he_normal`.
    pub init: Option<String>,
    /// Loss name (default: `cross_entropy` for classification, `mse` for regression).
    pub loss: Option<String>,
    /// Optimizer table, as the training contract writes it (`{type = "adam", lr = 0.01}`).
    pub optimizer: Option<serde_json::Value>,
    /// Learning-rate schedule table (`{type = "cosine", t_max = 50}`).
    pub schedule: Option<serde_json::Value>,
    /// Clip gradients to this global norm.
    pub clip_grad_norm: Option<f64>,
    /// Skip a step whose loss or gradient is not finite instead of stopping.
    pub skip_nonfinite: Option<bool>,
    /// Passes over the training data.
    pub epochs: Option<usize>,
    /// Rows per batch.
    pub batch_size: Option<usize>,
    /// Reshuffle every epoch.
    pub shuffle: Option<bool>,
    /// Drop a last, smaller batch.
    pub drop_last: Option<bool>,
    /// Fraction of the training data held out for validation.
    pub validation_split: Option<f64>,
    /// Early stopping: epochs without a better validation loss.
    pub patience: Option<usize>,
    /// Seed for data generation, splitting, initialisation and shuffling.
    pub seed: Option<u64>,
    /// Threads for matrix products (0: one per core).
    pub threads: Option<usize>,
    /// Folder that holds run folders.
    pub runs_dir: Option<String>,
    /// The run folder's name (default: the data set's name and a number).
    pub name: Option<String>,
    /// Save the checkpoint after every this many epochs (default 1), besides at
    /// the end and when a signal stops training: what a crash can lose at most.
    pub checkpoint_every: Option<usize>,
}

/// The first float of `table` (dotted key, value) that is inf or nan, if any.
fn first_nonfinite(table: &toml::Table, prefix: &str) -> Option<(String, f64)> {
    table.iter().find_map(|(key, value)| {
        let key = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            toml::Value::Float(v) if !v.is_finite() => Some((key, *v)),
            toml::Value::Table(inner) => first_nonfinite(inner, &key),
            toml::Value::Array(items) => {
                items.iter().enumerate().find_map(|(i, item)| match item {
                    toml::Value::Float(v) if !v.is_finite() => Some((format!("{key}[{i}]"), *v)),
                    toml::Value::Table(inner) => first_nonfinite(inner, &format!("{key}[{i}]")),
                    _ => None,
                })
            }
            _ => None,
        }
    })
}

/// Names other tools give to settings that chainrule keeps elsewhere.
const ELSEWHERE: [(&str, &str); 8] = [
    ("learning_rate", "[optimizer] lr"),
    ("lr", "[optimizer] lr"),
    ("optimiser", "optimizer"),
    ("scheduler", "schedule"),
    ("lr_schedule", "schedule"),
    ("early_stopping", "patience"),
    ("batch", "batch_size"),
    ("clip", "clip_grad_norm"),
];

/// serde's message for an unknown field of the config (`unknown field `x`,
/// expected one of `a`, `b`, …`) with the name the user most likely meant: a setting
/// of the optimizer table, another tool's name for one, or the nearest field by
/// spelling; other messages as they are.
fn unknown_field_hint(message: &str) -> String {
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return message.to_string();
    };
    let Some((name, expected)) = rest.split_once('`') else {
        return message.to_string();
    };
    let fields: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    let optimizer_field = ["sgd", "adam", "rmsprop", "adagrad", "adadelta"]
        .iter()
        .any(|kind| {
            let probe = serde_json::json!({ "type": kind, name: serde_json::Value::Null });
            !OptimizerConfig::from_json(&probe)
                .is_err_and(|e| e.to_string().contains("unknown field"))
        });
    let hint = if let Some((_, there)) = ELSEWHERE.iter().find(|(n, _)| *n == name) {
        Some(there.to_string())
    } else if optimizer_field && name != "type" {
        Some(format!("[optimizer] {name}"))
    } else {
        chainrule::nearest_name(name, &fields).map(str::to_string)
    };
    match hint {
        Some(h) => format!(
            "unknown field `{name}`: did you mean {h}? (valid: {})",
            fields.join(", ")
        ),
        None => format!("unknown field `{name}` (valid: {})", fields.join(", ")),
    }
}

impl RunConfig {
    /// Reads a TOML or JSON file (by extension; `.json` is JSON).
    pub fn read(path: &Path) -> Result<RunConfig> {
        let text = chainrule::io::read_text(path)?;
        if path.extension().is_some_and(|e| e == "json") {
            serde_json::from_str(&text).map_err(|e| anyhow!("{}: {e}", path.display()))
        } else {
            // JSON (which the optimizer table becomes) has no inf or nan: name such
            // a number here, before it turns into a null on the way.
            if let Ok(table) = text.parse::<toml::Table>()
                && let Some((key, value)) = first_nonfinite(&table, "")
            {
                bail!("{}: {key}: {value} is not a finite number", path.display());
            }
            let config: RunConfig = toml::from_str(&text).map_err(|e| {
                let message = unknown_field_hint(e.message());
                // The line of the span's first character: the newlines before it, plus
                // one (counting `lines()` of the text before it was one short when the
                // span starts a line).
                let line = e.span().map(|s| text[..s.start].matches('\n').count() + 1);
                match line {
                    Some(line) => anyhow!("{}: line {line}: {message}", path.display()),
                    None => anyhow!("{}: {message}", path.display()),
                }
            })?;
            config.check_tables(path, &text)?;
            Ok(config)
        }
    }

    /// Reads the optimizer and schedule tables now, so that a mistake in them is
    /// reported with the file and line (not later, when training starts, without).
    fn check_tables(&self, path: &Path, text: &str) -> Result<()> {
        // A table without its type is completed by flags (--optimizer) first.
        let typed = |v: &Option<serde_json::Value>| v.clone().filter(|v| v.get("type").is_some());
        let problems = [
            (
                "optimizer",
                typed(&self.optimizer)
                    .and_then(|v| OptimizerConfig::from_json(&v).err().map(|e| e.to_string())),
            ),
            (
                "schedule",
                typed(&self.schedule)
                    .and_then(|v| Schedule::from_json(&v).err().map(|e| e.to_string())),
            ),
        ];
        for (table, problem) in problems {
            let Some(message) = problem else {
                continue;
            };
            // The line of the field named, if it is in the file (the table's header
            // otherwise).
            let field = message
                .split(':')
                .next()
                .and_then(|f| f.strip_prefix(&format!("{table}.")))
                .unwrap_or("");
            let line = text
                .lines()
                .position(|l| !field.is_empty() && l.trim_start().starts_with(field))
                .or_else(|| text.lines().position(|l| l.trim() == format!("[{table}]")));
            return Err(match line {
                Some(i) => anyhow!("{}: line {}: {message}", path.display(), i + 1),
                None => anyhow!("{}: {message}", path.display()),
            });
        }
        Ok(())
    }

    /// `self` with every field that `flags` sets replaced by the flag's value.
    pub fn overridden_by(mut self, flags: RunConfig) -> RunConfig {
        macro_rules! take {
            ($($field:ident),*) => {$(
                if flags.$field.is_some() {
                    self.$field = flags.$field;
                }
            )*};
        }
        take!(
            data,
            target,
            task,
            samples,
            noise,
            scale,
            layers,
            activation,
            layer,
            init,
            loss,
            optimizer,
            schedule,
            clip_grad_norm,
            skip_nonfinite,
            epochs,
            batch_size,
            shuffle,
            drop_last,
            validation_split,
            patience,
            seed,
            threads,
            runs_dir,
            name,
            checkpoint_every
        );
        self
    }
}

/// The data of a run, split and scaled.
pub struct Splits {
    pub train: Dataset<f32>,
    pub validation: Option<Dataset<f32>>,
    pub test: Option<Dataset<f32>>,
    pub features: usize,
    /// Class count for classification, `None` for regression.
    pub classes: Option<usize>,
    pub class_names: Option<Vec<String>>,
    pub scaler: Scaler,
}

/// Feature scaling, fitted on the training split and saved with the run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Scaler {
    pub kind: String,
    pub shift: Vec<f64>,
    pub scale: Vec<f64>,
}

impl Scaler {
    fn fit(kind: &str, x: &Tensor<f32>) -> Result<Scaler> {
        let columns = x.shape()[1];
        Ok(match kind {
            "none" => Scaler {
                kind: kind.into(),
                shift: vec![0.0; columns],
                scale: vec![1.0; columns],
            },
            "standard" => {
                let s = Standardizer::fit(x)?;
                Scaler {
                    kind: kind.into(),
                    shift: s.mean,
                    scale: s.std,
                }
            }
            "minmax" => {
                let s = MinMaxScaler::fit(x)?;
                Scaler {
                    kind: kind.into(),
                    shift: s.min,
                    scale: s.range,
                }
            }
            // One mean and standard deviation over every value (PyTorch's MNIST
            // example's Normalize((0.1307,), (0.3081,)) is this, fitted on MNIST).
            "global" => {
                let values = x.to_vec();
                let n = values.len().max(1) as f64;
                let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
                let var = values
                    .iter()
                    .map(|&v| (f64::from(v) - mean).powi(2))
                    .sum::<f64>()
                    / n;
                let std = if var > 0.0 { var.sqrt() } else { 1.0 };
                Scaler {
                    kind: kind.into(),
                    shift: vec![mean; columns],
                    scale: vec![std; columns],
                }
            }
            other => bail!(
                "scale: unknown scaling {other:?} (expected none, standard, minmax or global)"
            ),
        })
    }

    /// Applies the scaling to `x`.
    pub fn apply(&self, x: &Tensor<f32>) -> Result<Tensor<f32>> {
        if x.ndim() != 2 || x.shape()[1] != self.shift.len() {
            bail!(
                "x: expected [N, {}] features, got {:?}",
                self.shift.len(),
                x.shape()
            );
        }
        let s = Standardizer {
            mean: self.shift.clone(),
            std: self.scale.clone(),
        };
        Ok(s.transform(x)?)
    }

    /// Applies the scaling to a data set's inputs, in place (no second copy of the
    /// data: MNIST's peak memory depends on it).
    pub fn apply_to(&self, data: Dataset<f32>) -> Result<Dataset<f32>> {
        let Dataset { mut x, target } = data;
        if x.ndim() != 2 || x.shape()[1] != self.shift.len() {
            bail!(
                "x: expected [N, {}] features, got {:?}",
                self.shift.len(),
                x.shape()
            );
        }
        let columns = self.shift.len();
        let (shift, scale): (Vec<f32>, Vec<f32>) = self
            .shift
            .iter()
            .zip(&self.scale)
            .map(|(&a, &b)| (a as f32, b as f32))
            .unzip();
        for row in x.as_mut_slice().chunks_exact_mut(columns.max(1)) {
            for ((v, a), b) in row.iter_mut().zip(&shift).zip(&scale) {
                *v = (*v - a) / b;
            }
        }
        Ok(Dataset::new(x, target)?)
    }
}

/// A data source string split into its kind and argument.
fn source(data: &str) -> Result<(&str, &str)> {
    data.split_once(':').ok_or_else(|| {
        anyhow!("data: {data:?} must be builtin:NAME, mnist:DIR, csv:FILE or npy:X,Y")
    })
}

/// The name a run folder takes after its data.
pub fn data_name(data: &str) -> String {
    let (kind, arg) = data.split_once(':').unwrap_or(("data", data));
    match kind {
        "builtin" => arg.to_string(),
        "mnist" => "mnist".into(),
        _ => Path::new(arg.split(',').next().unwrap_or(arg))
            .file_stem()
            .map_or(kind.to_string(), |s| s.to_string_lossy().into_owned()),
    }
}

/// The first non-finite value of `values`, a table of `columns` columns, as its row
/// and column (from 1) and the value: bad data is reported in its file before
/// training, not as a non-finite output of some layer after.
fn first_nonfinite_cell(values: &[f32], columns: usize) -> Option<(usize, usize, f32)> {
    let at = values.iter().position(|v| !v.is_finite())?;
    let columns = columns.max(1);
    Some((at / columns + 1, at % columns + 1, values[at]))
}

fn npy_data(x_path: &Path, y_path: &Path) -> Result<Dataset<f32>> {
    let x = read_npy(x_path)?;
    if !x.is_float() || x.shape().len() != 2 {
        bail!(
            "{}: x must be a float32 or float64 array [N, D], got {} {:?}",
            x_path.display(),
            x.dtype(),
            x.shape()
        );
    }
    let x = x.to_tensor::<f32>()?;
    let rows = x.shape()[0];
    if !x.all_finite()
        && let Some((row, column, value)) = first_nonfinite_cell(&x.to_vec(), x.shape()[1])
    {
        bail!(
            "{}: row {row}, column {column}: {value} is not a finite number",
            x_path.display()
        );
    }
    let y = read_npy(y_path)?;
    let target = match &y {
        NpyArray::I32(..) | NpyArray::I64(..) | NpyArray::U8(..) => {
            let values = y.to_tensor::<f64>()?.to_vec();
            if values.iter().any(|&v| v < 0.0) || y.shape() != [rows] {
                bail!(
                    "{}: class labels must be non-negative integers of shape [{rows}]",
                    y_path.display()
                );
            }
            // A class index sizes the model's output layer: bounded where it is read
            // (one label of 30,000,000 in a 500-byte file once sized the model).
            if let Some(row) = values.iter().position(|&v| v >= MAX_CLASSES as f64) {
                bail!(
                    "{}: row {}: class {} is not below {MAX_CLASSES}, the most classes chainrule takes (class labels are indices from 0)",
                    y_path.display(),
                    row + 1,
                    values[row]
                );
            }
            Target::Classes(values.iter().map(|&v| v as usize).collect())
        }
        _ => {
            let t = y.to_tensor::<f32>()?;
            let t = if t.shape() == [rows] {
                t.reshape(&[rows, 1])?
            } else {
                t
            };
            if t.ndim() != 2 || t.shape()[0] != rows {
                bail!(
                    "{}: targets must be [{rows}] or [{rows}, K], got {:?}",
                    y_path.display(),
                    y.shape()
                );
            }
            if !t.all_finite()
                && let Some((row, column, value)) = first_nonfinite_cell(&t.to_vec(), t.shape()[1])
            {
                bail!(
                    "{}: row {row}, column {column}: {value} is not a finite number",
                    y_path.display()
                );
            }
            Target::Values(t)
        }
    };
    Dataset::new(x, target).map_err(|e| anyhow!("{}: {e}", y_path.display()))
}

/// The rows a data source holds, before splitting and scaling.
pub struct Source {
    /// The data to train on (or to evaluate, when there is no test set).
    pub all: Dataset<f32>,
    /// A separate test set (MNIST's t10k files).
    pub test: Option<Dataset<f32>>,
    pub class_names: Option<Vec<String>>,
}

/// Reads the data source a config names.
pub fn read_source(config: &RunConfig) -> Result<Source> {
    let data = config.data.as_deref().unwrap_or("builtin:spiral");
    let seed = config.seed.unwrap_or(0);
    let (kind, arg) = source(data)?;
    let mut class_names = None;
    let (all, test) = match kind {
        "builtin" => {
            let samples = config.samples.unwrap_or(900);
            let noise = config
                .noise
                .unwrap_or_else(|| synthetic::default_noise(arg));
            (synthetic::generate::<f32>(arg, samples, noise, seed)?, None)
        }
        "mnist" => {
            let dir = Path::new(arg);
            let (train, test) = (read_mnist(dir, "train")?, read_mnist(dir, "t10k")?);
            let (a, b) = (train.x.shape()[1], test.x.shape()[1]);
            if a != b {
                bail!(
                    "{}: the t10k images have {b} pixels each, the train images {a}",
                    dir.display()
                );
            }
            (train, Some(test))
        }
        "csv" => {
            let path = Path::new(arg);
            let target = match &config.target {
                Some(t) => t.clone(),
                None => last_csv_column(path)?,
            };
            let task = match config.task.as_deref().unwrap_or("classification") {
                "classification" => TargetKind::Classes,
                "regression" => TargetKind::Values,
                other => bail!("task: {other:?} must be classification or regression"),
            };
            let csv = read_csv::<f32>(path, &target, task)?;
            class_names = csv.class_names;
            (csv.dataset, None)
        }
        "npy" => {
            let (x, y) = arg
                .split_once(',')
                .ok_or_else(|| anyhow!("data: npy:X,Y needs two files, got {arg:?}"))?;
            (npy_data(Path::new(x), Path::new(y))?, None)
        }
        other => bail!("data: unknown source {other:?} (expected builtin, mnist, csv or npy)"),
    };
    if all.is_empty() {
        bail!("data: {data} holds no rows");
    }
    Ok(Source {
        all,
        test,
        class_names,
    })
}

/// The number of classes in classification targets.
pub fn class_count(source: &Source) -> Option<usize> {
    let most = |d: &Dataset<f32>| match &d.target {
        Target::Classes(c) => Some(c.iter().max().map_or(0, |m| m + 1)),
        Target::Values(_) => None,
    };
    let seen = most(&source.all)?;
    let seen = seen.max(source.test.as_ref().and_then(most).unwrap_or(0));
    Some(
        source
            .class_names
            .as_ref()
            .map_or(seen, |n| n.len().max(seen)),
    )
}

/// Loads the data a config names, splits off validation data, fits the scaling on
/// the training split and applies it to every split.
pub fn load_data(config: &RunConfig) -> Result<Splits> {
    let source = read_source(config)?;
    let classes = class_count(&source);
    let Source {
        all,
        test,
        class_names,
    } = source;
    let split = config.validation_split.unwrap_or(0.2);
    let (train, validation) = if split > 0.0 {
        let (t, v) = all.split(split, config.seed.unwrap_or(0))?;
        drop(all); // the split copied the rows; free the original before scaling
        (t, (!v.is_empty()).then_some(v))
    } else {
        (all, None)
    };
    let scaler = Scaler::fit(config.scale.as_deref().unwrap_or("standard"), &train.x)?;
    let features = train.x.shape()[1];
    Ok(Splits {
        train: scaler.apply_to(train)?,
        validation: validation.map(|v| scaler.apply_to(v)).transpose()?,
        test: test.map(|t| scaler.apply_to(t)).transpose()?,
        features,
        classes,
        class_names,
        scaler,
    })
}

/// The last column's name in `path`'s header: only the first line is read (the
/// file itself may be larger than memory, and is checked when it is read).
fn last_csv_column(path: &Path) -> Result<String> {
    use std::io::{BufRead, Read};
    // The header line, bounded: a file with no line break is not a CSV header.
    const MAX_HEADER: u64 = 1 << 20;
    if !std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
        // read_text names what is wrong: missing, a folder, a FIFO or a device.
        chainrule::io::read_text(path)?;
    }
    let file = std::fs::File::open(path).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let mut line = Vec::new();
    std::io::BufReader::new(file.take(MAX_HEADER))
        .read_until(b'\n', &mut line)
        .map_err(|e| anyhow!("{}: {e}", path.display()))?;
    if line.is_empty() {
        bail!("{}: empty file", path.display());
    }
    if !line.ends_with(b"\n") && line.len() as u64 == MAX_HEADER {
        bail!(
            "{}: no line break in the first {MAX_HEADER} bytes: not a CSV header",
            path.display()
        );
    }
    let header = std::str::from_utf8(&line)
        .map_err(|_| anyhow!("{}: line 1: not UTF-8 text", path.display()))?;
    Ok(header
        .trim_end()
        .rsplit(',')
        .next()
        .unwrap_or("")
        .trim()
        .to_string())
}

/// The layer sizes of a config that gives none: two hidden layers of 64.
fn default_layers(splits: &Splits) -> Vec<usize> {
    vec![splits.features, 64, 64, outputs(splits)]
}

/// The model's output width the data asks for: a unit per class, or per target
/// column.
fn outputs(splits: &Splits) -> usize {
    splits
        .classes
        .unwrap_or_else(|| match &splits.train.target {
            Target::Values(v) => v.shape()[1],
            Target::Classes(_) => unreachable!("classification has classes"),
        })
}

/// `config` (resolved) with every remaining default filled in from what the data and
/// the training settings decided, for the run folder's config.toml: the layer
/// sizes, the data source's settings, the loss, every optimizer and schedule
/// setting.
pub fn completed(mut config: RunConfig, splits: &Splits, train: &TrainConfig) -> RunConfig {
    if config.layer.is_none() && config.layers.is_none() {
        config.layers = Some(default_layers(splits));
    }
    let kind = config
        .data
        .as_deref()
        .and_then(|d| d.split_once(':'))
        .map_or("", |(k, _)| k)
        .to_string();
    match kind.as_str() {
        "builtin" => {
            config.samples.get_or_insert(900);
            let name = config
                .data
                .as_deref()
                .and_then(|d| d.split_once(':'))
                .map_or("", |(_, n)| n);
            config
                .noise
                .get_or_insert_with(|| synthetic::default_noise(name));
        }
        "csv" | "npy" => {
            let task = if splits.classes.is_some() {
                "classification"
            } else {
                "regression"
            };
            config.task.get_or_insert_with(|| task.into());
        }
        _ => {}
    }
    config.loss = Some(train.loss.name().into());
    config.optimizer = Some(train.optimizer.to_json());
    config.schedule = Some(train.schedule.to_json());
    config.shuffle = Some(train.shuffle);
    config.drop_last = Some(train.drop_last);
    config.skip_nonfinite = Some(train.skip_nonfinite);
    config
}

/// The model a config describes, checked against the data's shape.
pub fn build_model(config: &RunConfig, splits: &Splits) -> Result<Sequential<f32>> {
    let outputs = outputs(splits);
    let init = Init::from_name(config.init.as_deref().unwrap_or("pytorch"))?;
    let seed = config.seed.unwrap_or(0);
    let layers = if let Some(explicit) = &config.layer {
        let json = match &config.input {
            Some(input) => serde_json::json!({ "input": input, "layers": explicit }),
            None => serde_json::json!({ "layers": explicit }),
        };
        Sequential::<f32>::from_json(&json.to_string(), seed)
            .map_err(|e| anyhow!("layer: {e}"))?
            .layers()
            .to_vec()
    } else {
        let sizes = config
            .layers
            .clone()
            .unwrap_or_else(|| default_layers(splits));
        if sizes.len() < 2 {
            bail!("layers: needs at least an input and an output size, got {sizes:?}");
        }
        if sizes[0] != splits.features {
            bail!(
                "layers: the first size is {} but the data has {} features",
                sizes[0],
                splits.features
            );
        }
        if sizes[sizes.len() - 1] != outputs {
            let what = if splits.classes.is_some() {
                "classes"
            } else {
                "target columns"
            };
            bail!(
                "layers: the last size is {} but the data has {outputs} {what}",
                sizes[sizes.len() - 1]
            );
        }
        let activation = match config.activation.as_deref().unwrap_or("relu") {
            "identity" => Layer::Identity,
            name => match Elementwise::from_name(name).filter(|f| f.is_layer()) {
                Some(f) => Layer::Activation(f),
                None => bail!(
                    "activation: unknown activation {name:?} (expected {} or identity)",
                    Elementwise::LAYERS.map(Elementwise::name).join(", ")
                ),
            },
        };
        let mut layers = Vec::new();
        for (i, pair) in sizes.windows(2).enumerate() {
            if i > 0 {
                layers.push(activation.clone());
            }
            layers.push(Layer::Linear {
                inputs: pair[0],
                outputs: pair[1],
                bias: true,
            });
        }
        layers
    };
    if config.input.is_some() && config.layer.is_none() {
        bail!("input: applies to explicit layers (`layer`), not to `layers` sizes");
    }
    let input = config.input.clone();
    let model = Sequential::with_input(input, layers, init, seed)?;
    match model.input_shape() {
        Some(shape) if shape.iter().product::<usize>() != splits.features => bail!(
            "{}: the model takes {shape:?} per sample ({} values) but the data has {} features",
            if config.input.is_some() {
                "input"
            } else {
                "layer"
            },
            shape.iter().product::<usize>(),
            splits.features
        ),
        _ => Ok(model),
    }
}

/// `x` `[N, D]` (scaled features) in the shape `model` takes, `[N, ...input]`: an
/// image model's rows become images.
pub fn to_model_input(model: &Sequential<f32>, x: Tensor<f32>) -> Result<Tensor<f32>> {
    match model.input_shape() {
        Some(shape) if shape.len() > 1 => {
            let mut full = vec![x.shape()[0]];
            full.extend(&shape);
            Ok(x.reshape(&full).map_err(|_| {
                anyhow!(
                    "x: the model takes {shape:?} per sample, the data has {:?}",
                    &x.shape()[1..]
                )
            })?)
        }
        _ => Ok(x),
    }
}

/// The splits with their inputs in the shape `model` takes (see [`to_model_input`]).
pub fn shaped_for(model: &Sequential<f32>, mut splits: Splits) -> Result<Splits> {
    let shape = |data: Dataset<f32>| -> Result<Dataset<f32>> {
        Ok(Dataset::new(to_model_input(model, data.x)?, data.target)?)
    };
    splits.train = shape(splits.train)?;
    splits.validation = splits.validation.map(shape).transpose()?;
    splits.test = splits.test.map(shape).transpose()?;
    Ok(splits)
}

/// The training settings a config describes.
pub fn train_config(config: &RunConfig, classification: bool) -> Result<TrainConfig> {
    let loss_name = config.loss.clone().unwrap_or_else(|| {
        if classification {
            "cross_entropy"
        } else {
            "mse"
        }
        .into()
    });
    let loss = Loss::from_name(&loss_name)?;
    let optimizer = OptimizerConfig::from_json(config.optimizer.as_ref().expect("resolved"))?;
    let schedule = match &config.schedule {
        Some(s) => Schedule::from_json(s)?,
        None => Schedule::Constant,
    };
    let batch_size = config.batch_size.unwrap_or(32);
    if batch_size == 0 {
        bail!("batch_size: must be at least 1");
    }
    if let Some(norm) = config.clip_grad_norm
        && !(norm > 0.0 && norm.is_finite())
    {
        bail!("clip_grad_norm: must be a positive number, got {norm}");
    }
    if let Some(split) = config.validation_split
        && !(0.0..1.0).contains(&split)
    {
        bail!("validation_split: must be in [0, 1), got {split}");
    }
    if let Some(epochs) = config.epochs
        && epochs > chainrule::train::MAX_EPOCHS
    {
        bail!(
            "epochs: {epochs} is more than {}",
            chainrule::train::MAX_EPOCHS
        );
    }
    Ok(TrainConfig {
        loss,
        optimizer,
        batch_size,
        epochs: config.epochs.unwrap_or(50),
        shuffle: config.shuffle.unwrap_or(true),
        seed: config.seed.unwrap_or(0),
        drop_last: config.drop_last.unwrap_or(false),
        schedule,
        clip_grad_norm: config.clip_grad_norm,
        skip_nonfinite: config.skip_nonfinite.unwrap_or(false),
        early_stopping: config.patience.map(|patience| EarlyStopping {
            patience,
            min_delta: 0.0,
            restore_best: true,
        }),
    })
}

/// Fills every default in, so the copy written to a run folder reproduces the run.
pub fn resolve(mut config: RunConfig) -> RunConfig {
    config.data.get_or_insert_with(|| "builtin:spiral".into());
    config
        .optimizer
        .get_or_insert_with(|| serde_json::json!({"type": "adam", "lr": 0.01}));
    config.seed.get_or_insert(0);
    config.epochs.get_or_insert(50);
    config.batch_size.get_or_insert(32);
    config.shuffle.get_or_insert(true);
    config.validation_split.get_or_insert(0.2);
    // MNIST's border pixels are almost always 0: standardising them per pixel would
    // blow up the rare non-zero ones, so its default is min-max (pixels to [0, 1]).
    let mnist = config
        .data
        .as_deref()
        .is_some_and(|d| d.starts_with("mnist:"));
    config
        .scale
        .get_or_insert_with(|| if mnist { "minmax" } else { "standard" }.into());
    config.init.get_or_insert_with(|| "pytorch".into());
    config.threads.get_or_insert(0);
    config.runs_dir.get_or_insert_with(|| "runs".into());
    config.checkpoint_every.get_or_insert(1);
    if config.layer.is_none() {
        config.activation.get_or_insert_with(|| "relu".into());
    }
    config
}
