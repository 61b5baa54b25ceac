//! BERT sentence-embedding models (sentence-transformers layout, e.g. all-MiniLM-L6-v2):
//! their configuration from a Hugging Face directory and (with the `compile` feature) their
//! forward pass as a `max` graph.
//!
//! The graph, `embed`, takes a padded batch:
//!
//! - inputs: `tokens[B, T]` (i32), `positions[T]` (i32, `0..T`), `mask[B, T]` (f32, 1 for a
//!   real token, 0 for padding);
//! - output: `embeddings[B, hidden]` (f32), pooled over the unmasked tokens and, when the
//!   model says so, L2-normalized.
//!
//! Per layer: self-attention (padding masked out by an additive bias), residual and layer
//! norm, the GELU MLP, residual and layer norm, as in Hugging Face's `BertModel`.

use crate::hf::{HfDir, HfError};
use serde::{Deserialize, Serialize};

/// How token vectors become one sentence vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// The mean over the unmasked tokens.
    Mean,
    /// The first token's (`[CLS]`) vector.
    Cls,
}

/// A BERT embedding model's hyperparameters, as stored in a compiled model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    /// `architectures[0]` of `config.json`.
    pub architecture: String,
    pub n_layers: usize,
    pub hidden: usize,
    pub n_heads: usize,
    pub intermediate: usize,
    pub vocab_size: usize,
    /// Longest input in tokens (`[CLS]` and `[SEP]` included): sentence-transformers'
    /// `max_seq_length` when given, else the position table's length.
    pub max_tokens: usize,
    pub layer_norm_eps: f64,
    pub pooling: Pooling,
    /// Whether the pooled vector is L2-normalized (a `Normalize` module in `modules.json`).
    pub normalize: bool,
    /// Weight names' prefix (`bert.` in checkpoints saved from task heads, else empty).
    #[serde(skip)]
    pub prefix: String,
}

/// Architectures read as BERT.
pub const BERT_ARCHITECTURES: &[&str] = &["BertModel", "BertForMaskedLM", "BertForPreTraining", "bert"];

impl BertConfig {
    /// Reads a sentence-transformers BERT directory's configuration.
    pub fn from_dir(d: &HfDir) -> Result<Self, HfError> {
        let bad = |why: String| HfError::Config { dir: d.path().to_owned(), why };
        let arch = d.architecture().unwrap_or_default().to_string();
        if !BERT_ARCHITECTURES.contains(&arch.as_str()) {
            return Err(bad(format!("architecture {arch:?} is not BERT")));
        }
        let act = d.config["hidden_act"].as_str().unwrap_or("gelu");
        if act != "gelu" {
            return Err(bad(format!("hidden_act {act:?} is not supported (only the exact \"gelu\")")));
        }
        if let Some(kind) = d.config["position_embedding_type"].as_str() {
            if kind != "absolute" {
                return Err(bad(format!("position_embedding_type {kind:?} is not supported (only \"absolute\")")));
            }
        }
        let (hidden, n_heads) = (d.usize("hidden_size")?, d.usize("num_attention_heads")?);
        if hidden % n_heads != 0 {
            return Err(bad(format!("{n_heads} heads do not divide hidden_size {hidden}")));
        }
        let positions = d.usize("max_position_embeddings")?;
        let st_max = d.json("sentence_bert_config.json")?.and_then(|c| c["max_seq_length"].as_u64()).map(|v| v as usize);
        let pooling = match d.json("1_Pooling/config.json")? {
            None => Pooling::Mean,
            Some(p) if p["pooling_mode_mean_tokens"].as_bool() == Some(true) => Pooling::Mean,
            Some(p) if p["pooling_mode_cls_token"].as_bool() == Some(true) => Pooling::Cls,
            Some(p) => return Err(bad(format!("1_Pooling/config.json asks for a pooling this build does not implement: {p}"))),
        };
        let normalize = d
            .json("modules.json")?
            .and_then(|m| m.as_array().cloned())
            .is_some_and(|mods| mods.iter().any(|m| m["type"].as_str().is_some_and(|t| t.ends_with("Normalize"))));
        let prefix = if d.has("bert.embeddings.word_embeddings.weight") { "bert." } else { "" };
        Ok(BertConfig {
            architecture: arch,
            n_layers: d.usize("num_hidden_layers")?,
            hidden,
            n_heads,
            intermediate: d.usize("intermediate_size")?,
            vocab_size: d.usize("vocab_size")?,
            max_tokens: st_max.unwrap_or(positions).min(positions),
            layer_norm_eps: d.f64_or("layer_norm_eps", 1e-12)?,
            pooling,
            normalize,
            prefix: prefix.into(),
        })
    }
}

#[cfg(feature = "compile")]
pub use graph::build_graph;

#[cfg(feature = "compile")]
mod graph {
    use super::{BertConfig, Pooling};
    use crate::hf::{HfDir, HfError};
    use max_compiler::graph_api::TensorValue;
    use max_compiler::{ops, DType, Dim, Graph, TensorType};

    struct Builder<'a> {
        dir: &'a HfDir,
        graph: &'a Graph,
        prefix: &'a str,
    }

    impl Builder<'_> {
        fn vector(&self, name: &str, n: usize) -> Result<TensorValue, HfError> {
            let name = format!("{}{name}", self.prefix);
            Ok(self.graph.weight_f32(&name, &[n as i64], &self.dir.f32(&name, &[n])?))
        }

        /// `x @ W^T + b` for a `torch.nn.Linear` of `inp -> out` (W stored `[out, inp]`,
        /// transposed here at compile time).
        fn linear(&self, x: &TensorValue, name: &str, inp: usize, out: usize) -> Result<TensorValue, HfError> {
            let wname = format!("{}{name}.weight", self.prefix);
            let w = self.dir.f32(&wname, &[out, inp])?;
            let mut t = vec![0f32; w.len()];
            for o in 0..out {
                for i in 0..inp {
                    t[i * out + o] = w[o * inp + i];
                }
            }
            let w = self.graph.weight_f32(&wname, &[inp as i64, out as i64], &t);
            Ok(ops::add(&ops::matmul(x, &w), &self.vector(&format!("{name}.bias"), out)?))
        }

        fn layer_norm(&self, x: &TensorValue, name: &str, n: usize, eps: f64) -> Result<TensorValue, HfError> {
            Ok(ops::layer_norm(x, &self.vector(&format!("{name}.weight"), n)?, &self.vector(&format!("{name}.bias"), n)?, eps))
        }

        fn table(&self, name: &str, rows: usize, cols: usize) -> Result<TensorValue, HfError> {
            let name = format!("{}{name}", self.prefix);
            Ok(self.graph.weight_f32(&name, &[rows as i64, cols as i64], &self.dir.f32(&name, &[rows, cols])?))
        }
    }

    /// Builds the `embed` graph of a BERT directory.
    pub fn build_graph(dir: &HfDir, cfg: &BertConfig) -> Result<Graph, HfError> {
        let (h, nh, ff) = (cfg.hidden, cfg.n_heads, cfg.intermediate);
        let hd = (h / nh) as i64;
        let graph = Graph::with_named_inputs(
            "embed",
            [
                ("tokens", TensorType::new(DType::I32, [Dim::dynamic("B"), Dim::dynamic("T")])),
                ("positions", TensorType::new(DType::I32, [Dim::dynamic("T")])),
                ("mask", TensorType::new(DType::F32, [Dim::dynamic("B"), Dim::dynamic("T")])),
            ],
        );
        let b = Builder { dir, graph: &graph, prefix: &cfg.prefix };
        let inp = graph.inputs();
        let (tokens, positions, mask) = (&inp[0], &inp[1], &inp[2]);
        let positions_max = dir.shape(&format!("{}embeddings.position_embeddings.weight", cfg.prefix))?.first().copied().unwrap_or(0);

        // Embeddings: word + position + token type 0 (single sentences), then layer norm.
        let words = ops::gather(&b.table("embeddings.word_embeddings.weight", cfg.vocab_size, h)?, tokens, 0);
        let pos = ops::gather(&b.table("embeddings.position_embeddings.weight", positions_max, h)?, positions, 0);
        let types_name = format!("{}embeddings.token_type_embeddings.weight", cfg.prefix);
        let types_rows = dir.shape(&types_name)?.first().copied().unwrap_or(0);
        let type0 = dir.f32(&types_name, &[types_rows, h])?[..h].to_vec();
        let type0 = graph.weight_f32(format!("{types_name}[0]"), &[h as i64], &type0);
        let x = ops::add(&ops::add(&words, &pos), &type0);
        let mut x = b.layer_norm(&x, "embeddings.LayerNorm", h, cfg.layer_norm_eps)?;

        // Padding keys get -10000 added to their scores (BERT's own constant), [B, 1, 1, T].
        let one = graph.constant_f32(&[1], &[1.0]);
        let big = graph.constant_f32(&[1], &[10000.0]);
        let bias = ops::reshape(&ops::mul(&ops::sub(mask, &one), &big), &[0, 1, 1, -1]);
        let scale = graph.constant_f32(&[1], &[1.0 / (hd as f32).sqrt()]);
        let heads = |t: &TensorValue| ops::transpose(&ops::reshape(t, &[0, 0, nh as i64, hd]), &[0, 2, 1, 3]);
        for l in 0..cfg.n_layers {
            let p = |n: &str| format!("encoder.layer.{l}.{n}");
            let q = heads(&b.linear(&x, &p("attention.self.query"), h, h)?);
            let k = heads(&b.linear(&x, &p("attention.self.key"), h, h)?);
            let v = heads(&b.linear(&x, &p("attention.self.value"), h, h)?);
            let scores = ops::add(&ops::mul(&ops::matmul(&q, &ops::transpose(&k, &[0, 1, 3, 2])), &scale), &bias);
            let ctx = ops::matmul(&ops::softmax(&scores, -1), &v);
            let ctx = ops::reshape(&ops::transpose(&ctx, &[0, 2, 1, 3]), &[0, 0, h as i64]);
            let a = b.linear(&ctx, &p("attention.output.dense"), h, h)?;
            x = b.layer_norm(&ops::add(&a, &x), &p("attention.output.LayerNorm"), h, cfg.layer_norm_eps)?;
            let m = ops::gelu(&b.linear(&x, &p("intermediate.dense"), h, ff)?);
            let m = b.linear(&m, &p("output.dense"), ff, h)?;
            x = b.layer_norm(&ops::add(&m, &x), &p("output.LayerNorm"), h, cfg.layer_norm_eps)?;
        }

        let pooled = match cfg.pooling {
            Pooling::Mean => {
                let m = ops::reshape(mask, &[0, -1, 1]);
                let sum = ops::reduce_sum(&ops::mul(&x, &m), &[1], false);
                ops::div(&sum, &ops::reduce_sum(mask, &[1], true))
            }
            Pooling::Cls => ops::reshape(&ops::slice(&x, &[0], &[1], &[1], &[1]), &[0, h as i64]),
        };
        let out = if cfg.normalize {
            // x / max(|x|, 1e-12), as torch.nn.functional.normalize.
            let norm = ops::sqrt(&ops::reduce_sum(&ops::mul(&pooled, &pooled), &[1], true));
            ops::div(&pooled, &ops::maximum(&norm, &graph.constant_f32(&[1], &[1e-12])))
        } else {
            pooled
        };
        graph.output([out]);
        Ok(graph)
    }
}
