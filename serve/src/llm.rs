//! The offline LLM pipeline: load a compiled model, tokenize, run prefill and decode steps
//! on the compiled `forward` entry, sample, detokenize.
//!
//! Every tensor computation runs in the artifact's kernels. The host code here does the
//! rest: tokenization, sampling, stop conditions, and the KV cache's bookkeeping (which
//! cache row each sequence owns and how many positions it holds).
//!
//! A batch runs together: a prefill of all prompts (one call when small, else chunks; see
//! `LLM::prefill`), then one decode call per step over the rows still generating.

use crate::chat_template::{ChatMessage, ChatTemplate, ChatTemplateError};
use crate::model_info::{ModelInfo, ModelInfoError, ENTRY_FORWARD};
use crate::sampling::{FinishReason, Sampler, SamplingError, SamplingParams, StopChecker, StopOutcome};
use crate::tokenizer::{StreamDecoder, Tokenizer, TokenizerError};
use max_runtime::{DType, Device, InferenceSession, Model, RuntimeError, State, Tensor};
use std::path::Path;
use std::sync::Mutex;

/// How a pipeline is sized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineConfig {
    /// Longest sequence, prompt plus completion, in tokens; sizes the KV cache. Default:
    /// the model's trained context, capped at [`DEFAULT_MAX_LENGTH`].
    pub max_length: Option<usize>,
    /// Most sequences run together; sizes the KV cache (larger batches run in groups).
    pub max_batch_size: usize,
    /// Worker threads (default: every core).
    pub threads: Option<usize>,
    /// Where the model runs (default: the CPU). On `Device::Gpu(i)` a model file is
    /// compiled for that GPU's chip, and the KV cache stays in device memory.
    pub device: Device,
}

/// Most tokens one prefill call processes (larger prompts and batches are prefilled in
/// chunks); bounds the memory of the forward pass's temporaries.
pub const PREFILL_CHUNK: usize = 512;

/// The default cap on [`PipelineConfig::max_length`].
pub const DEFAULT_MAX_LENGTH: usize = 2048;

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig { max_length: None, max_batch_size: 1, threads: None, device: Device::Cpu }
    }
}

/// Errors of the LLM pipeline.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    ModelInfo(#[from] ModelInfoError),
    #[error("tokenizer: {0}")]
    Tokenizer(#[from] TokenizerError),
    #[error("chat template: {0}")]
    Template(#[from] ChatTemplateError),
    #[error(transparent)]
    Sampling(#[from] SamplingError),
    #[cfg(feature = "compile")]
    #[error(transparent)]
    Compile(#[from] crate::compile::CompileModelError),
    #[error("{0} is a model file; this build cannot compile it (compile it with `maxc compile-model {0} -o MODEL.maxa`, or build with the `compile` feature)")]
    NeedsCompiler(String),
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("the prompt is {tokens} tokens long, but max_length is {max_length}: it must leave room for at least one generated token")]
    PromptTooLong { tokens: usize, max_length: usize },
    #[error("invalid pipeline config: {0}")]
    Config(String),
    #[error("the model's logits have {got} entries per row, expected the vocabulary size {expected}")]
    Logits { got: usize, expected: usize },
}

/// Result alias for this module.
pub type Result<T, E = LlmError> = std::result::Result<T, E>;

/// One finished completion.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// The generated text (stop strings and end-of-generation tokens excluded).
    pub text: String,
    /// Per generated token (an ending end-of-generation token excluded), its log-probability
    /// and the most likely alternatives, when the request asked for them
    /// ([`SamplingParams::logprobs`]).
    pub logprobs: Option<Vec<TokenLogprob>>,
    /// The generated token ids (an end-of-generation token included when one ended it).
    pub tokens: Vec<u32>,
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    pub finish_reason: FinishReason,
}

/// A generated token's log-probability under the model's distribution (the raw logits'
/// log-softmax), with the most likely tokens at that step.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub token: u32,
    pub logprob: f32,
    /// Most likely first.
    pub top: Vec<(u32, f32)>,
}

/// A loaded LLM, ready to generate.
pub struct LLM {
    model: Model,
    info: ModelInfo,
    tokenizer: Tokenizer,
    template: ChatTemplate,
    max_length: usize,
    max_batch_size: usize,
    /// `[k_cache, v_cache]`, each `[layers, max_batch_size, max_length, kv_heads, head_dim]`,
    /// where the model runs.
    cache: Mutex<State>,
}

impl std::fmt::Debug for LLM {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LLM").field("model", &self.info.source).field("max_length", &self.max_length).field("max_batch_size", &self.max_batch_size).finish()
    }
}

/// One sequence of a running batch: its cache row, ids, sampler and text state.
pub(crate) struct Row {
    pub(crate) slot: usize,
    pub(crate) prompt_len: usize,
    /// Prompt and generated ids.
    pub(crate) ids: Vec<u32>,
    /// Positions already in the KV cache.
    pub(crate) cached: usize,
    sampler: Sampler,
    decoder: StreamDecoder,
    stops: StopChecker,
    text: String,
    pub(crate) finish: Option<FinishReason>,
    logprobs: Vec<TokenLogprob>,
}

impl Row {
    pub(crate) fn new(llm: &LLM, slot: usize, ids: Vec<u32>, params: &SamplingParams) -> Result<Row> {
        Ok(Row {
            slot,
            prompt_len: ids.len(),
            ids,
            cached: 0,
            sampler: Sampler::new(params.clone())?,
            decoder: llm.tokenizer.stream_decoder(true),
            stops: StopChecker::new(params.stop.iter()),
            text: String::new(),
            finish: None,
            logprobs: Vec::new(),
        })
    }

    /// The log-probabilities recorded after the first `n`.
    pub(crate) fn logprobs_after(&self, n: usize) -> &[TokenLogprob] {
        self.logprobs.get(n..).unwrap_or(&[])
    }

    pub(crate) fn into_generation(self) -> Generation {
        let logprobs = self.sampler.params().logprobs.map(|_| self.logprobs);
        Generation {
            tokens: self.ids[self.prompt_len..].to_vec(),
            prompt_tokens: self.prompt_len,
            text: self.text,
            finish_reason: self.finish.unwrap_or(FinishReason::Length),
            logprobs,
        }
    }
}

impl LLM {
    /// Loads a compiled model (`.maxa`), or compiles a `.gguf` or a Hugging Face model
    /// directory first (cached under `~/.cache/max/compiled`; needs the `compile` feature).
    pub fn new(path: impl AsRef<Path>, config: PipelineConfig) -> Result<Self> {
        let path = path.as_ref();
        let artifact_path = Self::artifact_for(path, config.device)?;
        let session = match config.threads {
            Some(t) => InferenceSession::with_threads(config.device, t),
            None => InferenceSession::new(config.device),
        };
        Self::from_model(session.load_path(&artifact_path)?, config)
    }

    /// Wraps a loaded compiled LLM (its session's threads are the pipeline's;
    /// `config.threads` is not used here).
    pub fn from_model(model: Model, config: PipelineConfig) -> Result<Self> {
        let loaded = ModelInfo::load(model.artifact())?;
        let info = loaded.info;
        let m = &info.model;
        let max_length = config.max_length.unwrap_or(m.context_length.min(DEFAULT_MAX_LENGTH));
        if max_length < 2 || max_length > m.context_length {
            return Err(LlmError::Config(format!("max_length must be in 2..={} (the model's context), got {max_length}", m.context_length)));
        }
        if config.max_batch_size == 0 {
            return Err(LlmError::Config("max_batch_size must be at least 1".into()));
        }
        if i32::try_from(max_length * config.max_batch_size).is_err() {
            return Err(LlmError::Config("max_length * max_batch_size must fit in 32 bits".into()));
        }
        let dtype = match info.cache_dtype.as_str() {
            "f16" => DType::F16,
            "f32" => DType::F32,
            other => return Err(LlmError::Config(format!("the model declares an unknown KV cache dtype {other:?}"))),
        };
        let shape = [m.n_layers, config.max_batch_size, max_length, m.n_kv_heads, m.head_dim];
        let cache = Mutex::new(model.new_state(vec![Tensor::zeros(dtype, &shape), Tensor::zeros(dtype, &shape)])?);
        Ok(LLM { model, tokenizer: loaded.tokenizer, template: loaded.template, info, max_length, max_batch_size: config.max_batch_size, cache })
    }

    /// The compiled artifact for `path` on `device`: a model file or directory is compiled
    /// into the cache first, for this CPU or that GPU's chip (needs the `compile` feature);
    /// anything else is taken as an artifact.
    #[cfg(feature = "compile")]
    pub fn artifact_for(path: &Path, device: Device) -> Result<std::path::PathBuf> {
        if crate::compile::is_model_file(path) {
            let target = crate::compile::ModelTarget::for_device(device)?;
            let out = crate::compile::compile_cached(path, target, |out| {
                tracing::info!("compiling {} into {} (once)", path.display(), out.display());
            })?;
            return Ok(out);
        }
        Ok(path.to_path_buf())
    }

    /// The compiled artifact for `path`; a model file or directory is an error in a build
    /// without the `compile` feature.
    #[cfg(not(feature = "compile"))]
    pub fn artifact_for(path: &Path, _device: Device) -> Result<std::path::PathBuf> {
        if path.extension().and_then(|e| e.to_str()) == Some("gguf") || crate::hf::is_model_dir(path) {
            return Err(LlmError::NeedsCompiler(path.display().to_string()));
        }
        Ok(path.to_path_buf())
    }

    /// The model's configuration.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The model's tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The model's chat template.
    pub fn chat_template(&self) -> &ChatTemplate {
        &self.template
    }

    /// The longest sequence (prompt plus completion) in tokens.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// The most sequences run together.
    pub fn max_batch_size(&self) -> usize {
        self.max_batch_size
    }

    /// Completes `prompt` with the default sampling parameters ([`SamplingParams::default`]:
    /// temperature 1), up to `max_length`.
    pub fn generate(&self, prompt: &str) -> Result<Generation> {
        self.generate_with(prompt, &SamplingParams::default())
    }

    /// Completes `prompt` with `params`.
    pub fn generate_with(&self, prompt: &str, params: &SamplingParams) -> Result<Generation> {
        self.generate_stream(prompt, params, |_| {})
    }

    /// Completes `prompt`, handing each piece of text to `on_text` as soon as it is final.
    pub fn generate_stream(&self, prompt: &str, params: &SamplingParams, mut on_text: impl FnMut(&str)) -> Result<Generation> {
        let ids = self.encode_prompt(prompt)?;
        Ok(self.generate_ids(vec![ids], params, &mut |_, t| on_text(t))?.remove(0))
    }

    /// Completes every prompt, running them together in batches of up to `max_batch_size`.
    pub fn generate_batch(&self, prompts: &[&str]) -> Result<Vec<Generation>> {
        self.generate_batch_with(prompts, &SamplingParams::default())
    }

    /// [`generate_batch`](Self::generate_batch) with `params` for every prompt.
    pub fn generate_batch_with(&self, prompts: &[&str], params: &SamplingParams) -> Result<Vec<Generation>> {
        let ids = prompts.iter().map(|p| self.encode_prompt(p)).collect::<Result<Vec<_>>>()?;
        self.generate_ids(ids, params, &mut |_, _| {})
    }

    /// Answers a conversation, rendered with the model's chat template.
    pub fn chat(&self, messages: &[ChatMessage]) -> Result<Generation> {
        self.chat_with(messages, &SamplingParams::default())
    }

    /// [`chat`](Self::chat) with `params`.
    pub fn chat_with(&self, messages: &[ChatMessage], params: &SamplingParams) -> Result<Generation> {
        self.chat_stream(messages, params, |_| {})
    }

    /// [`chat`](Self::chat), streaming text to `on_text`.
    pub fn chat_stream(&self, messages: &[ChatMessage], params: &SamplingParams, mut on_text: impl FnMut(&str)) -> Result<Generation> {
        let ids = self.encode_chat(messages)?;
        Ok(self.generate_ids(vec![ids], params, &mut |_, t| on_text(t))?.remove(0))
    }

    /// Token ids of a plain prompt (BOS added if the model asks for it).
    pub fn encode_prompt(&self, prompt: &str) -> Result<Vec<u32>> {
        if prompt.is_empty() {
            return Err(LlmError::EmptyPrompt);
        }
        Ok(self.tokenizer.encode(prompt, true)?)
    }

    /// Token ids of a conversation rendered with the chat template (which writes any BOS
    /// itself), ending with the assistant's turn opened.
    pub fn encode_chat(&self, messages: &[ChatMessage]) -> Result<Vec<u32>> {
        if messages.is_empty() {
            return Err(LlmError::EmptyPrompt);
        }
        let text = self.template.render(messages, true)?;
        Ok(self.tokenizer.encode(&text, false)?)
    }

    /// The next-token logits after `ids` (one prefill; the cache row is reused), for
    /// evaluation and comparisons with other implementations.
    pub fn next_token_logits(&self, ids: &[u32]) -> Result<Vec<f32>> {
        self.check_tokens(ids, self.max_length)?;
        let mut cache = self.lock_cache();
        self.prefill(&mut cache, &[ids.to_vec()], &[0])
    }

    /// Generates from token ids: the core every other method calls. `on_text(i, piece)`
    /// receives prompt `i`'s text as it becomes final.
    pub fn generate_ids(&self, prompts: Vec<Vec<u32>>, params: &SamplingParams, on_text: &mut dyn FnMut(usize, &str)) -> Result<Vec<Generation>> {
        params.validate()?;
        for p in &prompts {
            self.check_prompt(p)?;
        }
        let mut out = Vec::with_capacity(prompts.len());
        for (g, group) in prompts.chunks(self.max_batch_size).enumerate() {
            let base = g * self.max_batch_size;
            out.extend(self.run_group(group, params, &mut |i, t| on_text(base + i, t))?);
        }
        Ok(out)
    }

    /// Checks a prompt's ids for generation: not empty, shorter than `max_length` (room for
    /// one generated token), each a row of the model's embedding table.
    pub fn check_prompt(&self, ids: &[u32]) -> Result<()> {
        self.check_tokens(ids, self.max_length - 1)
    }

    /// `ids` are not empty, at most `longest`, and within the embedding table (the gather
    /// kernel reads row `id` unchecked).
    fn check_tokens(&self, ids: &[u32], longest: usize) -> Result<()> {
        if ids.is_empty() {
            return Err(LlmError::EmptyPrompt);
        }
        if ids.len() > longest {
            return Err(LlmError::PromptTooLong { tokens: ids.len(), max_length: self.max_length });
        }
        let vocab = self.info.model.vocab_size;
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= vocab) {
            return Err(LlmError::Tokenizer(TokenizerError::IdOutOfRange { id, vocab_size: vocab }));
        }
        Ok(())
    }

    /// The KV cache, for exclusive use by one generation loop at a time.
    pub(crate) fn lock_cache(&self) -> std::sync::MutexGuard<'_, State> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One decode step for the `active` rows: feeds each its last token and returns the
    /// logits, `[active, vocab]`.
    pub(crate) fn decode_step(&self, cache: &mut State, rows: &mut [Row], active: &[usize]) -> Result<Vec<f32>> {
        let tokens: Vec<i32> = active.iter().map(|&r| rows[r].ids.last().copied().unwrap_or(0) as i32).collect();
        let positions: Vec<i32> = active.iter().map(|&r| rows[r].cached as i32).collect();
        let starts: Vec<(usize, usize)> = active.iter().map(|&r| (rows[r].cached, rows[r].slot)).collect();
        let last: Vec<i32> = (0..active.len() as i32).collect();
        let logits = self.forward(cache, &tokens, &positions, &starts, &last)?;
        for &r in active {
            rows[r].cached += 1;
        }
        Ok(logits)
    }

    /// One group of at most `max_batch_size` prompts, each in its own cache row.
    fn run_group(&self, prompts: &[Vec<u32>], params: &SamplingParams, on_text: &mut dyn FnMut(usize, &str)) -> Result<Vec<Generation>> {
        let mut cache = self.lock_cache();
        let mut rows = Vec::with_capacity(prompts.len());
        for (slot, p) in prompts.iter().enumerate() {
            rows.push(Row::new(self, slot, p.clone(), params)?);
        }
        let active: Vec<usize> = (0..rows.len()).collect();
        let slots: Vec<usize> = (0..rows.len()).collect();
        let logits = self.prefill(&mut cache, prompts, &slots)?;
        for r in &mut rows {
            r.cached = r.prompt_len;
        }
        self.take_samples(&mut rows, &active, &logits, on_text)?;
        // Decode: one token per unfinished row per step.
        loop {
            let active: Vec<usize> = (0..rows.len()).filter(|&r| rows[r].finish.is_none()).collect();
            if active.is_empty() {
                break;
            }
            let logits = self.decode_step(&mut cache, &mut rows, &active)?;
            self.take_samples(&mut rows, &active, &logits, on_text)?;
        }
        Ok(rows.into_iter().map(Row::into_generation).collect())
    }

    /// Prefills cache rows `slots` with the prompts and returns each row's
    /// next-token logits (`[rows, vocab]`). A batch whose padded size fits
    /// [`PREFILL_CHUNK`] tokens is one call (prompts padded to the longest: each row's logits
    /// are taken at its own last token, and the padding's cache entries are overwritten by
    /// later steps before anything reads them). Larger ones go row by row in chunks of at
    /// most [`PREFILL_CHUNK`] tokens, which bounds the temporaries' memory; a row's chunks
    /// continue where the previous one stopped in the cache.
    pub(crate) fn prefill(&self, cache: &mut State, prompts: &[Vec<u32>], slots: &[usize]) -> Result<Vec<f32>> {
        let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
        if prompts.len() * longest <= PREFILL_CHUNK {
            let mut tokens = Vec::with_capacity(prompts.len() * longest);
            let mut positions = Vec::with_capacity(tokens.capacity());
            let mut last = Vec::with_capacity(prompts.len());
            for (b, p) in prompts.iter().enumerate() {
                tokens.extend(p.iter().map(|&t| t as i32));
                tokens.extend(std::iter::repeat_n(0, longest - p.len()));
                positions.extend(0..longest as i32);
                last.push((b * longest + p.len() - 1) as i32);
            }
            let rows: Vec<(usize, usize)> = slots.iter().map(|&s| (0, s)).collect();
            return self.forward(cache, &tokens, &positions, &rows, &last);
        }
        let mut logits = Vec::with_capacity(prompts.len() * self.info.model.vocab_size);
        for (b, p) in prompts.iter().enumerate() {
            let mut row_logits = Vec::new();
            for (c, chunk) in p.chunks(PREFILL_CHUNK).enumerate() {
                let start = c * PREFILL_CHUNK;
                let tokens: Vec<i32> = chunk.iter().map(|&t| t as i32).collect();
                let positions: Vec<i32> = (start as i32..(start + chunk.len()) as i32).collect();
                row_logits = self.forward(cache, &tokens, &positions, &[(start, slots[b])], &[chunk.len() as i32 - 1])?;
            }
            logits.extend(row_logits);
        }
        Ok(logits)
    }

    /// Runs the forward entry: `tokens`/`positions` flattened over rows, each row's
    /// `(start position, cache slot)`, and the flat index of each row's last token.
    /// Returns the logits, `[rows, vocab]` row-major.
    fn forward(&self, cache: &mut State, tokens: &[i32], positions: &[i32], rows: &[(usize, usize)], last: &[i32]) -> Result<Vec<f32>> {
        let n = tokens.len();
        let b = rows.len();
        let start: Vec<i32> = rows.iter().map(|r| r.0 as i32).collect();
        let slot: Vec<i32> = rows.iter().map(|r| r.1 as i32).collect();
        let inputs = [
            Tensor::from_slice(&[n], tokens)?,
            Tensor::from_slice(&[n], positions)?,
            Tensor::from_slice(&[b], &start)?,
            Tensor::from_slice(&[b], &slot)?,
            Tensor::from_slice(&[b], last)?,
        ];
        let out = self.model.execute_stateful(ENTRY_FORWARD, &inputs, cache)?.remove(0);
        let v = self.info.model.vocab_size;
        if out.shape() != [b, v] {
            return Err(LlmError::Logits { got: out.shape().last().copied().unwrap_or(0), expected: v });
        }
        Ok(out.to_f32_vec())
    }

    /// Samples the next token of each active row from its logits row and updates its text
    /// and finish state.
    pub(crate) fn take_samples(&self, rows: &mut [Row], active: &[usize], logits: &[f32], on_text: &mut dyn FnMut(usize, &str)) -> Result<()> {
        let v = self.info.model.vocab_size;
        for (i, &r) in active.iter().enumerate() {
            let row = &mut rows[r];
            let row_logits = &logits[i * v..(i + 1) * v];
            let sampled = row.sampler.sample(row_logits, &row.ids)?;
            let token = sampled.token;
            row.ids.push(token);
            let generated = row.ids.len() - row.prompt_len;
            let mut emit = String::new();
            let eos = self.tokenizer.is_eos(token) && !row.sampler.params().ignore_eos;
            if let (Some(k), false) = (row.sampler.params().logprobs, eos) {
                let ls = crate::sampling::LogSoftmax::new(row_logits);
                row.logprobs.push(TokenLogprob { token, logprob: ls.logprob(token).unwrap_or(f32::NEG_INFINITY), top: ls.top(k) });
            }
            if eos {
                row.finish = Some(FinishReason::Stop);
            } else if let Some(piece) = row.decoder.step(token)? {
                match row.stops.push(&piece) {
                    StopOutcome::Stop { text, .. } => {
                        emit.push_str(&text);
                        row.finish = Some(FinishReason::Stop);
                    }
                    other => emit.push_str(&other.into_parts().0),
                }
            }
            // A sequence holds at most `max_length` tokens (the next step would write position
            // `ids.len() - 1` into the cache).
            if row.finish.is_none() && (generated >= row.sampler.params().max_tokens || row.ids.len() >= self.max_length) {
                row.finish = Some(FinishReason::Length);
            }
            if row.finish == Some(FinishReason::Length) || (row.finish == Some(FinishReason::Stop) && eos) {
                if let Some(rest) = row.decoder.flush()? {
                    emit.push_str(&row.stops.push(&rest).into_parts().0);
                }
                emit.push_str(&row.stops.finish());
            }
            if !emit.is_empty() {
                row.text.push_str(&emit);
                on_text(r, &emit);
            }
        }
        Ok(())
    }
}
