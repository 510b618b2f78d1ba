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
        #[command(flatten)]
        files: contract::Files,
        /// Loss: mse, sse, half_sse, mae, huber, bce, bce_logits, cross_entropy.
        #[arg(long)]
        loss: String,
        /// Where to write the gradients (safetensors, same names as the parameters).
        #[arg(long)]
        out: PathBuf,
    },
    /// Train from given parameters as a training config says.
    Train {
        #[command(flatten)]
        files: contract::Files,
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
        Command::Grad { files, loss, out } => contract::grad(&files, &loss, &out),
        Command::Train { files, config, out } => contract::train(&files, &config, &out),
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
