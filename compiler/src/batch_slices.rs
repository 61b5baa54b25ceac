//! Batched matmuls of two activations (attention written out as graph ops: `q @ k^T`, then
//! a scale, a mask and a softmax, then `p @ v`) computed one batch slice at a time.
//!
//! As rank-4 ops these take the generic loops, split over the batch dim only: the scores go
//! through a full `[B, H, T, T]` temporary per op, far out of cache, and the contraction
//! reloads and stores its result row once per `k`. One `(b, h)` slice at a time, the same
//! ops are a 2-D matmul the register-blocked micro-kernel computes, and the scale, mask and
//! softmax run on a `[T, T]` block that is still in cache. Workgroups split the slices, so a
//! single text's heads spread over the cores too.
//!
//! [`slice_form`] gives the kernel's 2-D form; [`crate::lower::kernel_func`] loops over the
//! workgroup's slices and runs that form on rank-reduced views of the bindings.

use crate::lower::{BindingType, KernelSpec, ValueRef};
use max_dialects::{DType, Op};

/// The 2-D form of `spec` (every binding reduced to its last two dims, softmax over the last
/// axis), if it is a CPU kernel whose first op multiplies two f32 inputs of the result's rank
/// `r >= 3` and batch dims, followed only by elementwise ops and softmax over the last axis,
/// and whose other inputs have at most two dims or batch dims that are the result's or 1.
pub fn slice_form(spec: &KernelSpec) -> Option<KernelSpec> {
    let (out, first) = (spec.outputs.first()?, spec.body.first()?);
    let r = out.dims.len();
    if spec.gpu || spec.native.is_some() || spec.ptx.is_some() || spec.outputs.len() != 1 || r < 3 || first.packed_rhs || first.call.is_some() {
        return None;
    }
    let (Op::MatMul, [ValueRef::Input(x), ValueRef::Input(y)]) = (&first.op, first.args.as_slice()) else { return None };
    let batch = &out.dims[..r - 2];
    let f32_slices = |b: &BindingType| b.dtype == DType::F32 && b.dims.len() == r && &b.dims[..r - 2] == batch;
    if out.dtype != DType::F32 || !f32_slices(&spec.inputs[*x]) || !f32_slices(&spec.inputs[*y]) {
        return None;
    }
    let last_axis = |a: i64| a == -1 || a == r as i64 - 1;
    if !spec.body[1..].iter().all(|f| f.is_elementwise() || matches!(f.op, Op::Softmax { axis } if last_axis(axis) && f.call.is_none())) {
        return None;
    }
    // Other operands broadcast against the result's trailing dims.
    let broadcasts = |b: &BindingType| {
        let q = b.dims.len();
        q <= 2 || (q <= r && b.dims[..q - 2].iter().zip(&out.dims[r - q..r - 2]).all(|(d, o)| d == o || *d == Some(1)))
    };
    if !spec.inputs.iter().all(broadcasts) {
        return None;
    }
    let slice = |b: &BindingType| BindingType { dtype: b.dtype, dims: b.dims[b.dims.len().saturating_sub(2)..].to_vec() };
    let mut f = spec.clone();
    f.name = format!("{}_slice", spec.name);
    f.inputs = spec.inputs.iter().map(slice).collect();
    f.outputs = spec.outputs.iter().map(slice).collect();
    f.partition = None;
    f.columns = false;
    for op in &mut f.body {
        if let Op::Softmax { axis } = &mut op.op {
            *axis = -1;
        }
    }
    Some(f)
}
