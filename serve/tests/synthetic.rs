//! Llama-shaped models declared without weights (`LlamaWeights::Shapes`), compiled with
//! external weights and run with generated ones: what the GPU check's Llama-3.1-8B decode
//! benchmark does, here at a tiny shape on the CPU (f32 and bf16 projections).

use max_compiler::DType;
use max_runtime::{Artifact, Device, InferenceSession, Tensor, WeightSource};
use max_serve::compile::ModelTarget;
use max_serve::llama::{build_graph, LlamaConfig, LlamaWeights};

fn tiny() -> LlamaConfig {
    LlamaConfig {
        architecture: "llama".into(),
        name: None,
        n_layers: 2,
        n_embd: 64,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 16,
        n_ff: 128,
        vocab_size: 256,
        rope_base: 10000.0,
        rms_eps: 1e-5,
        context_length: 64,
        rope_interleaved: false,
        tied_embeddings: false,
    }
}

/// Prefills 5 tokens, then decodes one; returns both calls' logits.
fn run(dtype: DType) -> (Vec<f32>, Vec<f32>) {
    let cfg = tiny();
    let graph = build_graph(LlamaWeights::Shapes(dtype), &cfg).unwrap();
    let mut opts = ModelTarget::from(max_compiler::Target::host()).options().unwrap();
    opts.external_weights = true;
    let bytes = max_compiler::graph_api::compile_graph_with(&graph, &opts).unwrap();
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("synthetic-{dtype}.maxa"));
    std::fs::write(&path, &bytes).unwrap();
    let artifact = Artifact::open(&path).unwrap();
    assert!(!artifact.missing_weights().is_empty(), "the weights are external");
    let artifact = artifact.with_weights(&WeightSource::Random { seed: 7 }).unwrap();
    let model = InferenceSession::with_threads(Device::Cpu, 2).load(&artifact).unwrap();
    let cache = || Tensor::zeros(DType::F16, &[2, 1, 16, 2, 16]);
    let mut state = model.new_state(vec![cache(), cache()]).unwrap();
    let i32s = |v: &[i32]| Tensor::from_slice(&[v.len()], v).unwrap();
    let prefill = model.execute_stateful("forward", &[i32s(&[1, 2, 3, 4, 5]), i32s(&[0, 1, 2, 3, 4]), i32s(&[0]), i32s(&[0]), i32s(&[4])], &mut state).unwrap();
    let step = model.execute_stateful("forward", &[i32s(&[6]), i32s(&[5]), i32s(&[5]), i32s(&[0]), i32s(&[0])], &mut state).unwrap();
    assert_eq!(prefill[0].shape(), [1, 256]);
    // The step read the prefill's keys: the cache holds 6 positions now.
    let k = model.read_state(&state).unwrap().remove(0).to_f32_vec();
    let per_pos = 2 * 16;
    let filled = |layer: usize, pos: usize| k[(layer * 16 + pos) * per_pos..(layer * 16 + pos + 1) * per_pos].iter().any(|v| *v != 0.0);
    assert!((0..6).all(|p| filled(0, p) && filled(1, p)) && !filled(0, 6), "cache rows 0..6 written, 6.. untouched");
    (prefill[0].to_f32_vec(), step[0].to_f32_vec())
}

#[test]
fn shape_only_llamas_run_with_generated_weights() {
    let (p32, s32) = run(DType::F32);
    let (p16, s16) = run(DType::BF16);
    for v in [&p32, &s32, &p16, &s16] {
        assert!(v.iter().all(|x| x.is_finite()) && v.iter().any(|x| *x != 0.0), "finite, non-zero logits");
    }
    // The same generated values rounded to bf16 (weights and activations): close logits.
    let rel = |a: &[f32], b: &[f32]| {
        let d: f32 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
        (d / b.iter().map(|y| y * y).sum::<f32>()).sqrt()
    };
    assert!(rel(&p16, &p32) < 0.05, "bf16 vs f32 prefill logits: {}", rel(&p16, &p32));
    assert!(rel(&s16, &s32) < 0.05, "bf16 vs f32 step logits: {}", rel(&s16, &s32));
}
