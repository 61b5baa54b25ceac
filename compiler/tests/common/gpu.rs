//! Helpers of the tests that run on a GPU (or the PTX emulator).

use max_compiler::gpu::CudaTarget;
use max_compiler::{compile_source, CompileOptions, Emit, Target};
use max_runtime::{Artifact, InferenceSession, Model, RuntimeError};
use std::fmt::Write;

/// `layers` matmul + softmax layers over `x [?, 64]` with one 64 x 64 weight: a chain of
/// temporaries of 256 bytes a row, each live for two dispatches.
pub fn chain_graph(layers: usize) -> String {
    let t = "tensor<?x64xf32>";
    let mut s = format!(
        "func.func @g(%x: {t} {{max.name = \"x\"}}) -> {t} {{\n  \
         %w = \"max.weight\"() {{name = \"w\", init = \"normal\", scale = 0.2 : f64, seed = 5 : i64}} : () -> tensor<64x64xf32>\n"
    );
    let mut prev = "%x".to_string();
    for l in 1..=layers {
        let _ = write!(
            s,
            "  %m{l} = \"max.matmul\"({prev}, %w) : ({t}, tensor<64x64xf32>) -> {t}\n  %s{l} = \"max.softmax\"(%m{l}) {{axis = -1 : i64}} : ({t}) -> {t}\n"
        );
        prev = format!("%s{l}");
    }
    let _ = write!(s, "  func.return {prev} : {t}\n}}\n");
    s
}

/// `src` compiled for cuda:sm_80 (PTX that any GPU from Ampere on runs).
pub fn sm80_artifact(src: &str) -> Artifact {
    let mut opts = CompileOptions::new(Target::named("x86-64").unwrap());
    opts.cuda = Some(CudaTarget::parse("cuda:sm_80").unwrap());
    Artifact::from_bytes(&compile_source(src, "test.mlir", &opts, Emit::Artifact).unwrap().bytes).unwrap()
}

/// `artifact` loaded by `session` (on gpu:0), or `None` after saying the test was skipped
/// when there is no GPU.
pub fn load_on_gpu(session: &InferenceSession, artifact: &Artifact) -> Option<Model> {
    match session.load(artifact) {
        Ok(m) => Some(m),
        Err(RuntimeError::Device(why)) => {
            eprintln!("skipped: no GPU to run on ({why})");
            None
        }
        Err(e) => panic!("loading the artifact on gpu:0: {e}"),
    }
}
