//! The RoPE of q and k and the K/V cache writes before an attention, in one GPU launch.
//!
//! A Llama layer computes, between its q/k/v projection and attention: the split of the
//! merged projection (when q, k and v are one matmul), the RoPE of q, the RoPE of k, the
//! K cache write and the V cache write. Each is small (a decode step moves a few KB), so
//! as five kernels they were five launches of latency in every layer. Here one kernel takes
//! them all: a thread per pair of values of a token, over q's pairs, then k's, then v's.
//! - A q pair is rotated and stored into the q result (`f32[N, Hq, D]`).
//! - A k pair is rotated, converted and stored at `k_cache[layer, slot[b], pos[b] + s]`.
//! - A v pair is converted and stored at `v_cache[layer, slot[b], pos[b] + s]`.
//!
//! q, k and v are read where they are: column slices of the merged projection `[N, total]`
//! (the split is never materialized), or separate `[N, H, D]` values. The rotation is
//! [`crate::gpu_rope`]'s and the conversion the cache write's, so the results are the bits
//! the separate kernels stored.

use crate::gpu_text::KernelText as Gen;
use crate::lower::{BindingType, KernelSpec, ValueRef};
use max_dialects::{Graph, Op, ValueId};
use std::collections::HashMap;
use std::fmt::Write;

/// Threads per block; blocks cover (token, 128 pairs).
const THREADS: usize = 128;

/// The nodes one kernel computes for an attention ([`group`]), in graph order, and the
/// values it stores: the rotated q, the K cache and the V cache (in that order).
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub nodes: Vec<usize>,
    pub outputs: Vec<ValueId>,
}

/// The group feeding attention node `attention`: q from a RoPE, the K cache from a write of
/// rotated keys (a RoPE with q's positions and angles, read by nothing else), the V cache
/// from a write with the same rows (`pos`, `slot`) and layer. q, k and v are either all
/// reshaped parts of one split along the columns of an `[N, total]` value, each part read by
/// its one reshape and that by its one reader, or none of them is a split's part. No other
/// node at or after the group's first may read the caches the writes update (the kernel
/// writes them where the group's last node ran).
pub fn group(graph: &Graph, uses: &HashMap<ValueId, Vec<usize>>, attention: usize) -> Option<Group> {
    let a = &graph.nodes[attention];
    let Op::CachedAttention { layer, .. } = a.op else { return None };
    let node = |v: ValueId| graph.producer(v).map(|p| (p, &graph.nodes[p]));
    let read_only_by = |v: ValueId, n: usize| uses.get(&v).is_some_and(|u| u.iter().all(|x| *x == n)) && !graph.outputs.contains(&v);
    let (rq, q_rope) = node(a.inputs[0])?;
    let (wk, k_write) = node(a.inputs[1])?;
    let (wv, v_write) = node(a.inputs[2])?;
    let writes_layer = |op: &Op| matches!(op, Op::CacheWrite { layer: l } if *l == layer);
    // Two writes (one cache read as both K and V is not this pattern).
    if !writes_layer(&k_write.op) || !writes_layer(&v_write.op) || wk == wv {
        return None;
    }
    let (rk, k_rope) = node(k_write.inputs[1])?;
    if !crate::rope::applies(graph, q_rope)
        || !crate::rope::applies(graph, k_rope)
        || q_rope.op != k_rope.op
        || q_rope.inputs[1] != k_rope.inputs[1]
        || k_write.inputs[2..] != v_write.inputs[2..]
        || !read_only_by(k_rope.outputs[0], wk)
    {
        return None;
    }
    // v as the kernel reads it: [N, H, D] with an even D, as many tokens as q.
    let (q, v) = (graph.ty(q_rope.inputs[0]), graph.ty(v_write.inputs[1]));
    if v.rank() != 3 || v.dims[0] != q.dims[0] || !v.dims[2].as_const().is_some_and(|d| d > 0 && d % 2 == 0) || !v.dtype.is_float() {
        return None;
    }
    // The sources, through a reshape each, from one split's parts; or none from a split.
    let sources = [(q_rope.inputs[0], rq), (k_rope.inputs[0], rk), (v_write.inputs[1], wv)];
    let part = |(v, reader): (ValueId, usize)| -> Option<(usize, usize)> {
        let (_, reshape) = node(v).filter(|(_, n)| matches!(n.op, Op::Reshape { .. }))?;
        let (s, split) = node(reshape.inputs[0]).filter(|(_, n)| matches!(n.op, Op::Split { .. }))?;
        let ok = read_only_by(v, reader) && read_only_by(reshape.inputs[0], graph.producer(v)?);
        ok.then(|| (s, split.outputs.iter().position(|o| *o == reshape.inputs[0]).expect("a split's result")))
    };
    let parts: Vec<Option<(usize, usize)>> = sources.iter().map(|s| part(*s)).collect();
    let mut nodes = vec![rq, rk, wk, wv];
    if parts.iter().any(Option::is_some) {
        let parts = parts.into_iter().collect::<Option<Vec<(usize, usize)>>>()?;
        let s = parts[0].0;
        let split = &graph.nodes[s];
        let x = graph.ty(split.inputs[0]);
        let mut seen: Vec<usize> = parts.iter().map(|p| p.1).collect();
        seen.sort_unstable();
        let along_columns = matches!(split.op, Op::Split { axis, .. } if x.rank() == 2 && axis.rem_euclid(2) == 1);
        if parts.iter().any(|p| p.0 != s) || seen != [0, 1, 2] || split.outputs.len() != 3 || !along_columns || x.dims[0] != q.dims[0] || x.dtype != v.dtype {
            return None;
        }
        nodes.push(s);
    }
    nodes.sort_unstable();
    // The kernel writes the caches where the group's last node ran: no one else may read
    // them between the group's first node and there.
    for (cache, write) in [(k_write.inputs[0], wk), (v_write.inputs[0], wv)] {
        if uses.get(&cache).is_some_and(|u| u.iter().any(|r| *r != write && *r >= nodes[0])) {
            return None;
        }
    }
    Some(Group { nodes, outputs: vec![q_rope.outputs[0], k_write.outputs[0], v_write.outputs[0]] })
}

/// Where the kernel reads q, k or v: an input binding viewed as `[N, columns]` and the first
/// column.
#[derive(Debug, Clone, Copy)]
struct Source {
    binding: usize,
    offset: i64,
}

/// What the kernel computes, recovered from a spec's body.
struct Roles {
    q: Source,
    k: Source,
    v: Source,
    positions: usize,
    start: usize,
    slot: usize,
    layer: i64,
    base: f64,
    interleaved: bool,
}

/// The roles of `spec`'s body: two RoPEs (q's result is output 0), the K cache write
/// (output 1) of the other's result, the V cache write (output 2), and maybe the split
/// whose parts (temporaries) they read.
fn roles(spec: &KernelSpec) -> Option<Roles> {
    let find = |f: &dyn Fn(&crate::lower::FusedOp) -> bool| spec.body.iter().find(|o| f(o));
    let k_write = find(&|o| matches!(o.op, Op::CacheWrite { .. }) && o.results == [ValueRef::Output(1)])?;
    let v_write = find(&|o| matches!(o.op, Op::CacheWrite { .. }) && o.results == [ValueRef::Output(2)])?;
    let q_rope = find(&|o| matches!(o.op, Op::Rope { .. }) && o.results == [ValueRef::Output(0)])?;
    let k_rope = find(&|o| matches!(o.op, Op::Rope { .. }) && o.results == [k_write.args[1]])?;
    let split = find(&|o| matches!(o.op, Op::Split { .. }));
    let ranks: Vec<usize> = spec.outputs.iter().map(|o| o.dims.len()).collect();
    if spec.body.len() != 4 + usize::from(split.is_some()) || ranks != [3, 5, 5] {
        return None;
    }
    let Op::CacheWrite { layer } = k_write.op else { return None };
    let Op::Rope { base, interleaved } = q_rope.op else { return None };
    // A part's width: the columns of the role reading it (q has the result's heads and head
    // dim, k and v their caches').
    let width = |r: ValueRef| -> Option<i64> {
        let b = [(q_rope.args[0], 0), (k_rope.args[0], 1), (v_write.args[1], 2)].iter().find(|(a, _)| *a == r).map(|(_, o)| &spec.outputs[*o])?;
        let n = b.dims.len();
        Some(b.dims[n - 2]? * b.dims[n - 1]?)
    };
    let source = |r: ValueRef| -> Option<Source> {
        match r {
            ValueRef::Input(binding) => Some(Source { binding, offset: 0 }),
            ValueRef::Temp(..) => {
                let s = split?;
                let ValueRef::Input(binding) = s.args[0] else { return None };
                let p = s.results.iter().position(|x| *x == r)?;
                let offset = s.results[..p].iter().map(|x| width(*x)).sum::<Option<i64>>()?;
                Some(Source { binding, offset })
            }
            ValueRef::Output(_) => None,
        }
    };
    let input = |r: ValueRef| match r {
        ValueRef::Input(i) => Some(i),
        _ => None,
    };
    Some(Roles {
        q: source(q_rope.args[0])?,
        k: source(k_rope.args[0])?,
        v: source(v_write.args[1])?,
        positions: input(q_rope.args[1])?,
        start: input(k_write.args[2])?,
        slot: input(k_write.args[3])?,
        layer,
        base,
        interleaved,
    })
}

/// Whether `spec` is a merged RoPE and cache-write kernel for the GPU (a region from
/// [`group`]).
pub fn is_gpu_rope_cache(spec: &KernelSpec) -> bool {
    spec.gpu && spec.native.is_none() && spec.ptx.is_none() && roles(spec).is_some()
}

/// Host code: binding `%b{i}` (type `b`, `[N, cols]` or `[N, H, D]`) as `[N, cols]`;
/// returns (SSA, type).
fn columns(s: &mut String, i: usize, b: &BindingType) -> (String, String) {
    let dim = |d: Option<i64>| d.map_or("?".to_string(), |x| x.to_string());
    let cols = b.dims[1..].iter().try_fold(1i64, |acc, d| d.map(|d| acc * d));
    let ty = format!("memref<{}x{}x{}>", dim(b.dims[0]), dim(cols), b.dtype.mlir_name());
    if b.dims.len() == 2 {
        return (format!("%b{i}"), ty);
    }
    let _ = writeln!(s, "    %cols{i} = memref.collapse_shape %b{i} [[0], [1, 2]] : {} into {ty}", b.memref());
    (format!("%cols{i}"), ty)
}

/// The host function and `gpu.module` of the merged kernel. Bindings: the spec's inputs,
/// then the rotated q, the K cache and the V cache.
pub fn kernel_func(spec: &KernelSpec) -> String {
    let r = roles(spec).expect("is_gpu_rope_cache checked the body");
    let bindings: Vec<&BindingType> = spec.inputs.iter().chain(&spec.outputs).collect();
    let nin = spec.inputs.len();
    let (qo, kc, vc) = (nin, nin + 1, nin + 2);
    let dim = |b: usize, i: usize| bindings[b].dims[i].expect("verifier: static heads and head dims");
    let (hq, d) = (dim(qo, 1), dim(qo, 2));
    let (hk, dk, hv, dv) = (dim(kc, 3), dim(kc, 4), dim(vc, 3), dim(vc, 4));
    let (qp, kp, vp) = (hq * d / 2, hk * dk / 2, hv * dv / 2);
    let args: Vec<String> = bindings.iter().enumerate().map(|(i, b)| format!("%b{i}: {}", b.memref())).collect();
    let name = &spec.name;
    let mut s = format!("  func.func @{name}({}, %wg: index, %nwg: index) {{\n", args.join(", "));
    s.push_str("    %c0 = arith.constant 0 : index\n    %c1 = arith.constant 1 : index\n");
    let mut views: HashMap<usize, (String, String)> = HashMap::new();
    for src in [r.q, r.k, r.v] {
        views.entry(src.binding).or_insert_with(|| columns(&mut s, src.binding, bindings[src.binding]));
    }
    let (xq, xk, xv) = (&views[&r.q.binding], &views[&r.k.binding], &views[&r.v.binding]);
    let (pm, stm, slm) = (bindings[r.positions].memref(), bindings[r.start].memref(), bindings[r.slot].memref());
    let (qm, km, vm) = (bindings[qo].memref(), bindings[kc].memref(), bindings[vc].memref());
    let pt = bindings[r.positions].dtype.mlir_name();
    // Rows of a batch: the writes need the tokens to divide evenly over `start`'s rows (the
    // host checks that first and reports it); the rotation of q does not.
    crate::gpu_kv_cache::token_rows(&mut s, &format!("%b{qo}"), bindings[qo], &format!("%b{}", r.start), &stm, "%qrows");
    let _ = write!(
        s,
        "    %wr = arith.select %even, %c1, %c0 : index\n    \
         %cthreads = arith.constant {THREADS} : index\n    %cpairs = arith.constant {} : index\n    \
         %gy = arith.ceildivui %cpairs, %cthreads : index\n    scf.if %some {{\n      \
         gpu.launch_func @{name}_llm::@rope_cache blocks in (%ntok, %gy, %c1) threads in (%cthreads, %c1, %c1) \
         args({} : {}, {} : {}, {} : {}, %b{} : {pm}, %b{} : {stm}, %b{} : {slm}, %b{qo} : {qm}, %b{kc} : {km}, %b{vc} : {vm}, %ns : index, %wr : index)\n    \
         }}\n    return\n  }}\n",
        qp + kp + vp,
        xq.0,
        xq.1,
        xk.0,
        xk.1,
        xv.0,
        xv.1,
        r.positions,
        r.start,
        r.slot
    );
    let mut g = Gen::new("r");
    let i = 6;
    g.line(2, format!("gpu.module @{name}_llm {{"));
    g.line(
        4,
        format!(
            "gpu.func @rope_cache(%Xq: {}, %Xk: {}, %Xv: {}, %Pr: {pm}, %P: {stm}, %S: {slm}, %Q: {qm}, %KC: {km}, %VC: {vm}, %ns: index, %wr: index) kernel attributes {{known_block_size = array<i32: {THREADS}, 1, 1>}} {{",
            xq.1, xk.1, xv.1
        ),
    );
    for c in [0, 1, 2] {
        g.line(i, format!("%c{c} = arith.constant {c} : index"));
    }
    g.line(i, format!("%cthreads = arith.constant {THREADS} : index"));
    g.line(i, format!("%layer = arith.constant {} : index", r.layer));
    g.line(i, "%row = gpu.block_id x");
    g.line(i, "%by = gpu.block_id y");
    g.line(i, "%tid = gpu.thread_id x");
    g.line(i, "%e0 = arith.muli %by, %cthreads : index");
    g.line(i, "%e = arith.addi %e0, %tid : index");
    let cq = g.let_(i, format!("arith.constant {qp} : index"));
    let cqk = g.let_(i, format!("arith.constant {} : index", qp + kp));
    let call = g.let_(i, format!("arith.constant {} : index", qp + kp + vp));
    let inq = g.let_(i, format!("arith.cmpi ult, %e, {cq} : index"));
    g.line(i, format!("scf.if {inq} {{"));
    // q: rotated into the result.
    let j = i + 2;
    let rot = rotate(&mut g, j, "%e", d, &r, ("%Xq", &xq.1), r.q.offset, (&pm, pt));
    g.line(j, format!("memref.store {}, %Q[%row, {}, {}] : {qm}", rot.ya, rot.h, rot.ja));
    g.line(j, format!("memref.store {}, %Q[%row, {}, {}] : {qm}", rot.yb, rot.h, rot.jb));
    g.line(i, "} else {");
    let inall = g.let_(j, format!("arith.cmpi ult, %e, {call} : index"));
    let write = g.let_(j, "arith.cmpi ne, %wr, %c0 : index");
    let go = g.let_(j, format!("arith.andi {inall}, {write} : i1"));
    g.line(j, format!("scf.if {go} {{"));
    let w = j + 2;
    // The token's batch row, its place in the cache and whether it fits (as the cache
    // write's kernel decides it).
    crate::gpu_kv_cache::row_bounds(&mut g, "%KC", bindings[kc], bindings[r.start], bindings[r.slot], "%ns");
    g.line(w, format!("%vbmax = memref.dim %VC, %c1 : {vm}"));
    g.line(w, format!("%vtmax = memref.dim %VC, %c2 : {vm}"));
    g.line(w, "%ok4 = arith.cmpi slt, %slot, %vbmax : index");
    g.line(w, "%ok5 = arith.cmpi sle, %end, %vtmax : index");
    g.line(w, "%ok45 = arith.andi %ok4, %ok5 : i1");
    g.line(w, "%okv = arith.andi %ok, %ok45 : i1");
    g.line(w, "scf.if %okv {");
    let x = w + 2;
    g.line(x, "%t = arith.addi %pos, %si : index");
    let ek = g.let_(x, format!("arith.subi %e, {cq} : index"));
    let ink = g.let_(x, format!("arith.cmpi ult, %e, {cqk} : index"));
    g.line(x, format!("scf.if {ink} {{"));
    // k: rotated, converted, into the K cache.
    let y = x + 2;
    let rot = rotate(&mut g, y, &ek, dk, &r, ("%Xk", &xk.1), r.k.offset, (&pm, pt));
    let ct = bindings[kc].dtype;
    for (v, jj) in [(&rot.ya, &rot.ja), (&rot.yb, &rot.jb)] {
        let c = g.convert(y, v, max_dialects::DType::F32, ct);
        g.line(y, format!("memref.store {c}, %KC[%layer, %slot, %t, {}, {jj}] : {km}", rot.h));
    }
    g.line(x, "} else {");
    // v: converted into the V cache, two neighbouring values a thread.
    let ev = g.let_(y, format!("arith.subi %e, {cqk} : index"));
    let chalf = g.let_(y, format!("arith.constant {} : index", dv / 2));
    let cdv = g.let_(y, format!("arith.constant {dv} : index"));
    let h = g.let_(y, format!("arith.divui {ev}, {chalf} : index"));
    let pi = g.let_(y, format!("arith.remui {ev}, {chalf} : index"));
    let d0 = g.let_(y, format!("arith.muli {pi}, %c2 : index"));
    let d1 = g.let_(y, format!("arith.addi {d0}, %c1 : index"));
    let hd = g.let_(y, format!("arith.muli {h}, {cdv} : index"));
    let col0 = g.let_(y, format!("arith.addi {hd}, {d0} : index"));
    let (vt, cvt) = (bindings[r.v.binding].dtype, bindings[vc].dtype);
    for (dd, k) in [(&d0, 0), (&d1, 1)] {
        let col = g.let_(y, format!("arith.constant {} : index", r.v.offset + k));
        let at = g.let_(y, format!("arith.addi {col0}, {col} : index"));
        let val = g.let_(y, format!("memref.load %Xv[%row, {at}] : {}", xv.1));
        let c = g.convert(y, &val, vt, cvt);
        g.line(y, format!("memref.store {c}, %VC[%layer, %slot, %t, {h}, {dd}] : {vm}"));
    }
    g.line(x, "}");
    g.line(w, "}");
    g.line(j, "}");
    g.line(i, "}");
    g.line(i, "gpu.return");
    g.line(4, "}");
    g.line(2, "}");
    s.push_str(&g.s);
    s
}

/// A rotated pair: its head, the two head-dim indices and their rotated values.
struct Rotated {
    h: String,
    ja: String,
    jb: String,
    ya: String,
    yb: String,
}

/// Kernel code: pair `e` of a `[N, heads, d]` value read from columns `offset ..` of `%X`
/// (type `xt`, f32) at row `%row`, rotated by [`crate::gpu_rope`]'s angle for the row's
/// position `%P[%row]` (type `pm`, element `pt`): the same multiplications, so the same bits.
#[allow(clippy::too_many_arguments)]
fn rotate(g: &mut Gen, i: usize, e: &str, d: i64, r: &Roles, (x, xt): (&str, &str), offset: i64, (pm, pt): (&str, &str)) -> Rotated {
    let half = d / 2;
    let chalf = g.let_(i, format!("arith.constant {half} : index"));
    let cd = g.let_(i, format!("arith.constant {d} : index"));
    let h = g.let_(i, format!("arith.divui {e}, {chalf} : index"));
    let pi = g.let_(i, format!("arith.remui {e}, {chalf} : index"));
    let p = g.let_(i, format!("memref.load %Pr[%row] : {pm}"));
    let pf = g.let_(i, format!("arith.sitofp {p} : {pt} to f32"));
    let (cs, sn) = crate::gpu_rope::angle(g, i, &pi, &pf, crate::gpu_rope::theta_scale(r.base, d));
    let (ja, jb) = crate::gpu_rope::pair(g, i, &pi, half, r.interleaved);
    let hd = g.let_(i, format!("arith.muli {h}, {cd} : index"));
    let coff = g.let_(i, format!("arith.constant {offset} : index"));
    let base = g.let_(i, format!("arith.addi {hd}, {coff} : index"));
    let ca = g.let_(i, format!("arith.addi {base}, {ja} : index"));
    let cb = g.let_(i, format!("arith.addi {base}, {jb} : index"));
    let a = g.let_(i, format!("memref.load {x}[%row, {ca}] : {xt}"));
    let b = g.let_(i, format!("memref.load {x}[%row, {cb}] : {xt}"));
    let (ya, yb) = crate::gpu_rope::rotate(g, i, (&a, &b), (&cs, &sn));
    Rotated { h, ja, jb, ya, yb }
}
