//! `max serve` with several models runs them all on one pool of worker threads (its own
//! test binary, so no other test's workers are counted).
#![cfg(feature = "compile")]

mod common;

use common::server::Server;

/// Threads of this process named as the runtime's workers.
fn worker_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("max-worker-"))
        .count()
}

#[test]
fn models_share_one_pool_of_workers() {
    let Some(model) = common::smollm2_artifact() else { return };
    assert_eq!(worker_threads(), 0);
    let s = Server::start_with_threads(vec![("a".into(), model.clone()), ("b".into(), model)], 4, None, 3);
    // Two models, three workers in all (one pool per model would be six).
    assert_eq!(worker_threads(), 3);
    for name in ["a", "b"] {
        let body = format!(r#"{{"model":"{name}","prompt":"The capital of France is","temperature":0,"max_tokens":2}}"#);
        let (code, _, body) = s.request("POST", "/v1/completions", Some(&body), None);
        assert_eq!(code, 200, "{body}");
        assert!(body.contains("Paris"), "{body}");
    }
}
