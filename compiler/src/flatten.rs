//! Dense layers on batches of rows: `x[B, T, K] @ w[K, N]` (with an elementwise epilogue)
//! computed as the same kernel over 2-D views of its `B * T` rows.
//!
//! A transformer applies its projections to `[batch, tokens, hidden]`. As a rank-3
//! contraction that would take the generic loops, split over the batch dim only (one
//! workgroup for a single text); over the collapsed rows it is the 2-D matmul the
//! micro-kernel (CPU) or the tensor-core and SIMT generators (GPU) are written for, its
//! workgroups split rows or weight columns, and the weight streams once, not once per batch.
//! The kernel keeps the graph's 3-D bindings: a wrapper function views them as 2-D
//! (`memref.collapse_shape` of a contiguous buffer, no copy) and calls the flat kernel.

use crate::lower::{BindingType, FusedOp, KernelSpec, ValueRef};
use max_dialects::Op;
use std::fmt::Write;

/// The 2-D form of `spec`, if it is a matmul of a batch of rows `x[B, T, K] @ w` whose other
/// operands have at most one dim or the result's full `[B, T, N]` shape, followed (on the
/// CPU) only by elementwise ops. The flat kernel's name is `spec`'s with `_flat`.
pub fn flat_form(spec: &KernelSpec) -> Option<KernelSpec> {
    let (out, first) = (spec.outputs.first()?, spec.body.first()?);
    let (ValueRef::Input(x), ValueRef::Input(w)) = (*first.args.first()?, *first.args.get(1)?) else { return None };
    let rows = |b: &BindingType| b.dims.len() == 3 && b.dims[..2] == out.dims[..2];
    if !matches!(first.op, Op::MatMul) || spec.outputs.len() != 1 || out.dims.len() != 3 || !rows(&spec.inputs[x]) || spec.native.is_some() || spec.ptx.is_some() {
        return None;
    }
    // A packed weight's binding is `[N/16][K][16]`; otherwise the weight is `[K, N]`.
    if !(if first.packed_rhs { !spec.gpu } else { spec.inputs[w].dims.len() == 2 }) {
        return None;
    }
    if !spec.inputs.iter().enumerate().all(|(i, b)| i == x || i == w || b.dims.len() <= 1 || rows(b)) {
        return None;
    }
    // Ops after the matmul see 2-D values: only elementwise ones keep their meaning (an
    // axis attribute would not).
    if !spec.gpu && !spec.body[1..].iter().all(FusedOp::is_elementwise) {
        return None;
    }
    let lead = out.dims[0].zip(out.dims[1]).map(|(b, t)| b * t);
    let flat = |(i, b): (usize, &BindingType)| {
        if b.dims.len() == 3 && !(first.packed_rhs && i == w) {
            BindingType { dtype: b.dtype, dims: vec![lead, b.dims[2]] }
        } else {
            b.clone()
        }
    };
    let mut f = spec.clone();
    f.name = format!("{}_flat", spec.name);
    f.inputs = spec.inputs.iter().enumerate().map(flat).collect();
    f.outputs = spec.outputs.iter().map(|b| flat((usize::MAX, b))).collect();
    // Operands that followed the batch dim now follow the rows.
    f.columns = !spec.gpu && crate::lower::splits_columns(&f);
    Some(f)
}

/// The function of `spec` that views its 3-D bindings as 2-D and calls `flat`'s. On the CPU
/// its bindings are `noalias` like every kernel's (the flat kernel is inlined into it).
pub fn wrapper(spec: &KernelSpec, flat: &KernelSpec) -> String {
    let bindings: Vec<&BindingType> = spec.inputs.iter().chain(&spec.outputs).collect();
    let flat_bindings: Vec<&BindingType> = flat.inputs.iter().chain(&flat.outputs).collect();
    let attr = if spec.gpu { "" } else { " {llvm.noalias}" };
    let args: Vec<String> = bindings.iter().enumerate().map(|(i, b)| format!("%b{i}: {}{attr}", b.memref())).collect();
    let mut s = format!("  func.func @{}({}, %wg: index, %nwg: index) {{\n", spec.name, args.join(", "));
    let mut call = Vec::new();
    for (i, (b, f)) in bindings.iter().zip(&flat_bindings).enumerate() {
        if b.dims.len() != f.dims.len() {
            let _ = writeln!(s, "    %v{i} = memref.collapse_shape %b{i} [[0, 1], [2]] : {} into {}", b.memref(), f.memref());
            call.push(format!("%v{i}"));
        } else {
            call.push(format!("%b{i}"));
        }
    }
    let types: Vec<String> = flat_bindings.iter().map(|b| b.memref()).collect();
    let _ = writeln!(s, "    func.call @{}({}, %wg, %nwg) : ({}, index, index) -> ()\n    return\n  }}", flat.name, call.join(", "), types.join(", "));
    s
}
