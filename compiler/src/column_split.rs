//! The column-split form of a matmul dispatch whose epilogue needs whole rows.
//!
//! `softmax(x @ W)` fuses into one row-split kernel: each workgroup owns whole rows, so the
//! softmax sees its row complete. With fewer rows than threads (batch 1) that leaves all
//! but one core idle while a single thread streams the whole weight. This pass derives two
//! more kernels for the same dispatch:
//!
//! - **columns**: the matmul and its elementwise prologue, split over the packed weight's
//!   column panels (each workgroup streams only its panels), written to a scratch buffer;
//! - **finish**: the softmax and what follows it, split over rows, from the scratch to the
//!   dispatch's results.
//!
//! The runtime picks the form per call from the row count (`ColumnSplit` in the artifact);
//! the fused kernel alone stays correct for any row count.

use crate::lower::{column_follows, FusedOp, KernelSpec, ValueRef};
use max_dialects::{DType, Op};

/// The two kernels of `spec`'s column-split form: (columns, finish).
///
/// The columns kernel has `spec`'s inputs and one result, the scratch (f32, shaped like
/// the result). The finish kernel has the scratch followed by `spec`'s inputs, and `spec`'s
/// results. `None` when the dispatch is not a row-split packed matmul whose epilogue is
/// elementwise ops, a softmax over the last axis, then elementwise ops.
pub fn derive(spec: &KernelSpec) -> Option<(KernelSpec, KernelSpec)> {
    let partition = spec.partition.as_ref()?;
    if spec.gpu || spec.native.is_some() || spec.ptx.is_some() || spec.columns || spec.outputs.len() != 1 || spec.outputs[0].dims.len() != 2 {
        return None;
    }
    let out = &spec.outputs[0];
    let first = spec.body.first()?;
    let (ValueRef::Input(a), ValueRef::Input(w)) = (*first.args.first()?, *first.args.get(1)?) else { return None };
    if !(matches!(first.op, Op::MatMul) && first.packed_rhs) {
        return None;
    }
    let s = spec.body.iter().position(|f| matches!(f.op, Op::Softmax { .. }))?;
    let Op::Softmax { axis } = spec.body[s].op else { return None };
    if !(axis == -1 || axis == 1) {
        return None;
    }
    let elementwise = |f: &FusedOp| f.is_elementwise() && f.results.len() == 1;
    // The prologue runs on column stripes: its other operands must follow the columns.
    let prologue_ok = spec.body[1..s].iter().all(|f| {
        elementwise(f)
            && f.args.iter().all(|r| match r {
                ValueRef::Input(i) => *i != a && *i != w && column_follows(&spec.inputs[*i], out).is_some(),
                _ => true,
            })
    });
    let scores = spec.body[s - 1].results[0];
    if !prologue_ok || !matches!(scores, ValueRef::Temp(_, DType::F32)) || spec.body[s].args != [scores] {
        return None;
    }
    // The finish sees only the scratch and inputs: nothing after the softmax may read a
    // value of the prologue.
    let prologue_values: Vec<ValueRef> = spec.body[..s].iter().flat_map(|f| f.results.iter().copied()).collect();
    if !spec.body[s + 1..].iter().all(|f| elementwise(f) && f.args.iter().all(|r| !prologue_values.contains(r))) {
        return None;
    }

    let mut scratch = out.clone();
    scratch.dtype = DType::F32;
    let to_scratch = |r: &ValueRef| if *r == scores { ValueRef::Output(0) } else { *r };
    let columns = KernelSpec {
        name: format!("{}_columns", spec.name),
        outputs: vec![scratch.clone()],
        body: spec.body[..s]
            .iter()
            .map(|f| FusedOp { args: f.args.iter().map(to_scratch).collect(), results: f.results.iter().map(to_scratch).collect(), ..f.clone() })
            .collect(),
        partition: None,
        columns: true,
        ..spec.clone()
    };
    debug_assert!(crate::lower::splits_columns(&columns));
    let shift = |r: &ValueRef| match r {
        ValueRef::Input(i) => ValueRef::Input(i + 1),
        r if *r == scores => ValueRef::Input(0),
        r => *r,
    };
    let finish = KernelSpec {
        name: format!("{}_finish", spec.name),
        inputs: std::iter::once(scratch).chain(spec.inputs.iter().cloned()).collect(),
        body: spec.body[s..].iter().map(|f| FusedOp { args: f.args.iter().map(shift).collect(), ..f.clone() }).collect(),
        partition: Some(std::iter::once(true).chain(partition.iter().copied()).collect()),
        ..spec.clone()
    };
    Some((columns, finish))
}
