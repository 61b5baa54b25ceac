//! `max generate`: text generation with a compiled LLM, streamed to stdout.

use anyhow::{bail, Context, Result};
use max_serve::{ChatMessage, FinishReason, PipelineConfig, SamplingParams, LLM};
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

/// `generate` arguments. Sampling defaults follow llama.cpp's command line (temperature
/// 0.8, top-k 40, top-p 0.95); `--temperature 0` is greedy.
#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    /// The model: a compiled LLM (.maxa from `maxc compile-model`) or a GGUF file, which is
    /// compiled once and cached under ~/.cache/max/compiled (needs a build with the compiler).
    #[arg(long, short = 'm')]
    pub model: PathBuf,
    /// The prompt. Repeat to run several prompts together as one batch (printed one after
    /// another when all are done; a single prompt streams).
    #[arg(long, short = 'p', required = true)]
    pub prompt: Vec<String>,
    /// Treat each prompt as a user message and answer it with the model's chat template.
    #[arg(long)]
    pub chat: bool,
    /// A system message for --chat.
    #[arg(long, requires = "chat")]
    pub system: Option<String>,
    /// Most tokens to generate per prompt.
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    /// Sampling temperature; 0 picks the most likely token (greedy).
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f32,
    /// Keep only the K most likely tokens (0: all).
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    /// Keep the most likely tokens whose probabilities add up to P.
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    /// Seed of the sampler (same seed, same output).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Stop when the text reaches this string (repeatable; the string is not printed).
    #[arg(long)]
    pub stop: Vec<String>,
    /// Longest sequence, prompt plus completion, in tokens (sizes the KV cache; default:
    /// the model's context, at most 2048).
    #[arg(long)]
    pub max_length: Option<usize>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Where the model runs: `cpu`, or `gpu:N` (a model file is compiled for that GPU's
    /// chip; the KV cache stays on the GPU).
    #[arg(long, default_value = "cpu", value_parser = crate::parse_device)]
    pub device: max_runtime::Device,
    /// Print timing (prompt and generated tokens, tokens/s) and peak memory to stderr.
    #[arg(long)]
    pub stats: bool,
    /// Print one JSON object per prompt instead of text (prompt and generated token ids,
    /// text, finish reason), e.g. for comparing with other implementations.
    #[arg(long)]
    pub json: bool,
}

/// Compiles a model file (`.gguf` or a Hugging Face directory) into the cache (with a
/// spinner) and returns the artifact path; other paths are returned as they are.
#[cfg(feature = "compiler")]
pub fn resolve_model(path: &std::path::Path, device: max_runtime::Device) -> Result<PathBuf> {
    if !max_serve::compile::is_model_file(path) {
        return Ok(path.to_path_buf());
    }
    let target = max_serve::compile::ModelTarget::for_device(device)?;
    let progress = indicatif::ProgressBar::new_spinner();
    let out = max_serve::compile::compile_cached(path, target, |out| {
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            progress.set_message(format!("compiling {} (once; cached as {})", path.display(), out.display()));
            progress.enable_steady_tick(std::time::Duration::from_millis(100));
        } else {
            eprintln!("max: compiling {} (once; cached as {})", path.display(), out.display());
        }
    });
    progress.finish_and_clear();
    Ok(out?)
}

#[cfg(not(feature = "compiler"))]
fn resolve_model(path: &std::path::Path, _device: max_runtime::Device) -> Result<PathBuf> {
    Ok(path.to_path_buf())
}

/// Runs `max generate`.
pub fn generate(a: &GenerateArgs) -> Result<()> {
    if let Some(i) = a.prompt.iter().position(String::is_empty) {
        bail!("prompt {} is empty", i + 1);
    }
    let model = resolve_model(&a.model, a.device)?;
    let config = PipelineConfig { max_length: a.max_length, max_batch_size: a.prompt.len(), threads: a.threads, device: a.device };
    let t_load = Instant::now();
    let llm = LLM::new(&model, config).with_context(|| format!("loading {}", a.model.display()))?;
    let load_s = t_load.elapsed().as_secs_f64();
    let params = SamplingParams {
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: a.top_p,
        seed: a.seed,
        max_tokens: a.max_tokens,
        stop: a.stop.clone(),
        ..SamplingParams::default()
    };
    let ids = a
        .prompt
        .iter()
        .map(|p| {
            if a.chat {
                let mut messages = Vec::new();
                if let Some(s) = &a.system {
                    messages.push(ChatMessage::new("system", s.as_str()));
                }
                messages.push(ChatMessage::new("user", p.as_str()));
                llm.encode_chat(&messages)
            } else {
                llm.encode_prompt(p)
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let prompt_tokens: usize = ids.iter().map(Vec::len).sum();
    let t0 = Instant::now();
    let mut first_token: Option<f64> = None;
    let stream = a.prompt.len() == 1 && !a.json;
    let mut stdout = std::io::stdout().lock();
    if stream && !a.chat {
        write!(stdout, "{}", a.prompt[0])?;
        stdout.flush()?;
    }
    let mut write_err: Option<std::io::Error> = None;
    let prompt_ids = ids.clone();
    let outs = llm.generate_ids(ids, &params, &mut |_, piece| {
        first_token.get_or_insert_with(|| t0.elapsed().as_secs_f64());
        if stream && write_err.is_none() {
            if let Err(e) = stdout.write_all(piece.as_bytes()).and_then(|_| stdout.flush()) {
                write_err = Some(e);
            }
        }
    })?;
    if let Some(e) = write_err {
        return Err(e).context("writing to stdout");
    }
    if a.json {
        for ((p, ids), g) in a.prompt.iter().zip(&prompt_ids).zip(&outs) {
            let v = serde_json::json!({
                "prompt": p,
                "prompt_tokens": ids,
                "tokens": g.tokens,
                "text": g.text,
                "finish_reason": g.finish_reason.as_str(),
            });
            writeln!(stdout, "{v}")?;
        }
    } else if stream {
        writeln!(stdout)?;
    } else {
        for (p, g) in a.prompt.iter().zip(&outs) {
            if a.chat {
                writeln!(stdout, "{}\n", g.text)?;
            } else {
                writeln!(stdout, "{p}{}\n", g.text)?;
            }
        }
    }
    if a.stats {
        let total = t0.elapsed().as_secs_f64();
        let generated: usize = outs.iter().map(|g| g.tokens.len()).sum();
        let reasons: Vec<&str> = outs.iter().map(|g| if g.finish_reason == FinishReason::Stop { "stop" } else { "length" }).collect();
        // Peak resident memory of this process (Linux), for memory budgets.
        let peak = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse::<f64>().ok()))
            .map(|kib| format!("; peak RSS {:.1} MiB", kib / 1024.0))
            .unwrap_or_default();
        eprintln!(
            "max: loaded in {load_s:.2} s; {prompt_tokens} prompt tokens, {generated} generated in {total:.2} s ({:.1} tokens/s); finish: {}{peak}",
            generated as f64 / total.max(1e-9),
            reasons.join(", ")
        );
    }
    Ok(())
}
