//! Matrix-vector products for the tensor-core matmuls' smallest inputs (decode at batch 1
//! to [`MAX_ROWS`]): a bf16/f16 `A[M, K] @ B[K, N]` is bound by reading B once, and 128-row
//! tensor-core tiles waste most of their work and bandwidth on it.
//!
//! Each block owns [`COLS`] columns and a chunk of K (grid: column blocks x K
//! chunks). Its 256 threads are 32 column groups of 8 columns (one 16-byte load of a B row
//! each, so a warp reads 512 contiguous bytes) by 8 lanes of K; a thread walks its chunk's
//! rows `k = lane, lane + 8, ...` several loads ahead, multiplying each into every row of A.
//! The 8 K lanes meet in shared memory and each block writes its chunk's partial sums to
//! `P[chunk, M, N]`; the split-K reduction kernel ([`crate::gpu_epilogue::reduce_kernel`])
//! sums the chunks and applies the epilogue.

use crate::gpu_text::KernelText as Gen;
use crate::lower::BindingType;
use max_dialects::DType;

/// Most rows of A the matrix-vector kernel takes (larger M use the tensor cores).
pub const MAX_ROWS: usize = 4;
/// Columns per block.
pub const COLS: usize = 256;
/// Threads per block: 32 column groups x 8 K lanes.
const THREADS: usize = 256;

/// The kernel's shape: rows of K per block (`kc`, a multiple of 32) and B rows a thread
/// loads before using them (`ahead`, dividing `kc / 8`). `MAX_GPU_GEMV=kc=512,ahead=8`
/// overrides the defaults (tuning runs).
#[derive(Debug, Clone, Copy)]
struct Config {
    kc: i64,
    ahead: i64,
}

impl Config {
    fn current() -> Config {
        let mut c = Config { kc: 256, ahead: 4 };
        if let Ok(v) = std::env::var("MAX_GPU_GEMV") {
            for kv in v.split(',') {
                match kv.split_once('=').map(|(k, v)| (k.trim(), v.trim().parse::<i64>())) {
                    Some(("kc", Ok(x))) if x > 0 && x % 32 == 0 => c.kc = x,
                    Some(("ahead", Ok(x))) if x > 0 => c.ahead = x,
                    _ => tracing::warn!("MAX_GPU_GEMV: ignoring {kv:?}"),
                }
            }
        }
        if (c.kc / 8) % c.ahead != 0 {
            c.ahead = 1;
        }
        c
    }
}

/// Whether `A @ B` (types `a`, `b`) can take the matrix-vector kernel: bf16/f16, static K a
/// multiple of the K chunk and static N a multiple of 8.
pub fn applies(a: &BindingType, b: &BindingType) -> bool {
    let kc = Config::current().kc;
    matches!(a.dtype, DType::BF16 | DType::F16)
        && a.dtype == b.dtype
        && a.dims.len() == 2
        && b.dims.len() == 2
        && a.dims[1].is_some_and(|k| k > 0 && k % kc == 0)
        && b.dims[1].is_some_and(|n| n > 0 && n % 8 == 0)
}

/// Host code: the launch of `@gemv` into a partial-sum buffer and of `@reduce` from it (in
/// module `module`), when `%m` is 1 to [`MAX_ROWS`] (`%m`, `%n`, `%c0`, `%c1` in scope);
/// `otherwise` runs for other M. `reduce_args` are the reduction's operands after P.
pub fn host(module: &str, ta: &str, tb: &str, reduce_args: &str, otherwise: &str) -> String {
    let rt = crate::gpu_epilogue::REDUCE_THREADS;
    let kc = Config::current().kc;
    format!(
        "    %gv_max = arith.constant {MAX_ROWS} : index
    %gv_le = arith.cmpi ule, %m, %gv_max : index
    %gv_ge = arith.cmpi uge, %m, %c1 : index
    %gv_small = arith.andi %gv_le, %gv_ge : i1
    scf.if %gv_small {{
      %gv_cols = arith.constant {COLS} : index
      %gv_kc = arith.constant {kc} : index
      %gv_threads = arith.constant {THREADS} : index
      %gv_k = memref.dim %b0, %c1 : {ta}
      %gv_gx = arith.ceildivui %n, %gv_cols : index
      %gv_chunks = arith.ceildivui %gv_k, %gv_kc : index
      %gv_p = memref.alloc(%gv_chunks, %m, %n) : memref<?x?x?xf32>
      gpu.launch_func @{module}::@gemv blocks in (%gv_gx, %gv_chunks, %c1) threads in (%gv_threads, %c1, %c1) args(%b0 : {ta}, %b1 : {tb}, %gv_p : memref<?x?x?xf32>)
      %gv_rt = arith.constant {rt} : index
      %gv_gr = arith.ceildivui %n, %gv_rt : index
      gpu.launch_func @{module}::@reduce blocks in (%m, %gv_gr, %c1) threads in (%gv_rt, %c1, %c1) args(%gv_p : memref<?x?x?xf32>{reduce_args})
      memref.dealloc %gv_p : memref<?x?x?xf32>
    }} else {{
{otherwise}    }}
"
    )
}

/// The `@gemv` kernel: block `(x, y)` writes `P[y, m, x * COLS ..]` for every row `m`.
pub fn kernel(ta: &str, tb: &str, dt: DType) -> String {
    let Config { kc, ahead } = Config::current();
    let t = dt.mlir_name();
    let mut g = Gen::new("g");
    let (i, j) = (6, 10);
    let shared = format!("memref<{}xf32, #gpu.address_space<workgroup>>", 8 * COLS * MAX_ROWS);
    g.line(4, format!("gpu.func @gemv(%A: {ta}, %B: {tb}, %P: memref<?x?x?xf32>) workgroup(%red : {shared}) kernel attributes {{known_block_size = array<i32: {THREADS}, 1, 1>}} {{"));
    let consts: std::collections::BTreeSet<i64> = [0, 1, 32].into_iter().chain((1..ahead).map(|u| 8 * u)).collect();
    for c in consts {
        g.line(i, format!("%c{c} = arith.constant {c} : index"));
    }
    g.line(i, format!("%ccols = arith.constant {COLS} : index"));
    g.line(i, format!("%ckc = arith.constant {kc} : index"));
    g.line(i, format!("%cstep = arith.constant {} : index", 8 * ahead));
    g.line(i, format!("%M = memref.dim %A, %c0 : {ta}"));
    g.line(i, format!("%N = memref.dim %B, %c1 : {tb}"));
    g.line(i, "%tid = gpu.thread_id x");
    g.line(i, "%bx = gpu.block_id x");
    g.line(i, "%by = gpu.block_id y");
    g.line(i, "%cg = arith.remui %tid, %c32 : index");
    g.line(i, "%kl = arith.divui %tid, %c32 : index");
    g.line(i, "%nb = arith.muli %bx, %ccols : index");
    g.line(i, "%cg8 = arith.muli %cg, %c8 : index");
    g.line(i, "%n0 = arith.addi %nb, %cg8 : index");
    g.line(i, "%k0 = arith.muli %by, %ckc : index");
    g.line(i, "%kstart = arith.addi %k0, %kl : index");
    g.line(i, "%kend = arith.addi %k0, %ckc : index");
    g.line(i, "%nok = arith.cmpi ult, %n0, %N : index");
    g.line(i, "%z8 = arith.constant dense<0.0> : vector<8xf32>");
    let rows: Vec<usize> = (0..MAX_ROWS).collect();
    // Row m of A, or (past M) the last row, whose products are then zeroed: no branches in
    // the loop, so all its loads can be in flight together.
    g.line(i, "%mlast = arith.subi %M, %c1 : index");
    for &m in &rows {
        g.line(i, format!("%cm{m} = arith.constant {m} : index"));
        g.line(i, format!("%in{m} = arith.cmpi ult, %cm{m}, %M : index"));
        g.line(i, format!("%rm{m} = arith.minui %cm{m}, %mlast : index"));
    }
    g.line(i, "%fzero = arith.constant 0.0 : f32");
    let vtys = ["vector<8xf32>"; MAX_ROWS].join(", ");
    let zeros = ["%z8"; MAX_ROWS].join(", ");
    let inits: Vec<String> = rows.iter().map(|m| format!("%a{m} = %z8")).collect();
    // This thread's sums over its rows of the chunk (none past N).
    g.line(i, format!("%acc:{MAX_ROWS} = scf.if %nok -> ({vtys}) {{"));
    g.line(i + 2, format!("%r:{MAX_ROWS} = scf.for %k = %kstart to %kend step %cstep iter_args({}) -> ({vtys}) {{", inits.join(", ")));
    // `ahead` rows of B loaded first, then used.
    let mut bs = Vec::new();
    for u in 0..ahead {
        let ku = if u == 0 { "%k".to_string() } else { g.let_(j, format!("arith.addi %k, %c{} : index", 8 * u)) };
        let bv = g.let_(j, format!("vector.load %B[{ku}, %n0] {{alignment = 16}} : {tb}, vector<8x{t}>"));
        bs.push((ku, bv));
    }
    let mut acc: Vec<String> = rows.iter().map(|m| format!("%a{m}")).collect();
    for (ku, bv) in &bs {
        let bf = g.let_(j, format!("arith.extf {bv} : vector<8x{t}> to vector<8xf32>"));
        for &m in &rows {
            let xa = g.let_(j, format!("memref.load %A[%rm{m}, {ku}] : {ta}"));
            let xf = g.let_(j, format!("arith.extf {xa} : {t} to f32"));
            let xs = g.let_(j, format!("arith.select %in{m}, {xf}, %fzero : f32"));
            let xv = g.let_(j, format!("vector.broadcast {xs} : f32 to vector<8xf32>"));
            acc[m] = g.let_(j, format!("vector.fma {xv}, {bf}, {} : vector<8xf32>", acc[m]));
        }
    }
    g.line(j, format!("scf.yield {} : {vtys}", acc.join(", ")));
    g.line(i + 2, "}");
    g.line(i + 2, format!("scf.yield {} : {vtys}", (0..MAX_ROWS).map(|m| format!("%r#{m}")).collect::<Vec<_>>().join(", ")));
    g.line(i, "} else {");
    g.line(i + 2, format!("scf.yield {zeros} : {vtys}"));
    g.line(i, "}");
    // The 8 K lanes' sums meet in shared memory: red[(m * 8 + lane) * COLS + column].
    g.line(i, "%lanebase = arith.muli %kl, %ccols : index");
    for &m in &rows {
        let mb = g.let_(i, format!("arith.constant {} : index", m * 8 * COLS));
        let base = g.let_(i, format!("arith.addi %lanebase, {mb} : index"));
        for e in 0..8 {
            let v = g.let_(i, format!("vector.extract %acc#{m}[{e}] : f32 from vector<8xf32>"));
            let ce = g.let_(i, format!("arith.constant {e} : index"));
            let col = g.let_(i, format!("arith.addi %cg8, {ce} : index"));
            let at = g.let_(i, format!("arith.addi {base}, {col} : index"));
            g.line(i, format!("memref.store {v}, %red[{at}] : {shared}"));
        }
    }
    g.line(i, "gpu.barrier");
    // Thread t sums column t of the block over the lanes, per row.
    g.line(i, "%col = arith.addi %nb, %tid : index");
    g.line(i, "%cok = arith.cmpi ult, %col, %N : index");
    for &m in &rows {
        let ok = g.let_(i, format!("arith.andi %cok, %in{m} : i1"));
        g.line(i, format!("scf.if {ok} {{"));
        let mut s: Option<String> = None;
        for l in 0..8 {
            let off = g.let_(i + 2, format!("arith.constant {} : index", (m * 8 + l) * COLS));
            let at = g.let_(i + 2, format!("arith.addi %tid, {off} : index"));
            let v = g.let_(i + 2, format!("memref.load %red[{at}] : {shared}"));
            s = Some(match s {
                None => v,
                Some(p) => g.let_(i + 2, format!("arith.addf {p}, {v} : f32")),
            });
        }
        g.line(i + 2, format!("memref.store {}, %P[%by, %cm{m}, %col] : memref<?x?x?xf32>", s.expect("eight lanes")));
        g.line(i, "}");
    }
    g.line(i, "gpu.return");
    g.line(4, "}");
    g.s
}
