//! serve: `max serve` next to llama.cpp's server (`llama-cpp-python[server]`) on the same
//! GGUF with the same threads, in the same run: generated tokens/s and time to first token
//! (p50, p99) with 1, 8 and 32 concurrent streaming clients.
//!
//! Every client streams `/v1/completions` (greedy, `--max-tokens` tokens); a token is a
//! streamed chunk with text. With 1 client, 4 requests run one after another.
//! Run with `bash benches/run.sh serve`.

use anyhow::{bail, Context, Result};
use clap::Parser;
use max_benches::repo_root;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(about = "serve: throughput and TTFT under concurrent streaming clients vs llama.cpp's server")]
struct Args {
    /// The GGUF model (default: $MAX_SMOLLM2_GGUF).
    #[arg(long)]
    model: Option<PathBuf>,
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Tokens per request.
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
    /// Python with llama-cpp-python[server].
    #[arg(long, default_value = "python3")]
    python: String,
    #[arg(long, default_value = "target/bench/serve.json")]
    json: String,
}

const PROMPTS: [&str; 4] = ["Once upon a time, in a small village,", "The history of the city begins", "Python is a programming language that", "My favorite recipe for pancakes"];

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_ready(port: u16, path: &str, child: &mut Child) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = write!(s, "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
            let mut line = String::new();
            if BufReader::new(s).read_line(&mut line).is_ok() && line.contains(" 200 ") {
                return Ok(());
            }
        }
        if let Some(status) = child.try_wait()? {
            bail!("server exited with {status}");
        }
        if Instant::now() > deadline {
            bail!("server on port {port} not ready");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One streamed completion: (time to first token, tokens).
fn stream_once(port: u16, model: &str, prompt: &str, max_tokens: usize) -> Result<(Duration, usize)> {
    let body = serde_json::json!({"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": true}).to_string();
    let start = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    write!(s, "POST /v1/completions HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len())?;
    let mut first = None;
    let mut tokens = 0;
    for line in BufReader::new(s).lines() {
        let line = line?;
        let Some(data) = line.strip_prefix("data: ") else { continue };
        if data.trim() == "[DONE]" {
            break;
        }
        let v: serde_json::Value = serde_json::from_str(data).with_context(|| format!("bad chunk {data}"))?;
        if v["choices"][0]["text"].as_str().is_some_and(|t| !t.is_empty()) {
            first.get_or_insert_with(|| start.elapsed());
            tokens += 1;
        }
    }
    Ok((first.unwrap_or_else(|| start.elapsed()), tokens))
}

struct Row {
    clients: usize,
    /// Requests that streamed no text (errors, refusals).
    failed: usize,
    tok_s: f64,
    ttft_p50_ms: f64,
    ttft_p99_ms: f64,
}

fn load(port: u16, model: &str, clients: usize, max_tokens: usize) -> Result<Row> {
    let per_client = if clients == 1 { 4 } else { 1 };
    let start = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let model = model.to_string();
            std::thread::spawn(move || -> Result<Vec<(Duration, usize)>> { (0..per_client).map(|r| stream_once(port, &model, PROMPTS[(c + r) % PROMPTS.len()], max_tokens)).collect() })
        })
        .collect();
    let mut results = Vec::new();
    for h in handles {
        results.extend(h.join().map_err(|_| anyhow::anyhow!("client panicked"))??);
    }
    let wall = start.elapsed().as_secs_f64();
    let tokens: usize = results.iter().map(|r| r.1).sum();
    let failed = results.iter().filter(|r| r.1 == 0).count();
    // TTFT over the requests that streamed text.
    let mut ttft: Vec<f64> = results.iter().filter(|r| r.1 > 0).map(|r| r.0.as_secs_f64() * 1e3).collect();
    if ttft.is_empty() {
        ttft.push(f64::NAN);
    }
    ttft.sort_by(f64::total_cmp);
    let pct = |p: f64| ttft[((ttft.len() as f64 - 1.0) * p).round() as usize];
    Ok(Row { clients, failed, tok_s: tokens as f64 / wall, ttft_p50_ms: pct(0.5), ttft_p99_ms: pct(0.99) })
}

fn main() -> Result<()> {
    let a = Args::parse();
    let gguf = a.model.clone().or_else(|| std::env::var_os("MAX_SMOLLM2_GGUF").map(PathBuf::from)).context("pass --model or set MAX_SMOLLM2_GGUF")?;
    let artifact = max_serve::compile::compile_cached(&gguf, max_compiler::Target::host(), |out| eprintln!("serve: compiling into {}", out.display()))?;
    let levels = [1usize, 8, 32];

    let max_bin = repo_root().join("target/release/max");
    let port = free_port()?;
    let mut ours = Server(
        Command::new(&max_bin)
            .args(["serve", "--model", &artifact.to_string_lossy(), "--served-model-name", "smollm2", "--port", &port.to_string()])
            .args(["--max-batch-size", "32", "--max-cache-length", "512", "--threads", &a.threads.to_string()])
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", max_bin.display()))?,
    );
    wait_ready(port, "/health", &mut ours.0)?;
    let mut mine = Vec::new();
    for &c in &levels {
        mine.push(load(port, "smollm2", c, a.max_tokens)?);
    }
    drop(ours);

    let port = free_port()?;
    let theirs = Command::new(&a.python)
        .args(["-m", "llama_cpp.server", "--model", &gguf.to_string_lossy(), "--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--n_threads", &a.threads.to_string(), "--n_threads_batch", &a.threads.to_string(), "--n_ctx", "2048"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let mut reference = Vec::new();
    match theirs {
        Ok(child) => {
            let mut child = Server(child);
            match wait_ready(port, "/v1/models", &mut child.0) {
                Ok(()) => {
                    for &c in &levels {
                        reference.push(load(port, "smollm2", c, a.max_tokens).ok());
                    }
                }
                Err(e) => eprintln!("serve: llama.cpp server unavailable ({e:#}); pip install 'llama-cpp-python[server]'"),
            }
        }
        Err(e) => eprintln!("serve: cannot start llama.cpp's server: {e}"),
    }

    println!("SmolLM2-135M-Instruct Q4_1, {} threads, {} tokens per request, streaming /v1/completions", a.threads, a.max_tokens);
    println!("{:>8} {:>12} {:>12} {:>8} | {:>12} {:>12} {:>8} | {:>10} {:>14}", "clients", "max tok/s", "TTFT p50", "p99", "llama tok/s", "TTFT p50", "p99", "tok/s ratio", "failed max/ll");
    let mut out = Vec::new();
    for (i, m) in mine.iter().enumerate() {
        let r = reference.get(i).and_then(|r| r.as_ref());
        let f = |v: Option<f64>| v.map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into());
        println!(
            "{:>8} {:>12.1} {:>10.0}ms {:>6.0}ms | {:>12} {:>10}ms {:>6}ms | {:>10} {:>14}",
            m.clients,
            m.tok_s,
            m.ttft_p50_ms,
            m.ttft_p99_ms,
            f(r.map(|r| r.tok_s)),
            r.map(|r| format!("{:.0}", r.ttft_p50_ms)).unwrap_or_else(|| "-".into()),
            r.map(|r| format!("{:.0}", r.ttft_p99_ms)).unwrap_or_else(|| "-".into()),
            r.map(|r| format!("{:.2}x", m.tok_s / r.tok_s)).unwrap_or_else(|| "-".into()),
            format!("{}/{}", m.failed, r.map(|r| r.failed.to_string()).unwrap_or_else(|| "-".into()))
        );
        out.push(serde_json::json!({
            "clients": m.clients,
            "max": {"tok_s": m.tok_s, "ttft_p50_ms": m.ttft_p50_ms, "ttft_p99_ms": m.ttft_p99_ms, "failed": m.failed},
            "llama_cpp": r.map(|r| serde_json::json!({"tok_s": r.tok_s, "ttft_p50_ms": r.ttft_p50_ms, "ttft_p99_ms": r.ttft_p99_ms, "failed": r.failed})),
        }));
    }
    if let Some(dir) = std::path::Path::new(&a.json).parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&a.json, serde_json::to_string_pretty(&out)?)?;
    Ok(())
}
