//! Hugging Face model directories: the all-MiniLM-L6-v2 BERT embedding model (skipped
//! without MAX_MINILM_DIR), a Llama directory written from the SmolLM2 GGUF (skipped
//! without MAX_SMOLLM2_GGUF), and the errors bad directories give.
#![cfg(feature = "compile")]

mod common;

use max_serve::compile::{compile_model, CompileModelError};
use max_serve::embedding::EmbeddingError;
use max_serve::gguf::GgufFile;
use max_serve::llama::LlamaConfig;
use max_serve::{EmbedInput, EmbeddingModel, PipelineConfig, SamplingParams, LLM};
use std::path::{Path, PathBuf};

fn minilm_dir() -> Option<PathBuf> {
    match std::env::var_os("MAX_MINILM_DIR") {
        Some(p) => Some(p.into()),
        None => {
            println!("skipped: set MAX_MINILM_DIR to the all-MiniLM-L6-v2 directory (see serve/tests/fetch_minilm.sh)");
            None
        }
    }
}

fn tmp(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{}-{name}", env!("CARGO_CRATE_NAME")))
}

fn minilm() -> Option<EmbeddingModel> {
    let dir = minilm_dir()?;
    let out = tmp("minilm.maxa");
    std::fs::write(&out, compile_model(&dir, max_compiler::Target::host()).unwrap()).unwrap();
    Some(EmbeddingModel::new(&out, Some(2)).unwrap())
}

fn text(s: &str) -> EmbedInput {
    EmbedInput::Text(s.into())
}

#[test]
fn minilm_embeddings_are_unit_vectors_that_padding_does_not_change() {
    let Some(m) = minilm() else { return };
    assert_eq!((m.dimensions(), m.max_tokens()), (384, 256));
    let inputs = [text("Hello world"), text("A much longer sentence, so that the first one is padded in the batch."), text("Hello")];
    let batch = m.embed(&inputs).unwrap();
    for (input, v) in inputs.iter().zip(&batch) {
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "{norm}");
        // Alone (no padding) it gives the same vector as in the padded batch.
        let alone = m.embed(std::slice::from_ref(input)).unwrap().remove(0);
        let diff = alone.iter().zip(v).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(diff < 1e-5, "{input:?}: {diff}");
    }
    // Token ids give what the text gives; the tokenizer adds [CLS] and [SEP].
    let ids = m.tokenizer().encode("Hello world", true).unwrap();
    assert_eq!(ids, [101, 7592, 2088, 102]);
    let v = m.embed(&[EmbedInput::Tokens(ids)]).unwrap().remove(0);
    assert!(v.iter().zip(&batch[0]).all(|(a, b)| (a - b).abs() < 1e-5));
    // Similar meanings are closer.
    let e = m.embed(&[text("A man is eating food."), text("A man is eating bread."), text("The stock market fell.")]).unwrap();
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    assert!(dot(&e[0], &e[1]) > dot(&e[0], &e[2]) + 0.3);
    // More inputs than one batch takes, in order.
    let many: Vec<EmbedInput> = (0..70).map(|i| text(&format!("sentence number {i}"))).collect();
    let got = m.embed(&many).unwrap();
    assert_eq!(got.len(), 70);
    let again = m.embed(&many[69..]).unwrap().remove(0);
    assert!(again.iter().zip(&got[69]).all(|(a, b)| (a - b).abs() < 1e-5));
}

#[test]
fn minilm_refuses_bad_inputs() {
    let Some(m) = minilm() else { return };
    let long = "word ".repeat(300);
    assert!(matches!(m.embed(&[text("ok"), text(&long)]), Err(EmbeddingError::TooLong { index: 1, max: 256, .. })));
    assert!(matches!(m.embed(&[text("")]), Err(EmbeddingError::EmptyInput { index: 0 })));
    assert!(matches!(m.embed(&[EmbedInput::Tokens(vec![])]), Err(EmbeddingError::EmptyInput { index: 0 })));
    assert!(matches!(m.embed(&[EmbedInput::Tokens(vec![101, 40000])]), Err(EmbeddingError::BadToken { id: 40000, .. })));
}

#[test]
fn bad_directories_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    // Not a model at all.
    let e = compile_model(&dir.path().join("nothing.bin"), max_compiler::Target::host()).unwrap_err();
    assert!(matches!(e, CompileModelError::Format(_)), "{e}");
    // An architecture nobody builds.
    std::fs::write(dir.path().join("config.json"), r#"{"architectures": ["GPT2LMHeadModel"]}"#).unwrap();
    std::fs::write(dir.path().join("model.safetensors"), safetensors::serialize(Vec::<(&str, safetensors::tensor::TensorView)>::new(), None).unwrap()).unwrap();
    let e = compile_model(dir.path(), max_compiler::Target::host()).unwrap_err().to_string();
    assert!(e.contains("GPT2LMHeadModel") && e.contains("LlamaForCausalLM"), "{e}");
    // A BERT config whose weights are missing names the tensor.
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"architectures": ["BertModel"], "hidden_size": 8, "num_attention_heads": 2, "num_hidden_layers": 1, "intermediate_size": 16, "vocab_size": 10, "max_position_embeddings": 16}"#,
    )
    .unwrap();
    std::fs::write(dir.path().join("tokenizer.json"), minimal_wordpiece()).unwrap();
    let e = compile_model(dir.path(), max_compiler::Target::host()).unwrap_err().to_string();
    assert!(e.contains("tensor embeddings.") && e.contains("missing"), "{e}");
    // No weights file.
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let e = compile_model(dir.path(), max_compiler::Target::host()).unwrap_err().to_string();
    assert!(e.contains("model.safetensors"), "{e}");
}

fn minimal_wordpiece() -> &'static str {
    r###"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,"pre_tokenizer":{"type":"Whitespace"},"post_processor":null,"decoder":null,
        "model":{"type":"WordPiece","unk_token":"[UNK]","continuing_subword_prefix":"##","max_input_chars_per_word":100,"vocab":{"[UNK]":0,"a":1}}}"###
}

/// Writes SmolLM2 as a Hugging Face Llama directory: weights dequantized from the GGUF to
/// bf16, Q/K rows put back from llama.cpp's interleaved-RoPE order into Hugging Face's,
/// the tokenizer as tokenizer.json, BOS/EOS and the chat template in tokenizer_config.json.
fn write_llama_dir(gguf_path: &Path, dir: &Path) -> LlamaConfig {
    let gguf = GgufFile::open(gguf_path).unwrap();
    let cfg = LlamaConfig::from_gguf(&gguf).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for info in gguf.tensors() {
        let name = max_serve::llama::hf_tensor_name(&info.name);
        let mut w = gguf.tensor(&info.name).unwrap().dequantize().unwrap();
        let shape: Vec<usize> = info.dims.iter().rev().map(|&d| d as usize).collect();
        let heads = if info.name.ends_with("attn_q.weight") {
            Some(cfg.n_heads)
        } else if info.name.ends_with("attn_k.weight") {
            Some(cfg.n_kv_heads)
        } else {
            None
        };
        if let Some(heads) = heads {
            // Row 2i+j of a head (llama.cpp) is row j*hd/2+i (Hugging Face).
            let (hd, cols) = (shape[0] / heads, shape[1]);
            let src = w.clone();
            for h in 0..heads {
                for i in 0..hd / 2 {
                    for j in 0..2 {
                        let (from, to) = (h * hd + 2 * i + j, h * hd + j * hd / 2 + i);
                        w[to * cols..(to + 1) * cols].copy_from_slice(&src[from * cols..(from + 1) * cols]);
                    }
                }
            }
        }
        let bytes = w.iter().flat_map(|x| half::bf16::from_f32(*x).to_le_bytes()).collect();
        tensors.push((name, shape, bytes));
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> =
        tensors.iter().map(|(n, s, b)| (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::BF16, s.clone(), b).unwrap())).collect();
    std::fs::write(dir.join("model.safetensors"), safetensors::serialize(views, None).unwrap()).unwrap();
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": cfg.n_embd, "num_attention_heads": cfg.n_heads, "num_key_value_heads": cfg.n_kv_heads,
        "intermediate_size": cfg.n_ff, "num_hidden_layers": cfg.n_layers, "vocab_size": cfg.vocab_size,
        "rope_theta": cfg.rope_base, "rms_norm_eps": cfg.rms_eps, "max_position_embeddings": cfg.context_length,
        "tie_word_embeddings": cfg.tied_embeddings, "rope_scaling": null, "torch_dtype": "bfloat16",
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let tok = max_serve::tokenizer::Tokenizer::from_gguf(&gguf).unwrap();
    std::fs::write(dir.join("tokenizer.json"), tok.to_json().unwrap()).unwrap();
    let template = max_serve::chat_template::ChatTemplate::from_gguf(&gguf).unwrap();
    let tok_config = serde_json::json!({
        "bos_token": tok.bos_token(), "eos_token": tok.eos_token(), "chat_template": template.source(),
    });
    std::fs::write(dir.join("tokenizer_config.json"), tok_config.to_string()).unwrap();
    cfg
}

#[test]
fn a_llama_directory_computes_what_its_gguf_computes() {
    let Some(gguf) = common::smollm2_path() else { return };
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_llama_dir(&gguf, dir.path());
    let out = tmp("smollm2-hf.maxa");
    std::fs::write(&out, compile_model(dir.path(), max_compiler::Target::host()).unwrap()).unwrap();
    drop(dir);
    let pipeline = || PipelineConfig { max_length: Some(128), max_batch_size: 1, threads: Some(2), device: max_runtime::Device::Cpu };
    let hf = LLM::new(&out, pipeline()).unwrap();
    let info = &hf.info().model;
    assert!(!info.rope_interleaved && info.tied_embeddings && info.n_layers == cfg.n_layers);
    let native = LLM::new(common::smollm2_artifact().unwrap(), pipeline()).unwrap();
    // The same tokens, and next-token logits that agree: the directory holds the GGUF's
    // weights (bf16-rounded, in Hugging Face's RoPE order) and computes in f32 where the
    // GGUF model quantizes activations to 8 bits, so they agree closely but not exactly.
    let prompt = "The capital of France is";
    let ids = hf.encode_prompt(prompt).unwrap();
    assert_eq!(ids, native.encode_prompt(prompt).unwrap());
    let (a, b) = (hf.next_token_logits(&ids).unwrap(), native.next_token_logits(&ids).unwrap());
    let dot = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(p, q)| (*p as f64) * (*q as f64)).sum::<f64>();
    let cos = dot(&a, &b) / (dot(&a, &a).sqrt() * dot(&b, &b).sqrt());
    assert!(cos > 0.99, "cosine of the logits {cos}");
    let argmax = |v: &[f32]| v.iter().enumerate().max_by(|x, y| x.1.total_cmp(y.1)).unwrap().0;
    assert_eq!(argmax(&a), argmax(&b));
    let g = hf.generate_with(prompt, &SamplingParams { max_tokens: 4, ..SamplingParams::greedy() }).unwrap();
    assert!(g.text.starts_with(" Paris"), "{:?}", g.text);
    // The chat template came along.
    let chat = hf.encode_chat(&[max_serve::ChatMessage::new("user", "Hi")]).unwrap();
    assert_eq!(chat, native.encode_chat(&[max_serve::ChatMessage::new("user", "Hi")]).unwrap());
    drop(hf);
    // f32 weights make this artifact large; do not keep it between runs.
    let _ = std::fs::remove_file(&out);
}

/// A bf16 Llama on the GPU: the Hugging Face SmolLM2, whose bf16 projections keep their
/// type on a GPU (the kernels a bf16 decode takes: the matrix-vector products with the RMS
/// norm before them and the residual add after, RoPE with the cache write, attention over
/// the cache), gives the next-token logits and greedy tokens of the CPU, which widens the
/// weights to f32 and keeps f32 activations. The prompt's rows take the tensor-core
/// matmuls, each generated token the matrix-vector ones. Runs on the PTX emulator in
/// tests/gpu_emulated.sh.
#[test]
fn a_llama_directory_on_the_gpu_computes_what_the_cpu_computes() {
    let Some(gguf) = common::smollm2_path() else { return };
    // The chip of gpu:0 (an emulated one reports the chip `MAX_CUDA_EMU_SM` names).
    let target = match max_serve::compile::ModelTarget::for_device(max_runtime::Device::Gpu(0)) {
        Ok(t) => t,
        Err(why) => {
            println!("skipped: no GPU to run on ({why})");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    write_llama_dir(&gguf, dir.path());
    let (cpu_out, gpu_out) = (tmp("smollm2-hf-cpu.maxa"), tmp("smollm2-hf-gpu.maxa"));
    std::fs::write(&cpu_out, compile_model(dir.path(), max_compiler::Target::host()).unwrap()).unwrap();
    let chip = match &target {
        max_serve::compile::ModelTarget::Cuda(c) => c.chip.clone(),
        max_serve::compile::ModelTarget::Cpu(_) => unreachable!("gpu:0 has a compute capability"),
    };
    std::fs::write(&gpu_out, compile_model(dir.path(), target).unwrap()).unwrap();
    drop(dir);
    // The GPU artifact holds bf16 projections, the CPU's f32 ones.
    let size = |p: &Path| std::fs::metadata(p).unwrap().len() as f64;
    let ratio = size(&gpu_out) / size(&cpu_out);
    println!("{chip}: artifact {:.0} MB against the CPU's {:.0} MB", size(&gpu_out) / 1e6, size(&cpu_out) / 1e6);
    assert!(ratio < 0.55, "the GPU artifact is {ratio:.2} of the CPU's: its weights were not kept in bf16");
    let pipeline = |device| PipelineConfig { max_length: Some(64), max_batch_size: 1, threads: Some(2), device };
    let cpu = LLM::new(&cpu_out, pipeline(max_runtime::Device::Cpu)).unwrap();
    let gpu = LLM::new(&gpu_out, pipeline(max_runtime::Device::Gpu(0))).unwrap();
    let prompt = "The capital of France is";
    let ids = cpu.encode_prompt(prompt).unwrap();
    let (a, b) = (cpu.next_token_logits(&ids).unwrap(), gpu.next_token_logits(&ids).unwrap());
    let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    let scale = a.iter().fold(0f32, |m, x| m.max(x.abs()));
    println!("{chip}: next-token logits at most {worst:.3e} from the CPU's (largest {scale:.2})");
    // bf16 activations (8 bits of mantissa, rounded before each of a layer's four products
    // and the head's) against the CPU's f32 ones: about 1e-2 of the largest logit (with f32
    // weights and activations on both, 7e-4).
    assert!(worst <= 3e-2 * scale, "logits differ by {worst} (largest magnitude {scale})");
    let argmax = |v: &[f32]| v.iter().enumerate().max_by(|x, y| x.1.total_cmp(y.1)).unwrap().0;
    assert_eq!(argmax(&a), argmax(&b));
    let params = SamplingParams { max_tokens: 4, ..SamplingParams::greedy() };
    let (c, g) = (cpu.generate_with(prompt, &params).unwrap(), gpu.generate_with(prompt, &params).unwrap());
    println!("{chip}: greedy tokens {:?} (CPU {:?})", g.tokens, c.tokens);
    assert_eq!(g.tokens, c.tokens);
    drop((cpu, gpu));
    // Hundreds of MB each (f32 weights, bf16 ones); do not keep them between runs.
    let _ = std::fs::remove_file(&cpu_out);
    let _ = std::fs::remove_file(&gpu_out);
}
