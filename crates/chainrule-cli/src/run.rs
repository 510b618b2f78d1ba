//! `chainrule train` in its richer form: a run from a config and flags, with live
//! progress, a summary, and a run folder holding everything needed to inspect,
//! reproduce or resume it.
//!
//! A run folder holds one checkpoint, `checkpoint/`, replaced as a whole at every
//! save (see [`chainrule::io::CheckpointDir`]: a fresh save folder, flushed, then
//! one atomic rename of the `checkpoint` link): the model, its parameters, the
//! optimizer's state, the config, `state.json` (the position and early stopping's
//! record) and `metrics.csv` up to that position. A save happens after every
//! `checkpoint_every` epochs, when a signal stops training, and at the end, so a
//! kill at any moment loses at most that many epochs and never leaves a mix of two
//! saves. The plots and `audit.json` beside it are drawn from the checkpoint when
//! training ends. While a run trains, it holds the folder's lock: a second
//! `--resume` of it, or a run started with its name, is refused.

use crate::config::{self, RunConfig, Scaler, Splits};
use crate::plot::{self, EpochPoint};
use anyhow::{Context, Result, anyhow, bail};
use chainrule::data::Target;
use chainrule::io::{
    CheckpointDir, SavedCheckpoint, read_safetensors, safetensors_bytes, write_atomic,
};
use chainrule::nn::{Module, Param, Sequential};
use chainrule::optim::Optimizer;
use chainrule::train::{
    Best, Checkpoint, Event, History, Moment, Session, Tally, TrainState, fit_checkpointed,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
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
    /// The best epoch so far by validation loss (by training loss for early
    /// stopping without a validation split); its parameters are `best.safetensors`.
    /// Read under its earlier name too, so that older run folders resume.
    #[serde(
        default,
        alias = "early_stopping",
        skip_serializing_if = "Option::is_none"
    )]
    pub best: Option<BestRecord>,
    /// The training sums of the batches done in an interrupted epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch_so_far: Option<EpochSoFar>,
    /// Whether early stopping ended the run (there is then nothing to resume).
    #[serde(default)]
    pub stopped_early: bool,
}

/// The best epoch's record in `state.json`.
#[derive(Debug, Serialize, Deserialize)]
pub struct BestRecord {
    /// The lowest monitored loss so far.
    #[serde(with = "float_or_text")]
    pub best_loss: f64,
    /// Its epoch, from 1 (as in metrics.csv).
    pub best_epoch: usize,
}

/// [`Tally`] in `state.json`.
#[derive(Debug, Serialize, Deserialize)]
pub struct EpochSoFar {
    #[serde(with = "float_or_text")]
    pub weighted_loss: f64,
    pub rows: usize,
    pub correct: usize,
    pub judged: usize,
    pub classification: bool,
}

/// An f64 in JSON, which has no inf or NaN: those are written as the strings
/// `"inf"`, `"-inf"` and `"NaN"`. (A finite f64 goes through JSON exactly: the
/// workspace's serde_json parses with `float_roundtrip`, which a resumed run's early
/// stopping needs to compare the same numbers as a run never stopped.)
mod float_or_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &f64, s: S) -> Result<S::Ok, S::Error> {
        if value.is_finite() {
            s.serialize_f64(*value)
        } else {
            s.serialize_str(&value.to_string())
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Number {
            Finite(f64),
            Text(String),
        }
        match Number::deserialize(d)? {
            Number::Finite(v) => Ok(v),
            Number::Text(t) => t
                .parse()
                .map_err(|_| serde::de::Error::custom(format!("{t:?} is not a number"))),
        }
    }
}

impl RunState {
    /// Reads `state.json` at `path`.
    pub fn read(path: &Path) -> Result<RunState> {
        let text = chainrule::io::read_text(path)
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
const MAX_CLASSES: usize = chainrule::data::MAX_CLASSES;

/// Whether files can be created in folder `dir`: by creating one (and removing it),
/// which also answers for read-only file systems and for root, whom permissions do
/// not stop.
pub fn writable(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".chainrule-writable-{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)?;
    std::fs::remove_file(&probe)
}

/// The complete checkpoint of run folder `run`, checked against its manifest, for
/// `--resume`; one line saying why there is none otherwise.
pub fn open_checkpoint(run: &Path) -> Result<SavedCheckpoint> {
    if let Some(saved) = SavedCheckpoint::open(run)? {
        return Ok(saved);
    }
    if !run.is_dir() {
        bail!("{}: no such run folder", run.display());
    }
    if run.join("state.json").exists() {
        bail!(
            "{}: saved file by file by an earlier chainrule (no checkpoint/), so it may be torn: it cannot be resumed (eval, predict and summary still read it)",
            run.display()
        );
    }
    let name = run.file_name().map_or_else(
        || run.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let runs_dir = match run.parent() {
        Some(p) if !p.as_os_str().is_empty() && p != Path::new("runs") => {
            format!(" --runs-dir {}", p.display())
        }
        _ => String::new(),
    };
    bail!(
        "{}: no complete checkpoint yet (training stopped before its first save); start it again with --name {name}{runs_dir}",
        run.display()
    )
}

/// The folder that holds the files of run `dir` for `eval`, `predict` and
/// `summary`: its checkpoint, checked; a run folder of an earlier chainrule, read
/// as it is (it has nothing to check against); or a folder with a `model.json`.
pub fn run_files(dir: &Path) -> Result<PathBuf> {
    match SavedCheckpoint::open(dir)? {
        Some(saved) => Ok(saved.dir().to_path_buf()),
        None if dir.join("model.json").exists() => Ok(dir.to_path_buf()),
        None => open_checkpoint(dir).map(|saved| saved.dir().to_path_buf()),
    }
}

/// Whether folder `dir` holds a run: a checkpoint (or a broken link where one
/// should be), or the files of an earlier chainrule's run folder.
fn holds_a_run(dir: &Path) -> bool {
    ["checkpoint", "state.json", "model.json"]
        .iter()
        .any(|f| std::fs::symlink_metadata(dir.join(f)).is_ok())
}

/// Creates the run folder `runs_dir/name`, or with no name the first free
/// `runs_dir/<base>-NNN`, and takes its lock. Creating the folder is what claims the
/// name (one atomic `mkdir`), so two runs started at once never share a folder: a
/// named one that holds a run already is refused, an automatic number taken
/// meanwhile is skipped. A named folder that holds no complete checkpoint (a run
/// killed before its first save) is taken over, unless a run holds its lock.
fn create_run_dir(
    runs_dir: &Path,
    name: Option<&str>,
    base: &str,
    quiet: bool,
) -> Result<(PathBuf, CheckpointDir)> {
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
        let fresh = match std::fs::create_dir(&dir) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
            Err(e) => return Err(anyhow!("{}: {e}", dir.display())),
        };
        let in_use = || {
            anyhow!(
                "name: {} already exists (another chainrule train is writing to it)",
                dir.display()
            )
        };
        let taken = || {
            anyhow!(
                "name: {} already exists (use --resume to continue it, or another --name)",
                dir.display()
            )
        };
        if !fresh && holds_a_run(&dir) {
            return Err(taken());
        }
        let lock = CheckpointDir::try_lock(&dir)?.ok_or_else(in_use)?;
        if !fresh {
            // Looked at again under the lock: a run may have saved and ended since.
            if holds_a_run(&dir) {
                return Err(taken());
            }
            if !quiet {
                eprintln!(
                    "chainrule: {} holds no complete checkpoint (a run stopped before its first save): starting it afresh",
                    dir.display()
                );
            }
        }
        return Ok((dir, lock));
    }
    for n in 1..=u32::MAX {
        let dir = runs_dir.join(format!("{base}-{n:03}"));
        match std::fs::create_dir(&dir) {
            // Locked by someone else between our mkdir and now (a run given this
            // name took the empty folder over): leave it to them.
            Ok(()) => match CheckpointDir::try_lock(&dir)? {
                Some(lock) => return Ok((dir, lock)),
                None => continue,
            },
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(anyhow!("{}: {e}", dir.display())),
        }
    }
    bail!("{}: no free run number", runs_dir.display())
}

/// What a resumed run brings from its checkpoint.
struct Resumed {
    model: Sequential<f32>,
    state: TrainState<f32>,
    /// metrics.csv's rows (without the header), one per epoch done.
    metrics: Vec<String>,
    /// The same rows, read.
    points: Vec<EpochPoint>,
}

/// Reads the checkpoint `saved` of run `run` into the optimizer and a [`Resumed`],
/// checking that its files agree with each other and with `model` (built from its
/// config), `optimizer` (its optimizer) and the `train_rows` rows of its data.
fn resume_from(
    run: &Path,
    saved: &SavedCheckpoint,
    model: &Sequential<f32>,
    optimizer: &mut Optimizer<f32>,
    train_config: &chainrule::train::TrainConfig,
    train_rows: usize,
) -> Result<Resumed> {
    let state_path = saved.file("state.json")?;
    let state = RunState::read(&state_path)?;
    if state.stopped_early {
        bail!(
            "{}: early stopping ended this run after epoch {}: there is nothing to resume",
            run.display(),
            state.epochs_done
        );
    }
    let loaded = Sequential::<f32>::load_checkpoint(saved.dir())?;
    if loaded.layers() != model.layers() {
        let list = |m: &Sequential<f32>| {
            m.layers()
                .iter()
                .map(crate::inspect::layer_label)
                .collect::<Vec<_>>()
                .join(", ")
        };
        bail!(
            "{}: the checkpoint's layers ({}) differ from those its config.toml describes ({}); a resume keeps the architecture",
            run.display(),
            list(&loaded),
            list(model)
        );
    }
    let opt_path = saved.file("optimizer.safetensors")?;
    optimizer
        .load_state_dict(loaded.params(), &read_safetensors(&opt_path)?)
        .map_err(|e| anyhow!("{}: {e}", opt_path.display()))?;
    let metrics_path = saved.file("metrics.csv")?;
    let metrics: Vec<String> = chainrule::io::read_text(&metrics_path)?
        .lines()
        .skip(1)
        .map(str::to_string)
        .collect();
    // One row per epoch done, as the save wrote them: anything else is a checkpoint
    // whose files disagree.
    if metrics.len() != state.epochs_done {
        bail!(
            "{}: {} rows, but {} says {} epochs are done",
            metrics_path.display(),
            metrics.len(),
            state_path.display(),
            state.epochs_done
        );
    }
    let points = parse_metrics(&metrics_path, &metrics)?;
    let restores = train_config.early_stopping.is_some_and(|e| e.restore_best);
    let best = match &state.best {
        Some(record) if record.best_epoch == 0 || record.best_epoch > state.epochs_done => bail!(
            "{}: best.best_epoch: {} is not one of the {} epochs done",
            state_path.display(),
            record.best_epoch,
            state.epochs_done
        ),
        Some(record) => Some(Best {
            loss: record.best_loss,
            epoch: record.best_epoch - 1,
            // A run folder of an earlier chainrule kept them only for restore_best.
            params: if restores || saved.contains("best.safetensors") {
                best_params(saved, &loaded)?
            } else {
                Vec::new()
            },
        }),
        None => None,
    };
    let batches = chainrule::data::Batches {
        rows: train_rows,
        batch_size: train_config.batch_size,
        shuffle: train_config.shuffle,
        seed: train_config.seed,
        drop_last: train_config.drop_last,
    }
    .count();
    if state.batches_done >= batches.max(1) {
        bail!(
            "{}: batches_done: {} is not a batch of an epoch of {batches}",
            state_path.display(),
            state.batches_done
        );
    }
    let epoch_so_far = match &state.epoch_so_far {
        Some(t) => Tally {
            weighted_loss: t.weighted_loss,
            rows: t.rows,
            correct: t.correct,
            judged: t.judged,
            classification: t.classification,
        },
        None => Tally::default(),
    };
    Ok(Resumed {
        model: loaded,
        state: TrainState {
            position: chainrule::train::Position {
                epoch: state.epochs_done,
                batch: state.batches_done,
            },
            best,
            epoch_so_far,
        },
        metrics,
        points,
    })
}

/// A settings error named by the flag the user typed, when the value came from one:
/// `--lr: must be ≥ 0, got -1 (optimizer.lr)` rather than the config field alone.
fn named_by_flag(e: anyhow::Error) -> anyhow::Error {
    const FLAGS: [(&str, &str); 9] = [
        ("optimizer.lr", "--lr"),
        ("optimizer.momentum", "--momentum"),
        ("optimizer.weight_decay", "--weight-decay"),
        ("optimizer.betas", "--betas"),
        ("epochs", "--epochs"),
        ("batch_size", "--batch-size"),
        ("validation_split", "--validation-split"),
        ("clip_grad_norm", "--clip-grad-norm"),
        ("patience", "--patience"),
    ];
    let message = e.to_string();
    let typed =
        |flag: &str| std::env::args().any(|a| a == flag || a.starts_with(&format!("{flag}=")));
    for (field, flag) in FLAGS {
        if let Some(rest) = message.strip_prefix(&format!("{field}:"))
            && typed(flag)
        {
            return anyhow!("{flag}:{rest} ({field})");
        }
    }
    e
}

/// Early stopping's best parameters from `best.safetensors`, in the model's order.
fn best_params(saved: &SavedCheckpoint, model: &Sequential<f32>) -> Result<Vec<Param<f32>>> {
    let path = saved.file("best.safetensors")?;
    let mut named = read_safetensors::<f32>(&path)?;
    // The parameters, then the buffers (batch norm's running statistics).
    let params = model
        .params()
        .iter()
        .chain(model.buffers())
        .map(|p| {
            let value = named
                .remove(&p.name)
                .ok_or_else(|| anyhow!("{}: {}: missing", path.display(), p.name))?;
            if value.shape() != p.value.shape() {
                bail!(
                    "{}: {}: shape {:?}, the model's is {:?}",
                    path.display(),
                    p.name,
                    value.shape(),
                    p.value.shape()
                );
            }
            Ok(Param::new(p.name.clone(), value))
        })
        .collect::<Result<Vec<_>>>()?;
    if let Some(extra) = named.keys().next() {
        bail!("{}: {extra}: not a parameter of the model", path.display());
    }
    Ok(params)
}

/// Fails, naming the flag, when a resume of run `run` (whose config is `base`) is
/// asked for another architecture: a resumed run keeps its model.
fn refuse_new_architecture(run: &Path, base: &RunConfig, request: &TrainRequest) -> Result<()> {
    let flags = &request.overrides;
    let changed = |flag: &str, asked: String, saved: String| -> Result<()> {
        bail!(
            "{flag}: a resumed run keeps its architecture ({} has {saved}, the flag asks for {asked}); to train another, start a new run without --resume",
            run.display()
        )
    };
    if let Some(layers) = &flags.layers
        && base.layers.as_ref() != Some(layers)
    {
        let saved = match (&base.layers, &base.layer) {
            (Some(l), _) => format!("layers {l:?}"),
            (None, Some(_)) => "explicit layers".into(),
            (None, None) => "the default layers".into(),
        };
        changed("--layers", format!("{layers:?}"), saved)?;
    }
    if let Some(activation) = &flags.activation
        && base.activation.as_ref() != Some(activation)
    {
        let saved = base
            .activation
            .clone()
            .unwrap_or_else(|| "explicit layers".into());
        changed("--activation", activation.clone(), saved)?;
    }
    if let Some(model) = &request.model {
        changed(
            "--model",
            model.display().to_string(),
            "its own model".into(),
        )?;
    }
    Ok(())
}

pub fn train(request: TrainRequest) -> Result<()> {
    // From the start, so a signal during loading still ends in a clean stop.
    crate::signals::install();
    // A resumed run's folder is locked before anything is read from it, so that
    // what is read is not replaced meanwhile by a save of another run of it.
    let resumed = match &request.resume {
        Some(run) => {
            // Said as eval and predict say it, before the lock is looked for.
            if !run.is_dir() {
                bail!("{}: no such run folder", run.display());
            }
            let folder = CheckpointDir::try_lock(run)?.ok_or_else(|| {
                anyhow!(
                    "{}: another chainrule train is writing to this run folder",
                    run.display()
                )
            })?;
            // Checked before training: a run that cannot save would lose its epochs.
            writable(run).map_err(|e| {
                anyhow!(
                    "{}: not writable ({e}): --resume saves its checkpoints there",
                    run.display()
                )
            })?;
            Some((run.clone(), folder, open_checkpoint(run)?))
        }
        None => None,
    };
    let base = match (&resumed, &request.config_file) {
        (Some((_, _, saved)), _) => RunConfig::read(&saved.file("config.toml")?)?,
        (None, Some(file)) => RunConfig::read(file)?,
        (None, None) => RunConfig::default(),
    };
    if let Some((run, _, _)) = &resumed {
        refuse_new_architecture(run, &base, &request)?;
    }
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
    let every = cfg.checkpoint_every.unwrap_or(1);
    if every == 0 {
        bail!("checkpoint_every: must be at least 1");
    }
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
    let train_config =
        config::train_config(&cfg, splits.classes.is_some()).map_err(named_by_flag)?;
    let cfg = config::completed(cfg, &splits, &train_config);
    let mut optimizer = Optimizer::new(train_config.optimizer.clone());
    let mut start = TrainState::default();
    let mut earlier: Vec<String> = Vec::new();
    let mut points: Vec<EpochPoint> = Vec::new();

    let (run_dir, mut folder) = match resumed {
        Some((run, folder, saved)) => {
            let resumed = resume_from(
                &run,
                &saved,
                &model,
                &mut optimizer,
                &train_config,
                splits.train.len(),
            )?;
            if resumed.state.position.epoch >= train_config.epochs {
                bail!(
                    "epochs: the run already has {} epochs; ask for more with --epochs",
                    resumed.state.position.epoch
                );
            }
            model = resumed.model;
            start = resumed.state;
            earlier = resumed.metrics;
            points = resumed.points;
            (run, folder)
        }
        None => {
            if let Some(params) = &request.params {
                model
                    // f32 as training runs, or f64 (a PyTorch model in double)
                    // rounded to it.
                    .load(read_safetensors::<f32>(params).or_else(|e| {
                        read_safetensors::<f64>(params)
                            .map(|m| m.into_iter().map(|(k, v)| (k, v.cast())).collect())
                            .map_err(|_| e)
                    })?)
                    .map_err(|e| anyhow!("{}: {e}", params.display()))?;
            }
            let runs_dir = PathBuf::from(cfg.runs_dir.clone().unwrap_or_else(|| "runs".into()));
            create_run_dir(
                &runs_dir,
                cfg.name.as_deref(),
                &config::data_name(cfg.data.as_deref().unwrap_or("data")),
                request.quiet,
            )?
        }
    };

    let first_epoch = start.position.epoch;
    let silent = request.quiet || request.json;
    if !silent {
        print_plan(&model, &splits)?;
    }
    let mut progress = Progress::new(silent);
    progress.epochs = train_config.epochs;
    let started = Instant::now();
    let session = Session {
        optimizer: &mut optimizer,
        start,
        stop: Some(crate::signals::stop_flag()),
    };
    let run = RunFacts {
        cfg: &cfg,
        splits: &splits,
        earlier: &earlier,
    };
    let history = fit_checkpointed(
        &mut model,
        &splits.train,
        splits.validation.as_ref(),
        &train_config,
        session,
        |event| progress.on(event),
        |checkpoint| {
            // Every `every` epochs counted from the run's start (not from a resume),
            // and whenever training stops.
            let due = checkpoint.moment != Moment::Epoch
                || checkpoint.state.position.epoch.is_multiple_of(every);
            if due {
                save_checkpoint(&mut folder, &run, checkpoint)?;
            }
            Ok::<(), anyhow::Error>(())
        },
    )?;
    progress.finish();
    let seconds = started.elapsed().as_secs_f64();

    points.extend(history.epochs.iter().map(|m| EpochPoint {
        epoch: m.epoch + 1,
        train_loss: m.train.loss,
        train_accuracy: m.train.accuracy,
        validation_loss: m.validation.map(|v| v.loss),
        validation_accuracy: m.validation.and_then(|v| v.accuracy),
        lr: Some(m.lr),
    }));
    let test = splits
        .test
        .as_ref()
        .map(|t| chainrule::train::evaluate(&mut model, t, train_config.loss))
        .transpose()?;
    draw_plots(&run_dir, &splits, &model, &points)?;

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
    let restored = train_config.early_stopping.is_some_and(|e| e.restore_best);
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
        "best_epoch": history.best_epoch.map(|e| e + 1),
        "params_hold": if history.best_epoch.is_some() && restored { "best" } else { "last" },
        "test_loss": test.map(|t| t.loss),
        "test_accuracy": test.and_then(|t| t.accuracy),
    });
    if let Some(findings) = &findings {
        summary["audit"] = serde_json::json!(findings);
    }
    if request.json {
        summary["history"] = history_json(&earlier, &history).into();
        println!("{summary}");
    } else if request.quiet {
        // Quiet, but a script still learns where the run went.
        println!("{}", run_dir.display());
    } else {
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

/// What is about to be trained, before the first step: the model summary (as
/// `chainrule summary` prints it) and the sizes of the data's splits.
fn print_plan(model: &Sequential<f32>, splits: &Splits) -> Result<()> {
    let plan = chainrule::nn::Architecture::new(model.input_shape(), model.layers().to_vec())?;
    print!("{}", crate::inspect::architecture_table(&plan));
    let rows = |d: Option<&chainrule::data::Dataset<f32>>| {
        d.map_or("none".to_string(), |d| crate::inspect::group(d.len()))
    };
    println!(
        "data: {} training, {} validation, {} test rows; {} features{}",
        rows(Some(&splits.train)),
        rows(splits.validation.as_ref()),
        rows(splits.test.as_ref()),
        splits.features,
        splits
            .classes
            .map_or(String::new(), |c| format!(", {c} classes"))
    );
    Ok(())
}

/// Every epoch of the run as JSON objects (metrics.csv's columns): the rows of
/// earlier sessions (a resumed run's), then this session's.
fn history_json(earlier: &[String], history: &History) -> Vec<serde_json::Value> {
    let columns: Vec<&str> = METRICS_HEADER.split(',').collect();
    let number = |v: &str| -> serde_json::Value {
        v.parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .map_or(serde_json::Value::Null, Into::into)
    };
    let before = earlier.iter().map(|row| {
        let object: serde_json::Map<String, serde_json::Value> = columns
            .iter()
            .zip(row.split(','))
            .map(|(k, v)| (k.to_string(), number(v)))
            .collect();
        serde_json::Value::Object(object)
    });
    let now = history.epochs.iter().map(|m| {
        serde_json::json!({
            "epoch": m.epoch + 1,
            "train_loss": m.train.loss,
            "train_accuracy": m.train.accuracy,
            "validation_loss": m.validation.map(|v| v.loss),
            "validation_accuracy": m.validation.and_then(|v| v.accuracy),
            "lr": m.lr,
            "seconds": m.seconds,
        })
    });
    before.chain(now).collect()
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
    if let Some(best) = summary["best_epoch"].as_u64() {
        let run = summary["run"].as_str().unwrap_or("");
        let by = if summary["validation_loss"].is_null() {
            "lowest training loss"
        } else {
            "lowest validation loss"
        };
        if summary["params_hold"] == "best" {
            println!(
                "params.safetensors holds the best epoch, {best} ({by}), restored by early stopping; the last epoch's are last.safetensors (eval --weights last {run})"
            );
        } else {
            println!(
                "params.safetensors holds the last epoch; the best, epoch {best} ({by}), is best.safetensors (eval --weights best {run})"
            );
        }
    }
    println!("Run folder: {}", summary["run"].as_str().unwrap_or(""));
}

/// What every save of a run writes besides the training state: its settings, its
/// data's facts, and the metrics rows of the epochs before this session.
struct RunFacts<'a> {
    cfg: &'a RunConfig,
    splits: &'a Splits,
    earlier: &'a [String],
}

/// The header of metrics.csv.
const METRICS_HEADER: &str =
    "epoch,train_loss,train_accuracy,validation_loss,validation_accuracy,lr,seconds";

/// Saves `checkpoint` as the run folder's checkpoint, as a whole (see the module
/// documentation).
fn save_checkpoint(
    folder: &mut CheckpointDir,
    run: &RunFacts<'_>,
    checkpoint: &Checkpoint<'_, f32, Sequential<f32>>,
) -> Result<()> {
    let Checkpoint {
        model,
        optimizer,
        state,
        history,
        ..
    } = *checkpoint;
    let mut save = folder.save()?;
    model.save_checkpoint(save.dir())?;
    // Whatever files save_checkpoint writes (model.json and params.safetensors
    // today) are part of the checkpoint and listed in its manifest.
    let mut written: Vec<String> = std::fs::read_dir(save.dir())
        .with_context(|| format!("{}", save.dir().display()))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("{}", save.dir().display()))?;
    written.sort();
    for name in &written {
        save.add(name)?;
    }
    save.write(
        "optimizer.safetensors",
        &safetensors_bytes(&optimizer.state_dict(model.params()))?,
    )?;
    if let Some(best) = &state.best
        && !best.params.is_empty()
    {
        let named: BTreeMap<String, chainrule::Tensor<f32>> = best
            .params
            .iter()
            .map(|p| (p.name.clone(), p.value.clone()))
            .collect();
        save.write("best.safetensors", &safetensors_bytes(&named)?)?;
    }
    if !checkpoint.last.is_empty() {
        // Early stopping restored the best epoch into params.safetensors: the last
        // epoch's parameters stay loadable beside it.
        let named: BTreeMap<String, chainrule::Tensor<f32>> = checkpoint
            .last
            .iter()
            .map(|p| (p.name.clone(), p.value.clone()))
            .collect();
        save.write("last.safetensors", &safetensors_bytes(&named)?)?;
    }
    let mut header = "# chainrule run configuration: every setting, defaults filled in.\n# Reproduce with: chainrule train --config config.toml\n".to_string();
    // The settings that are off have no value to write: say so.
    for (name, unset, meaning) in [
        ("patience", run.cfg.patience.is_none(), "no early stopping"),
        (
            "clip_grad_norm",
            run.cfg.clip_grad_norm.is_none(),
            "no gradient clipping",
        ),
    ] {
        if unset {
            header += &format!("# {name}: not set ({meaning})\n");
        }
    }
    let toml_text = toml::to_string(run.cfg).map_err(|e| anyhow!("config.toml: {e}"))?;
    save.write("config.toml", format!("{header}{toml_text}").as_bytes())?;
    let splits = run.splits;
    let tally = state.epoch_so_far;
    let run_state = RunState {
        chainrule_version: env!("CARGO_PKG_VERSION").into(),
        epochs_done: state.position.epoch,
        batches_done: state.position.batch,
        features: splits.features,
        classes: splits.classes,
        class_names: splits.class_names.clone(),
        seed: run.cfg.seed.unwrap_or(0),
        threads: run.cfg.threads.unwrap_or(0),
        scaler: splits.scaler.clone(),
        best: state.best.as_ref().map(|b| BestRecord {
            best_loss: b.loss,
            best_epoch: b.epoch + 1,
        }),
        epoch_so_far: (state.position.batch > 0).then_some(EpochSoFar {
            weighted_loss: tally.weighted_loss,
            rows: tally.rows,
            correct: tally.correct,
            judged: tally.judged,
            classification: tally.classification,
        }),
        stopped_early: checkpoint.moment == Moment::Finished && history.stopped_early,
    };
    save.write(
        "state.json",
        serde_json::to_string_pretty(&run_state)?.as_bytes(),
    )?;
    let opt = |v: Option<f64>| v.map_or(String::new(), |v| v.to_string());
    let mut csv = format!("{METRICS_HEADER}\n");
    for row in run.earlier {
        csv.push_str(row);
        csv.push('\n');
    }
    for m in &history.epochs {
        csv.push_str(&format!(
            "{},{},{},{},{},{},{}\n",
            m.epoch + 1,
            m.train.loss,
            opt(m.train.accuracy),
            opt(m.validation.map(|v| v.loss)),
            opt(m.validation.and_then(|v| v.accuracy)),
            m.lr,
            m.seconds
        ));
    }
    save.write("metrics.csv", csv.as_bytes())?;
    save.commit()?;
    Ok(())
}

/// The training curves, and for 2-D classification the decision boundary, beside
/// the checkpoint (each file atomically). Drawn once training ends: they are views
/// of the checkpoint's metrics.csv and parameters, not part of it.
fn draw_plots(
    dir: &Path,
    splits: &Splits,
    model: &Sequential<f32>,
    points: &[EpochPoint],
) -> Result<()> {
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

/// The epochs in the rows (without the header) of metrics.csv at `path`.
fn parse_metrics(path: &Path, rows: &[String]) -> Result<Vec<EpochPoint>> {
    let num = |s: &str| s.parse::<f64>().ok();
    rows.iter()
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
                lr: f.get(5).and_then(|v| num(v)),
            })
        })
        .collect()
}

/// Live progress as Keras shows it: on a terminal, an `Epoch i/n` line and a bar per
/// epoch with the running mean of the loss (and accuracy) over the batches so far,
/// which stays on screen with the validation metrics once the epoch ends; otherwise
/// one line per epoch.
struct Progress {
    /// The bar of the epoch under way, on a terminal.
    bar: Option<ProgressBar>,
    terminal: bool,
    silent: bool,
    epochs: usize,
    /// The epoch whose bar `bar` is.
    epoch: Option<usize>,
}

/// The metrics as the bar shows them: `loss 0.1234  accuracy 95.12%`.
fn metrics_text(loss: f64, accuracy: Option<f64>, prefix: &str) -> String {
    let accuracy = accuracy.map_or(String::new(), |a| {
        format!("  {prefix}accuracy {:.2}%", 100.0 * a)
    });
    format!("{prefix}loss {loss:.4}{accuracy}")
}

impl Progress {
    fn new(silent: bool) -> Progress {
        Progress {
            bar: None,
            terminal: std::io::stderr().is_terminal(),
            silent,
            epochs: 0,
            epoch: None,
        }
    }

    /// The bar of `epoch` (of `batches` batches), started with its `Epoch i/n` line
    /// when the epoch is new.
    fn bar_of(&mut self, epoch: usize, batches: usize) -> &ProgressBar {
        if self.epoch != Some(epoch) {
            self.finish();
            eprintln!("Epoch {}/{}", epoch + 1, self.epochs);
            let bar =
                ProgressBar::with_draw_target(Some(batches as u64), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{pos:>6}/{len} [{bar:30.cyan/blue}] ETA {eta:<4} {msg}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            self.bar = Some(bar);
            self.epoch = Some(epoch);
        }
        self.bar.as_ref().expect("just set")
    }

    fn on(&mut self, event: &Event<'_>) {
        if self.silent {
            return;
        }
        match event {
            Event::Step {
                epoch,
                batch,
                batches,
                epoch_so_far,
                ..
            } if self.terminal => {
                let bar = self.bar_of(*epoch, *batches);
                bar.set_message(metrics_text(epoch_so_far.loss, epoch_so_far.accuracy, ""));
                bar.set_position(*batch as u64 + 1);
            }
            Event::Step { .. } => {}
            Event::Epoch(m) => {
                let mut line = metrics_text(m.train.loss, m.train.accuracy, "");
                if let Some(v) = m.validation {
                    line += &format!("  {}", metrics_text(v.loss, v.accuracy, "val_"));
                }
                line += &format!("  lr {}", m.lr);
                if self.terminal {
                    let batches = self.bar.as_ref().and_then(|b| b.length()).unwrap_or(0);
                    let bar = self.bar_of(m.epoch, batches as usize);
                    bar.set_style(
                        ProgressStyle::with_template("{pos:>6}/{len} [{bar:30.cyan/blue}] {msg}")
                            .expect("valid template")
                            .progress_chars("=> "),
                    );
                    bar.finish_with_message(format!("{:.1} s  {line}", m.seconds));
                } else {
                    eprintln!(
                        "epoch {}/{}  {line}  {:.2} s",
                        m.epoch + 1,
                        self.epochs,
                        m.seconds
                    );
                }
            }
        }
    }

    /// Leaves the screen clean when training ends: a bar cut short by Ctrl-C stays
    /// where it stopped, and what follows starts on a line of its own.
    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            if !bar.is_finished() {
                bar.abandon();
            }
            // indicatif leaves the cursor at the end of the bar's last drawing.
            eprintln!();
        }
    }
}
