//! The quantized matmul with 8-bit activations (`qmatmul {quantize_input = true}`): the
//! arithmetic of llama.cpp's CPU backend (ggml, AVX2), so that our generations match its
//! token for token.
//!
//! 1. Each 32-block of each row of `x` is quantized: `amax = max |x|`, `d = amax / 127`
//!    (kept as f16), `q = roundeven(x * (127 / amax))` as i8, and for Q8_1 also
//!    `s = f16(d * sum(q))`.
//! 2. Each output is a sum over blocks of integer dot products: the 32 products `qw * qx`
//!    are summed in 8 lanes of 4 (exact), converted to f32 and accumulated per lane as
//!    `acc = fma(dw * dx, lanes, acc)`; Q4_1 adds `m * s` per block into a scalar. The
//!    lanes are summed as `((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7))`, then the scalar added.
//!
//! Weight nibbles are unsigned (`q4_1`) or offset by 8 (`q4_0`); `q8_0` bytes are signed.
//! Columns are split over workgroups; rows and columns are walked in cache blocks.

use crate::lower::KernelSpec;
use max_dialects::QuantFormat;
use std::fmt::Write;

/// Output columns per cache block.
const NB: i64 = 32;
/// Rows per cache block.
const RB: i64 = 16;

/// The `func.func` of a quantized-activation matmul. Bindings: x (f32), w, out (f32).
pub fn kernel_func(spec: &KernelSpec, format: QuantFormat) -> String {
    let (x, w, out) = (&spec.inputs[0], &spec.inputs[1], &spec.outputs[0]);
    let (xm, wm, om) = (x.memref(), w.memref(), out.memref());
    let n = w.dims[0].expect("verifier: static weight rows");
    let bb = format.block_bytes();
    let kb = w.dims[1].expect("verifier: static weight row bytes") / bb;
    let k = kb * 32;
    let q81 = format == QuantFormat::Q4_1;
    let (v32f, v32b, v8f) = ("vector<32xf32>", "vector<32xi8>", "vector<8xf32>");
    let (qxm, dxm) = (format!("memref<?x{k}xi8>"), format!("memref<?x{kb}xf32>"));
    let mut s = format!("  func.func @{}(%b0: {xm}, %b1: {wm}, %b2: {om}, %wg: index, %nwg: index) {{\n", spec.name);
    let _ = write!(
        s,
        "    %c0 = arith.constant 0 : index\n    %c1 = arith.constant 1 : index\n    %c2q = arith.constant 2 : index\n    \
         %c4q = arith.constant 4 : index\n    %c32 = arith.constant 32 : index\n    %cbb = arith.constant {bb} : index\n    \
         %ckb = arith.constant {kb} : index\n    %cn = arith.constant {n} : index\n    %cnb = arith.constant {NB} : index\n    \
         %crb = arith.constant {RB} : index\n    %f0 = arith.constant 0.0 : f32\n    %f127 = arith.constant 127.0 : f32\n    \
         %z8 = arith.constant dense<0.0> : {v8f}\n    %m = memref.dim %b0, %c0 : {xm}\n"
    );
    // 1. Quantize every row of x into heap scratch (freed by the buffer-deallocation
    //    pipeline at the end of the function). Every workgroup quantizes all rows : they
    //    are few next to the columns it computes.
    let _ = write!(
        s,
        "    %qx = memref.alloc(%m) : {qxm}\n    %dx = memref.alloc(%m) : {dxm}\n    %sx = memref.alloc(%m) : {dxm}\n    \
         scf.for %i = %c0 to %m step %c1 {{\n    scf.for %k = %c0 to %ckb step %c1 {{\n      \
         %kx = arith.muli %k, %c32 : index\n      %xv = vector.load %b0[%i, %kx] : {xm}, {v32f}\n      \
         %ax = math.absf %xv : {v32f}\n      %amax = vector.reduction <maximumf>, %ax : {v32f} into f32\n      \
         %d = arith.divf %amax, %f127 : f32\n      %d16 = arith.truncf %d : f32 to f16\n      %dr = arith.extf %d16 : f16 to f32\n      \
         %isz = arith.cmpf oeq, %amax, %f0 : f32\n      %id0 = arith.divf %f127, %amax : f32\n      \
         %id = arith.select %isz, %f0, %id0 : f32\n      %idv = vector.broadcast %id : f32 to {v32f}\n      \
         %v = arith.mulf %xv, %idv : {v32f}\n      %r = math.roundeven %v : {v32f}\n      \
         %qi = arith.fptosi %r : {v32f} to vector<32xi32>\n      %q8 = arith.trunci %qi : vector<32xi32> to {v32b}\n      \
         vector.store %q8, %qx[%i, %kx] : {qxm}, {v32b}\n      memref.store %dr, %dx[%i, %k] : {dxm}\n"
    );
    if q81 {
        let _ = write!(
            s,
            "      %qsum = vector.reduction <add>, %qi : vector<32xi32> into i32\n      %qsf = arith.sitofp %qsum : i32 to f32\n      \
             %sd = arith.mulf %d, %qsf : f32\n      %s16 = arith.truncf %sd : f32 to f16\n      %sr = arith.extf %s16 : f16 to f32\n      \
             memref.store %sr, %sx[%i, %k] : {dxm}\n"
        );
    }
    s.push_str("    }\n    }\n");
    // 2. The dot products, for this workgroup's columns.
    let _ = write!(
        s,
        "    %chunk0 = arith.ceildivui %cn, %nwg : index\n    \
         %chunk = affine.apply affine_map<(c) -> (((c + 7) floordiv 8) * 8)>(%chunk0)\n    \
         %n0a = arith.muli %wg, %chunk : index\n    %n0 = arith.minui %n0a, %cn : index\n    \
         %n1a = arith.addi %n0, %chunk : index\n    %n1 = arith.minui %n1a, %cn : index\n    \
         scf.for %nb = %n0 to %n1 step %cnb {{\n    %nbe0 = arith.addi %nb, %cnb : index\n    %nbe = arith.minui %nbe0, %n1 : index\n    \
         scf.for %ib = %c0 to %m step %crb {{\n    %ibe0 = arith.addi %ib, %crb : index\n    %ibe = arith.minui %ibe0, %m : index\n    \
         scf.for %j = %nb to %nbe step %c1 {{\n    scf.for %i = %ib to %ibe step %c1 {{\n    \
         %res:2 = scf.for %k = %c0 to %ckb step %c1 iter_args(%acc = %z8, %summs = %f0) -> ({v8f}, f32) {{\n      \
         %base = arith.muli %k, %cbb : index\n      %kx = arith.muli %k, %c32 : index\n"
    );
    // The weight block's scale (and min) and its 32 quants as i16.
    let halves = if q81 { 2 } else { 1 };
    let _ = write!(
        s,
        "      %hb = vector.load %b1[%j, %base] : {wm}, vector<{}xi8>\n      \
         %hh = vector.bitcast %hb : vector<{}xi8> to vector<{halves}xf16>\n      \
         %hf = arith.extf %hh : vector<{halves}xf16> to vector<{halves}xf32>\n      \
         %dw = vector.extract %hf[0] : f32 from vector<{halves}xf32>\n      \
         %dxv = memref.load %dx[%i, %k] : {dxm}\n      %d01 = arith.mulf %dw, %dxv : f32\n",
        2 * halves,
        2 * halves
    );
    match format {
        QuantFormat::Q8_0 => {
            let _ = write!(
                s,
                "      %qo = arith.addi %base, %c2q : index\n      %qb = vector.load %b1[%j, %qo] : {wm}, {v32b}\n      \
                 %qw = arith.extsi %qb : {v32b} to vector<32xi16>\n"
            );
        }
        QuantFormat::Q4_0 | QuantFormat::Q4_1 => {
            let qoff = if format == QuantFormat::Q4_0 { "%c2q" } else { "%c4q" };
            let _ = write!(
                s,
                "      %qo = arith.addi %base, {qoff} : index\n      %qb = vector.load %b1[%j, %qo] : {wm}, vector<16xi8>\n      \
                 %m15 = arith.constant dense<15> : vector<16xi8>\n      %s4 = arith.constant dense<4> : vector<16xi8>\n      \
                 %lo = arith.andi %qb, %m15 : vector<16xi8>\n      %hi = arith.shrui %qb, %s4 : vector<16xi8>\n      \
                 %qn = vector.shuffle %lo, %hi [{}] : vector<16xi8>, vector<16xi8>\n      \
                 %{} = arith.extui %qn : {v32b} to vector<32xi16>\n",
                (0..32).map(|i| i.to_string()).collect::<Vec<_>>().join(", "),
                if format == QuantFormat::Q4_0 { "qu" } else { "qw" }
            );
            if format == QuantFormat::Q4_0 {
                let _ = write!(s, "      %o8 = arith.constant dense<8> : vector<32xi16>\n      %qw = arith.subi %qu, %o8 : vector<32xi16>\n");
            }
        }
    }
    let _ = write!(
        s,
        "      %xq = vector.load %qx[%i, %kx] : {qxm}, {v32b}\n      %xw = arith.extsi %xq : {v32b} to vector<32xi16>\n      \
         %p16 = arith.muli %qw, %xw : vector<32xi16>\n      %p32 = arith.extsi %p16 : vector<32xi16> to vector<32xi32>\n      \
         %pq0 = vector.shuffle %p32, %p32 [{}] : vector<32xi32>, vector<32xi32>\n      \
         %pq1 = vector.shuffle %p32, %p32 [{}] : vector<32xi32>, vector<32xi32>\n      \
         %pq2 = vector.shuffle %p32, %p32 [{}] : vector<32xi32>, vector<32xi32>\n      \
         %pq3 = vector.shuffle %p32, %p32 [{}] : vector<32xi32>, vector<32xi32>\n      \
         %ps01 = arith.addi %pq0, %pq1 : vector<8xi32>\n      %ps23 = arith.addi %pq2, %pq3 : vector<8xi32>\n      \
         %lanes = arith.addi %ps01, %ps23 : vector<8xi32>\n      \
         %xy = arith.sitofp %lanes : vector<8xi32> to {v8f}\n      %dv = vector.broadcast %d01 : f32 to {v8f}\n      \
         %accn = vector.fma %dv, %xy, %acc : {v8f}\n",
        lane_mask(0),
        lane_mask(1),
        lane_mask(2),
        lane_mask(3)
    );
    if q81 {
        let _ = write!(
            s,
            "      %mw = vector.extract %hf[1] : f32 from vector<2xf32>\n      %sxv = memref.load %sx[%i, %k] : {dxm}\n      \
             %ms = arith.mulf %mw, %sxv : f32\n      %summsn = arith.addf %summs, %ms : f32\n      scf.yield %accn, %summsn : {v8f}, f32\n"
        );
    } else {
        s.push_str("      scf.yield %accn, %summs : vector<8xf32>, f32\n");
    }
    // ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)), then the scalar part.
    s.push_str("    }\n");
    for l in 0..8 {
        let _ = writeln!(s, "    %l{l} = vector.extract %res#0[{l}] : f32 from {v8f}");
    }
    let _ = write!(
        s,
        "    %h04 = arith.addf %l4, %l0 : f32\n    %h26 = arith.addf %l6, %l2 : f32\n    %h15 = arith.addf %l5, %l1 : f32\n    \
         %h37 = arith.addf %l7, %l3 : f32\n    %h0 = arith.addf %h04, %h26 : f32\n    %h1 = arith.addf %h15, %h37 : f32\n    \
         %hs = arith.addf %h0, %h1 : f32\n    %y = arith.addf %hs, %res#1 : f32\n    memref.store %y, %b2[%i, %j] : {om}\n    \
         }}\n    }}\n    }}\n    }}\n    \
         return\n  }}\n"
    );
    s
}

/// Element `r` of each group of 4 consecutive products: lane `l` sums elements
/// `4l .. 4l + 4` (integer sums are exact, so their order does not matter).
fn lane_mask(r: usize) -> String {
    (0..8).map(|l| (4 * l + r).to_string()).collect::<Vec<_>>().join(", ")
}
