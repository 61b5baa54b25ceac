//! SASS beside the PTX: each kernel module of a CUDA artifact is assembled by NVIDIA's
//! `ptxas` for the target chip, and its embedded image becomes a
//! [`max_runtime::gpu_image`] container of the PTX and the cubin.
//!
//! Without SASS the driver compiles every module's PTX at the artifact's first load on a
//! machine (26-34 s for a Llama-3.1-8B shape on an H200; its cache serves later loads). With
//! it the runtime loads the cubin as it is and keeps the PTX for other chips (and drivers
//! that refuse the cubin). Assembling at compile time also reports PTX that `ptxas`
//! rejects when the artifact is built, not when it first runs on a GPU.

use crate::error::CompileError;
use max_runtime::artifact::GpuModule;
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Whether a CUDA artifact carries SASS (`maxc compile --sass`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sass {
    /// When `ptxas` is found ([`find_ptxas`]); PTX only otherwise.
    #[default]
    Auto,
    /// Always; an error when no `ptxas` is found.
    Always,
    /// PTX only: the driver compiles it at the first load on each machine.
    Never,
}

impl FromStr for Sass {
    type Err = CompileError;
    fn from_str(s: &str) -> Result<Self, CompileError> {
        match s {
            "auto" => Ok(Sass::Auto),
            "always" => Ok(Sass::Always),
            "never" => Ok(Sass::Never),
            other => Err(CompileError::Codegen(format!("bad --sass value '{other}': expected auto, always or never"))),
        }
    }
}

/// NVIDIA's assembler: `$MAX_CUDA_TOOLKIT/bin/ptxas` (scripts/cuda-env.sh installs it), else
/// `ptxas` on the `PATH`.
pub fn find_ptxas() -> Option<PathBuf> {
    let toolkit = std::env::var_os("MAX_CUDA_TOOLKIT").filter(|t| !t.is_empty()).map(|t| Path::new(&t).join("bin").join("ptxas"));
    let on_path = std::env::var_os("PATH").into_iter().flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>()).map(|d| d.join("ptxas"));
    toolkit.into_iter().chain(on_path).find(|p| p.is_file())
}

/// The oldest `ptxas` release that takes the PTX the backend writes: CUDA 12.0 brought PTX
/// ISA 8.0 and `sm_90a` (warpgroup MMA).
const MIN_PTXAS: (u32, u32) = (12, 0);

/// The CUDA release in `ptxas --version`'s text (`... release 12.8, V12.8.93`).
fn ptxas_release(version: &str) -> Option<(u32, u32)> {
    let rest = &version[version.find("release ")? + "release ".len()..];
    let (major, rest) = rest.split_once('.')?;
    let minor: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some((major.trim().parse().ok()?, minor.parse().ok()?))
}

/// Whether `ptxas` is recent enough ([`MIN_PTXAS`]); the reason when it is not.
fn check_release(ptxas: &Path) -> Result<(), String> {
    let out = std::process::Command::new(ptxas).arg("--version").output().map_err(|e| format!("running {} --version: {e}", ptxas.display()))?;
    match ptxas_release(&String::from_utf8_lossy(&out.stdout)) {
        Some(r) if r >= MIN_PTXAS => Ok(()),
        Some((a, b)) => Err(format!("{} is CUDA {a}.{b}'s; SASS needs {}.{} or later", ptxas.display(), MIN_PTXAS.0, MIN_PTXAS.1)),
        None => Err(format!("{} --version names no CUDA release", ptxas.display())),
    }
}

/// The chip a module's PTX targets (its `.target`), or `chip` if it names none.
fn ptx_chip<'a>(ptx: &'a str, chip: &'a str) -> &'a str {
    ptx.lines().find_map(|l| l.trim().strip_prefix(".target ")).map_or(chip, |t| t.split(',').next().unwrap_or(chip).trim())
}

/// The chip a module's SASS is assembled for: `sm_90a` where its PTX targets that (warpgroup
/// MMA), else the artifact's chip (`chip`: a custom op's PTX may name an older one).
fn sass_chip(ptx: &str, chip: &str) -> String {
    let target = ptx_chip(ptx, chip);
    if target == format!("{chip}a") { target } else { chip }.to_string()
}

/// Assembles `ptx` for `chip` with `ptxas`.
fn assemble(ptxas: &Path, ptx: &str, chip: &str, module: &str) -> Result<Vec<u8>, CompileError> {
    let io = |what: &str, cause| CompileError::Io { what: format!("{what} for ptxas"), cause };
    let dir = tempfile::tempdir().map_err(|e| io("creating a temporary directory", e))?;
    // Named for the module: ptxas's messages quote the file name.
    let (src, out) = (dir.path().join(format!("{module}.ptx")), dir.path().join(format!("{module}.cubin")));
    std::fs::write(&src, ptx).map_err(|e| io("writing PTX", e))?;
    let run = std::process::Command::new(ptxas)
        .args(["-O3", "--gpu-name", chip])
        .arg(&src)
        .arg("-o")
        .arg(&out)
        .output()
        .map_err(|e| CompileError::Io { what: format!("running {}", ptxas.display()), cause: e })?;
    if !run.status.success() {
        return Err(CompileError::Codegen(format!(
            "ptxas ({}) rejected kernel module {module} for {chip}:\n{}\n(`--sass never` ships PTX only)",
            ptxas.display(),
            String::from_utf8_lossy(&run.stderr).trim()
        )));
    }
    std::fs::read(&out).map_err(|e| io("reading the cubin", e))
}

/// `bytes` as an LLVM IR string constant's body.
fn escape_llvm(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        if (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\' {
            s.push(b as char);
        } else {
            s.push_str(&format!("\\{b:02X}"));
        }
    }
    s
}

/// Replaces each kernel module image of translated host IR `ir` by a container of its PTX
/// and its SASS for `chip` (`mode` as [`Sass`]); the IR is unchanged when no SASS is wanted
/// or (with [`Sass::Auto`]) no `ptxas` is found, or only one older than [`MIN_PTXAS`].
/// Modules are assembled in parallel, each distinct PTX once. Returns the IR and the
/// modules, for the manifest.
pub fn embed(ir: &str, chip: &str, mode: Sass) -> Result<(String, Vec<GpuModule>), CompileError> {
    let modules = crate::gpu::module_images(ir);
    let listed = |sass: &dyn Fn(usize) -> Option<String>| -> Vec<GpuModule> {
        modules.iter().enumerate().map(|(i, m)| GpuModule { name: module_name(&m.global), ptx: ptx_chip(&m.ptx, chip).to_string(), sass: sass(i) }).collect()
    };
    let ptxas = match (mode, find_ptxas()) {
        (Sass::Never, _) => return Ok((ir.to_string(), listed(&|_| None))),
        (_, Some(p)) => p,
        (Sass::Auto, None) => {
            tracing::info!("no ptxas found ($MAX_CUDA_TOOLKIT/bin, PATH): kernels ship as PTX only, which the driver compiles at the first load");
            return Ok((ir.to_string(), listed(&|_| None)));
        }
        (Sass::Always, None) => {
            return Err(CompileError::Codegen("--sass always needs NVIDIA's ptxas: run `source scripts/cuda-env.sh` or set MAX_CUDA_TOOLKIT (or put ptxas on the PATH)".into()))
        }
    };
    if let Err(why) = check_release(&ptxas) {
        if mode == Sass::Always {
            return Err(CompileError::Codegen(format!("--sass always: {why}")));
        }
        tracing::warn!("{why}: kernels ship as PTX only, which the driver compiles at the first load (set MAX_CUDA_TOOLKIT, see scripts/cuda-env.sh)");
        return Ok((ir.to_string(), listed(&|_| None)));
    }
    let t0 = std::time::Instant::now();
    // Distinct (PTX, chip) pairs: generated modules repeat across layers and dispatches.
    let mut jobs: Vec<(String, &str, &str)> = Vec::new();
    let job_of: Vec<usize> = modules
        .iter()
        .map(|m| {
            let c = sass_chip(&m.ptx, chip);
            match jobs.iter().position(|(jc, p, _)| *jc == c && *p == m.ptx) {
                Some(j) => j,
                None => {
                    jobs.push((c, &m.ptx, &m.global));
                    jobs.len() - 1
                }
            }
        })
        .collect();
    // ptxas runs one process a module: spread them over the cores.
    let cubins: Vec<Vec<u8>> = jobs.par_iter().map(|(c, ptx, name)| assemble(&ptxas, ptx, c, &module_name(name))).collect::<Result<_, _>>()?;
    let mut out: Vec<String> = ir.lines().map(str::to_string).collect();
    let mut bytes = 0;
    for (m, j) in modules.iter().zip(&job_of) {
        let image = max_runtime::gpu_image::write(&m.ptx, ptx_chip(&m.ptx, chip), &[(&jobs[*j].0, &cubins[*j])]);
        bytes += image.len();
        out[m.line] = format!("{} = internal constant [{} x i8] c\"{}\", align 16", m.global, image.len(), escape_llvm(&image));
    }
    tracing::info!(modules = modules.len(), assembled = jobs.len(), bytes, elapsed_ms = t0.elapsed().as_millis() as u64, "kernel modules assembled to SASS by {}", ptxas.display());
    let mut s = out.join("\n");
    s.push('\n');
    Ok((s, listed(&|i| Some(jobs[job_of[i]].0.clone()))))
}

/// A module's name from its image global's (`@g_k0_wgmma_binary` -> `g_k0_wgmma`).
fn module_name(global: &str) -> String {
    global.trim_start_matches('@').trim_end_matches("_binary").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_llvm_strings_cannot_hold() {
        assert_eq!(escape_llvm(b"a\"b\\c\n\x00\x7f\xff"), "a\\22b\\5Cc\\0A\\00\\7F\\FF");
        assert_eq!(crate::gpu::unescape_llvm(&escape_llvm(b".target sm_90a\n")), ".target sm_90a\n");
    }

    #[test]
    fn picks_the_chip_of_each_module() {
        assert_eq!(sass_chip(".version 8.0\n.target sm_90a\n", "sm_90"), "sm_90a");
        assert_eq!(sass_chip(".version 7.8\n.target sm_90\n", "sm_90"), "sm_90");
        // A custom op's PTX for an older chip is assembled for the artifact's.
        assert_eq!(sass_chip(".version 6.0\n.target sm_52\n", "sm_80"), "sm_80");
    }

    #[test]
    fn reads_the_ptxas_release() {
        let v = "ptxas: NVIDIA (R) Ptx optimizing assembler\nCuda compilation tools, release 12.8, V12.8.93\n";
        assert_eq!(ptxas_release(v), Some((12, 8)));
        assert!(ptxas_release("Cuda compilation tools, release 11.8, V11.8.89").unwrap() < MIN_PTXAS);
        assert_eq!(ptxas_release("ptxas: unknown"), None);
    }

    #[test]
    fn parses_modes() {
        assert_eq!("never".parse::<Sass>().unwrap(), Sass::Never);
        assert!("sometimes".parse::<Sass>().unwrap_err().to_string().contains("auto, always or never"));
    }
}
