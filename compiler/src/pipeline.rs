//! The compiler's named stages and the MLIR pass pipelines behind them.
//!
//! | stage             | from                 | to                                  |
//! |-------------------|----------------------|-------------------------------------|
//! | `verify`          | `max` ops            | `max` ops with inferred types       |
//! | `graph-cse`       | `max` ops            | repeated pure ops folded            |
//! | `lower-to-linalg` | `max` ops            | kernels: linalg/tensor/arith/math   |
//! | `fuse-linalg`     | kernels on tensors   | elementwise generics merged         |
//! | `bufferize`       | kernels on tensors   | kernels on memrefs                  |
//! | `lower-to-loops`  | linalg on memrefs    | scf loops                           |
//! | `lower-to-llvm`   | loops                | LLVM dialect                        |
//!
//! Any other name is run as an upstream MLIR pass on the module (`canonicalize`, `cse`, ...).

/// Names of the compiler's own stages, in order.
pub const STAGES: &[&str] = &["verify", "graph-cse", "lower-to-linalg", "fuse-linalg", "bufferize", "lower-to-loops", "lower-to-llvm"];

/// Inlines MLIR kernel-library calls, then merges the elementwise `linalg.generic`s of a
/// fused kernel into one loop nest.
pub const FUSE_LINALG: &str = "inline,symbol-dce,linalg-fuse-elementwise-ops,canonicalize,cse";

/// Bufferization of destination-style kernels: empty tensors that end up in an output are
/// redirected into it (so results are computed in place), writes land in the ABI's buffers, and the
/// self-copies `materialize_in_destination` leaves behind fold away.
pub const BUFFERIZE: &str = "eliminate-empty-tensors,one-shot-bufferize,canonicalize,func.func(buffer-loop-hoisting),buffer-deallocation-pipeline,canonicalize";

/// linalg on memrefs to loops.
pub const LOWER_TO_LOOPS: &str = "func.func(convert-linalg-to-loops),canonicalize,cse";

/// Everything down to the LLVM dialect. bf16 conversions are expanded to integer ops (no
/// libgcc helper needed); math functions without an LLVM intrinsic become libm calls.
pub const LOWER_TO_LLVM: &str = "convert-vector-to-scf,convert-scf-to-cf,expand-strided-metadata,lower-affine,arith-expand{include-bf16=true},\
finalize-memref-to-llvm,convert-math-to-llvm,convert-math-to-libm,convert-arith-to-llvm,convert-index-to-llvm,\
convert-vector-to-llvm,convert-cf-to-llvm,convert-func-to-llvm,convert-ub-to-llvm,reconcile-unrealized-casts";

/// The MLIR pipeline of one of our MLIR-level stages, or `None` for a Rust stage.
pub fn mlir_pipeline(stage: &str) -> Option<String> {
    match stage {
        "fuse-linalg" => Some(FUSE_LINALG.into()),
        "bufferize" => Some(BUFFERIZE.into()),
        "lower-to-loops" => Some(LOWER_TO_LOOPS.into()),
        "lower-to-llvm" => Some(LOWER_TO_LLVM.into()),
        "verify" | "graph-cse" | "lower-to-linalg" => None,
        other => Some(other.into()),
    }
}

/// Splits a comma-separated stage list, keeping `{...}` and `(...)` groups intact.
pub fn split_stages(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '{' | '(' => depth += 1,
            '}' | ')' => depth -= 1,
            ',' if depth == 0 => {
                if !cur.trim().is_empty() {
                    out.push(cur.trim().to_string());
                }
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn splits_nested_pipelines() {
        assert_eq!(super::split_stages("verify, func.func(a,b),x{y=1,z=2}"), vec!["verify", "func.func(a,b)", "x{y=1,z=2}"]);
    }
}
