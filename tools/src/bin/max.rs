//! `max`: the lean runtime CLI (no compiler linked unless built with the `compiler` feature).

use clap::{Parser, Subcommand};
use max_tools::{exit_on_error, generate, init_logging, inspect, run, serve, GenerateArgs, InspectArgs, RunArgs, ServeArgs};

#[derive(Parser)]
#[command(name = "max", version, about = "Run compiled .maxa artifacts", long_about = "Run and inspect .maxa artifacts produced by maxc, and generate text with compiled LLMs.\n\nExamples:\n  max run mlp.maxa --input x=x.npy --output y.npy\n  max inspect mlp.maxa\n  max generate --model smollm2.maxa --prompt \"The capital of France is\" --max-tokens 32\n  max generate --model SmolLM2-135M-Instruct.Q4_1.gguf --chat --prompt \"What is the capital of France?\"\n  max serve --model smollm2.maxa --port 8000")]
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
    /// Generate text with a compiled LLM (or a .gguf, compiled once and cached), streaming it.
    Generate(GenerateArgs),
    /// Serve models over an OpenAI-compatible HTTP API (chat, completions, models, streaming).
    Serve(ServeArgs),
}

fn main() -> std::process::ExitCode {
    init_logging();
    let cli = Cli::parse();
    exit_on_error("max", match cli.cmd {
        Cmd::Run(a) => run(&a),
        Cmd::Inspect(a) => inspect(&a),
        Cmd::Generate(a) => generate(&a),
        Cmd::Serve(a) => serve(&a),
    })
}
