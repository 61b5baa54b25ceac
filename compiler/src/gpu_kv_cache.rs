//! KV-cache kernels on the GPU: the in-place cache write and causal attention over the
//! cache, the GPU forms of [`crate::kv_cache`] (same bindings, same bounds rules, same
//! numerics up to the order of sums).
//!
//! - **Write**: a block per token; its threads stride over the token's `heads * head_dim`
//!   values and store them, converted, at `cache[layer, slot[b], pos[b] + s]`.
//! - **Attention**: a block of 1024 threads per (query token, head), in three passes over
//!   the keys `0 ..= pos[b] + s`: scores (a warp per key, each lane a slice of the head dim,
//!   against the query staged in shared memory, several keys in flight) into a global
//!   scratch row, with their max; then `exp(score - max)` and its sum; then the
//!   probability-weighted sum of values, threads laid out as `(key group, head-dim lane)`
//!   with 4 values a lane so that a warp reads value rows whole, and the key groups' partial
//!   sums combined in shared memory. With an f16 cache the query and the probabilities
//!   are rounded to f16 as on the CPU.
//! - **Many rows** (prefill, a serving batch's decode): from [`SplitConfig::small_blocks`]
//!   (query, head) rows, `@attention_rows` takes a row per block of [`ROW_THREADS`]
//!   threads (or the head dim, if larger), the same three passes: a 1024-thread block,
//!   which holds a whole SM, left most of its warps idle on a row of a few dozen keys.
//! - **Split keys**: with few (query, head) rows (a decode step has one per head: 32 blocks
//!   on a 132-SM card), each row's keys are split over up to [`SplitConfig`] blocks (grid z).
//!   A split runs the three passes over its keys, normalized by its own max and sum, and
//!   stores its values, max and sum in a scratch row; the row's last split to finish (an
//!   atomic count) weighs each split by `sum * exp(max - overall max)` and stores the
//!   output. Up to the order of sums this is the CPU's softmax, except that with an f16
//!   cache the probabilities rounded to f16 are the split's (`exp(s - max_split) /
//!   sum_split`), not the row's: about 3e-4 relative from the CPU's output instead of 1e-7.
//!
//! Rows whose slot or positions fall outside the cache are skipped, as on the CPU (the host
//! checks them first and reports the error).

use crate::gpu_rows::RowOps;
use crate::gpu_text::{KernelText as Gen, ARRIVAL_FLAG};
use crate::lower::{BindingType, KernelSpec, ValueRef};
use max_dialects::{DType, Op};
use std::fmt::Write;

/// Threads per block of the attention kernel: a decode step has one block per query head
/// (32 for Llama-3.1-8B on a 132-SM card), so each block takes as many threads as it can.
const THREADS: usize = 1024;
/// Threads per block of `@attention_rows`, for many rows (prefill): a row's few dozen or
/// hundred keys leave most of 1024 threads idle, and a 1024-thread block holds a whole SM
/// (63 registers a thread), so rows ran one block per SM at a time.
const ROW_THREADS: usize = 128;
/// Keys (pass 1) and values (pass 3) a warp or thread loads before using them.
const UNROLL: i64 = 4;
/// Most (query, head) rows whose keys may be split over blocks: the size of each module's
/// arrival counters.
const MAX_SPLIT_ROWS: usize = 128;

/// How attention splits a row's keys over blocks when there are few rows (decode).
/// `MAX_GPU_ATTENTION=target=256,min_keys=64,max_splits=16,small_blocks=512` overrides the
/// defaults (tuning runs); `target=1` never splits, `small_blocks=0` keeps 1024-thread blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitConfig {
    /// Blocks the grid aims at: one 1024-thread block fits an SM (63 registers a thread),
    /// and H100/H200 have 132 SMs (A100 108). Rows split only when at least two splits fit,
    /// so at most `target / 2` rows split (at most [`MAX_SPLIT_ROWS`]).
    pub target: usize,
    /// Fewest cache positions per split, of the cache's capacity: the host does not know
    /// the rows' lengths, which are on the device.
    pub min_keys: usize,
    /// Most splits of one row.
    pub max_splits: usize,
    /// (query, head) rows from which blocks of [`ROW_THREADS`] take them, a block a row,
    /// unsplit (prefill, a serving batch's decode); 0: never.
    pub small_blocks: usize,
}

impl Default for SplitConfig {
    fn default() -> Self {
        SplitConfig { target: 128, min_keys: 128, max_splits: 32, small_blocks: 256 }
    }
}

impl SplitConfig {
    /// The defaults, or `MAX_GPU_ATTENTION`'s overrides.
    pub fn current() -> SplitConfig {
        let mut c = SplitConfig::default();
        crate::tuning::apply_settings("MAX_GPU_ATTENTION", std::env::var("MAX_GPU_ATTENTION").ok(), |k, x| {
            let Ok(x) = usize::try_from(x) else { return false };
            match k {
                "target" if (1..=2 * MAX_SPLIT_ROWS).contains(&x) => c.target = x,
                "min_keys" if x > 0 => c.min_keys = x,
                "max_splits" if x > 0 => c.max_splits = x,
                "small_blocks" => c.small_blocks = x,
                _ => return false,
            }
            true
        });
        c
    }
}
/// Threads per block of the cache write.
const WRITE_THREADS: usize = 128;

/// Whether `spec` is a KV-cache kernel for the GPU: a cache kernel, or attention followed
/// by a cast of its result, which the kernel stores converted.
pub fn is_gpu_cache_kernel(spec: &KernelSpec) -> bool {
    let attention_cast = match &spec.body[..] {
        [a, c] => {
            matches!(a.op, Op::CachedAttention { .. })
                && matches!(c.op, Op::Cast(_))
                && c.args == a.results
                && spec.native.is_none()
                && spec.outputs.len() == 1
        }
        _ => false,
    };
    spec.gpu && (crate::kv_cache::is_cache_kernel(spec) || attention_cast)
}

/// The dtype attention computes its result in (before a fused cast).
fn attention_dtype(spec: &KernelSpec) -> DType {
    match spec.body[0].results[0] {
        ValueRef::Temp(_, d) => d,
        _ => spec.outputs[0].dtype,
    }
}

/// Head dims the attention kernel takes: 32, 64, 128 or 256 (a warp splits a key row into
/// 32 equal slices of at most 16 bytes, and value rows into 4-value lanes that divide the
/// block).
pub fn supported_head_dim(d: i64) -> bool {
    d >= 32 && 256 % d == 0
}

/// The host function and `gpu.module` of a KV-cache kernel.
pub fn kernel_func(spec: &KernelSpec) -> String {
    let bindings: Vec<&BindingType> = spec.inputs.iter().chain(&spec.outputs).collect();
    let args: Vec<String> = bindings.iter().enumerate().map(|(i, b)| format!("%b{i}: {}", b.memref())).collect();
    let mut s = format!("  func.func @{}({}, %wg: index, %nwg: index) {{\n", spec.name, args.join(", "));
    s.push_str("    %c0 = arith.constant 0 : index\n    %c1 = arith.constant 1 : index\n");
    match &spec.body[0].op {
        Op::CacheWrite { layer } => cache_write(&mut s, spec, &bindings, *layer),
        Op::CachedAttention { layer, scale } => attention(&mut s, spec, &bindings, *layer, *scale),
        _ => unreachable!("is_gpu_cache_kernel checked the op"),
    }
    s
}

/// Host code: `tokens` (rank 3 or 4, `[.., H, D]`) as `[N, H, D]`; returns the view and its
/// type. Defines `%nb` (batch rows, from `pos`), `%ntok`, `%ns` (tokens per row), `%even`
/// (rows divide evenly), `%some` (at least one token) and `%go` (both).
pub(crate) fn token_rows(s: &mut String, tokens: &str, b: &BindingType, pos: &str, pos_ty: &str, name: &str) -> (String, String) {
    let (view, ty) = as_token_rows(s, tokens, b, name);
    let _ = write!(
        s,
        "    %nb = memref.dim {pos}, %c0 : {pos_ty}\n    %ntok = memref.dim {view}, %c0 : {ty}\n    \
         %nb1 = arith.maxui %nb, %c1 : index\n    %ns = arith.divui %ntok, %nb1 : index\n    \
         %nbs = arith.muli %nb, %ns : index\n    %even = arith.cmpi eq, %nbs, %ntok : index\n    \
         %some = arith.cmpi ugt, %ntok, %c0 : index\n    %go = arith.andi %even, %some : i1\n"
    );
    (view, ty)
}

/// Host code: `tokens` (`[B, S, H, D]` or `[N, H, D]`) viewed as `[N, H, D]` (in `{name}`
/// when a view is needed); returns the view and its type.
fn as_token_rows(s: &mut String, tokens: &str, b: &BindingType, name: &str) -> (String, String) {
    let r = b.dims.len();
    let dim = |d: Option<i64>| d.map_or("?".to_string(), |x| x.to_string());
    let lead = if r == 4 { b.dims[0].zip(b.dims[1]).map(|(x, y)| x * y) } else { b.dims[0] };
    let ty = format!("memref<{}x{}x{}x{}>", dim(lead), dim(b.dims[r - 2]), dim(b.dims[r - 1]), b.dtype.mlir_name());
    if r == 4 {
        let _ = writeln!(s, "    {name} = memref.collapse_shape {tokens} [[0, 1], [2], [3]] : {} into {ty}", b.memref());
        (name.to_string(), ty)
    } else {
        (tokens.to_string(), ty)
    }
}

/// Kernel code: token `%row`'s batch row `%bi` and place `%si` in it (`%ns` tokens a row;
/// `%len0 = %si + 1`, the positions a query sees from the row's start), then the row's slot
/// and start position from `%P` and `%S` (`%slot`, `%pos`, index) and `%ok`, whether `len`
/// positions from `%pos` fit the cache `cache_ssa` (binding `cache`).
pub(crate) fn row_bounds(g: &mut Gen, cache_ssa: &str, cache: &BindingType, pos: &BindingType, slot: &BindingType, len: &str) {
    let i = 6;
    let (cm, pm, sm) = (cache.memref(), pos.memref(), slot.memref());
    g.line(i, "%bi = arith.divui %row, %ns : index");
    g.line(i, "%si = arith.remui %row, %ns : index");
    g.line(i, "%len0 = arith.addi %si, %c1 : index");
    g.line(i, format!("%bmax = memref.dim {cache_ssa}, %c1 : {cm}"));
    g.line(i, format!("%tmax = memref.dim {cache_ssa}, %c2 : {cm}"));
    g.line(i, format!("%p32 = memref.load %P[%bi] : {pm}"));
    g.line(i, format!("%s32 = memref.load %S[%bi] : {sm}"));
    g.line(i, format!("%pos = arith.index_cast %p32 : {} to index", pos.dtype.mlir_name()));
    g.line(i, format!("%slot = arith.index_cast %s32 : {} to index", slot.dtype.mlir_name()));
    g.line(i, format!("%end = arith.addi %pos, {len} : index"));
    g.line(i, "%ok0 = arith.cmpi sge, %slot, %c0 : index");
    g.line(i, "%ok1 = arith.cmpi slt, %slot, %bmax : index");
    g.line(i, "%ok2 = arith.cmpi sge, %pos, %c0 : index");
    g.line(i, "%ok3 = arith.cmpi sle, %end, %tmax : index");
    g.line(i, "%ok01 = arith.andi %ok0, %ok1 : i1");
    g.line(i, "%ok23 = arith.andi %ok2, %ok3 : i1");
    g.line(i, "%ok = arith.andi %ok01, %ok23 : i1");
}

/// `v` (f32) rounded through f16, or `v` when `round` is false.
fn via_f16(g: &mut Gen, indent: usize, v: &str, round: bool) -> String {
    if !round {
        return v.to_string();
    }
    let h = g.let_(indent, format!("arith.truncf {v} : f32 to f16"));
    g.let_(indent, format!("arith.extf {h} : f16 to f32"))
}

/// `cache[layer, slot[b], pos[b] + s, h, d] = new[b, s, h, d]`. Bindings: cache (its shape),
/// new, pos, slot, result (the cache buffer itself).
fn cache_write(s: &mut String, spec: &KernelSpec, b: &[&BindingType], layer: i64) {
    let (new, pos, slot, out) = (b[1], b[2], b[3], b[4]);
    let (pm, sm, om) = (pos.memref(), slot.memref(), out.memref());
    let (nv, nt) = token_rows(s, "%b1", new, "%b2", &pm, "%new");
    let r = new.dims.len();
    let heads = new.dims[r - 2].expect("verifier: static heads");
    let hd = new.dims[r - 1].expect("verifier: static head dim");
    let name = &spec.name;
    let _ = write!(
        s,
        "    %cthreads = arith.constant {WRITE_THREADS} : index\n    scf.if %go {{\n      \
         gpu.launch_func @{name}_llm::@cache_write blocks in (%ntok, %c1, %c1) threads in (%cthreads, %c1, %c1) \
         args({nv} : {nt}, %b2 : {pm}, %b3 : {sm}, %b4 : {om}, %ns : index)\n    }}\n    return\n  }}\n"
    );
    let mut g = Gen::new("w");
    let i = 6;
    g.line(2, format!("gpu.module @{name}_llm {{"));
    g.line(4, format!("gpu.func @cache_write(%X: {nt}, %P: {pm}, %S: {sm}, %C: {om}, %ns: index) kernel attributes {{known_block_size = array<i32: {WRITE_THREADS}, 1, 1>}} {{"));
    for (n, v) in [("%c0", 0), ("%c1", 1), ("%c2", 2)] {
        g.line(i, format!("{n} = arith.constant {v} : index"));
    }
    g.line(i, format!("%cthreads = arith.constant {WRITE_THREADS} : index"));
    g.line(i, format!("%cd = arith.constant {hd} : index"));
    g.line(i, format!("%chd = arith.constant {} : index", heads * hd));
    g.line(i, format!("%layer = arith.constant {layer} : index"));
    g.line(i, "%row = gpu.block_id x");
    g.line(i, "%tid = gpu.thread_id x");
    row_bounds(&mut g, "%C", out, pos, slot, "%ns");
    g.line(i, "scf.if %ok {");
    g.line(i + 2, "%t = arith.addi %pos, %si : index");
    g.line(i + 2, "scf.for %e = %tid to %chd step %cthreads {");
    let j = i + 4;
    g.line(j, "%h = arith.divui %e, %cd : index");
    g.line(j, "%d = arith.remui %e, %cd : index");
    g.line(j, format!("%x = memref.load %X[%row, %h, %d] : {nt}"));
    let y = g.convert(j, "%x", new.dtype, out.dtype);
    g.line(j, format!("memref.store {y}, %C[%layer, %slot, %t, %h, %d] : {om}"));
    g.line(i + 2, "}");
    g.line(i, "}");
    g.line(i, "gpu.return");
    g.line(4, "}");
    g.line(2, "}");
    s.push_str(&g.s);
}

/// Kernel code: key `%t0 + offset` of an unrolled loop over keys `< %khi`, as (its index,
/// whether it is in range (none for offset 0, which the loop bounds), the index to load:
/// past the end, key `%t0` again, a valid row whose contribution the caller drops).
fn unrolled_key(g: &mut Gen, indent: usize, offset: i64) -> (String, Option<String>, String) {
    if offset == 0 {
        return ("%t0".to_string(), None, "%t0".to_string());
    }
    let off = g.let_(indent, format!("arith.constant {offset} : index"));
    let tu = g.let_(indent, format!("arith.addi %t0, {off} : index"));
    let inu = g.let_(indent, format!("arith.cmpi ult, {tu}, %khi : index"));
    let tc = g.let_(indent, format!("arith.select {inu}, {tu}, %t0 : index"));
    (tu, Some(inu), tc)
}

/// Causal attention of `q` over the cache. Bindings: q, k_cache, v_cache, pos, slot, out.
fn attention(s: &mut String, spec: &KernelSpec, b: &[&BindingType], layer: i64, scale: Option<f64>) {
    let (q, kc, vc, pos, slot, out) = (b[0], b[1], b[2], b[3], b[4], b[5]);
    let (km, vm, pm, sm) = (kc.memref(), vc.memref(), pos.memref(), slot.memref());
    let (qv, qt) = token_rows(s, "%b0", q, "%b3", &pm, "%q");
    let (hq, _, hd) = crate::kv_cache::attention_heads(q, kc);
    let scale = scale.unwrap_or(1.0 / (hd as f64).sqrt());
    let name = &spec.name;
    let (ov, ot) = as_token_rows(s, "%b5", out, "%o");
    let wt = "memref<?x?xf32>";
    let SplitConfig { target, min_keys, max_splits, small_blocks } = SplitConfig::current();
    // A thread per head-dim value combines the value sums, so a block has at least `hd`.
    let row_threads = ROW_THREADS.max(hd as usize);
    // Few (query, head) rows (decode) split their keys over `%splits` blocks each, for a grid
    // of about `target` blocks; each split's softmax-weighted values, max and sum go to
    // `%parts` (a row per split: hd values, max, sum), and the split that finishes last
    // combines them.
    let _ = write!(
        s,
        "    %c2 = arith.constant 2 : index\n    %cthreads = arith.constant {THREADS} : index\n    %ch = arith.constant {hq} : index\n    \
         %tcap = memref.dim %b1, %c2 : {km}\n    %srows = arith.muli %ntok, %ch : index\n    \
         %ctarget = arith.constant {target} : index\n    %cminkeys = arith.constant {min_keys} : index\n    \
         %cmaxsplits = arith.constant {max_splits} : index\n    %srows1 = arith.maxui %srows, %c1 : index\n    \
         %sp_want = arith.divui %ctarget, %srows1 : index\n    %sp_keys = arith.ceildivui %tcap, %cminkeys : index\n    \
         %sp0 = arith.minui %sp_want, %sp_keys : index\n    %sp1 = arith.minui %sp0, %cmaxsplits : index\n    \
         %splits = arith.maxui %sp1, %c1 : index\n    %prows = arith.muli %srows, %splits : index\n    \
         %cpw = arith.constant {} : index\n    scf.if %go {{\n      \
         %scores = memref.alloc(%srows, %tcap) : {wt}\n      %parts = memref.alloc(%prows, %cpw) : {wt}\n{}      \
         memref.dealloc %parts : {wt}\n      memref.dealloc %scores : {wt}\n    }}\n    return\n  }}\n",
        hd + 2,
        {
            let args = format!("args({qv} : {qt}, %b1 : {km}, %b2 : {vm}, %b3 : {pm}, %b4 : {sm}, {ov} : {ot}, %scores : {wt}, %parts : {wt}, %ns : index)");
            let split = format!("gpu.launch_func @{name}_llm::@attention blocks in (%ntok, %ch, %splits) threads in (%cthreads, %c1, %c1) {args}\n");
            if small_blocks == 0 {
                format!("      {split}")
            } else {
                // Many rows: a small block a row, unsplit.
                format!(
                    "      %csmall = arith.constant {small_blocks} : index\n      %many = arith.cmpi uge, %srows, %csmall : index\n      \
                     scf.if %many {{\n        %crthreads = arith.constant {row_threads} : index\n        \
                     gpu.launch_func @{name}_llm::@attention_rows blocks in (%ntok, %ch, %c1) threads in (%crthreads, %c1, %c1) {args}\n      \
                     }} else {{\n        {split}      }}\n"
                )
            }
        }
    );
    let _ = writeln!(s, "  gpu.module @{name}_llm {{");
    // Arrival counts of split rows, zero at load and put back to zero by each row's last
    // split.
    let _ = writeln!(s, "    {}", crate::gpu_text::arrival_counters("attention_arrivals", MAX_SPLIT_ROWS));
    let variants: &[(&str, usize)] = if small_blocks == 0 { &[("attention", THREADS)] } else { &[("attention", THREADS), ("attention_rows", row_threads)] };
    for &(entry, threads) in variants {
        attention_kernel(s, spec, b, layer, scale, entry, threads, (&qt, &ot, wt));
    }
    let _ = writeln!(s, "  }}");
}

/// `@entry`, the attention kernel in blocks of `threads` (bindings as [`attention`]'s;
/// `types`: the query rows', the output rows' and the scratch's memref types).
#[allow(clippy::too_many_arguments)] // one generated kernel's shape and types
fn attention_kernel(s: &mut String, spec: &KernelSpec, b: &[&BindingType], layer: i64, scale: f64, entry: &str, threads: usize, (qt, ot, wt): (&str, &str, &str)) {
    let (q, kc, vc, pos, slot, out) = (b[0], b[1], b[2], b[3], b[4], b[5]);
    // The output is attention's result, or its fused cast's: values are rounded to the
    // former first, as when the cast is a kernel of its own.
    let att_dt = attention_dtype(spec);
    let (km, vm, pm, sm) = (kc.memref(), vc.memref(), pos.memref(), slot.memref());
    let (hq, hkv, hd) = crate::kv_cache::attention_heads(q, kc);
    let group = hq / hkv;
    let f16_cache = kc.dtype == DType::F16;
    let shared = |n: usize| format!("memref<{n}xf32, #gpu.address_space<workgroup>>");
    let (red_t, q_t, part_t) = (shared(threads / 32), shared(hd as usize), shared(4 * threads));
    let mut g = Gen::new("a");
    let i = 6;
    let flag_t = ARRIVAL_FLAG;
    g.line(
        4,
        format!(
            "gpu.func @{entry}(%Q: {qt}, %K: {km}, %V: {vm}, %P: {pm}, %S: {sm}, %O: {ot}, %W: {wt}, %R: {wt}, %ns: index) \
             workgroup(%red : {red_t}, %qs : {q_t}, %part : {part_t}, %flag : {flag_t}) kernel attributes {{known_block_size = array<i32: {threads}, 1, 1>}} {{"
        ),
    );
    for (n, v) in [("%c0", 0), ("%c1", 1), ("%c2", 2), ("%c32", 32)] {
        g.line(i, format!("{n} = arith.constant {v} : index"));
    }
    g.line(i, format!("%cthreads = arith.constant {threads} : index"));
    g.line(i, "%w32 = arith.constant 32 : i32");
    g.line(i, format!("%cd = arith.constant {hd} : index"));
    g.line(i, format!("%ch = arith.constant {hq} : index"));
    g.line(i, format!("%grp = arith.constant {group} : index"));
    g.line(i, format!("%layer = arith.constant {layer} : index"));
    g.line(i, format!("%scale = arith.constant {} : f32", crate::lower::float_lit(scale)));
    g.line(i, "%ninf = arith.constant 0xFF800000 : f32");
    g.line(i, "%zero = arith.constant 0.0 : f32");
    g.line(i, "%one = arith.constant 1.0 : f32");
    g.line(i, "%row = gpu.block_id x");
    g.line(i, "%hi = gpu.block_id y");
    g.line(i, "%tid = gpu.thread_id x");
    g.line(i, "%split = gpu.block_id z");
    g.line(i, "%nsplit = gpu.grid_dim z");
    g.line(i, "%warp = arith.divui %tid, %c32 : index");
    g.line(i, "%lanei = arith.remui %tid, %c32 : index");
    g.line(i, "%lane0 = arith.cmpi eq, %lanei, %c0 : index");
    g.line(i, "%kvh = arith.divui %hi, %grp : index");
    row_bounds(&mut g, "%K", kc, pos, slot, "%len0");
    g.line(i, "%srow0 = arith.muli %row, %ch : index");
    g.line(i, "%srow = arith.addi %srow0, %hi : index");
    g.line(i, "%prow0 = arith.muli %srow, %nsplit : index");
    g.line(i, "%prow = arith.addi %prow0, %split : index");
    // The branch is uniform over the block, so its barriers are reached by every thread.
    g.line(i, "scf.if %ok {");
    let j = i + 2;
    g.line(j, "%len = arith.addi %pos, %len0 : index");
    // This block's keys: [%klo, %khi), split `%split` of the row's `%len` keys (empty when
    // there are fewer keys than splits).
    g.line(j, "%chunk = arith.ceildivui %len, %nsplit : index");
    g.line(j, "%klo0 = arith.muli %split, %chunk : index");
    g.line(j, "%klo = arith.minui %klo0, %len : index");
    g.line(j, "%khi0 = arith.addi %klo, %chunk : index");
    g.line(j, "%khi = arith.minui %khi0, %len : index");
    // The query, as f32 (through f16 with an f16 cache), in shared memory.
    g.line(j, "scf.for %d = %tid to %cd step %cthreads {");
    let qv = g.let_(j + 2, format!("memref.load %Q[%row, %hi, %d] : {qt}"));
    let qf = g.convert(j + 2, &qv, q.dtype, DType::F32);
    let qr = via_f16(&mut g, j + 2, &qf, f16_cache);
    g.line(j + 2, format!("memref.store {qr}, %qs[%d] : {q_t}"));
    g.line(j, "}");
    g.line(j, "gpu.barrier");
    // Pass 1: scaled scores and their max. Warp w takes keys w, w + warps, ..., UNROLL at a
    // time (their loads all in flight), lane l loading values l * hd / 32 .. of the key row
    // (the warp reads it whole); the lanes' sums meet through shuffles.
    let warps = threads as i64 / 32;
    g.line(j, format!("%cstep1 = arith.constant {} : index", warps * UNROLL));
    let (e, kt) = (hd / 32, kc.dtype.mlir_name());
    g.line(j, format!("%ce = arith.constant {e} : index"));
    g.line(j, "%dk = arith.muli %lanei, %ce : index");
    g.line(j, "%t1s = arith.addi %klo, %warp : index");
    let m = g.let_(j, "scf.for %t0 = %t1s to %khi step %cstep1 iter_args(%m0 = %ninf) -> (f32) {");
    let k = j + 2;
    let mut keys = Vec::new();
    for u in 0..UNROLL {
        let (tu, inu, tc) = unrolled_key(&mut g, k, u * warps);
        // Lane l's hd / 32 consecutive values of the key row, in one load.
        let kv = g.let_(k, format!("vector.load %K[%layer, %slot, {tc}, %kvh, %dk] {{alignment = {}}} : {km}, vector<{e}x{kt}>", (e * kc.dtype.size_bytes() as i64).min(16)));
        keys.push((tu, inu, kv));
    }
    let mut mcur = "%m0".to_string();
    for (tu, inu, kv) in keys {
        let mut acc = "%zero".to_string();
        for x in 0..e {
            let kx = g.let_(k, format!("vector.extract {kv}[{x}] : {kt} from vector<{e}x{kt}>"));
            let cx = g.let_(k, format!("arith.constant {x} : index"));
            let d = g.let_(k, format!("arith.addi %dk, {cx} : index"));
            let qd = g.let_(k, format!("memref.load %qs[{d}] : {q_t}"));
            let kf = g.convert(k, &kx, kc.dtype, DType::F32);
            acc = g.let_(k, format!("math.fma {qd}, {kf}, {acc} : f32"));
        }
        for off in [16, 8, 4, 2, 1] {
            let o = g.let_(k, format!("arith.constant {off} : i32"));
            let sh = g.fresh();
            g.line(k, format!("{sh}, {sh}_ok = gpu.shuffle xor {acc}, {o}, %w32 : f32"));
            acc = g.let_(k, format!("arith.addf {acc}, {sh} : f32"));
        }
        let sc = g.let_(k, format!("arith.mulf {acc}, %scale : f32"));
        let st = match &inu {
            Some(inu) => g.let_(k, format!("arith.andi %lane0, {inu} : i1")),
            None => "%lane0".to_string(),
        };
        g.line(k, format!("scf.if {st} {{"));
        g.line(k + 2, format!("memref.store {sc}, %W[%srow, {tu}] : {wt}"));
        g.line(k, "}");
        let mx = g.let_(k, format!("arith.maximumf {mcur}, {sc} : f32"));
        mcur = match &inu {
            Some(inu) => g.let_(k, format!("arith.select {inu}, {mx}, {mcur} : f32")),
            None => mx,
        };
    }
    g.line(k, format!("scf.yield {mcur} : f32"));
    g.line(j, "}");
    let mx = g.block_reduce(j, &m, "maximumf", threads);
    // Pass 2: exp(score - max), in place, and the sum.
    g.line(j, "%t2s = arith.addi %klo, %tid : index");
    let part = g.let_(j, "scf.for %t = %t2s to %khi step %cthreads iter_args(%s0 = %zero) -> (f32) {");
    let sv = g.let_(k, format!("memref.load %W[%srow, %t] : {wt}"));
    let dv = g.let_(k, format!("arith.subf {sv}, {mx} : f32"));
    let e = g.exp(k, &dv);
    g.line(k, format!("memref.store {e}, %W[%srow, %t] : {wt}"));
    let sn = g.let_(k, format!("arith.addf %s0, {e} : f32"));
    g.line(k, format!("scf.yield {sn} : f32"));
    g.line(j, "}");
    // The reduction's barriers also make every thread's probabilities visible to the block.
    let total = g.block_reduce(j, &part, "addf", threads);
    let inv = g.let_(j, format!("arith.divf %one, {total} : f32"));
    // Pass 3: thread (group, lane) sums keys t = group (mod groups) for head-dim values
    // 4 * lane .. 4 * lane + 3 (one 4-wide load of a value row each, a warp reading whole
    // rows), UNROLL keys' loads in flight, in key order.
    let lanes = hd / 4;
    let groups = threads as i64 / lanes;
    let vt = vc.dtype.mlir_name();
    g.line(j, format!("%clanes = arith.constant {lanes} : index"));
    g.line(j, "%c4 = arith.constant 4 : index");
    g.line(j, "%vl = arith.remui %tid, %clanes : index");
    g.line(j, "%d4 = arith.muli %vl, %c4 : index");
    g.line(j, "%gi = arith.divui %tid, %clanes : index");
    g.line(j, "%z4 = arith.constant dense<0.0> : vector<4xf32>");
    g.line(j, format!("%cstep3 = arith.constant {} : index", groups * UNROLL));
    g.line(j, "%t3s = arith.addi %klo, %gi : index");
    let acc3 = g.let_(j, "scf.for %t0 = %t3s to %khi step %cstep3 iter_args(%a0 = %z4) -> (vector<4xf32>) {");
    let mut vals = Vec::new();
    for u in 0..UNROLL {
        let (_, inu, tc) = unrolled_key(&mut g, k, u * groups);
        let pe = g.let_(k, format!("memref.load %W[%srow, {tc}] : {wt}"));
        // Aligned: d4 and the row length are multiples of 4 values.
        let vv = g.let_(k, format!("vector.load %V[%layer, %slot, {tc}, %kvh, %d4] {{alignment = {}}} : {vm}, vector<4x{vt}>", (4 * vc.dtype.size_bytes()).min(16)));
        vals.push((inu, pe, vv));
    }
    let mut a = "%a0".to_string();
    for (inu, pe, vv) in vals {
        let pn = g.let_(k, format!("arith.mulf {pe}, {inv} : f32"));
        let p = via_f16(&mut g, k, &pn, f16_cache);
        // A key past the end adds nothing.
        let p = match &inu {
            Some(inu) => g.let_(k, format!("arith.select {inu}, {p}, %zero : f32")),
            None => p,
        };
        let pv = g.let_(k, format!("vector.broadcast {p} : f32 to vector<4xf32>"));
        let vf = if vc.dtype == DType::F32 { vv } else { g.let_(k, format!("arith.extf {vv} : vector<4x{vt}> to vector<4xf32>")) };
        a = g.let_(k, format!("vector.fma {pv}, {vf}, {a} : vector<4xf32>"));
    }
    g.line(k, format!("scf.yield {a} : vector<4xf32>"));
    g.line(j, "}");
    // The groups' sums meet in shared memory: part[group * hd + d]; thread d < hd adds them
    // in group order.
    g.line(j, "%pbase0 = arith.muli %gi, %cd : index");
    g.line(j, "%pbase = arith.addi %pbase0, %d4 : index");
    for e in 0..4 {
        let v = g.let_(j, format!("vector.extract {acc3}[{e}] : f32 from vector<4xf32>"));
        let at = if e == 0 { "%pbase".to_string() } else {
            let ce = g.let_(j, format!("arith.constant {e} : index"));
            g.let_(j, format!("arith.addi %pbase, {ce} : index"))
        };
        g.line(j, format!("memref.store {v}, %part[{at}] : {part_t}"));
    }
    g.line(j, "gpu.barrier");
    g.line(j, "%first = arith.cmpi ult, %tid, %cd : index");
    g.line(j, "scf.if %first {");
    let mut sum = g.let_(k, format!("memref.load %part[%tid] : {part_t}"));
    for gi in 1..groups {
        let at = g.let_(k, format!("arith.constant {} : index", gi * hd));
        let idx = g.let_(k, format!("arith.addi %tid, {at} : index"));
        let x = g.let_(k, format!("memref.load %part[{idx}] : {part_t}"));
        sum = g.let_(k, format!("arith.addf {sum}, {x} : f32"));
    }
    g.line(k, "%single = arith.cmpi eq, %nsplit, %c1 : index");
    g.line(k, "scf.if %single {");
    let y = output_value(&mut g, k + 2, &sum, (att_dt, out.dtype));
    g.line(k + 2, format!("memref.store {y}, %O[%row, %hi, %tid] : {ot}"));
    g.line(k, "} else {");
    g.line(k + 2, format!("memref.store {sum}, %R[%prow, %tid] : {wt}"));
    g.line(k, "}");
    g.line(j, "}");
    g.line(j, "%split_rows = arith.cmpi ugt, %nsplit, %c1 : index");
    g.line(j, "scf.if %split_rows {");
    combine_splits(&mut g, j + 2, hd, &mx, &total, (att_dt, out.dtype), ot, wt);
    g.line(j, "}");
    g.line(i, "}");
    g.line(i, "gpu.return");
    g.line(4, "}");
    s.push_str(&g.s);
}

/// The f32 attention value `v` as the output stores it: rounded to attention's dtype, then
/// converted to the output's (a fused cast's), as two kernels would (`types`: both dtypes).
fn output_value(g: &mut Gen, indent: usize, v: &str, (att_dt, out_dt): (DType, DType)) -> String {
    let a = g.convert(indent, v, DType::F32, att_dt);
    g.convert(indent, &a, att_dt, out_dt)
}

/// Kernel code for a split row, after thread d < hd stored the split's softmax-weighted
/// values (normalized by its own sum) in `R[%prow, d]`: thread 0 adds the split's max `mx`
/// and sum `total`, the block counts its arrival, and the row's last split combines every
/// split s with weight `sum_s * exp(max_s - max) / total` (in split order) into `O`.
#[allow(clippy::too_many_arguments)]
fn combine_splits(g: &mut Gen, i: usize, hd: i64, mx: &str, total: &str, types: (DType, DType), ot: &str, wt: &str) {
    g.line(i, format!("%cmaxc = arith.constant {hd} : index"));
    g.line(i, format!("%csumc = arith.constant {} : index", hd + 1));
    g.line(i, "%t0only = arith.cmpi eq, %tid, %c0 : index");
    g.line(i, "scf.if %t0only {");
    g.line(i + 2, format!("memref.store {mx}, %R[%prow, %cmaxc] : {wt}"));
    g.line(i + 2, format!("memref.store {total}, %R[%prow, %csumc] : {wt}"));
    g.line(i, "}");
    let last = g.arrive(i, "attention_arrivals", "%srow", "%nsplit", "%tid", "%flag");
    g.line(i, "%dmine = arith.cmpi ult, %tid, %cd : index");
    let combine = g.let_(i, format!("arith.andi {last}, %dmine : i1"));
    g.line(i, format!("scf.if {combine} {{"));
    let k = i + 2;
    g.line(k, "%pfirst = arith.muli %srow, %nsplit : index");
    g.line(k, "%pend = arith.addi %pfirst, %nsplit : index");
    let gmax = g.let_(k, "scf.for %pr = %pfirst to %pend step %c1 iter_args(%gm = %ninf) -> (f32) {");
    let ms = g.let_(k + 2, format!("memref.load %R[%pr, %cmaxc] : {wt}"));
    let gm = g.let_(k + 2, format!("arith.maximumf %gm, {ms} : f32"));
    g.line(k + 2, format!("scf.yield {gm} : f32"));
    g.line(k, "}");
    // An empty split (fewer keys than splits) has sum 0 and max -inf: weight 0.
    let sums = g.fresh();
    g.line(k, format!("{sums}:2 = scf.for %pr = %pfirst to %pend step %c1 iter_args(%gl = %zero, %gacc = %zero) -> (f32, f32) {{"));
    let ms = g.let_(k + 2, format!("memref.load %R[%pr, %cmaxc] : {wt}"));
    let ls = g.let_(k + 2, format!("memref.load %R[%pr, %csumc] : {wt}"));
    let os = g.let_(k + 2, format!("memref.load %R[%pr, %tid] : {wt}"));
    let dm = g.let_(k + 2, format!("arith.subf {ms}, {gmax} : f32"));
    let e = g.exp(k + 2, &dm);
    let w0 = g.let_(k + 2, format!("arith.mulf {ls}, {e} : f32"));
    let some = g.let_(k + 2, format!("arith.cmpf ogt, {ls}, %zero : f32"));
    let w = g.let_(k + 2, format!("arith.select {some}, {w0}, %zero : f32"));
    let gl = g.let_(k + 2, format!("arith.addf %gl, {w} : f32"));
    let gacc = g.let_(k + 2, format!("math.fma {w}, {os}, %gacc : f32"));
    g.line(k + 2, format!("scf.yield {gl}, {gacc} : f32, f32"));
    g.line(k, "}");
    let o = g.let_(k, format!("arith.divf {sums}#1, {sums}#0 : f32"));
    let y = output_value(g, k, &o, types);
    g.line(k, format!("memref.store {y}, %O[%row, %hi, %tid] : {ot}"));
    g.line(i, "}");
}
