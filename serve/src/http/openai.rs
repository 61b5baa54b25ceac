//! OpenAI API request bodies and errors, as the official clients send and expect them.

use crate::sampling::SamplingParams;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};

/// An error in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
    /// `Retry-After` seconds (429).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// 400 `invalid_request_error`, naming the parameter at fault.
    pub fn invalid(message: impl Into<String>, param: Option<&str>) -> Self {
        ApiError { status: StatusCode::BAD_REQUEST, message: message.into(), kind: "invalid_request_error", param: param.map(str::to_string), code: None, retry_after: None }
    }
    pub fn with(mut self, status: StatusCode, code: &'static str) -> Self {
        self.status = status;
        self.code = Some(code);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}});
        let mut r = (self.status, axum::Json(body)).into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut().insert("retry-after", s.into());
        }
        r
    }
}

/// `stop`: a string or a list of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

/// `prompt` of a completion: a string or a list of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// The sampling fields chat and text completions share.
#[derive(Debug, Deserialize)]
pub struct Sampling {
    pub max_tokens: Option<usize>,
    pub max_completion_tokens: Option<usize>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    /// Extension (as vLLM): keep the k most likely tokens.
    pub top_k: Option<i64>,
    pub min_p: Option<f32>,
    pub seed: Option<u64>,
    pub stop: Option<Stop>,
    pub n: Option<usize>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    /// Extension (as vLLM).
    pub repetition_penalty: Option<f32>,
    pub logprobs: Option<Value>,
    pub top_logprobs: Option<u32>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
}

impl Sampling {
    /// The sampling parameters, or a 400 naming the field that is out of range.
    pub fn params(&self) -> Result<SamplingParams, ApiError> {
        let logprobs = self.logprobs()?;
        let d = SamplingParams::default();
        let p = SamplingParams {
            temperature: self.temperature.unwrap_or(d.temperature),
            top_p: self.top_p.unwrap_or(d.top_p),
            top_k: match self.top_k {
                None | Some(-1) | Some(0) => 0,
                Some(k) if k > 0 => k as usize,
                Some(k) => return Err(ApiError::invalid(format!("top_k must be -1, 0 or positive, got {k}"), Some("top_k"))),
            },
            min_p: self.min_p.unwrap_or(d.min_p),
            seed: self.seed,
            repetition_penalty: self.repetition_penalty.unwrap_or(d.repetition_penalty),
            presence_penalty: self.presence_penalty.unwrap_or(d.presence_penalty),
            frequency_penalty: self.frequency_penalty.unwrap_or(d.frequency_penalty),
            max_tokens: self.max_completion_tokens.or(self.max_tokens).unwrap_or(d.max_tokens),
            stop: match &self.stop {
                None => Vec::new(),
                Some(Stop::One(s)) => vec![s.clone()],
                Some(Stop::Many(v)) => v.clone(),
            },
            ignore_eos: false,
            logprobs,
        };
        p.validate().map_err(|e| {
            let param = match &e {
                crate::sampling::SamplingError::InvalidParameter { name, .. } => Some(*name),
                #[allow(unreachable_patterns)]
                _ => None,
            };
            ApiError::invalid(e.to_string(), param)
        })?;
        Ok(p)
    }

    /// How many alternatives to report with each token's log-probability, if any: chat's
    /// `logprobs: true` with `top_logprobs` (0-20), or completions' `logprobs: N` (0-5).
    fn logprobs(&self) -> Result<Option<usize>, ApiError> {
        let top = self.top_logprobs.map(|t| t as usize);
        let wanted = match &self.logprobs {
            None | Some(Value::Null) | Some(Value::Bool(false)) => {
                if top.is_some_and(|t| t > 0) {
                    return Err(ApiError::invalid("top_logprobs needs logprobs: true", Some("top_logprobs")));
                }
                None
            }
            Some(Value::Bool(true)) => match top {
                Some(t) if t > 20 => return Err(ApiError::invalid(format!("top_logprobs must be at most 20, got {t}"), Some("top_logprobs"))),
                t => Some(t.unwrap_or(0)),
            },
            Some(Value::Number(n)) => match n.as_u64() {
                Some(k) if k <= 5 => Some(k as usize),
                _ => return Err(ApiError::invalid(format!("logprobs must be an integer from 0 to 5, got {n}"), Some("logprobs"))),
            },
            Some(other) => return Err(ApiError::invalid(format!("logprobs must be a boolean (chat) or an integer (completions), got {other}"), Some("logprobs"))),
        };
        Ok(wanted)
    }

    /// `n`, at least 1 and at most `max`.
    pub fn n(&self, max: usize) -> Result<usize, ApiError> {
        match self.n.unwrap_or(1) {
            0 => Err(ApiError::invalid("n must be at least 1", Some("n"))),
            n if n > max => Err(ApiError::invalid(format!("n must be at most {max}"), Some("n"))),
            n => Ok(n),
        }
    }

    pub fn include_usage(&self) -> bool {
        self.stream_options.as_ref().is_some_and(|o| o.include_usage)
    }
}

/// A chat message; `content` is a string or a list of text parts.
#[derive(Debug, Deserialize)]
pub struct Message {
    pub role: String,
    #[serde(default)]
    pub content: Option<Value>,
}

impl Message {
    /// The text of `content` (text parts joined).
    pub fn text(&self) -> Result<String, ApiError> {
        match &self.content {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(Value::Array(parts)) => {
                let mut out = String::new();
                for p in parts {
                    match (p.get("type").and_then(Value::as_str), p.get("text").and_then(Value::as_str)) {
                        (Some("text"), Some(t)) => out.push_str(t),
                        _ => return Err(ApiError::invalid("only text content parts are supported", Some("messages"))),
                    }
                }
                Ok(out)
            }
            Some(_) => Err(ApiError::invalid("message content must be a string or a list of parts", Some("messages"))),
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<Message>,
    #[serde(flatten)]
    pub sampling: Sampling,
}

#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    pub model: String,
    pub prompt: Prompt,
    #[serde(flatten)]
    pub sampling: Sampling,
}

#[derive(Debug, Deserialize)]
pub struct TokenizeRequest {
    pub model: Option<String>,
    pub prompt: Option<String>,
    pub messages: Option<Vec<Message>>,
}

#[derive(Debug, Deserialize)]
pub struct DetokenizeRequest {
    pub model: Option<String>,
    pub tokens: Vec<u32>,
}

/// `input` of an embeddings request: text or token ids, one or many.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingInput {
    One(String),
    Many(Vec<String>),
    Tokens(Vec<u32>),
    ManyTokens(Vec<Vec<u32>>),
}

#[derive(Debug, Deserialize)]
pub struct EmbeddingRequest {
    pub model: String,
    pub input: EmbeddingInput,
    /// `float` (default) or `base64` (little-endian f32 bytes).
    pub encoding_format: Option<String>,
    /// Must equal the model's dimension when given (these models do not shorten vectors).
    pub dimensions: Option<usize>,
    /// Accepted and ignored, as OpenAI's end-user tag.
    #[allow(dead_code)]
    pub user: Option<String>,
}
