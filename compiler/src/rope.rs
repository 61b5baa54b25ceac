//! RoPE at the memref level for the LLM layout `x[N, heads, head_dim]`, `positions[N]`.
//!
//! The elementwise form computes an angle and its cosine and sine for every element, and
//! again for its pair partner: `2 * heads` times the work, all of it libm calls. This kernel
//! computes each token's `head_dim/2` angles once (in f64: positions times frequencies
//! reach thousands of radians) and rotates that pair in every head.

use crate::lower::KernelSpec;
use max_dialects::{DType, Graph, Node, Op};
use std::fmt::Write;

/// Whether a `rope` node is computed by this kernel: f32 `x[N, H, D]` with `positions[N]`.
pub fn applies(graph: &Graph, node: &Node) -> bool {
    matches!(node.op, Op::Rope { .. }) && {
        let (x, p) = (graph.ty(node.inputs[0]), graph.ty(node.inputs[1]));
        x.rank() == 3 && p.rank() == 1 && x.dtype == DType::F32
    }
}

/// Whether `spec` is a kernel this module generates.
pub fn is_rope_kernel(spec: &KernelSpec) -> bool {
    spec.native.is_none()
        && spec.body.len() == 1
        && matches!(spec.body[0].op, Op::Rope { .. })
        && spec.inputs[0].dims.len() == 3
        && spec.inputs[1].dims.len() == 1
        && spec.inputs[0].dtype == DType::F32
        && spec.outputs[0].dtype == DType::F32
        && spec.partition.is_none()
}

/// The `func.func` of a RoPE kernel. Bindings: x, positions, out. Workgroups split tokens.
pub fn kernel_func(spec: &KernelSpec) -> String {
    let Op::Rope { base, interleaved } = spec.body[0].op else { unreachable!("is_rope_kernel checked the op") };
    let (x, pos, out) = (&spec.inputs[0], &spec.inputs[1], &spec.outputs[0]);
    let (xm, pm, om) = (x.memref(), pos.memref(), out.memref());
    let heads = x.dims[1].expect("verifier: static heads");
    let d = x.dims[2].expect("verifier: static head dim");
    let half = d / 2;
    let pt = pos.dtype.mlir_name();
    // Pair i: elements (2i, 2i+1) interleaved, (i, i + d/2) otherwise.
    let (first, second) = if interleaved {
        ("affine_map<(i) -> (2 * i)>", "affine_map<(i) -> (2 * i + 1)>")
    } else {
        ("affine_map<(i) -> (i)>", format!("affine_map<(i) -> (i + {half})>").leak() as &str)
    };
    let mut s = format!("  func.func @{}(%b0: {xm}, %b1: {pm}, %b2: {om}, %wg: index, %nwg: index) {{\n", spec.name);
    let _ = write!(
        s,
        "    %c0 = arith.constant 0 : index\n    %c1 = arith.constant 1 : index\n    \
         %ch = arith.constant {heads} : index\n    %chalf = arith.constant {half} : index\n    \
         %n = memref.dim %b0, %c0 : {xm}\n    %chunk = arith.ceildivui %n, %nwg : index\n    \
         %s0 = arith.muli %wg, %chunk : index\n    %start = arith.minui %s0, %n : index\n    \
         %e0 = arith.addi %start, %chunk : index\n    %end = arith.minui %e0, %n : index\n    \
         %k = arith.constant {} : f64\n    \
         %freqs = memref.alloca() : memref<{half}xf64>\n    \
         scf.for %i = %c0 to %chalf step %c1 {{\n      \
         %i64 = arith.index_cast %i : index to i64\n      %if = arith.sitofp %i64 : i64 to f64\n      \
         %ex = arith.mulf %if, %k : f64\n      %f = math.exp %ex : f64\n      memref.store %f, %freqs[%i] : memref<{half}xf64>\n    }}\n    \
         scf.for %t = %start to %end step %c1 {{\n      \
         %p = memref.load %b1[%t] : {pm}\n      %pf = arith.sitofp %p : {pt} to f64\n      \
         scf.for %i = %c0 to %chalf step %c1 {{\n        \
         %f = memref.load %freqs[%i] : memref<{half}xf64>\n        %ang = arith.mulf %pf, %f : f64\n        \
         %cd = math.cos %ang : f64\n        %sd = math.sin %ang : f64\n        \
         %cs = arith.truncf %cd : f64 to f32\n        %sn = arith.truncf %sd : f64 to f32\n        \
         %ja = affine.apply {first}(%i)\n        %jb = affine.apply {second}(%i)\n        \
         scf.for %h = %c0 to %ch step %c1 {{\n          \
         %a = memref.load %b0[%t, %h, %ja] : {xm}\n          %b = memref.load %b0[%t, %h, %jb] : {xm}\n          \
         %ac = arith.mulf %a, %cs : f32\n          %bs = arith.mulf %b, %sn : f32\n          %ya = arith.subf %ac, %bs : f32\n          \
         %as = arith.mulf %a, %sn : f32\n          %bc = arith.mulf %b, %cs : f32\n          %yb = arith.addf %as, %bc : f32\n          \
         memref.store %ya, %b2[%t, %h, %ja] : {om}\n          memref.store %yb, %b2[%t, %h, %jb] : {om}\n        \
         }}\n      }}\n    }}\n    return\n  }}\n",
        crate::lower::float_lit(-2.0 * base.ln() / d as f64)
    );
    s
}
