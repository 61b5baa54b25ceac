//! Prometheus metrics: request and token counters, queue gauges, latency histograms.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// A histogram with fixed bucket bounds (seconds), in Prometheus' cumulative form.
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    /// Sum of observations, in microseconds.
    sum_us: AtomicU64,
    count: AtomicU64,
}

const LATENCY_BOUNDS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram { bounds, counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(), sum_us: AtomicU64::new(0), count: AtomicU64::new(0) }
    }

    /// Records one observation.
    pub fn observe(&self, seconds: f64) {
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            if seconds <= *b {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.sum_us.fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {}", c.load(Ordering::Relaxed));
        }
        let n = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {n}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_us.load(Ordering::Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {n}");
    }
}

/// Per model: `(name, waiting, running, prompt tokens, generated tokens)`.
pub type EngineGauges = (String, usize, usize, usize, usize);

/// The server's metrics.
pub struct Metrics {
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    pub time_to_first_token: Histogram,
    pub inter_token_latency: Histogram,
    pub e2e_latency: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            time_to_first_token: Histogram::new(LATENCY_BOUNDS),
            inter_token_latency: Histogram::new(LATENCY_BOUNDS),
            e2e_latency: Histogram::new(LATENCY_BOUNDS),
        }
    }
}

impl Metrics {
    /// The Prometheus text exposition, with the engines' gauges and token counters.
    pub fn render(&self, engines: &[EngineGauges]) -> String {
        let mut s = String::new();
        let counter = |s: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        counter(&mut s, "max_requests_total", "Completion requests received.", self.requests.load(Ordering::Relaxed));
        counter(&mut s, "max_request_errors_total", "Requests answered with an error.", self.errors.load(Ordering::Relaxed));
        let per_model = |s: &mut String, name: &str, kind: &str, help: &str, f: &dyn Fn(&EngineGauges) -> usize| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for e in engines {
                let _ = writeln!(s, "{name}{{model=\"{}\"}} {}", e.0, f(e));
            }
        };
        per_model(&mut s, "max_requests_waiting", "gauge", "Requests queued for a KV-cache row.", &|e| e.1);
        per_model(&mut s, "max_requests_running", "gauge", "Requests generating.", &|e| e.2);
        per_model(&mut s, "max_prompt_tokens_total", "counter", "Prompt tokens processed.", &|e| e.3);
        per_model(&mut s, "max_generation_tokens_total", "counter", "Tokens generated.", &|e| e.4);
        self.time_to_first_token.render(&mut s, "max_time_to_first_token_seconds", "Time from request to its first token.");
        self.inter_token_latency.render(&mut s, "max_inter_token_latency_seconds", "Time between a request's consecutive streamed pieces.");
        self.e2e_latency.render(&mut s, "max_e2e_request_latency_seconds", "Time from request to its last token.");
        s
    }
}
