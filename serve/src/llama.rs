//! The Llama family: its hyperparameters from GGUF metadata, and (with the `compile`
//! feature) its forward pass as a `max` graph.
//!
//! One graph serves prefill and decode. Its tokens are flattened over the batch
//! (`N = batch * seq`), so every projection is one 2-D (quantized) matmul:
//!
//! - inputs: `tokens[N]`, `positions[N]` (absolute position of each token), `start[B]`
//!   (position of each row's first token), `slot[B]` (each row's KV-cache row), `last[B]`
//!   (flat index of the token whose logits each row wants), and the mutable
//!   `k_cache`/`v_cache` `[layers, max_batch, max_len, kv_heads, head_dim]` (f16);
//! - output: `logits[B, vocab]`.
//!
//! Per layer: RMS norm, the Q/K/V projection (the three weights side by side, one matmul,
//! its output split, where their storage types allow), RoPE on Q and K, the K/V cache
//! writes, causal grouped-query attention over the cache, the output projection and
//! residual, then RMS norm, the SwiGLU MLP (gate and up as one matmul) and residual.
//! Weights stay in their GGUF block layout where a kernel reads it (Q4_0, Q4_1, Q5_0, Q5_1,
//! Q8_0, Q4_K, Q6_K); other types are expanded to f32 at compile time.

use crate::gguf::{GgufError, GgufFile, MetadataValue};
use crate::hf::{HfDir, HfError};
use serde::{Deserialize, Serialize};

/// Architectures this module builds.
pub const SUPPORTED_ARCHITECTURES: &[&str] = &["llama"];

/// What can be wrong with a model file.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The GGUF could not be read.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// `general.architecture` is not one this module builds.
    #[error("unsupported model architecture \"{0}\" (supported: llama)")]
    Architecture(String),
    /// A hyperparameter is missing or out of range.
    #[error("model metadata: {0}")]
    Metadata(String),
    /// A tensor is missing or has an unexpected shape or type.
    #[error("tensor {name}: {why}")]
    Tensor { name: String, why: String },
}

/// Llama hyperparameters, as stored in a compiled model's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    /// `general.architecture`.
    pub architecture: String,
    /// `general.name`, if any.
    pub name: Option<String>,
    pub n_layers: usize,
    pub n_embd: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub n_ff: usize,
    pub vocab_size: usize,
    pub rope_base: f64,
    pub rms_eps: f64,
    /// The context the model was trained for.
    pub context_length: usize,
    /// RoPE over adjacent pairs (GGUF's permuted Q/K) rather than halves (Hugging Face).
    pub rope_interleaved: bool,
    /// The output head is the embedding table (Hugging Face's `tie_word_embeddings`).
    #[serde(default)]
    pub tied_embeddings: bool,
}

fn meta_f64(g: &GgufFile, key: &str) -> Option<f64> {
    match g.get(key)? {
        MetadataValue::F32(v) => Some(*v as f64),
        MetadataValue::F64(v) => Some(*v),
        other => other.as_u64().map(|v| v as f64),
    }
}

impl LlamaConfig {
    /// Reads the hyperparameters of a GGUF model, refusing other architectures by name.
    pub fn from_gguf(g: &GgufFile) -> Result<Self, ModelError> {
        let arch = g.get_str("general.architecture")?.to_string();
        if !SUPPORTED_ARCHITECTURES.contains(&arch.as_str()) {
            return Err(ModelError::Architecture(arch));
        }
        let key = |k: &str| format!("{arch}.{k}");
        let uint = |k: &str| -> Result<usize, ModelError> { Ok(g.get_uint(&key(k))? as usize) };
        let n_embd = uint("embedding_length")?;
        let n_heads = uint("attention.head_count")?;
        let n_kv_heads = if g.get(&key("attention.head_count_kv")).is_some() { uint("attention.head_count_kv")? } else { n_heads };
        if n_heads == 0 || n_kv_heads == 0 || n_heads % n_kv_heads != 0 || n_embd % n_heads != 0 {
            return Err(ModelError::Metadata(format!("{n_heads} heads and {n_kv_heads} KV heads do not divide an embedding of {n_embd}")));
        }
        let head_dim = n_embd / n_heads;
        if head_dim % 8 != 0 {
            return Err(ModelError::Metadata(format!("head dim {head_dim} is not a multiple of 8")));
        }
        let embd = g.tensor_info("token_embd.weight").ok_or_else(|| ModelError::Tensor { name: "token_embd.weight".into(), why: "missing".into() })?;
        let vocab_size = embd.dims.get(1).copied().unwrap_or(0) as usize;
        let cfg = LlamaConfig {
            name: g.get_str("general.name").ok().map(str::to_string),
            n_layers: uint("block_count")?,
            n_embd,
            n_heads,
            n_kv_heads,
            head_dim,
            n_ff: uint("feed_forward_length")?,
            vocab_size,
            rope_base: meta_f64(g, &key("rope.freq_base")).unwrap_or(10000.0),
            rms_eps: meta_f64(g, &key("attention.layer_norm_rms_epsilon")).unwrap_or(1e-5),
            context_length: uint("context_length")?,
            rope_interleaved: true,
            tied_embeddings: g.tensor_info("output.weight").is_none(),
            architecture: arch,
        };
        if cfg.n_layers == 0 || cfg.vocab_size == 0 || cfg.context_length == 0 {
            return Err(ModelError::Metadata("block_count, vocabulary and context_length must be positive".into()));
        }
        Ok(cfg)
    }
}

/// The Hugging Face (`model.layers.N...`) name of a Llama GGUF tensor name
/// (`blk.N.attn_q.weight` is `model.layers.N.self_attn.q_proj.weight`).
pub fn hf_tensor_name(gguf_name: &str) -> String {
    let base = gguf_name.strip_suffix(".weight").unwrap_or(gguf_name);
    if let Some(rest) = base.strip_prefix("blk.") {
        let (layer, part) = rest.split_once('.').unwrap_or((rest, ""));
        let hf = match part {
            "attn_norm" => "input_layernorm",
            "attn_q" => "self_attn.q_proj",
            "attn_k" => "self_attn.k_proj",
            "attn_v" => "self_attn.v_proj",
            "attn_output" => "self_attn.o_proj",
            "ffn_norm" => "post_attention_layernorm",
            "ffn_gate" => "mlp.gate_proj",
            "ffn_up" => "mlp.up_proj",
            "ffn_down" => "mlp.down_proj",
            other => other,
        };
        return format!("model.layers.{layer}.{hf}.weight");
    }
    match base {
        "token_embd" => "model.embed_tokens.weight".into(),
        "output_norm" => "model.norm.weight".into(),
        "output" => "lm_head.weight".into(),
        other => format!("{other}.weight"),
    }
}

/// Hugging Face architectures read as Llama.
pub const HF_LLAMA_ARCHITECTURES: &[&str] = &["LlamaForCausalLM", "MistralForCausalLM"];

impl LlamaConfig {
    /// Reads the hyperparameters of a Hugging Face Llama directory (`config.json`).
    pub fn from_hf(d: &HfDir) -> Result<Self, ModelError> {
        let meta = |e: HfError| ModelError::Metadata(e.to_string());
        let arch = d.architecture().unwrap_or_default().to_string();
        if !HF_LLAMA_ARCHITECTURES.contains(&arch.as_str()) {
            return Err(ModelError::Architecture(arch));
        }
        if !d.config["rope_scaling"].is_null() {
            return Err(ModelError::Metadata(format!("rope_scaling {} is not supported", d.config["rope_scaling"])));
        }
        for flag in ["attention_bias", "mlp_bias"] {
            if d.config[flag].as_bool() == Some(true) {
                return Err(ModelError::Metadata(format!("{flag} is not supported")));
            }
        }
        let n_embd = d.usize("hidden_size").map_err(meta)?;
        let n_heads = d.usize("num_attention_heads").map_err(meta)?;
        let n_kv_heads = if d.config["num_key_value_heads"].is_null() { n_heads } else { d.usize("num_key_value_heads").map_err(meta)? };
        let head_dim = if d.config["head_dim"].is_null() { n_embd / n_heads } else { d.usize("head_dim").map_err(meta)? };
        if n_heads % n_kv_heads != 0 || head_dim % 8 != 0 {
            return Err(ModelError::Metadata(format!("{n_heads} heads, {n_kv_heads} KV heads and head dim {head_dim} are not supported (KV heads must divide heads; head dim a multiple of 8)")));
        }
        Ok(LlamaConfig {
            name: d.config["_name_or_path"].as_str().map(str::to_string),
            n_layers: d.usize("num_hidden_layers").map_err(meta)?,
            n_embd,
            n_heads,
            n_kv_heads,
            head_dim,
            n_ff: d.usize("intermediate_size").map_err(meta)?,
            vocab_size: d.usize("vocab_size").map_err(meta)?,
            rope_base: d.f64_or("rope_theta", 10000.0).map_err(meta)?,
            rms_eps: d.f64_or("rms_norm_eps", 1e-6).map_err(meta)?,
            context_length: d.usize("max_position_embeddings").map_err(meta)?,
            rope_interleaved: false,
            tied_embeddings: d.config["tie_word_embeddings"].as_bool().unwrap_or(false) || !d.has("lm_head.weight"),
            architecture: arch,
        })
    }
}

#[cfg(feature = "compile")]
pub use graph::{build_graph, build_graph_with, LlamaWeights, CACHE_DTYPE};

#[cfg(feature = "compile")]
mod graph {
    use super::{LlamaConfig, ModelError};
    use crate::gguf::GgufFile;
    use crate::hf::{HfDir, HfError};
    use crate::quant::GgmlType;
    use max_compiler::graph_api::TensorValue;
    use max_compiler::weights::WeightData;
    use max_compiler::{ops, DType, Dim, Graph, TensorType};
    use max_dialects::QuantFormat;

    /// dtype of the KV cache (as llama.cpp's default).
    pub const CACHE_DTYPE: DType = DType::F16;

    /// A projection weight as the graph reads it.
    enum Linear {
        /// GGUF blocks `[N, K/32 * bytes]`, `y = x @ dequantize(w)^T`.
        Quant(TensorValue, QuantFormat),
        /// `[K, N]` (transposed at compile time), `y = x @ w`: f32, or bf16/f16 with the
        /// activations rounded to that type for the product (accumulated in f32).
        Dense(TensorValue, DType),
    }

    impl Linear {
        /// `x @ w`. A dense bf16/f16 weight reads `x` cast to its type (where two
        /// projections read one activation, the compiler's graph-cse stage leaves one cast).
        fn apply(&self, x: &TensorValue) -> TensorValue {
            self.apply_rounded(&self.round(x))
        }

        /// `x` as [`Linear::apply`] reads it: cast to a dense bf16/f16 weight's type.
        fn round(&self, x: &TensorValue) -> TensorValue {
            match self {
                Linear::Dense(_, dt) if *dt != DType::F32 => ops::cast(x, *dt),
                _ => x.clone(),
            }
        }

        /// [`Linear::apply`] to an `x` already [`Linear::round`]ed.
        fn apply_rounded(&self, x: &TensorValue) -> TensorValue {
            match self {
                // Activations quantized to 8 bits per block, as llama.cpp computes.
                Linear::Quant(w, f) => ops::qmatmul_q8(x, w, *f),
                Linear::Dense(w, DType::F32) => ops::matmul(x, w),
                Linear::Dense(w, _) => ops::cast(&ops::matmul(x, w), DType::F32),
            }
        }
    }

    fn block_format(ty: GgmlType) -> Option<QuantFormat> {
        match ty {
            GgmlType::Q4_0 => Some(QuantFormat::Q4_0),
            GgmlType::Q4_1 => Some(QuantFormat::Q4_1),
            GgmlType::Q8_0 => Some(QuantFormat::Q8_0),
            GgmlType::Q5_0 => Some(QuantFormat::Q5_0),
            GgmlType::Q5_1 => Some(QuantFormat::Q5_1),
            GgmlType::Q4_K => Some(QuantFormat::Q4K),
            GgmlType::Q6_K => Some(QuantFormat::Q6K),
            _ => None,
        }
    }

    /// Where the weights come from.
    #[derive(Clone, Copy)]
    pub enum LlamaWeights<'a> {
        /// A GGUF file: llama.cpp's tensor names, block-quantized types kept where a kernel
        /// reads them.
        Gguf(&'a GgufFile),
        /// A Hugging Face directory: `model.layers.N...` names, widened to f32 (or, with
        /// [`build_graph_with`]'s `keep_half`, bf16/f16 projections kept).
        Hf(&'a HfDir),
        /// No data: every weight declared with its shape (projections and the embedding
        /// table in this dtype, norms in f32), for an artifact compiled with external weights
        /// that the runtime generates (benchmarks of a model's shape, such as Llama-3.1-8B's).
        Shapes(DType),
        /// No data: the projections, the head and the embedding table declared as GGUF
        /// blocks of this format (norms in f32), as a model quantized throughout (Q4_K)
        /// would store them; for decode benchmarks of quantized shapes.
        QuantShapes(QuantFormat),
    }

    fn hf_error(e: HfError) -> ModelError {
        match e {
            HfError::Tensor { name, why } => ModelError::Tensor { name, why },
            other => ModelError::Metadata(other.to_string()),
        }
    }

    struct Builder<'a> {
        weights: LlamaWeights<'a>,
        graph: &'a Graph,
        /// bf16/f16 projections, head and embedding table keep their type.
        keep_half: bool,
    }

    impl Builder<'_> {
        fn has(&self, name: &str) -> bool {
            match self.weights {
                LlamaWeights::Gguf(g) => g.tensor_info(name).is_some(),
                LlamaWeights::Hf(d) => d.has(&super::hf_tensor_name(name)),
                LlamaWeights::Shapes(_) | LlamaWeights::QuantShapes(_) => true,
            }
        }

        fn gguf_info<'g>(gguf: &'g GgufFile, name: &str) -> Result<&'g crate::gguf::TensorInfo, ModelError> {
            gguf.tensor_info(name).ok_or_else(|| ModelError::Tensor { name: name.into(), why: "missing from the GGUF".into() })
        }

        fn check_dims(gguf: &GgufFile, name: &str, want: &[u64]) -> Result<(), ModelError> {
            let info = Self::gguf_info(gguf, name)?;
            if info.dims != want {
                return Err(ModelError::Tensor { name: name.into(), why: format!("has dims {:?}, expected {want:?}", info.dims) });
            }
            Ok(())
        }

        /// The f32 values of a `[rows, cols]` weight (row-major), any stored type.
        fn dense(&self, name: &str, rows: usize, cols: usize) -> Result<(String, Vec<f32>), ModelError> {
            match self.weights {
                LlamaWeights::Gguf(g) => {
                    Self::check_dims(g, name, &[cols as u64, rows as u64])?;
                    Ok((name.to_string(), g.tensor(name)?.dequantize()?))
                }
                LlamaWeights::Hf(d) => {
                    let hf = super::hf_tensor_name(name);
                    let v = d.f32(&hf, &[rows, cols]).map_err(hf_error)?;
                    Ok((hf, v))
                }
                LlamaWeights::Shapes(_) | LlamaWeights::QuantShapes(_) => unreachable!("shape-only weights are declared without data"),
            }
        }

        /// A `[rows, cols]` weight's name, dtype and bytes (row-major) as stored, where it is
        /// bf16/f16 and the builder keeps such weights.
        fn half(&self, name: &str, rows: usize, cols: usize) -> Result<Option<(String, DType, Vec<u8>)>, ModelError> {
            if !self.keep_half {
                return Ok(None);
            }
            match self.weights {
                LlamaWeights::Gguf(g) => {
                    Self::check_dims(g, name, &[cols as u64, rows as u64])?;
                    let t = g.tensor(name)?;
                    let dt = match t.info().ty {
                        GgmlType::BF16 => DType::BF16,
                        GgmlType::F16 => DType::F16,
                        _ => return Ok(None),
                    };
                    Ok(Some((name.to_string(), dt, t.data().to_vec())))
                }
                LlamaWeights::Hf(d) => {
                    let hf = super::hf_tensor_name(name);
                    Ok(d.half(&hf, &[rows, cols]).map_err(hf_error)?.map(|(dt, b)| (hf, dt, b)))
                }
                LlamaWeights::Shapes(_) | LlamaWeights::QuantShapes(_) => Ok(None),
            }
        }

        /// Where in-memory weight data came from, for messages about it.
        fn origin(&self) -> &'static str {
            if matches!(self.weights, LlamaWeights::Gguf(_)) { "gguf" } else { "safetensors" }
        }

        /// GGUF blocks a kernel reads as they are, if `name` is stored in such a type.
        fn blocks(&self, name: &str, rows: usize, cols: usize) -> Result<Option<(TensorValue, QuantFormat)>, ModelError> {
            if let LlamaWeights::QuantShapes(f) = self.weights {
                return Ok(Some((self.graph.weight(name, DType::I8, &Self::block_shape(f, rows, cols)?), f)));
            }
            let LlamaWeights::Gguf(g) = self.weights else { return Ok(None) };
            Self::check_dims(g, name, &[cols as u64, rows as u64])?;
            let t = g.tensor(name)?;
            let Some(f) = block_format(t.info().ty).filter(|f| cols as i64 % f.block_len() == 0) else { return Ok(None) };
            let shape = [rows as i64, cols as i64 / f.block_len() * f.block_bytes()];
            self.graph.set_weight(name, WeightData { dtype: DType::I8, shape: shape.to_vec(), bytes: t.data().to_vec(), origin: "gguf".into() });
            Ok(Some((self.graph.weight(name, DType::I8, &shape), f)))
        }

        /// The `[rows, bytes]` shape of a `[rows, cols]` weight in `f`'s blocks.
        fn block_shape(f: QuantFormat, rows: usize, cols: usize) -> Result<[i64; 2], ModelError> {
            if cols as i64 % f.block_len() != 0 {
                return Err(ModelError::Metadata(format!("rows of {cols} weights are not whole {} blocks of {}", f.name(), f.block_len())));
            }
            Ok([rows as i64, cols as i64 / f.block_len() * f.block_bytes()])
        }

        /// A weight `[rows, cols]` (ggml dims `[cols, rows]`) for `x @ w^T`.
        fn linear(&self, name: &str, rows: usize, cols: usize) -> Result<Linear, ModelError> {
            if let LlamaWeights::Shapes(dt) = self.weights {
                return Ok(Linear::Dense(self.graph.weight(format!("{name}^T"), dt, &[cols as i64, rows as i64]), dt));
            }
            if let Some((w, f)) = self.blocks(name, rows, cols)? {
                return Ok(Linear::Quant(w, f));
            }
            if let Some((stored, dt, bytes)) = self.half(name, rows, cols)? {
                let name = format!("{stored}^T");
                let shape = [cols as i64, rows as i64];
                self.graph.set_weight(&name, WeightData { dtype: dt, shape: shape.to_vec(), bytes: transpose_halves(&[(&bytes, rows)], cols), origin: self.origin().into() });
                return Ok(Linear::Dense(self.graph.weight(name, dt, &shape), dt));
            }
            // Other types are expanded to f32 and stored transposed, `[cols, rows]`.
            let (stored, w) = self.dense(name, rows, cols)?;
            let tr = transposed_side_by_side(&[(&w, rows)], cols);
            // Named apart from the untransposed tensor: a tied head and the embedding table
            // are one tensor in the file but two layouts here.
            Ok(Linear::Dense(self.graph.weight_f32(format!("{stored}^T"), &[cols as i64, rows as i64], &tr), DType::F32))
        }

        /// `x` through several projections (`parts`: each weight's name and output width;
        /// `cols` the input width), as one matmul over their weights side by side whose
        /// output is split: Llama's q/k/v and gate/up. One matrix-vector product reads all
        /// the weights in one pass, which matters most for the narrow K/V projections of
        /// grouped-query attention. Block-quantized weights merge when they share a format
        /// (their rows are stacked as stored); a mix of formats (llama.cpp's Q4_K_M stores
        /// attn_v in another type than attn_q) keeps one matmul per weight.
        fn project(&self, x: &TensorValue, merged_name: &str, parts: &[(String, usize)], cols: usize) -> Result<Vec<TensorValue>, ModelError> {
            let rows: usize = parts.iter().map(|(_, r)| r).sum();
            let sizes: Vec<i64> = parts.iter().map(|(_, r)| *r as i64).collect();
            let split = |w: Linear| ops::split_sizes(&w.apply(x), &sizes, 1);
            if let LlamaWeights::Shapes(dt) = self.weights {
                return Ok(split(Linear::Dense(self.graph.weight(format!("{merged_name}^T"), dt, &[cols as i64, rows as i64]), dt)));
            }
            if let LlamaWeights::QuantShapes(f) = self.weights {
                return Ok(split(Linear::Quant(self.graph.weight(merged_name, DType::I8, &Self::block_shape(f, rows, cols)?), f)));
            }
            if let LlamaWeights::Gguf(g) = self.weights {
                let mut formats = Vec::new();
                for (name, r) in parts {
                    Self::check_dims(g, name, &[cols as u64, *r as u64])?;
                    formats.push(block_format(g.tensor(name)?.info().ty).filter(|f| cols as i64 % f.block_len() == 0));
                }
                match formats[0] {
                    Some(f) if formats.iter().all(|x| *x == Some(f)) => {
                        let mut bytes = Vec::new();
                        for (name, _) in parts {
                            bytes.extend_from_slice(g.tensor(name)?.data());
                        }
                        let shape = [rows as i64, cols as i64 / f.block_len() * f.block_bytes()];
                        self.graph.set_weight(merged_name, WeightData { dtype: DType::I8, shape: shape.to_vec(), bytes, origin: "gguf".into() });
                        return Ok(split(Linear::Quant(self.graph.weight(merged_name, DType::I8, &shape), f)));
                    }
                    _ if formats.iter().any(Option::is_some) => {
                        return parts.iter().map(|(name, r)| Ok(self.linear(name, *r, cols)?.apply(x))).collect();
                    }
                    _ => {}
                }
            }
            // bf16/f16 parts of one type keep it, side by side like the f32 ones below.
            let mut halves = Vec::new();
            for (name, r) in parts {
                match self.half(name, *r, cols)? {
                    Some((_, dt, bytes)) if halves.first().is_none_or(|(d, _, _)| *d == dt) => halves.push((dt, bytes, *r)),
                    _ => break,
                }
            }
            if halves.len() == parts.len() {
                let dt = halves[0].0;
                let shape = [cols as i64, rows as i64];
                let name = format!("{merged_name}^T");
                let data: Vec<(&[u8], usize)> = halves.iter().map(|(_, b, r)| (b.as_slice(), *r)).collect();
                self.graph.set_weight(&name, WeightData { dtype: dt, shape: shape.to_vec(), bytes: transpose_halves(&data, cols), origin: self.origin().into() });
                return Ok(split(Linear::Dense(self.graph.weight(name, dt, &shape), dt)));
            }
            // f32, stored transposed: `[cols, rows]`, each part's columns after the last's.
            let ws = parts.iter().map(|(name, r)| Ok((self.dense(name, *r, cols)?.1, *r))).collect::<Result<Vec<_>, ModelError>>()?;
            let tr = transposed_side_by_side(&ws.iter().map(|(w, r)| (w.as_slice(), *r)).collect::<Vec<_>>(), cols);
            Ok(split(Linear::Dense(self.graph.weight_f32(format!("{merged_name}^T"), &[cols as i64, rows as i64], &tr), DType::F32)))
        }

        /// A 1-D f32 weight (norm scales).
        fn vector(&self, name: &str, n: usize) -> Result<TensorValue, ModelError> {
            let (stored, v) = match self.weights {
                LlamaWeights::Gguf(g) => {
                    Self::check_dims(g, name, &[n as u64])?;
                    (name.to_string(), g.tensor(name)?.dequantize()?)
                }
                LlamaWeights::Hf(d) => {
                    let hf = super::hf_tensor_name(name);
                    let v = d.f32(&hf, &[n]).map_err(hf_error)?;
                    (hf, v)
                }
                LlamaWeights::Shapes(_) | LlamaWeights::QuantShapes(_) => return Ok(self.graph.weight(name, DType::F32, &[n as i64])),
            };
            Ok(self.graph.weight_f32(&stored, &[n as i64], &v))
        }

        /// Embedding rows of `tokens`, as f32 `[N, n_embd]`.
        fn embed(&self, tokens: &TensorValue, cfg: &LlamaConfig) -> Result<TensorValue, ModelError> {
            let name = "token_embd.weight";
            let (v, e) = (cfg.vocab_size, cfg.n_embd);
            if let LlamaWeights::Shapes(dt) = self.weights {
                let table = self.graph.weight(name, dt, &[v as i64, e as i64]);
                return Ok(ops::cast(&ops::gather(&table, tokens, 0), DType::F32));
            }
            if let Some((table, f)) = self.blocks(name, v, e)? {
                return Ok(ops::dequantize(&ops::gather(&table, tokens, 0), f));
            }
            if let Some((stored, dt, bytes)) = self.half(name, v, e)? {
                let shape = [v as i64, e as i64];
                self.graph.set_weight(&stored, WeightData { dtype: dt, shape: shape.to_vec(), bytes, origin: self.origin().into() });
                return Ok(ops::cast(&ops::gather(&self.graph.weight(stored, dt, &shape), tokens, 0), DType::F32));
            }
            let (stored, w) = self.dense(name, v, e)?;
            let table = self.graph.weight_f32(&stored, &[v as i64, e as i64], &w);
            Ok(ops::gather(&table, tokens, 0))
        }
    }

    /// `parts` (each `[rows, cols]`, row-major) transposed and side by side: `[cols, sum of
    /// rows]`, each part's columns after the previous one's.
    fn transposed_side_by_side<T: Copy + Default>(parts: &[(&[T], usize)], cols: usize) -> Vec<T> {
        let total: usize = parts.iter().map(|(_, r)| r).sum();
        let mut out = vec![T::default(); total * cols];
        let mut first = 0;
        for (values, rows) in parts {
            for i in 0..*rows {
                for c in 0..cols {
                    out[c * total + first + i] = values[i * cols + c];
                }
            }
            first += rows;
        }
        out
    }

    /// [`transposed_side_by_side`] of 2-byte values given as little-endian bytes.
    fn transpose_halves(parts: &[(&[u8], usize)], cols: usize) -> Vec<u8> {
        let pairs: Vec<(Vec<[u8; 2]>, usize)> = parts.iter().map(|(b, r)| (b.chunks_exact(2).map(|p| [p[0], p[1]]).collect(), *r)).collect();
        let views: Vec<(&[[u8; 2]], usize)> = pairs.iter().map(|(p, r)| (p.as_slice(), *r)).collect();
        transposed_side_by_side(&views, cols).into_iter().flatten().collect()
    }

    /// Builds the forward graph (named `forward`) of a Llama model, bf16/f16 weights of a
    /// GGUF file or directory widened to f32.
    pub fn build_graph(weights: LlamaWeights<'_>, cfg: &LlamaConfig) -> Result<Graph, ModelError> {
        build_graph_with(weights, cfg, false)
    }

    /// [`build_graph`]; with `keep_half`, the projections, the head and the embedding table
    /// of a GGUF file or directory keep their type where it is bf16 or f16, and the
    /// activations are rounded to it for each product (accumulated in f32), as for
    /// [`LlamaWeights::Shapes`] of that type: half the bytes of f32, read on a GPU by its
    /// 16-bit tensor-core and matrix-vector kernels. Norms stay f32.
    pub fn build_graph_with(weights: LlamaWeights<'_>, cfg: &LlamaConfig, keep_half: bool) -> Result<Graph, ModelError> {
        let (l, hq, hkv, hd) = (cfg.n_layers as i64, cfg.n_heads as i64, cfg.n_kv_heads as i64, cfg.head_dim as i64);
        let i32s = |dims: Vec<Dim>| TensorType::new(DType::I32, dims);
        let cache = || TensorType::new(CACHE_DTYPE, [Dim::from(l), Dim::dynamic("max_batch"), Dim::dynamic("max_len"), Dim::from(hkv), Dim::from(hd)]);
        let graph = Graph::with_named_inputs(
            "forward",
            [
                ("tokens", i32s(vec![Dim::dynamic("N")])),
                ("positions", i32s(vec![Dim::dynamic("N")])),
                ("start", i32s(vec![Dim::dynamic("B")])),
                ("slot", i32s(vec![Dim::dynamic("B")])),
                ("last", i32s(vec![Dim::dynamic("B")])),
                ("k_cache", cache()),
                ("v_cache", cache()),
            ],
        );
        let b = Builder { weights, graph: &graph, keep_half };
        let inp = graph.inputs();
        let (tokens, positions, start, slot, last) = (&inp[0], &inp[1], &inp[2], &inp[3], &inp[4]);
        let (mut kc, mut vc) = (inp[5].clone(), inp[6].clone());
        let (e, ff) = (cfg.n_embd, cfg.n_ff);
        let (qdim, kvdim) = (cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim);
        let mut x = b.embed(tokens, cfg)?;
        for layer in 0..cfg.n_layers {
            let p = |n: &str| format!("blk.{layer}.{n}.weight");
            let h = ops::rms_norm(&x, &b.vector(&p("attn_norm"), e)?, cfg.rms_eps);
            let qkv = b.project(&h, &p("attn_qkv"), &[(p("attn_q"), qdim), (p("attn_k"), kvdim), (p("attn_v"), kvdim)], e)?;
            let q = ops::reshape(&qkv[0], &[-1, hq, hd]);
            let k = ops::reshape(&qkv[1], &[-1, hkv, hd]);
            let v = ops::reshape(&qkv[2], &[-1, hkv, hd]);
            let q = ops::rope(&q, positions, cfg.rope_base, cfg.rope_interleaved);
            let k = ops::rope(&k, positions, cfg.rope_base, cfg.rope_interleaved);
            kc = ops::cache_write(&kc, &k, start, slot, layer as i64);
            vc = ops::cache_write(&vc, &v, start, slot, layer as i64);
            let a = ops::cached_attention(&q, &kc, &vc, start, slot, layer as i64, None);
            // Rounded for the output projection before the reshape, so that on a GPU the
            // attention kernel stores it rounded instead of a cast kernel of its own.
            let o = b.linear(&p("attn_output"), e, qdim)?;
            let a = ops::reshape(&o.round(&a), &[-1, qdim as i64]);
            x = ops::add(&x, &o.apply_rounded(&a));
            let h = ops::rms_norm(&x, &b.vector(&p("ffn_norm"), e)?, cfg.rms_eps);
            let gate_up = b.project(&h, &p("ffn_gate_up"), &[(p("ffn_gate"), ff), (p("ffn_up"), ff)], e)?;
            let m = ops::mul(&ops::silu(&gate_up[0]), &gate_up[1]);
            x = ops::add(&x, &b.linear(&p("ffn_down"), e, ff)?.apply(&m));
        }
        // Only the rows whose logits are wanted go through the head.
        let x = ops::gather(&x, last, 0);
        let x = ops::rms_norm(&x, &b.vector("output_norm.weight", e)?, cfg.rms_eps);
        let head = if b.has("output.weight") && !cfg.tied_embeddings { "output.weight" } else { "token_embd.weight" };
        let logits = b.linear(head, cfg.vocab_size, e)?.apply(&x);
        graph.output([logits]);
        Ok(graph)
    }
}
