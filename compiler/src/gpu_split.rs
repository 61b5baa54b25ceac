//! A split on the GPU in one launch: a thread per element of the operand, storing it into
//! the part its index along the axis falls in. The generic path copies each part with a
//! kernel of its own, so a merged q/k/v projection's split took three launches a layer of
//! a decode step, each too small to fill the GPU.
//!
//! Every binding is viewed as 1-D (row-major, contiguous); an element's place is (outer
//! index, index along the axis, inner index), with the axis and the dims after it static.

use crate::gpu_text::KernelText as Gen;
use crate::lower::{BindingType, KernelSpec, ValueRef};
use max_dialects::Op;
use std::fmt::Write;

/// Threads per block.
const THREADS: usize = 256;

/// Whether `spec` is a lone split whose parts are all outputs, along an axis that is, like
/// every dim after it, static and not empty (the kernel divides by their sizes).
pub fn is_gpu_split(spec: &KernelSpec) -> bool {
    let [f] = &spec.body[..] else { return false };
    let Op::Split { axis, .. } = f.op else { return false };
    let x = &spec.inputs[0];
    let rank = x.dims.len() as i64;
    spec.gpu
        && spec.native.is_none()
        && spec.ptx.is_none()
        && rank >= 1
        && f.results.iter().all(|r| matches!(r, ValueRef::Output(_)))
        && x.dims[axis.rem_euclid(rank) as usize..].iter().all(|d| d.is_some_and(|d| d > 0))
        && spec.outputs.iter().all(|o| o.dims.len() == x.dims.len())
}

/// Host code: `v` (binding type `b`) as a 1-D memref; returns (SSA, type).
fn flat(s: &mut String, v: &str, b: &BindingType, name: &str) -> (String, String) {
    let total: Option<i64> = b.dims.iter().try_fold(1i64, |acc, d| d.map(|d| acc * d));
    let ty = format!("memref<{}x{}>", total.map_or("?".into(), |t| t.to_string()), b.dtype.mlir_name());
    if b.dims.len() == 1 {
        return (v.to_string(), ty);
    }
    let all: Vec<String> = (0..b.dims.len()).map(|i| i.to_string()).collect();
    let _ = writeln!(s, "    {name} = memref.collapse_shape {v} [[{}]] : {} into {ty}", all.join(", "), b.memref());
    (name.to_string(), ty)
}

/// The host function and `gpu.module` of a split kernel. Bindings: x, then the parts.
pub fn kernel_func(spec: &KernelSpec) -> String {
    let Op::Split { axis, .. } = spec.body[0].op else { unreachable!("is_gpu_split checked the op") };
    let x = &spec.inputs[0];
    let ax = axis.rem_euclid(x.dims.len() as i64) as usize;
    let static_dim = |b: &BindingType, i: usize| b.dims[i].expect("is_gpu_split: static axis and inner dims");
    let inner: i64 = (ax + 1..x.dims.len()).map(|i| static_dim(x, i)).product();
    let span = static_dim(x, ax) * inner;
    let parts: Vec<i64> = spec.outputs.iter().map(|o| static_dim(o, ax)).collect();
    let bindings: Vec<&BindingType> = spec.inputs.iter().chain(&spec.outputs).collect();
    let args: Vec<String> = bindings.iter().enumerate().map(|(i, b)| format!("%b{i}: {}", b.memref())).collect();
    let name = &spec.name;
    let mut s = format!("  func.func @{name}({}, %wg: index, %nwg: index) {{\n", args.join(", "));
    s.push_str("    %c0 = arith.constant 0 : index\n    %c1 = arith.constant 1 : index\n");
    let mut views = Vec::new();
    for (i, b) in bindings.iter().enumerate() {
        views.push(flat(&mut s, &format!("%b{i}"), b, &format!("%f{i}")));
    }
    let launch_args: Vec<String> = views.iter().map(|(v, t)| format!("{v} : {t}")).collect();
    let _ = write!(
        s,
        "    %cthreads = arith.constant {THREADS} : index\n    %total = memref.dim {}, %c0 : {}\n    \
         %some = arith.cmpi ugt, %total, %c0 : index\n    scf.if %some {{\n      %gx = arith.ceildivui %total, %cthreads : index\n      \
         gpu.launch_func @{name}_split::@split blocks in (%gx, %c1, %c1) threads in (%cthreads, %c1, %c1) args({})\n    }}\n    return\n  }}\n",
        views[0].0,
        views[0].1,
        launch_args.join(", ")
    );
    let params: Vec<String> = views.iter().enumerate().map(|(i, (_, t))| format!("%v{i}: {t}")).collect();
    let mut g = Gen::new("s");
    let i = 6;
    g.line(2, format!("gpu.module @{name}_split {{"));
    g.line(4, format!("gpu.func @split({}) kernel attributes {{known_block_size = array<i32: {THREADS}, 1, 1>}} {{", params.join(", ")));
    g.line(i, "%c0 = arith.constant 0 : index");
    g.line(i, format!("%cthreads = arith.constant {THREADS} : index"));
    g.line(i, format!("%cinner = arith.constant {inner} : index"));
    g.line(i, format!("%cspan = arith.constant {span} : index"));
    g.line(i, format!("%total = memref.dim %v0, %c0 : {}", views[0].1));
    g.line(i, "%bx = gpu.block_id x");
    g.line(i, "%tid = gpu.thread_id x");
    g.line(i, "%e0 = arith.muli %bx, %cthreads : index");
    g.line(i, "%e = arith.addi %e0, %tid : index");
    g.line(i, "%in = arith.cmpi ult, %e, %total : index");
    g.line(i, "scf.if %in {");
    let j = i + 2;
    g.line(j, format!("%x = memref.load %v0[%e] : {}", views[0].1));
    // The element's outer index, place along the axis and inner index.
    g.line(j, "%o = arith.divui %e, %cspan : index");
    g.line(j, "%r = arith.remui %e, %cspan : index");
    g.line(j, "%a = arith.divui %r, %cinner : index");
    g.line(j, "%in_i = arith.remui %r, %cinner : index");
    // Part k holds places [start_k, start_k + size_k) of the axis: an if/else chain.
    let mut start = 0i64;
    for (k, &size) in parts.iter().enumerate() {
        let ind = j + 2 * k;
        let last = k + 1 == parts.len();
        if !last {
            let end = g.let_(ind, format!("arith.constant {} : index", start + size));
            let here = g.let_(ind, format!("arith.cmpi ult, %a, {end} : index"));
            g.line(ind, format!("scf.if {here} {{"));
        }
        let body = if last { ind } else { ind + 2 };
        let off = g.let_(body, format!("arith.constant {start} : index"));
        let local = g.let_(body, format!("arith.subi %a, {off} : index"));
        let width = g.let_(body, format!("arith.constant {} : index", size * inner));
        let base = g.let_(body, format!("arith.muli %o, {width} : index"));
        let row = g.let_(body, format!("arith.muli {local}, %cinner : index"));
        let at0 = g.let_(body, format!("arith.addi {base}, {row} : index"));
        let at = g.let_(body, format!("arith.addi {at0}, %in_i : index"));
        g.line(body, format!("memref.store %x, %v{}[{at}] : {}", k + 1, views[k + 1].1));
        if !last {
            g.line(ind, "} else {");
        }
        start += size;
    }
    for k in (0..parts.len() - 1).rev() {
        g.line(j + 2 * k, "}");
    }
    g.line(i, "}");
    g.line(i, "gpu.return");
    g.line(4, "}");
    g.line(2, "}");
    s.push_str(&g.s);
    s
}
