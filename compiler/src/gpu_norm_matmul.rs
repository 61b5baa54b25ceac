//! `cast(rms_norm(x, w)) @ B` (with the matmul's epilogue) as one dispatch on sm_90.
//!
//! Each projection after a Llama layer's norms read the norm's bf16 rows from memory, and
//! the row kernel that stored them was a launch of its own: a decode step had two such
//! launches a layer, each one block long. Here, for 1 to [`crate::gpu_gemv::MAX_ROWS`] rows
//! (decode), the matrix-vector kernel computes A itself ([`crate::gpu_gemv::norm_kernels`]):
//! one launch. Other row counts run the two kernels as before, the row kernel into a
//! temporary, then the tensor-core matmul.
//!
//! Fusion forms the region ([`fusible`]); [`split`] recovers the two kernels' specs from
//! it.

use crate::lower::{BindingType, FusedOp, KernelSpec, ValueRef};
use max_dialects::{DType, Graph, Op};
use std::fmt::Write;

/// Whether the region of `cast(rms_norm(x, w))` (nodes `norm`, `cast`) can join the matmul
/// region `mm` (root first) that alone reads it as its A: `x[M, K]` of floats, `w[K]`, the
/// cast to B's bf16/f16, B `[K, N]` static and taken by the matrix-vector kernel with A
/// computed in shared memory, and an elementwise epilogue that reads neither x nor w.
pub fn fusible(graph: &Graph, norm: usize, cast: usize, mm: &[usize]) -> bool {
    let (n, c) = (&graph.nodes[norm], &graph.nodes[cast]);
    let Some(root) = mm.first().map(|r| &graph.nodes[*r]) else { return false };
    let (Op::RmsNorm { .. }, Op::Cast(dt), Op::MatMul) = (&n.op, &c.op, &root.op) else { return false };
    let (x, w, b, out) = (graph.ty(n.inputs[0]), graph.ty(n.inputs[1]), graph.ty(root.inputs[1]), graph.ty(root.outputs[0]));
    let h = graph.ty(c.outputs[0]);
    let (Some(k), Some(cols)) = (x.dims.get(1).and_then(|d| d.as_const()), b.dims.get(1).and_then(|d| d.as_const())) else { return false };
    let epilogue_ok = mm[1..].iter().map(|e| &graph.nodes[*e]).all(|e| {
        crate::lower::ScalarEmitter::supports(&e.op) && !e.inputs.contains(&n.inputs[0]) && !e.inputs.contains(&n.inputs[1]) && e.inputs.iter().all(|v| graph.ty(*v).rank() <= 2)
    });
    c.inputs[0] == n.outputs[0]
        && root.inputs[0] == c.outputs[0]
        && x.rank() == 2
        && x.dtype.is_float()
        && w.rank() == 1
        && w.dtype.is_float()
        && matches!(dt, DType::BF16 | DType::F16)
        && b.rank() == 2
        && b.dims[0].as_const() == Some(k)
        && ![n.inputs[0], n.inputs[1]].contains(&root.inputs[1])
        && out.rank() == 2
        && matches!(out.dtype, DType::BF16 | DType::F16 | DType::F32)
        && epilogue_ok
        && crate::gpu_gemv::applies(&BindingType::of(h), &BindingType::of(b))
        && crate::gpu_gemv::norm_fits(k, cols)
}

/// The row kernel's and the matmul's specs of a merged region's spec: its bindings are x, w,
/// B, the epilogue's operands, the result; the matmul's are A (the row kernel's result), B,
/// the epilogue's operands, the result.
pub fn split(spec: &KernelSpec) -> Option<(KernelSpec, KernelSpec)> {
    let [norm, cast, mm, epilogue @ ..] = &spec.body[..] else { return None };
    let (Op::RmsNorm { .. }, Op::Cast(dt), Op::MatMul) = (&norm.op, &cast.op, &mm.op) else { return None };
    let [x, w, ..] = &spec.inputs[..] else { return None };
    let h_ref = *cast.results.first()?;
    let reads_norm = |f: &FusedOp| f.args.iter().any(|a| matches!(a, ValueRef::Input(0 | 1)) || *a == h_ref || norm.results.contains(a));
    if norm.args != [ValueRef::Input(0), ValueRef::Input(1)] || cast.args != norm.results || mm.args != [h_ref, ValueRef::Input(2)] || epilogue.iter().any(reads_norm) || spec.outputs.len() != 1 {
        return None;
    }
    let h = BindingType { dtype: *dt, dims: x.dims.clone() };
    let rows = KernelSpec {
        name: format!("{}_norm", spec.name),
        inputs: vec![x.clone(), w.clone()],
        outputs: vec![h.clone()],
        body: vec![norm.clone(), FusedOp { results: vec![ValueRef::Output(0)], ..cast.clone() }],
        partition: None,
        ..spec.clone()
    };
    // The matmul's operands: A is input 0, and the merged spec's inputs from B on move down
    // by one.
    let remap = |r: &ValueRef| match r {
        ValueRef::Input(i) => ValueRef::Input(i - 1),
        other => *other,
    };
    let mut body = vec![FusedOp { args: vec![ValueRef::Input(0), ValueRef::Input(1)], ..mm.clone() }];
    body.extend(epilogue.iter().map(|f| FusedOp { args: f.args.iter().map(remap).collect(), ..f.clone() }));
    let matmul = KernelSpec {
        name: format!("{}_mm", spec.name),
        inputs: std::iter::once(h).chain(spec.inputs[2..].iter().cloned()).collect(),
        body,
        partition: None,
        ..spec.clone()
    };
    Some((rows, matmul))
}

/// Whether `spec` is a merged norm and matmul the GPU kernels compute: a row kernel, a
/// warpgroup-MMA matmul and the matrix-vector kernel computing A all take their parts.
pub fn is_gpu_norm_matmul(spec: &KernelSpec) -> bool {
    let Some((rows, mm)) = split(spec).filter(|_| spec.gpu && spec.wgmma && spec.native.is_none() && spec.ptx.is_none()) else { return false };
    let (a, b) = (&mm.inputs[0], &mm.inputs[1]);
    crate::gpu_rows::is_row_kernel(&rows)
        && crate::gpu_wgmma::is_wgmma_matmul(&mm)
        && a.dtype != DType::F32
        && crate::gpu_gemv::applies(a, b)
        && a.dims[1].zip(b.dims[1]).is_some_and(|(k, n)| crate::gpu_gemv::norm_fits(k, n))
}

/// The host function and kernels of a merged norm and matmul (which
/// [`is_gpu_norm_matmul`] accepted): the matrix-vector kernels computing A for 1 to 4 rows,
/// else the row kernel into a temporary and the matmul, each as its own function.
pub fn kernel_func(spec: &KernelSpec) -> String {
    let (rows, mm) = split(spec).expect("is_gpu_norm_matmul checked the body");
    let Op::RmsNorm { epsilon } = spec.body[0].op else { unreachable!("split checked the op") };
    let name = &spec.name;
    let (x, w) = (&spec.inputs[0], &spec.inputs[1]);
    let (tx, tw) = (x.memref(), w.memref());
    let (h, b, c) = (&mm.inputs[0], &mm.inputs[1], &mm.outputs[0]);
    let (th, tb, tc) = (h.memref(), b.memref(), c.memref());
    // The host function's parameters after x and w are named as the matmul's host function
    // names them (B is %b1), so the epilogue's launch arguments read the same.
    let mm_bindings: Vec<&BindingType> = mm.inputs.iter().chain(&mm.outputs).collect();
    let params: Vec<String> = mm_bindings.iter().enumerate().skip(1).map(|(i, t)| format!("%b{i}: {}", t.memref())).collect();
    let oc = crate::gpu_epilogue::output_binding(&mm);
    let extra_args: String = crate::gpu_epilogue::launch_args(&mm).iter().map(|a| format!(", {a}")).collect();
    let mm_args: Vec<String> = (1..mm_bindings.len()).map(|i| format!("%b{i}")).collect();
    let mm_types: Vec<String> = mm_bindings.iter().skip(1).map(|t| t.memref()).collect();
    let otherwise = format!(
        "      %h = memref.alloc(%m) : {th}
      func.call @{name}_norm(%x, %w, %h, %wg, %nwg) : ({tx}, {tw}, {th}, index, index) -> ()
      func.call @{name}_mm(%h, {}, %wg, %nwg) : ({th}, {}, index, index) -> ()
      memref.dealloc %h : {th}
",
        mm_args.join(", "),
        mm_types.join(", ")
    );
    let mut s = String::new();
    let _ = writeln!(
        s,
        "  func.func @{name}(%x: {tx}, %w: {tw}, {}, %wg: index, %nwg: index) {{
    %c0 = arith.constant 0 : index
    %c1 = arith.constant 1 : index
    %m = memref.dim %x, %c0 : {tx}
    %n = memref.dim %b1, %c1 : {tb}",
        params.join(", ")
    );
    let operands = format!("%x : {tx}, %w : {tw}, %b1 : {tb}");
    s.push_str(&crate::gpu_gemv::host_with(&format!("{name}_llm"), h, b, &operands, &format!("{extra_args}, %b{oc} : {tc}"), &otherwise));
    let _ = writeln!(s, "    return\n  }}");
    s.push_str(&crate::gpu_rows::kernel_func(&rows));
    s.push_str(&crate::gpu_wgmma::kernel_func(&mm));
    let _ = writeln!(s, "  gpu.module @{name}_llm {{");
    s.push_str(&crate::gpu_gemv::norm_kernels(&mm, x, w, epsilon, &tb, &tc, h.dtype));
    let _ = writeln!(s, "  }}");
    s
}
