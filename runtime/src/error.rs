//! Runtime errors.

use max_dialects::DType;

/// Everything that can go wrong loading or running an artifact.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{what}: {cause}")]
    Io { what: String, cause: std::io::Error },
    #[error("{origin} is not a .maxa artifact (bad magic)")]
    NotAnArtifact { origin: String },
    #[error("{origin} has artifact format version {found}, but this runtime reads version {expected}; recompile it with a matching maxc")]
    FormatVersion { origin: String, found: u32, expected: u32 },
    #[error("{origin} is corrupted: {why}")]
    Corrupt { origin: String, why: String },
    #[error("artifact targets {found}, but this machine is {expected}")]
    Target { found: String, expected: String },
    #[error("artifact needs CPU features this machine lacks: {missing}; recompile with a lower --target (e.g. cpu=x86-64-v2)")]
    CpuFeatures { missing: String },
    #[error("artifact has no {what}")]
    Missing { what: String },
    #[error("kernel {kernel} failed with status {status}")]
    KernelFailed { kernel: String, status: i32 },
    #[error("loading kernels: {0}")]
    KernelLoad(String),
    #[error("entry '{entry}' takes {expected} input(s) ({names}), got {got}")]
    InputCount { entry: String, expected: usize, got: usize, names: String },
    #[error("entry '{entry}' updates {expected} state tensor(s) in place ({names}); pass them with execute_with_state, got {got}")]
    StateCount { entry: String, expected: usize, got: usize, names: String },
    #[error("input '{name}' must be {expected}, got {got}")]
    InputDType { name: String, expected: DType, got: DType },
    #[error("input '{name}' must have shape {expected}, got {got:?}")]
    InputShape { name: String, expected: String, got: Vec<usize> },
    #[error("a reshape from {from:?} to {to:?} changes the element count; the input sizes do not divide as the graph requires")]
    Reshape { from: Vec<usize>, to: Vec<usize> },
    #[error("computing buffer sizes: {0}")]
    Dim(#[from] max_dialects::dim::DimEvalError),
    #[error("tensor data has {got} bytes but shape {shape:?} of {dtype} needs {expected}")]
    TensorSize { shape: Vec<usize>, dtype: DType, expected: usize, got: usize },
    #[error("{0}")]
    Npy(String),
    #[error("{0}")]
    Device(String),
    #[error("CUDA error: {0}")]
    Cuda(String),
    #[error("the artifact's weight(s) {0} are not in the file (it was compiled with --external-weights): supply them with `--weights FILE.safetensors` or `--random-weights SEED` (Artifact::with_weights)")]
    ExternalWeights(String),
}
