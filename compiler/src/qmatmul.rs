//! The quantized matmul micro-kernel: `out[M, N] = x[M, K] @ dequantize(w)^T` with `w` in
//! GGUF blocks (`[N, K / block_len * block_bytes]` bytes), written at the memref level with
//! explicit vectors. Q4_K super-blocks are walked as eight 32-weight sub-blocks, each with
//! its own scale and min.
//!
//! The generic contraction decodes one weight per multiply with scalar loads, which no
//! vectorizer recovers. Here each block of 32 weights is loaded as one byte vector, its
//! nibbles or bytes widened to a `vector<32xf32>` and scaled with one FMA (`q * d + m`),
//! then used for `MR` rows of `x` at once. Every row keeps a 32-lane accumulator (four
//! independent FMA chains); the horizontal sum happens once per output.
//!
//! Work is split over output columns (weight rows), so a single-row GEMV (LLM decode) uses
//! every workgroup. Columns are walked in blocks of `NB`, and within a block all row tiles
//! pass over it, so the block's quantized weights stay in cache while `x` streams.

use crate::lower::KernelSpec;
use max_dialects::{DType, Graph, Node, Op, QuantFormat};
use std::fmt::Write;

/// Rows of `x` per tile (each decoded weight block feeds this many rows).
const MR: i64 = 2;
/// Output columns per cache block.
const NB: i64 = 32;

/// Whether a `qmatmul` node is computed by this micro-kernel: f32 activations and result.
pub fn applies(graph: &Graph, node: &Node) -> bool {
    matches!(node.op, Op::QMatMul { .. }) && graph.ty(node.inputs[0]).dtype == DType::F32 && graph.ty(node.outputs[0]).dtype == DType::F32
}

/// Whether `spec` is a kernel this module generates.
pub fn is_qmatmul_kernel(spec: &KernelSpec) -> bool {
    spec.native.is_none()
        && spec.body.len() == 1
        && matches!(spec.body[0].op, Op::QMatMul { .. })
        && spec.inputs[0].dtype == DType::F32
        && spec.outputs[0].dtype == DType::F32
        && spec.partition.is_none()
}

/// Rows from which the panel path (decode a column panel to f32 once, then a register-
/// blocked f32 micro-kernel over all rows) beats decoding per row tile.
const PANEL_MIN_ROWS: i64 = 16;
/// Columns of a decoded panel (two 8-lane vectors).
const PW: i64 = 16;
/// Rows of the panel micro-kernel's register tile.
const PMR: i64 = 6;

/// The `func.func` of a quantized matmul kernel. Bindings: x, w, out.
///
/// Two paths, chosen at run time by the row count: few rows (decode) decode each weight
/// block once per `MR` rows; many rows (prefill) decode a panel of [`PW`] columns into an
/// f32 scratch `[K][PW]` once and run a `PMR x PW` register-blocked micro-kernel over every
/// row, so decoding is amortized over the whole batch.
pub fn kernel_func(spec: &KernelSpec, avx2: bool) -> String {
    let Op::QMatMul { format, quantize_input } = spec.body[0].op else { unreachable!("is_qmatmul_kernel checked the op") };
    if quantize_input {
        return crate::qmatmul_q8::kernel_func(spec, format, avx2);
    }
    let (x, w, out) = (&spec.inputs[0], &spec.inputs[1], &spec.outputs[0]);
    let (xm, wm, om) = (x.memref(), w.memref(), out.memref());
    let n = w.dims[0].expect("verifier: static weight rows");
    let bytes = w.dims[1].expect("verifier: static weight row bytes");
    let bb = format.block_bytes();
    let kb = format.sub_blocks(bytes);
    let k = kb * 32;
    let v32 = "vector<32xf32>";
    let mut s = format!("  func.func @{}(%b0: {xm}, %b1: {wm}, %b2: {om}, %wg: index, %nwg: index) {{\n", spec.name);
    let _ = write!(
        s,
        "    %c0 = arith.constant 0 : index\n    %c1 = arith.constant 1 : index\n    \
         %c2q = arith.constant 2 : index\n    %c4q = arith.constant 4 : index\n    %c32 = arith.constant 32 : index\n    \
         %cbb = arith.constant {bb} : index\n    %ckb = arith.constant {kb} : index\n    %cmr = arith.constant {MR} : index\n    \
         %cnb = arith.constant {NB} : index\n    %cn = arith.constant {n} : index\n    \
         %zero = arith.constant dense<0.0> : {v32}\n    \
         %m = memref.dim %b0, %c0 : {xm}\n    %mrem = arith.remui %m, %cmr : index\n    %mmain = arith.subi %m, %mrem : index\n    \
         %chunk0 = arith.ceildivui %cn, %nwg : index\n    \
         %chunk = affine.apply affine_map<(c) -> (((c + {PW} - 1) floordiv {PW}) * {PW})>(%chunk0)\n    \
         %n0a = arith.muli %wg, %chunk : index\n    %n0 = arith.minui %n0a, %cn : index\n    \
         %n1a = arith.addi %n0, %chunk : index\n    %n1 = arith.minui %n1a, %cn : index\n    \
         %cpmin = arith.constant {PANEL_MIN_ROWS} : index\n    %many = arith.cmpi uge, %m, %cpmin : index\n    \
         scf.if %many {{\n"
    );
    // Panel path: full panels, then any leftover columns by blocks.
    let _ = write!(
        s,
        "    %cpw = arith.constant {PW} : index\n    %c8 = arith.constant 8 : index\n    %ck = arith.constant {k} : index\n    \
         %cpmr = arith.constant {PMR} : index\n    %vz8 = arith.constant dense<0.0> : vector<8xf32>\n    \
         %span = arith.subi %n1, %n0 : index\n    %prem = arith.remui %span, %cpw : index\n    %pend = arith.subi %n1, %prem : index\n    \
         %m6rem = arith.remui %m, %cpmr : index\n    %m6 = arith.subi %m, %m6rem : index\n    \
         %panel = memref.alloca() : memref<{k}x{PW}xf32>\n    \
         scf.for %p = %n0 to %pend step %cpw {{\n    \
         scf.for %c = %c0 to %cpw step %c1 {{\n    %j = arith.addi %p, %c : index\n    \
         scf.for %k = %c0 to %ckb step %c1 {{\n    {}\n    %kx = arith.muli %k, %c32 : index\n",
        block_base(format)
    );
    decode_block(&mut s, format, &wm);
    for i in 0..32 {
        let _ = writeln!(
            s,
            "      %e{i} = vector.extract %wv[{i}] : f32 from {v32}\n      %ki{i} = affine.apply affine_map<(k) -> (k + {i})>(%kx)\n      \
             memref.store %e{i}, %panel[%ki{i}, %c] : memref<{k}x{PW}xf32>"
        );
    }
    s.push_str("    }\n    }\n");
    for (rows, lo, hi, step) in [(PMR, "%c0", "%m6", "%cpmr"), (1, "%m6", "%m", "%c1")] {
        let nacc = rows * 2;
        let accs: Vec<String> = (0..nacc).map(|a| format!("%pa{a} = %vz8")).collect();
        let tys = vec!["vector<8xf32>"; nacc as usize].join(", ");
        let _ = writeln!(
            s,
            "    scf.for %i = {lo} to {hi} step {step} {{\n    %pr:{nacc} = scf.for %kk = %c0 to %ck step %c1 iter_args({}) -> ({tys}) {{\n      \
             %pb0 = vector.load %panel[%kk, %c0] : memref<{k}x{PW}xf32>, vector<8xf32>\n      \
             %pb1 = vector.load %panel[%kk, %c8] : memref<{k}x{PW}xf32>, vector<8xf32>",
            accs.join(", ")
        );
        let mut next = Vec::new();
        for r in 0..rows {
            let _ = writeln!(
                s,
                "      %pi{r} = affine.apply affine_map<(i) -> (i + {r})>(%i)\n      %xa{r} = memref.load %b0[%pi{r}, %kk] : {xm}\n      \
                 %xb{r} = vector.broadcast %xa{r} : f32 to vector<8xf32>\n      \
                 %pn{r}a = vector.fma %xb{r}, %pb0, %pa{} : vector<8xf32>\n      %pn{r}b = vector.fma %xb{r}, %pb1, %pa{} : vector<8xf32>",
                2 * r,
                2 * r + 1
            );
            next.push(format!("%pn{r}a"));
            next.push(format!("%pn{r}b"));
        }
        let _ = writeln!(s, "      scf.yield {} : {tys}\n    }}", next.join(", "));
        for r in 0..rows {
            let _ = writeln!(
                s,
                "    %po{r} = affine.apply affine_map<(i) -> (i + {r})>(%i)\n    %pc{r} = arith.addi %p, %c8 : index\n    \
                 vector.store %pr#{}, %b2[%po{r}, %p] : {om}, vector<8xf32>\n    vector.store %pr#{}, %b2[%po{r}, %pc{r}] : {om}, vector<8xf32>",
                2 * r,
                2 * r + 1
            );
        }
        s.push_str("    }\n");
    }
    s.push_str("    }\n");
    block_path(&mut s, format, &xm, &wm, &om, "%pend", "%n1");
    s.push_str("    } else {\n");
    block_path(&mut s, format, &xm, &wm, &om, "%n0", "%n1");
    s.push_str("    }\n    return\n  }\n");
    s
}

/// Columns `[lo, hi)` for every row, decoding each weight block once per `MR` rows.
fn block_path(s: &mut String, format: QuantFormat, xm: &str, wm: &str, om: &str, lo: &str, hi: &str) {
    let v32 = "vector<32xf32>";
    let _ = write!(s, "    scf.for %nb = {lo} to {hi} step %cnb {{\n    %nbe0 = arith.addi %nb, %cnb : index\n    %nbe = arith.minui %nbe0, {hi} : index\n");
    // Full row tiles, then the leftover rows one at a time.
    for (rows, lo, hi) in [(MR, "%c0", "%mmain"), (1, "%mmain", "%m")] {
        let step = if rows == MR { "%cmr" } else { "%c1" };
        let _ = writeln!(s, "    scf.for %i = {lo} to {hi} step {step} {{\n    scf.for %j = %nb to %nbe step %c1 {{");
        let accs: Vec<String> = (0..rows).map(|r| format!("%acc{r} = %zero")).collect();
        let tys = vec![v32; rows as usize].join(", ");
        let _ = writeln!(s, "    %r:{rows} = scf.for %k = %c0 to %ckb step %c1 iter_args({}) -> ({tys}) {{", accs.join(", "));
        let _ = writeln!(s, "      {}\n      %kx = arith.muli %k, %c32 : index", block_base(format));
        decode_block(s, format, wm);
        let mut next = Vec::new();
        for r in 0..rows {
            let _ = writeln!(
                s,
                "      %ri{r} = affine.apply affine_map<(i) -> (i + {r})>(%i)\n      \
                 %x{r} = vector.load %b0[%ri{r}, %kx] : {xm}, {v32}\n      \
                 %na{r} = vector.fma %x{r}, %wv, %acc{r} : {v32}"
            );
            next.push(format!("%na{r}"));
        }
        let _ = writeln!(s, "      scf.yield {} : {tys}\n    }}", next.join(", "));
        for r in 0..rows {
            let _ = writeln!(
                s,
                "    %sum{r} = vector.reduction <add>, %r#{r} fastmath<reassoc> : {v32} into f32\n    \
                 %ro{r} = affine.apply affine_map<(i) -> (i + {r})>(%i)\n    \
                 memref.store %sum{r}, %b2[%ro{r}, %j] : {om}"
            );
        }
        s.push_str("    }\n    }\n");
    }
    s.push_str("    }\n");
}

/// `%base`: the byte offset in its weight row of the block holding 32-weight sub-block `%k`
/// (needs `%cbb`, the block bytes).
pub(crate) fn block_base(format: QuantFormat) -> String {
    match format {
        QuantFormat::Q4K | QuantFormat::Q6K => format!("%base = affine.apply affine_map<(k) -> ((k floordiv 8) * {})>(%k)", format.block_bytes()),
        _ => "%base = arith.muli %k, %cbb : index".to_string(),
    }
}

/// For Q6_K sub-block `%k` (32 weights of the super-block at byte `%base` of weight row
/// `%j`): its quants minus 32 in `%qs : vector<32xi8>`, the super-block's `%k6d` (f32) and
/// the sub-block's two 16-weight scales `%k6s : vector<2xf32>`. Sub-block t = k % 8 is
/// quarter k' = t % 4 of half n = t / 4: low bits from the nibbles (high for k' >= 2) of
/// bytes `64n + 32(k' % 2)`, high bits from bits `2k'` of bytes `128 + 32n`.
pub(crate) fn q6k_sub_block(s: &mut String, wm: &str) {
    let _ = write!(
        s,
        "      %k6c2 = arith.constant 2 : index\n      %k6c4 = arith.constant 4 : index\n      %k6c8 = arith.constant 8 : index\n      \
         %k6c32 = arith.constant 32 : index\n      %k6c64 = arith.constant 64 : index\n      %k6c128 = arith.constant 128 : index\n      \
         %k6c192 = arith.constant 192 : index\n      %k6c208 = arith.constant 208 : index\n      \
         %k6t = arith.remui %k, %k6c8 : index\n      %k6n = arith.divui %k6t, %k6c4 : index\n      %k6q = arith.remui %k6t, %k6c4 : index\n      \
         %k6odd = arith.remui %k6q, %k6c2 : index\n      %k6hiq = arith.divui %k6q, %k6c2 : index\n      \
         %k6o0 = arith.muli %k6n, %k6c64 : index\n      %k6o1 = arith.muli %k6odd, %k6c32 : index\n      \
         %k6o2 = arith.addi %k6o0, %k6o1 : index\n      %k6lo_at = arith.addi %base, %k6o2 : index\n      \
         %k6lb = vector.load %b1[%j, %k6lo_at] : {wm}, vector<32xi8>\n      \
         %k6shl = arith.index_cast %k6hiq : index to i8\n      %k6c4i8 = arith.constant 4 : i8\n      %k6sh = arith.muli %k6shl, %k6c4i8 : i8\n      \
         %k6shv = vector.broadcast %k6sh : i8 to vector<32xi8>\n      %k6l1 = arith.shrui %k6lb, %k6shv : vector<32xi8>\n      \
         %k6m15 = arith.constant dense<15> : vector<32xi8>\n      %k6lo = arith.andi %k6l1, %k6m15 : vector<32xi8>\n      \
         %k6h0 = arith.muli %k6n, %k6c32 : index\n      %k6h1 = arith.addi %k6h0, %k6c128 : index\n      %k6hi_at = arith.addi %base, %k6h1 : index\n      \
         %k6hb = vector.load %b1[%j, %k6hi_at] : {wm}, vector<32xi8>\n      \
         %k6hs0 = arith.index_cast %k6q : index to i8\n      %k6c2i8 = arith.constant 2 : i8\n      %k6hs = arith.muli %k6hs0, %k6c2i8 : i8\n      \
         %k6hsv = vector.broadcast %k6hs : i8 to vector<32xi8>\n      %k6h2 = arith.shrui %k6hb, %k6hsv : vector<32xi8>\n      \
         %k6m3 = arith.constant dense<3> : vector<32xi8>\n      %k6h3 = arith.andi %k6h2, %k6m3 : vector<32xi8>\n      \
         %k6s4 = arith.constant dense<4> : vector<32xi8>\n      %k6h4 = arith.shli %k6h3, %k6s4 : vector<32xi8>\n      \
         %k6q6 = arith.ori %k6lo, %k6h4 : vector<32xi8>\n      %k6o32 = arith.constant dense<32> : vector<32xi8>\n      \
         %qs = arith.subi %k6q6, %k6o32 : vector<32xi8>\n      \
         %k6so = arith.muli %k6t, %k6c2 : index\n      %k6s_at0 = arith.addi %base, %k6c192 : index\n      %k6s_at = arith.addi %k6s_at0, %k6so : index\n      \
         %k6sb = vector.load %b1[%j, %k6s_at] : {wm}, vector<2xi8>\n      %k6s = arith.sitofp %k6sb : vector<2xi8> to vector<2xf32>\n      \
         %k6d_at = arith.addi %base, %k6c208 : index\n      %k6db = vector.load %b1[%j, %k6d_at] : {wm}, vector<2xi8>\n      \
         %k6dh = vector.bitcast %k6db : vector<2xi8> to vector<1xf16>\n      %k6df = arith.extf %k6dh : vector<1xf16> to vector<1xf32>\n      \
         %k6d = vector.extract %k6df[0] : f32 from vector<1xf32>\n"
    );
}

/// For the Q4_K super-block at byte `%base` of weight row `%j`: `%k4d`, `%k4dmin` (f32) and
/// the eight sub-blocks' 6-bit scales `%k4scv` and mins `%k4mv` (`vector<8xi32>`), decoded
/// together: sub-block `s < 4` has `sc = b[s] & 63`, `m = b[s + 4] & 63`; `s >= 4` has
/// `sc = (b[s + 4] & 15) | (b[s - 4] >> 6) << 4`, `m = (b[s + 4] >> 4) | (b[s] >> 6) << 4`
/// (`b` the 12 scale bytes).
pub(crate) fn q4k_scales(s: &mut String, wm: &str) {
    let idx = |v: [usize; 8]| v.map(|x| x.to_string()).join(", ");
    let _ = write!(
        s,
        "      %k4hb = vector.load %b1[%j, %base] : {wm}, vector<16xi8>\n      \
         %k4dd = vector.shuffle %k4hb, %k4hb [0, 1, 2, 3] : vector<16xi8>, vector<16xi8>\n      \
         %k4hh = vector.bitcast %k4dd : vector<4xi8> to vector<2xf16>\n      \
         %k4hf = arith.extf %k4hh : vector<2xf16> to vector<2xf32>\n      \
         %k4d = vector.extract %k4hf[0] : f32 from vector<2xf32>\n      %k4dmin = vector.extract %k4hf[1] : f32 from vector<2xf32>\n      \
         %k4b = arith.extui %k4hb : vector<16xi8> to vector<16xi32>\n      \
         %k4x = vector.shuffle %k4b, %k4b [{}] : vector<16xi32>, vector<16xi32>\n      \
         %k4y = vector.shuffle %k4b, %k4b [{}] : vector<16xi32>, vector<16xi32>\n      \
         %k4z = vector.shuffle %k4b, %k4b [{}] : vector<16xi32>, vector<16xi32>\n      \
         %k4w = vector.shuffle %k4b, %k4b [{}] : vector<16xi32>, vector<16xi32>\n      \
         %k4v63 = arith.constant dense<63> : vector<8xi32>\n      %k4v15 = arith.constant dense<15> : vector<8xi32>\n      \
         %k4v4 = arith.constant dense<4> : vector<8xi32>\n      %k4v6 = arith.constant dense<6> : vector<8xi32>\n      \
         %k4lo = arith.constant dense<[true, true, true, true, false, false, false, false]> : vector<8xi1>\n      \
         %k4sclo = arith.andi %k4x, %k4v63 : vector<8xi32>\n      %k4mlo = arith.andi %k4y, %k4v63 : vector<8xi32>\n      \
         %k4a0 = arith.andi %k4y, %k4v15 : vector<8xi32>\n      %k4t0 = arith.shrui %k4z, %k4v6 : vector<8xi32>\n      \
         %k4t1 = arith.shli %k4t0, %k4v4 : vector<8xi32>\n      %k4schi = arith.ori %k4a0, %k4t1 : vector<8xi32>\n      \
         %k4a1 = arith.shrui %k4y, %k4v4 : vector<8xi32>\n      %k4t2 = arith.shrui %k4w, %k4v6 : vector<8xi32>\n      \
         %k4t3 = arith.shli %k4t2, %k4v4 : vector<8xi32>\n      %k4mhi = arith.ori %k4a1, %k4t3 : vector<8xi32>\n      \
         %k4scv = arith.select %k4lo, %k4sclo, %k4schi : vector<8xi1>, vector<8xi32>\n      \
         %k4mv = arith.select %k4lo, %k4mlo, %k4mhi : vector<8xi1>, vector<8xi32>\n",
        // Lane s of each (scale byte b[i] is block byte 4 + i; lanes not selected are unused):
        // x = b[s] for s < 4; y = b[s + 4]; z = b[s - 4] for s >= 4; w = b[s] for s >= 4.
        idx([4, 5, 6, 7, 12, 13, 14, 15]),
        idx([8, 9, 10, 11, 12, 13, 14, 15]),
        idx([4, 5, 6, 7, 4, 5, 6, 7]),
        idx([8, 9, 10, 11, 8, 9, 10, 11]),
    );
}

/// For Q4_K sub-block `sub` (an index value, 0..8) of the super-block decoded by
/// [`q4k_scales`]: its scale `%k4dsc = d * sc` and negated min `%k4mneg = -(dmin * m)`
/// (f32), and its 32 quants as unsigned bytes in `%qn : vector<32xi8>` (the low nibbles of
/// bytes `16 + 32 * (sub / 2)` for even sub-blocks, the high ones for odd).
pub(crate) fn q4k_sub_block_of(s: &mut String, wm: &str, sub: &str) {
    let _ = write!(
        s,
        "      %k4sc = vector.extract %k4scv[{sub}] : i32 from vector<8xi32>\n      %k4m = vector.extract %k4mv[{sub}] : i32 from vector<8xi32>\n      \
         %k4scf = arith.sitofp %k4sc : i32 to f32\n      %k4mf = arith.sitofp %k4m : i32 to f32\n      \
         %k4dsc = arith.mulf %k4d, %k4scf : f32\n      %k4dm = arith.mulf %k4dmin, %k4mf : f32\n      %k4mneg = arith.negf %k4dm : f32\n      \
         %k4c2 = arith.constant 2 : index\n      %k4c16 = arith.constant 16 : index\n      %k4c32 = arith.constant 32 : index\n      \
         %k4i4 = arith.constant 4 : i32\n      \
         %k4pair = arith.divui {sub}, %k4c2 : index\n      %k4qo0 = arith.muli %k4pair, %k4c32 : index\n      \
         %k4qo1 = arith.addi %base, %k4qo0 : index\n      %k4qo = arith.addi %k4qo1, %k4c16 : index\n      \
         %k4qb = vector.load %b1[%j, %k4qo] : {wm}, vector<32xi8>\n      \
         %k4odd = arith.remui {sub}, %k4c2 : index\n      %k4odd32 = arith.index_cast %k4odd : index to i32\n      \
         %k4sh32 = arith.muli %k4odd32, %k4i4 : i32\n      %k4sh8 = arith.trunci %k4sh32 : i32 to i8\n      \
         %k4shv = vector.broadcast %k4sh8 : i8 to vector<32xi8>\n      %k4qs = arith.shrui %k4qb, %k4shv : vector<32xi8>\n      \
         %k4m15 = arith.constant dense<15> : vector<32xi8>\n      %qn = arith.andi %k4qs, %k4m15 : vector<32xi8>\n"
    );
}

/// Decodes block `%k` of weight row `%j` into `%wv : vector<32xf32>` (block starts at byte
/// `%base` of the row).
pub(crate) fn decode_block(s: &mut String, format: QuantFormat, wm: &str) {
    let v32 = "vector<32xf32>";
    if format == QuantFormat::Q6K {
        // w = (d * scale) * (q - 32), one scale per 16 weights.
        q6k_sub_block(s, wm);
        let _ = write!(
            s,
            "      %qf = arith.sitofp %qs : vector<32xi8> to {v32}\n      %k6dv2 = vector.broadcast %k6d : f32 to vector<2xf32>\n      \
             %k6ds = arith.mulf %k6dv2, %k6s : vector<2xf32>\n      \
             %k6ds32 = vector.shuffle %k6ds, %k6ds [{}] : vector<2xf32>, vector<2xf32>\n      \
             %wv = arith.mulf %k6ds32, %qf : {v32}\n",
            (0..32).map(|i| (i / 16).to_string()).collect::<Vec<_>>().join(", ")
        );
        return;
    }
    if format == QuantFormat::Q4K {
        q4k_scales(s, wm);
        let _ = writeln!(s, "      %k4c8 = arith.constant 8 : index\n      %k4sub = arith.remui %k, %k4c8 : index");
        q4k_sub_block_of(s, wm, "%k4sub");
        let _ = write!(
            s,
            "      %qf = arith.uitofp %qn : vector<32xi8> to {v32}\n      %dv = vector.broadcast %k4dsc : f32 to {v32}\n      \
             %mv = vector.broadcast %k4mneg : f32 to {v32}\n      %wv = vector.fma %qf, %dv, %mv : {v32}\n"
        );
        return;
    }
    // The f16 scale (and min) at the block's start.
    let halves = if matches!(format, QuantFormat::Q4_1 | QuantFormat::Q5_1) { 2 } else { 1 };
    let _ = write!(
        s,
        "      %hb = vector.load %b1[%j, %base] : {wm}, vector<{}xi8>\n      \
         %hh = vector.bitcast %hb : vector<{}xi8> to vector<{halves}xf16>\n      \
         %hf = arith.extf %hh : vector<{halves}xf16> to vector<{halves}xf32>\n      \
         %d = vector.extract %hf[0] : f32 from vector<{halves}xf32>\n      \
         %dv = vector.broadcast %d : f32 to {v32}\n",
        2 * halves,
        2 * halves
    );
    match format {
        QuantFormat::Q8_0 => {
            let _ = write!(
                s,
                "      %qo = arith.addi %base, %c2q : index\n      \
                 %qb = vector.load %b1[%j, %qo] : {wm}, vector<32xi8>\n      \
                 %qf = arith.sitofp %qb : vector<32xi8> to {v32}\n      \
                 %wv = arith.mulf %qf, %dv : {v32}\n"
            );
        }
        QuantFormat::Q4K | QuantFormat::Q6K => unreachable!("decoded above"),
        QuantFormat::Q4_0 | QuantFormat::Q4_1 | QuantFormat::Q5_0 | QuantFormat::Q5_1 => {
            load_nibbles(s, format, wm, "%q");
            let _ = writeln!(s, "      %qf = arith.uitofp %q : vector<32xi8> to {v32}");
            if matches!(format, QuantFormat::Q4_1 | QuantFormat::Q5_1) {
                // w = q * d + m
                let _ = write!(s, "      %mn = vector.extract %hf[1] : f32 from vector<2xf32>\n      %mv = vector.broadcast %mn : f32 to {v32}\n");
            } else {
                // w = (q - o) * d = q * d - o * d, o = 8 (Q4_0) or 16 (Q5_0)
                let off = if format == QuantFormat::Q4_0 { "-8.0" } else { "-16.0" };
                let _ = write!(
                    s,
                    "      %c8f = arith.constant {off} : f32\n      %m8 = arith.mulf %d, %c8f : f32\n      %mv = vector.broadcast %m8 : f32 to {v32}\n"
                );
            }
            let _ = writeln!(s, "      %wv = vector.fma %qf, %dv, %mv : {v32}");
        }
    }
}

/// Loads the 16 quant bytes of block `%base` of weight row `%j` (binding `%b1`, type `wm`)
/// and unpacks them into `name : vector<32xi8>`: low nibbles are quants 0..16, high nibbles
/// 16..32. For Q5_0/Q5_1, bit `i` of the block's 32-bit `qh` adds 16 to quant `i`.
pub(crate) fn load_nibbles(s: &mut String, format: QuantFormat, wm: &str, name: &str) {
    let (qoff, qh) = match format {
        QuantFormat::Q4_0 => (2, None),
        QuantFormat::Q4_1 => (4, None),
        QuantFormat::Q5_0 => (6, Some(2)),
        QuantFormat::Q5_1 => (8, Some(4)),
        other => unreachable!("{} has no nibble quants", other.name()),
    };
    let nib = if qh.is_some() { "%q4n" } else { name };
    let _ = write!(
        s,
        "      %cqo = arith.constant {qoff} : index\n      %qo = arith.addi %base, %cqo : index\n      \
         %qb = vector.load %b1[%j, %qo] : {wm}, vector<16xi8>\n      \
         %m15 = arith.constant dense<15> : vector<16xi8>\n      %s4 = arith.constant dense<4> : vector<16xi8>\n      \
         %lo = arith.andi %qb, %m15 : vector<16xi8>\n      %hi = arith.shrui %qb, %s4 : vector<16xi8>\n      \
         {nib} = vector.shuffle %lo, %hi [{}] : vector<16xi8>, vector<16xi8>\n",
        (0..32).map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
    );
    if let Some(at) = qh {
        // Byte i / 8 of qh in lane i, masked to its bit i % 8, then 16 where that bit is set
        // (a test against a per-lane mask: x86 has no per-lane byte shift, which LLVM would
        // emulate at several times the cost).
        let _ = write!(
            s,
            "      %cqh = arith.constant {at} : index\n      %qho = arith.addi %base, %cqh : index\n      \
             %qhb = vector.load %b1[%j, %qho] : {wm}, vector<4xi8>\n      \
             %qhx = vector.shuffle %qhb, %qhb [{}] : vector<4xi8>, vector<4xi8>\n      \
             %qhm = arith.constant dense<[{}]> : vector<32xi8>\n      %qha = arith.andi %qhx, %qhm : vector<32xi8>\n      \
             %zero8 = arith.constant dense<0> : vector<32xi8>\n      %qhset = arith.cmpi ne, %qha, %zero8 : vector<32xi8>\n      \
             %sixteen8 = arith.constant dense<16> : vector<32xi8>\n      \
             %qh16 = arith.select %qhset, %sixteen8, %zero8 : vector<32xi1>, vector<32xi8>\n      \
             {name} = arith.ori %q4n, %qh16 : vector<32xi8>\n",
            (0..32).map(|i| (i / 8).to_string()).collect::<Vec<_>>().join(", "),
            (0..32).map(|i| ((1i32 << (i % 8)) as i8).to_string()).collect::<Vec<_>>().join(", ")
        );
    }
}
