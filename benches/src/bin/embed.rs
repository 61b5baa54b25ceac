//! embed: sentence embeddings with all-MiniLM-L6-v2 (a BERT directory compiled by maxc)
//! next to ONNX Runtime running the same forward pass (`benches/reference/ort_bert.py`,
//! built from the same safetensors weights, same intra-op threads), in the same run. Token
//! batches of a short query and of a padded batch; each round times both systems in turn
//! (median of `--runs` calls) and the table has each one's best round. The embeddings of
//! the two systems are compared (worst cosine). Prints a table and writes JSON.
//!
//! Run with `bash benches/run.sh embed` (fetches the model, sets up the Python reference).

use anyhow::{Context, Result};
use clap::Parser;
use max_benches::{repo_root, run_reference, time_ms, Best};
use max_runtime::{npy, Artifact, Device, InferenceSession, Tensor};

#[derive(Parser)]
#[command(about = "embed: MiniLM sentence embeddings vs ONNX Runtime")]
struct Args {
    /// The sentence-transformers model directory (default: $MAX_MINILM_DIR).
    #[arg(long)]
    model: Option<std::path::PathBuf>,
    /// Threads for our runtime and ONNX Runtime's intra-op pool.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Timed runs per measurement.
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Rounds: both systems are timed once per round, in turn; each keeps its best round.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Python with onnxruntime for the reference.
    #[arg(long, default_value = "python3")]
    python: String,
    /// Where to write the JSON results.
    #[arg(long, default_value = "target/bench/embed.json")]
    json: String,
}

/// Deterministic token ids (no special meaning; both systems get the same) and a mask with
/// `pad` padded positions at the end of every other sequence.
fn batch(b: usize, t: usize, pad: usize) -> (Vec<i32>, Vec<f32>) {
    let mut ids = Vec::with_capacity(b * t);
    let mut mask = Vec::with_capacity(b * t);
    for i in 0..b {
        for j in 0..t {
            ids.push(1000 + ((i * 7919 + j * 104_729) % 28_000) as i32);
            mask.push(if i % 2 == 1 && j >= t - pad { 0.0 } else { 1.0 });
        }
    }
    (ids, mask)
}

fn main() -> Result<()> {
    let a = Args::parse();
    let root = repo_root();
    let dir = a.model.clone().or_else(|| std::env::var_os("MAX_MINILM_DIR").map(Into::into)).context("pass --model DIR or set MAX_MINILM_DIR (serve/tests/fetch_minilm.sh)")?;
    let t = std::time::Instant::now();
    let path = max_serve::compile::compile_cached(&dir, max_compiler::Target::host(), |out| eprintln!("embed: compiling {} into {}", dir.display(), out.display()))?;
    let compile_s = t.elapsed().as_secs_f64();
    let model = InferenceSession::with_threads(Device::Cpu, a.threads).load(&Artifact::open(&path)?)?;
    let tmp = tempfile::tempdir()?;
    println!("all-MiniLM-L6-v2 embeddings, {} thread(s) (compile {compile_s:.1} s or cached); best of {} interleaved rounds, each the median of {} calls", a.threads, a.rounds.max(1), a.runs);
    println!("{:>14} | {:>10} | {:>12} | {:>10} | {:>12} | {:>9}", "batch x tokens", "max (ms)", "max tok/s", "onnxrt (ms)", "worst cosine", "vs onnxrt");
    let mut rows = Vec::new();
    for (b, t, pad) in [(1usize, 16usize, 0usize), (8, 128, 28)] {
        let (ids, mask) = batch(b, t, pad);
        let positions: Vec<i32> = (0..t as i32).collect();
        let inputs = [Tensor::from_slice(&[b, t], &ids)?, Tensor::from_slice(&[t], &positions)?, Tensor::from_slice(&[b, t], &mask)?];
        let ours_out = model.execute(&inputs)?.remove(0).to_f32_vec();
        let (tok, msk, ref_out) = (tmp.path().join("tokens.npy"), tmp.path().join("mask.npy"), tmp.path().join("ref.npy"));
        npy::write_npy(&tok, &inputs[0])?;
        npy::write_npy(&msk, &inputs[2])?;
        let (mut ours, mut ort_ms, mut ort_version) = (Best::default(), Best::default(), serde_json::Value::Null);
        for _ in 0..a.rounds.max(1) {
            ours.add(time_ms(2, a.runs, || model.execute(&inputs).map(|_| ()).map_err(Into::into))?.0);
            let args = [dir.display().to_string(), tok.display().to_string(), msk.display().to_string(), a.runs.to_string(), a.threads.to_string(), ref_out.display().to_string()];
            match run_reference(&a.python, root.join("benches/reference/ort_bert.py").to_str().unwrap(), &args, a.threads) {
                Ok(r) => {
                    ort_ms.add(r["median_ms"].as_f64().unwrap_or(f64::NAN));
                    ort_version = r["ort"].clone();
                }
                Err(e) => eprintln!("onnxruntime reference skipped: {e}"),
            }
        }
        // Embeddings are unit vectors: the dot product is the cosine.
        let cosine = match npy::read_npy(&ref_out) {
            Ok(r) => {
                let want = r.to_f32_vec();
                ours_out.chunks(384).zip(want.chunks(384)).map(|(x, y)| x.iter().zip(y).map(|(p, q)| *p as f64 * *q as f64).sum::<f64>()).fold(1.0, f64::min)
            }
            Err(_) => f64::NAN,
        };
        let (ours, ort_ms) = (ours.get(), ort_ms.get());
        let real_tokens = mask.iter().filter(|m| **m > 0.0).count();
        println!(
            "{:>14} | {ours:>10.2} | {:>12.0} | {ort_ms:>11.2} | {cosine:>12.7} | {:>8.2}x",
            format!("{b} x {t}"),
            real_tokens as f64 / (ours / 1e3),
            ort_ms / ours
        );
        rows.push(serde_json::json!({"batch": b, "tokens": t, "padded_per_odd_row": pad, "max_ms": ours, "onnxruntime_ms": ort_ms,
            "speedup_vs_onnxruntime": ort_ms / ours, "worst_cosine": cosine, "onnxruntime": ort_version}));
    }
    let json = serde_json::json!({"bench": "embed", "threads": a.threads, "rounds": a.rounds, "runs": a.runs, "rows": rows});
    if let Some(parent) = std::path::Path::new(&a.json).parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&a.json, serde_json::to_string_pretty(&json)?)?;
    println!("wrote {}", a.json);
    Ok(())
}
