//! Run-time packing of a matmul's activation right operand into column panels.
//!
//! The f32 micro-kernel streams `b` one 16-column panel at a time. A weight is stored
//! pre-packed (`[n/16][k][16]`, see [`crate::lower::pack_rhs`]), so each panel is one
//! contiguous stream. An activation `b` exists only at run time: unpacked, every workgroup
//! copies each panel it visits out of `b`'s strided rows, so with the rows split over `T`
//! workgroups `b` is gathered `T` times, panel by panel, between bursts of arithmetic.
//!
//! For products big enough that this shows, a dispatch of its own packs `b` once into a
//! temporary laid out like a packed weight (the workgroups take disjoint panels and read
//! `b` [`K_BLOCK`] rows at a time), and the matmul then runs exactly as on a weight: row or column split,
//! cache-blocked tiles, panel prefetches. This is IREE's data tiling idea: the layout
//! change of a non-constant operand becomes a dispatch before its consumer.

use crate::lower::{packs_rhs, BindingType, KernelSpec, PACK_WIDTH};
use max_dialects::{DType, Graph, Node, Op};
use std::fmt::Write;

/// Fewest result rows for which the matmul packs an activation `b`. With few rows a pool
/// of several threads splits `b`'s columns (fewer rows than threads x 48), each workgroup
/// reading its stripe once anyway, so a packed copy would only add its write and re-read.
/// (256 rows of 1024 x 1024: 0.92-0.97x the time with the pack, on 2 threads.)
pub const MIN_ROWS: i64 = 256;

/// Smallest activation `b` (bytes) packed by a dispatch of its own. Below it the panel
/// gathers cost less than the pack: 768 x 768 (2.25 MiB) took 1.02x the time packed,
/// 1024 x 1024 (4 MiB) 0.93-0.95x.
pub const MIN_BYTES: usize = 4 << 20;

/// [`MIN_BYTES`], or `MAX_PACK_MIN_BYTES=N` when set (a tuning knob: 0 packs every
/// qualifying activation, a huge value none).
pub fn min_bytes() -> usize {
    std::env::var("MAX_PACK_MIN_BYTES").ok().and_then(|v| v.parse().ok()).unwrap_or(MIN_BYTES)
}

/// Whether the CPU matmul `node` reads its right operand from a packed copy made by a
/// pack dispatch: `a[m, k] @ b[k, n]` in f32 with `b` an activation (not a weight or
/// constant, nor a reshape of one) of static shape, `n` a multiple of 16, at least
/// [`MIN_ROWS`] static rows and [`min_bytes`] of `b`.
pub fn applies(graph: &Graph, node: &Node) -> bool {
    if !matches!(node.op, Op::MatMul) || node.inputs[0] == node.inputs[1] {
        return false;
    }
    let (a, b, out) = (graph.ty(node.inputs[0]), graph.ty(node.inputs[1]), graph.ty(node.outputs[0]));
    // A weight or constant, possibly reshaped, is read in place as before (packing it once
    // per call would repeat work a compile-time pack could do).
    let mut v = node.inputs[1];
    while let Some(p) = graph.producer(v).filter(|p| matches!(graph.nodes[*p].op, Op::Reshape { .. })) {
        v = graph.nodes[p].inputs[0];
    }
    let constant = graph.producer(v).is_some_and(|p| matches!(graph.nodes[p].op, Op::Weight { .. } | Op::Constant(_)));
    let bytes = b.dims.iter().filter_map(|d| d.as_const()).product::<i64>() as usize * 4;
    !constant
        && a.rank() == 2
        && packs_rhs(a, b, out)
        && a.dims[0].as_const().is_some_and(|m| m >= MIN_ROWS)
        && bytes >= min_bytes()
}

/// The packed layout of an f32 `b[k, n]`: `[n/16][k][16]` (weights packed at compile time
/// have it too).
pub fn packed_dims(k: i64, n: i64) -> [i64; 3] {
    [n / PACK_WIDTH as i64, k, PACK_WIDTH as i64]
}

/// The spec of the kernel packing an f32 `b[k, n]` (binding 0) into `[n/16][k][16]`
/// panels (binding 1).
pub fn spec(name: String, k: i64, n: i64) -> KernelSpec {
    KernelSpec {
        name,
        inputs: vec![BindingType { dtype: DType::F32, dims: vec![Some(k), Some(n)] }],
        outputs: vec![BindingType { dtype: DType::F32, dims: packed_dims(k, n).iter().map(|d| Some(*d)).collect() }],
        body: Vec::new(),
        partition: None,
        native: None,
        ptx: None,
        gpu: false,
        allow_tf32: false,
        wgmma: false,
        columns: false,
        packs_panels: true,
    }
}

/// Rows of `b` a pack kernel copies panel by panel before moving on. Row by row, its
/// stores go to all of its panels at once; a C model of both orders packed 1024 x 1024 on
/// one core in 0.25 ms row by row and 0.19 ms in 16-row blocks with the data in cache (0.53
/// and 0.30 ms with 4 MiB of other traffic between packs, as a matmul makes).
pub const K_BLOCK: usize = 16;

/// The `func.func` of a pack kernel. Workgroup `w` of `W` packs panels
/// `[w*ceil(P/W), ...)`, [`K_BLOCK`] rows of `b` at a time: panel by panel, the block's
/// rows of that panel (one contiguous 1 KiB run of the panel written per block).
pub fn kernel_func(spec: &KernelSpec) -> String {
    let (b, p) = (&spec.inputs[0], &spec.outputs[0]);
    let (bm, pm) = (b.memref(), p.memref());
    let (panels, k) = (p.dims[0].expect("static panels"), p.dims[1].expect("static depth"));
    let half = PACK_WIDTH / 2;
    let mut s = format!("  func.func @{}(%b0: {bm} {{llvm.noalias}}, %b1: {pm} {{llvm.noalias}}, %wg: index, %nwg: index) {{\n", spec.name);
    let _ = write!(
        s,
        "    %c0 = arith.constant 0 : index\n    %c1 = arith.constant 1 : index\n    \
         %ch = arith.constant {half} : index\n    %cw = arith.constant {PACK_WIDTH} : index\n    \
         %cp = arith.constant {panels} : index\n    %ck = arith.constant {k} : index\n    \
         %ckb = arith.constant {K_BLOCK} : index\n    \
         %chunk = arith.ceildivui %cp, %nwg : index\n    %s0 = arith.muli %wg, %chunk : index\n    \
         %start = arith.minui %s0, %cp : index\n    %e0 = arith.addi %start, %chunk : index\n    \
         %end = arith.minui %e0, %cp : index\n    \
         scf.for %kb = %c0 to %ck step %ckb {{\n      \
         %kb1 = arith.addi %kb, %ckb : index\n      %ke = arith.minui %kb1, %ck : index\n      \
         scf.for %p = %start to %end step %c1 {{\n        \
         %j = arith.muli %p, %cw : index\n        %jh = arith.addi %j, %ch : index\n        \
         scf.for %k = %kb to %ke step %c1 {{\n        \
         %x0 = vector.load %b0[%k, %j] : {bm}, vector<{half}xf32>\n        \
         %x1 = vector.load %b0[%k, %jh] : {bm}, vector<{half}xf32>\n        \
         vector.store %x0, %b1[%p, %k, %c0] : {pm}, vector<{half}xf32>\n        \
         vector.store %x1, %b1[%p, %k, %ch] : {pm}, vector<{half}xf32>\n      \
         }}\n      }}\n    }}\n    return\n  }}\n"
    );
    s
}
