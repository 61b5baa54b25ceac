//! The offline LLM pipeline on the real SmolLM2 GGUF (skipped without it): compiling,
//! generating, batching, chat, sampling controls, and the errors bad input must give.
#![cfg(feature = "compile")]

mod common;

use common::{gguf_with, smollm2_path, string};
use max_serve::compile::{compile_gguf, CompileModelError};
use max_serve::llama::{LlamaConfig, ModelError};
use max_serve::{ChatMessage, FinishReason, LlmError, PipelineConfig, SamplingParams, LLM};
use std::path::PathBuf;

/// The SmolLM2 artifact, compiled once for every test of this file.
fn artifact() -> Option<PathBuf> {
    common::smollm2_artifact()
}

fn llm(max_length: usize, max_batch_size: usize) -> Option<LLM> {
    let path = artifact()?;
    Some(LLM::new(path, PipelineConfig { max_length: Some(max_length), max_batch_size, threads: Some(2), device: max_runtime::Device::Cpu }).unwrap())
}

fn greedy(max_tokens: usize) -> SamplingParams {
    SamplingParams { max_tokens, ..SamplingParams::greedy() }
}

#[test]
fn continues_the_capital_of_france_with_paris() {
    let Some(llm) = llm(256, 1) else { return };
    let g = llm.generate_with("The capital of France is", &greedy(8)).unwrap();
    assert!(g.text.starts_with(" Paris"), "{:?}", g.text);
    assert_eq!(g.prompt_tokens, 5);
}

#[test]
fn chat_answer_names_paris() {
    // Greedy decoding of this 135M Q4_1 model answers "What is the capital of France?"
    // itself in French, without naming Paris, in llama.cpp too (tests/python/test_llm.py
    // checks that both give the same tokens up to near ties). For "Which city is the
    // capital of France?" the first answer token is itself a near tie in llama.cpp ("The"
    // over "Le" by 0.03), so rounding decides it. With this phrasing every token of
    // llama.cpp's greedy answer, "The capital city of France is Paris.", leads by at
    // least 0.97.
    let Some(llm) = llm(256, 1) else { return };
    let g = llm.chat_with(&[ChatMessage::new("user", "What is the name of the capital city of France?")], &greedy(48)).unwrap();
    assert!(g.text.contains("Paris"), "{:?}", g.text);
    // The answer ends at the end-of-turn token, which is not part of the text.
    assert_eq!(g.finish_reason, FinishReason::Stop, "{:?}", g.text);
    assert!(!g.text.contains("<|im_end|>"));
}

#[test]
fn a_batch_generates_what_each_prompt_generates_alone() {
    // Three prompts of different lengths with room for two at a time: one group of two
    // (padded prefill, rows finishing at different steps) and one of one.
    let Some(llm) = llm(128, 2) else { return };
    let prompts = ["Once upon a time, in a small village,", "Hello", "The three primary colors are"];
    let params = greedy(24);
    let batch = llm.generate_batch_with(&prompts, &params).unwrap();
    for (p, b) in prompts.iter().zip(&batch) {
        let alone = llm.generate_with(p, &params).unwrap();
        assert_eq!(b.tokens, alone.tokens, "prompt {p:?}");
        assert_eq!(b.text, alone.text);
    }
}

#[test]
fn streamed_pieces_make_up_the_text_and_stop_strings_cut_it() {
    let Some(llm) = llm(128, 1) else { return };
    let mut pieces = Vec::new();
    let g = llm.generate_stream("The capital of France is", &greedy(16), |p| pieces.push(p.to_string())).unwrap();
    assert!(pieces.len() > 1);
    assert_eq!(pieces.concat(), g.text);
    // Cut at the first period: the text stops before it.
    let params = SamplingParams { stop: vec![".".into()], ..greedy(16) };
    let cut = llm.generate_with("The capital of France is", &params).unwrap();
    assert_eq!(cut.text, " Paris");
    assert_eq!(cut.finish_reason, FinishReason::Stop);
}

#[test]
fn max_tokens_and_max_length_end_with_length() {
    let Some(llm) = llm(12, 1) else { return };
    let g = llm.generate_with("Once upon a time", &greedy(3)).unwrap();
    assert_eq!((g.tokens.len(), g.finish_reason), (3, FinishReason::Length));
    // Four prompt tokens, max_length 12: at most 8 generated.
    let g = llm.generate_with("Once upon a time", &greedy(100)).unwrap();
    assert_eq!(g.prompt_tokens + g.tokens.len(), 12, "{g:?}");
    assert_eq!(g.finish_reason, FinishReason::Length);
}

#[test]
fn seeded_sampling_is_reproducible() {
    let Some(llm) = llm(128, 1) else { return };
    let params = |seed| SamplingParams { temperature: 1.0, top_p: 0.95, top_k: 40, seed: Some(seed), max_tokens: 16, ..SamplingParams::default() };
    let a = llm.generate_with("Once upon a time", &params(7)).unwrap();
    let b = llm.generate_with("Once upon a time", &params(7)).unwrap();
    assert_eq!(a.tokens, b.tokens);
    let others: Vec<Vec<u32>> = (8..12).map(|s| llm.generate_with("Once upon a time", &params(s)).unwrap().tokens).collect();
    assert!(others.iter().any(|t| *t != a.tokens), "five seeds gave the same 16 tokens");
}

#[test]
fn bad_prompts_are_errors() {
    let Some(llm) = llm(16, 1) else { return };
    assert!(matches!(llm.generate(""), Err(LlmError::EmptyPrompt)));
    assert!(matches!(llm.chat(&[]), Err(LlmError::EmptyPrompt)));
    let long = "word ".repeat(40);
    match llm.generate(&long) {
        Err(e @ LlmError::PromptTooLong { .. }) => assert!(e.to_string().contains("max_length is 16"), "{e}"),
        other => panic!("expected PromptTooLong, got {other:?}"),
    }
    let bad = SamplingParams { temperature: -1.0, ..SamplingParams::default() };
    assert!(matches!(llm.generate_with("Hi", &bad), Err(LlmError::Sampling(_))));
}

#[test]
fn bad_pipeline_configs_are_errors() {
    let Some(path) = artifact() else { return };
    let err = |c: PipelineConfig| LLM::new(&path, c).unwrap_err().to_string();
    assert!(err(PipelineConfig { max_batch_size: 0, ..Default::default() }).contains("max_batch_size"));
    assert!(err(PipelineConfig { max_length: Some(1 << 20), ..Default::default() }).contains("max_length must be in 2..=8192"));
    // A graph artifact that is not an LLM.
    let e = LLM::new(PathBuf::from("/nonexistent/model.maxa"), PipelineConfig::default()).unwrap_err().to_string();
    assert!(e.contains("/nonexistent/model.maxa"), "{e}");
}

#[test]
fn corrupt_and_truncated_gguf_files_are_errors() {
    let Some(gguf) = smollm2_path() else { return };
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(&gguf).unwrap();
    let truncated = dir.path().join("truncated.gguf");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let e = compile_gguf(&truncated, max_compiler::Target::host()).unwrap_err();
    assert!(matches!(e, CompileModelError::Model { .. }), "{e}");
    assert!(e.to_string().contains("truncated.gguf"), "{e}");
    let mut corrupt = bytes[..4096].to_vec();
    corrupt[0] = b'X';
    let bad = dir.path().join("corrupt.gguf");
    std::fs::write(&bad, &corrupt).unwrap();
    let e = compile_gguf(&bad, max_compiler::Target::host()).unwrap_err().to_string();
    assert!(e.contains("not a GGUF file"), "{e}");
    // LLM::new compiles a .gguf: the same errors come through.
    let e = LLM::new(&bad, PipelineConfig::default()).unwrap_err().to_string();
    assert!(e.contains("not a GGUF file"), "{e}");
}

#[test]
fn unsupported_architectures_are_refused_by_name() {
    let g = gguf_with(&[("general.architecture", string("gpt2"))]);
    match LlamaConfig::from_gguf(&g) {
        Err(e @ ModelError::Architecture(_)) => assert_eq!(e.to_string(), "unsupported model architecture \"gpt2\" (supported: llama)"),
        other => panic!("expected an architecture error, got {other:?}"),
    }
}

#[test]
fn logprobs_are_the_models_own_and_greedy_takes_the_best() {
    let Some(llm) = llm(256, 1) else { return };
    assert!(llm.generate_with("The capital of France is", &greedy(4)).unwrap().logprobs.is_none(), "only when asked");
    let g = llm.generate_with("The capital of France is", &SamplingParams { logprobs: Some(3), ..greedy(6) }).unwrap();
    let lps = g.logprobs.expect("asked for");
    // One entry per generated token (an ending end-of-generation token has none).
    let ended_by_eos = g.finish_reason == FinishReason::Stop && g.tokens.last().is_some_and(|t| llm.tokenizer().is_eos(*t));
    assert_eq!(lps.len(), g.tokens.len() - usize::from(ended_by_eos));
    for (t, id) in lps.iter().zip(&g.tokens) {
        assert_eq!(t.token, *id);
        assert_eq!(t.top.len(), 3);
        assert_eq!(t.top[0], (t.token, t.logprob), "greedy picks the most likely token");
        assert!(t.logprob <= 0.0 && t.top[1].1 <= t.top[0].1 && t.top[2].1 <= t.top[1].1);
    }
}
