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
//! Weight nibbles are unsigned (`q4_1`, `q5_1`: a fifth bit from the block's `qh`) or
//! offset by 8 (`q4_0`) or 16 (`q5_0`); `q8_0` bytes are signed.
//! `q4_k` is walked in 32-weight sub-blocks, each taken as a Q4_1 block whose scale is
//! `d * sc` and whose min is `-dmin * m` (its 6-bit pair); `q6_k` sub-blocks are signed
//! (`q - 32`) with one scale per 16 weights, applied per lane (lanes 0..4 hold the first
//! 16 products). llama.cpp quantizes activations for k-quants in 256-wide Q8_K blocks
//! instead, so k-quant results agree with its to 8-bit quantization error, not bit for bit.
//! Columns are split over workgroups; rows and columns are walked in cache blocks.

use crate::lower::KernelSpec;
use max_dialects::QuantFormat;
use std::fmt::Write;

/// Output columns per cache block.
const NB: i64 = 32;
/// Rows per cache block.
const RB: i64 = 16;
/// Rows quantized at a time (their 8-bit copy lives on the stack: `RC * K` bytes).
const RC: i64 = 64;

/// The scale of an 8-bit activation block (step 1 above), as MLIR lines at `indent`, from
/// its largest magnitude `amax` (f32) and the f32 constants `f127` (127.0) and `zero`:
/// defines `%{p}d` (`amax / 127`), `%{p}dr` (that rounded through f16: the block's scale)
/// and `%{p}id` (`127 / amax`, 0 for an all-zero block, what the values are multiplied by
/// before rounding). Shared by the CPU kernel and the GPU's ([`crate::gpu_qmatmul`],
/// [`crate::gpu_qdot`]), which must round exactly as it does.
pub(crate) fn block_scale(p: &str, amax: &str, (f127, zero): (&str, &str), indent: usize) -> String {
    let i = " ".repeat(indent);
    format!(
        "{i}%{p}d = arith.divf {amax}, {f127} : f32\n{i}%{p}d16 = arith.truncf %{p}d : f32 to f16\n{i}%{p}dr = arith.extf %{p}d16 : f16 to f32\n\
         {i}%{p}isz = arith.cmpf oeq, {amax}, {zero} : f32\n{i}%{p}id0 = arith.divf {f127}, {amax} : f32\n\
         {i}%{p}id = arith.select %{p}isz, {zero}, %{p}id0 : f32\n"
    )
}

/// The `func.func` of a quantized-activation matmul. Bindings: x (f32), w, out (f32).
///
/// With `avx2`, block products use the byte multiply-adds llama.cpp uses (`vpmaddubsw` then
/// `vpmaddwd` against ones; signed weights via `vpsignb`), which give the same exact lane
/// sums as the portable form in far fewer instructions.
pub fn kernel_func(spec: &KernelSpec, format: QuantFormat, avx2: bool) -> String {
    let (x, w, out) = (&spec.inputs[0], &spec.inputs[1], &spec.outputs[0]);
    let (xm, wm, om) = (x.memref(), w.memref(), out.memref());
    let n = w.dims[0].expect("verifier: static weight rows");
    let bb = format.block_bytes();
    let kb = format.sub_blocks(w.dims[1].expect("verifier: static weight row bytes"));
    let k = kb * 32;
    // Formats with a min need the activation blocks' sums (Q8_1).
    let q81 = matches!(format, QuantFormat::Q4_1 | QuantFormat::Q5_1 | QuantFormat::Q4K);
    // Unsigned weight quants (an unsigned-by-signed byte product).
    let unsigned = q81;
    let (v32f, v32b, v8f) = ("vector<32xf32>", "vector<32xi8>", "vector<8xf32>");
    let (qxm, dxm) = (format!("memref<{RC}x{k}xi8>"), format!("memref<{kb}x{RC}xf32>"));
    let mut s = format!("  func.func @{}(%b0: {xm}, %b1: {wm}, %b2: {om}, %wg: index, %nwg: index) {{\n", spec.name);
    let _ = write!(
        s,
        "    %c0 = arith.constant 0 : index\n    %c1 = arith.constant 1 : index\n    %c2q = arith.constant 2 : index\n    \
         %c4q = arith.constant 4 : index\n    %c32 = arith.constant 32 : index\n    %cbb = arith.constant {bb} : index\n    \
         %ckb = arith.constant {kb} : index\n    %cn = arith.constant {n} : index\n    %cnb = arith.constant {NB} : index\n    \
         %crb = arith.constant {RB} : index\n    %f0 = arith.constant 0.0 : f32\n    %fm0 = arith.constant -0.0 : f32\n    %f127 = arith.constant 127.0 : f32\n    \
         %z8 = arith.constant dense<0.0> : {v8f}\n    %ones16 = arith.constant dense<1> : vector<16xi16>\n    %m = memref.dim %b0, %c0 : {xm}\n"
    );
    // Rows go in chunks of RC: 1. quantize the chunk's rows of x into stack scratch (every
    // workgroup quantizes them all: rows are few next to the columns it computes), 2. this
    // workgroup's columns for those rows.
    let _ = write!(
        s,
        "    %qx = memref.alloca() : {qxm}\n    %dx = memref.alloca() : {dxm}\n    %sx = memref.alloca() : {dxm}\n    \
         %crc = arith.constant {RC} : index\n    \
         %chunk0 = arith.ceildivui %cn, %nwg : index\n    \
         %chunk = affine.apply affine_map<(c) -> (((c + 7) floordiv 8) * 8)>(%chunk0)\n    \
         %n0a = arith.muli %wg, %chunk : index\n    %n0 = arith.minui %n0a, %cn : index\n    \
         %n1a = arith.addi %n0, %chunk : index\n    %n1 = arith.minui %n1a, %cn : index\n    \
         scf.for %r0 = %c0 to %m step %crc {{\n    %rn0 = arith.addi %r0, %crc : index\n    %rn = arith.minui %rn0, %m : index\n    \
         %rows = arith.subi %rn, %r0 : index\n    \
         scf.for %li = %c0 to %rows step %c1 {{\n    %i = arith.addi %r0, %li : index\n    scf.for %k = %c0 to %ckb step %c1 {{\n      \
         %kx = arith.muli %k, %c32 : index\n      %xv = vector.load %b0[%i, %kx] : {xm}, {v32f}\n      \
         %ax = math.absf %xv : {v32f}\n      %amax = vector.reduction <maximumf>, %ax : {v32f} into f32\n{}      \
         %idv = vector.broadcast %id : f32 to {v32f}\n      \
         %v = arith.mulf %xv, %idv : {v32f}\n      %r = math.roundeven %v : {v32f}\n      \
         %qi = arith.fptosi %r : {v32f} to vector<32xi32>\n      %q8 = arith.trunci %qi : vector<32xi32> to {v32b}\n      \
         vector.store %q8, %qx[%li, %kx] : {qxm}, {v32b}\n      memref.store %dr, %dx[%k, %li] : {dxm}\n",
        block_scale("", "%amax", ("%f127", "%f0"), 6)
    );
    if q81 {
        let _ = write!(
            s,
            "      %qsum = vector.reduction <add>, %qi : vector<32xi32> into i32\n      %qsf = arith.sitofp %qsum : i32 to f32\n      \
             %sd = arith.mulf %d, %qsf : f32\n      %s16 = arith.truncf %sd : f32 to f16\n      %sr = arith.extf %s16 : f16 to f32\n      \
             memref.store %sr, %sx[%k, %li] : {dxm}\n"
        );
    }
    s.push_str("    }\n    }\n");
    // 2. The dot products, for this workgroup's columns. A block of rows decodes each weight
    // block once and multiplies it into every row of the block, whose accumulators live in a
    // small scratch (`%accs`, `%sums`); a lone row (decode) keeps them in registers. Either
    // way each row sums its blocks in order, so the arithmetic is that of one row at a time.
    let (accm, sumsm) = (format!("memref<{RB}x8xf32>"), format!("memref<{RB}xf32>"));
    let _ = write!(
        s,
        "    %accs = memref.alloca() : {accm}\n    %sums = memref.alloca() : {sumsm}\n    \
         scf.for %nb = %n0 to %n1 step %cnb {{\n    %nbe0 = arith.addi %nb, %cnb : index\n    %nbe = arith.minui %nbe0, %n1 : index\n    \
         scf.for %ib = %c0 to %rows step %crb {{\n    %ibe0 = arith.addi %ib, %crb : index\n    %ibe = arith.minui %ibe0, %rows : index\n    \
         %nrows = arith.subi %ibe, %ib : index\n    %lone = arith.cmpi eq, %nrows, %c1 : index\n    \
         scf.if %lone {{\n    scf.for %j = %nb to %nbe step %c1 {{\n"
    );
    let ctx = DotCtx { format, q81, unsigned, avx2, wm: &wm, dxm: &dxm, qxm: &qxm, accm: &accm, sumsm: &sumsm, om: &om, kb };
    lone_column(&mut s, &ctx);
    s.push_str("    }\n    } else {\n");
    // Q6_K keeps the scratch: its sub-block decode is the larger cost, which 16 rows share
    // better than 8 (tiles of 8 and 4 rows measured 1.04x and 0.98x of its time).
    if avx2 && format != QuantFormat::Q6K {
        register_tiles(&mut s, &ctx);
    } else {
        s.push_str("    scf.for %j = %nb to %nbe step %c1 {\n");
        row_block(&mut s, &ctx, "%ib", "%ibe");
        s.push_str("    }\n");
    }
    // Closes the `else`, and the loops over row blocks, column blocks and row chunks.
    s.push_str("    }\n    }\n    }\n    }\n    return\n  }\n");
    s
}

/// How far ahead (bytes) a lone row's column prefetches its weight stream. Decode reads each
/// weight once, from DRAM, and the hardware prefetcher alone leaves the stream short of the
/// bandwidth a plain read loop gets: SmolLM2 Q4_1 decode went from 108 to 113, 117 and 119
/// tokens/s with 256, 512 and 1024 bytes (2 threads, mean of four runs each).
const PREFETCH_BYTES: i64 = 1024;

/// What the dot-product emitters need of the kernel being written.
struct DotCtx<'a> {
    format: QuantFormat,
    q81: bool,
    unsigned: bool,
    avx2: bool,
    wm: &'a str,
    dxm: &'a str,
    qxm: &'a str,
    accm: &'a str,
    sumsm: &'a str,
    om: &'a str,
    kb: i64,
}

/// Whether `format` is walked in 256-weight super-blocks of eight 32-weight sub-blocks.
fn super_blocked(format: QuantFormat) -> bool {
    matches!(format, QuantFormat::Q4K | QuantFormat::Q6K)
}

/// The open loop over weight blocks, carrying `carry` ((name, initial value, type)
/// triples; results `{res}#x`): over super-blocks `%ks` (block base `%base`;
/// [`sub_blocks`] walks their insides) for k-quants, else over blocks `%k` (with `%base`
/// and `%kx`).
fn open_block_loop(s: &mut String, c: &DotCtx<'_>, res: &str, carry: &[(String, String, String)]) {
    let (res, args) = carried_loop(res, carry);
    if super_blocked(c.format) {
        let _ = write!(s, "    %cks = arith.constant {} : index\n    {res}scf.for %ks = %c0 to %cks step %c1{args} {{\n      %base = arith.muli %ks, %cbb : index\n", c.kb / 8);
        for u in 0..=8 {
            let _ = writeln!(s, "      %csb{u} = arith.constant {u} : index");
        }
    } else {
        let _ = write!(s, "    {res}scf.for %k = %c0 to %ckb step %c1{args} {{\n      {}\n      %kx = arith.muli %k, %c32 : index\n", crate::qmatmul::block_base(c.format));
    }
}

/// A (name, initial value, type) triple of a loop-carried value.
fn carried(name: &str, init: &str, ty: &str) -> (String, String, String) {
    (name.to_string(), init.to_string(), ty.to_string())
}

/// Inside a super-block loop: its eight sub-blocks (block `%k`, sub-block `%ksub`), each a
/// loop of one trip, which canonicalization inlines with `%ksub` a constant: the sub-block's
/// scale lane, quant offsets and shifts then fold (LLVM does not fully unroll a body this
/// large). `carry`: the initial lane and min accumulators, which the sub-blocks update in
/// turn (`body` leaves `%accn`, `%summsn`); returns the last sub-block's values of them.
fn sub_blocks(s: &mut String, carry: Option<(&str, &str)>, body: &dyn Fn(&mut String)) -> Option<(String, String)> {
    let values: Vec<(String, String, String)> = carry.map(|(a, m)| vec![carried("%acc", a, "vector<8xf32>"), carried("%summs", m, "f32")]).unwrap_or_default();
    let last = chained_sub_blocks(s, "%rin", &values, &|s: &mut String| {
        body(s);
        if carry.is_some() {
            vec!["%accn".into(), "%summsn".into()]
        } else {
            Vec::new()
        }
    });
    carry.map(|_| (last[0].clone(), last[1].clone()))
}

/// The eight one-trip sub-block loops of [`sub_blocks`], for any carried values: `carry`
/// holds (name as the body reads it, the first loop's initial value, type) triples, and the
/// body returns the names of the values it leaves. Returns the last loop's results (named
/// `{res}{u}#x`), none when nothing is carried.
fn chained_sub_blocks(s: &mut String, res: &str, carry: &[(String, String, String)], body: &dyn Fn(&mut String) -> Vec<String>) -> Vec<String> {
    let mut inits: Vec<String> = carry.iter().map(|(_, i, _)| i.clone()).collect();
    let tys: Vec<&str> = carry.iter().map(|(_, _, t)| t.as_str()).collect();
    for u in 0..8 {
        let this: Vec<(String, String, String)> = carry.iter().zip(&inits).map(|((n, _, t), i)| (n.clone(), i.clone(), t.clone())).collect();
        let name = format!("{res}{u}");
        let (head, tail) = carried_loop(&name, &this);
        let _ = write!(
            s,
            "      {head}scf.for %ksub = %csb{u} to %csb{} step %c1{tail} {{\n      \
             %k = affine.apply affine_map<(a, b) -> (a * 8 + b)>(%ks, %ksub)\n      %kx = arith.muli %k, %c32 : index\n",
            u + 1
        );
        let next = body(s);
        if !carry.is_empty() {
            let _ = writeln!(s, "      scf.yield {} : {}", next.join(", "), tys.join(", "));
        }
        s.push_str("      }\n");
        inits = (0..carry.len()).map(|x| format!("{name}#{x}")).collect();
    }
    inits
}

/// The `%res:N = ` prefix and ` iter_args(...) -> (...)` suffix of a loop carrying `carry`
/// ((name, initial value, type) triples); neither when it carries nothing.
fn carried_loop(res: &str, carry: &[(String, String, String)]) -> (String, String) {
    if carry.is_empty() {
        return (String::new(), String::new());
    }
    let args: Vec<String> = carry.iter().map(|(n, i, _)| format!("{n} = {i}")).collect();
    let tys: Vec<&str> = carry.iter().map(|(_, _, t)| t.as_str()).collect();
    (format!("{res}:{} = ", carry.len()), format!(" iter_args({}) -> ({})", args.join(", "), tys.join(", ")))
}

/// Weight block `%k` of row `%j`: its scale `%dw` (and min `%mw`) and its 32 quants, signed
/// in `%qs` (with `|w|` in `%qa` for the AVX2 product) or unsigned nibbles in `%qn`. Q4_K
/// needs its super-block's scales ([`crate::qmatmul::q4k_scales`]) in scope.
fn weight_block(s: &mut String, c: &DotCtx<'_>) {
    let (wm, v32b) = (c.wm, "vector<32xi8>");
    match c.format {
        QuantFormat::Q6K => {
            crate::qmatmul::q6k_sub_block(s, wm);
            // d alone (each half's scale joins it per lane in the product).
            let _ = writeln!(s, "      %dw = arith.addf %k6d, %fm0 : f32");
        }
        QuantFormat::Q4K => {
            // The sub-block's scale and min (w = q * dsc - dm), and its unsigned nibbles `%qn`.
            crate::qmatmul::q4k_sub_block_of(s, wm, "%ksub");
            let _ = write!(s, "      %dw = arith.addf %k4dsc, %fm0 : f32\n      %mw = arith.addf %k4mneg, %fm0 : f32\n");
        }
        _ => {
            if c.q81 {
                let _ = write!(
                    s,
                    "      %hb = vector.load %b1[%j, %base] : {wm}, vector<4xi8>\n      \
                     %hh = vector.bitcast %hb : vector<4xi8> to vector<2xf16>\n      \
                     %hf = arith.extf %hh : vector<2xf16> to vector<2xf32>\n      \
                     %dw = vector.extract %hf[0] : f32 from vector<2xf32>\n"
                );
            } else {
                // The lone f16 scale is widened in integer registers: as a vector op, LLVM
                // loads it with `vpinsrw` into whatever register is free (often the
                // accumulator), which chains every block to the previous block's FMA.
                // Exact: normal and inf/nan by rebiasing the exponent, subnormals as
                // m * 2^-24, then the sign.
                let _ = write!(
                    s,
                    "      %hb = vector.load %b1[%j, %base] : {wm}, vector<2xi8>\n      \
                     %hv = vector.bitcast %hb : vector<2xi8> to vector<1xi16>\n      \
                     %h16 = vector.extract %hv[0] : i16 from vector<1xi16>\n      \
                     %h32 = arith.extui %h16 : i16 to i32\n      \
                     %hc7fff = arith.constant 32767 : i32\n      %hem = arith.andi %h32, %hc7fff : i32\n      \
                     %hsg = arith.subi %h32, %hem : i32\n      %hc16 = arith.constant 16 : i32\n      %hsign = arith.shli %hsg, %hc16 : i32\n      \
                     %hc13 = arith.constant 13 : i32\n      %hsh = arith.shli %hem, %hc13 : i32\n      \
                     %hcn = arith.constant 939524096 : i32\n      %hci = arith.constant 1879048192 : i32\n      \
                     %hc7c00 = arith.constant 31744 : i32\n      %hisinf = arith.cmpi uge, %hem, %hc7c00 : i32\n      \
                     %hbias = arith.select %hisinf, %hci, %hcn : i32\n      %hnb = arith.addi %hsh, %hbias : i32\n      \
                     %hnorm = arith.bitcast %hnb : i32 to f32\n      \
                     %hsubf = arith.uitofp %hem : i32 to f32\n      %hc24 = arith.constant 5.9604644775390625e-08 : f32\n      \
                     %hsub = arith.mulf %hsubf, %hc24 : f32\n      \
                     %hc400 = arith.constant 1024 : i32\n      %hissub = arith.cmpi ult, %hem, %hc400 : i32\n      \
                     %hmag = arith.select %hissub, %hsub, %hnorm : f32\n      \
                     %hmagb = arith.bitcast %hmag : f32 to i32\n      %hdb = arith.ori %hmagb, %hsign : i32\n      \
                     %dw = arith.bitcast %hdb : i32 to f32\n"
                );
            }
            if c.q81 {
                let _ = writeln!(s, "      %mw = vector.extract %hf[1] : f32 from vector<2xf32>");
            }
        }
    }
    match c.format {
        QuantFormat::Q4K | QuantFormat::Q6K => {}
        QuantFormat::Q8_0 => {
            let _ = write!(s, "      %qo = arith.addi %base, %c2q : index\n      %qs = vector.load %b1[%j, %qo] : {wm}, {v32b}\n");
        }
        QuantFormat::Q4_0 | QuantFormat::Q4_1 | QuantFormat::Q5_0 | QuantFormat::Q5_1 => {
            crate::qmatmul::load_nibbles(s, c.format, wm, "%qn");
            if matches!(c.format, QuantFormat::Q4_0 | QuantFormat::Q5_0) {
                let off = if c.format == QuantFormat::Q4_0 { 8 } else { 16 };
                let _ = write!(s, "      %o8 = arith.constant dense<{off}> : {v32b}\n      %qs = arith.subi %qn, %o8 : {v32b}\n");
            }
        }
    }
    if c.avx2 && !c.unsigned {
        // |w|, for an unsigned-by-signed product with x carrying w's sign.
        let _ = writeln!(s, "      %qa = math.absi %qs : {v32b}");
    }
}

/// The product of the weight block ([`weight_block`]) with block `%k` of quantized row `%li`
/// of x, added into `acc` (`vector<8xf32>`, lane sums) and `summs` (f32, the min part):
/// `%accn` and `%summsn`.
fn block_product(s: &mut String, c: &DotCtx<'_>, acc: &str, summs: &str) {
    let (dxm, qxm) = (c.dxm, c.qxm);
    let (v32b, v8f) = ("vector<32xi8>", "vector<8xf32>");
    let _ = write!(
        s,
        "      %dxv = memref.load %dx[%k, %li] : {dxm}\n      %d01 = arith.mulf %dw, %dxv : f32\n      \
         %xq = vector.load %qx[%li, %kx] : {qxm}, {v32b}\n"
    );
    // Lane l of %lanes (i32) = sum of products 4l .. 4l+3.
    if c.avx2 {
        let (u, v) = if c.unsigned {
            ("%qn", "%xq")
        } else {
            let _ = writeln!(s, "      %xs = func.call @max_x86_psignb(%xq, %qs) : ({v32b}, {v32b}) -> {v32b}");
            ("%qa", "%xs")
        };
        let _ = write!(
            s,
            "      %m16 = func.call @max_x86_pmaddubsw({u}, {v}) : ({v32b}, {v32b}) -> vector<16xi16>\n      \
             %lanes = func.call @max_x86_pmaddwd(%m16, %ones16) : (vector<16xi16>, vector<16xi16>) -> vector<8xi32>\n"
        );
    } else {
        let ext = if c.unsigned { "arith.extui %qn" } else { "arith.extsi %qs" };
        let _ = write!(
            s,
            "      %qw = {ext} : {v32b} to vector<32xi16>\n      %xw = arith.extsi %xq : {v32b} to vector<32xi16>\n      \
             %p16 = arith.muli %qw, %xw : vector<32xi16>\n      %p32 = arith.extsi %p16 : vector<32xi16> to vector<32xi32>\n      \
             %pq0 = vector.shuffle %p32, %p32 [{}] : vector<32xi32>, vector<32xi32>\n      \
             %pq1 = vector.shuffle %p32, %p32 [{}] : vector<32xi32>, vector<32xi32>\n      \
             %pq2 = vector.shuffle %p32, %p32 [{}] : vector<32xi32>, vector<32xi32>\n      \
             %pq3 = vector.shuffle %p32, %p32 [{}] : vector<32xi32>, vector<32xi32>\n      \
             %ps01 = arith.addi %pq0, %pq1 : vector<8xi32>\n      %ps23 = arith.addi %pq2, %pq3 : vector<8xi32>\n      \
             %lanes = arith.addi %ps01, %ps23 : vector<8xi32>\n",
            lane_mask(0),
            lane_mask(1),
            lane_mask(2),
            lane_mask(3)
        );
    }
    if c.format == QuantFormat::Q6K {
        // Lanes 0..4 hold products 0..16 (the first scale), lanes 4..8 the rest.
        let _ = write!(
            s,
            "      %xy = arith.sitofp %lanes : vector<8xi32> to {v8f}\n      %d01v = vector.broadcast %d01 : f32 to vector<2xf32>\n      \
             %k6ds = arith.mulf %d01v, %k6s : vector<2xf32>\n      \
             %dv = vector.shuffle %k6ds, %k6ds [0, 0, 0, 0, 1, 1, 1, 1] : vector<2xf32>, vector<2xf32>\n      \
             %accn = vector.fma %dv, %xy, {acc} : {v8f}\n"
        );
    } else {
        let _ = write!(
            s,
            "      %xy = arith.sitofp %lanes : vector<8xi32> to {v8f}\n      %dv = vector.broadcast %d01 : f32 to {v8f}\n      \
             %accn = vector.fma %dv, %xy, {acc} : {v8f}\n"
        );
    }
    if c.q81 {
        let _ = write!(
            s,
            "      %sxv = memref.load %sx[%k, %li] : {dxm}\n      %ms = arith.mulf %mw, %sxv : f32\n      %summsn = arith.addf {summs}, %ms : f32\n"
        );
    } else {
        let _ = writeln!(s, "      %summsn = arith.addf {summs}, %fm0 : f32");
    }
}

/// The lone row `%ib` (decode) times column `%j`, stored into the output; the accumulators
/// are loop values.
fn lone_column(s: &mut String, c: &DotCtx<'_>) {
    let v8f = "vector<8xf32>";
    // Rows of the weight are contiguous, so the prefetches run on into the next columns.
    let prefetch = |s: &mut String, lines: usize| {
        for l in 0..lines {
            let _ = write!(
                s,
                "      %cpf{l} = arith.constant {} : index\n      %pfo{l} = arith.addi %base, %cpf{l} : index\n      \
                 memref.prefetch %b1[%j, %pfo{l}], read, locality<0>, data : {}\n",
                PREFETCH_BYTES + 64 * l as i64,
                c.wm
            );
        }
    };
    let product = |s: &mut String| {
        weight_block(s, c);
        s.push_str("      %li = arith.addi %ib, %c0 : index\n");
        block_product(s, c, "%acc", "%summs");
    };
    if super_blocked(c.format) {
        // Super-blocks outside, their eight sub-blocks inside: Q4_K's 6-bit scales and mins
        // are decoded once per super-block, eight at a time.
        open_block_loop(s, c, "%res", &[carried("%acc0", "%z8", v8f), carried("%summs0", "%fm0", "f32")]);
        prefetch(s, (c.format.block_bytes() as usize).div_ceil(64));
        if c.format == QuantFormat::Q4K {
            crate::qmatmul::q4k_scales(s, c.wm);
        }
        let (acc, summs) = sub_blocks(s, Some(("%acc0", "%summs0")), &product).expect("sub-blocks carry the accumulators");
        let _ = writeln!(s, "      scf.yield {acc}, {summs} : {v8f}, f32\n    }}");
    } else {
        open_block_loop(s, c, "%res", &[carried("%acc", "%z8", v8f), carried("%summs", "%fm0", "f32")]);
        prefetch(s, 1);
        product(s);
        let _ = writeln!(s, "      scf.yield %accn, %summsn : {v8f}, f32\n    }}");
    }
    // The lanes in llama.cpp's order, then the scalar part.
    let hs = crate::math::hsum8(s, "%res#0", "h");
    let _ = write!(s, "    %i = arith.addi %r0, %ib : index\n    %y = arith.addf {hs}, %res#1 : f32\n    memref.store %y, %b2[%i, %j] : {}\n", c.om);
}

/// Rows of a register tile of the row-block path (one column): 8 lane accumulators, and
/// the rows' 8 mins in one vector. Measured on a 512 x 576 x 1536 Q4_1 matmul (2 threads),
/// as a fraction of the scratch-accumulator time, rows x columns: 8x1 0.54-0.58, 16x1 0.56,
/// 4x2 0.66, 8x2 0.64, 4x3 0.73, 2x2 0.76, 6x1 0.73 (its rows do not divide the 16-row
/// block).
const TR: usize = 8;

/// The row-block path with AVX2 in register tiles of [`TR`] rows of one column: columns
/// `%nb .. %nbe` by chunk rows `%ib .. %ibe`. Each weight block is decoded once per tile,
/// and the accumulators stay in registers over the whole row (Q4_K: through the
/// super-blocks and their one-trip sub-block loops). Every output still sums its blocks in
/// order with the same operations as [`row_block`] (the min parts as the lanes of one
/// vector, a lane per row), so the results are bit for bit the same. Rows past whole tiles
/// go through [`row_block`].
fn register_tiles(s: &mut String, c: &DotCtx<'_>) {
    let (v8f, vtr) = ("vector<8xf32>", format!("vector<{TR}xf32>"));
    let _ = write!(
        s,
        "    %ctr = arith.constant {TR} : index\n    \
         %trows = affine.apply affine_map<(a, b) -> (a + ((b - a) floordiv {TR}) * {TR})>(%ib, %ibe)\n    \
         %tmz = arith.constant dense<-0.0> : {vtr}\n    \
         scf.for %j = %nb to %nbe step %c1 {{\n    scf.for %i0 = %ib to %trows step %ctr {{\n"
    );
    // Loop values: each row's lane accumulator, then (with mins) the rows' min vector.
    let mut carry: Vec<(String, String, String)> = (0..TR).map(|r| carried(&format!("%ta{r}"), "%z8", v8f)).collect();
    if c.q81 {
        carry.push(carried("%tm", "%tmz", &vtr));
    }
    let tys: Vec<&str> = carry.iter().map(|(_, _, t)| t.as_str()).collect();
    let res = "%tt";
    if super_blocked(c.format) {
        // The super-block loop carries the values under other names: the sub-block loops
        // inside it (each starting from the previous one's results) take `carry`'s names.
        let outer: Vec<(String, String, String)> = carry.iter().map(|(n, i, t)| (n.replace("%t", "%ts"), i.clone(), t.clone())).collect();
        open_block_loop(s, c, res, &outer);
        if c.format == QuantFormat::Q4K {
            crate::qmatmul::q4k_scales(s, c.wm);
        }
        let inner: Vec<(String, String, String)> = carry.iter().zip(&outer).map(|((n, _, t), (o, _, _))| (n.clone(), o.clone(), t.clone())).collect();
        let last = chained_sub_blocks(s, "%trin", &inner, &|s: &mut String| tile_product(s, c));
        let _ = write!(s, "      scf.yield {} : {}\n    }}\n", last.join(", "), tys.join(", "));
    } else {
        open_block_loop(s, c, res, &carry);
        let next = tile_product(s, c);
        let _ = write!(s, "      scf.yield {} : {}\n    }}\n", next.join(", "), tys.join(", "));
    }
    // Each output: its lanes summed, plus its min part.
    for r in 0..TR {
        let hs = crate::math::hsum8(s, &format!("{res}#{r}"), &format!("th{r}_"));
        let sum = if c.q81 {
            let _ = writeln!(s, "      %tmin{r} = vector.extract {res}#{TR}[{r}] : f32 from {vtr}");
            format!("%tmin{r}")
        } else {
            "%fm0".to_string()
        };
        let _ = write!(
            s,
            "      %ty{r} = arith.addf {hs}, {sum} : f32\n      %tr{r} = arith.constant {r} : index\n      \
             %tli{r} = arith.addi %i0, %tr{r} : index\n      %ti{r} = arith.addi %r0, %tli{r} : index\n      \
             memref.store %ty{r}, %b2[%ti{r}, %j] : {}\n",
            c.om
        );
    }
    // The rows past whole tiles.
    s.push_str("    }\n    }\n    scf.for %j = %nb to %nbe step %c1 {\n");
    row_block(s, c, "%trows", "%ibe");
    s.push_str("    }\n");
}

/// One weight block (block `%k` of column `%j`, [`weight_block`]) times the same block of
/// the tile's rows `%i0 ..`: updates the carried `%ta{r}` (and `%tm`), returning the new
/// values' names. The operations per row are [`block_product`]'s.
fn tile_product(s: &mut String, c: &DotCtx<'_>) -> Vec<String> {
    let (v8f, vtr, v32b) = ("vector<8xf32>", format!("vector<{TR}xf32>"), "vector<32xi8>");
    weight_block(s, c);
    // The rows' activation scales (and sums) of this block: one vector load each.
    let _ = writeln!(s, "      %tdx = vector.load %dx[%k, %i0] : {}, {vtr}", c.dxm);
    let mut next = Vec::with_capacity(TR + 1);
    for r in 0..TR {
        let _ = write!(
            s,
            "      %tcr{r} = arith.constant {r} : index\n      %tli{r} = arith.addi %i0, %tcr{r} : index\n      \
             %txq{r} = vector.load %qx[%tli{r}, %kx] : {}, {v32b}\n      %tdx{r} = vector.extract %tdx[{r}] : f32 from {vtr}\n      \
             %td{r} = arith.mulf %dw, %tdx{r} : f32\n",
            c.qxm
        );
        let (u, v) = if c.unsigned {
            ("%qn".to_string(), format!("%txq{r}"))
        } else {
            let _ = writeln!(s, "      %txs{r} = func.call @max_x86_psignb(%txq{r}, %qs) : ({v32b}, {v32b}) -> {v32b}");
            ("%qa".to_string(), format!("%txs{r}"))
        };
        let _ = write!(
            s,
            "      %tm16{r} = func.call @max_x86_pmaddubsw({u}, {v}) : ({v32b}, {v32b}) -> vector<16xi16>\n      \
             %tl{r} = func.call @max_x86_pmaddwd(%tm16{r}, %ones16) : (vector<16xi16>, vector<16xi16>) -> vector<8xi32>\n      \
             %txy{r} = arith.sitofp %tl{r} : vector<8xi32> to {v8f}\n"
        );
        let _ = writeln!(s, "      %tdv{r} = vector.broadcast %td{r} : f32 to {v8f}");
        let _ = writeln!(s, "      %tan{r} = vector.fma %tdv{r}, %txy{r}, %ta{r} : {v8f}");
        next.push(format!("%tan{r}"));
    }
    if c.q81 {
        let _ = write!(
            s,
            "      %tsx = vector.load %sx[%k, %i0] : {}, {vtr}\n      %tmw = vector.broadcast %mw : f32 to {vtr}\n      \
             %tms = arith.mulf %tmw, %tsx : {vtr}\n      %tmn = arith.addf %tm, %tms : {vtr}\n",
            c.dxm
        );
        next.push("%tmn".to_string());
    }
    next
}

/// Column `%j` times the chunk rows `lo .. hi`: each decoded weight block multiplied into
/// every row, accumulators in the `%accs`/`%sums` scratch, then stored into the output.
fn row_block(s: &mut String, c: &DotCtx<'_>, lo: &str, hi: &str) {
    let (accm, sumsm, om) = (c.accm, c.sumsm, c.om);
    let v8f = "vector<8xf32>";
    let _ = write!(
        s,
        "    scf.for %li = {lo} to {hi} step %c1 {{\n      %lz = arith.subi %li, {lo} : index\n      \
         vector.store %z8, %accs[%lz, %c0] : {accm}, {v8f}\n      memref.store %fm0, %sums[%lz] : {sumsm}\n    }}\n"
    );
    let rows = |s: &mut String| {
        weight_block(s, c);
        let _ = write!(
            s,
            "      scf.for %li = {lo} to {hi} step %c1 {{\n      %lr = arith.subi %li, {lo} : index\n      \
             %acc = vector.load %accs[%lr, %c0] : {accm}, {v8f}\n      %summs = memref.load %sums[%lr] : {sumsm}\n"
        );
        block_product(s, c, "%acc", "%summs");
        let _ = write!(s, "      vector.store %accn, %accs[%lr, %c0] : {accm}, {v8f}\n      memref.store %summsn, %sums[%lr] : {sumsm}\n      }}\n");
    };
    open_block_loop(s, c, "", &[]);
    if super_blocked(c.format) {
        if c.format == QuantFormat::Q4K {
            crate::qmatmul::q4k_scales(s, c.wm);
        }
        sub_blocks(s, None, &rows);
    } else {
        rows(s);
    }
    s.push_str("    }\n");
    let _ = write!(
        s,
        "    scf.for %li = {lo} to {hi} step %c1 {{\n    %i = arith.addi %r0, %li : index\n    %lr = arith.subi %li, {lo} : index\n    \
         %accf = vector.load %accs[%lr, %c0] : {accm}, {v8f}\n    %sumf = memref.load %sums[%lr] : {sumsm}\n"
    );
    let hs = crate::math::hsum8(s, "%accf", "h");
    let _ = write!(s, "    %y = arith.addf {hs}, %sumf : f32\n    memref.store %y, %b2[%i, %j] : {om}\n    }}\n");
}

/// Element `r` of each group of 4 consecutive products: lane `l` sums elements
/// `4l .. 4l + 4` (integer sums are exact, so their order does not matter).
fn lane_mask(r: usize) -> String {
    (0..8).map(|l| (4 * l + r).to_string()).collect::<Vec<_>>().join(", ")
}

/// Declarations of the AVX2 byte/word multiply-adds the kernels call. They are defined in
/// LLVM IR after translation ([`define_x86_helpers`]): an intrinsic call inside the MLIR
/// kernels would stop buffer deallocation, which rejects ops with unknown memory effects.
pub const X86_HELPER_DECLS: &str = "  func.func private @max_x86_pmaddubsw(vector<32xi8>, vector<32xi8>) -> vector<16xi16>\n  \
func.func private @max_x86_pmaddwd(vector<16xi16>, vector<16xi16>) -> vector<8xi32>\n  \
func.func private @max_x86_psignb(vector<32xi8>, vector<32xi8>) -> vector<32xi8>\n";

/// Replaces the helper declarations in translated LLVM IR with inlined definitions that
/// call the AVX2 intrinsics.
pub fn define_x86_helpers(ir: &str) -> String {
    let defs = [
        ("@max_x86_pmaddubsw(", "<16 x i16>", "<32 x i8>", "<32 x i8>", "llvm.x86.avx2.pmadd.ub.sw"),
        ("@max_x86_pmaddwd(", "<8 x i32>", "<16 x i16>", "<16 x i16>", "llvm.x86.avx2.pmadd.wd"),
        ("@max_x86_psignb(", "<32 x i8>", "<32 x i8>", "<32 x i8>", "llvm.x86.avx2.psign.b"),
    ];
    let mut out = String::with_capacity(ir.len() + 1024);
    for line in ir.split_inclusive('\n') {
        match defs.iter().find(|d| line.starts_with("declare") && line.contains(d.0)) {
            Some((name, ret, a, b, intrinsic)) => {
                let name = name.trim_end_matches('(');
                let _ = writeln!(
                    out,
                    "define internal {ret} {name}({a} %a, {b} %b) alwaysinline {{\n  %r = call {ret} @{intrinsic}({a} %a, {b} %b)\n  ret {ret} %r\n}}"
                );
            }
            None => out.push_str(line),
        }
    }
    out
}
