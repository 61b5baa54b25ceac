//! KV-cache kernels on the GPU: the in-place cache write and causal attention over the
//! cache, the GPU forms of [`crate::kv_cache`] (same bindings, same bounds rules; the
//! numerics as below).
//!
//! - **Write**: a block per token; its threads stride over the token's `heads * head_dim`
//!   values and store them, converted, at `cache[layer, slot[b], pos[b] + s]`.
//! - **Attention**: a block per (query token, head) over the keys `0 ..= pos[b] + s`, an
//!   online softmax per warp and no scratch the size of the cache. A warp takes tiles of
//!   32 keys: a key's lanes (head dim / 16 of them) each multiply 16 values of its row,
//!   read whole by the key's lanes, into the query held in registers, and sum through
//!   shuffles; the tile's scores then go one a lane for the max, `exp(score - max)` and the
//!   sum, the warp's running sum and values are rescaled by `exp(old max - new max)`, and
//!   the values accumulate a lane's 16 head-dim values of its key's group (a probability
//!   reaches its lanes in one shuffle). The warps' (max, sum, values) meet in shared
//!   memory, weighted by `exp(max_w - max) / sum`. With an f16 cache the query and the
//!   probabilities are rounded to f16 as on the CPU, but the probabilities before they are
//!   normalized (the running max's, not the row's), so outputs are about 3e-4 (relative)
//!   from the CPU's instead of 1e-7; other caches agree up to the order of sums.
//! - **Many rows** (prefill, a serving batch's decode): from [`SplitConfig::small_blocks`]
//!   (query, head) rows, `@attention_rows` takes a row per block of [`ROW_THREADS`]
//!   threads: a [`THREADS`]-thread block, which holds a whole SM, would leave most of its
//!   warps idle on a row of a few dozen keys.
//! - **Split keys**: with few (query, head) rows (a decode step has one per head: 32 blocks
//!   on a 132-SM card), each row's keys are split over up to [`SplitConfig`] blocks (grid
//!   z), chosen by the host from the cache's capacity; a row uses as many of them as its
//!   length fills with [`SplitConfig::min_keys`] keys each, and the others return at once.
//!   A split stores its values (normalized by its own sum), max and sum in a scratch row;
//!   the row's last split to finish (an atomic count) weighs each split by
//!   `sum * exp(max - overall max)` and stores the output.
//!
//! Rows whose slot or positions fall outside the cache are skipped, as on the CPU (the host
//! checks them first and reports the error).

use crate::gpu_rows::RowOps;
use crate::gpu_text::{KernelText as Gen, ARRIVAL_FLAG, WARP_OFFSETS};
use crate::lower::{BindingType, KernelSpec, ValueRef};
use max_dialects::{DType, Op};
use std::fmt::Write;

/// Threads per block of the attention kernel: a decode step has few blocks (a split of a
/// query head's keys each, about [`SplitConfig::target`] in all), so each takes as many
/// warps as an SM holds at the kernel's 100-128 registers a thread (16; 1024 threads would
/// cap them at 64, and they spilled).
const THREADS: usize = 512;
/// Threads per block of `@attention_rows`, for many rows (prefill): a row's few dozen or
/// hundred keys (tiles of 32 a warp) would leave most of [`THREADS`] idle, and such a block
/// holds a whole SM, so rows would run one block per SM at a time.
const ROW_THREADS: usize = 128;
/// Most (query, head) rows whose keys may be split over blocks: the size of each module's
/// arrival counters.
const MAX_SPLIT_ROWS: usize = 128;

/// How attention splits a row's keys over blocks when there are few rows (decode).
/// `MAX_GPU_ATTENTION=target=256,min_keys=64,max_splits=16,small_blocks=512,mma_tokens=32`
/// overrides the defaults (tuning runs); `target=1` never splits, `small_blocks=0` keeps
/// [`THREADS`]-thread blocks for every row count, `mma_tokens=0` keeps prefill off the
/// tensor cores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitConfig {
    /// Blocks the grid aims at: one [`THREADS`]-thread block fills an SM's registers, and
    /// H100/H200 have 132 SMs (A100 108). Rows split only when at least two splits fit,
    /// so at most `target / 2` rows split (at most [`MAX_SPLIT_ROWS`]).
    pub target: usize,
    /// Fewest keys per split. The host launches splits for the cache's capacity (the rows'
    /// lengths are on the device); a row of `len` keys uses `ceil(len / min_keys)` of them
    /// at most.
    pub min_keys: usize,
    /// Most splits of one row.
    pub max_splits: usize,
    /// (query, head) rows from which blocks of [`ROW_THREADS`] take them, a block a row,
    /// unsplit (prefill, a serving batch's decode); 0: never.
    pub small_blocks: usize,
    /// Query tokens per batch row from which attention over an f16 cache runs on the
    /// tensor cores ([`crate::gpu_attention_mma`], prefill); 0: never.
    pub mma_tokens: usize,
}

impl Default for SplitConfig {
    fn default() -> Self {
        SplitConfig { target: 128, min_keys: 128, max_splits: 32, small_blocks: 256, mma_tokens: crate::gpu_attention_mma::MIN_TOKENS }
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
                "mma_tokens" => c.mma_tokens = x,
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
/// `%len0 = %si + 1`, the positions a query sees from the row's start), then
/// [`slot_bounds`].
pub(crate) fn row_bounds(g: &mut Gen, cache_ssa: &str, cache: &BindingType, pos: &BindingType, slot: &BindingType, len: &str) {
    let i = 6;
    g.line(i, "%bi = arith.divui %row, %ns : index");
    g.line(i, "%si = arith.remui %row, %ns : index");
    g.line(i, "%len0 = arith.addi %si, %c1 : index");
    slot_bounds(g, cache_ssa, cache, pos, slot, len);
}

/// Kernel code: batch row `%bi`'s slot and start position from `%P` and `%S` (`%slot`,
/// `%pos`, index) and `%ok`, whether `len` positions from `%pos` fit the cache `cache_ssa`
/// (binding `cache`). Uses the index constants `%c0`, `%c1` and `%c2`.
pub(crate) fn slot_bounds(g: &mut Gen, cache_ssa: &str, cache: &BindingType, pos: &BindingType, slot: &BindingType, len: &str) {
    let i = 6;
    let (cm, pm, sm) = (cache.memref(), pos.memref(), slot.memref());
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
    let cfg = SplitConfig::current();
    let SplitConfig { target, min_keys, max_splits, small_blocks, mma_tokens } = cfg;
    let mma = mma_tokens > 0 && crate::gpu_attention_mma::applies(kc, hd);
    // Few (query, head) rows (decode) split their keys over `%splits` blocks each, for a grid
    // of about `target` blocks; each split's softmax-weighted values, max and sum go to the
    // module's `@attention_parts` (a row per split: hd values, max, sum), and the split that
    // finishes last combines them.
    let _ = write!(
        s,
        "    %c2 = arith.constant 2 : index\n    %cthreads = arith.constant {THREADS} : index\n    %ch = arith.constant {hq} : index\n    \
         %tcap = memref.dim %b1, %c2 : {km}\n    %srows = arith.muli %ntok, %ch : index\n    \
         %ctarget = arith.constant {target} : index\n    %cminkeys = arith.constant {min_keys} : index\n    \
         %cmaxsplits = arith.constant {max_splits} : index\n    %srows1 = arith.maxui %srows, %c1 : index\n    \
         %sp_want = arith.divui %ctarget, %srows1 : index\n    %sp_keys = arith.ceildivui %tcap, %cminkeys : index\n    \
         %sp0 = arith.minui %sp_want, %sp_keys : index\n    %sp1 = arith.minui %sp0, %cmaxsplits : index\n    \
         %splits = arith.maxui %sp1, %c1 : index\n    scf.if %go {{\n{}    }}\n    return\n  }}\n",
        {
            let args = format!("{qv} : {qt}, %b1 : {km}, %b2 : {vm}, %b3 : {pm}, %b4 : {sm}, {ov} : {ot}");
            let split = format!(
                "gpu.launch_func @{name}_llm::@attention blocks in (%ntok, %ch, %splits) threads in (%cthreads, %c1, %c1) \
                 args({args}, %ns : index)\n"
            );
            let simt = if small_blocks == 0 {
                format!("      {split}")
            } else {
                // Many rows: a small block a row, unsplit.
                format!(
                    "      %csmall = arith.constant {small_blocks} : index\n      %many = arith.cmpi uge, %srows, %csmall : index\n      \
                     scf.if %many {{\n        %crthreads = arith.constant {ROW_THREADS} : index\n        \
                     gpu.launch_func @{name}_llm::@attention_rows blocks in (%ntok, %ch, %c1) threads in (%crthreads, %c1, %c1) \
                     args({args}, %ns : index)\n      }} else {{\n      {split}      }}\n"
                )
            };
            if mma {
                // Prefill (enough tokens a batch row): the tensor cores, a tile of queries a block.
                format!(
                    "      %cmmatok = arith.constant {mma_tokens} : index\n      %prefill = arith.cmpi uge, %ns, %cmmatok : index\n      \
                     scf.if %prefill {{\n        {}      }} else {{\n{simt}      }}\n",
                    crate::gpu_attention_mma::launch(name, &args)
                )
            } else {
                simt
            }
        }
    );
    let _ = writeln!(s, "  gpu.module @{name}_llm {{");
    // Arrival counts of split rows, zero at load and put back to zero by each row's last
    // split.
    let _ = writeln!(s, "    {}", crate::gpu_text::arrival_counters("attention_arrivals", MAX_SPLIT_ROWS));
    // The splits' rows: `srows * splits <= target` whenever rows split. A module global, as
    // the counters (one kernel runs at a time on the stream), so that a call allocates
    // nothing (no memory nodes in a recorded CUDA graph).
    let _ = writeln!(s, "    memref.global \"private\" @attention_parts : {}", parts_type(target, hd));
    attention_kernel(s, spec, b, (layer, scale), ("attention", THREADS, true), &cfg, (&qt, &ot, wt));
    if small_blocks != 0 {
        attention_kernel(s, spec, b, (layer, scale), ("attention_rows", ROW_THREADS, false), &cfg, (&qt, &ot, wt));
    }
    if mma {
        let types = (attention_dtype(spec), out.dtype);
        crate::gpu_attention_mma::kernel(s, b, layer, scale, (&qt, &ot), &|g: &mut Gen, i: usize, v: &str| output_value(g, i, v, types));
    }
    let _ = writeln!(s, "  }}");
}

/// The type of a module's split scratch: `target` rows of a split's `hd` values, max and sum.
fn parts_type(target: usize, hd: i64) -> String {
    format!("memref<{target}x{}xf32, #gpu.address_space<global>>", hd + 2)
}

/// Lanes of a warp that share one key's dot product in [`attention_kernel`]: each holds 16
/// of the head dim's values (32 or 64 bytes of the row), so a warp takes `32 / lanes` keys
/// a step.
fn lanes_per_key(hd: i64) -> i64 {
    hd / 16
}

/// A lane's 16 values of a cache row of `dt` as (16-byte chunks, values a chunk, distance
/// between the lane's chunks): chunk c of lane `sub` (of [`lanes_per_key`]) holds values
/// `c * stride + sub * width ..`, so the lanes of a key read each part of the row whole.
fn lane_chunks(hd: i64, dt: DType) -> (i64, i64, i64) {
    let width = 16 / dt.size_bytes() as i64;
    let chunks = 16 / width;
    (chunks, width, hd / chunks)
}

/// Kernel code: the first head-dim index of each of lane `%sub`'s chunks (of
/// [`lane_chunks`]' `(chunks, width, stride)`), `c * stride + sub * width`.
fn lane_dims(g: &mut Gen, indent: usize, (chunks, width, stride): (i64, i64, i64)) -> Vec<String> {
    let w = g.let_(indent, format!("arith.constant {width} : index"));
    let sw = g.let_(indent, format!("arith.muli %sub, {w} : index"));
    (0..chunks)
        .map(|c| {
            let c0 = g.let_(indent, format!("arith.constant {} : index", c * stride));
            g.let_(indent, format!("arith.addi {c0}, {sw} : index"))
        })
        .collect()
}

/// `@entry`, the attention kernel in blocks of `threads` (bindings as [`attention`]'s;
/// `split`: whether rows may be split over blocks, grid z, as `cfg` says; `types`: the query
/// rows', the output rows' and the split scratch's memref types).
///
/// Each warp runs an online softmax over tiles of 32 keys (warp w: tiles w, w + warps, ..
/// of the block's keys): in a step, the lanes of a key group (of [`lanes_per_key`]) each
/// take 16 values of one key's row and sum their products with the query (held in
/// registers) through shuffles; the tile's 32 scores are then one a lane, for the tile's
/// max, `exp(score - max)` and their sum, and the running sum and values are rescaled by
/// `exp(old max - new max)`. The values accumulate in the same layout, a lane's 16 head-dim
/// values of its group's keys, so a probability reaches its lanes in one shuffle; the
/// groups' sums meet through shuffles at the end, and the warps' (max, sum, values) in
/// shared memory, weighted by `exp(max_w - max)`.
fn attention_kernel(s: &mut String, spec: &KernelSpec, b: &[&BindingType], (layer, scale): (i64, f64), (entry, threads, split): (&str, usize, bool), cfg: &SplitConfig, (qt, ot, wt): (&str, &str, &str)) {
    let (q, kc, vc, pos, slot, out) = (b[0], b[1], b[2], b[3], b[4], b[5]);
    // The output is attention's result, or its fused cast's: values are rounded to the
    // former first, as when the cast is a kernel of its own.
    let att_dt = attention_dtype(spec);
    let (km, vm, pm, sm) = (kc.memref(), vc.memref(), pos.memref(), slot.memref());
    let (hq, hkv, hd) = crate::kv_cache::attention_heads(q, kc);
    let group = hq / hkv;
    let f16_cache = kc.dtype == DType::F16;
    let warps = threads / 32;
    let SplitConfig { min_keys, target, .. } = *cfg;
    let lk = lanes_per_key(hd);
    let kps = 32 / lk;
    let shared = |n: usize| format!("memref<{n}xf32, #gpu.address_space<workgroup>>");
    // part: each warp's values; stat: the warps' maxima [0, 32), sums [32, 64), weights
    // [64, 96), the block's max and sum (96, 97).
    let (part_t, stat_t) = (shared(warps * hd as usize), shared(98));
    let mut g = Gen::new("a");
    let i = 6;
    let flag = if split { format!(", %flag : {ARRIVAL_FLAG}") } else { String::new() };
    g.line(
        4,
        format!(
            "gpu.func @{entry}(%Q: {qt}, %K: {km}, %V: {vm}, %P: {pm}, %S: {sm}, %O: {ot}, %ns: index) \
             workgroup(%part : {part_t}, %stat : {stat_t}{flag}) kernel attributes {{known_block_size = array<i32: {threads}, 1, 1>}} {{"
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
    g.line(i, format!("%clk = arith.constant {lk} : index"));
    g.line(i, format!("%ckps = arith.constant {kps} : index"));
    g.line(i, format!("%scale = arith.constant {} : f32", crate::lower::float_lit(scale)));
    g.line(i, "%ninf = arith.constant 0xFF800000 : f32");
    g.line(i, "%zero = arith.constant 0.0 : f32");
    if split {
        // The splits' scratch rows, in the module's global.
        let pt = parts_type(target, hd);
        let generic = pt.replace(", #gpu.address_space<global>", "");
        g.line(i, format!("%Rg = memref.get_global @attention_parts : {pt}"));
        g.line(i, format!("%Rc = memref.memory_space_cast %Rg : {pt} to {generic}"));
        g.line(i, format!("%R = memref.cast %Rc : {generic} to {wt}"));
    }
    g.line(i, "%row = gpu.block_id x");
    g.line(i, "%hi = gpu.block_id y");
    g.line(i, "%tid = gpu.thread_id x");
    g.line(i, "%split = gpu.block_id z");
    g.line(i, "%nsplit = gpu.grid_dim z");
    g.line(i, "%warp = arith.divui %tid, %c32 : index");
    g.line(i, "%lanei = arith.remui %tid, %c32 : index");
    g.line(i, "%lane0 = arith.cmpi eq, %lanei, %c0 : index");
    // Lane (key group, sub): the group's key of each step, and the 16 values it takes.
    g.line(i, "%kg = arith.divui %lanei, %clk : index");
    g.line(i, "%sub = arith.remui %lanei, %clk : index");
    g.line(i, "%kvh = arith.divui %hi, %grp : index");
    row_bounds(&mut g, "%K", kc, pos, slot, "%len0");
    g.line(i, "%srow0 = arith.muli %row, %ch : index");
    g.line(i, "%srow = arith.addi %srow0, %hi : index");
    g.line(i, "%prow0 = arith.muli %srow, %nsplit : index");
    g.line(i, "%prow = arith.addi %prow0, %split : index");
    // The row's `%len` keys go to `%nact` of the grid's `%nsplit` splits, at least
    // `min_keys` a split (the host chose `%nsplit` by the cache's capacity); the rest return.
    g.line(i, "%len = arith.addi %pos, %len0 : index");
    g.line(i, format!("%cmink = arith.constant {min_keys} : index"));
    g.line(i, "%nkeyed = arith.ceildivui %len, %cmink : index");
    g.line(i, "%nact = arith.minui %nkeyed, %nsplit : index");
    g.line(i, "%active = arith.cmpi ult, %split, %nact : index");
    g.line(i, "%live = arith.andi %ok, %active : i1");
    // The branch is uniform over the block, so its barriers are reached by every thread.
    g.line(i, "scf.if %live {");
    let j = i + 2;
    // This block's keys: [%klo, %khi), split `%split` of the row's `%len` keys.
    g.line(j, "%chunk = arith.ceildivui %len, %nact : index");
    g.line(j, "%klo0 = arith.muli %split, %chunk : index");
    g.line(j, "%klo = arith.minui %klo0, %len : index");
    g.line(j, "%khi0 = arith.addi %klo, %chunk : index");
    g.line(j, "%khi = arith.minui %khi0, %len : index");
    let (vch, vw, vstride) = lane_chunks(hd, vc.dtype);
    let vdims = lane_dims(&mut g, j, (vch, vw, vstride));
    g.line(j, format!("%cstep = arith.constant {} : index", warps * 32));
    g.line(j, "%wofs = arith.muli %warp, %c32 : index");
    g.line(j, "%t1s = arith.addi %klo, %wofs : index");
    let (vt, kt) = (vc.dtype.mlir_name(), kc.dtype.mlir_name());
    let vzero = |w: i64| format!("arith.constant dense<0.0> : vector<{w}xf32>");
    let mut inits = Vec::new();
    for _ in 0..vch {
        inits.push(g.let_(j, vzero(vw)));
    }
    let iters: Vec<String> = (0..vch).map(|c| format!("%acc{c} = {}", inits[c as usize])).collect();
    let vty = format!("vector<{vw}xf32>");
    let tys: Vec<String> = std::iter::repeat_n(vty.clone(), vch as usize).collect();
    // A warp with keys: its (max, sum, 16 values a lane); the others' are (-inf, 0, 0).
    let busy = g.fresh();
    g.line(j, "%busy = arith.cmpi ult, %t1s, %khi : index");
    g.line(j, format!("{busy}:{} = scf.if %busy -> (f32, f32, {}) {{", 2 + vch, tys.join(", ")));
    let j0 = j;
    let j = j0 + 2;
    let res = g.fresh();
    // The lane's 16 query values, as f32 (through f16 with an f16 cache), in registers.
    let (kch, kw, kstride) = lane_chunks(hd, kc.dtype);
    let kdims = lane_dims(&mut g, j, (kch, kw, kstride));
    let mut qvals = Vec::new();
    for d0 in &kdims {
        let mut lanes = Vec::new();
        for x in 0..kw {
            let cx = g.let_(j, format!("arith.constant {x} : index"));
            let d = g.let_(j, format!("arith.addi {d0}, {cx} : index"));
            let qv = g.let_(j, format!("memref.load %Q[%row, %hi, {d}] : {qt}"));
            let qf = g.convert(j, &qv, q.dtype, DType::F32);
            lanes.push(via_f16(&mut g, j, &qf, f16_cache));
        }
        qvals.push(lanes);
    }
    // Lane l takes the tile's key l for the softmax: step l / kps's score of group l % kps,
    // from that group's first lane.
    g.line(j, "%lstep = arith.divui %lanei, %ckps : index");
    g.line(j, "%lg = arith.remui %lanei, %ckps : index");
    g.line(j, "%lsrc0 = arith.muli %lg, %clk : index");
    g.line(j, "%lsrc = arith.index_cast %lsrc0 : index to i32");
    g.line(j, "%kg32 = arith.index_cast %kg : index to i32");
    g.line(
        j,
        format!(
            "{res}:{} = scf.for %t0 = %t1s to %khi step %cstep iter_args(%m = %ninf, %l = %zero, {}) -> (f32, f32, {}) {{",
            2 + vch,
            iters.join(", "),
            tys.join(", ")
        ),
    );
    let k = j + 2;
    g.line(k, "%tg = arith.addi %t0, %kg : index");
    // Scores: step s, group kg's key t0 + s * kps + kg (past the end: key t0, a valid row,
    // whose score is -inf).
    let mut own = "%ninf".to_string();
    let mut keys = Vec::new();
    for st in 0..lk {
        let off = g.let_(k, format!("arith.constant {} : index", st * kps));
        let key = g.let_(k, format!("arith.addi %tg, {off} : index"));
        let valid = g.let_(k, format!("arith.cmpi ult, {key}, %khi : index"));
        let kc_i = g.let_(k, format!("arith.select {valid}, {key}, %t0 : index"));
        // One chain of fmas: the steps' chains are independent.
        let mut dot = "%zero".to_string();
        for c in 0..kch as usize {
            let kv = g.let_(k, format!("vector.load %K[%layer, %slot, {kc_i}, %kvh, {}] {{alignment = 16}} : {km}, vector<{kw}x{kt}>", kdims[c]));
            let kf = if kc.dtype == DType::F32 { kv } else { g.let_(k, format!("arith.extf {kv} : vector<{kw}x{kt}> to vector<{kw}xf32>")) };
            for (x, qx) in qvals[c].iter().enumerate() {
                let kx = g.let_(k, format!("vector.extract {kf}[{x}] : f32 from vector<{kw}xf32>"));
                dot = g.let_(k, format!("math.fma {qx}, {kx}, {dot} : f32"));
            }
        }
        // The key's lanes are lk consecutive lanes: offsets lk / 2, .., 1.
        let dot = g.shuffle_xor(k, &dot, "addf", (0..).map(|i| (lk / 2) >> i).take_while(|o| *o >= 1));
        let sc = g.let_(k, format!("arith.mulf {dot}, %scale : f32"));
        let scm = g.let_(k, format!("arith.select {valid}, {sc}, %ninf : f32"));
        let got = g.fresh();
        g.line(k, format!("{got}, {got}_ok = gpu.shuffle idx {scm}, %lsrc, %w32 : f32"));
        let cs = g.let_(k, format!("arith.constant {st} : index"));
        let mine = g.let_(k, format!("arith.cmpi eq, %lstep, {cs} : index"));
        own = g.let_(k, format!("arith.select {mine}, {got}, {own} : f32"));
        keys.push(kc_i);
    }
    // The tile's max, the rescale of what came before, and the probabilities.
    let tmax = g.shuffle_xor(k, &own, "maximumf", WARP_OFFSETS);
    let mn = g.let_(k, format!("arith.maximumf %m, {tmax} : f32"));
    let dm = g.let_(k, format!("arith.subf %m, {mn} : f32"));
    let alpha = g.exp(k, &dm);
    let ds = g.let_(k, format!("arith.subf {own}, {mn} : f32"));
    let e = g.exp(k, &ds);
    g.line(k, "%mykey = arith.addi %t0, %lanei : index");
    g.line(k, "%myvalid = arith.cmpi ult, %mykey, %khi : index");
    let p = g.let_(k, format!("arith.select %myvalid, {e}, %zero : f32"));
    let psum = g.shuffle_xor(k, &p, "addf", WARP_OFFSETS);
    let ln = g.let_(k, format!("math.fma %l, {alpha}, {psum} : f32"));
    let pr = via_f16(&mut g, k, &p, f16_cache);
    let av = g.let_(k, format!("vector.broadcast {alpha} : f32 to {vty}"));
    let mut accs: Vec<String> = (0..vch).map(|c| g.let_(k, format!("arith.mulf %acc{c}, {av} : {vty}"))).collect();
    // Values: step s's key of group kg, weighted by its probability (from lane s * kps + kg).
    for (st, kc_i) in keys.iter().enumerate() {
        let off = g.let_(k, format!("arith.constant {} : i32", st as i64 * kps));
        let src = g.let_(k, format!("arith.addi %kg32, {off} : i32"));
        let ps = g.fresh();
        g.line(k, format!("{ps}, {ps}_ok = gpu.shuffle idx {pr}, {src}, %w32 : f32"));
        let pv = g.let_(k, format!("vector.broadcast {ps} : f32 to {vty}"));
        for (c, acc) in accs.iter_mut().enumerate() {
            let vv = g.let_(k, format!("vector.load %V[%layer, %slot, {kc_i}, %kvh, {}] {{alignment = 16}} : {vm}, vector<{vw}x{vt}>", vdims[c]));
            let vf = if vc.dtype == DType::F32 { vv } else { g.let_(k, format!("arith.extf {vv} : vector<{vw}x{vt}> to {vty}")) };
            *acc = g.let_(k, format!("vector.fma {pv}, {vf}, {acc} : {vty}"));
        }
    }
    g.line(k, format!("scf.yield {mn}, {ln}, {} : f32, f32, {}", accs.join(", "), tys.join(", ")));
    g.line(j, "}");
    // The key groups' value sums meet (every lane ends with its 16 values' totals); the
    // first group's lanes store them, lane 0 the warp's max and sum.
    // (The groups are lanes lk apart: offsets lk, 2 lk, .., 16.)
    let mut sums = Vec::new();
    for c in 0..vch {
        let mut elems = Vec::new();
        for x in 0..vw {
            let e = g.let_(j, format!("vector.extract {res}#{}[{x}] : f32 from {vty}", 2 + c));
            elems.push(g.shuffle_xor(j, &e, "addf", (0..).map(|i| lk << i).take_while(|o| *o < 32)));
        }
        sums.push(g.let_(j, format!("vector.from_elements {} : {vty}", elems.join(", "))));
    }
    g.line(j, format!("scf.yield {res}#0, {res}#1, {} : f32, f32, {}", sums.join(", "), tys.join(", ")));
    let j = j0;
    let k = j + 2;
    g.line(j, "} else {");
    g.line(k, format!("scf.yield %ninf, %zero, {} : f32, f32, {}", inits.join(", "), tys.join(", ")));
    g.line(j, "}");
    let sums: Vec<String> = (0..vch).map(|c| format!("{busy}#{}", 2 + c)).collect();
    g.line(j, "%g0 = arith.cmpi eq, %kg, %c0 : index");
    g.line(j, "scf.if %g0 {");
    g.line(k, "%pb = arith.muli %warp, %cd : index");
    for (c, v) in sums.iter().enumerate() {
        let at = g.let_(k, format!("arith.addi %pb, {} : index", vdims[c]));
        g.line(k, format!("vector.store {v}, %part[{at}] : {part_t}, {vty}"));
    }
    g.line(j, "}");
    g.line(j, "scf.if %lane0 {");
    g.line(k, format!("memref.store {busy}#0, %stat[%warp] : {stat_t}"));
    g.line(k, "%ls = arith.addi %warp, %c32 : index");
    g.line(k, format!("memref.store {busy}#1, %stat[%ls] : {stat_t}"));
    g.line(j, "}");
    g.line(j, "gpu.barrier");
    g.line(j, "%c96 = arith.constant 96 : index");
    g.line(j, "%c97 = arith.constant 97 : index");
    // Warp 0 weighs the warps: w = exp(max_w - max) / sum, sum = sum_w sum_w * exp(..).
    g.line(j, "%w0 = arith.cmpi eq, %warp, %c0 : index");
    g.line(j, "scf.if %w0 {");
    g.line(k, format!("%cwarps = arith.constant {warps} : index"));
    g.line(k, "%have = arith.cmpi ult, %lanei, %cwarps : index");
    g.line(k, "%lsl = arith.addi %lanei, %c32 : index");
    let (mw, lw) = (g.fresh(), g.fresh());
    g.line(k, format!("{mw}, {lw} = scf.if %have -> (f32, f32) {{"));
    let mwv = g.let_(k + 2, format!("memref.load %stat[%lanei] : {stat_t}"));
    let lwv = g.let_(k + 2, format!("memref.load %stat[%lsl] : {stat_t}"));
    g.line(k + 2, format!("scf.yield {mwv}, {lwv} : f32, f32"));
    g.line(k, "} else {");
    g.line(k + 2, "scf.yield %ninf, %zero : f32, f32");
    g.line(k, "}");
    let gmax = g.shuffle_xor(k, &mw, "maximumf", WARP_OFFSETS);
    let dw = g.let_(k, format!("arith.subf {mw}, {gmax} : f32"));
    let ew = g.exp(k, &dw);
    // An empty warp (no keys) has sum 0 and max -inf: weight 0.
    let some = g.let_(k, format!("arith.cmpf ogt, {lw}, %zero : f32"));
    let wgt = g.let_(k, format!("arith.select {some}, {ew}, %zero : f32"));
    let lwt = g.let_(k, format!("arith.mulf {lw}, {wgt} : f32"));
    let total = g.shuffle_xor(k, &lwt, "addf", WARP_OFFSETS);
    // A split with no keys (fewer keys than splits) stores zeros, with sum 0.
    let wq = g.let_(k, format!("arith.divf {wgt}, {total} : f32"));
    let any = g.let_(k, format!("arith.cmpf ogt, {total}, %zero : f32"));
    let wn = g.let_(k, format!("arith.select {any}, {wq}, %zero : f32"));
    g.line(k, "scf.if %have {");
    g.line(k + 2, "%wsl = arith.addi %lsl, %c32 : index");
    g.line(k + 2, format!("memref.store {wn}, %stat[%wsl] : {stat_t}"));
    g.line(k, "}");
    g.line(k, "scf.if %lane0 {");
    g.line(k + 2, format!("memref.store {gmax}, %stat[%c96] : {stat_t}"));
    g.line(k + 2, format!("memref.store {total}, %stat[%c97] : {stat_t}"));
    g.line(k, "}");
    g.line(j, "}");
    g.line(j, "gpu.barrier");
    // Thread d's output value: the warps' values, weighed, in warp order.
    g.line(j, "scf.for %d = %tid to %cd step %cthreads {");
    let mut sum = "%zero".to_string();
    for w in 0..warps {
        let cw = g.let_(k, format!("arith.constant {} : index", w as i64 * hd));
        let at = g.let_(k, format!("arith.addi %d, {cw} : index"));
        let x = g.let_(k, format!("memref.load %part[{at}] : {part_t}"));
        let ws = g.let_(k, format!("arith.constant {} : index", 64 + w));
        let wv = g.let_(k, format!("memref.load %stat[{ws}] : {stat_t}"));
        sum = g.let_(k, format!("math.fma {x}, {wv}, {sum} : f32"));
    }
    if split {
        g.line(k, "%single = arith.cmpi eq, %nact, %c1 : index");
        g.line(k, "scf.if %single {");
        let y = output_value(&mut g, k + 2, &sum, (att_dt, out.dtype));
        g.line(k + 2, format!("memref.store {y}, %O[%row, %hi, %d] : {ot}"));
        g.line(k, "} else {");
        g.line(k + 2, format!("memref.store {sum}, %R[%prow, %d] : {wt}"));
        g.line(k, "}");
    } else {
        let y = output_value(&mut g, k, &sum, (att_dt, out.dtype));
        g.line(k, format!("memref.store {y}, %O[%row, %hi, %d] : {ot}"));
    }
    g.line(j, "}");
    if split {
        g.line(j, format!("%blkmax = memref.load %stat[%c96] : {stat_t}"));
        g.line(j, format!("%bsum = memref.load %stat[%c97] : {stat_t}"));
        g.line(j, "%split_rows = arith.cmpi ugt, %nact, %c1 : index");
        g.line(j, "scf.if %split_rows {");
        combine_splits(&mut g, j + 2, hd, "%blkmax", "%bsum", (att_dt, out.dtype), ot, wt);
        g.line(j, "}");
    }
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
    let last = g.arrive(i, "attention_arrivals", "%srow", "%nact", "%tid", "%flag");
    g.line(i, "%dmine = arith.cmpi ult, %tid, %cd : index");
    let combine = g.let_(i, format!("arith.andi {last}, %dmine : i1"));
    g.line(i, format!("scf.if {combine} {{"));
    let k = i + 2;
    g.line(k, "%pfirst = arith.muli %srow, %nsplit : index");
    g.line(k, "%pend = arith.addi %pfirst, %nact : index");
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
