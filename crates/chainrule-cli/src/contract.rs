//! The contract commands `grad` and `train` (spec/interchange.md).

use anyhow::{Result, anyhow, bail};
use chainrule::data::{Dataset, Target};
use chainrule::io::{read_npy, read_safetensors, safetensors_dtype, write_safetensors};
use chainrule::loss::Loss;
use chainrule::nn::{Architecture, Init, Mode, Module, Sequential};
use chainrule::train::{TrainConfig, fit, loss_and_grads, noise_key};
use chainrule::{Error, Float, Tensor};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The input files every contract command reads.
#[derive(clap::Args, Debug)]
pub struct Files {
    /// Model JSON.
    #[arg(long)]
    pub model: PathBuf,
    /// Parameters (safetensors, F32 or F64; the computation runs in that dtype).
    #[arg(long)]
    pub params: PathBuf,
    /// Inputs, [N, in] (.npy, float32 or float64).
    #[arg(long)]
    pub x: PathBuf,
    /// Targets (.npy).
    #[arg(long)]
    pub y: PathBuf,
}

/// Names `path` in a library error, unless the error already does.
fn in_file(path: &Path) -> impl FnOnce(Error) -> anyhow::Error + '_ {
    move |e| match e {
        Error::Io { .. } | Error::Format { .. } => anyhow!("{e}"),
        other => anyhow!("{}: {other}", path.display()),
    }
}

fn read_text(path: &Path) -> Result<String> {
    let bytes = chainrule::io::read_file(path).map_err(in_file(path))?;
    String::from_utf8(bytes).map_err(|_| anyhow!("{}: not UTF-8 text", path.display()))
}

/// A model with its parameters, data and targets, all in the parameters' dtype.
struct Problem<F: Float> {
    model: Sequential<F>,
    data: Dataset<F>,
}

fn load<F: Float>(files: &Files, loss: Loss) -> Result<Problem<F>> {
    let plan = Architecture::from_json(&read_text(&files.model)?).map_err(in_file(&files.model))?;
    // The parameters file must hold every parameter: checked on its size before the
    // model is initialised (a 55-byte model file once asked for 46340² weights, and
    // got them, before a 100-byte parameters file was found short).
    let parameters: u64 = plan.parameters.iter().map(|&n| n as u64).sum();
    let needed = parameters.saturating_mul(std::mem::size_of::<F>() as u64);
    let size = std::fs::metadata(&files.params)
        .map_err(|e| anyhow!("{}: {e}", files.params.display()))?
        .len();
    if size < needed {
        bail!(
            "{}: {size} bytes cannot hold the {parameters} parameters of {} ({needed} bytes as {})",
            files.params.display(),
            files.model.display(),
            F::DTYPE
        );
    }
    let mut model = Sequential::<F>::from_architecture(plan, Init::PytorchDefault, 0)
        .map_err(in_file(&files.model))?;
    let params = read_safetensors::<F>(&files.params).map_err(in_file(&files.params))?;
    model.load(params).map_err(in_file(&files.params))?;

    let x_array = read_npy(&files.x).map_err(in_file(&files.x))?;
    if !x_array.is_float() {
        bail!(
            "{}: dtype {} is not allowed (x must be float32 or float64)",
            files.x.display(),
            x_array.dtype()
        );
    }
    let x = x_array.to_tensor::<F>().map_err(in_file(&files.x))?;
    if !x.all_finite() {
        bail!("{}: holds a non-finite number", files.x.display());
    }
    model.check_input(&x).map_err(|e| {
        anyhow!(
            "{}: {e}, as {} says",
            files.x.display(),
            files.model.display()
        )
    })?;
    let rows = x.shape()[0];
    let outputs = model.output_features().unwrap_or(x.shape()[1]);

    let y_array = read_npy(&files.y).map_err(in_file(&files.y))?;
    let target = Target::from_npy(&y_array, loss, rows, outputs).map_err(in_file(&files.y))?;
    let data = Dataset::new(x, target).map_err(in_file(&files.y))?;
    Ok(Problem { model, data })
}

fn named<F: Float>(
    model: &Sequential<F>,
    values: impl IntoIterator<Item = Tensor<F>>,
) -> BTreeMap<String, Tensor<F>> {
    model
        .params()
        .iter()
        .map(|p| p.name.clone())
        .zip(values)
        .collect()
}

/// The dtype the computation runs in: the parameters file's.
fn dtype(files: &Files) -> Result<&'static str> {
    safetensors_dtype(&files.params).map_err(in_file(&files.params))
}

/// How `chainrule grad` runs the model: evaluation mode (`--eval`), or training mode
/// with dropout drawn from `seed` (`--seed`), as `train`'s first step with that seed
/// would draw it.
#[derive(Debug, Clone, Copy)]
pub struct GradMode {
    /// Evaluation mode.
    pub eval: bool,
    /// The seed of the dropout masks in training mode.
    pub seed: u64,
}

/// `chainrule grad`.
pub fn grad(files: &Files, loss: &str, mode: GradMode, out: &Path) -> Result<()> {
    let loss = Loss::from_name(loss).map_err(|e| anyhow!("--{e}"))?;
    match dtype(files)? {
        "F32" => grad_as::<f32>(files, loss, mode, out),
        _ => grad_as::<f64>(files, loss, mode, out),
    }
}

fn grad_as<F: Float>(files: &Files, loss: Loss, mode: GradMode, out: &Path) -> Result<()> {
    let mut problem = load::<F>(files, loss)?;
    if mode.eval {
        problem.model.set_mode(Mode::Eval);
    } else {
        problem.model.set_mode(Mode::Train);
        problem.model.set_noise_key(noise_key(mode.seed, 0));
    }
    let (value, grads) =
        loss_and_grads(&problem.model, &problem.data.x, &problem.data.target, loss)
            .map_err(|e| anyhow!("{e}"))?;
    if !value.is_finite() {
        bail!("loss: the loss is not finite ({value})");
    }
    let grads = problem
        .model
        .params()
        .iter()
        .zip(grads)
        .map(|(p, g)| g.unwrap_or_else(|| Tensor::zeros(p.value.shape())));
    write_safetensors(out, &named(&problem.model, grads)).map_err(in_file(out))?;
    println!("{{\"loss\": {value}}}");
    Ok(())
}

/// `chainrule train`.
pub fn train(files: &Files, config: &Path, out: &Path) -> Result<()> {
    let config = TrainConfig::from_json(&read_text(config)?).map_err(in_file(config))?;
    match dtype(files)? {
        "F32" => train_as::<f32>(files, &config, out),
        _ => train_as::<f64>(files, &config, out),
    }
}

fn train_as<F: Float>(files: &Files, config: &TrainConfig, out: &Path) -> Result<()> {
    let mut problem = load::<F>(files, config.loss)?;
    let history =
        fit(&mut problem.model, &problem.data, None, config, |_| {}).map_err(|e| anyhow!("{e}"))?;
    if let Some(p) = problem
        .model
        .params()
        .iter()
        .find(|p| !p.value.all_finite())
    {
        bail!(
            "training diverged: parameter {} is no longer finite",
            p.name
        );
    }
    // Parameters and buffers, as PyTorch's state_dict() after the same steps.
    write_safetensors(out, &problem.model.state_dict()).map_err(in_file(out))?;
    match history.epochs.last() {
        Some(last) => println!(
            "trained {} epoch(s); last epoch's training loss {}",
            history.epochs.len(),
            last.train.loss
        ),
        None => println!("0 epochs: parameters written unchanged"),
    }
    Ok(())
}
