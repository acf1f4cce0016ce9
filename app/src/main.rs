//! The `diffscope` binary: the workbench, and the headless CLI subcommands.

mod cli;

fn main() -> std::process::ExitCode {
    cli::run()
}
