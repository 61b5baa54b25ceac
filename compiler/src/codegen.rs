//! CPU code generation: ABI wrappers, LLVM optimization and object emission (inkwell), and
//! linking the kernel shared object that goes into the artifact.

use crate::error::CompileError;
use crate::program::{DimSource, PlannedKernel};
use inkwell::memory_buffer::MemoryBuffer;
use inkwell::passes::PassBuilderOptions;
use inkwell::targets::{CodeModel, FileType, InitializationConfig, RelocMode, Target as LlvmTarget, TargetMachine, TargetTriple};
use inkwell::OptimizationLevel;
use max_runtime::artifact::KERNEL_ABI_VERSION;
use std::fmt::Write;
use std::path::Path;
use std::process::Command;

/// x86-64 CPU features the runtime checks before running code (see `max_runtime::cpu`).
const CHECKED_FEATURES: &[&str] = &[
    "sse2", "sse3", "ssse3", "sse4.1", "sse4.2", "popcnt", "avx", "avx2", "fma", "f16c", "bmi1", "bmi2", "lzcnt", "movbe",
    "avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl", "avx512vnni", "avx512bf16",
];

/// A CPU code generation target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuTarget {
    /// LLVM CPU name (`skylake-avx512`, `x86-64-v3`, ...).
    pub cpu: String,
    /// LLVM feature string (`+avx2,+fma,...`); empty means "what the CPU name implies".
    pub llvm_features: String,
    /// Features recorded in the artifact for the runtime to check.
    pub required: Vec<String>,
}

fn level_features(cpu: &str) -> Option<Vec<&'static str>> {
    let v2 = ["sse2", "sse3", "ssse3", "sse4.1", "sse4.2", "popcnt"];
    let v3 = ["avx", "avx2", "fma", "f16c", "bmi1", "bmi2", "lzcnt", "movbe"];
    let v4 = ["avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"];
    Some(match cpu {
        "x86-64" => vec!["sse2"],
        "x86-64-v2" => v2.to_vec(),
        "x86-64-v3" => [&v2[..], &v3[..]].concat(),
        "x86-64-v4" => [&v2[..], &v3[..], &v4[..]].concat(),
        _ => return None,
    })
}

impl CpuTarget {
    /// The machine `maxc` runs on, with all of its features.
    pub fn host() -> CpuTarget {
        let cpu = TargetMachine::get_host_cpu_name().to_string();
        let feats = TargetMachine::get_host_cpu_features().to_string();
        let required = feats
            .split(',')
            .filter_map(|f| f.strip_prefix('+'))
            .filter(|f| CHECKED_FEATURES.contains(f))
            .map(String::from)
            .collect();
        CpuTarget { cpu, llvm_features: feats, required }
    }

    /// A portable x86-64 microarchitecture level: `x86-64`, `x86-64-v2`, `x86-64-v3` or
    /// `x86-64-v4`. (Concrete CPU names are not accepted: the artifact must state exactly
    /// which features its code needs.)
    pub fn named(cpu: &str) -> Result<CpuTarget, CompileError> {
        let f = level_features(cpu).ok_or_else(|| CompileError::Target(format!("cpu={cpu}")))?;
        Ok(CpuTarget { cpu: cpu.into(), llvm_features: String::new(), required: f.into_iter().map(String::from).collect() })
    }
}

fn init_llvm() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| LlvmTarget::initialize_x86(&InitializationConfig::default()));
}

/// Makes LLVM's NVPTX backend available to MLIR's `gpu-module-to-binary`.
pub fn init_nvptx() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| LlvmTarget::initialize_nvptx(&InitializationConfig::default()));
}

const TRIPLE: &str = "x86_64-unknown-linux-gnu";

fn machine(cpu: &str, features: &str) -> Option<TargetMachine> {
    init_llvm();
    let triple = TargetTriple::create(TRIPLE);
    let target = LlvmTarget::from_triple(&triple).ok()?;
    target.create_target_machine(&triple, cpu, features, OptimizationLevel::Aggressive, RelocMode::PIC, CodeModel::Default)
}

/// LLVM IR text of the ABI wrappers (`max_kernel_*`) and the ABI version symbol, appended
/// to the module MLIR translated.
pub fn abi_wrappers(kernels: &[PlannedKernel]) -> String {
    let mut s = format!("\n@max_abi_version = constant i32 {KERNEL_ABI_VERSION}\n");
    for k in kernels {
        let name = &k.spec.name;
        let _ = writeln!(s, "\ndefine i32 @max_kernel_{name}(ptr %bind, ptr %pc, i64 %wg, i64 %nwg) {{\nentry:");
        // Sizes of every binding, from static dims and push constants.
        let mut loaded_pc: Vec<Option<String>> = Vec::new();
        let mut binding_sizes: Vec<Vec<String>> = Vec::new();
        for (bi, dims) in k.dims.iter().enumerate() {
            let _ = writeln!(s, "  %bp{bi} = getelementptr ptr, ptr %bind, i64 {bi}\n  %b{bi} = load ptr, ptr %bp{bi}, align 8");
            let mut sizes: Vec<String> = Vec::new();
            for d in dims {
                sizes.push(match d {
                    DimSource::Static(c) => c.to_string(),
                    DimSource::Push(p) => {
                        if loaded_pc.len() <= *p {
                            loaded_pc.resize(*p + 1, None);
                        }
                        if loaded_pc[*p].is_none() {
                            let _ = writeln!(s, "  %pp{p} = getelementptr i64, ptr %pc, i64 {p}\n  %p{p} = load i64, ptr %pp{p}, align 8");
                            loaded_pc[*p] = Some(format!("%p{p}"));
                        }
                        loaded_pc[*p].clone().unwrap()
                    }
                });
            }
            binding_sizes.push(sizes);
        }
        match &k.spec.native {
            Some(symbol) => native_call(&mut s, k, symbol, &binding_sizes),
            None => {
                let mut args: Vec<String> = Vec::new();
                for (bi, sizes) in binding_sizes.iter().enumerate() {
                    // Row-major strides, folded where the sizes are static.
                    let r = sizes.len();
                    let mut strides = vec![String::from("1"); r];
                    for j in (0..r.saturating_sub(1)).rev() {
                        strides[j] = match (strides[j + 1].parse::<i64>(), sizes[j + 1].parse::<i64>()) {
                            (Ok(a), Ok(b)) => (a * b).to_string(),
                            _ => {
                                let v = format!("%st{bi}_{j}");
                                let _ = writeln!(s, "  {v} = mul i64 {}, {}", strides[j + 1], sizes[j + 1]);
                                v
                            }
                        };
                    }
                    args.push(format!("ptr %b{bi}"));
                    args.push(format!("ptr %b{bi}"));
                    args.push("i64 0".into());
                    args.extend(sizes.iter().map(|x| format!("i64 {x}")));
                    args.extend(strides.iter().map(|x| format!("i64 {x}")));
                }
                args.push("i64 %wg".into());
                args.push("i64 %nwg".into());
                let _ = writeln!(s, "  call void @{name}({})\n  ret i32 0\n}}", args.join(", "));
            }
        }
    }
    s
}

/// The body of a native custom kernel's wrapper: `max_tensor` descriptors for the inputs and
/// outputs (include/max/custom_op.h), the user's function called on them, its status
/// returned. Referencing `max_custom_op_abi_v<N>_<symbol>` makes a kernel built against
/// another header version fail to link.
fn native_call(s: &mut String, k: &PlannedKernel, symbol: &str, sizes: &[Vec<String>]) {
    let nin = k.spec.inputs.len();
    let nout = k.spec.outputs.len();
    let types: Vec<max_dialects::DType> = k.spec.inputs.iter().chain(&k.spec.outputs).map(|b| b.dtype).collect();
    let _ = writeln!(s, "  %ins = alloca [{} x {{ ptr, ptr, i64, i32 }}], align 8", nin.max(1));
    let _ = writeln!(s, "  %outs = alloca [{} x {{ ptr, ptr, i64, i32 }}], align 8", nout.max(1));
    for (bi, dims) in sizes.iter().enumerate() {
        let (arr, idx) = if bi < nin { ("%ins", bi) } else { ("%outs", bi - nin) };
        let r = dims.len();
        let _ = writeln!(s, "  %shape{bi} = alloca [{} x i64], align 8", r.max(1));
        for (j, d) in dims.iter().enumerate() {
            let _ = writeln!(s, "  %sh{bi}_{j} = getelementptr i64, ptr %shape{bi}, i64 {j}\n  store i64 {d}, ptr %sh{bi}_{j}, align 8");
        }
        let dt = custom_dtype_code(types[bi]);
        let _ = writeln!(s, "  %t{bi} = getelementptr {{ ptr, ptr, i64, i32 }}, ptr {arr}, i64 {idx}");
        let _ = writeln!(s, "  store ptr %b{bi}, ptr %t{bi}, align 8");
        let _ = writeln!(s, "  %t{bi}s = getelementptr {{ ptr, ptr, i64, i32 }}, ptr %t{bi}, i32 0, i32 1\n  store ptr %shape{bi}, ptr %t{bi}s, align 8");
        let _ = writeln!(s, "  %t{bi}r = getelementptr {{ ptr, ptr, i64, i32 }}, ptr %t{bi}, i32 0, i32 2\n  store i64 {r}, ptr %t{bi}r, align 8");
        let _ = writeln!(s, "  %t{bi}d = getelementptr {{ ptr, ptr, i64, i32 }}, ptr %t{bi}, i32 0, i32 3\n  store i32 {dt}, ptr %t{bi}d, align 4");
    }
    let abi = crate::custom::CUSTOM_OP_ABI_VERSION;
    let _ = writeln!(s, "  %abi = load volatile i32, ptr @max_custom_op_abi_v{abi}_{symbol}, align 4");
    let _ = writeln!(s, "  %st = call i32 @{symbol}(ptr %ins, i64 {nin}, ptr %outs, i64 {nout})\n  ret i32 %st\n}}");
    let _ = writeln!(s, "declare i32 @{symbol}(ptr, i64, ptr, i64)\n@max_custom_op_abi_v{abi}_{symbol} = external global i32");
}

/// dtype codes of include/max/custom_op.h.
fn custom_dtype_code(d: max_dialects::DType) -> i32 {
    match d {
        max_dialects::DType::F32 => 0,
        max_dialects::DType::F16 => 1,
        max_dialects::DType::BF16 => 2,
        max_dialects::DType::I32 => 3,
        max_dialects::DType::I64 => 4,
        max_dialects::DType::I8 => 5,
    }
}

/// Marks the pointer parameters of each kernel's LLVM definition `noalias`.
///
/// Bindings never alias a buffer the kernel writes, and saying so is what lets LLVM
/// vectorize. (The `llvm.noalias` argument attribute on the memref does not survive
/// MLIR's func-to-LLVM conversion of expanded memref descriptors, so it is applied here.)
pub fn mark_noalias(ir: &str, kernels: &[PlannedKernel]) -> String {
    let mut out = String::with_capacity(ir.len() + 1024);
    for line in ir.split_inclusive('\n') {
        let is_kernel_def = line.starts_with("define ")
            && kernels.iter().any(|k| !crate::kv_cache::writes_in_place(&k.spec) && line.contains(&format!("@{}(", k.spec.name)));
        if is_kernel_def {
            out.push_str(&line.replace("(ptr %", "(ptr noalias %").replace(", ptr %", ", ptr noalias %"));
        } else {
            out.push_str(line);
        }
    }
    out
}

/// Optimized LLVM IR, assembly or an object file from LLVM IR text.
pub struct Codegen {
    target: CpuTarget,
}

/// What to emit from LLVM IR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    OptimizedIr,
    Assembly,
    Object,
}

impl Codegen {
    /// Code generation for `target`.
    pub fn new(target: CpuTarget) -> Self {
        Codegen { target }
    }

    /// Parses, verifies, optimizes (O3) and emits `ir`.
    pub fn emit(&self, ir: &str, out: Output) -> Result<Vec<u8>, CompileError> {
        let context = inkwell::context::Context::create();
        let buf = MemoryBuffer::create_from_memory_range_copy(ir.as_bytes(), "max_kernels");
        let module = context.create_module_from_ir(buf).map_err(|e| CompileError::Codegen(format!("LLVM IR does not parse: {}", e.to_string_lossy())))?;
        let tm = machine(&self.target.cpu, &self.target.llvm_features).ok_or_else(|| CompileError::Target(format!("cpu={}", self.target.cpu)))?;
        let triple = TargetTriple::create(TRIPLE);
        module.set_triple(&triple);
        module.set_data_layout(&tm.get_target_data().get_data_layout());
        module.verify().map_err(|e| CompileError::Codegen(format!("LLVM IR is invalid: {}", e.to_string_lossy())))?;
        module
            .run_passes("default<O3>", &tm, PassBuilderOptions::create())
            .map_err(|e| CompileError::Codegen(format!("LLVM optimization failed: {}", e.to_string_lossy())))?;
        match out {
            Output::OptimizedIr => Ok(module.print_to_string().to_bytes().to_vec()),
            Output::Assembly | Output::Object => {
                let ft = if out == Output::Object { FileType::Object } else { FileType::Assembly };
                let mb = tm.write_to_memory_buffer(&module, ft).map_err(|e| CompileError::Codegen(e.to_string_lossy().into_owned()))?;
                Ok(mb.as_slice().to_vec())
            }
        }
    }
}

/// Links an object file (plus the native custom-kernel libraries) into a shared object
/// with a C compiler driver: `$CC` if set, else the first of `cc` and LLVM 22's `clang`
/// that exists. Undefined symbols are errors (`-z defs`), reported by name. The output is
/// deterministic (no build id).
pub fn link_shared(object: &[u8], workdir: &Path, libraries: &[&Path]) -> Result<Vec<u8>, CompileError> {
    let io = |what: &str| {
        let what = what.to_string();
        move |e| CompileError::Io { what, cause: e }
    };
    let obj = workdir.join("kernels.o");
    let so = workdir.join("kernels.so");
    std::fs::write(&obj, object).map_err(io("writing kernels.o"))?;
    let candidates: Vec<String> = match std::env::var("CC") {
        Ok(cc) => vec![cc],
        Err(_) => vec!["cc".into(), "/usr/lib/llvm-22/bin/clang".into()],
    };
    let mut last_err = String::new();
    for cc in &candidates {
        let out = Command::new(cc)
            .args(["-shared", "-nostartfiles", "-Wl,--build-id=none", "-Wl,-z,noexecstack", "-Wl,-z,defs", "-o"])
            .arg(&so)
            .arg(&obj)
            .args(libraries)
            .arg("-lm")
            .arg("-lc")
            .output();
        match out {
            Ok(o) if o.status.success() => return std::fs::read(&so).map_err(io("reading kernels.so")),
            Ok(o) => return Err(explain_link_error(&String::from_utf8_lossy(&o.stderr), cc)),
            Err(e) => last_err = format!("'{cc}': {e}"),
        }
    }
    Err(CompileError::Codegen(format!("no linker found ({last_err}); install gcc or clang, or set CC")))
}

/// Turns a linker failure into what the user must fix: a custom kernel's missing symbol,
/// or a kernel built against another custom-op ABI version.
fn explain_link_error(stderr: &str, cc: &str) -> CompileError {
    let undefined: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.split("undefined reference to `").nth(1).or_else(|| l.split("undefined symbol: ").nth(1)))
        .map(|s| s.trim_end_matches('\''))
        .collect();
    let abi_prefix = format!("max_custom_op_abi_v{}_", crate::custom::CUSTOM_OP_ABI_VERSION);
    if let Some(sym) = undefined.iter().find_map(|u| u.strip_prefix(&abi_prefix)) {
        if !undefined.contains(&sym) {
            return CompileError::Kernels(format!(
                "native kernel '{sym}' was not built against custom-op ABI v{} (define it with MAX_CUSTOM_OP({sym}) from include/max/custom_op.h of this version)",
                crate::custom::CUSTOM_OP_ABI_VERSION
            ));
        }
    }
    let missing: Vec<&str> = undefined.iter().copied().filter(|u| !u.starts_with("max_custom_op_abi_v")).collect();
    if !missing.is_empty() {
        return CompileError::Kernels(format!("the native kernel libraries do not define: {}", missing.join(", ")));
    }
    CompileError::Codegen(format!("linking kernels with '{cc}' failed: {stderr}"))
}
