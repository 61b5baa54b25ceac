//! Continuous batching on the real SmolLM2 GGUF (skipped without it): concurrent requests
//! give what each gives alone, cancelled requests free their row, a full queue refuses.
#![cfg(feature = "compile")]

mod common;

use common::smollm2_artifact;
use max_serve::engine::{Engine, Event, SubmitError};
use max_serve::{Generation, PipelineConfig, SamplingParams, TokenLogprob, LLM};
use std::sync::Arc;

fn load(max_batch_size: usize) -> Option<LLM> {
    let out = smollm2_artifact()?;
    Some(LLM::new(&out, PipelineConfig { max_length: Some(128), max_batch_size, threads: Some(2), device: max_runtime::Device::Cpu }).unwrap())
}

fn finish(rx: tokio::sync::mpsc::UnboundedReceiver<Event>) -> (String, Generation) {
    let (text, _, g) = finish_with_logprobs(rx);
    (text, g)
}

/// The streamed text, the log-probabilities the `Text` events carried, and the result.
fn finish_with_logprobs(mut rx: tokio::sync::mpsc::UnboundedReceiver<Event>) -> (String, Vec<TokenLogprob>, Generation) {
    let (mut streamed, mut logprobs) = (String::new(), Vec::new());
    loop {
        match rx.blocking_recv().expect("the engine ends every request with Done or Failed") {
            Event::Text(t, lp) => {
                streamed.push_str(&t);
                logprobs.extend(lp);
            }
            Event::Done(g) => return (streamed, logprobs, g),
            Event::Failed(e) => panic!("request failed: {e}"),
        }
    }
}

#[test]
fn requests_joining_a_running_batch_get_what_they_get_alone() {
    let Some(llm) = load(2) else { return };
    let prompts = ["Once upon a time, in a small village,", "Hello", "The three primary colors are", "In 1969, astronauts"];
    let lengths = [20, 6, 12, 16];
    let params = |n| SamplingParams { max_tokens: n, ..SamplingParams::greedy() };
    let alone: Vec<Generation> =
        prompts.iter().zip(lengths).map(|(p, n)| llm.generate_with(p, &params(n)).unwrap()).collect();
    let ids: Vec<Vec<u32>> = prompts.iter().map(|p| llm.encode_prompt(p).unwrap()).collect();
    // Two rows for four requests of different lengths: later ones join as earlier ones end.
    let engine = Engine::new(Arc::new(llm), 8);
    let rxs: Vec<_> = ids.into_iter().zip(lengths).map(|(i, n)| engine.submit(i, params(n)).unwrap()).collect();
    for (rx, want) in rxs.into_iter().zip(&alone) {
        let (streamed, got) = finish(rx);
        assert_eq!(got.tokens, want.tokens);
        assert_eq!(got.text, want.text);
        assert_eq!(streamed, got.text);
    }
    assert_eq!(engine.stats().running.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[test]
fn a_cancelled_request_frees_its_row_and_a_full_queue_refuses() {
    let Some(llm) = load(1) else { return };
    let ids = llm.encode_prompt("Once upon a time").unwrap();
    let long = SamplingParams { max_tokens: 100, ..SamplingParams::greedy() };
    let engine = Engine::new(Arc::new(llm), 4);
    let mut rx = engine.submit(ids.clone(), long).unwrap();
    assert!(matches!(rx.blocking_recv(), Some(Event::Text(..))));
    drop(rx);
    // The only row is freed, so this one runs to the end.
    let (_, g) = finish(engine.submit(ids.clone(), SamplingParams { max_tokens: 4, ..SamplingParams::greedy() }).unwrap());
    assert_eq!(g.tokens.len(), 4);
    let empty = engine.submit(Vec::new(), SamplingParams::greedy()).unwrap_err();
    assert!(matches!(empty, SubmitError::Invalid(_)), "{empty}");
    // An engine owns its model's cache: the next one starts once this one has stopped.
    let llm = engine.llm().clone();
    drop(engine);
    let closed = Engine::new(llm, 0);
    assert!(matches!(closed.submit(ids, SamplingParams::greedy()), Err(SubmitError::QueueFull(0))));
}

#[test]
fn streamed_pieces_carry_their_tokens_logprobs() {
    let Some(llm) = load(2) else { return };
    let ids = llm.encode_prompt("The capital of France is").unwrap();
    let params = SamplingParams { max_tokens: 10, logprobs: Some(2), ..SamplingParams::greedy() };
    let engine = Engine::new(Arc::new(llm), 4);
    let (text, streamed, g) = finish_with_logprobs(engine.submit(ids.clone(), params).unwrap());
    let all = g.logprobs.expect("asked for logprobs");
    // Every token's entry came with the text (none held back at the end here), in order.
    assert_eq!(streamed, all);
    assert_eq!(text, g.text);
    assert!(all.iter().all(|t| t.top.len() == 2 && t.top[0].0 == t.token));
    // Without asking, the pieces carry none.
    let (_, streamed, g) = finish_with_logprobs(engine.submit(ids, SamplingParams { max_tokens: 4, ..SamplingParams::greedy() }).unwrap());
    assert!(streamed.is_empty() && g.logprobs.is_none());
}
