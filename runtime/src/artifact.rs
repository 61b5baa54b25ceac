//! The `.maxa` artifact format.
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! 0   magic        8 bytes  "MAXA\0\r\n\x1a" (the \r\n and ^Z catch text-mode mangling)
//! 8   version      u32      FORMAT_VERSION; any other value is refused
//! 12  header_size  u32      64
//! 16  manifest_off u64      offset of the JSON manifest
//! 24  manifest_len u64
//! 32  manifest_crc u32      CRC-32 of the manifest bytes
//! 36  reserved     u32
//! 40  file_len     u64      total file length (detects truncation before anything else)
//! 48  reserved     16 bytes
//! 64  sections...           each at a 64-byte aligned offset, each with a CRC-32 in the manifest
//!     manifest              JSON (see [`Manifest`])
//! ```
//!
//! Weights are sections like the kernel library; the runtime maps the file and hands kernels
//! pointers into the mapping, so weights are never copied.

use crate::error::RuntimeError;
use max_dialects::{DType, DimExpr};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;

/// File magic.
pub const MAGIC: [u8; 8] = *b"MAXA\0\r\n\x1a";
/// The artifact format version this runtime reads and the compiler writes.
/// Version 3: a GPU artifact's kernel modules may be [`crate::gpu_image`] containers (PTX
/// and SASS), and the manifest lists them.
pub const FORMAT_VERSION: u32 = 3;
/// Kernel ABI version: the kernel library exports `max_abi_version` with this value.
/// Version 2: kernels return an `int32_t` status (0 = success).
pub const KERNEL_ABI_VERSION: u32 = 2;

/// The MLIR GPU runtime entry points a GPU artifact's host code calls, in the order of its
/// `max_gpu_api` table of function pointers (filled by the runtime's CUDA executor).
pub const GPU_API: &[&str] = &[
    "mgpuModuleLoad",
    "mgpuModuleLoadJIT",
    "mgpuModuleUnload",
    "mgpuModuleGetFunction",
    "mgpuLaunchKernel",
    "mgpuStreamCreate",
    "mgpuStreamDestroy",
    "mgpuStreamSynchronize",
    "mgpuStreamWaitEvent",
    "mgpuEventCreate",
    "mgpuEventDestroy",
    "mgpuEventSynchronize",
    "mgpuEventRecord",
    "mgpuMemAlloc",
    "mgpuMemFree",
    "mgpuMemcpy",
    "mgpuMemset32",
    "mgpuMemset16",
];
/// Alignment of every section.
pub const SECTION_ALIGN: u64 = 64;
const HEADER_SIZE: usize = 64;

/// The whole description of an artifact, stored as JSON after the sections.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    /// Version of the `maxc` that wrote the artifact.
    pub compiler_version: String,
    pub target: Target,
    /// Names of the dynamic dimension symbols; `DimExpr::Sym(i)` refers to `symbols[i]`.
    pub symbols: Vec<String>,
    pub entries: Vec<Entry>,
    pub sections: Vec<Section>,
    /// A GPU artifact's kernel modules (empty for a CPU artifact).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpu_modules: Vec<GpuModule>,
}

/// A kernel module of a GPU artifact, as its host code embeds it ([`crate::gpu_image`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuModule {
    /// The module's name (`g_k0_matmul_wgmma`).
    pub name: String,
    /// The chip its PTX targets (`sm_90a`).
    pub ptx: String,
    /// The chip its SASS was assembled for, when it carries SASS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sass: Option<String>,
}

/// What the kernels were compiled for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// `x86_64` for CPU code.
    pub arch: String,
    pub os: String,
    /// The LLVM CPU name the code was tuned for.
    pub cpu: String,
    /// CPU features the code requires (LLVM names without `+`, e.g. `avx2`, `fma`).
    pub features: Vec<String>,
}

/// A named, aligned byte range of the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Section {
    pub name: String,
    pub kind: SectionKind,
    pub offset: u64,
    pub size: u64,
    pub crc32: u32,
}

/// What a section holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SectionKind {
    /// An ELF shared object with the CPU kernels.
    CpuKernels,
    /// Raw little-endian tensor data.
    Weight,
    /// Other named data the artifact carries (an LLM's tokenizer, chat template and
    /// configuration), read with [`Artifact::data_section`].
    Data,
    /// A weight whose bytes are not in the file (`maxc compile --external-weights`): `size`
    /// is their length; they are supplied at load ([`Artifact::with_weights`]).
    External,
}

/// An entry point (a compiled graph function).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub name: String,
    pub inputs: Vec<TensorSig>,
    pub outputs: Vec<TensorSig>,
    /// Every buffer the program touches.
    pub buffers: Vec<Buffer>,
    /// Buffer index of each output.
    pub output_buffers: Vec<usize>,
    /// Kernel launches, in order.
    pub dispatches: Vec<Dispatch>,
}

/// Name, dtype and (symbolic) shape of an entry input or output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorSig {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<DimExpr>,
    /// An input the program updates in place (a KV cache): the caller passes it as state
    /// with [`crate::Model::execute_with_state`] and keeps it between calls.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mutable: bool,
}

/// A buffer of the program.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Buffer {
    pub dtype: DType,
    pub shape: Vec<DimExpr>,
    pub kind: BufferKind,
}

/// Where a buffer's memory comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BufferKind {
    /// The caller's input tensor with this index.
    Input(usize),
    /// A weight section (by index into `Manifest::sections`).
    Weight(usize),
    /// Allocated by the runtime for this call.
    Temp,
    /// The same bytes as another buffer (a reshape is free).
    Alias(usize),
}

/// One kernel launch: `kernel(bindings, push_constants, wg_id, wg_count)` for every
/// workgroup id in `0..workgroups`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dispatch {
    /// Symbol of the kernel in the CPU kernel library.
    pub kernel: String,
    /// Buffer indices, in the kernel's binding order.
    pub bindings: Vec<usize>,
    /// Dynamic sizes the kernel needs, evaluated by the runtime.
    pub push_constants: Vec<DimExpr>,
    /// How many workgroups the work splits into at most (the runtime may use fewer).
    pub workgroups: DimExpr,
    /// Another way to run the same dispatch when its result has few rows. Optional: the
    /// kernel alone is always correct (a runtime that does not know the field runs it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column_split: Option<ColumnSplit>,
}

/// The two-phase form of a matmul dispatch whose epilogue needs whole rows (a softmax):
/// with fewer rows than threads, splitting rows would leave cores idle, so the runtime runs
/// `columns_kernel` over column panels of the weight (matmul and elementwise prologue into
/// `scratch`), joins, then `finish_kernel` over rows (scratch to the results). Both phases
/// call their kernels with the dispatch's push constants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnSplit {
    pub columns_kernel: String,
    pub columns_bindings: Vec<usize>,
    /// Workgroups of the columns phase at most (the weight's column panels).
    pub columns_workgroups: DimExpr,
    pub finish_kernel: String,
    pub finish_bindings: Vec<usize>,
    /// The result's rows: the finish phase's workgroups at most, and what decides the form.
    pub rows: DimExpr,
    /// The split is taken when `rows < threads * below_rows_per_thread`.
    pub below_rows_per_thread: i64,
}

impl Dispatch {
    /// Every buffer the dispatch may bind, in either form.
    pub fn all_bindings(&self) -> impl Iterator<Item = usize> + '_ {
        let split = self.column_split.iter().flat_map(|c| c.columns_bindings.iter().chain(&c.finish_bindings));
        self.bindings.iter().chain(split).copied()
    }
}

impl Manifest {
    /// Finds a section by name.
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// Finds an entry by name.
    pub fn entry(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.name == name)
    }
}

/// Writes an artifact: add sections, then `finish` with the manifest.
pub struct ArtifactWriter {
    bytes: Vec<u8>,
    sections: Vec<Section>,
}

impl Default for ArtifactWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl ArtifactWriter {
    /// Starts an artifact.
    pub fn new() -> Self {
        ArtifactWriter { bytes: vec![0u8; HEADER_SIZE], sections: Vec::new() }
    }

    fn pad(&mut self) {
        while !(self.bytes.len() as u64).is_multiple_of(SECTION_ALIGN) {
            self.bytes.push(0);
        }
    }

    /// Appends a section; returns its index.
    pub fn add_section(&mut self, name: impl Into<String>, kind: SectionKind, data: &[u8]) -> usize {
        self.pad();
        let offset = self.bytes.len() as u64;
        self.bytes.extend_from_slice(data);
        self.sections.push(Section {
            name: name.into(),
            kind,
            offset,
            size: data.len() as u64,
            crc32: crc32fast::hash(data),
        });
        self.sections.len() - 1
    }

    /// Records an external weight of `size` bytes (no data in the file); returns its index.
    pub fn add_external(&mut self, name: impl Into<String>, size: u64) -> usize {
        self.sections.push(Section { name: name.into(), kind: SectionKind::External, offset: 0, size, crc32: 0 });
        self.sections.len() - 1
    }

    /// Finishes the file. The manifest's `sections` are filled in here.
    pub fn finish(mut self, mut manifest: Manifest) -> Vec<u8> {
        manifest.sections = std::mem::take(&mut self.sections);
        manifest.format_version = FORMAT_VERSION;
        self.pad();
        let json = serde_json::to_vec(&manifest).expect("manifest serializes");
        let off = self.bytes.len() as u64;
        self.bytes.extend_from_slice(&json);
        let total = self.bytes.len() as u64;
        let h = &mut self.bytes[..HEADER_SIZE];
        h[0..8].copy_from_slice(&MAGIC);
        h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        h[12..16].copy_from_slice(&(HEADER_SIZE as u32).to_le_bytes());
        h[16..24].copy_from_slice(&off.to_le_bytes());
        h[24..32].copy_from_slice(&(json.len() as u64).to_le_bytes());
        h[32..36].copy_from_slice(&crc32fast::hash(&json).to_le_bytes());
        h[40..48].copy_from_slice(&total.to_le_bytes());
        self.bytes
    }
}

/// Backing storage of a loaded artifact.
enum Storage {
    Mapped(memmap2::Mmap),
    Owned(AlignedBytes),
}

/// A byte buffer aligned to 64 bytes (so weight sections stay aligned in memory).
///
/// Buffers of [`HUGE_PAGE_MIN`] bytes or more are anonymous mappings advised to use
/// transparent huge pages (where the kernel has them), as NumPy does for its large arrays:
/// the kernels stream matmul operands through many 4 KiB pages otherwise (a 1024x1024
/// sgemm on 2 threads ran in ~0.96x the time with huge pages), and the kernel zeroes the
/// pages as they are first touched, so a fresh buffer is not written twice.
pub struct AlignedBytes {
    mem: Memory,
    len: usize,
}

enum Memory {
    Heap(Vec<Align64>),
    Mapped(memmap2::MmapMut),
}

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Align64([u8; 64]);

/// Size from which [`AlignedBytes`] are mapped with huge pages (one x86-64 huge page).
pub const HUGE_PAGE_MIN: usize = 2 << 20;

/// Freed huge-page buffers kept for [`AlignedBytes::for_overwrite`]: at most this many...
const RECYCLE_MAX_BUFFERS: usize = 4;
/// ... holding at most this many bytes together.
const RECYCLE_MAX_BYTES: usize = 64 << 20;

/// The cache of freed huge-page buffers (see [`AlignedBytes::for_overwrite`]).
fn recycled() -> std::sync::MutexGuard<'static, Vec<memmap2::MmapMut>> {
    static RECYCLED: std::sync::Mutex<Vec<memmap2::MmapMut>> = std::sync::Mutex::new(Vec::new());
    RECYCLED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Which of the cached buffers (by size) [`AlignedBytes::for_overwrite`] takes for `len`
/// bytes: the smallest of `len` to `len + len/4`.
fn recycle_fit(sizes: impl Iterator<Item = usize>, len: usize) -> Option<usize> {
    sizes.enumerate().filter(|&(_, s)| s >= len && s - len <= len / 4).min_by_key(|&(_, s)| s).map(|(i, _)| i)
}

impl Drop for AlignedBytes {
    fn drop(&mut self) {
        if let Memory::Mapped(m) = std::mem::replace(&mut self.mem, Memory::Heap(Vec::new())) {
            let mut cached = recycled();
            let held: usize = cached.iter().map(|c| c.len()).sum();
            if cached.len() < RECYCLE_MAX_BUFFERS && held + m.len() <= RECYCLE_MAX_BYTES {
                cached.push(m);
            }
        }
    }
}

/// Whether the kernel grants transparent huge pages to advised mappings. Without them a
/// fresh mapping costs a page fault per 4 KiB, more than the heap's reused memory, so
/// [`AlignedBytes`] then stay on the heap.
fn huge_pages_available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").is_ok_and(|s| s.contains("[always]") || s.contains("[madvise]"))
    })
}

impl AlignedBytes {
    /// Zeroed bytes.
    pub fn zeroed(len: usize) -> Self {
        if len >= HUGE_PAGE_MIN && huge_pages_available() {
            // Falls back to the heap if the mapping fails (an address-space limit).
            if let Ok(m) = memmap2::MmapOptions::new().len(len).map_anon() {
                // Before the first touch, so the first faults map huge pages.
                #[cfg(target_os = "linux")]
                let _ = m.advise(memmap2::Advice::HugePage);
                return AlignedBytes { mem: Memory::Mapped(m), len };
            }
        }
        AlignedBytes { mem: Memory::Heap(vec![Align64([0; 64]); len.div_ceil(64)]), len }
    }
    /// Bytes a kernel will overwrite whole (a call's results): their contents are zeros or
    /// what an earlier buffer held. A huge-page buffer freed earlier is reused when one of
    /// `len` to `len + len/4` bytes is cached, sparing a fresh mapping's page faults and
    /// the kernel's zeroing of every page (3% of a 2048x2048 sgemm call on 2 threads).
    pub fn for_overwrite(len: usize) -> Self {
        if len >= HUGE_PAGE_MIN && huge_pages_available() {
            let mut cached = recycled();
            if let Some(i) = recycle_fit(cached.iter().map(|m| m.len()), len) {
                return AlignedBytes { mem: Memory::Mapped(cached.swap_remove(i)), len };
            }
            // A miss releases what is cached: freed buffers are kept while the calls reuse
            // them, not beside the new mappings of calls that cannot.
            cached.clear();
        }
        Self::zeroed(len)
    }
    /// Copies `data`.
    pub fn from_slice(data: &[u8]) -> Self {
        let mut b = Self::zeroed(data.len());
        b.as_mut_slice().copy_from_slice(data);
        b
    }
    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        match &self.mem {
            // SAFETY: `words` owns at least `len` initialized bytes; Align64 is plain bytes.
            Memory::Heap(words) => unsafe { std::slice::from_raw_parts(words.as_ptr() as *const u8, self.len) },
            Memory::Mapped(m) => &m[..self.len],
        }
    }
    /// The bytes, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        match &mut self.mem {
            // SAFETY: as above, with unique access through `&mut self`.
            Memory::Heap(words) => unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr() as *mut u8, self.len) },
            Memory::Mapped(m) => &mut m[..self.len],
        }
    }
    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Bytes the allocation holds (at least [`len`](Self::len)).
    pub fn capacity(&self) -> usize {
        match &self.mem {
            Memory::Heap(words) => words.len() * 64,
            Memory::Mapped(m) => m.len(),
        }
    }
    /// Resizes within the allocation (for reusing a buffer for a smaller or equal need).
    /// Bytes past the old length keep whatever they held.
    ///
    /// # Panics
    /// If `len` exceeds [`capacity`](Self::capacity).
    pub fn set_len(&mut self, len: usize) {
        assert!(len <= self.capacity(), "AlignedBytes::set_len past capacity");
        self.len = len;
    }
    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A validated artifact: header, manifest and checksummed sections. Cloning is cheap
/// (the mapping is shared).
#[derive(Clone)]
pub struct Artifact {
    storage: Arc<Storage>,
    manifest: Arc<Manifest>,
    origin: String,
    /// The bytes of external weight sections, by section index, once supplied.
    external: Arc<Vec<Option<AlignedBytes>>>,
}

/// Where the external weights of an artifact come from.
#[derive(Debug, Clone)]
pub enum WeightSource {
    /// Tensors of a .safetensors file, by weight name (dtype and shape must match).
    Safetensors(std::path::PathBuf),
    /// Deterministic pseudo-random values (uniform, small), for shape-accurate benchmarks.
    Random { seed: u64 },
}

impl std::fmt::Debug for Artifact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Artifact").field("origin", &self.origin).field("bytes", &self.bytes().len()).finish()
    }
}

impl Artifact {
    /// Maps and validates the artifact at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Artifact, RuntimeError> {
        let path = path.as_ref();
        let origin = path.display().to_string();
        let file = std::fs::File::open(path).map_err(|e| RuntimeError::Io { what: format!("opening artifact {origin}"), cause: e })?;
        // SAFETY: the mapping is read-only and private; we validate every range we read.
        // Truncating the file while it is mapped is the caller's responsibility, as with any mmap.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| RuntimeError::Io { what: format!("mapping artifact {origin}"), cause: e })?;
        Self::validate(Storage::Mapped(map), origin)
    }

    /// Validates an artifact held in memory (e.g. straight from the compiler).
    pub fn from_bytes(bytes: &[u8]) -> Result<Artifact, RuntimeError> {
        Self::validate(Storage::Owned(AlignedBytes::from_slice(bytes)), "<memory>".into())
    }

    /// All bytes of the file.
    pub fn bytes(&self) -> &[u8] {
        match &*self.storage {
            Storage::Mapped(m) => m,
            Storage::Owned(b) => b.as_slice(),
        }
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Where the artifact came from (a path, or `<memory>`).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The bytes of the data section `name` (see [`SectionKind::Data`]), if there is one.
    pub fn data_section(&self, name: &str) -> Option<&[u8]> {
        let m = self.manifest();
        let i = m.sections.iter().position(|s| s.name == name && s.kind == SectionKind::Data)?;
        Some(self.section_bytes(i))
    }

    /// The bytes of section `index` (see [`Manifest::sections`]); an external weight's once
    /// supplied, else empty.
    pub fn section_bytes(&self, index: usize) -> &[u8] {
        let s = &self.manifest.sections[index];
        if s.kind == SectionKind::External {
            return self.external.get(index).and_then(|b| b.as_ref()).map_or(&[], |b| b.as_slice());
        }
        &self.bytes()[s.offset as usize..(s.offset + s.size) as usize]
    }

    /// The external weights (see [`SectionKind::External`]): section index, name, dtype and
    /// shape (from the buffers that read them).
    pub fn external_weights(&self) -> Vec<(usize, String, DType, Vec<usize>)> {
        let m = self.manifest();
        let mut out = Vec::new();
        for (i, s) in m.sections.iter().enumerate().filter(|(_, s)| s.kind == SectionKind::External) {
            let buf = m.entries.iter().flat_map(|e| &e.buffers).find(|b| b.kind == BufferKind::Weight(i));
            let (dtype, shape) = match buf {
                Some(b) => (b.dtype, b.shape.iter().map(|d| d.as_const().unwrap_or(0).max(0) as usize).collect()),
                None => (DType::I8, vec![s.size as usize]),
            };
            let name = s.name.strip_prefix("weight:").unwrap_or(&s.name).to_string();
            out.push((i, name, dtype, shape));
        }
        out
    }

    /// Whether every external weight has its bytes.
    pub fn missing_weights(&self) -> Vec<String> {
        self.external_weights().into_iter().filter(|(i, ..)| self.external.get(*i).is_none_or(|b| b.is_none())).map(|(_, n, ..)| n).collect()
    }

    /// This artifact with its external weights taken from `source`.
    pub fn with_weights(&self, source: &WeightSource) -> Result<Artifact, RuntimeError> {
        let m = self.manifest();
        let mut external: Vec<Option<AlignedBytes>> = (0..m.sections.len()).map(|_| None).collect();
        let file = match source {
            WeightSource::Safetensors(p) => Some(crate::weights::SafetensorsFile::open(p)?),
            WeightSource::Random { .. } => None,
        };
        for (i, name, dtype, shape) in self.external_weights() {
            let want = m.sections[i].size as usize;
            let bytes = match (source, &file) {
                (_, Some(f)) => f.tensor(&name, dtype, &shape)?,
                (WeightSource::Random { seed }, None) => crate::weights::random_bytes(dtype, want / dtype.size_bytes().max(1), *seed, &name),
                _ => unreachable!("a safetensors source opened its file"),
            };
            if bytes.len() != want {
                return Err(RuntimeError::Missing { what: format!("{want} bytes for weight '{name}' (got {})", bytes.len()) });
            }
            external[i] = Some(bytes);
        }
        Ok(Artifact { external: Arc::new(external), ..self.clone() })
    }

    fn validate(storage: Storage, origin: String) -> Result<Artifact, RuntimeError> {
        let bad = |why: String| RuntimeError::Corrupt { origin: origin.clone(), why };
        let bytes: &[u8] = match &storage {
            Storage::Mapped(m) => m,
            Storage::Owned(b) => b.as_slice(),
        };
        if bytes.len() < HEADER_SIZE || bytes[0..8] != MAGIC {
            return Err(RuntimeError::NotAnArtifact { origin });
        }
        let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap());
        let version = u32_at(8);
        if version != FORMAT_VERSION {
            return Err(RuntimeError::FormatVersion { origin, found: version, expected: FORMAT_VERSION });
        }
        let file_len = u64_at(40);
        if file_len != bytes.len() as u64 {
            return Err(bad(format!("the header records {file_len} bytes but the file has {} (truncated or appended to)", bytes.len())));
        }
        let (moff, mlen) = (u64_at(16), u64_at(24));
        let end = moff.checked_add(mlen).filter(|e| *e <= file_len).ok_or_else(|| bad("manifest lies outside the file".into()))?;
        let json = &bytes[moff as usize..end as usize];
        if crc32fast::hash(json) != u32_at(32) {
            return Err(bad("manifest checksum mismatch".into()));
        }
        let manifest: Manifest = serde_json::from_slice(json).map_err(|e| bad(format!("manifest does not parse: {e}")))?;
        for s in manifest.sections.iter().filter(|s| s.kind != SectionKind::External) {
            let end = s.offset.checked_add(s.size).filter(|e| *e <= moff).ok_or_else(|| bad(format!("section '{}' lies outside the file", s.name)))?;
            if s.offset % SECTION_ALIGN != 0 {
                return Err(bad(format!("section '{}' is not {SECTION_ALIGN}-byte aligned", s.name)));
            }
            if crc32fast::hash(&bytes[s.offset as usize..end as usize]) != s.crc32 {
                return Err(bad(format!("section '{}' checksum mismatch", s.name)));
            }
        }
        Ok(Artifact { storage: Arc::new(storage), manifest: Arc::new(manifest), origin, external: Arc::new(Vec::new()) })
    }

    /// Checks the manifest's internal references (buffer kinds, bindings) so the executor
    /// can index without panicking.
    pub(crate) fn check_program(&self) -> Result<(), RuntimeError> {
        let bad = |why: String| RuntimeError::Corrupt { origin: self.origin.clone(), why };
        let m = &self.manifest;
        for e in &m.entries {
            for (i, b) in e.buffers.iter().enumerate() {
                match b.kind {
                    BufferKind::Input(k) if k >= e.inputs.len() => return Err(bad(format!("entry '{}' buffer {i} names input {k}", e.name))),
                    BufferKind::Weight(s) if s >= m.sections.len() || !matches!(m.sections[s].kind, SectionKind::Weight | SectionKind::External) => {
                        return Err(bad(format!("entry '{}' buffer {i} names section {s}, which is not a weight", e.name)))
                    }
                    BufferKind::Alias(a) if a >= i => return Err(bad(format!("entry '{}' buffer {i} aliases a later buffer", e.name))),
                    _ => {}
                }
            }
            let nb = e.buffers.len();
            if e.output_buffers.len() != e.outputs.len() || e.output_buffers.iter().any(|b| *b >= nb) {
                return Err(bad(format!("entry '{}' has inconsistent outputs", e.name)));
            }
            if e.dispatches.iter().any(|d| d.all_bindings().any(|b| b >= nb)) {
                return Err(bad(format!("entry '{}' binds a buffer that does not exist", e.name)));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{AlignedBytes, HUGE_PAGE_MIN};

    /// Small buffers live on the heap, large ones in huge-page mappings (where the kernel
    /// has transparent huge pages); both are zeroed, 64-byte aligned, hold copies, keep
    /// their capacity across `set_len`, and buffers for overwriting have the length asked.
    #[test]
    fn aligned_bytes_small_and_huge() {
        for len in [0, 1, 100, HUGE_PAGE_MIN - 1, HUGE_PAGE_MIN, 3 * HUGE_PAGE_MIN + 5] {
            let z = AlignedBytes::zeroed(len);
            assert_eq!(z.len(), len);
            assert!(z.capacity() >= len);
            assert_eq!(z.as_slice().as_ptr() as usize % 64, 0);
            assert!(z.as_slice().iter().all(|&b| b == 0), "len {len}");
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let mut c = AlignedBytes::from_slice(&data);
            assert_eq!(c.as_slice(), &data[..]);
            c.as_mut_slice().iter_mut().for_each(|b| *b = b.wrapping_add(1));
            assert!(c.as_slice().iter().zip(&data).all(|(a, b)| *a == b.wrapping_add(1)));
            let cap = c.capacity();
            c.set_len(len / 2);
            assert_eq!((c.len(), c.capacity()), (len / 2, cap));
            let o = AlignedBytes::for_overwrite(len);
            assert_eq!(o.len(), len);
            assert!(o.capacity() >= len && o.capacity() - len <= len / 4 + 63, "len {len}");
        }
        // A freed huge-page buffer comes back for a result of its size.
        if super::huge_pages_available() {
            let len = 3 * HUGE_PAGE_MIN + 4096;
            let first = AlignedBytes::for_overwrite(len);
            let ptr = first.as_slice().as_ptr();
            drop(first);
            assert_eq!(AlignedBytes::for_overwrite(len - 4096).as_slice().as_ptr(), ptr);
        }
    }

    /// A freed buffer is reused for the smallest fit within a quarter more than asked.
    #[test]
    fn recycled_buffer_fit() {
        let m = 1 << 20;
        assert_eq!(super::recycle_fit([8 * m, 4 * m, 5 * m].into_iter(), 4 * m), Some(1));
        assert_eq!(super::recycle_fit([8 * m, 5 * m].into_iter(), 4 * m), Some(1));
        assert_eq!(super::recycle_fit([8 * m, 3 * m].into_iter(), 4 * m), None);
        assert_eq!(super::recycle_fit(std::iter::empty(), 4 * m), None);
    }
}
