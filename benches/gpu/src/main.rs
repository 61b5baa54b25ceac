//! `gpu-check`: what `benches/gpu/check.sh` runs on a GPU machine, using only the lean
//! runtime (no compiler on that machine).
//!
//! - `gpu-check cases DIR`: runs every recorded case (a GPU artifact with .npy inputs and
//!   expected outputs, written by the op tests with `MAX_GPU_CASES=DIR`) on the GPU and
//!   compares; prints one line per failure and a summary. Mutable inputs (KV caches) stay on
//!   the GPU as state; a run's `state` names their expected values after the call.
//! - `gpu-check time ARTIFACT --dim NAME=VALUE ...`: random inputs of the entry's
//!   signature (and random weights, for an artifact compiled with --external-weights), a
//!   warm-up, then the device time per call of its kernels (CUDA events).
//! - `gpu-check llm ARTIFACT DIR [--record] [--device D]`: greedy generations of a compiled
//!   LLM for a fixed set of prompts. `--record` (on the build machine, `--device cpu`)
//!   writes each prompt's tokens and first-step logits to DIR; without it the run on the
//!   GPU is compared with them (identical tokens, logits' relative error), then prefill and
//!   batch-1 decode are timed.
//! - `gpu-check decode ARTIFACT --context C --steps S`: an LLM compiled with external
//!   weights (`synthetic-llm`, e.g. Llama-3.1-8B in bf16) with generated weights: a prefill
//!   of C tokens, then S batch-1 decode steps timed, against the roofline of reading every
//!   weight once per token at the device's measured copy bandwidth.
//! - `gpu-check embed ARTIFACT DIR [--record] [--device D]`: the same for a compiled
//!   embedding model: a batch of texts' embeddings, recorded or compared by cosine.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use max_runtime::{npy, Artifact, DType, Device, InferenceSession, Model, Tensor};
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(name = "gpu-check", about = "GPU parity cases and kernel timings with the lean runtime")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// The GPU to use.
    #[arg(long, default_value_t = 0)]
    gpu: usize,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run recorded parity cases.
    Cases {
        /// A folder of case folders (each with g.maxa and case.json).
        dir: PathBuf,
    },
    /// Greedy generations of a compiled LLM: record them (tokens.json, logits<i>.npy), or
    /// compare with a recording.
    Llm {
        #[command(flatten)]
        run: Recording,
        /// Tokens generated per prompt.
        #[arg(long, default_value_t = 32)]
        max_tokens: usize,
    },
    /// Batch-1 decode of an LLM compiled with external weights, against the bandwidth roofline.
    Decode {
        artifact: PathBuf,
        /// Tokens prefilled before the timed steps (the context the steps attend to).
        #[arg(long, default_value_t = 512)]
        context: usize,
        /// Timed decode steps.
        #[arg(long, default_value_t = 64)]
        steps: usize,
        /// Seed of the generated weights.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Load an artifact on the GPU (with generated weights where it was compiled with
    /// external ones) and print how long that took and how its kernel modules were loaded:
    /// an artifact's first load on a machine is where the driver compiles PTX.
    Load {
        artifact: PathBuf,
        /// Seed of the generated weights.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Embeddings of a compiled embedding model: record them (embeddings.npy), or compare
    /// with a recording.
    Embed {
        #[command(flatten)]
        run: Recording,
        /// Timed batches after the compared one (0: compare only, e.g. on the PTX emulator).
        #[arg(long, default_value_t = 20)]
        reps: usize,
    },
    /// Time an artifact's kernels on random inputs.
    Time {
        artifact: PathBuf,
        /// A dynamic dim's value, NAME=VALUE (repeatable).
        #[arg(long = "dim", value_name = "NAME=VALUE")]
        dims: Vec<String>,
        /// Timed calls after 3 warm-up calls.
        #[arg(long, default_value_t = 20)]
        iters: usize,
        /// Floating-point operations per call, to print TFLOP/s.
        #[arg(long)]
        flops: Option<f64>,
        /// Bytes a call must move at least (weights read), to print GB/s.
        #[arg(long)]
        bytes: Option<f64>,
    },
}

/// A real model's run against a recording of its outputs.
#[derive(clap::Args)]
struct Recording {
    artifact: PathBuf,
    /// Where the recording is.
    dir: PathBuf,
    /// Write the recording instead of comparing with it.
    #[arg(long)]
    record: bool,
    /// Where to run: cpu or gpu:N (default: the GPU given by --gpu).
    #[arg(long)]
    device: Option<String>,
}

impl Recording {
    fn device(&self, gpu: usize) -> Result<Device> {
        Ok(match &self.device {
            Some(d) => Device::parse(d)?,
            None => Device::Gpu(gpu),
        })
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Cases { dir } => cases(&dir, cli.gpu),
        Cmd::Time { artifact, dims, iters, flops, bytes } => time(&artifact, &dims, iters, flops, bytes, cli.gpu),
        Cmd::Llm { run, max_tokens } => llm(&run.artifact, &run.dir, run.record, run.device(cli.gpu)?, max_tokens),
        Cmd::Decode { artifact, context, steps, seed } => decode(&artifact, context, steps, seed, cli.gpu),
        Cmd::Load { artifact, seed } => load(&artifact, seed, cli.gpu),
        Cmd::Embed { run, reps } => embed(&run.artifact, &run.dir, run.record, run.device(cli.gpu)?, reps),
    }
}

/// Worst errors of one comparison.
#[derive(Default)]
struct Errors {
    max_abs: f64,
    /// ‖got − want‖ / ‖want‖ (0 when want is all zeros).
    max_rel: f64,
    bad: usize,
}

fn compare(got: &Tensor, want: &Tensor, rtol: f64, atol: f64) -> Result<Errors> {
    if got.shape() != want.shape() || got.dtype() != want.dtype() {
        bail!("got {}{:?}, expected {}{:?}", got.dtype(), got.shape(), want.dtype(), want.shape());
    }
    let (g, w) = (values(got), values(want));
    let mut e = Errors::default();
    let (mut diff2, mut ref2) = (0.0, 0.0);
    for (a, b) in g.iter().zip(&w) {
        let d = (a - b).abs();
        // NaN never passes (it is not within any tolerance).
        if d.is_nan() || d > atol + rtol * b.abs() {
            e.bad += 1;
        }
        e.max_abs = e.max_abs.max(d);
        diff2 += d * d;
        ref2 += b * b;
    }
    e.max_rel = if ref2 > 0.0 { (diff2 / ref2).sqrt() } else { 0.0 };
    Ok(e)
}

fn values(t: &Tensor) -> Vec<f64> {
    let b = t.bytes();
    match t.dtype() {
        DType::I32 => b.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
        DType::I64 => b.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
        _ => t.to_f32_vec().into_iter().map(f64::from).collect(),
    }
}

fn cases(dir: &Path, gpu: usize) -> Result<()> {
    let session = InferenceSession::new(Device::Gpu(gpu));
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.join("case.json").exists()).collect();
    names.sort();
    let (mut passed, mut failed) = (0, 0);
    let mut worst_rel: f64 = 0.0;
    let t0 = std::time::Instant::now();
    for case in &names {
        match run_case(&session, case) {
            Ok(e) if e.bad == 0 => {
                passed += 1;
                worst_rel = worst_rel.max(e.max_rel);
            }
            Ok(e) => {
                failed += 1;
                println!("FAIL {}: {} value(s) outside tolerance, max abs err {:.3e}, ‖got−want‖/‖want‖ {:.3e}", case.display(), e.bad, e.max_abs, e.max_rel);
            }
            Err(err) => {
                failed += 1;
                println!("FAIL {}: {err:#}", case.display());
            }
        }
    }
    println!("cases: {passed} passed, {failed} failed of {} ({:.1} s); worst ‖got−want‖/‖want‖ among passes {worst_rel:.2e}", names.len(), t0.elapsed().as_secs_f64());
    println!("cases: {}", module_loads_line());
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}

fn run_case(session: &InferenceSession, case: &Path) -> Result<Errors> {
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(case.join("case.json"))?)?;
    let rtol = meta["rtol"].as_f64().unwrap_or(1e-5);
    let atol = meta["atol"].as_f64().unwrap_or(1e-6);
    let model = session.load(&Artifact::open(case.join("g.maxa"))?)?;
    let entry = model.entry().clone();
    let mut worst = Errors::default();
    for run in meta["runs"].as_array().context("case.json has no runs")? {
        // Read-only inputs, and mutable ones (a KV cache) as state resident on the GPU.
        let (mut inputs, mut state) = (Vec::new(), Vec::new());
        for sig in &entry.inputs {
            let file = run["inputs"][&sig.name].as_str().with_context(|| format!("no input '{}'", sig.name))?;
            let t = npy::read_npy(case.join(file))?;
            if sig.mutable {
                state.push(t);
            } else {
                inputs.push(t);
            }
        }
        let mut state = model.new_state(state)?;
        let mut check = |got: &Tensor, file: &serde_json::Value| -> Result<()> {
            let want = npy::read_npy(case.join(file.as_str().context("bad output")?))?;
            let e = compare(got, &want, rtol, atol)?;
            worst.bad += e.bad;
            worst.max_abs = worst.max_abs.max(e.max_abs);
            worst.max_rel = worst.max_rel.max(e.max_rel);
            Ok(())
        };
        // Three calls: eager, recorded into a CUDA graph (and replayed), replayed again.
        // (Cases with state write the same values each time, so every call agrees.)
        for _ in 0..3 {
            let outs = model.execute_stateful(&entry.name, &inputs, &mut state)?;
            for (k, file) in run["outputs"].as_array().context("no outputs")?.iter().enumerate() {
                check(&outs[k], file)?;
            }
            if let Some(want_state) = run.get("state").and_then(|s| s.as_object()) {
                let after = model.read_state(&state)?;
                let names: Vec<&str> = entry.inputs.iter().filter(|i| i.mutable).map(|i| i.name.as_str()).collect();
                for (name, file) in want_state {
                    let i = names.iter().position(|n| n == name).with_context(|| format!("no mutable input '{name}'"))?;
                    check(&after[i], file)?;
                }
            }
        }
    }
    Ok(worst)
}

/// A tensor of the runtime's deterministic pseudo-random values (as for generated weights).
fn random_tensor(dtype: DType, shape: &[usize], seed: u64, name: &str) -> Result<Tensor> {
    let bytes = max_runtime::weights::random_bytes(dtype, shape.iter().product(), seed, name);
    Ok(Tensor::from_bytes(dtype, shape, bytes.as_slice())?)
}

fn kernel_total(model: &Model) -> std::time::Duration {
    model.kernel_times().unwrap_or_default().iter().map(|k| k.2).sum()
}

fn time(path: &Path, dims: &[String], iters: usize, flops: Option<f64>, bytes: Option<f64>, gpu: usize) -> Result<()> {
    // Device time per dispatch is what the runtime's profiler records.
    std::env::set_var("MAX_PROFILE", "1");
    let mut artifact = Artifact::open(path)?;
    // Weights left out of the artifact (--external-weights) are generated here.
    if !artifact.external_weights().is_empty() {
        let t = std::time::Instant::now();
        artifact = artifact.with_weights(&max_runtime::WeightSource::Random { seed: 1 })?;
        eprintln!("{}: generated its external weights in {:.1} s", path.display(), t.elapsed().as_secs_f64());
    }
    let model = InferenceSession::new(Device::Gpu(gpu)).load(&artifact)?;
    let m = artifact.manifest();
    let mut syms: Vec<Option<i64>> = vec![None; m.symbols.len()];
    for d in dims {
        let (name, value) = d.split_once('=').with_context(|| format!("--dim '{d}' must be NAME=VALUE"))?;
        let i = m.symbols.iter().position(|s| s == name).with_context(|| format!("no dynamic dim '{name}' (dims: {})", m.symbols.join(", ")))?;
        syms[i] = Some(value.parse()?);
    }
    let entry = model.entry().clone();
    let mut inputs = Vec::new();
    for (k, sig) in entry.inputs.iter().enumerate() {
        let shape: Vec<usize> = sig.shape.iter().map(|d| d.eval(&syms).map(|v| v as usize)).collect::<Result<_, _>>().with_context(|| format!("input '{}' has a dim no --dim gives", sig.name))?;
        inputs.push(random_tensor(sig.dtype, &shape, k as u64 + 1, &sig.name)?);
    }
    for _ in 0..3 {
        model.execute(&inputs)?;
    }
    let before = kernel_total(&model);
    let before_each = model.kernel_times();
    let t0 = std::time::Instant::now();
    for _ in 0..iters {
        model.execute(&inputs)?;
    }
    let wall = t0.elapsed().as_secs_f64() / iters as f64;
    let per_call = (kernel_total(&model) - before).as_secs_f64() / iters as f64;
    // Which dispatch takes the time, where a call has several (custom_mlp's three).
    if let (Some(before), Some(after)) = (before_each, model.kernel_times()) {
        if after.len() > 1 {
            print_step_profile("call", &before, &after, iters);
        }
    }
    let mut rate = flops.map(|f| format!(", {:.1} TFLOP/s", f / per_call / 1e12)).unwrap_or_default();
    if let Some(b) = bytes {
        rate.push_str(&format!(", {:.0} GB/s", b / per_call / 1e9));
    }
    let shape = if dims.is_empty() { String::new() } else { format!(" [{}]", dims.join(" ")) };
    println!("{}{shape}: kernels {:.4} ms per call{rate} (call with transfers {:.3} ms)", path.display(), per_call * 1e3, wall * 1e3);
    // The same calls without the profiler: from the second call on, CUDA graph replays.
    drop(model);
    std::env::remove_var("MAX_PROFILE");
    let model = InferenceSession::new(Device::Gpu(gpu)).load(&artifact)?;
    for _ in 0..3 {
        model.execute(&inputs)?;
    }
    let t0 = std::time::Instant::now();
    for _ in 0..iters {
        model.execute(&inputs)?;
    }
    println!("{}{shape}: call with transfers {:.3} ms (CUDA graph replay)", path.display(), t0.elapsed().as_secs_f64() / iters as f64 * 1e3);
    Ok(())
}

/// Prompts of the LLM check: plain text, continued greedily.
const LLM_PROMPTS: &[&str] = &[
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a small village by the sea,",
    "The three primary colors are",
    "Water boils at a temperature of",
    "1, 2, 3, 4, 5,",
    "The quick brown fox",
    "In machine learning, a transformer is",
];

fn llm(artifact: &Path, dir: &Path, record: bool, device: Device, max_tokens: usize) -> Result<()> {
    use max_serve::{PipelineConfig, SamplingParams, LLM};
    let t0 = std::time::Instant::now();
    let config = PipelineConfig { max_length: Some(1024), max_batch_size: 1, threads: None, device };
    let model = LLM::new(artifact, config).with_context(|| format!("loading {}", artifact.display()))?;
    println!("llm: loaded {} on {device} in {:.2} s", artifact.display(), t0.elapsed().as_secs_f64());
    let params = SamplingParams { max_tokens, ..SamplingParams::greedy() };
    let mut runs = Vec::new();
    for p in LLM_PROMPTS {
        let ids = model.encode_prompt(p)?;
        let logits = model.next_token_logits(&ids)?;
        let g = model.generate_with(p, &params)?;
        runs.push((p, g.tokens, logits, g.text));
    }
    if record {
        std::fs::create_dir_all(dir)?;
        let mut list = Vec::new();
        for (i, (p, tokens, logits, text)) in runs.iter().enumerate() {
            npy::write_npy(dir.join(format!("logits{i}.npy")), &Tensor::from_slice(&[logits.len()], logits)?)?;
            list.push(serde_json::json!({"prompt": p, "tokens": tokens, "text": text}));
        }
        std::fs::write(dir.join("tokens.json"), serde_json::to_vec_pretty(&serde_json::json!({"device": device.to_string(), "max_tokens": max_tokens, "runs": list}))?)?;
        println!("llm: recorded {} prompts in {}", runs.len(), dir.display());
        return Ok(());
    }
    let want: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("tokens.json")).with_context(|| format!("reading {}/tokens.json", dir.display()))?)?;
    let mut identical = 0;
    let mut worst_rel: f64 = 0.0;
    for (i, (p, tokens, logits, text)) in runs.iter().enumerate() {
        let w: Vec<u32> = want["runs"][i]["tokens"].as_array().context("recording has fewer prompts")?.iter().map(|v| v.as_u64().unwrap_or(0) as u32).collect();
        let wl = npy::read_npy(dir.join(format!("logits{i}.npy")))?.to_f32_vec();
        let (d2, r2) = logits.iter().zip(&wl).fold((0.0f64, 0.0f64), |(d, r), (a, b)| (d + ((a - b) as f64).powi(2), r + (*b as f64).powi(2)));
        let rel = (d2 / r2.max(1e-30)).sqrt();
        worst_rel = worst_rel.max(rel);
        let same = tokens.iter().zip(&w).take_while(|(a, b)| a == b).count();
        if same == w.len() && tokens.len() == w.len() {
            identical += 1;
        }
        println!("llm: prompt {i} {p:?}: {same}/{} tokens as recorded, first-step logits ‖got−want‖/‖want‖ {rel:.2e}: {text:?}", w.len());
    }
    println!("llm parity: {identical}/{} prompts identical for {max_tokens} tokens; worst logits relative error {worst_rel:.2e}", runs.len());
    // Timings: a 512-token prefill, then 128 greedy decode steps at batch 1.
    let long: String = LLM_PROMPTS.iter().cycle().take(64).copied().collect::<Vec<_>>().join(" ");
    let mut ids = model.encode_prompt(&long)?;
    ids.truncate(512);
    model.next_token_logits(&ids)?;
    let t = std::time::Instant::now();
    model.next_token_logits(&ids)?;
    let prefill = t.elapsed().as_secs_f64();
    let steps = SamplingParams { max_tokens: 129, ignore_eos: true, ..SamplingParams::greedy() };
    model.generate_with(LLM_PROMPTS[0], &steps)?;
    let t = std::time::Instant::now();
    let g = model.generate_with(LLM_PROMPTS[0], &steps)?;
    let total = t.elapsed().as_secs_f64();
    println!(
        "llm timing on {device}: prefill {} tokens {:.2} ms ({:.0} tok/s); {} tokens generated at batch 1 in {:.1} ms ({:.1} tok/s with the prompt's prefill)",
        ids.len(),
        prefill * 1e3,
        ids.len() as f64 / prefill,
        g.tokens.len(),
        total * 1e3,
        g.tokens.len() as f64 / total
    );
    Ok(())
}

/// Embeds the LLM check's prompts and a long text in one padded batch; records the vectors
/// or compares them (cosine per input) with a recording.
fn embed(artifact: &Path, dir: &Path, record: bool, device: Device, reps: usize) -> Result<()> {
    use max_serve::{EmbedInput, EmbeddingModel};
    let model = InferenceSession::new(device).load(&Artifact::open(artifact)?)?;
    let model = EmbeddingModel::from_model(model)?;
    let mut texts: Vec<String> = LLM_PROMPTS.iter().map(|p| p.to_string()).collect();
    texts.push(LLM_PROMPTS.iter().cycle().take(20).copied().collect::<Vec<_>>().join(" "));
    let inputs: Vec<EmbedInput> = texts.iter().map(|t| EmbedInput::Text(t.clone())).collect();
    let got = model.embed(&inputs)?;
    let dim = model.dimensions();
    let flat: Vec<f32> = got.iter().flatten().copied().collect();
    if record {
        std::fs::create_dir_all(dir)?;
        npy::write_npy(dir.join("embeddings.npy"), &Tensor::from_slice(&[got.len(), dim], &flat)?)?;
        println!("embed: recorded {} embeddings on {device} in {}", got.len(), dir.display());
        return Ok(());
    }
    let want = npy::read_npy(dir.join("embeddings.npy"))?.to_f32_vec();
    let mut worst: f64 = 1.0;
    for (i, g) in got.iter().enumerate() {
        let w = &want[i * dim..(i + 1) * dim];
        let dot: f64 = g.iter().zip(w).map(|(a, b)| *a as f64 * *b as f64).sum();
        let (ng, nw) = (g.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt(), w.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt());
        worst = worst.min(dot / (ng * nw).max(1e-30));
    }
    if reps == 0 {
        println!("embed parity: {} inputs on {device}, worst cosine to the recording {worst:.7}", got.len());
        return Ok(());
    }
    let t = std::time::Instant::now();
    for _ in 0..reps {
        model.embed(&inputs)?;
    }
    let per = t.elapsed().as_secs_f64() / reps as f64;
    println!("embed parity: {} inputs on {device}, worst cosine to the recording {worst:.7}; a batch of {} takes {:.2} ms", got.len(), got.len(), per * 1e3);
    Ok(())
}

/// Device-to-device copy bandwidth (bytes read plus bytes written per second) of GPU `gpu`.
fn copy_bandwidth(gpu: usize) -> Result<f64> {
    let dev = max_runtime::cuda::CudaDevice::open(gpu)?;
    dev.bind()?;
    let bytes = 1usize << 30;
    let (a, b) = (dev.alloc(bytes)?, dev.alloc(bytes)?);
    dev.copy_device(b.ptr(), a.ptr(), bytes)?;
    let reps = 10;
    let ((), t) = dev.timed(|| {
        for _ in 0..reps {
            let _ = dev.copy_device(b.ptr(), a.ptr(), bytes);
        }
    })?;
    Ok(2.0 * (bytes * reps) as f64 / t.as_secs_f64())
}

/// The device time per decode step of each dispatch (`MAX_PROFILE`: eager launches, each
/// timed with events, so the step time printed next to it is not the graph replay's).
fn print_step_profile(what: &str, before: &[(String, u64, std::time::Duration)], after: &[(String, u64, std::time::Duration)], steps: usize) {
    let earlier: std::collections::HashMap<&str, (u64, std::time::Duration)> = before.iter().map(|(k, n, t)| (k.as_str(), (*n, *t))).collect();
    let mut rows: Vec<(&str, u64, f64)> = after
        .iter()
        .map(|(k, n, t)| {
            let (n0, t0) = earlier.get(k.as_str()).copied().unwrap_or_default();
            (k.as_str(), n - n0, (*t - t0).as_secs_f64())
        })
        .filter(|r| r.1 > 0)
        .collect();
    rows.sort_by(|a, b| b.2.total_cmp(&a.2));
    let total: f64 = rows.iter().map(|r| r.2).sum();
    let calls: u64 = rows.iter().map(|r| r.1).sum();
    println!("{what} profile: {:.0} dispatches and {:.3} ms of device time per step (MAX_PROFILE: eager, no graph)", calls as f64 / steps as f64, total * 1e3 / steps as f64);
    println!("{what}: {:>9} {:>8} {:>9} {:>6}  dispatch", "us/step", "calls", "us/call", "%");
    for (k, n, t) in rows.iter().take(40) {
        println!("{what}: {:>9.1} {:>8.1} {:>9.2} {:>5.1}%  {k}", t * 1e6 / steps as f64, *n as f64 / steps as f64, t * 1e6 / *n as f64, 100.0 * t / total.max(1e-12));
    }
}

/// How the runtime has loaded kernel modules so far: from the compiler's SASS, or from PTX
/// that the driver compiles (slow at an artifact's first load on a machine).
fn module_loads_line() -> String {
    let loads = max_runtime::cuda::module_loads();
    format!(
        "kernel modules loaded: {} from SASS, {} from PTX (compiled by the driver){}",
        loads.sass,
        loads.ptx,
        loads.sass_refused.map(|e| format!("; the driver refused the SASS: {e}")).unwrap_or_default()
    )
}

/// `path` loaded on GPU `gpu` with weights generated from `seed` (where it was compiled
/// with external ones), and the seconds that took.
fn load_generated(path: &Path, seed: u64, gpu: usize) -> Result<(Artifact, Model, f64)> {
    let t0 = std::time::Instant::now();
    let artifact = Artifact::open(path)?.with_weights(&max_runtime::WeightSource::Random { seed })?;
    let model = InferenceSession::new(Device::Gpu(gpu)).load(&artifact)?;
    Ok((artifact, model, t0.elapsed().as_secs_f64()))
}

/// Loads `path` on the GPU as `decode` does, timed.
fn load(path: &Path, seed: u64, gpu: usize) -> Result<()> {
    let (_, _, secs) = load_generated(path, seed, gpu)?;
    println!("load: {} with generated weights in {secs:.1} s; {}", path.display(), module_loads_line());
    Ok(())
}

/// Batch-1 decode of a forward-entry LLM artifact with generated weights.
fn decode(path: &Path, context: usize, steps: usize, seed: u64, gpu: usize) -> Result<()> {
    let bw = copy_bandwidth(gpu)?;
    println!("copy bandwidth: {:.0} GB/s (read + write)", bw / 1e9);
    let (artifact, model, secs) = load_generated(path, seed, gpu)?;
    println!("decode: loaded {} with generated weights in {secs:.1} s; {}", path.display(), module_loads_line());
    let m = artifact.manifest();
    let entry = m.entry("forward").context("no forward entry")?;
    // Weights read per token: every weight but the embedding table, of which one row.
    let mut bytes = 0u64;
    let mut embd_row = 0u64;
    for (i, s) in m.sections.iter().enumerate() {
        if !s.name.starts_with("weight:") {
            continue;
        }
        let size = artifact.section_bytes(i).len() as u64;
        if s.name == "weight:token_embd.weight" {
            embd_row = size;
        } else {
            bytes += size;
        }
    }
    let vocab = entry.outputs[0].shape.last().and_then(|d| d.as_const()).context("logits width")? as u64;
    bytes += embd_row / vocab.max(1);
    let cache = entry.inputs.iter().find(|i| i.mutable).context("no KV cache input")?;
    let dims: Vec<usize> = cache.shape.iter().enumerate().map(|(i, d)| d.as_const().map_or(if i == 1 { 1 } else { context + steps + 8 }, |v| v as usize)).collect();
    let mut state = model.new_state(vec![Tensor::zeros(cache.dtype, &dims), Tensor::zeros(cache.dtype, &dims)])?;
    let i32s = |v: &[i32]| Tensor::from_slice(&[v.len()], v);
    let tokens: Vec<i32> = (0..context as i32).map(|i| (i * 7919) % vocab as i32).collect();
    let positions: Vec<i32> = (0..context as i32).collect();
    // The prefill reported is the first call (eager, as a prompt of a new length runs); a
    // second one writes the same cache positions again while recording a CUDA graph, if
    // the graph fits the runtime's budget (item 18, before graphs shared temporaries:
    // slower, 31.6 against 24.0 ms for 512 tokens of the bf16 8B shape on an H200), and
    // under MAX_PROFILE gives the per-dispatch profile.
    let prefill_call = |state: &mut max_runtime::State| -> Result<f64> {
        let t = std::time::Instant::now();
        model.execute_stateful("forward", &[i32s(&tokens)?, i32s(&positions)?, i32s(&[0])?, i32s(&[0])?, i32s(&[context as i32 - 1])?], state)?;
        Ok(t.elapsed().as_secs_f64())
    };
    let prefill = prefill_call(&mut state)?;
    let before = model.kernel_times();
    let graphs_before = model.device_memory().map_or(0, |m| m.graphs);
    let again = prefill_call(&mut state)?;
    let again_what = if model.device_memory().map_or(0, |m| m.graphs) > graphs_before { "recording a CUDA graph" } else { "eager: no graph recorded" };
    if let (Some(before), Some(after)) = (before, model.kernel_times()) {
        print_step_profile("prefill", &before, &after, 1);
    }
    let step = |p: usize, state: &mut max_runtime::State| -> Result<()> {
        let p = p as i32;
        model.execute_stateful("forward", &[i32s(&[p % vocab as i32])?, i32s(&[p])?, i32s(&[p])?, i32s(&[0])?, i32s(&[0])?], state)?;
        Ok(())
    };
    // Warm-up: the second call at a shape records the CUDA graph the others replay.
    for p in context..context + 3 {
        step(p, &mut state)?;
    }
    let before = model.kernel_times();
    let t = std::time::Instant::now();
    for p in context + 3..context + 3 + steps {
        step(p, &mut state)?;
    }
    let per = t.elapsed().as_secs_f64() / steps as f64;
    if let (Some(before), Some(after)) = (before, model.kernel_times()) {
        print_step_profile("decode", &before, &after, steps);
    }
    let (programmatic, ordinary, refused) = max_runtime::cuda::launch_counts();
    println!(
        "decode: launches {programmatic} programmatic, {ordinary} ordinary (graph replays counted once){}",
        if refused { "; the driver refused a programmatic launch, so the rest were ordinary" } else { "" }
    );
    if let Some(m) = model.device_memory() {
        // The prefill's graph (recorded by the second prefill) is among them.
        println!(
            "decode: device memory beyond the weights: {:.1} MB pooled for eager calls, {} CUDA graph(s) holding {:.1} MB of temporaries",
            m.pooled_bytes as f64 / 1e6,
            m.graphs,
            m.graph_temp_bytes as f64 / 1e6
        );
    }
    let roofline = bytes as f64 / bw;
    println!(
        "decode: prefill {context} tokens {:.1} ms ({:.0} tok/s; again, {again_what}, {:.1} ms); batch-1 decode {:.3} ms/token ({:.1} tok/s) at context {context}; weights {:.2} GB/token read at {:.0} GB/s = {:.2} of the copy-bandwidth roofline ({:.3} ms/token)",
        prefill * 1e3,
        context as f64 / prefill,
        again * 1e3,
        per * 1e3,
        1.0 / per,
        bytes as f64 / 1e9,
        bytes as f64 / per / 1e9,
        roofline / per,
        roofline * 1e3
    );
    Ok(())
}
