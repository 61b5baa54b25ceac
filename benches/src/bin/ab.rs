//! Interleaved A/B timing of artifacts compiled from one graph (e.g. before and after a
//! compiler change): each round runs a block of calls of every artifact, in turn, so drift on a noisy
//! machine lands on all of them alike; prints each one's median and its ratio to the first.

use anyhow::{Context, Result};
use clap::Parser;
use max_runtime::{npy, Device, InferenceSession};

#[derive(Parser)]
#[command(about = "Interleaved A/B timing of artifacts of the same graph")]
struct Args {
    /// The artifacts (.maxa; weights inside them).
    #[arg(required = true)]
    artifacts: Vec<String>,
    /// The entry's inputs, in order (.npy), shared by every artifact.
    #[arg(short, long)]
    input: Vec<String>,
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Rounds: each artifact runs one block of calls per round, in turn.
    #[arg(long, default_value_t = 20)]
    rounds: usize,
    /// Calls per block; the first of each block is untimed (it refills the caches the other
    /// artifacts evicted).
    #[arg(long, default_value_t = 50)]
    block: usize,
}

fn main() -> Result<()> {
    let a = Args::parse();
    let session = InferenceSession::with_threads(Device::Cpu, a.threads);
    let models = a.artifacts.iter().map(|p| session.load_path(p).with_context(|| p.clone())).collect::<Result<Vec<_>>>()?;
    let inputs = a.input.iter().map(npy::read_npy).collect::<Result<Vec<_>, _>>()?;
    let mut times = vec![Vec::with_capacity(a.rounds); models.len()];
    for _ in 0..a.rounds {
        for (m, t) in models.iter().zip(&mut times) {
            for call in 0..a.block.max(2) {
                let s = std::time::Instant::now();
                m.execute(&inputs)?;
                if call > 0 {
                    t.push(s.elapsed().as_secs_f64() * 1e3);
                }
            }
        }
    }
    let med = |t: &mut Vec<f64>| {
        t.sort_by(f64::total_cmp);
        (t[t.len() / 2], t[t.len() / 10])
    };
    let base = med(&mut times[0].clone()).0;
    for (p, t) in a.artifacts.iter().zip(&mut times) {
        let (m, p10) = med(t);
        println!("{p}: median {m:.3} ms, p10 {p10:.3} ms, {:.3}x of the first", m / base);
    }
    Ok(())
}
