//! The runtime (and the serving crate on top of it) must not link MLIR or LLVM.

#[test]
fn runtime_dependency_tree_has_no_mlir_or_llvm() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    for pkg in ["max-runtime", "max-serve"] {
        let out = std::process::Command::new(&cargo)
            .args(["tree", "--offline", "-p", pkg, "-e", "normal,build", "--prefix", "none"])
            .current_dir(root)
            .output()
            .expect("running cargo tree");
        assert!(out.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&out.stderr));
        let tree = String::from_utf8_lossy(&out.stdout);
        for banned in ["melior", "mlir-sys", "inkwell", "llvm-sys", "tblgen"] {
            assert!(!tree.lines().any(|l| l.starts_with(&format!("{banned} "))), "{pkg} depends on {banned}:\n{tree}");
        }
        assert!(tree.contains(pkg), "unexpected cargo tree output:\n{tree}");
    }
}
