//! RoPE on the GPU for the LLM layout `x[N, heads, head_dim]`, `positions[N]`: a thread per
//! pair of the token's `heads * head_dim / 2`, blocks of 128 pairs over (token, pair block).
//!
//! The angles are the CPU kernel's ([`crate::rope`], llama.cpp's): `theta_0 = pos`,
//! `theta_{i+1} = theta_i * theta_scale` in f32, with `theta_scale = powf(base,
//! -2/head_dim)` computed here at compile time, so each thread repeats the same `i`
//! multiplications the CPU loop makes.

use crate::gpu_text::KernelText as Gen;
use crate::lower::KernelSpec;
use max_dialects::Op;
use std::fmt::Write;

/// Threads per block.
const THREADS: usize = 128;

/// Whether `spec` is a RoPE kernel for the GPU.
pub fn is_gpu_rope_kernel(spec: &KernelSpec) -> bool {
    spec.gpu && crate::rope::is_rope_kernel(spec)
}

/// The host function and `gpu.module` of a RoPE kernel. Bindings: x, positions, out.
pub fn kernel_func(spec: &KernelSpec) -> String {
    let Op::Rope { base, interleaved } = spec.body[0].op else { unreachable!("is_gpu_rope_kernel checked the op") };
    let (x, pos, out) = (&spec.inputs[0], &spec.inputs[1], &spec.outputs[0]);
    let (xm, pm, om) = (x.memref(), pos.memref(), out.memref());
    let heads = x.dims[1].expect("verifier: static heads");
    let d = x.dims[2].expect("verifier: static head dim");
    let half = d / 2;
    let pairs = heads * half;
    let theta_scale = theta_scale(base, d);
    let name = &spec.name;
    let mut s = format!("  func.func @{name}(%b0: {xm}, %b1: {pm}, %b2: {om}, %wg: index, %nwg: index) {{\n");
    let _ = write!(
        s,
        "    %c0 = arith.constant 0 : index\n    %c1 = arith.constant 1 : index\n    %cthreads = arith.constant {THREADS} : index\n    \
         %n = memref.dim %b0, %c0 : {xm}\n    %some = arith.cmpi ugt, %n, %c0 : index\n    scf.if %some {{\n      \
         %cpairs = arith.constant {pairs} : index\n      %gy = arith.ceildivui %cpairs, %cthreads : index\n      \
         gpu.launch_func @{name}_llm::@rope blocks in (%n, %gy, %c1) threads in (%cthreads, %c1, %c1) args(%b0 : {xm}, %b1 : {pm}, %b2 : {om})\n    \
         }}\n    return\n  }}\n"
    );
    let mut g = Gen::new("p");
    let i = 6;
    g.line(2, format!("gpu.module @{name}_llm {{"));
    g.line(4, format!("gpu.func @rope(%X: {xm}, %P: {pm}, %Y: {om}) kernel attributes {{known_block_size = array<i32: {THREADS}, 1, 1>}} {{"));
    g.line(i, "%c0 = arith.constant 0 : index");
    g.line(i, "%c1 = arith.constant 1 : index");
    g.line(i, "%c2 = arith.constant 2 : index");
    g.line(i, format!("%cthreads = arith.constant {THREADS} : index"));
    g.line(i, format!("%chalf = arith.constant {half} : index"));
    g.line(i, format!("%cpairs = arith.constant {} : index", heads * half));
    g.line(i, "%t = gpu.block_id x");
    g.line(i, "%by = gpu.block_id y");
    g.line(i, "%tid = gpu.thread_id x");
    g.line(i, "%e0 = arith.muli %by, %cthreads : index");
    g.line(i, "%e1 = arith.addi %e0, %tid : index");
    let p = g.let_(i, format!("memref.load %P[%t] : {pm}"));
    let pf = g.let_(i, format!("arith.sitofp {p} : {} to f32", pos.dtype.mlir_name()));
    // Block (token, y) takes pairs y * THREADS ..: a decode step's one token spreads over
    // heads * d / 2 / THREADS blocks, a pair per thread.
    g.line(i, "%in = arith.cmpi ult, %e1, %cpairs : index");
    g.line(i, "scf.if %in {");
    let j = i + 2;
    g.line(j, "%h = arith.divui %e1, %chalf : index");
    g.line(j, "%pi = arith.remui %e1, %chalf : index");
    let (cs, sn) = angle(&mut g, j, "%pi", &pf, theta_scale);
    let (ja, jb) = pair(&mut g, j, "%pi", half, interleaved);
    let a = g.let_(j, format!("memref.load %X[%t, %h, {ja}] : {xm}"));
    let b = g.let_(j, format!("memref.load %X[%t, %h, {jb}] : {xm}"));
    let (ya, yb) = rotate(&mut g, j, (&a, &b), (&cs, &sn));
    g.line(j, format!("memref.store {ya}, %Y[%t, %h, {ja}] : {om}"));
    g.line(j, format!("memref.store {yb}, %Y[%t, %h, {jb}] : {om}"));
    g.line(i, "}");
    g.line(i, "gpu.return");
    g.line(4, "}");
    g.line(2, "}");
    s.push_str(&g.s);
    s
}

/// `powf(base, -2 / d)` as the CPU kernel computes it (in f32), for exact bits.
pub(crate) fn theta_scale(base: f64, d: i64) -> f32 {
    (base as f32).powf(-2.0f32 / d as f32)
}

/// Kernel code: the cosine and sine of pair `pi`'s angle at position `pf` (f32):
/// `theta_0 = pos`, `theta_{i+1} = theta_i * theta_scale`, the CPU loop's multiplications.
pub(crate) fn angle(g: &mut Gen, i: usize, pi: &str, pf: &str, theta_scale: f32) -> (String, String) {
    let ts = g.let_(i, format!("arith.constant 0x{:08X} : f32", theta_scale.to_bits()));
    let c0 = g.let_(i, "arith.constant 0 : index");
    let c1 = g.let_(i, "arith.constant 1 : index");
    let th = g.fresh();
    g.line(i, format!("{th} = scf.for %k = {c0} to {pi} step {c1} iter_args(%th0 = {pf}) -> (f32) {{"));
    g.line(i + 2, format!("%thn = arith.mulf %th0, {ts} : f32"));
    g.line(i + 2, "scf.yield %thn : f32");
    g.line(i, "}");
    (g.let_(i, format!("math.cos {th} : f32")), g.let_(i, format!("math.sin {th} : f32")))
}

/// Kernel code: the head-dim indices of pair `pi` of a head of `2 * half` values:
/// `(2 pi, 2 pi + 1)` interleaved, `(pi, pi + half)` otherwise.
pub(crate) fn pair(g: &mut Gen, i: usize, pi: &str, half: i64, interleaved: bool) -> (String, String) {
    if interleaved {
        let c2 = g.let_(i, "arith.constant 2 : index");
        let c1 = g.let_(i, "arith.constant 1 : index");
        let a = g.let_(i, format!("arith.muli {pi}, {c2} : index"));
        let b = g.let_(i, format!("arith.addi {a}, {c1} : index"));
        (a, b)
    } else {
        let ch = g.let_(i, format!("arith.constant {half} : index"));
        (pi.to_string(), g.let_(i, format!("arith.addi {pi}, {ch} : index")))
    }
}

/// Kernel code: `(a cos - b sin, a sin + b cos)`.
pub(crate) fn rotate(g: &mut Gen, i: usize, (a, b): (&str, &str), (cs, sn): (&str, &str)) -> (String, String) {
    let ac = g.let_(i, format!("arith.mulf {a}, {cs} : f32"));
    let bs = g.let_(i, format!("arith.mulf {b}, {sn} : f32"));
    let ya = g.let_(i, format!("arith.subf {ac}, {bs} : f32"));
    let as_ = g.let_(i, format!("arith.mulf {a}, {sn} : f32"));
    let bc = g.let_(i, format!("arith.mulf {b}, {cs} : f32"));
    let yb = g.let_(i, format!("arith.addf {as_}, {bc} : f32"));
    (ya, yb)
}
