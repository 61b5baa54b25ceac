//! Tensor-core matmul kernels for NVIDIA GPUs: `C[M,N] = A[M,K] @ B[K,N]` with bf16 or f16
//! operands (or f32 operands as TF32, when the user allows it) and f32 accumulation.
//!
//! The kernel is generated as MLIR (`gpu.func` with `nvgpu.ldmatrix` and `nvvm.mma.sync`),
//! and goes down to PTX through the same NVVM pipeline as every other GPU kernel.
//!
//! Tiling: a block of 256 threads (8 warps, 2 x 4) computes a 128 x 128 tile of C, stepping
//! over K in slices of 32 that are staged through shared memory. Each warp owns a 64 x 32
//! sub-tile: 4 x 4 `m16n8k16` tiles (`m16n8k8` for TF32) whose accumulators stay in
//! registers (loop-carried values of the K loop). Global loads are 16 bytes per thread and
//! coalesced; shared rows are padded by 16 bytes so that the `ldmatrix` row addresses of a
//! warp fall on distinct banks. The next K slice is loaded from global memory into
//! registers while the current one is multiplied (register double buffering).
//!
//! Edges: rows and columns past M or N, and a K that is not a multiple of the slice, are
//! handled by guarded loads (zero fill) and guarded stores, so any shape is correct; the
//! 16-byte loads need K and N to be multiples of 8 elements (4 for f32), else the kernel
//! loads element by element.

use crate::lower::{BindingType, KernelSpec};
use max_dialects::DType;
use std::fmt::Write;

/// Threads per block.
pub const THREADS: usize = 256;
const BM: usize = 128;
const BN: usize = 128;
const BK: usize = 32;
/// Warp grid inside a block, and each warp's tile counts.
const WARPS_M: usize = 2;
const WARPS_N: usize = 4;
const MT: usize = BM / WARPS_M / 16; // m16 tiles per warp
const NT: usize = BN / WARPS_N / 8; // n8 tiles per warp

/// Whether a 2-D matmul of these bindings runs on the tensor cores (`tf32`: f32 operands may
/// be rounded to TF32).
pub fn applies(a: &BindingType, b: &BindingType, out: &BindingType, tf32: bool) -> bool {
    let operand_ok = match a.dtype {
        DType::BF16 | DType::F16 => true,
        DType::F32 => tf32,
        _ => false,
    };
    a.dims.len() == 2 && b.dims.len() == 2 && out.dims.len() == 2 && a.dtype == b.dtype && operand_ok && matches!(out.dtype, DType::F32 | DType::BF16 | DType::F16)
}

/// Whether `spec` is a lone tensor-core matmul.
pub fn is_gpu_matmul(spec: &KernelSpec, tf32: bool) -> bool {
    spec.gpu && crate::gpu_epilogue::matmul_with_epilogue(spec) && applies(&spec.inputs[0], &spec.inputs[1], &spec.outputs[0], tf32)
}

use crate::gpu_text::KernelText as Gen;

/// The host function (launch) and the `gpu.module` (kernel) of a tensor-core matmul.
pub fn kernel_func(spec: &KernelSpec) -> String {
    let (a, b, c) = (&spec.inputs[0], &spec.inputs[1], &spec.outputs[0]);
    let name = &spec.name;
    let (ta, tb, tc) = (a.memref(), b.memref(), c.memref());
    let params = crate::gpu_epilogue::host_params(spec);
    let oc = crate::gpu_epilogue::output_binding(spec);
    let mut launch = vec![format!("%b0 : {ta}"), format!("%b1 : {tb}")];
    launch.extend(crate::gpu_epilogue::launch_args(spec));
    launch.push(format!("%b{oc} : {tc}"));
    let launch = launch.join(", ");
    let mut s = String::new();
    let _ = writeln!(
        s,
        "  func.func @{name}({params}, %wg: index, %nwg: index) {{
    %c0 = arith.constant 0 : index
    %c1 = arith.constant 1 : index
    %cthreads = arith.constant {THREADS} : index
    %m = memref.dim %b0, %c0 : {ta}
    %n = memref.dim %b1, %c1 : {tb}
    %gx = arith.ceildivui %n, %c{BN} : index
    %gy = arith.ceildivui %m, %c{BM} : index
    gpu.launch_func @{name}_mma::@mm blocks in (%gx, %gy, %c1) threads in (%cthreads, %c1, %c1) args({launch})
    return
  }}"
    );
    // The constants the host function names.
    s = s.replace("    %gx", &format!("    %c{BN} = arith.constant {BN} : index\n    %gx"));
    if BM != BN {
        s = s.replace("    %gy", &format!("    %c{BM} = arith.constant {BM} : index\n    %gy"));
    }
    s.push_str(&device_module(spec, name, a.dtype, &ta, &tb, &tc));
    s
}

fn device_module(spec: &KernelSpec, name: &str, dt: DType, ta: &str, tb: &str, tc: &str) -> String {
    let extra = crate::gpu_epilogue::params(spec).iter().map(|p| format!(", {p}")).collect::<String>();
    let t = dt.mlir_name();
    let f32_in = dt == DType::F32;
    // Elements per 16-byte chunk, and shared row pitches (16 bytes of padding).
    let vw = 16 / dt.size_bytes();
    let pa = BK + vw;
    let pb = BN + vw;
    let sa = format!("memref<{BM}x{pa}x{t}, #gpu.address_space<workgroup>>");
    let sb = format!("memref<{BK}x{pb}x{t}, #gpu.address_space<workgroup>>");
    let vt = format!("vector<{vw}x{t}>");
    let mut g = Gen::new("v");
    let i = 6;
    g.line(2, format!("gpu.module @{name}_mma {{"));
    g.line(4, format!("gpu.func @mm(%A: {ta}, %B: {tb}{extra}, %C: {tc}) workgroup(%As : {sa}, %Bs : {sb}) kernel attributes {{known_block_size = array<i32: {THREADS}, 1, 1>}} {{"));
    g.line(i, "%CONSTANTS%");
    for c in [0usize, 1, 2, 4, 8, 16, 32, 64, BM, BN, BK, WARPS_N, vw] {
        g.c(c);
    }
    g.line(i, format!("%zero = arith.constant 0.0 : {t}"));
    g.line(i, "%fzero = arith.constant 0.0 : f32");
    g.line(i, format!("%M = memref.dim %A, %c0 : {ta}"));
    g.line(i, format!("%K = memref.dim %A, %c1 : {ta}"));
    g.line(i, format!("%N = memref.dim %B, %c1 : {tb}"));
    g.line(i, "%tid = gpu.thread_id x");
    g.line(i, "%bx = gpu.block_id x");
    g.line(i, "%by = gpu.block_id y");
    g.line(i, "%warp = arith.divui %tid, %c32 : index");
    g.line(i, "%lane = arith.remui %tid, %c32 : index");
    g.line(i, format!("%wm = arith.divui %warp, %c{WARPS_N} : index"));
    g.line(i, format!("%wn = arith.remui %warp, %c{WARPS_N} : index"));
    g.line(i, format!("%m0 = arith.muli %by, %c{BM} : index"));
    g.line(i, format!("%n0 = arith.muli %bx, %c{BN} : index"));
    // 16-byte loads need every row to start 16-byte aligned.
    g.line(i, format!("%kr = arith.remui %K, %c{vw} : index"));
    g.line(i, format!("%nr = arith.remui %N, %c{vw} : index"));
    g.line(i, "%ka = arith.cmpi eq, %kr, %c0 : index");
    g.line(i, "%na = arith.cmpi eq, %nr, %c0 : index");
    // Chunk coordinates of this thread's global loads: A is BM x BK, B is BK x BN.
    let a_chunks_per_row = BK / vw;
    let b_chunks_per_row = BN / vw;
    let a_loads = BM * BK / vw / THREADS;
    let b_loads = BK * BN / vw / THREADS;
    let mut a_coords = Vec::new();
    for l in 0..a_loads {
        let cid = if l == 0 { "%tid".to_string() } else { g.let_(i, format!("arith.addi %tid, {} : index", g.c(l * THREADS))) };
        let r = g.let_(i, format!("arith.divui {cid}, {} : index", g.c(a_chunks_per_row)));
        let cc0 = g.let_(i, format!("arith.remui {cid}, {} : index", g.c(a_chunks_per_row)));
        let cc = g.let_(i, format!("arith.muli {cc0}, %c{vw} : index"));
        let gr = g.add(i, "%m0", &r);
        a_coords.push((r, cc, gr));
    }
    let mut b_coords = Vec::new();
    for l in 0..b_loads {
        let cid = if l == 0 { "%tid".to_string() } else { g.let_(i, format!("arith.addi %tid, {} : index", g.c(l * THREADS))) };
        let r = g.let_(i, format!("arith.divui {cid}, {} : index", g.c(b_chunks_per_row)));
        let cc0 = g.let_(i, format!("arith.remui {cid}, {} : index", g.c(b_chunks_per_row)));
        let cc = g.let_(i, format!("arith.muli {cc0}, %c{vw} : index"));
        let gn = g.add(i, "%n0", &cc);
        b_coords.push((r, cc, gn));
    }
    // Loads the K slice at `k0` into registers.
    let load_slice = |g: &mut Gen, ind: usize, k0: &str| -> (Vec<String>, Vec<String>) {
        let mut av = Vec::new();
        for (_, cc, gr) in &a_coords {
            let gk = g.add(ind, k0, cc);
            av.push(guarded_chunk(g, ind, "%A", ta, gr, &gk, "%M", "%K", "%ka", &vt, t, vw));
        }
        let mut bv = Vec::new();
        for (r, _, gn) in &b_coords {
            let gk = g.add(ind, k0, r);
            bv.push(guarded_chunk(g, ind, "%B", tb, &gk, gn, "%K", "%N", "%na", &vt, t, vw));
        }
        (av, bv)
    };
    let (a0, b0) = load_slice(&mut g, i, "%c0");
    // Loop-carried: the accumulators, then the next slice's registers.
    let nacc = MT * NT * 4;
    let mut iter_names = Vec::new();
    let mut iter_init = Vec::new();
    let mut iter_types = Vec::new();
    for k in 0..nacc {
        iter_names.push(format!("%acc{k}"));
        iter_init.push("%fzero".to_string());
        iter_types.push("f32".to_string());
    }
    for (k, v) in a0.iter().enumerate() {
        iter_names.push(format!("%ra{k}"));
        iter_init.push(v.clone());
        iter_types.push(vt.clone());
    }
    for (k, v) in b0.iter().enumerate() {
        iter_names.push(format!("%rb{k}"));
        iter_init.push(v.clone());
        iter_types.push(vt.clone());
    }
    let args: Vec<String> = iter_names.iter().zip(&iter_init).map(|(n, v)| format!("{n} = {v}")).collect();
    g.line(i, format!("%res:{} = scf.for %k0 = %c0 to %K step %c{BK} iter_args({}) -> ({}) {{", iter_names.len(), args.join(", "), iter_types.join(", ")));
    let j = i + 2;
    // Registers -> shared.
    for (k, (r, cc, _)) in a_coords.iter().enumerate() {
        g.line(j, format!("vector.store %ra{k}, %As[{r}, {cc}] {{alignment = 16}} : {sa}, {vt}"));
    }
    for (k, (r, cc, _)) in b_coords.iter().enumerate() {
        g.line(j, format!("vector.store %rb{k}, %Bs[{r}, {cc}] {{alignment = 16}} : {sb}, {vt}"));
    }
    g.line(j, "gpu.barrier");
    // Prefetch the next slice (guarded loads make the one past the end all zeros).
    let kn = g.add(j, "%k0", &format!("%c{BK}"));
    let (an, bn) = load_slice(&mut g, j, &kn);
    // Multiply the staged slice.
    let mut acc: Vec<String> = (0..nacc).map(|k| format!("%acc{k}")).collect();
    let lane16 = g.let_(j, "arith.remui %lane, %c16 : index");
    let lanehi = g.let_(j, "arith.divui %lane, %c16 : index");
    let g4 = g.let_(j, "arith.divui %lane, %c4 : index");
    let t4 = g.let_(j, "arith.remui %lane, %c4 : index");
    let wrow = g.let_(j, "arith.muli %wm, %c64 : index");
    let wcol = g.let_(j, format!("arith.muli %wn, {} : index", g.c(BN / WARPS_N)));
    let kstep = if f32_in { 8 } else { 16 };
    for ks in 0..BK / kstep {
        // A fragments: ldmatrix x4 of rows lane%16, columns (lane/16) * 8 halves (4 floats).
        let mut afrag = Vec::new();
        for mi in 0..MT {
            let row0 = g.add(j, &wrow, &g.c(mi * 16));
            let regs = if f32_in {
                {
                    let col0 = g.c(ks * kstep);
                    tf32_a_fragment(&mut g, j, &sa, &row0, &col0, &g4, &t4)
                }
            } else {
                // ldmatrix x4: lane l gives the address of row l%16, column (l/16)*8.
                let row = g.add(j, &row0, &lane16);
                let col0 = g.let_(j, format!("arith.muli {lanehi}, %c8 : index"));
                let col = g.add(j, &col0, &g.c(ks * kstep));
                let l = g.let_(j, format!("nvgpu.ldmatrix %As[{row}, {col}] {{numTiles = 4 : i32, transpose = false}} : {sa} -> vector<4x2x{t}>"));
                fragment_regs(&mut g, j, &l, 4, t)
            };
            afrag.push(regs);
        }
        let mut bfrag = Vec::new();
        for ni in 0..NT {
            let col = g.add(j, &wcol, &g.c(ni * 8));
            let regs: Vec<String> = if f32_in {
                // TF32 B fragment: b0 = B[k = lane%4][n = lane/4], b1 = B[k + 4][n].
                let n = g.add(j, &col, &g4);
                let k = g.add(j, &t4, &g.c(ks * kstep));
                let k4 = g.add(j, &k, "%c4");
                let x0 = g.let_(j, format!("memref.load %Bs[{k}, {n}] : {sb}"));
                let x1 = g.let_(j, format!("memref.load %Bs[{k4}, {n}] : {sb}"));
                vec![g.let_(j, format!("arith.bitcast {x0} : f32 to i32")), g.let_(j, format!("arith.bitcast {x1} : f32 to i32"))]
            } else {
                let row = g.add(j, &lane16, &g.c(ks * kstep));
                let l = g.let_(j, format!("nvgpu.ldmatrix %Bs[{row}, {col}] {{numTiles = 2 : i32, transpose = true}} : {sb} -> vector<2x2x{t}>"));
                fragment_regs(&mut g, j, &l, 2, t)
            };
            bfrag.push(regs);
        }
        // f16 fragments are f16 pairs; bf16 and tf32 ones are 32-bit registers.
        let reg = if dt == DType::F16 { "vector<2xf16>" } else { "i32" };
        let ptx = match dt {
            DType::BF16 => "bf16",
            DType::F16 => "f16",
            _ => "tf32",
        };
        for (mi, a_frag) in afrag.iter().enumerate() {
            for (ni, b_frag) in bfrag.iter().enumerate() {
                let base = (mi * NT + ni) * 4;
                let cs = acc[base..base + 4].join(", ");
                let (a_regs, b_regs) = (a_frag.join(", "), b_frag.join(", "));
                let d = g.let_(
                    j,
                    format!(
                        "nvvm.mma.sync A[{a_regs}] B[{b_regs}] C[{cs}] {{layoutA = #nvvm.mma_layout<row>, layoutB = #nvvm.mma_layout<col>, multiplicandAPtxType = #nvvm.mma_type<{ptx}>, multiplicandBPtxType = #nvvm.mma_type<{ptx}>, shape = #nvvm.shape<m = 16, n = 8, k = {kstep}>}} : ({reg}, {reg}, f32) -> !llvm.struct<(f32, f32, f32, f32)>"
                    ),
                );
                for q in 0..4 {
                    acc[base + q] = g.let_(j, format!("llvm.extractvalue {d}[{q}] : !llvm.struct<(f32, f32, f32, f32)>"));
                }
            }
        }
    }
    g.line(j, "gpu.barrier");
    let mut yields = acc.clone();
    yields.extend(an);
    yields.extend(bn);
    g.line(j, format!("scf.yield {} : {}", yields.join(", "), iter_types.join(", ")));
    g.line(i, "}");
    // Store: accumulator q of tile (mi, ni) is row lane/4 (+8 for q >= 2), columns
    // (lane%4)*2 + q%2 of the tile.
    let g4 = g.let_(i, "arith.divui %lane, %c4 : index");
    let t4 = g.let_(i, "arith.remui %lane, %c4 : index");
    let t42 = g.let_(i, format!("arith.muli {t4}, %c2 : index"));
    let wrow = g.let_(i, "arith.muli %wm, %c64 : index");
    let wcol = g.let_(i, format!("arith.muli %wn, {} : index", g.c(BN / WARPS_N)));
    let rbase = g.add(i, "%m0", &wrow);
    let rbase = g.add(i, &rbase, &g4);
    let cbase = g.add(i, "%n0", &wcol);
    let cbase = g.add(i, &cbase, &t42);
    for mi in 0..MT {
        for ni in 0..NT {
            for q in 0..4 {
                let row = g.add(i, &rbase, &g.c(mi * 16 + (q / 2) * 8));
                let col = g.add(i, &cbase, &g.c(ni * 8 + q % 2));
                let rok = g.let_(i, format!("arith.cmpi ult, {row}, %M : index"));
                let cok = g.let_(i, format!("arith.cmpi ult, {col}, %N : index"));
                let ok = g.let_(i, format!("arith.andi {rok}, {cok} : i1"));
                let val = format!("%res#{}", (mi * NT + ni) * 4 + q);
                g.line(i, format!("scf.if {ok} {{"));
                let (code, x) = crate::gpu_epilogue::element(spec, &val, &row, &col, &format!("{mi}_{ni}_{q}"));
                g.s.push_str(&code);
                g.line(i + 2, format!("memref.store {x}, %C[{row}, {col}] : {tc}"));
                g.line(i, "}");
            }
        }
    }
    g.line(i, "gpu.return");
    g.line(4, "}");
    g.line(2, "}");
    g.declare_constants("%CONSTANTS%", i)
}

/// The per-thread registers of an ldmatrix result `l` (`n` rows of two 16-bit values):
/// f16 pairs as `vector<2xf16>`, bf16 pairs as `i32` (what `nvvm.mma.sync` takes).
fn fragment_regs(g: &mut Gen, ind: usize, l: &str, n: usize, t: &str) -> Vec<String> {
    if t == "f16" {
        return (0..n).map(|r| g.let_(ind, format!("vector.extract {l}[{r}] : vector<2xf16> from vector<{n}x2xf16>"))).collect();
    }
    let bits = g.let_(ind, format!("vector.bitcast {l} : vector<{n}x2x{t}> to vector<{n}x1xi32>"));
    (0..n).map(|r| g.let_(ind, format!("vector.extract {bits}[{r}, 0] : i32 from vector<{n}x1xi32>"))).collect()
}

/// The four TF32 A-fragment registers of the 16 x 8 tile at (`row0`, `col0`) of `As`:
/// a0 = (g, t), a1 = (g + 8, t), a2 = (g, t + 4), a3 = (g + 8, t + 4), with g = lane/4 and
/// t = lane%4 (ldmatrix moves 16-bit halves, so f32 fragments are read directly).
fn tf32_a_fragment(g: &mut Gen, ind: usize, mty: &str, row0: &str, col0: &str, gq: &str, tq: &str) -> Vec<String> {
    let ra = g.add(ind, row0, gq);
    let rb = g.add(ind, &ra, "%c8");
    let ca = g.add(ind, col0, tq);
    let cb = g.add(ind, &ca, "%c4");
    let mut out = Vec::new();
    for (r, c) in [(&ra, &ca), (&rb, &ca), (&ra, &cb), (&rb, &cb)] {
        let x = g.let_(ind, format!("memref.load %As[{r}, {c}] : {mty}"));
        out.push(g.let_(ind, format!("arith.bitcast {x} : f32 to i32")));
    }
    out
}

/// A 16-byte chunk of a row-major matrix at (`r`, `c`..`c+vw`), zero past `rows`/`cols`.
/// `aligned` (an i1) says whole-chunk loads are 16-byte aligned.
#[allow(clippy::too_many_arguments)]
fn guarded_chunk(g: &mut Gen, ind: usize, mem: &str, mty: &str, r: &str, c: &str, rows: &str, cols: &str, aligned: &str, vt: &str, t: &str, vw: usize) -> String {
    let rok = g.let_(ind, format!("arith.cmpi ult, {r}, {rows} : index"));
    let end = g.let_(ind, format!("arith.addi {c}, %c{vw} : index"));
    let cok = g.let_(ind, format!("arith.cmpi ule, {end}, {cols} : index"));
    let full = g.let_(ind, format!("arith.andi {rok}, {cok} : i1"));
    let fast = g.let_(ind, format!("arith.andi {full}, {aligned} : i1"));
    let out = g.fresh();
    g.line(ind, format!("{out} = scf.if {fast} -> ({vt}) {{"));
    let x = g.let_(ind + 2, format!("vector.load {mem}[{r}, {c}] {{alignment = 16}} : {mty}, {vt}"));
    g.line(ind + 2, format!("scf.yield {x} : {vt}"));
    g.line(ind, "} else {");
    let mut acc = g.let_(ind + 2, format!("vector.broadcast %zero : {t} to {vt}"));
    for e in 0..vw {
        let ce = g.add(ind + 2, c, &g.c(e));
        let eok = g.let_(ind + 2, format!("arith.cmpi ult, {ce}, {cols} : index"));
        let ok = g.let_(ind + 2, format!("arith.andi {rok}, {eok} : i1"));
        let val = g.fresh();
        g.line(ind + 2, format!("{val} = scf.if {ok} -> ({t}) {{"));
        let l = g.let_(ind + 4, format!("memref.load {mem}[{r}, {ce}] : {mty}"));
        g.line(ind + 4, format!("scf.yield {l} : {t}"));
        g.line(ind + 2, "} else {");
        g.line(ind + 4, format!("scf.yield %zero : {t}"));
        g.line(ind + 2, "}");
        acc = g.let_(ind + 2, format!("vector.insert {val}, {acc} [{e}] : {t} into {vt}"));
    }
    g.line(ind + 2, format!("scf.yield {acc} : {vt}"));
    g.line(ind, "}");
    out
}
