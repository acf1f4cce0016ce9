//! Command-line interface. Each subcommand lives in its own module with its `Args` and `run`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod synth;

#[derive(Parser)]
#[command(
    name = "diffscope",
    version,
    about = "Look inside diffusion models: features, correspondence, PCA, segments"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate the procedural creatures dataset (keypoints, pairs) in SPair-71k's layout.
    Synth(synth::SynthArgs),
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let result: anyhow::Result<()> = match cli.command {
        Command::Synth(args) => synth::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
