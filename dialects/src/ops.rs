//! The `max` op set: names, attributes and their parsing from generic MLIR attributes.

use crate::dtype::DType;
use std::collections::BTreeMap;

/// Elementwise ops of one operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    Neg,
    Abs,
    Exp,
    Log,
    Sqrt,
    Rsqrt,
    Relu,
    Sigmoid,
    Tanh,
    /// Exact GELU, `x * 0.5 * (1 + erf(x / sqrt(2)))`.
    Gelu,
    Silu,
}

/// Elementwise ops of two operands, with NumPy broadcasting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Maximum,
    Minimum,
    Pow,
}

/// Reductions over an axis list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    Sum,
    Mean,
    Max,
}

/// How a `split` divides its axis.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SplitSpec {
    /// Equal parts; the axis size must be divisible.
    Num(usize),
    /// Explicit sizes; they must add up to the axis size.
    Sizes(Vec<i64>),
}

/// How a `max.weight` without data in any weights file is filled.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightInit {
    /// `"normal"` or `"uniform"`.
    pub distribution: String,
    /// Standard deviation (normal) or half-width (uniform).
    pub scale: f64,
    pub seed: u64,
}

/// Constant tensor data, little-endian, in the tensor's dtype.
#[derive(Debug, Clone, PartialEq)]
pub struct ConstantData {
    pub dtype: DType,
    pub dims: Vec<i64>,
    pub bytes: Vec<u8>,
}

/// A `max` operation with its attributes.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Constant(ConstantData),
    Weight { name: String, init: Option<WeightInit> },
    Unary(UnaryOp),
    Binary(BinaryOp),
    Cast(DType),
    MatMul,
    Transpose { perm: Vec<i64> },
    Reduce { op: ReduceOp, axes: Vec<i64>, keepdims: bool },
    Softmax { axis: i64 },
    Reshape { shape: Vec<i64> },
    BroadcastTo { shape: Vec<i64> },
    Concat { axis: i64 },
    Split { axis: i64, spec: SplitSpec },
    Slice { starts: Vec<i64>, ends: Vec<i64>, axes: Option<Vec<i64>>, steps: Option<Vec<i64>> },
    Gather { axis: i64 },
    /// A user-defined op; its kernel and shape rule come from a declaration (`--kernels`).
    Custom { name: String },
    /// `x / sqrt(mean(x^2, last axis) + epsilon) * weight`.
    RmsNorm { epsilon: f64 },
    /// `(x - mean) / sqrt(var + epsilon) * gamma + beta` over the last axis.
    LayerNorm { epsilon: f64 },
    /// Rotary position embedding of `x[..., seq, heads, head_dim]` at `positions[seq]`:
    /// pairs `(2i, 2i+1)` when `interleaved` (GGUF's permuted Q/K), else `(i, i + d/2)`
    /// (Hugging Face's layout), rotated by `pos * base^(-2i/d)`.
    Rope { base: f64, interleaved: bool },
    /// `x[M, K] @ dequantize(w)^T` where `w[N, K/32 * block_bytes]` holds GGUF blocks
    /// (`i8` bytes): each of the N rows is K weights in consecutive blocks of 32.
    ///
    /// With `quantize_input`, `x` is first quantized per block of 32 to 8 bits (Q8_1 for
    /// `q4_1` weights, Q8_0 otherwise) and blocks are multiplied as integers: the numerics
    /// of llama.cpp's CPU backend, so generations match it token for token.
    QMatMul { format: QuantFormat, quantize_input: bool },
    /// Scaled dot-product attention of `q[B, S, Hq, D]` over `k[B, T, Hkv, D]`,
    /// `v[B, T, Hkv, Dv]` (grouped-query: head h reads kv head `h / (Hq/Hkv)`). With
    /// `causal`, query i sits at position `T - S + i` and sees keys `0..=T - S + i`.
    /// `scale` defaults to `1/sqrt(D)`.
    Attention { causal: bool, scale: Option<f64> },
    /// `dequantize(w)`: `w[..., n * block_bytes]` i8 GGUF blocks to `f32[..., n * 32]`
    /// (an embedding table stays quantized; the rows a `gather` picks are expanded).
    Dequantize { format: QuantFormat },
    /// Writes `new[B, S, H, D]` (or `new[B * S, H, D]`, rows of a batch flattened) into layer `layer` of a KV cache `cache[L, Bmax, T, H, D]`
    /// in place: row `b` goes to `cache[layer, slot[b], pos[b] .. pos[b] + S]`. The result
    /// is the cache itself (the same buffer), which readers take as their operand so that
    /// they run after the write. Operands: `cache, new, pos[B], slot[B]` (i32).
    CacheWrite { layer: i64 },
    /// Causal grouped-query attention of `q[B, S, Hq, D]` (or `q[B * S, Hq, D]`) over a KV cache: query `s` of row
    /// `b` sits at position `pos[b] + s` and sees keys `0 ..= pos[b] + s` of
    /// `k_cache[layer, slot[b]]` / `v_cache[layer, slot[b]]` (`[L, Bmax, T, Hkv, D]`).
    /// Operands: `q, k_cache, v_cache, pos[B], slot[B]`. `scale` defaults to `1/sqrt(D)`.
    CachedAttention { layer: i64, scale: Option<f64> },
}

/// GGUF block formats `max.qmatmul` reads (32 weights a block; Q4_K and Q6_K: 256).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuantFormat {
    /// f16 scale, 16 bytes of 4-bit quants: `(q - 8) * d`.
    Q4_0,
    /// f16 scale, f16 min, 16 bytes of 4-bit quants: `q * d + m`.
    Q4_1,
    /// f16 scale, 32 signed bytes: `q * d`.
    Q8_0,
    /// f16 scale, 32 high bits, 16 bytes of 4-bit quants: `(q - 16) * d` (q has 5 bits).
    Q5_0,
    /// f16 scale, f16 min, 32 high bits, 16 bytes of 4-bit quants: `q * d + m`.
    Q5_1,
    /// 256 weights: f16 `d` and `dmin`, 12 bytes of 6-bit scales and mins for eight
    /// 32-weight sub-blocks, 128 bytes of 4-bit quants (sub-blocks `2p` and `2p + 1` in the
    /// low and high nibbles of bytes `32p..32p+32`): `q * (d * sc) - dmin * m`.
    Q4K,
    /// 256 weights: 128 bytes of low nibbles, 64 bytes of high 2-bit pairs, 16 signed 8-bit
    /// scales (one per 16 weights), f16 `d` last: `d * scale * (q - 32)` (q has 6 bits).
    Q6K,
}

impl QuantFormat {
    /// Every format, in the order the dialect documents them.
    pub const ALL: [QuantFormat; 7] = [QuantFormat::Q4_0, QuantFormat::Q4_1, QuantFormat::Q5_0, QuantFormat::Q5_1, QuantFormat::Q8_0, QuantFormat::Q4K, QuantFormat::Q6K];

    /// The format spelled `name` (`q4_0`, ...), as [`QuantFormat::name`] spells it.
    pub fn from_name(name: &str) -> Option<QuantFormat> {
        QuantFormat::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Bytes per block (of [`block_len`](Self::block_len) weights).
    pub fn block_bytes(self) -> i64 {
        match self {
            QuantFormat::Q4_0 => 18,
            QuantFormat::Q4_1 => 20,
            QuantFormat::Q8_0 => 34,
            QuantFormat::Q5_0 => 22,
            QuantFormat::Q5_1 => 24,
            QuantFormat::Q4K => 144,
            QuantFormat::Q6K => 210,
        }
    }
    /// Weights per block.
    pub fn block_len(self) -> i64 {
        match self {
            QuantFormat::Q4K | QuantFormat::Q6K => 256,
            _ => 32,
        }
    }
    /// 32-weight sub-blocks in `bytes` of blocks (the unit the kernels walk).
    pub fn sub_blocks(self, bytes: i64) -> i64 {
        bytes / self.block_bytes() * (self.block_len() / 32)
    }
    /// The attribute spelling (`q4_0`, ...).
    pub fn name(self) -> &'static str {
        match self {
            QuantFormat::Q4_0 => "q4_0",
            QuantFormat::Q4_1 => "q4_1",
            QuantFormat::Q8_0 => "q8_0",
            QuantFormat::Q5_0 => "q5_0",
            QuantFormat::Q5_1 => "q5_1",
            QuantFormat::Q4K => "q4_k",
            QuantFormat::Q6K => "q6_k",
        }
    }
}

/// An attribute value as it appears on a generic-form `max` op.
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    Ints(Vec<i64>),
    Dense(ConstantData),
    Type(String),
}

impl Attr {
    fn kind(&self) -> &'static str {
        match self {
            Attr::Int(_) => "integer",
            Attr::Float(_) => "float",
            Attr::Bool(_) => "bool",
            Attr::Str(_) => "string",
            Attr::Ints(_) => "array<i64>",
            Attr::Dense(_) => "dense elements",
            Attr::Type(_) => "type",
        }
    }
}

const UNARY: [(&str, UnaryOp); 11] = [
    ("neg", UnaryOp::Neg),
    ("abs", UnaryOp::Abs),
    ("exp", UnaryOp::Exp),
    ("log", UnaryOp::Log),
    ("sqrt", UnaryOp::Sqrt),
    ("rsqrt", UnaryOp::Rsqrt),
    ("relu", UnaryOp::Relu),
    ("sigmoid", UnaryOp::Sigmoid),
    ("tanh", UnaryOp::Tanh),
    ("gelu", UnaryOp::Gelu),
    ("silu", UnaryOp::Silu),
];

const BINARY: [(&str, BinaryOp); 7] = [
    ("add", BinaryOp::Add),
    ("sub", BinaryOp::Sub),
    ("mul", BinaryOp::Mul),
    ("div", BinaryOp::Div),
    ("maximum", BinaryOp::Maximum),
    ("minimum", BinaryOp::Minimum),
    ("pow", BinaryOp::Pow),
];

/// Attribute accessor that reports missing or mistyped attributes by name.
struct Attrs<'a> {
    op: &'a str,
    map: &'a BTreeMap<String, Attr>,
}

impl Attrs<'_> {
    fn get(&self, name: &str) -> Option<&Attr> {
        self.map.get(name)
    }
    fn missing(&self, name: &str, what: &str) -> String {
        format!("'max.{}' requires attribute '{name}' ({what})", self.op)
    }
    fn wrong(&self, name: &str, what: &str, got: &Attr) -> String {
        format!("'max.{}' attribute '{name}' must be {what}, got {}", self.op, got.kind())
    }
    fn int(&self, name: &str) -> Result<i64, String> {
        match self.get(name) {
            Some(Attr::Int(v)) => Ok(*v),
            Some(a) => Err(self.wrong(name, "an integer", a)),
            None => Err(self.missing(name, "an integer")),
        }
    }
    fn ints(&self, name: &str) -> Result<Vec<i64>, String> {
        match self.get(name) {
            Some(Attr::Ints(v)) => Ok(v.clone()),
            Some(a) => Err(self.wrong(name, "array<i64: ...>", a)),
            None => Err(self.missing(name, "array<i64: ...>")),
        }
    }
    fn opt_ints(&self, name: &str) -> Result<Option<Vec<i64>>, String> {
        self.get(name).map(|_| self.ints(name)).transpose()
    }
    fn opt_bool(&self, name: &str) -> Result<Option<bool>, String> {
        match self.get(name) {
            Some(Attr::Bool(b)) => Ok(Some(*b)),
            Some(Attr::Int(v)) if *v == 0 || *v == 1 => Ok(Some(*v == 1)),
            Some(a) => Err(self.wrong(name, "a bool", a)),
            None => Ok(None),
        }
    }
    fn string(&self, name: &str) -> Result<String, String> {
        match self.get(name) {
            Some(Attr::Str(s)) => Ok(s.clone()),
            Some(a) => Err(self.wrong(name, "a string", a)),
            None => Err(self.missing(name, "a string")),
        }
    }
    fn opt_float(&self, name: &str) -> Result<Option<f64>, String> {
        match self.get(name) {
            Some(Attr::Float(v)) => Ok(Some(*v)),
            Some(Attr::Int(v)) => Ok(Some(*v as f64)),
            Some(a) => Err(self.wrong(name, "a float", a)),
            None => Ok(None),
        }
    }
}

/// The `format` attribute of a quantized op.
fn quant_format(a: &Attrs, op: &str) -> Result<QuantFormat, String> {
    let name = a.string("format")?;
    QuantFormat::from_name(&name).ok_or_else(|| format!("'max.{op}' format must be \"q4_0\", \"q4_1\", \"q5_0\", \"q5_1\", \"q8_0\", \"q4_k\" or \"q6_k\", got \"{name}\""))
}

impl Op {
    /// Every op name of the dialect, without the `max.` prefix.
    pub fn all_names() -> Vec<&'static str> {
        let mut v = vec!["constant", "weight"];
        v.extend(UNARY.iter().map(|(n, _)| *n));
        v.extend(BINARY.iter().map(|(n, _)| *n));
        v.extend([
            "cast", "matmul", "transpose", "reduce_sum", "reduce_mean", "reduce_max", "softmax",
            "reshape", "broadcast_to", "concat", "split", "slice", "gather", "custom", "rms_norm", "layer_norm", "rope", "qmatmul", "attention",
            "dequantize", "cache_write", "cached_attention",
        ]);
        v
    }

    /// Builds an op from its name (without `max.`), its attributes and, for `cast`, the
    /// result dtype. Errors say which attribute is wrong.
    pub fn from_parts(
        name: &str,
        attrs: &BTreeMap<String, Attr>,
        result_dtype: Option<DType>,
    ) -> Result<Op, String> {
        let a = Attrs { op: name, map: attrs };
        if let Some((_, u)) = UNARY.iter().find(|(n, _)| *n == name) {
            return Ok(Op::Unary(*u));
        }
        if let Some((_, b)) = BINARY.iter().find(|(n, _)| *n == name) {
            return Ok(Op::Binary(*b));
        }
        Ok(match name {
            "constant" => match a.get("value") {
                Some(Attr::Dense(d)) => Op::Constant(d.clone()),
                Some(other) => return Err(a.wrong("value", "dense<...> elements", other)),
                None => return Err(a.missing("value", "dense<...> elements")),
            },
            "weight" => {
                let init = match a.get("init") {
                    None => None,
                    Some(Attr::Str(dist)) => {
                        if dist != "normal" && dist != "uniform" {
                            return Err(format!(
                                "'max.weight' init must be \"normal\" or \"uniform\", got \"{dist}\""
                            ));
                        }
                        let seed = match a.get("seed") {
                            Some(Attr::Int(s)) => *s as u64,
                            None => 0,
                            Some(other) => return Err(a.wrong("seed", "an integer", other)),
                        };
                        Some(WeightInit {
                            distribution: dist.clone(),
                            scale: a.opt_float("scale")?.unwrap_or(0.02),
                            seed,
                        })
                    }
                    Some(other) => return Err(a.wrong("init", "a string", other)),
                };
                Op::Weight { name: a.string("name")?, init }
            }
            "cast" => Op::Cast(result_dtype.ok_or("'max.cast' needs a tensor result type")?),
            "matmul" => Op::MatMul,
            "transpose" => Op::Transpose { perm: a.ints("perm")? },
            "reduce_sum" | "reduce_mean" | "reduce_max" => Op::Reduce {
                op: match name {
                    "reduce_sum" => ReduceOp::Sum,
                    "reduce_mean" => ReduceOp::Mean,
                    _ => ReduceOp::Max,
                },
                axes: a.ints("axes")?,
                keepdims: a.opt_bool("keepdims")?.unwrap_or(false),
            },
            "softmax" => Op::Softmax { axis: a.int("axis")? },
            "reshape" => Op::Reshape { shape: a.ints("shape")? },
            "broadcast_to" => Op::BroadcastTo { shape: a.ints("shape")? },
            "concat" => Op::Concat { axis: a.int("axis")? },
            "split" => {
                let axis = a.int("axis")?;
                let spec = match (a.get("sizes"), a.get("num_splits")) {
                    (Some(_), None) => SplitSpec::Sizes(a.ints("sizes")?),
                    (None, Some(_)) => {
                        let n = a.int("num_splits")?;
                        if n <= 0 {
                            return Err(format!("'max.split' num_splits must be positive, got {n}"));
                        }
                        SplitSpec::Num(n as usize)
                    }
                    (None, None) => SplitSpec::Num(0), // resolved from the result count
                    (Some(_), Some(_)) => {
                        return Err("'max.split' takes either 'sizes' or 'num_splits', not both".into())
                    }
                };
                Op::Split { axis, spec }
            }
            "slice" => Op::Slice {
                starts: a.ints("starts")?,
                ends: a.ints("ends")?,
                axes: a.opt_ints("axes")?,
                steps: a.opt_ints("steps")?,
            },
            "gather" => Op::Gather { axis: a.int("axis")? },
            "custom" => Op::Custom { name: a.string("name")? },
            "rms_norm" => Op::RmsNorm { epsilon: a.opt_float("epsilon")?.unwrap_or(1e-5) },
            "layer_norm" => Op::LayerNorm { epsilon: a.opt_float("epsilon")?.unwrap_or(1e-5) },
            "qmatmul" => Op::QMatMul { format: quant_format(&a, "qmatmul")?, quantize_input: a.opt_bool("quantize_input")?.unwrap_or(false) },
            "attention" => Op::Attention { causal: a.opt_bool("causal")?.unwrap_or(false), scale: a.opt_float("scale")? },
            "dequantize" => Op::Dequantize { format: quant_format(&a, "dequantize")? },
            "cache_write" => Op::CacheWrite { layer: a.int("layer")? },
            "cached_attention" => Op::CachedAttention { layer: a.int("layer")?, scale: a.opt_float("scale")? },
            "rope" => Op::Rope { base: a.opt_float("base")?.unwrap_or(10000.0), interleaved: a.opt_bool("interleaved")?.unwrap_or(false) },
            other => return Err(format!("unknown op 'max.{other}'")),
        })
    }

    /// The op name without the `max.` prefix.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Constant(_) => "constant",
            Op::Weight { .. } => "weight",
            Op::Unary(u) => UNARY.iter().find(|(_, x)| x == u).unwrap().0,
            Op::Binary(b) => BINARY.iter().find(|(_, x)| x == b).unwrap().0,
            Op::Cast(_) => "cast",
            Op::MatMul => "matmul",
            Op::Transpose { .. } => "transpose",
            Op::Reduce { op: ReduceOp::Sum, .. } => "reduce_sum",
            Op::Reduce { op: ReduceOp::Mean, .. } => "reduce_mean",
            Op::Reduce { op: ReduceOp::Max, .. } => "reduce_max",
            Op::Softmax { .. } => "softmax",
            Op::Reshape { .. } => "reshape",
            Op::BroadcastTo { .. } => "broadcast_to",
            Op::Concat { .. } => "concat",
            Op::Split { .. } => "split",
            Op::Slice { .. } => "slice",
            Op::Gather { .. } => "gather",
            Op::Custom { .. } => "custom",
            Op::RmsNorm { .. } => "rms_norm",
            Op::LayerNorm { .. } => "layer_norm",
            Op::Rope { .. } => "rope",
            Op::QMatMul { .. } => "qmatmul",
            Op::Attention { .. } => "attention",
            Op::Dequantize { .. } => "dequantize",
            Op::CacheWrite { .. } => "cache_write",
            Op::CachedAttention { .. } => "cached_attention",
        }
    }

    /// The attribute dictionary in MLIR syntax (`{axis = 1 : i64}`), empty if none.
    pub fn attrs_mlir(&self) -> String {
        let arr = |v: &[i64]| {
            let items: Vec<String> = v.iter().map(|x| x.to_string()).collect();
            format!("array<i64: {}>", items.join(", "))
        };
        let mut kv: Vec<String> = Vec::new();
        match self {
            Op::Constant(c) => kv.push(format!("value = {}", crate::print::dense_attr(c))),
            Op::Weight { name, init } => {
                kv.push(format!("name = {name:?}"));
                if let Some(i) = init {
                    kv.push(format!("init = {:?}", i.distribution));
                    kv.push(format!("scale = {:e} : f64", i.scale));
                    kv.push(format!("seed = {} : i64", i.seed));
                }
            }
            Op::Transpose { perm } => kv.push(format!("perm = {}", arr(perm))),
            Op::Reduce { axes, keepdims, .. } => {
                kv.push(format!("axes = {}", arr(axes)));
                if *keepdims {
                    kv.push("keepdims = true".into());
                }
            }
            Op::Softmax { axis } | Op::Concat { axis } | Op::Gather { axis } => {
                kv.push(format!("axis = {axis} : i64"))
            }
            Op::Reshape { shape } | Op::BroadcastTo { shape } => kv.push(format!("shape = {}", arr(shape))),
            Op::Split { axis, spec } => {
                kv.push(format!("axis = {axis} : i64"));
                match spec {
                    SplitSpec::Num(n) if *n > 0 => kv.push(format!("num_splits = {n} : i64")),
                    SplitSpec::Num(_) => {}
                    SplitSpec::Sizes(s) => kv.push(format!("sizes = {}", arr(s))),
                }
            }
            Op::Slice { starts, ends, axes, steps } => {
                kv.push(format!("starts = {}", arr(starts)));
                kv.push(format!("ends = {}", arr(ends)));
                if let Some(a) = axes {
                    kv.push(format!("axes = {}", arr(a)));
                }
                if let Some(s) = steps {
                    kv.push(format!("steps = {}", arr(s)));
                }
            }
            Op::Custom { name } => kv.push(format!("name = {name:?}")),
            Op::RmsNorm { epsilon } | Op::LayerNorm { epsilon } => kv.push(format!("epsilon = {epsilon:e} : f64")),
            Op::QMatMul { format, quantize_input } => {
                kv.push(format!("format = {:?}", format.name()));
                if *quantize_input {
                    kv.push("quantize_input = true".into());
                }
            }
            Op::Dequantize { format } => kv.push(format!("format = {:?}", format.name())),
            Op::CacheWrite { layer } => kv.push(format!("layer = {layer} : i64")),
            Op::CachedAttention { layer, scale } => {
                kv.push(format!("layer = {layer} : i64"));
                if let Some(s) = scale {
                    kv.push(format!("scale = {s:e} : f64"));
                }
            }
            Op::Attention { causal, scale } => {
                if *causal {
                    kv.push("causal = true".into());
                }
                if let Some(s) = scale {
                    kv.push(format!("scale = {s:e} : f64"));
                }
            }
            Op::Rope { base, interleaved } => {
                kv.push(format!("base = {base:e} : f64"));
                if *interleaved {
                    kv.push("interleaved = true".into());
                }
            }
            Op::Unary(_) | Op::Binary(_) | Op::Cast(_) | Op::MatMul => {}
        }
        if kv.is_empty() {
            String::new()
        } else {
            format!(" {{{}}}", kv.join(", "))
        }
    }
}
