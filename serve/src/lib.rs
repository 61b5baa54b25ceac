//! The LLM pipeline and serving frontend on top of `max-runtime`.
//!
//! So far: reading GGUF model files ([`gguf`]), dequantizing their ggml block formats to
//! `f32` ([`quant`]), tokenizing text ([`tokenizer`]) and rendering chat prompts
//! ([`chat_template`]).

pub mod chat_template;
pub mod gguf;
pub mod quant;
pub mod tokenizer;
