//! `maxc`: the ahead-of-time graph compiler driver.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use max_compiler::mlir::MlirContext;
use max_compiler::{pipeline, CompileOptions, Emit, Target};
use max_tools::{exit_on_error, init_logging, inspect, run, InspectArgs, RunArgs};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(
    name = "maxc",
    version,
    about = "Compile max graphs (MLIR) into .maxa artifacts",
    long_about = "maxc compiles graphs written in the `max` MLIR dialect through linalg, bufferization and LLVM \
into a versioned .maxa artifact that the lean runtime (`max`, max-runtime) executes.\n\n\
Examples:\n  maxc compile examples/custom_mlp.mlir -o mlp.maxa\n  maxc run mlp.maxa --input x=x.npy --output y.npy\n  \
maxc compile graph.mlir --emit=linalg\n  maxc opt graph.mlir --pass-pipeline=lower-to-linalg,bufferize\n  maxc inspect mlp.maxa"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Compile a .mlir graph into an artifact, or stop at an IR stage with --emit.
    Compile(CompileArgs),
    /// Compile a model (a GGUF file, or a Hugging Face directory: Llama-family LLM or BERT
    /// embedding model) into one artifact: graph, weights (quantized blocks kept),
    /// tokenizer, chat template and configuration.
    CompileModel(CompileModelArgs),
    /// Run named compiler stages (or upstream MLIR passes) on a file and print the IR.
    Opt(OptArgs),
    /// Run an artifact on .npy inputs.
    Run(RunArgs),
    /// Show an artifact's version, target, entry signatures, kernels and sections.
    Inspect(InspectArgs),
}

/// `--emit` values with their help, from the compiler's own stage list.
fn emit_parser() -> impl clap::builder::TypedValueParser<Value = Emit> {
    use clap::builder::TypedValueParser;
    let values = Emit::ALL.iter().map(|(name, help, _)| clap::builder::PossibleValue::new(*name).help(*help));
    clap::builder::PossibleValuesParser::new(values).map(|s: String| Emit::from_name(&s).expect("clap only passes listed values"))
}

#[derive(clap::Args)]
struct CompileArgs {
    /// The graph (.mlir, `max` dialect).
    input: PathBuf,
    /// Output file (default: INPUT with .maxa; IR stages print to stdout).
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Stop after this stage.
    #[arg(long, value_parser = emit_parser(), default_value = "artifact")]
    emit: Emit,
    /// Code generation target: `host` (this CPU, all its features), `cpu=LEVEL` with
    /// LEVEL one of x86-64, x86-64-v2, x86-64-v3, x86-64-v4, or an NVIDIA GPU:
    /// `cuda:sm_80`, `cuda:sm_86`, `cuda:sm_89`, `cuda:sm_90` (PTX kernels; libdevice from
    /// $MAX_CUDA_TOOLKIT, see scripts/cuda-env.sh).
    #[arg(long, default_value = "host")]
    target: String,
    /// With a cuda target: let f32 matmuls run on the tensor cores as TF32 (about 10 bits
    /// of mantissa in the products, f32 accumulation).
    #[arg(long)]
    allow_tf32: bool,
    #[command(flatten)]
    sass: SassArg,
    /// Leave weight data out of the artifact: only names, dtypes and shapes are kept, and the
    /// runtime takes the data from a .safetensors file (`max run --weights FILE`) or
    /// generates it (`--random-weights SEED`, for shape-accurate benchmarks).
    #[arg(long)]
    external_weights: bool,
    /// A .safetensors file providing `max.weight` data by name (repeatable).
    #[arg(long = "weights", value_name = "FILE")]
    weights: Vec<PathBuf>,
    /// A directory of custom kernels: a kernels.toml declaring ops, with the native
    /// libraries and MLIR kernel files it names (repeatable).
    #[arg(long = "kernels", value_name = "DIR")]
    kernels: Vec<PathBuf>,
    /// One kernel per op (no dispatch-region fusion), for debugging and comparisons.
    #[arg(long)]
    no_fusion: bool,
    /// Write a Make-style depfile listing every file read.
    #[arg(long, value_name = "FILE")]
    depfile: Option<PathBuf>,
}

/// `--sass`, shared by `compile` and `compile-model`.
#[derive(clap::Args)]
struct SassArg {
    /// With a cuda target: whether each kernel module also carries SASS, machine code that
    /// NVIDIA's ptxas assembles for the chip, beside its PTX. A GPU of that chip then loads
    /// the artifact without compiling its PTX first (the driver's compile takes half a
    /// minute for an 8B LLM at its first load on a machine); other chips, and drivers that
    /// refuse the SASS, still use the PTX. `auto`: when ptxas is found in
    /// $MAX_CUDA_TOOLKIT/bin (scripts/cuda-env.sh) or on the PATH.
    #[arg(long, value_name = "WHEN", value_parser = ["auto", "always", "never"], default_value = "auto")]
    sass: String,
}

impl SassArg {
    /// Applies `--sass` to a cuda target (`auto`, the default, applies to any target).
    fn apply(&self, mut target: max_serve::compile::ModelTarget) -> Result<max_serve::compile::ModelTarget> {
        match &mut target {
            max_serve::compile::ModelTarget::Cuda(c) => c.sass = self.sass.parse()?,
            _ if self.sass != "auto" => bail!("--sass applies to cuda targets only"),
            _ => {}
        }
        Ok(target)
    }
}

#[derive(clap::Args)]
struct CompileModelArgs {
    /// The model: a GGUF file (.gguf; architecture llama) or a Hugging Face model directory
    /// (config.json, safetensors weights, tokenizer.json): a Llama-family causal LM
    /// (LlamaForCausalLM, MistralForCausalLM) or a BERT sentence-embedding model
    /// (sentence-transformers layout, e.g. all-MiniLM-L6-v2).
    model: PathBuf,
    /// Output artifact (default: MODEL with .maxa).
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Code generation target (see `maxc compile --help`): `host`, `cpu=LEVEL`, or
    /// `cuda:sm_80|sm_86|sm_89|sm_90` for an NVIDIA GPU (run it with `--device gpu:0`).
    #[arg(long, default_value = "host")]
    target: String,
    /// Write a Make-style depfile listing the model file (a directory's files).
    #[arg(long, value_name = "FILE")]
    depfile: Option<PathBuf>,
    #[command(flatten)]
    sass: SassArg,
}

#[derive(clap::Args)]
struct OptArgs {
    /// Input .mlir (max dialect, or any MLIR for upstream passes).
    input: PathBuf,
    /// Comma-separated stages: verify, graph-cse (fold repeated max ops), lower-to-linalg,
    /// bufferize, lower-to-loops, lower-to-llvm, or any upstream MLIR pass (canonicalize,
    /// cse, ...).
    #[arg(long = "pass-pipeline", value_name = "STAGES")]
    pass_pipeline: String,
    /// Output file (default: stdout).
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Print locations.
    #[arg(long)]
    debug_info: bool,
    /// Treat `// -----` lines as separators and process each chunk on its own (errors in one
    /// chunk are reported and the next chunk still runs; exit status 1 if any failed).
    #[arg(long)]
    split_input_file: bool,
}


fn write_out(path: Option<&Path>, bytes: &[u8]) -> Result<()> {
    match path {
        Some(p) if p != Path::new("-") => std::fs::write(p, bytes).with_context(|| format!("writing {}", p.display())),
        _ => {
            std::io::stdout().write_all(bytes)?;
            Ok(())
        }
    }
}

fn compile_model(a: &CompileModelArgs) -> Result<()> {
    let target = a.sass.apply(max_serve::compile::ModelTarget::parse(&a.target)?)?;
    let progress = indicatif::ProgressBar::new_spinner();
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        progress.set_message(format!("compiling {}", a.model.display()));
        progress.enable_steady_tick(std::time::Duration::from_millis(100));
    }
    let bytes = max_serve::compile::compile_model(&a.model, target);
    progress.finish_and_clear();
    let bytes = bytes?;
    let output = a.output.clone().unwrap_or_else(|| a.model.with_extension("maxa"));
    std::fs::write(&output, &bytes).with_context(|| format!("writing {}", output.display()))?;
    if let Some(dep) = &a.depfile {
        let esc = |p: &Path| p.display().to_string().replace(' ', "\\ ");
        let inputs = max_serve::compile::model_files(&a.model).with_context(|| format!("listing {}", a.model.display()))?;
        let inputs: Vec<String> = inputs.iter().map(|p| esc(p)).collect();
        std::fs::write(dep, format!("{}: {}\n", esc(&output), inputs.join(" "))).with_context(|| format!("writing {}", dep.display()))?;
    }
    Ok(())
}

fn compile(a: &CompileArgs) -> Result<()> {
    let target = a.sass.apply(max_serve::compile::ModelTarget::parse(&a.target)?)?;
    if a.allow_tf32 && !matches!(target, max_serve::compile::ModelTarget::Cuda(_)) {
        bail!("--allow-tf32 applies to cuda targets only");
    }
    let mut opts = target.options()?;
    if let Some(cuda) = &mut opts.cuda {
        cuda.allow_tf32 = a.allow_tf32;
    }
    opts.fusion = !a.no_fusion;
    opts.external_weights = a.external_weights;
    for d in &a.kernels {
        opts.kernels.add_dir(d)?;
    }
    for w in &a.weights {
        opts.weights.add_safetensors(w)?;
    }
    let emit = a.emit;
    if !matches!(emit, Emit::Artifact | Emit::Obj) {
        opts.weights.zeros_for_missing = true;
    }
    let progress = indicatif::ProgressBar::new_spinner();
    if emit == Emit::Artifact && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        progress.set_message(format!("compiling {}", a.input.display()));
        progress.enable_steady_tick(std::time::Duration::from_millis(100));
    }
    let out = max_compiler::compile_file(&a.input, &opts, emit);
    progress.finish_and_clear();
    let out = out?;
    let output = match (&a.output, emit) {
        (Some(p), _) => Some(p.clone()),
        (None, Emit::Artifact) => Some(a.input.with_extension("maxa")),
        (None, Emit::Obj) => Some(a.input.with_extension("o")),
        (None, _) => None,
    };
    write_out(output.as_deref(), &out.bytes)?;
    if let Some(dep) = &a.depfile {
        let Some(target) = &output else { bail!("--depfile needs -o FILE") };
        let esc = |p: &Path| p.display().to_string().replace(' ', "\\ ");
        let deps: Vec<String> = out.files_read.iter().map(|p| esc(p)).collect();
        std::fs::write(dep, format!("{}: {}\n", esc(target), deps.join(" "))).with_context(|| format!("writing {}", dep.display()))?;
    }
    Ok(())
}

/// The IR as `maxc opt` carries it between stages.
enum State {
    Graphs(Vec<max_dialects::Graph>),
    Mlir(String),
}

fn opt(a: &OptArgs) -> Result<()> {
    let source = std::fs::read_to_string(&a.input).with_context(|| format!("reading {}", a.input.display()))?;
    let file = a.input.display().to_string();
    let stages = pipeline::split_stages(&a.pass_pipeline);
    if stages.is_empty() {
        bail!("--pass-pipeline is empty; stages: {}", pipeline::STAGES.join(", "));
    }
    if !a.split_input_file {
        let text = opt_chunk(&source, &file, &stages, a.debug_info)?;
        return write_out(a.output.as_deref(), text.as_bytes());
    }
    // Each chunk keeps its original line numbers: earlier lines become blank lines.
    let mut outputs = Vec::new();
    let mut failed = 0;
    let mut line = 0;
    for chunk in source.split("\n// -----\n") {
        let padded = format!("{}{chunk}", "\n".repeat(line));
        line += chunk.matches('\n').count() + 2;
        match opt_chunk(&padded, &file, &stages, a.debug_info) {
            Ok(t) => outputs.push(t),
            Err(e) => {
                failed += 1;
                let msg = max_tools::error_text(&e);
                if msg.contains(": error: ") {
                    eprintln!("{msg}");
                } else {
                    eprintln!("maxc: error: {msg}");
                }
            }
        }
        eprintln!("// -----");
    }
    write_out(a.output.as_deref(), outputs.join("// -----\n").as_bytes())?;
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}

fn opt_chunk(source: &str, file: &str, stages: &[String], debug_info: bool) -> Result<String> {
    let ctx = MlirContext::new()?;
    // max-level stages (and any input holding max ops) start from the imported graph.
    let has_max = source.contains("\"max.") || matches!(stages.first().map(String::as_str), Some("verify" | "graph-cse" | "lower-to-linalg"));
    let mut state = if has_max {
        let module = ctx.parse(source, file)?;
        let mut graphs = max_compiler::import::import_module(&ctx, &module)?;
        // Shape inference is a prerequisite of every later stage.
        for g in &mut graphs {
            max_dialects::verify::verify(g)?;
        }
        State::Graphs(graphs)
    } else {
        State::Mlir(source.to_string())
    };
    for stage in stages {
        state = match (stage.as_str(), state) {
            ("verify", State::Graphs(g)) => State::Graphs(g),
            ("graph-cse", State::Graphs(mut g)) => {
                g.iter_mut().for_each(|g| {
                    max_compiler::graph_cse::eliminate(g);
                });
                State::Graphs(g)
            }
            ("lower-to-linalg", State::Graphs(g)) => {
                let mut opts = CompileOptions::new(Target::host());
                opts.weights.zeros_for_missing = true;
                let out = max_compiler::compile_graphs(&ctx, &g, &opts, Emit::Linalg)?;
                State::Mlir(String::from_utf8(out.bytes)?)
            }
            (s @ ("verify" | "graph-cse" | "lower-to-linalg"), State::Mlir(_)) => bail!("stage '{s}' needs max dialect input"),
            (s, State::Graphs(_)) => bail!("stage '{s}' runs on kernels; run lower-to-linalg first"),
            (s, State::Mlir(text)) => {
                let p = pipeline::mlir_pipeline(s).unwrap();
                let mut module = ctx.parse(&text, file)?;
                ctx.run_pipeline(&mut module, &format!("builtin.module({p})"))?;
                State::Mlir(max_compiler::mlir::print_module(&module, debug_info))
            }
        };
    }
    Ok(match state {
        State::Graphs(g) => g.iter().map(max_dialects::print::print_graph).collect::<Vec<_>>().join("\n"),
        State::Mlir(t) => t,
    })
}

fn main() -> std::process::ExitCode {
    init_logging();
    let cli = Cli::parse();
    exit_on_error("maxc", match cli.cmd {
        Cmd::Compile(a) => compile(&a),
        Cmd::CompileModel(a) => compile_model(&a),
        Cmd::Opt(a) => opt(&a),
        Cmd::Run(a) => run(&a),
        Cmd::Inspect(a) => inspect(&a),
    })
}
