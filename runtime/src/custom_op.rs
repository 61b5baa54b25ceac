//! Writing native custom kernels in Rust, against the C ABI of `include/max/custom_op.h`.
//!
//! Build the kernel crate as a `staticlib` (or object) and name it in `kernels.toml`:
//!
//! ```
//! max_runtime::max_custom_op!(rust_double, |inputs, outputs| {
//!     let x = inputs[0].as_slice::<f32>().ok_or(1)?;
//!     let y = outputs[0].as_mut_slice::<f32>().ok_or(2)?;
//!     for (o, i) in y.iter_mut().zip(x) {
//!         *o = 2.0 * i;
//!     }
//!     Ok(())
//! });
//! ```
//!
//! An `Err(code)` from the body is returned as the kernel's status, which the runtime
//! reports as "kernel ... failed with status code".

use crate::tensor::Element;
use max_dialects::DType;

/// Version of the custom-op C ABI these definitions follow.
pub const CUSTOM_OP_ABI_VERSION: u32 = 1;

/// `max_tensor` of the C ABI: a dense row-major tensor.
#[repr(C)]
#[derive(Debug)]
pub struct MaxTensor {
    pub data: *mut u8,
    pub shape: *const i64,
    pub rank: i64,
    pub dtype: i32,
}

impl MaxTensor {
    /// The shape.
    pub fn shape(&self) -> &[i64] {
        if self.rank <= 0 || self.shape.is_null() {
            return &[];
        }
        // SAFETY: the caller (the runtime's ABI wrapper) passes `rank` valid dims.
        unsafe { std::slice::from_raw_parts(self.shape, self.rank as usize) }
    }

    /// The element type, if known.
    pub fn dtype(&self) -> Option<DType> {
        Some(match self.dtype {
            0 => DType::F32,
            1 => DType::F16,
            2 => DType::BF16,
            3 => DType::I32,
            4 => DType::I64,
            5 => DType::I8,
            _ => return None,
        })
    }

    /// Number of elements.
    pub fn num_elements(&self) -> usize {
        self.shape().iter().map(|d| (*d).max(0) as usize).product()
    }

    /// The data as `T`, if the dtype is `T`'s.
    pub fn as_slice<T: Element>(&self) -> Option<&[T]> {
        (self.dtype() == Some(T::DTYPE) && !self.data.is_null())
            // SAFETY: the buffer holds `num_elements` values of the declared dtype, aligned.
            .then(|| unsafe { std::slice::from_raw_parts(self.data as *const T, self.num_elements()) })
    }

    /// The data as mutable `T` (outputs only), if the dtype is `T`'s.
    pub fn as_mut_slice<T: Element>(&mut self) -> Option<&mut [T]> {
        (self.dtype() == Some(T::DTYPE) && !self.data.is_null())
            // SAFETY: as above; outputs are not aliased by anything else during the call.
            .then(|| unsafe { std::slice::from_raw_parts_mut(self.data as *mut T, self.num_elements()) })
    }
}

/// Defines a native custom kernel `$name` with the C ABI and its ABI-version marker.
/// The body sees `$inputs: &[MaxTensor]`, `$outputs: &mut [MaxTensor]` and returns
/// `Result<(), i32>`. It must write every element of its outputs: their buffers are not
/// zeroed (they may hold an earlier call's bytes).
#[macro_export]
macro_rules! max_custom_op {
    ($name:ident, |$inputs:ident, $outputs:ident| $body:block) => {
        const _: () = {
            #[used]
            #[export_name = concat!("max_custom_op_abi_v1_", stringify!($name))]
            static ABI_MARKER: i32 = 1;
        };
        /// A custom kernel (C ABI of include/max/custom_op.h).
        ///
        /// # Safety
        /// Called by the max runtime with valid tensor arrays of the given lengths.
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            inputs: *const $crate::custom_op::MaxTensor,
            num_inputs: i64,
            outputs: *mut $crate::custom_op::MaxTensor,
            num_outputs: i64,
        ) -> i32 {
            // SAFETY: the runtime passes arrays of `num_inputs`/`num_outputs` descriptors.
            let $inputs: &[$crate::custom_op::MaxTensor] = unsafe { std::slice::from_raw_parts(inputs, num_inputs.max(0) as usize) };
            let $outputs: &mut [$crate::custom_op::MaxTensor] = unsafe { std::slice::from_raw_parts_mut(outputs, num_outputs.max(0) as usize) };
            let mut run = || -> Result<(), i32> { $body };
            match run() {
                Ok(()) => 0,
                Err(code) => code,
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::max_custom_op!(test_scale, |inputs, outputs| {
        let x = inputs[0].as_slice::<f32>().ok_or(7)?;
        let y = outputs[0].as_mut_slice::<f32>().ok_or(8)?;
        for (o, i) in y.iter_mut().zip(x) {
            *o = 3.0 * i;
        }
        Ok(())
    });

    #[test]
    fn macro_kernel_follows_the_c_abi() {
        let shape = [2i64, 2];
        let mut x = [1.0f32, -2.0, 0.5, 4.0];
        let mut y = [0f32; 4];
        let ins = [MaxTensor { data: x.as_mut_ptr() as *mut u8, shape: shape.as_ptr(), rank: 2, dtype: 0 }];
        let mut outs = [MaxTensor { data: y.as_mut_ptr() as *mut u8, shape: shape.as_ptr(), rank: 2, dtype: 0 }];
        // SAFETY: valid descriptors of live buffers.
        let st = unsafe { test_scale(ins.as_ptr(), 1, outs.as_mut_ptr(), 1) };
        assert_eq!(st, 0);
        assert_eq!(y, [3.0, -6.0, 1.5, 12.0]);
        // A dtype the body does not accept gives its error code as the status.
        let mut bad = [MaxTensor { data: y.as_mut_ptr() as *mut u8, shape: shape.as_ptr(), rank: 2, dtype: 3 }];
        // SAFETY: as above.
        assert_eq!(unsafe { test_scale(ins.as_ptr(), 1, bad.as_mut_ptr(), 1) }, 8);
    }
}
