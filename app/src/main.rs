//! The `diffscope` binary: the workbench, and the headless CLI subcommands.

mod cli;
mod stderr_log;

fn main() -> std::process::ExitCode {
    stderr_log::install();
    cli::run()
}
