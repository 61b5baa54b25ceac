//! `max serve` against a live server on a loopback port (the real SmolLM2 GGUF; skipped
//! without it): readiness, completions, streaming, errors, back-pressure, shutdown.
#![cfg(feature = "compile")]

mod common;

use common::server::Server;
use common::smollm2_artifact;
use std::path::PathBuf;

fn artifact() -> Option<PathBuf> {
    smollm2_artifact()
}

#[test]
fn serves_completions_streams_and_reports_errors() {
    let Some(model) = artifact() else { return };
    let s = Server::start(model.clone(), 16, Some("k"));
    let (code, _, body) = s.request("POST", "/v1/completions", Some(r#"{"model":"smollm2","prompt":"The capital of France is","temperature":0,"max_tokens":2}"#), Some("k"));
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["choices"][0]["text"], " Paris.");
    assert_eq!(v["usage"]["completion_tokens"], 2);
    // Streaming: SSE chunks, then [DONE].
    let (code, head, body) = s.request("POST", "/v1/chat/completions", Some(r#"{"model":"smollm2","messages":[{"role":"user","content":"Hi"}],"max_tokens":3,"stream":true}"#), Some("k"));
    assert_eq!(code, 200);
    assert!(head.contains("text/event-stream"), "{head}");
    // (chunked transfer encoding: the events come in size-prefixed chunks)
    assert!(body.contains("chat.completion.chunk") && body.contains("data: [DONE]"), "{body}");
    // Errors in OpenAI's shape.
    let (code, _, body) = s.request("POST", "/v1/completions", Some(r#"{"model":"smollm2","prompt":"x"}"#), Some("wrong"));
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("invalid_api_key"));
    let (code, _, body) = s.request("POST", "/v1/completions", Some(r#"{"model":"other","prompt":"x"}"#), Some("k"));
    assert_eq!(code, 404, "{body}");
    let long = format!(r#"{{"model":"smollm2","prompt":"{}"}}"#, "word ".repeat(200));
    let (code, _, body) = s.request("POST", "/v1/completions", Some(&long), Some("k"));
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("maximum context length is 128"), "{body}");
    let (code, _, body) = s.request("POST", "/v1/completions", Some("{oops"), Some("k"));
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("\"type\":\"invalid_request_error\""));
    drop(s);
    // No room to wait: 429 with Retry-After.
    let busy = Server::start(model, 0, None);
    let (code, head, body) = busy.request("POST", "/v1/completions", Some(r#"{"model":"smollm2","prompt":"x","max_tokens":1}"#), None);
    assert_eq!(code, 429, "{body}");
    assert!(head.contains("retry-after: 1"), "{head}");
}

/// all-MiniLM-L6-v2 compiled from its directory (MAX_MINILM_DIR), once per run.
fn minilm_artifact() -> Option<PathBuf> {
    let Some(dir) = std::env::var_os("MAX_MINILM_DIR") else {
        println!("skipped: set MAX_MINILM_DIR to the all-MiniLM-L6-v2 directory (see serve/tests/fetch_minilm.sh)");
        return None;
    };
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("http-minilm.maxa");
    std::fs::write(&out, max_serve::compile::compile_model(std::path::Path::new(&dir), max_compiler::Target::host()).unwrap()).unwrap();
    Some(out)
}

#[test]
fn serves_embeddings_next_to_an_llm() {
    let (Some(llm), Some(minilm)) = (artifact(), minilm_artifact()) else { return };
    let s = Server::start_models(vec![("smollm2".into(), llm), ("minilm".into(), minilm)], 4, None);
    let (code, _, body) = s.request("GET", "/v1/models", None, None);
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let ids: Vec<&str> = v["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["smollm2", "minilm"]);
    assert_eq!(v["data"][1]["dimensions"], 384);

    let (code, _, body) = s.request("POST", "/v1/embeddings", Some(r#"{"model":"minilm","input":["Hello world","A second, longer input sentence."]}"#), None);
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(v["usage"]["prompt_tokens"], 4 + 9);
    let first: Vec<f32> = v["data"][0]["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
    assert_eq!(first.len(), 384);
    assert!((first.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-4);
    // base64: the same vector as little-endian f32 bytes.
    let (code, _, body) = s.request("POST", "/v1/embeddings", Some(r#"{"model":"minilm","input":"Hello world","encoding_format":"base64"}"#), None);
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD.decode(v["data"][0]["embedding"].as_str().unwrap()).unwrap();
    let decoded: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    assert!(decoded.iter().zip(&first).all(|(a, b)| (a - b).abs() < 1e-5));
    // Each model does its own job only.
    let (code, _, body) = s.request("POST", "/v1/embeddings", Some(r#"{"model":"smollm2","input":"x"}"#), None);
    assert_eq!(code, 400, "{body}");
    let (code, _, body) = s.request("POST", "/v1/chat/completions", Some(r#"{"model":"minilm","messages":[{"role":"user","content":"hi"}]}"#), None);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("embedding model"), "{body}");
    let long = format!(r#"{{"model":"minilm","input":"{}"}}"#, "word ".repeat(300));
    let (code, _, body) = s.request("POST", "/v1/embeddings", Some(&long), None);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("context_length_exceeded") && body.contains("256"), "{body}");
    // The generation model still answers.
    let (code, _, body) = s.request("POST", "/v1/completions", Some(r#"{"model":"smollm2","prompt":"The capital of France is","temperature":0,"max_tokens":2}"#), None);
    assert_eq!(code, 200, "{body}");
    // Metrics count the embedding model's tokens.
    let (_, _, body) = s.request("GET", "/metrics", None, None);
    assert!(body.contains("minilm"), "{body}");
}
