//! The `diffscope` binary: the headless CLI (and, later, the workbench).

mod cli;

fn main() -> std::process::ExitCode {
    cli::run()
}
