//! `max-cuda-emu`: a stand-in for NVIDIA's driver library (`libcuda.so`) that runs PTX on
//! the CPU, so the whole GPU path (a GPU artifact's host code, the runtime's CUDA executor,
//! the PTX our compiler writes) is tested on machines without a GPU.
//!
//! It exports the driver API entry points the runtime calls (through cudarc's dynamic
//! loading) and implements them over host memory: device allocations are host allocations
//! (a device pointer is the host address), copies are `memcpy`, a kernel launch runs the
//! kernel in the PTX interpreter ([`exec`]) before the call returns, events record wall
//! time, and stream capture records launches and copies into a graph that a graph launch
//! replays. The device reports itself as compute capability 9.0 (`MAX_CUDA_EMU_SM=80`
//! picks another); `MAX_CUDA_EMU_TRACE=1` prints each launch, `MAX_CUDA_EMU_PROFILE=1`
//! what each launch did (warp instructions, its longest block's, global bytes read and
//! written: a measure of work, not of time).
//!
//! What it does not model: concurrency between blocks (they run one after another, so a
//! race between blocks cannot show), timing, and the GPU's exact rounding of tensor-core
//! sums and approximate math (`ex2.approx` and the like are exact here). It is for
//! correctness, not speed: a kernel runs some 10^5 times slower than on a GPU.
//!
//! `scripts/cuda-emu.sh` builds it and links it as `libcuda.so` in a folder that
//! `LD_LIBRARY_PATH` then names, for one command or test run.

pub mod exec;
pub mod ptx;
mod tensor_core;

use std::alloc::Layout;
use std::collections::HashSet;
use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// `CUresult` codes this library returns.
mod status {
    pub const SUCCESS: u32 = 0;
    pub const INVALID_VALUE: u32 = 1;
    pub const OUT_OF_MEMORY: u32 = 2;
    pub const INVALID_DEVICE: u32 = 101;
    pub const NO_BINARY_FOR_GPU: u32 = 209;
    pub const INVALID_PTX: u32 = 218;
    pub const INVALID_HANDLE: u32 = 400;
    pub const NOT_FOUND: u32 = 500;
    pub const ILLEGAL_ADDRESS: u32 = 700;
    pub const LAUNCH_FAILED: u32 = 719;
    pub const NOT_SUPPORTED: u32 = 801;
}

type CuResult = u32;
type DevPtr = u64;

const ALIGN: usize = 256;

/// Work a graph replays.
#[derive(Clone)]
enum Node {
    Launch { kernel: Arc<ptx::Kernel>, grid: [u32; 3], block: [u32; 3], smem: usize, params: Vec<u8>, programmatic: bool },
    /// A copy; `*_device` says which sides are device memory (checked again when a graph
    /// replays it: the buffer may have been freed since the capture).
    Copy { dst: u64, dst_device: bool, src: u64, src_device: bool, bytes: usize },
    Set { dst: u64, value: u32, width: usize, count: usize },
}

/// A captured graph and the allocations made while capturing it (they live as long as it).
struct Graph {
    nodes: Vec<Node>,
    owned: Vec<u64>,
}

#[derive(Default)]
struct Device {
    /// Live allocations (each `[address, address + size)`, allocated with [`ALIGN`]).
    mem: exec::Memory,
    /// The graph being captured, if any.
    capture: Option<Graph>,
}

static DEVICE: Mutex<Option<Device>> = Mutex::new(None);

fn device() -> MutexGuard<'static, Option<Device>> {
    let mut d = DEVICE.lock().unwrap_or_else(|p| p.into_inner());
    if d.is_none() {
        *d = Some(Device::default());
    }
    d
}

fn with_device<T>(f: impl FnOnce(&mut Device) -> T) -> T {
    let mut g = device();
    f(g.as_mut().expect("initialized by device()"))
}

impl Device {
    fn valid(&self, addr: u64, bytes: usize) -> bool {
        self.mem.contains(addr, bytes as u64)
    }

    fn alloc(&mut self, bytes: usize) -> Option<u64> {
        let layout = Layout::from_size_align(bytes.max(1), ALIGN).ok()?;
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { std::alloc::alloc_zeroed(layout) };
        if p.is_null() {
            return None;
        }
        self.mem.insert(p as u64, p as u64 + layout.size() as u64);
        Some(p as u64)
    }

    fn free(&mut self, addr: u64) -> bool {
        let Some(end) = self.mem.remove(addr) else { return false };
        let layout = Layout::from_size_align((end - addr) as usize, ALIGN).expect("made by alloc");
        // SAFETY: `addr` was returned by `alloc` with this layout and is freed once.
        unsafe { std::alloc::dealloc(addr as *mut u8, layout) };
        true
    }

    fn run(&mut self, node: &Node) -> CuResult {
        match node {
            Node::Launch { kernel, grid, block, smem, params, programmatic } => {
                if !programmatic {
                    // It starts once everything before it on the stream has finished.
                    self.settle();
                }
                let l = exec::Launch { kernel, grid: *grid, block: *block, dyn_shared: *smem, params, mem: &self.mem, programmatic: *programmatic };
                match exec::run(&l) {
                    Ok(c) => {
                        if profile() {
                            eprintln!(
                                "cuda-emu: profile {} blocks {} warp-insts {} max-block-insts {} global-read {} global-written {}",
                                kernel.name,
                                grid[0] as u64 * grid[1] as u64 * grid[2] as u64,
                                c.warp_insts,
                                c.max_block_insts,
                                c.global_read,
                                c.global_written
                            );
                        }
                        status::SUCCESS
                    }
                    Err(f) => {
                        eprintln!("cuda-emu: {f}");
                        if f.msg.contains("outside every device allocation") {
                            status::ILLEGAL_ADDRESS
                        } else {
                            status::LAUNCH_FAILED
                        }
                    }
                }
            }
            Node::Copy { dst, dst_device, src, src_device, bytes } => {
                self.settle();
                if (*dst_device && !self.valid(*dst, *bytes)) || (*src_device && !self.valid(*src, *bytes)) {
                    eprintln!("cuda-emu: a copy of {bytes} bytes from {src:#x} to {dst:#x} leaves device memory");
                    return status::INVALID_VALUE;
                }
                // SAFETY: the device ranges lie in live allocations (checked just above); host
                // ranges are the caller's promise, as with the real driver.
                unsafe { std::ptr::copy(*src as *const u8, *dst as *mut u8, *bytes) };
                status::SUCCESS
            }
            Node::Set { dst, width, count, .. } if !self.valid(*dst, width * count) => {
                eprintln!("cuda-emu: a memset of {count} x {width} bytes at {dst:#x} leaves device memory");
                status::INVALID_VALUE
            }
            Node::Set { dst, value, width, count } => {
                self.settle();
                for i in 0..*count {
                    let p = (*dst as usize + i * width) as *mut u8;
                    // SAFETY: the range lies in a live allocation (the arm above checks it).
                    unsafe {
                        if *width == 4 {
                            std::ptr::write_unaligned(p as *mut u32, *value);
                        } else {
                            std::ptr::write_unaligned(p as *mut u16, *value as u16);
                        }
                    }
                }
                status::SUCCESS
            }
        }
    }

    /// Forgets which allocations running kernels may be writing: the stream has finished
    /// them (a host synchronization, or a copy or fill, which a kernel after it waits for
    /// however it was launched).
    fn settle(&mut self) {
        self.mem.in_flight_writes.borrow_mut().clear();
    }

    /// Runs `node` now, or records it while a capture is on.
    fn submit(&mut self, node: Node) -> CuResult {
        if let Some(g) = self.capture.as_mut() {
            g.nodes.push(node);
            return status::SUCCESS;
        }
        self.run(&node)
    }
}

/// `MAX_CUDA_EMU_TRACE=1`: print every kernel launch (name, grid, block, shared memory).
fn trace() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var("MAX_CUDA_EMU_TRACE").is_ok_and(|v| !v.is_empty() && v != "0"))
}

/// `MAX_CUDA_EMU_PROFILE=1`: print what each launch did ([`exec::Counts`]) when it ends.
fn profile() -> bool {
    static PROFILE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PROFILE.get_or_init(|| std::env::var("MAX_CUDA_EMU_PROFILE").is_ok_and(|v| !v.is_empty() && v != "0"))
}

/// The compute capability reported (`MAX_CUDA_EMU_SM`, read once; 9.0 by default).
fn emulated_sm() -> (i32, i32) {
    static SM: std::sync::OnceLock<(i32, i32)> = std::sync::OnceLock::new();
    *SM.get_or_init(|| {
        let v = std::env::var("MAX_CUDA_EMU_SM").unwrap_or_default();
        match v.trim().trim_start_matches("sm_").parse::<i32>() {
            Ok(n) if n >= 50 => (n / 10, n % 10),
            _ => (9, 0),
        }
    })
}

// ---- The driver API. Handles are boxed Rust values; device pointers are host addresses.

#[no_mangle]
pub extern "C" fn cuInit(_flags: c_uint) -> CuResult {
    status::SUCCESS
}

/// # Safety
/// `count` must be a valid pointer.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetCount(count: *mut c_int) -> CuResult {
    // SAFETY: the caller passes a writable int.
    unsafe { *count = 1 };
    status::SUCCESS
}

/// # Safety
/// `dev` must be a valid pointer.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceGet(dev: *mut c_int, ordinal: c_int) -> CuResult {
    if ordinal != 0 {
        return status::INVALID_DEVICE;
    }
    // SAFETY: the caller passes a writable int.
    unsafe { *dev = 0 };
    status::SUCCESS
}

/// # Safety
/// `ctx` must be a valid pointer.
#[no_mangle]
pub unsafe extern "C" fn cuDevicePrimaryCtxRetain(ctx: *mut *mut c_void, _dev: c_int) -> CuResult {
    // SAFETY: the caller passes a writable handle; the context is a dummy, never read.
    unsafe { *ctx = std::ptr::dangling_mut::<c_void>() };
    status::SUCCESS
}

#[no_mangle]
pub extern "C" fn cuCtxSetCurrent(_ctx: *mut c_void) -> CuResult {
    status::SUCCESS
}

/// # Safety
/// `stream` must be a valid pointer.
#[no_mangle]
pub unsafe extern "C" fn cuStreamCreate(stream: *mut *mut c_void, _flags: c_uint) -> CuResult {
    // SAFETY: the caller passes a writable handle; there is one (dummy) stream.
    unsafe { *stream = std::ptr::dangling_mut::<c_void>() };
    status::SUCCESS
}

#[no_mangle]
pub extern "C" fn cuStreamSynchronize(_stream: *mut c_void) -> CuResult {
    with_device(|d| d.settle());
    status::SUCCESS
}

#[no_mangle]
pub extern "C" fn cuStreamWaitEvent(_stream: *mut c_void, _event: *mut c_void, _flags: c_uint) -> CuResult {
    status::SUCCESS
}

/// # Safety
/// `name` must point at `len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetName(name: *mut c_char, len: c_int, _dev: c_int) -> CuResult {
    let (major, minor) = emulated_sm();
    let s = format!("max-cuda-emu (PTX interpreter on the CPU, sm_{major}{minor})\0");
    let n = s.len().min(len.max(0) as usize);
    if n == 0 {
        return status::INVALID_VALUE;
    }
    // SAFETY: the caller gives `len` bytes; the copy is at most that and NUL-terminated.
    unsafe {
        std::ptr::copy_nonoverlapping(s.as_ptr() as *const c_char, name, n);
        *name.add(n - 1) = 0;
    }
    status::SUCCESS
}

/// # Safety
/// `value` must be a valid pointer.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetAttribute(value: *mut c_int, attr: c_uint, _dev: c_int) -> CuResult {
    let (major, minor) = emulated_sm();
    let v = match attr {
        1 => 1024,       // max threads per block
        8 => 48 * 1024,  // shared memory per block
        10 => 32,        // warp size
        16 => 132,       // multiprocessors
        75 => major,     // compute capability
        76 => minor,
        97 => 232_448,   // opt-in shared memory per block
        _ => 0,
    };
    // SAFETY: the caller passes a writable int.
    unsafe { *value = v };
    status::SUCCESS
}

/// # Safety
/// `out` must be a valid pointer.
#[no_mangle]
pub unsafe extern "C" fn cuGetErrorString(code: CuResult, out: *mut *const c_char) -> CuResult {
    let s: &'static CStr = match code {
        status::SUCCESS => c"no error",
        status::INVALID_VALUE => c"invalid argument",
        status::OUT_OF_MEMORY => c"out of memory",
        status::INVALID_DEVICE => c"invalid device ordinal",
        status::NO_BINARY_FOR_GPU => c"no kernel image is available for execution on the device (max-cuda-emu runs PTX only)",
        status::INVALID_PTX => c"a PTX JIT compilation failed (max-cuda-emu: unsupported or malformed PTX; see stderr)",
        status::INVALID_HANDLE => c"invalid resource handle",
        status::NOT_FOUND => c"named symbol not found",
        status::ILLEGAL_ADDRESS => c"an illegal memory access was encountered (max-cuda-emu: see stderr)",
        status::LAUNCH_FAILED => c"unspecified launch failure (max-cuda-emu: see stderr)",
        status::NOT_SUPPORTED => c"operation not supported (max-cuda-emu)",
        _ => c"unknown error",
    };
    // SAFETY: the caller passes a writable pointer; the string is static.
    unsafe { *out = s.as_ptr() };
    status::SUCCESS
}

/// # Safety
/// `event` must be a valid pointer.
#[no_mangle]
pub unsafe extern "C" fn cuEventCreate(event: *mut *mut c_void, _flags: c_uint) -> CuResult {
    // SAFETY: the caller passes a writable handle; it owns the box until cuEventDestroy.
    unsafe { *event = Box::into_raw(Box::new(Mutex::new(Instant::now()))) as *mut c_void };
    status::SUCCESS
}

/// # Safety
/// `event` must come from `cuEventCreate`.
#[no_mangle]
pub unsafe extern "C" fn cuEventDestroy_v2(event: *mut c_void) -> CuResult {
    if !event.is_null() {
        // SAFETY: created by cuEventCreate, destroyed once.
        drop(unsafe { Box::from_raw(event as *mut Mutex<Instant>) });
    }
    status::SUCCESS
}

/// # Safety
/// `event` must come from `cuEventCreate`.
#[no_mangle]
pub unsafe extern "C" fn cuEventRecord(event: *mut c_void, _stream: *mut c_void) -> CuResult {
    // SAFETY: a live event (work is synchronous, so now is when the stream reaches it).
    let e = unsafe { &*(event as *const Mutex<Instant>) };
    *e.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    status::SUCCESS
}

#[no_mangle]
pub extern "C" fn cuEventSynchronize(_event: *mut c_void) -> CuResult {
    with_device(|d| d.settle());
    status::SUCCESS
}

/// # Safety
/// `ms` must be valid; both events must come from `cuEventCreate`.
#[no_mangle]
pub unsafe extern "C" fn cuEventElapsedTime(ms: *mut f32, start: *mut c_void, end: *mut c_void) -> CuResult {
    // SAFETY: live events and a writable float.
    unsafe {
        let (s, e) = (&*(start as *const Mutex<Instant>), &*(end as *const Mutex<Instant>));
        let (s, e) = (*s.lock().unwrap_or_else(|p| p.into_inner()), *e.lock().unwrap_or_else(|p| p.into_inner()));
        *ms = e.saturating_duration_since(s).as_secs_f32() * 1e3;
    }
    status::SUCCESS
}

/// Dynamic shared memory each kernel (by function handle) has opted into above 48 KiB.
static SMEM_OPT_IN: Mutex<Vec<(usize, usize)>> = Mutex::new(Vec::new());

/// The most shared memory a block may have on the emulated chip (opting in).
fn max_shared() -> usize {
    match emulated_sm() {
        (9, 0) => 232_448,
        (8, 0) => 166_912,
        _ => 101_376,
    }
}

#[no_mangle]
pub extern "C" fn cuFuncSetAttribute(f: *mut c_void, attr: c_uint, value: c_int) -> CuResult {
    // CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
    if attr == 8 {
        if value < 0 || value as usize > max_shared() {
            return status::INVALID_VALUE;
        }
        let mut v = SMEM_OPT_IN.lock().unwrap_or_else(|p| p.into_inner());
        v.retain(|(k, _)| *k != f as usize);
        v.push((f as usize, value as usize));
    }
    status::SUCCESS
}

/// The default memory pool's release threshold (`CU_MEMPOOL_ATTR_RELEASE_THRESHOLD`): only
/// kept and reported here (memory is freed when freed), so that the runtime's setting can
/// be checked.
static POOL_RELEASE_THRESHOLD: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
const MEMPOOL_ATTR_RELEASE_THRESHOLD: c_uint = 4;

/// # Safety
/// `pool` must be a valid pointer.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetDefaultMemPool(pool: *mut *mut c_void, dev: c_int) -> CuResult {
    if dev != 0 {
        return status::INVALID_DEVICE;
    }
    // SAFETY: the caller passes a writable handle; the pool is a dummy, never read.
    unsafe { *pool = std::ptr::dangling_mut::<c_void>() };
    status::SUCCESS
}

/// # Safety
/// `value` must point to a 64-bit integer for the release threshold.
#[no_mangle]
pub unsafe extern "C" fn cuMemPoolSetAttribute(_pool: *mut c_void, attr: c_uint, value: *mut c_void) -> CuResult {
    if attr != MEMPOOL_ATTR_RELEASE_THRESHOLD {
        return status::INVALID_VALUE;
    }
    // SAFETY: the caller passes a readable u64 for this attribute.
    POOL_RELEASE_THRESHOLD.store(unsafe { *(value as *const u64) }, std::sync::atomic::Ordering::Relaxed);
    status::SUCCESS
}

/// # Safety
/// `value` must point to a writable 64-bit integer for the release threshold.
#[no_mangle]
pub unsafe extern "C" fn cuMemPoolGetAttribute(_pool: *mut c_void, attr: c_uint, value: *mut c_void) -> CuResult {
    if attr != MEMPOOL_ATTR_RELEASE_THRESHOLD {
        return status::INVALID_VALUE;
    }
    // SAFETY: the caller passes a writable u64 for this attribute.
    unsafe { *(value as *mut u64) = POOL_RELEASE_THRESHOLD.load(std::sync::atomic::Ordering::Relaxed) };
    status::SUCCESS
}

/// # Safety
/// `dptr` must be a valid pointer.
#[no_mangle]
pub unsafe extern "C" fn cuMemAllocAsync(dptr: *mut DevPtr, bytes: usize, _stream: *mut c_void) -> CuResult {
    let r = with_device(|d| {
        let a = d.alloc(bytes)?;
        if let Some(g) = d.capture.as_mut() {
            g.owned.push(a);
        }
        Some(a)
    });
    match r {
        Some(a) => {
            // SAFETY: the caller passes a writable device pointer.
            unsafe { *dptr = a };
            status::SUCCESS
        }
        None => status::OUT_OF_MEMORY,
    }
}

#[no_mangle]
pub extern "C" fn cuMemFreeAsync(dptr: DevPtr, _stream: *mut c_void) -> CuResult {
    with_device(|d| {
        // Memory of a capture lives as long as its graph (a replay reuses the addresses).
        if let Some(g) = d.capture.as_mut() {
            if !g.owned.contains(&dptr) {
                g.owned.push(dptr);
            }
            return status::SUCCESS;
        }
        if d.free(dptr) {
            status::SUCCESS
        } else {
            status::INVALID_VALUE
        }
    })
}

fn copy(dst: u64, dst_device: bool, src: u64, src_device: bool, bytes: usize) -> CuResult {
    if bytes == 0 {
        return status::SUCCESS;
    }
    with_device(|d| {
        if (dst_device && !d.valid(dst, bytes)) || (src_device && !d.valid(src, bytes)) {
            eprintln!("cuda-emu: a copy of {bytes} bytes from {src:#x} to {dst:#x} leaves device memory");
            return status::INVALID_VALUE;
        }
        d.submit(Node::Copy { dst, dst_device, src, src_device, bytes })
    })
}

#[no_mangle]
pub extern "C" fn cuMemcpyAsync(dst: DevPtr, src: DevPtr, bytes: usize, _stream: *mut c_void) -> CuResult {
    // Unified addressing: either side may be host or device memory; a side that starts in
    // a device allocation is device memory (and must then fit in it).
    let (dd, sd) = with_device(|d| (d.valid(dst, 1), d.valid(src, 1)));
    copy(dst, dd, src, sd, bytes)
}

#[no_mangle]
pub extern "C" fn cuMemcpyDtoDAsync_v2(dst: DevPtr, src: DevPtr, bytes: usize, _stream: *mut c_void) -> CuResult {
    copy(dst, true, src, true, bytes)
}

#[no_mangle]
pub extern "C" fn cuMemcpyDtoHAsync_v2(dst: *mut c_void, src: DevPtr, bytes: usize, _stream: *mut c_void) -> CuResult {
    copy(dst as u64, false, src, true, bytes)
}

#[no_mangle]
pub extern "C" fn cuMemcpyHtoDAsync_v2(dst: DevPtr, src: *const c_void, bytes: usize, _stream: *mut c_void) -> CuResult {
    copy(dst, true, src as u64, false, bytes)
}

fn memset(dst: DevPtr, value: u32, width: usize, count: usize) -> CuResult {
    with_device(|d| {
        if count > 0 && !d.valid(dst, count * width) {
            return status::INVALID_VALUE;
        }
        d.submit(Node::Set { dst, value, width, count })
    })
}

#[no_mangle]
pub extern "C" fn cuMemsetD32Async(dst: DevPtr, value: c_uint, count: usize, _stream: *mut c_void) -> CuResult {
    memset(dst, value, 4, count)
}

#[no_mangle]
pub extern "C" fn cuMemsetD16Async(dst: DevPtr, value: u16, count: usize, _stream: *mut c_void) -> CuResult {
    memset(dst, value as u32, 2, count)
}

/// # Safety
/// `module` must be valid; `image` a NUL-terminated PTX text or a cubin (an ELF image).
#[no_mangle]
pub unsafe extern "C" fn cuModuleLoadData(module: *mut *mut c_void, image: *const c_void) -> CuResult {
    if image.is_null() {
        return status::INVALID_VALUE;
    }
    // Machine code (SASS) cannot run here: refused as a driver refuses a cubin for another
    // chip, so the runtime's fallback to the PTX runs.
    // SAFETY: a cubin starts with the 4-byte ELF magic; PTX text shorter than that ends at a
    // NUL, where the comparison stops.
    if (0..4).all(|i| unsafe { *(image as *const u8).add(i) } == b"\x7fELF"[i]) {
        return status::NO_BINARY_FOR_GPU;
    }
    // SAFETY: the caller passes a NUL-terminated image (PTX is text).
    let text = unsafe { CStr::from_ptr(image as *const c_char) }.to_string_lossy();
    // PTX for a later chip, or for another chip's architecture-specific features (sm_90a's
    // wgmma), does not load, as with the real driver.
    if let Some(t) = text.lines().find_map(|l| l.trim().strip_prefix(".target ")) {
        let chip = t.split(',').next().unwrap_or("").trim().trim_start_matches("sm_");
        let (num, specific) = match chip.strip_suffix('a') {
            Some(n) => (n, true),
            None => (chip, false),
        };
        let (major, minor) = emulated_sm();
        let dev = major * 10 + minor;
        if let Ok(want) = num.parse::<i32>() {
            if want > dev || (specific && want != dev) {
                eprintln!("cuda-emu: a PTX module for sm_{chip} does not run on the emulated sm_{dev} (MAX_CUDA_EMU_SM)");
                return status::INVALID_PTX;
            }
        }
    }
    // Module variables (libdevice's constant tables) live in device memory for good.
    // A variable declared with less than 16-byte alignment sits off a 16-byte boundary
    // (as the loader may place it), so wider accesses than it declares fault here too.
    let mut alloc = |init: &[u8], align: usize| {
        with_device(|d| {
            let skew = if (1..16).contains(&align) { align } else { 0 };
            let a = d.alloc(init.len() + skew).map_or(0, |a| a + skew as u64);
            if a != 0 {
                // SAFETY: [a, a + init.len()) lies inside a fresh allocation of
                // init.len() + skew bytes that starts skew bytes before a.
                unsafe { std::ptr::copy_nonoverlapping(init.as_ptr(), a as *mut u8, init.len()) };
            }
            a
        })
    };
    match ptx::parse(&text, &mut alloc) {
        Ok(m) => {
            // SAFETY: the caller passes a writable handle; it owns the box until unload.
            unsafe { *module = Box::into_raw(Box::new(m)) as *mut c_void };
            status::SUCCESS
        }
        Err(e) => {
            let kernel_hint = text.lines().find(|l| l.contains(".entry")).unwrap_or("").trim();
            eprintln!("cuda-emu: cannot load a PTX module ({kernel_hint}): {e}");
            status::INVALID_PTX
        }
    }
}

/// # Safety
/// `module` must come from `cuModuleLoadData`.
#[no_mangle]
pub unsafe extern "C" fn cuModuleUnload(module: *mut c_void) -> CuResult {
    if !module.is_null() {
        // SAFETY: loaded by cuModuleLoadData, unloaded once. Function handles taken from it
        // hold their own reference to the kernel.
        drop(unsafe { Box::from_raw(module as *mut ptx::Module) });
    }
    status::SUCCESS
}

/// # Safety
/// `f` must be valid, `module` loaded, `name` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn cuModuleGetFunction(f: *mut *mut c_void, module: *mut c_void, name: *const c_char) -> CuResult {
    if module.is_null() || name.is_null() {
        return status::INVALID_HANDLE;
    }
    // SAFETY: a live module and a NUL-terminated name.
    let (m, name) = unsafe { (&*(module as *const ptx::Module), CStr::from_ptr(name).to_string_lossy()) };
    match m.kernels.get(name.as_ref()) {
        // The handle is a leaked reference to the kernel (function handles are never
        // released in the driver API).
        // SAFETY: the caller passes a writable handle.
        Some(k) => unsafe {
            *f = Arc::into_raw(k.clone()) as *mut c_void;
            status::SUCCESS
        },
        None => status::NOT_FOUND,
    }
}

/// # Safety
/// `f` must come from `cuModuleGetFunction`; `params` must point at one pointer per kernel
/// parameter, each at a value of that parameter's size.
#[no_mangle]
pub unsafe extern "C" fn cuLaunchKernel(
    f: *mut c_void,
    gx: c_uint,
    gy: c_uint,
    gz: c_uint,
    bx: c_uint,
    by: c_uint,
    bz: c_uint,
    smem: c_uint,
    _stream: *mut c_void,
    params: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> CuResult {
    // SAFETY: the caller's promises, passed on.
    unsafe { launch(f, [gx, gy, gz], [bx, by, bz], smem, params, extra, false) }
}

/// `CUlaunchConfig` (CUDA 12).
#[repr(C)]
pub struct LaunchConfig {
    pub grid: [c_uint; 3],
    pub block: [c_uint; 3],
    pub shared_bytes: c_uint,
    pub stream: *mut c_void,
    pub attrs: *const LaunchAttribute,
    pub num_attrs: c_uint,
}

/// `CUlaunchAttribute`: an id and a 64-byte value union.
#[repr(C)]
pub struct LaunchAttribute {
    pub id: c_uint,
    pub pad: [u8; 4],
    pub value: [u64; 8],
}

/// `CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION`; its value is an int.
const PROGRAMMATIC_STREAM_SERIALIZATION: c_uint = 6;

/// # Safety
/// `config` must point at a valid launch configuration whose `attrs` hold `num_attrs`
/// attributes; `f`, `params` and `extra` as for [`cuLaunchKernel`].
#[no_mangle]
pub unsafe extern "C" fn cuLaunchKernelEx(config: *const LaunchConfig, f: *mut c_void, params: *mut *mut c_void, extra: *mut *mut c_void) -> CuResult {
    if config.is_null() {
        return status::INVALID_VALUE;
    }
    // SAFETY: a valid configuration (the caller's promise).
    let c = unsafe { &*config };
    let mut programmatic = false;
    for i in 0..c.num_attrs as usize {
        // SAFETY: `attrs` holds `num_attrs` attributes.
        let a = unsafe { &*c.attrs.add(i) };
        match a.id {
            PROGRAMMATIC_STREAM_SERIALIZATION => programmatic = a.value[0] as u32 != 0,
            id => {
                eprintln!("cuda-emu: launch attribute {id} is not emulated");
                return status::NOT_SUPPORTED;
            }
        }
    }
    if programmatic && refuse_programmatic() {
        return status::NOT_SUPPORTED;
    }
    // SAFETY: the caller's promises, passed on.
    unsafe { launch(f, c.grid, c.block, c.shared_bytes, params, extra, programmatic) }
}

/// `MAX_CUDA_EMU_REFUSE_PDL=1`: refuse programmatic dependent launches, as a driver without
/// them would (the runtime then launches every kernel the ordinary way).
fn refuse_programmatic() -> bool {
    static REFUSE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *REFUSE.get_or_init(|| std::env::var("MAX_CUDA_EMU_REFUSE_PDL").is_ok_and(|v| !v.is_empty() && v != "0"))
}

/// A launch, run now or captured.
///
/// # Safety
/// As for [`cuLaunchKernel`].
unsafe fn launch(f: *mut c_void, [gx, gy, gz]: [c_uint; 3], [bx, by, bz]: [c_uint; 3], smem: c_uint, params: *mut *mut c_void, extra: *mut *mut c_void, programmatic: bool) -> CuResult {
    if f.is_null() {
        return status::INVALID_HANDLE;
    }
    if !extra.is_null() {
        return status::NOT_SUPPORTED;
    }
    // SAFETY: `f` is a leaked Arc from cuModuleGetFunction; we take a new reference.
    let kernel = unsafe {
        Arc::increment_strong_count(f as *const ptx::Kernel);
        Arc::from_raw(f as *const ptx::Kernel)
    };
    // As on a GPU: more than 48 KiB of dynamic shared memory needs the kernel's opt-in, and
    // static plus dynamic must fit the chip.
    let allowed = SMEM_OPT_IN.lock().unwrap_or_else(|p| p.into_inner()).iter().find(|(k, _)| *k == f as usize).map_or(48 * 1024, |(_, v)| *v);
    if smem as usize > allowed.max(48 * 1024) || kernel.dyn_shared_offset + smem as usize > max_shared() {
        eprintln!("cuda-emu: kernel {} launched with {smem} bytes of dynamic shared memory (opted into {allowed}; {} static; the chip has {})", kernel.name, kernel.dyn_shared_offset, max_shared());
        return status::INVALID_VALUE;
    }
    let size = kernel.params.iter().map(|p| p.offset + p.size).max().unwrap_or(0);
    let mut buf = vec![0u8; size];
    for (i, p) in kernel.params.iter().enumerate() {
        if params.is_null() {
            return status::INVALID_VALUE;
        }
        // SAFETY: the caller passes one pointer per parameter, each at `p.size` bytes.
        unsafe {
            let src = *params.add(i) as *const u8;
            std::ptr::copy_nonoverlapping(src, buf.as_mut_ptr().add(p.offset), p.size);
        }
    }
    if trace() {
        let how = if programmatic { " (programmatic dependent)" } else { "" };
        eprintln!("cuda-emu: launch {} grid ({gx}, {gy}, {gz}) block ({bx}, {by}, {bz}) shared {smem} B{how}", kernel.name);
    }
    let node = Node::Launch { kernel, grid: [gx, gy, gz], block: [bx, by, bz], smem: smem as usize, params: buf, programmatic };
    with_device(|d| d.submit(node))
}

#[no_mangle]
pub extern "C" fn cuStreamBeginCapture_v2(_stream: *mut c_void, _mode: c_uint) -> CuResult {
    with_device(|d| {
        if d.capture.is_some() {
            return status::INVALID_VALUE;
        }
        d.capture = Some(Graph { nodes: Vec::new(), owned: Vec::new() });
        status::SUCCESS
    })
}

/// # Safety
/// `graph` must be a valid pointer.
#[no_mangle]
pub unsafe extern "C" fn cuStreamEndCapture(_stream: *mut c_void, graph: *mut *mut c_void) -> CuResult {
    match with_device(|d| d.capture.take()) {
        Some(g) => {
            // SAFETY: the caller passes a writable handle; it owns the graph until destroy.
            unsafe { *graph = Arc::into_raw(Arc::new(Mutex::new(g))) as *mut c_void };
            status::SUCCESS
        }
        None => status::INVALID_VALUE,
    }
}

type GraphRef = Mutex<Graph>;

/// # Safety
/// `exec` must be valid; `graph` must come from `cuStreamEndCapture`.
#[no_mangle]
pub unsafe extern "C" fn cuGraphInstantiateWithFlags(exec: *mut *mut c_void, graph: *mut c_void, _flags: u64) -> CuResult {
    if graph.is_null() {
        return status::INVALID_HANDLE;
    }
    // SAFETY: a live graph; the executable graph shares it (and its allocations).
    unsafe {
        Arc::increment_strong_count(graph as *const GraphRef);
        *exec = graph;
    }
    status::SUCCESS
}

/// # Safety
/// `exec` must come from `cuGraphInstantiateWithFlags`.
#[no_mangle]
pub unsafe extern "C" fn cuGraphLaunch(exec: *mut c_void, _stream: *mut c_void) -> CuResult {
    // SAFETY: a live executable graph.
    let g = unsafe { &*(exec as *const GraphRef) }.lock().unwrap_or_else(|p| p.into_inner());
    // The graph's first kernel has no programmatic edge to work outside the graph.
    with_device(|d| if d.capture.is_none() { d.settle() });
    for n in &g.nodes {
        let r = with_device(|d| if d.capture.is_some() { d.submit(n.clone()) } else { d.run(n) });
        if r != status::SUCCESS {
            return r;
        }
    }
    status::SUCCESS
}

/// Drops one reference to a graph; the last one frees its allocations.
///
/// # Safety
/// `graph` must be a live graph reference.
unsafe fn release_graph(graph: *mut c_void) {
    if graph.is_null() {
        return;
    }
    // SAFETY: one reference of the caller's, given up here.
    let g = unsafe { Arc::from_raw(graph as *const GraphRef) };
    if let Ok(m) = Arc::try_unwrap(g) {
        let g = m.into_inner().unwrap_or_else(|p| p.into_inner());
        let owned: HashSet<u64> = g.owned.into_iter().collect();
        with_device(|d| {
            for a in owned {
                d.free(a);
            }
        });
    }
}

/// # Safety
/// `graph` must come from `cuStreamEndCapture`, destroyed once.
#[no_mangle]
pub unsafe extern "C" fn cuGraphDestroy(graph: *mut c_void) -> CuResult {
    // SAFETY: as documented.
    unsafe { release_graph(graph) };
    status::SUCCESS
}

/// # Safety
/// `exec` must come from `cuGraphInstantiateWithFlags`, destroyed once.
#[no_mangle]
pub unsafe extern "C" fn cuGraphExecDestroy(exec: *mut c_void) -> CuResult {
    // SAFETY: as documented.
    unsafe { release_graph(exec) };
    status::SUCCESS
}
