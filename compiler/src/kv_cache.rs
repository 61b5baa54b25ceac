//! KV-cache kernels, emitted directly at the memref level: the in-place cache write and
//! attention over the cache.
//!
//! Both index the cache per batch row (`slot[b]`, `pos[b]`) and loop to a per-query bound
//! (`pos[b] + s`), which linalg on tensors cannot express; and the write must update the
//! caller's cache buffer in place. So these kernels skip the tensor pipeline: they are
//! `scf`/`vector` loops over the binding memrefs, with the same kernel ABI as every other
//! kernel (bindings, then workgroup id and count).
//!
//! Cache layout: `[layers, max_batch, max_len, kv_heads, head_dim]`.

use crate::lower::{BindingType, KernelSpec};
use max_dialects::{DType, Op};
use std::fmt::Write;

/// Lanes of the vectors attention works in (head dims are multiples of it).
const VL: i64 = 8;

/// Attention's query heads, key/value heads and head dim, from `q` (`[.., heads, head dim]`)
/// and the cache (`[layers, batch, positions, kv heads, head dim]`).
pub(crate) fn attention_heads(q: &BindingType, kc: &BindingType) -> (i64, i64, i64) {
    let r = q.dims.len();
    let hq = q.dims[r - 2].expect("verifier: static heads");
    let hkv = kc.dims[3].expect("verifier: static kv heads");
    let hd = q.dims[r - 1].expect("verifier: static head dim");
    (hq, hkv, hd)
}

/// Whether `spec` is a KV-cache kernel this module generates.
pub fn is_cache_kernel(spec: &KernelSpec) -> bool {
    spec.native.is_none() && spec.body.len() == 1 && matches!(spec.body[0].op, Op::CacheWrite { .. } | Op::CachedAttention { .. })
}

/// Whether the kernel writes a buffer it also reads through another binding (its bindings
/// must not be marked `noalias`).
pub fn writes_in_place(spec: &KernelSpec) -> bool {
    spec.body.iter().any(|f| matches!(f.op, Op::CacheWrite { .. }))
}

/// The `func.func` of a KV-cache kernel.
pub fn kernel_func(spec: &KernelSpec) -> String {
    let bindings: Vec<&BindingType> = spec.inputs.iter().chain(&spec.outputs).collect();
    let args: Vec<String> = bindings.iter().enumerate().map(|(i, b)| format!("%b{i}: {}", b.memref())).collect();
    let mut s = format!("  func.func @{}({}, %wg: index, %nwg: index) {{\n", spec.name, args.join(", "));
    s.push_str("    %c0 = arith.constant 0 : index\n    %c1 = arith.constant 1 : index\n    %c2 = arith.constant 2 : index\n");
    match &spec.body[0].op {
        Op::CacheWrite { layer } => cache_write(&mut s, &bindings, *layer),
        Op::CachedAttention { layer, scale } => cached_attention(&mut s, &bindings, *layer, *scale),
        _ => unreachable!("is_cache_kernel checked the op"),
    }
    s.push_str("    return\n  }\n");
    s
}

/// Scalar conversion between float types (`f32` compute type).
fn convert(v: &str, from: DType, to: DType, vec: Option<i64>) -> Option<String> {
    let ty = |d: DType| match vec {
        Some(n) => format!("vector<{n}x{}>", d.mlir_name()),
        None => d.mlir_name().to_string(),
    };
    if from == to {
        return None;
    }
    let op = if from.size_bytes() < to.size_bytes() { "arith.extf" } else { "arith.truncf" };
    Some(format!("{op} {v} : {} to {}", ty(from), ty(to)))
}

/// `v` (a vector of [`VL`] lanes) converted from `from` to `to` as `name`, or `v` itself
/// when the types agree. `pad` indents the emitted line.
fn converted(s: &mut String, v: &str, name: &str, from: DType, to: DType, pad: &str) -> String {
    match convert(v, from, to, Some(VL)) {
        Some(c) => {
            let _ = writeln!(s, "{pad}{name} = {c}");
            name.to_string()
        }
        None => v.to_string(),
    }
}

/// Row `b`'s slot and start position as indices, and whether they are in range for a
/// write or read of `len` positions: `0 <= slot < max_batch`, `0 <= pos`,
/// `pos + len <= max_len`. Out-of-range rows are skipped (the host checks them first and
/// reports the error; this keeps a bad call from touching memory outside the cache).
#[allow(clippy::too_many_arguments)] // the SSA names of one generated check
fn row_bounds(s: &mut String, cache: &BindingType, cache_ssa: &str, pos: &str, slot: &str, b: &str, len: &str, p: &str) -> (String, String, String) {
    let cm = cache.memref();
    let _ = write!(
        s,
        "    {p}bmax = memref.dim {cache_ssa}, %c1 : {cm}\n    {p}tmax = memref.dim {cache_ssa}, %c2 : {cm}\n    \
         {p}p32 = memref.load {pos}[{b}] : memref<?xi32>\n    {p}s32 = memref.load {slot}[{b}] : memref<?xi32>\n    \
         {p}pos = arith.index_cast {p}p32 : i32 to index\n    {p}slot = arith.index_cast {p}s32 : i32 to index\n    \
         {p}end = arith.addi {p}pos, {len} : index\n    \
         {p}ok0 = arith.cmpi sge, {p}slot, %c0 : index\n    {p}ok1 = arith.cmpi slt, {p}slot, {p}bmax : index\n    \
         {p}ok2 = arith.cmpi sge, {p}pos, %c0 : index\n    {p}ok3 = arith.cmpi sle, {p}end, {p}tmax : index\n    \
         {p}ok01 = arith.andi {p}ok0, {p}ok1 : i1\n    {p}ok23 = arith.andi {p}ok2, {p}ok3 : i1\n    \
         {p}ok = arith.andi {p}ok01, {p}ok23 : i1\n"
    );
    (format!("{p}pos"), format!("{p}slot"), format!("{p}ok"))
}

/// `cache[layer, slot[b], pos[b] + s, h, d] = new[b, s, h, d]`. Bindings: cache (read
/// only for its shape), new, pos, slot, result (the same buffer as cache).
fn cache_write(s: &mut String, b: &[&BindingType], layer: i64) {
    let (new, out) = (b[1], b[4]);
    let (nm, om) = (new.memref(), out.memref());
    let r = new.dims.len();
    let heads = new.dims[r - 2].expect("verifier: static heads");
    let hd = new.dims[r - 1].expect("verifier: static head dim");
    let _ = write!(
        s,
        "    %layer = arith.constant {layer} : index\n    \
         %nh = arith.constant {heads} : index\n    %nd = arith.constant {hd} : index\n"
    );
    let ok_shape = rows_and_seq(s, r, "%b1", &nm, "%b2");
    // The result binding is the cache: bounds come from it.
    let _ = write!(s, "    scf.if {ok_shape} {{\n    scf.for %bi = %c0 to %nb step %c1 {{\n");
    let (pos, slot, ok) = row_bounds(s, out, "%b4", "%b2", "%b3", "%bi", "%ns", "%r");
    let conv = convert("%x", new.dtype, out.dtype, None);
    let _ = writeln!(s, "    scf.if {ok} {{\n    scf.for %si = %c0 to %ns step %c1 {{\n    %t = arith.addi {pos}, %si : index");
    let tok = token_index(s, r);
    let _ = write!(
        s,
        "    scf.for %hi = %c0 to %nh step %c1 {{\n    scf.for %di = %c0 to %nd step %c1 {{\n    \
         %x = memref.load %b1[{tok}, %hi, %di] : {nm}\n"
    );
    let y = match conv {
        Some(c) => {
            let _ = writeln!(s, "    %y = {c}");
            "%y"
        }
        None => "%x",
    };
    let _ = write!(s, "    memref.store {y}, %b4[%layer, {slot}, %t, %hi, %di] : {om}\n    }}\n    }}\n    }}\n    }}\n    }}\n    }}\n");
}

/// Causal attention over the cache, one query `(b, h, s)` at a time, in three passes over
/// its keys `0 ..= pos[b] + s`: scaled scores `(q . k[t]) * scale` into a scratch row
/// (tracking their max), then `exp(score - max)` eight at a time with their sum, then the
/// sum of values weighted by the normalized probabilities (head_dim/8 vector accumulators). Queries are dealt to workgroups round-
/// robin, which evens out the causal triangle's uneven costs.
/// Bindings: q, k_cache, v_cache, pos, slot, out.
fn cached_attention(s: &mut String, b: &[&BindingType], layer: i64, scale: Option<f64>) {
    let (q, kc, vc, out) = (b[0], b[1], b[2], b[5]);
    let (qm, km, vm, om) = (q.memref(), kc.memref(), vc.memref(), out.memref());
    let r = q.dims.len();
    let (hq, hkv, hd) = attention_heads(q, kc);
    let group = hq / hkv;
    let nv = hd / VL;
    let scale = scale.unwrap_or(1.0 / (hd as f64).sqrt());
    let vf = format!("vector<{VL}xf32>");
    let vt = |d: DType| format!("vector<{VL}x{}>", d.mlir_name());
    // With an f16 cache, the query and the probabilities are rounded to f16 as well, as
    // llama.cpp's CPU backend does (its K.Q and P.V are f16 matmuls).
    let f16_cache = kc.dtype == DType::F16;
    let ok_shape = rows_and_seq(s, r, "%b0", &qm, "%b3");
    let _ = writeln!(s, "    scf.if {ok_shape} {{");
    // Scratch, allocated once per call (not per query: stack allocations in a loop would
    // pile up): a row of scores as long as the cache (rounded up to whole vectors), and the
    // eight partial value sums.
    let _ = write!(
        s,
        "    %layer = arith.constant {layer} : index\n    \
         %nh = arith.constant {hq} : index\n    %grp = arith.constant {group} : index\n    \
         %hs = arith.muli %nh, %ns : index\n    %total = arith.muli %nb, %hs : index\n    \
         %scale = arith.constant {} : f32\n    %ninf = arith.constant 0xFF800000 : f32\n    \
         %zero = arith.constant 0.0 : f32\n    %vzero = arith.constant dense<0.0> : {vf}\n    \
         %vninf = arith.constant dense<0xFF800000> : {vf}\n    %cvl = arith.constant {VL} : index\n    {}\
         %tcap = memref.dim %b1, %c2 : {km}\n    \
         %tcap8 = affine.apply affine_map<(t) -> (((t + {VL} - 1) floordiv {VL}) * {VL})>(%tcap)\n    \
         %scores = memref.alloca(%tcap8) : memref<?xf32>\n    \
         %part = memref.alloca() : memref<{VL}x{hd}xf32>\n    \
         scf.for %item = %wg to %total step %nwg {{\n    \
         %bi = arith.divui %item, %hs : index\n    %rem = arith.remui %item, %hs : index\n    \
         %hi = arith.divui %rem, %ns : index\n    %si = arith.remui %rem, %ns : index\n    \
         %kvh = arith.divui %hi, %grp : index\n    %len0 = arith.addi %si, %c1 : index\n    %row = {}\n",
        crate::lower::float_lit(scale),
        (0..VL).map(|l| format!("%c{l}p = arith.constant {l} : index\n    ")).collect::<String>(),
        token_row(r)
    );
    let (pos, slot, ok) = row_bounds(s, kc, "%b1", "%b3", "%b4", "%bi", "%len0", "%r");
    let _ = writeln!(s, "    scf.if {ok} {{\n    %len = arith.addi {pos}, %len0 : index");
    // The query, scaled, as f32 vectors.
    for j in 0..nv {
        let _ = writeln!(s, "    %qo{j} = arith.constant {} : index", j * VL);
        let _ = writeln!(s, "    %qr{j} = vector.load %b0[{}, %hi, %qo{j}] : {qm}, {}", token_ref(r), vt(q.dtype));
        let src = converted(s, &format!("%qr{j}"), &format!("%qx{j}"), q.dtype, DType::F32, "    ");
        if f16_cache {
            let _ = writeln!(s, "    %qh{j} = arith.truncf {src} : {vf} to vector<{VL}xf16>\n    %q{j} = arith.extf %qh{j} : vector<{VL}xf16> to {vf}");
        } else {
            let _ = writeln!(s, "    %q{j} = arith.addf {src}, %vzero : {vf}");
        }
    }
    // Pass 1: scores and their max.
    let _ = writeln!(s, "    %mx = scf.for %t = %c0 to %len step %c1 iter_args(%m = %ninf) -> (f32) {{");
    for j in 0..nv {
        let _ = writeln!(s, "      %kr{j} = vector.load %b1[%layer, {slot}, %t, %kvh, %qo{j}] : {km}, {}", vt(kc.dtype));
        let k = converted(s, &format!("%kr{j}"), &format!("%kx{j}"), kc.dtype, DType::F32, "      ");
        if j == 0 {
            let _ = writeln!(s, "      %dot0 = arith.mulf %q0, {k} : {vf}");
        } else {
            let _ = writeln!(s, "      %dot{j} = vector.fma %q{j}, {k}, %dot{} : {vf}", j - 1);
        }
    }
    let h = crate::math::hsum8(s, &format!("%dot{}", nv - 1), "hq");
    let _ = write!(
        s,
        "      %sc = arith.mulf {h}, %scale : f32\n      \
         memref.store %sc, %scores[%t] : memref<?xf32>\n      %mn = arith.maximumf %m, %sc : f32\n      \
         scf.yield %mn : f32\n    }}\n"
    );
    // Pass 2: probabilities (unnormalized) and their sum, eight at a time: each group's sum
    // (in the fixed order) is added in f64. The tail of the last group is padded with -inf,
    // whose exp is 0.
    let _ = write!(
        s,
        "    %len8 = affine.apply affine_map<(t) -> (((t + {VL} - 1) floordiv {VL}) * {VL})>(%len)\n    \
         scf.for %t = %len to %len8 step %c1 {{\n      memref.store %ninf, %scores[%t] : memref<?xf32>\n    }}\n    \
         %mxv = vector.broadcast %mx : f32 to {vf}\n    %zd = arith.constant 0.0 : f64\n    \
         %sumd = scf.for %t = %c0 to %len8 step %cvl iter_args(%acc = %zd) -> (f64) {{\n      \
         %sv = vector.load %scores[%t] : memref<?xf32>, {vf}\n      %sd = arith.subf %sv, %mxv : {vf}\n"
    );
    let pe = inline_exp_ty(s, "%sd", "ev", &vf);
    let _ = writeln!(s, "      vector.store {pe}, %scores[%t] : memref<?xf32>, {vf}");
    let g = crate::math::hsum8(s, &pe, "hg");
    let _ = write!(
        s,
        "      %gd = arith.extf {g} : f32 to f64\n      %accn = arith.addf %acc, %gd : f64\n      scf.yield %accn : f64\n    }}\n    \
         %oned = arith.constant 1.0 : f64\n    %invd = arith.divf %oned, %sumd : f64\n    %inv = arith.truncf %invd : f64 to f32\n"
    );
    // Pass 3: the weighted sum of values. Key t accumulates into partial sum t mod 8 (a
    // scratch [8][head_dim]); the eight partials are summed in the fixed order at the end.
    let round = if f16_cache { "\n      %ph = arith.truncf %pn : f32 to f16\n      %p = arith.extf %ph : f16 to f32" } else { "\n      %p = arith.addf %pn, %zero : f32" };
    let _ = writeln!(s, "    scf.for %l = %c0 to %cvl step %c1 {{");
    for j in 0..nv {
        let _ = writeln!(s, "      vector.store %vzero, %part[%l, %qo{j}] : memref<{VL}x{hd}xf32>, {vf}");
    }
    let _ = writeln!(
        s,
        "    }}\n    %c7 = arith.constant 7 : index\n    scf.for %t = %c0 to %len step %c1 {{\n      \
         %lt = arith.andi %t, %c7 : index\n      \
         %pe = memref.load %scores[%t] : memref<?xf32>\n      %pn = arith.mulf %pe, %inv : f32{round}\n      \
         %pv = vector.broadcast %p : f32 to {vf}"
    );
    for j in 0..nv {
        let _ = writeln!(s, "      %vr{j} = vector.load %b2[%layer, {slot}, %t, %kvh, %qo{j}] : {vm}, {}", vt(vc.dtype));
        let v = converted(s, &format!("%vr{j}"), &format!("%vx{j}"), vc.dtype, DType::F32, "      ");
        let _ = writeln!(
            s,
            "      %ao{j} = vector.load %part[%lt, %qo{j}] : memref<{VL}x{hd}xf32>, {vf}\n      \
             %an{j} = vector.fma %pv, {v}, %ao{j} : {vf}\n      vector.store %an{j}, %part[%lt, %qo{j}] : memref<{VL}x{hd}xf32>, {vf}"
        );
    }
    s.push_str("    }\n");
    // ((p4+p0)+(p6+p2)) + ((p5+p1)+(p7+p3)), per head-dim vector.
    for j in 0..nv {
        for l in 0..VL {
            let _ = writeln!(s, "    %pl{j}_{l} = vector.load %part[%c{l}p, %qo{j}] : memref<{VL}x{hd}xf32>, {vf}");
        }
        let _ = write!(
            s,
            "    %pa{j} = arith.addf %pl{j}_4, %pl{j}_0 : {vf}\n    %pb{j} = arith.addf %pl{j}_6, %pl{j}_2 : {vf}\n    \
             %pc{j} = arith.addf %pl{j}_5, %pl{j}_1 : {vf}\n    %pd{j} = arith.addf %pl{j}_7, %pl{j}_3 : {vf}\n    \
             %pab{j} = arith.addf %pa{j}, %pb{j} : {vf}\n    %pcd{j} = arith.addf %pc{j}, %pd{j} : {vf}\n    \
             %res{j} = arith.addf %pab{j}, %pcd{j} : {vf}\n"
        );
    }
    for j in 0..nv {
        let o = converted(s, &format!("%res{j}"), &format!("%oc{j}"), DType::F32, out.dtype, "    ");
        let _ = writeln!(s, "    vector.store {o}, %b5[{}, %hi, %qo{j}] : {om}, {}", token_ref(r), vt(out.dtype));
    }
    s.push_str("    }\n    }\n    }\n");
}

/// Defines `%nb` (batch rows, from the positions binding) and `%ns` (tokens per row) for a
/// token tensor of rank 4 (`[B, S, H, D]`) or 3 (`[B * S, H, D]`, where `S = N / B`).
/// Returns an `i1` that is false when a flattened tensor's rows do not divide evenly.
fn rows_and_seq(s: &mut String, rank: usize, tokens: &str, ty: &str, pos: &str) -> String {
    let _ = writeln!(s, "    %nb = memref.dim {pos}, %c0 : memref<?xi32>");
    if rank == 4 {
        let _ = writeln!(s, "    %ns = memref.dim {tokens}, %c1 : {ty}\n    %shape_ok = arith.constant true");
    } else {
        let _ = write!(
            s,
            "    %ntok = memref.dim {tokens}, %c0 : {ty}\n    %nb1 = arith.maxui %nb, %c1 : index\n    \
             %ns = arith.divui %ntok, %nb1 : index\n    %nbs = arith.muli %nb, %ns : index\n    \
             %shape_ok = arith.cmpi eq, %nbs, %ntok : index\n"
        );
    }
    "%shape_ok".into()
}

/// The leading indices of token `(%bi, %si)` in a token tensor of rank `rank`.
fn token_ref(rank: usize) -> &'static str {
    if rank == 4 {
        "%bi, %si"
    } else {
        "%row"
    }
}

/// The flattened row of token `(%bi, %si)`, as an op (`%row = ...`).
fn token_row(_rank: usize) -> &'static str {
    "affine.apply affine_map<(b, s)[n] -> (b * n + s)>(%bi, %si)[%ns]"
}

/// Emits `%row` (for rank 3) inside the per-token loop and returns the token's indices.
fn token_index(s: &mut String, rank: usize) -> &'static str {
    if rank == 3 {
        let _ = writeln!(s, "    %row = {}", token_row(rank));
    }
    token_ref(rank)
}

/// `exp(x)` inline for `x` of type `ty` (f32 or a vector of f32; see [`crate::math`]), its
/// values named `%{prefix}N`.
fn inline_exp_ty(s: &mut String, x: &str, prefix: &str, ty: &str) -> String {
    let mut k = 0;
    crate::math::exp_f32(
        &mut |rhs| {
            k += 1;
            let v = format!("%{prefix}{k}");
            let _ = writeln!(s, "      {v} = {rhs}");
            v
        },
        x,
        ty,
    )
}
