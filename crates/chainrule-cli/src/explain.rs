//! `chainrule explain`: chain-rule derivations with numbers.

use crate::config;
use crate::run::RunState;
use anyhow::{Result, anyhow, bail};
use chainrule::Tensor;
use chainrule::data::Target;
use chainrule::io::{read_npy, read_safetensors};
use chainrule::loss::Loss;
use chainrule::nn::{Mode, Module, Sequential};
use chainrule::optim::OptimizerConfig;
use chainrule_explain::derive::{ParamElement, all_elements, explain};
use chainrule_explain::formula::Formula;
use chainrule_explain::notation::number;
use chainrule_explain::spatial;
use chainrule_explain::step::{ElementState, Step, StepLine};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A model, its parameters, a batch and a loss: a run folder (`runs/NAME`, its
/// samples picked by index), a folder with model.json, params.safetensors, x.npy,
/// y.npy and explain.json, and/or explicit files.
#[derive(clap::Args, Debug)]
pub struct Inputs {
    /// A run folder (runs/NAME: model, parameters, loss, scaling and optimizer from
    /// its checkpoint, samples from its data), or a folder holding model.json,
    /// params.safetensors, x.npy, y.npy and explain.json (loss, lr), as
    /// examples/notebooks/*; flags override its files.
    pub dir: Option<PathBuf>,
    /// Run folder: the sample of the split to use, by index (default 0).
    #[arg(long, conflicts_with = "samples")]
    pub sample: Option<usize>,
    /// Run folder: the samples of the split to use, as a range START..END (END
    /// excluded), e.g. 0..8.
    #[arg(long)]
    pub samples: Option<String>,
    /// Run folder: the split the samples come from: train, validation (the default)
    /// or test.
    #[arg(long)]
    pub split: Option<String>,
    /// Model JSON.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Parameters (safetensors).
    #[arg(long)]
    pub params: Option<PathBuf>,
    /// Inputs: one sample or a small batch (.npy; for a run folder also .csv, with a
    /// header, unscaled as predict takes them).
    #[arg(long)]
    pub x: Option<PathBuf>,
    /// Targets (.npy; for a run folder also .csv with a header and one column:
    /// class names or indices, or values).
    #[arg(long)]
    pub y: Option<PathBuf>,
    /// Loss name.
    #[arg(long)]
    pub loss: Option<String>,
    /// A network written as named scalar formulas (the folder's network.formula, if
    /// it has one): see examples/notebooks/003.
    #[arg(long)]
    pub formula: Option<PathBuf>,
    /// Run the model in evaluation mode (batch norm's running statistics, no
    /// dropout); training mode otherwise, as `grad`.
    #[arg(long)]
    pub eval: bool,
    /// The seed of dropout's masks in training mode (as `grad --seed`).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// `chainrule explain` arguments.
#[derive(clap::Args, Debug)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub inputs: Inputs,
    /// Learning rate of the update shown.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Parameter element, e.g. 2.weight[0,1] or 0.bias[1]; all of them when omitted.
    #[arg(long)]
    pub param: Option<String>,
    /// Output: text (Unicode), markdown (with LaTeX) or json.
    #[arg(long, default_value = "text")]
    pub format: String,
    /// Significant digits of the numbers in text and Markdown (`full`: every digit,
    /// the shortest form that reads back exactly). JSON is always exact.
    #[arg(long, default_value = "6")]
    pub digits: String,
}

/// `--digits`: a count of significant digits, or `full` (`None`).
fn digits(text: &str) -> Result<Option<usize>> {
    match text {
        "full" => Ok(None),
        n => match n.parse::<usize>() {
            Ok(d) if (1..=17).contains(&d) => Ok(Some(d)),
            _ => bail!(
                "--digits: {n:?} must be a number of significant digits from 1 to 17, or full"
            ),
        },
    }
}

fn pick(flag: &Option<PathBuf>, dir: &Option<PathBuf>, name: &str) -> Result<PathBuf> {
    match (flag, dir) {
        (Some(p), _) => Ok(p.clone()),
        (None, Some(d)) => Ok(d.join(name)),
        (None, None) => bail!(
            "--{}: needed (or give a folder holding {name})",
            name.split('.').next().unwrap_or(name)
        ),
    }
}

/// The loaded inputs, in f64 (explanations and checks need exact numbers).
pub struct Problem {
    pub model: Sequential<f64>,
    pub x: chainrule::Tensor<f64>,
    pub y: Target<f64>,
    pub loss: Loss,
    /// The learning rate explain.json gives, if any.
    pub lr: Option<f64>,
    /// What a run folder adds: its optimizer and where the samples come from.
    pub run: Option<RunContext>,
}

/// What a problem read from a run folder brings besides the model and the data.
pub struct RunContext {
    /// The run's optimizer, with the learning rate of its next step.
    pub optimizer: OptimizerConfig,
    /// Its saved state (`{param}.step`, `{param}.exp_avg`, …).
    pub state: BTreeMap<String, Tensor<f64>>,
    /// The run's gradient clipping.
    pub clip_grad_norm: Option<f64>,
    /// The run's class names, for classification.
    pub class_names: Option<Vec<String>>,
    /// The run folder and the samples, in words.
    pub description: String,
}

/// Whether `dir` is a run folder (a checkpoint, or an earlier chainrule's
/// `state.json`) rather than a folder of loose files.
fn is_run(dir: &Path) -> bool {
    std::fs::symlink_metadata(dir.join("checkpoint")).is_ok() || dir.join("state.json").is_file()
}

/// The rows `--sample`/`--samples` pick from a split of `rows` rows (row 0 when
/// neither is given).
fn sample_rows(args: &Inputs, split: &str, rows: usize) -> Result<Vec<usize>> {
    let picked: Vec<usize> = match (&args.sample, &args.samples) {
        (Some(i), _) => vec![*i],
        (None, Some(range)) => {
            let bad = || {
                anyhow!("--samples: {range:?} must be a range START..END (END excluded), e.g. 0..8")
            };
            let (a, b) = range.split_once("..").ok_or_else(bad)?;
            let (a, b): (usize, usize) = (
                a.trim().parse().map_err(|_| bad())?,
                b.trim().parse().map_err(|_| bad())?,
            );
            if a >= b {
                bail!("--samples: {range:?} is empty (END must be past START)");
            }
            (a..b).collect()
        }
        (None, None) => vec![0],
    };
    if let Some(&past) = picked.iter().find(|&&i| i >= rows) {
        let flag = if args.sample.is_some() {
            "--sample"
        } else {
            "--samples"
        };
        bail!("{flag}: row {past} is past the end of the {split} split ({rows} rows)");
    }
    Ok(picked)
}

/// Targets for `rows` samples of run `state` from `path`: .npy as for a folder, or
/// .csv with a header and one column (class names or indices, or values).
fn read_run_targets(
    path: &Path,
    state: &RunState,
    loss: Loss,
    rows: usize,
    outputs: usize,
) -> Result<Target<f64>> {
    if path.extension().is_none_or(|e| e != "csv") {
        return Target::from_npy(&read_npy(path)?, loss, rows, outputs)
            .map_err(|e| anyhow!("{}: {e}", path.display()));
    }
    let text = chainrule::io::read_text(path)?;
    let fields: Vec<&str> = text
        .lines()
        .skip(1)
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if fields.len() != rows {
        bail!(
            "{}: {} targets for {rows} samples",
            path.display(),
            fields.len()
        );
    }
    let line = |i: usize| i + 2;
    if let Some(classes) = state.classes {
        let names = state.class_names.as_deref().unwrap_or(&[]);
        let labels = fields
            .iter()
            .enumerate()
            .map(|(i, f)| {
                names
                    .iter()
                    .position(|n| n == f)
                    .or_else(|| f.parse::<usize>().ok().filter(|&c| c < classes))
                    .ok_or_else(|| {
                        anyhow!(
                            "{}: line {}: {f:?} is not one of the run's {classes} classes",
                            path.display(),
                            line(i)
                        )
                    })
            })
            .collect::<Result<Vec<usize>>>()?;
        return Ok(Target::Classes(labels));
    }
    let mut values = Vec::new();
    for (i, f) in fields.iter().enumerate() {
        for v in f.split(',') {
            values.push(v.trim().parse::<f64>().map_err(|_| {
                anyhow!(
                    "{}: line {}: {v:?} is not a number",
                    path.display(),
                    line(i)
                )
            })?);
        }
    }
    if values.len() != rows * outputs {
        bail!(
            "{}: {} values for {rows} samples of {outputs} outputs",
            path.display(),
            values.len()
        );
    }
    Ok(Target::Values(Tensor::from_vec(values, &[rows, outputs])?))
}

/// A problem from run folder `dir`: the checkpoint's model, parameters, loss,
/// scaling and optimizer (read as `eval` and `predict` read them), and samples
/// picked from the run's data by index, or given with `--x` and `--y`.
fn load_run(dir: &Path, args: &Inputs) -> Result<Problem> {
    for (flag, given) in [
        ("--model", args.model.is_some()),
        ("--params", args.params.is_some()),
        ("--formula", args.formula.is_some()),
    ] {
        if given {
            bail!(
                "{flag}: a run folder brings its own model and parameters ({} is one)",
                dir.display()
            );
        }
    }
    let run = crate::inspect::open_run(dir)?;
    let files = crate::run::run_files(dir)?;
    let mut model = load_model(&files.join("model.json"), &files.join("params.safetensors"))?;
    let loss = match &args.loss {
        Some(name) => Loss::from_name(name).map_err(|e| anyhow!("--{e}"))?,
        None => run.loss,
    };
    let classification = run.state.classes.is_some();
    let (x32, y, description) = match (&args.x, &args.y) {
        (Some(x_path), Some(y_path)) => {
            if args.sample.is_some() || args.samples.is_some() || args.split.is_some() {
                bail!(
                    "--x: gives the samples itself; --sample, --samples and --split pick them from the run's data instead"
                );
            }
            let x = crate::inspect::read_inputs(x_path)?;
            let x = run
                .state
                .scaler
                .apply(&x)
                .map_err(|e| anyhow!("{}: {e}", x_path.display()))?;
            let x = config::to_model_input(&run.model, x)
                .map_err(|e| anyhow!("{}: {e}", x_path.display()))?;
            let rows = x.shape()[0];
            let outputs = model.output_features().unwrap_or(1);
            let y = read_run_targets(y_path, &run.state, loss, rows, outputs)?;
            (x, y, format!("{} samples of {}", rows, x_path.display()))
        }
        (Some(_), None) => bail!("--y: needed with --x on a run folder (the samples' targets)"),
        (None, Some(_)) => bail!("--x: needed with --y on a run folder (the samples' inputs)"),
        (None, None) => {
            let splits = config::load_data(&run.config)?;
            if splits.scaler != run.state.scaler {
                bail!(
                    "{}: its data ({}) is not what it trained on: the feature scaling fitted on it differs from the run's",
                    dir.display(),
                    run.config.data.as_deref().unwrap_or("?")
                );
            }
            let splits = config::shaped_for(&run.model, splits)?;
            let wanted = args.split.as_deref();
            let (name, data) = match wanted {
                Some("train") => ("train", Some(&splits.train)),
                Some("validation") | None => ("validation", splits.validation.as_ref()),
                Some("test") => ("test", splits.test.as_ref()),
                Some(other) => bail!("--split: {other:?} must be train, validation or test"),
            };
            let data = match (data, wanted) {
                (Some(d), _) => d,
                // No validation split (validation_split = 0): the held-out test set
                // if there is one, else the training data; said in the heading.
                (None, None) => splits.test.as_ref().unwrap_or(&splits.train),
                (None, Some(_)) => bail!(
                    "--split: {} has no {name} split (train{}{})",
                    dir.display(),
                    if splits.validation.is_some() {
                        ", validation"
                    } else {
                        ""
                    },
                    if splits.test.is_some() { ", test" } else { "" }
                ),
            };
            let name = if std::ptr::eq(data, &splits.train) {
                "train"
            } else if splits.test.as_ref().is_some_and(|t| std::ptr::eq(data, t)) {
                "test"
            } else {
                name
            };
            let rows = sample_rows(args, name, data.len())?;
            let picked = data.rows(&rows)?;
            let y = match picked.target {
                Target::Classes(c) => Target::Classes(c),
                Target::Values(v) => Target::Values(v.cast()),
            };
            let which = match rows.as_slice() {
                [one] => format!("sample {one}"),
                many => format!("samples {}..{}", many[0], many[many.len() - 1] + 1),
            };
            (picked.x, y, format!("{which} of the {name} split"))
        }
    };
    if x32.shape()[0] > 64 {
        bail!(
            "x: {} samples; explain shows every sample's chain, so give at most 64",
            x32.shape()[0]
        );
    }
    if args.eval {
        model.set_mode(Mode::Eval);
    } else {
        model.set_noise_key(chainrule::train::noise_key(args.seed, 0));
    }
    let x = x32.cast::<f64>();
    model.check_input(&x)?;
    // The optimizer as the run's next step would use it: its settings, the
    // schedule's rate for the next epoch (or --lr), and the saved state.
    let train_config = config::train_config(&run.config, classification)?;
    let optimizer = train_config.optimizer.clone().with_lr(
        train_config
            .schedule
            .lr(train_config.optimizer.lr(), run.state.epochs_done),
    );
    let opt_path = files.join("optimizer.safetensors");
    let state: BTreeMap<String, Tensor<f64>> = if opt_path.is_file() {
        read_safetensors::<f32>(&opt_path)?
            .into_iter()
            .map(|(k, v)| (k, v.cast()))
            .collect()
    } else {
        BTreeMap::new()
    };
    let lr = optimizer.lr();
    Ok(Problem {
        model,
        x,
        y,
        loss,
        lr: Some(lr),
        run: Some(RunContext {
            optimizer,
            state,
            clip_grad_norm: train_config.clip_grad_norm,
            class_names: run.state.class_names.clone().or_else(|| {
                run.state
                    .classes
                    .map(|c| (0..c).map(|i| i.to_string()).collect())
            }),
            description: format!("{}: {description}", dir.display()),
        }),
    })
}

/// A layer stack from `model_path` with the parameters of `params_path` (f64 or
/// f32 safetensors), in f64.
fn load_model(model_path: &Path, params_path: &Path) -> Result<Sequential<f64>> {
    let text = chainrule::io::read_text(model_path)?;
    let mut model = Sequential::<f64>::from_json(&text, 0)
        .map_err(|e| anyhow!("{}: {e}", model_path.display()))?;
    model
        .load(read_safetensors::<f64>(params_path).or_else(|_| {
            read_safetensors::<f32>(params_path)
                .map(|m| m.into_iter().map(|(k, v)| (k, v.cast())).collect())
        })?)
        .map_err(|e| anyhow!("{}: {e}", params_path.display()))?;
    Ok(model)
}

/// The folder's explain.json (loss, lr), or an empty object.
fn settings(args: &Inputs) -> Result<serde_json::Value> {
    Ok(match &args.dir {
        Some(dir) if dir.join("explain.json").is_file() => {
            let path = dir.join("explain.json");
            serde_json::from_str(&chainrule::io::read_text(&path)?)
                .map_err(|e| anyhow!("{}: {e}", path.display()))?
        }
        _ => serde_json::json!({}),
    })
}

/// The formula network the inputs name (`--formula`, or the folder's
/// network.formula), with explain.json's learning rate; `None` for a layer stack.
fn load_formula(args: &Inputs) -> Result<Option<(Formula, Option<f64>)>> {
    let path = match (&args.formula, &args.dir) {
        (Some(path), _) => path.clone(),
        (None, Some(dir)) if dir.join("network.formula").is_file() => dir.join("network.formula"),
        _ => return Ok(None),
    };
    let text = String::from_utf8(chainrule::io::read_file(&path)?)
        .map_err(|_| anyhow!("{}: not UTF-8 text", path.display()))?;
    let formula = Formula::parse(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    Ok(Some((formula, settings(args)?["lr"].as_f64())))
}

pub fn load(args: &Inputs) -> Result<Problem> {
    if let Some(dir) = &args.dir {
        if is_run(dir) {
            return load_run(dir, args);
        }
        if !dir.is_dir() {
            bail!("{}: no such folder", dir.display());
        }
        if args.model.is_none() && !dir.join("model.json").is_file() {
            bail!(
                "{}: neither a run folder (no checkpoint/) nor a folder of files (no model.json); give a run folder such as runs/NAME, a folder like examples/notebooks/000, or --model",
                dir.display()
            );
        }
    }
    if args.sample.is_some() || args.samples.is_some() || args.split.is_some() {
        bail!(
            "--sample, --samples and --split pick samples of a run folder's data; give the samples of loose files with --x and --y"
        );
    }
    let settings = settings(args)?;
    let model_path = pick(&args.model, &args.dir, "model.json")?;
    let params_path = pick(&args.params, &args.dir, "params.safetensors")?;
    let x_path = pick(&args.x, &args.dir, "x.npy")?;
    let y_path = pick(&args.y, &args.dir, "y.npy")?;
    let loss_name = args
        .loss
        .clone()
        .or_else(|| settings["loss"].as_str().map(String::from))
        .ok_or_else(|| anyhow!("--loss: needed"))?;
    let loss = Loss::from_name(&loss_name).map_err(|e| anyhow!("--{e}"))?;

    let mut model = load_model(&model_path, &params_path)?;
    if args.eval {
        model.set_mode(Mode::Eval);
    } else {
        model.set_noise_key(chainrule::train::noise_key(args.seed, 0));
    }
    let x = read_npy(&x_path)?.to_tensor::<f64>()?;
    model
        .check_input(&x)
        .map_err(|e| anyhow!("{}: {e}", x_path.display()))?;
    let outputs = model.output_features().unwrap_or(x.shape()[1]);
    let y = Target::from_npy(&read_npy(&y_path)?, loss, x.shape()[0], outputs)
        .map_err(|e| anyhow!("{}: {e}", y_path.display()))?;
    if x.shape()[0] > 64 {
        bail!(
            "{}: {} samples; explain shows every sample's chain, so give at most 64",
            x_path.display(),
            x.shape()[0]
        );
    }
    Ok(Problem {
        model,
        x,
        y,
        loss,
        lr: settings["lr"].as_f64(),
        run: None,
    })
}

pub fn run(args: &ExplainArgs) -> Result<()> {
    chainrule_explain::notation::set_digits(digits(&args.digits)?);
    if let Some((formula, lr)) = load_formula(&args.inputs)? {
        return explain_formula(&formula, args.lr.or(lr).unwrap_or(0.01), args);
    }
    let Problem {
        model,
        x,
        y,
        loss,
        lr,
        run,
    } = load(&args.inputs)?;
    let lr = args.lr.or(lr).unwrap_or(0.01);
    if x.shape()[0] > 64 {
        bail!(
            "x: {} samples; explain shows every sample's chain, so give at most 64",
            x.shape()[0]
        );
    }
    let steps = run
        .as_ref()
        .map(|r| RunSteps::new(r, args.lr, &model, &x, &y, loss))
        .transpose()?;
    if let Some(r) = &run
        && args.format == "text"
    {
        println!("{} (loss {})\n", r.description, loss.name());
    }
    if spatial::is_tensor_network(&model) {
        return explain_sums(&model, &x, &y, loss, lr, args, steps.as_ref());
    }
    let elements = match &args.param {
        Some(p) => vec![ParamElement::parse(p).map_err(|e| anyhow!("--{e}"))?],
        None => all_elements(&model),
    };
    if elements.len() > MAX_DERIVATIONS {
        return parameter_table(&model, &x, &y, loss, &args.format);
    }
    if args.format == "text" {
        print!("{}", forward_pass(&model, &x)?);
    }
    let mut derivations = Vec::with_capacity(elements.len());
    for element in &elements {
        let mut d = explain(&model, &x, &y, loss, lr, element).map_err(|e| anyhow!("--{e}"))?;
        if let Some(steps) = &steps {
            d.step = Some(steps.step(&d.param, &d.symbol.text(), d.autodiff)?);
        }
        derivations.push(d);
    }
    show(&derivations, &args.format, "the chain's product")
}

/// The forward pass of a layer stack on the first sample, layer by layer in the
/// notebooks' notation (z⁽ˡ⁾ the output of the l-th linear layer, a⁽ˡ⁾ that of the
/// activations after it), as the forward pass of a formula network is shown.
fn forward_pass(model: &Sequential<f64>, x: &Tensor<f64>) -> Result<String> {
    const SHOWN: usize = 8;
    let first = x.select_rows(&[0])?;
    let tape = chainrule::Tape::new();
    let params = model.bind(&tape);
    let trace = model.forward_trace(&params, tape.constant(first))?;
    let mut out = if x.shape()[0] > 1 {
        "forward pass (sample 1):\n".to_string()
    } else {
        "forward pass:\n".to_string()
    };
    let mut linear = 0;
    for (i, (layer, output)) in model.layers().iter().zip(&trace).enumerate() {
        let symbol = if matches!(layer, chainrule::nn::Layer::Linear { .. }) {
            linear += 1;
            'z'
        } else {
            'a'
        };
        let values = output.value().to_vec();
        let mut shown: Vec<String> = values
            .iter()
            .take(SHOWN)
            .map(|v| chainrule_explain::notation::number(*v))
            .collect();
        if values.len() > SHOWN {
            shown.push(format!("… ({} values)", values.len()));
        }
        let name = format!(
            "{symbol}⁽{}⁾",
            chainrule_explain::notation::superscript(linear)
        );
        out += &format!(
            "  {i} {:<24} {name} = [{}]\n",
            crate::inspect::layer_label(layer),
            shown.join(", ")
        );
    }
    out.push('\n');
    Ok(out)
}

/// The most parameter elements `explain` derives one by one when no `--param` is
/// given; a larger model gets [`parameter_table`] instead.
const MAX_DERIVATIONS: usize = 64;

/// One parameter tensor's gradient in brief: its size, norm, and the elements worth
/// a derivation.
struct TensorGradient {
    name: String,
    shape: Vec<usize>,
    norm: f64,
    /// The element with the largest |∂C/∂θ|: its index and gradient.
    largest: (Vec<usize>, f64),
    /// The element with the smallest non-zero |∂C/∂θ|, if any is non-zero.
    smallest: Option<(Vec<usize>, f64)>,
    /// Elements whose gradient is exactly 0 (dead units, unused inputs).
    zeros: usize,
}

/// The index of flat position `i` in a tensor of `shape` (row-major).
fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut index = vec![0; shape.len()];
    for (slot, &size) in index.iter_mut().zip(shape).rev() {
        *slot = i % size.max(1);
        i /= size.max(1);
    }
    index
}

/// `name[i,j]`.
fn element_name(name: &str, index: &[usize]) -> String {
    let parts: Vec<String> = index.iter().map(usize::to_string).collect();
    format!("{name}[{}]", parts.join(","))
}

/// `explain` with no `--param` on a model too large to derive every element: a
/// table of every parameter tensor with its gradient's norm, largest and smallest
/// element and zero count, then the elements worth a derivation (`--param`).
fn parameter_table(
    model: &Sequential<f64>,
    x: &Tensor<f64>,
    y: &Target<f64>,
    loss: Loss,
    format: &str,
) -> Result<()> {
    let (value, grads) = chainrule::train::loss_and_grads(model, x, y, loss)?;
    let mut rows = Vec::new();
    for (param, grad) in model.params().iter().zip(&grads) {
        let shape = param.value.shape().to_vec();
        let g = grad
            .as_ref()
            .map_or_else(|| vec![0.0; param.value.len()], |g| g.to_vec());
        let norm = g.iter().map(|v| v * v).sum::<f64>().sqrt();
        let at = |i: usize| (unravel(i, &shape), g[i]);
        // The first of equal magnitudes (min_by keeps the first of ties).
        let largest = (0..g.len())
            .min_by(|&a, &b| g[b].abs().total_cmp(&g[a].abs()))
            .map_or((vec![], 0.0), at);
        let smallest = (0..g.len())
            .filter(|&i| g[i] != 0.0)
            .min_by(|&a, &b| g[a].abs().total_cmp(&g[b].abs()))
            .map(at);
        rows.push(TensorGradient {
            name: param.name.clone(),
            shape,
            norm,
            largest,
            smallest,
            zeros: g.iter().filter(|v| **v == 0.0).count(),
        });
    }
    let total: usize = model.params().iter().map(|p| p.value.len()).sum();
    if format == "json" {
        let tensors: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "param": r.name,
                    "shape": r.shape,
                    "norm": r.norm,
                    "largest": {"element": element_name(&r.name, &r.largest.0), "gradient": r.largest.1},
                    "smallest_nonzero": r.smallest.as_ref().map(|(i, v)| serde_json::json!({"element": element_name(&r.name, i), "gradient": v})),
                    "zeros": r.zeros,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({"loss": value, "elements": total, "tensors": tensors})
        );
        return Ok(());
    }
    if !["text", "markdown"].contains(&format) {
        bail!("--format: {format:?} must be text, markdown or json");
    }
    let markdown = format == "markdown";
    println!(
        "{total} parameter elements, too many to derive one by one (more than {MAX_DERIVATIONS}); loss {} = {}.\n",
        loss.name(),
        crate::inspect::rounded(value)
    );
    let header = [
        "parameter",
        "shape",
        "‖∂C/∂θ‖",
        "largest |∂C/∂θ|",
        "smallest non-zero",
        "zeros",
    ];
    if markdown {
        println!(
            "| {} |\n|{}",
            header.join(" | "),
            " --- |".repeat(header.len())
        );
    } else {
        println!(
            "{:<14} {:<12} {:>12}  {:<34} {:<34} {:>8}",
            header[0], header[1], header[2], header[3], header[4], header[5]
        );
    }
    for r in &rows {
        let pair = |(i, v): &(Vec<usize>, f64)| {
            format!(
                "{} = {}",
                element_name(&r.name, i),
                crate::inspect::rounded(*v)
            )
        };
        let cells = [
            r.name.clone(),
            format!("{:?}", r.shape),
            crate::inspect::rounded(r.norm),
            pair(&r.largest),
            r.smallest.as_ref().map_or("-".into(), pair),
            format!("{}/{}", r.zeros, r.shape.iter().product::<usize>()),
        ];
        if markdown {
            println!("| {} |", cells.join(" | "));
        } else {
            println!(
                "{:<14} {:<12} {:>12}  {:<34} {:<34} {:>8}",
                cells[0], cells[1], cells[2], cells[3], cells[4], cells[5]
            );
        }
    }
    let largest = rows
        .iter()
        .min_by(|a, b| b.largest.1.abs().total_cmp(&a.largest.1.abs()));
    let smallest = rows
        .iter()
        .filter_map(|r| r.smallest.as_ref().map(|s| (r, s)))
        .min_by(|a, b| a.1.1.abs().total_cmp(&b.1.1.abs()));
    let zeros: usize = rows.iter().map(|r| r.zeros).sum();
    println!("\nWorth a derivation (explain … --param ELEMENT):");
    if let Some(r) = largest {
        println!(
            "  the largest gradient:  {}",
            element_name(&r.name, &r.largest.0)
        );
    }
    if let Some((r, (i, _))) = smallest {
        println!("  the smallest non-zero: {}", element_name(&r.name, i));
    }
    if zeros > 0 {
        let r = rows.iter().find(|r| r.zeros > 0).expect("a zero");
        let grads_of = grads[rows.iter().position(|x| x.name == r.name).expect("listed")]
            .as_ref()
            .map(|g| g.to_vec())
            .unwrap_or_default();
        let first = grads_of.iter().position(|v| *v == 0.0).unwrap_or(0);
        println!(
            "  a zero gradient ({zeros} in all: dead units, or inputs that are 0): {}",
            element_name(&r.name, &unravel(first, &r.shape))
        );
    }
    Ok(())
}

/// A run's optimizer, ready to write out its next step for any parameter element
/// on the explained batch.
struct RunSteps<'a> {
    optimizer: OptimizerConfig,
    state: &'a BTreeMap<String, Tensor<f64>>,
    values: BTreeMap<String, Tensor<f64>>,
    /// The clipping coefficient and the gradients' global norm, when the run clips
    /// and the norm exceeds the limit.
    clip: Option<(f64, f64, f64)>,
}

impl<'a> RunSteps<'a> {
    fn new(
        run: &'a RunContext,
        lr: Option<f64>,
        model: &Sequential<f64>,
        x: &Tensor<f64>,
        y: &Target<f64>,
        loss: Loss,
    ) -> Result<RunSteps<'a>> {
        let optimizer = match lr {
            Some(lr) => run.optimizer.clone().with_lr(lr),
            None => run.optimizer.clone(),
        };
        let clip = match run.clip_grad_norm {
            Some(max_norm) => {
                let (_, mut grads) = chainrule::train::loss_and_grads(model, x, y, loss)?;
                let norm = chainrule::optim::clip_grad_norm(&mut grads, max_norm);
                // The coefficient as clip_grad_norm_ computes it.
                let coefficient = (max_norm / (norm + 1e-6)).min(1.0);
                (coefficient < 1.0).then_some((coefficient, norm, max_norm))
            }
            None => None,
        };
        Ok(RunSteps {
            optimizer,
            state: &run.state,
            values: model
                .params()
                .iter()
                .map(|p| (p.name.clone(), p.value.clone()))
                .collect(),
            clip,
        })
    }

    /// The step of element `element` (`0.weight[1,0]`), written with `symbol`, whose
    /// gradient on the batch is `grad`.
    fn step(&self, element: &str, symbol: &str, grad: f64) -> Result<Step> {
        let (name, index) = element
            .strip_suffix(']')
            .and_then(|e| e.split_once('['))
            .ok_or_else(|| anyhow!("{element}: not a parameter element"))?;
        let index: Vec<usize> = index
            .split(',')
            .map(|i| i.trim().parse())
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| anyhow!("{element}: not a parameter element"))?;
        let value = self
            .values
            .get(name)
            .and_then(|t| t.get(&index))
            .ok_or_else(|| anyhow!("{element}: not a parameter element of the model"))?;
        let clipped = self.clip.map_or(grad, |(c, _, _)| grad * c);
        let e = ElementState::from_state_dict(self.state, name, &index, value, clipped)?;
        let mut step = Step::new(&self.optimizer, symbol, &e)?;
        if let Some((c, norm, max_norm)) = self.clip {
            step.lines.insert(
                0,
                StepLine {
                    formula: "g ← g · max_norm/(‖∇‖ + 1e-6)   (clip_grad_norm)".into(),
                    numbers: format!("{grad} · {max_norm} / ({norm} + 1e-6)"),
                    value: grad * c,
                    state: None,
                },
            );
        }
        Ok(step)
    }
}

/// What `explain` prints of a derivation, whichever kind it is.
trait Shown {
    fn text(&self) -> String;
    fn markdown(&self) -> String;
    fn json(&self) -> serde_json::Value;
    fn verified(&self) -> bool;
    /// The parameter element, the derivation's gradient, and autodiff's.
    fn outcome(&self) -> (&str, f64, f64);
    /// The run's optimizer's step, when it replaces gradient descent.
    fn step(&self) -> Option<&Step>;
}

/// Both derivation kinds have the same methods and fields under the same names.
macro_rules! shown {
    ($($kind:ty),*) => {$(
        impl Shown for $kind {
            fn text(&self) -> String {
                self.text()
            }
            fn markdown(&self) -> String {
                self.markdown()
            }
            fn json(&self) -> serde_json::Value {
                self.json()
            }
            fn verified(&self) -> bool {
                self.verified()
            }
            fn outcome(&self) -> (&str, f64, f64) {
                (&self.param, self.gradient, self.autodiff)
            }
            fn step(&self) -> Option<&Step> {
                self.step.as_ref()
            }
        }
    )*};
}

shown!(
    chainrule_explain::derive::Derivation,
    spatial::SumDerivation
);

/// Prints `derivations` in `format` (text, markdown or json), then fails naming the
/// first whose `what` (its product, its sum) differs from autodiff.
fn show<D: Shown>(derivations: &[D], format: &str, what: &str) -> Result<()> {
    let blocks = |f: fn(&D) -> String| derivations.iter().map(f).collect::<Vec<_>>().join("\n");
    match format {
        "text" => print!("{}", blocks(D::text)),
        "markdown" => print!("{}", blocks(D::markdown)),
        "json" => println!(
            "{}",
            serde_json::Value::Array(derivations.iter().map(D::json).collect())
        ),
        other => bail!("--format: {other:?} must be text, markdown or json"),
    }
    if let Some(bad) = derivations.iter().find(|d| !d.verified()) {
        let (param, gradient, autodiff) = bad.outcome();
        bail!("{param}: {what} {gradient} differs from autodiff's {autodiff}");
    }
    if let Some(bad) = derivations
        .iter()
        .find(|d| d.step().is_some_and(|s| !s.verified()))
    {
        let step = bad.step().expect("found by its step");
        bail!(
            "{}: the written-out {} step gives {} but the library's step gives {}",
            bad.outcome().0,
            step.optimizer,
            step.new,
            step.library
        );
    }
    Ok(())
}

/// `chainrule explain` on a network of tensor layers (convolution, pooling,
/// normalisation, dropout): each gradient as its sum over samples and positions; with
/// no `--param`, each parameter tensor's element with the largest gradient.
fn explain_sums(
    model: &Sequential<f64>,
    x: &Tensor<f64>,
    y: &Target<f64>,
    loss: Loss,
    lr: f64,
    args: &ExplainArgs,
    steps: Option<&RunSteps<'_>>,
) -> Result<()> {
    let elements = match &args.param {
        Some(p) => vec![p.clone()],
        None => spatial::largest_elements(model, x, y, loss)?,
    };
    let mut derivations = elements
        .iter()
        .map(|e| spatial::explain_element(model, x, y, loss, lr, e).map_err(|e| anyhow!("--{e}")))
        .collect::<Result<Vec<_>>>()?;
    if let Some(steps) = steps {
        for d in &mut derivations {
            d.step = Some(steps.step(&d.param, &d.param, d.autodiff)?);
        }
    }
    show(&derivations, &args.format, "the sum")
}

/// `chainrule explain` on a formula network: the forward pass, then one derivation
/// per parameter (a sum over the paths from the parameter to the loss).
fn explain_formula(formula: &Formula, lr: f64, args: &ExplainArgs) -> Result<()> {
    let names: Vec<String> = match &args.param {
        Some(p) => vec![p.clone()],
        None => formula.params().into_iter().map(|(n, _)| n).collect(),
    };
    let derivations = names
        .iter()
        .map(|n| formula.explain(n, lr).map_err(|e| anyhow!("--{e}")))
        .collect::<Result<Vec<_>>>()?;
    let forward = formula.forward()?;
    let role = |name: &str| {
        if Some(name) == formula.output_name() {
            " (output)"
        } else if name == formula.loss_name() {
            " (loss)"
        } else {
            ""
        }
    };
    let given: std::collections::BTreeSet<String> = formula
        .params()
        .into_iter()
        .chain(formula.inputs())
        .map(|(name, _)| name)
        .collect();
    let computed: Vec<&(String, f64)> =
        forward.iter().filter(|(n, _)| !given.contains(n)).collect();
    match args.format.as_str() {
        "text" => {
            println!("forward pass:");
            for (name, value) in &computed {
                println!("  {name} = {}{}", number(*value), role(name));
            }
            println!();
            let blocks: Vec<String> = derivations.iter().map(|d| d.text()).collect();
            print!("{}", blocks.join("\n"));
        }
        "markdown" => {
            println!("| quantity | value |\n| --- | --- |");
            for (name, value) in &computed {
                println!("| `{name}`{} | {} |", role(name), number(*value));
            }
            println!();
            let blocks: Vec<String> = derivations.iter().map(|d| d.markdown()).collect();
            print!("{}", blocks.join("\n"));
        }
        "json" => {
            let values: serde_json::Map<String, serde_json::Value> = forward
                .iter()
                .map(|(n, v)| (n.clone(), (*v).into()))
                .collect();
            println!(
                "{}",
                serde_json::json!({
                    "forward": values,
                    "output": formula.output_name(),
                    "loss": formula.loss_name(),
                    "derivations": derivations.iter().map(|d| d.json()).collect::<Vec<_>>(),
                })
            );
        }
        other => bail!("--format: {other:?} must be text, markdown or json"),
    }
    if let Some(bad) = derivations.iter().find(|d| !d.verified()) {
        bail!(
            "{}: the paths' sum {} differs from autodiff's {}",
            bad.param,
            bad.gradient,
            bad.autodiff
        );
    }
    Ok(())
}

/// `chainrule gradcheck` arguments.
#[derive(clap::Args, Debug)]
pub struct GradcheckArgs {
    #[command(flatten)]
    pub inputs: Inputs,
    /// Largest accepted error, |backprop − numeric| / max(1, |backprop|, |numeric|).
    #[arg(long, default_value_t = 1e-6)]
    pub tolerance: f64,
    /// Finite-difference step.
    #[arg(long, default_value_t = 1e-6)]
    pub step: f64,
}

pub fn gradcheck(args: &GradcheckArgs) -> Result<()> {
    let report = match load_formula(&args.inputs)? {
        Some((formula, _)) => {
            chainrule_explain::check::check_formula(&formula, args.tolerance, args.step)?
        }
        None => {
            let problem = load(&args.inputs)?;
            chainrule_explain::check::check_model(
                &problem.model,
                &problem.x,
                &problem.y,
                problem.loss,
                args.tolerance,
                args.step,
            )?
        }
    };
    print!("{}", report.table());
    if report.passed() {
        println!(
            "all {} tensors within {} ✓",
            report.tensors.len(),
            args.tolerance
        );
        return Ok(());
    }
    let worst = report
        .tensors
        .iter()
        .max_by(|a, b| a.worst_error.total_cmp(&b.worst_error))
        .expect("a failing tensor");
    let culprits: Vec<String> = report
        .culprits
        .iter()
        .map(|c| format!("`{}` (node {}, error {:.3e})", c.label, c.node, c.error))
        .collect();
    let blame = if culprits.is_empty() {
        "no single operation's local derivative disagrees; the step may be too large for this model"
            .to_string()
    } else {
        format!(
            "the local derivative of {} disagrees with finite differences",
            culprits.join(", ")
        )
    };
    bail!(
        "gradcheck: {} exceeds the tolerance (error {:.3e} > {}); {blame}",
        worst.name,
        worst.worst_error,
        args.tolerance
    )
}

/// `chainrule graph` arguments.
#[derive(clap::Args, Debug)]
pub struct GraphArgs {
    #[command(flatten)]
    pub inputs: Inputs,
    /// Where to write the SVG; the DOT goes beside it (same name, .dot).
    #[arg(long)]
    pub out: PathBuf,
    /// `operations`: every recorded node with its value and gradient; `layers`: one
    /// box per layer, shapes on the edges; `auto`: layers for a model of more than 40
    /// nodes or 10,000 parameters.
    #[arg(long, default_value = "auto")]
    pub detail: String,
}

pub fn graph(args: &GraphArgs) -> Result<()> {
    use chainrule_explain::graph::{Detail, Graph};
    let detail = match args.detail.as_str() {
        "auto" => Detail::Auto,
        "operations" => Detail::Operations,
        "layers" => Detail::Layers,
        other => bail!("--detail: {other:?} must be auto, operations or layers"),
    };
    let drawing = if let Some((formula, _)) = load_formula(&args.inputs)? {
        Graph::of_formula(&formula, detail)?
    } else {
        let problem = load(&args.inputs)?;
        let pass = Graph::of_model(&problem.model, &problem.x, &problem.y, problem.loss, detail)?;
        if let Some(run) = &problem.run {
            report_prediction(&problem, run, &pass.prediction, pass.loss)?;
        }
        pass.graph
    };
    let svg = if args.out.extension().is_some_and(|e| e == "svg") {
        args.out.clone()
    } else {
        args.out.with_extension("svg")
    };
    chainrule::io::write_atomic(&svg, drawing.to_svg().as_bytes())?;
    chainrule::io::write_atomic(&svg.with_extension("dot"), drawing.to_dot().as_bytes())?;
    println!(
        "{} nodes: {} and {}",
        drawing.nodes.len(),
        svg.display(),
        svg.with_extension("dot").display()
    );
    Ok(())
}

/// What the drawn pass predicts for a run's samples, as `predict` reports it (the
/// same class names and probabilities), and the loss the graph ends in.
fn report_prediction(
    problem: &Problem,
    run: &RunContext,
    drawn: &Tensor<f64>,
    loss: f64,
) -> Result<()> {
    let outputs = crate::inspect::as_probabilities(problem.loss, &problem.model, drawn)?;
    println!("{}", run.description);
    let columns = outputs.shape()[1];
    for (n, row) in outputs.to_vec().chunks_exact(columns.max(1)).enumerate() {
        let shown: Vec<String> = row.iter().map(|v| crate::inspect::rounded(*v)).collect();
        match &run.class_names {
            Some(names) => {
                let best = crate::inspect::argmax(row);
                let truth = match &problem.y {
                    Target::Classes(c) => c.get(n).and_then(|&c| names.get(c)),
                    Target::Values(_) => None,
                };
                println!(
                    "  sample {}: class {} (p = {}; probabilities {}){}",
                    n + 1,
                    names.get(best).map_or("?", String::as_str),
                    crate::inspect::rounded(row[best]),
                    shown.join(", "),
                    truth.map_or(String::new(), |t| format!("; target {t}"))
                );
            }
            None => println!("  sample {}: output {}", n + 1, shown.join(", ")),
        }
    }
    println!(
        "  loss {} = {}",
        problem.loss.name(),
        crate::inspect::rounded(loss)
    );
    Ok(())
}

/// `chainrule symbolic` arguments.
#[derive(clap::Args, Debug)]
pub struct SymbolicArgs {
    #[command(flatten)]
    pub inputs: Inputs,
    /// Keep the inputs as symbols x_1, x_2, … instead of substituting the sample.
    #[arg(long)]
    pub symbolic_inputs: bool,
    /// Output: text, latex, sympy or json (sympy syntax, values and autodiff gradients).
    #[arg(long, default_value = "text")]
    pub format: String,
}

pub fn symbolic(args: &SymbolicArgs) -> Result<()> {
    use chainrule_explain::symbolic::{Expr, from_sequential};
    if !["text", "latex", "sympy", "json"].contains(&args.format.as_str()) {
        bail!(
            "--format: {:?} must be text, latex, sympy or json",
            args.format
        );
    }
    if let Some((formula, _)) = load_formula(&args.inputs)? {
        return symbolic_formula(&formula, args);
    }
    let problem = load(&args.inputs)?;
    if problem.x.shape()[0] > 16 {
        bail!(
            "x: {} samples; symbolic writes out every sample's terms, so give at most 16",
            problem.x.shape()[0]
        );
    }
    let s = from_sequential(
        &problem.model,
        &problem.x,
        &problem.y,
        problem.loss,
        args.symbolic_inputs,
    )
    .map_err(|e| anyhow!("{e}"))?;
    let env = s.env();
    let (_, grads) =
        chainrule::train::loss_and_grads(&problem.model, &problem.x, &problem.y, problem.loss)?;
    let autodiff: Vec<f64> = grads
        .iter()
        .flat_map(|g| g.as_ref().map(|t| t.to_vec()).unwrap_or_default())
        .collect();
    let derivatives = s.derivatives();
    let render = |e: &Expr| match args.format.as_str() {
        "latex" => e.latex(),
        "sympy" | "json" => e.sympy(),
        _ => e.text(),
    };
    if args.format == "json" {
        let params: serde_json::Map<String, serde_json::Value> = s
            .params
            .iter()
            .map(|(sym, _, v)| (sym.clone(), (*v).into()))
            .collect();
        let inputs: serde_json::Map<String, serde_json::Value> = s
            .inputs
            .iter()
            .map(|(k, v)| (k.clone(), (*v).into()))
            .collect();
        let ders: serde_json::Map<String, serde_json::Value> = derivatives
            .iter()
            .zip(&autodiff)
            .map(|((sym, d), g)| {
                (
                    sym.clone(),
                    serde_json::json!({"sympy": d.sympy(), "value": d.eval(&env), "autodiff": g}),
                )
            })
            .collect();
        let outputs: Vec<Vec<String>> = s
            .outputs
            .iter()
            .map(|row| row.iter().map(Expr::sympy).collect())
            .collect();
        println!(
            "{}",
            serde_json::json!({"outputs": outputs, "loss": s.loss.sympy(), "loss_value": s.loss.eval(&env), "params": params, "inputs": inputs, "derivatives": ders})
        );
        return Ok(());
    }
    let latex = args.format == "latex";
    for (n, row) in s.outputs.iter().enumerate() {
        for (j, e) in row.iter().enumerate() {
            if latex {
                println!("$$\\hat{{y}}_{{{},{}}} = {}$$\n", n + 1, j + 1, render(e));
            } else {
                println!("output[{n}][{j}] = {}", render(e));
            }
        }
    }
    if latex {
        println!("$$C = {}$$\n", render(&s.loss));
    } else {
        println!("C = {}\n", render(&s.loss));
    }
    for (((sym, d), g), (_, name, _)) in derivatives.iter().zip(&autodiff).zip(&s.params) {
        let value = d.eval(&env).unwrap_or(f64::NAN);
        let ok = if (value - g).abs() <= 1e-10 * g.abs().max(1.0) {
            "✓"
        } else {
            "✗"
        };
        if latex {
            println!(
                "`{name}`: $$\\frac{{\\partial C}}{{\\partial {}}} = {}$$\n= {value} (autodiff: {g} {ok})\n",
                chainrule_explain::symbolic::latex_symbol(sym),
                render(d)
            );
        } else {
            println!(
                "∂C/∂{sym} ({name}) = {}\n    = {value}   (autodiff: {g} {ok})",
                render(d)
            );
        }
    }
    Ok(())
}

/// `chainrule symbolic` on a formula network: its output and loss written out as
/// functions of the parameters, and each ∂L/∂θ next to autodiff.
fn symbolic_formula(formula: &Formula, args: &SymbolicArgs) -> Result<()> {
    use chainrule_explain::symbolic::Expr;
    let expression = |name: &str| formula.expression(name, args.symbolic_inputs);
    let loss = expression(formula.loss_name())?;
    let output = formula.output_name().map(expression).transpose()?;
    let params = formula.params();
    let mut env: std::collections::BTreeMap<String, f64> = params.iter().cloned().collect();
    let inputs: Vec<(String, f64)> = if args.symbolic_inputs {
        formula.inputs()
    } else {
        Vec::new()
    };
    env.extend(inputs.iter().cloned());
    let tape = chainrule::Tape::new();
    let vars = formula.record(&tape);
    let grads = vars[formula.loss_name()].backward()?;
    let autodiff: Vec<f64> = params
        .iter()
        .map(|(n, _)| grads.wrt(vars[n]).map_or(Ok(0.0), |g| g.item()))
        .collect::<chainrule::Result<_>>()?;
    let derivatives: Vec<(String, Expr)> = params
        .iter()
        .map(|(n, _)| (n.clone(), loss.diff(n)))
        .collect();
    let render = |e: &Expr| match args.format.as_str() {
        "latex" => e.latex(),
        "sympy" | "json" => e.sympy(),
        _ => e.text(),
    };
    if args.format == "json" {
        let to_map = |pairs: &[(String, f64)]| -> serde_json::Map<String, serde_json::Value> {
            pairs
                .iter()
                .map(|(n, v)| (n.clone(), (*v).into()))
                .collect()
        };
        let ders: serde_json::Map<String, serde_json::Value> = derivatives
            .iter()
            .zip(&autodiff)
            .map(|((n, d), g)| {
                (
                    n.clone(),
                    serde_json::json!({"sympy": d.sympy(), "value": d.eval(&env), "autodiff": g}),
                )
            })
            .collect();
        let outputs: Vec<Vec<String>> = output.iter().map(|e| vec![e.sympy()]).collect();
        println!(
            "{}",
            serde_json::json!({
                "outputs": outputs,
                "output_value": output.as_ref().and_then(|e| e.eval(&env)),
                "loss": loss.sympy(),
                "loss_value": loss.eval(&env),
                "params": to_map(&params),
                "inputs": to_map(&inputs),
                "derivatives": ders,
            })
        );
        return Ok(());
    }
    let latex = args.format == "latex";
    let symbol = |name: &str| {
        if latex {
            chainrule_explain::symbolic::latex_symbol(name)
        } else {
            name.to_string()
        }
    };
    // LaTeX goes in $$ blocks (Markdown with math, as explain writes it); the
    // numbers and the check stay text beside them.
    let equation = |left: String, right: String| {
        if latex {
            format!("$${left} = {right}$$")
        } else {
            format!("{left} = {right}")
        }
    };
    if let (Some(name), Some(e)) = (formula.output_name(), &output) {
        println!(
            "{}\n    = {:?}\n",
            equation(symbol(name), render(e)),
            e.eval(&env).unwrap_or(f64::NAN)
        );
    }
    println!("{}\n", equation(symbol(formula.loss_name()), render(&loss)));
    for ((name, d), g) in derivatives.iter().zip(&autodiff) {
        let value = d.eval(&env).unwrap_or(f64::NAN);
        let ok = (value - g).abs() <= 1e-10 * g.abs().max(1.0);
        let left = if latex {
            format!(
                r"\frac{{\partial {}}}{{\partial {}}}",
                symbol(formula.loss_name()),
                symbol(name)
            )
        } else {
            format!("∂{}/∂{name}", formula.loss_name())
        };
        println!(
            "{}\n    = {value:?}   (autodiff: {g:?} {})\n",
            equation(left, render(d)),
            if ok { "✓" } else { "✗" }
        );
    }
    Ok(())
}
