//! What a compiled LLM artifact carries besides its program: the model configuration, the
//! tokenizer and the chat template, each in a data section.

use crate::chat_template::ChatTemplate;
use crate::llama::LlamaConfig;
use crate::tokenizer::Tokenizer;
use max_runtime::Artifact;
use serde::{Deserialize, Serialize};

/// Data section holding [`ModelInfo`] as JSON.
pub const SECTION_CONFIG: &str = "llm/config.json";
/// Data section holding the tokenizer as `tokenizer.json`.
pub const SECTION_TOKENIZER: &str = "llm/tokenizer.json";
/// Data section holding the chat template (Jinja source).
pub const SECTION_CHAT_TEMPLATE: &str = "llm/chat_template.jinja";
/// The entry point of a compiled LLM.
pub const ENTRY_FORWARD: &str = "forward";

/// Version of the [`ModelInfo`] layout; another value is refused.
pub const MODEL_INFO_VERSION: u32 = 1;

/// Configuration of a compiled LLM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub version: u32,
    /// The model file it was compiled from (file name only).
    pub source: String,
    pub model: LlamaConfig,
    /// dtype of the KV cache the forward entry reads and writes (`f16` or `f32`).
    pub cache_dtype: String,
    /// Tokenizer ids: BOS, end-of-generation ids (declared EOS first).
    pub bos: Option<u32>,
    pub eos: Vec<u32>,
    /// Whether plain prompts get BOS (and EOS) added, per the model's tokenizer metadata.
    pub add_bos: bool,
    pub add_eos: bool,
}

/// Errors reading a compiled LLM's data sections.
#[derive(Debug, thiserror::Error)]
pub enum ModelInfoError {
    #[error("{origin} is not a compiled LLM: it has no '{section}' section (compile a model with `maxc compile-model`)")]
    Missing { origin: String, section: &'static str },
    #[error("{origin}: section '{section}' is invalid: {why}")]
    Invalid { origin: String, section: &'static str, why: String },
}

/// A compiled LLM's configuration, tokenizer and chat template.
pub struct LoadedInfo {
    pub info: ModelInfo,
    pub tokenizer: Tokenizer,
    pub template: ChatTemplate,
}

impl ModelInfo {
    /// Reads the configuration, tokenizer and chat template of a compiled LLM.
    pub fn load(artifact: &Artifact) -> Result<LoadedInfo, ModelInfoError> {
        let origin = artifact.origin().to_string();
        let text = |section: &'static str| -> Result<String, ModelInfoError> {
            let bytes = artifact.data_section(section).ok_or_else(|| ModelInfoError::Missing { origin: origin.clone(), section })?;
            String::from_utf8(bytes.to_vec()).map_err(|e| ModelInfoError::Invalid { origin: origin.clone(), section, why: e.to_string() })
        };
        let invalid = |section: &'static str, why: String| ModelInfoError::Invalid { origin: origin.clone(), section, why };
        let info: ModelInfo = serde_json::from_str(&text(SECTION_CONFIG)?).map_err(|e| invalid(SECTION_CONFIG, e.to_string()))?;
        if info.version != MODEL_INFO_VERSION {
            return Err(invalid(SECTION_CONFIG, format!("version {} (this build reads {MODEL_INFO_VERSION}); recompile the model", info.version)));
        }
        let tokenizer = Tokenizer::from_json(text(SECTION_TOKENIZER)?, info.bos, info.eos.clone(), info.add_bos, info.add_eos)
            .map_err(|e| invalid(SECTION_TOKENIZER, e.to_string()))?;
        let template = ChatTemplate::new(text(SECTION_CHAT_TEMPLATE)?, tokenizer.bos_token(), tokenizer.eos_token())
            .map_err(|e| invalid(SECTION_CHAT_TEMPLATE, e.to_string()))?;
        Ok(LoadedInfo { info, tokenizer, template })
    }
}
