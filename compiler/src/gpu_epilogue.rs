//! Matmul epilogues on the GPU: the elementwise ops fused after a matmul (bias, activation,
//! residual, cast) are computed per output element inside the matmul kernel, between the
//! accumulator and the store, instead of as separate kernels over the result.
//!
//! Values follow the CPU lowering exactly: the accumulator is rounded to the matmul's
//! result dtype, and each op converts its operands to its compute type and its result to
//! its dtype ([`crate::lower::ScalarEmitter`]). Extra operands (`%E<i>`, kernel parameters
//! after A and B) are read at the element's row and column, broadcasting dims of size 1.

use crate::lower::{BindingType, KernelSpec, ScalarEmitter, ValueRef};
use max_dialects::{DType, Op};
use std::collections::HashMap;

/// Whether `spec` is a matmul of inputs 0 and 1 followed only by elementwise ops, all
/// within one output whose operands broadcast along rows and columns and are neither of
/// the matmul's.
pub fn matmul_with_epilogue(spec: &KernelSpec) -> bool {
    spec.body.first().is_some_and(|f| matches!(f.op, Op::MatMul)) && contraction_with_epilogue(spec)
}

/// Whether `spec` is a contraction of its inputs 0 and 1 (its first op: a matmul or a
/// quantized matmul) followed by an elementwise epilogue [`element`] computes: see
/// [`matmul_with_epilogue`].
pub fn contraction_with_epilogue(spec: &KernelSpec) -> bool {
    let Some(first) = spec.body.first() else { return false };
    let out_rank = spec.outputs.first().map_or(0, |o| o.dims.len());
    first.args == [ValueRef::Input(0), ValueRef::Input(1)]
        && spec.outputs.len() == 1
        && out_rank == 2
        && spec.body[1..].iter().all(|f| ScalarEmitter::supports(&f.op) && f.call.is_none())
        // The epilogue reads its extra operands (inputs 2..) only: `x + x @ w` reads A,
        // whose kernel parameter the reduction kernel does not have.
        && spec.body[1..].iter().flat_map(|f| &f.args).all(|a| !matches!(a, ValueRef::Input(0 | 1)))
        && spec.inputs.iter().skip(2).all(|b| b.dims.len() <= 2)
}

/// The extra operands' kernel parameters: `%E<i>: <memref type>`.
pub fn params(spec: &KernelSpec) -> Vec<String> {
    spec.inputs.iter().enumerate().skip(2).map(|(i, b)| format!("%E{i}: {}", b.memref())).collect()
}

/// The host function's launch arguments for the extra operands (`%b<i> : type`).
pub fn launch_args(spec: &KernelSpec) -> Vec<String> {
    spec.inputs.iter().enumerate().skip(2).map(|(i, b)| format!("%b{i} : {}", b.memref())).collect()
}

/// The host function's parameters, every binding.
pub fn host_params(spec: &KernelSpec) -> String {
    let b: Vec<&BindingType> = spec.inputs.iter().chain(&spec.outputs).collect();
    b.iter().enumerate().map(|(i, t)| format!("%b{i}: {}", t.memref())).collect::<Vec<_>>().join(", ")
}

/// The binding index of the output (after all inputs).
pub fn output_binding(spec: &KernelSpec) -> usize {
    spec.inputs.len()
}

fn dtype_of(spec: &KernelSpec, r: ValueRef) -> DType {
    match r {
        ValueRef::Temp(_, d) => d,
        ValueRef::Output(i) => spec.outputs[i].dtype,
        ValueRef::Input(i) => spec.inputs[i].dtype,
    }
}

/// Code computing the output element at (`row`, `col`) (index values; `%c0` must be an
/// index zero in scope) from the f32 accumulator `acc`, and the SSA value of the result in
/// the output's dtype. `tag` keeps names unique between calls in one function.
pub fn element(spec: &KernelSpec, acc: &str, row: &str, col: &str, tag: &str) -> (String, String) {
    let mut code = String::new();
    let mut se = ScalarEmitter::new();
    let mm = &spec.body[0];
    let mm_dt = dtype_of(spec, mm.results[0]);
    let mut vals: HashMap<ValueRef, (String, DType)> = HashMap::new();
    let first = if mm_dt == DType::F32 { acc.to_string() } else { se.op(&Op::Cast(mm_dt), &[(acc.to_string(), DType::F32)], mm_dt) };
    vals.insert(mm.results[0], (first, mm_dt));
    code.push_str(&scalar_ops(&mut se, &spec.body[1..], &mut vals, &|r| dtype_of(spec, r), &mut |a, code, n| {
        let ValueRef::Input(i) = a else { return None };
        let b = &spec.inputs[*i];
        let idx = match b.dims.len() {
            0 => String::new(),
            1 => if b.dims[0] == Some(1) { "%c0".into() } else { col.to_string() },
            _ => format!(
                "{}, {}",
                if b.dims[0] == Some(1) { "%c0" } else { row },
                if b.dims[1] == Some(1) { "%c0" } else { col }
            ),
        };
        let name = format!("%ein{i}_{tag}_{n}");
        code.push_str(&format!("      {name} = memref.load %E{i}[{idx}] : {}\n", b.memref()));
        Some((name, b.dtype))
    }));
    let (v, d) = vals.get(&ValueRef::Output(0)).cloned().expect("the epilogue computes the output");
    let out_dt = spec.outputs[0].dtype;
    let v = if d == out_dt { v } else {
        let c = se.op(&Op::Cast(out_dt), &[(v, d)], out_dt);
        code.push_str(&se.take());
        c
    };
    // Names must not repeat between elements of one kernel.
    let code = code.replace("%ep", &format!("%ep{tag}_"));
    let v = v.replace("%ep", &format!("%ep{tag}_"));
    (code, v)
}

/// Reads an operand of [`scalar_ops`] that no earlier op computed: appends the load's code
/// to the string, with names made unique by the number; `None` when it cannot.
pub(crate) type LoadOperand<'a> = dyn FnMut(&ValueRef, &mut String, usize) -> Option<(String, DType)> + 'a;

/// Scalar code for the elementwise ops `body`, in order, into `vals` (each result's value
/// and dtype, by its reference; `dtype` gives a result's). An operand not computed before is
/// read by `load`, which appends its code and gets a number unique within this call; the
/// ops' names are `se`'s (`%ep<N>`).
pub(crate) fn scalar_ops(
    se: &mut ScalarEmitter,
    body: &[crate::lower::FusedOp],
    vals: &mut HashMap<ValueRef, (String, DType)>,
    dtype: &dyn Fn(ValueRef) -> DType,
    load: &mut LoadOperand,
) -> String {
    let mut code = String::new();
    for f in body {
        let mut args = Vec::new();
        for a in &f.args {
            let n = code.len() + vals.len();
            let v = match vals.get(a) {
                Some(v) => v.clone(),
                None => load(a, &mut code, n).expect("elementwise operands are loaded or computed before use"),
            };
            args.push(v);
        }
        code.push_str(&se.take());
        let out = dtype(f.results[0]);
        let r = se.op(&f.op, &args, out);
        vals.insert(f.results[0], (r, out));
    }
    code.push_str(&se.take());
    code
}

/// Threads per block of the split-K reduction.
pub const REDUCE_THREADS: usize = 256;

/// Partial sums a reduction thread of [`reduce_kernel`] loads before adding them.
const REDUCE_UNROLL: usize = 8;
/// The most partial sums [`sum_partials_into`] keeps in flight for a caller that knows
/// their count.
pub const MAX_REDUCE_UNROLL: usize = 32;

/// Kernel code (at `indent`): `C[%row, %col] = epilogue(sum over z < %S of P[z, %row,
/// %col])`, with `%P`, `%C`, `%S`, `%row`, `%col`, `%c0`, `%c1` and `%fzero` in scope. The
/// sum runs in z order from zero, so every caller computes the same bits. Its names start
/// with `%rd`, `%epred` and `%ein` (the epilogue's, tagged `red`), which kernels that
/// include it leave free. The partial sums are loaded `unroll` at a time, all in flight
/// before the adds (which keep their order: z = 0, 1, ...): one load per trip left the
/// down projection's 56 chunks 56 dependent round trips to L2. `None`: [`REDUCE_UNROLL`];
/// a caller that knows `%S` passes it (at most [`MAX_REDUCE_UNROLL`]), so the sum waits
/// for one round trip, the tail of a matrix-vector product whose blocks have all arrived.
pub fn sum_partials_into(spec: &KernelSpec, tc: &str, indent: usize, unroll: Option<usize>) -> String {
    let (code, y) = element(spec, "%rd_acc", "%row", "%col", "red");
    let pad = " ".repeat(indent);
    let u = unroll.unwrap_or(REDUCE_UNROLL).clamp(1, MAX_REDUCE_UNROLL);
    let last = u - 1;
    let mut unrolled = String::new();
    for k in 0..u {
        let z = if k == 0 { "%rd_z".to_string() } else {
            unrolled.push_str(&format!("{pad}  %rd_ck{k} = arith.constant {k} : index\n{pad}  %rd_z{k} = arith.addi %rd_z, %rd_ck{k} : index\n"));
            format!("%rd_z{k}")
        };
        unrolled.push_str(&format!("{pad}  %rd_p{k} = memref.load %P[{z}, %row, %col] : memref<?x?x?xf32>\n"));
    }
    for k in 0..u {
        let prev = if k == 0 { "%rd_a".to_string() } else { format!("%rd_s{}", k - 1) };
        unrolled.push_str(&format!("{pad}  %rd_s{k} = arith.addf {prev}, %rd_p{k} : f32\n"));
    }
    let code: String = code.lines().map(|l| format!("{pad}{}\n", l.trim_start())).collect();
    format!(
        "{pad}%rd_cu = arith.constant {u} : index
{pad}%rd_Sr = arith.remui %S, %rd_cu : index
{pad}%rd_Su = arith.subi %S, %rd_Sr : index
{pad}%rd_accu = scf.for %rd_z = %c0 to %rd_Su step %rd_cu iter_args(%rd_a = %fzero) -> (f32) {{
{unrolled}{pad}  scf.yield %rd_s{last} : f32
{pad}}}
{pad}%rd_acc = scf.for %rd_zr = %rd_Su to %S step %c1 iter_args(%rd_ar = %rd_accu) -> (f32) {{
{pad}  %rd_pz = memref.load %P[%rd_zr, %row, %col] : memref<?x?x?xf32>
{pad}  %rd_az = arith.addf %rd_ar, %rd_pz : f32
{pad}  scf.yield %rd_az : f32
{pad}}}
{code}{pad}memref.store {y}, %C[%row, %col] : {tc}
"
    )
}

/// The split-K reduction kernel `@reduce(%P, <extra operands>, %C)`: `C[r, c] =
/// epilogue(sum over z of P[z, r, c])`, a block per row and [`REDUCE_THREADS`] columns.
pub fn reduce_kernel(spec: &KernelSpec, tc: &str) -> String {
    let extra: String = params(spec).iter().map(|p| format!(", {p}")).collect();
    let t = REDUCE_THREADS;
    let body = sum_partials_into(spec, tc, 8, None);
    format!(
        "    gpu.func @reduce(%P: memref<?x?x?xf32>{extra}, %C: {tc}) kernel attributes {{known_block_size = array<i32: {t}, 1, 1>}} {{
      %c0 = arith.constant 0 : index
      %c1 = arith.constant 1 : index
      %c2 = arith.constant 2 : index
      %ct = arith.constant {t} : index
      %fzero = arith.constant 0.0 : f32
      %S = memref.dim %P, %c0 : memref<?x?x?xf32>
      %N = memref.dim %P, %c2 : memref<?x?x?xf32>
      %row = gpu.block_id x
      %cb = gpu.block_id y
      %tid = gpu.thread_id x
      %base = arith.muli %cb, %ct : index
      %col = arith.addi %base, %tid : index
      %ok = arith.cmpi ult, %col, %N : index
      scf.if %ok {{
{body}      }}
      gpu.return
    }}
"
    )
}

/// Host code choosing the number of K splits for a grid of `%gx` x `%gy` blocks over a K of
/// `%k` (SSA names in scope, with `%c1`): `%splits` (at least 1) and `%split` (i1, more than
/// one). Grids smaller than `target` blocks split K into pieces of at least `min_k`.
pub fn split_decision(target: usize, min_k: usize) -> String {
    format!(
        "    %ctarget = arith.constant {target} : index
    %cminks = arith.constant {min_k} : index
    %blocks = arith.muli %gx, %gy : index
    %bl1 = arith.maxui %blocks, %c1 : index
    %want = arith.ceildivui %ctarget, %bl1 : index
    %kmax = arith.ceildivui %k, %cminks : index
    %s0 = arith.minui %want, %kmax : index
    %splits = arith.maxui %s0, %c1 : index
    %split = arith.cmpi ugt, %splits, %c1 : index
"
    )
}
