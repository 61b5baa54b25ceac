//! State: the mutable inputs of an entry (an LLM's KV cache), kept where the model runs
//! between calls.
//!
//! On the CPU it is host tensors the program updates in place. On a GPU it is device
//! buffers that never leave the device: a decode step then copies only its token ids in and
//! its logits out, not the cache.

use crate::error::RuntimeError;
use crate::tensor::Tensor;
use max_dialects::DType;

/// Mutable inputs kept between calls (see [`crate::Model::new_state`]).
pub struct State {
    /// dtype and shape of each tensor, in signature order.
    pub(crate) meta: Vec<(DType, Vec<usize>)>,
    pub(crate) data: StateData,
}

/// Where a [`State`]'s values are.
pub(crate) enum StateData {
    Host(Vec<Tensor>),
    #[cfg(feature = "cuda")]
    Device(Vec<crate::cuda::DeviceBuffer>),
}

impl State {
    /// State held in host memory (what a CPU model runs on).
    pub(crate) fn host(tensors: Vec<Tensor>) -> State {
        State { meta: shapes_of(&tensors), data: StateData::Host(tensors) }
    }

    /// The dtype and shape of each tensor.
    pub fn shapes(&self) -> &[(DType, Vec<usize>)] {
        &self.meta
    }

    /// Whether the values live in device memory.
    pub fn on_device(&self) -> bool {
        !matches!(self.data, StateData::Host(_))
    }

    /// The host tensors of host state; an error for device state.
    pub(crate) fn host_tensors(&mut self) -> Result<&mut [Tensor], RuntimeError> {
        match &mut self.data {
            StateData::Host(t) => Ok(t),
            #[cfg(feature = "cuda")]
            StateData::Device(_) => Err(RuntimeError::Device("this state lives on a GPU; run it with the model that created it".into())),
        }
    }
}

/// The dtype and shape of each tensor.
pub(crate) fn shapes_of(tensors: &[Tensor]) -> Vec<(DType, Vec<usize>)> {
    tensors.iter().map(|t| (t.dtype(), t.shape().to_vec())).collect()
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State").field("tensors", &self.meta).field("on_device", &self.on_device()).finish()
    }
}
