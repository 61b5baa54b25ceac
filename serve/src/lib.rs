//! The LLM pipeline and serving frontend on top of `max-runtime`.
//!
//! - model files: GGUF ([`gguf`], [`quant`]) and Hugging Face directories ([`hf`]); the
//!   Llama family's configuration and graph ([`llama`]) and BERT embedding models'
//!   ([`bert`]); compiling them into artifacts ([`compile`], with the `compile` feature);
//! - what a compiled LLM carries besides its program ([`model_info`]);
//! - sentence embeddings from a compiled embedding model ([`embedding`]);
//! - text: tokenizers ([`tokenizer`]) and chat templates ([`chat_template`]);
//! - generation: sampling, stop strings and finish reasons ([`sampling`]), the offline
//!   pipeline, [`LLM`] ([`llm`]), and continuous batching over it ([`engine`]);
//! - serving: the OpenAI-compatible HTTP server ([`http`]).

pub mod bert;
pub mod chat_template;
#[cfg(feature = "compile")]
pub mod compile;
pub mod embedding;
pub mod engine;
pub mod gguf;
pub mod hf;
pub mod http;
pub mod llama;
pub mod llm;
pub mod model_info;
pub mod quant;
pub mod sampling;
pub mod tokenizer;

pub use chat_template::ChatMessage;
pub use embedding::{EmbedInput, EmbeddingModel};
pub use llm::{Generation, LlmError, PipelineConfig, TokenLogprob, LLM};
pub use sampling::{FinishReason, SamplingParams};
