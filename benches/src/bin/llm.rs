//! llm: SmolLM2 (GGUF, Q4_1 by default) compiled by maxc, next to llama.cpp (llama-cpp-python) on the
//! same file with the same threads, in the same run. Prints a table with ratios and writes
//! JSON.
//!
//! - prefill: one forward pass of a 512-token prompt into an empty KV cache;
//! - decode, batch 1 and batch 8: 64 greedy steps after a short prompt (8 sequences run
//!   together for batch 8), end-of-generation ignored; tokens per second over all sequences;
//! - peak RSS while loading and generating (the compile happens first and is not counted:
//!   the peak is reset after it), against the budget 1.5 x GGUF size + KV cache.
//!
//! Both sides take one warm-up and the median of 3. Run with `bash benches/run.sh llm`.

use anyhow::{Context, Result};
use clap::Parser;
use max_benches::{repo_root, run_reference};
use max_serve::{PipelineConfig, SamplingParams, LLM};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Parser)]
#[command(about = "llm: prefill and decode throughput and peak memory vs llama.cpp")]
struct Args {
    /// The GGUF model (default: $MAX_SMOLLM2_GGUF).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Threads for both our runtime and llama.cpp.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Python with llama-cpp-python for the reference.
    #[arg(long, default_value = "python3")]
    python: String,
    /// Where to write the JSON results.
    #[arg(long, default_value = "target/bench/llm.json")]
    json: String,
    /// Measure our side only, on this compiled artifact, and print JSON (the benchmark runs
    /// itself this way so that peak RSS covers loading and generating, not compiling).
    #[arg(long, hide = true)]
    measure: Option<PathBuf>,
}

const PREFILL: usize = 512;
const STEPS: usize = 64;
const TEXT: &str = "The history of the city begins with a small settlement on the banks of the river, \
where farmers and traders gathered to exchange grain, cloth and tools. Over the centuries the market grew \
into a town, the town built walls and a cathedral, and scholars came from distant countries to study at its \
famous university. ";

fn median_s(mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut v = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        f()?;
        v.push(t.elapsed().as_secs_f64());
    }
    v.sort_by(f64::total_cmp);
    Ok(v[1])
}

/// A `/proc/self/status` field in KiB.
fn status_kib(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines().find(|l| l.starts_with(field))?.split_whitespace().nth(1)?.parse().ok()
}

fn main() -> Result<()> {
    let a = Args::parse();
    let gguf = a.model.clone().or_else(|| std::env::var_os("MAX_SMOLLM2_GGUF").map(PathBuf::from)).context("pass --model or set MAX_SMOLLM2_GGUF")?;
    if let Some(path) = &a.measure {
        println!("{}", measure(path, a.threads)?);
        return Ok(());
    }
    let t = Instant::now();
    let artifact = max_serve::compile::compile_cached(&gguf, max_compiler::Target::host(), |out| eprintln!("llm: compiling {} into {}", gguf.display(), out.display()))?;
    let compile_s = t.elapsed().as_secs_f64();
    // Our side in a fresh process, so that its peak RSS is loading and generating only.
    let out = std::process::Command::new(std::env::current_exe()?)
        .args(["--measure", &artifact.to_string_lossy(), "--model", &gguf.to_string_lossy(), "--threads", &a.threads.to_string()])
        .output()?;
    anyhow::ensure!(out.status.success(), "measuring failed: {}", String::from_utf8_lossy(&out.stderr));
    let ours: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let f = |k: &str| ours[k].as_f64().unwrap_or(0.0);
    let (ours_prefill, b1, b8, peak_mib, load_s, max_length) = (f("prefill_tok_s"), f("decode_b1_tok_s"), f("decode_b8_tok_s"), f("peak_rss_mib"), f("load_s"), f("max_length") as usize);
    let cfg = max_serve::llama::LlamaConfig::from_gguf(&max_serve::gguf::GgufFile::open(&gguf)?)?;
    let kv_bytes = 2 * cfg.n_layers * 8 * max_length * cfg.n_kv_heads * cfg.head_dim * 2;
    let gguf_bytes = std::fs::metadata(&gguf)?.len() as usize;
    let budget_mib = (1.5 * gguf_bytes as f64 + kv_bytes as f64) / (1 << 20) as f64;

    // Peak RSS of the lean runtime CLI (no compiler linked: what a deployment runs), batch 8
    // of the 512-token prompt plus 64 tokens each, when run.sh has built it.
    let lean = repo_root().join("target/lean/release/max");
    let lean_peak = if lean.exists() {
        // As many whole repetitions of the text as fit in 512 tokens.
        let tok = max_serve::tokenizer::Tokenizer::from_gguf(&max_serve::gguf::GgufFile::open(&gguf)?)?;
        let per = tok.encode(TEXT, false)?.len().max(1);
        let text = TEXT.repeat((PREFILL / per).max(1));
        let mut cmd = std::process::Command::new(&lean);
        cmd.args(["generate", "--model", &artifact.to_string_lossy(), "--max-tokens", &STEPS.to_string(), "--temperature", "0", "--stats", "--json"]);
        cmd.args(["--max-length", &(PREFILL + STEPS + 64).to_string(), "--threads", &a.threads.to_string()]);
        for _ in 0..8 {
            cmd.args(["--prompt", &text]);
        }
        let out = cmd.output()?;
        let err = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            eprintln!("llm: lean max failed: {err}");
        }
        err.split("peak RSS ").nth(1).and_then(|r| r.split_whitespace().next()).and_then(|v| v.parse::<f64>().ok())
    } else {
        eprintln!("llm: {} not built (bash benches/run.sh llm builds it); no lean-runtime RSS", lean.display());
        None
    };
    let script = repo_root().join("benches/reference/llama_cpp_llm.py");
    let reference = run_reference(&a.python, &script.to_string_lossy(), &["--model".into(), gguf.display().to_string(), "--threads".into(), a.threads.to_string()], a.threads);
    let (r_prefill, r_b1, r_b8, r_rss) = match &reference {
        Ok(v) => (v["prefill_tok_s"].as_f64(), v["decode_b1_tok_s"].as_f64(), v["decode_b8_tok_s"].as_f64(), v["peak_rss_mib"].as_f64()),
        Err(e) => {
            eprintln!("llm: llama.cpp reference unavailable ({e:#}); source scripts/llama-cpp-env.sh");
            (None, None, None, None)
        }
    };
    let ratio = |ours: f64, theirs: Option<f64>| theirs.map(|t| format!("{:.2}x", ours / t)).unwrap_or_else(|| "-".into());
    let col = |v: Option<f64>| v.map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into());
    let name = gguf.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    println!("{name}, {} threads (compile {compile_s:.1} s or cached, load {load_s:.2} s)", a.threads);
    println!("{:<28} {:>12} {:>12} {:>10}", "", "max", "llama.cpp", "max/llama");
    println!("{:<28} {:>12.1} {:>12} {:>10}", "prefill 512 (tokens/s)", ours_prefill, col(r_prefill), ratio(ours_prefill, r_prefill));
    println!("{:<28} {:>12.1} {:>12} {:>10}", "decode batch 1 (tokens/s)", b1, col(r_b1), ratio(b1, r_b1));
    println!("{:<28} {:>12.1} {:>12} {:>10}", "decode batch 8 (tokens/s)", b8, col(r_b8), ratio(b8, r_b8));
    println!("{:<28} {:>12.1} {:>12} {:>10}", "peak RSS, bench (MiB)", peak_mib, col(r_rss), ratio(peak_mib, r_rss));
    if let Some(p) = lean_peak {
        println!("{:<28} {:>12.1} {:>12} {:>10}", "peak RSS, lean max (MiB)", p, col(r_rss), ratio(p, r_rss));
        println!("lean runtime (no compiler linked), batch 8 x (512 + 64) tokens: {p:.1} MiB = {:.2} of the budget below", p / budget_mib);
    }
    println!(
        "bench process (compiler linked) peak RSS {peak_mib:.1} MiB vs budget 1.5 x GGUF ({:.1} MiB) + KV cache ({:.1} MiB, 8 x {max_length} positions, f16) = {budget_mib:.1} MiB: {:.2} of budget",
        gguf_bytes as f64 / (1 << 20) as f64,
        kv_bytes as f64 / (1 << 20) as f64,
        peak_mib / budget_mib
    );
    let out = serde_json::json!({
        "threads": a.threads,
        "ours": ours,
        "llama_cpp": reference.as_ref().ok(),
        "rss_budget_mib": budget_mib,
        "lean_max_peak_rss_mib": lean_peak,
    });
    if let Some(dir) = std::path::Path::new(&a.json).parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&a.json, serde_json::to_string_pretty(&out)?)?;
    Ok(())
}

/// Our measurements on a compiled artifact, as JSON.
fn measure(artifact: &std::path::Path, threads: usize) -> Result<serde_json::Value> {
    let t = Instant::now();
    let llm = LLM::new(artifact, PipelineConfig { max_length: Some(PREFILL + STEPS + 64), max_batch_size: 8, threads: Some(threads), device: max_runtime::Device::Cpu })?;
    let load_s = t.elapsed().as_secs_f64();
    let loaded_mib = status_kib("VmRSS:").unwrap_or(0) as f64 / 1024.0;
    let long: Vec<u32> = llm.encode_prompt(&TEXT.repeat(20))?.into_iter().take(PREFILL).collect();
    anyhow::ensure!(long.len() == PREFILL, "prompt text too short");
    let prefill_s = median_s(|| llm.next_token_logits(&long).map(|_| ()).map_err(Into::into))?;
    eprintln!("llm: RSS after load {loaded_mib:.1} MiB, after prefill {:.1} MiB", status_kib("VmRSS:").unwrap_or(0) as f64 / 1024.0);
    let short = llm.encode_prompt("The capital of France is")?;
    let params = |n| SamplingParams { max_tokens: n, ignore_eos: true, ..SamplingParams::greedy() };
    let decode_rate = |batch: usize| -> Result<f64> {
        let prompts = vec![short.clone(); batch];
        // Generating STEPS + 1 tokens is one prefill and STEPS decode steps; the prefill and
        // first token alone are timed separately and subtracted.
        let full = median_s(|| llm.generate_ids(prompts.clone(), &params(STEPS + 1), &mut |_, _| {}).map(|_| ()).map_err(Into::into))?;
        let first = median_s(|| llm.generate_ids(prompts.clone(), &params(1), &mut |_, _| {}).map(|_| ()).map_err(Into::into))?;
        Ok((batch * STEPS) as f64 / (full - first))
    };
    let (b1, b8) = (decode_rate(1)?, decode_rate(8)?);
    Ok(serde_json::json!({
        "prefill_tok_s": PREFILL as f64 / prefill_s,
        "decode_b1_tok_s": b1,
        "decode_b8_tok_s": b8,
        "peak_rss_mib": status_kib("VmHWM:").unwrap_or(0) as f64 / 1024.0,
        "load_s": load_s,
        "max_length": llm.max_length(),
    }))
}
