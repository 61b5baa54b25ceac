//! Commands shared by `maxc` and `max`: running artifacts on `.npy` files, inspecting
//! artifacts, and generating text with a compiled LLM.

mod generate;
mod serve;
pub use generate::{generate, GenerateArgs};
pub use serve::{serve, ServeArgs};

use anyhow::{bail, Context, Result};
use max_runtime::{npy, Artifact, Device, InferenceSession, Tensor};
use std::path::PathBuf;

/// `run` arguments.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The compiled artifact (.maxa).
    pub artifact: PathBuf,
    /// An input as NAME=FILE.npy (repeat for each input); NAME is the entry's input name,
    /// or its position (0, 1, ...).
    #[arg(long = "input", short = 'i', value_name = "NAME=FILE.npy")]
    pub inputs: Vec<String>,
    /// Where to write outputs: FILE.npy (in output order) or NAME=FILE.npy. Outputs without
    /// a file are summarized on stdout. A mutable input's NAME (a KV cache, which the call
    /// updates in place) writes its value after the call.
    #[arg(long = "output", short = 'o', value_name = "FILE.npy")]
    pub outputs: Vec<String>,
    /// Entry point to run (default: the first).
    #[arg(long)]
    pub entry: Option<String>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Device to run on.
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    pub device: Device,
    /// Run N more times after a warm-up and report execution latency (median, min).
    #[arg(long, value_name = "N")]
    pub repeat: Option<usize>,
    /// The data of an artifact's external weights (compiled with --external-weights), by
    /// name.
    #[arg(long, value_name = "FILE.safetensors", conflicts_with = "random_weights")]
    pub weights: Option<PathBuf>,
    /// Generate an artifact's external weights (deterministic pseudo-random values from SEED).
    #[arg(long, value_name = "SEED")]
    pub random_weights: Option<u64>,
}

/// Parses a `--device` value (`cpu`, `gpu` or `gpu:N`).
pub fn parse_device(s: &str) -> Result<Device, String> {
    Device::parse(s).map_err(|e| e.to_string())
}

/// Loads the artifact, binds `.npy` inputs by name, runs, writes outputs.
pub fn run(args: &RunArgs) -> Result<()> {
    let mut artifact = Artifact::open(&args.artifact)?;
    if let Some(f) = &args.weights {
        artifact = artifact.with_weights(&max_runtime::WeightSource::Safetensors(f.clone()))?;
    } else if let Some(seed) = args.random_weights {
        artifact = artifact.with_weights(&max_runtime::WeightSource::Random { seed })?;
    }
    let session = match args.threads {
        Some(n) => InferenceSession::with_threads(args.device, n),
        None => InferenceSession::new(args.device),
    };
    let model = session.load(&artifact)?;
    let entry = match &args.entry {
        Some(e) => artifact.manifest().entry(e).with_context(|| {
            let names: Vec<&str> = artifact.manifest().entries.iter().map(|e| e.name.as_str()).collect();
            format!("no entry '{e}' in {} (entries: {})", args.artifact.display(), names.join(", "))
        })?,
        None => model.entry(),
    };
    let mut slots: Vec<Option<Tensor>> = entry.inputs.iter().map(|_| None).collect();
    for spec in &args.inputs {
        let (name, file) = spec.split_once('=').with_context(|| format!("--input '{spec}' must be NAME=FILE.npy"))?;
        let idx = entry
            .inputs
            .iter()
            .position(|i| i.name == name)
            .or_else(|| name.parse::<usize>().ok().filter(|i| *i < entry.inputs.len()))
            .with_context(|| {
                let names: Vec<&str> = entry.inputs.iter().map(|i| i.name.as_str()).collect();
                format!("entry '{}' has no input '{name}' (inputs: {})", entry.name, names.join(", "))
            })?;
        if slots[idx].is_some() {
            bail!("input '{name}' is given twice");
        }
        slots[idx] = Some(npy::read_npy(file)?);
    }
    let missing: Vec<&str> = entry.inputs.iter().zip(&slots).filter(|(_, s)| s.is_none()).map(|(i, _)| i.name.as_str()).collect();
    if !missing.is_empty() {
        bail!("missing input(s): {} (give each as --input NAME=FILE.npy)", missing.join(", "));
    }
    // Mutable inputs (a KV cache) are state: updated in place, readable as outputs by name.
    let (mut inputs, mut state_init) = (Vec::new(), Vec::new());
    for (sig, t) in entry.inputs.iter().zip(slots) {
        let t = t.expect("checked above");
        if sig.mutable {
            state_init.push(t);
        } else {
            inputs.push(t);
        }
    }
    let state_names: Vec<&str> = entry.inputs.iter().filter(|i| i.mutable).map(|i| i.name.as_str()).collect();
    let mut state = model.new_state(state_init)?;
    let name = entry.name.clone();
    let outs = model.execute_stateful(&name, &inputs, &mut state)?;
    if let Some(n) = args.repeat.filter(|n| *n > 0) {
        let mut times: Vec<f64> = (0..n)
            .map(|_| {
                let t = std::time::Instant::now();
                model.execute_stateful(&name, &inputs, &mut state).map(|_| t.elapsed().as_secs_f64() * 1e3)
            })
            .collect::<Result<_, _>>()?;
        times.sort_by(f64::total_cmp);
        eprintln!("{name}: {n} runs on {} thread(s): median {:.3} ms, min {:.3} ms", session.threads(), times[n / 2], times[0]);
    }
    let is_state = |o: &String| o.split_once('=').is_some_and(|(n, _)| state_names.contains(&n));
    let n_outputs = args.outputs.iter().filter(|o| !is_state(o)).count();
    if n_outputs > outs.len() {
        bail!("{n_outputs} --output files given but entry '{name}' has {} output(s)", outs.len());
    }
    let mut written = vec![false; outs.len()];
    let state_after = if args.outputs.iter().any(is_state) { model.read_state(&state)? } else { Vec::new() };
    for (k, spec) in args.outputs.iter().enumerate() {
        let (idx, file) = match spec.split_once('=') {
            Some((n, f)) if state_names.contains(&n) => {
                let i = state_names.iter().position(|s| *s == n).expect("checked");
                npy::write_npy(f, &state_after[i])?;
                continue;
            }
            Some((n, f)) => {
                let i = entry.outputs.iter().position(|o| o.name == n).or_else(|| n.parse().ok()).filter(|i| *i < outs.len());
                (i.with_context(|| format!("entry '{name}' has no output '{n}'"))?, f)
            }
            None => (k, spec.as_str()),
        };
        npy::write_npy(file, &outs[idx])?;
        written[idx] = true;
    }
    for (i, t) in outs.iter().enumerate() {
        if !written[i] {
            println!("{}: {}", entry.outputs[i].name, summarize(t));
        }
    }
    Ok(())
}

fn summarize(t: &Tensor) -> String {
    let v = t.to_f32_vec();
    let head: Vec<String> = v.iter().take(8).map(|x| format!("{x:.6}")).collect();
    format!("{}{:?} [{}{}]", t.dtype(), t.shape(), head.join(", "), if v.len() > 8 { ", ..." } else { "" })
}

fn human(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.2} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.2} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

/// `inspect` arguments.
#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// The artifact (.maxa).
    pub artifact: PathBuf,
    /// Print the raw JSON manifest instead.
    #[arg(long)]
    pub json: bool,
}

/// Prints what an artifact holds.
pub fn inspect(args: &InspectArgs) -> Result<()> {
    let a = Artifact::open(&args.artifact)?;
    let m = a.manifest();
    if args.json {
        println!("{}", serde_json::to_string_pretty(m)?);
        return Ok(());
    }
    let names = &m.symbols;
    let shape = |s: &max_runtime::artifact::TensorSig| {
        let d: Vec<String> = s.shape.iter().map(|d| d.display(names).to_string()).collect();
        format!("{} {}[{}]", s.name, s.dtype, d.join(", "))
    };
    println!("artifact:        {} ({})", args.artifact.display(), human(a.bytes().len() as u64));
    println!("format version:  {}", m.format_version);
    println!("compiler:        maxc {}", m.compiler_version);
    println!("target:          {}-{} cpu={} features=[{}]", m.target.arch, m.target.os, m.target.cpu, m.target.features.join(","));
    println!("dynamic dims:    {}", if names.is_empty() { "(none)".to_string() } else { names.join(", ") });
    for e in &m.entries {
        println!("entry {}:", e.name);
        for i in &e.inputs {
            println!("  input   {}{}", shape(i), if i.mutable { " (mutable)" } else { "" });
        }
        for o in &e.outputs {
            println!("  output  {}", shape(o));
        }
        println!("  buffers {}  dispatches {}", e.buffers.len(), e.dispatches.len());
        for d in &e.dispatches {
            println!("    {}  bindings={:?}  workgroups<={}", d.kernel, d.bindings, d.workgroups.display(names));
            if let Some(c) = &d.column_split {
                println!(
                    "      below {} rows per thread: {}  bindings={:?}  workgroups<={}, then {}  bindings={:?}  workgroups<={}",
                    c.below_rows_per_thread,
                    c.columns_kernel,
                    c.columns_bindings,
                    c.columns_workgroups.display(names),
                    c.finish_kernel,
                    c.finish_bindings,
                    c.rows.display(names)
                );
            }
        }
    }
    let kernels: usize = m.entries.iter().map(|e| e.dispatches.len()).sum();
    let weights: u64 = m.sections.iter().filter(|s| s.kind == max_runtime::artifact::SectionKind::Weight).map(|s| s.size).sum();
    println!("kernels:         {kernels}");
    println!("weights:         {} in {} section(s)", human(weights), m.sections.iter().filter(|s| s.kind == max_runtime::artifact::SectionKind::Weight).count());
    let external: Vec<(usize, String, max_runtime::DType, Vec<usize>)> = a.external_weights();
    if !external.is_empty() {
        let bytes: u64 = external.iter().map(|(i, ..)| m.sections[*i].size).sum();
        println!("external:        {} in {} weight(s), supplied at load (--weights FILE or --random-weights SEED)", human(bytes), external.len());
    }
    if !m.gpu_modules.is_empty() {
        println!("gpu modules:     {}", gpu_modules_summary(&m.gpu_modules));
    }
    println!("sections:");
    for (i, s) in m.sections.iter().enumerate() {
        println!("  #{i:<3} {:<40} {:<12} offset={:<10} size={:<12} crc32={:08x}", s.name, format!("{:?}", s.kind), s.offset, human(s.size), s.crc32);
    }
    Ok(())
}

/// `N: PTX for sm_90a (1), sm_90 (4); SASS for ...`: how many kernel modules target each chip.
fn gpu_modules_summary(modules: &[max_runtime::artifact::GpuModule]) -> String {
    let count = |chips: Vec<&str>| {
        let mut seen: Vec<(&str, usize)> = Vec::new();
        for c in chips {
            match seen.iter_mut().find(|(s, _)| *s == c) {
                Some((_, n)) => *n += 1,
                None => seen.push((c, 1)),
            }
        }
        seen.iter().map(|(c, n)| format!("{c} ({n})")).collect::<Vec<_>>().join(", ")
    };
    let sass: Vec<&str> = modules.iter().filter_map(|m| m.sass.as_deref()).collect();
    let sass = if sass.is_empty() { "no SASS (the driver compiles the PTX at a first load)".to_string() } else { format!("SASS for {}", count(sass)) };
    format!("{}: PTX for {}; {sass}", modules.len(), count(modules.iter().map(|m| m.ptx.as_str()).collect()))
}

/// Sets up `tracing` from `RUST_LOG` (default: warnings) on stderr, and restores SIGPIPE's
/// default action: Rust ignores it, which turns a closed pipe (`max inspect | head`) into a
/// panic in `println!` instead of the quiet exit command-line tools give.
pub fn init_logging() {
    // SAFETY: called first thing in main, before any thread starts; SIG_DFL is a valid action.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Colours only on a terminal: logs piped to a file or a test stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).try_init();
}

/// An error and its causes on one line, `outer: cause: ...`. Library errors often spell
/// their cause in their own message as well as exposing it as a source; a cause whose text
/// the line already holds is not repeated.
pub fn error_text(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg.push_str(": ");
            msg.push_str(&c);
        }
    }
    msg
}

/// Runs a CLI body, printing errors the way compilers do and exiting 1 on failure.
pub fn exit_on_error(prog: &str, r: Result<()>) -> std::process::ExitCode {
    match r {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let msg = error_text(&e);
            // Diagnostics already start with file:line:col.
            if msg.contains(": error: ") {
                eprintln!("{msg}");
            } else {
                eprintln!("{prog}: error: {msg}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}
