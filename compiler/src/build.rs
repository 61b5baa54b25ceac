//! Compiling graphs ahead of time from a Cargo build script.
//!
//! ```no_run
//! // build.rs
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let artifact = max_compiler::build::Compile::new("graphs/mlp.mlir")
//!         .target("cpu=x86-64-v3")
//!         .weights("graphs/mlp.safetensors")
//!         .compile()?; // writes $OUT_DIR/mlp.maxa, prints cargo:rerun-if-changed lines
//!     println!("cargo:rustc-env=MLP_MAXA={}", artifact.display());
//!     Ok(())
//! }
//! // main.rs: static MLP: &[u8] = include_bytes!(env!("MLP_MAXA"));
//! ```

use crate::{CompileError, CompileOptions, Emit, Target};
use std::path::{Path, PathBuf};

/// A graph to compile in a build script.
#[derive(Debug, Clone)]
pub struct Compile {
    source: PathBuf,
    target: String,
    weights: Vec<PathBuf>,
    out_dir: Option<PathBuf>,
    output_name: Option<String>,
    fusion: bool,
}

impl Compile {
    /// Compiles the `.mlir` graph at `source` (relative paths are relative to the package
    /// root, where Cargo runs build scripts).
    pub fn new(source: impl AsRef<Path>) -> Self {
        Compile { source: source.as_ref().to_path_buf(), target: "host".into(), weights: Vec::new(), out_dir: None, output_name: None, fusion: true }
    }

    /// The code generation target: `host` (default) or `cpu=LEVEL` (x86-64, x86-64-v2,
    /// x86-64-v3, x86-64-v4). Prefer a level for binaries that run on other machines.
    pub fn target(mut self, target: &str) -> Self {
        self.target = target.to_string();
        self
    }

    /// A `.safetensors` file with `max.weight` data (repeatable).
    pub fn weights(mut self, path: impl AsRef<Path>) -> Self {
        self.weights.push(path.as_ref().to_path_buf());
        self
    }

    /// Where to write the artifact (default: `$OUT_DIR`).
    pub fn out_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.out_dir = Some(dir.as_ref().to_path_buf());
        self
    }

    /// The artifact's file name (default: the source's stem with `.maxa`).
    pub fn output_name(mut self, name: &str) -> Self {
        self.output_name = Some(name.to_string());
        self
    }

    /// Turns dispatch-region fusion off (on by default).
    pub fn fusion(mut self, on: bool) -> Self {
        self.fusion = on;
        self
    }

    /// Compiles, writes the artifact and prints `cargo:rerun-if-changed` for every file the
    /// compile read. Returns the artifact's path.
    pub fn compile(self) -> Result<PathBuf, CompileError> {
        let target = match self.target.as_str() {
            "host" => Target::host(),
            t => Target::named(t.strip_prefix("cpu=").unwrap_or(t))?,
        };
        let mut opts = CompileOptions::new(target);
        opts.fusion = self.fusion;
        for w in &self.weights {
            opts.weights.add_safetensors(w)?;
        }
        let out = crate::compile_file(&self.source, &opts, Emit::Artifact)?;
        let dir = match self.out_dir {
            Some(d) => d,
            None => PathBuf::from(std::env::var_os("OUT_DIR").ok_or_else(|| CompileError::Internal("OUT_DIR is not set: call compile() from a build script or set out_dir()".into()))?),
        };
        let name = self.output_name.unwrap_or_else(|| {
            let stem = self.source.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "graph".into());
            format!("{stem}.maxa")
        });
        let path = dir.join(name);
        std::fs::write(&path, &out.bytes).map_err(|e| CompileError::Io { what: format!("writing {}", path.display()), cause: e })?;
        for f in &out.files_read {
            println!("cargo:rerun-if-changed={}", f.display());
        }
        // The code-generation knobs change the artifact too.
        for knob in crate::tuning::KNOBS {
            println!("cargo:rerun-if-env-changed={knob}");
        }
        Ok(path)
    }
}
