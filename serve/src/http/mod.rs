//! `max serve`: an OpenAI-compatible HTTP server (axum on tokio) over compiled models.
//!
//! Each served text-generation model has a continuous-batching [`Engine`]; each embedding
//! model runs its requests one batch at a time. The server binds first and loads and warms
//! the models in the background: `/health` answers 503 until they are ready.
//! Routes: `/v1/chat/completions`, `/v1/completions` (plain and SSE streaming),
//! `/v1/embeddings`, `/v1/models[/{id}]`, `/tokenize`, `/detokenize`, `/health`, `/metrics`.

pub mod metrics;
pub mod openai;

use crate::chat_template::ChatMessage;
use crate::embedding::{EmbedInput, EmbeddingError, EmbeddingModel};
use crate::engine::{Engine, Event, SubmitError};
use crate::llm::{Generation, LlmError, PipelineConfig, TokenLogprob, LLM};
use crate::sampling::{FinishReason, SamplingParams};
use axum::extract::{DefaultBodyLimit, FromRequest, Path as UrlPath, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::{self, Stream, StreamExt};
use metrics::Metrics;
use openai::{ApiError, ChatRequest, CompletionRequest, DetokenizeRequest, EmbeddingInput, EmbeddingRequest, Prompt, TokenizeRequest};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio_stream::wrappers::UnboundedReceiverStream;

/// What to serve and how.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// `(served name, model path)`: a `.maxa`, or a `.gguf` or Hugging Face model directory
    /// compiled on first use (and cached).
    pub models: Vec<(String, PathBuf)>,
    pub host: String,
    pub port: u16,
    /// Most requests generating at once per model (KV-cache rows).
    pub max_batch_size: usize,
    /// Longest sequence (prompt plus completion) per request.
    pub max_cache_length: usize,
    /// Requests that may wait for a cache row before the server answers 429.
    pub max_waiting: usize,
    /// Required `Authorization: Bearer` key, if any.
    pub api_key: Option<String>,
    /// CPU worker threads, shared by every model (default: all cores).
    pub threads: Option<usize>,
    /// Where the models run (`--devices`).
    pub device: max_runtime::Device,
    /// Largest request body, bytes.
    pub body_limit: usize,
}

struct Served {
    name: String,
    backend: Backend,
    created: u64,
}

/// What runs a served model's requests.
enum Backend {
    /// A text-generation model: chat and completions.
    Llm(Engine),
    /// An embedding model: embeddings.
    Embedding { model: Arc<EmbeddingModel>, running: AtomicUsize, prompt_tokens: AtomicUsize },
}

impl Served {
    /// The engine of a text-generation model, or a 400 saying this model only embeds.
    fn engine(&self) -> Result<&Engine, ApiError> {
        match &self.backend {
            Backend::Llm(e) => Ok(e),
            Backend::Embedding { .. } => {
                Err(ApiError::invalid(format!("model `{}` is an embedding model: it serves /v1/embeddings, not text generation", self.name), Some("model")))
            }
        }
    }

    fn tokenizer(&self) -> &crate::tokenizer::Tokenizer {
        match &self.backend {
            Backend::Llm(e) => e.llm().tokenizer(),
            Backend::Embedding { model, .. } => model.tokenizer(),
        }
    }

    /// The longest sequence in tokens: prompt plus completion, or an embedding's input.
    fn max_len(&self) -> usize {
        match &self.backend {
            Backend::Llm(e) => e.llm().max_length(),
            Backend::Embedding { model, .. } => model.max_tokens(),
        }
    }
}

struct AppState {
    config: ServeConfig,
    models: OnceLock<Vec<Served>>,
    ready: AtomicBool,
    metrics: Metrics,
    next_id: AtomicU64,
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The routes, over state that becomes ready when `load` finishes.
fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics_text))
        .route("/v1/models", get(list_models))
        .route("/v1/models/{id}", get(get_model))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/embeddings", post(embeddings))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .fallback(|| async { ApiError::invalid("no such route", None).with(StatusCode::NOT_FOUND, "not_found") })
        .layer(DefaultBodyLimit::max(state.config.body_limit))
        .with_state(state)
}

/// Loads every model (compiling `.gguf`s and model directories), starts the engines and runs
/// one token (or one embedding) through each so kernels are warm.
///
/// All models load into one session: they share its worker threads (`--threads`, default
/// all cores), so requests to two models at once split the cores rather than each model's
/// pool claiming all of them.
fn load(config: &ServeConfig) -> Result<Vec<Served>, String> {
    let mut out = Vec::new();
    let session = match config.threads {
        Some(t) => max_runtime::InferenceSession::with_threads(config.device, t),
        None => max_runtime::InferenceSession::new(config.device),
    };
    for (name, path) in &config.models {
        let failed = |e: &dyn std::fmt::Display| format!("model '{name}' ({}): {e}", path.display());
        let artifact = LLM::artifact_for(path, config.device).map_err(|e| failed(&e))?;
        let model = session.load_path(&artifact).map_err(|e| failed(&e))?;
        if crate::embedding::is_embedding_artifact(model.artifact()) {
            let model = EmbeddingModel::from_model(model).map_err(|e| failed(&e))?;
            model.embed(&[EmbedInput::Text("Hello".into())]).map_err(|e| failed(&e))?;
            tracing::info!("embedding model '{name}' ready");
            let backend = Backend::Embedding { model: Arc::new(model), running: AtomicUsize::new(0), prompt_tokens: AtomicUsize::new(0) };
            out.push(Served { name: name.clone(), backend, created: now() });
            continue;
        }
        let pipeline = PipelineConfig { max_length: Some(config.max_cache_length), max_batch_size: config.max_batch_size, threads: config.threads, device: config.device };
        let llm = LLM::from_model(model, pipeline).map_err(|e| failed(&e))?;
        let ids = llm.encode_prompt("Hello").map_err(|e| failed(&e))?;
        let engine = Engine::new(Arc::new(llm), config.max_waiting);
        if let Ok(mut rx) = engine.submit(ids, SamplingParams { max_tokens: 1, ..SamplingParams::greedy() }) {
            while let Some(e) = rx.blocking_recv() {
                if matches!(e, Event::Done(_) | Event::Failed(_)) {
                    break;
                }
            }
        }
        tracing::info!("model '{name}' ready");
        out.push(Served { name: name.clone(), backend: Backend::Llm(engine), created: now() });
    }
    Ok(out)
}

/// Serves until `shutdown` resolves (then stops accepting and finishes in-flight requests).
/// `on_bound` gets the bound address (port 0 picks one).
pub async fn serve(config: ServeConfig, on_bound: impl FnOnce(std::net::SocketAddr), shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind((config.host.as_str(), config.port)).await?;
    on_bound(listener.local_addr()?);
    let state = Arc::new(AppState { config, models: OnceLock::new(), ready: AtomicBool::new(false), metrics: Metrics::default(), next_id: AtomicU64::new(1) });
    {
        let state = state.clone();
        tokio::task::spawn_blocking(move || match load(&state.config) {
            Ok(models) => {
                let _ = state.models.set(models);
                state.ready.store(true, Ordering::SeqCst);
            }
            Err(e) => {
                tracing::error!("loading models failed: {e}");
                eprintln!("max serve: error: loading models failed: {e}");
                std::process::exit(1);
            }
        });
    }
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// JSON bodies whose rejections are OpenAI errors.
struct ApiJson<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(rej) => {
                let status = match rej.status() {
                    StatusCode::PAYLOAD_TOO_LARGE => StatusCode::PAYLOAD_TOO_LARGE,
                    StatusCode::UNSUPPORTED_MEDIA_TYPE => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    _ => StatusCode::BAD_REQUEST,
                };
                let mut e = ApiError::invalid(rej.body_text(), None);
                e.status = status;
                Err(e)
            }
        }
    }
}

impl AppState {
    fn check(&self, headers: &HeaderMap) -> Result<&[Served], ApiError> {
        if let Some(key) = &self.config.api_key {
            let given = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
            if given != Some(key.as_str()) {
                let mut e = ApiError::invalid("Incorrect API key provided", None).with(StatusCode::UNAUTHORIZED, "invalid_api_key");
                e.kind = "authentication_error";
                return Err(e);
            }
        }
        match self.models.get() {
            Some(m) if self.ready.load(Ordering::SeqCst) => Ok(m),
            _ => {
                let mut e = ApiError::invalid("the server is loading its models", None).with(StatusCode::SERVICE_UNAVAILABLE, "loading");
                e.kind = "server_error";
                e.retry_after = Some(1);
                Err(e)
            }
        }
    }

    fn model<'a>(&self, models: &'a [Served], name: Option<&str>) -> Result<&'a Served, ApiError> {
        match name {
            None if models.len() == 1 => Ok(&models[0]),
            None => Err(ApiError::invalid("model is required", Some("model"))),
            Some(n) => models
                .iter()
                .find(|m| m.name == n)
                .ok_or_else(|| ApiError::invalid(format!("The model `{n}` does not exist."), Some("model")).with(StatusCode::NOT_FOUND, "model_not_found")),
        }
    }

    fn id(&self, prefix: &str) -> String {
        format!("{prefix}-{:x}{:08x}", now(), self.next_id.fetch_add(1, Ordering::Relaxed))
    }
}

async fn health(State(s): State<Arc<AppState>>) -> Response {
    if s.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ok").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "loading").into_response()
    }
}

async fn metrics_text(State(s): State<Arc<AppState>>) -> Response {
    let engines: Vec<metrics::EngineGauges> = s
        .models
        .get()
        .map(|m| {
            m.iter()
                .map(|m| {
                    let l = |a: &AtomicUsize| a.load(Ordering::Relaxed);
                    match &m.backend {
                        Backend::Llm(engine) => {
                            let st = engine.stats();
                            (m.name.clone(), l(&st.waiting), l(&st.running), l(&st.prompt_tokens), l(&st.generated_tokens))
                        }
                        Backend::Embedding { running, prompt_tokens, .. } => (m.name.clone(), 0, l(running), l(prompt_tokens), 0),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    ([("content-type", "text/plain; version=0.0.4")], s.metrics.render(&engines)).into_response()
}

fn model_json(m: &Served) -> Value {
    let mut v = json!({"id": m.name, "object": "model", "created": m.created, "owned_by": "max", "max_model_len": m.max_len()});
    if let Backend::Embedding { model, .. } = &m.backend {
        v["task"] = json!("embedding");
        v["dimensions"] = json!(model.dimensions());
    } else {
        v["task"] = json!("generate");
    }
    v
}

async fn list_models(State(s): State<Arc<AppState>>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let models = s.check(&headers)?;
    Ok(Json(json!({"object": "list", "data": models.iter().map(model_json).collect::<Vec<_>>()})))
}

async fn get_model(State(s): State<Arc<AppState>>, headers: HeaderMap, UrlPath(id): UrlPath<String>) -> Result<Json<Value>, ApiError> {
    let models = s.check(&headers)?;
    Ok(Json(model_json(s.model(models, Some(&id))?)))
}

fn llm_error(e: LlmError, param: &str) -> ApiError {
    match e {
        LlmError::PromptTooLong { tokens, max_length } => ApiError::invalid(
            format!("This model's maximum context length is {max_length} tokens. However, your prompt is {tokens} tokens (it must leave room for at least one generated token)."),
            Some(param),
        )
        .with(StatusCode::BAD_REQUEST, "context_length_exceeded"),
        other => ApiError::invalid(other.to_string(), Some(param)),
    }
}

fn submit_error(e: SubmitError, param: &str) -> ApiError {
    match e {
        SubmitError::Invalid(e) => llm_error(e, param),
        SubmitError::QueueFull(_) => {
            let mut e = ApiError::invalid(e.to_string(), None).with(StatusCode::TOO_MANY_REQUESTS, "rate_limit_exceeded");
            e.kind = "rate_limit_error";
            e.retry_after = Some(1);
            e
        }
        SubmitError::Stopped => {
            let mut e = ApiError::invalid(e.to_string(), None).with(StatusCode::SERVICE_UNAVAILABLE, "shutting_down");
            e.kind = "server_error";
            e
        }
    }
}

/// One generation of a response: which choice it is and its events.
struct Job {
    index: usize,
    rx: tokio::sync::mpsc::UnboundedReceiver<Event>,
    prompt_tokens: usize,
}

/// Submits `n` generations of each prompt (choice index `p * n + j`; seeded requests get
/// `seed + j` so their choices differ).
fn submit_all(served: &Served, prompts: Vec<Vec<u32>>, params: &SamplingParams, n: usize, param: &str) -> Result<Vec<Job>, ApiError> {
    let mut jobs = Vec::new();
    for (p, ids) in prompts.into_iter().enumerate() {
        for j in 0..n {
            let mut pj = params.clone();
            pj.seed = params.seed.map(|s| s.wrapping_add(j as u64));
            let prompt_tokens = ids.len();
            let rx = served.engine()?.submit(ids.clone(), pj).map_err(|e| submit_error(e, param))?;
            jobs.push(Job { index: p * n + j, rx, prompt_tokens });
        }
    }
    Ok(jobs)
}

/// Waits for every job, recording latencies.
async fn collect(metrics: &Metrics, started: Instant, jobs: Vec<Job>) -> Result<Vec<(usize, usize, Generation)>, ApiError> {
    let mut out = Vec::new();
    for mut job in jobs {
        let mut first = None;
        loop {
            match job.rx.recv().await {
                Some(Event::Text(..)) => {
                    first.get_or_insert_with(|| metrics.time_to_first_token.observe(started.elapsed().as_secs_f64()));
                }
                Some(Event::Done(g)) => {
                    metrics.e2e_latency.observe(started.elapsed().as_secs_f64());
                    out.push((job.index, job.prompt_tokens, g));
                    break;
                }
                Some(Event::Failed(e)) => {
                    let mut err = ApiError::invalid(e, None).with(StatusCode::INTERNAL_SERVER_ERROR, "generation_failed");
                    err.kind = "server_error";
                    return Err(err);
                }
                None => return Err(ApiError::invalid("generation ended unexpectedly", None).with(StatusCode::INTERNAL_SERVER_ERROR, "internal")),
            }
        }
    }
    out.sort_by_key(|o| o.0);
    Ok(out)
}

fn usage(results: &[(usize, usize, Generation)], prompts: &[usize]) -> Value {
    let prompt: usize = prompts.iter().sum();
    let completion: usize = results.iter().map(|r| r.2.tokens.len()).sum();
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

fn finish(r: FinishReason) -> &'static str {
    r.as_str()
}

/// The SSE stream of a streamed response: `make_chunk(index, text, logprobs, finish)` builds
/// each chunk (`logprobs`: the entries of the tokens it carries, if the request asked for
/// them); `head` chunks go first; usage (if asked) and `[DONE]` last.
fn sse(
    state: Arc<AppState>,
    started: Instant,
    jobs: Vec<Job>,
    head: Vec<Value>,
    make_chunk: impl Fn(usize, Option<&str>, &[TokenLogprob], Option<FinishReason>) -> Value + Send + Sync + 'static,
    usage_chunk: Option<impl Fn(Value) -> Value + Send + Sync + 'static>,
    prompt_tokens: usize,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let completion = Arc::new(AtomicU64::new(0));
    let streams = jobs.into_iter().map(|j| {
        let index = j.index;
        let mut last: Option<Instant> = None;
        // Log-probabilities sent so far: the final chunk carries the rest (tokens whose text
        // never showed, e.g. cut by a stop string).
        let mut sent = 0usize;
        let state = state.clone();
        UnboundedReceiverStream::new(j.rx).map(move |e| {
            let now = Instant::now();
            let mut rest = Vec::new();
            match &e {
                Event::Text(_, lp) => sent += lp.len(),
                Event::Done(g) => rest = g.logprobs.as_ref().and_then(|l| l.get(sent..)).unwrap_or(&[]).to_vec(),
                Event::Failed(_) => {}
            }
            match &e {
                Event::Text(..) => match last {
                    None => state.metrics.time_to_first_token.observe(started.elapsed().as_secs_f64()),
                    Some(t) => state.metrics.inter_token_latency.observe((now - t).as_secs_f64()),
                },
                Event::Done(_) => state.metrics.e2e_latency.observe(started.elapsed().as_secs_f64()),
                Event::Failed(_) => {}
            }
            if matches!(e, Event::Text(..)) {
                last = Some(now);
            }
            (index, e, rest)
        })
    });
    let make_chunk = Arc::new(make_chunk);
    let counted = completion.clone();
    let body = stream::select_all(streams).map(move |(index, e, rest)| {
        let chunk = match e {
            Event::Text(t, lp) => make_chunk(index, Some(&t), &lp, None),
            Event::Done(g) => {
                counted.fetch_add(g.tokens.len() as u64, Ordering::Relaxed);
                make_chunk(index, None, &rest, Some(g.finish_reason))
            }
            Event::Failed(msg) => json!({"error": {"message": msg, "type": "server_error", "param": null, "code": "generation_failed"}}),
        };
        Ok(SseEvent::default().data(chunk.to_string()))
    });
    let tail = stream::once(async move {
        let mut events = Vec::new();
        if let Some(u) = usage_chunk {
            let c = completion.load(Ordering::Relaxed) as usize;
            let chunk = u(json!({"prompt_tokens": prompt_tokens, "completion_tokens": c, "total_tokens": prompt_tokens + c}));
            events.push(Ok(SseEvent::default().data(chunk.to_string())));
        }
        events.push(Ok(SseEvent::default().data("[DONE]")));
        stream::iter(events)
    })
    .flatten();
    stream::iter(head.into_iter().map(|h| Ok(SseEvent::default().data(h.to_string())))).chain(body).chain(tail)
}

/// Runs a completion handler, counting the request and any error it answers with.
async fn counted<F: std::future::Future<Output = Result<Response, ApiError>>>(s: &AppState, handler: impl FnOnce(Instant) -> F) -> Result<Response, ApiError> {
    s.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let r = handler(Instant::now()).await;
    if r.is_err() {
        s.metrics.errors.fetch_add(1, Ordering::Relaxed);
    }
    r
}

async fn chat(State(s): State<Arc<AppState>>, headers: HeaderMap, ApiJson(req): ApiJson<ChatRequest>) -> Result<Response, ApiError> {
    counted(&s.clone(), |started| chat_inner(s, started, headers, req)).await
}

async fn chat_inner(s: Arc<AppState>, started: Instant, headers: HeaderMap, req: ChatRequest) -> Result<Response, ApiError> {
    let models = s.check(&headers)?;
    let served = s.model(models, Some(&req.model))?;
    let params = req.sampling.params()?;
    let n = req.sampling.n(s.config.max_batch_size.max(1) * 4)?;
    if req.messages.is_empty() {
        return Err(ApiError::invalid("messages must not be empty", Some("messages")));
    }
    let messages = req.messages.iter().map(|m| Ok(ChatMessage::new(m.role.clone(), m.text()?))).collect::<Result<Vec<_>, ApiError>>()?;
    let ids = served.engine()?.llm().encode_chat(&messages).map_err(|e| llm_error(e, "messages"))?;
    let prompt_tokens = ids.len();
    let jobs = submit_all(served, vec![ids], &params, n, "messages")?;
    let (id, created, model) = (s.id("chatcmpl"), now(), served.name.clone());
    if req.sampling.stream {
        let (id2, model2) = (id.clone(), model.clone());
        let (tok, want) = (served.tokenizer().clone(), params.logprobs.is_some());
        let chunk = move |index: usize, text: Option<&str>, lp: &[TokenLogprob], fin: Option<FinishReason>| {
            let delta = match text {
                Some(t) => json!({"content": t}),
                None => json!({}),
            };
            let logprobs = if want { chat_logprobs(&tok, lp) } else { Value::Null };
            json!({"id": id2, "object": "chat.completion.chunk", "created": created, "model": model2,
                   "choices": [{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": fin.map(finish)}]})
        };
        let head: Vec<Value> = (0..n)
            .map(|i| json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                            "choices": [{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}]}))
            .collect();
        let usage = req.sampling.include_usage().then(|| {
            let (id, model) = (id.clone(), model.clone());
            move |u: Value| json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model, "choices": [], "usage": u})
        });
        return Ok(Sse::new(sse(s.clone(), started, jobs, head, chunk, usage, prompt_tokens * n)).keep_alive(KeepAlive::default()).into_response());
    }
    let results = collect(&s.metrics, started, jobs).await?;
    let tok = served.tokenizer();
    let choices: Vec<Value> = results
        .iter()
        .map(|(i, _, g)| {
            let logprobs = g.logprobs.as_deref().map_or(Value::Null, |lp| chat_logprobs(tok, lp));
            json!({"index": i, "message": {"role": "assistant", "content": g.text}, "logprobs": logprobs, "finish_reason": finish(g.finish_reason)})
        })
        .collect();
    Ok(Json(json!({"id": id, "object": "chat.completion", "created": created, "model": model, "choices": choices, "usage": usage(&results, &vec![prompt_tokens; n])})).into_response())
}

async fn completions(State(s): State<Arc<AppState>>, headers: HeaderMap, ApiJson(req): ApiJson<CompletionRequest>) -> Result<Response, ApiError> {
    counted(&s.clone(), |started| completions_inner(s, started, headers, req)).await
}

async fn completions_inner(s: Arc<AppState>, started: Instant, headers: HeaderMap, req: CompletionRequest) -> Result<Response, ApiError> {
    let models = s.check(&headers)?;
    let served = s.model(models, Some(&req.model))?;
    let params = req.sampling.params()?;
    let n = req.sampling.n(s.config.max_batch_size.max(1) * 4)?;
    let prompts: Vec<String> = match req.prompt {
        Prompt::One(p) => vec![p],
        Prompt::Many(v) => v,
    };
    if prompts.is_empty() {
        return Err(ApiError::invalid("prompt must not be empty", Some("prompt")));
    }
    let llm = served.engine()?.llm();
    let ids = prompts.iter().map(|p| llm.encode_prompt(p).map_err(|e| llm_error(e, "prompt"))).collect::<Result<Vec<_>, _>>()?;
    let per_choice: Vec<usize> = ids.iter().flat_map(|i| std::iter::repeat_n(i.len(), n)).collect();
    let jobs = submit_all(served, ids, &params, n, "prompt")?;
    let (id, created, model) = (s.id("cmpl"), now(), served.name.clone());
    if req.sampling.stream {
        let (id2, model2) = (id.clone(), model.clone());
        let (tok, want) = (served.tokenizer().clone(), params.logprobs.is_some());
        // text_offset counts from the start of each choice's text, across its chunks.
        let offsets = std::sync::Mutex::new(vec![0usize; per_choice.len()]);
        let chunk = move |index: usize, text: Option<&str>, lp: &[TokenLogprob], fin: Option<FinishReason>| {
            let logprobs = if want {
                let mut offsets = offsets.lock().unwrap_or_else(|e| e.into_inner());
                completion_logprobs(&tok, lp, &mut offsets[index])
            } else {
                Value::Null
            };
            json!({"id": id2, "object": "text_completion", "created": created, "model": model2,
                   "choices": [{"index": index, "text": text.unwrap_or(""), "logprobs": logprobs, "finish_reason": fin.map(finish)}]})
        };
        let usage = req.sampling.include_usage().then(|| {
            let (id, model) = (id.clone(), model.clone());
            move |u: Value| json!({"id": id, "object": "text_completion", "created": created, "model": model, "choices": [], "usage": u})
        });
        let total: usize = per_choice.iter().sum();
        return Ok(Sse::new(sse(s.clone(), started, jobs, Vec::new(), chunk, usage, total)).keep_alive(KeepAlive::default()).into_response());
    }
    let results = collect(&s.metrics, started, jobs).await?;
    let tok = served.tokenizer();
    let choices: Vec<Value> = results
        .iter()
        .map(|(i, _, g)| {
            let logprobs = g.logprobs.as_deref().map_or(Value::Null, |lp| completion_logprobs(tok, lp, &mut 0));
            json!({"index": i, "text": g.text, "logprobs": logprobs, "finish_reason": finish(g.finish_reason)})
        })
        .collect();
    Ok(Json(json!({"id": id, "object": "text_completion", "created": created, "model": model, "choices": choices, "usage": usage(&results, &per_choice)})).into_response())
}

/// A token's text as it appears in the output (its bytes may be part of a longer UTF-8
/// character: then the text has replacement characters and `bytes` has the truth).
fn token_text(tok: &crate::tokenizer::Tokenizer, id: u32) -> (String, Vec<u8>) {
    let text = tok.decode(&[id], false).unwrap_or_default();
    let bytes = text.as_bytes().to_vec();
    (text, bytes)
}

/// Chat's `logprobs` of some tokens: `{"content": [{token, logprob, bytes, top_logprobs: [...]}]}`.
fn chat_logprobs(tok: &crate::tokenizer::Tokenizer, lps: &[TokenLogprob]) -> Value {
    let entry = |id: u32, lp: f32| {
        let (text, bytes) = token_text(tok, id);
        json!({"token": text, "logprob": lp, "bytes": bytes})
    };
    let content: Vec<Value> = lps
        .iter()
        .map(|t| {
            let mut e = entry(t.token, t.logprob);
            e["top_logprobs"] = Value::Array(t.top.iter().map(|&(id, lp)| entry(id, lp)).collect());
            e
        })
        .collect();
    json!({"content": content})
}

/// Completions' legacy `logprobs` of some tokens: `{tokens, token_logprobs, top_logprobs,
/// text_offset}`; `offset` is where the first token's text starts, advanced past the last.
fn completion_logprobs(tok: &crate::tokenizer::Tokenizer, lps: &[TokenLogprob], offset: &mut usize) -> Value {
    let (mut tokens, mut logprobs, mut tops, mut offsets) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for t in lps {
        let (text, _) = token_text(tok, t.token);
        offsets.push(*offset);
        *offset += text.len();
        tokens.push(text);
        logprobs.push(t.logprob);
        let top: serde_json::Map<String, Value> = t.top.iter().map(|&(id, lp)| (token_text(tok, id).0, json!(lp))).collect();
        tops.push(Value::Object(top));
    }
    json!({"tokens": tokens, "token_logprobs": logprobs, "top_logprobs": tops, "text_offset": offsets})
}

async fn embeddings(State(s): State<Arc<AppState>>, headers: HeaderMap, ApiJson(req): ApiJson<EmbeddingRequest>) -> Result<Response, ApiError> {
    counted(&s.clone(), |_| embeddings_inner(s, headers, req)).await
}

fn embedding_error(e: EmbeddingError) -> ApiError {
    match e {
        e @ (EmbeddingError::EmptyInput { .. } | EmbeddingError::TooLong { .. } | EmbeddingError::BadToken { .. } | EmbeddingError::Tokenizer(_)) => {
            let code = if matches!(e, EmbeddingError::TooLong { .. }) { "context_length_exceeded" } else { "invalid_input" };
            ApiError::invalid(e.to_string(), Some("input")).with(StatusCode::BAD_REQUEST, code)
        }
        other => {
            let mut err = ApiError::invalid(other.to_string(), None).with(StatusCode::INTERNAL_SERVER_ERROR, "embedding_failed");
            err.kind = "server_error";
            err
        }
    }
}

/// Little-endian f32 bytes, base64 (what OpenAI's `encoding_format: "base64"` returns).
fn base64_f32(v: &[f32]) -> String {
    use base64::Engine as _;
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

async fn embeddings_inner(s: Arc<AppState>, headers: HeaderMap, req: EmbeddingRequest) -> Result<Response, ApiError> {
    let models = s.check(&headers)?;
    let served = s.model(models, Some(&req.model))?;
    let Backend::Embedding { model, running, prompt_tokens } = &served.backend else {
        return Err(ApiError::invalid(format!("model `{}` is a text-generation model and does not serve embeddings", served.name), Some("model")));
    };
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => return Err(ApiError::invalid(format!("encoding_format must be \"float\" or \"base64\", got {other:?}"), Some("encoding_format"))),
    };
    if let Some(d) = req.dimensions {
        if d != model.dimensions() {
            return Err(ApiError::invalid(format!("model `{}` makes {}-dimensional vectors and cannot shorten them; got dimensions {d}", served.name, model.dimensions()), Some("dimensions")));
        }
    }
    let inputs: Vec<EmbedInput> = match req.input {
        EmbeddingInput::One(t) => vec![EmbedInput::Text(t)],
        EmbeddingInput::Many(v) => v.into_iter().map(EmbedInput::Text).collect(),
        EmbeddingInput::Tokens(ids) => vec![EmbedInput::Tokens(ids)],
        EmbeddingInput::ManyTokens(v) => v.into_iter().map(EmbedInput::Tokens).collect(),
    };
    if inputs.is_empty() {
        return Err(ApiError::invalid("input must not be empty", Some("input")));
    }
    const MAX_INPUTS: usize = 2048;
    if inputs.len() > MAX_INPUTS {
        return Err(ApiError::invalid(format!("input has {} items; at most {MAX_INPUTS} per request", inputs.len()), Some("input")));
    }
    let ids = model.tokenize(&inputs).map_err(embedding_error)?;
    let tokens: usize = ids.iter().map(Vec::len).sum();
    let model = model.clone();
    running.fetch_add(1, Ordering::Relaxed);
    let vectors = tokio::task::spawn_blocking(move || model.embed_ids(&ids)).await;
    running.fetch_sub(1, Ordering::Relaxed);
    let vectors = vectors.map_err(|e| ApiError::invalid(e.to_string(), None).with(StatusCode::INTERNAL_SERVER_ERROR, "internal"))?.map_err(embedding_error)?;
    prompt_tokens.fetch_add(tokens, Ordering::Relaxed);
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 { json!(base64_f32(v)) } else { json!(v) };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    Ok(Json(json!({"object": "list", "data": data, "model": served.name, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})).into_response())
}

async fn tokenize(State(s): State<Arc<AppState>>, headers: HeaderMap, ApiJson(req): ApiJson<TokenizeRequest>) -> Result<Json<Value>, ApiError> {
    let models = s.check(&headers)?;
    let served = s.model(models, req.model.as_deref())?;
    let ids = match (&req.prompt, &req.messages) {
        (Some(p), None) => served.tokenizer().encode(p, true).map_err(|e| ApiError::invalid(e.to_string(), Some("prompt")))?,
        (None, Some(m)) => {
            let messages = m.iter().map(|m| Ok(ChatMessage::new(m.role.clone(), m.text()?))).collect::<Result<Vec<_>, ApiError>>()?;
            served.engine()?.llm().encode_chat(&messages).map_err(|e| llm_error(e, "messages"))?
        }
        _ => return Err(ApiError::invalid("give exactly one of prompt and messages", Some("prompt"))),
    };
    Ok(Json(json!({"count": ids.len(), "max_model_len": served.max_len(), "tokens": ids})))
}

async fn detokenize(State(s): State<Arc<AppState>>, headers: HeaderMap, ApiJson(req): ApiJson<DetokenizeRequest>) -> Result<Json<Value>, ApiError> {
    let models = s.check(&headers)?;
    let served = s.model(models, req.model.as_deref())?;
    let text = served.tokenizer().decode(&req.tokens, false).map_err(|e| ApiError::invalid(e.to_string(), Some("tokens")))?;
    Ok(Json(json!({"prompt": text})))
}
