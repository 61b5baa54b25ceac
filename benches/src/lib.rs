//! Shared helpers for the benchmarks: timing, reference-process invocation, tables.

use anyhow::{bail, Context, Result};
use std::process::Command;
use std::time::Instant;

/// Median and minimum of `n` timed runs (milliseconds) after `warmup` untimed ones.
pub fn time_ms(warmup: usize, n: usize, mut f: impl FnMut() -> Result<()>) -> Result<(f64, f64)> {
    for _ in 0..warmup {
        f()?;
    }
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f()?;
        v.push(t.elapsed().as_secs_f64() * 1e3);
    }
    v.sort_by(f64::total_cmp);
    Ok((v[v.len() / 2], v[0]))
}

/// Runs a reference script with `python`, returning its last stdout line parsed as JSON.
/// OpenBLAS gets `threads` threads; the core-type overrides some machines set (which slow
/// current OpenBLAS builds) are removed for this process only.
pub fn run_reference(python: &str, script: &str, args: &[String], threads: usize) -> Result<serde_json::Value> {
    let out = Command::new(python)
        .arg(script)
        .args(args)
        .env("OPENBLAS_NUM_THREADS", threads.to_string())
        .env("OMP_NUM_THREADS", threads.to_string())
        .env_remove("OPENBLAS_CORETYPE")
        .env_remove("OPENBLAS_L2_SIZE")
        .output()
        .with_context(|| format!("running {python} {script}"))?;
    if !out.status.success() {
        bail!("{script} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().context("reference printed nothing")?;
    Ok(serde_json::from_str(last)?)
}

/// The repository root (benchmarks read examples from it).
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}
