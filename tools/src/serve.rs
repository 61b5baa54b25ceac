//! `max serve`: the OpenAI-compatible server.

use anyhow::{bail, Result};
use max_serve::http::{serve as run_server, shutdown_signal, ServeConfig};
use std::path::PathBuf;

/// `serve` arguments.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// A model to serve: a compiled model (.maxa), a GGUF file, or a Hugging Face model
    /// directory (config.json + safetensors: a Llama-family LLM, or a BERT embedding model
    /// such as all-MiniLM-L6-v2, served on /v1/embeddings); model files are compiled once
    /// and cached. Repeat to serve several; each is served under its file or directory name
    /// without extension unless --served-model-name gives names (one per --model, in order).
    #[arg(long = "model", short = 'm', required = true)]
    pub models: Vec<PathBuf>,
    /// The name clients use in `model` (repeatable, one per --model).
    #[arg(long = "served-model-name")]
    pub names: Vec<String>,
    /// Address to bind (loopback unless told otherwise).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Most requests generating at once per model (KV-cache rows).
    #[arg(long, default_value_t = 8)]
    pub max_batch_size: usize,
    /// Longest sequence (prompt plus completion) per request, in tokens.
    #[arg(long, default_value_t = 2048)]
    pub max_cache_length: usize,
    /// Requests that may wait for a free row; beyond it the server answers 429.
    #[arg(long, default_value_t = 256)]
    pub max_waiting: usize,
    /// Require `Authorization: Bearer KEY` (default: the MAX_API_KEY environment variable).
    #[arg(long)]
    pub api_key: Option<String>,
    /// Worker threads per model (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Where the models run: `cpu`, or `gpu:N` (model files are compiled for that GPU's
    /// chip; KV caches stay on the GPU).
    #[arg(long, default_value = "cpu", value_parser = crate::parse_device)]
    pub devices: max_runtime::Device,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 4 << 20)]
    pub max_body_bytes: usize,
}

/// Runs `max serve` until SIGTERM or Ctrl-C.
pub fn serve(a: &ServeArgs) -> Result<()> {
    if !a.names.is_empty() && a.names.len() != a.models.len() {
        bail!("--served-model-name is given {} time(s) for {} --model(s); give one per model", a.names.len(), a.models.len());
    }
    let models: Vec<(String, PathBuf)> = a
        .models
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let name = a.names.get(i).cloned().unwrap_or_else(|| p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into()));
            (name, p.clone())
        })
        .collect();
    for (i, (name, p)) in models.iter().enumerate() {
        if models[..i].iter().any(|(n, _)| n == name) {
            bail!("two models would be served as '{name}'; name them with --served-model-name");
        }
        if !p.exists() {
            bail!("model '{name}': {} does not exist", p.display());
        }
    }
    let config = ServeConfig {
        models,
        host: a.host.clone(),
        port: a.port,
        max_batch_size: a.max_batch_size,
        max_cache_length: a.max_cache_length,
        max_waiting: a.max_waiting,
        api_key: a.api_key.clone().or_else(|| std::env::var("MAX_API_KEY").ok().filter(|k| !k.is_empty())),
        threads: a.threads,
        device: a.devices,
        body_limit: a.max_body_bytes,
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(run_server(config, |addr| eprintln!("max serve: listening on http://{addr} (loading models; /health says when ready)"), shutdown_signal()))?;
    eprintln!("max serve: stopped");
    Ok(())
}
