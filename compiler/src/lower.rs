//! Lowering `max` ops to linalg/tensor/arith/math on tensors: one `func.func` per dispatch.
//!
//! Every kernel is written in destination-passing style against the kernel ABI: its
//! arguments are the binding memrefs (operands first, then results) followed by the
//! workgroup id and count. Operands are wrapped with `bufferization.to_tensor restrict`,
//! results are computed into `to_tensor restrict writable` views of the result memrefs and
//! written back with `materialize_in_destination`, so one-shot bufferization writes straight
//! into the runtime's buffers with no copies.
//!
//! A dispatch whose results are independent along their leading dimension is partitioned:
//! workgroup `w` of `n` computes rows `[w*ceil(R/n), ...)` by taking subviews of the
//! leading-dim-aligned bindings. All sizes inside a kernel come from the memrefs (which the
//! ABI wrapper builds from push constants), never from symbol values.

use max_dialects::{BinaryOp, DType, DimExpr, Graph, Node, Op, ReduceOp, UnaryOp};
use std::fmt::Write;

mod rows;

/// A binding's static view: dtype and dims (`None` = dynamic).
#[derive(Debug, Clone, PartialEq)]
pub struct BindingType {
    pub dtype: DType,
    pub dims: Vec<Option<i64>>,
}

impl BindingType {
    /// From an inferred type (symbolic dims become dynamic).
    pub fn of(t: &max_dialects::TensorType) -> Self {
        BindingType { dtype: t.dtype, dims: t.static_dims() }
    }
    fn shape_str(&self) -> String {
        let mut s = String::new();
        for d in &self.dims {
            match d {
                Some(c) => write!(s, "{c}x").unwrap(),
                None => s.push_str("?x"),
            }
        }
        s.push_str(self.dtype.mlir_name());
        s
    }
    /// `tensor<...>`.
    pub fn tensor(&self) -> String {
        format!("tensor<{}>", self.shape_str())
    }
    /// `memref<...>` with the identity layout.
    pub fn memref(&self) -> String {
        format!("memref<{}>", self.shape_str())
    }
    /// The memref type of a subview shaped `self` of a row-major buffer shaped `parent`
    /// (the strides are the parent's; the offset is dynamic).
    fn view_memref(&self, parent: &BindingType) -> String {
        let mut strides = Vec::new();
        for i in 0..parent.dims.len() {
            let s: Option<i64> = parent.dims[i + 1..].iter().try_fold(1i64, |acc, d| d.map(|d| acc * d));
            strides.push(s.map_or("?".to_string(), |v| v.to_string()));
        }
        format!("memref<{}, strided<[{}], offset: ?>>", self.shape_str(), strides.join(", "))
    }
}

/// Where a value of a fused kernel lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueRef {
    /// Input binding `i`.
    Input(usize),
    /// Output binding `i`.
    Output(usize),
    /// A temporary inside the kernel (shaped like output 0), with its dtype.
    Temp(usize, DType),
}

/// One op of a kernel body.
#[derive(Debug, Clone)]
pub struct FusedOp {
    pub op: Op,
    pub args: Vec<ValueRef>,
    pub results: Vec<ValueRef>,
    /// For a matmul: the right operand is stored packed as `[N/16][K][16]` (see
    /// [`PACK_WIDTH`]): a weight packed at compile time, or an activation packed at run time
    /// by a dispatch before this one ([`crate::pack`]).
    pub packed_rhs: bool,
    /// For a matmul on the CPU with a packed right operand: the left operand is a relu's
    /// output, so a one-row product may skip its zeros (see [`ZeroSkip`]).
    pub sparse_lhs: bool,
    /// For a custom op with an MLIR kernel: the function and its parameter/result types.
    pub call: Option<MlirCall>,
}

impl FusedOp {
    /// An elementwise op of the compiler's own (not an MLIR-library call).
    pub fn is_elementwise(&self) -> bool {
        matches!(self.op, Op::Unary(_) | Op::Binary(_) | Op::Cast(_)) && self.call.is_none()
    }

    /// The input binding of a matmul's right operand (its weight), if this is a matmul on
    /// two inputs.
    pub fn matmul_weight_input(&self) -> Option<usize> {
        match (&self.op, self.args.as_slice()) {
            (Op::MatMul, [ValueRef::Input(_), ValueRef::Input(w), ..]) => Some(*w),
            _ => None,
        }
    }
}

/// A call of an MLIR kernel-library function (inlined later).
#[derive(Debug, Clone)]
pub struct MlirCall {
    pub function: String,
    pub params: Vec<String>,
    pub results: Vec<String>,
}

/// Column-panel width of pre-packed matmul weights (the micro-kernel's tile width).
pub const PACK_WIDTH: usize = 16;

/// Whether a matmul of operands typed `a` and `b` into `out` is computed by the f32
/// micro-kernel, so that a constant `b` may be stored pre-packed.
/// `a` and `out` may be `[B, T, K]` and `[B, T, N]` (see [`crate::flatten`]).
pub fn packs_rhs(a: &max_dialects::TensorType, b: &max_dialects::TensorType, out: &max_dialects::TensorType) -> bool {
    [a, b, out].iter().all(|t| t.dtype == DType::F32)
        && b.rank() == 2
        && (a.rank() == 2 || (a.rank() == 3 && a.dims[..2] == out.dims[..2]))
        && out.rank() == a.rank()
        && b.dims.iter().all(DimExpr::is_static)
        && b.dims[1].as_const().is_some_and(|n| n >= PACK_WIDTH as i64 && n % PACK_WIDTH as i64 == 0)
}

/// Below this many result rows per workgroup, a [`splits_columns`] kernel splits columns;
/// at or above it, rows (each workgroup then streams the whole weight, but its rows' tiles
/// stay in cache across panels).
pub const COLUMN_SPLIT_BELOW_ROWS_PER_WORKGROUP: usize = 48;

/// [`COLUMN_SPLIT_BELOW_ROWS_PER_WORKGROUP`], or `MAX_COLUMN_SPLIT_ROWS=N` when set (a
/// tuning knob: 0 always splits rows, a huge value always columns).
pub fn column_split_rows() -> usize {
    std::env::var("MAX_COLUMN_SPLIT_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(COLUMN_SPLIT_BELOW_ROWS_PER_WORKGROUP)
}

/// Whether a kernel may split its result's columns over workgroups: a CPU matmul on a pre-packed
/// weight (so each workgroup streams only its own column panels; with few rows, splitting
/// rows would leave all but one core idle) or on an f32 activation `b[k, n]` of static
/// width (see [`activation_by_rows`]), followed only by elementwise ops whose other
/// operands are shaped like the result (`[m, n]`) or broadcast along its rows (`[n]`,
/// `[1, n]`). A row-wise consumer such as softmax needs whole rows, so it keeps rows.
pub fn splits_columns(spec: &KernelSpec) -> bool {
    let Some(first) = spec.body.first() else { return false };
    if spec.gpu || spec.native.is_some() || spec.outputs.len() != 1 || !matches!(first.op, Op::MatMul) {
        return false;
    }
    let out = &spec.outputs[0];
    let (ValueRef::Input(a), ValueRef::Input(b)) = (first.args[0], first.args[1]) else { return false };
    if out.dims.len() != 2 {
        return false;
    }
    if !first.packed_rhs {
        // The micro-kernel's operands, with whole 16-column panels to deal out. `x @ x`
        // binds one buffer for both, which cannot be cut by rows and by columns at once.
        if a == b {
            return false;
        }
        let (a, b) = (&spec.inputs[a], &spec.inputs[b]);
        let f32_2d = |t: &BindingType| t.dtype == DType::F32 && t.dims.len() == 2;
        if !(f32_2d(a) && f32_2d(b) && f32_2d(out) && b.dims[1].is_some_and(|n| n >= PACK_WIDTH as i64) && out.dims[1] == b.dims[1]) {
            return false;
        }
    }
    spec.body[1..].iter().all(|f| {
        f.is_elementwise()
            && f.args.iter().all(|a| match a {
                // The matmul reads its operands whole.
                ValueRef::Input(_) if *a == first.args[0] || *a == first.args[1] => false,
                ValueRef::Input(i) => column_follows(&spec.inputs[*i], out).is_some(),
                _ => true,
            })
    })
}

/// For an elementwise operand of a column-split kernel: the dim of `t` that follows the
/// result's columns (`[m, n]` and `[1, n]`: 1; `[n]`: 0), or `None` if it cannot follow.
pub(crate) fn column_follows(t: &BindingType, out: &BindingType) -> Option<usize> {
    match t.dims.as_slice() {
        [n] if *n == out.dims[1] => Some(0),
        [m, n] if *n == out.dims[1] && (*m == Some(1) || *m == out.dims[0]) => Some(1),
        _ => None,
    }
}

/// Packs a row-major f32 `[k, n]` matrix (little-endian bytes) into `[n/16][k][16]` panels.
pub fn pack_rhs(bytes: &[u8], k: usize, n: usize) -> Vec<u8> {
    let w = PACK_WIDTH;
    let mut out = Vec::with_capacity(bytes.len());
    for p in 0..n / w {
        for kk in 0..k {
            let start = (kk * n + p * w) * 4;
            out.extend_from_slice(&bytes[start..start + w * 4]);
        }
    }
    out
}

/// A kernel to generate: its bindings and the ops of its dispatch region.
#[derive(Debug, Clone)]
pub struct KernelSpec {
    pub name: String,
    pub inputs: Vec<BindingType>,
    pub outputs: Vec<BindingType>,
    pub body: Vec<FusedOp>,
    /// Whether the kernel splits its rows over workgroups, and which input bindings are
    /// sliced along with the results.
    pub partition: Option<Vec<bool>>,
    /// A native custom kernel: the C symbol the ABI wrapper calls (no MLIR body).
    pub native: Option<String>,
    /// Lowered for an NVIDIA GPU: the function is host code whose loops become kernels
    /// (see [`crate::gpu`]); `allow_tf32` lets f32 matmuls use TF32 tensor cores.
    pub gpu: bool,
    pub allow_tf32: bool,
    /// The GPU has Hopper's warpgroup MMA (sm_90): matmuls use [`crate::gpu_wgmma`].
    pub wgmma: bool,
    /// Workgroups split the result's columns (see [`splits_columns`]) instead of its rows.
    pub columns: bool,
    /// On a GPU: the user's PTX kernel this dispatch launches (a custom op).
    pub ptx: Option<crate::custom::PtxKernel>,
    /// The kernel packs an activation `b[k, n]` into `[n/16][k][16]` panels for a matmul
    /// (see [`crate::pack`]); its body is empty.
    pub packs_panels: bool,
}

/// Decides whether `node`'s kernel can be partitioned along the leading result dim, and
/// which operands follow that dim. Returns `None` when it cannot.
pub fn partition_for(graph: &Graph, node: &Node) -> Option<Vec<bool>> {
    let out = graph.ty(node.outputs[0]);
    if out.rank() == 0 || node.outputs.iter().any(|o| graph.ty(*o).dims[0] != out.dims[0]) {
        return None;
    }
    let lead = &out.dims[0];
    let ins: Vec<&max_dialects::TensorType> = node.inputs.iter().map(|v| graph.ty(*v)).collect();
    // An operand follows the rows if it has the result's rank and the same leading dim.
    let aligned = |t: &max_dialects::TensorType| t.rank() == out.rank() && &t.dims[0] == lead && lead.as_const() != Some(1);
    match &node.op {
        Op::Unary(_) | Op::Binary(_) | Op::Cast(_) | Op::BroadcastTo { .. } => Some(ins.iter().map(|t| aligned(t)).collect()),
        Op::MatMul => {
            if out.rank() == 2 {
                Some(vec![true, false])
            } else {
                Some(ins.iter().map(|t| aligned(t)).collect())
            }
        }
        Op::Softmax { axis } => (norm(*axis, out.rank()) != 0).then(|| vec![true]),
        Op::Reduce { axes, .. } => {
            let r = ins[0].rank();
            (!axes.iter().any(|a| norm(*a, r) == 0)).then(|| vec![true])
        }
        Op::Transpose { perm } => (norm(perm[0], out.rank()) == 0).then(|| vec![true]),
        Op::Concat { axis } => (norm(*axis, out.rank()) != 0).then(|| vec![true; ins.len()]),
        Op::Split { axis, .. } => (norm(*axis, out.rank()) != 0).then(|| vec![true]),
        Op::Gather { axis } => (norm(*axis, ins[0].rank()) != 0).then(|| vec![true, false]),
        // Normalizations are row-local; their weights are read whole.
        Op::RmsNorm { .. } | Op::LayerNorm { .. } => (out.rank() >= 2).then(|| (0..ins.len()).map(|i| i == 0).collect()),
        // Only batch dims split: positions index the sequence dim, which must stay whole.
        // Positions that start at the leading dim (`x[N, H, D]`, `positions[N]`) split with
        // the rows; otherwise only batch dims before them split.
        Op::Rope { .. } if crate::rope::applies(graph, node) => None,
        Op::Rope { .. } if ins[1].rank() + 2 == out.rank() => Some(vec![true, true]),
        Op::Rope { .. } => (out.rank() >= 4).then(|| vec![true, false]),
        Op::Dequantize { .. } => (out.rank() >= 2).then(|| vec![true]),
        // The micro-kernel splits columns itself.
        Op::QMatMul { .. } if crate::qmatmul::applies(graph, node) => None,
        Op::QMatMul { .. } => Some(vec![true, false]),
        Op::Attention { .. } => Some(vec![true, true, true]),
        _ => None,
    }
}

/// The leading-dim extent a partitioned kernel splits (the workgroup count upper bound).
pub fn partition_extent(graph: &Graph, node: &Node) -> DimExpr {
    graph.ty(node.outputs[0]).dims[0].clone()
}

fn norm(a: i64, rank: usize) -> usize {
    if a < 0 {
        (a + rank as i64) as usize
    } else {
        a as usize
    }
}

/// An MLIR float literal (MLIR needs a `.` in the mantissa: `1.0e-07`, not `1e-7`).
pub(crate) fn float_lit(v: f64) -> String {
    let s = format!("{v:e}");
    match s.split_once('e') {
        Some((m, e)) if !m.contains('.') => format!("{m}.0e{e}"),
        _ => s,
    }
}

/// Emits MLIR text with fresh SSA names.
struct Emitter {
    body: String,
    next: usize,
    /// SSA name prefix (`t`; epilogue code inlined elsewhere uses its own).
    prefix: &'static str,
    /// Lowering for a GPU: no CPU micro-kernels, loop orders that map onto threads.
    gpu: bool,
    /// The CPU target's tuning (ignored on a GPU).
    cpu: CpuTuning,
}

/// What CPU kernels know of their target beyond the IR: instructions the quantized kernels
/// call directly, and choices that measured differently on different microarchitectures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTuning {
    /// The target has AVX2 (the quantized micro-kernels use its byte multiply-adds).
    pub avx2: bool,
    /// One-row (GEMV) tiles prefetch the weight panel they stream, [`PANEL_PREFETCH_ROWS`]
    /// ahead. On znver3 this made custom_mlp at batch 1 (weights in L3) ~1.4x faster; on
    /// znver4, whose hardware prefetchers keep up with the stream, the prefetches only cost
    /// issue slots: without them it took 0.81-0.89x the time. Off for znver4 only, the one
    /// CPU measured that way; `MAX_GEMV_PREFETCH=0|1` overrides.
    pub gemv_prefetch: bool,
    /// A workgroup's rows of `a` (bytes) from which matmuls take [`blocked_tiles`]; `None`:
    /// never. On znver4 (1 MiB of L2) the unblocked tiles were faster at every size
    /// measured: blocked tiles took 1.07-1.16x their time (weight matmuls 1536^3, 2048^3,
    /// 4096^3 and an activation 2048^3, 2 threads). Elsewhere [`BLOCKED_MIN_A_BYTES`];
    /// `MAX_BLOCKED_MIN_A_BYTES=N` overrides (0 blocks every deep enough matmul).
    pub blocked_min_a_bytes: Option<usize>,
    /// Lanes of the f32 matmul micro-kernel's vectors: 16 (512-bit registers) where the
    /// target has AVX-512F, else 8. A tile row is one [`PACK_WIDTH`]-wide packed panel either
    /// way: one 512-bit vector or two 256-bit ones. On znver4, which runs 512-bit FMAs as two
    /// 256-bit halves, the 512-bit tiles still took 0.96-0.97x the time of the 256-bit ones
    /// (half the instructions for the same FMAs: custom_mlp at batch 64, weight and
    /// activation matmuls at 1024^3 and 2048^3). CPUs with two 512-bit FMA units (most
    /// AVX-512 Xeons) double their peak with them, but the 6-row tile then keeps only 6 FMA
    /// chains for the 8 that two units of 4-cycle latency need: unmeasured there. (8-row
    /// tiles measured the same as 6 on znver4.) `MAX_MATMUL_LANES=8` forces 256-bit vectors.
    pub vector_lanes: usize,
    /// A one-row matmul after a relu skips the relu's zeros ([`ZeroSkip`]); on unless
    /// `MAX_ZERO_SKIP=0` (a knob for measuring and testing the dense path against it).
    pub zero_skip: bool,
}

impl CpuTuning {
    /// The tuning for LLVM CPU name `cpu` (a concrete CPU, or a portable `x86-64-v*`
    /// level, which keeps the defaults) with AVX2 or not, and AVX-512F or not.
    pub fn for_cpu(cpu: &str, avx2: bool, avx512: bool) -> CpuTuning {
        let znver4 = cpu == "znver4";
        let gemv_prefetch = match std::env::var("MAX_GEMV_PREFETCH").as_deref() {
            Ok("0") => false,
            Ok("1") => true,
            _ => !znver4,
        };
        let blocked_min_a_bytes = match std::env::var("MAX_BLOCKED_MIN_A_BYTES").ok().and_then(|v| v.parse().ok()) {
            Some(n) => Some(n),
            None => (!znver4).then_some(BLOCKED_MIN_A_BYTES),
        };
        let vector_lanes = match std::env::var("MAX_MATMUL_LANES").as_deref() {
            Ok("8") => 8,
            _ if avx512 => 16,
            _ => 8,
        };
        let zero_skip = std::env::var("MAX_ZERO_SKIP").map_or(true, |v| v != "0");
        CpuTuning { avx2, gemv_prefetch, blocked_min_a_bytes, vector_lanes, zero_skip }
    }
}

impl Default for CpuTuning {
    /// A portable target without AVX2 (what epilogue code inlined into GPU kernels is
    /// emitted with; it takes no CPU path).
    fn default() -> CpuTuning {
        CpuTuning::for_cpu("x86-64", false, false)
    }
}

/// A tensor value inside a kernel.
#[derive(Debug, Clone)]
struct Val {
    ssa: String,
    ty: BindingType,
}

fn compute_type(d: DType) -> DType {
    if d.is_float() {
        DType::F32
    } else {
        d
    }
}

impl Emitter {
    /// Lanes of the f32 matmul micro-kernel's vectors ([`CpuTuning::vector_lanes`]).
    fn vl(&self) -> usize {
        self.cpu.vector_lanes
    }
    /// Vectors per row of its register tile: a row spans one packed panel.
    fn nv(&self) -> usize {
        PACK_WIDTH / self.cpu.vector_lanes
    }
    fn fresh(&mut self) -> String {
        self.next += 1;
        format!("%{}{}", self.prefix, self.next)
    }
    fn line(&mut self, s: impl AsRef<str>) {
        self.body.push_str("    ");
        self.body.push_str(s.as_ref());
        self.body.push('\n');
    }
    fn assign(&mut self, rhs: impl AsRef<str>) -> String {
        let v = self.fresh();
        self.line(format!("{v} = {}", rhs.as_ref()));
        v
    }
    fn index(&mut self, c: i64) -> String {
        self.assign(format!("arith.constant {c} : index"))
    }
    fn scalar_const(&mut self, value: f64, d: DType) -> String {
        if d.is_float() {
            let bits = if value == f64::NEG_INFINITY {
                "0xFF800000".to_string()
            } else {
                float_lit(value)
            };
            self.assign(format!("arith.constant {bits} : {}", d.mlir_name()))
        } else {
            let v = if value == f64::NEG_INFINITY {
                if d == DType::I32 { i32::MIN as i64 } else { i64::MIN }
            } else {
                value as i64
            };
            self.assign(format!("arith.constant {v} : {}", d.mlir_name()))
        }
    }
    /// `tensor.dim` of `v` along `i` (a constant when static).
    fn dim(&mut self, v: &Val, i: usize) -> String {
        match v.ty.dims[i] {
            Some(c) => self.index(c),
            None => {
                let c = self.index(i as i64);
                self.assign(format!("tensor.dim {}, {c} : {}", v.ssa, v.ty.tensor()))
            }
        }
    }
    /// `tensor.empty` shaped like `like` (dims taken from `dims_of`) with dtype `d`.
    fn empty(&mut self, dims_of: &Val, d: DType) -> Val {
        let mut args = Vec::new();
        for i in 0..dims_of.ty.dims.len() {
            if dims_of.ty.dims[i].is_none() {
                args.push(self.dim(dims_of, i));
            }
        }
        let ty = BindingType { dtype: d, dims: dims_of.ty.dims.clone() };
        let ssa = self.assign(format!("tensor.empty({}) : {}", args.join(", "), ty.tensor()));
        Val { ssa, ty }
    }
    fn fill(&mut self, t: &Val, scalar: &str) -> Val {
        let ssa = self.assign(format!(
            "linalg.fill ins({scalar} : {}) outs({} : {}) -> {}",
            t.ty.dtype.mlir_name(),
            t.ssa,
            t.ty.tensor(),
            t.ty.tensor()
        ));
        Val { ssa, ty: t.ty.clone() }
    }
}

/// Scalar code for one element of an elementwise op, outside any `linalg.generic`: the
/// epilogues of GPU matmul kernels compute their fused elementwise tail with it, with the
/// same conversions and arithmetic as the op's own lowering.
pub(crate) struct ScalarEmitter {
    e: Emitter,
}

impl ScalarEmitter {
    /// Values are named `%ep<N>`.
    pub(crate) fn new() -> Self {
        ScalarEmitter { e: Emitter { body: String::new(), next: 0, gpu: true, prefix: "ep", cpu: CpuTuning::default() } }
    }

    /// Whether `op` is elementwise, so that [`ScalarEmitter::op`] computes it.
    pub(crate) fn supports(op: &Op) -> bool {
        matches!(op, Op::Unary(_) | Op::Binary(_) | Op::Cast(_))
    }

    /// Emits `op` on scalar operands (SSA value, dtype) producing a value of dtype `out`.
    pub(crate) fn op(&mut self, op: &Op, args: &[(String, DType)], out: DType) -> String {
        let mut b = Body { e: &mut self.e };
        let ct = compute_type(out);
        match op {
            Op::Unary(u) => {
                let x = b.convert(&args[0].0, args[0].1, ct);
                let r = b.unary(*u, &x, ct);
                b.convert(&r, ct, out)
            }
            Op::Binary(bop) => {
                let x = b.convert(&args[0].0, args[0].1, ct);
                let y = b.convert(&args[1].0, args[1].1, ct);
                let r = b.binary(*bop, &x, &y, ct);
                b.convert(&r, ct, out)
            }
            Op::Cast(_) => b.convert(&args[0].0, args[0].1, out),
            _ => unreachable!("ScalarEmitter::supports admits only elementwise ops"),
        }
    }

    /// The code emitted since the last call (one op per line, indented 6).
    pub(crate) fn take(&mut self) -> String {
        std::mem::take(&mut self.e.body)
    }
}

/// Scalar code inside a `linalg.generic` body.
struct Body<'a> {
    e: &'a mut Emitter,
}

impl Body<'_> {
    fn op(&mut self, s: String) -> String {
        let v = self.e.fresh();
        self.e.body.push_str(&format!("      {v} = {s}\n"));
        v
    }
    fn fconst(&mut self, c: f64, d: DType) -> String {
        if d.is_float() {
            self.op(format!("arith.constant {} : {}", float_lit(c), d.mlir_name()))
        } else {
            self.op(format!("arith.constant {} : {}", c as i64, d.mlir_name()))
        }
    }
    fn convert(&mut self, v: &str, from: DType, to: DType) -> String {
        if from == to {
            return v.to_string();
        }
        let (f, t) = (from.mlir_name(), to.mlir_name());
        match (from.is_float(), to.is_float()) {
            (true, true) => {
                if from.size_bytes() < to.size_bytes() {
                    self.op(format!("arith.extf {v} : {f} to {t}"))
                } else if from.size_bytes() > to.size_bytes() {
                    self.op(format!("arith.truncf {v} : {f} to {t}"))
                } else {
                    let w = self.op(format!("arith.extf {v} : {f} to f32"));
                    self.op(format!("arith.truncf {w} : f32 to {t}"))
                }
            }
            (true, false) => self.op(format!("arith.fptosi {v} : {f} to {t}")),
            (false, true) => self.op(format!("arith.sitofp {v} : {f} to {t}")),
            (false, false) => {
                if from.size_bytes() < to.size_bytes() {
                    self.op(format!("arith.extsi {v} : {f} to {t}"))
                } else {
                    self.op(format!("arith.trunci {v} : {f} to {t}"))
                }
            }
        }
    }
    fn unary(&mut self, u: UnaryOp, x: &str, d: DType) -> String {
        let t = d.mlir_name();
        let float = d.is_float();
        match u {
            UnaryOp::Neg if float => self.op(format!("arith.negf {x} : {t}")),
            UnaryOp::Neg => {
                let z = self.fconst(0.0, d);
                self.op(format!("arith.subi {z}, {x} : {t}"))
            }
            UnaryOp::Abs if float => self.op(format!("math.absf {x} : {t}")),
            UnaryOp::Abs => self.op(format!("math.absi {x} : {t}")),
            UnaryOp::Relu => {
                let z = self.fconst(0.0, d);
                if float {
                    self.op(format!("arith.maximumf {x}, {z} : {t}"))
                } else {
                    self.op(format!("arith.maxsi {x}, {z} : {t}"))
                }
            }
            UnaryOp::Exp if t == "f32" => self.exp(x),
            UnaryOp::Exp => self.op(format!("math.exp {x} : {t}")),
            UnaryOp::Log => self.op(format!("math.log {x} : {t}")),
            UnaryOp::Sqrt => self.op(format!("math.sqrt {x} : {t}")),
            UnaryOp::Rsqrt => self.op(format!("math.rsqrt {x} : {t}")),
            UnaryOp::Tanh if t == "f32" => crate::math::tanh_f32(&mut |rhs| self.op(rhs), x, t),
            UnaryOp::Tanh => self.op(format!("math.tanh {x} : {t}")),
            UnaryOp::Sigmoid => self.sigmoid(x, t),
            UnaryOp::Silu => {
                let s = self.sigmoid(x, t);
                self.op(format!("arith.mulf {x}, {s} : {t}"))
            }
            UnaryOp::Gelu => {
                let k = self.fconst(std::f64::consts::FRAC_1_SQRT_2, d);
                let half = self.fconst(0.5, d);
                let one = self.fconst(1.0, d);
                let a = self.op(format!("arith.mulf {x}, {k} : {t}"));
                let e = if t == "f32" { crate::math::erf_f32(&mut |rhs| self.op(rhs), &a, t) } else { self.op(format!("math.erf {a} : {t}")) };
                let p = self.op(format!("arith.addf {e}, {one} : {t}"));
                let h = self.op(format!("arith.mulf {x}, {half} : {t}"));
                self.op(format!("arith.mulf {h}, {p} : {t}"))
            }
        }
    }
    /// `exp` of an f32, inline (see [`crate::math`]).
    fn exp(&mut self, x: &str) -> String {
        crate::math::exp_f32(&mut |rhs| self.op(rhs), x, "f32")
    }
    fn sigmoid(&mut self, x: &str, t: &str) -> String {
        let one = self.op(format!("arith.constant 1.0 : {t}"));
        let n = self.op(format!("arith.negf {x} : {t}"));
        let e = if t == "f32" { self.exp(&n) } else { self.op(format!("math.exp {n} : {t}")) };
        let d = self.op(format!("arith.addf {e}, {one} : {t}"));
        self.op(format!("arith.divf {one}, {d} : {t}"))
    }
    fn binary(&mut self, b: BinaryOp, x: &str, y: &str, d: DType) -> String {
        let t = d.mlir_name();
        if d.is_float() {
            let op = match b {
                BinaryOp::Add => "arith.addf",
                BinaryOp::Sub => "arith.subf",
                BinaryOp::Mul => "arith.mulf",
                BinaryOp::Div => "arith.divf",
                BinaryOp::Maximum => "arith.maximumf",
                BinaryOp::Minimum => "arith.minimumf",
                BinaryOp::Pow => "math.powf",
            };
            return self.op(format!("{op} {x}, {y} : {t}"));
        }
        match b {
            BinaryOp::Add => self.op(format!("arith.addi {x}, {y} : {t}")),
            BinaryOp::Sub => self.op(format!("arith.subi {x}, {y} : {t}")),
            BinaryOp::Mul => self.op(format!("arith.muli {x}, {y} : {t}")),
            BinaryOp::Maximum => self.op(format!("arith.maxsi {x}, {y} : {t}")),
            BinaryOp::Minimum => self.op(format!("arith.minsi {x}, {y} : {t}")),
            BinaryOp::Div => {
                // x / 0 gives 0 and MIN / -1 gives -MIN, instead of a hardware trap.
                let zero = self.fconst(0.0, d);
                let one = self.fconst(1.0, d);
                let m1 = self.fconst(-1.0, d);
                let is0 = self.op(format!("arith.cmpi eq, {y}, {zero} : {t}"));
                let ism1 = self.op(format!("arith.cmpi eq, {y}, {m1} : {t}"));
                let bad = self.op(format!("arith.ori {is0}, {ism1} : i1"));
                let safe = self.op(format!("arith.select {bad}, {one}, {y} : {t}"));
                let q = self.op(format!("arith.divsi {x}, {safe} : {t}"));
                let neg = self.op(format!("arith.subi {zero}, {x} : {t}"));
                let r = self.op(format!("arith.select {ism1}, {neg}, {q} : {t}"));
                self.op(format!("arith.select {is0}, {zero}, {r} : {t}"))
            }
            BinaryOp::Pow => unreachable!("verifier rejects integer pow"),
        }
    }
}

/// An affine map over `n` loop dims with the given result expressions.
fn amap(n: usize, results: &[String]) -> String {
    let dims: Vec<String> = (0..n).map(|i| format!("d{i}")).collect();
    format!("affine_map<({}) -> ({})>", dims.join(", "), results.join(", "))
}

/// Map of an operand broadcast (right-aligned) into `n` loop dims.
fn broadcast_map(n: usize, operand: &BindingType, out_dims: &[Option<i64>]) -> String {
    let off = n - operand.dims.len();
    let res: Vec<String> = operand
        .dims
        .iter()
        .enumerate()
        .map(|(i, d)| if *d == Some(1) && out_dims[off + i] != Some(1) { "0".to_string() } else { format!("d{}", off + i) })
        .collect();
    amap(n, &res)
}

fn iterators(kinds: &[bool]) -> String {
    let v: Vec<&str> = kinds.iter().map(|r| if *r { "\"reduction\"" } else { "\"parallel\"" }).collect();
    format!("[{}]", v.join(", "))
}

/// Emits a `linalg.generic` whose body is produced by `f(body, block_args)`.
fn generic(
    e: &mut Emitter,
    maps: Vec<String>,
    reduction: &[bool],
    ins: &[&Val],
    out: &Val,
    f: impl FnOnce(&mut Body, &[String]) -> String,
) -> Val {
    let res = e.fresh();
    let in_ssa: Vec<&str> = ins.iter().map(|v| v.ssa.as_str()).collect();
    let in_ty: Vec<String> = ins.iter().map(|v| v.ty.tensor()).collect();
    let ins_clause = if ins.is_empty() { String::new() } else { format!(" ins({} : {})", in_ssa.join(", "), in_ty.join(", ")) };
    e.line(format!(
        "{res} = linalg.generic {{indexing_maps = [{}], iterator_types = {}}}{ins_clause} outs({} : {}) {{",
        maps.join(", "),
        iterators(reduction),
        out.ssa,
        out.ty.tensor()
    ));
    let mut args = Vec::new();
    let mut decl = Vec::new();
    for (i, v) in ins.iter().chain(std::iter::once(&out)).enumerate() {
        args.push(format!("%a{i}"));
        decl.push(format!("%a{i}: {}", v.ty.dtype.mlir_name()));
    }
    // Block argument names are scoped to the region, so they may repeat across generics.
    e.body.push_str(&format!("    ^bb0({}):\n", decl.join(", ")));
    let r = f(&mut Body { e: &mut *e }, &args);
    e.body.push_str(&format!("      linalg.yield {r} : {}\n    }} -> {}\n", out.ty.dtype.mlir_name(), out.ty.tensor()));
    Val { ssa: res, ty: out.ty.clone() }
}

/// Elementwise map of `ins` into `out` (same rank as the loops), broadcasting operands.
fn elementwise(e: &mut Emitter, ins: &[&Val], out: &Val, f: impl FnOnce(&mut Body, &[String]) -> String) -> Val {
    let n = out.ty.dims.len();
    let mut maps: Vec<String> = ins.iter().map(|v| broadcast_map(n, &v.ty, &out.ty.dims)).collect();
    maps.push(amap(n, &(0..n).map(|i| format!("d{i}")).collect::<Vec<_>>()));
    generic(e, maps, &vec![false; n], ins, out, f)
}

/// Copies `v` into the destination `out` (same shape and dtype) with `linalg.copy`, which
/// lowers to loops (a strided `memref.copy` would need MLIR's C runner library).
fn copy_into(e: &mut Emitter, v: &Val, out: &Val) -> Val {
    let ssa = e.assign(format!("linalg.copy ins({} : {}) outs({} : {}) -> {}", v.ssa, v.ty.tensor(), out.ssa, out.ty.tensor(), out.ty.tensor()));
    Val { ssa, ty: out.ty.clone() }
}

/// Converts `v` into the destination `out` (same shape) elementwise.
fn convert_into(e: &mut Emitter, v: &Val, out: &Val) -> Val {
    if v.ty.dtype == out.ty.dtype {
        return v.clone();
    }
    let (from, to) = (v.ty.dtype, out.ty.dtype);
    elementwise(e, &[v], out, |b, a| b.convert(&a[0], from, to))
}

/// Reduces `x` over `axes` into a fresh compute-type tensor with the non-reduced dims.
/// `pre` transforms each element (with the block args of extra operands `extra`) first.
fn reduce_into(
    e: &mut Emitter,
    x: &Val,
    axes: &[usize],
    kind: ReduceOp,
    extra: &[&Val],
    reassoc: bool,
    pre: impl FnOnce(&mut Body, &str, &[String]) -> String,
) -> Val {
    let n = x.ty.dims.len();
    let ct = compute_type(x.ty.dtype);
    let kept: Vec<usize> = (0..n).filter(|i| !axes.contains(i)).collect();
    let mut dyn_args = Vec::new();
    for &i in &kept {
        if x.ty.dims[i].is_none() {
            dyn_args.push(e.dim(x, i));
        }
    }
    let acc_ty = BindingType { dtype: ct, dims: kept.iter().map(|&i| x.ty.dims[i]).collect() };
    let empty = e.assign(format!("tensor.empty({}) : {}", dyn_args.join(", "), acc_ty.tensor()));
    let init = e.scalar_const(if kind == ReduceOp::Max { f64::NEG_INFINITY } else { 0.0 }, ct);
    let acc = e.fill(&Val { ssa: empty, ty: acc_ty.clone() }, &init);
    let red_map = amap(n, &kept.iter().map(|i| format!("d{i}")).collect::<Vec<_>>());
    let mut maps = vec![amap(n, &(0..n).map(|i| format!("d{i}")).collect::<Vec<_>>())];
    maps.extend(extra.iter().map(|_| red_map.clone()));
    maps.push(red_map);
    let mut ins = vec![x];
    ins.extend_from_slice(extra);
    let reduction: Vec<bool> = (0..n).map(|i| axes.contains(&i)).collect();
    let xd = x.ty.dtype;
    // `reassoc` lets LLVM vectorize the loop with partial sums per lane. Normalizations keep
    // the sequential order: LLM logits (and greedy tokens next to llama.cpp's) hang on it.
    let fm = if reassoc { " fastmath<reassoc>" } else { "" };
    generic(e, maps, &reduction, &ins, &acc, |b, a| {
        let v = b.convert(&a[0], xd, ct);
        let v = pre(b, &v, &a[1..a.len() - 1]);
        let acc = &a[a.len() - 1];
        let t = ct.mlir_name();
        match (kind, ct.is_float()) {
            (ReduceOp::Max, true) => b.op(format!("arith.maximumf {acc}, {v}{fm} : {t}")),
            (ReduceOp::Max, false) => b.op(format!("arith.maxsi {acc}, {v} : {t}")),
            (_, true) => b.op(format!("arith.addf {acc}, {v}{fm} : {t}")),
            (_, false) => b.op(format!("arith.addi {acc}, {v} : {t}")),
        }
    })
}

/// `rms_norm` and `layer_norm` over the last axis: row statistics by reductions, then one
/// normalizing map (the element count comes from the runtime dims).
fn normalize(e: &mut Emitter, op: &Op, epsilon: f64, ins: &[Val], out: &Val) -> Val {
    let x = &ins[0];
    let n = x.ty.dims.len();
    let last = n - 1;
    let d = e.dim(x, last);
    let d64 = e.assign(format!("arith.index_cast {d} : index to i64"));
    let df = e.assign(format!("arith.sitofp {d64} : i64 to f32"));
    let eps = e.scalar_const(epsilon, DType::F32);
    let ident: Vec<String> = (0..n).map(|i| format!("d{i}")).collect();
    let kept: Vec<String> = (0..last).map(|i| format!("d{i}")).collect();
    let lastmap = amap(n, &[format!("d{last}")]);
    let (xd, od) = (x.ty.dtype, out.ty.dtype);
    match op {
        Op::RmsNorm { .. } => {
            let w = &ins[1];
            let wd = w.ty.dtype;
            let sumsq = reduce_into(e, x, &[last], ReduceOp::Sum, &[], false, |b, v, _| b.op(format!("arith.mulf {v}, {v} : f32")));
            generic(e, vec![amap(n, &ident), amap(n, &kept), lastmap, amap(n, &ident)], &vec![false; n], &[x, &sumsq, w], out, |b, a| {
                let v = b.convert(&a[0], xd, DType::F32);
                let ms = b.op(format!("arith.divf {}, {df} : f32", a[1]));
                let s = b.op(format!("arith.addf {ms}, {eps} : f32"));
                let r = b.op(format!("math.rsqrt {s} : f32"));
                let wv = b.convert(&a[2], wd, DType::F32);
                let y = b.op(format!("arith.mulf {v}, {r} : f32"));
                let y = b.op(format!("arith.mulf {y}, {wv} : f32"));
                b.convert(&y, DType::F32, od)
            })
        }
        _ => {
            let (g, bt) = (&ins[1], &ins[2]);
            let (gd, bd) = (g.ty.dtype, bt.ty.dtype);
            let sum = reduce_into(e, x, &[last], ReduceOp::Sum, &[], false, |_, v, _| v.to_string());
            let mean_ty = sum.ty.clone();
            let mean_dst = e.empty(&sum, DType::F32);
            let km: Vec<String> = (0..last).map(|i| format!("d{i}")).collect();
            let mean = generic(e, vec![amap(last, &km), amap(last, &km)], &vec![false; last], &[&sum], &mean_dst, |b, a| {
                b.op(format!("arith.divf {}, {df} : f32", a[0]))
            });
            let mean = Val { ssa: mean.ssa, ty: mean_ty };
            let var = reduce_into(e, x, &[last], ReduceOp::Sum, &[&mean], false, |b, v, extra| {
                let c = b.op(format!("arith.subf {v}, {} : f32", extra[0]));
                b.op(format!("arith.mulf {c}, {c} : f32"))
            });
            generic(
                e,
                vec![amap(n, &ident), amap(n, &kept), amap(n, &kept), lastmap.clone(), lastmap, amap(n, &ident)],
                &vec![false; n],
                &[x, &mean, &var, g, bt],
                out,
                |b, a| {
                    let v = b.convert(&a[0], xd, DType::F32);
                    let c = b.op(format!("arith.subf {v}, {} : f32", a[1]));
                    let vr = b.op(format!("arith.divf {}, {df} : f32", a[2]));
                    let s = b.op(format!("arith.addf {vr}, {eps} : f32"));
                    let r = b.op(format!("math.rsqrt {s} : f32"));
                    let gv = b.convert(&a[3], gd, DType::F32);
                    let bv = b.convert(&a[4], bd, DType::F32);
                    let y = b.op(format!("arith.mulf {c}, {r} : f32"));
                    let y = b.op(format!("arith.mulf {y}, {gv} : f32"));
                    let y = b.op(format!("arith.addf {y}, {bv} : f32"));
                    b.convert(&y, DType::F32, od)
                },
            )
        }
    }
}

/// Rotary position embedding: each output element reads itself and its rotation partner
/// from `x` and rotates by `pos * base^(-2i/d)` (angle in f64: positions reach thousands of
/// radians, where f32 angles lose digits).
fn rope(e: &mut Emitter, x: &Val, pos: &Val, base: f64, interleaved: bool, out: &Val) -> Val {
    let n = x.ty.dims.len();
    let dsz = x.ty.dims[n - 1].expect("verifier: static head_dim");
    let half = dsz / 2;
    let c = e.assign(format!("arith.constant {} : f64", float_lit(-2.0 * base.ln() / dsz as f64)));
    let ident: Vec<String> = (0..n).map(|i| format!("d{i}")).collect();
    let (xt, pt) = (x.ty.tensor(), pos.ty.tensor());
    let (xs, ps, pd) = (x.ssa.clone(), pos.ssa.clone(), pos.ty.dtype.mlir_name());
    let (xd, od) = (x.ty.dtype, out.ty.dtype);
    generic(e, vec![amap(n, &ident)], &vec![false; n], &[], out, |b, _| {
        let idx: Vec<String> = (0..n).map(|i| b.op(format!("linalg.index {i} : index"))).collect();
        let d = idx[n - 1].clone();
        let c2 = b.op("arith.constant 2 : index".into());
        let ch = b.op(format!("arith.constant {half} : index"));
        let zero = b.op("arith.constant 0 : index".into());
        let (i, partner, first) = if interleaved {
            let i = b.op(format!("arith.divui {d}, {c2} : index"));
            let r = b.op(format!("arith.remui {d}, {c2} : index"));
            let first = b.op(format!("arith.cmpi eq, {r}, {zero} : index"));
            let one = b.op("arith.constant 1 : index".into());
            let up = b.op(format!("arith.addi {d}, {one} : index"));
            let down = b.op(format!("arith.subi {d}, {one} : index"));
            (i, b.op(format!("arith.select {first}, {up}, {down} : index")), first)
        } else {
            let first = b.op(format!("arith.cmpi ult, {d}, {ch} : index"));
            let i = b.op(format!("arith.remui {d}, {ch} : index"));
            let up = b.op(format!("arith.addi {d}, {ch} : index"));
            let down = b.op(format!("arith.subi {d}, {ch} : index"));
            (i, b.op(format!("arith.select {first}, {up}, {down} : index")), first)
        };
        let pr = pos.ty.dims.len();
        let p = b.op(format!("tensor.extract {ps}[{}] : {pt}", idx[n - 2 - pr..n - 2].join(", ")));
        let pf = b.op(format!("arith.sitofp {p} : {pd} to f64"));
        let i64v = b.op(format!("arith.index_cast {i} : index to i64"));
        let ifl = b.op(format!("arith.sitofp {i64v} : i64 to f64"));
        let ex = b.op(format!("arith.mulf {ifl}, {c} : f64"));
        let freq = b.op(format!("math.exp {ex} : f64"));
        let ang = b.op(format!("arith.mulf {pf}, {freq} : f64"));
        let cs = b.op(format!("math.cos {ang} : f64"));
        let sn = b.op(format!("math.sin {ang} : f64"));
        let cs = b.op(format!("arith.truncf {cs} : f64 to f32"));
        let sn = b.op(format!("arith.truncf {sn} : f64 to f32"));
        let mut at = idx.clone();
        let own = b.op(format!("tensor.extract {xs}[{}] : {xt}", at.join(", ")));
        at[n - 1] = partner;
        let other = b.op(format!("tensor.extract {xs}[{}] : {xt}", at.join(", ")));
        let own = b.convert(&own, xd, DType::F32);
        let other = b.convert(&other, xd, DType::F32);
        // (a, b) -> (a cos - b sin, a sin + b cos), a the pair's first element.
        let oc = b.op(format!("arith.mulf {own}, {cs} : f32"));
        let os = b.op(format!("arith.mulf {other}, {sn} : f32"));
        let y_first = b.op(format!("arith.subf {oc}, {os} : f32"));
        let y_second = b.op(format!("arith.addf {oc}, {os} : f32"));
        let y = b.op(format!("arith.select {first}, {y_first}, {y_second} : f32"));
        b.convert(&y, DType::F32, od)
    })
}

/// Decodes weight `k` of the quantized row `row` (indices of `w` before its last dim) from
/// its GGUF block: f16 scale (and min) from byte pairs, then the nibble or byte of quant
/// `k % 32`. Returns the f32 value.
fn decode_quant(b: &mut Body, ws: &str, wt: &str, row: &[String], k: &str, format: max_dialects::QuantFormat) -> String {
    use max_dialects::QuantFormat as Q;
    let bb = format.block_bytes();
    let at = |p: &str| -> String {
        let mut i = row.to_vec();
        i.push(p.to_string());
        format!("tensor.extract {ws}[{}] : {wt}", i.join(", "))
    };
    let clen = b.op(format!("arith.constant {} : index", format.block_len()));
    let blk = b.op(format!("arith.divui {k}, {clen} : index"));
    let j = b.op(format!("arith.remui {k}, {clen} : index"));
    let cbb = b.op(format!("arith.constant {bb} : index"));
    let base = b.op(format!("arith.muli {blk}, {cbb} : index"));
    // An f16 stored little-endian at byte `off` of the block, as f32.
    let half_at = |b: &mut Body, off: i64| -> String {
        let o0 = b.op(format!("arith.constant {off} : index"));
        let o1 = b.op(format!("arith.constant {} : index", off + 1));
        let p0 = b.op(format!("arith.addi {base}, {o0} : index"));
        let p1 = b.op(format!("arith.addi {base}, {o1} : index"));
        let lo = b.op(at(&p0));
        let hi = b.op(at(&p1));
        let lo = b.op(format!("arith.extui {lo} : i8 to i16"));
        let hi = b.op(format!("arith.extui {hi} : i8 to i16"));
        let c8 = b.op("arith.constant 8 : i16".into());
        let hi = b.op(format!("arith.shli {hi}, {c8} : i16"));
        let bits = b.op(format!("arith.ori {hi}, {lo} : i16"));
        let h = b.op(format!("arith.bitcast {bits} : i16 to f16"));
        b.op(format!("arith.extf {h} : f16 to f32"))
    };
    let d = half_at(b, 0);
    // A byte of the block, zero-extended to i32.
    let byte_at = |b: &mut Body, off: &str| -> String {
        let p = b.op(format!("arith.addi {base}, {off} : index"));
        let v = b.op(at(&p));
        b.op(format!("arith.extui {v} : i8 to i32"))
    };
    match format {
        Q::Q6K => {
            // Element j of 256: sub-block t = j / 32 (half n = t / 4, k = t % 4), l = j % 32.
            // Low 4 bits: byte 64n + 32(k % 2) + l, shifted by 4(k / 2); high 2 bits: byte
            // 128 + 32n + l, shifted by 2k; scale: signed byte 192 + j / 16; d: f16 at 208.
            let ci = |b: &mut Body, v: i64| b.op(format!("arith.constant {v} : index"));
            let (c2, c4, c16, c32, c64) = (ci(b, 2), ci(b, 4), ci(b, 16), ci(b, 32), ci(b, 64));
            let t = b.op(format!("arith.divui {j}, {c32} : index"));
            let l = b.op(format!("arith.remui {j}, {c32} : index"));
            let n = b.op(format!("arith.divui {t}, {c4} : index"));
            let k = b.op(format!("arith.remui {t}, {c4} : index"));
            let kodd = b.op(format!("arith.remui {k}, {c2} : index"));
            let khi = b.op(format!("arith.divui {k}, {c2} : index"));
            let off = b.op(format!("arith.muli {n}, {c64} : index"));
            let o2 = b.op(format!("arith.muli {kodd}, {c32} : index"));
            let off = b.op(format!("arith.addi {off}, {o2} : index"));
            let off = b.op(format!("arith.addi {off}, {l} : index"));
            let lo = byte_at(b, &off);
            let sh = b.op(format!("arith.muli {khi}, {c4} : index"));
            let sh = b.op(format!("arith.index_cast {sh} : index to i32"));
            let lo = b.op(format!("arith.shrui {lo}, {sh} : i32"));
            let c15 = b.op("arith.constant 15 : i32".into());
            let lo = b.op(format!("arith.andi {lo}, {c15} : i32"));
            let c128 = ci(b, 128);
            let hoff = b.op(format!("arith.muli {n}, {c32} : index"));
            let hoff = b.op(format!("arith.addi {hoff}, {c128} : index"));
            let hoff = b.op(format!("arith.addi {hoff}, {l} : index"));
            let hi = byte_at(b, &hoff);
            let hs = b.op(format!("arith.muli {k}, {c2} : index"));
            let hs = b.op(format!("arith.index_cast {hs} : index to i32"));
            let hi = b.op(format!("arith.shrui {hi}, {hs} : i32"));
            let c3 = b.op("arith.constant 3 : i32".into());
            let hi = b.op(format!("arith.andi {hi}, {c3} : i32"));
            let c4i = b.op("arith.constant 4 : i32".into());
            let hi = b.op(format!("arith.shli {hi}, {c4i} : i32"));
            let q = b.op(format!("arith.ori {lo}, {hi} : i32"));
            let c32i = b.op("arith.constant 32 : i32".into());
            let q = b.op(format!("arith.subi {q}, {c32i} : i32"));
            let c192 = ci(b, 192);
            let so = b.op(format!("arith.divui {j}, {c16} : index"));
            let so = b.op(format!("arith.addi {so}, {c192} : index"));
            let sp = b.op(format!("arith.addi {base}, {so} : index"));
            let sc = b.op(at(&sp));
            let sc = b.op(format!("arith.extsi {sc} : i8 to i32"));
            let d6 = half_at(b, 208);
            let qf = b.op(format!("arith.sitofp {q} : i32 to f32"));
            let scf = b.op(format!("arith.sitofp {sc} : i32 to f32"));
            let ds = b.op(format!("arith.mulf {d6}, {scf} : f32"));
            b.op(format!("arith.mulf {ds}, {qf} : f32"))
        }
        Q::Q4K => {
            // Sub-block `sub` (32 weights) of the 256: its 6-bit scale and min, then the
            // nibble of byte 16 + 32 * (sub / 2) + (j % 32), low for even sub-blocks.
            let dmin = half_at(b, 2);
            let (c4, c32) = (b.op("arith.constant 4 : index".into()), b.op("arith.constant 32 : index".into()));
            let sub = b.op(format!("arith.divui {j}, {c32} : index"));
            let l = b.op(format!("arith.remui {j}, {c32} : index"));
            let hi_half = b.op(format!("arith.cmpi uge, {sub}, {c4} : index"));
            // scales[i] is byte 4 + i.
            let o4 = b.op(format!("arith.addi {sub}, {c4} : index"));
            let s_sub = byte_at(b, &o4); // scales[sub]
            let o8 = b.op(format!("arith.addi {o4}, {c4} : index"));
            let s_sub4 = byte_at(b, &o8); // scales[sub + 4]
            let sm4 = b.op(format!("arith.subi {sub}, {c4} : index"));
            let sm4 = b.op(format!("arith.select {hi_half}, {sm4}, {sub} : index"));
            let o0 = b.op(format!("arith.addi {sm4}, {c4} : index"));
            let s_subm4 = byte_at(b, &o0); // scales[sub - 4] (for sub >= 4)
            let i32c = |b: &mut Body, v: i64| b.op(format!("arith.constant {v} : i32"));
            let (k63, k15, k4, k6) = (i32c(b, 63), i32c(b, 15), i32c(b, 4), i32c(b, 6));
            // sub < 4: sc = s[sub] & 63, m = s[sub + 4] & 63.
            let sc_lo = b.op(format!("arith.andi {s_sub}, {k63} : i32"));
            let m_lo = b.op(format!("arith.andi {s_sub4}, {k63} : i32"));
            // sub >= 4: sc = (s[sub + 4] & 15) | (s[sub - 4] >> 6) << 4,
            //           m = (s[sub + 4] >> 4) | (s[sub] >> 6) << 4.
            let a = b.op(format!("arith.andi {s_sub4}, {k15} : i32"));
            let t = b.op(format!("arith.shrui {s_subm4}, {k6} : i32"));
            let t = b.op(format!("arith.shli {t}, {k4} : i32"));
            let sc_hi = b.op(format!("arith.ori {a}, {t} : i32"));
            let a = b.op(format!("arith.shrui {s_sub4}, {k4} : i32"));
            let t = b.op(format!("arith.shrui {s_sub}, {k6} : i32"));
            let t = b.op(format!("arith.shli {t}, {k4} : i32"));
            let m_hi = b.op(format!("arith.ori {a}, {t} : i32"));
            let sc = b.op(format!("arith.select {hi_half}, {sc_hi}, {sc_lo} : i32"));
            let m = b.op(format!("arith.select {hi_half}, {m_hi}, {m_lo} : i32"));
            let c2 = b.op("arith.constant 2 : index".into());
            let pair = b.op(format!("arith.divui {sub}, {c2} : index"));
            let qo = b.op(format!("arith.muli {pair}, {c32} : index"));
            let c16 = b.op("arith.constant 16 : index".into());
            let qo = b.op(format!("arith.addi {qo}, {c16} : index"));
            let qo = b.op(format!("arith.addi {qo}, {l} : index"));
            let byte = byte_at(b, &qo);
            let odd = b.op(format!("arith.remui {sub}, {c2} : index"));
            let odd = b.op(format!("arith.index_cast {odd} : index to i32"));
            let sh = b.op(format!("arith.muli {odd}, {k4} : i32"));
            let nib = b.op(format!("arith.shrui {byte}, {sh} : i32"));
            let nib = b.op(format!("arith.andi {nib}, {k15} : i32"));
            let q = b.op(format!("arith.sitofp {nib} : i32 to f32"));
            let scf = b.op(format!("arith.sitofp {sc} : i32 to f32"));
            let mf = b.op(format!("arith.sitofp {m} : i32 to f32"));
            let ds = b.op(format!("arith.mulf {d}, {scf} : f32"));
            let dm = b.op(format!("arith.mulf {dmin}, {mf} : f32"));
            let qd = b.op(format!("arith.mulf {q}, {ds} : f32"));
            b.op(format!("arith.subf {qd}, {dm} : f32"))
        }
        Q::Q8_0 => {
            let c2 = b.op("arith.constant 2 : index".into());
            let p = b.op(format!("arith.addi {base}, {c2} : index"));
            let p = b.op(format!("arith.addi {p}, {j} : index"));
            let q = b.op(at(&p));
            let qf = b.op(format!("arith.sitofp {q} : i8 to f32"));
            b.op(format!("arith.mulf {qf}, {d} : f32"))
        }
        Q::Q4_0 | Q::Q4_1 | Q::Q5_0 | Q::Q5_1 => {
            let qoff = match format {
                Q::Q4_0 => 2,
                Q::Q4_1 | Q::Q5_0 => 4 + 2 * (format == Q::Q5_0) as i64,
                _ => 8,
            };
            let c16 = b.op("arith.constant 16 : index".into());
            let low = b.op(format!("arith.cmpi ult, {j}, {c16} : index"));
            let jj = b.op(format!("arith.remui {j}, {c16} : index"));
            let cq = b.op(format!("arith.constant {qoff} : index"));
            let p = b.op(format!("arith.addi {base}, {cq} : index"));
            let p = b.op(format!("arith.addi {p}, {jj} : index"));
            let byte = b.op(at(&p));
            let byte = b.op(format!("arith.extui {byte} : i8 to i32"));
            let c4 = b.op("arith.constant 4 : i32".into());
            let c15 = b.op("arith.constant 15 : i32".into());
            let shifted = b.op(format!("arith.shrui {byte}, {c4} : i32"));
            let nib = b.op(format!("arith.select {low}, {byte}, {shifted} : i32"));
            let mut nib = b.op(format!("arith.andi {nib}, {c15} : i32"));
            if matches!(format, Q::Q5_0 | Q::Q5_1) {
                // The fifth bit: bit j of the 32-bit `qh` after the scale (and min).
                let c8i = b.op("arith.constant 8 : index".into());
                let qh_at = b.op(format!("arith.constant {} : index", qoff - 4));
                let byte_i = b.op(format!("arith.divui {j}, {c8i} : index"));
                let p = b.op(format!("arith.addi {base}, {qh_at} : index"));
                let p = b.op(format!("arith.addi {p}, {byte_i} : index"));
                let hb = b.op(at(&p));
                let hb = b.op(format!("arith.extui {hb} : i8 to i32"));
                let bit = b.op(format!("arith.remui {j}, {c8i} : index"));
                let bit = b.op(format!("arith.index_cast {bit} : index to i32"));
                let h = b.op(format!("arith.shrui {hb}, {bit} : i32"));
                let c1 = b.op("arith.constant 1 : i32".into());
                let h = b.op(format!("arith.andi {h}, {c1} : i32"));
                let h = b.op(format!("arith.shli {h}, {c4} : i32"));
                nib = b.op(format!("arith.ori {nib}, {h} : i32"));
            }
            let q = b.op(format!("arith.sitofp {nib} : i32 to f32"));
            if matches!(format, Q::Q4_0 | Q::Q5_0) {
                let off = if format == Q::Q4_0 { "8.0" } else { "16.0" };
                let c8 = b.op(format!("arith.constant {off} : f32"));
                let q = b.op(format!("arith.subf {q}, {c8} : f32"));
                b.op(format!("arith.mulf {q}, {d} : f32"))
            } else {
                let m = half_at(b, 2);
                let qd = b.op(format!("arith.mulf {q}, {d} : f32"));
                b.op(format!("arith.addf {qd}, {m} : f32"))
            }
        }
    }
}

/// `x @ dequantize(w)^T` with `w` in GGUF blocks: a contraction whose body decodes the
/// weight for (n, k) from its block, so weights stay quantized in memory.
fn qmatmul(e: &mut Emitter, x: &Val, w: &Val, format: max_dialects::QuantFormat, out: &Val) -> Val {
    let acc = e.empty(out, DType::F32);
    let zero = e.scalar_const(0.0, DType::F32);
    let acc = e.fill(&acc, &zero);
    let (ws, wt, xd) = (w.ssa.clone(), w.ty.tensor(), x.ty.dtype);
    let maps = vec![amap(3, &["d0".into(), "d2".into()]), amap(3, &["d0".into(), "d1".into()])];
    let r = generic(e, maps, &[false, false, true], &[x], &acc, |b, a| {
        let n = b.op("linalg.index 1 : index".into());
        let k = b.op("linalg.index 2 : index".into());
        let wv = decode_quant(b, &ws, &wt, &[n], &k, format);
        let xv = b.convert(&a[0], xd, DType::F32);
        let p = b.op(format!("arith.mulf {xv}, {wv} fastmath<contract> : f32"));
        b.op(format!("arith.addf {}, {p} fastmath<contract> : f32", a[1]))
    });
    convert_into(e, &r, out)
}

/// `dequantize(w)`: each output element decodes its weight from `w`'s blocks.
fn dequantize(e: &mut Emitter, w: &Val, format: max_dialects::QuantFormat, out: &Val) -> Val {
    let n = out.ty.dims.len();
    let ident: Vec<String> = (0..n).map(|i| format!("d{i}")).collect();
    let (ws, wt, od) = (w.ssa.clone(), w.ty.tensor(), out.ty.dtype);
    generic(e, vec![amap(n, &ident)], &vec![false; n], &[], out, |b, _| {
        let idx: Vec<String> = (0..n).map(|i| b.op(format!("linalg.index {i} : index"))).collect();
        let v = decode_quant(b, &ws, &wt, &idx[..n - 1], &idx[n - 1], format);
        b.convert(&v, DType::F32, od)
    })
}

/// Scaled dot-product attention: scores `[B, Hq, S, T]` by one contraction (kv heads read
/// through `h floordiv group`), scale and causal mask, a softmax over T, then the weighted
/// sum of values.
fn attention(e: &mut Emitter, q: &Val, k: &Val, v: &Val, causal: bool, scale: Option<f64>, out: &Val) -> Val {
    let hq = q.ty.dims[2].unwrap();
    let hkv = k.ty.dims[2].unwrap();
    let group = hq / hkv;
    let dk = q.ty.dims[3].unwrap();
    let scale = scale.unwrap_or(1.0 / (dk as f64).sqrt());
    let (b, s, t) = (q.ty.dims[0], q.ty.dims[1], k.ty.dims[1]);
    let sty = BindingType { dtype: DType::F32, dims: vec![b, Some(hq), s, t] };
    let mut dyn_args = Vec::new();
    if b.is_none() {
        dyn_args.push(e.dim(q, 0));
    }
    if s.is_none() {
        dyn_args.push(e.dim(q, 1));
    }
    if t.is_none() {
        dyn_args.push(e.dim(k, 1));
    }
    let empty = e.assign(format!("tensor.empty({}) : {}", dyn_args.join(", "), sty.tensor()));
    let zero = e.scalar_const(0.0, DType::F32);
    let scores0 = e.fill(&Val { ssa: empty.clone(), ty: sty.clone() }, &zero);
    let kvh = if group == 1 { "d1".to_string() } else { format!("d1 floordiv {group}") };
    // (b, h, s, t, d)
    let maps = vec![
        amap(5, &["d0".into(), "d2".into(), "d1".into(), "d4".into()]),
        amap(5, &["d0".into(), "d3".into(), kvh.clone(), "d4".into()]),
        amap(5, &["d0".into(), "d1".into(), "d2".into(), "d3".into()]),
    ];
    let (qd, kd, vd) = (q.ty.dtype, k.ty.dtype, v.ty.dtype);
    let scores = generic(e, maps, &[false, false, false, false, true], &[q, k], &scores0, |bd, a| {
        let x = bd.convert(&a[0], qd, DType::F32);
        let y = bd.convert(&a[1], kd, DType::F32);
        let p = bd.op(format!("arith.mulf {x}, {y} fastmath<contract> : f32"));
        bd.op(format!("arith.addf {}, {p} fastmath<contract> : f32", a[2]))
    });
    // Scale, and mask keys after each query's position (T - S + s).
    let sv = e.dim(q, 1);
    let tv = e.dim(k, 1);
    let off = e.assign(format!("arith.subi {tv}, {sv} : index"));
    let sc = e.scalar_const(scale, DType::F32);
    let ninf = e.scalar_const(f64::NEG_INFINITY, DType::F32);
    let ident4: Vec<String> = (0..4).map(|i| format!("d{i}")).collect();
    let masked_dst = Val { ssa: e.assign(format!("tensor.empty({}) : {}", dyn_args.join(", "), sty.tensor())), ty: sty.clone() };
    let masked = generic(e, vec![amap(4, &ident4), amap(4, &ident4)], &[false; 4], &[&scores], &masked_dst, |bd, a| {
        let x = bd.op(format!("arith.mulf {}, {sc} : f32", a[0]));
        if !causal {
            return x;
        }
        let si = bd.op("linalg.index 2 : index".into());
        let ti = bd.op("linalg.index 3 : index".into());
        let lim = bd.op(format!("arith.addi {si}, {off} : index"));
        let hidden = bd.op(format!("arith.cmpi sgt, {ti}, {lim} : index"));
        bd.op(format!("arith.select {hidden}, {ninf}, {x} : f32"))
    });
    let probs_dst = Val { ssa: e.assign(format!("tensor.empty({}) : {}", dyn_args.join(", "), sty.tensor())), ty: sty.clone() };
    let probs = lower_op(e, &Op::Softmax { axis: 3 }, &[masked], &[probs_dst]).remove(0);
    // out[b, s, h, dv] = sum_t probs[b, h, s, t] * v[b, t, kvh(h), dv]; loops (b, s, h, dv, t).
    let acc = if out.ty.dtype == DType::F32 { out.clone() } else { e.empty(out, DType::F32) };
    let acc = e.fill(&acc, &zero);
    let kvh2 = if group == 1 { "d2".to_string() } else { format!("d2 floordiv {group}") };
    let maps = vec![
        amap(5, &["d0".into(), "d2".into(), "d1".into(), "d4".into()]),
        amap(5, &["d0".into(), "d4".into(), kvh2, "d3".into()]),
        amap(5, &["d0".into(), "d1".into(), "d2".into(), "d3".into()]),
    ];
    let r = generic(e, maps, &[false, false, false, false, true], &[&probs, v], &acc, |bd, a| {
        let y = bd.convert(&a[1], vd, DType::F32);
        let p = bd.op(format!("arith.mulf {}, {y} fastmath<contract> : f32", a[0]));
        bd.op(format!("arith.addf {}, {p} fastmath<contract> : f32", a[2]))
    });
    convert_into(e, &r, out)
}

/// Rows of the register tile of the f32 matmul micro-kernel.
const MR: usize = 6;

/// Whether a matmul takes the register-blocked micro-kernel path: f32, 2-D operands, and a
/// result width of at least one tile, or only known at run time (attention's products of two
/// activations, one batch slice at a time: see [`crate::batch_slices`]).
fn microkernel_applies(a: &Val, b: &Val, out: &Val) -> bool {
    [a, b, out].iter().all(|v| v.ty.dtype == DType::F32 && v.ty.dims.len() == 2) && b.ty.dims[1].is_none_or(|n| n >= PACK_WIDTH as i64)
}

/// A register-blocked f32 matmul `out = a @ b`.
///
/// The result is computed in `MR x PACK_WIDTH` tiles whose accumulators stay in vector
/// registers for the whole k loop (they are loop-carried values, so nothing has to hoist
/// them): per k, one broadcast of `a[i, k]` per row and `nv` vector loads of `b[k, j..]`
/// feed `MR * nv` FMAs (`nv` vectors of [`CpuTuning::vector_lanes`] make a row). Column
/// panels are the outer loop so a panel of `b` stays in cache while all rows pass over it. Leftover rows run a one-row tile; leftover columns (the
/// result width modulo the tile width) fall back to the generic contraction.
///
/// With `packed`, `b` is a pre-packed `[n/16][k][16]` weight: each panel is one contiguous
/// stream (no strided column walks), which is what makes the one-row (GEMV) case fast.
///
/// With `sparse` (`a` is a relu's output), a one-row product skips the zeros of `a` where
/// the tuning allows ([`CpuTuning::zero_skip`]): see [`ZeroSkip`].
fn matmul_microkernel(e: &mut Emitter, a: &Val, b: &Val, out: &Val, packed: bool, sparse: bool) -> Val {
    let (vl, nv) = (e.vl(), e.nv());
    // A column-split kernel's packed weight has a dynamic panel count (its own panels);
    // packed widths are whole panels, so nothing is left over then. An unpacked `b` may
    // have a width known only at run time (`None` here): its whole tiles and leftover
    // columns are counted then.
    let n = if packed { Some(b.ty.dims[0].map_or(0, |p| p as usize * PACK_WIDTH)) } else { b.ty.dims[1].map(|c| c as usize) };
    let nr = PACK_WIDTH;
    let n_main = n.map(|n| n - n % nr);
    let vty = format!("vector<{vl}xf32>");
    let (at, ot) = (a.ty.tensor(), out.ty.tensor());
    let c0 = e.index(0);
    let c1 = e.index(1);
    let cmr = e.index(MR as i64);
    let cnr = e.index(nr as i64);
    let cnm = if packed && b.ty.dims[0].is_none() {
        let panels = e.dim(b, 0);
        e.assign(format!("arith.muli {panels}, {cnr} : index"))
    } else if let Some(n_main) = n_main {
        e.index(n_main as i64)
    } else {
        let nd = e.dim(b, 1);
        let left = e.assign(format!("arith.remui {nd}, {cnr} : index"));
        e.assign(format!("arith.subi {nd}, {left} : index"))
    };
    let m = e.dim(a, 0);
    let k = e.dim(a, 1);
    let rem = e.assign(format!("arith.remui {m}, {cmr} : index"));
    let m_main = e.assign(format!("arith.subi {m}, {rem} : index"));
    let zero = e.assign(format!("arith.constant dense<0.0> : {vty}"));
    let pad = e.assign("arith.constant 0.0 : f32");
    let skip = (sparse && packed && e.cpu.zero_skip).then(|| ZeroSkip::gather(e, a, &m, &k));

    // One tile of `rows` rows at row `i0` of the column panel `src`, written into `c` at
    // columns `j0..j0+nr`; with `prefetch`, it prefetches the panel ahead of its loads.
    let tile = |e: &mut Emitter, rows: usize, i0: &str, j0: &str, src: &PanelSrc, c: &str, prefetch: bool| -> String {
        if rows == 1 {
            return row_tile(e, a, src, i0, j0, c, &k, &zero, &pad, ot.as_str());
        }
        let nacc = rows * nv;
        let accs: Vec<String> = (0..nacc).map(|x| format!("%acc{x}")).collect();
        let init: Vec<String> = accs.iter().map(|x| format!("{x} = {zero}")).collect();
        let tys = vec![vty.clone(); nacc].join(", ");
        let res = e.fresh();
        e.line(format!("{res}:{nacc} = scf.for %kk = {c0} to {k} step {c1} iter_args({}) -> ({tys}) {{", init.join(", ")));
        let bvs: Vec<String> = (0..nv).map(|v| src.load(e, "%kk", v, &pad)).collect();
        if prefetch {
            src.prefetch(e, "%kk");
        }
        let mut next = Vec::new();
        for r in 0..rows {
            let ro = e.index(r as i64);
            let i = e.assign(format!("arith.addi {i0}, {ro} : index"));
            let s = e.assign(format!("tensor.extract {}[{i}, %kk] : {at}", a.ssa));
            let sb = e.assign(format!("vector.broadcast {s} : f32 to {vty}"));
            for (v, bv) in bvs.iter().enumerate() {
                next.push(e.assign(format!("vector.fma {sb}, {bv}, {} : {vty}", accs[r * nv + v])));
            }
        }
        e.line(format!("scf.yield {} : {tys}", next.join(", ")));
        e.line("}");
        write_tile(e, &res, c, i0, j0, rows, ot.as_str())
    };

    // Deep products of many rows run their whole row tiles in cache blocks (see
    // `blocked_tiles`) up to `m_blk`; the panel loop below runs the tiles from there (none,
    // or all when `a` is small enough to stay in cache unblocked) and the leftover rows.
    let blocked = e.cpu.blocked_min_a_bytes.is_some() && a.ty.dims[1].is_some_and(|k| k >= BLOCKED_MIN_K as i64);
    let (c_in, m_blk) = if blocked {
        let big = takes_blocked_tiles(e, &m, &k);
        let m_blk = e.assign(format!("arith.select {big}, {m_main}, {c0} : index"));
        // Blocked tiles re-read each panel once per row block: an activation `b` is packed
        // into panels once (no panels when the blocked tiles do not run), rather than
        // gathered from its strided rows every time.
        let packed_b;
        let bp = if packed {
            b
        } else {
            let cols = e.assign(format!("arith.select {big}, {cnm}, {c0} : index"));
            packed_b = pack_panels(e, b, &cols, &k);
            &packed_b
        };
        (blocked_tiles(e, a, bp, out, &m_blk, &k, &cnm), m_blk)
    } else {
        (out.ssa.clone(), c0.clone())
    };
    // A one-row product after a relu runs over its nonzeros instead (see `ZeroSkip`).
    let sparse_if = skip.as_ref().map(|z| {
        let r = e.fresh();
        e.line(format!("{r} = scf.if {} -> ({ot}) {{", z.take));
        let s = z.gemv(e, b, &c_in, &cnm, &zero, &pad, ot.as_str());
        e.line(format!("scf.yield {s} : {ot}"));
        e.line("} else {");
        r
    });
    let panels = e.fresh();
    e.line(format!("{panels} = scf.for %j0 = {c0} to {cnm} step {cnr} iter_args(%cp = {c_in}) -> ({ot}) {{"));
    let src = if packed {
        PanelSrc::packed(e, b, "%j0", &cnr)
    } else {
        // Copy the [k][16] column panel into contiguous memory once; every row tile then
        // streams it instead of walking b's columns with a row-sized stride.
        let (kk, kdyn) = match b.ty.dims[0] {
            Some(c) => (c.to_string(), String::new()),
            None => ("?".to_string(), k.clone()),
        };
        let ksize = if kdyn.is_empty() { kk.clone() } else { kdyn.clone() };
        let pty = format!("tensor<{kk}x{nr}xf32>");
        let slice = e.assign(format!("tensor.extract_slice {}[0, %j0] [{ksize}, {nr}] [1, 1] : {} to {pty}", b.ssa, b.ty.tensor()));
        let empty = e.assign(format!("tensor.empty({kdyn}) : {pty}"));
        let copy = e.assign(format!("linalg.copy ins({slice} : {pty}) outs({empty} : {pty}) -> {pty}"));
        PanelSrc { ssa: copy, ty: pty, panel: None, prefetch: None }
    };
    // The first row tile streams the panel from L3 or DRAM (with prefetches); the others
    // find it in cache, where a prefetch per k step would only cost issue slots.
    let first_end = if blocked { e.assign(format!("arith.addi {m_blk}, {cmr} : index")) } else { cmr.clone() };
    let first_end = e.assign(format!("arith.minui {first_end}, {m_main} : index"));
    let first = e.fresh();
    e.line(format!("{first} = scf.for %i0 = {m_blk} to {first_end} step {cmr} iter_args(%cf = %cp) -> ({ot}) {{"));
    let r = tile(e, MR, "%i0", "%j0", &src, "%cf", true);
    e.line(format!("scf.yield {r} : {ot}"));
    e.line("}");
    let blocks = e.fresh();
    e.line(format!("{blocks} = scf.for %i0 = {first_end} to {m_main} step {cmr} iter_args(%cb = {first}) -> ({ot}) {{"));
    let r = tile(e, MR, "%i0", "%j0", &src, "%cb", false);
    e.line(format!("scf.yield {r} : {ot}"));
    e.line("}");
    // Leftover rows (fewer than MR): at most one 4-row and one 2-row tile, then at most one
    // row alone, so a remainder of 5 rows costs two register tiles and a row, not 5 rows.
    let c4 = e.index(4);
    let c2 = e.index(2);
    let r4 = e.assign(format!("arith.remui {rem}, {c4} : index"));
    let m4 = e.assign(format!("arith.subi {m}, {r4} : index"));
    let four = e.fresh();
    e.line(format!("{four} = scf.for %i4 = {m_main} to {m4} step {c4} iter_args(%c4 = {blocks}) -> ({ot}) {{"));
    let r = tile(e, 4, "%i4", "%j0", &src, "%c4", true);
    e.line(format!("scf.yield {r} : {ot}"));
    e.line("}");
    let r2 = e.assign(format!("arith.remui {r4}, {c2} : index"));
    let m2 = e.assign(format!("arith.subi {m}, {r2} : index"));
    let two = e.fresh();
    e.line(format!("{two} = scf.for %i2 = {m4} to {m2} step {c2} iter_args(%c2 = {four}) -> ({ot}) {{"));
    let r = tile(e, 2, "%i2", "%j0", &src, "%c2", true);
    e.line(format!("scf.yield {r} : {ot}"));
    e.line("}");
    let rest = e.fresh();
    e.line(format!("{rest} = scf.for %i1 = {m2} to {m} step {c1} iter_args(%cr = {two}) -> ({ot}) {{"));
    let r = tile(e, 1, "%i1", "%j0", &src, "%cr", true);
    e.line(format!("scf.yield {r} : {ot}"));
    e.line("}");
    e.line(format!("scf.yield {rest} : {ot}"));
    e.line("}");
    let panels = match sparse_if {
        Some(r) => {
            e.line(format!("scf.yield {panels} : {ot}"));
            e.line("}");
            r
        }
        None => panels,
    };
    let result = Val { ssa: panels, ty: out.ty.clone() };
    if n_main.is_some() && n_main == n {
        return result;
    }
    // Leftover columns: the generic contraction on the column slice.
    let (w, wsize) = match (n, n_main) {
        (Some(n), Some(n_main)) => (Some((n - n_main) as i64), (n - n_main).to_string()),
        _ => {
            let nd = e.dim(b, 1);
            (None, e.assign(format!("arith.subi {nd}, {cnm} : index")))
        }
    };
    let bs_ty = BindingType { dtype: DType::F32, dims: vec![b.ty.dims[0], w] };
    let os_ty = BindingType { dtype: DType::F32, dims: vec![out.ty.dims[0], w] };
    let bk = b.ty.dims[0].map_or_else(|| e.dim(b, 0), |c| c.to_string());
    let bs = e.assign(format!("tensor.extract_slice {}[0, {cnm}] [{bk}, {wsize}] [1, 1] : {} to {}", b.ssa, b.ty.tensor(), bs_ty.tensor()));
    let os = e.assign(format!("tensor.extract_slice {}[0, {cnm}] [{m}, {wsize}] [1, 1] : {ot} to {}", result.ssa, os_ty.tensor()));
    let zf = e.scalar_const(0.0, DType::F32);
    let filled = e.fill(&Val { ssa: os, ty: os_ty.clone() }, &zf);
    let maps = vec![
        "affine_map<(d0, d1, d2) -> (d0, d1)>".to_string(),
        "affine_map<(d0, d1, d2) -> (d1, d2)>".to_string(),
        "affine_map<(d0, d1, d2) -> (d0, d2)>".to_string(),
    ];
    let bsv = Val { ssa: bs, ty: bs_ty };
    let part = generic(e, maps, &[false, true, false], &[a, &bsv], &filled, |body, args| {
        let p = body.op(format!("arith.mulf {}, {} fastmath<contract> : f32", args[0], args[1]));
        body.op(format!("arith.addf {}, {p} fastmath<contract> : f32", args[2]))
    });
    let ssa = e.assign(format!("tensor.insert_slice {} into {}[0, {cnm}] [{m}, {wsize}] [1, 1] : {} into {ot}", part.ssa, result.ssa, os_ty.tensor()));
    Val { ssa, ty: out.ty.clone() }
}

/// Packs the first `cnm` columns of an activation `b[k, n]` into `[cnm/16][k][16]` panels,
/// the layout of a pre-packed weight, reading `b` row by row.
fn pack_panels(e: &mut Emitter, b: &Val, cnm: &str, k: &str) -> Val {
    let (vl, nv) = (e.vl(), e.nv());
    let vty = format!("vector<{vl}xf32>");
    let nr = PACK_WIDTH;
    let c0 = e.index(0);
    let c1 = e.index(1);
    let cnr = e.index(nr as i64);
    let panels = e.assign(format!("arith.divui {cnm}, {cnr} : index"));
    let ty = BindingType { dtype: DType::F32, dims: vec![None, b.ty.dims[0], Some(nr as i64)] };
    let dyn_k = if b.ty.dims[0].is_none() { format!(", {k}") } else { String::new() };
    let empty = e.assign(format!("tensor.empty({panels}{dyn_k}) : {}", ty.tensor()));
    let pad = e.assign("arith.constant 0.0 : f32");
    let r = e.fresh();
    e.line(format!("{r} = scf.for %qk = {c0} to {k} step {c1} iter_args(%qa = {empty}) -> ({}) {{", ty.tensor()));
    let inner = e.fresh();
    e.line(format!("{inner} = scf.for %qp = {c0} to {panels} step {c1} iter_args(%qb = %qa) -> ({}) {{", ty.tensor()));
    let j = e.assign(format!("arith.muli %qp, {cnr} : index"));
    let mut cur = "%qb".to_string();
    for v in 0..nv {
        let off = e.index((v * vl) as i64);
        let jv = e.assign(format!("arith.addi {j}, {off} : index"));
        let x = e.assign(format!("vector.transfer_read {}[%qk, {jv}], {pad} {{in_bounds = [true]}} : {}, {vty}", b.ssa, b.ty.tensor()));
        cur = e.assign(format!("vector.transfer_write {x}, {cur}[%qp, %qk, {off}] {{in_bounds = [true]}} : {vty}, {}", ty.tensor()));
    }
    e.line(format!("scf.yield {cur} : {}", ty.tensor()));
    e.line("}");
    e.line(format!("scf.yield {inner} : {}", ty.tensor()));
    e.line("}");
    Val { ssa: r, ty }
}

/// Depth (k) of the cache blocks of [`blocked_tiles`]: a `[KC][16]` slice of a column panel
/// (32 KiB) is streamed once from L3 or DRAM, then re-read from L1/L2 by every row tile of
/// the block. On a 2048x2048 sgemm (one thread), 512 measured 0.90-0.95x the time of 256;
/// the rows of the block mattered less (96 to 480 alike within the noise).
const KC: usize = 512;
/// Rows (whole [`MR`] tiles) of a cache block of `a`, packed `[MC/MR][KC][MR]` (384 KiB,
/// in L2 while all column panels pass over it).
const MC: usize = 192;
/// Size of a workgroup's rows of `a` from which matmuls take [`blocked_tiles`] (bytes).
/// Smaller ones stay in L2 or L3 while every column panel re-reads them, and there the
/// unblocked tiles (no packing, no partial sums, prefetches tuned for weight streams) are
/// faster: custom_mlp at batch 64 (786 KiB) ran 4-5% slower blocked, and a 1024x1024
/// weight matmul on 2 threads (2 MiB a workgroup) 4.5% slower; with 3 MiB a workgroup
/// (1536 rows) the blocked tiles took 0.87x the time. (Measured on znver3; znver4 takes
/// none, see [`CpuTuning::blocked_min_a_bytes`].)
const BLOCKED_MIN_A_BYTES: usize = 5 << 19;
/// Depth from which matmuls take [`blocked_tiles`]: shallower `a` rows are short enough
/// that the unblocked tiles already find them in cache.
const BLOCKED_MIN_K: usize = 256;

/// Whether `rows` rows of an f32 `a` of depth `k` (both index values) are big enough for
/// [`blocked_tiles`] (an `i1`): at least [`CpuTuning::blocked_min_a_bytes`], false where the
/// CPU takes none.
fn takes_blocked_tiles(e: &mut Emitter, rows: &str, k: &str) -> String {
    let Some(min) = e.cpu.blocked_min_a_bytes else {
        return e.assign("arith.constant false");
    };
    let elems = e.assign(format!("arith.muli {rows}, {k} : index"));
    let min = e.index((min / 4) as i64);
    e.assign(format!("arith.cmpi uge, {elems}, {min} : index"))
}

/// The whole `MR`-row tiles of [`matmul_microkernel`] in cache blocks, GotoBLAS-style:
/// for each block of [`MC`] rows and each [`KC`]-deep slice of k, the block's rows of `a`
/// are packed tile by tile (`[tile][k][row]`, one contiguous stream per tile, and no two
/// rows a power-of-two stride apart fighting over one L1 set), then every column panel's
/// k-slice is run by all the block's tiles. The tiles carry their accumulators through the
/// result between k-slices; each sum is the same chain of FMAs in the same order as the
/// unblocked tile's, so results are bit-identical. `b` is packed (`[n/16][k][16]`, a weight
/// or an activation packed by [`pack_panels`]). Rows `m_main..` are left to the caller.
///
/// Without blocking, every column panel re-reads the workgroup's whole `a` (16 MiB at
/// 2048x2048) from L3 or DRAM, and one-thread sgemm fell from 87% of peak at 1024 to 75%
/// at 2048; blocked, 2048 takes 0.84-0.85x the time (one and two threads).
fn blocked_tiles(e: &mut Emitter, a: &Val, b: &Val, out: &Val, m_main: &str, k: &str, cnm: &str) -> String {
    let (vl, nv) = (e.vl(), e.nv());
    let vty = format!("vector<{vl}xf32>");
    let (at, ot, c_in) = (a.ty.tensor(), out.ty.tensor(), &out.ssa);
    let nr = PACK_WIDTH;
    let tiles = MC / MR;
    let apty = format!("tensor<{tiles}x{KC}x{MR}xf32>");
    let c0 = e.index(0);
    let c1 = e.index(1);
    let cmr = e.index(MR as i64);
    let cmc = e.index(MC as i64);
    let ckc = e.index(KC as i64);
    let cnr = e.index(nr as i64);
    let zero = e.assign(format!("arith.constant dense<0.0> : {vty}"));
    let pad = e.assign("arith.constant 0.0 : f32");
    let ap0 = e.assign(format!("tensor.empty() : {apty}"));
    let res = e.fresh();
    e.line(format!("{res} = scf.for %ib = {c0} to {m_main} step {cmc} iter_args(%cib = {c_in}) -> ({ot}) {{"));
    let rows = block_len(e, "%ib", &cmc, m_main);
    let nt = e.assign(format!("arith.divui {rows}, {cmr} : index"));
    let kres = e.fresh();
    e.line(format!("{kres} = scf.for %kb = {c0} to {k} step {ckc} iter_args(%ckb = %cib) -> ({ot}) {{"));
    let kc = block_len(e, "%kb", &ckc, k);
    // Pack the block's rows of this k-slice.
    let pk = e.fresh();
    e.line(format!("{pk} = scf.for %pt = {c0} to {nt} step {c1} iter_args(%pa = {ap0}) -> ({apty}) {{"));
    let r0 = e.assign(format!("arith.muli %pt, {cmr} : index"));
    let r0 = e.assign(format!("arith.addi %ib, {r0} : index"));
    let inner = e.fresh();
    e.line(format!("{inner} = scf.for %pk = {c0} to {kc} step {c1} iter_args(%pb = %pa) -> ({apty}) {{"));
    let kk = e.assign("arith.addi %kb, %pk : index");
    let mut cur = "%pb".to_string();
    for r in 0..MR {
        let ro = e.index(r as i64);
        let i = e.assign(format!("arith.addi {r0}, {ro} : index"));
        let s = e.assign(format!("tensor.extract {}[{i}, {kk}] : {at}", a.ssa));
        cur = e.assign(format!("tensor.insert {s} into {cur}[%pt, %pk, {ro}] : {apty}"));
    }
    e.line(format!("scf.yield {cur} : {apty}"));
    e.line("}");
    e.line(format!("scf.yield {inner} : {apty}"));
    e.line("}");
    let first_slice = e.assign(format!("arith.cmpi eq, %kb, {c0} : index"));
    // The column panels' k-slices.
    let pres = e.fresh();
    e.line(format!("{pres} = scf.for %bj = {c0} to {cnm} step {cnr} iter_args(%cbj = %ckb) -> ({ot}) {{"));
    let src = PanelSrc::packed(e, b, "%bj", &cnr);
    // While the first tile streams this panel's slice, it prefetches the next panel's.
    let last = e.assign(format!("arith.subi {cnm}, {cnr} : index"));
    let next_panel = e.assign(format!("arith.addi %bj, {cnr} : index"));
    let next_panel = e.assign(format!("arith.minui {next_panel}, {last} : index"));
    let next_panel = e.assign(format!("arith.divui {next_panel}, {cnr} : index"));
    let one = e.assign(format!("arith.minui {c1}, {nt} : index"));
    let mut cur = "%cbj".to_string();
    for (lo, hi, pf) in [(c0.as_str(), one.as_str(), true), (one.as_str(), nt.as_str(), false)] {
        let tl = e.fresh();
        e.line(format!("{tl} = scf.for %bt = {lo} to {hi} step {c1} iter_args(%ct = {cur}) -> ({ot}) {{"));
        let i0 = e.assign(format!("arith.muli %bt, {cmr} : index"));
        let i0 = e.assign(format!("arith.addi %ib, {i0} : index"));
        let nacc = MR * nv;
        let tys = vec![vty.clone(); nacc].join(", ");
        // The first k-slice starts from zero; later ones from the partial sums.
        let init = e.fresh();
        e.line(format!("{init}:{nacc} = scf.if {first_slice} -> ({tys}) {{"));
        e.line(format!("scf.yield {} : {tys}", vec![zero.clone(); nacc].join(", ")));
        e.line("} else {");
        let loaded: Vec<String> = tile_coords(e, &i0, "%bj", MR)
            .into_iter()
            .map(|(i, j)| e.assign(format!("vector.transfer_read %ct[{i}, {j}], {pad} {{in_bounds = [true]}} : {ot}, {vty}")))
            .collect();
        e.line(format!("scf.yield {} : {tys}", loaded.join(", ")));
        e.line("}");
        let accs: Vec<String> = (0..nacc).map(|x| format!("%bacc{x} = {init}#{x}")).collect();
        let r = e.fresh();
        e.line(format!("{r}:{nacc} = scf.for %bk = {c0} to {kc} step {c1} iter_args({}) -> ({tys}) {{", accs.join(", ")));
        let row = e.assign("arith.addi %kb, %bk : index");
        let bvs: Vec<String> = (0..nv).map(|v| src.load(e, &row, v, &pad)).collect();
        if pf {
            src.prefetch_panel_row(e, &next_panel, &row);
        }
        let mut next = Vec::new();
        for rr in 0..MR {
            let ro = e.index(rr as i64);
            let s = e.assign(format!("tensor.extract {pk}[%bt, %bk, {ro}] : {apty}"));
            let sb = e.assign(format!("vector.broadcast {s} : f32 to {vty}"));
            for (v, bv) in bvs.iter().enumerate() {
                next.push(e.assign(format!("vector.fma {sb}, {bv}, %bacc{} : {vty}", rr * nv + v)));
            }
        }
        e.line(format!("scf.yield {} : {tys}", next.join(", ")));
        e.line("}");
        let c = write_tile(e, &r, "%ct", &i0, "%bj", MR, &ot);
        e.line(format!("scf.yield {c} : {ot}"));
        e.line("}");
        cur = tl;
    }
    e.line(format!("scf.yield {cur} : {ot}"));
    e.line("}");
    e.line(format!("scf.yield {pres} : {ot}"));
    e.line("}");
    e.line(format!("scf.yield {kres} : {ot}"));
    e.line("}");
    res
}

/// The length of the block of `step` starting at `start` in `0..bound`: the last one may be short.
fn block_len(e: &mut Emitter, start: &str, step: &str, bound: &str) -> String {
    let end = e.assign(format!("arith.addi {start}, {step} : index"));
    let end = e.assign(format!("arith.minui {end}, {bound} : index"));
    e.assign(format!("arith.subi {end}, {start} : index"))
}

/// Writes the register tile `res` (`rows * nv` vectors, row by row) into the result `c`
/// (typed `ot`) at row `i0`, column `j0`; returns the updated result.
fn write_tile(e: &mut Emitter, res: &str, c: &str, i0: &str, j0: &str, rows: usize, ot: &str) -> String {
    let vl = e.vl();
    let mut cur = c.to_string();
    for (x, (i, j)) in tile_coords(e, i0, j0, rows).into_iter().enumerate() {
        cur = e.assign(format!("vector.transfer_write {res}#{x}, {cur}[{i}, {j}] {{in_bounds = [true]}} : vector<{vl}xf32>, {ot}"));
    }
    cur
}

/// The (row, column) indices of the `rows * nv` vectors of a register tile at row `i0`,
/// column `j0`, row by row (the order of the tile's accumulators).
fn tile_coords(e: &mut Emitter, i0: &str, j0: &str, rows: usize) -> Vec<(String, String)> {
    let (vl, nv) = (e.vl(), e.nv());
    let mut out = Vec::with_capacity(rows * nv);
    for r in 0..rows {
        let ro = e.index(r as i64);
        let i = e.assign(format!("arith.addi {i0}, {ro} : index"));
        for v in 0..nv {
            let off = e.index((v * vl) as i64);
            out.push((i.clone(), e.assign(format!("arith.addi {j0}, {off} : index"))));
        }
    }
    out
}

/// `a[B, T, K] @ packed w` one batch at a time, for a kernel [`crate::flatten`] cannot view
/// as 2-D (an epilogue that is not elementwise, or an operand of another shape).
fn batched_packed_matmul(e: &mut Emitter, a: &Val, b: &Val, out: &Val) -> Val {
    let slice_of = |v: &Val| BindingType { dtype: v.ty.dtype, dims: v.ty.dims[1..].to_vec() };
    let (at, ot) = (slice_of(a), slice_of(out));
    let c0 = e.index(0);
    let c1 = e.index(1);
    let nb = e.dim(a, 0);
    let t = e.dim(a, 1);
    let (k, n) = (a.ty.dims[2].map_or_else(|| e.dim(a, 2), |c| c.to_string()), out.ty.dims[2].map_or_else(|| e.dim(out, 2), |c| c.to_string()));
    let full = out.ty.tensor();
    let r = e.fresh();
    e.line(format!("{r} = scf.for %bb = {c0} to {nb} step {c1} iter_args(%bacc = {}) -> ({full}) {{", out.ssa));
    let asl = e.assign(format!("tensor.extract_slice {}[%bb, 0, 0] [1, {t}, {k}] [1, 1, 1] : {} to {}", a.ssa, a.ty.tensor(), at.tensor()));
    let osl = e.assign(format!("tensor.extract_slice %bacc[%bb, 0, 0] [1, {t}, {n}] [1, 1, 1] : {full} to {}", ot.tensor()));
    let m = matmul_microkernel(e, &Val { ssa: asl, ty: at }, b, &Val { ssa: osl, ty: ot.clone() }, true, false);
    let ins = e.assign(format!("tensor.insert_slice {} into %bacc[%bb, 0, 0] [1, {t}, {n}] [1, 1, 1] : {} into {full}", m.ssa, ot.tensor()));
    e.line(format!("scf.yield {ins} : {full}"));
    e.line("}");
    Val { ssa: r, ty: out.ty.clone() }
}

/// Ways the k loop of the one-row tile is split, so that it keeps `KSPLIT * nv`
/// independent FMA chains in flight instead of `nv` (FMA latency, not bandwidth, bounds a
/// single row otherwise).
const KSPLIT: usize = 4;

/// How far ahead, in rows of a packed weight panel (64 bytes each), the micro-kernel
/// prefetches the panel it streams. One pass over a panel (a GEMV, or the first row tile
/// of a matmul) reads it from L3 or DRAM, and the hardware prefetcher alone leaves that
/// stream well short of the bandwidth: custom_mlp at batch 1 (weights in L3) runs ~1.4x
/// faster with an 8 KiB lead (6-12 KiB measured alike, 16 KiB a little slower, 2-4 KiB
/// gained less; measured on znver3). Panels are contiguous, so the prefetches run on into
/// the next panel, which the same workgroup streams next. One-row tiles prefetch only where
/// [`CpuTuning::gemv_prefetch`] says so.
const PANEL_PREFETCH_ROWS: i64 = 128;

/// Where the micro-kernel reads a column panel of `b` from: a pre-packed weight
/// (`[n/16][k][16]`, indexed by panel; with its memref for prefetches) or a contiguous
/// `[k][16]` copy of the panel (already in cache: no prefetches).
struct PanelSrc {
    ssa: String,
    ty: String,
    panel: Option<String>,
    prefetch: Option<(String, String)>,
}

impl PanelSrc {
    /// The panel of a packed `b` (`[n/16][k][16]`) holding column `j` (`cnr` = 16), with
    /// its memref for prefetches.
    fn packed(e: &mut Emitter, b: &Val, j: &str, cnr: &str) -> PanelSrc {
        let p = e.assign(format!("arith.divui {j}, {cnr} : index"));
        let mt = format!("memref<{}, strided<[?, ?, ?], offset: ?>>", b.ty.shape_str());
        let m = e.assign(format!("bufferization.to_buffer {} read_only : {} to {mt}", b.ssa, b.ty.tensor()));
        PanelSrc { ssa: b.ssa.clone(), ty: b.ty.tensor(), panel: Some(p), prefetch: Some((m, mt)) }
    }
    /// Prefetches row `row` of another panel of a packed `b` into L1 (the blocked tiles'
    /// next panel, which they read many times).
    fn prefetch_panel_row(&self, e: &mut Emitter, panel: &str, row: &str) {
        if let Some((m, mt)) = &self.prefetch {
            let c0 = e.index(0);
            e.line(format!("memref.prefetch {m}[{panel}, {row}, {c0}], read, locality<3>, data : {mt}"));
        }
    }
    /// Prefetches the row [`PANEL_PREFETCH_ROWS`] ahead of row `kk` of a packed panel.
    fn prefetch(&self, e: &mut Emitter, kk: &str) {
        if self.prefetch.is_some() {
            let d = e.index(PANEL_PREFETCH_ROWS);
            let ahead = e.assign(format!("arith.addi {kk}, {d} : index"));
            self.prefetch_row(e, &ahead);
        }
    }
    /// Prefetches row `row` of a packed panel, for a read that streams it once.
    fn prefetch_row(&self, e: &mut Emitter, row: &str) {
        if let (Some((m, mt)), Some(p)) = (&self.prefetch, &self.panel) {
            let c0 = e.index(0);
            e.line(format!("memref.prefetch {m}[{p}, {row}, {c0}], read, locality<0>, data : {mt}"));
        }
    }
    /// Loads vector `v` (lanes `v * vl..`) of row `kk` of the panel.
    fn load(&self, e: &mut Emitter, kk: &str, v: usize, pad: &str) -> String {
        let vl = e.vl();
        let off = e.index((v * vl) as i64);
        let idx = match &self.panel {
            Some(p) => format!("{p}, {kk}, {off}"),
            None => format!("{kk}, {off}"),
        };
        e.assign(format!("vector.transfer_read {}[{idx}], {pad} {{in_bounds = [true]}} : {}, vector<{vl}xf32>", self.ssa, self.ty))
    }
}

/// The one-row tile of [`matmul_microkernel`]: `c[i0, j0..j0+16] = a[i0, :] @ panel`.
#[allow(clippy::too_many_arguments)]
fn row_tile(e: &mut Emitter, a: &Val, src: &PanelSrc, i0: &str, j0: &str, c: &str, k: &str, zero: &str, pad: &str, ot: &str) -> String {
    let vl = e.vl();
    let vty = format!("vector<{vl}xf32>");
    let at = a.ty.tensor();
    let prefetch = e.cpu.gemv_prefetch;
    let sums = row_product(
        e,
        src,
        k,
        zero,
        pad,
        &|e, kk| {
            let s = e.assign(format!("tensor.extract {}[{i0}, {kk}] : {at}", a.ssa));
            (kk.to_string(), e.assign(format!("vector.broadcast {s} : f32 to {vty}")))
        },
        &|e, kk, _| {
            if prefetch {
                src.prefetch(e, kk);
            }
        },
    );
    write_tile(e, &sums, c, i0, j0, 1, ot)
}

/// One row's product with a column panel (a loop whose `nv` results are its vectors),
/// `sum over p < end of value(p) * panel[row(p)]`, where `entry(e, p)` gives position `p`'s
/// panel row and its value broadcast to a vector: the row's columns for a dense row ([`row_tile`]), its list of
/// nonzeros for a sparse one ([`ZeroSkip`]). The positions are split [`KSPLIT`] ways, so
/// that `KSPLIT * nv` FMA chains are in flight instead of `nv` (FMA latency, not bandwidth,
/// bounds a single row otherwise); `after(e, p, row)` follows each position of the split
/// loop (its prefetches). The leftover positions finish on the chains' sums.
#[allow(clippy::type_complexity)]
fn row_product(
    e: &mut Emitter,
    src: &PanelSrc,
    end: &str,
    zero: &str,
    pad: &str,
    entry: &dyn Fn(&mut Emitter, &str) -> (String, String),
    after: &dyn Fn(&mut Emitter, &str, &str),
) -> String {
    let (vl, nv) = (e.vl(), e.nv());
    let vty = format!("vector<{vl}xf32>");
    let c0 = e.index(0);
    let c1 = e.index(1);
    let cks = e.index(KSPLIT as i64);
    let krem = e.assign(format!("arith.remui {end}, {cks} : index"));
    let kmain = e.assign(format!("arith.subi {end}, {krem} : index"));
    let n = KSPLIT * nv;
    let tys = vec![vty.clone(); n].join(", ");
    let init: Vec<String> = (0..n).map(|x| format!("%racc{x} = {zero}")).collect();
    let main = e.fresh();
    e.line(format!("{main}:{n} = scf.for %rk = {c0} to {kmain} step {cks} iter_args({}) -> ({tys}) {{", init.join(", ")));
    let mut next = Vec::new();
    for u in 0..KSPLIT {
        let uo = e.index(u as i64);
        let p = e.assign(format!("arith.addi %rk, {uo} : index"));
        let (row, sb) = entry(e, &p);
        for v in 0..nv {
            let bv = src.load(e, &row, v, pad);
            next.push(e.assign(format!("vector.fma {sb}, {bv}, %racc{} : {vty}", u * nv + v)));
        }
        after(e, &p, &row);
    }
    e.line(format!("scf.yield {} : {tys}", next.join(", ")));
    e.line("}");
    // Sum the split accumulators, then finish the leftover positions.
    let mut sums = Vec::new();
    for v in 0..nv {
        let mut acc = format!("{main}#{v}");
        for u in 1..KSPLIT {
            acc = e.assign(format!("arith.addf {acc}, {main}#{} : {vty}", u * nv + v));
        }
        sums.push(acc);
    }
    let ntys = vec![vty.clone(); nv].join(", ");
    let init: Vec<String> = sums.iter().enumerate().map(|(v, s)| format!("%tacc{v} = {s}")).collect();
    let tail = e.fresh();
    e.line(format!("{tail}:{nv} = scf.for %tk = {kmain} to {end} step {c1} iter_args({}) -> ({ntys}) {{", init.join(", ")));
    let (row, sb) = entry(e, "%tk");
    let mut next = Vec::new();
    for v in 0..nv {
        let bv = src.load(e, &row, v, pad);
        next.push(e.assign(format!("vector.fma {sb}, {bv}, %tacc{v} : {vty}")));
    }
    e.line(format!("scf.yield {} : {ntys}", next.join(", ")));
    e.line("}");
    tail
}

/// How far ahead, in entries of a [`ZeroSkip`] list, its row tile prefetches the panel row
/// of an entry: about [`PANEL_PREFETCH_ROWS`] rows of the panel when half of `a` is zeros.
/// (On znver4, which issues no GEMV prefetches, custom_mlp at batch 1 measured alike with
/// and without them, 0.118 vs 0.120 ms at p10, and 128 ahead 3% faster than 64.)
const ZERO_SKIP_PREFETCH_AHEAD: i64 = 128;

/// The nonzero entries of a one-row `a` that is a relu's output (about half zeros on
/// typical activations), gathered once per call by each workgroup: their columns (`i32`) and values,
/// in order. Every column panel's row tile then runs over that list, so a GEMV after a relu
/// reads only the panel rows that nonzeros multiply instead of the whole weight: that is
/// the bound of a GEMV, which streams its weight once.
///
/// The tile adds the same nonzero products as the dense one, in another grouping (its
/// split accumulators take list positions, not columns), so results agree to rounding. A
/// skipped term is a zero times a weight: only an infinite or NaN weight would have made
/// it matter. Rows with fewer than a quarter zeros, and products of more than one row, take
/// the dense tiles (`take` is false).
struct ZeroSkip {
    /// [`ZeroSkip::COLS`] (k long for one row): the columns of the nonzeros, the first
    /// `count` valid.
    cols: String,
    /// [`ZeroSkip::VALS`]: their values.
    vals: String,
    /// How many entries are valid (index).
    count: String,
    /// Whether the row tiles run over the list (i1).
    take: String,
}

impl ZeroSkip {
    const COLS: &str = "tensor<?xi32>";
    const VALS: &str = "tensor<?xf32>";

    /// Counts the nonzeros of `a[0, :]` when `a` has one row (`m` rows, depth `k`), and
    /// gathers them when they are few enough.
    fn gather(e: &mut Emitter, a: &Val, m: &str, k: &str) -> ZeroSkip {
        let c0 = e.index(0);
        let c1 = e.index(1);
        let one_row = e.assign(format!("arith.cmpi eq, {m}, {c1} : index"));
        let row_end = e.assign(format!("arith.select {one_row}, {k}, {c0} : index"));
        // Count the row's nonzeros first, 16 lanes at a time (then scalar past the last
        // whole vector): a dense row then costs a quick count, not the compaction.
        let vty = "vector<16xf32>";
        let ity = "vector<16xi32>";
        let c16 = e.index(16);
        let vrem = e.assign(format!("arith.remui {row_end}, {c16} : index"));
        let vend = e.assign(format!("arith.subi {row_end}, {vrem} : index"));
        let fzero = e.assign("arith.constant 0.0 : f32");
        let vzero = e.assign(format!("arith.constant dense<0.0> : {vty}"));
        let ione = e.assign(format!("arith.constant dense<1> : {ity}"));
        let izero = e.assign(format!("arith.constant dense<0> : {ity}"));
        let vc = e.fresh();
        e.line(format!("{vc} = scf.for %zq = {c0} to {vend} step {c16} iter_args(%zs = {izero}) -> ({ity}) {{"));
        let v = e.assign(format!("vector.transfer_read {}[{c0}, %zq], {fzero} {{in_bounds = [true]}} : {}, {vty}", a.ssa, a.ty.tensor()));
        let nz = e.assign(format!("arith.cmpf une, {v}, {vzero} : {vty}"));
        let one = e.assign(format!("arith.select {nz}, {ione}, {izero} : vector<16xi1>, {ity}"));
        let sum = e.assign(format!("arith.addi %zs, {one} : {ity}"));
        e.line(format!("scf.yield {sum} : {ity}"));
        e.line("}");
        let vcount = e.assign(format!("vector.reduction <add>, {vc} : {ity} into i32"));
        let vcount = e.assign(format!("arith.index_cast {vcount} : i32 to index"));
        let nonzeros = e.fresh();
        e.line(format!("{nonzeros} = scf.for %zq = {vend} to {row_end} step {c1} iter_args(%zs = {vcount}) -> (index) {{"));
        let x = e.assign(format!("tensor.extract {}[{c0}, %zq] : {}", a.ssa, a.ty.tensor()));
        let nz = e.assign(format!("arith.cmpf une, {x}, {fzero} : f32"));
        let step = e.assign(format!("arith.select {nz}, {c1}, {c0} : index"));
        let n = e.assign(format!("arith.addi %zs, {step} : index"));
        e.line(format!("scf.yield {n} : index"));
        e.line("}");
        // Taken for one row with at least a quarter zeros.
        let c3 = e.index(3);
        let c4 = e.index(4);
        let four = e.assign(format!("arith.muli {nonzeros}, {c4} : index"));
        let three = e.assign(format!("arith.muli {k}, {c3} : index"));
        let sparse = e.assign(format!("arith.cmpi ule, {four}, {three} : index"));
        let take = e.assign(format!("arith.andi {one_row}, {sparse} : i1"));
        let end = e.assign(format!("arith.select {take}, {k}, {c0} : index"));
        // k long when taken, else empty.
        let (cols_ty, vals_ty) = (Self::COLS, Self::VALS);
        let cols0 = e.assign(format!("tensor.empty({end}) : {cols_ty}"));
        let vals0 = e.assign(format!("tensor.empty({end}) : {vals_ty}"));
        // Branch-free compaction: every entry is written at the next free slot, which only
        // advances past a nonzero (NaN counts as one); the slot never passes the column.
        let r = e.fresh();
        e.line(format!("{r}:3 = scf.for %zk = {c0} to {end} step {c1} iter_args(%zc = {cols0}, %zv = {vals0}, %zn = {c0}) -> ({cols_ty}, {vals_ty}, index) {{"));
        let x = e.assign(format!("tensor.extract {}[{c0}, %zk] : {}", a.ssa, a.ty.tensor()));
        let col = e.assign("arith.index_cast %zk : index to i32");
        let cols = e.assign(format!("tensor.insert {col} into %zc[%zn] : {cols_ty}"));
        let vals = e.assign(format!("tensor.insert {x} into %zv[%zn] : {vals_ty}"));
        let nz = e.assign(format!("arith.cmpf une, {x}, {fzero} : f32"));
        let step = e.assign(format!("arith.select {nz}, {c1}, {c0} : index"));
        let n = e.assign(format!("arith.addi %zn, {step} : index"));
        e.line(format!("scf.yield {cols}, {vals}, {n} : {cols_ty}, {vals_ty}, index"));
        e.line("}");
        ZeroSkip { cols: format!("{r}#0"), vals: format!("{r}#1"), count: format!("{r}#2"), take }
    }

    /// Entry `p`'s column (index) and value broadcast to a vector.
    fn entry(&self, e: &mut Emitter, p: &str) -> (String, String) {
        let vl = e.vl();
        let c = e.assign(format!("tensor.extract {}[{p}] : {}", self.cols, Self::COLS));
        let col = e.assign(format!("arith.index_cast {c} : i32 to index"));
        let v = e.assign(format!("tensor.extract {}[{p}] : {}", self.vals, Self::VALS));
        (col, e.assign(format!("vector.broadcast {v} : f32 to vector<{vl}xf32>")))
    }

    /// `c = a @ b` for the one row over the list, `b` packed, columns `0..cnm` (whole
    /// panels), a panel at a time.
    ///
    /// Each panel runs [`row_product`] over the list and, where the CPU's GEMVs prefetch
    /// ([`CpuTuning::gemv_prefetch`]), prefetches the panel row of the entry
    /// [`ZERO_SKIP_PREFETCH_AHEAD`] places on (the last one near the end). Computing two
    /// panels per pass over the list, to share each entry's loads, measured no faster: the
    /// panel reads bound the tile.
    #[allow(clippy::too_many_arguments)]
    fn gemv(&self, e: &mut Emitter, b: &Val, c: &str, cnm: &str, zero: &str, pad: &str, ot: &str) -> String {
        let c0 = e.index(0);
        let c1 = e.index(1);
        let cnr = e.index(PACK_WIDTH as i64);
        let r = e.fresh();
        e.line(format!("{r} = scf.for %zj = {c0} to {cnm} step {cnr} iter_args(%zo = {c}) -> ({ot}) {{"));
        let src = PanelSrc::packed(e, b, "%zj", &cnr);
        let last = e.assign(format!("arith.subi {}, {c1} : index", self.count));
        let ahead = e.index(ZERO_SKIP_PREFETCH_AHEAD);
        let prefetch = e.cpu.gemv_prefetch;
        let sums = row_product(e, &src, &self.count, zero, pad, &|e, p| self.entry(e, p), &|e, p, _| {
            if !prefetch {
                return;
            }
            let q = e.assign(format!("arith.addi {p}, {ahead} : index"));
            let q = e.assign(format!("arith.minui {q}, {last} : index"));
            let qc = e.assign(format!("tensor.extract {}[{q}] : {}", self.cols, Self::COLS));
            let qcol = e.assign(format!("arith.index_cast {qc} : i32 to index"));
            src.prefetch_row(e, &qcol);
        });
        let cur = write_tile(e, &sums, "%zo", &c0, "%zj", 1, ot);
        e.line(format!("scf.yield {cur} : {ot}"));
        e.line("}");
        r
    }
}

/// Offsets and sizes (comma-separated) of the slab that `v` occupies along `axis` at
/// `offset` in a concat result or split operand: zero offsets elsewhere, `v`'s own sizes.
fn slab_coords(e: &mut Emitter, v: &Val, axis: usize, offset: &str) -> (String, String) {
    let n = v.ty.dims.len();
    let mut offs = Vec::with_capacity(n);
    let mut sizes = Vec::with_capacity(n);
    for i in 0..n {
        offs.push(if i == axis { offset.to_string() } else { "0".into() });
        sizes.push(match v.ty.dims[i] {
            Some(c) => c.to_string(),
            None => e.dim(v, i),
        });
    }
    (offs.join(", "), sizes.join(", "))
}

/// Clamped index `i` (Python semantics) into a dim of size `d` (an index SSA value).
fn clamp_index(e: &mut Emitter, i: i64, d: &str) -> String {
    if i >= 0 {
        let c = e.index(i);
        e.assign(format!("arith.minsi {c}, {d} : index"))
    } else {
        let c = e.index(-i);
        let z = e.index(0);
        let s = e.assign(format!("arith.subi {d}, {c} : index"));
        e.assign(format!("arith.maxsi {s}, {z} : index"))
    }
}

/// The parts of `x` split along `axis`, shaped like `outs` (whose sizes along the axis they
/// take in order), as `tensor.extract_slice`s.
fn split_slices(e: &mut Emitter, x: &Val, axis: i64, outs: &[Val]) -> Vec<Val> {
    let n = x.ty.dims.len();
    let ax = norm(axis, n);
    let mut offset = e.index(0);
    let mut res = Vec::new();
    for o in outs {
        let (offs, sizes) = slab_coords(e, o, ax, &offset);
        let ones = vec!["1"; n].join(", ");
        let r = e.assign(format!("tensor.extract_slice {}[{offs}] [{sizes}] [{ones}] : {} to {}", x.ssa, x.ty.tensor(), o.ty.tensor()));
        res.push(Val { ssa: r, ty: o.ty.clone() });
        let d = e.dim(o, ax);
        offset = e.assign(format!("arith.addi {offset}, {d} : index"));
    }
    res
}

fn lower_op(e: &mut Emitter, op: &Op, ins: &[Val], outs: &[Val]) -> Vec<Val> {
    let out = &outs[0];
    let n = out.ty.dims.len();
    match op {
        Op::Unary(u) => {
            let (u, ct, od) = (*u, compute_type(out.ty.dtype), out.ty.dtype);
            let xd = ins[0].ty.dtype;
            vec![elementwise(e, &[&ins[0]], out, |b, a| {
                let x = b.convert(&a[0], xd, ct);
                let r = b.unary(u, &x, ct);
                b.convert(&r, ct, od)
            })]
        }
        Op::Binary(bop) => {
            let (bop, ct, od) = (*bop, compute_type(out.ty.dtype), out.ty.dtype);
            let (xd, yd) = (ins[0].ty.dtype, ins[1].ty.dtype);
            vec![elementwise(e, &[&ins[0], &ins[1]], out, |b, a| {
                let x = b.convert(&a[0], xd, ct);
                let y = b.convert(&a[1], yd, ct);
                let r = b.binary(bop, &x, &y, ct);
                b.convert(&r, ct, od)
            })]
        }
        Op::Cast(_) | Op::BroadcastTo { .. } => {
            let (xd, od) = (ins[0].ty.dtype, out.ty.dtype);
            vec![elementwise(e, &[&ins[0]], out, |b, a| b.convert(&a[0], xd, od))]
        }
        Op::MatMul if !e.gpu && microkernel_applies(&ins[0], &ins[1], out) => vec![matmul_microkernel(e, &ins[0], &ins[1], out, false, false)],
        Op::MatMul => {
            let (a, b) = (&ins[0], &ins[1]);
            let ct = compute_type(out.ty.dtype);
            let acc = if ct == out.ty.dtype { out.clone() } else { e.empty(out, ct) };
            let zero = e.scalar_const(0.0, ct);
            let acc = e.fill(&acc, &zero);
            // Loops: batch..., m, k, n with k before n, so the innermost loop walks rows of
            // b and of the result contiguously (the LLVM vectorizer's favourite shape). On
            // a GPU the reduction goes innermost instead, so (batch, m, n) map onto threads.
            let nb = n - 2;
            let loops = n + 1;
            let (m, k, nn) = if e.gpu {
                (format!("d{nb}"), format!("d{}", nb + 2), format!("d{}", nb + 1))
            } else {
                (format!("d{nb}"), format!("d{}", nb + 1), format!("d{}", nb + 2))
            };
            let batch_map = |t: &BindingType| -> Vec<String> {
                let r = t.dims.len() - 2;
                let off = nb - r;
                (0..r)
                    .map(|i| if t.dims[i] == Some(1) && out.ty.dims[off + i] != Some(1) { "0".into() } else { format!("d{}", off + i) })
                    .collect()
            };
            let mut am = batch_map(&a.ty);
            am.extend([m.clone(), k.clone()]);
            let mut bm = batch_map(&b.ty);
            bm.extend([k.clone(), nn.clone()]);
            let mut om: Vec<String> = (0..nb).map(|i| format!("d{i}")).collect();
            om.extend([m, nn]);
            let mut red = vec![false; loops];
            red[if e.gpu { nb + 2 } else { nb + 1 }] = true;
            let (ad, bd) = (a.ty.dtype, b.ty.dtype);
            let r = generic(e, vec![amap(loops, &am), amap(loops, &bm), amap(loops, &om)], &red, &[a, b], &acc, |body, args| {
                let x = body.convert(&args[0], ad, ct);
                let y = body.convert(&args[1], bd, ct);
                let t = ct.mlir_name();
                if ct.is_float() {
                    // `contract` lets LLVM fuse the multiply-add into an FMA.
                    let p = body.op(format!("arith.mulf {x}, {y} fastmath<contract> : {t}"));
                    body.op(format!("arith.addf {}, {p} fastmath<contract> : {t}", args[2]))
                } else {
                    let p = body.op(format!("arith.muli {x}, {y} : {t}"));
                    body.op(format!("arith.addi {}, {p} : {t}", args[2]))
                }
            });
            vec![convert_into(e, &r, out)]
        }
        Op::Transpose { perm } => {
            // out[d0..] = in[...] where in axis perm[i] is loop dim i.
            let mut res = vec![String::new(); n];
            for (i, &p) in perm.iter().enumerate() {
                res[norm(p, n)] = format!("d{i}");
            }
            let ident: Vec<String> = (0..n).map(|i| format!("d{i}")).collect();
            vec![generic(e, vec![amap(n, &res), amap(n, &ident)], &vec![false; n], &[&ins[0]], out, |_, a| a[0].clone())]
        }
        Op::Reduce { op: kind, axes, .. } => {
            let x = &ins[0];
            let r = x.ty.dims.len();
            let axes: Vec<usize> = axes.iter().map(|a| norm(*a, r)).collect();
            let acc = reduce_into(e, x, &axes, *kind, &[], true, |_, v, _| v.to_string());
            let ct = acc.ty.dtype;
            // Mean divides by the reduced element count, computed from the runtime dims.
            let acc = if *kind == ReduceOp::Mean {
                let mut count = e.index(1);
                for &ax in &axes {
                    let d = e.dim(x, ax);
                    count = e.assign(format!("arith.muli {count}, {d} : index"));
                }
                let c64 = e.assign(format!("arith.index_cast {count} : index to i64"));
                let cf = e.assign(format!("arith.sitofp {c64} : i64 to f32"));
                let dst = e.empty(&acc, ct);
                let kept = acc.ty.dims.len();
                let ident: Vec<String> = (0..kept).map(|i| format!("d{i}")).collect();
                generic(e, vec![amap(kept, &ident), amap(kept, &ident)], &vec![false; kept], &[&acc], &dst, |b, a| {
                    b.op(format!("arith.divf {}, {cf} : f32", a[0]))
                })
            } else {
                acc
            };
            // Write the kept dims into the result (keepdims inserts unit dims).
            let kept: Vec<usize> = (0..r).filter(|i| !axes.contains(i)).collect();
            let res: Vec<String> = if n == kept.len() {
                (0..n).map(|i| format!("d{i}")).collect()
            } else {
                kept.iter().map(|&i| format!("d{i}")).collect()
            };
            let ident: Vec<String> = (0..n).map(|i| format!("d{i}")).collect();
            let (ad, od) = (acc.ty.dtype, out.ty.dtype);
            vec![generic(e, vec![amap(n, &res), amap(n, &ident)], &vec![false; n], &[&acc], out, |b, a| b.convert(&a[0], ad, od))]
        }
        Op::Softmax { .. } if !e.gpu && rows::applies(op, ins, out) => vec![rows::softmax(e, &ins[0], out)],
        Op::Softmax { axis } => {
            let x = &ins[0];
            let ax = norm(*axis, n);
            let mx = reduce_into(e, x, &[ax], ReduceOp::Max, &[], true, |_, v, _| v.to_string());
            let sum = reduce_into(e, x, &[ax], ReduceOp::Sum, &[&mx], true, |b, v, extra| {
                let d = b.op(format!("arith.subf {v}, {} : f32", extra[0]));
                b.exp(&d)
            });
            let kept: Vec<String> = (0..n).filter(|i| *i != ax).map(|i| format!("d{i}")).collect();
            let ident: Vec<String> = (0..n).map(|i| format!("d{i}")).collect();
            let (xd, od) = (x.ty.dtype, out.ty.dtype);
            vec![generic(
                e,
                vec![amap(n, &ident), amap(n, &kept), amap(n, &kept), amap(n, &ident)],
                &vec![false; n],
                &[x, &mx, &sum],
                out,
                |b, a| {
                    let v = b.convert(&a[0], xd, DType::F32);
                    let d = b.op(format!("arith.subf {v}, {} : f32", a[1]));
                    let ex = b.exp(&d);
                    let r = b.op(format!("arith.divf {ex}, {} : f32", a[2]));
                    b.convert(&r, DType::F32, od)
                },
            )]
        }
        Op::Concat { axis } => {
            // Each operand is copied (linalg.copy) into an extracted slice of the destination
            // and inserted back; bufferization turns that into in-place writes through
            // subviews, with no strided memref.copy left for the runtime to provide.
            let ax = norm(*axis, n);
            let mut acc = out.clone();
            let mut offset = e.index(0);
            for v in ins {
                let (offs, sizes) = slab_coords(e, v, ax, &offset);
                let ones = vec!["1"; n].join(", ");
                let slice_ty = BindingType { dtype: acc.ty.dtype, dims: v.ty.dims.clone() };
                let dst = e.assign(format!("tensor.extract_slice {}[{offs}] [{sizes}] [{ones}] : {} to {}", acc.ssa, acc.ty.tensor(), slice_ty.tensor()));
                let copied = copy_into(e, v, &Val { ssa: dst, ty: slice_ty.clone() });
                let r = e.assign(format!(
                    "tensor.insert_slice {} into {}[{offs}] [{sizes}] [{ones}] : {} into {}",
                    copied.ssa,
                    acc.ssa,
                    slice_ty.tensor(),
                    acc.ty.tensor()
                ));
                acc = Val { ssa: r, ty: acc.ty.clone() };
                let d = e.dim(v, ax);
                offset = e.assign(format!("arith.addi {offset}, {d} : index"));
            }
            vec![acc]
        }
        Op::Split { axis, spec: _ } => {
            let slices = split_slices(e, &ins[0], *axis, outs);
            slices.iter().zip(outs).map(|(r, o)| copy_into(e, r, o)).collect()
        }
        Op::Slice { starts, axes, steps, .. } => {
            let x = &ins[0];
            let axes: Vec<usize> = axes.clone().unwrap_or_else(|| (0..starts.len() as i64).collect()).iter().map(|a| norm(*a, n)).collect();
            let steps = steps.clone().unwrap_or_else(|| vec![1; starts.len()]);
            let mut offs = vec!["0".to_string(); n];
            let mut strides = vec!["1".to_string(); n];
            let mut sizes = Vec::new();
            for (k, &ax) in axes.iter().enumerate() {
                let d = e.dim(x, ax);
                offs[ax] = clamp_index(e, starts[k], &d);
                strides[ax] = steps[k].to_string();
            }
            for i in 0..n {
                sizes.push(match out.ty.dims[i] {
                    Some(c) => c.to_string(),
                    None => e.dim(out, i),
                });
            }
            let r = e.assign(format!(
                "tensor.extract_slice {}[{}] [{}] [{}] : {} to {}",
                x.ssa,
                offs.join(", "),
                sizes.join(", "),
                strides.join(", "),
                x.ty.tensor(),
                out.ty.tensor()
            ));
            vec![copy_into(e, &Val { ssa: r, ty: out.ty.clone() }, out)]
        }
        Op::Gather { axis } => {
            let (data, idx) = (&ins[0], &ins[1]);
            let ax = norm(*axis, data.ty.dims.len());
            let ir = idx.ty.dims.len();
            let idx_map: Vec<String> = (ax..ax + ir).map(|i| format!("d{i}")).collect();
            let ident: Vec<String> = (0..n).map(|i| format!("d{i}")).collect();
            let dim_ax = e.dim(data, ax);
            let (it, dt) = (idx.ty.dtype.mlir_name(), data.ty.tensor());
            let data_ssa = data.ssa.clone();
            let dr = data.ty.dims.len();
            vec![generic(e, vec![amap(n, &idx_map), amap(n, &ident)], &vec![false; n], &[idx], out, |b, a| {
                // Negative indices count from the end; out-of-range ones clamp, never fault.
                let i = b.op(format!("arith.index_cast {} : {it} to index", a[0]));
                let z = b.op("arith.constant 0 : index".into());
                let one = b.op("arith.constant 1 : index".into());
                let neg = b.op(format!("arith.cmpi slt, {i}, {z} : index"));
                let wrapped = b.op(format!("arith.addi {i}, {dim_ax} : index"));
                let i = b.op(format!("arith.select {neg}, {wrapped}, {i} : index"));
                let hi = b.op(format!("arith.subi {dim_ax}, {one} : index"));
                let i = b.op(format!("arith.minsi {i}, {hi} : index"));
                let i = b.op(format!("arith.maxsi {i}, {z} : index"));
                let mut coords = Vec::new();
                for j in 0..dr {
                    if j < ax {
                        coords.push(b.op(format!("linalg.index {j} : index")));
                    } else if j == ax {
                        coords.push(i.clone());
                    } else {
                        coords.push(b.op(format!("linalg.index {} : index", j - 1 + ir)));
                    }
                }
                b.op(format!("tensor.extract {data_ssa}[{}] : {dt}", coords.join(", ")))
            })]
        }
        Op::RmsNorm { epsilon } | Op::LayerNorm { epsilon } if !e.gpu && rows::applies(op, ins, out) => vec![rows::normalize(e, op, *epsilon, ins, out)],
        Op::RmsNorm { epsilon } | Op::LayerNorm { epsilon } => vec![normalize(e, op, *epsilon, ins, out)],
        Op::Rope { base, interleaved } => vec![rope(e, &ins[0], &ins[1], *base, *interleaved, out)],
        Op::QMatMul { format, .. } => vec![qmatmul(e, &ins[0], &ins[1], *format, out)],
        Op::Dequantize { format } => vec![dequantize(e, &ins[0], *format, out)],
        Op::Attention { causal, scale } => vec![attention(e, &ins[0], &ins[1], &ins[2], *causal, *scale, out)],
        Op::Constant(_) | Op::Weight { .. } | Op::Reshape { .. } | Op::Custom { .. } | Op::CacheWrite { .. } | Op::CachedAttention { .. } => {
            unreachable!("{} is not lowered here", op.name())
        }
    }
}

/// Workgroup `%wg` of `%nwg`'s share `[start, start + len)` of `total` items, in chunks of
/// `ceil(total / nwg)` (rounded up to a multiple of `align`; later workgroups may get less
/// or nothing).
fn workgroup_range(e: &mut Emitter, total: &str, align: Option<usize>) -> (String, String) {
    let mut chunk = e.assign(format!("arith.ceildivui {total}, %nwg : index"));
    if let Some(a) = align {
        let ca = e.index(a as i64);
        let t = e.assign(format!("arith.ceildivui {chunk}, {ca} : index"));
        chunk = e.assign(format!("arith.muli {t}, {ca} : index"));
    }
    let s = e.assign(format!("arith.muli %wg, {chunk} : index"));
    let start = e.assign(format!("arith.minui {s}, {total} : index"));
    let rem = e.assign(format!("arith.subi {total}, {start} : index"));
    let len = e.assign(format!("arith.minui {chunk}, {rem} : index"));
    (start, len)
}

/// For a kernel run one batch slice at a time ([`crate::batch_slices`]): opens the loop over
/// this workgroup's slices of the result's batch dims (row-major; closed after the body) and
/// returns each binding's 2-D view of the slice: a rank-reducing subview whose batch dims
/// align with the result's trailing ones (a broadcast dim of 1 stays at 0); bindings of at
/// most two dims are whole.
fn batch_slice_views(e: &mut Emitter, spec: &KernelSpec, flat: &KernelSpec) -> Vec<(String, BindingType, String)> {
    let nin = spec.inputs.len();
    let out0 = &spec.outputs[0];
    let r = out0.dims.len();
    let c1 = e.index(1);
    let ext: Vec<String> = (0..r - 2)
        .map(|i| match out0.dims[i] {
            Some(c) => e.index(c),
            None => binding_dim(e, nin, out0, i),
        })
        .collect();
    let mut total = ext[0].clone();
    for x in &ext[1..] {
        total = e.assign(format!("arith.muli {total}, {x} : index"));
    }
    let (start, len) = workgroup_range(e, &total, None);
    let end = e.assign(format!("arith.addi {start}, {len} : index"));
    e.line(format!("scf.for %slice = {start} to {end} step {c1} {{"));
    let mut idx = vec![String::new(); r - 2];
    let mut rest = "%slice".to_string();
    for i in (0..r - 2).rev() {
        idx[i] = e.assign(format!("arith.remui {rest}, {} : index", ext[i]));
        rest = e.assign(format!("arith.divui {rest}, {} : index", ext[i]));
    }
    let bindings = spec.inputs.iter().chain(&spec.outputs);
    let flat_bindings = flat.inputs.iter().chain(&flat.outputs);
    let mut views = Vec::new();
    for (i, (b, vt)) in bindings.zip(flat_bindings).enumerate() {
        let q = b.dims.len();
        if q <= 2 {
            views.push((format!("%b{i}"), b.clone(), b.memref()));
            continue;
        }
        let mut offs = Vec::new();
        let mut sizes = Vec::new();
        for j in 0..q - 2 {
            let o = r - q + j;
            offs.push(if b.dims[j] == Some(1) && out0.dims[o] != Some(1) { "0".to_string() } else { idx[o].clone() });
            sizes.push("1".to_string());
        }
        for j in q - 2..q {
            offs.push("0".to_string());
            sizes.push(b.dims[j].map_or_else(|| binding_dim(e, i, b, j), |c| c.to_string()));
        }
        let row_stride = b.dims[q - 1].map_or("?".to_string(), |c| c.to_string());
        let mt = format!("memref<{}, strided<[{row_stride}, 1], offset: ?>>", vt.shape_str());
        let ones = vec!["1"; q].join(", ");
        let v = e.assign(format!("memref.subview %b{i}[{}] [{}] [{ones}] : {} to {mt}", offs.join(", "), sizes.join(", "), b.memref()));
        views.push((v, vt.clone(), mt));
    }
    views
}

/// Dim `j` of binding `%b{i}` (typed `b`), read at run time.
fn binding_dim(e: &mut Emitter, i: usize, b: &BindingType, j: usize) -> String {
    let cj = e.index(j as i64);
    e.assign(format!("memref.dim %b{i}, {cj} : {}", b.memref()))
}

/// The run-time choice of a column-split kernel whose matmul reads an activation `b[k, n]`
/// (static `n` and `k >= BLOCKED_MIN_K`): rows when `by_rows` (enough rows for every
/// workgroup), unless a workgroup's share of the rows is big enough for [`blocked_tiles`]
/// and `b` is at least as wide as `a` is tall. The blocked tiles pack `b` into panels:
/// split by rows, every workgroup packs all of `b` (a copy per thread, fighting over L3,
/// e.g. 2 x 16 MiB at 2048x2048); split by columns, each packs only its panels and `a` is
/// read once per workgroup instead, the smaller cost when `n >= m`. Rows too few for the
/// blocked tiles copy `b` one panel at a time, and split by rows they are faster (a
/// 1024x1024 product on 2 threads took 0.89x the time of the column split).
fn activation_by_rows(e: &mut Emitter, by_rows: &str, rows: &str, n: &str, k: i64) -> String {
    let ck = e.index(k);
    let share = e.assign(format!("arith.ceildivui {rows}, %nwg : index"));
    let big = takes_blocked_tiles(e, &share, &ck);
    let wide = e.assign(format!("arith.cmpi uge, {n}, {rows} : index"));
    let columns = e.assign(format!("arith.andi {big}, {wide} : i1"));
    let t = e.assign("arith.constant true");
    let rows_ok = e.assign(format!("arith.xori {columns}, {t} : i1"));
    e.assign(format!("arith.andi {by_rows}, {rows_ok} : i1"))
}

/// A subview of binding `%b{i}` (typed `b`) cut along some dims: `(dim, offset, size)`
/// each; other dims whole. Returns (view ssa, its tensor type, its memref type).
fn subview(e: &mut Emitter, i: usize, b: &BindingType, cuts: &[(usize, String, String)]) -> (String, BindingType, String) {
    let mut vt = b.clone();
    let (mut offs, mut sizes) = (Vec::new(), Vec::new());
    for (j, dim) in b.dims.iter().enumerate() {
        if let Some((_, off, size)) = cuts.iter().find(|c| c.0 == j) {
            vt.dims[j] = None;
            offs.push(off.clone());
            sizes.push(size.clone());
            continue;
        }
        offs.push("0".to_string());
        sizes.push(dim.map_or_else(|| binding_dim(e, i, b, j), |c| c.to_string()));
    }
    let ones = vec!["1"; b.dims.len()].join(", ");
    let mt = vt.view_memref(b);
    let v = e.assign(format!("memref.subview %b{i}[{}] [{}] [{ones}] : {} to {mt}", offs.join(", "), sizes.join(", "), b.memref()));
    (v, vt, mt)
}

/// Generates the `func.func` of one kernel, for a CPU tuned as `cpu` (unless `spec.gpu`).
pub fn kernel_func(spec: &KernelSpec, cpu: CpuTuning) -> String {
    if spec.packs_panels {
        return crate::pack::kernel_func(spec);
    }
    if crate::kv_cache::is_cache_kernel(spec) {
        return crate::kv_cache::kernel_func(spec);
    }
    if crate::qmatmul::is_qmatmul_kernel(spec) {
        return crate::qmatmul::kernel_func(spec, cpu.avx2);
    }
    if crate::rope::is_rope_kernel(spec) {
        return crate::rope::kernel_func(spec);
    }
    if crate::gpu_matmul::is_gpu_matmul(spec, spec.allow_tf32) {
        return crate::gpu_matmul::kernel_func(spec);
    }
    let mut e = Emitter { body: String::new(), next: 0, gpu: spec.gpu, prefix: "t", cpu };
    let nin = spec.inputs.len();
    let bindings: Vec<&BindingType> = spec.inputs.iter().chain(&spec.outputs).collect();
    // Bindings never alias a buffer the kernel writes (results are fresh buffers), so every
    // memref is `noalias`: this is what lets LLVM vectorize the loops.
    let args: Vec<String> = bindings.iter().enumerate().map(|(i, b)| format!("%b{i}: {} {{llvm.noalias}}", b.memref())).collect();
    let mut sig = format!("  func.func @{}({}, %wg: index, %nwg: index) {{\n", spec.name, args.join(", "));

    // Views of the bindings this workgroup works on.
    // (memref ssa, its tensor type, its memref type)
    let mut views: Vec<(String, BindingType, String)> = Vec::new();
    let sliced: Vec<bool> = match &spec.partition {
        Some(p) => p.iter().copied().chain(std::iter::repeat_n(true, spec.outputs.len())).collect(),
        None => vec![false; bindings.len()],
    };
    // Batched matmuls of activations run one batch slice at a time (see `batch_slices`).
    let slices = crate::batch_slices::slice_form(spec);
    if let Some(flat) = &slices {
        views = batch_slice_views(&mut e, spec, flat);
    } else if spec.columns {
        // With many rows, workgroup `w` of `n` takes rows `[w*ceil(R/n), ...)` (whole 6-row
        // tiles), as any partitioned kernel. With few, it takes column panels
        // `[w*ceil(P/n), ...)` of the packed weight (or 16-column stripes of an activation
        // `b`, see `activation_by_rows`) and the matching stripes of the result and of
        // column-aligned operands, for all rows. Decided at run time.
        let (a_in, w_in) = match (spec.body[0].args[0], spec.body[0].args[1]) {
            (ValueRef::Input(a), ValueRef::Input(w)) => (a, w),
            _ => unreachable!("splits_columns checked the operands are inputs"),
        };
        let out0 = &spec.outputs[0];
        let packed = spec.body[0].packed_rhs;
        let c0 = e.index(0);
        let rows = e.assign(format!("memref.dim %b{nin}, {c0} : {}", out0.memref()));
        let cw = e.index(PACK_WIDTH as i64);
        // An activation `b[k, n]` (static `n`, see `splits_columns`) is dealt out in
        // 16-column panels too; the last workgroup's share may end in a partial one.
        let n = if packed { None } else { out0.dims[1].map(|n| e.index(n)) };
        let panels = match &n {
            Some(n) => e.assign(format!("arith.ceildivui {n}, {cw} : index")),
            None => e.assign(format!("memref.dim %b{w_in}, {c0} : {}", bindings[w_in].memref())),
        };
        let min_rows = column_split_rows();
        let cmin_rows = e.index(min_rows as i64);
        let enough = e.assign(format!("arith.muli %nwg, {cmin_rows} : index"));
        let mut by_rows = e.assign(format!("arith.cmpi uge, {rows}, {enough} : index"));
        if let (Some(n), Some(k)) = (&n, bindings[a_in].dims[1]) {
            if min_rows > 0 && k >= BLOCKED_MIN_K as i64 {
                by_rows = activation_by_rows(&mut e, &by_rows, &rows, n, k);
            }
        }
        let (rs, rl) = workgroup_range(&mut e, &rows, Some(MR));
        let (ps, pl) = workgroup_range(&mut e, &panels, None);
        let row_start = e.assign(format!("arith.select {by_rows}, {rs}, {c0} : index"));
        let row_len = e.assign(format!("arith.select {by_rows}, {rl}, {rows} : index"));
        let p_start = e.assign(format!("arith.select {by_rows}, {c0}, {ps} : index"));
        let p_len = e.assign(format!("arith.select {by_rows}, {panels}, {pl} : index"));
        let mut col0 = e.assign(format!("arith.muli {p_start}, {cw} : index"));
        let mut cols = e.assign(format!("arith.muli {p_len}, {cw} : index"));
        if let Some(n) = &n {
            // A workgroup left without panels starts at the end, not past it.
            col0 = e.assign(format!("arith.minui {col0}, {n} : index"));
            let left = e.assign(format!("arith.subi {n}, {col0} : index"));
            cols = e.assign(format!("arith.minui {cols}, {left} : index"));
        }
        for (i, b) in bindings.iter().enumerate() {
            // (dim, offset, size) of each cut of this binding.
            let mut cuts: Vec<(usize, String, String)> = Vec::new();
            if i == w_in && packed {
                cuts.push((0, p_start.clone(), p_len.clone()));
            } else if i == w_in {
                cuts.push((1, col0.clone(), cols.clone()));
            } else if i == a_in {
                cuts.push((0, row_start.clone(), row_len.clone()));
            } else if let Some(d) = column_follows(b, out0) {
                // Results, and epilogue operands `[m, n]` (rows and columns) or `[n]`/`[1, n]`.
                // A `[1, n]` follows the rows when the result has one row: a workgroup past
                // it must not see it (nor rewrite the result's row).
                if d == 1 && (b.dims[0] != Some(1) || out0.dims[0] == Some(1)) {
                    cuts.push((0, row_start.clone(), row_len.clone()));
                }
                cuts.push((d, col0.clone(), cols.clone()));
            }
            if cuts.is_empty() {
                views.push((format!("%b{i}"), (*b).clone(), b.memref()));
                continue;
            }
            views.push(subview(&mut e, i, b, &cuts));
        }
    } else if spec.partition.is_some() {
        let out0 = &spec.outputs[0];
        let c0 = e.index(0);
        let rows = e.assign(format!("memref.dim %b{nin}, {c0} : {}", out0.memref()));
        // Whole register tiles per workgroup: leftover rows go to the last one only.
        let align = spec.body.iter().any(|f| matches!(f.op, Op::MatMul)).then_some(MR);
        let (start, len) = workgroup_range(&mut e, &rows, align);
        for (i, b) in bindings.iter().enumerate() {
            if !sliced[i] {
                views.push((format!("%b{i}"), (*b).clone(), b.memref()));
                continue;
            }
            views.push(subview(&mut e, i, b, &[(0, start.clone(), len.clone())]));
        }
    } else {
        for (i, b) in bindings.iter().enumerate() {
            views.push((format!("%b{i}"), (*b).clone(), b.memref()));
        }
    }
    let mut ins = Vec::new();
    for (m, t, mt) in &views[..nin] {
        let v = e.assign(format!("bufferization.to_tensor {m} restrict : {mt} to {}", t.tensor()));
        ins.push(Val { ssa: v, ty: t.clone() });
    }
    let mut outs = Vec::new();
    for (m, t, mt) in &views[nin..] {
        let v = e.assign(format!("bufferization.to_tensor {m} restrict writable : {mt} to {}", t.tensor()));
        outs.push(Val { ssa: v, ty: t.clone() });
    }
    // Run the region's ops in order; temporaries are shaped like output 0 (fusion keeps
    // every value of a chain at the result's shape).
    let mut temps: std::collections::HashMap<usize, Val> = std::collections::HashMap::new();
    let mut finals: Vec<Option<Val>> = vec![None; outs.len()];
    for f in slices.as_ref().map_or(&spec.body, |flat| &flat.body) {
        let args: Vec<Val> = f
            .args
            .iter()
            .map(|a| match a {
                ValueRef::Input(i) => ins[*i].clone(),
                ValueRef::Output(i) => finals[*i].clone().expect("outputs are read after they are computed"),
                ValueRef::Temp(t, _) => temps[t].clone(),
            })
            .collect();
        let dests: Vec<Val> = f
            .results
            .iter()
            .map(|r| match r {
                ValueRef::Output(i) => outs[*i].clone(),
                ValueRef::Temp(_, d) => e.empty(&outs[0], *d),
                ValueRef::Input(_) => unreachable!("ops do not write inputs"),
            })
            .collect();
        let vals = if let Some(call) = &f.call {
            custom_call(&mut e, call, &args, &dests)
        } else if let (Op::Split { axis, .. }, true) = (&f.op, f.results.iter().all(|r| matches!(r, ValueRef::Temp(..)))) {
            // Results read only inside the kernel (fusion moved the split into its reader):
            // slices of the operand, read in place, not copies.
            split_slices(&mut e, &args[0], *axis, &dests)
        } else if f.packed_rhs {
            vec![if args[0].ty.dims.len() == 3 { batched_packed_matmul(&mut e, &args[0], &args[1], &dests[0]) } else { matmul_microkernel(&mut e, &args[0], &args[1], &dests[0], true, f.sparse_lhs) }]
        } else {
            lower_op(&mut e, &f.op, &args, &dests)
        };
        for (r, v) in f.results.iter().zip(vals) {
            match r {
                ValueRef::Output(i) => finals[*i] = Some(v),
                ValueRef::Temp(t, _) => {
                    temps.insert(*t, v);
                }
                ValueRef::Input(_) => {}
            }
        }
    }
    for (r, (m, t, mt)) in finals.iter().zip(&views[nin..]) {
        let r = r.as_ref().expect("every output is computed");
        e.line(format!(
            "bufferization.materialize_in_destination {} in restrict writable {m} : ({}, {mt}) -> ()",
            r.ssa,
            t.tensor(),
        ));
    }
    if slices.is_some() {
        e.line("}");
    }
    e.line("return");
    sig.push_str(&e.body);
    sig.push_str("  }\n");
    sig
}

/// Wraps kernel functions into a module, with the MLIR kernel libraries they call (made
/// private, so they disappear once inlined).
/// `cpu` is the CPU target's tuning (see [`CpuTuning`]).
pub fn kernel_module(specs: &[KernelSpec], libraries: &[(String, Vec<String>)], cpu: CpuTuning) -> String {
    // GPU host code launches kernels of `gpu.module`s nested in this module.
    let gpu = specs.iter().any(|k| k.gpu);
    let mut s = String::from(if gpu { "module attributes {gpu.container_module} {\n" } else { "module {\n" });
    // Tensor-core matmuls are written at the memref level with their launches; they join
    // the module after bufferization (see `crate::gpu::late_kernels`).
    for k in specs.iter().filter(|k| k.native.is_none() && k.ptx.is_none() && !crate::gpu::is_late_kernel(k)) {
        match crate::flatten::flat_form(k).filter(|_| !k.gpu) {
            Some(flat) => {
                s.push_str(&crate::flatten::wrapper(k, &flat));
                // Private: once inlined into the wrapper it is dropped.
                s.push_str(&kernel_func(&flat, cpu).replacen("func.func @", "func.func private @", 1));
            }
            None => s.push_str(&kernel_func(k, cpu)),
        }
    }
    if cpu.avx2 {
        s.push_str(crate::qmatmul_q8::X86_HELPER_DECLS);
    }
    for (source, functions) in libraries {
        let mut text = source.clone();
        for f in functions {
            text = text.replace(&format!("func.func @{f}("), &format!("func.func private @{f}("));
        }
        s.push_str(&text);
        s.push('\n');
    }
    s.push_str("}\n");
    s
}

/// A call of an MLIR kernel-library function: operands cast to its parameter types, results
/// cast back and copied into the destinations.
fn custom_call(e: &mut Emitter, call: &MlirCall, args: &[Val], dests: &[Val]) -> Vec<Val> {
    let mut operands = Vec::new();
    for (a, p) in args.iter().zip(&call.params) {
        let t = a.ty.tensor();
        operands.push(if &t == p { a.ssa.clone() } else { e.assign(format!("tensor.cast {} : {t} to {p}", a.ssa)) });
    }
    let n = call.results.len();
    let r = e.fresh();
    let head = if n == 1 { r.clone() } else { format!("{r}:{n}") };
    e.line(format!("{head} = func.call @{}({}) : ({}) -> ({})", call.function, operands.join(", "), call.params.join(", "), call.results.join(", ")));
    let mut out = Vec::new();
    for (i, (rt, d)) in call.results.iter().zip(dests).enumerate() {
        let v = if n == 1 { r.clone() } else { format!("{r}#{i}") };
        let dt = d.ty.tensor();
        let v = if rt == &dt { v } else { e.assign(format!("tensor.cast {v} : {rt} to {dt}")) };
        out.push(copy_into(e, &Val { ssa: v, ty: d.ty.clone() }, d));
    }
    out
}


#[cfg(test)]
mod tests {
    #[test]
    fn znver4_tuning_differs_from_the_defaults() {
        // The knobs override the table; these expectations hold without them.
        if ["MAX_GEMV_PREFETCH", "MAX_BLOCKED_MIN_A_BYTES", "MAX_MATMUL_LANES"].iter().any(|k| std::env::var_os(k).is_some()) {
            eprintln!("skipped: MAX_GEMV_PREFETCH, MAX_BLOCKED_MIN_A_BYTES or MAX_MATMUL_LANES is set");
            return;
        }
        let znver4 = super::CpuTuning::for_cpu("znver4", true, true);
        assert!(!znver4.gemv_prefetch);
        assert_eq!(znver4.blocked_min_a_bytes, None);
        for cpu in ["znver3", "x86-64-v3", "skylake-avx512", "x86-64"] {
            let t = super::CpuTuning::for_cpu(cpu, true, false);
            assert!(t.gemv_prefetch, "{cpu}");
            assert_eq!(t.blocked_min_a_bytes, Some(super::BLOCKED_MIN_A_BYTES), "{cpu}");
        }
        assert!(!super::CpuTuning::for_cpu("x86-64", false, false).avx2);
        // 512-bit tiles with AVX-512F, whatever the CPU; 256-bit ones without.
        assert_eq!(super::CpuTuning::for_cpu("skylake-avx512", true, true).vector_lanes, 16);
        assert_eq!(super::CpuTuning::for_cpu("x86-64-v4", true, true).vector_lanes, 16);
        assert_eq!(super::CpuTuning::for_cpu("znver3", true, false).vector_lanes, 8);
        assert_eq!(super::CpuTuning::default().vector_lanes, 8);
    }

    #[test]
    fn float_literals_have_a_decimal_point() {
        assert_eq!(super::float_lit(0.0), "0.0e0");
        assert_eq!(super::float_lit(1e-7), "1.0e-7");
        assert_eq!(super::float_lit(0.5), "5.0e-1");
        assert_eq!(super::float_lit(0.8125), "8.125e-1");
    }
}
