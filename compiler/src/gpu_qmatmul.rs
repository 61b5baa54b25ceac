//! Quantized matmuls on the GPU: `y[M, N] = x[M, K] @ dequantize(w)^T` with `w` in its GGUF
//! block layout, decoded in registers (the GPU form of [`crate::qmatmul`]).
//!
//! A warp computes one output column for a tile of [`ROWS`] rows: its lanes take the
//! column's weight blocks in turn (lane `l` blocks `l, l + 32, ...`, so a warp's loads are
//! consecutive bytes), decode each block once with the CPU kernels' decoder
//! ([`crate::qmatmul::decode_block`]) and multiply it into every row of the tile; the
//! lanes' sums meet by warp shuffles. Blocks of 128 threads hold four columns.
//!
//! With `quantize_input` (the LLM path), a first kernel rounds each 32-block of `x` to 8
//! bits exactly as the CPU kernel does ([`crate::qmatmul_q8`]: `d = amax / 127` kept as
//! f16, `q = roundeven(x * 127 / amax)`) and stores the rounded activations `d * q` as f32,
//! so products match the CPU's integer dot products up to the order of sums. Formats with a
//! min (Q4_1, Q5_1, Q4_K) take the block sum `s = f16(d * sum(q))` as the CPU does: the
//! min's term uses it instead of the sum of the rounded activations.
//!
//! Which kernels take a call depends on its rows (decided at run time): up to
//! [`FEW_ROWS`] (decode) the few-rows kernel of [`crate::gpu_qdot`] (8-bit activations in
//! shared memory, integer dot products); from [`TENSOR_CORE_ROWS`] (prefill) the tensor
//! cores on f16 copies of both operands; the quantizer + dot kernel above where neither
//! applies (a tuning knob turning the tensor cores off, a K too wide for the few-rows
//! kernel's shared memory, no quantized input).

use crate::gpu_rows::RowOps;
use crate::gpu_text::KernelText as Gen;
use crate::lower::{BindingType, KernelSpec};
use max_dialects::{DType, Op, QuantFormat};
use std::fmt::Write;

/// Rows of `x` a warp multiplies each decoded weight block into.
pub const ROWS: usize = 8;
/// Output columns per block (one warp each).
const WARPS: usize = 4;
/// Threads per block of the activation quantizer (one 32-block each).
const QUANT_THREADS: usize = 128;
/// Most rows the few-rows kernels ([`crate::gpu_qdot`]) take: up to the tensor cores'
/// threshold. Their work grows with the rows, yet stays below the quantizer + dot kernel's
/// at every count under 16 (PTX emulator, warp instructions per call: Q4_1 576 x 1536 at
/// 15 rows 1.9 M against 4.2 M; Q4_K 4096 x 4096 at 15 rows 19.5 M against 47 M), and
/// with the row blocks the grid's x the weights come from L2 after the first.
pub const FEW_ROWS: usize = 15;
/// Fewest rows that take the tensor cores by default (prefill, a serving batch's decode):
/// the weights decoded once into an f16 copy that an f16 tensor-core matmul reads. The dot
/// kernel issues about 0.32 warp instructions per weight and row (counted on the PTX
/// emulator, Q4_1): at 16 rows 5 a weight, some 5.5 ms per billion weights at an H100's
/// ~900 G warp instructions a second, against the copy's 4.5 bytes a weight written and
/// read, 1.5 ms per billion at 3 TB/s. Below it the copy's two extra launches may cost more
/// than they save on small weights. Untimed: `MAX_GPU_QMATMUL=tc_rows=N` is the A/B knob.
pub const TENSOR_CORE_ROWS: i64 = 16;

/// Threads per block of the weight decoder (a 32-weight block each).
const DEQUANT_THREADS: usize = 256;

/// The fewest rows that take the tensor cores: [`TENSOR_CORE_ROWS`], or
/// `MAX_GPU_QMATMUL=tc_rows=N` (0: never; an A/B knob for benchmarks).
fn tensor_core_rows() -> Option<i64> {
    let mut rows = TENSOR_CORE_ROWS;
    crate::tuning::apply_settings("MAX_GPU_QMATMUL", std::env::var("MAX_GPU_QMATMUL").ok(), |k, x| {
        let ok = k == "tc_rows" && x >= 0;
        if ok {
            rows = x;
        }
        ok
    });
    // Fewer rows than the few-rows kernel's take that kernel first.
    (rows > 0).then_some(rows.max(FEW_ROWS as i64 + 1))
}

/// A quantized matmul's format and sizes, as its kernels need them.
struct Shape {
    format: QuantFormat,
    quantize_input: bool,
    /// Output columns (weight rows).
    n: i64,
    /// 32-weight sub-blocks per weight row (K / 32).
    kb: i64,
    /// The activations are rounded and the format has a min: the block sums are needed.
    with_min: bool,
}

impl Shape {
    fn of(spec: &KernelSpec) -> Shape {
        let Op::QMatMul { format, quantize_input } = spec.body[0].op else { unreachable!("is_gpu_qmatmul checked the op") };
        let w = &spec.inputs[1];
        let n = w.dims[0].expect("verifier: static weight rows");
        let kb = format.sub_blocks(w.dims[1].expect("verifier: static weight row bytes"));
        let with_min = quantize_input && matches!(format, QuantFormat::Q4_1 | QuantFormat::Q5_1 | QuantFormat::Q4K);
        Shape { format, quantize_input, n, kb, with_min }
    }
}

/// Whether `spec` is a quantized matmul for the GPU: f32 activations, and an f32 result or
/// an elementwise epilogue (a residual add), which the kernels apply as they store.
pub fn is_gpu_qmatmul(spec: &KernelSpec) -> bool {
    spec.gpu
        && spec.body.first().is_some_and(|f| matches!(f.op, Op::QMatMul { .. }))
        && spec.native.is_none()
        && spec.partition.is_none()
        && spec.inputs[0].dtype == max_dialects::DType::F32
        && crate::gpu_epilogue::contraction_with_epilogue(spec)
}

/// The host function and `gpu.module` of a quantized matmul. Bindings: x, w, the
/// epilogue's operands, out.
pub fn kernel_func(spec: &KernelSpec) -> String {
    let Shape { format, quantize_input, n, kb, with_min } = Shape::of(spec);
    let (x, w, out) = (&spec.inputs[0], &spec.inputs[1], &spec.outputs[0]);
    let (xm, wm, om) = (x.memref(), w.memref(), out.memref());
    let oc = crate::gpu_epilogue::output_binding(spec);
    // The epilogue's operands: launch arguments, kernel parameters.
    let extra_args: String = crate::gpu_epilogue::launch_args(spec).iter().map(|a| format!("{a}, ")).collect();
    let extra_params: String = crate::gpu_epilogue::params(spec).iter().map(|p| format!("{p}, ")).collect();
    let k = kb * 32;
    let name = &spec.name;
    // The activations the dot kernel reads: x itself, or its 8-bit rounding.
    let xq_t = format!("memref<?x{k}xf32>");
    let xs_t = format!("memref<?x{kb}xf32>");
    let mut s = format!("  func.func @{name}({}, %wg: index, %nwg: index) {{\n", crate::gpu_epilogue::host_params(spec));
    let _ = write!(
        s,
        "    %c0 = arith.constant 0 : index\n    %c1 = arith.constant 1 : index\n    %c128 = arith.constant {} : index\n    \
         %cwarps = arith.constant {WARPS} : index\n    %crows = arith.constant {ROWS} : index\n    %cn = arith.constant {n} : index\n    \
         %ckb = arith.constant {kb} : index\n    %cqt = arith.constant {QUANT_THREADS} : index\n    \
         %m = memref.dim %b0, %c0 : {xm}\n    %some = arith.cmpi ugt, %m, %c0 : index\n    scf.if %some {{\n",
        WARPS * 32
    );
    // A few rows (decode): one kernel that rounds its rows of activations into shared
    // memory and takes integer dot products (no scratch, no second launch). More rows share
    // one rounding pass.
    let few = quantize_input && k <= crate::gpu_qdot::MAX_K;
    if few {
        let _ = write!(
            s,
            "      %cfew = arith.constant {FEW_ROWS} : index\n      %few = arith.cmpi ule, %m, %cfew : index\n      scf.if %few {{\n{}      }} else {{\n",
            crate::gpu_qdot::launch(&format!("{name}_llm"), n, k, &format!("%b0 : {xm}, %b1 : {wm}, {extra_args}%b{oc} : {om}"))
        );
    }
    // Many rows (prefill): the weights decoded once to f16 for a tensor-core matmul.
    let tc_rows = tensor_core_rows();
    let tc = tc_rows.and_then(|_| tensor_core_spec(spec, k, n));
    if let (Some(mm), Some(tc_rows)) = (&tc, tc_rows) {
        let xh_t = mm.inputs[0].memref();
        let wh_t = mm.inputs[1].memref();
        let rs_t = mm.inputs.last().expect("the row scales").memref();
        let xh_dyn = if mm.inputs[0].dims[0].is_none() { "%m" } else { "" };
        // The matmul's epilogue operands: the quantized matmul's, then the row scales.
        let mm_args: String = (2..spec.inputs.len()).map(|i| format!("%b{i}, ")).collect();
        let mm_types: String = mm.inputs.iter().skip(2).map(|t| format!("{}, ", t.memref())).collect();
        let _ = write!(
            s,
            "      %ctc = arith.constant {tc_rows} : index\n      %tc = arith.cmpi uge, %m, %ctc : index\n      scf.if %tc {{\n        \
             %xh = memref.alloc({xh_dyn}) : {xh_t}\n        %rs = memref.alloc({xh_dyn}) : {rs_t}\n        %wh = memref.alloc() : {wh_t}\n        \
             %cht = arith.constant {} : index\n        \
             gpu.launch_func @{name}_llm::@to_half blocks in (%m, %c1, %c1) threads in (%cht, %c1, %c1) args(%b0 : {xm}, %xh : {xh_t}, %rs : {rs_t}, %m : index)\n        \
             %cdt = arith.constant {DEQUANT_THREADS} : index\n        %wblk = arith.muli %cn, %ckb : index\n        %dg = arith.ceildivui %wblk, %cdt : index\n        \
             gpu.launch_func @{name}_llm::@dequantize blocks in (%dg, %c1, %c1) threads in (%cdt, %c1, %c1) args(%b1 : {wm}, %wh : {wh_t})\n        \
             func.call @{}(%xh, %wh, {mm_args}%rs, %b{oc}, %wg, %nwg) : ({xh_t}, {wh_t}, {mm_types}{om}, index, index) -> ()\n        \
             memref.dealloc %wh : {wh_t}\n        memref.dealloc %rs : {rs_t}\n        memref.dealloc %xh : {xh_t}\n      }} else {{\n",
            half_threads(kb),
            mm.name
        );
    }
    let mut args = Vec::new();
    if quantize_input {
        let _ = write!(
            s,
            "      %xq = memref.alloc(%m) : {xq_t}\n      %xs = memref.alloc(%m) : {xs_t}\n      \
             %nblk = arith.muli %m, %ckb : index\n      %qg = arith.ceildivui %nblk, %cqt : index\n      \
             gpu.launch_func @{name}_llm::@quantize blocks in (%qg, %c1, %c1) threads in (%cqt, %c1, %c1) \
             args(%b0 : {xm}, %xq : {xq_t}, %xs : {xs_t}, %m : index)\n"
        );
        args.push(format!("%xq : {xq_t}"));
        if with_min {
            args.push(format!("%xs : {xs_t}"));
        }
    } else if xm == xq_t {
        args.push(format!("%b0 : {xq_t}"));
    } else {
        let _ = writeln!(s, "      %xc = memref.cast %b0 : {xm} to {xq_t}");
        args.push(format!("%xc : {xq_t}"));
    }
    args.push(format!("%b1 : {wm}"));
    args.extend(crate::gpu_epilogue::launch_args(spec));
    args.push(format!("%b{oc} : {om}"));
    args.push("%m : index".into());
    let _ = write!(
        s,
        "      %gx = arith.ceildivui %cn, %cwarps : index\n      %gy = arith.ceildivui %m, %crows : index\n      \
         gpu.launch_func @{name}_llm::@qmatmul blocks in (%gx, %gy, %c1) threads in (%c128, %c1, %c1) args({})\n",
        args.join(", ")
    );
    if quantize_input {
        let _ = writeln!(s, "      memref.dealloc %xq : {xq_t}\n      memref.dealloc %xs : {xs_t}");
    }
    // The ends of the tensor-core and few-rows branches' `else`.
    if tc.is_some() {
        s.push_str("      }\n");
    }
    if few {
        s.push_str("      }\n");
    }
    s.push_str("    }\n    return\n  }\n");

    let _ = writeln!(s, "  gpu.module @{name}_llm {{");
    if quantize_input {
        quantize_kernel(&mut s, &xm, &xq_t, &xs_t, kb);
    }
    if few {
        crate::gpu_qdot::kernels(&mut s, spec, format, (&xm, &wm, &om), n, kb, &extra_params, None);
    }
    dot_kernel(&mut s, spec, format, (&xq_t, with_min.then_some(xs_t.as_str())), (&wm, &om), n, kb, &extra_params);
    if let Some(mm) = &tc {
        half_kernel(&mut s, &xm, &mm.inputs[0].memref(), &mm.inputs.last().expect("the row scales").memref(), kb, quantize_input);
        dequantize_kernel(&mut s, format, &wm, &mm.inputs[1].memref(), n, kb);
    }
    s.push_str("  }\n");
    if let Some(mm) = &tc {
        if crate::gpu_wgmma::is_wgmma_matmul(mm) {
            s.push_str(&crate::gpu_wgmma::tensor_core_func(mm));
        } else {
            s.push_str(&crate::gpu_matmul::kernel_func(mm));
        }
    }
    s
}

/// The f16 matmul that takes a quantized matmul's many-row calls (see [`TENSOR_CORE_ROWS`]):
/// bindings `xh[M, K]` (the activations, rounded as the dot kernel rounds them, then to
/// f16, each row divided by its scale: [`half_kernel`]), `wh[K, N]` (the weights decoded to
/// f16), the epilogue's operands, the row scales `[M, 1]` (f32), the f32 result. Its body
/// multiplies each sum by its row's scale before the quantized matmul's epilogue. `None`
/// where no tensor-core kernel takes that shape.
fn tensor_core_spec(spec: &KernelSpec, k: i64, n: i64) -> Option<KernelSpec> {
    use crate::lower::{FusedOp, ValueRef};
    let half = |dims: Vec<Option<i64>>| BindingType { dtype: DType::F16, dims };
    let rows = spec.inputs[0].dims[0];
    let scales = BindingType { dtype: DType::F32, dims: vec![rows, Some(1)] };
    let mut body = spec.body.clone();
    let sum = body[0].results[0];
    // The product before scaling: a temporary no other op of the body names.
    let fresh = body.iter().flat_map(|f| f.results.iter().chain(&f.args)).filter_map(|r| match r {
        ValueRef::Temp(t, _) => Some(t + 1),
        _ => None,
    });
    let product = ValueRef::Temp(fresh.max().unwrap_or(0), DType::F32);
    body[0].op = Op::MatMul;
    body[0].results = vec![product];
    let scale = FusedOp {
        op: Op::Binary(max_dialects::BinaryOp::Mul),
        args: vec![product, ValueRef::Input(spec.inputs.len())],
        results: vec![sum],
        packed_rhs: false,
        sparse_lhs: false,
        call: None,
    };
    body.insert(1, scale);
    let mm = KernelSpec {
        name: format!("{}_tc", spec.name),
        inputs: [half(vec![rows, Some(k)]), half(vec![Some(k), Some(n)])].into_iter().chain(spec.inputs[2..].iter().cloned()).chain([scales]).collect(),
        body,
        ..spec.clone()
    };
    crate::gpu_matmul::is_gpu_matmul(&mm, false).then_some(mm)
}

/// `@dequantize`: a thread per 32-weight block `k` of weight row `j` (`j` fastest, so a
/// warp's stores of one decoded row are 64 contiguous bytes) writes its decoded values,
/// rounded to f16, to `WH[32 k .., j]` (`[K, N]`, the row-major B the matmul reads).
fn dequantize_kernel(s: &mut String, format: QuantFormat, wm: &str, wh_t: &str, n: i64, kb: i64) {
    let _ = write!(
        s,
        "    gpu.func @dequantize(%b1: {wm}, %WH: {wh_t}) kernel attributes {{known_block_size = array<i32: {DEQUANT_THREADS}, 1, 1>}} {{\n      \
         %c32 = arith.constant 32 : index\n      %c2q = arith.constant 2 : index\n      %cbb = arith.constant {} : index\n      \
         %cn = arith.constant {n} : index\n      %ctotal = arith.constant {} : index\n      %cdt = arith.constant {DEQUANT_THREADS} : index\n      \
         %bid = gpu.block_id x\n      %tid = gpu.thread_id x\n      %i0 = arith.muli %bid, %cdt : index\n      %idx = arith.addi %i0, %tid : index\n      \
         %in = arith.cmpi ult, %idx, %ctotal : index\n      scf.if %in {{\n      %k = arith.divui %idx, %cn : index\n      %j = arith.remui %idx, %cn : index\n",
        format.block_bytes(),
        n * kb
    );
    let _ = writeln!(s, "      {}", crate::qmatmul::block_base(format));
    crate::qmatmul::decode_block(s, format, wm);
    let _ = writeln!(s, "      %wh = arith.truncf %wv : vector<32xf32> to vector<32xf16>\n      %k0 = arith.muli %k, %c32 : index");
    for i in 0..32 {
        let _ = write!(
            s,
            "      %dq_o{i} = arith.constant {i} : index\n      %dq_r{i} = arith.addi %k0, %dq_o{i} : index\n      \
             %dq_e{i} = vector.extract %wh[{i}] : f16 from vector<32xf16>\n      memref.store %dq_e{i}, %WH[%dq_r{i}, %j] : {wh_t}\n"
        );
    }
    s.push_str("      }\n      gpu.return\n    }\n");
}

/// `@quantize`: a thread per 32-block of `x`; writes the rounded activations `d * q` and the
/// block sums `f16(d * sum(q))`. The rounding to nearest even adds and subtracts 1.5 * 2^23
/// (exact for the |v| <= 127 it sees), which needs no math library.
fn quantize_kernel(s: &mut String, xm: &str, xq_t: &str, xs_t: &str, kb: i64) {
    activation_kernel(s, "quantize", xm, (xq_t, DType::F32), Some(xs_t), kb, true);
}

/// A thread per 32-block of `x` (type `xm`) stores it to `XQ` (`out`: type and element
/// type), with `round` as `d * q` (`d = f16(amax / 127)`, `q = roundeven(x / d)`), and with
/// `xs_t` the block sums `f16(d * sum(q))` to `XS`.
fn activation_kernel(s: &mut String, entry: &str, xm: &str, (out_t, out_dt): (&str, DType), xs_t: Option<&str>, kb: i64, round: bool) {
    let xs_param = xs_t.map(|t| format!("%XS: {t}, ")).unwrap_or_default();
    let _ = write!(
        s,
        "    gpu.func @{entry}(%X: {xm}, %XQ: {out_t}, {xs_param}%m: index) kernel attributes {{known_block_size = array<i32: {QUANT_THREADS}, 1, 1>}} {{\n      \
         %c0 = arith.constant 0 : index\n      %c1 = arith.constant 1 : index\n      %c32 = arith.constant 32 : index\n      \
         %ckb = arith.constant {kb} : index\n      %cqt = arith.constant {QUANT_THREADS} : index\n      \
         %f0 = arith.constant 0.0 : f32\n      %f127 = arith.constant 127.0 : f32\n      %magic = arith.constant 12582912.0 : f32\n      \
         %bid = gpu.block_id x\n      %tid = gpu.thread_id x\n      %base = arith.muli %bid, %cqt : index\n      \
         %idx = arith.addi %base, %tid : index\n      %total = arith.muli %m, %ckb : index\n      \
         %in = arith.cmpi ult, %idx, %total : index\n      scf.if %in {{\n        \
         %row = arith.divui %idx, %ckb : index\n        %kb = arith.remui %idx, %ckb : index\n        %k0 = arith.muli %kb, %c32 : index\n"
    );
    if round {
        let _ = write!(
            s,
            "        %amax = scf.for %i = %c0 to %c32 step %c1 iter_args(%a = %f0) -> (f32) {{\n          \
             %ki = arith.addi %k0, %i : index\n          %xv = memref.load %X[%row, %ki] : {xm}\n          \
             %ab = math.absf %xv : f32\n          %an = arith.maximumf %a, %ab : f32\n          scf.yield %an : f32\n        }}\n{}",
            crate::qmatmul_q8::block_scale("", "%amax", ("%f127", "%f0"), 8)
        );
    }
    // The store loop carries the sum of the quants when the block sums are wanted.
    let (head, tail) = if xs_t.is_some() {
        ("%qsum = scf.for %i = %c0 to %c32 step %c1 iter_args(%sq = %f0) -> (f32) {", "          %sn = arith.addf %sq, %r : f32\n          scf.yield %sn : f32\n")
    } else {
        ("scf.for %i = %c0 to %c32 step %c1 {", "")
    };
    let _ = write!(s, "        {head}\n          %ki = arith.addi %k0, %i : index\n          %xv = memref.load %X[%row, %ki] : {xm}\n");
    let mut v = "%xv".to_string();
    if round {
        s.push_str(
            "          %v = arith.mulf %xv, %id : f32\n          %vm = arith.addf %v, %magic : f32\n          %r = arith.subf %vm, %magic : f32\n          \
             %xr = arith.mulf %r, %dr : f32\n",
        );
        v = "%xr".into();
    }
    if out_dt == DType::F16 {
        let _ = writeln!(s, "          %xh = arith.truncf {v} : f32 to f16");
        v = "%xh".into();
    }
    let _ = write!(s, "          memref.store {v}, %XQ[%row, %ki] : {out_t}\n{tail}        }}\n");
    if let Some(t) = xs_t {
        let _ = write!(
            s,
            "        %sd = arith.mulf %d, %qsum : f32\n        %s16 = arith.truncf %sd : f32 to f16\n        %sr = arith.extf %s16 : f16 to f32\n        \
             memref.store %sr, %XS[%row, %kb] : {t}\n"
        );
    }
    s.push_str("      }\n      gpu.return\n    }\n");
}

/// Rows whose largest magnitude reaches 2^this are scaled down for f16 (see
/// [`half_kernel`]): their values, rounded to 8 bits as the quantized kernels round them,
/// may exceed it by 2^-11 of themselves, still below f16's largest finite value (65504).
const HALF_SCALE_FROM_EXP: i32 = 15;

/// Threads of [`half_kernel`]'s block for rows of `kb` 32-blocks: about a thread per
/// 32-block (8 16-byte vectors a thread, so the whole row fits in the block's registers),
/// in whole warps, at most 1024 (longer rows take more vectors a thread).
fn half_threads(kb: i64) -> i64 {
    ((kb + 31) / 32 * 32).clamp(32, 1024)
}

/// `@to_half`: writes `x` to `XH` (type `xh_t`) as f16, each 32-block first rounded to 8
/// bits as `@quantize` rounds it when `round`; a block per row (grid `(rows, 1, 1)`,
/// [`half_threads`] threads).
///
/// f16 ends at 65504, where the CPU's f32 activations do not, nor its 8-bit blocks
/// (llama.cpp's arithmetic: the scale an f16 of amax / 127, to about 8.3e6; only the block
/// sums of formats with a min are f16 too). So a row whose largest magnitude reaches
/// 2^[`HALF_SCALE_FROM_EXP`] is divided by the power of two `s` that brings it below, `s`
/// goes to `S[row, 0]` (type `scale_t`; 1 for every other row), and the matmul multiplies
/// its sums by it ([`tensor_core_spec`]). Dividing by a power of two is exact (but where a
/// value falls into f16's subnormals), so the products are the unscaled ones'; rows under
/// the bound, all of them in the models seen so far, keep their bits.
///
/// The row is read once: each thread loads its 16-byte vectors (vector `j * threads + t`,
/// consecutive across the block; the last clamped to the row's end, a value seen twice not
/// changing a maximum) and keeps them in registers while the block finds the row's largest
/// magnitude; a 32-block is then 8 consecutive lanes' vectors, whose largest magnitude three
/// shuffles combine; each lane stores its 4 values as 8 bytes, consecutive across the warp.
fn half_kernel(s: &mut String, xm: &str, xh_t: &str, scale_t: &str, kb: i64, round: bool) {
    let threads = half_threads(kb);
    let vectors = kb * 8;
    let per_thread = (vectors + threads - 1) / threads;
    let mut g = Gen::new("h");
    let i = 6;
    g.line(4, format!(
        "gpu.func @to_half(%X: {xm}, %XQ: {xh_t}, %S: {scale_t}, %m: index) workgroup(%red : memref<{}xf32, #gpu.address_space<workgroup>>) kernel attributes {{known_block_size = array<i32: {threads}, 1, 1>}} {{",
        threads / 32
    ));
    for l in [
        "%c0 = arith.constant 0 : index",
        "%c4 = arith.constant 4 : index",
        "%c32 = arith.constant 32 : index",
        "%f0 = arith.constant 0.0 : f32",
        "%f1 = arith.constant 1.0 : f32",
        "%f127 = arith.constant 127.0 : f32",
        "%magic = arith.constant 12582912.0 : f32",
        "%w32 = arith.constant 32 : i32",
        "%row = gpu.block_id x",
        "%tid = gpu.thread_id x",
        "%warp = arith.divui %tid, %c32 : index",
        "%lanei = arith.remui %tid, %c32 : index",
        "%lane0 = arith.cmpi eq, %lanei, %c0 : index",
    ] {
        g.line(i, l);
    }
    let last = g.let_(i, format!("arith.constant {} : index", vectors - 1));
    // The thread's vectors: (index in the row, loaded value).
    let mut vecs = Vec::new();
    for j in 0..per_thread {
        let off = g.let_(i, format!("arith.constant {} : index", j * threads));
        let v = g.let_(i, format!("arith.addi %tid, {off} : index"));
        let vc = g.let_(i, format!("arith.minui {v}, {last} : index"));
        let col = g.let_(i, format!("arith.muli {vc}, %c4 : index"));
        let x = g.let_(i, format!("vector.load %X[%row, {col}] {{alignment = 16}} : {xm}, vector<4xf32>"));
        vecs.push((v, x));
    }
    // Each vector's largest magnitude, then the thread's.
    let mut vmax = Vec::new();
    for (_, x) in &vecs {
        let a = g.let_(i, format!("math.absf {x} : vector<4xf32>"));
        let mut m = String::new();
        for e in 0..4 {
            let ae = g.let_(i, format!("vector.extract {a}[{e}] : f32 from vector<4xf32>"));
            m = if e == 0 { ae } else { g.let_(i, format!("arith.maximumf {m}, {ae} : f32")) };
        }
        vmax.push(m);
    }
    let mut part = "%f0".to_string();
    for m in &vmax {
        part = g.let_(i, format!("arith.maximumf {part}, {m} : f32"));
    }
    let amax = g.block_reduce(i, &part, "maximumf", threads as usize);
    // The scale's exponent: amax's, less one under the bound's (so amax / s < 2^15), and at
    // least 0 (biased 127). A NaN or infinite row stays one.
    let bits = g.let_(i, format!("arith.bitcast {amax} : f32 to i32"));
    let c23 = g.let_(i, "arith.constant 23 : i32");
    let c255 = g.let_(i, "arith.constant 255 : i32");
    let e0 = g.let_(i, format!("arith.shrui {bits}, {c23} : i32"));
    let e1 = g.let_(i, format!("arith.andi {e0}, {c255} : i32"));
    let from = g.let_(i, format!("arith.constant {} : i32", HALF_SCALE_FROM_EXP - 1));
    let bias = g.let_(i, "arith.constant 127 : i32");
    let e2 = g.let_(i, format!("arith.subi {e1}, {from} : i32"));
    let e = g.let_(i, format!("arith.maxsi {e2}, {bias} : i32"));
    let sbits = g.let_(i, format!("arith.shli {e}, {c23} : i32"));
    let scale = g.let_(i, format!("arith.bitcast {sbits} : i32 to f32"));
    let inv = g.let_(i, format!("arith.divf %f1, {scale} : f32"));
    let t0 = g.let_(i, "arith.cmpi eq, %tid, %c0 : index");
    g.line(i, format!("scf.if {t0} {{"));
    g.line(i + 2, format!("memref.store {scale}, %S[%row, %c0] : {scale_t}"));
    g.line(i, "}");
    for ((v, x), m) in vecs.iter().zip(&vmax) {
        let mut vals: Vec<String> = (0..4).map(|e| g.let_(i, format!("vector.extract {x}[{e}] : f32 from vector<4xf32>"))).collect();
        if round {
            // The 32-block's largest magnitude: its 8 lanes' (aligned groups of 8: a group
            // is all in the row or all past it).
            let bmax = g.shuffle_xor(i, m, "maximumf", [4, 2, 1]);
            let p = g.fresh().trim_start_matches('%').to_string() + "_";
            g.s.push_str(&crate::qmatmul_q8::block_scale(&p, &bmax, ("%f127", "%f0"), i));
            let (id, dr) = (format!("%{p}id"), format!("%{p}dr"));
            for val in vals.iter_mut() {
                let q = g.let_(i, format!("arith.mulf {val}, {id} : f32"));
                let qm = g.let_(i, format!("arith.addf {q}, %magic : f32"));
                let r = g.let_(i, format!("arith.subf {qm}, %magic : f32"));
                *val = g.let_(i, format!("arith.mulf {r}, {dr} : f32"));
            }
        }
        let halves: Vec<String> = vals
            .iter()
            .map(|val| {
                let sv = g.let_(i, format!("arith.mulf {val}, {inv} : f32"));
                g.let_(i, format!("arith.truncf {sv} : f32 to f16"))
            })
            .collect();
        let h = g.let_(i, format!("vector.from_elements {} : vector<4xf16>", halves.join(", ")));
        let inside = g.let_(i, format!("arith.cmpi ule, {v}, {last} : index"));
        g.line(i, format!("scf.if {inside} {{"));
        let col = g.let_(i + 2, format!("arith.muli {v}, %c4 : index"));
        g.line(i + 2, format!("vector.store {h}, %XQ[%row, {col}] {{alignment = 8}} : {xh_t}, vector<4xf16>"));
        g.line(i, "}");
    }
    g.line(i, "gpu.return");
    g.line(4, "}");
    s.push_str(&g.s);
}

/// `@qmatmul`: warp `w` of block `(bx, by)` computes column `4 bx + w` for rows
/// `ROWS * by ..`. `xs_t` is the block-sum operand's type for formats with a min.
#[allow(clippy::too_many_arguments)] // the types of one generated kernel's operands
fn dot_kernel(s: &mut String, spec: &KernelSpec, format: QuantFormat, (xq_t, xs_t): (&str, Option<&str>), (wm, om): (&str, &str), n: i64, kb: i64, extra: &str) {
    let xs_param = xs_t.map(|t| format!("%XS: {t}, ")).unwrap_or_default();
    let accs: Vec<String> = (0..ROWS).map(|r| format!("%a{r}")).collect();
    let f32s = ["f32"; ROWS].join(", ");
    let _ = write!(
        s,
        "    gpu.func @qmatmul(%XQ: {xq_t}, {xs_param}%b1: {wm}, {extra}%Y: {om}, %m: index) kernel attributes {{known_block_size = array<i32: {}, 1, 1>}} {{\n      \
         %c0 = arith.constant 0 : index\n      %c1 = arith.constant 1 : index\n      %c2q = arith.constant 2 : index\n      \
         %c32 = arith.constant 32 : index\n      %cbb = arith.constant {} : index\n      %ckb = arith.constant {kb} : index\n      \
         %cn = arith.constant {n} : index\n      %cwarps = arith.constant {WARPS} : index\n      %crows = arith.constant {ROWS} : index\n      \
         %g_zero = arith.constant 0.0 : f32\n      %g_w32 = arith.constant 32 : i32\n      \
         %g_tid = gpu.thread_id x\n      %g_bx = gpu.block_id x\n      %g_by = gpu.block_id y\n      \
         %g_warp = arith.divui %g_tid, %c32 : index\n      %g_lane = arith.remui %g_tid, %c32 : index\n      \
         %g_j0 = arith.muli %g_bx, %cwarps : index\n      %j = arith.addi %g_j0, %g_warp : index\n      \
         %g_m0 = arith.muli %g_by, %crows : index\n      %g_jok = arith.cmpi ult, %j, %cn : index\n      scf.if %g_jok {{\n",
        WARPS * 32,
        format.block_bytes()
    );
    for r in 0..ROWS {
        let _ = write!(s, "      %g_r{r} = arith.addi %g_m0, %c{r}r : index\n      %g_in{r} = arith.cmpi ult, %g_r{r}, %m : index\n");
    }
    let _ = writeln!(
        s,
        "      %g_acc:{ROWS} = scf.for %k = %g_lane to %ckb step %c32 iter_args({}) -> ({f32s}) {{",
        accs.iter().map(|a| format!("{a} = %g_zero")).collect::<Vec<_>>().join(", ")
    );
    let _ = writeln!(s, "      {}", crate::qmatmul::block_base(format));
    crate::qmatmul::decode_block(s, format, wm);
    let _ = writeln!(s, "      %g_kx = arith.muli %k, %c32 : index");
    for r in 0..ROWS {
        let _ = write!(
            s,
            "      %g_n{r} = scf.if %g_in{r} -> (f32) {{\n        \
             %g_xv{r} = vector.load %XQ[%g_r{r}, %g_kx] : {xq_t}, vector<32xf32>\n        \
             %g_p{r} = arith.mulf %g_xv{r}, %wv : vector<32xf32>\n        \
             %g_s{r} = vector.reduction <add>, %g_p{r} : vector<32xf32> into f32\n"
        );
        let sum = if let Some(t) = xs_t {
            let _ = writeln!(s, "        %g_bs{r} = memref.load %XS[%g_r{r}, %k] : {t}");
            min_term(s, format, &r.to_string(), &format!("%g_xv{r}"))
        } else {
            format!("%g_s{r}")
        };
        let _ = write!(s, "        %g_t{r} = arith.addf %a{r}, {sum} : f32\n        scf.yield %g_t{r} : f32\n      }} else {{\n        scf.yield %a{r} : f32\n      }}\n");
    }
    let _ = writeln!(s, "      scf.yield {} : {f32s}\n      }}", (0..ROWS).map(|r| format!("%g_n{r}")).collect::<Vec<_>>().join(", "));
    // The lanes' partial sums, then lane 0 stores each row's result.
    let _ = writeln!(s, "      %g_lane0 = arith.cmpi eq, %g_lane, %c0 : index");
    for r in 0..ROWS {
        let acc = warp_sum(s, &format!("%g_acc#{r}"), &r.to_string());
        let (code, y) = crate::gpu_epilogue::element(spec, &acc, &format!("%g_r{r}"), "%j", &format!("q{r}"));
        let _ = write!(
            s,
            "      %g_st{r} = arith.andi %g_lane0, %g_in{r} : i1\n      scf.if %g_st{r} {{\n{code}        \
             memref.store {y}, %Y[%g_r{r}, %j] : {om}\n      }}\n"
        );
    }
    s.push_str("      }\n      gpu.return\n    }\n");
    // Row offsets within the tile.
    let consts: String = (0..ROWS).map(|r| format!("      %c{r}r = arith.constant {r} : index\n")).collect();
    let at = s.rfind("      %g_zero = arith.constant 0.0 : f32\n").expect("written above");
    s.insert_str(at, &consts);
}

/// The few-rows kernels ([`crate::gpu_qdot::kernels`]) of the quantized matmul `spec`
/// (bindings A, w, the epilogue's operands, out) for an A they compute themselves
/// ([`crate::gpu_prologue`]) as they round it. Launch arguments: A's operands, w, the
/// epilogue's operands, out; grids as [`kernel_func`]'s few-rows launch
/// ([`crate::gpu_qdot::launch`]).
pub(crate) fn computed_a_few_rows_kernel(spec: &KernelSpec, a: &dyn crate::gpu_gemv::ComputedA) -> String {
    let Shape { format, n, kb, .. } = Shape::of(spec);
    let (w, out) = (&spec.inputs[1], &spec.outputs[0]);
    let extra: String = crate::gpu_epilogue::params(spec).iter().map(|p| format!("{p}, ")).collect();
    let mut s = String::new();
    crate::gpu_qdot::kernels(&mut s, spec, format, (&a.params(), &w.memref(), &out.memref()), n, kb, &extra, Some(a));
    s
}

/// The min's term of a block with the CPU's block sum `%g_bs{tag}` in place of the sum of
/// the rounded activations `xr`: `%g_s{tag} + m * (bs - sum(xr))`, `m` the decoded block's
/// min. Returns the new sum.
fn min_term(s: &mut String, format: QuantFormat, tag: &str, xr: &str) -> String {
    let min = match format {
        QuantFormat::Q4_1 | QuantFormat::Q5_1 => "%mn",
        _ => "%k4mneg",
    };
    let _ = write!(
        s,
        "      %g_xsum{tag} = vector.reduction <add>, {xr} : vector<32xf32> into f32\n      \
         %g_df{tag} = arith.subf %g_bs{tag}, %g_xsum{tag} : f32\n      \
         %g_c{tag} = arith.mulf {min}, %g_df{tag} : f32\n      %g_sc{tag} = arith.addf %g_s{tag}, %g_c{tag} : f32\n"
    );
    format!("%g_sc{tag}")
}

/// `v` (f32) summed over the warp's lanes by shuffles; every lane gets the sum. Names carry
/// `tag`.
pub(crate) fn warp_sum(s: &mut String, v: &str, tag: &str) -> String {
    let mut acc = v.to_string();
    for off in [16, 8, 4, 2, 1] {
        let _ = write!(
            s,
            "      %g_o{tag}_{off} = arith.constant {off} : i32\n      \
             %g_h{tag}_{off}, %g_v{tag}_{off} = gpu.shuffle xor {acc}, %g_o{tag}_{off}, %g_w32 : f32\n      \
             %g_u{tag}_{off} = arith.addf {acc}, %g_h{tag}_{off} : f32\n"
        );
        acc = format!("%g_u{tag}_{off}");
    }
    acc
}
