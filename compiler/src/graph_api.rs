//! The Rust Graph API, shaped like MAX's Python one:
//!
//! ```no_run
//! use max_compiler::{compile, ops, DType, Dim, Graph, Target, TensorType};
//! use max_runtime::{Device, InferenceSession, Tensor};
//! let graph = Graph::new("custom_mlp", [TensorType::new(DType::F32, [Dim::dynamic("batch"), Dim::from(768)])]);
//! let x = graph.input(0);
//! let w = graph.constant_f32(&[768, 10], &vec![0.01; 7680]);
//! let y = ops::softmax(&ops::relu(&ops::matmul(&x, &w)), -1);
//! graph.output([y]);
//! let artifact = compile(&graph, Target::host())?;
//! let model = InferenceSession::new(Device::Cpu).load(&artifact)?;
//! let out = model.execute(&[Tensor::from_slice(&[2, 768], &vec![1.0f32; 1536])?])?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Ops record the Rust call site (`#[track_caller]`) as their location, so shape errors
//! found when the graph is compiled point at the line that built the op.

use crate::error::CompileError;
use crate::weights::{WeightData, WeightStore};
use crate::{CompileOptions, Emit};
use max_dialects::{
    BinaryOp, ConstantData, DType, DeclaredType, DimExpr, Location, Op, ReduceOp, SplitSpec, UnaryOp, ValueId,
};
use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;

/// A dimension of an input type: static, or a named dynamic symbol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    Static(i64),
    Dynamic(String),
}

impl Dim {
    /// A dynamic dim named `name`; inputs sharing a name must agree at run time.
    pub fn dynamic(name: impl Into<String>) -> Dim {
        Dim::Dynamic(name.into())
    }
}

impl From<i64> for Dim {
    fn from(v: i64) -> Dim {
        Dim::Static(v)
    }
}
impl From<i32> for Dim {
    fn from(v: i32) -> Dim {
        Dim::Static(v as i64)
    }
}
impl From<usize> for Dim {
    fn from(v: usize) -> Dim {
        Dim::Static(v as i64)
    }
}

/// A tensor type for graph inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorType {
    pub dtype: DType,
    pub dims: Vec<Dim>,
}

impl TensorType {
    /// A tensor type of `dtype` with `dims`.
    pub fn new(dtype: DType, dims: impl IntoIterator<Item = Dim>) -> Self {
        TensorType { dtype, dims: dims.into_iter().collect() }
    }
}

struct Inner {
    graph: max_dialects::Graph,
    weights: WeightStore,
    kernels: crate::custom::KernelRegistry,
    outputs_set: bool,
}

/// A graph under construction. Cloning shares it.
#[derive(Clone)]
pub struct Graph {
    inner: Rc<RefCell<Inner>>,
}

/// A tensor value of a graph.
#[derive(Clone)]
pub struct TensorValue {
    graph: Graph,
    id: ValueId,
}

impl Graph {
    /// A graph named `name` with inputs `input0`, `input1`, ... of the given types.
    #[track_caller]
    pub fn new(name: impl Into<String>, inputs: impl IntoIterator<Item = TensorType>) -> Graph {
        let names_types: Vec<(String, TensorType)> = inputs.into_iter().enumerate().map(|(i, t)| (format!("input{i}"), t)).collect();
        Self::with_named_inputs(name, names_types)
    }

    /// A graph with named inputs (the names `max run --input NAME=...` uses).
    #[track_caller]
    pub fn with_named_inputs(name: impl Into<String>, inputs: impl IntoIterator<Item = (impl Into<String>, TensorType)>) -> Graph {
        let mut g = max_dialects::Graph::new(name, Location::caller());
        for (n, t) in inputs {
            let dims = t
                .dims
                .iter()
                .map(|d| match d {
                    Dim::Static(c) => DimExpr::Const(*c),
                    Dim::Dynamic(s) => DimExpr::Sym(g.symbol(s)),
                })
                .collect();
            g.add_input(n, max_dialects::TensorType::new(t.dtype, dims));
        }
        Graph { inner: Rc::new(RefCell::new(Inner { graph: g, weights: WeightStore::new(), kernels: crate::custom::KernelRegistry::new(), outputs_set: false })) }
    }

    /// Input `i`.
    ///
    /// # Panics
    /// If the graph has no input `i` (a programming error in the caller).
    pub fn input(&self, i: usize) -> TensorValue {
        let id = self.inner.borrow().graph.inputs[i].value;
        TensorValue { graph: self.clone(), id }
    }

    /// All inputs.
    pub fn inputs(&self) -> Vec<TensorValue> {
        let n = self.inner.borrow().graph.inputs.len();
        (0..n).map(|i| self.input(i)).collect()
    }

    #[track_caller]
    fn node(&self, op: Op, inputs: &[&TensorValue], declared: Vec<Option<DeclaredType>>, n_out: usize) -> Vec<TensorValue> {
        let loc = Location::caller();
        let ids = inputs.iter().map(|v| v.id).collect();
        let outs = self.inner.borrow_mut().graph.add_node(op, ids, n_out, declared, loc);
        outs.into_iter().map(|id| TensorValue { graph: self.clone(), id }).collect()
    }

    /// A constant tensor of f32 data.
    #[track_caller]
    pub fn constant_f32(&self, shape: &[i64], data: &[f32]) -> TensorValue {
        let bytes = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.constant(ConstantData { dtype: DType::F32, dims: shape.to_vec(), bytes })
    }

    /// A constant tensor from raw little-endian bytes.
    #[track_caller]
    pub fn constant(&self, data: ConstantData) -> TensorValue {
        self.node(Op::Constant(data), &[], vec![], 1).remove(0)
    }

    /// A named weight of type `dtype`/`shape`, whose data comes from a safetensors file
    /// added with [`Graph::load_safetensors`] or from [`Graph::set_weight`].
    #[track_caller]
    pub fn weight(&self, name: impl Into<String>, dtype: DType, shape: &[i64]) -> TensorValue {
        let decl = DeclaredType { dtype, dims: shape.iter().map(|d| Some(*d)).collect() };
        self.node(Op::Weight { name: name.into(), init: None }, &[], vec![Some(decl)], 1).remove(0)
    }

    /// A named weight holding in-memory f32 data.
    #[track_caller]
    pub fn weight_f32(&self, name: impl Into<String>, shape: &[i64], data: &[f32]) -> TensorValue {
        let name = name.into();
        self.set_weight(&name, WeightData { dtype: DType::F32, shape: shape.to_vec(), bytes: data.iter().flat_map(|v| v.to_le_bytes()).collect(), origin: "memory".into() });
        self.weight(name, DType::F32, shape)
    }

    /// Provides in-memory data for weight `name`.
    pub fn set_weight(&self, name: &str, data: WeightData) {
        self.inner.borrow_mut().weights.insert(name, data);
    }

    /// Makes every tensor of a `.safetensors` file available to [`Graph::weight`].
    pub fn load_safetensors(&self, path: impl AsRef<Path>) -> Result<(), CompileError> {
        self.inner.borrow_mut().weights.add_safetensors(path.as_ref())
    }

    /// Makes the custom ops declared in `dir/kernels.toml` available to [`ops::custom`].
    pub fn load_kernels(&self, dir: impl AsRef<Path>) -> Result<(), CompileError> {
        self.inner.borrow_mut().kernels.add_dir(dir.as_ref())
    }

    /// Sets the graph outputs.
    pub fn output(&self, outputs: impl IntoIterator<Item = TensorValue>) {
        let mut inner = self.inner.borrow_mut();
        inner.graph.outputs = outputs.into_iter().map(|v| v.id).collect();
        inner.graph.declared_outputs = vec![None; inner.graph.outputs.len()];
        inner.outputs_set = true;
    }

    /// A verified copy of the graph IR (shape inference run).
    pub fn verified(&self) -> Result<max_dialects::Graph, CompileError> {
        let inner = self.inner.borrow();
        if !inner.outputs_set {
            return Err(CompileError::Diagnostic(max_dialects::Diagnostic::new(&inner.graph.loc, format!("graph '{}' has no outputs; call graph.output(...)", inner.graph.name))));
        }
        let mut g = inner.graph.clone();
        max_dialects::verify::verify_with(&mut g, &inner.kernels)?;
        Ok(g)
    }

    /// The graph as `max` dialect MLIR.
    pub fn to_mlir(&self) -> Result<String, CompileError> {
        Ok(max_dialects::print::print_graph(&self.verified()?))
    }

    fn weights(&self) -> WeightStore {
        self.inner.borrow().weights.clone()
    }

    /// The weights the graph's `weight` ops read (in memory or from safetensors files).
    pub fn weight_store(&self) -> WeightStore {
        self.weights()
    }
}

impl TensorValue {
    /// The inferred type of this value (runs shape inference on the graph so far).
    pub fn ty(&self) -> Result<max_dialects::TensorType, CompileError> {
        let inner = self.graph.inner.borrow();
        let mut g = inner.graph.clone();
        g.outputs = vec![self.id];
        g.declared_outputs = vec![None];
        max_dialects::verify::verify_with(&mut g, &inner.kernels)?;
        Ok(g.ty(self.id).clone())
    }

    /// The graph this value belongs to.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }
}

/// Compiles a graph for `target` into an artifact ready for [`max_runtime::InferenceSession::load`].
pub fn compile(graph: &Graph, target: crate::Target) -> Result<max_runtime::Artifact, CompileError> {
    let bytes = compile_graph_to(graph, target, Emit::Artifact)?;
    max_runtime::Artifact::from_bytes(&bytes).map_err(|e| CompileError::Internal(format!("the artifact just written does not load: {e}")))
}

/// Compiles a graph up to `emit` and returns the bytes (text for IR stages).
pub fn compile_graph_to(graph: &Graph, target: crate::Target, emit: Emit) -> Result<Vec<u8>, CompileError> {
    // The Graph API builds the graph IR directly; the Rust verifier is its checker (IRDL
    // only sees text input).
    let g = graph.verified()?;
    let ctx = crate::mlir::MlirContext::new()?;
    let mut opts = CompileOptions::new(target);
    opts.weights = graph.weights();
    opts.kernels = graph.inner.borrow().kernels.clone();
    Ok(crate::compile_graphs(&ctx, &[g], &opts, emit)?.bytes)
}

/// Compiles a graph to an artifact with explicit options (weights, data sections, fusion).
/// Without declarations in `opts.kernels`, the graph's own ([`Graph::load_kernels`]) are used.
pub fn compile_graph_with(graph: &Graph, opts: &CompileOptions) -> Result<Vec<u8>, CompileError> {
    let g = graph.verified()?;
    let ctx = crate::mlir::MlirContext::new()?;
    let mut opts = opts.clone();
    if opts.kernels.is_empty() {
        opts.kernels = graph.inner.borrow().kernels.clone();
    }
    Ok(crate::compile_graphs(&ctx, &[g], &opts, Emit::Artifact)?.bytes)
}

/// Graph ops. Each records its caller's location for diagnostics.
pub mod ops {
    use super::*;

    #[track_caller]
    fn unary(x: &TensorValue, u: UnaryOp) -> TensorValue {
        x.graph.node(Op::Unary(u), &[x], vec![], 1).remove(0)
    }
    #[track_caller]
    fn binary(a: &TensorValue, b: &TensorValue, op: BinaryOp) -> TensorValue {
        a.graph.node(Op::Binary(op), &[a, b], vec![], 1).remove(0)
    }

    macro_rules! unary_ops {
        ($($name:ident => $op:ident),* $(,)?) => {$(
            #[doc = concat!("Elementwise `", stringify!($name), "`.")]
            #[track_caller]
            pub fn $name(x: &TensorValue) -> TensorValue { unary(x, UnaryOp::$op) }
        )*};
    }
    macro_rules! binary_ops {
        ($($name:ident => $op:ident),* $(,)?) => {$(
            #[doc = concat!("Elementwise `", stringify!($name), "` with NumPy broadcasting.")]
            #[track_caller]
            pub fn $name(a: &TensorValue, b: &TensorValue) -> TensorValue { binary(a, b, BinaryOp::$op) }
        )*};
    }
    unary_ops!(neg => Neg, abs => Abs, exp => Exp, log => Log, sqrt => Sqrt, rsqrt => Rsqrt, relu => Relu,
        sigmoid => Sigmoid, tanh => Tanh, gelu => Gelu, silu => Silu);
    binary_ops!(add => Add, sub => Sub, mul => Mul, div => Div, maximum => Maximum, minimum => Minimum, pow => Pow);

    /// Matrix product with broadcast batch dims.
    #[track_caller]
    pub fn matmul(a: &TensorValue, b: &TensorValue) -> TensorValue {
        a.graph.node(Op::MatMul, &[a, b], vec![], 1).remove(0)
    }
    /// Converts to `dtype`.
    #[track_caller]
    pub fn cast(x: &TensorValue, dtype: DType) -> TensorValue {
        x.graph.node(Op::Cast(dtype), &[x], vec![], 1).remove(0)
    }
    /// Permutes dims.
    #[track_caller]
    pub fn transpose(x: &TensorValue, perm: &[i64]) -> TensorValue {
        x.graph.node(Op::Transpose { perm: perm.to_vec() }, &[x], vec![], 1).remove(0)
    }
    #[track_caller]
    fn reduce(x: &TensorValue, op: ReduceOp, axes: &[i64], keepdims: bool) -> TensorValue {
        x.graph.node(Op::Reduce { op, axes: axes.to_vec(), keepdims }, &[x], vec![], 1).remove(0)
    }
    /// Sum over `axes`.
    #[track_caller]
    pub fn reduce_sum(x: &TensorValue, axes: &[i64], keepdims: bool) -> TensorValue {
        reduce(x, ReduceOp::Sum, axes, keepdims)
    }
    /// Mean over `axes`.
    #[track_caller]
    pub fn reduce_mean(x: &TensorValue, axes: &[i64], keepdims: bool) -> TensorValue {
        reduce(x, ReduceOp::Mean, axes, keepdims)
    }
    /// Maximum over `axes`.
    #[track_caller]
    pub fn reduce_max(x: &TensorValue, axes: &[i64], keepdims: bool) -> TensorValue {
        reduce(x, ReduceOp::Max, axes, keepdims)
    }
    /// Softmax along `axis`.
    #[track_caller]
    pub fn softmax(x: &TensorValue, axis: i64) -> TensorValue {
        x.graph.node(Op::Softmax { axis }, &[x], vec![], 1).remove(0)
    }
    /// Reshape; one `-1` is inferred, `0` copies the input dim.
    #[track_caller]
    pub fn reshape(x: &TensorValue, shape: &[i64]) -> TensorValue {
        x.graph.node(Op::Reshape { shape: shape.to_vec() }, &[x], vec![], 1).remove(0)
    }
    /// Broadcast to `shape` (`-1` keeps the input dim).
    #[track_caller]
    pub fn broadcast_to(x: &TensorValue, shape: &[i64]) -> TensorValue {
        x.graph.node(Op::BroadcastTo { shape: shape.to_vec() }, &[x], vec![], 1).remove(0)
    }
    /// Concatenation along `axis`.
    #[track_caller]
    pub fn concat(xs: &[&TensorValue], axis: i64) -> TensorValue {
        xs[0].graph.node(Op::Concat { axis }, xs, vec![], 1).remove(0)
    }
    /// Splits `axis` into `n` equal parts.
    #[track_caller]
    pub fn split(x: &TensorValue, n: usize, axis: i64) -> Vec<TensorValue> {
        x.graph.node(Op::Split { axis, spec: SplitSpec::Num(n) }, &[x], vec![], n)
    }
    /// Splits `axis` into parts of the given sizes.
    #[track_caller]
    pub fn split_sizes(x: &TensorValue, sizes: &[i64], axis: i64) -> Vec<TensorValue> {
        x.graph.node(Op::Split { axis, spec: SplitSpec::Sizes(sizes.to_vec()) }, &[x], vec![], sizes.len())
    }
    /// Python-style slice `[start:end:step]` on each of `axes`.
    #[track_caller]
    pub fn slice(x: &TensorValue, starts: &[i64], ends: &[i64], axes: &[i64], steps: &[i64]) -> TensorValue {
        let op = Op::Slice { starts: starts.to_vec(), ends: ends.to_vec(), axes: Some(axes.to_vec()), steps: Some(steps.to_vec()) };
        x.graph.node(op, &[x], vec![], 1).remove(0)
    }
    /// A custom op declared by a kernels directory ([`Graph::load_kernels`]), with the
    /// result types the caller expects (checked against the declaration's shape rule).
    #[track_caller]
    pub fn custom(name: &str, inputs: &[&TensorValue], output_types: &[max_dialects::TensorType]) -> Vec<TensorValue> {
        let declared = output_types.iter().map(|t| Some(DeclaredType { dtype: t.dtype, dims: t.static_dims() })).collect();
        inputs[0].graph.node(Op::Custom { name: name.to_string() }, inputs, declared, output_types.len())
    }

    /// RMS normalization over the last axis: `x / sqrt(mean(x^2) + epsilon) * weight`.
    #[track_caller]
    pub fn rms_norm(x: &TensorValue, weight: &TensorValue, epsilon: f64) -> TensorValue {
        x.graph.node(Op::RmsNorm { epsilon }, &[x, weight], vec![], 1).remove(0)
    }
    /// Layer normalization over the last axis.
    #[track_caller]
    pub fn layer_norm(x: &TensorValue, gamma: &TensorValue, beta: &TensorValue, epsilon: f64) -> TensorValue {
        x.graph.node(Op::LayerNorm { epsilon }, &[x, gamma, beta], vec![], 1).remove(0)
    }
    /// Rotary position embedding of `x[..., seq, heads, head_dim]` at `positions[seq]` or
    /// `positions[batch, seq]`.
    #[track_caller]
    pub fn rope(x: &TensorValue, positions: &TensorValue, base: f64, interleaved: bool) -> TensorValue {
        x.graph.node(Op::Rope { base, interleaved }, &[x, positions], vec![], 1).remove(0)
    }
    /// `x @ dequantize(w)^T` with `w` i8 GGUF blocks `[N, K / block_len * block_bytes]`.
    #[track_caller]
    pub fn qmatmul(x: &TensorValue, w: &TensorValue, format: max_dialects::QuantFormat) -> TensorValue {
        x.graph.node(Op::QMatMul { format, quantize_input: false }, &[x, w], vec![], 1).remove(0)
    }
    /// [`qmatmul`] with `x` quantized to 8 bits per block first and integer block products,
    /// as llama.cpp's CPU backend computes (its generations are matched token for token).
    #[track_caller]
    pub fn qmatmul_q8(x: &TensorValue, w: &TensorValue, format: max_dialects::QuantFormat) -> TensorValue {
        x.graph.node(Op::QMatMul { format, quantize_input: true }, &[x, w], vec![], 1).remove(0)
    }
    /// Scaled dot-product attention of `q[B,S,Hq,D]` over `k[B,T,Hkv,D]`, `v[B,T,Hkv,Dv]`
    /// (grouped-query heads; causal: query i sits at position T - S + i).
    #[track_caller]
    pub fn attention(q: &TensorValue, k: &TensorValue, v: &TensorValue, causal: bool, scale: Option<f64>) -> TensorValue {
        q.graph.node(Op::Attention { causal, scale }, &[q, k, v], vec![], 1).remove(0)
    }
    /// Gathers slices of `x` along `axis` at `indices` (i32/i64).
    #[track_caller]
    pub fn gather(x: &TensorValue, indices: &TensorValue, axis: i64) -> TensorValue {
        x.graph.node(Op::Gather { axis }, &[x, indices], vec![], 1).remove(0)
    }
    /// Expands i8 GGUF blocks `[..., n * block_bytes]` to `f32[..., n * block_len]`.
    #[track_caller]
    pub fn dequantize(w: &TensorValue, format: max_dialects::QuantFormat) -> TensorValue {
        w.graph.node(Op::Dequantize { format }, &[w], vec![], 1).remove(0)
    }
    /// Writes `new[B,S,H,D]` into layer `layer` of the KV cache `cache[L,Bmax,T,H,D]` (a
    /// graph input the caller owns and passes as mutable state) at `cache[layer, slot[b],
    /// pos[b]..]`; returns the updated cache, which attention must read.
    #[track_caller]
    pub fn cache_write(cache: &TensorValue, new: &TensorValue, pos: &TensorValue, slot: &TensorValue, layer: i64) -> TensorValue {
        cache.graph.node(Op::CacheWrite { layer }, &[cache, new, pos, slot], vec![], 1).remove(0)
    }
    /// Causal grouped-query attention of `q[B,S,Hq,D]` over layer `layer` of the KV caches:
    /// query `s` of row `b` is at position `pos[b] + s` and reads cache row `slot[b]`.
    #[track_caller]
    pub fn cached_attention(q: &TensorValue, k_cache: &TensorValue, v_cache: &TensorValue, pos: &TensorValue, slot: &TensorValue, layer: i64, scale: Option<f64>) -> TensorValue {
        q.graph.node(Op::CachedAttention { layer, scale }, &[q, k_cache, v_cache, pos, slot], vec![], 1).remove(0)
    }
}
