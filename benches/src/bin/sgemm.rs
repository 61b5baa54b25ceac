//! sgemm: C[n,n] = A[n,n] @ B[n,n] in f32 at n = 256, 512, 1024, 2048, next to NumPy
//! (OpenBLAS) in the same run, with the fraction of this CPU's peak FLOP/s.
//!
//! Two of our variants: B a weight (packed at compile time, the inference case) and B a
//! plain input (both operands given at run time, as with NumPy). Each round times every
//! system in turn; the table has each system's best round (see [`max_benches::Best`]).

use anyhow::Result;
use clap::Parser;
use max_benches::{repo_root, run_reference, time_ms, Best};
use max_compiler::{CompileOptions, DType, Emit, Target, WeightData};
use max_runtime::{Artifact, Device, InferenceSession, Tensor};

#[derive(Parser)]
#[command(about = "sgemm vs NumPy/OpenBLAS")]
struct Args {
    #[arg(long, default_value_t = 2)]
    threads: usize,
    #[arg(long, default_value = "256,512,1024,2048", value_delimiter = ',')]
    sizes: Vec<usize>,
    #[arg(long, default_value = "python3")]
    python: String,
    /// Rounds: every system is timed once per round, in turn; each keeps its best round.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    #[arg(long, default_value = "target/bench/sgemm.json")]
    json: String,
}

fn main() -> Result<()> {
    let a = Args::parse();
    let mut peak = max_benches::Peak::new(a.threads);
    let session = InferenceSession::with_threads(Device::Cpu, a.threads);
    // Times per size (ms): ours with B a weight, ours with B an input, NumPy's.
    let mut times: Vec<(usize, f64, f64, f64)> = Vec::new();
    for &n in &a.sizes {
        let src_w = format!(
            "func.func @sgemm(%a: tensor<{n}x{n}xf32> {{max.name = \"a\"}}) -> tensor<{n}x{n}xf32> {{\n  %b = \"max.weight\"() {{name = \"b\"}} : () -> tensor<{n}x{n}xf32>\n  %c = \"max.matmul\"(%a, %b) : (tensor<{n}x{n}xf32>, tensor<{n}x{n}xf32>) -> tensor<{n}x{n}xf32>\n  func.return %c : tensor<{n}x{n}xf32>\n}}\n"
        );
        let src_i = format!(
            "func.func @sgemm(%a: tensor<{n}x{n}xf32> {{max.name = \"a\"}}, %b: tensor<{n}x{n}xf32> {{max.name = \"b\"}}) -> tensor<{n}x{n}xf32> {{\n  %c = \"max.matmul\"(%a, %b) : (tensor<{n}x{n}xf32>, tensor<{n}x{n}xf32>) -> tensor<{n}x{n}xf32>\n  func.return %c : tensor<{n}x{n}xf32>\n}}\n"
        );
        let data: Vec<f32> = (0..n * n).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
        let mut opts = CompileOptions::new(Target::host());
        opts.weights.insert("b", WeightData { dtype: DType::F32, shape: vec![n as i64, n as i64], bytes: data.iter().flat_map(|v| v.to_le_bytes()).collect(), origin: "bench".into() });
        let mw = session.load(&Artifact::from_bytes(&max_compiler::compile_source(&src_w, "sgemm_w.mlir", &opts, Emit::Artifact)?.bytes)?)?;
        let mi = session.load(&Artifact::from_bytes(&max_compiler::compile_source(&src_i, "sgemm_i.mlir", &opts, Emit::Artifact)?.bytes)?)?;
        // Built once: the timed calls pass the same tensors, as NumPy's `a @ b` does.
        let inputs = [Tensor::from_slice(&[n, n], &data)?, Tensor::from_slice(&[n, n], &data)?];
        let runs = if n >= 1024 { 5 } else { 20 };
        let (mut tw, mut ti, mut tn) = (Best::default(), Best::default(), Best::default());
        for _ in 0..a.rounds.max(1) {
            peak.sample();
            tw.add(
                time_ms(1, runs, || {
                    mw.execute(&inputs[..1])?;
                    Ok(())
                })?
                .0,
            );
            ti.add(
                time_ms(1, runs, || {
                    mi.execute(&inputs)?;
                    Ok(())
                })?
                .0,
            );
            let r = run_reference(&a.python, repo_root().join("benches/reference/numpy_sgemm.py").to_str().unwrap(), &[n.to_string(), runs.to_string()], a.threads)?;
            tn.add(r["median_ms"].as_f64().unwrap_or(f64::NAN));
        }
        times.push((n, tw.get(), ti.get(), tn.get()));
        eprintln!("sgemm: {n} done");
    }
    // The table comes last: its percentages use the best peak seen in the whole run.
    peak.sample();
    let (peak, peak_source) = peak.get();
    println!("sgemm f32, {} thread(s); peak {peak:.0} GFLOP/s ({peak_source}); best of {} interleaved rounds", a.threads, a.rounds.max(1));
    println!("{:>6} | {:>16} | {:>16} | {:>14} | {:>9} | {:>9}", "n", "max B=weight", "max B=input", "numpy", "w/numpy", "in/numpy");
    let mut rows = Vec::new();
    for (n, tw, ti, tn) in times {
        let gf = |ms: f64| 2.0 * (n as f64).powi(3) / ms / 1e6;
        println!(
            "{n:>6} | {:>7.1} GF {:>4.0}% | {:>7.1} GF {:>4.0}% | {:>7.1} GF {:>3.0}% | {:>8.2}x | {:>8.2}x",
            gf(tw),
            100.0 * gf(tw) / peak,
            gf(ti),
            100.0 * gf(ti) / peak,
            gf(tn),
            100.0 * gf(tn) / peak,
            tn / tw,
            tn / ti
        );
        rows.push(serde_json::json!({"n": n, "max_weight_ms": tw, "max_input_ms": ti, "numpy_ms": tn,
            "max_weight_gflops": gf(tw), "max_input_gflops": gf(ti), "numpy_gflops": gf(tn), "peak_gflops": peak}));
    }
    if let Some(dir) = std::path::Path::new(&a.json).parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&a.json, serde_json::to_string_pretty(&serde_json::json!({"bench": "sgemm", "threads": a.threads, "rounds": a.rounds, "rows": rows}))?)?;
    println!("wrote {}", a.json);
    Ok(())
}
