//! `chainrule`: the command-line tool.
//!
//! `train` (the richer form, or the contract form with `--out`), `grad` (contract),
//! `eval`, `predict`, `summary`. Every failure prints one line on stderr naming the
//! file or field at fault and exits non-zero; outputs are written atomically.

mod bench;
mod config;
mod contract;
mod explain;
mod inspect;
mod playground;
mod plot;
mod run;
mod signals;

use clap::{Args, Parser, Subcommand};
use config::RunConfig;
use std::path::PathBuf;
use std::process::ExitCode;

/// mimalloc keeps freed blocks for reuse: training allocates and frees the same
/// tensor sizes every step, and the system allocator hands large ones back to the
/// kernel, paying page faults to get them again (docs/performance.md has the
/// figures).
/// Counted (see [`bench::Counting`]) so that `chainrule bench` can report the heap
/// allocations of a training step.
#[global_allocator]
static ALLOCATOR: bench::Counting<mimalloc::MiMalloc> = bench::Counting::new(mimalloc::MiMalloc);

/// Neural networks whose backpropagation you can see.
#[derive(Parser, Debug)]
#[command(name = "chainrule", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train a network. With no arguments: a small MLP on the built-in spiral data.
    /// With --model, --params, --x, --y, --config and --out: the interchange
    /// contract's form, which writes only the trained parameters.
    Train(Box<TrainArgs>),
    /// Gradient of a loss with respect to every parameter, over all of X as one batch.
    Grad {
        #[command(flatten)]
        files: contract::Files,
        /// Loss: mse, sse, half_sse, mae, huber, bce, bce_logits, cross_entropy.
        #[arg(long)]
        loss: String,
        /// Where to write the gradients (safetensors, same names as the parameters).
        #[arg(long)]
        out: PathBuf,
        /// Run the model in evaluation mode (batch norm's running statistics, no
        /// dropout) instead of training mode.
        #[arg(long)]
        eval: bool,
        /// The seed of dropout's masks in training mode.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Loss, accuracy, per-class precision and recall and a confusion matrix of a run
    /// on data (default: the run's own data source; MNIST's test files for mnist).
    Eval {
        /// The run folder.
        run: PathBuf,
        /// Data source: builtin:NAME, mnist:DIR, csv:FILE, npy:X,Y.
        #[arg(long)]
        data: Option<String>,
        /// Print the results as one JSON object.
        #[arg(long)]
        json: bool,
        /// Folder for the confusion matrix's heat map (created if missing; default:
        /// the run folder, when it is writable).
        #[arg(long)]
        out_dir: Option<PathBuf>,
        /// Which of the run's parameters: final (params.safetensors), best (the
        /// epoch with the lowest validation loss) or last (the last epoch's, when
        /// early stopping restored the best).
        #[arg(long, default_value = "final")]
        weights: inspect::Weights,
    },
    /// Predictions of a run for inputs in a .npy or .csv file (CSV to stdout by default).
    Predict {
        /// The run folder.
        run: PathBuf,
        /// Inputs: .npy [N, D] or .csv with a header and D numeric columns.
        #[arg(long)]
        x: PathBuf,
        /// Write to this .csv or .npy file instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Which of the run's parameters: final, best or last (as for eval).
        #[arg(long, default_value = "final")]
        weights: inspect::Weights,
    },
    /// The chain-rule derivation of ∂C/∂θ for a parameter element (or all of them),
    /// with every factor's number and the gradient-descent update.
    Explain(explain::ExplainArgs),
    /// Finite differences against backprop for every parameter tensor; on a failure,
    /// names the operation whose local derivative disagrees (exit status 1).
    Gradcheck(explain::GradcheckArgs),
    /// The computational graph of one forward and backward pass (SVG and DOT), each
    /// node with its operation, value and gradient.
    Graph(explain::GraphArgs),
    /// The network's output and loss as closed-form expressions of its parameters,
    /// and every partial derivative, simplified (text, LaTeX, sympy or JSON).
    Symbolic(explain::SymbolicArgs),
    /// Time the speed workloads (W1, W2: one MNIST epoch of two MLPs; W3: 100,000
    /// single-sample steps of the 2-2-1 network; W4: PyTorch's MNIST example CNN,
    /// seconds per epoch scaled from 100 batches): median, min and max over runs.
    Bench {
        /// The MNIST folder (for W1, W2 and W4).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Which workloads, e.g. w1,w3 (W4 takes about a minute a run).
        #[arg(long, value_delimiter = ',', default_value = "w1,w2,w3,w4")]
        workloads: Vec<String>,
        /// Runs per workload.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Threads for matrix products (0: one per core).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Print the timings as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Serve the browser playground (web/dist, built by web/build.sh) on
    /// 127.0.0.1 and print its address.
    Playground(playground::PlaygroundArgs),
    /// Layers, output shapes and parameter counts of a run or a model JSON.
    Summary {
        /// A run folder or a model JSON file.
        target: PathBuf,
    },
}

/// `chainrule train` flags. Flags override the config file.
#[derive(Args, Debug)]
struct TrainArgs {
    /// Config file (TOML, or JSON by extension); see examples/configs/.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Model JSON (replaces the config's layers).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Starting parameters (safetensors).
    #[arg(long)]
    params: Option<PathBuf>,
    /// Inputs .npy (with --y, replaces the config's data).
    #[arg(long)]
    x: Option<PathBuf>,
    /// Targets .npy.
    #[arg(long)]
    y: Option<PathBuf>,
    /// Contract form: write the trained parameters here and nothing else.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue a run from its checkpoint and optimizer state (raise --epochs).
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Data source: builtin:NAME (spiral, moons, circles, xor, quadratic), mnist:DIR, csv:FILE, npy:X,Y.
    #[arg(long)]
    data: Option<String>,
    /// CSV target column.
    #[arg(long)]
    target: Option<String>,
    /// Built-in data: rows to generate.
    #[arg(long)]
    samples: Option<usize>,
    /// Built-in data: Gaussian noise.
    #[arg(long, allow_negative_numbers = true)]
    noise: Option<f64>,
    /// classification or regression (CSV, npy).
    #[arg(long)]
    task: Option<String>,
    /// Layer sizes, e.g. 784,128,10.
    #[arg(long, value_delimiter = ',')]
    layers: Option<Vec<usize>>,
    /// Activation between layers: relu, leaky_relu, sigmoid, tanh, identity.
    #[arg(long)]
    activation: Option<String>,
    /// Initializer: pytorch, xavier_uniform, xavier_normal, he_uniform, he_normal.
    #[arg(long)]
    init: Option<String>,
    /// Loss name.
    #[arg(long)]
    loss: Option<String>,
    /// Optimizer type (sgd, adam, adamw, rmsprop, adagrad, adadelta); the flags below
    /// and the config set its other settings.
    #[arg(long)]
    optimizer: Option<String>,
    /// Learning rate.
    #[arg(long, allow_negative_numbers = true)]
    lr: Option<f64>,
    /// Momentum (sgd, rmsprop).
    #[arg(long, allow_negative_numbers = true)]
    momentum: Option<f64>,
    /// Nesterov momentum (sgd, with --momentum).
    #[arg(long)]
    nesterov: bool,
    /// Adam's decay rates of the first and second moments, e.g. 0.9,0.999.
    #[arg(
        long,
        value_delimiter = ',',
        num_args = 1,
        allow_negative_numbers = true
    )]
    betas: Option<Vec<f64>>,
    /// Weight decay (L2 penalty; decoupled for adamw).
    #[arg(long, allow_negative_numbers = true)]
    weight_decay: Option<f64>,
    /// Learning-rate schedule: TYPE or TYPE:KEY=VALUE,… e.g. cosine:t_max=50,
    /// step:step_size=10,gamma=0.5, exponential:gamma=0.95, linear_warmup, constant.
    #[arg(long)]
    schedule: Option<String>,
    /// Clip the gradients to this global norm.
    #[arg(long, allow_negative_numbers = true)]
    clip_grad_norm: Option<f64>,
    /// Drop a last batch smaller than --batch-size.
    #[arg(long)]
    drop_last: bool,
    /// Keep the order of the training rows (no reshuffle each epoch).
    #[arg(long)]
    no_shuffle: bool,
    /// Skip a step whose loss or gradient is not finite instead of stopping.
    #[arg(long)]
    skip_nonfinite: bool,
    /// Epochs.
    #[arg(long)]
    epochs: Option<usize>,
    /// Rows per batch.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Fraction held out for validation.
    #[arg(long, allow_negative_numbers = true)]
    validation_split: Option<f64>,
    /// Early stopping patience (epochs).
    #[arg(long)]
    patience: Option<usize>,
    /// Feature scaling: none, standard, minmax.
    #[arg(long)]
    scale: Option<String>,
    /// Seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Threads for matrix products (0: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Run folder name.
    #[arg(long)]
    name: Option<String>,
    /// Folder for run folders (default runs).
    #[arg(long)]
    runs_dir: Option<String>,
    /// Save the checkpoint every N epochs (default 1), besides at the end and on
    /// Ctrl-C: a crash loses at most N epochs.
    #[arg(long, value_name = "N")]
    checkpoint_every: Option<usize>,
    /// No progress and no summary: only the run folder's path.
    #[arg(long)]
    quiet: bool,
    /// Print the results as one JSON object on stdout, with the history of every
    /// epoch (and no progress).
    #[arg(long)]
    json: bool,
    /// After training, audit the gradient flow (zero or non-finite gradients, dead
    /// ReLU units, vanishing or exploding layers) and write audit.json.
    #[arg(long)]
    audit: bool,
}

impl TrainArgs {
    /// The flags as a config layer over the file.
    fn overrides(&self, base_optimizer: Option<&serde_json::Value>) -> anyhow::Result<RunConfig> {
        let optimizer_flags = self.lr.is_some()
            || self.momentum.is_some()
            || self.nesterov
            || self.betas.is_some()
            || self.weight_decay.is_some();
        let optimizer = if self.optimizer.is_some() || optimizer_flags {
            let mut table = match (&self.optimizer, base_optimizer) {
                (Some(kind), Some(base))
                    if base.get("type").and_then(|t| t.as_str()) == Some(kind) =>
                {
                    base.clone()
                }
                (Some(kind), _) => serde_json::json!({ "type": kind }),
                (None, Some(base)) => base.clone(),
                (None, None) => serde_json::json!({ "type": "adam" }),
            };
            if let Some(lr) = self.lr {
                table["lr"] = lr.into();
            }
            if let Some(momentum) = self.momentum {
                table["momentum"] = momentum.into();
            }
            if self.nesterov {
                table["nesterov"] = true.into();
            }
            if let Some(betas) = &self.betas {
                if betas.len() != 2 {
                    anyhow::bail!("--betas: two numbers, e.g. 0.9,0.999 (got {})", betas.len());
                }
                table["betas"] = serde_json::json!(betas);
            }
            if let Some(weight_decay) = self.weight_decay {
                table["weight_decay"] = weight_decay.into();
            }
            Some(table)
        } else {
            None
        };
        let data = match (&self.x, &self.y) {
            (Some(x), Some(y)) => Some(format!("npy:{},{}", x.display(), y.display())),
            _ => self.data.clone(),
        };
        let schedule = self.schedule.as_deref().map(schedule_table).transpose()?;
        Ok(RunConfig {
            data,
            schedule,
            clip_grad_norm: self.clip_grad_norm,
            drop_last: self.drop_last.then_some(true),
            shuffle: self.no_shuffle.then_some(false),
            skip_nonfinite: self.skip_nonfinite.then_some(true),
            target: self.target.clone(),
            task: self.task.clone(),
            samples: self.samples,
            noise: self.noise,
            layers: self.layers.clone(),
            activation: self.activation.clone(),
            init: self.init.clone(),
            loss: self.loss.clone(),
            optimizer,
            epochs: self.epochs,
            batch_size: self.batch_size,
            validation_split: self.validation_split,
            patience: self.patience,
            scale: self.scale.clone(),
            seed: self.seed,
            threads: self.threads,
            name: self.name.clone(),
            runs_dir: self.runs_dir.clone(),
            checkpoint_every: self.checkpoint_every,
            ..RunConfig::default()
        })
    }
}

/// `--schedule TYPE[:KEY=VALUE,…]` as the config's schedule table (numbers as
/// numbers; the library checks the names and values).
fn schedule_table(text: &str) -> anyhow::Result<serde_json::Value> {
    let (kind, settings) = text.split_once(':').unwrap_or((text, ""));
    let mut table = serde_json::json!({ "type": kind });
    for pair in settings.split(',').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').ok_or_else(|| {
            anyhow::anyhow!("--schedule: {pair:?} must be KEY=VALUE, e.g. cosine:t_max=50")
        })?;
        let number: serde_json::Value = match value.parse::<u64>() {
            Ok(n) => n.into(),
            Err(_) => value
                .parse::<f64>()
                .map_err(|_| anyhow::anyhow!("--schedule: {key}: {value:?} is not a number"))?
                .into(),
        };
        table[key.trim()] = number;
    }
    chainrule::optim::Schedule::from_json(&table)
        .map_err(|e| anyhow::anyhow!("--schedule: {e}"))?;
    Ok(table)
}

fn train(args: TrainArgs) -> anyhow::Result<()> {
    if let Some(out) = &args.out {
        let (Some(model), Some(params), Some(x), Some(y), Some(config)) =
            (&args.model, &args.params, &args.x, &args.y, &args.config)
        else {
            anyhow::bail!(
                "--out (the contract form of train) needs --model, --params, --x, --y and --config"
            );
        };
        let files = contract::Files {
            model: model.clone(),
            params: params.clone(),
            x: x.clone(),
            y: y.clone(),
        };
        return contract::train(&files, config, out);
    }
    if args.x.is_some() != args.y.is_some() {
        anyhow::bail!("--x and --y go together");
    }
    let base_optimizer = match (&args.resume, &args.config) {
        (Some(run), _) => {
            RunConfig::read(&run::open_checkpoint(run)?.file("config.toml")?)?.optimizer
        }
        (None, Some(file)) => RunConfig::read(file)?.optimizer,
        _ => None,
    };
    let overrides = args.overrides(base_optimizer.as_ref())?;
    run::train(run::TrainRequest {
        config_file: args.config,
        overrides,
        model: args.model,
        params: args.params,
        resume: args.resume,
        quiet: args.quiet,
        json: args.json,
        audit: args.audit,
    })
}

fn main() -> ExitCode {
    // Like other Unix tools, stop quietly when the reader of our output goes away
    // (`chainrule explain ... | head`) instead of failing on a broken pipe.
    #[cfg(unix)]
    // SAFETY: restoring the default SIGPIPE disposition at startup, before any other
    // thread exists, is what every C program starts with (std has no safe form of
    // it). Tested by tests/interrupt.rs (a_reader_that_goes_away_ends_the_output_by_sigpipe).
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e)
            if !e.use_stderr()
                || e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand =>
        {
            e.exit()
        }
        Err(e) => {
            // clap explains over several lines; the contract wants one.
            let text = e.to_string();
            let message: Vec<&str> = text
                .lines()
                .map(str::trim)
                .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
                .filter(|l| !l.is_empty())
                .collect();
            eprintln!(
                "chainrule: {}",
                message.join(" ").trim_start_matches("error: ")
            );
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Train(args) => train(*args),
        Command::Grad {
            files,
            loss,
            out,
            eval,
            seed,
        } => contract::grad(&files, &loss, contract::GradMode { eval, seed }, &out),
        Command::Eval {
            run,
            data,
            json,
            out_dir,
            weights,
        } => inspect::eval(&run, weights, data, json, out_dir.as_deref()),
        Command::Predict {
            run,
            x,
            out,
            weights,
        } => inspect::predict_cmd(&run, weights, &x, out.as_deref()),
        Command::Summary { target } => inspect::summary(&target),
        Command::Bench {
            data,
            workloads,
            runs,
            threads,
            json,
        } => bench::run(data.as_deref(), &workloads, runs, threads, json),
        Command::Explain(args) => explain::run(&args),
        Command::Gradcheck(args) => explain::gradcheck(&args),
        Command::Graph(args) => explain::graph(&args),
        Command::Symbolic(args) => explain::symbolic(&args),
        Command::Playground(args) => playground::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let line = format!("{e:#}").replace('\n', " ");
            eprintln!("chainrule: {line}");
            ExitCode::FAILURE
        }
    }
}
