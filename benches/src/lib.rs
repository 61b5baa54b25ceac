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

/// The best (lowest) of per-round figures: the benchmarks measure every system once per
/// round, in turn, for several rounds, and keep each system's best round. On a noisy
/// machine, a burst of interference then slows one round of one system instead of
/// deciding a ratio.
#[derive(Debug, Clone, Copy)]
pub struct Best(pub f64);

impl Default for Best {
    fn default() -> Self {
        Best(f64::INFINITY)
    }
}

impl Best {
    /// Keeps `v` if it is lower (NaN, a missing reference, is ignored).
    pub fn add(&mut self, v: f64) {
        if v < self.0 {
            self.0 = v;
        }
    }
    /// The best figure, or NaN when there was none.
    pub fn get(&self) -> f64 {
        if self.0.is_finite() {
            self.0
        } else {
            f64::NAN
        }
    }
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
