//! `chainrule train` in its richer form: a run from a config and flags, with live
//! progress, a summary, and a run folder holding everything needed to inspect,
//! reproduce or resume it.

use crate::config::{self, RunConfig, Scaler, Splits};
use crate::plot::{self, EpochPoint};
use anyhow::{Context, Result, anyhow, bail};
use chainrule::data::Target;
use chainrule::io::{read_safetensors, write_atomic, write_safetensors};
use chainrule::nn::{Module, Sequential};
use chainrule::optim::Optimizer;
use chainrule::train::{Event, History, Position, Session, fit_from};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What the train command was asked, beyond the config fields.
pub struct TrainRequest {
    pub config_file: Option<PathBuf>,
    pub overrides: RunConfig,
    pub model: Option<PathBuf>,
    pub params: Option<PathBuf>,
    pub resume: Option<PathBuf>,
    pub quiet: bool,
    pub json: bool,
    pub audit: bool,
}

/// Facts about a run that the config does not hold, saved as `state.json`.
#[derive(Debug, Serialize, Deserialize)]
pub struct RunState {
    pub chainrule_version: String,
    pub epochs_done: usize,
    /// Batches done in the epoch after `epochs_done`, when the run was interrupted.
    #[serde(default)]
    pub batches_done: usize,
    pub features: usize,
    pub classes: Option<usize>,
    pub class_names: Option<Vec<String>>,
    pub seed: u64,
    pub threads: usize,
    pub scaler: Scaler,
}

impl RunState {
    pub fn read(run: &Path) -> Result<RunState> {
        let path = run.join("state.json");
        let text = chainrule::io::read_text(&path)
            .with_context(|| format!("{}: not a run folder", path.display()))?;
        let state: RunState =
            serde_json::from_str(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        // Sizes from a file are checked before anything is sized by them (a hostile
        // `classes` of 2⁶⁴ − 1 once overflowed the confusion matrix's allocation).
        if let Some(classes) = state.classes {
            let names = state.class_names.as_ref().map(Vec::len);
            if classes == 0 || classes > MAX_CLASSES || names.is_some_and(|n| n != classes) {
                bail!(
                    "{}: classes: {classes} does not fit (1 to {MAX_CLASSES}, one per class name)",
                    path.display()
                );
            }
        }
        Ok(state)
    }
}

/// The most classes a run may have: far beyond any classifier chainrule trains, far
/// below what would exhaust memory in a confusion matrix's rows.
const MAX_CLASSES: usize = 1 << 16;

/// Creates the run folder `runs_dir/name`, or with no name the first free
/// `runs_dir/<base>-NNN`. Creating the folder is what claims the name (one atomic
/// `mkdir`), so two runs started at once never share a folder: a named one that
/// exists already is refused, an automatic number taken meanwhile is skipped.
fn create_run_dir(runs_dir: &Path, name: Option<&str>, base: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(runs_dir).with_context(|| format!("{}", runs_dir.display()))?;
    if let Some(name) = name {
        let plain = Path::new(name).components().count() == 1
            && matches!(
                Path::new(name).components().next(),
                Some(std::path::Component::Normal(_))
            );
        if !plain {
            bail!(
                "name: {name:?} must be a plain folder name inside {} (no '/', '..' or absolute path)",
                runs_dir.display()
            );
        }
        let dir = runs_dir.join(name);
        return match std::fs::create_dir(&dir) {
            Ok(()) => Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => bail!(
                "name: {} already exists (use --resume to continue it, or another --name)",
                dir.display()
            ),
            Err(e) => Err(anyhow!("{}: {e}", dir.display())),
        };
    }
    for n in 1..=u32::MAX {
        let dir = runs_dir.join(format!("{base}-{n:03}"));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(anyhow!("{}: {e}", dir.display())),
        }
    }
    bail!("{}: no free run number", runs_dir.display())
}

pub fn train(request: TrainRequest) -> Result<()> {
    // From the start, so a signal during loading still ends in a clean stop.
    crate::signals::install();
    let base = match (&request.resume, &request.config_file) {
        (Some(run), _) => RunConfig::read(&run.join("config.toml"))?,
        (None, Some(file)) => RunConfig::read(file)?,
        (None, None) => RunConfig::default(),
    };
    let mut cfg = base.overridden_by(request.overrides.clone());
    if let Some(model_file) = &request.model {
        let text = chainrule::io::read_text(model_file)?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| anyhow!("{}: {e}", model_file.display()))?;
        let layers = value
            .get("layers")
            .and_then(|l| l.as_array())
            .ok_or_else(|| anyhow!("{}: layers: is required", model_file.display()))?;
        cfg.layer = Some(layers.clone());
        cfg.input = value
            .get("input")
            .map(|i| serde_json::from_value(i.clone()))
            .transpose()
            .map_err(|e| anyhow!("{}: input: {e}", model_file.display()))?;
        cfg.layers = None;
        cfg.activation = None;
    }
    let cfg = config::resolve(cfg);
    let threads = cfg.threads.unwrap_or(0);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads > cores && !request.quiet {
        // Not an error: a config written on a larger machine still runs here.
        eprintln!("chainrule: threads: {threads} asked, this machine has {cores}; using {cores}");
    }
    chainrule::tensor::set_num_threads(threads);

    let splits = config::load_data(&cfg)?;
    let mut model = config::build_model(&cfg, &splits)?;
    let splits = config::shaped_for(&model, splits)?;
    let train_config = config::train_config(&cfg, splits.classes.is_some())?;
    let mut optimizer = Optimizer::new(train_config.optimizer.clone());
    let mut start = Position::default();
    let mut earlier: Vec<EpochPoint> = Vec::new();

    let run_dir = match &request.resume {
        Some(run) => {
            let state = RunState::read(run)?;
            let loaded = Sequential::<f32>::load_checkpoint(run)?;
            if loaded.layers() != model.layers() {
                bail!(
                    "{}: the checkpoint's layers differ from its config.toml",
                    run.display()
                );
            }
            model = loaded;
            let opt_path = run.join("optimizer.safetensors");
            if opt_path.exists() {
                optimizer
                    .load_state_dict(model.params(), &read_safetensors(&opt_path)?)
                    .map_err(|e| anyhow!("{}: {e}", opt_path.display()))?;
            }
            start = Position {
                epoch: state.epochs_done,
                batch: state.batches_done,
            };
            earlier = read_metrics(&run.join("metrics.csv"))?;
            if start.epoch >= train_config.epochs {
                bail!(
                    "epochs: the run already has {} epochs; ask for more with --epochs",
                    start.epoch
                );
            }
            run.clone()
        }
        None => {
            if let Some(params) = &request.params {
                model
                    .load(read_safetensors(params)?)
                    .map_err(|e| anyhow!("{}: {e}", params.display()))?;
            }
            let runs_dir = PathBuf::from(cfg.runs_dir.clone().unwrap_or_else(|| "runs".into()));
            create_run_dir(
                &runs_dir,
                cfg.name.as_deref(),
                &config::data_name(cfg.data.as_deref().unwrap_or("data")),
            )?
        }
    };

    let first_epoch = start.epoch;
    let mut progress = Progress::new(
        &splits,
        &train_config,
        first_epoch,
        request.quiet || request.json,
    );
    let started = Instant::now();
    let session = Session {
        optimizer: &mut optimizer,
        start,
        stop: Some(crate::signals::stop_flag()),
    };
    let history = fit_from(
        &mut model,
        &splits.train,
        splits.validation.as_ref(),
        &train_config,
        session,
        |event| progress.on(event),
    )?;
    progress.finish();
    let seconds = started.elapsed().as_secs_f64();

    let mut points = earlier;
    points.extend(history.epochs.iter().map(|m| EpochPoint {
        epoch: m.epoch + 1,
        train_loss: m.train.loss,
        train_accuracy: m.train.accuracy,
        validation_loss: m.validation.map(|v| v.loss),
        validation_accuracy: m.validation.and_then(|v| v.accuracy),
    }));
    let test = splits
        .test
        .as_ref()
        .map(|t| chainrule::train::evaluate(&mut model, t, train_config.loss))
        .transpose()?;
    save_run(
        &run_dir,
        &cfg,
        &splits,
        &model,
        &optimizer,
        &history,
        &points,
        first_epoch,
    )?;

    let findings = if request.audit {
        let rows: Vec<usize> = (0..splits.train.len().min(1024)).collect();
        let sample = splits.train.rows(&rows)?;
        let findings: Vec<String> =
            chainrule_explain::audit::audit(&model, &sample.x, &sample.target, train_config.loss)?
                .iter()
                .map(|f| f.to_string())
                .collect();
        write_atomic(
            &run_dir.join("audit.json"),
            serde_json::to_string_pretty(&findings)?.as_bytes(),
        )?;
        Some(findings)
    } else {
        None
    };
    let mut summary = serde_json::json!({
        "run": run_dir.display().to_string(),
        "epochs": first_epoch + history.epochs.len(),
        "interrupted": history.interrupted.map(|p| serde_json::json!({"epoch": p.epoch + 1, "batch": p.batch})),
        "stopped_early": history.stopped_early,
        "seconds": seconds,
        "train_loss": points.last().map(|p| p.train_loss),
        "train_accuracy": points.last().and_then(|p| p.train_accuracy),
        "validation_loss": points.last().and_then(|p| p.validation_loss),
        "validation_accuracy": points.last().and_then(|p| p.validation_accuracy),
        "test_loss": test.map(|t| t.loss),
        "test_accuracy": test.and_then(|t| t.accuracy),
    });
    if let Some(findings) = &findings {
        summary["audit"] = serde_json::json!(findings);
    }
    if request.json {
        println!("{summary}");
    } else if !request.quiet {
        print_summary(&summary, &history);
        if let Some(findings) = &findings {
            if findings.is_empty() {
                println!(
                    "Gradient-flow audit: no zero, non-finite, vanishing or exploding gradients, no dead ReLU units."
                );
            } else {
                println!("Gradient-flow audit found {} problem(s):", findings.len());
                for f in findings {
                    println!("  - {f}");
                }
            }
        }
    }
    Ok(())
}

fn percent(v: Option<f64>) -> String {
    v.map_or("-".into(), |a| format!("{:.2}%", 100.0 * a))
}

fn print_summary(summary: &serde_json::Value, history: &History) {
    let f = |k: &str| summary[k].as_f64();
    if let Some(at) = history.interrupted {
        println!(
            "Interrupted before epoch {}, batch {}: the checkpoint is saved. Continue with: chainrule train --resume {}",
            at.epoch + 1,
            at.batch + 1,
            summary["run"].as_str().unwrap_or("")
        );
        if summary["train_loss"].is_null() {
            return;
        }
    }
    println!(
        "Finished {} epochs in {:.2} s{}.",
        summary["epochs"],
        f("seconds").unwrap_or(0.0),
        if history.stopped_early {
            " (stopped early: the validation loss stopped improving)"
        } else {
            ""
        }
    );
    println!(
        "  train       loss {:<10.4} accuracy {}",
        f("train_loss").unwrap_or(f64::NAN),
        percent(f("train_accuracy"))
    );
    if let Some(loss) = f("validation_loss") {
        println!(
            "  validation  loss {:<10.4} accuracy {}",
            loss,
            percent(f("validation_accuracy"))
        );
    }
    if let Some(loss) = f("test_loss") {
        println!(
            "  test        loss {:<10.4} accuracy {}",
            loss,
            percent(f("test_accuracy"))
        );
    }
    println!("Run folder: {}", summary["run"].as_str().unwrap_or(""));
}

/// Writes everything a run folder holds (each file atomically).
#[allow(clippy::too_many_arguments)]
fn save_run(
    dir: &Path,
    cfg: &RunConfig,
    splits: &Splits,
    model: &Sequential<f32>,
    optimizer: &Optimizer<f32>,
    history: &History,
    points: &[EpochPoint],
    first_epoch: usize,
) -> Result<()> {
    model.save_checkpoint(dir)?;
    write_safetensors(
        &dir.join("optimizer.safetensors"),
        &optimizer.state_dict(model.params()),
    )?;
    let header = "# chainrule run configuration: every setting, defaults filled in.\n# Reproduce with: chainrule train --config config.toml\n";
    let toml_text = toml::to_string(cfg).map_err(|e| anyhow!("config.toml: {e}"))?;
    write_atomic(
        &dir.join("config.toml"),
        format!("{header}{toml_text}").as_bytes(),
    )?;
    let state = RunState {
        chainrule_version: env!("CARGO_PKG_VERSION").into(),
        epochs_done: history
            .interrupted
            .map_or(first_epoch + history.epochs.len(), |p| p.epoch),
        batches_done: history.interrupted.map_or(0, |p| p.batch),
        features: splits.features,
        classes: splits.classes,
        class_names: splits.class_names.clone(),
        seed: cfg.seed.unwrap_or(0),
        threads: cfg.threads.unwrap_or(0),
        scaler: splits.scaler.clone(),
    };
    write_atomic(
        &dir.join("state.json"),
        serde_json::to_string_pretty(&state)?.as_bytes(),
    )?;
    let mut csv = String::from(
        "epoch,train_loss,train_accuracy,validation_loss,validation_accuracy,lr,seconds\n",
    );
    let opt = |v: Option<f64>| v.map_or(String::new(), |v| v.to_string());
    let lrs: Vec<(f64, f64)> = history.epochs.iter().map(|m| (m.lr, m.seconds)).collect();
    let earlier = read_metric_rows(&dir.join("metrics.csv")).unwrap_or_default();
    for (i, p) in points.iter().enumerate() {
        let (lr, secs) = if i >= first_epoch {
            lrs.get(i - first_epoch)
                .map(|&(l, s)| (l.to_string(), s.to_string()))
                .unwrap_or_default()
        } else {
            earlier.get(i).cloned().unwrap_or_default()
        };
        csv.push_str(&format!(
            "{},{},{},{},{},{lr},{secs}\n",
            p.epoch,
            p.train_loss,
            opt(p.train_accuracy),
            opt(p.validation_loss),
            opt(p.validation_accuracy)
        ));
    }
    write_atomic(&dir.join("metrics.csv"), csv.as_bytes())?;
    plot::training_curves(&dir.join("training"), points)?;
    if splits.features == 2
        && let Target::Classes(classes) = &splits.train.target
    {
        let names: Vec<String> = match &splits.class_names {
            Some(n) => n.clone(),
            None => (0..splits.classes.unwrap_or(0))
                .map(|c| format!("class {c}"))
                .collect(),
        };
        plot::decision_boundary(
            &dir.join("decision_boundary"),
            model,
            &splits.train.x,
            classes,
            &names,
        )?;
    }
    Ok(())
}

/// The lr and seconds columns of an existing metrics.csv (for a resumed run).
fn read_metric_rows(path: &Path) -> Result<Vec<(String, String)>> {
    let text = chainrule::io::read_text(path)?;
    Ok(text
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (
                f.get(5).unwrap_or(&"").to_string(),
                f.get(6).unwrap_or(&"").to_string(),
            )
        })
        .collect())
}

/// The epochs recorded in an existing metrics.csv.
fn read_metrics(path: &Path) -> Result<Vec<EpochPoint>> {
    let text = chainrule::io::read_text(path)?;
    let num = |s: &str| s.parse::<f64>().ok();
    text.lines()
        .skip(1)
        .enumerate()
        .map(|(i, line)| {
            let f: Vec<&str> = line.split(',').collect();
            if f.len() < 5 {
                bail!("{}: line {}: expected 7 columns", path.display(), i + 2);
            }
            Ok(EpochPoint {
                epoch: f[0]
                    .parse()
                    .map_err(|_| anyhow!("{}: line {}: bad epoch", path.display(), i + 2))?,
                train_loss: num(f[1]).unwrap_or(f64::NAN),
                train_accuracy: num(f[2]),
                validation_loss: num(f[3]),
                validation_accuracy: num(f[4]),
            })
        })
        .collect()
}

/// Live progress: a bar on a terminal, one line per epoch otherwise.
struct Progress {
    bar: Option<ProgressBar>,
    lines: bool,
    epochs: usize,
    rows_done: usize,
    started: Instant,
    /// The last finished epoch's accuracy, shown on the bar.
    accuracy: String,
}

impl Progress {
    fn new(
        splits: &Splits,
        config: &chainrule::train::TrainConfig,
        first_epoch: usize,
        silent: bool,
    ) -> Progress {
        let batches = splits.train.len().div_ceil(config.batch_size.max(1));
        let remaining = (config.epochs.saturating_sub(first_epoch) * batches) as u64;
        let terminal = std::io::stderr().is_terminal();
        let bar = (!silent && terminal).then(|| {
            let bar = ProgressBar::with_draw_target(Some(remaining), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{prefix:>12} [{bar:30.cyan/blue}] {msg}  ETA {eta}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            bar
        });
        Progress {
            bar,
            lines: !silent && !terminal,
            epochs: config.epochs,
            rows_done: 0,
            started: Instant::now(),
            accuracy: String::new(),
        }
    }

    fn on(&mut self, event: &Event<'_>) {
        match event {
            Event::Step {
                epoch,
                batch,
                batches,
                rows,
                loss,
            } => {
                self.rows_done += rows;
                if let Some(bar) = &self.bar {
                    let speed =
                        self.rows_done as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
                    bar.set_prefix(format!("epoch {}/{}", epoch + 1, self.epochs));
                    bar.set_message(format!(
                        "batch {}/{batches}  loss {loss:.4}{}  {speed:.0} samples/s",
                        batch + 1,
                        self.accuracy
                    ));
                    bar.inc(1);
                }
            }
            Event::Epoch(m) => {
                if let Some(a) = m.validation.and_then(|v| v.accuracy).or(m.train.accuracy) {
                    let which = if m.validation.is_some() {
                        "val_acc"
                    } else {
                        "acc"
                    };
                    self.accuracy = format!("  {which} {:.2}%", 100.0 * a);
                }
                let acc = m
                    .train
                    .accuracy
                    .map_or(String::new(), |a| format!("  accuracy {:.2}%", 100.0 * a));
                let val = m.validation.map_or(String::new(), |v| {
                    format!(
                        "  val_loss {:.4}{}",
                        v.loss,
                        v.accuracy.map_or(String::new(), |a| format!(
                            "  val_accuracy {:.2}%",
                            100.0 * a
                        ))
                    )
                });
                let line = format!(
                    "epoch {}/{}  loss {:.4}{acc}{val}  lr {}  {:.2} s",
                    m.epoch + 1,
                    self.epochs,
                    m.train.loss,
                    m.lr,
                    m.seconds
                );
                if let Some(bar) = &self.bar {
                    bar.println(line);
                } else if self.lines {
                    eprintln!("{line}");
                }
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
