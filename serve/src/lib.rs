//! The LLM pipeline and serving frontend on top of `max-runtime`.
//!
//! So far: reading GGUF model files ([`gguf`]) and dequantizing their ggml block formats to
//! `f32` ([`quant`]).

pub mod gguf;
pub mod quant;
