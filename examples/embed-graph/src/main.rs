//! Runs a graph compiled at build time and embedded in the binary, with the lean runtime
//! alone, and checks it against a plain Rust computation. Exit status 1 on a mismatch.

use max_runtime::{Artifact, Device, InferenceSession, Tensor};

static GELU_MLP: &[u8] = include_bytes!(env!("GELU_MLP_MAXA"));

const W: [[f32; 3]; 4] = [[0.5, -1.0, 0.25], [1.5, 0.0, -0.5], [-2.0, 1.0, 0.75], [0.1, 0.2, 0.3]];
const B: [f32; 3] = [0.1, -0.2, 0.3];

/// erf by its Abramowitz-Stegun 7.1.26 approximation (|error| < 1.5e-7), enough for a check.
fn erf(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.3275911 * x.abs());
    let y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * (-x * x).exp();
    if x >= 0.0 { y } else { -y }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let artifact = Artifact::from_bytes(GELU_MLP)?;
    let model = InferenceSession::new(Device::Cpu).load(&artifact)?;
    let batch = 5;
    let x: Vec<f32> = (0..batch * 4).map(|i| (i as f32 - 10.0) / 7.0).collect();
    let y = model.execute(&[Tensor::from_slice(&[batch, 4], &x)?])?.remove(0);
    let got = y.to_vec::<f32>().ok_or("output is not f32")?;
    let mut worst = 0f64;
    for r in 0..batch {
        for j in 0..3 {
            let h: f64 = (0..4).map(|k| x[r * 4 + k] as f64 * W[k][j] as f64).sum::<f64>() + B[j] as f64;
            let want = 0.5 * h * (1.0 + erf(h / std::f64::consts::SQRT_2));
            worst = worst.max((got[r * 3 + j] as f64 - want).abs());
        }
    }
    println!("embedded artifact: {} bytes, output {:?}, max |error| {worst:.2e}", GELU_MLP.len(), y.shape());
    if worst > 1e-5 {
        eprintln!("mismatch against the reference");
        std::process::exit(1);
    }
    Ok(())
}
