//! Compiles graphs/gelu_mlp.mlir into $OUT_DIR at build time; Cargo reruns this when the
//! graph changes.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A portable level, so the binary runs on any x86-64-v2 machine, not just this one.
    let artifact = max_compiler::build::Compile::new("graphs/gelu_mlp.mlir").target("cpu=x86-64-v2").compile()?;
    println!("cargo:rustc-env=GELU_MLP_MAXA={}", artifact.display());
    Ok(())
}
