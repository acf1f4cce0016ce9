//! Command-line interface. Each subcommand lives in its own module with its `Args` and `run`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod extract;
mod feature_args;
mod gui;

#[derive(Parser)]
#[command(
    name = "diffscope",
    version,
    about = "Look inside diffusion models: features, correspondence, PCA, segments"
)]
struct Cli {
    /// Without a subcommand the workbench opens.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Extract feature maps of one image at timestep t from the chosen UNet taps.
    Extract(extract::ExtractArgs),
    /// Open the workbench (the default without a subcommand).
    Gui(gui::GuiArgs),
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let result: anyhow::Result<()> = match cli.command {
        Some(Command::Extract(args)) => extract::run(args),
        Some(Command::Gui(args)) => gui::run(args),
        None => gui::run(gui::GuiArgs::default()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
