//! `max-compiler`: compiles `max` graphs (MLIR text or the Rust Graph API) into `.maxa`
//! artifacts for the lean runtime.
//!
//! Stages: import + verify + shape inference ([`max_dialects::verify`]), common
//! subexpressions folded ([`graph_cse`]), `max` -> linalg ([`lower`]), dispatch formation
//! ([`program`]), bufferization and lowering to LLVM
//! ([`pipeline`], MLIR through melior), x86-64 code generation ([`codegen`], LLVM through
//! inkwell), packaging ([`max_runtime::artifact`]).

pub mod batch_slices;
pub mod build;
pub mod codegen;
pub mod column_split;
pub mod custom;
pub mod error;
pub mod flatten;
pub mod fusion;
pub mod gpu;
pub mod gpu_epilogue;
pub mod gpu_matmul;
pub mod gpu_gemv;
pub mod gpu_loops;
pub mod gpu_attention_mma;
pub mod gpu_kv_cache;
pub mod gpu_qdot;
pub mod gpu_qmatmul;
pub mod gpu_prologue;
pub mod gpu_rope;
pub mod gpu_rope_cache;
pub mod gpu_split;
pub mod gpu_rows;
pub mod gpu_sass;
pub mod gpu_sgemm;
mod gpu_text;
pub mod gpu_wgmma;
pub mod graph_api;
pub mod graph_cse;
pub mod import;
pub mod kv_cache;
pub mod lower;
pub mod math;
pub mod mlir;
pub mod pack;
pub mod pipeline;
pub mod program;
pub mod qmatmul;
pub mod qmatmul_q8;
pub mod rope;
pub mod tuning;
pub mod weights;

pub use codegen::CpuTarget as Target;
pub use error::CompileError;
pub use graph_api::{compile, ops, Dim, Graph, TensorType, TensorValue};
pub use max_dialects::{DType, QuantFormat};
pub use weights::{WeightData, WeightStore};

use codegen::{abi_wrappers, link_shared, Codegen, Output};
use max_runtime::artifact::{ArtifactWriter, Manifest, SectionKind};
use mlir::MlirContext;
use program::Program;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// How far `maxc compile` goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emit {
    /// Verified `max` IR with inferred types.
    Max,
    /// Kernels in linalg/tensor on tensors.
    Linalg,
    /// Kernels in the LLVM dialect.
    LlvmDialect,
    /// Optimized LLVM IR with the ABI wrappers.
    LlvmIr,
    /// PTX of the GPU kernels (cuda targets).
    Ptx,
    /// x86-64 assembly.
    Asm,
    /// x86-64 object file.
    Obj,
    /// The `.maxa` artifact.
    Artifact,
}

impl Emit {
    /// Every stage with its command-line name and a one-line description, in order.
    pub const ALL: [(&'static str, &'static str, Emit); 8] = [
        ("max", "Verified max IR with inferred types", Emit::Max),
        ("linalg", "Kernels in linalg/tensor on tensors", Emit::Linalg),
        ("llvm-dialect", "Kernels in the LLVM dialect", Emit::LlvmDialect),
        ("llvm-ir", "Optimized LLVM IR", Emit::LlvmIr),
        ("ptx", "PTX of the GPU kernels (cuda targets)", Emit::Ptx),
        ("asm", "x86-64 assembly", Emit::Asm),
        ("obj", "x86-64 object file", Emit::Obj),
        ("artifact", "The .maxa artifact (default)", Emit::Artifact),
    ];

    /// The stage named `name` (`max`, `linalg`, ..., `artifact`).
    pub fn from_name(name: &str) -> Option<Emit> {
        Emit::ALL.iter().find(|(n, _, _)| *n == name).map(|(_, _, e)| *e)
    }
}

/// Compile options.
#[derive(Debug, Clone)]
pub struct CompileOptions {
    pub target: Target,
    pub weights: WeightStore,
    /// Form multi-op dispatch regions (on by default; off gives one kernel per op).
    pub fusion: bool,
    /// Custom ops declared by `--kernels` directories.
    pub kernels: custom::KernelRegistry,
    /// Named data sections to carry in the artifact (an LLM's tokenizer, chat template and
    /// configuration), read back with `Artifact::data_section`.
    pub data: Vec<(String, Vec<u8>)>,
    /// Compile for an NVIDIA GPU instead (`--target cuda:sm_90`); `target` then only
    /// describes the host code that launches the kernels.
    pub cuda: Option<gpu::CudaTarget>,
    /// Leave weight data out of the artifact (`--external-weights`): the runtime takes it
    /// from a .safetensors file or generates it at load (`Artifact::with_weights`).
    pub external_weights: bool,
}

impl CompileOptions {
    /// Options for `target` with no weights files.
    pub fn new(target: Target) -> Self {
        CompileOptions { target, weights: WeightStore::new(), fusion: true, kernels: custom::KernelRegistry::new(), data: Vec::new(), cuda: None, external_weights: false }
    }
}

/// What a compile produced, with the files it read (for depfiles).
pub struct CompileOutput {
    pub bytes: Vec<u8>,
    pub files_read: Vec<PathBuf>,
}

/// Parses, imports and verifies MLIR source into graphs (custom ops checked against
/// `kernels`).
pub fn front_end(ctx: &MlirContext, source: &str, file_name: &str, kernels: &custom::KernelRegistry) -> Result<Vec<max_dialects::Graph>, CompileError> {
    let module = ctx.parse(source, file_name)?;
    let mut graphs = import::import_module(ctx, &module)?;
    for g in &mut graphs {
        max_dialects::verify::verify_with(g, kernels)?;
    }
    Ok(graphs)
}

/// Compiles MLIR source text (`file_name` is used in diagnostics) up to `emit`.
pub fn compile_source(source: &str, file_name: &str, opts: &CompileOptions, emit: Emit) -> Result<CompileOutput, CompileError> {
    let ctx = MlirContext::new()?;
    let graphs = front_end(&ctx, source, file_name, &opts.kernels)?;
    compile_graphs(&ctx, &graphs, opts, emit)
}

/// Compiles a `.mlir` file up to `emit`.
pub fn compile_file(path: &Path, opts: &CompileOptions, emit: Emit) -> Result<CompileOutput, CompileError> {
    let source = std::fs::read_to_string(path).map_err(|e| CompileError::Io { what: format!("reading {}", path.display()), cause: e })?;
    let mut out = compile_source(&source, &path.display().to_string(), opts, emit)?;
    out.files_read.insert(0, path.to_path_buf());
    Ok(out)
}

/// Compiles verified graphs up to `emit`.
pub fn compile_graphs(ctx: &MlirContext, graphs: &[max_dialects::Graph], opts: &CompileOptions, emit: Emit) -> Result<CompileOutput, CompileError> {
    let mut files_read = opts.weights.files.clone();
    files_read.extend(opts.kernels.files.iter().cloned());
    let text = |s: String| Ok(CompileOutput { bytes: s.into_bytes(), files_read: files_read.clone() });
    if emit == Emit::Max {
        return text(graphs.iter().map(max_dialects::print::print_graph).collect::<Vec<_>>().join("\n"));
    }
    let t0 = Instant::now();
    // MLIR kernel libraries the graphs call: their signatures, and their text to inline.
    let mut signatures = std::collections::HashMap::new();
    let mut libraries: Vec<(String, Vec<String>)> = Vec::new();
    for g in graphs {
        for n in &g.nodes {
            let max_dialects::Op::Custom { name } = &n.op else { continue };
            if signatures.contains_key(name) {
                continue;
            }
            if let Some(custom::CustomImpl::Mlir { file, function, source }) = opts.kernels.get(name).map(|d| &d.imp) {
                let (params, results) = custom::mlir_signature(ctx, file, source, function)?;
                signatures.insert(name.clone(), lower::MlirCall { function: function.clone(), params, results });
                match libraries.iter_mut().find(|(s, _)| s == source) {
                    Some((_, fs)) => fs.push(function.clone()),
                    None => libraries.push((source.clone(), vec![function.clone()])),
                }
            }
        }
    }
    let mut program = Program::default();
    program.external_weights = opts.external_weights;
    program.gpu = opts.cuda.as_ref().map(|c| program::GpuOptions { allow_tf32: c.allow_tf32, wgmma: c.chip == "sm_90" && std::env::var_os("MAX_GPU_NO_WGMMA").is_none() });
    if opts.cuda.is_some() && emit == Emit::Asm {
        return Err(CompileError::Target("--emit asm shows x86-64 code; for a cuda target use --emit ptx".into()));
    }
    if opts.cuda.is_none() && emit == Emit::Ptx {
        return Err(CompileError::Target("--emit ptx needs a cuda target (--target cuda:sm_90)".into()));
    }
    for g in graphs {
        program.add_graph(&graph_cse::run(g), &opts.weights, opts.fusion, &opts.kernels, &signatures)?;
    }
    let specs: Vec<lower::KernelSpec> = program.kernels.iter().map(|k| k.spec.clone()).collect();
    let has = |feature: &str| opts.cuda.is_none() && opts.target.required.iter().any(|f| f == feature);
    let avx2 = has("avx2");
    let linalg = lower::kernel_module(&specs, &libraries, lower::CpuTuning::for_cpu(&opts.target.cpu, avx2, has("avx512f")));
    let mut module = ctx.parse(&linalg, "<kernels>").map_err(|e| CompileError::Internal(format!("generated kernels do not verify: {e}\n{linalg}")))?;
    if emit == Emit::Linalg {
        return text(mlir::print_module(&module, false));
    }
    // A GPU artifact's kernel modules (PTX, and SASS when assembled), for the manifest.
    let mut gpu_modules = Vec::new();
    let ir = match &opts.cuda {
        None => {
            for p in [pipeline::FUSE_LINALG, pipeline::BUFFERIZE, pipeline::LOWER_TO_LOOPS, pipeline::LOWER_TO_LLVM] {
                ctx.run_pipeline(&mut module, &format!("builtin.module({p})"))?;
            }
            if emit == Emit::LlvmDialect {
                return text(mlir::print_module(&module, false));
            }
            let mut ir = codegen::mark_noalias(&ctx.translate_to_llvm_ir(&module)?, &program.kernels);
            if avx2 {
                ir = qmatmul_q8::define_x86_helpers(&ir);
            }
            ir
        }
        Some(cuda) => {
            for p in [pipeline::FUSE_LINALG, pipeline::BUFFERIZE, gpu::PARALLEL_LOOPS] {
                ctx.run_pipeline(&mut module, &format!("builtin.module({p})"))?;
            }
            let flat = gpu_loops::collapse_parallel_loops(&mlir::print_module(&module, false));
            let mut module = ctx.parse(&flat, "<gpu-loops>").map_err(|e| CompileError::Internal(format!("flattened GPU loops do not verify: {e}")))?;
            ctx.run_pipeline(&mut module, &format!("builtin.module({})", gpu::MAP_TO_GPU))?;
            let mut host = gpu::device_memory(&gpu::late_kernels(&mlir::print_module(&module, false), &specs, &cuda.chip))?;
            if gpu::programmatic_launch(&cuda.chip) {
                host = gpu::wait_for_predecessors(&host);
            }
            let mut module = ctx.parse(&host, "<gpu-kernels>").map_err(|e| {
                // Quote the generated line the diagnostic points at.
                let msg = e.to_string();
                let line = msg.split("<gpu-kernels>:").nth(1).and_then(|r| r.split(':').next()).and_then(|n| n.parse::<usize>().ok());
                let quoted = line.and_then(|n| host.lines().nth(n.saturating_sub(1))).map(|l| format!("\n  at: {}", l.trim())).unwrap_or_default();
                CompileError::Internal(format!("GPU host code does not verify: {msg}{quoted}"))
            })?;
            codegen::init_nvptx();
            ctx.run_pipeline(&mut module, &format!("builtin.module({})", gpu::lower_to_nvvm(cuda)))?;
            if emit == Emit::LlvmDialect {
                return text(mlir::print_module(&module, false));
            }
            let ir = ctx.translate_to_llvm_ir(&module)?;
            if emit == Emit::Ptx {
                // One PTX module per kernel module, each preceded by a marker line.
                let ptx = gpu::ptx_of(&ir);
                // Printed anyway (to read), but no driver would load it.
                if ptx.iter().any(|p| gpu::calls_unlinked_libdevice(p)) {
                    tracing::warn!("the PTX calls CUDA math functions (libdevice) that are not in it: {}", gpu::NO_LIBDEVICE);
                }
                let modules: Vec<String> = ptx.iter().enumerate().map(|(i, p)| format!("// ----- PTX module {i}\n{p}")).collect();
                return text(modules.join("\n"));
            }
            let (ir, modules) = gpu_sass::embed(&gpu::link_host_ir(&ir)?, &cuda.chip, cuda.sass)?;
            gpu_modules = modules;
            ir
        }
    };
    let mut ir = ir;
    ir.push_str(&abi_wrappers(&program.kernels));
    tracing::debug!(elapsed_ms = t0.elapsed().as_millis() as u64, "lowered to LLVM IR");
    // Host code of a GPU artifact needs nothing beyond baseline x86-64.
    let cg = Codegen::new(if opts.cuda.is_some() { codegen::CpuTarget::named("x86-64")? } else { opts.target.clone() });
    match emit {
        Emit::LlvmIr => return Ok(CompileOutput { bytes: cg.emit(&ir, Output::OptimizedIr)?, files_read }),
        Emit::Asm => return Ok(CompileOutput { bytes: cg.emit(&ir, Output::Assembly)?, files_read }),
        _ => {}
    }
    let obj = cg.emit(&ir, Output::Object)?;
    if emit == Emit::Obj {
        return Ok(CompileOutput { bytes: obj, files_read });
    }
    let dir = tempfile::tempdir().map_err(|e| CompileError::Io { what: "creating a temporary directory".into(), cause: e })?;
    let so = link_shared(&obj, dir.path(), &opts.kernels.native_libraries())?;
    tracing::debug!(elapsed_ms = t0.elapsed().as_millis() as u64, "kernels linked");
    let mut w = ArtifactWriter::new();
    w.add_section("kernels.x86_64.so", SectionKind::CpuKernels, &so);
    for (k, (name, bytes)) in program.weights.iter().enumerate() {
        match program.external_sizes.get(&k) {
            Some(size) => w.add_external(name.clone(), *size),
            None => w.add_section(name.clone(), SectionKind::Weight, bytes),
        };
    }
    for (name, bytes) in &opts.data {
        w.add_section(name.clone(), SectionKind::Data, bytes);
    }
    let manifest = Manifest {
        format_version: 0,
        compiler_version: env!("CARGO_PKG_VERSION").into(),
        target: match &opts.cuda {
            None => max_runtime::artifact::Target {
                arch: "x86_64".into(),
                os: "linux".into(),
                cpu: opts.target.cpu.clone(),
                features: opts.target.required.clone(),
            },
            Some(c) => max_runtime::artifact::Target { arch: "cuda".into(), os: "linux".into(), cpu: c.chip.clone(), features: Vec::new() },
        },
        symbols: program.symbols.clone(),
        entries: program.entries.clone(),
        sections: Vec::new(),
        gpu_modules,
    };
    Ok(CompileOutput { bytes: w.finish(manifest), files_read })
}
