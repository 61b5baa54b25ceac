//! custom_mlp: compile time, and execution latency at batch 1 and 64 next to NumPy
//! (OpenBLAS) and ONNX Runtime (same intra-op threads) in the same run. Each round times
//! every system in turn (median of `--runs` calls); the table has each system's best round
//! (see [`max_benches::Best`]) and the fraction of the FMA peak measured in the run that
//! its matmuls reach. Prints a table and writes JSON.
//!
//! Run with `bash benches/run.sh custom_mlp` (sets up the Python reference environment).

use anyhow::Result;
use clap::Parser;
use max_benches::{repo_root, run_reference, time_ms, Best};
use max_compiler::{CompileOptions, Emit, Target};
use max_runtime::{Artifact, Device, InferenceSession, Tensor};

#[derive(Parser)]
#[command(about = "custom_mlp: maxc compile time and latency vs NumPy")]
struct Args {
    /// Threads for both our runtime and OpenBLAS.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Timed runs per measurement.
    #[arg(long, default_value_t = 30)]
    runs: usize,
    /// Rounds: every system is timed once per round, in turn; each keeps its best round.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Python with NumPy for the reference.
    #[arg(long, default_value = "python3")]
    python: String,
    /// Where to write the JSON results.
    #[arg(long, default_value = "target/bench/custom_mlp.json")]
    json: String,
}

fn main() -> Result<()> {
    let a = Args::parse();
    let root = repo_root();
    let src = root.join("examples/custom_mlp.mlir");
    let opts = CompileOptions::new(Target::host());
    let mut bytes = Vec::new();
    let (compile_med, compile_min) = time_ms(0, 3, || {
        bytes = max_compiler::compile_file(&src, &opts, Emit::Artifact)?.bytes;
        Ok(())
    })?;
    let artifact = Artifact::from_bytes(&bytes)?;
    let session = InferenceSession::with_threads(Device::Cpu, a.threads);
    let t = std::time::Instant::now();
    let model = session.load(&artifact)?;
    let load_ms = t.elapsed().as_secs_f64() * 1e3;

    println!("custom_mlp (x[batch,768] @ W1[768,3072] -> relu -> @ W2[3072,768] -> softmax), {} thread(s); best of {} interleaved rounds, each the median of {} calls", a.threads, a.rounds.max(1), a.runs);
    println!("compile (maxc, whole pipeline): median {compile_med:.0} ms, min {compile_min:.0} ms; load {load_ms:.1} ms");
    // Matmuls near the FMA peak leave little to gain over a reference also near it: the
    // table gives both fractions of the peak measured in this run.
    let mut peak = max_benches::Peak::new(a.threads);
    let mut rows = Vec::new();
    let mut lines = Vec::new();
    for batch in [1usize, 64] {
        let x = Tensor::from_slice(&[batch, 768], &vec![0.1f32; batch * 768])?;
        let (mut ours, mut np_ms, mut ort_ms) = (Best::default(), Best::default(), Best::default());
        let (mut blas, mut ort_version) = (serde_json::Value::Null, serde_json::Value::Null);
        for _ in 0..a.rounds.max(1) {
            peak.sample();
            ours.add(
                time_ms(3, a.runs, || {
                    model.execute(std::slice::from_ref(&x))?;
                    Ok(())
                })?
                .0,
            );
            let reference = run_reference(
                &a.python,
                root.join("benches/reference/numpy_mlp.py").to_str().unwrap(),
                &[batch.to_string(), a.runs.to_string()],
                a.threads,
            )?;
            np_ms.add(reference["median_ms"].as_f64().unwrap_or(f64::NAN));
            blas = reference["blas"].clone();
            // ONNX Runtime with the same intra-op thread count (skipped if not installed).
            match run_reference(
                &a.python,
                root.join("benches/reference/ort_mlp.py").to_str().unwrap(),
                &[batch.to_string(), a.runs.to_string(), a.threads.to_string()],
                a.threads,
            ) {
                Ok(r) => {
                    ort_ms.add(r["median_ms"].as_f64().unwrap_or(f64::NAN));
                    ort_version = r["ort"].clone();
                }
                Err(e) => eprintln!("onnxruntime reference skipped: {e}"),
            }
        }
        let (ours, np_ms, ort_ms) = (ours.get(), np_ms.get(), ort_ms.get());
        let flops = 2.0 * 2.0 * batch as f64 * 768.0 * 3072.0;
        lines.push((batch, ours, np_ms, ort_ms, flops));
        rows.push(serde_json::json!({"batch": batch, "max_ms": ours, "numpy_ms": np_ms, "onnxruntime_ms": ort_ms,
            "speedup_vs_numpy": np_ms / ours, "speedup_vs_onnxruntime": ort_ms / ours,
            "max_gflops": flops / ours / 1e6, "onnxruntime_gflops": flops / ort_ms / 1e6,
            "numpy_blas": blas, "onnxruntime": ort_version}));
    }
    let (peak, peak_source) = peak.get();
    println!("peak {peak:.0} GFLOP/s ({peak_source}); GFLOP/s count the matmuls' FLOPs");
    println!(
        "{:>6} | {:>10} | {:>16} | {:>10} | {:>12} | {:>16} | {:>10} | {:>10}",
        "batch", "max (ms)", "max GFLOP/s", "numpy (ms)", "onnxrt (ms)", "onnxrt GFLOP/s", "vs numpy", "vs onnxrt"
    );
    for (batch, ours, np_ms, ort_ms, flops) in lines {
        let (gf, ort_gf) = (flops / ours / 1e6, flops / ort_ms / 1e6);
        println!(
            "{batch:>6} | {ours:>10.3} | {gf:>9.1} {:>5.0}% | {np_ms:>10.3} | {ort_ms:>12.3} | {ort_gf:>9.1} {:>5.0}% | {:>9.2}x | {:>9.2}x",
            100.0 * gf / peak,
            100.0 * ort_gf / peak,
            np_ms / ours,
            ort_ms / ours
        );
    }
    let json = serde_json::json!({"bench": "custom_mlp", "threads": a.threads, "rounds": a.rounds, "runs": a.runs, "compile_ms_median": compile_med, "load_ms": load_ms, "peak_gflops": peak, "rows": rows});
    if let Some(dir) = std::path::Path::new(&a.json).parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&a.json, serde_json::to_string_pretty(&json)?)?;
    println!("wrote {}", a.json);
    Ok(())
}
