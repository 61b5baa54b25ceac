//! Matrix-vector products for the tensor-core matmuls' smallest inputs (decode at batch 1
//! to [`MAX_ROWS`]): a bf16/f16 `A[M, K] @ B[K, N]` is bound by reading B once, and 128-row
//! tensor-core tiles waste most of their work and bandwidth on it.
//!
//! Each block owns `8 * 256 / lanes` columns and a chunk of K (grid: column blocks x K
//! chunks). Its 256 threads are column groups of 8 columns (one 16-byte load of a B row
//! each, so a warp reads 512 contiguous bytes) by `lanes` lanes of K; a thread walks its
//! chunk's rows `k = lane, lane + lanes, ...` several loads ahead, multiplying each into
//! every row of A. The K lanes meet in shared memory (with one lane, each thread's sums
//! are its columns') and each block writes its chunk's partial sums to `P[chunk, m, N]`, a
//! global of its module (no allocation per call).
//! The last block of a column block to finish (an atomic count per column block) sums the
//! chunks in order and applies the epilogue, so a product is one launch: the separate
//! reduction kernel was a second graph node per projection in every decode step.
//!
//! The chunks are sized from K and N ([`Config::grid`]) for a grid of about `blocks`
//! blocks: a fixed chunk left Llama's 1024-column K/V projections 64 blocks on a 132-SM
//! card. At most `max_chunks` chunks keep the reduction short.
//! One row of A (decode at batch 1) takes a kernel of its own (`@gemv1`), which does a
//! quarter of the 4-row kernel's multiplies and loads of A.

use crate::gpu_text::{KernelText as Gen, ARRIVAL_FLAG};
use crate::lower::{BindingType, KernelSpec};
use std::fmt::Write;
use max_dialects::DType;

/// Most rows of A the matrix-vector kernel takes (larger M use the tensor cores).
pub const MAX_ROWS: usize = 4;
/// Threads per block: column groups x K lanes.
const THREADS: i64 = 256;

/// The kernel's shape. `MAX_GPU_GEMV=lanes=2,ahead=8,blocks=1320,max_chunks=64` overrides
/// the defaults (tuning runs, `benches/gpu/tune_gemv.sh`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// K lanes per block (1, 2, 4 or 8): a block covers `8 * 256 / lanes` columns.
    pub lanes: i64,
    /// B rows a thread loads before using them.
    pub ahead: i64,
    /// Blocks the host aims the grid at (column blocks x K chunks).
    pub blocks: i64,
    /// Most K chunks: each output column's reduction adds that many partial sums, 8 loads
    /// in flight at a time, in one thread (a 1024-column projection in 128 chunks spent
    /// more time in its reduction than reading its weights).
    pub max_chunks: i64,
}

impl Default for Config {
    fn default() -> Self {
        Config { lanes: 8, ahead: 4, blocks: 896, max_chunks: 32 }
    }
}

impl Config {
    /// The defaults, or `MAX_GPU_GEMV`'s overrides.
    pub fn current() -> Config {
        let mut c = Config::default();
        crate::tuning::apply_settings("MAX_GPU_GEMV", std::env::var("MAX_GPU_GEMV").ok(), |k, x| {
            match k {
                "lanes" if [1, 2, 4, 8].contains(&x) => c.lanes = x,
                "ahead" if (1..=16).contains(&x) => c.ahead = x,
                "blocks" if x > 0 => c.blocks = x,
                "max_chunks" if x > 0 => c.max_chunks = x,
                _ => return false,
            }
            true
        });
        c
    }

    /// Columns per block.
    pub fn cols(&self) -> i64 {
        8 * THREADS / self.lanes
    }

    /// Rows of B a block's threads load per loop step; chunks of K are multiples of it.
    pub fn step(&self) -> i64 {
        self.lanes * self.ahead
    }

    /// The grid for `A[M, k] @ B[k, n]` (k a multiple of the step): column blocks, rows of K
    /// per chunk (a multiple of the step) and chunks, about `blocks` blocks in all and at
    /// most `max_chunks` chunks. The last chunk may be shorter, by whole steps.
    pub fn grid(&self, k: i64, n: i64) -> (i64, i64, i64) {
        let div_ceil = |a: i64, b: i64| (a + b - 1) / b;
        let (step, gx) = (self.step(), div_ceil(n, self.cols()));
        let want = div_ceil(self.blocks, gx).min(self.max_chunks).min(div_ceil(k, step)).max(1);
        let kc = div_ceil(div_ceil(k, want), step) * step;
        (gx, kc, div_ceil(k, kc))
    }
}

/// Whether `A @ B` (types `a`, `b`) can take the matrix-vector kernel: bf16/f16, static K a
/// multiple of the loop step and static N a multiple of 8.
pub fn applies(a: &BindingType, b: &BindingType) -> bool {
    let step = Config::current().step();
    matches!(a.dtype, DType::BF16 | DType::F16)
        && a.dtype == b.dtype
        && a.dims.len() == 2
        && b.dims.len() == 2
        && a.dims[1].is_some_and(|k| k > 0 && k % step == 0)
        && b.dims[1].is_some_and(|n| n > 0 && n % 8 == 0)
}

/// Host code: the launch of `@gemv1` (one row) or `@gemv` (in module `module`) into a
/// partial-sum buffer that the kernel itself reduces, when `%m` is 1 to [`MAX_ROWS`] (`%m`,
/// `%n`, `%c1` in scope); `otherwise` runs for other M. `a` and `b` are the operands (which
/// [`applies`] accepted); `out_args` are the kernel's operands after the chunk length (the
/// epilogue's and the output).
pub fn host(module: &str, a: &BindingType, b: &BindingType, out_args: &str, otherwise: &str) -> String {
    host_with(module, a, b, &format!("%b0 : {}, %b1 : {}", a.memref(), b.memref()), out_args, otherwise)
}

/// [`host`] with the kernels' leading arguments `operands` (A's or its sources', then B's),
/// for kernels that compute A themselves ([`computed_a_kernels`]).
pub fn host_with(module: &str, a: &BindingType, b: &BindingType, operands: &str, out_args: &str, otherwise: &str) -> String {
    let (k, n) = (a.dims[1].expect("applies: static K"), b.dims[1].expect("applies: static N"));
    let (gx, kc, chunks) = Config::current().grid(k, n);
    format!(
        "    %gv_max = arith.constant {MAX_ROWS} : index
    %gv_le = arith.cmpi ule, %m, %gv_max : index
    %gv_ge = arith.cmpi uge, %m, %c1 : index
    %gv_small = arith.andi %gv_le, %gv_ge : i1
    scf.if %gv_small {{
      %gv_threads = arith.constant {THREADS} : index
      %gv_gx = arith.constant {gx} : index
      %gv_kc = arith.constant {kc} : index
      %gv_chunks = arith.constant {chunks} : index
      %gv_one = arith.cmpi eq, %m, %c1 : index
      scf.if %gv_one {{
        gpu.launch_func @{module}::@gemv1 blocks in (%gv_gx, %gv_chunks, %c1) threads in (%gv_threads, %c1, %c1) args({operands}, %gv_kc : index{out_args})
      }} else {{
        gpu.launch_func @{module}::@gemv blocks in (%gv_gx, %gv_chunks, %c1) threads in (%gv_threads, %c1, %c1) args({operands}, %gv_kc : index{out_args})
      }}
    }} else {{
{otherwise}    }}
"
    )
}

/// The kernels `@gemv1` (one row of A) and `@gemv` (up to [`MAX_ROWS`]) of the matmul
/// `spec` (output type `tc`): block `(x, y)` writes `P[y, m, x * cols ..]` for every row `m`,
/// summing rows `y * kc ..` of K; the last of column block x's chunks to finish sums them
/// and stores the epilogue's values into C. Blocks count their arrivals in
/// `@gemv_arrivals`, one counter per column block, zero when the module loads and put back
/// to zero by each last block (kernels on one stream never overlap).
pub fn kernel(spec: &KernelSpec, ta: &str, tb: &str, tc: &str, dt: DType) -> String {
    kernels(spec, &Source::Plain(ta), tb, tc, dt)
}

/// The kernels `@gemv1` and `@gemv` of [`kernel`] for an A that each block computes for
/// its chunk of K ([`ComputedA`], [`crate::gpu_prologue`]) into shared memory before its
/// loop: the kernel that stored A was a launch of its own before each such projection of a
/// decode step. Their launch arguments: A's operands, then [`kernel`]'s from B on.
pub(crate) fn computed_a_kernels(spec: &KernelSpec, a: &dyn ComputedA, tb: &str, tc: &str, dt: DType) -> String {
    kernels(spec, &Source::Computed(a), tb, tc, dt)
}

/// An A operand the matrix-vector kernel computes from other operands.
pub(crate) trait ComputedA {
    /// The kernel parameters of A's operands (`%name: type, ...`).
    fn params(&self) -> String;
    /// An operand shaped like A, `[M, K]`, whose dims the kernel reads: (SSA name, type).
    fn shaped(&self) -> (String, String);
    /// Kernel code run by every thread of the block (`threads` of them) before row `row` (an
    /// index, clamped to M - 1) is staged, at the kernel's top level (it may reduce over the
    /// block); returns the values [`ComputedA::value`] reads. The names `%w32`, `%warp`,
    /// `%lane0`, `%pred` (block reductions) and `%tid`, `%K`, `%fzero`, `%c0` are in scope.
    fn setup(&self, g: &mut Gen, indent: usize, row: &str, threads: usize) -> Vec<String>;
    /// Kernel code computing `A[row, k]`, as f32 rounded to A's dtype. `tag` is unique per
    /// call in one kernel.
    fn value(&self, g: &mut Gen, indent: usize, row: &str, k: &str, setup: &[String], tag: &str) -> String;
}

/// Kernel code: the names [`ComputedA::setup`] may use for block reductions over `threads`
/// threads (`%tid` and `%c0` in scope): `%w32`, `%warp`, `%lane0`, and `%pthreads`.
pub(crate) fn block_names(g: &mut Gen, i: usize, threads: usize) {
    g.line(i, "%w32 = arith.constant 32 : i32");
    g.line(i, "%pc32 = arith.constant 32 : index");
    g.line(i, "%warp = arith.divui %tid, %pc32 : index");
    g.line(i, "%plane = arith.remui %tid, %pc32 : index");
    g.line(i, "%lane0 = arith.cmpi eq, %plane, %c0 : index");
    g.line(i, format!("%pthreads = arith.constant {threads} : index"));
}

/// Whether [`computed_a_kernels`] fit a block's shared memory for `A[M, k] @ B[k, n]`: A's
/// chunk for [`MAX_ROWS`] rows next to the K lanes' sums.
pub fn computed_a_fits(k: i64, n: i64) -> bool {
    let c = Config::current();
    let kc = c.grid(k, n).1;
    (MAX_ROWS as i64 * kc + c.lanes * c.cols() * MAX_ROWS as i64) * 4 + 64 <= 48 * 1024
}

/// The type of a module's partial sums, `[chunks, MAX_ROWS, n]` f32 in global memory: a
/// module global instead of a buffer allocated at each call (a memory node before and after
/// every projection in a recorded CUDA graph).
fn partials_type(chunks: i64, n: i64) -> String {
    format!("memref<{chunks}x{MAX_ROWS}x{n}xf32, #gpu.address_space<global>>")
}

/// Where a kernel reads A.
enum Source<'a> {
    /// A itself (`%A`, of this type).
    Plain(&'a str),
    /// Computed by each block ([`computed_a_kernels`]).
    Computed(&'a dyn ComputedA),
}

fn kernels(spec: &KernelSpec, src: &Source, tb: &str, tc: &str, dt: DType) -> String {
    let c = Config::current();
    let (k, n) = (spec.inputs[0].dims[1].unwrap_or(0), spec.inputs[1].dims[1].unwrap_or(0));
    let (gx, _, chunks) = c.grid(k, n);
    let mut s = format!("    {}\n", crate::gpu_text::arrival_counters("gemv_arrivals", gx as usize));
    let _ = writeln!(s, "    memref.global \"private\" @gemv_partials : {}", partials_type(chunks, n));
    s.push_str(&kernel_rows(spec, src, tb, tc, dt, c, 1, "gemv1"));
    s.push_str(&kernel_rows(spec, src, tb, tc, dt, c, MAX_ROWS, "gemv"));
    s
}

#[allow(clippy::too_many_arguments)]
fn kernel_rows(spec: &KernelSpec, src: &Source, tb: &str, tc: &str, dt: DType, cfg: Config, nrows: usize, name: &str) -> String {
    let Config { lanes, ahead, .. } = cfg;
    let (cols, step) = (cfg.cols(), cfg.step());
    let groups = THREADS / lanes;
    let t = dt.mlir_name();
    let mut g = Gen::new("g");
    let (i, j) = (6, 10);
    let rows: Vec<usize> = (0..nrows).collect();
    let shared = format!("memref<{}xf32, #gpu.address_space<workgroup>>", lanes * cols * nrows as i64);
    let flag = ARRIVAL_FLAG;
    let mut workgroup = vec![format!("%flag : {flag}")];
    if lanes > 1 {
        workgroup.push(format!("%red : {shared}"));
    }
    // A's chunk (rows x the chunk's K) for a kernel that computes A, and the slots of its
    // block reductions.
    let (k, n) = (spec.inputs[0].dims[1].unwrap_or(0), spec.inputs[1].dims[1].unwrap_or(0));
    let (_, kc_static, chunks) = cfg.grid(k, n);
    // The chunks the host launches (over B's rows, which a computed A's operand may exceed):
    // the last block sums that many partials.
    let launched_chunks = spec.inputs[1].dims[0].map_or(chunks, |kb| cfg.grid(kb, n).2);
    let a_chunk = format!("memref<{}xf32, #gpu.address_space<workgroup>>", nrows as i64 * kc_static);
    let (a_params, (a_var, ta_dims)) = match src {
        Source::Plain(ta) => (format!("%A: {ta}"), ("%A".to_string(), ta.to_string())),
        Source::Computed(a) => {
            workgroup.push(format!("%As : {a_chunk}"));
            workgroup.push(format!("%pred : {}", crate::gpu_prologue::PRED));
            (a.params(), a.shaped())
        }
    };
    let workgroup = format!(" workgroup({})", workgroup.join(", "));
    let extra: String = crate::gpu_epilogue::params(spec).iter().map(|p| format!(", {p}")).collect();
    g.line(4, format!("gpu.func @{name}({a_params}, %B: {tb}, %kc: index{extra}, %C: {tc}){workgroup} kernel attributes {{known_block_size = array<i32: {THREADS}, 1, 1>}} {{"));
    // The partial sums live in the module's global (one kernel runs at a time on the stream,
    // as for the arrival counters), viewed as the reduction code reads them.
    let pt = partials_type(chunks, n);
    let generic = pt.replace(", #gpu.address_space<global>", "");
    g.line(i, format!("%Pg = memref.get_global @gemv_partials : {pt}"));
    g.line(i, format!("%Pc = memref.memory_space_cast %Pg : {pt} to {generic}"));
    g.line(i, format!("%P = memref.cast %Pc : {generic} to memref<?x?x?xf32>"));
    let consts: std::collections::BTreeSet<i64> = [0, 1, 8].into_iter().chain((1..ahead).map(|u| lanes * u)).collect();
    for c in consts {
        g.line(i, format!("%c{c} = arith.constant {c} : index"));
    }
    g.line(i, format!("%ccols = arith.constant {cols} : index"));
    g.line(i, format!("%cgroups = arith.constant {groups} : index"));
    g.line(i, format!("%cstep = arith.constant {step} : index"));
    g.line(i, format!("%M = memref.dim {a_var}, %c0 : {ta_dims}"));
    // K is B's rows: a computed A's operand may be wider (a split's).
    g.line(i, format!("%K = memref.dim %B, %c0 : {tb}"));
    g.line(i, format!("%N = memref.dim %B, %c1 : {tb}"));
    g.line(i, "%tid = gpu.thread_id x");
    g.line(i, "%bx = gpu.block_id x");
    g.line(i, "%by = gpu.block_id y");
    g.line(i, "%cg = arith.remui %tid, %cgroups : index");
    g.line(i, "%kl = arith.divui %tid, %cgroups : index");
    g.line(i, "%nb = arith.muli %bx, %ccols : index");
    g.line(i, "%cg8 = arith.muli %cg, %c8 : index");
    g.line(i, "%n0 = arith.addi %nb, %cg8 : index");
    g.line(i, "%k0 = arith.muli %by, %kc : index");
    g.line(i, "%kstart = arith.addi %k0, %kl : index");
    // The chunk's end; chunk lengths and K are multiples of the step, so every row a loop
    // step loads is inside the chunk.
    g.line(i, "%kc_end = arith.addi %k0, %kc : index");
    g.line(i, "%kend = arith.minui %kc_end, %K : index");
    g.line(i, "%nok = arith.cmpi ult, %n0, %N : index");
    g.line(i, "%z8 = arith.constant dense<0.0> : vector<8xf32>");
    // Row m of A, or (past M) the last row, whose products are then zeroed: no branches in
    // the loop, so all its loads can be in flight together.
    g.line(i, "%mlast = arith.subi %M, %c1 : index");
    for &m in &rows {
        g.line(i, format!("%cm{m} = arith.constant {m} : index"));
        g.line(i, format!("%in{m} = arith.cmpi ult, %cm{m}, %M : index"));
        g.line(i, format!("%rm{m} = arith.minui %cm{m}, %mlast : index"));
    }
    g.line(i, "%fzero = arith.constant 0.0 : f32");
    prefetch_first_step(&mut g, i, tb, dt, ahead, lanes);
    // Nothing above reads memory an earlier kernel writes (A may be the output of the
    // kernel just before).
    g.line(i, crate::gpu::WAIT_HERE);
    if let Source::Computed(a) = src {
        stage_a(&mut g, i, &rows, *a, kc_static, &a_chunk);
    }
    let vtys = vec!["vector<8xf32>"; nrows].join(", ");
    let zeros = vec!["%z8"; nrows].join(", ");
    let inits: Vec<String> = rows.iter().map(|m| format!("%a{m} = %z8")).collect();
    // This thread's sums over its rows of the chunk (none past N).
    g.line(i, format!("%acc:{nrows} = scf.if %nok -> ({vtys}) {{"));
    g.line(i + 2, format!("%r:{nrows} = scf.for %k = %kstart to %kend step %cstep iter_args({}) -> ({vtys}) {{", inits.join(", ")));
    // `ahead` rows of B loaded first, then used.
    let mut bs = Vec::new();
    for u in 0..ahead {
        let ku = if u == 0 { "%k".to_string() } else { g.let_(j, format!("arith.addi %k, %c{} : index", lanes * u)) };
        let bv = g.let_(j, format!("vector.load %B[{ku}, %n0] {{alignment = 16}} : {tb}, vector<8x{t}>"));
        bs.push((ku, bv));
    }
    let mut acc: Vec<String> = rows.iter().map(|m| format!("%a{m}")).collect();
    for (ku, bv) in &bs {
        let bf = g.let_(j, format!("arith.extf {bv} : vector<8x{t}> to vector<8xf32>"));
        for &m in &rows {
            let xf = match src {
                Source::Plain(ta) => {
                    let xa = g.let_(j, format!("memref.load %A[%rm{m}, {ku}] : {ta}"));
                    g.let_(j, format!("arith.extf {xa} : {t} to f32"))
                }
                Source::Computed(_) => {
                    let kk = g.let_(j, format!("arith.subi {ku}, %k0 : index"));
                    let mo = g.let_(j, format!("arith.constant {} : index", m as i64 * kc_static));
                    let at = g.let_(j, format!("arith.addi {kk}, {mo} : index"));
                    g.let_(j, format!("memref.load %As[{at}] : {a_chunk}"))
                }
            };
            // One row is always there (M >= 1): no zeroing.
            let xs = if nrows == 1 { xf } else { g.let_(j, format!("arith.select %in{m}, {xf}, %fzero : f32")) };
            let xv = g.let_(j, format!("vector.broadcast {xs} : f32 to vector<8xf32>"));
            acc[m] = g.let_(j, format!("vector.fma {xv}, {bf}, {} : vector<8xf32>", acc[m]));
        }
    }
    g.line(j, format!("scf.yield {} : {vtys}", acc.join(", ")));
    g.line(i + 2, "}");
    g.line(i + 2, format!("scf.yield {} : {vtys}", (0..nrows).map(|m| format!("%r#{m}")).collect::<Vec<_>>().join(", ")));
    g.line(i, "} else {");
    g.line(i + 2, format!("scf.yield {zeros} : {vtys}"));
    g.line(i, "}");
    if lanes == 1 {
        // One lane: each thread's 8 sums are its columns' partial sums.
        for &m in &rows {
            let ok = g.let_(i, format!("arith.andi %nok, %in{m} : i1"));
            g.line(i, format!("scf.if {ok} {{"));
            for e in 0..8 {
                let v = g.let_(i + 2, format!("vector.extract %acc#{m}[{e}] : f32 from vector<8xf32>"));
                let col = if e == 0 {
                    "%n0".to_string()
                } else {
                    let ce = g.let_(i + 2, format!("arith.constant {e} : index"));
                    g.let_(i + 2, format!("arith.addi %n0, {ce} : index"))
                };
                g.line(i + 2, format!("memref.store {v}, %P[%by, %cm{m}, {col}] : memref<?x?x?xf32>"));
            }
            g.line(i, "}");
        }
        reduce_last(&mut g, spec, tc, cols, launched_chunks);
        return g.s;
    }
    // The K lanes' sums meet in shared memory: red[(m * lanes + lane) * cols + column].
    g.line(i, "%lanebase = arith.muli %kl, %ccols : index");
    for &m in &rows {
        let mb = g.let_(i, format!("arith.constant {} : index", m as i64 * lanes * cols));
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
    // Thread t sums columns t, t + 256, ... of the block over the lanes, per row.
    for part in 0..cols / THREADS {
        let off = g.let_(i, format!("arith.constant {} : index", part * THREADS));
        let local = g.let_(i, format!("arith.addi %tid, {off} : index"));
        let col = g.let_(i, format!("arith.addi %nb, {local} : index"));
        let cok = g.let_(i, format!("arith.cmpi ult, {col}, %N : index"));
        for &m in &rows {
            let ok = g.let_(i, format!("arith.andi {cok}, %in{m} : i1"));
            g.line(i, format!("scf.if {ok} {{"));
            let mut s: Option<String> = None;
            for l in 0..lanes {
                let off = g.let_(i + 2, format!("arith.constant {} : index", (m as i64 * lanes + l) * cols));
                let at = g.let_(i + 2, format!("arith.addi {local}, {off} : index"));
                let v = g.let_(i + 2, format!("memref.load %red[{at}] : {shared}"));
                s = Some(match s {
                    None => v,
                    Some(p) => g.let_(i + 2, format!("arith.addf {p}, {v} : f32")),
                });
            }
            g.line(i + 2, format!("memref.store {}, %P[%by, %cm{m}, {col}] : memref<?x?x?xf32>", s.expect("at least one lane")));
            g.line(i, "}");
        }
    }
    reduce_last(&mut g, spec, tc, cols, launched_chunks);
    g.s
}

/// Kernel code: an L2 prefetch of the rows of B this thread loads in its first loop step
/// (`ahead` rows of 16 bytes, every `lanes`-th row from `%kstart`). It comes before the
/// kernel waits for the one ahead of it ([`crate::gpu::wait_for_predecessors`]), so on
/// sm_90 the weights start to stream in while that kernel finishes (safe whoever writes B:
/// [`crate::gpu::prefetch_l2`]).
fn prefetch_first_step(g: &mut Gen, i: usize, tb: &str, dt: DType, ahead: i64, lanes: i64) {
    g.line(i, "scf.if %nok {");
    let j = i + 2;
    g.line(j, format!("%pf_base = memref.extract_aligned_pointer_as_index %B : {tb} -> index"));
    g.line(j, format!("%pf_buf, %pf_off, %pf_sizes:2, %pf_strides:2 = memref.extract_strided_metadata %B : {tb} -> memref<{}>, index, index, index, index, index", dt.mlir_name()));
    g.line(j, format!("%pf_esize = arith.constant {} : index", dt.size_bytes()));
    g.line(j, "%pf_col = arith.muli %n0, %pf_strides#1 : index");
    g.line(j, "%pf_at0 = arith.addi %pf_off, %pf_col : index");
    for u in 0..ahead {
        let row = if u == 0 { "%kstart".to_string() } else { g.let_(j, format!("arith.addi %kstart, %c{} : index", lanes * u)) };
        let r = g.let_(j, format!("arith.muli {row}, %pf_strides#0 : index"));
        let e = g.let_(j, format!("arith.addi %pf_at0, {r} : index"));
        let b = g.let_(j, format!("arith.muli {e}, %pf_esize : index"));
        let a = g.let_(j, format!("arith.addi %pf_base, {b} : index"));
        let a64 = g.let_(j, format!("arith.index_cast {a} : index to i64"));
        g.line(j, crate::gpu::prefetch_l2(&a64));
    }
    g.line(i, "}");
}

/// Kernel code: `%As[m * kc + kk] = A[m, k0 + kk]` for this block's chunk of K, as `a`
/// computes it (zero past K and for rows past M), then a barrier.
fn stage_a(g: &mut Gen, i: usize, rows: &[usize], a: &dyn ComputedA, kc: i64, a_chunk: &str) {
    block_names(g, i, THREADS as usize);
    g.line(i, format!("%pkc = arith.constant {kc} : index"));
    for &m in rows {
        let row = format!("%rm{m}");
        let setup = a.setup(g, i, &row, THREADS as usize);
        g.line(i, "scf.for %pk = %tid to %pkc step %pthreads {");
        let j = i + 2;
        let kk = g.let_(j, "arith.addi %k0, %pk : index");
        let kin = g.let_(j, format!("arith.cmpi ult, {kk}, %K : index"));
        let ok = g.let_(j, format!("arith.andi {kin}, %in{m} : i1"));
        let v = g.fresh();
        g.line(j, format!("{v} = scf.if {ok} -> (f32) {{"));
        let value = a.value(g, j + 2, &row, &kk, &setup, &format!("r{m}"));
        g.line(j + 2, format!("scf.yield {value} : f32"));
        g.line(j, "} else {");
        g.line(j + 2, "scf.yield %fzero : f32");
        g.line(j, "}");
        let mo = g.let_(j, format!("arith.constant {} : index", m as i64 * kc));
        let at = g.let_(j, format!("arith.addi %pk, {mo} : index"));
        g.line(j, format!("memref.store {v}, %As[{at}] : {a_chunk}"));
        g.line(i, "}");
    }
    g.line(i, "gpu.barrier");
}

/// The kernel's end, after its partial sums are stored: the block counts its arrival on its
/// column block's counter, and the last of the column block's chunks to arrive sums every
/// chunk's partials for its columns (in chunk order, as the split-K reduction kernel does,
/// so the bits are the same) and stores the epilogue's values. The other blocks' stores are
/// ordered before its reads by the arrival count ([`Gen::arrive`]). `chunks`, the launch's
/// (grid y), puts every partial load in flight at once (up to 32): the sum is the tail
/// every column block waits for after its last chunk arrives.
fn reduce_last(g: &mut Gen, spec: &KernelSpec, tc: &str, cols: i64, chunks: i64) {
    let i = 6;
    g.line(i, "%S = gpu.grid_dim y");
    let last = g.arrive(i, "gemv_arrivals", "%bx", "%S", "%tid", "%flag");
    g.line(i, format!("scf.if {last} {{"));
    g.line(i + 2, format!("%cparts = arith.constant {} : index", cols / THREADS));
    g.line(i + 2, format!("%cthreads = arith.constant {THREADS} : index"));
    // Thread t takes columns t, t + 256, ... of the block, each for every row.
    g.line(i + 2, "scf.for %part = %c0 to %cparts step %c1 {");
    g.line(i + 4, "%poff = arith.muli %part, %cthreads : index");
    g.line(i + 4, "%plocal = arith.addi %tid, %poff : index");
    g.line(i + 4, "%col = arith.addi %nb, %plocal : index");
    g.line(i + 4, "%colok = arith.cmpi ult, %col, %N : index");
    g.line(i + 4, "scf.if %colok {");
    g.line(i + 6, "scf.for %row = %c0 to %M step %c1 {");
    g.s.push_str(&crate::gpu_epilogue::sum_partials_into(spec, tc, i + 8, Some(chunks as usize)));
    g.line(i + 6, "}");
    g.line(i + 4, "}");
    g.line(i + 2, "}");
    g.line(i, "}");
    g.line(i, "gpu.return");
    g.line(4, "}");
}

#[cfg(test)]
mod tests {
    use super::Config;

    #[test]
    fn grids_aim_at_the_block_count_with_few_enough_chunks() {
        let c = Config::default();
        // Llama-3.1-8B's up projection: 56 column blocks of 256 x 16 chunks of 256 rows.
        assert_eq!(c.grid(4096, 14336), (56, 256, 16));
        // Its K/V projections: the chunk count is capped for the reduction.
        assert_eq!(c.grid(4096, 1024), (4, 128, 32));
        // K = 2240 in chunks of 96: the last one 32 rows, a whole number of steps.
        assert_eq!(c.grid(2240, 256), (1, 96, 24));
        // A wide head (SmolLM2's 576 x 49152): already past the block count, 5 chunks.
        assert_eq!(c.grid(576, 49152), (192, 128, 5));
        // One step of K: one chunk.
        assert_eq!(c.grid(32, 8), (1, 32, 1));
    }
}
