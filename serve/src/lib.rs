//! The LLM pipeline and serving frontend on top of `max-runtime`.
//!
//! So far: reading GGUF model files ([`gguf`]), dequantizing their ggml block formats to
//! `f32` ([`quant`]), tokenizing text ([`tokenizer`]), rendering chat prompts
//! ([`chat_template`]) and sampling tokens, with stop strings and finish reasons
//! ([`sampling`]).

pub mod chat_template;
pub mod gguf;
pub mod quant;
pub mod sampling;
pub mod tokenizer;
