//! The few-rows quantized matmul on the GPU (decode, and a serving batch's decode: up to
//! [`crate::gpu_qmatmul::FEW_ROWS`] rows of activations), in integer arithmetic.
//!
//! A block takes up to [`block_rows`] rows of `x` and [`COLS`] output columns. Its threads
//! first round those rows to 8 bits once, into shared memory, exactly as the CPU kernel
//! rounds them ([`crate::qmatmul_q8`]: per 32-block `d = f16(amax / 127)`, `q =
//! roundeven(x * 127 / amax)`, and where the format needs it the block sum), eight threads
//! a block and four quants to a 32-bit word. Then each warp takes columns in turn, a lane
//! per 32-weight block: the weight quants are unpacked four to a word, lined up with the
//! activation words, and multiplied into each row's words with `dp4a` (a four-way byte dot
//! product with accumulate), so the rows share each block's loads and unpacking. A block's
//! integer sum is exact and is scaled once, `dw * dx * sum` (plus the min's `m * s`), as
//! the CPU scales its integer lanes.
//!
//! The f32 form it replaces decoded every weight to a float, rounded the activations again
//! for every column and summed 32 f32 products: about one warp instruction per weight and
//! row on the PTX emulator, so a decode step was bound by instruction issue rather than by
//! the weight bytes it reads (NOTES items 15 and 16).

use crate::lower::KernelSpec;
use max_dialects::QuantFormat;
use std::fmt::Write;

/// Threads per block.
const THREADS: usize = 256;
/// Warps per block.
const WARPS: usize = THREADS / 32;
/// Columns each warp computes: the block's rounding of its rows is shared by
/// `WARPS * COLS_PER_WARP` columns.
const COLS_PER_WARP: usize = 2;
/// Output columns per block.
pub const COLS: usize = WARPS * COLS_PER_WARP;
/// Threads rounding one 32-block of activations (a word of four quants each).
const BLOCK_THREADS: usize = 8;
/// Most rows a block takes. More would share each weight block's unpacking further, at the
/// cost of a register accumulator per row and of skipped rows when there is one (decode).
const MAX_BLOCK_ROWS: usize = 4;
/// Shared memory a block's rounded rows may take (the block's reduction slots need the
/// rest of 48 KB).
const SHARED_BYTES: i64 = 44 * 1024;
/// The widest K the kernel takes: one row's quants (K bytes) and two f32 per 32-block
/// (K / 4 bytes) within [`SHARED_BYTES`].
pub const MAX_K: i64 = 32768;

/// Rows of `k` values a block takes: as many as fit in shared memory, up to
/// [`MAX_BLOCK_ROWS`] (four up to K = 9011, two up to 18022, then one).
fn block_rows(k: i64) -> usize {
    let per_row = k + k / 4;
    [MAX_BLOCK_ROWS, 2, 1].into_iter().find(|r| *r as i64 * per_row <= SHARED_BYTES).unwrap_or(1)
}

/// What a format needs of each activation block besides its scale.
#[derive(Clone, Copy, PartialEq)]
enum BlockSum {
    None,
    /// `sum(q)` (exact, as f32): the offset of Q4_0 and Q5_0 quants (8, 16).
    Quants,
    /// `f16(d * sum(q))`, the CPU's block sum, which the min of Q4_1, Q5_1 and Q4_K takes.
    Scaled,
}

fn block_sum(format: QuantFormat) -> BlockSum {
    match format {
        QuantFormat::Q4_0 | QuantFormat::Q5_0 => BlockSum::Quants,
        QuantFormat::Q4_1 | QuantFormat::Q5_1 | QuantFormat::Q4K => BlockSum::Scaled,
        QuantFormat::Q8_0 | QuantFormat::Q6K => BlockSum::None,
    }
}

/// Host code: the launch of `module`'s few-rows kernels ([`kernels`]) over `%m` rows of `k`
/// values and `n` columns (`%m` and `%c1` in scope) with arguments `args`: `@qmatmul_few`
/// for one or two rows, `@qmatmul_few_rows` for more. Row blocks are the grid's x, so the
/// blocks of one group of columns run together and all but the first read its weights from
/// L2.
pub(crate) fn launch(module: &str, n: i64, k: i64, args: &str) -> String {
    let rows = block_rows(k);
    let mut s = format!(
        "        %qf_cn = arith.constant {n} : index\n        %qf_cols = arith.constant {COLS} : index\n        \
         %qf_gy = arith.ceildivui %qf_cn, %qf_cols : index\n        %qf_t = arith.constant {THREADS} : index\n"
    );
    let single = format!("gpu.launch_func @{module}::@qmatmul_few blocks in (%m, %qf_gy, %c1) threads in (%qf_t, %c1, %c1) args({args})");
    if rows == 1 {
        let _ = writeln!(s, "        {single}");
        return s;
    }
    // One or two rows take the one-row kernel: the several-row kernel's empty rows cost it
    // more than sharing saves (PTX emulator, Q4_1 576 x 1536: 1 row 0.16 M warp
    // instructions against 0.25 M, 2 rows 0.31 M against 0.33 M).
    let _ = write!(
        s,
        "        %qf_c2 = arith.constant 2 : index\n        %qf_one = arith.cmpi ule, %m, %qf_c2 : index\n        \
         scf.if %qf_one {{\n          {single}\n        }} else {{\n          \
         %qf_br = arith.constant {rows} : index\n          %qf_gx = arith.ceildivui %m, %qf_br : index\n          \
         gpu.launch_func @{module}::@qmatmul_few_rows blocks in (%qf_gx, %qf_gy, %c1) threads in (%qf_t, %c1, %c1) args({args})\n        }}\n"
    );
    s
}

/// The few-rows kernels of the quantized matmul `spec` (bindings x, w, the epilogue's
/// operands, out; `n` columns, `kb` 32-blocks a row) that [`launch`] starts:
/// `@qmatmul_few`, a row a block, and where shared memory holds more, `@qmatmul_few_rows`,
/// [`block_rows`] a block. `xm` is x's type, or with `computed` A's parameters
/// ([`crate::gpu_prologue`]): the kernels then compute A's values as they round them.
/// `extra`: the epilogue's parameters, each followed by `, `.
#[allow(clippy::too_many_arguments)] // the types and sizes of one generated kernel
pub(crate) fn kernels(s: &mut String, spec: &KernelSpec, format: QuantFormat, types: (&str, &str, &str), n: i64, kb: i64, extra: &str, computed: Option<&dyn crate::gpu_gemv::ComputedA>) {
    kernel(s, "qmatmul_few", 1, spec, format, types, (n, kb), extra, computed);
    let rows = block_rows(kb * 32);
    if rows > 1 {
        kernel(s, "qmatmul_few_rows", rows, spec, format, types, (n, kb), extra, computed);
    }
}

/// `@{entry}`: [`kernels`]' kernel taking `rows` rows a block.
#[allow(clippy::too_many_arguments)] // the types and sizes of one generated kernel
fn kernel(s: &mut String, entry: &str, rows: usize, spec: &KernelSpec, format: QuantFormat, (xm, wm, om): (&str, &str, &str), (n, kb): (i64, i64), extra: &str, computed: Option<&dyn crate::gpu_gemv::ComputedA>) {
    let k = kb * 32;
    debug_assert!(k <= MAX_K, "callers check MAX_K");
    let words = kb * 8;
    let aq_t = format!("memref<{}xi32, #gpu.address_space<workgroup>>", rows as i64 * words);
    let ad_t = format!("memref<{}xf32, #gpu.address_space<workgroup>>", rows as i64 * kb);
    let x_params = match computed {
        None => format!("%X: {xm}"),
        Some(_) => xm.to_string(),
    };
    let pred = if computed.is_some() { format!(", %pred : {}", crate::gpu_prologue::PRED) } else { String::new() };
    // The rows' count: from x, or from an operand shaped like A.
    let (m_of, m_ty) = match computed {
        None => ("%X".to_string(), xm.to_string()),
        Some(a) => a.shaped(),
    };
    let _ = write!(
        s,
        "    gpu.func @{entry}({x_params}, %b1: {wm}, {extra}%Y: {om}) workgroup(%Aq : {aq_t}, %Ad : {ad_t}, %As : {ad_t}{pred}) \
         kernel attributes {{known_block_size = array<i32: {THREADS}, 1, 1>}} {{\n      \
         %c0 = arith.constant 0 : index\n      %c1 = arith.constant 1 : index\n      %c2 = arith.constant 2 : index\n      \
         %c3 = arith.constant 3 : index\n      %c4 = arith.constant 4 : index\n      %c8 = arith.constant 8 : index\n      %c32 = arith.constant 32 : index\n      \
         %cbb = arith.constant {} : index\n      %ckb = arith.constant {kb} : index\n      %cn = arith.constant {n} : index\n      \
         %f_threads = arith.constant {THREADS} : index\n      %f_words = arith.constant {words} : index\n      \
         %f_bt = arith.constant {BLOCK_THREADS} : index\n      %f_crows = arith.constant {rows} : index\n      \
         %f_zero = arith.constant 0.0 : f32\n      %g_w32 = arith.constant 32 : i32\n      %f_i0 = arith.constant 0 : i32\n      \
         %f_tid = gpu.thread_id x\n      %f_rb = gpu.block_id x\n      %f_bx = gpu.block_id y\n      \
         %f_r0 = arith.muli %f_rb, %f_crows : index\n",
        format.block_bytes()
    );
    if rows == 1 {
        // The grid has a block per row: the row is one of x's.
        let _ = write!(s, "      %f_nrows = arith.addi %c1, %c0 : index\n      %f_row0 = arith.addi %f_r0, %c0 : index\n      %f_rv0 = arith.constant true\n");
    } else {
        // The block's rows, and whether each is one of x's (the last block's may not be).
        let _ = write!(
            s,
            "      %f_m = memref.dim {m_of}, %c0 : {m_ty}\n      %f_mlast = arith.subi %f_m, %c1 : index\n      \
             %f_left = arith.subi %f_m, %f_r0 : index\n      %f_nrows = arith.minui %f_left, %f_crows : index\n"
        );
        for r in 0..rows {
            let _ = write!(
                s,
                "      %f_cr{r} = arith.constant {r} : index\n      %f_row{r} = arith.addi %f_r0, %f_cr{r} : index\n      \
                 %f_rv{r} = arith.cmpi ult, %f_row{r}, %f_m : index\n"
            );
        }
    }
    prefetch_weights(s, wm);
    // Nothing above reads memory an earlier kernel writes; x (or A's operands) may be the
    // kernel just before's output.
    let _ = writeln!(s, "      {}", crate::gpu::WAIT_HERE);
    let setups = computed.map(|a| {
        // A's per-row values (a norm's scale), each row's reduced over the whole block
        // before the rows are rounded (a row past x's repeats the last).
        let mut g = crate::gpu_text::KernelText::new("st");
        let i = 6;
        g.line(i, "%tid = gpu.thread_id x");
        g.line(i, format!("%K = arith.constant {k} : index"));
        g.line(i, "%fzero = arith.constant 0.0 : f32");
        crate::gpu_gemv::block_names(&mut g, i, THREADS);
        let setups: Vec<Vec<String>> = (0..rows)
            .map(|r| {
                let row = if rows == 1 { "%f_row0".to_string() } else { g.let_(i, format!("arith.minui %f_row{r}, %f_mlast : index")) };
                a.setup(&mut g, i, &row, THREADS)
            })
            .collect();
        s.push_str(&g.s);
        setups
    });
    round_rows(s, (xm, rows), computed.zip(setups.as_ref()), &aq_t, &ad_t, block_sum(format));
    // The dot products: warp w takes columns `COLS * bx + WARPS * c + w`, each lane its
    // weight blocks for every row of the block, `unroll` of them a loop trip.
    let unroll = unroll();
    let accs: Vec<String> = (0..rows).map(|r| format!("%f_a{r} = %f_zero")).collect();
    let f32s = vec!["f32"; rows].join(", ");
    let _ = write!(
        s,
        "      gpu.barrier\n      %f_cwarps = arith.constant {WARPS} : index\n      %f_ccols = arith.constant {COLS} : index\n      \
         %f_cpw = arith.constant {COLS_PER_WARP} : index\n      %f_warp = arith.divui %f_tid, %c32 : index\n      \
         %f_lane = arith.remui %f_tid, %c32 : index\n      %f_j0 = arith.muli %f_bx, %f_ccols : index\n      \
         %f_m4 = arith.constant 252645135 : i32\n      %f_s4 = arith.constant 4 : i32\n      \
         %f_lane0 = arith.cmpi eq, %f_lane, %c0 : index\n      \
         scf.for %f_c = %c0 to %f_cpw step %c1 {{\n      %f_jc = arith.muli %f_c, %f_cwarps : index\n      \
         %f_j1 = arith.addi %f_j0, %f_jc : index\n      %j = arith.addi %f_j1, %f_warp : index\n      \
         %f_jok = arith.cmpi ult, %j, %cn : index\n      scf.if %f_jok {{\n      \
         %f_items = arith.constant {} : index\n      %f_ilast = arith.subi %f_items, %c1 : index\n      \
         %f_trip = arith.constant {} : index\n      \
         %f_acc:{rows} = scf.for %kp_t = %f_lane to %f_items step %f_trip iter_args({}) -> ({f32s}) {{\n",
        kb / lane_blocks(format),
        32 * unroll,
        accs.join(", ")
    );
    // Item u of the trip is `%kp_t + 32 u`, clamped to the last item (a valid address; its
    // term is dropped). Every item's loads come before any item's products, so that all of
    // them are in flight at once; the terms add up in item order, as one item a trip would.
    let (mut loads, mut products) = (String::new(), String::new());
    // Row r's sum after item u.
    let sum = |r: usize, u: usize| if u == 0 { format!("%f_nx{r}") } else { format!("%f_nx{r}_u{u}") };
    for u in 0..unroll {
        let mut l = format!(
            "      %f_uo = arith.constant {} : index\n      %f_kraw = arith.addi %kp_t, %f_uo : index\n      \
             %f_kok = arith.cmpi ult, %f_kraw, %f_items : index\n      %kp = arith.minui %f_kraw, %f_ilast : index\n",
            32 * u
        );
        let w = decode_weights(&mut l, format, wm);
        // A row past x's, or a clamped item, computes its term anyway and drops it by a
        // select: a branch would let LLVM sink the loads into it, after the products of the
        // item before.
        let mut p = String::new();
        for r in 0..rows {
            let term = row_product(&mut p, &w, r, kb, (&aq_t, &ad_t));
            let _ = write!(
                p,
                "      %f_use{r} = arith.andi %f_rv{r}, %f_kok : i1\n      %f_an{r} = arith.addf %f_a{r}, {term} : f32\n      \
                 %f_nx{r} = arith.select %f_use{r}, %f_an{r}, %f_a{r} : f32\n"
            );
        }
        if u == 0 {
            loads.push_str(&l);
            products.push_str(&p);
        } else {
            // The same text under names of its own, adding to the sums of the item before.
            let mut names: std::collections::HashMap<String, String> =
                crate::gpu_text::defined_names(&l).into_iter().chain(crate::gpu_text::defined_names(&p)).map(|d| (d.clone(), format!("{d}_u{u}"))).collect();
            for r in 0..rows {
                names.insert(format!("%f_a{r}"), sum(r, u - 1));
            }
            loads.push_str(&crate::gpu_text::rename(&l, &names));
            products.push_str(&crate::gpu_text::rename(&p, &names));
        }
    }
    s.push_str(&loads);
    s.push_str(&products);
    let _ = writeln!(s, "      scf.yield {} : {f32s}\n      }}", (0..rows).map(|r| sum(r, unroll - 1)).collect::<Vec<_>>().join(", "));
    // Each row's lane sums; lane 0 stores.
    for r in 0..rows {
        let acc = crate::gpu_qmatmul::warp_sum(s, &format!("%f_acc#{r}"), &format!("r{r}"));
        let (code, y) = crate::gpu_epilogue::element(spec, &acc, &format!("%f_row{r}"), "%j", &format!("qf{r}"));
        let _ = write!(
            s,
            "      %f_st{r} = arith.andi %f_lane0, %f_rv{r} : i1\n      scf.if %f_st{r} {{\n{code}        memref.store {y}, %Y[%f_row{r}, %j] : {om}\n      }}\n"
        );
    }
    s.push_str("      }\n      }\n      gpu.return\n    }\n");
}

/// Weight items (blocks, or k-quant pairs) a lane loads in one loop trip, all before it
/// multiplies any: item 18 measured the few-rows kernels at a third of the copy bandwidth,
/// about what one item of some 48 bytes in flight per lane sustains at the latency of a
/// load from memory. `MAX_GPU_QDOT=unroll=N` (1 to 8) overrides it (an A/B knob).
pub const UNROLL: usize = 2;

/// [`UNROLL`], or `MAX_GPU_QDOT`'s `unroll`.
fn unroll() -> usize {
    let mut n = UNROLL;
    crate::tuning::apply_settings("MAX_GPU_QDOT", std::env::var("MAX_GPU_QDOT").ok(), |k, x| {
        let ok = k == "unroll" && (1..=8).contains(&x);
        if ok {
            n = x as usize;
        }
        ok
    });
    n
}

/// Lines of each of the block's columns ([`COLS`] weight rows) prefetched into L2 at the
/// kernel's start: 1 KB a column, 16 KB a block, about a Q4_K column's first loop trip at
/// K = 4096. Bounded so that the blocks resident at once (a few per SM) keep their lines in
/// the 50 MB L2 until they read them.
const PREFETCH_LINES: usize = 8;

/// Kernel code: an L2 prefetch of the first [`PREFETCH_LINES`] 128-byte lines of each of
/// the block's columns, a line a thread, before the block rounds its rows and before it
/// waits for the kernel ahead of it ([`crate::gpu::wait_for_predecessors`]): the first
/// weight loads then find their lines in L2 instead of waiting on DRAM after the rounding
/// (safe whoever writes the weights: [`crate::gpu::prefetch_l2`]).
fn prefetch_weights(s: &mut String, wm: &str) {
    // Bytes: the weights are an i8 matrix (`w.memref()`), a column's blocks a row of it.
    if !wm.contains("xi8") {
        return;
    }
    let _ = write!(
        s,
        "      %pf_lines = arith.constant {PREFETCH_LINES} : index\n      %pf_cols = arith.constant {COLS} : index\n      \
         %pf_c128 = arith.constant 128 : index\n      %pf_col = arith.divui %f_tid, %pf_lines : index\n      \
         %pf_line = arith.remui %f_tid, %pf_lines : index\n      %pf_jb = arith.muli %f_bx, %pf_cols : index\n      \
         %pf_j = arith.addi %pf_jb, %pf_col : index\n      %pf_at = arith.muli %pf_line, %pf_c128 : index\n      \
         %pf_width = memref.dim %b1, %c1 : {wm}\n      %pf_in_block = arith.cmpi ult, %pf_col, %pf_cols : index\n      \
         %pf_in_n = arith.cmpi ult, %pf_j, %cn : index\n      %pf_in_row = arith.cmpi ult, %pf_at, %pf_width : index\n      \
         %pf_ok0 = arith.andi %pf_in_block, %pf_in_n : i1\n      %pf_ok = arith.andi %pf_ok0, %pf_in_row : i1\n      \
         scf.if %pf_ok {{\n      \
         %pf_base = memref.extract_aligned_pointer_as_index %b1 : {wm} -> index\n      \
         %pf_buf, %pf_off, %pf_sizes:2, %pf_strides:2 = memref.extract_strided_metadata %b1 : {wm} -> memref<i8>, index, index, index, index, index\n      \
         %pf_r = arith.muli %pf_j, %pf_strides#0 : index\n      %pf_e0 = arith.addi %pf_off, %pf_r : index\n      \
         %pf_as = arith.muli %pf_at, %pf_strides#1 : index\n      %pf_e = arith.addi %pf_e0, %pf_as : index\n      \
         %pf_a = arith.addi %pf_base, %pf_e : index\n      %pf_a64 = arith.index_cast %pf_a : index to i64\n      \
         {}\n      }}\n",
        crate::gpu::prefetch_l2("%pf_a64")
    );
}

/// The block rounds its rows of the activations, one after the other in shared memory:
/// thread `t` of pass `p` takes word `w = 256 p + t` of them (values `4w .. 4w + 4` of row
/// `w / words`), the eight threads of a 32-block meet by shuffles for its `amax` (and sum),
/// and the first of them stores the block's scale to `%Ad` (and sum to `%As`). A warp runs
/// the passes that hold any of the rows' words, all its lanes each (the shuffles see whole
/// warps); short rows leave the last warps idle. `computed`: A and each row's setup values
/// (f32).
fn round_rows(s: &mut String, (xm, rows): (&str, usize), computed: Option<(&dyn crate::gpu_gemv::ComputedA, &Vec<Vec<String>>)>, aq_t: &str, ad_t: &str, sums: BlockSum) {
    let v4 = "vector<4xf32>";
    let _ = write!(
        s,
        "      %f_f127 = arith.constant 127.0 : f32\n      %f_magic = arith.constant dense<12582912.0> : {v4}\n      \
         %f_z4 = arith.constant dense<0.0> : {v4}\n      %f_total = arith.muli %f_nrows, %f_words : index\n      \
         %f_swarp = arith.divui %f_tid, %c32 : index\n      %f_slane = arith.remui %f_tid, %c32 : index\n      \
         %f_sw0 = arith.muli %f_swarp, %c32 : index\n      %f_sw1 = arith.minui %f_sw0, %f_total : index\n      \
         %f_sleft = arith.subi %f_total, %f_sw1 : index\n      %f_passes = arith.ceildivui %f_sleft, %f_threads : index\n      \
         scf.for %f_p = %c0 to %f_passes step %c1 {{\n      %f_w0 = arith.muli %f_p, %f_threads : index\n      \
         %f_w1 = arith.addi %f_w0, %f_sw0 : index\n      %f_wi = arith.addi %f_w1, %f_slane : index\n      %f_ok = arith.cmpi ult, %f_wi, %f_total : index\n      \
         {}\n      \
         %f_srow = arith.addi %f_r0, %f_rl : index\n      %f_e0 = arith.muli %f_wr, %c4 : index\n      %f_xv = scf.if %f_ok -> ({v4}) {{\n",
        // The word's row of the block, and its place in that row.
        if rows == 1 {
            "%f_rl = arith.addi %c0, %c0 : index\n      %f_wr = arith.addi %f_wi, %c0 : index"
        } else {
            "%f_rl = arith.divui %f_wi, %f_words : index\n      %f_wr = arith.remui %f_wi, %f_words : index"
        }
    );
    match computed {
        None => {
            let _ = writeln!(s, "      %f_xl = vector.load %X[%f_srow, %f_e0] {{alignment = 16}} : {xm}, {v4}\n      scf.yield %f_xl : {v4}");
        }
        Some((a, setups)) => {
            let mut g = crate::gpu_text::KernelText::new("sv");
            // This thread's row's setup values.
            let setup: Vec<String> = (0..setups[0].len())
                .map(|v| {
                    let mut sel = setups[0][v].clone();
                    for (r, row_setup) in setups.iter().enumerate().skip(1) {
                        let cr = g.let_(6, format!("arith.constant {r} : index"));
                        let is = g.let_(6, format!("arith.cmpi eq, %f_rl, {cr} : index"));
                        sel = g.let_(6, format!("arith.select {is}, {}, {sel} : f32", row_setup[v]));
                    }
                    sel
                })
                .collect();
            let mut vals = Vec::new();
            for e in 0..4 {
                let ke = g.let_(6, format!("arith.addi %f_e0, %c{e} : index"));
                vals.push(a.value(&mut g, 6, "%f_srow", &ke, &setup, &format!("q{e}")));
            }
            s.push_str(&g.s);
            let _ = writeln!(s, "      %f_xl = vector.from_elements {} : {v4}\n      scf.yield %f_xl : {v4}", vals.join(", "));
        }
    }
    let _ = write!(
        s,
        "      }} else {{\n      scf.yield %f_z4 : {v4}\n      }}\n      \
         %f_ax = math.absf %f_xv : {v4}\n      %f_am = vector.reduction <maximumf>, %f_ax : {v4} into f32\n"
    );
    let amax = group_reduce(s, "%f_am", "maximumf", "mx");
    let _ = write!(
        s,
        "{}      %f_idv = vector.broadcast %f_id : f32 to {v4}\n      \
         %f_v = arith.mulf %f_xv, %f_idv : {v4}\n      %f_vm = arith.addf %f_v, %f_magic : {v4}\n      %f_r = arith.subf %f_vm, %f_magic : {v4}\n      \
         %f_qi = arith.fptosi %f_r : {v4} to vector<4xi32>\n      %f_q8 = arith.trunci %f_qi : vector<4xi32> to vector<4xi8>\n      \
         %f_qw = vector.bitcast %f_q8 : vector<4xi8> to vector<1xi32>\n      %f_word = vector.extract %f_qw[0] : i32 from vector<1xi32>\n      \
         scf.if %f_ok {{\n      memref.store %f_word, %Aq[%f_wi] : {aq_t}\n      }}\n",
        crate::qmatmul_q8::block_scale("f_", &amax, ("%f_f127", "%f_zero"), 6)
    );
    let sum = (sums != BlockSum::None).then(|| {
        let _ = writeln!(s, "      %f_rs = vector.reduction <add>, %f_r : {v4} into f32");
        group_reduce(s, "%f_rs", "addf", "sm")
    });
    let _ = write!(
        s,
        "      %f_gl = arith.remui %f_wi, %f_bt : index\n      %f_first = arith.cmpi eq, %f_gl, %c0 : index\n      \
         %f_lead = arith.andi %f_ok, %f_first : i1\n      scf.if %f_lead {{\n      %f_kb = arith.divui %f_wi, %f_bt : index\n      \
         memref.store %f_dr, %Ad[%f_kb] : {ad_t}\n"
    );
    match (sums, sum) {
        (BlockSum::Quants, Some(q)) => {
            let _ = writeln!(s, "      memref.store {q}, %As[%f_kb] : {ad_t}");
        }
        (BlockSum::Scaled, Some(q)) => {
            // As the CPU computes it: f16(d * sum(q)), d before its rounding to f16.
            let _ = write!(
                s,
                "      %f_sd = arith.mulf %f_d, {q} : f32\n      %f_s16 = arith.truncf %f_sd : f32 to f16\n      \
                 %f_sr = arith.extf %f_s16 : f16 to f32\n      memref.store %f_sr, %As[%f_kb] : {ad_t}\n"
            );
        }
        _ => {}
    }
    s.push_str("      }\n      }\n");
}

/// `v` (f32) reduced with `op` over the [`BLOCK_THREADS`] lanes of its 32-block (lanes
/// `8b .. 8b + 8` of a warp) by shuffles; returns the result.
fn group_reduce(s: &mut String, v: &str, op: &str, tag: &str) -> String {
    let mut acc = v.to_string();
    let mut off = BLOCK_THREADS / 2;
    while off > 0 {
        let _ = write!(
            s,
            "      %f_{tag}o{off} = arith.constant {off} : i32\n      \
             %f_{tag}h{off}, %f_{tag}v{off} = gpu.shuffle xor {acc}, %f_{tag}o{off}, %g_w32 : f32\n      \
             %f_{tag}r{off} = arith.{op} {acc}, %f_{tag}h{off} : f32\n"
        );
        acc = format!("%f_{tag}r{off}");
        off /= 2;
    }
    acc
}

/// Loads the `n` 32-bit words at byte `off` of weight row `%j` (aligned to `align` bytes) as
/// `%{name}0 ..`.
fn load_words(s: &mut String, wm: &str, name: &str, off: &str, n: usize, align: usize) {
    let _ = write!(
        s,
        "      %{name}_b = vector.load %b1[%j, {off}] {{alignment = {align}}} : {wm}, vector<{}xi8>\n      \
         %{name}_v = vector.bitcast %{name}_b : vector<{}xi8> to vector<{n}xi32>\n",
        4 * n,
        4 * n
    );
    for i in 0..n {
        let _ = writeln!(s, "      %{name}{i} = vector.extract %{name}_v[{i}] : i32 from vector<{n}xi32>");
    }
}

/// `c + sum(bytes(a) * bytes(b))` as `%{out}` (`dp4a`): `a`'s bytes unsigned or signed,
/// `b`'s signed (the activation quants).
fn dp4a(s: &mut String, out: &str, a: &str, a_signed: bool, b: &str, c: &str) {
    let at = if a_signed { "signed" } else { "unsigned" };
    let _ = write!(
        s,
        "      %{out}_a1 = vector.from_elements {a} : vector<1xi32>\n      %{out}_a = vector.bitcast %{out}_a1 : vector<1xi32> to vector<4xi8>\n      \
         %{out}_b1 = vector.from_elements {b} : vector<1xi32>\n      %{out}_b = vector.bitcast %{out}_b1 : vector<1xi32> to vector<4xi8>\n      \
         %{out} = nvvm.dot.accumulate.4way %{out}_a <{at}>, %{out}_b <signed>, {c} : vector<4xi8>, vector<4xi8>\n"
    );
}

/// 32-weight blocks a lane takes at a time: two sub-blocks of a k-quant that share their
/// quant bytes (low and high nibbles) and super-block header; one otherwise.
fn lane_blocks(format: QuantFormat) -> i64 {
    if matches!(format, QuantFormat::Q4K | QuantFormat::Q6K) {
        2
    } else {
        1
    }
}

/// Block `k` (an index value) of the block's row `r` of activations from shared memory:
/// its index in `%Ad`/`%As` `%f_k{tag}`, its eight words `%f_x{tag}0 ..` and its scale
/// `%f_dx{tag}`.
fn activation_block(s: &mut String, (k, r, kb): (&str, usize, i64), tag: &str, (aq_t, ad_t): (&str, &str)) {
    let _ = write!(
        s,
        "      %f_ko{tag} = arith.constant {} : index\n      %f_k{tag} = arith.addi {k}, %f_ko{tag} : index\n      \
         %f_xo{tag} = arith.muli %f_k{tag}, %c8 : index\n      \
         %f_xw{tag} = vector.load %Aq[%f_xo{tag}] {{alignment = 16}} : {aq_t}, vector<8xi32>\n      \
         %f_dx{tag} = memref.load %Ad[%f_k{tag}] : {ad_t}\n",
        r as i64 * kb
    );
    for i in 0..8 {
        let _ = writeln!(s, "      %f_x{tag}{i} = vector.extract %f_xw{tag}[{i}] : i32 from vector<8xi32>");
    }
}

/// The integer dot product of weight words `%{w}{lo} .. %{w}{hi}` with activation words
/// `%{x}{lo} ..`; returns the i32 sum's name.
fn dot_words(s: &mut String, (w, x): (&str, &str), signed: bool, (lo, hi): (usize, usize), tag: &str) -> String {
    let mut acc = "%f_i0".to_string();
    for i in lo..hi {
        let out = format!("f_{tag}{i}");
        dp4a(s, &out, &format!("%{w}{i}"), signed, &format!("%{x}{i}"), &acc);
        acc = format!("%{out}");
    }
    acc
}

/// The f16 at byte `off` of weight row `%j` (aligned to 2), widened to f32 as `name`.
fn load_half(s: &mut String, wm: &str, name: &str, off: &str) {
    let _ = write!(
        s,
        "      {name}_b = vector.load %b1[%j, {off}] {{alignment = 2}} : {wm}, vector<2xi8>\n      \
         {name}_h = vector.bitcast {name}_b : vector<2xi8> to vector<1xf16>\n      {name}_f = arith.extf {name}_h : vector<1xf16> to vector<1xf32>\n      \
         {name} = vector.extract {name}_f[0] : f32 from vector<1xf32>\n"
    );
}

/// The two f16 at byte `off` of weight row `%j` (aligned to 4) as f32 `a` and `b`.
fn load_half_pair(s: &mut String, wm: &str, (a, b): (&str, &str), off: &str) {
    let _ = write!(
        s,
        "      %f_hp_b = vector.load %b1[%j, {off}] {{alignment = 4}} : {wm}, vector<4xi8>\n      \
         %f_hp_h = vector.bitcast %f_hp_b : vector<4xi8> to vector<2xf16>\n      %f_hp_f = arith.extf %f_hp_h : vector<2xf16> to vector<2xf32>\n      \
         {a} = vector.extract %f_hp_f[0] : f32 from vector<2xf32>\n      {b} = vector.extract %f_hp_f[1] : f32 from vector<2xf32>\n"
    );
}

/// A lane's weights for one work item, unpacked once for all the block's rows.
enum Weights {
    /// A 32-weight block `%k`: words `%{words}0 .. 8` lined up with the activation words,
    /// scale `%f_dw`, and the min `%f_mw` (Q4_1, Q5_1) or the quants' offset (Q4_0, Q5_0).
    Block { words: &'static str, signed: bool, min: bool, offset: Option<&'static str> },
    /// Q4_K sub-blocks `%f_k0`, `%f_k1`: low nibble words `%f_lo*`, high `%f_hn*`, scales
    /// `%f_dw0`, `%f_dw1`, mins `%f_mw0`, `%f_mw1`.
    Q4kPair,
    /// Q6_K sub-blocks `%f_k0`, `%f_k1`: unsigned words `%f_qa*`, `%f_qb*` (the quants +
    /// 32), each one's halves' signed scales `%f_sa0`, `%f_sa1`, `%f_sb0`, `%f_sb1` (i32),
    /// the super-block's `%f_d`.
    Q6kPair,
}

/// Unpacks item `%kp`'s weights of row `%j` (block `%k`, or a k-quant's pair).
fn decode_weights(s: &mut String, format: QuantFormat, wm: &str) -> Weights {
    match format {
        QuantFormat::Q4K => return q4k_pair(s, wm),
        QuantFormat::Q6K => return q6k_pair(s, wm),
        _ => {}
    }
    let _ = write!(s, "      %k = arith.addi %kp, %c0 : index\n      %base = arith.muli %k, %cbb : index\n");
    // Scale (and min), then the quants as eight words lined up with the activation words.
    let min = matches!(format, QuantFormat::Q4_1 | QuantFormat::Q5_1);
    if min {
        load_half_pair(s, wm, ("%f_dw", "%f_mw"), "%base");
    } else {
        load_half(s, wm, "%f_dw", "%base");
    }
    if format == QuantFormat::Q8_0 {
        let _ = writeln!(s, "      %f_qo = arith.addi %base, %c2 : index");
        load_words(s, wm, "f_q", "%f_qo", 8, 2);
        return Weights::Block { words: "f_q", signed: true, min: false, offset: None };
    }
    // Nibble formats: byte b holds quant b (low nibble) and quant b + 16 (high nibble), so
    // word i's low nibbles are quants 4i .. 4i + 4 and its high ones those of word i + 4.
    let (qoff, qh, align) = match format {
        QuantFormat::Q4_0 => (2, None, 2),
        QuantFormat::Q4_1 => (4, None, 4),
        QuantFormat::Q5_0 => (6, Some(2), 2),
        QuantFormat::Q5_1 => (8, Some(4), 4),
        _ => unreachable!("handled above"),
    };
    let _ = write!(s, "      %f_cqo = arith.constant {qoff} : index\n      %f_qo = arith.addi %base, %f_cqo : index\n");
    load_words(s, wm, "f_v", "%f_qo", 4, align);
    for i in 0..4 {
        let _ = write!(
            s,
            "      %f_n{i} = arith.andi %f_v{i}, %f_m4 : i32\n      %f_vh{i} = arith.shrui %f_v{i}, %f_s4 : i32\n      \
             %f_n{} = arith.andi %f_vh{i}, %f_m4 : i32\n",
            i + 4
        );
    }
    let words = if let Some(at) = qh {
        // Bit e of qh is the fifth bit of quant e: word i takes bits 4i .. 4i + 4, spread to
        // bit 0 of each byte by one multiply (x * 0x204081 places bit b at 8b; the shifted
        // copies do not overlap), then moved to bit 4.
        let _ = write!(
            s,
            "      %f_cqh = arith.constant {at} : index\n      %f_qho = arith.addi %base, %f_cqh : index\n      \
             %f_spread = arith.constant 2113665 : i32\n      %f_ones = arith.constant 16843009 : i32\n      %f_i15 = arith.constant 15 : i32\n"
        );
        load_words(s, wm, "f_h", "%f_qho", 1, align);
        for i in 0..8 {
            let _ = write!(
                s,
                "      %f_hsh{i} = arith.constant {} : i32\n      %f_hs{i} = arith.shrui %f_h0, %f_hsh{i} : i32\n      \
                 %f_hb{i} = arith.andi %f_hs{i}, %f_i15 : i32\n      %f_hm{i} = arith.muli %f_hb{i}, %f_spread : i32\n      \
                 %f_hx{i} = arith.andi %f_hm{i}, %f_ones : i32\n      %f_hy{i} = arith.shli %f_hx{i}, %f_s4 : i32\n      \
                 %f_q{i} = arith.ori %f_n{i}, %f_hy{i} : i32\n",
                4 * i
            );
        }
        "f_q"
    } else {
        "f_n"
    };
    // Quants offset by 8 (Q4_0) or 16 (Q5_0).
    let offset = match format {
        QuantFormat::Q4_0 => Some("8.0"),
        QuantFormat::Q5_0 => Some("16.0"),
        _ => None,
    };
    Weights::Block { words, signed: false, min, offset }
}

/// The term of the block's row `r` for the unpacked weights `w`: its activation block(s)
/// times the weights, scaled. Names carry `r`.
fn row_product(s: &mut String, w: &Weights, r: usize, kb: i64, types: (&str, &str)) -> String {
    let ad_t = types.1;
    match *w {
        Weights::Block { words, signed, min, offset } => {
            let t = format!("_{r}_");
            activation_block(s, ("%k", r, kb), &t, types);
            let sum = dot_words(s, (words, &format!("f_x{t}")), signed, (0, 8), &format!("p{r}_"));
            let _ = write!(s, "      %f_si{r} = arith.sitofp {sum} : i32 to f32\n      %f_d01{r} = arith.mulf %f_dw, %f_dx{t} : f32\n");
            if min {
                min_part(s, ("%f_mw", &format!("%f_k{t}")), &r.to_string(), ad_t)
            } else if let Some(off) = offset {
                // sum((q - o) x) = sum(q x) - o sum(x), exact in f32 (both below 2^24).
                let _ = write!(
                    s,
                    "      %f_sq{r} = memref.load %As[%f_k{t}] : {ad_t}\n      %f_off{r} = arith.constant {off} : f32\n      \
                     %f_os{r} = arith.mulf %f_sq{r}, %f_off{r} : f32\n      %f_ofs{r} = arith.subf %f_si{r}, %f_os{r} : f32\n      \
                     %f_part{r} = arith.mulf %f_d01{r}, %f_ofs{r} : f32\n"
                );
                format!("%f_part{r}")
            } else {
                let _ = writeln!(s, "      %f_part{r} = arith.mulf %f_d01{r}, %f_si{r} : f32");
                format!("%f_part{r}")
            }
        }
        Weights::Q4kPair => {
            // Each sub-block as a Q4_1 block: dw * dx * sum + m * s.
            let mut parts = Vec::new();
            for (u, (half, k, words)) in [("a", "%f_k0", "f_lo"), ("b", "%f_k1", "f_hn")].into_iter().enumerate() {
                let t = format!("_{r}{half}_");
                activation_block(s, (k, r, kb), &t, types);
                let sum = dot_words(s, (words, &format!("f_x{t}")), false, (0, 8), &format!("p{r}{half}_"));
                let tag = format!("{r}{half}");
                let _ = write!(s, "      %f_si{tag} = arith.sitofp {sum} : i32 to f32\n      %f_d01{tag} = arith.mulf %f_dw{u}, %f_dx{t} : f32\n");
                parts.push(min_part(s, (&format!("%f_mw{u}"), &format!("%f_k{t}")), &tag, ad_t));
            }
            let _ = writeln!(s, "      %f_part{r} = arith.addf {}, {} : f32", parts[0], parts[1]);
            format!("%f_part{r}")
        }
        Weights::Q6kPair => {
            let mut parts = Vec::new();
            for (half, k) in [("a", "%f_k0"), ("b", "%f_k1")] {
                let t = format!("_{r}{half}_");
                activation_block(s, (k, r, kb), &t, types);
                let (x, q) = (format!("f_x{t}"), format!("f_q{half}"));
                let (q0, q1) = (dot_words(s, (&q, &x), false, (0, 4), &format!("p{r}{half}_")), dot_words(s, (&q, &x), false, (4, 8), &format!("p{r}{half}_")));
                // The sums of each half's activations: their dot products with bytes of one.
                let (x0, x1) = (dot_words(s, ("f_one", &x), false, (0, 4), &format!("xs{r}{half}_")), dot_words(s, ("f_one", &x), false, (4, 8), &format!("xs{r}{half}_")));
                let _ = write!(
                    s,
                    "      %f_o0{t} = arith.muli {x0}, %f_i32 : i32\n      %f_u0{t} = arith.subi {q0}, %f_o0{t} : i32\n      \
                     %f_o1{t} = arith.muli {x1}, %f_i32 : i32\n      %f_u1{t} = arith.subi {q1}, %f_o1{t} : i32\n      \
                     %f_v0{t} = arith.muli %f_s{half}0, %f_u0{t} : i32\n      %f_v1{t} = arith.muli %f_s{half}1, %f_u1{t} : i32\n      \
                     %f_tot{t} = arith.addi %f_v0{t}, %f_v1{t} : i32\n      \
                     %f_d01{t} = arith.mulf %f_d, %f_dx{t} : f32\n      %f_si{t} = arith.sitofp %f_tot{t} : i32 to f32\n      \
                     %f_part{t} = arith.mulf %f_d01{t}, %f_si{t} : f32\n"
                );
                parts.push(format!("%f_part{t}"));
            }
            let _ = writeln!(s, "      %f_part{r} = arith.addf {}, {} : f32", parts[0], parts[1]);
            format!("%f_part{r}")
        }
    }
}

/// `d01 * si + m * s` (`%f_d01{tag}`, `%f_si{tag}` in scope; `s` the activation block's sum
/// at `%As[k]`). Returns the term's name.
fn min_part(s: &mut String, (min, k): (&str, &str), tag: &str, ad_t: &str) -> String {
    let _ = write!(
        s,
        "      %f_sx{tag} = memref.load %As[{k}] : {ad_t}\n      %f_p{tag} = arith.mulf %f_d01{tag}, %f_si{tag} : f32\n      \
         %f_mp{tag} = arith.mulf {min}, %f_sx{tag} : f32\n      %f_part{tag} = arith.addf %f_p{tag}, %f_mp{tag} : f32\n"
    );
    format!("%f_part{tag}")
}

/// Q4_K sub-blocks `2p, 2p + 1` (`p` = `%kp`; pair `p % 4` of super-block `p / 4`), each
/// a Q4_1 block of scale `d * sc` and min `-(dmin * m)`: their quants are the low and the
/// high nibbles of the 32 bytes at `16 + 32 (p % 4)`, and their 6-bit pairs come from the
/// 12 scale bytes `b` as [`crate::qmatmul::q4k_scales`] describes. Read as three words
/// shifted right by 8 (s % 4) bits for sub-block `s`, so that byte 0 of `A`, `B`, `C` is
/// `b[s % 4]`, `b[s % 4 + 4]`, `b[s % 4 + 8]`: `s < 4` takes `sc = A & 63`, `m = B & 63`;
/// `s >= 4` takes `sc = (C & 15) | (A >> 6) << 4` and `m = (C >> 4) | (B >> 6) << 4`.
fn q4k_pair(s: &mut String, wm: &str) -> Weights {
    let _ = write!(
        s,
        "      %f_sb = arith.divui %kp, %c4 : index\n      %base = arith.muli %f_sb, %cbb : index\n      \
         %f_pp = arith.remui %kp, %c4 : index\n      %f_k0 = arith.muli %kp, %c2 : index\n      %f_k1 = arith.addi %f_k0, %c1 : index\n"
    );
    load_half_pair(s, wm, ("%f_d", "%f_dmin"), "%base");
    let _ = writeln!(s, "      %f_sco = arith.addi %base, %c4 : index");
    load_words(s, wm, "f_w", "%f_sco", 3, 4);
    let _ = write!(
        s,
        "      %f_i63 = arith.constant 63 : i32\n      %f_i15 = arith.constant 15 : i32\n      %f_i2 = arith.constant 2 : i32\n      \
         %f_i48 = arith.constant 48 : i32\n      %f_i8 = arith.constant 8 : i32\n      %f_i16 = arith.constant 16 : i32\n      \
         %f_hi = arith.cmpi uge, %f_pp, %c2 : index\n      %f_odd = arith.remui %f_pp, %c2 : index\n      \
         %f_odd32 = arith.index_cast %f_odd : index to i32\n      %f_sh0 = arith.muli %f_odd32, %f_i16 : i32\n      \
         %f_sh1 = arith.addi %f_sh0, %f_i8 : i32\n"
    );
    for u in 0..2 {
        let _ = write!(
            s,
            "      %f_A{u} = arith.shrui %f_w0, %f_sh{u} : i32\n      %f_B{u} = arith.shrui %f_w1, %f_sh{u} : i32\n      \
             %f_C{u} = arith.shrui %f_w2, %f_sh{u} : i32\n      \
             %f_sclo{u} = arith.andi %f_A{u}, %f_i63 : i32\n      %f_mlo{u} = arith.andi %f_B{u}, %f_i63 : i32\n      \
             %f_ca{u} = arith.andi %f_C{u}, %f_i15 : i32\n      %f_ah{u} = arith.shrui %f_A{u}, %f_i2 : i32\n      \
             %f_ahm{u} = arith.andi %f_ah{u}, %f_i48 : i32\n      %f_schi{u} = arith.ori %f_ca{u}, %f_ahm{u} : i32\n      \
             %f_cs{u} = arith.shrui %f_C{u}, %f_s4 : i32\n      %f_cm{u} = arith.andi %f_cs{u}, %f_i15 : i32\n      \
             %f_bh{u} = arith.shrui %f_B{u}, %f_i2 : i32\n      %f_bhm{u} = arith.andi %f_bh{u}, %f_i48 : i32\n      \
             %f_mhi{u} = arith.ori %f_cm{u}, %f_bhm{u} : i32\n      \
             %f_sc{u} = arith.select %f_hi, %f_schi{u}, %f_sclo{u} : i32\n      %f_mi{u} = arith.select %f_hi, %f_mhi{u}, %f_mlo{u} : i32\n      \
             %f_scf{u} = arith.sitofp %f_sc{u} : i32 to f32\n      %f_mf{u} = arith.sitofp %f_mi{u} : i32 to f32\n      \
             %f_dw{u} = arith.mulf %f_d, %f_scf{u} : f32\n      %f_dm{u} = arith.mulf %f_dmin, %f_mf{u} : f32\n      \
             %f_mw{u} = arith.negf %f_dm{u} : f32\n"
        );
    }
    let _ = write!(
        s,
        "      %f_qo0 = arith.muli %f_pp, %c32 : index\n      %f_qo1 = arith.addi %base, %f_qo0 : index\n      \
         %f_c16 = arith.constant 16 : index\n      %f_qo = arith.addi %f_qo1, %f_c16 : index\n"
    );
    load_words(s, wm, "f_v", "%f_qo", 8, 4);
    for i in 0..8 {
        let _ = write!(
            s,
            "      %f_lo{i} = arith.andi %f_v{i}, %f_m4 : i32\n      %f_vs{i} = arith.shrui %f_v{i}, %f_s4 : i32\n      \
             %f_hn{i} = arith.andi %f_vs{i}, %f_m4 : i32\n"
        );
    }
    Weights::Q4kPair
}

/// Q6_K sub-blocks `t` and `t + 2` of super-block `p / 4` (`p` = `%kp`, pair `pp = p % 4`,
/// `t = 4 (pp / 2) + pp % 2`; see [`crate::qmatmul::q6k_sub_block`]): quarters `t % 4` and
/// `t % 4 + 2` of half `pp / 2`, whose low 4 bits are the low and the high nibbles of the
/// same 32 bytes `64 (pp / 2) + 32 (pp % 2)`, and whose high 2 bits are bits `2 (t % 4)` and
/// `2 (t % 4) + 4` of the same 32 bytes `128 + 32 (pp / 2)`. Quants `q - 32` with a signed
/// scale per 16, which [`row_product`] sums exactly as `sc0 (sum(q x) - 32 sum(x))` over
/// each sub-block's first 16 plus the same over its second, then scales by `d * dx`.
fn q6k_pair(s: &mut String, wm: &str) -> Weights {
    let _ = write!(
        s,
        "      %f_sb = arith.divui %kp, %c4 : index\n      %base = arith.muli %f_sb, %cbb : index\n      \
         %f_pp = arith.remui %kp, %c4 : index\n      %f_n = arith.divui %f_pp, %c2 : index\n      %f_odd = arith.remui %f_pp, %c2 : index\n      \
         %f_t0a = arith.muli %f_n, %c4 : index\n      %f_t = arith.addi %f_t0a, %f_odd : index\n      \
         %f_kb0 = arith.muli %f_sb, %c8 : index\n      %f_k0 = arith.addi %f_kb0, %f_t : index\n      %f_k1 = arith.addi %f_k0, %c2 : index\n      \
         %f_c64 = arith.constant 64 : index\n      %f_c128 = arith.constant 128 : index\n      \
         %f_lo0 = arith.muli %f_n, %f_c64 : index\n      %f_lo1 = arith.muli %f_odd, %c32 : index\n      %f_lo2 = arith.addi %f_lo0, %f_lo1 : index\n      \
         %f_lo_at = arith.addi %base, %f_lo2 : index\n      %f_h0i = arith.muli %f_n, %c32 : index\n      %f_h1i = arith.addi %f_h0i, %f_c128 : index\n      \
         %f_hi_at = arith.addi %base, %f_h1i : index\n      \
         %f_odd32 = arith.index_cast %f_odd : index to i32\n      %f_i2 = arith.constant 2 : i32\n      %f_sha = arith.muli %f_odd32, %f_i2 : i32\n      \
         %f_shb = arith.addi %f_sha, %f_s4 : i32\n      \
         %f_m3 = arith.constant 50529027 : i32\n      %f_i32 = arith.constant 32 : i32\n"
    );
    load_words(s, wm, "f_l", "%f_lo_at", 8, 2);
    load_words(s, wm, "f_h", "%f_hi_at", 8, 2);
    for i in 0..8 {
        let _ = write!(
            s,
            "      %f_lqa{i} = arith.andi %f_l{i}, %f_m4 : i32\n      %f_ls{i} = arith.shrui %f_l{i}, %f_s4 : i32\n      \
             %f_lqb{i} = arith.andi %f_ls{i}, %f_m4 : i32\n      \
             %f_hsa{i} = arith.shrui %f_h{i}, %f_sha : i32\n      %f_hma{i} = arith.andi %f_hsa{i}, %f_m3 : i32\n      \
             %f_hqa{i} = arith.shli %f_hma{i}, %f_s4 : i32\n      %f_qa{i} = arith.ori %f_lqa{i}, %f_hqa{i} : i32\n      \
             %f_hsb{i} = arith.shrui %f_h{i}, %f_shb : i32\n      %f_hmb{i} = arith.andi %f_hsb{i}, %f_m3 : i32\n      \
             %f_hqb{i} = arith.shli %f_hmb{i}, %f_s4 : i32\n      %f_qb{i} = arith.ori %f_lqb{i}, %f_hqb{i} : i32\n      \
             %f_one{i} = arith.constant 16843009 : i32\n"
        );
    }
    // Scales: two signed bytes per sub-block at 192 + 2t (sub-block t + 2's four bytes on).
    let _ = write!(
        s,
        "      %f_sc_at = arith.constant 192 : index\n      %f_s0o = arith.addi %base, %f_sc_at : index\n      %f_t2 = arith.muli %f_t, %c2 : index\n      \
         %f_sa0a = arith.addi %f_s0o, %f_t2 : index\n      %f_sa1a = arith.addi %f_sa0a, %c1 : index\n      \
         %f_sb0a = arith.addi %f_sa0a, %c4 : index\n      %f_sb1a = arith.addi %f_sb0a, %c1 : index\n"
    );
    for (name, at) in [("%f_sa0", "%f_sa0a"), ("%f_sa1", "%f_sa1a"), ("%f_sb0", "%f_sb0a"), ("%f_sb1", "%f_sb1a")] {
        let _ = write!(s, "      {name}_8 = memref.load %b1[%j, {at}] : {wm}\n      {name} = arith.extsi {name}_8 : i8 to i32\n");
    }
    let _ = writeln!(s, "      %f_d_at0 = arith.constant 208 : index\n      %f_d_at = arith.addi %base, %f_d_at0 : index");
    load_half(s, wm, "%f_d", "%f_d_at");
    Weights::Q6kPair
}
