//! RoPE at the memref level for the LLM layout `x[N, heads, head_dim]`, `positions[N]`.
//!
//! The elementwise form computes an angle and its cosine and sine for every element, and
//! again for its pair partner: `2 * heads` times the work, all of it libm calls. This kernel
//! computes each token's `head_dim/2` angles once and rotates that pair in every head.
//!
//! Angles are computed as llama.cpp computes them, in f32: `theta_scale =
//! powf(base, -2/head_dim)`, `theta_0 = pos`, `theta_{i+1} = theta_i * theta_scale`, then
//! `cosf`/`sinf`. Its generations depend on these exact values.

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
         %two = arith.constant -2.0 : f32\n    %nd = arith.constant {}.0 : f32\n    %fb = arith.constant {} : f32\n    \
         %ex = arith.divf %two, %nd : f32\n    %ts = math.powf %fb, %ex : f32\n    \
         scf.for %t = %start to %end step %c1 {{\n      \
         %p = memref.load %b1[%t] : {pm}\n      %pf = arith.sitofp %p : {pt} to f32\n      \
         %thl = scf.for %i = %c0 to %chalf step %c1 iter_args(%th = %pf) -> (f32) {{\n        \
         %cs = math.cos %th : f32\n        %sn = math.sin %th : f32\n        \
         %ja = affine.apply {first}(%i)\n        %jb = affine.apply {second}(%i)\n        \
         scf.for %h = %c0 to %ch step %c1 {{\n          \
         %a = memref.load %b0[%t, %h, %ja] : {xm}\n          %b = memref.load %b0[%t, %h, %jb] : {xm}\n          \
         %ac = arith.mulf %a, %cs : f32\n          %bs = arith.mulf %b, %sn : f32\n          %ya = arith.subf %ac, %bs : f32\n          \
         %as = arith.mulf %a, %sn : f32\n          %bc = arith.mulf %b, %cs : f32\n          %yb = arith.addf %as, %bc : f32\n          \
         memref.store %ya, %b2[%t, %h, %ja] : {om}\n          memref.store %yb, %b2[%t, %h, %jb] : {om}\n        \
         }}\n        %thn = arith.mulf %th, %ts : f32\n        scf.yield %thn : f32\n      }}\n    }}\n    return\n  }}\n",
        d,
        crate::lower::float_lit(base)
    );
    s
}
