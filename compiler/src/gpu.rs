//! The NVIDIA GPU backend: kernels as PTX, launched by host code the runtime calls.
//!
//! A dispatch compiles to the same ABI function as on the CPU (`max_kernel_*`), but that
//! function is host code: it computes grid sizes from the bindings' dims and launches
//! kernels on the runtime's stream. Its loops become kernels upstream-MLIR style:
//!
//! | stage          | what happens                                                          |
//! |----------------|-----------------------------------------------------------------------|
//! | `map-to-gpu`   | linalg -> `scf.parallel`, flattened into blocks of 256 iterations ([`crate::gpu_loops`]), mapped to blocks/threads, outlined into `gpu.module`s |
//! | `device-memory`| the host's temporaries become `gpu.alloc`/`gpu.dealloc`, copies `gpu.memcpy` |
//! | `lower-to-nvvm`| launches made async on one stream; kernels to NVVM and PTX (`gpu-module-to-binary{format=isa}`); host code to LLVM |
//!
//! Some kernels are generated directly, with their launches: matmuls on the tensor cores
//! ([`crate::gpu_wgmma`] on sm_90, [`crate::gpu_matmul`] elsewhere; f32 without TF32 on
//! the FP32 units, [`crate::gpu_sgemm`]), row reductions
//! ([`crate::gpu_rows`]), an rms_norm or elementwise A computed by the matrix-vector kernel
//! reading it ([`crate::gpu_prologue`]), the LLM kernels (quantized matmul [`crate::gpu_qmatmul`], KV cache
//! and attention [`crate::gpu_kv_cache`], RoPE [`crate::gpu_rope`], RoPE with the cache
//! writes of a layer's q/k/v [`crate::gpu_rope_cache`]), splits in one launch
//! ([`crate::gpu_split`]) and custom ops' PTX kernels.
//!
//! The host code calls MLIR's GPU runtime ABI (`mgpuLaunchKernel`, `mgpuMemAlloc`, ...). The
//! artifact's shared object cannot name a CUDA library (the runtime loads the driver itself,
//! and machines without CUDA must still load the artifact's metadata), so each such call is
//! defined in the object as a jump through the table `max_gpu_api`, which the runtime fills
//! before it calls `max_gpu_init` (the PTX module loads MLIR would have run as constructors).

use crate::error::CompileError;
use max_runtime::artifact::GPU_API;
use std::fmt::Write;

/// A CUDA target: `cuda:sm_80`, `cuda:sm_89` or `cuda:sm_90`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CudaTarget {
    /// The chip (`sm_90`).
    pub chip: String,
    /// f32 matmuls may use TF32 tensor cores (`--allow-tf32`).
    pub allow_tf32: bool,
    /// Whether kernel modules carry SASS for the chip beside their PTX (`--sass`).
    pub sass: crate::gpu_sass::Sass,
}

/// Chips the backend is tested for.
pub const CHIPS: &[&str] = &["sm_80", "sm_86", "sm_89", "sm_90"];

impl CudaTarget {
    /// Parses `cuda:sm_XX`.
    pub fn parse(s: &str) -> Result<CudaTarget, CompileError> {
        let chip = s.strip_prefix("cuda:").ok_or_else(|| CompileError::Target(s.into()))?;
        if !CHIPS.contains(&chip) {
            return Err(CompileError::Target(format!("{s} (supported: {})", CHIPS.iter().map(|c| format!("cuda:{c}")).collect::<Vec<_>>().join(", "))));
        }
        Ok(CudaTarget { chip: chip.into(), allow_tf32: false, sass: crate::gpu_sass::Sass::Auto })
    }
}

/// linalg on memrefs to parallel loops (then flattened by
/// [`crate::gpu_loops::collapse_parallel_loops`]).
pub const PARALLEL_LOOPS: &str = "func.func(convert-linalg-to-parallel-loops),canonicalize";

/// Flattened parallel loops to outlined GPU kernels and host launches: each loop's second
/// dimension (a block's [`crate::gpu_loops::BLOCK`] iterations) becomes its threads.
pub const MAP_TO_GPU: &str = "func.func(scf-parallel-loop-tiling{parallel-loop-tile-sizes=1,256 no-min-max-bounds=true}),\
func.func(gpu-map-parallel-loops),func.func(convert-parallel-loops-to-gpu),gpu-kernel-outlining,canonicalize,cse";

/// Kernels to PTX and host code to LLVM. `{chip}`, `{libs}` and `{toolkit}` are filled in.
const LOWER_TO_NVVM: &str = "func.func(gpu-async-region),lower-affine,convert-scf-to-cf,\
{attach}\
gpu.module(convert-nvgpu-to-nvvm,convert-vector-to-llvm,convert-gpu-to-nvvm,convert-nvvm-to-llvm,canonicalize,cse,reconcile-unrealized-casts),\
expand-strided-metadata,lower-affine,arith-expand{include-bf16=true},convert-arith-to-llvm,convert-index-to-llvm,convert-cf-to-llvm,\
finalize-memref-to-llvm,convert-func-to-llvm,gpu-to-llvm,reconcile-unrealized-casts,gpu-module-to-binary{format=isa{toolkit}}";

/// The `lower-to-nvvm` pipeline for `target`. libdevice (the math library) is linked from
/// `$MAX_CUDA_TOOLKIT/nvvm/libdevice` (scripts/cuda-env.sh installs it).
pub fn lower_to_nvvm(target: &CudaTarget) -> String {
    let toolkit = match std::env::var("MAX_CUDA_TOOLKIT") {
        Ok(t) if !t.is_empty() => format!(" toolkit={t}"),
        _ => String::new(),
    };
    // Warpgroup-MMA kernels need the architecture-specific sm_90a; every other kernel module
    // gets the chip itself, so its PTX also runs on later GPUs. (Module names: `*_wgmma`,
    // `*_mma`, `*_rows`, `*_sgemm`, `*_llm`, `*_split`, and `*_kernel[_N]` from
    // gpu-kernel-outlining.)
    let attach = if target.chip == "sm_90" {
        "nvvm-attach-target{module=^.*_wgmma$ chip=sm_90a O=3},nvvm-attach-target{module=^.*_(kernel|mma|rows|sgemm|llm|split)(_[0-9]+)?$ chip=sm_90 O=3},".to_string()
    } else {
        format!("nvvm-attach-target{{chip={} O=3}},", target.chip)
    };
    LOWER_TO_NVVM.replace("{attach}", &attach).replace("{toolkit}", &toolkit)
}

/// Makes host-side memory device memory: a bufferized kernel's temporaries
/// (`memref.alloc`/`dealloc`) and copies between buffers. Runs on the printed module after
/// [`MAP_TO_GPU`], when only host functions hold such ops (kernels were outlined).
pub fn device_memory(module_text: &str) -> Result<String, CompileError> {
    let mut out = String::with_capacity(module_text.len());
    let mut in_gpu_module = 0usize;
    for line in module_text.lines() {
        let t = line.trim_start();
        if t.starts_with("gpu.module ") {
            in_gpu_module = 1;
        } else if in_gpu_module > 0 {
            in_gpu_module += line.matches('{').count();
            in_gpu_module -= line.matches('}').count().min(in_gpu_module);
        }
        if in_gpu_module > 0 {
            out.push_str(&intrinsic_math(&align_workgroup(line)));
            out.push('\n');
            continue;
        }
        let l = if line.contains("= memref.alloc(") || line.contains("= memref.alloc()") {
            line.replacen("memref.alloc(", "gpu.alloc (", 1).replace(" {alignment = 64 : i64}", "")
        } else if t.starts_with("memref.dealloc ") {
            line.replacen("memref.dealloc ", "gpu.dealloc ", 1)
        } else if t.starts_with("memref.copy ") {
            // memref.copy %src, %dst : T to U  ->  gpu.memcpy %dst, %src : U, T
            let body = t.trim_start_matches("memref.copy ");
            let (operands, types) = body.split_once(" : ").ok_or_else(|| CompileError::Internal(format!("unexpected copy: {t}")))?;
            let (src, dst) = operands.split_once(", ").ok_or_else(|| CompileError::Internal(format!("unexpected copy: {t}")))?;
            let (st, dt) = types.split_once(" to ").ok_or_else(|| CompileError::Internal(format!("unexpected copy: {t}")))?;
            let indent = &line[..line.len() - t.len()];
            format!("{indent}gpu.memcpy {dst}, {src} : {dt}, {st}")
        } else if t.contains("memref.alloca") || t.contains("memref.load ") || t.contains("memref.store ") {
            // A loop that did not become a kernel would touch device memory from the host.
            return Err(CompileError::Internal(format!("a loop of a GPU dispatch was not mapped to the GPU: {t}")));
        } else {
            line.to_string()
        };
        out.push_str(&l);
        out.push('\n');
    }
    Ok(out)
}

/// Whether `spec` is generated directly at the memref level with its launches (added by
/// [`late_kernels`]) rather than lowered from linalg.
pub fn is_late_kernel(spec: &crate::lower::KernelSpec) -> bool {
    crate::gpu_matmul::is_gpu_matmul(spec, spec.allow_tf32)
        || crate::gpu_prologue::is_gpu_prologue_matmul(spec)
        || crate::gpu_rows::is_row_kernel(spec)
        || crate::gpu_sgemm::is_sgemm(spec)
        || crate::gpu_qmatmul::is_gpu_qmatmul(spec)
        || crate::gpu_kv_cache::is_gpu_cache_kernel(spec)
        || crate::gpu_rope::is_gpu_rope_kernel(spec)
        || crate::gpu_rope_cache::is_gpu_rope_cache(spec)
        || crate::gpu_split::is_gpu_split(spec)
        || flattened_matmul(spec).is_some()
}

/// Adds the kernels generated directly at the memref level with their own launches (the
/// tensor-core matmuls) to the printed, bufferized module.
pub fn late_kernels(module_text: &str, specs: &[crate::lower::KernelSpec], chip: &str) -> String {
    let mut extra = String::new();
    for k in specs {
        if let Some(text) = late_kernel(k, chip) {
            extra.push_str(&text);
        } else if let Some(flat) = flattened_matmul(k) {
            extra.push_str(&crate::flatten::wrapper(k, &flat));
            extra.push_str(&late_kernel(&flat, chip).expect("flattened_matmul checked it"));
        }
    }
    match module_text.rfind('}') {
        Some(end) if !extra.is_empty() => format!("{}{extra}}}\n", &module_text[..end]),
        _ => module_text.to_string(),
    }
}

/// The host function and kernels of one directly generated kernel, if `k` is one.
fn late_kernel(k: &crate::lower::KernelSpec, chip: &str) -> Option<String> {
    Some(if crate::gpu_matmul::is_gpu_matmul(k, k.allow_tf32) {
        if crate::gpu_wgmma::is_wgmma_matmul(k) {
            crate::gpu_wgmma::kernel_func(k)
        } else {
            crate::gpu_matmul::kernel_func(k)
        }
    } else if crate::gpu_prologue::is_gpu_prologue_matmul(k) {
        crate::gpu_prologue::kernel_func(k)
    } else if crate::gpu_qmatmul::is_gpu_qmatmul(k) {
        crate::gpu_qmatmul::kernel_func(k)
    } else if crate::gpu_kv_cache::is_gpu_cache_kernel(k) {
        crate::gpu_kv_cache::kernel_func(k)
    } else if crate::gpu_rope::is_gpu_rope_kernel(k) {
        crate::gpu_rope::kernel_func(k)
    } else if crate::gpu_rope_cache::is_gpu_rope_cache(k) {
        crate::gpu_rope_cache::kernel_func(k)
    } else if crate::gpu_split::is_gpu_split(k) {
        crate::gpu_split::kernel_func(k)
    } else if crate::gpu_rows::is_row_kernel(k) {
        crate::gpu_rows::kernel_func(k)
    } else if crate::gpu_sgemm::is_sgemm(k) {
        crate::gpu_sgemm::kernel_func(k)
    } else if let Some(p) = &k.ptx {
        ptx_launch(k, p, chip)
    } else {
        return None;
    })
}

/// [`crate::flatten::flat_form`] of `spec` when the flat form is a kernel the GPU
/// generators write (tensor cores or the SIMT matmul; the generic path would walk each
/// row's columns in one thread).
pub fn flattened_matmul(spec: &crate::lower::KernelSpec) -> Option<crate::lower::KernelSpec> {
    if !spec.gpu {
        return None;
    }
    let f = crate::flatten::flat_form(spec)?;
    let direct = crate::gpu_matmul::is_gpu_matmul(&f, f.allow_tf32) || crate::gpu_sgemm::is_sgemm(&f);
    direct.then_some(f)
}

/// The host function of a custom op's PTX kernel: device pointers and element counts of
/// its operands and results as the kernel's parameters, the grid from the declared rule;
/// and the user's PTX as a `gpu.binary` (loaded like the compiler's own kernels).
fn ptx_launch(spec: &crate::lower::KernelSpec, p: &crate::custom::PtxKernel, chip: &str) -> String {
    use crate::custom::GridRule;
    let bindings: Vec<&crate::lower::BindingType> = spec.inputs.iter().chain(&spec.outputs).collect();
    let nin = spec.inputs.len();
    let name = &spec.name;
    let args: Vec<String> = bindings.iter().enumerate().map(|(i, b)| format!("%b{i}: {}", b.memref())).collect();
    let mut s = format!("  func.func @{name}({}, %wg: index, %nwg: index) {{\n", args.join(", "));
    let mut consts = std::collections::BTreeSet::new();
    let mut body = String::new();
    let mut ptrs = Vec::new();
    let mut counts = Vec::new();
    for (i, b) in bindings.iter().enumerate() {
        let t = b.memref();
        let _ = writeln!(body, "    %pi{i} = memref.extract_aligned_pointer_as_index %b{i} : {t} -> index");
        let _ = writeln!(body, "    %pa{i} = arith.index_cast %pi{i} : index to i64");
        let _ = writeln!(body, "    %p{i} = llvm.inttoptr %pa{i} : i64 to !llvm.ptr");
        let mut n = String::from("%c1");
        consts.insert(1usize);
        for d in 0..b.dims.len() {
            consts.insert(d);
            let _ = writeln!(body, "    %d{i}_{d} = memref.dim %b{i}, %c{d} : {t}");
            let _ = writeln!(body, "    %n{i}_{d} = arith.muli {n}, %d{i}_{d} : index");
            n = format!("%n{i}_{d}");
        }
        let _ = writeln!(body, "    %size{i} = arith.index_cast {n} : index to i64");
        ptrs.push(format!("%p{i} : !llvm.ptr"));
        counts.push(format!("%size{i} : i64"));
    }
    let mut grid = Vec::new();
    for (k, g) in p.grid.iter().enumerate() {
        match g {
            GridRule::Const(c) => {
                consts.insert(*c as usize);
                grid.push(format!("%c{c}"));
            }
            GridRule::Ref { of, div } => {
                let i = if of.output { nin + of.index } else { of.index };
                let v = match of.dim {
                    None => {
                        let _ = writeln!(body, "    %gs{k} = arith.index_cast %size{i} : i64 to index");
                        format!("%gs{k}")
                    }
                    Some(d) => {
                        consts.insert(d);
                        let _ = writeln!(body, "    %gd{k} = memref.dim %b{i}, %c{d} : {}", bindings[i].memref());
                        format!("%gd{k}")
                    }
                };
                consts.insert(*div as usize);
                let _ = writeln!(body, "    %g{k} = arith.ceildivui {v}, %c{div} : index");
                grid.push(format!("%g{k}"));
            }
        }
    }
    for b in p.block {
        consts.insert(b as usize);
    }
    for c in consts {
        let _ = writeln!(s, "    %c{c} = arith.constant {c} : index");
    }
    s.push_str(&body);
    let block: Vec<String> = p.block.iter().map(|b| format!("%c{b}")).collect();
    let mut params = ptrs;
    params.extend(counts);
    let _ = writeln!(
        s,
        "    gpu.launch_func @{name}_ptx::@{} blocks in ({}) threads in ({}) args({})\n    return\n  }}",
        p.kernel,
        grid.join(", "),
        block.join(", "),
        params.join(", ")
    );
    let _ = writeln!(s, "  gpu.binary @{name}_ptx [#gpu.object<#nvvm.target<chip = \"{chip}\">, assembly = \"{}\">]", escape_mlir(&p.source));
    s
}

/// An MLIR string literal body.
fn escape_mlir(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'"' | b'\\' => {
                let _ = write!(out, "\\{b:02X}");
            }
            b' '..=b'~' => out.push(b as char),
            _ => {
                let _ = write!(out, "\\{b:02X}");
            }
        }
    }
    out
}

/// A line a kernel generator puts where the kernel should wait for the kernel before it
/// (after work that reads nothing an earlier kernel writes, such as prefetching its
/// weights); [`wait_for_predecessors`] makes it the wait on sm_90. An MLIR comment, so
/// other chips' modules parse as if it were not there.
pub const WAIT_HERE: &str = "// max: wait for the preceding kernel here";

/// `griddepcontrol.wait` as inline assembly that clobbers memory: LLVM's intrinsic for it
/// is declared not to touch memory, which would let a load move above it.
const GRID_WAIT: &str = "llvm.inline_asm has_side_effects \"griddepcontrol.wait;\", \"~{memory}\" : () -> ()";
/// `griddepcontrol.launch_dependents`, kept in place the same way.
const GRID_LAUNCH_DEPENDENTS: &str = "llvm.inline_asm has_side_effects \"griddepcontrol.launch_dependents;\", \"~{memory}\" : () -> ()";

/// Kernel code: an L2 prefetch of the line holding the (generic) address `addr`, an i64.
/// Inline assembly: LLVM selects its prefetch intrinsic only for sm_90 with PTX 8.0, and
/// the instruction is older than sm_80. A prefetch into L2 is safe whoever writes the line:
/// every SM's global stores land in L2, so it holds no stale copy.
pub fn prefetch_l2(addr: &str) -> String {
    format!("llvm.inline_asm has_side_effects \"prefetch.L2 [$0];\", \"l\" {addr} : (i64) -> ()")
}

/// Whether kernels for `chip` are launched as programmatic dependents (sm_90's
/// `griddepcontrol`; the runtime launches a kernel so only if its PTX waits).
pub fn programmatic_launch(chip: &str) -> bool {
    chip == "sm_90"
}

/// Whether a kernel lets the next one launch right after its wait
/// (`griddepcontrol.launch_dependents`, `MAX_GPU_GRIDDEP=trigger=1`) rather than as its
/// blocks exit (the default). On an H200 (NOTES item 24) the early trigger made the 8B bf16
/// decode 13% slower than no programmatic launch at all (5.69 against 5.07 ms/token), and
/// the Q4_K one 25% slower; triggering at exit was 2% faster than no programmatic launch
/// (4.97 and 4.35). With the early trigger, the next kernel's blocks take SM slots and
/// wait there while this one's still run.
fn trigger_after_wait() -> bool {
    let mut trigger = false;
    crate::tuning::apply_settings("MAX_GPU_GRIDDEP", std::env::var("MAX_GPU_GRIDDEP").ok(), |k, x| match k {
        "trigger" if x == 0 || x == 1 => {
            trigger = x == 1;
            true
        }
        _ => false,
    });
    trigger
}

/// Programmatic dependent launch: every kernel waits for the kernel before it
/// (`griddepcontrol.wait`), at its entry or where its generator put [`WAIT_HERE`]. The
/// runtime launches such kernels with programmatic stream serialization, so a kernel is
/// launched once the blocks of the one before it have exited (or, with the early trigger
/// of [`trigger_after_wait`], passed their wait), and runs up to its wait while that one's
/// last writes complete: a decode step is a few hundred short kernels, and each boundary
/// otherwise waits for the kernel before to retire before the next is even scheduled. The wait
/// returns when the kernel before has finished and its writes are visible; since every
/// kernel waits, that one had waited for its own predecessor, so the order of the stream
/// holds for all earlier kernels too.
pub fn wait_for_predecessors(module_text: &str) -> String {
    insert_waits(module_text, trigger_after_wait())
}

/// [`wait_for_predecessors`], with `launch_dependents` after each wait when `trigger`.
fn insert_waits(module_text: &str, trigger: bool) -> String {
    let lines: Vec<&str> = module_text.lines().collect();
    let braces = |l: &str| l.matches('{').count() as i64 - l.matches('}').count() as i64;
    fn indent_of(l: &str) -> &str {
        &l[..l.len() - l.trim_start().len()]
    }
    let wait = |indent: &str| {
        if trigger {
            format!("{indent}{GRID_WAIT}\n{indent}{GRID_LAUNCH_DEPENDENTS}\n")
        } else {
            format!("{indent}{GRID_WAIT}\n")
        }
    };
    let mut out = String::with_capacity(module_text.len() + 4096);
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim();
        if t == WAIT_HERE {
            out.push_str(&wait(indent_of(line)));
            continue;
        }
        out.push_str(line);
        out.push('\n');
        if !(t.starts_with("gpu.func @") && line.contains(" kernel") && t.ends_with('{')) {
            continue;
        }
        // A kernel whose generator marked no place for the wait waits at its entry. Its
        // body: up to the line that closes the header's brace.
        let mut depth = braces(line);
        let mut body = lines[i + 1..].iter().take_while(|l| {
            depth += braces(l);
            depth > 0
        });
        if !body.any(|l| l.trim() == WAIT_HERE) {
            out.push_str(&wait(&format!("{}  ", indent_of(line))));
        }
    }
    out
}

/// Shared-memory alignment of every kernel's workgroup buffers: 16 bytes, the widest
/// vector access. LLVM turns neighbouring loads and stores of a buffer into 16-byte
/// vectors where the indices allow, whatever alignment the buffer was declared with, and
/// ptxas places a buffer declared `.align 4` wherever 4 bytes allow (after a 4-byte flag,
/// say): the hardware then stops the kernel with "misaligned address". A buffer that
/// declares its own attributes keeps them.
fn align_workgroup(line: &str) -> String {
    let Some(start) = line.find(" workgroup(").map(|i| i + " workgroup(".len()) else {
        return line.to_string();
    };
    // The attribution list's entries, split at top-level commas (types have their own).
    let mut depth = 0usize;
    let mut entries = vec![start];
    let mut end = None;
    for (i, c) in line[start..].char_indices() {
        match c {
            '<' | '(' | '{' | '[' => depth += 1,
            ')' if depth == 0 => {
                end = Some(start + i);
                break;
            }
            '>' | ')' | '}' | ']' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => entries.push(start + i + 1),
            _ => {}
        }
    }
    let Some(end) = end else { return line.to_string() };
    entries.push(end + 1);
    let mut out = line[..start].to_string();
    for (k, w) in entries.windows(2).enumerate() {
        let entry = line[w[0]..w[1] - 1].trim();
        if k > 0 {
            out.push_str(", ");
        }
        out.push_str(entry);
        if !entry.ends_with('}') {
            out.push_str(" {llvm.align = 16 : i64}");
        }
    }
    out.push_str(&line[end..]);
    out
}

/// `math.fma` and `math.floor` in kernels become plain arithmetic instead of libdevice
/// calls, so kernels whose only math is the inline `exp` link no libdevice. (The floor is
/// the `exp` range reduction's, on values clamped to about ±128: truncate to an integer,
/// step down where that rounded up.)
fn intrinsic_math(line: &str) -> String {
    if let Some((lhs, rhs)) = line.split_once("= math.fma ") {
        // A contractible multiply-add: NVPTX fuses it into fma.rn (libdevice's fmaf is that).
        let Some((ops, ty)) = rhs.rsplit_once(" : ") else { return line.to_string() };
        let ops: Vec<&str> = ops.split(" fastmath").next().unwrap_or(ops).split(", ").map(str::trim).collect();
        let ty = ty.trim();
        if ops.len() != 3 || !matches!(ty, "f32" | "f64") {
            return line.to_string();
        }
        let indent = &lhs[..lhs.len() - lhs.trim_start().len()];
        let r = lhs.trim();
        // Helper names get a letter prefix: printed SSA names may be plain numbers.
        let m = format!("%fm_{}", r.trim_start_matches('%'));
        return format!("{indent}{m} = arith.mulf {}, {} fastmath<contract> : {ty}\n{indent}{r} = arith.addf {m}, {} fastmath<contract> : {ty}", ops[0], ops[1], ops[2]);
    }
    let Some((lhs, rhs)) = line.split_once("= math.floor ") else { return line.to_string() };
    let Some((x, ty)) = rhs.rsplit_once(" : ") else { return line.to_string() };
    let (x, ty) = (x.split(" fastmath").next().unwrap_or(x).trim(), ty.trim());
    if ty != "f32" {
        return line.to_string();
    }
    let indent = &lhs[..lhs.len() - lhs.trim_start().len()];
    let r = lhs.trim();
    let t = format!("%fl_{}_", r.trim_start_matches('%'));
    [
        format!("{indent}{t}i = arith.fptosi {x} : f32 to i32"),
        format!("{indent}{t}f = arith.sitofp {t}i : i32 to f32"),
        format!("{indent}{t}gt = arith.cmpf ogt, {t}f, {x} : f32"),
        format!("{indent}{t}one = arith.constant 1.0 : f32"),
        format!("{indent}{t}dn = arith.subf {t}f, {t}one : f32"),
        format!("{indent}{r} = arith.select {t}gt, {t}dn, {t}f : f32"),
    ]
    .join("\n")
}

/// The LLVM return and parameter types of an MLIR GPU runtime entry point (the names and
/// their table order are the runtime's, `max_runtime::artifact::GPU_API`).
fn gpu_api_signature(name: &str) -> (&'static str, &'static str) {
    match name {
        "mgpuModuleLoad" => ("ptr", "ptr, i64"),
        "mgpuModuleLoadJIT" => ("ptr", "ptr, i32"),
        "mgpuModuleUnload" | "mgpuStreamDestroy" | "mgpuStreamSynchronize" | "mgpuEventDestroy" | "mgpuEventSynchronize" => ("void", "ptr"),
        "mgpuModuleGetFunction" => ("ptr", "ptr, ptr"),
        "mgpuLaunchKernel" => ("void", "ptr, i64, i64, i64, i64, i64, i64, i32, ptr, ptr, ptr, i64"),
        "mgpuStreamCreate" | "mgpuEventCreate" => ("ptr", ""),
        "mgpuStreamWaitEvent" | "mgpuEventRecord" | "mgpuMemFree" => ("void", "ptr, ptr"),
        "mgpuMemAlloc" => ("ptr", "i64, ptr, i8"),
        "mgpuMemcpy" => ("void", "ptr, ptr, i64, ptr"),
        "mgpuMemset32" => ("void", "ptr, i32, i64, ptr"),
        "mgpuMemset16" => ("void", "ptr, i16, i64, ptr"),
        other => unreachable!("no signature for GPU runtime entry point {other}"),
    }
}

/// Rewrites translated host LLVM IR for the runtime: GPU runtime calls go through the
/// `max_gpu_api` table, and module loads run from `max_gpu_init` instead of constructors.
pub fn link_host_ir(ir: &str) -> Result<String, CompileError> {
    let mut out = String::with_capacity(ir.len() + 4096);
    let mut ctors: Vec<String> = Vec::new();
    for line in ir.lines() {
        // Module loads (constructors) run from max_gpu_init; modules stay loaded for the life
        // of the process, so the unloading destructors are dropped.
        if line.starts_with("@llvm.global_ctors") || line.starts_with("@llvm.global_dtors") {
            if line.starts_with("@llvm.global_ctors") {
                for part in line.split("ptr @").skip(1) {
                    ctors.push(part.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.').collect());
                }
            }
            continue;
        }
        if GPU_API.iter().any(|n| line.starts_with("declare ") && line.contains(&format!("@{n}("))) {
            continue;
        }
        // Constructors' section would make the dynamic loader run them; they are plain now.
        out.push_str(&line.replace(" section \".text.startup\"", ""));
        out.push('\n');
    }
    let n = GPU_API.len();
    let _ = writeln!(out, "\n@max_gpu_api = global [{n} x ptr] zeroinitializer");
    for (slot, name) in GPU_API.iter().enumerate() {
        let (ret, params) = gpu_api_signature(name);
        let ps: Vec<&str> = if params.is_empty() { vec![] } else { params.split(", ").collect() };
        let decl: Vec<String> = ps.iter().enumerate().map(|(i, t)| format!("{t} %a{i}")).collect();
        let args = decl.join(", ");
        let _ = writeln!(out, "define internal {ret} @{name}({args}) {{\n  %slot = getelementptr [{n} x ptr], ptr @max_gpu_api, i64 0, i64 {slot}\n  %f = load ptr, ptr %slot, align 8");
        if ret == "void" {
            let _ = writeln!(out, "  call void %f({args})\n  ret void\n}}");
        } else {
            let _ = writeln!(out, "  %r = call {ret} %f({args})\n  ret {ret} %r\n}}");
        }
    }
    let _ = writeln!(out, "define void @max_gpu_init() {{");
    for c in &ctors {
        let _ = writeln!(out, "  call void @{c}()");
    }
    let _ = writeln!(out, "  ret void\n}}");
    if ptx_of(ir).iter().any(|p| calls_unlinked_libdevice(p)) {
        return Err(CompileError::Codegen(format!("GPU kernels call CUDA math functions (libdevice) but {NO_LIBDEVICE}")));
    }
    Ok(out)
}

/// What to do when [`calls_unlinked_libdevice`]: the end of a message.
pub const NO_LIBDEVICE: &str =
    "no libdevice was linked; run `source scripts/cuda-env.sh` (or set MAX_CUDA_TOOLKIT to a CUDA toolkit)";

/// Whether a PTX module declares libdevice functions (`__nv_*`) without their bodies: a
/// compile without libdevice, which a driver refuses to load.
pub fn calls_unlinked_libdevice(ptx: &str) -> bool {
    ptx.lines().any(|l| l.starts_with(".extern .func") && l.contains("__nv_"))
}

/// A kernel module's embedded image in translated host IR
/// (`@*_binary = internal constant [N x i8] c"..."`).
pub(crate) struct ModuleImage {
    /// Its line's index.
    pub line: usize,
    /// The global's name (`@k0_wgmma_binary`).
    pub global: String,
    /// The image, unescaped: PTX without its NUL (as translation writes it).
    pub ptx: String,
}

/// The kernel module images of translated host IR, in order.
pub(crate) fn module_images(ir: &str) -> Vec<ModuleImage> {
    ir.lines()
        .enumerate()
        .filter_map(|(i, l)| {
            let (global, rest) = l.split_once(" = internal constant [")?;
            if !global.ends_with("_binary") {
                return None;
            }
            let body = &rest[rest.find("c\"")? + 2..];
            Some(ModuleImage { line: i, global: global.to_string(), ptx: unescape_llvm(&body[..body.rfind('"')?]) })
        })
        .collect()
}

/// The PTX texts embedded in translated host IR (one per kernel module), unescaped.
pub fn ptx_of(ir: &str) -> Vec<String> {
    module_images(ir).into_iter().map(|m| m.ptx).collect()
}

/// Decodes an LLVM IR string literal body (`\0A` style escapes).
pub(crate) fn unescape_llvm(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    // The embedded PTX is NUL-terminated for the driver's JIT.
    while out.last() == Some(&0) {
        out.pop();
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        assert_eq!(CudaTarget::parse("cuda:sm_90").unwrap().chip, "sm_90");
        assert!(CudaTarget::parse("cuda:sm_10").unwrap_err().to_string().contains("cuda:sm_80"));
        assert!(CudaTarget::parse("sm_90").is_err());
    }

    #[test]
    fn host_memory_becomes_device_memory() {
        let src = "func.func @k(%a: memref<?xf32>) {\n    %alloc = memref.alloc(%d) {alignment = 64 : i64} : memref<?xf32>\n    memref.copy %a, %alloc : memref<?xf32> to memref<?xf32>\n    memref.dealloc %alloc : memref<?xf32>\n  }\n  gpu.module @m {\n    gpu.func @f() kernel {\n      memref.store %x, %y[%i] : memref<?xf32>\n    }\n  }\n";
        let out = device_memory(src).unwrap();
        assert!(out.contains("%alloc = gpu.alloc (%d) : memref<?xf32>"), "{out}");
        assert!(out.contains("gpu.memcpy %alloc, %a : memref<?xf32>, memref<?xf32>"), "{out}");
        assert!(out.contains("gpu.dealloc %alloc"), "{out}");
        assert!(out.contains("memref.store %x"), "kernel code is left alone: {out}");
        let bad = device_memory("func.func @k() {\n    memref.store %x, %y[%i] : memref<?xf32>\n  }\n").unwrap_err();
        assert!(bad.to_string().contains("not mapped to the GPU"), "{bad}");
    }

    #[test]
    fn workgroup_buffers_are_16_byte_aligned() {
        let line = "    gpu.func @k(%a: memref<?xf32>) workgroup(%f : memref<1xi32, #gpu.address_space<workgroup>>, %r : memref<8x4xf32, #gpu.address_space<workgroup>> {llvm.align = 32 : i64}, %s : memref<64xf32, #gpu.address_space<workgroup>>) kernel attributes {known_block_size = array<i32: 256, 1, 1>} {";
        assert_eq!(
            align_workgroup(line),
            "    gpu.func @k(%a: memref<?xf32>) workgroup(%f : memref<1xi32, #gpu.address_space<workgroup>> {llvm.align = 16 : i64}, %r : memref<8x4xf32, #gpu.address_space<workgroup>> {llvm.align = 32 : i64}, %s : memref<64xf32, #gpu.address_space<workgroup>> {llvm.align = 16 : i64}) kernel attributes {known_block_size = array<i32: 256, 1, 1>} {"
        );
        let plain = "    gpu.func @k(%a: memref<?xf32>) kernel {";
        assert_eq!(align_workgroup(plain), plain);
    }

    #[test]
    fn kernels_wait_for_their_predecessors() {
        let src = "  gpu.module @m {\n    gpu.func @a(%x: memref<?xf32>) kernel attributes {known_block_size = array<i32: 256, 1, 1>} {\n      scf.if %c {\n        gpu.barrier\n      }\n      gpu.return\n    }\n    gpu.func @b(%x: memref<?xf32>) kernel {\n      %p = arith.constant 0 : index\n      // max: wait for the preceding kernel here\n      gpu.return\n    }\n    func.func @host() {\n      return\n    }\n  }\n";
        let (w, l) = (GRID_WAIT, GRID_LAUNCH_DEPENDENTS);
        let want = "  gpu.module @m {\n    gpu.func @a(%x: memref<?xf32>) kernel attributes {known_block_size = array<i32: 256, 1, 1>} {\n      WAIT\n      LAUNCH\n      scf.if %c {\n        gpu.barrier\n      }\n      gpu.return\n    }\n    gpu.func @b(%x: memref<?xf32>) kernel {\n      %p = arith.constant 0 : index\n      WAIT\n      LAUNCH\n      gpu.return\n    }\n    func.func @host() {\n      return\n    }\n  }\n".replace("WAIT", w);
        // By default a kernel triggers its dependents only by exiting; the early trigger
        // (MAX_GPU_GRIDDEP=trigger=1) follows each wait.
        assert_eq!(insert_waits(src, false), want.replace("      LAUNCH\n", ""));
        assert_eq!(insert_waits(src, true), want.replace("LAUNCH", l));
        assert!(programmatic_launch("sm_90") && !programmatic_launch("sm_89") && !programmatic_launch("sm_80"));
    }

    #[test]
    fn floor_becomes_arithmetic() {
        let out = intrinsic_math("      %3 = math.floor %2 : f32");
        assert!(out.starts_with("      %fl_3_i = arith.fptosi %2 : f32 to i32\n"), "{out}");
        assert!(out.ends_with("      %3 = arith.select %fl_3_gt, %fl_3_dn, %fl_3_f : f32"), "{out}");
        assert_eq!(intrinsic_math("  %9 = math.tanh %1 : f32"), "  %9 = math.tanh %1 : f32");
        assert_eq!(
            intrinsic_math("  %9 = math.fma %1, %2, %3 : f32"),
            "  %fm_9 = arith.mulf %1, %2 fastmath<contract> : f32\n  %9 = arith.addf %fm_9, %3 fastmath<contract> : f32"
        );
        assert_eq!(intrinsic_math("  %9 = math.floor %1 : vector<4xf32>"), "  %9 = math.floor %1 : vector<4xf32>");
    }

    #[test]
    fn unescapes_ptx() {
        assert_eq!(unescape_llvm("a\\0Ab\\09c\\00"), "a\nb\tc");
    }
}
