//! Compiler errors.

/// Everything `maxc` can fail with.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// A problem in the user's graph, at a source location.
    #[error(transparent)]
    Diagnostic(#[from] max_dialects::Diagnostic),
    /// MLIR parse/verify/pass diagnostics (already formatted `file:line:col: error: ...`).
    #[error("{0}")]
    Mlir(String),
    #[error("{what}: {cause}")]
    Io { what: String, cause: std::io::Error },
    #[error("custom kernels: {0}")]
    Kernels(String),
    #[error("weights: {0}")]
    Weights(String),
    #[error("code generation: {0}")]
    Codegen(String),
    #[error("bad target '{0}': expected 'host' or 'cpu=LEVEL' with LEVEL one of x86-64, x86-64-v2, x86-64-v3, x86-64-v4")]
    Target(String),
    #[error("internal compiler error: {0}")]
    Internal(String),
}
