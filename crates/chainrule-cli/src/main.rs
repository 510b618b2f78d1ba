//! `chainrule`: the command-line tool.
//!
//! Commands: `grad` and `train`, exactly as `spec/interchange.md` defines them.
//! Every failure prints one line on stderr naming the file or field at fault and
//! exits non-zero; outputs are written atomically.

mod contract;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Neural networks whose backpropagation you can see.
#[derive(Parser, Debug)]
#[command(name = "chainrule", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Gradient of a loss with respect to every parameter, over all of X as one batch.
    Grad {
        /// Model JSON.
        #[arg(long)]
        model: PathBuf,
        /// Parameters (safetensors, F32 or F64).
        #[arg(long)]
        params: PathBuf,
        /// Inputs, [N, in] (.npy, float32 or float64).
        #[arg(long)]
        x: PathBuf,
        /// Targets (.npy).
        #[arg(long)]
        y: PathBuf,
        /// Loss: mse, sse, half_sse, mae, huber, bce, bce_logits, cross_entropy.
        #[arg(long)]
        loss: String,
        /// Where to write the gradients (safetensors, same names as the parameters).
        #[arg(long)]
        out: PathBuf,
    },
    /// Train from given parameters as a training config says.
    Train {
        /// Model JSON.
        #[arg(long)]
        model: PathBuf,
        /// Starting parameters (safetensors).
        #[arg(long)]
        params: PathBuf,
        /// Inputs (.npy).
        #[arg(long)]
        x: PathBuf,
        /// Targets (.npy).
        #[arg(long)]
        y: PathBuf,
        /// Training config JSON.
        #[arg(long)]
        config: PathBuf,
        /// Where to write the trained parameters (safetensors).
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
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
        Command::Grad {
            model,
            params,
            x,
            y,
            loss,
            out,
        } => contract::grad(
            &contract::Files {
                model,
                params,
                x,
                y,
            },
            &loss,
            &out,
        ),
        Command::Train {
            model,
            params,
            x,
            y,
            config,
            out,
        } => contract::train(
            &contract::Files {
                model,
                params,
                x,
                y,
            },
            &config,
            &out,
        ),
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
