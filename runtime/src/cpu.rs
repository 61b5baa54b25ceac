//! The CPU executor: loads the kernel library out of the artifact and runs dispatches,
//! spreading each dispatch's workgroups over a thread pool.
//!
//! Kernel ABI (version [`KERNEL_ABI_VERSION`]): every kernel is
//! `int32_t kernel(void *const *bindings, const int64_t *push_constants, int64_t wg_id, int64_t wg_count)`,
//! returning 0 on success (custom kernels may fail with their own nonzero status);
//! the library exports `uint32_t max_abi_version`.

use crate::artifact::{Artifact, SectionKind, KERNEL_ABI_VERSION};
use crate::error::RuntimeError;
use std::io::Write;

/// The C signature of a compiled kernel.
pub type KernelFn = unsafe extern "C" fn(*const *mut u8, *const i64, i64, i64) -> i32;

/// The loaded kernel library of an artifact.
pub struct KernelLibrary {
    // Keeps the shared object mapped for as long as kernel pointers are in use.
    lib: libloading::Library,
    /// The kernel of every dispatch, resolved at load: `dispatches[entry][dispatch]`.
    dispatches: Vec<Vec<KernelFn>>,
    /// The columns and finish kernels of dispatches with a column split, likewise.
    splits: Vec<Vec<Option<(KernelFn, KernelFn)>>>,
}

impl KernelLibrary {
    /// Loads the `cpu_kernels` section and resolves every kernel the entries dispatch.
    pub fn load(artifact: &Artifact) -> Result<KernelLibrary, RuntimeError> {
        let m = artifact.manifest();
        let idx = m
            .sections
            .iter()
            .position(|s| s.kind == SectionKind::CpuKernels)
            .ok_or_else(|| RuntimeError::Missing { what: "CPU kernel library (it was compiled for another device)".into() })?;
        // dlopen needs a file; it is unlinked as soon as the library is mapped.
        let mut file = tempfile::Builder::new()
            .prefix("max-kernels-")
            .suffix(".so")
            .tempfile()
            .map_err(|e| RuntimeError::Io { what: "creating a temporary file for the kernel library".into(), cause: e })?;
        file.write_all(artifact.section_bytes(idx))
            .and_then(|_| file.flush())
            .map_err(|e| RuntimeError::Io { what: "writing the kernel library".into(), cause: e })?;
        // SAFETY: the library is our own compiler's output (checksummed); its initializers
        // are the default ones of a plain C shared object.
        // RTLD_NOW: an unresolved symbol fails here, with a message, not mid-run.
        let lib: libloading::Library = unsafe {
            libloading::os::unix::Library::open(Some(file.path()), libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_LOCAL)
        }
        .map_err(|e| {
            let cause = std::error::Error::source(&e).map(|s| format!(": {s}")).unwrap_or_default();
            RuntimeError::KernelLoad(format!("{e}{cause}"))
        })?
        .into();
        // SAFETY: `max_abi_version` is a `uint32_t` global in every library maxc writes.
        let version = unsafe {
            let sym = lib
                .get::<*const u32>(b"max_abi_version\0")
                .map_err(|_| RuntimeError::KernelLoad("the kernel library has no max_abi_version symbol".into()))?;
            **sym
        };
        if version != KERNEL_ABI_VERSION {
            return Err(RuntimeError::KernelLoad(format!(
                "kernel ABI version {version}, but this runtime speaks version {KERNEL_ABI_VERSION}"
            )));
        }
        // Each symbol is looked up once, however many dispatches use it.
        let mut by_name: Vec<(String, KernelFn)> = Vec::new();
        let mut resolve = |name: &str| -> Result<KernelFn, RuntimeError> {
            if let Some((_, f)) = by_name.iter().find(|(n, _)| n == name) {
                return Ok(*f);
            }
            let cname = format!("{name}\0");
            // SAFETY: every dispatch symbol is a kernel with the `KernelFn` signature.
            let f: KernelFn = unsafe {
                *lib.get::<KernelFn>(cname.as_bytes()).map_err(|_| RuntimeError::KernelLoad(format!("kernel '{name}' is missing from the library")))?
            };
            by_name.push((name.to_string(), f));
            Ok(f)
        };
        let mut dispatches = Vec::with_capacity(m.entries.len());
        let mut splits = Vec::with_capacity(m.entries.len());
        for e in &m.entries {
            dispatches.push(e.dispatches.iter().map(|d| resolve(&d.kernel)).collect::<Result<Vec<_>, _>>()?);
            splits.push(
                e.dispatches
                    .iter()
                    .map(|d| d.column_split.as_ref().map(|c| Ok((resolve(&c.columns_kernel)?, resolve(&c.finish_kernel)?))).transpose())
                    .collect::<Result<Vec<_>, RuntimeError>>()?,
            );
        }
        Ok(KernelLibrary { lib, dispatches, splits })
    }

    /// The loaded shared object (GPU artifacts' host code exports more than kernels).
    pub fn library(&self) -> &libloading::Library {
        &self.lib
    }

    /// The kernel of dispatch `dispatch` of entry `entry` (indices into the manifest).
    pub fn kernel(&self, entry: usize, dispatch: usize) -> Option<KernelFn> {
        self.dispatches.get(entry)?.get(dispatch).copied()
    }

    /// The columns and finish kernels of a dispatch's [`crate::artifact::ColumnSplit`].
    pub fn split_kernels(&self, entry: usize, dispatch: usize) -> Option<(KernelFn, KernelFn)> {
        *self.splits.get(entry)?.get(dispatch)?
    }
}

/// Checks that the host can run code compiled for `target`.
pub fn check_target(target: &crate::artifact::Target) -> Result<(), RuntimeError> {
    let arch = std::env::consts::ARCH;
    if target.arch == "cuda" {
        return Err(RuntimeError::Device(format!("this artifact was compiled for an NVIDIA GPU ({}); load it on a GPU (--device gpu:0), or compile it for a CPU target", target.cpu)));
    }
    if target.arch != arch || target.os != std::env::consts::OS {
        return Err(RuntimeError::Target {
            found: format!("{}-{}", target.arch, target.os),
            expected: format!("{arch}-{}", std::env::consts::OS),
        });
    }
    let missing: Vec<&str> = target.features.iter().map(String::as_str).filter(|f| !host_has_feature(f)).collect();
    if !missing.is_empty() {
        return Err(RuntimeError::CpuFeatures { missing: missing.join(", ") });
    }
    Ok(())
}

#[cfg(target_arch = "x86_64")]
fn host_has_feature(f: &str) -> bool {
    match f {
        "sse2" => is_x86_feature_detected!("sse2"),
        "sse3" => is_x86_feature_detected!("sse3"),
        "ssse3" => is_x86_feature_detected!("ssse3"),
        "sse4.1" => is_x86_feature_detected!("sse4.1"),
        "sse4.2" => is_x86_feature_detected!("sse4.2"),
        "popcnt" => is_x86_feature_detected!("popcnt"),
        "avx" => is_x86_feature_detected!("avx"),
        "avx2" => is_x86_feature_detected!("avx2"),
        "fma" => is_x86_feature_detected!("fma"),
        "f16c" => is_x86_feature_detected!("f16c"),
        "bmi1" => is_x86_feature_detected!("bmi1"),
        "bmi2" => is_x86_feature_detected!("bmi2"),
        "lzcnt" => is_x86_feature_detected!("lzcnt"),
        "movbe" => is_x86_feature_detected!("movbe"),
        "avx512f" => is_x86_feature_detected!("avx512f"),
        "avx512bw" => is_x86_feature_detected!("avx512bw"),
        "avx512cd" => is_x86_feature_detected!("avx512cd"),
        "avx512dq" => is_x86_feature_detected!("avx512dq"),
        "avx512vl" => is_x86_feature_detected!("avx512vl"),
        "avx512vnni" => is_x86_feature_detected!("avx512vnni"),
        "avx512bf16" => is_x86_feature_detected!("avx512bf16"),
        // Unknown names are refused rather than assumed present.
        _ => false,
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn host_has_feature(_f: &str) -> bool {
    false
}
