//! `synthetic-llm`: compiles a Llama-family model of a named shape with no weights in the
//! artifact (`--external-weights`; the runtime generates them), for decode benchmarks of
//! models too large to ship, such as Llama-3.1-8B in bf16 or in Q4_K blocks on a GPU machine
//! (`gpu-check decode`).

use anyhow::{bail, Context, Result};
use clap::Parser;
use max_serve::compile::ModelTarget;
use max_serve::llama::{build_graph, LlamaConfig, LlamaWeights};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "synthetic-llm", about = "Compile a Llama-shaped model with generated (external) weights")]
struct Args {
    /// The shape: llama-3.1-8b, or smollm2-135m (small, for trying the tool).
    #[arg(long, default_value = "llama-3.1-8b")]
    preset: String,
    /// dtype of the projections, the head and the embedding table: bf16, f16 or f32, or a
    /// GGUF block format (q4_0, q4_1, q5_0, q5_1, q8_0, q4_k, q6_k) for all three, whose
    /// matmuls round their activations to 8 bits as a quantized model's do.
    #[arg(long, default_value = "bf16")]
    dtype: String,
    /// Target: cuda:sm_90 etc., or host.
    #[arg(long, default_value = "cuda:sm_90")]
    target: String,
    #[arg(short, long)]
    output: PathBuf,
}

fn preset(name: &str) -> Result<LlamaConfig> {
    let base = |n_layers, n_embd, n_heads, n_kv_heads, n_ff, vocab_size, rope_base| LlamaConfig {
        architecture: "llama".into(),
        name: Some(name.into()),
        n_layers,
        n_embd,
        n_heads,
        n_kv_heads,
        head_dim: n_embd / n_heads,
        n_ff,
        vocab_size,
        rope_base,
        rms_eps: 1e-5,
        context_length: 8192,
        rope_interleaved: false,
        tied_embeddings: false,
    };
    Ok(match name {
        "llama-3.1-8b" => base(32, 4096, 32, 8, 14336, 128256, 500000.0),
        "smollm2-135m" => base(30, 576, 9, 3, 1536, 49152, 100000.0),
        other => bail!("unknown preset {other:?} (llama-3.1-8b, smollm2-135m)"),
    })
}

fn main() -> Result<()> {
    let a = Args::parse();
    let cfg = preset(&a.preset)?;
    use max_compiler::QuantFormat;
    let weights = match a.dtype.as_str() {
        "bf16" => LlamaWeights::Shapes(max_compiler::DType::BF16),
        "f16" => LlamaWeights::Shapes(max_compiler::DType::F16),
        "f32" => LlamaWeights::Shapes(max_compiler::DType::F32),
        other => match QuantFormat::from_name(other) {
            Some(f) => LlamaWeights::QuantShapes(f),
            None => {
                let formats: Vec<&str> = QuantFormat::ALL.iter().map(|f| f.name()).collect();
                bail!("unknown dtype {other:?} (bf16, f16, f32, {})", formats.join(", "))
            }
        },
    };
    let graph = build_graph(weights, &cfg)?;
    let mut opts = ModelTarget::parse(&a.target)?.options()?;
    opts.external_weights = true;
    let bytes = max_compiler::graph_api::compile_graph_with(&graph, &opts).context("compiling")?;
    std::fs::write(&a.output, &bytes).with_context(|| format!("writing {}", a.output.display()))?;
    eprintln!("synthetic-llm: {} ({}, {} layers) -> {} ({} bytes)", a.preset, a.dtype, cfg.n_layers, a.output.display(), bytes.len());
    Ok(())
}
