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

/// Peak f32 FLOP/s of `threads` cores at its best seen: measured
/// ([`measured_peak_gflops`]) by each [`sample`](Peak::sample), once per round of a
/// benchmark, since on a VM the cores' clock and their placement (two vCPUs on one physical
/// core halve it) change during a run; else cores x /proc/cpuinfo's clock x 2 FMA units x
/// 8 lanes x 2.
pub struct Peak {
    threads: usize,
    best: Option<f64>,
}

impl Peak {
    /// No sample yet.
    pub fn new(threads: usize) -> Peak {
        Peak { threads, best: None }
    }

    /// Measures the peak now, keeping the best seen.
    pub fn sample(&mut self) {
        if let Some(p) = measured_peak_gflops(self.threads) {
            self.best = Some(self.best.map_or(p, |b| b.max(p)));
        }
    }

    /// The peak (GFLOP/s) and where it comes from.
    pub fn get(&self) -> (f64, &'static str) {
        if let Some(p) = self.best {
            return (p, "best measured FMA throughput");
        }
        let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let mhz = info.lines().find_map(|l| l.strip_prefix("cpu MHz").and_then(|r| r.trim_start_matches([' ', '\t', ':']).trim().parse::<f64>().ok())).unwrap_or(2500.0);
        (self.threads as f64 * mhz / 1e3 * 2.0 * 8.0 * 2.0, "from the nominal clock")
    }
}

/// Peak f32 FLOP/s of `threads` cores, measured: each thread runs 12 independent chains of
/// 8-lane FMAs with no memory traffic, so the figure is what the FMA units deliver at the
/// clock the cores run at now. (A VM's /proc/cpuinfo shows the base clock, while the cores
/// boost above it: a peak computed from it was exceeded by real matmuls.) The FMAs are
/// 8-lane (AVX2), as are the kernels'; an AVX-512 core can reach twice this. Best of 5 runs of
/// about 25 ms; `None` without AVX2 and FMA.
pub fn measured_peak_gflops(threads: usize) -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    {
        if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
            return None;
        }
        const ITERS: u64 = 5_000_000;
        let threads = threads.max(1);
        let mut best = f64::INFINITY;
        for _ in 0..5 {
            let t = Instant::now();
            std::thread::scope(|s| {
                for _ in 0..threads {
                    // SAFETY: AVX2 and FMA were detected above.
                    s.spawn(|| std::hint::black_box(unsafe { fma_chains(ITERS) }));
                }
            });
            best = best.min(t.elapsed().as_secs_f64());
        }
        Some(threads as f64 * ITERS as f64 * FMA_CHAINS as f64 * 16.0 / best / 1e9)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = threads;
        None
    }
}

/// Independent FMA chains of [`fma_chains`]: enough to cover the FMA latency on both units.
#[cfg(target_arch = "x86_64")]
const FMA_CHAINS: usize = 12;

/// `iters` rounds of [`FMA_CHAINS`] independent 8-lane FMAs; returns a sum of the chains so
/// that none is optimized away.
///
/// # Safety
/// The CPU must have AVX2 and FMA. (An `unsafe fn` rather than a safe one with
/// `#[target_feature]`, which needs Rust 1.86; the workspace builds with 1.85.)
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_chains(iters: u64) -> f32 {
    use std::arch::x86_64::{_mm256_add_ps, _mm256_fmadd_ps, _mm256_set1_ps, _mm256_setzero_ps, _mm256_storeu_ps};
    let (m, c) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
    let mut acc = [_mm256_set1_ps(1.0); FMA_CHAINS];
    for _ in 0..iters {
        for x in acc.iter_mut() {
            *x = _mm256_fmadd_ps(*x, m, c);
        }
    }
    let mut s = _mm256_setzero_ps();
    for x in acc {
        s = _mm256_add_ps(s, x);
    }
    let mut out = [0f32; 8];
    // `out` holds the 8 lanes written.
    _mm256_storeu_ps(out.as_mut_ptr(), s);
    out.iter().sum()
}
