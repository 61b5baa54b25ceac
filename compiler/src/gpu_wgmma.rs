//! Hopper (sm_90) matmul kernels on the warpgroup tensor-core instructions: `wgmma`
//! (`m64n256k16`, bf16 or f16 operands, f32 accumulators in registers) reading both
//! operands straight from shared memory through matrix descriptors.
//!
//! A block of 256 threads (two warpgroups) computes a 128 x 256 tile of C (see [`Config`]);
//! each warpgroup owns 64 rows. K advances in slices of 64 staged through a ring of
//! shared-memory buffers filled with `cp.async` (16-byte copies, zero-filled past the matrix
//! edges), so the loads of later slices are in flight while the tensor cores work on the
//! current one, and one slice's wgmma group stays in flight while the next is issued.
//!
//! Shared layouts are the canonical 128-byte-swizzled ones the descriptors describe:
//! - A (row-major M x K, "K-major"): each 64-element row slice is a 128-byte line; the
//!   16-byte chunk `c` of line `r` sits at chunk `c ^ (r % 8)`; 8 lines (1024 bytes) form a
//!   swizzle atom, so the descriptor's stride byte offset is 1024. A k16 step moves the
//!   start address by 32 bytes.
//! - B (row-major K x N, "N-major", `imm-trans-b = 1`): each k row of 64 n-values is a
//!   128-byte line, swizzled the same way; 8 k rows form an atom (stride byte offset 1024)
//!   and the 64-wide column groups of the tile's N are 8 KiB apart (leading byte offset). A
//!   k16 step moves the start address by 16 lines (2048 bytes).
//!
//! - TF32 (`m64n256k8`, f32 operands where `--allow-tf32` allows) takes both operands
//!   K-major, so B's slice is laid out like A's: line `n` holds column `n`'s 32 values of the
//!   slice. B is N-major in memory, so a kernel of its own first transposes all of B into a
//!   temporary (64 MB each way at 4096^2), whose K-major lines the matmul copies 16 bytes at
//!   a time, as A's. `MAX_GPU_WGMMA=tf32_transpose=0` transposes each slice as it is copied
//!   instead, by 4-byte `cp.async` copies ([`transposing_tile`]): no temporary and no second
//!   launch, but on an H200 (NOTES item 24) its main loop took 689 us at 4096^3 against 367
//!   for the plain one. A 4-byte copy of a warp spans four 32-byte row pieces, so each costs
//!   four L1 wavefronts: L1 ran at 82% and the warps stalled on the copies' registers.
//!
//! Used when the chip is sm_90 and K and N are static multiples of 8 (16-byte rows); other
//! matmuls take [`crate::gpu_matmul`]'s `mma.sync` kernel.

use crate::lower::{BindingType, KernelSpec};
use max_dialects::DType;
use std::fmt::Write;

/// Threads per block: two warpgroups.
pub const THREADS: usize = 256;
/// Blocks a launch should have to fill the GPU (two per SM of a 132-SM H100); smaller
/// grids split K.
const TARGET_BLOCKS: usize = 264;
/// The least K a split takes (four slices).
const MIN_SPLIT_K: usize = 256;
const BM: usize = 128;
/// Bytes of K per row (of A and of B's columns) in one slice: one 128-byte swizzle line.
const LINE: usize = 128;

/// Tile width and pipeline shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Columns of C per block (and the wgmma's n): 128 or 256.
    pub bn: usize,
    /// Shared-memory ring depth.
    pub stages: usize,
    /// Keep one wgmma group in flight while the next slice is issued (refilling the slot
    /// two slices back); needs at least 4 stages.
    pub overlap: bool,
    /// TF32 only: transpose B into a temporary before the matmul (the kernel then copies
    /// K-major lines of it; the default) rather than transposing each slice as it is copied.
    pub tf32_transpose: bool,
}

impl Config {
    /// The default: 128 x 256 tiles (m64n256 per warpgroup), 4 stages of 48 KiB, one wgmma
    /// group in flight. Measured on an H100 at 4096^3 bf16 (benches/gpu/tune.sh): 545
    /// TFLOP/s, against 484 for 128 x 128 with 3 stages (two blocks per SM) and 417-466 for
    /// the other shapes tried.
    pub const DEFAULT: Config = Config { bn: 256, stages: 4, overlap: true, tf32_transpose: true };

    /// The configuration in use: [`Config::DEFAULT`], or
    /// `MAX_GPU_WGMMA=bn=256,stages=4,overlap=1,tf32_transpose=1` (a tuning knob for
    /// benchmarks).
    pub fn current() -> Config {
        let mut c = Config::DEFAULT;
        if let Ok(v) = std::env::var("MAX_GPU_WGMMA") {
            for kv in v.split(',') {
                match kv.split_once('=') {
                    Some(("bn", x)) => c.bn = x.parse().unwrap_or(c.bn),
                    Some(("stages", x)) => c.stages = x.parse().unwrap_or(c.stages),
                    Some(("overlap", x)) => c.overlap = x == "1",
                    Some(("tf32_transpose", x)) => c.tf32_transpose = x == "1",
                    _ => {}
                }
            }
        }
        if c.bn != 256 {
            c.bn = 128;
        }
        c.stages = c.stages.clamp(if c.overlap { 4 } else { 2 }, 8);
        c
    }

    /// A slice is 128 bytes of K per row of A and per column of B, whatever the dtype.
    fn stage_bytes(&self) -> usize {
        (BM + self.bn) * 128
    }

    /// Dynamic shared memory per block (the ring, plus slack to align it to 1024 bytes).
    pub fn smem_bytes(&self) -> usize {
        self.stages * self.stage_bytes() + 1024
    }
}

/// Whether `spec` is a matmul for the wgmma kernel.
pub fn is_wgmma_matmul(spec: &KernelSpec) -> bool {
    spec.gpu && spec.wgmma && crate::gpu_epilogue::matmul_with_epilogue(spec) && applies(&spec.inputs[0], &spec.inputs[1], &spec.outputs[0], spec.allow_tf32)
}

fn applies(a: &BindingType, b: &BindingType, out: &BindingType, tf32: bool) -> bool {
    let static_mult8 = |d: Option<i64>| d.is_some_and(|v| v > 0 && v % 8 == 0);
    a.dims.len() == 2
        && b.dims.len() == 2
        && out.dims.len() == 2
        && a.dtype == b.dtype
        && (matches!(a.dtype, DType::BF16 | DType::F16) || (tf32 && a.dtype == DType::F32))
        && matches!(out.dtype, DType::BF16 | DType::F16 | DType::F32)
        && static_mult8(a.dims[1])
        && static_mult8(b.dims[1])
}

use crate::gpu_text::KernelText as Gen;

/// The host function (launch with dynamic shared memory) and the `gpu.module` of a wgmma
/// matmul.
pub fn kernel_func(spec: &KernelSpec) -> String {
    kernel_func_with(spec, true)
}

/// [`kernel_func`] without the matrix-vector path, for a caller that takes 1-4 rows
/// itself ([`crate::gpu_prologue`]).
pub(crate) fn tensor_core_func(spec: &KernelSpec) -> String {
    kernel_func_with(spec, false)
}

fn kernel_func_with(spec: &KernelSpec, gemv_path: bool) -> String {
    let cfg = Config::current();
    let (bn, smem_bytes) = (cfg.bn, cfg.smem_bytes());
    let (a, b, c) = (&spec.inputs[0], &spec.inputs[1], &spec.outputs[0]);
    let name = &spec.name;
    let (ta, tb, tc) = (a.memref(), b.memref(), c.memref());
    let tf32 = a.dtype == DType::F32;
    let oc = crate::gpu_epilogue::output_binding(spec);
    let extra_args: String = crate::gpu_epilogue::launch_args(spec).iter().map(|a| format!(", {a}")).collect();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "  func.func @{name}({}, %wg: index, %nwg: index) {{
    %c0 = arith.constant 0 : index
    %c1 = arith.constant 1 : index
    %cbm = arith.constant {BM} : index
    %cbn = arith.constant {bn} : index
    %cthreads = arith.constant {THREADS} : index
    %smem = arith.constant {smem_bytes} : i32
    %m = memref.dim %b0, %c0 : {ta}
    %n = memref.dim %b1, %c1 : {tb}
    %gx = arith.ceildivui %n, %cbn : index
    %gy = arith.ceildivui %m, %cbm : index",
        crate::gpu_epilogue::host_params(spec)
    );
    // TF32 operands must both be K-major in shared memory. By default a kernel transposes
    // all of B into a temporary first; without `tf32_transpose` each slice of B is
    // transposed as it is copied ([`transposing_tile`]).
    let b_transposed = tf32 && cfg.tf32_transpose;
    let (bop, bty) = if b_transposed {
        let (k, n) = (b.dims[0].unwrap_or(0), b.dims[1].unwrap_or(0));
        let btt = format!("memref<{n}x{k}xf32>");
        let _ = writeln!(
            s,
            "    %bt = memref.alloc() : {btt}
    %c8 = arith.constant 8 : index
    %c32 = arith.constant 32 : index
    %kt = memref.dim %b1, %c0 : {tb}
    %tx = arith.ceildivui %n, %c32 : index
    %ty = arith.ceildivui %kt, %c32 : index
    gpu.launch_func @{name}_wgmma::@transpose blocks in (%tx, %ty, %c1) threads in (%c32, %c8, %c1) args(%b1 : {tb}, %bt : {btt})"
        );
        ("%bt".to_string(), btt)
    } else {
        ("%b1".to_string(), tb.clone())
    };
    // Grids smaller than the GPU (small M: batch-sized inputs, decode) split K over blocks:
    // partial sums, then a reduction kernel that applies the epilogue.
    let decision = crate::gpu_epilogue::split_decision(TARGET_BLOCKS, MIN_SPLIT_K);
    let rt = crate::gpu_epilogue::REDUCE_THREADS;
    let tensor_cores = format!(
        "    %kk = memref.dim %b0, %c1 : {ta}
    %k = arith.addi %kk, %c0 : index
{decision}    scf.if %split {{
      %p = memref.alloc(%splits, %m, %n) : memref<?x?x?xf32>
      gpu.launch_func @{name}_wgmma::@partial blocks in (%gx, %gy, %splits) threads in (%cthreads, %c1, %c1) dynamic_shared_memory_size %smem args(%b0 : {ta}, {bop} : {bty}, %p : memref<?x?x?xf32>)
      %crt = arith.constant {rt} : index
      %gr = arith.ceildivui %n, %crt : index
      gpu.launch_func @{name}_wgmma::@reduce blocks in (%m, %gr, %c1) threads in (%crt, %c1, %c1) args(%p : memref<?x?x?xf32>{extra_args}, %b{oc} : {tc})
      memref.dealloc %p : memref<?x?x?xf32>
    }} else {{
      gpu.launch_func @{name}_wgmma::@mm blocks in (%gx, %gy, %c1) threads in (%cthreads, %c1, %c1) dynamic_shared_memory_size %smem args(%b0 : {ta}, {bop} : {bty}{extra_args}, %b{oc} : {tc})
    }}
"
    );
    // Decode-sized M (1 to 4 rows) reads B once with the matrix-vector kernel instead.
    let gemv = gemv_path && !tf32 && crate::gpu_gemv::applies(a, b);
    if gemv {
        s.push_str(&crate::gpu_gemv::host(&format!("{name}_wgmma"), a, b, &format!("{extra_args}, %b{oc} : {tc}"), &tensor_cores));
    } else {
        s.push_str(&tensor_cores);
    }
    if b_transposed {
        let _ = writeln!(s, "    memref.dealloc %bt : {bty}");
    }
    let _ = writeln!(s, "    return\n  }}");
    s.push_str(&device_module(&cfg, spec, (a.dtype, c.dtype), gemv, &ta, &bty, &tc, tb.as_str()));
    s
}

/// The kernel module. `tb` is the type of the B operand the kernel reads (B^T, N x K, for
/// TF32 with [`Config::tf32_transpose`]); `tb_orig` that of the graph's B (the transpose
/// kernel's input).
#[allow(clippy::too_many_arguments)]
fn device_module(cfg: &Config, spec: &KernelSpec, (dt, out_dt): (DType, DType), gemv: bool, ta: &str, tb: &str, tc: &str, tb_orig: &str) -> String {
    let name = &spec.name;
    let extra = crate::gpu_epilogue::params(spec).iter().map(|p| format!(", {p}")).collect::<String>();
    let (bn, stages, stage_bytes) = (cfg.bn, cfg.stages, cfg.stage_bytes());
    let nacc = bn / 2;
    let t = dt.mlir_name();
    let tf32 = dt == DType::F32;
    let b_transposed = tf32 && cfg.tf32_transpose;
    // Whether every column of B's tiles is in range (N is static here).
    let cols_full = spec.inputs[1].dims[1].is_some_and(|n| (n as usize).is_multiple_of(bn));
    let ptx = match dt {
        DType::BF16 => "bf16",
        DType::F16 => "f16",
        _ => "tf32",
    };
    // Element size, elements per 16-byte chunk, K per slice (one 128-byte line), K per wgmma.
    let esz = dt.size_bytes() as i64;
    let ce = 16 / esz;
    let bke = 128 / esz;
    let kstep = if tf32 { 8 } else { 16 };
    let acc_ty = format!("!llvm.struct<({})>", vec!["f32"; nacc].join(", "));
    let mut g = Gen::new("w");
    let i = 6;
    g.line(2, format!("gpu.module @{name}_wgmma {{"));
    g.line(4, "llvm.mlir.global external @max_smem() {addr_space = 3 : i32, alignment = 1024 : i64} : !llvm.array<0 x i8>");
    if b_transposed {
        transpose_kernel(&mut g, tb_orig, tb);
    }
    g.s.push_str(&crate::gpu_epilogue::reduce_kernel(spec, tc));
    if gemv {
        g.s.push_str(&crate::gpu_gemv::kernel(spec, ta, tb, tc, dt));
    }
    // `@mm`: all of K, epilogue, into C; `@partial`: block z's share of K, raw sums into P[z].
    for partial in [false, true] {
    if partial {
        g.line(4, format!("gpu.func @partial(%A: {ta}, %B: {tb}, %C: memref<?x?x?xf32>) kernel attributes {{known_block_size = array<i32: {THREADS}, 1, 1>}} {{"));
    } else {
        g.line(4, format!("gpu.func @mm(%A: {ta}, %B: {tb}{extra}, %C: {tc}) kernel attributes {{known_block_size = array<i32: {THREADS}, 1, 1>}} {{"));
    }
    g.line(i, "%c0 = arith.constant 0 : index");
    g.line(i, "%c0i = arith.constant 0 : i64");
    g.line(i, "%c1 = arith.constant 1 : index");
    g.line(i, format!("%M = memref.dim %A, %c0 : {ta}"));
    g.line(i, format!("%K = memref.dim %A, %c1 : {ta}"));
    // B is K x N, or N x K once transposed for TF32.
    g.line(i, format!("%N = memref.dim %B, {} : {tb}", if b_transposed { "%c0" } else { "%c1" }));
    g.line(i, "%Mi = arith.index_cast %M : index to i64");
    g.line(i, "%Ki = arith.index_cast %K : index to i64");
    g.line(i, "%Ni = arith.index_cast %N : index to i64");
    g.line(i, "%tidx = gpu.thread_id x");
    g.line(i, "%tid = arith.index_cast %tidx : index to i64");
    g.line(i, "%bxx = gpu.block_id x");
    g.line(i, "%byx = gpu.block_id y");
    g.line(i, "%bx = arith.index_cast %bxx : index to i64");
    g.line(i, "%by = arith.index_cast %byx : index to i64");
    let m0 = g.binc(i, "muli", "%by", BM as i64);
    let n0 = g.binc(i, "muli", "%bx", bn as i64);
    // Global base addresses (bytes) and the shared ring's base.
    let tcp = if partial { "memref<?x?x?xf32>" } else { tc };
    for (mem, ty, v) in [("%A", ta, "%ga"), ("%B", tb, "%gb"), ("%C", tcp, "%gc")] {
        g.line(i, format!("{v}x = memref.extract_aligned_pointer_as_index {mem} : {ty} -> index"));
        g.line(i, format!("{v} = arith.index_cast {v}x : index to i64"));
    }
    g.line(i, "%smp = llvm.mlir.addressof @max_smem : !llvm.ptr<3>");
    g.line(i, "%sm = llvm.ptrtoint %smp : !llvm.ptr<3> to i64");
    // Slices of K.
    let kt_n = {
        let k1 = g.binc(i, "addi", "%Ki", bke - 1);
        g.binc(i, "divui", &k1, bke)
    };
    let mlast = g.binc(i, "subi", "%Mi", 1);
    let klast = g.binc(i, "subi", "%Ki", ce);
    let nlast = g.binc(i, "subi", "%Ni", if tf32 { 1 } else { ce });
    let kminus1 = g.binc(i, "subi", "%Ki", 1);
    let sixteen = g.let_(i, "arith.constant 16 : i32");
    let zero32 = g.let_(i, "arith.constant 0 : i32");
    // Issues the copies of K slice `kt` into ring slot `slot` (both i64 SSA values).
    // Issues the copies of K slice `kt` into ring slot `slot` (both i64 SSA values). Chunk
    // coordinates are recomputed here from the thread id rather than kept live across the K
    // loop, where the registers hold the accumulators.
    let load_slice = |g: &mut Gen, ind: usize, kt: &str, slot: &str| {
        let sb = g.binc(ind, "muli", slot, stage_bytes as i64);
        let abase = g.bin(ind, "addi", "%sm", &sb);
        let bbase = g.binc(ind, "addi", &abase, (BM * LINE) as i64);
        let k0 = g.binc(ind, "muli", kt, bke);
        // A: 128 lines x 8 chunks.
        kmajor_tile(g, ind, BM, &abase, "%ga", &m0, "%Mi", &mlast, &k0, ce, esz, &klast, (&sixteen, &zero32));
        if b_transposed {
            // B^T (N x K, K-major like A): bn lines x 8 chunks.
            kmajor_tile(g, ind, bn, &bbase, "%gb", &n0, "%Ni", &nlast, &k0, ce, esz, &klast, (&sixteen, &zero32));
        } else if tf32 {
            transposing_tile(g, ind, bn, &bbase, (&n0, &k0), cols_full);
        } else {
            // B: 64 lines (k) x bn/8 chunks (64-wide atoms of n, 8 KiB apart).
            for l in 0..(64 * bn / 8) / THREADS {
                let cid = g.binc(ind, "addi", "%tid", (l * THREADS) as i64);
                let krow = g.binc(ind, "divui", &cid, (bn / 8) as i64);
                let nch = g.binc(ind, "remui", &cid, (bn / 8) as i64);
                let half = g.binc(ind, "shrui", &nch, 3);
                let ch = g.binc(ind, "andi", &nch, 7);
                let r8 = g.binc(ind, "andi", &krow, 7);
                let sw = g.bin(ind, "xori", &ch, &r8);
                let hb = g.binc(ind, "muli", &half, (64 * LINE) as i64);
                let line = g.binc(ind, "shli", &krow, 7);
                let swb = g.binc(ind, "shli", &sw, 4);
                let s1 = g.bin(ind, "addi", &hb, &line);
                let soff = g.bin(ind, "addi", &s1, &swb);
                let nc = g.binc(ind, "shli", &nch, 3);
                let gn = g.bin(ind, "addi", &n0, &nc);
                let gk = g.bin(ind, "addi", &k0, &krow);
                let kok = g.let_(ind, format!("arith.cmpi ult, {gk}, %Ki : i64"));
                let nok = g.let_(ind, format!("arith.cmpi ult, {gn}, %Ni : i64"));
                let ok = g.let_(ind, format!("arith.andi {kok}, {nok} : i1"));
                let k = g.let_(ind, format!("arith.minui {gk}, {kminus1} : i64"));
                let n = g.let_(ind, format!("arith.minui {gn}, {nlast} : i64"));
                let e0 = g.bin(ind, "muli", &k, "%Ni");
                let e = g.bin(ind, "addi", &e0, &n);
                let eb = g.binc(ind, "shli", &e, 1);
                let src = g.bin(ind, "addi", "%gb", &eb);
                let dst = g.bin(ind, "addi", &bbase, &soff);
                cp_async(g, ind, (&dst, &src), &ok, (&sixteen, &zero32), 16);
            }
        }
        g.line(ind, "nvvm.cp.async.commit.group");
    };
    // This block's slices: all, or (split) share z of `grid_dim z`.
    let (kt_b, kt_e) = if partial {
        g.line(i, "%bzx = gpu.block_id z");
        g.line(i, "%gzx = gpu.grid_dim z");
        g.line(i, "%bz = arith.index_cast %bzx : index to i64");
        g.line(i, "%gz = arith.index_cast %gzx : index to i64");
        let per0 = g.bin(i, "addi", &kt_n, "%gz");
        let per1 = g.binc(i, "subi", &per0, 1);
        let per = g.bin(i, "divui", &per1, "%gz");
        let b = g.bin(i, "muli", "%bz", &per);
        let e0 = g.bin(i, "addi", &b, &per);
        let e = g.let_(i, format!("arith.minui {e0}, {kt_n} : i64"));
        (b, e)
    } else {
        ("%c0i".to_string(), kt_n.clone())
    };
    // Prologue: the first slices (all but one slot, or two with overlap).
    let ahead = if cfg.overlap { stages - 2 } else { stages - 1 };
    for st in 0..ahead {
        let kt = g.binc(i, "addi", &kt_b, st as i64);
        let slot = g.binc(i, "remui", &kt, stages as i64);
        load_slice(&mut g, i, &kt, &slot);
    }
    // Descriptor constants: 128-byte swizzle (bits 62-63 = 1), SBO 1024 bytes (64 in 16-byte
    // units, bits 32-45); LBO 1 for A (unused when swizzled), 8 KiB for B's N halves.
    let desc_a_hi = (1i64 << 62) | (64i64 << 32) | (1i64 << 16);
    let desc_b_hi = if tf32 { desc_a_hi } else { (1i64 << 62) | (64i64 << 32) | (((64 * LINE) as i64 >> 4) << 16) };
    // B is N-major (transposed, `row`) for 16-bit types, K-major (`col`) for TF32.
    let blayout = if tf32 { "col" } else { "row" };
    let wgi = g.binc(i, "divui", "%tid", 128);
    let wg_a_off = g.binc(i, "muli", &wgi, (64 * LINE) as i64);
    g.line(i, "%fz = arith.constant 0.0 : f32");
    let mut acc = g.let_(i, format!("llvm.mlir.undef : {acc_ty}"));
    for q in 0..nacc {
        acc = g.let_(i, format!("llvm.insertvalue %fz, {acc}[{q}] : {acc_ty}"));
    }
    let one = g.i(i, 1);
    let res = g.let_(i, format!("scf.for %kt = {kt_b} to {kt_e} step {one} iter_args(%acc = {acc}) -> ({acc_ty}) : i64 {{"));
    let j = i + 2;
    // Slice kt has landed (this thread's copies), for every thread (barrier), and is visible
    // to the tensor cores' async proxy.
    g.line(j, format!("nvvm.cp.async.wait.group {}", ahead - 1));
    g.line(j, "nvvm.fence.proxy {kind = #nvvm.proxy_kind<async.shared>, space = #nvvm.shared_space<cta>}");
    g.line(j, "gpu.barrier");
    let slot = g.binc(j, "remui", "%kt", stages as i64);
    let sb = g.binc(j, "muli", &slot, stage_bytes as i64);
    let abase = g.bin(j, "addi", "%sm", &sb);
    let bbase = g.binc(j, "addi", &abase, (BM * LINE) as i64);
    let awg = g.bin(j, "addi", &abase, &wg_a_off);
    g.line(j, "nvvm.wgmma.fence.aligned");
    let mut cur = "%acc".to_string();
    // Each step of `kstep` K moves 32 bytes along a K-major line, or 16 lines of N-major B.
    for kk in 0..(bke / kstep) as usize {
        let aaddr = g.binc(j, "addi", &awg, (kk * 32) as i64);
        let boff = if tf32 { kk * 32 } else { kk * 16 * LINE };
        let baddr = g.binc(j, "addi", &bbase, boff as i64);
        let mut descs = Vec::new();
        for (addr, hi) in [(&aaddr, desc_a_hi), (&baddr, desc_b_hi)] {
            let masked = g.binc(j, "andi", addr, 0x3FFFF);
            let lo = g.binc(j, "shrui", &masked, 4);
            let d = g.binc(j, "ori", &lo, hi);
            descs.push(d);
        }
        cur = g.let_(
            j,
            format!(
                "nvvm.wgmma.mma_async {}, {}, {cur}, #nvvm.shape<m = 64, n = {bn}, k = {kstep}>, D[<f32>, <one>, <wrapped>], A[<{ptx}>, <one>, <row>], B[<{ptx}>, <one>, <{blayout}>] : {acc_ty} -> {acc_ty}",
                descs[0], descs[1]
            ),
        );
    }
    g.line(j, "nvvm.wgmma.commit.group.sync.aligned");
    // Without overlap: wait for this slice's products, then refill the slot the previous
    // iteration read (every thread is past it: barrier above). With overlap: leave this
    // slice's group in flight; the group two slices back is done (each warpgroup waited for
    // it before the barrier above), so its slot is refilled.
    g.line(j, format!("nvvm.wgmma.wait.group.sync.aligned {}", if cfg.overlap { 1 } else { 0 }));
    let nk = g.binc(j, "addi", "%kt", ahead as i64);
    let nslot = g.binc(j, "remui", &nk, stages as i64);
    load_slice(&mut g, j, &nk, &nslot);
    g.line(j, format!("scf.yield {cur} : {acc_ty}"));
    g.line(i, "}");
    g.line(i, "nvvm.wgmma.wait.group.sync.aligned 0");
    g.line(i, "nvvm.cp.async.wait.group 0");
    // Epilogue: accumulator q of this thread is row 16*warp + lane/4 (+8 for q%4 >= 2) of the
    // warpgroup's 64, column 8*(q/4) + 2*(lane%4) + q%2; pairs are stored together.
    let wl = g.binc(i, "remui", "%tid", 128);
    let warp = g.binc(i, "divui", &wl, 32);
    let lane = g.binc(i, "remui", &wl, 32);
    let l4 = g.binc(i, "divui", &lane, 4);
    let lm = g.binc(i, "remui", &lane, 4);
    let w16 = g.binc(i, "muli", &warp, 16);
    let wg64 = g.binc(i, "muli", &wgi, 64);
    let r0 = g.bin(i, "addi", &m0, &wg64);
    let r1 = g.bin(i, "addi", &r0, &w16);
    let rbase = g.bin(i, "addi", &r1, &l4);
    let lm2 = g.binc(i, "muli", &lm, 2);
    let cbase = g.bin(i, "addi", &n0, &lm2);
    let ot = out_dt.mlir_name();
    let osz = out_dt.size_bytes() as i64;
    for q in (0..nacc).step_by(2) {
        let row = g.binc(i, "addi", &rbase, (8 * ((q % 4) / 2)) as i64);
        let col = g.binc(i, "addi", &cbase, (8 * (q / 4)) as i64);
        let rok = g.let_(i, format!("arith.cmpi ult, {row}, %Mi : i64"));
        let cok = g.let_(i, format!("arith.cmpi ult, {col}, %Ni : i64"));
        let ok = g.let_(i, format!("arith.andi {rok}, {cok} : i1"));
        g.line(i, format!("scf.if {ok} {{"));
        let x0 = g.let_(i + 2, format!("llvm.extractvalue {res}[{q}] : {acc_ty}"));
        let x1 = g.let_(i + 2, format!("llvm.extractvalue {res}[{}] : {acc_ty}", q + 1));
        if partial {
            // Raw f32 sums into P[z, row, col..col+2].
            let v0 = g.let_(i + 2, "llvm.mlir.undef : vector<2xf32>");
            let zero = g.let_(i + 2, "arith.constant 0 : i32");
            let onei = g.let_(i + 2, "arith.constant 1 : i32");
            let v1 = g.let_(i + 2, format!("llvm.insertelement {x0}, {v0}[{zero} : i32] : vector<2xf32>"));
            let v2 = g.let_(i + 2, format!("llvm.insertelement {x1}, {v1}[{onei} : i32] : vector<2xf32>"));
            let zm = g.bin(i + 2, "muli", "%bz", "%Mi");
            let zr = g.bin(i + 2, "addi", &zm, &row);
            let e0 = g.bin(i + 2, "muli", &zr, "%Ni");
            let e = g.bin(i + 2, "addi", &e0, &col);
            let eb = g.binc(i + 2, "muli", &e, 4);
            let addr = g.bin(i + 2, "addi", "%gc", &eb);
            let p = g.let_(i + 2, format!("llvm.inttoptr {addr} : i64 to !llvm.ptr<1>"));
            g.line(i + 2, format!("llvm.store {v2}, {p} {{alignment = 8 : i64}} : vector<2xf32>, !llvm.ptr<1>"));
            g.line(i, "}");
            continue;
        }
        // The fused elementwise tail (or just the conversion) per element.
        let ri = g.let_(i + 2, format!("arith.index_cast {row} : i64 to index"));
        let ci = g.let_(i + 2, format!("arith.index_cast {col} : i64 to index"));
        let c1i = g.let_(i + 2, "arith.constant 1 : index");
        let ci1 = g.let_(i + 2, format!("arith.addi {ci}, {c1i} : index"));
        let (code0, y0) = crate::gpu_epilogue::element(spec, &x0, &ri, &ci, &format!("{q}a"));
        g.s.push_str(&code0);
        let (code1, y1) = crate::gpu_epilogue::element(spec, &x1, &ri, &ci1, &format!("{q}b"));
        g.s.push_str(&code1);
        let v0 = g.let_(i + 2, format!("vector.broadcast {y0} : {ot} to vector<2x{ot}>"));
        let v1 = g.let_(i + 2, format!("vector.insert {y1}, {v0} [1] : {ot} into vector<2x{ot}>"));
        let e0 = g.bin(i + 2, "muli", &row, "%Ni");
        let e = g.bin(i + 2, "addi", &e0, &col);
        let eb = g.binc(i + 2, "muli", &e, osz);
        let addr = g.bin(i + 2, "addi", "%gc", &eb);
        let p = g.let_(i + 2, format!("llvm.inttoptr {addr} : i64 to !llvm.ptr<1>"));
        g.line(i + 2, format!("llvm.store {v1}, {p} {{alignment = {} : i64}} : vector<2x{ot}>, !llvm.ptr<1>", 2 * osz));
        g.line(i, "}");
    }
    g.line(i, "gpu.return");
    g.line(4, "}");
    }
    g.line(2, "}");
    let _ = t;
    g.s
}

/// Issues the 4-byte `cp.async` copies of a K slice of f32 B (row-major K x N at `%gb`,
/// columns from `n0`) into the K-major layout TF32 wgmma reads, transposing as it copies:
/// line `n` of the tile (at `base`) holds column `n`'s 32 values of the slice, its 16-byte
/// chunk `c` at `c ^ (n % 8)`, as [`kmajor_tile`] lays out A. Copy `(i, j)` of a thread takes
/// `k = k0 + 4 i + lane / 8` and `n = n0 + 64 j + 8 warp + lane % 8`: a warp reads 32
/// contiguous bytes of each of 4 rows of B (whole sectors) and writes one word to each of the
/// 32 banks (chunk `i ^ (lane % 8)`, word `lane / 8`). Copies past K or N zero-fill from a
/// clamped address. `cols_full`: N is a multiple of the tile's width, so every column is in
/// range and a row's copies are one address plus constant offsets.
fn transposing_tile(g: &mut Gen, ind: usize, bn: usize, base: &str, (n0, k0): (&str, &str), cols_full: bool) {
    let warp = g.binc(ind, "shrui", "%tid", 5);
    let lane = g.binc(ind, "andi", "%tid", 31);
    let c = g.binc(ind, "andi", &lane, 7);
    let kr = g.binc(ind, "shrui", &lane, 3);
    let w8 = g.binc(ind, "shli", &warp, 3);
    let nl = g.bin(ind, "addi", &w8, &c);
    let line = g.binc(ind, "shli", &nl, 7);
    let word = g.binc(ind, "shli", &kr, 2);
    let s0 = g.bin(ind, "addi", base, &line);
    let sbase = g.bin(ind, "addi", &s0, &word);
    let gn = g.bin(ind, "addi", n0, &nl);
    let gk = g.bin(ind, "addi", k0, &kr);
    let four = g.let_(ind, "arith.constant 4 : i32");
    let zero = g.let_(ind, "arith.constant 0 : i32");
    let nlast = g.binc(ind, "subi", "%Ni", 1);
    let klast = g.binc(ind, "subi", "%Ki", 1);
    // Each column group's byte offset in a row and whether it is in range; with every column
    // in range, the first group's offset, the others' being constants from it (a copy's
    // address is then a register plus an immediate).
    let gnb = g.binc(ind, "shli", &gn, 2);
    let cols: Vec<(String, Option<String>)> = (0..bn / 64)
        .map(|j| {
            if cols_full {
                (gnb.clone(), None)
            } else {
                let n = g.binc(ind, "addi", &gn, 64 * j as i64);
                let ok = g.let_(ind, format!("arith.cmpi ult, {n}, %Ni : i64"));
                let nc = g.let_(ind, format!("arith.minui {n}, {nlast} : i64"));
                (g.binc(ind, "shli", &nc, 2), Some(ok))
            }
        })
        .collect();
    for i in 0..8i64 {
        let k = g.binc(ind, "addi", &gk, 4 * i);
        let kok = g.let_(ind, format!("arith.cmpi ult, {k}, %Ki : i64"));
        let kc = g.let_(ind, format!("arith.minui {k}, {klast} : i64"));
        let r = g.bin(ind, "muli", &kc, "%Ni");
        let rb = g.binc(ind, "shli", &r, 2);
        let row = g.bin(ind, "addi", "%gb", &rb);
        let sw = g.binc(ind, "xori", &c, i);
        let swb = g.binc(ind, "shli", &sw, 4);
        let srow = g.bin(ind, "addi", &sbase, &swb);
        for (j, (cb, nok)) in cols.iter().enumerate() {
            let ok = match nok {
                Some(nok) => g.let_(ind, format!("arith.andi {kok}, {nok} : i1")),
                None => kok.clone(),
            };
            let src0 = g.bin(ind, "addi", &row, cb);
            let src = if cols_full { g.binc(ind, "addi", &src0, 256 * j as i64) } else { src0 };
            let dst = g.binc(ind, "addi", &srow, (64 * j * LINE) as i64);
            cp_async(g, ind, (&dst, &src), &ok, (&four, &zero), 4);
        }
    }
}

/// `BT = transpose(B)` through 32 x 33 shared tiles (the padding keeps the column reads on
/// distinct banks): blocks of 32 x 8 threads, four rows each.
fn transpose_kernel(g: &mut Gen, tb: &str, tbt: &str) {
    let i = 6;
    g.line(4, format!("gpu.func @transpose(%B: {tb}, %BT: {tbt}) workgroup(%tile : memref<32x33xf32, #gpu.address_space<workgroup>>) kernel {{"));
    g.line(i, "%c0 = arith.constant 0 : index");
    g.line(i, "%c1 = arith.constant 1 : index");
    g.line(i, "%c32 = arith.constant 32 : index");
    g.line(i, format!("%K = memref.dim %B, %c0 : {tb}"));
    g.line(i, format!("%N = memref.dim %B, %c1 : {tb}"));
    g.line(i, "%tx = gpu.thread_id x");
    g.line(i, "%ty = gpu.thread_id y");
    g.line(i, "%bx = gpu.block_id x");
    g.line(i, "%by = gpu.block_id y");
    g.line(i, "%n0 = arith.muli %bx, %c32 : index");
    g.line(i, "%k0 = arith.muli %by, %c32 : index");
    let tile = "memref<32x33xf32, #gpu.address_space<workgroup>>";
    for j in 0..4 {
        let r = g.let_(i, format!("arith.constant {} : index", 8 * j));
        let row = g.let_(i, format!("arith.addi %ty, {r} : index"));
        let k = g.let_(i, format!("arith.addi %k0, {row} : index"));
        let n = g.let_(i, "arith.addi %n0, %tx : index");
        let kok = g.let_(i, format!("arith.cmpi ult, {k}, %K : index"));
        let nok = g.let_(i, format!("arith.cmpi ult, {n}, %N : index"));
        let ok = g.let_(i, format!("arith.andi {kok}, {nok} : i1"));
        g.line(i, format!("scf.if {ok} {{"));
        let v = g.let_(i + 2, format!("memref.load %B[{k}, {n}] : {tb}"));
        g.line(i + 2, format!("memref.store {v}, %tile[{row}, %tx] : {tile}"));
        g.line(i, "}");
    }
    g.line(i, "gpu.barrier");
    for j in 0..4 {
        let r = g.let_(i, format!("arith.constant {} : index", 8 * j));
        let row = g.let_(i, format!("arith.addi %ty, {r} : index"));
        let n = g.let_(i, format!("arith.addi %n0, {row} : index"));
        let k = g.let_(i, "arith.addi %k0, %tx : index");
        let nok = g.let_(i, format!("arith.cmpi ult, {n}, %N : index"));
        let kok = g.let_(i, format!("arith.cmpi ult, {k}, %K : index"));
        let ok = g.let_(i, format!("arith.andi {nok}, {kok} : i1"));
        g.line(i, format!("scf.if {ok} {{"));
        let v = g.let_(i + 2, format!("memref.load %tile[%tx, {row}] : {tile}"));
        g.line(i + 2, format!("memref.store {v}, %BT[{n}, {k}] : {tbt}"));
        g.line(i, "}");
    }
    g.line(i, "gpu.return");
    g.line(4, "}");
}

/// One `cp.async` of `width` bytes (16: `.cg`, bypassing L1; 4 must take `.ca`) from global
/// address `src` to shared address `dst` (i64s), copying `sizes.0` bytes where `ok` and
/// `sizes.1` (0: zero fill) elsewhere.
fn cp_async(g: &mut Gen, ind: usize, (dst, src): (&str, &str), ok: &str, sizes: (&str, &str), width: u32) {
    let cache = if width == 16 { "cg" } else { "ca" };
    let size = g.let_(ind, format!("arith.select {ok}, {}, {} : i32", sizes.0, sizes.1));
    let sp = g.let_(ind, format!("llvm.inttoptr {src} : i64 to !llvm.ptr<1>"));
    let dp = g.let_(ind, format!("llvm.inttoptr {dst} : i64 to !llvm.ptr<3>"));
    g.line(ind, format!("nvvm.cp.async.shared.global {dp}, {sp}, {width}, cache = {cache}, {size} : !llvm.ptr<3>, !llvm.ptr<1>, i32"));
}

/// Issues the `cp.async` copies of a K-major tile: `rows` lines of 128 bytes (one K slice)
/// from row `row0` of a row-major matrix at `global` (i64 address; rows of `%Ki` elements of
/// `esz` bytes) into shared memory at `base`, each line's 16-byte chunks swizzled by the line
/// index. Rows past `limit` and K past `%Ki` copy 0 bytes (zero fill) from a clamped address.
#[allow(clippy::too_many_arguments)]
fn kmajor_tile(g: &mut Gen, ind: usize, rows: usize, base: &str, global: &str, row0: &str, limit: &str, last: &str, k0: &str, ce: i64, esz: i64, klast: &str, sizes: (&str, &str)) {
    for l in 0..(rows * LINE / 16) / THREADS {
        let cid = g.binc(ind, "addi", "%tid", (l * THREADS) as i64);
        let row = g.binc(ind, "shrui", &cid, 3);
        let ch = g.binc(ind, "andi", &cid, 7);
        let r8 = g.binc(ind, "andi", &row, 7);
        let sw = g.bin(ind, "xori", &ch, &r8);
        let line = g.binc(ind, "shli", &row, 7);
        let swb = g.binc(ind, "shli", &sw, 4);
        let soff = g.bin(ind, "addi", &line, &swb);
        let gr = g.bin(ind, "addi", row0, &row);
        let kc = g.binc(ind, "muli", &ch, ce);
        let gk = g.bin(ind, "addi", k0, &kc);
        let rok = g.let_(ind, format!("arith.cmpi ult, {gr}, {limit} : i64"));
        let kok = g.let_(ind, format!("arith.cmpi ult, {gk}, %Ki : i64"));
        let ok = g.let_(ind, format!("arith.andi {rok}, {kok} : i1"));
        let r = g.let_(ind, format!("arith.minui {gr}, {last} : i64"));
        let k = g.let_(ind, format!("arith.minui {gk}, {klast} : i64"));
        let e0 = g.bin(ind, "muli", &r, "%Ki");
        let e = g.bin(ind, "addi", &e0, &k);
        let eb = g.binc(ind, "muli", &e, esz);
        let src = g.bin(ind, "addi", global, &eb);
        let dst = g.bin(ind, "addi", base, &soff);
        cp_async(g, ind, (&dst, &src), &ok, sizes, 16);
    }
}
