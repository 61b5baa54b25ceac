//! Row reductions on the GPU: softmax (last axis), rms_norm and layer_norm as one kernel
//! with one block per row, with a cast of the result fused in (rounded as it is stored).
//!
//! The 256 threads of a block (1024 for rows of at least [`WIDE_ROW`] columns) stride over
//! the row's columns, each keeping a partial max or sum in a register; partials combine
//! across the warp with shuffles and across the block's warps through shared memory, and
//! every thread then writes its columns of the result. A row is read two or three times
//! (each pass from L2 for all but the largest rows) and written once, in a single launch.
//! The arithmetic matches the CPU kernels: the same inline `exp` polynomial,
//! `rsqrt(mean + eps)`, f32 accumulation.

use crate::lower::{BindingType, KernelSpec};
use max_dialects::{DType, Op};
use std::fmt::Write;

/// Threads per block for rows narrower than [`WIDE_ROW`] or of a dynamic width.
pub const THREADS: usize = 256;
/// Threads per block for rows of at least [`WIDE_ROW`] columns (known at compile time): a
/// decode step's single 4096-wide rms_norm row is one block on the whole GPU, and 256
/// threads walked it 16 loads deep per pass.
pub const WIDE_THREADS: usize = 1024;
/// Row width from which a row kernel takes [`WIDE_THREADS`].
pub const WIDE_ROW: i64 = 2048;

/// Threads per block of the row kernel for rows of `width` columns (`None`: dynamic).
pub fn threads_for(width: Option<i64>) -> usize {
    if width.is_some_and(|w| w >= WIDE_ROW) {
        WIDE_THREADS
    } else {
        THREADS
    }
}

/// Whether `spec` is a row reduction the row kernel computes: alone, or followed by a cast
/// of its result (rms_norm's f32 rows rounded to bf16 for the projections after it).
pub fn is_row_kernel(spec: &KernelSpec) -> bool {
    if !spec.gpu || spec.body.is_empty() || spec.inputs.is_empty() || spec.outputs.len() != 1 {
        return false;
    }
    let cast_tail = match &spec.body[1..] {
        [] => true,
        [c] => matches!(c.op, Op::Cast(_)) && c.args == spec.body[0].results && c.call.is_none(),
        _ => false,
    };
    if !cast_tail {
        return false;
    }
    let x = &spec.inputs[0];
    let r = x.dims.len();
    let floats = spec.inputs.iter().chain(&spec.outputs).all(|b| b.dtype.is_float());
    floats
        && r >= 2
        && spec.outputs[0].dims == x.dims
        && match spec.body[0].op {
            Op::Softmax { axis } => axis == -1 || axis == r as i64 - 1,
            Op::RmsNorm { .. } => spec.inputs.len() == 2 && spec.inputs[1].dims.len() == 1,
            Op::LayerNorm { .. } => spec.inputs.len() == 3 && spec.inputs[1].dims.len() == 1 && spec.inputs[2].dims.len() == 1,
            _ => false,
        }
}

use crate::gpu_text::KernelText as Gen;

/// Row-kernel pieces on top of the shared kernel text.
pub(crate) trait RowOps {
    fn as_f32(&mut self, indent: usize, v: &str, dt: DType) -> String;
    fn exp(&mut self, indent: usize, x: &str) -> String;
    fn block_reduce(&mut self, indent: usize, v: &str, op: &str, threads: usize) -> String;
    fn block_reduce_in(&mut self, indent: usize, v: &str, op: &str, threads: usize, slots: &str) -> String;
    fn block_reduce_parts(&mut self, indent: usize, parts: &[String], op: &str, threads: usize, slots: (&str, &str)) -> String;
    fn fold_columns(&mut self, indent: usize, init: &str, body: &mut dyn FnMut(&mut Gen, usize, &str, &str) -> String) -> String;
}

impl RowOps for Gen {
    /// `v` (of `dt`) as f32.
    fn as_f32(&mut self, indent: usize, v: &str, dt: DType) -> String {
        self.convert(indent, v, dt, DType::F32)
    }
    fn exp(&mut self, indent: usize, x: &str) -> String {
        let mut op = |rhs: String| self.let_(indent, rhs);
        crate::math::exp_f32(&mut op, x, "f32")
    }
    /// Combines `v` over the block of `threads` threads with `op` (`maximumf` or `addf`);
    /// every thread gets the result. `%red` holds a slot per warp.
    fn block_reduce(&mut self, indent: usize, v: &str, op: &str, threads: usize) -> String {
        self.block_reduce_in(indent, v, op, threads, "%red")
    }
    /// [`RowOps::block_reduce`] through the workgroup buffer `slots` (`threads / 32` f32s).
    fn block_reduce_in(&mut self, indent: usize, v: &str, op: &str, threads: usize, slots: &str) -> String {
        let ty = format!("memref<{}xf32, #gpu.address_space<workgroup>>", threads / 32);
        self.block_reduce_parts(indent, &[v.to_string()], op, threads, (slots, &ty))
    }
    /// The reduction of a block of `parts.len() * threads` virtual threads played by
    /// `threads`: part `p` of thread t is virtual thread `t + p * threads`'s value. Each part
    /// combines over its warp and goes to its virtual warp's slot of `slots` (name, type),
    /// and the slots combine in order, so the result has the bits of the wider block's
    /// [`RowOps::block_reduce`].
    fn block_reduce_parts(&mut self, indent: usize, parts: &[String], op: &str, threads: usize, (slots, ty): (&str, &str)) -> String {
        let mut stores = Vec::new();
        for (p, v) in parts.iter().enumerate() {
            let acc = self.shuffle_xor(indent, v, op, crate::gpu_text::WARP_OFFSETS);
            let slot = if p == 0 {
                "%warp".to_string()
            } else {
                let wo = self.let_(indent, format!("arith.constant {} : index", p * threads / 32));
                self.let_(indent, format!("arith.addi %warp, {wo} : index"))
            };
            stores.push((acc, slot));
        }
        for (acc, slot) in &stores {
            self.line(indent, "scf.if %lane0 {");
            self.line(indent + 2, format!("memref.store {acc}, {slots}[{slot}] : {ty}"));
            self.line(indent, "}");
        }
        self.line(indent, "gpu.barrier");
        let mut total = self.let_(indent, format!("memref.load {slots}[%c0] : {ty}"));
        for w in 1..parts.len() * threads / 32 {
            let cw = self.let_(indent, format!("arith.constant {w} : index"));
            let x = self.let_(indent, format!("memref.load {slots}[{cw}] : {ty}"));
            total = self.let_(indent, format!("arith.{op} {total}, {x} : f32"));
        }
        // The slots are rewritten by the next reduction.
        self.line(indent, "gpu.barrier");
        total
    }
    /// `scf.for` over this thread's columns, folding `body(col, acc)` into an f32 starting at
    /// `init`.
    fn fold_columns(&mut self, indent: usize, init: &str, body: &mut dyn FnMut(&mut Gen, usize, &str, &str) -> String) -> String {
        let r = self.let_(indent, "scf.for %col = %tid to %D step %cthreads iter_args(%acc = INIT) -> (f32) {".replace("INIT", init));
        let v = body(self, indent + 2, "%col", "%acc");
        self.line(indent + 2, format!("scf.yield {v} : f32"));
        self.line(indent, "}");
        r
    }
}

/// Collapses a rank-n memref to 2-D (rows, last dim) in host code; returns (ssa, type).
fn collapse(s: &mut String, v: &str, b: &BindingType) -> (String, String) {
    let n = b.dims.len();
    let lead: Option<i64> = b.dims[..n - 1].iter().try_fold(1i64, |acc, d| d.map(|d| acc * d));
    let dim = |d: Option<i64>| d.map_or("?".to_string(), |x| x.to_string());
    let ty = format!("memref<{}x{}x{}>", dim(lead), dim(b.dims[n - 1]), b.dtype.mlir_name());
    if n == 2 {
        return (v.to_string(), b.memref());
    }
    let groups: Vec<String> = (0..n - 1).map(|i| i.to_string()).collect();
    let out = format!("{v}_2d");
    let _ = writeln!(s, "    {out} = memref.collapse_shape {v} [[{}], [{}]] : {} into {ty}", groups.join(", "), n - 1, b.memref());
    (out, ty)
}

/// The host function (one block per row) and the `gpu.module` of a row kernel.
pub fn kernel_func(spec: &KernelSpec) -> String {
    let name = &spec.name;
    let bindings: Vec<&BindingType> = spec.inputs.iter().chain(&spec.outputs).collect();
    let nin = spec.inputs.len();
    let args: Vec<String> = bindings.iter().enumerate().map(|(i, b)| format!("%b{i}: {}", b.memref())).collect();
    let threads = threads_for(bindings[0].dims.last().copied().flatten());
    let mut s = format!("  func.func @{name}({}, %wg: index, %nwg: index) {{\n", args.join(", "));
    let _ = writeln!(s, "    %c0 = arith.constant 0 : index\n    %c1 = arith.constant 1 : index\n    %cthreads = arith.constant {threads} : index");
    let (x2, xt) = collapse(&mut s, "%b0", bindings[0]);
    let (y2, yt) = collapse(&mut s, &format!("%b{nin}"), bindings[nin]);
    let _ = writeln!(s, "    %rows = memref.dim {x2}, %c0 : {xt}");
    let mut launch_args = vec![format!("{x2} : {xt}")];
    let mut kernel_params = vec![format!("%X: {xt}")];
    for (k, b) in bindings.iter().enumerate().take(nin).skip(1) {
        launch_args.push(format!("%b{k} : {}", b.memref()));
        kernel_params.push(format!("%P{k}: {}", b.memref()));
    }
    launch_args.push(format!("{y2} : {yt}"));
    kernel_params.push(format!("%Y: {yt}"));
    let _ = writeln!(
        s,
        "    gpu.launch_func @{name}_rows::@rows blocks in (%rows, %c1, %c1) threads in (%cthreads, %c1, %c1) args({})\n    return\n  }}",
        launch_args.join(", ")
    );

    let (xd, od) = (bindings[0].dtype, bindings[nin].dtype);
    let mut g = Gen::new("r");
    let i = 6;
    g.line(2, format!("gpu.module @{name}_rows {{"));
    g.line(4, format!("gpu.func @rows({}) workgroup(%red : memref<{}xf32, #gpu.address_space<workgroup>>) kernel attributes {{known_block_size = array<i32: {threads}, 1, 1>}} {{", kernel_params.join(", "), threads / 32));
    g.line(i, "%c0 = arith.constant 0 : index");
    g.line(i, "%c1 = arith.constant 1 : index");
    g.line(i, "%c32 = arith.constant 32 : index");
    g.line(i, format!("%cthreads = arith.constant {threads} : index"));
    g.line(i, "%w32 = arith.constant 32 : i32");
    g.line(i, "%row = gpu.block_id x");
    g.line(i, "%tid = gpu.thread_id x");
    g.line(i, "%warp = arith.divui %tid, %c32 : index");
    g.line(i, "%lanei = arith.remui %tid, %c32 : index");
    g.line(i, "%lane0 = arith.cmpi eq, %lanei, %c0 : index");
    g.line(i, format!("%D = memref.dim %X, %c1 : {xt}"));
    g.line(i, "%Di = arith.index_cast %D : index to i64");
    g.line(i, "%Df = arith.sitofp %Di : i64 to f32");
    let load_x = |g: &mut Gen, ind: usize, col: &str| {
        let v = g.let_(ind, format!("memref.load %X[%row, {col}] : {xt}"));
        g.as_f32(ind, &v, xd)
    };
    // The reduction's own result type, which a fused cast converts from: its value is
    // rounded to it first, as the CPU computes the two ops.
    let mid = match spec.body[0].results[0] {
        crate::lower::ValueRef::Temp(_, d) => d,
        _ => od,
    };
    let store_y = |g: &mut Gen, ind: usize, col: &str, v: &str| {
        let r = g.convert(ind, v, DType::F32, mid);
        let y = g.convert(ind, &r, mid, od);
        g.line(ind, format!("memref.store {y}, %Y[%row, {col}] : {yt}"));
    };
    let vec_load = |g: &mut Gen, ind: usize, k: usize, col: &str| {
        let b = bindings[k];
        let v = g.let_(ind, format!("memref.load %P{k}[{col}] : {}", b.memref()));
        g.as_f32(ind, &v, b.dtype)
    };
    match spec.body[0].op {
        Op::Softmax { .. } => {
            let ninf = g.let_(i, "arith.constant 0xFF800000 : f32");
            let part = g.fold_columns(i, &ninf, &mut |g, ind, col, acc| {
                let x = load_x(g, ind, col);
                g.let_(ind, format!("arith.maximumf {acc}, {x} : f32"))
            });
            let mx = g.block_reduce(i, &part, "maximumf", threads);
            let zero = g.let_(i, "arith.constant 0.0 : f32");
            let part = g.fold_columns(i, &zero, &mut |g, ind, col, acc| {
                let x = load_x(g, ind, col);
                let d = g.let_(ind, format!("arith.subf {x}, {mx} : f32"));
                let e = g.exp(ind, &d);
                g.let_(ind, format!("arith.addf {acc}, {e} : f32"))
            });
            let sum = g.block_reduce(i, &part, "addf", threads);
            g.line(i, "scf.for %col = %tid to %D step %cthreads {");
            let x = load_x(&mut g, i + 2, "%col");
            let d = g.let_(i + 2, format!("arith.subf {x}, {mx} : f32"));
            let e = g.exp(i + 2, &d);
            let y = g.let_(i + 2, format!("arith.divf {e}, {sum} : f32"));
            store_y(&mut g, i + 2, "%col", &y);
            g.line(i, "}");
        }
        Op::RmsNorm { epsilon } => {
            let zero = g.let_(i, "arith.constant 0.0 : f32");
            let part = g.fold_columns(i, &zero, &mut |g, ind, col, acc| {
                let x = load_x(g, ind, col);
                let sq = g.let_(ind, format!("arith.mulf {x}, {x} : f32"));
                g.let_(ind, format!("arith.addf {acc}, {sq} : f32"))
            });
            let ss = g.block_reduce(i, &part, "addf", threads);
            let eps = g.let_(i, format!("arith.constant {} : f32", crate::lower::float_lit(epsilon)));
            let ms = g.let_(i, format!("arith.divf {ss}, %Df : f32"));
            let sh = g.let_(i, format!("arith.addf {ms}, {eps} : f32"));
            let r = g.let_(i, format!("math.rsqrt {sh} : f32"));
            g.line(i, "scf.for %col = %tid to %D step %cthreads {");
            let x = load_x(&mut g, i + 2, "%col");
            let w = vec_load(&mut g, i + 2, 1, "%col");
            let y = g.let_(i + 2, format!("arith.mulf {x}, {r} : f32"));
            let y = g.let_(i + 2, format!("arith.mulf {y}, {w} : f32"));
            store_y(&mut g, i + 2, "%col", &y);
            g.line(i, "}");
        }
        Op::LayerNorm { epsilon } => {
            let zero = g.let_(i, "arith.constant 0.0 : f32");
            let part = g.fold_columns(i, &zero, &mut |g, ind, col, acc| {
                let x = load_x(g, ind, col);
                g.let_(ind, format!("arith.addf {acc}, {x} : f32"))
            });
            let sum = g.block_reduce(i, &part, "addf", threads);
            let mean = g.let_(i, format!("arith.divf {sum}, %Df : f32"));
            let part = g.fold_columns(i, &zero, &mut |g, ind, col, acc| {
                let x = load_x(g, ind, col);
                let c = g.let_(ind, format!("arith.subf {x}, {mean} : f32"));
                let sq = g.let_(ind, format!("arith.mulf {c}, {c} : f32"));
                g.let_(ind, format!("arith.addf {acc}, {sq} : f32"))
            });
            let var = g.block_reduce(i, &part, "addf", threads);
            let eps = g.let_(i, format!("arith.constant {} : f32", crate::lower::float_lit(epsilon)));
            let vr = g.let_(i, format!("arith.divf {var}, %Df : f32"));
            let sh = g.let_(i, format!("arith.addf {vr}, {eps} : f32"));
            let r = g.let_(i, format!("math.rsqrt {sh} : f32"));
            g.line(i, "scf.for %col = %tid to %D step %cthreads {");
            let x = load_x(&mut g, i + 2, "%col");
            let c = g.let_(i + 2, format!("arith.subf {x}, {mean} : f32"));
            let gm = vec_load(&mut g, i + 2, 1, "%col");
            let bt = vec_load(&mut g, i + 2, 2, "%col");
            let y = g.let_(i + 2, format!("arith.mulf {c}, {r} : f32"));
            let y = g.let_(i + 2, format!("arith.mulf {y}, {gm} : f32"));
            let y = g.let_(i + 2, format!("arith.addf {y}, {bt} : f32"));
            store_y(&mut g, i + 2, "%col", &y);
            g.line(i, "}");
        }
        _ => unreachable!("is_row_kernel admits only softmax, rms_norm and layer_norm"),
    }
    g.line(i, "gpu.return");
    g.line(4, "}");
    g.line(2, "}");
    s.push_str(&g.s);
    s
}
