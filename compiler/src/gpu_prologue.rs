//! Matmuls on sm_90 whose A the matrix-vector kernel computes itself: `cast(rms_norm(x,
//! w)) @ B` and `elementwise(..) @ B` (Llama's `silu(gate) * up` before the down projection),
//! each with the matmul's epilogue, as one dispatch.
//!
//! A Llama layer's projections read bf16 rows that a kernel of their own had stored: the
//! two norms' row kernels and the `silu(gate) * up` kernel, three launches a layer of a
//! decode step, each one or a few blocks long. Here, for 1 to [`crate::gpu_gemv::MAX_ROWS`]
//! rows (decode), each block of the matrix-vector kernel computes its chunk of A into shared
//! memory ([`crate::gpu_gemv::ComputedA`]): one launch. Other row counts compute A into a
//! temporary first (the row kernel, or an elementwise kernel here), then run the
//! tensor-core matmul.
//!
//! A quantized matmul rounding its f32 activations to 8 bits (GGUF models) takes such an A
//! too, on any chip: `rms_norm(x, w)` (no cast) or the elementwise ops; its few-rows kernels
//! (1 to [`crate::gpu_qmatmul::FEW_ROWS`] rows) compute the block's rows of A as they round
//! them to 8 bits into shared memory ([`crate::gpu_qmatmul::computed_a_few_rows_kernel`]).
//!
//! Fusion forms the region ([`fusible`]); [`split`] recovers A's computation and the
//! matmul's spec from it.

use crate::gpu_gemv::ComputedA;
use crate::gpu_text::KernelText as Gen;
use crate::lower::{BindingType, FusedOp, KernelSpec, ScalarEmitter, ValueRef};
use max_dialects::{DType, Graph, Op};
use std::collections::HashMap;
use std::fmt::Write;

/// The type of `%pred`, the matrix-vector kernel's block-reduction slots for a computed A
/// (a slot per warp of the widest row kernel, [`crate::gpu_rows::WIDE_THREADS`]).
pub(crate) const PRED: &str = "memref<32xf32, #gpu.address_space<workgroup>>";

/// Whether the region `pro` computing A (`cast(rms_norm(x, w))`, or elementwise ops after
/// an optional split of their operand along its columns) can join the matmul region `mm`
/// (root first) that alone reads its result as A: A `[M, K]` of B's bf16/f16, its operands
/// `[M, K]`-shaped or `[K]` (a norm's `x[M, K]` and `w[K]`; a split's operand `[M, parts *
/// K]`), B `[K, N]` static and taken by the matrix-vector kernel with A in shared memory, and
/// an elementwise epilogue that reads none of A's operands.
///
/// With `quantized`, the matmul may instead be a quantized matmul rounding its f32
/// activations (`quantize_input`): A is then f32 (`rms_norm(x, w)` without a cast), and the
/// few-rows kernels take whole rows of A in shared memory ([`QUANT_MAX_K`]). With
/// `gemv` (sm_90), a bf16/f16 matmul may take it.
pub fn fusible(graph: &Graph, pro: &[usize], mm: &[usize], gemv: bool, quantized: bool) -> bool {
    let (Some(&last), Some(root)) = (pro.last(), mm.first().map(|r| &graph.nodes[*r])) else { return false };
    let quant = matches!(root.op, Op::QMatMul { quantize_input: true, .. });
    if !((gemv && matches!(root.op, Op::MatMul)) || (quantized && quant)) || pro.iter().any(|n| graph.nodes[*n].outputs.is_empty()) || root.inputs.len() != 2 {
        return false;
    }
    let h = graph.nodes[last].outputs[0];
    // The region's result: the matmul's, or its epilogue's.
    let result = graph.nodes[*mm.last().expect("mm has its root")].outputs[0];
    let (a, b, out) = (graph.ty(h), graph.ty(root.inputs[1]), graph.ty(result));
    let Some(k) = a.dims.get(1).and_then(|d| d.as_const()) else { return false };
    let produced: Vec<_> = pro.iter().flat_map(|n| graph.nodes[*n].outputs.iter().copied()).collect();
    let operands: Vec<_> = pro.iter().flat_map(|n| graph.nodes[*n].inputs.iter().copied()).filter(|v| !produced.contains(v)).collect();
    let ops: Vec<&Op> = pro.iter().map(|n| &graph.nodes[*n].op).collect();
    let shape_ok = match ops[..] {
        [Op::RmsNorm { .. }, Op::Cast(_)] | [Op::RmsNorm { .. }] => {
            // An f32 norm (the kernel rounds its values once, to A's type).
            let (x, w) = (graph.ty(operands[0]), graph.ty(operands[1]));
            x.dims == a.dims && x.dtype == DType::F32 && w.rank() == 1 && w.dims[0].as_const() == Some(k) && w.dtype.is_float()
        }
        _ => {
            let split_ok = match ops[0] {
                Op::Split { axis, .. } => {
                    let x = graph.ty(graph.nodes[pro[0]].inputs[0]);
                    let parts = graph.nodes[pro[0]].outputs.len() as i64;
                    x.rank() == 2 && axis.rem_euclid(2) == 1 && x.dims[0] == a.dims[0] && x.dims[1].as_const() == Some(parts * k)
                }
                _ => true,
            };
            let elementwise = ops.iter().skip(usize::from(matches!(ops[0], Op::Split { .. }))).all(|op| ScalarEmitter::supports(op));
            let split_operand = matches!(ops[0], Op::Split { .. }).then(|| graph.nodes[pro[0]].inputs[0]);
            let operand_ok = |v: &max_dialects::ValueId| {
                let t = graph.ty(*v);
                Some(*v) == split_operand || t.dims == a.dims || (t.rank() == 1 && t.dims[0].as_const() == Some(k)) || t.rank() == 0
            };
            split_ok && elementwise && operands.iter().all(operand_ok)
        }
    };
    let epilogue_ok = mm[1..].iter().map(|e| &graph.nodes[*e]).all(|e| ScalarEmitter::supports(&e.op) && !e.inputs.iter().any(|v| operands.contains(v)) && e.inputs.iter().all(|v| graph.ty(*v).rank() <= 2));
    let common = root.inputs[0] == h && shape_ok && a.rank() == 2 && !operands.contains(&root.inputs[1]) && out.rank() == 2 && epilogue_ok;
    if quant {
        // The quantized kernels' own conditions: f32 activations, a float result.
        return common && a.dtype == DType::F32 && out.dtype.is_float() && k <= QUANT_MAX_K;
    }
    let Some(cols) = b.dims.get(1).and_then(|d| d.as_const()) else { return false };
    common
        && matches!(a.dtype, DType::BF16 | DType::F16)
        && b.rank() == 2
        && b.dims[0].as_const() == Some(k)
        && matches!(out.dtype, DType::BF16 | DType::F16 | DType::F32)
        && k % 8 == 0
        && cols % 8 == 0
        && crate::gpu_gemv::applies(&BindingType::of(a), &BindingType::of(b))
        && crate::gpu_gemv::computed_a_fits(k, cols)
}

/// The widest A the quantized few-rows kernel rounds whole into shared memory.
pub const QUANT_MAX_K: i64 = crate::gpu_qdot::MAX_K;

/// A merged spec taken apart: A's computation and the matmul.
pub struct Parts {
    /// The spec's inputs before B: A's operands.
    pub a_inputs: usize,
    /// The ops computing A (the last one's result is A).
    pub a_body: Vec<FusedOp>,
    /// A: `[M, K]` of B's dtype (f32 for a quantized matmul).
    pub a: BindingType,
    /// The matmul with its epilogue; its bindings are A, B, the epilogue's operands, the
    /// result.
    pub mm: KernelSpec,
}

/// The parts of a merged region's spec (bindings: A's operands, B, the epilogue's operands,
/// the result).
pub fn split(spec: &KernelSpec) -> Option<Parts> {
    let at = spec.body.iter().position(|f| matches!(f.op, Op::MatMul | Op::QMatMul { .. }))?;
    let (a_body, rest) = spec.body.split_at(at);
    let (mm, epilogue) = rest.split_first()?;
    let a_ref = a_body.last()?.results[0];
    let ValueRef::Input(b_index) = mm.args[1] else { return None };
    // A's operands are the inputs before B, read by A's ops only; A is a temporary.
    let reads_a_side = |f: &FusedOp| f.args.iter().any(|r| matches!(r, ValueRef::Input(i) if *i < b_index) || a_body.iter().any(|o| o.results.contains(r)));
    let a_only_inputs = a_body.iter().flat_map(|f| &f.args).all(|r| !matches!(r, ValueRef::Input(i) if *i >= b_index) && !matches!(r, ValueRef::Output(_)));
    if mm.args[0] != a_ref || !matches!(a_ref, ValueRef::Temp(..)) || b_index == 0 || epilogue.iter().any(reads_a_side) || !a_only_inputs || spec.outputs.len() != 1 {
        return None;
    }
    let ValueRef::Temp(_, a_dt) = a_ref else { return None };
    // A's rows are its first matrix operand's (a norm's x, a split's operand or an
    // elementwise operand), its columns B's rows.
    let k = match mm.op {
        Op::QMatMul { format, .. } => Some(format.sub_blocks(spec.inputs[b_index].dims.get(1).copied().flatten()?) * 32),
        _ => spec.inputs[b_index].dims[0],
    };
    let rows = spec.inputs[..b_index].iter().find(|t| t.dims.len() == 2)?.dims[0];
    let a = BindingType { dtype: a_dt, dims: vec![rows, k] };
    let remap = |r: &ValueRef| match r {
        ValueRef::Input(i) => ValueRef::Input(i - b_index + 1),
        other => *other,
    };
    let mut body = vec![FusedOp { args: vec![ValueRef::Input(0), ValueRef::Input(1)], ..mm.clone() }];
    body.extend(epilogue.iter().map(|f| FusedOp { args: f.args.iter().map(remap).collect(), ..f.clone() }));
    let mm = KernelSpec {
        name: format!("{}_mm", spec.name),
        inputs: std::iter::once(a.clone()).chain(spec.inputs[b_index..].iter().cloned()).collect(),
        body,
        partition: None,
        ..spec.clone()
    };
    Some(Parts { a_inputs: b_index, a_body: a_body.to_vec(), a, mm })
}

/// The row kernel's spec computing a norm-kind A (`rms_norm`, maybe with a cast), or
/// `None` for an elementwise A.
fn norm_rows(spec: &KernelSpec, p: &Parts) -> Option<KernelSpec> {
    let (norm, tail) = p.a_body.split_first()?;
    let cast_tail = match tail {
        [] => true,
        [c] => matches!(c.op, Op::Cast(_)),
        _ => false,
    };
    let mut body = p.a_body.clone();
    let last = body.last_mut().expect("a norm");
    last.results = vec![ValueRef::Output(0)];
    (matches!(norm.op, Op::RmsNorm { .. }) && cast_tail).then(|| KernelSpec {
        name: format!("{}_norm", spec.name),
        inputs: spec.inputs[..p.a_inputs].to_vec(),
        outputs: vec![p.a.clone()],
        body,
        partition: None,
        ..spec.clone()
    })
}

/// Whether `spec` is a merged region the GPU kernels compute: the warpgroup-MMA matmul and
/// the matrix-vector kernel (or the quantized matmul's kernels) take the matmul, and the
/// row kernel A's norm (or A is elementwise ops after an optional split along its
/// operand's columns).
pub fn is_gpu_prologue_matmul(spec: &KernelSpec) -> bool {
    let Some(p) = split(spec).filter(|_| spec.gpu && spec.native.is_none() && spec.ptx.is_none()) else { return false };
    let (a, b) = (&p.mm.inputs[0], &p.mm.inputs[1]);
    let a_ok = match norm_rows(spec, &p) {
        Some(rows) => crate::gpu_rows::is_row_kernel(&rows) && rows.inputs[0].dims == a.dims,
        None => Elementwise::new(spec, &p).is_some(),
    };
    if let Op::QMatMul { quantize_input, .. } = p.mm.body[0].op {
        return a_ok && quantize_input && crate::gpu_qmatmul::is_gpu_qmatmul(&p.mm) && a.dims[1].is_some_and(|k| k <= QUANT_MAX_K);
    }
    a_ok && spec.wgmma
        && crate::gpu_wgmma::is_wgmma_matmul(&p.mm)
        && a.dtype != DType::F32
        && crate::gpu_gemv::applies(a, b)
        && a.dims[1].zip(b.dims[1]).is_some_and(|(k, n)| crate::gpu_gemv::computed_a_fits(k, n))
}

/// A = `cast(rms_norm(x, w))`: each block reduces the row's sum of squares over all of K
/// as the row kernel ([`crate::gpu_rows`]) does with 256 threads, then `y = x * r * w`
/// rounded as the cast rounds it.
struct Norm {
    x: BindingType,
    w: BindingType,
    epsilon: f64,
    dt: DType,
}

impl ComputedA for Norm {
    fn params(&self) -> String {
        format!("%X: {}, %Wn: {}", self.x.memref(), self.w.memref())
    }
    fn shaped(&self) -> (String, String) {
        ("%X".into(), self.x.memref())
    }
    fn setup(&self, g: &mut Gen, i: usize, row: &str, real: usize) -> Vec<String> {
        use crate::gpu_rows::RowOps;
        let tx = self.x.memref();
        // The row kernel's block of `virt` threads (1024 for wide rows), played by `real`:
        // thread t keeps the partial sums of virtual threads t, t + real, ..., so the sum has
        // the row kernel's bits.
        let virt = crate::gpu_rows::threads_for(self.x.dims[1]);
        let cv = g.let_(i, format!("arith.constant {virt} : index"));
        let mut parts = Vec::new();
        for v in 0..virt / real {
            let off = g.let_(i, format!("arith.constant {} : index", v * real));
            let start = g.let_(i, format!("arith.addi %tid, {off} : index"));
            let part = g.fresh();
            g.line(i, format!("{part} = scf.for %pc = {start} to %K step {cv} iter_args(%pa = %fzero) -> (f32) {{"));
            let xv = g.let_(i + 2, format!("memref.load %X[{row}, %pc] : {tx}"));
            let xf = g.as_f32(i + 2, &xv, self.x.dtype);
            let sq = g.let_(i + 2, format!("arith.mulf {xf}, {xf} : f32"));
            let acc = g.let_(i + 2, format!("arith.addf %pa, {sq} : f32"));
            g.line(i + 2, format!("scf.yield {acc} : f32"));
            g.line(i, "}");
            parts.push(part);
        }
        let ss = g.block_reduce_parts(i, &parts, "addf", real, ("%pred", PRED));
        let ki = g.let_(i, "arith.index_cast %K : index to i64");
        let kf = g.let_(i, format!("arith.sitofp {ki} : i64 to f32"));
        let eps = g.let_(i, format!("arith.constant {} : f32", crate::lower::float_lit(self.epsilon)));
        let ms = g.let_(i, format!("arith.divf {ss}, {kf} : f32"));
        let sh = g.let_(i, format!("arith.addf {ms}, {eps} : f32"));
        vec![g.let_(i, format!("math.rsqrt {sh} : f32"))]
    }
    fn value(&self, g: &mut Gen, i: usize, row: &str, k: &str, setup: &[String], _tag: &str) -> String {
        let xv = g.let_(i, format!("memref.load %X[{row}, {k}] : {}", self.x.memref()));
        let xf = g.convert(i, &xv, self.x.dtype, DType::F32);
        let wv = g.let_(i, format!("memref.load %Wn[{k}] : {}", self.w.memref()));
        let wf = g.convert(i, &wv, self.w.dtype, DType::F32);
        let y = g.let_(i, format!("arith.mulf {xf}, {} : f32", setup[0]));
        let y = g.let_(i, format!("arith.mulf {y}, {wf} : f32"));
        let rounded = g.convert(i, &y, DType::F32, self.dt);
        g.convert(i, &rounded, self.dt, DType::F32)
    }
}

/// A = elementwise ops on A-shaped operands (or `[K]` rows broadcast, or scalars), the
/// first of them maybe a split of an `[M, parts * K]` operand along its columns, whose
/// parts are read in place.
struct Elementwise {
    inputs: Vec<BindingType>,
    body: Vec<FusedOp>,
    /// A split's results: (operand binding, column offset of the part).
    parts: HashMap<ValueRef, (usize, i64)>,
    /// An operand shaped like A, or the split's operand (same rows).
    shaped: usize,
}

impl Elementwise {
    fn new(spec: &KernelSpec, p: &Parts) -> Option<Elementwise> {
        let k = p.a.dims[1]?;
        let mut parts = HashMap::new();
        let mut body = p.a_body.clone();
        if let Some(&Op::Split { axis, .. }) = body.first().map(|f| &f.op) {
            let split = body.remove(0);
            let ValueRef::Input(x) = split.args[0] else { return None };
            let b = &spec.inputs[x];
            if b.dims.len() != 2 || axis.rem_euclid(2) != 1 || b.dims[1] != Some(k * split.results.len() as i64) {
                return None;
            }
            for (n, r) in split.results.iter().enumerate() {
                parts.insert(*r, (x, n as i64 * k));
            }
        }
        let inputs = spec.inputs[..p.a_inputs].to_vec();
        let operand_ok = |r: &ValueRef| match r {
            ValueRef::Input(i) => {
                let b = &inputs[*i];
                b.dims == p.a.dims || (b.dims.len() == 1 && b.dims[0] == Some(k)) || b.dims.is_empty()
            }
            ValueRef::Temp(..) => true,
            ValueRef::Output(_) => false,
        };
        let ok = body.iter().all(|f| ScalarEmitter::supports(&f.op) && f.call.is_none() && f.args.iter().all(operand_ok));
        let shaped = shaped_operand(&inputs)?;
        ok.then_some(Elementwise { inputs, body, parts, shaped })
    }
}

impl ComputedA for Elementwise {
    fn params(&self) -> String {
        self.inputs.iter().enumerate().map(|(i, b)| format!("%In{i}: {}", b.memref())).collect::<Vec<_>>().join(", ")
    }
    fn shaped(&self) -> (String, String) {
        (format!("%In{}", self.shaped), self.inputs[self.shaped].memref())
    }
    fn setup(&self, _g: &mut Gen, _i: usize, _row: &str, _threads: usize) -> Vec<String> {
        Vec::new()
    }
    fn value(&self, g: &mut Gen, i: usize, row: &str, k: &str, _setup: &[String], tag: &str) -> String {
        let mut se = ScalarEmitter::new();
        let mut vals: HashMap<ValueRef, (String, DType)> = HashMap::new();
        let temp_dtype = |r: ValueRef| match r {
            ValueRef::Temp(_, d) => d,
            _ => unreachable!("A's ops store temporaries"),
        };
        let code = crate::gpu_epilogue::scalar_ops(&mut se, &self.body, &mut vals, &temp_dtype, &mut |a, code, n| {
            let name = format!("%epin_{n}");
            if let Some((x, off)) = self.parts.get(a) {
                let b = &self.inputs[*x];
                let col = format!("{name}c");
                let _ = writeln!(code, "      {col}_o = arith.constant {off} : index\n      {col} = arith.addi {k}, {col}_o : index\n      {name} = memref.load %In{x}[{row}, {col}] : {}", b.memref());
                return Some((name, b.dtype));
            }
            let ValueRef::Input(x) = a else { return None };
            let b = &self.inputs[*x];
            let idx = match b.dims.len() {
                0 => String::new(),
                1 => k.to_string(),
                _ => format!("{row}, {k}"),
            };
            let _ = writeln!(code, "      {name} = memref.load %In{x}[{idx}] : {}", b.memref());
            Some((name, b.dtype))
        });
        let (v, d) = vals.get(&self.body.last().expect("A has ops").results[0]).cloned().expect("A is computed");
        // Names must not repeat between the rows' copies in one kernel.
        let code = code.replace("%ep", &format!("%ep{tag}_"));
        let v = v.replace("%ep", &format!("%ep{tag}_"));
        for l in code.lines() {
            g.line(i, l.trim_start());
        }
        g.convert(i, &v, d, DType::F32)
    }
}

/// A's first matrix operand, whose rows are A's.
fn shaped_operand(inputs: &[BindingType]) -> Option<usize> {
    inputs.iter().position(|t| t.dims.len() == 2)
}

/// The host function and kernels of a merged region (which [`is_gpu_prologue_matmul`]
/// accepted): the matrix-vector kernels computing A for 1 to 4 rows; else A into a
/// temporary (the row kernel, or a thread per element here), then the matmul, each as its
/// own function.
pub fn kernel_func(spec: &KernelSpec) -> String {
    let p = split(spec).expect("is_gpu_prologue_matmul checked the body");
    let name = &spec.name;
    let (a, b, c) = (&p.a, &p.mm.inputs[1], &p.mm.outputs[0]);
    let (ta, tb, tc) = (a.memref(), b.memref(), c.memref());
    let rows = norm_rows(spec, &p);
    let computed: Box<dyn ComputedA> = match (&rows, spec.body[0].op.clone()) {
        (Some(_), Op::RmsNorm { epsilon }) => Box::new(Norm { x: spec.inputs[0].clone(), w: spec.inputs[1].clone(), epsilon, dt: a.dtype }),
        _ => Box::new(Elementwise::new(spec, &p).expect("is_gpu_prologue_matmul checked A's ops")),
    };
    // A's operands are %a0.. here; the parameters after them are named as the matmul's host
    // function names them (B is %b1), so the epilogue's launch arguments read the same.
    let a_ins = &spec.inputs[..p.a_inputs];
    let a_params: Vec<String> = a_ins.iter().enumerate().map(|(i, t)| format!("%a{i}: {}", t.memref())).collect();
    let a_args: Vec<String> = a_ins.iter().enumerate().map(|(i, t)| format!("%a{i} : {}", t.memref())).collect();
    let a_names: Vec<String> = (0..a_ins.len()).map(|i| format!("%a{i}")).collect();
    let a_types: Vec<String> = a_ins.iter().map(|t| t.memref()).collect();
    let mm_bindings: Vec<&BindingType> = p.mm.inputs.iter().chain(&p.mm.outputs).collect();
    let params: Vec<String> = mm_bindings.iter().enumerate().skip(1).map(|(i, t)| format!("%b{i}: {}", t.memref())).collect();
    let oc = crate::gpu_epilogue::output_binding(&p.mm);
    let extra_args: String = crate::gpu_epilogue::launch_args(&p.mm).iter().map(|a| format!(", {a}")).collect();
    let mm_args: Vec<String> = (1..mm_bindings.len()).map(|i| format!("%b{i}")).collect();
    let mm_types: Vec<String> = mm_bindings.iter().skip(1).map(|t| t.memref()).collect();
    let compute_a = match &rows {
        Some(_) => format!("      func.call @{name}_norm({}, %h, %wg, %nwg) : ({}, {ta}, index, index) -> ()\n", a_names.join(", "), a_types.join(", ")),
        None => format!(
            "      %pe_k = memref.dim %h, %c1 : {ta}\n      %pe_n = arith.muli %m, %pe_k : index\n      %pe_t = arith.constant 256 : index\n      \
             %pe_g = arith.ceildivui %pe_n, %pe_t : index\n      \
             gpu.launch_func @{name}_llm::@compute_a blocks in (%pe_g, %c1, %c1) threads in (%pe_t, %c1, %c1) args({}, %h : {ta})\n",
            a_args.join(", ")
        ),
    };
    let otherwise = format!(
        "      %h = memref.alloc({}) : {ta}\n{compute_a}      func.call @{name}_mm(%h, {}, %wg, %nwg) : ({ta}, {}, index, index) -> ()\n      memref.dealloc %h : {ta}\n",
        if a.dims[0].is_none() { "%m" } else { "" },
        mm_args.join(", "),
        mm_types.join(", ")
    );
    let shaped = shaped_operand(a_ins).expect("split found a matrix operand");
    let mut s = String::new();
    let _ = writeln!(
        s,
        "  func.func @{name}({}, {}, %wg: index, %nwg: index) {{
    %c0 = arith.constant 0 : index
    %c1 = arith.constant 1 : index
    %m = memref.dim %a{shaped}, %c0 : {}",
        a_params.join(", "),
        params.join(", "),
        a_ins[shaped].memref()
    );
    let operands = format!("{}, %b1 : {tb}", a_args.join(", "));
    let quantized = matches!(p.mm.body[0].op, Op::QMatMul { .. });
    if quantized {
        // A few rows (decode): the quantized few-rows kernel, a block per (rows, columns).
        let n = b.dims[0].expect("verifier: static weight rows");
        let _ = write!(
            s,
            "    %qf_max = arith.constant {} : index\n    %qf_le = arith.cmpi ule, %m, %qf_max : index\n    %qf_ge = arith.cmpi uge, %m, %c1 : index\n    \
             %qf = arith.andi %qf_le, %qf_ge : i1\n    scf.if %qf {{\n{}    }} else {{\n{otherwise}    }}\n",
            crate::gpu_qmatmul::FEW_ROWS,
            crate::gpu_qdot::launch(&format!("{name}_llm"), n, a.dims[1].expect("fusible: static K"), &format!("{operands}{extra_args}, %b{oc} : {tc}"))
        );
    } else {
        s.push_str(&crate::gpu_gemv::host_with(&format!("{name}_llm"), a, b, &operands, &format!("{extra_args}, %b{oc} : {tc}"), &otherwise));
    }
    let _ = writeln!(s, "    return\n  }}");
    if let Some(rows) = &rows {
        s.push_str(&crate::gpu_rows::kernel_func(rows));
    }
    let _ = writeln!(s, "  gpu.module @{name}_llm {{");
    if quantized {
        s.push_str(&crate::gpu_qmatmul::computed_a_few_rows_kernel(&p.mm, computed.as_ref()));
    } else {
        s.push_str(&crate::gpu_gemv::computed_a_kernels(&p.mm, computed.as_ref(), &tb, &tc, a.dtype));
    }
    if rows.is_none() {
        s.push_str(&elementwise_kernel(computed.as_ref(), &ta, a.dtype));
    }
    let _ = writeln!(s, "  }}");
    if quantized {
        s.push_str(&crate::gpu_qmatmul::kernel_func(&p.mm));
    } else {
        s.push_str(&crate::gpu_wgmma::tensor_core_func(&p.mm));
    }
    s
}

/// `@compute_a`: a thread per element of A (`[M, K]`, type `ta`) computing it as the
/// matrix-vector kernels do, for the row counts that run the tensor-core matmul.
fn elementwise_kernel(a: &dyn ComputedA, ta: &str, dt: DType) -> String {
    let mut g = Gen::new("q");
    let i = 6;
    g.line(4, format!("gpu.func @compute_a({}, %H: {ta}) kernel attributes {{known_block_size = array<i32: 256, 1, 1>}} {{", a.params()));
    g.line(i, "%c0 = arith.constant 0 : index");
    g.line(i, "%c1 = arith.constant 1 : index");
    g.line(i, "%ct = arith.constant 256 : index");
    g.line(i, format!("%M = memref.dim %H, %c0 : {ta}"));
    g.line(i, format!("%K = memref.dim %H, %c1 : {ta}"));
    g.line(i, "%bx = gpu.block_id x");
    g.line(i, "%tid = gpu.thread_id x");
    g.line(i, "%e0 = arith.muli %bx, %ct : index");
    g.line(i, "%e = arith.addi %e0, %tid : index");
    g.line(i, "%total = arith.muli %M, %K : index");
    g.line(i, "%in = arith.cmpi ult, %e, %total : index");
    g.line(i, "scf.if %in {");
    g.line(i + 2, "%row = arith.divui %e, %K : index");
    g.line(i + 2, "%k = arith.remui %e, %K : index");
    let v = a.value(&mut g, i + 2, "%row", "%k", &[], "x");
    let h = g.convert(i + 2, &v, DType::F32, dt);
    g.line(i + 2, format!("memref.store {h}, %H[%row, %k] : {ta}"));
    g.line(i, "}");
    g.line(i, "gpu.return");
    g.line(4, "}");
    g.s
}
