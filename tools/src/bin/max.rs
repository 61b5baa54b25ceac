//! `max`: the lean runtime CLI (no compiler linked unless built with the `compiler` feature).

use clap::{Parser, Subcommand};
use max_tools::{exit_on_error, init_logging, inspect, run, InspectArgs, RunArgs};

#[derive(Parser)]
#[command(name = "max", version, about = "Run compiled .maxa artifacts", long_about = "Run and inspect .maxa artifacts produced by maxc.\n\nExamples:\n  max run mlp.maxa --input x=x.npy --output y.npy\n  max inspect mlp.maxa")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run an artifact on .npy inputs.
    Run(RunArgs),
    /// Show an artifact's version, target, entry signatures, kernels and sections.
    Inspect(InspectArgs),
}

fn main() -> std::process::ExitCode {
    init_logging();
    let cli = Cli::parse();
    exit_on_error("max", match cli.cmd {
        Cmd::Run(a) => run(&a),
        Cmd::Inspect(a) => inspect(&a),
    })
}
