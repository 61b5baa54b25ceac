//! Sentence embeddings from a compiled embedding model (BERT family; see [`crate::bert`]).
//!
//! The host code tokenizes, sorts inputs by length and pads each batch to its longest
//! member (so little compute goes to padding), then runs the compiled `embed` entry; every
//! tensor computation, pooling and normalization included, runs in the artifact's kernels.

use crate::bert::BertConfig;
use crate::tokenizer::{Tokenizer, TokenizerError};
use max_runtime::{Device, InferenceSession, Model, RuntimeError, Tensor};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Data section holding [`EmbeddingInfo`] as JSON.
pub const SECTION_EMBEDDING_CONFIG: &str = "embedding/config.json";
/// Data section holding the tokenizer as `tokenizer.json`.
pub const SECTION_EMBEDDING_TOKENIZER: &str = "embedding/tokenizer.json";
/// The entry point of a compiled embedding model.
pub const ENTRY_EMBED: &str = "embed";
/// Version of the [`EmbeddingInfo`] layout; another value is refused.
pub const EMBEDDING_INFO_VERSION: u32 = 1;
/// Most inputs one `embed` call takes (larger requests run in batches).
pub const EMBED_BATCH: usize = 32;

/// What a compiled embedding model carries besides its program.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingInfo {
    pub version: u32,
    /// The model directory it was compiled from (its name only).
    pub source: String,
    pub model: BertConfig,
}

/// Errors of the embedding pipeline.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddingError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("tokenizer: {0}")]
    Tokenizer(#[from] TokenizerError),
    #[error("{origin} is not a compiled embedding model: it has no '{SECTION_EMBEDDING_CONFIG}' section")]
    NotEmbedding { origin: String },
    #[error("{origin}: section '{section}' is invalid: {why}")]
    Invalid { origin: String, section: &'static str, why: String },
    #[error("input {index} is empty")]
    EmptyInput { index: usize },
    #[error("input {index} is {tokens} tokens long, but this model takes at most {max} tokens")]
    TooLong { index: usize, tokens: usize, max: usize },
    #[error("input {index}: token id {id} is outside the vocabulary ({vocab} tokens)")]
    BadToken { index: usize, id: u32, vocab: usize },
    #[error("the model returned {got} values for {inputs} inputs of dimension {dim}")]
    Output { got: usize, inputs: usize, dim: usize },
}

/// An input to embed: text, or token ids already tokenized.
#[derive(Debug, Clone, PartialEq)]
pub enum EmbedInput {
    Text(String),
    Tokens(Vec<u32>),
}

/// A loaded embedding model.
pub struct EmbeddingModel {
    model: Model,
    info: EmbeddingInfo,
    tokenizer: Tokenizer,
}

impl std::fmt::Debug for EmbeddingModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddingModel").field("model", &self.info.source).finish()
    }
}

/// Whether a compiled artifact is an embedding model.
pub fn is_embedding_artifact(artifact: &max_runtime::Artifact) -> bool {
    artifact.data_section(SECTION_EMBEDDING_CONFIG).is_some()
}

impl EmbeddingModel {
    /// Loads a compiled embedding model (`.maxa`).
    pub fn new(path: impl AsRef<Path>, threads: Option<usize>) -> Result<Self, EmbeddingError> {
        let session = match threads {
            Some(t) => InferenceSession::with_threads(Device::Cpu, t),
            None => InferenceSession::new(Device::Cpu),
        };
        Self::from_model(session.load_path(path)?)
    }

    /// Wraps a loaded artifact.
    pub fn from_model(model: Model) -> Result<Self, EmbeddingError> {
        let origin = model.artifact().origin().to_string();
        let section = |name: &'static str| -> Result<String, EmbeddingError> {
            let bytes = model.artifact().data_section(name).ok_or_else(|| EmbeddingError::NotEmbedding { origin: origin.clone() })?;
            String::from_utf8(bytes.to_vec()).map_err(|e| EmbeddingError::Invalid { origin: origin.clone(), section: name, why: e.to_string() })
        };
        let invalid = |section: &'static str, why: String| EmbeddingError::Invalid { origin: origin.clone(), section, why };
        let info: EmbeddingInfo = serde_json::from_str(&section(SECTION_EMBEDDING_CONFIG)?).map_err(|e| invalid(SECTION_EMBEDDING_CONFIG, e.to_string()))?;
        if info.version != EMBEDDING_INFO_VERSION {
            return Err(invalid(SECTION_EMBEDDING_CONFIG, format!("version {} (this build reads {EMBEDDING_INFO_VERSION}); recompile the model", info.version)));
        }
        let tokenizer = Tokenizer::from_json(section(SECTION_EMBEDDING_TOKENIZER)?, None, Vec::new(), false, false)
            .map_err(|e| invalid(SECTION_EMBEDDING_TOKENIZER, e.to_string()))?;
        Ok(EmbeddingModel { model, info, tokenizer })
    }

    /// The model's configuration.
    pub fn info(&self) -> &EmbeddingInfo {
        &self.info
    }

    /// The model's tokenizer (its post-processor adds `[CLS]` and `[SEP]`).
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Length of the vectors.
    pub fn dimensions(&self) -> usize {
        self.info.model.hidden
    }

    /// Longest input in tokens.
    pub fn max_tokens(&self) -> usize {
        self.info.model.max_tokens
    }

    /// The token ids of every input, checked: text is tokenized with the special tokens;
    /// given ids are taken as they are.
    pub fn tokenize(&self, inputs: &[EmbedInput]) -> Result<Vec<Vec<u32>>, EmbeddingError> {
        let (max, vocab) = (self.max_tokens(), self.info.model.vocab_size);
        inputs
            .iter()
            .enumerate()
            .map(|(index, input)| {
                let ids = match input {
                    EmbedInput::Text(t) if t.is_empty() => return Err(EmbeddingError::EmptyInput { index }),
                    EmbedInput::Text(t) => self.tokenizer.encode(t, true)?,
                    EmbedInput::Tokens(ids) => ids.clone(),
                };
                if ids.is_empty() {
                    return Err(EmbeddingError::EmptyInput { index });
                }
                if ids.len() > max {
                    return Err(EmbeddingError::TooLong { index, tokens: ids.len(), max });
                }
                if let Some(&id) = ids.iter().find(|&&id| id as usize >= vocab) {
                    return Err(EmbeddingError::BadToken { index, id, vocab });
                }
                Ok(ids)
            })
            .collect()
    }

    /// One vector per input, in input order.
    pub fn embed(&self, inputs: &[EmbedInput]) -> Result<Vec<Vec<f32>>, EmbeddingError> {
        let ids = self.tokenize(inputs)?;
        self.embed_ids(&ids)
    }

    /// One vector per checked id sequence ([`tokenize`](Self::tokenize)), in order.
    pub fn embed_ids(&self, ids: &[Vec<u32>]) -> Result<Vec<Vec<f32>>, EmbeddingError> {
        // Longest first, so each batch pads to a length close to all its members'.
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(ids[i].len()));
        let dim = self.dimensions();
        let mut out = vec![Vec::new(); ids.len()];
        for batch in order.chunks(EMBED_BATCH) {
            let t = ids[batch[0]].len();
            let b = batch.len();
            let mut tokens = vec![0i32; b * t];
            let mut mask = vec![0f32; b * t];
            for (r, &i) in batch.iter().enumerate() {
                for (c, &id) in ids[i].iter().enumerate() {
                    tokens[r * t + c] = id as i32;
                    mask[r * t + c] = 1.0;
                }
            }
            let positions: Vec<i32> = (0..t as i32).collect();
            let result = self.model.execute_entry(
                ENTRY_EMBED,
                &[Tensor::from_slice(&[b, t], &tokens)?, Tensor::from_slice(&[t], &positions)?, Tensor::from_slice(&[b, t], &mask)?],
            )?;
            let values = result.first().map(Tensor::to_f32_vec).unwrap_or_default();
            if values.len() != b * dim {
                return Err(EmbeddingError::Output { got: values.len(), inputs: b, dim });
            }
            for (r, &i) in batch.iter().enumerate() {
                out[i] = values[r * dim..(r + 1) * dim].to_vec();
            }
        }
        Ok(out)
    }
}
