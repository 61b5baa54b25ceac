//! The lean `max` runtime: loads `.maxa` artifacts and executes them.
//!
//! No MLIR or LLVM is linked here: the artifact carries compiled kernels and a program of
//! dispatches whose buffer sizes are expressions of the input dims, so executing a graph
//! needs only this crate.
//!
//! ```no_run
//! use max_runtime::{Artifact, Device, InferenceSession, Tensor};
//! let artifact = Artifact::open("mlp.maxa")?;
//! let model = InferenceSession::new(Device::Cpu).load(&artifact)?;
//! let x = Tensor::from_slice(&[1, 768], &vec![0.5f32; 768])?;
//! let y = model.execute(&[x])?;
//! # Ok::<(), max_runtime::RuntimeError>(())
//! ```

pub mod affinity;
pub mod artifact;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod custom_op;
pub mod error;
#[cfg(feature = "cuda")]
pub mod gpu_exec;
pub mod gpu_image;
pub mod heap;
pub mod npy;
pub mod session;
pub mod state;
pub mod tensor;
pub mod weights;

pub use artifact::{Artifact, Manifest, WeightSource};
pub use error::RuntimeError;
pub use max_dialects::{DType, DimExpr};
pub use session::{Device, InferenceSession, Model};
pub use state::State;
pub use tensor::{Element, Tensor};
