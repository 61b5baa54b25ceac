//! f32 matmuls on the GPU's FP32 units (when TF32 is not allowed): a register-blocked SIMT
//! kernel.
//!
//! A block of 256 threads computes a 128 x 128 tile of C, stepping K in slices of 8 staged
//! through shared memory (A stored K-major, so a thread's rows are one vector load). Each
//! thread accumulates an 8 x 8 sub-tile in registers: rows `4*ty + {0..3}` and
//! `64 + 4*ty + {0..3}`, columns `4*tx + {0..3}` and `64 + 4*tx + {0..3}` (the split keeps a
//! warp's shared-memory reads on distinct banks), 64 FMAs per 4 vector loads from shared
//! memory. Edges are guarded like [`crate::gpu_matmul`]'s.

use crate::lower::{BindingType, KernelSpec};
use max_dialects::DType;

/// Threads per block.
pub const THREADS: usize = 256;
const BM: usize = 128;
const BN: usize = 128;
const BK: usize = 8;
const PAD: usize = 4;
/// Blocks a launch should have to fill the GPU (two per SM of a 132-SM H100); smaller
/// grids split K.
const TARGET_BLOCKS: usize = 264;
/// The least K a split takes.
const MIN_SPLIT_K: usize = 64;

/// Whether `spec` is a lone 2-D f32 matmul for this kernel.
pub fn is_sgemm(spec: &KernelSpec) -> bool {
    spec.gpu
        && crate::gpu_epilogue::matmul_with_epilogue(spec)
        && [&spec.inputs[0], &spec.inputs[1]].iter().all(|b: &&BindingType| b.dtype == DType::F32 && b.dims.len() == 2)
        && spec.outputs[0].dims.len() == 2
        && !crate::gpu_matmul::is_gpu_matmul(spec, spec.allow_tf32)
}

use crate::gpu_text::KernelText as Gen;

/// Four consecutive f32 of a row-major matrix at (`r`, `c`..`c+4`), zero past the edges;
/// whole-vector loads where `aligned` (an i1) and in bounds.
#[allow(clippy::too_many_arguments)]
fn load4(g: &mut Gen, ind: usize, mem: &str, mty: &str, r: &str, c: &str, rows: &str, cols: &str, aligned: &str) -> String {
    let rok = g.let_(ind, format!("arith.cmpi ult, {r}, {rows} : index"));
    let end = g.addc(ind, c, 4);
    let cok = g.let_(ind, format!("arith.cmpi ule, {end}, {cols} : index"));
    let full = g.let_(ind, format!("arith.andi {rok}, {cok} : i1"));
    let fast = g.let_(ind, format!("arith.andi {full}, {aligned} : i1"));
    let out = g.fresh();
    g.line(ind, format!("{out} = scf.if {fast} -> (vector<4xf32>) {{"));
    let x = g.let_(ind + 2, format!("vector.load {mem}[{r}, {c}] {{alignment = 16}} : {mty}, vector<4xf32>"));
    g.line(ind + 2, format!("scf.yield {x} : vector<4xf32>"));
    g.line(ind, "} else {");
    let mut acc = g.let_(ind + 2, "arith.constant dense<0.0> : vector<4xf32>");
    for e in 0..4 {
        let ce = g.addc(ind + 2, c, e);
        let eok = g.let_(ind + 2, format!("arith.cmpi ult, {ce}, {cols} : index"));
        let ok = g.let_(ind + 2, format!("arith.andi {rok}, {eok} : i1"));
        let v = g.fresh();
        g.line(ind + 2, format!("{v} = scf.if {ok} -> (f32) {{"));
        let l = g.let_(ind + 4, format!("memref.load {mem}[{r}, {ce}] : {mty}"));
        g.line(ind + 4, format!("scf.yield {l} : f32"));
        g.line(ind + 2, "} else {");
        g.line(ind + 4, "scf.yield %fzero : f32");
        g.line(ind + 2, "}");
        acc = g.let_(ind + 2, format!("vector.insert {v}, {acc} [{e}] : f32 into vector<4xf32>"));
    }
    g.line(ind + 2, format!("scf.yield {acc} : vector<4xf32>"));
    g.line(ind, "}");
    out
}

/// The host function and `gpu.module` of an f32 SIMT matmul.
pub fn kernel_func(spec: &KernelSpec) -> String {
    let (a, b, c) = (&spec.inputs[0], &spec.inputs[1], &spec.outputs[0]);
    let name = &spec.name;
    let (ta, tb, tc) = (a.memref(), b.memref(), c.memref());
    let params = crate::gpu_epilogue::host_params(spec);
    let oc = crate::gpu_epilogue::output_binding(spec);
    let extra_args: String = crate::gpu_epilogue::launch_args(spec).iter().map(|a| format!(", {a}")).collect();
    let extra = crate::gpu_epilogue::params(spec).iter().map(|p| format!(", {p}")).collect::<String>();
    // Grids of fewer blocks than the GPU can hold (small M and N: batch-sized inputs) split
    // K over blocks too: each writes a partial product, and a second kernel sums them and
    // applies the epilogue.
    let decision = crate::gpu_epilogue::split_decision(TARGET_BLOCKS, MIN_SPLIT_K);
    let mut s = format!(
        "  func.func @{name}({params}, %wg: index, %nwg: index) {{
    %c0 = arith.constant 0 : index
    %c1 = arith.constant 1 : index
    %cb = arith.constant {BM} : index
    %cthreads = arith.constant {THREADS} : index
    %m = memref.dim %b0, %c0 : {ta}
    %k = memref.dim %b0, %c1 : {ta}
    %n = memref.dim %b1, %c1 : {tb}
    %gx = arith.ceildivui %n, %cb : index
    %gy = arith.ceildivui %m, %cb : index
{decision}    scf.if %split {{
      %p = memref.alloc(%splits, %m, %n) : memref<?x?x?xf32>
      gpu.launch_func @{name}_sgemm::@partial blocks in (%gx, %gy, %splits) threads in (%cthreads, %c1, %c1) args(%b0 : {ta}, %b1 : {tb}, %p : memref<?x?x?xf32>)
      %gr = arith.ceildivui %n, %cthreads : index
      gpu.launch_func @{name}_sgemm::@reduce blocks in (%m, %gr, %c1) threads in (%cthreads, %c1, %c1) args(%p : memref<?x?x?xf32>{extra_args}, %b{oc} : {tc})
      memref.dealloc %p : memref<?x?x?xf32>
    }} else {{
      gpu.launch_func @{name}_sgemm::@mm blocks in (%gx, %gy, %c1) threads in (%cthreads, %c1, %c1) args(%b0 : {ta}, %b1 : {tb}{extra_args}, %b{oc} : {tc})
    }}
    return
  }}
"
    );
    let mut g = Gen::new("s");
    g.line(2, format!("gpu.module @{name}_sgemm {{"));
    tile_kernel(&mut g, spec, &ta, &tb, &tc, &extra, false);
    tile_kernel(&mut g, spec, &ta, &tb, &tc, &extra, true);
    g.s.push_str(&crate::gpu_epilogue::reduce_kernel(spec, &tc));
    g.line(2, "}");
    s.push_str(&g.s);
    s
}

/// The tile kernel: `@mm` (all of K, epilogue, into C) or `@partial` (block z's share of K,
/// raw sums into P[z]).
#[allow(clippy::too_many_arguments)]
fn tile_kernel(g: &mut Gen, spec: &KernelSpec, ta: &str, tb: &str, tc: &str, extra: &str, partial: bool) {
    let odt = spec.outputs[0].dtype;
    let sa = format!("memref<{BK}x{}xf32, #gpu.address_space<workgroup>>", BM + PAD);
    let sb = format!("memref<{BK}x{}xf32, #gpu.address_space<workgroup>>", BN + PAD);
    let i = 6;
    if partial {
        g.line(4, format!("gpu.func @partial(%A: {ta}, %B: {tb}, %P: memref<?x?x?xf32>) workgroup(%As : {sa}, %Bs : {sb}) kernel attributes {{known_block_size = array<i32: {THREADS}, 1, 1>}} {{"));
    } else {
        g.line(4, format!("gpu.func @mm(%A: {ta}, %B: {tb}{extra}, %C: {tc}) workgroup(%As : {sa}, %Bs : {sb}) kernel attributes {{known_block_size = array<i32: {THREADS}, 1, 1>}} {{"));
    }
    g.line(i, "%c0 = arith.constant 0 : index");
    g.line(i, "%c1 = arith.constant 1 : index");
    g.line(i, "%c4 = arith.constant 4 : index");
    g.line(i, "%fzero = arith.constant 0.0 : f32");
    g.line(i, format!("%M = memref.dim %A, %c0 : {ta}"));
    g.line(i, format!("%K = memref.dim %A, %c1 : {ta}"));
    g.line(i, format!("%N = memref.dim %B, %c1 : {tb}"));
    g.line(i, "%kr = arith.remui %K, %c4 : index");
    g.line(i, "%nr = arith.remui %N, %c4 : index");
    g.line(i, "%ka = arith.cmpi eq, %kr, %c0 : index");
    g.line(i, "%na = arith.cmpi eq, %nr, %c0 : index");
    g.line(i, "%tid = gpu.thread_id x");
    g.line(i, "%bx = gpu.block_id x");
    g.line(i, "%by = gpu.block_id y");
    // This block's range of K: all of it, or (split) slice z of `grid_dim z`, a multiple of
    // the K step long.
    if partial {
        g.line(i, "%bz = gpu.block_id z");
        g.line(i, "%gz = gpu.grid_dim z");
        let per = g.let_(i, "arith.ceildivui %K, %gz : index");
        let c8 = g.index(i, BK);
        let steps = g.let_(i, format!("arith.ceildivui {per}, {c8} : index"));
        g.line(i, format!("%kc = arith.muli {steps}, {c8} : index"));
        g.line(i, "%kb = arith.muli %bz, %kc : index");
        g.line(i, "%kb_end = arith.addi %kb, %kc : index");
        g.line(i, "%ke = arith.minui %kb_end, %K : index");
    } else {
        g.line(i, "%kb = arith.addi %c0, %c0 : index");
        g.line(i, "%ke = arith.addi %K, %c0 : index");
    }
    let m0 = g.mulc(i, "%by", BM);
    let n0 = g.mulc(i, "%bx", BN);
    // Load coordinates: A row tid/2, k (tid%2)*4; B k row tid/32, columns (tid%32)*4.
    let two = g.index(i, 2);
    let arow = g.let_(i, format!("arith.divui %tid, {two} : index"));
    let ak0 = g.let_(i, format!("arith.remui %tid, {two} : index"));
    let ak = g.mulc(i, &ak0, 4);
    let agr = g.add(i, &m0, &arow);
    let c32 = g.index(i, 32);
    let bk = g.let_(i, format!("arith.divui %tid, {c32} : index"));
    let bn0 = g.let_(i, format!("arith.remui %tid, {c32} : index"));
    let bn = g.mulc(i, &bn0, 4);
    let bgn = g.add(i, &n0, &bn);
    // Compute coordinates.
    let c16 = g.index(i, 16);
    let ty = g.let_(i, format!("arith.divui %tid, {c16} : index"));
    let tx = g.let_(i, format!("arith.remui %tid, {c16} : index"));
    let r0 = g.mulc(i, &ty, 4);
    let r1 = g.addc(i, &r0, 64);
    let q0 = g.mulc(i, &tx, 4);
    let q1 = g.addc(i, &q0, 64);
    let names: Vec<String> = (0..8).map(|k| format!("%acc{k}")).collect();
    let inits: Vec<String> = names.iter().map(|n| format!("{n} = %zero8")).collect();
    g.line(i, "%zero8 = arith.constant dense<0.0> : vector<8xf32>");
    let bkc = g.index(i, BK);
    g.line(i, format!("%res:8 = scf.for %k0 = %kb to %ke step {bkc} iter_args({}) -> ({}) {{", inits.join(", "), ["vector<8xf32>"; 8].join(", ")));
    let j = i + 2;
    let gk = g.add(j, "%k0", &ak);
    let av = load4(g, j, "%A", ta, &agr, &gk, "%M", "%ke", "%ka");
    for e in 0..4 {
        let x = g.let_(j, format!("vector.extract {av}[{e}] : f32 from vector<4xf32>"));
        let kk = g.addc(j, &ak, e);
        g.line(j, format!("memref.store {x}, %As[{kk}, {arow}] : {sa}"));
    }
    let bgk = g.add(j, "%k0", &bk);
    let bv = load4(g, j, "%B", tb, &bgk, &bgn, "%ke", "%N", "%na");
    g.line(j, format!("vector.store {bv}, %Bs[{bk}, {bn}] {{alignment = 16}} : {sb}, vector<4xf32>"));
    g.line(j, "gpu.barrier");
    let mut acc: Vec<String> = names.clone();
    for kk in 0..BK {
        let kc = g.index(j, kk);
        let a0 = g.let_(j, format!("vector.load %As[{kc}, {r0}] {{alignment = 16}} : {sa}, vector<4xf32>"));
        let a1 = g.let_(j, format!("vector.load %As[{kc}, {r1}] {{alignment = 16}} : {sa}, vector<4xf32>"));
        let b0 = g.let_(j, format!("vector.load %Bs[{kc}, {q0}] {{alignment = 16}} : {sb}, vector<4xf32>"));
        let b1 = g.let_(j, format!("vector.load %Bs[{kc}, {q1}] {{alignment = 16}} : {sb}, vector<4xf32>"));
        let b8 = g.let_(j, format!("vector.shuffle {b0}, {b1} [0, 1, 2, 3, 4, 5, 6, 7] : vector<4xf32>, vector<4xf32>"));
        for (r, acc_r) in acc.iter_mut().enumerate() {
            let src = if r < 4 { &a0 } else { &a1 };
            let x = g.let_(j, format!("vector.extract {src}[{}] : f32 from vector<4xf32>", r % 4));
            let xb = g.let_(j, format!("vector.broadcast {x} : f32 to vector<8xf32>"));
            *acc_r = g.let_(j, format!("vector.fma {xb}, {b8}, {acc_r} : vector<8xf32>"));
        }
    }
    g.line(j, "gpu.barrier");
    g.line(j, format!("scf.yield {} : {}", acc.join(", "), ["vector<8xf32>"; 8].join(", ")));
    g.line(i, "}");
    for r in 0..8 {
        let rl = if r < 4 { g.addc(i, &r0, r) } else { g.addc(i, &r1, r - 4) };
        let row = g.add(i, &m0, &rl);
        let rok = g.let_(i, format!("arith.cmpi ult, {row}, %M : index"));
        for (h, q) in [&q0, &q1].into_iter().enumerate() {
            let col = g.add(i, &n0, q);
            let v = g.let_(i, format!("vector.extract_strided_slice %res#{r} {{offsets = [{}], sizes = [4], strides = [1]}} : vector<8xf32> to vector<4xf32>", 4 * h));
            let end = g.addc(i, &col, 4);
            if partial {
                let cok = g.let_(i, format!("arith.cmpi ule, {end}, %N : index"));
                let full = g.let_(i, format!("arith.andi {rok}, {cok} : i1"));
                let fast = g.let_(i, format!("arith.andi {full}, %na : i1"));
                g.line(i, format!("scf.if {fast} {{"));
                g.line(i + 2, format!("vector.store {v}, %P[%bz, {row}, {col}] : memref<?x?x?xf32>, vector<4xf32>"));
                g.line(i, "} else {");
                for e in 0..4 {
                    let ce = g.addc(i + 2, &col, e);
                    let eok = g.let_(i + 2, format!("arith.cmpi ult, {ce}, %N : index"));
                    let ok = g.let_(i + 2, format!("arith.andi {rok}, {eok} : i1"));
                    g.line(i + 2, format!("scf.if {ok} {{"));
                    let x = g.let_(i + 4, format!("vector.extract {v}[{e}] : f32 from vector<4xf32>"));
                    g.line(i + 4, format!("memref.store {x}, %P[%bz, {row}, {ce}] : memref<?x?x?xf32>"));
                    g.line(i + 2, "}");
                }
                g.line(i, "}");
                continue;
            }
            // The epilogue (fused elementwise ops, or the conversion) per element, inside the
            // bounds checks (it may read other operands at the element's position).
            let cok = g.let_(i, format!("arith.cmpi ule, {end}, %N : index"));
            let full = g.let_(i, format!("arith.andi {rok}, {cok} : i1"));
            let fast = g.let_(i, format!("arith.andi {full}, %na : i1"));
            let ot = odt.mlir_name();
            g.line(i, format!("scf.if {fast} {{"));
            let mut vec = String::new();
            for e in 0..4 {
                let ce = g.addc(i + 2, &col, e);
                let x = g.let_(i + 2, format!("vector.extract {v}[{e}] : f32 from vector<4xf32>"));
                let (code, y) = crate::gpu_epilogue::element(spec, &x, &row, &ce, &format!("{r}_{h}_{e}f"));
                g.s.push_str(&code);
                vec = if e == 0 {
                    g.let_(i + 2, format!("vector.broadcast {y} : {ot} to vector<4x{ot}>"))
                } else {
                    g.let_(i + 2, format!("vector.insert {y}, {vec} [{e}] : {ot} into vector<4x{ot}>"))
                };
            }
            g.line(i + 2, format!("vector.store {vec}, %C[{row}, {col}] : {tc}, vector<4x{ot}>"));
            g.line(i, "} else {");
            for e in 0..4 {
                let ce = g.addc(i + 2, &col, e);
                let eok = g.let_(i + 2, format!("arith.cmpi ult, {ce}, %N : index"));
                let ok = g.let_(i + 2, format!("arith.andi {rok}, {eok} : i1"));
                g.line(i + 2, format!("scf.if {ok} {{"));
                let x = g.let_(i + 4, format!("vector.extract {v}[{e}] : f32 from vector<4xf32>"));
                let (code, y) = crate::gpu_epilogue::element(spec, &x, &row, &ce, &format!("{r}_{h}_{e}s"));
                g.s.push_str(&code);
                g.line(i + 4, format!("memref.store {y}, %C[{row}, {ce}] : {tc}"));
                g.line(i + 2, "}");
            }
            g.line(i, "}");
        }
    }
    g.line(i, "gpu.return");
    g.line(4, "}");
}
