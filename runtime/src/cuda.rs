//! The CUDA executor's device layer (feature `cuda`): the driver API through cudarc, loaded
//! at run time, so a build without CUDA installed still runs everything on the CPU.
//!
//! A GPU artifact's kernel library is host code (see `max_compiler::gpu`): each dispatch
//! computes its grid and launches PTX kernels through MLIR's GPU runtime ABI
//! (`mgpuLaunchKernel`, `mgpuMemAlloc`, ...). This module implements that ABI over the
//! driver and hands the library a table of it ([`GPU_API`] order). Every call goes to the
//! stream of the model executing on this thread; allocations are stream-ordered
//! (`cuMemAllocAsync`), so the driver's memory pool serves temporaries without
//! synchronizing. Kernel modules are loaded once per model: from the SASS the compiler
//! assembled for the device's chip when the artifact has it ([`crate::gpu_image`]), else
//! from PTX, which the driver compiles (and caches across processes).

use crate::error::RuntimeError;
use cudarc::driver::sys;
use std::cell::Cell;
use std::ffi::{c_char, c_void, CStr};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, LazyLock, Mutex};

pub use crate::artifact::GPU_API;

fn check(r: sys::CUresult, what: &str) -> Result<(), RuntimeError> {
    if r == sys::CUresult::CUDA_SUCCESS {
        return Ok(());
    }
    let mut s: *const c_char = std::ptr::null();
    // SAFETY: cuGetErrorString writes a pointer to a static string (or leaves it null).
    let msg = unsafe {
        sys::cuGetErrorString(r, &mut s);
        if s.is_null() {
            format!("{r:?}")
        } else {
            CStr::from_ptr(s).to_string_lossy().into_owned()
        }
    };
    Err(RuntimeError::Cuda(format!("{what}: {msg}")))
}

/// An NVIDIA GPU with its primary context and one stream.
pub struct CudaDevice {
    ordinal: usize,
    ctx: sys::CUcontext,
    stream: sys::CUstream,
    /// Held by each use of the stream (see [`CudaDevice::exclusive`]).
    stream_lock: Mutex<()>,
    /// Name and compute capability (major, minor).
    pub name: String,
    pub compute_capability: (i32, i32),
}

// SAFETY: the context and stream handles are plain driver handles, usable from any thread
// once the context is made current there (every entry point does so).
unsafe impl Send for CudaDevice {}
unsafe impl Sync for CudaDevice {}

impl std::fmt::Debug for CudaDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "gpu:{} ({}, sm_{}{})", self.ordinal, self.name, self.compute_capability.0, self.compute_capability.1)
    }
}

impl CudaDevice {
    /// GPU `ordinal`, opened once per process and shared by the models loaded on it.
    pub fn open(ordinal: usize) -> Result<Arc<CudaDevice>, RuntimeError> {
        static OPEN: Mutex<Vec<Arc<CudaDevice>>> = Mutex::new(Vec::new());
        let mut open = OPEN.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = open.iter().find(|d| d.ordinal == ordinal) {
            return Ok(d.clone());
        }
        let d = Self::open_new(ordinal)?;
        open.push(d.clone());
        Ok(d)
    }

    /// Loads the driver, retains GPU `ordinal`'s primary context, creates a stream.
    fn open_new(ordinal: usize) -> Result<Arc<CudaDevice>, RuntimeError> {
        // SAFETY: only probes for the library; no symbol is called if it is absent.
        if !unsafe { sys::is_culib_present() } {
            return Err(RuntimeError::Device(format!("device gpu:{ordinal} is not available: no CUDA driver (libcuda.so) was found")));
        }
        // SAFETY: plain driver calls with out-pointers to locals; results are checked.
        unsafe {
            check(sys::cuInit(0), "cuInit")?;
            let mut count = 0;
            check(sys::cuDeviceGetCount(&mut count), "cuDeviceGetCount")?;
            if ordinal >= count.max(0) as usize {
                return Err(RuntimeError::Device(format!("device gpu:{ordinal} is not available: this machine has {count} CUDA device(s)")));
            }
            let mut dev = 0;
            check(sys::cuDeviceGet(&mut dev, ordinal as i32), "cuDeviceGet")?;
            let mut ctx = std::ptr::null_mut();
            check(sys::cuDevicePrimaryCtxRetain(&mut ctx, dev), "cuDevicePrimaryCtxRetain")?;
            check(sys::cuCtxSetCurrent(ctx), "cuCtxSetCurrent")?;
            keep_freed_memory(dev, ordinal);
            let mut stream = std::ptr::null_mut();
            check(sys::cuStreamCreate(&mut stream, sys::CUstream_flags::CU_STREAM_NON_BLOCKING as u32), "cuStreamCreate")?;
            let mut name = [0 as c_char; 256];
            check(sys::cuDeviceGetName(name.as_mut_ptr(), 256, dev), "cuDeviceGetName")?;
            let (mut major, mut minor) = (0, 0);
            check(sys::cuDeviceGetAttribute(&mut major, sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev), "compute capability")?;
            check(sys::cuDeviceGetAttribute(&mut minor, sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev), "compute capability")?;
            Ok(Arc::new(CudaDevice {
                ordinal,
                ctx,
                stream,
                stream_lock: Mutex::new(()),
                name: CStr::from_ptr(name.as_ptr()).to_string_lossy().into_owned(),
                compute_capability: (major, minor),
            }))
        }
    }

    /// The device's stream for this thread until the guard drops. The models on a device
    /// share its one stream, and a CUDA graph capture takes in whatever is queued on a
    /// stream while it is open, from any thread: another model's launches, copies and frees
    /// would be recorded instead of run. So every use of the stream holds this, a capture
    /// from its start to its end; a thread already holding it takes it again at no cost.
    fn exclusive(&self) -> StreamGuard<'_> {
        if STREAMS_HELD.with(|h| h.borrow().contains(&self.ordinal)) {
            return StreamGuard { lock: None, ordinal: self.ordinal };
        }
        let lock = self.stream_lock.lock().unwrap_or_else(|p| p.into_inner());
        STREAMS_HELD.with(|h| h.borrow_mut().push(self.ordinal));
        StreamGuard { lock: Some(lock), ordinal: self.ordinal }
    }

    /// How much freed memory the device's default memory pool keeps for later
    /// `cuMemAllocAsync` calls instead of unmapping it at a synchronization
    /// ([`pool_keep_bytes`]).
    pub fn pool_release_threshold(&self) -> Result<u64, RuntimeError> {
        self.bind()?;
        let mut dev = 0;
        let mut pool = std::ptr::null_mut();
        let mut keep: u64 = 0;
        // SAFETY: out-pointers to locals; the attribute is a 64-bit integer.
        unsafe {
            check(sys::cuDeviceGet(&mut dev, self.ordinal as i32), "cuDeviceGet")?;
            check(sys::cuDeviceGetDefaultMemPool(&mut pool, dev), "cuDeviceGetDefaultMemPool")?;
            check(
                sys::cuMemPoolGetAttribute(pool, sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, &mut keep as *mut u64 as *mut c_void),
                "reading the memory pool's release threshold",
            )?;
        }
        Ok(keep)
    }

    /// Makes this device's context current on the calling thread.
    pub fn bind(&self) -> Result<(), RuntimeError> {
        // SAFETY: the context is retained for the device's lifetime.
        check(unsafe { sys::cuCtxSetCurrent(self.ctx) }, "cuCtxSetCurrent")
    }

    /// A device buffer of `bytes` (stream-ordered; contents undefined).
    pub fn alloc(self: &Arc<Self>, bytes: usize) -> Result<DeviceBuffer, RuntimeError> {
        let _stream = self.exclusive();
        let mut ptr: sys::CUdeviceptr = 0;
        if bytes > 0 {
            // SAFETY: out-pointer to a local; the stream belongs to this device.
            check(unsafe { sys::cuMemAllocAsync(&mut ptr, bytes, self.stream) }, &format!("allocating {bytes} bytes of device memory"))?;
        }
        Ok(DeviceBuffer { ptr, bytes, dev: self.clone() })
    }

    /// Copies `host` into a new device buffer.
    pub fn upload(self: &Arc<Self>, host: &[u8]) -> Result<DeviceBuffer, RuntimeError> {
        let b = self.alloc(host.len())?;
        self.copy_in(&b, host)?;
        Ok(b)
    }

    /// Copies `host` into the start of `dst`.
    pub fn copy_in(&self, dst: &DeviceBuffer, host: &[u8]) -> Result<(), RuntimeError> {
        let _stream = self.exclusive();
        if host.is_empty() {
            return Ok(());
        }
        assert!(host.len() <= dst.bytes, "copy past the end of a device buffer");
        // SAFETY: `dst` holds at least host.len() bytes; the copy completes before the
        // host slice can go away because the stream is synchronized (pageable memory).
        check(unsafe { sys::cuMemcpyHtoDAsync_v2(dst.ptr, host.as_ptr() as *const c_void, host.len(), self.stream) }, "copying to the device")?;
        self.sync()
    }

    /// Copies the first `out.len()` bytes at device address `src` into `out` (waits for the
    /// stream first).
    pub fn copy_out(&self, src: sys::CUdeviceptr, out: &mut [u8]) -> Result<(), RuntimeError> {
        let _stream = self.exclusive();
        if out.is_empty() {
            return Ok(());
        }
        // SAFETY: the caller passes an address of a live buffer of at least out.len() bytes.
        check(unsafe { sys::cuMemcpyDtoHAsync_v2(out.as_mut_ptr() as *mut c_void, src, out.len(), self.stream) }, "copying from the device")?;
        self.sync()
    }

    /// Waits for everything queued on the stream.
    pub fn sync(&self) -> Result<(), RuntimeError> {
        let _stream = self.exclusive();
        // SAFETY: the stream is live for the device's lifetime.
        check(unsafe { sys::cuStreamSynchronize(self.stream) }, "running GPU kernels")
    }

    /// Runs `f` like [`CudaDevice::with_stream`] and measures the device time of the work it
    /// queued (CUDA events; waits for that work).
    pub fn timed<T>(&self, f: impl FnOnce() -> T) -> Result<(T, std::time::Duration), RuntimeError> {
        let _stream = self.exclusive();
        self.bind()?;
        let (mut start, mut end) = (std::ptr::null_mut(), std::ptr::null_mut());
        // SAFETY: events are created, recorded on this device's stream, read and destroyed here.
        unsafe {
            check(sys::cuEventCreate(&mut start, 0), "creating a timing event")?;
            check(sys::cuEventCreate(&mut end, 0), "creating a timing event")?;
            check(sys::cuEventRecord(start, self.stream), "recording a timing event")?;
        }
        let r = self.with_stream(f);
        let mut ms = 0f32;
        // SAFETY: as above.
        let timing = unsafe {
            check(sys::cuEventRecord(end, self.stream), "recording a timing event")
                .and_then(|_| check(sys::cuEventSynchronize(end), "running GPU kernels"))
                .and_then(|_| check(sys::cuEventElapsedTime(&mut ms, start, end), "reading a timing event"))
        };
        // SAFETY: both events are ours and no longer used.
        unsafe {
            sys::cuEventDestroy_v2(start);
            sys::cuEventDestroy_v2(end);
        }
        let r = r?;
        timing?;
        Ok((r, std::time::Duration::from_secs_f64(ms as f64 / 1e3)))
    }

    /// Runs `f` with this device's stream as the one the GPU runtime ABI uses on this thread,
    /// then reports the first error any of its calls hit.
    pub fn with_stream<T>(&self, f: impl FnOnce() -> T) -> Result<T, RuntimeError> {
        let _stream = self.exclusive();
        self.bind()?;
        CURRENT_STREAM.with(|s| s.set(self.stream));
        let r = f();
        CURRENT_STREAM.with(|s| s.set(std::ptr::null_mut()));
        match take_error() {
            Some(e) => Err(RuntimeError::Cuda(e)),
            None => Ok(r),
        }
    }
}

thread_local! {
    /// Ordinals of the devices whose stream this thread holds ([`CudaDevice::exclusive`]).
    static STREAMS_HELD: std::cell::RefCell<Vec<usize>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A device's stream, held by this thread ([`CudaDevice::exclusive`]); `None` when an outer
/// guard of the same thread holds it.
struct StreamGuard<'a> {
    lock: Option<std::sync::MutexGuard<'a, ()>>,
    ordinal: usize,
}

impl Drop for StreamGuard<'_> {
    fn drop(&mut self) {
        if self.lock.is_some() {
            STREAMS_HELD.with(|h| h.borrow_mut().retain(|&o| o != self.ordinal));
        }
    }
}

/// A captured and instantiated CUDA graph.
pub struct CudaGraph {
    graph: sys::CUgraph,
    exec: sys::CUgraphExec,
}

// SAFETY: graph handles are plain driver handles; launches happen on the owning device's
// stream with its context bound.
unsafe impl Send for CudaGraph {}
unsafe impl Sync for CudaGraph {}

impl Drop for CudaGraph {
    fn drop(&mut self) {
        // SAFETY: both handles are ours and destroyed once.
        unsafe {
            let _ = sys::cuGraphExecDestroy(self.exec);
            let _ = sys::cuGraphDestroy(self.graph);
        }
    }
}

impl CudaDevice {
    /// Records the work `f` queues on this device's stream (through the GPU runtime ABI)
    /// into a CUDA graph instead of running it.
    pub fn capture<T>(&self, f: impl FnOnce() -> Result<T, RuntimeError>) -> Result<(T, CudaGraph), RuntimeError> {
        // Held until the graph is instantiated: nothing else may enter the capture.
        let _stream = self.exclusive();
        self.bind()?;
        // SAFETY: the stream is live; capture is ended below whatever `f` did.
        check(unsafe { sys::cuStreamBeginCapture_v2(self.stream, sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL) }, "starting a CUDA graph capture")?;
        let r = self.with_stream(f).and_then(|r| r);
        let mut graph = std::ptr::null_mut();
        // SAFETY: ends the capture begun above on the same stream.
        let ended = check(unsafe { sys::cuStreamEndCapture(self.stream, &mut graph) }, "ending a CUDA graph capture");
        let value = r?;
        ended?;
        let mut exec = std::ptr::null_mut();
        // SAFETY: `graph` was just captured.
        if let Err(e) = check(unsafe { sys::cuGraphInstantiateWithFlags(&mut exec, graph, 0) }, "instantiating a CUDA graph") {
            // SAFETY: the graph is ours and unused.
            unsafe { sys::cuGraphDestroy(graph) };
            return Err(e);
        }
        Ok((value, CudaGraph { graph, exec }))
    }

    /// Queues a replay of `g` on the stream.
    pub fn launch(&self, g: &CudaGraph) -> Result<(), RuntimeError> {
        let _stream = self.exclusive();
        self.bind()?;
        // SAFETY: the graph was instantiated on this device's context.
        check(unsafe { sys::cuGraphLaunch(g.exec, self.stream) }, "launching a CUDA graph")
    }

    /// Copies `bytes` between device addresses (queued on the stream).
    pub fn copy_device(&self, dst: sys::CUdeviceptr, src: sys::CUdeviceptr, bytes: usize) -> Result<(), RuntimeError> {
        let _stream = self.exclusive();
        // SAFETY: the caller passes live device buffers of at least `bytes` bytes each.
        check(unsafe { sys::cuMemcpyDtoDAsync_v2(dst, src, bytes, self.stream) }, "copying on the device")
    }

    /// Copies `host` into device address `dst` (queued on the stream; `host` must stay
    /// alive until the stream is synchronized).
    pub fn copy_in_async(&self, dst: sys::CUdeviceptr, host: &[u8]) -> Result<(), RuntimeError> {
        let _stream = self.exclusive();
        if host.is_empty() {
            return Ok(());
        }
        // SAFETY: the caller passes a live device buffer of at least host.len() bytes and
        // keeps `host` alive until the next synchronization.
        check(unsafe { sys::cuMemcpyHtoDAsync_v2(dst, host.as_ptr() as *const c_void, host.len(), self.stream) }, "copying to the device")
    }
}

/// A device allocation, freed (stream-ordered) when dropped.
pub struct DeviceBuffer {
    ptr: sys::CUdeviceptr,
    bytes: usize,
    dev: Arc<CudaDevice>,
}

impl DeviceBuffer {
    /// The device address.
    pub fn ptr(&self) -> sys::CUdeviceptr {
        self.ptr
    }
    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.bytes
    }
    /// Whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        if self.ptr != 0 {
            let _stream = self.dev.exclusive();
            // SAFETY: the pointer came from cuMemAllocAsync and is freed once.
            unsafe {
                let _ = sys::cuCtxSetCurrent(self.dev.ctx);
                let _ = sys::cuMemFreeAsync(self.ptr, self.dev.stream);
            }
        }
    }
}

thread_local! {
    /// The stream of the model executing on this thread.
    static CURRENT_STREAM: Cell<sys::CUstream> = const { Cell::new(std::ptr::null_mut()) };
}

/// The first error a GPU runtime ABI call hit since the last [`take_error`].
static LAST_ERROR: Mutex<Option<String>> = Mutex::new(None);

fn record(r: sys::CUresult, what: &str) {
    if let Err(e) = check(r, what) {
        let mut slot = LAST_ERROR.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(e.to_string().trim_start_matches("CUDA error: ").to_string());
        }
    }
}

fn take_error() -> Option<String> {
    LAST_ERROR.lock().unwrap_or_else(|p| p.into_inner()).take()
}

fn stream_or_current(s: *mut c_void) -> sys::CUstream {
    if s.is_null() {
        CURRENT_STREAM.with(|c| c.get())
    } else {
        s as sys::CUstream
    }
}

// The MLIR GPU runtime ABI. Each is called by compiled host code with arguments it
// computed from the kernel's bindings.

/// Kernels launched as programmatic dependents, by function handle ([`waiting_entries`]).
static PROGRAMMATIC: LazyLock<Mutex<HashSet<usize>>> = LazyLock::new(Default::default);
/// Each loaded module's kernels that wait for their predecessor, until their handles are
/// looked up.
static WAITING: LazyLock<Mutex<HashMap<usize, Vec<String>>>> = LazyLock::new(Default::default);

/// Freed memory the device's default pool keeps mapped for the next stream-ordered
/// allocation: all of it, or `MAX_CUDA_POOL_KEEP_MB` megabytes. The driver's default is 0:
/// at every synchronization the pool unmaps what is free, and the next allocation maps it
/// again on the stream's timeline. A dispatch's temporaries (TF32's transposed B, split-K
/// partial sums, quantized prefill's f16 weights) were allocated afresh at every call that
/// way: 64 MB for a 4096^2 TF32 matmul cost about 300 us a call on an H200 (NOTES item 24).
fn pool_keep_bytes() -> u64 {
    std::env::var("MAX_CUDA_POOL_KEEP_MB").ok().and_then(|v| v.trim().parse::<u64>().ok()).map_or(u64::MAX, |mb| mb.saturating_mul(1 << 20))
}

/// Sets the release threshold of device `dev`'s default memory pool ([`pool_keep_bytes`]). A
/// driver that refuses leaves the pool as it was, with a warning: allocations still work.
fn keep_freed_memory(dev: sys::CUdevice, ordinal: usize) {
    let mut pool = std::ptr::null_mut();
    let mut keep = pool_keep_bytes();
    // SAFETY: out-pointer to a local; the attribute takes a pointer to a 64-bit integer.
    let r = unsafe {
        check(sys::cuDeviceGetDefaultMemPool(&mut pool, dev), "cuDeviceGetDefaultMemPool").and_then(|_| {
            check(
                sys::cuMemPoolSetAttribute(pool, sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, &mut keep as *mut u64 as *mut c_void),
                "setting the memory pool's release threshold",
            )
        })
    };
    if let Err(e) = r {
        tracing::warn!("gpu:{ordinal}: freed device memory goes back to the driver at each synchronization ({e})");
    }
}

/// Set when the driver refused a programmatic launch: every later launch is an ordinary one.
static PROGRAMMATIC_REFUSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// Kernel launches made so far (eager, or recorded into a CUDA graph), programmatic and
/// ordinary.
static LAUNCHES: [std::sync::atomic::AtomicU64; 2] = [std::sync::atomic::AtomicU64::new(0), std::sync::atomic::AtomicU64::new(0)];

/// How this process has launched kernels: as programmatic dependents, the ordinary way, and
/// whether a driver refused a programmatic launch (so that a benchmark can say which way it
/// ran; a graph replay counts its launches once, when they were recorded).
pub fn launch_counts() -> (u64, u64, bool) {
    use std::sync::atomic::Ordering::Relaxed;
    (LAUNCHES[0].load(Relaxed), LAUNCHES[1].load(Relaxed), PROGRAMMATIC_REFUSED.load(Relaxed))
}

/// Whether kernels whose PTX waits for their predecessor are launched as programmatic
/// dependents: on unless `MAX_GPU_PDL=0` (A/B runs; the kernels' waits then return at once)
/// or the driver refused such a launch.
fn programmatic_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("MAX_GPU_PDL").map_or(true, |v| v.trim() != "0")) && !PROGRAMMATIC_REFUSED.load(std::sync::atomic::Ordering::Relaxed)
}

/// The `.entry` kernels of a PTX module that execute `griddepcontrol.wait`: the compiler
/// puts one in every sm_90 kernel (`max_compiler::gpu::wait_for_predecessors`), before
/// any access to memory an earlier kernel may still be writing. Only these may start
/// before the kernel ahead of them on the stream has finished; a custom op's own PTX, or
/// a module for an older chip, is launched as usual.
pub fn waiting_entries(ptx: &str) -> Vec<String> {
    let mut out = Vec::new();
    for part in ptx.split(".entry ").skip(1) {
        let name: String = part.trim_start().chars().take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '$' | '.')).collect();
        // The entry's text runs to the next `.entry` (or a `.func` after it).
        let body = part.split("\n.func").next().unwrap_or(part);
        if !name.is_empty() && body.contains("griddepcontrol.wait") {
            out.push(name);
        }
    }
    out
}

thread_local! {
    /// The compute capability of the device whose artifact library `init_library` is
    /// loading on this thread: which of a kernel image's cubins can run.
    static LOADING_FOR: Cell<(i32, i32)> = const { Cell::new((0, 0)) };
}

/// Kernel modules loaded so far from SASS and from PTX.
static MODULE_LOADS: [std::sync::atomic::AtomicU64; 2] = [std::sync::atomic::AtomicU64::new(0), std::sync::atomic::AtomicU64::new(0)];
/// Why the driver refused a cubin, once it has: every later module loads from PTX.
static SASS_REFUSED: Mutex<Option<String>> = Mutex::new(None);

/// How this process has loaded kernel modules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleLoads {
    /// Modules loaded from the compiler's SASS for the device.
    pub sass: u64,
    /// Modules loaded from PTX, which the driver compiles at a first load (an artifact without
    /// SASS for this chip, `MAX_GPU_SASS=0`, or after a refusal).
    pub ptx: u64,
    /// The driver's error when it refused a cubin.
    pub sass_refused: Option<String>,
}

/// How kernel modules were loaded (so that a benchmark's load time says what it measured).
pub fn module_loads() -> ModuleLoads {
    use std::sync::atomic::Ordering::Relaxed;
    let refused = SASS_REFUSED.lock().unwrap_or_else(|p| p.into_inner()).clone();
    ModuleLoads { sass: MODULE_LOADS[0].load(Relaxed), ptx: MODULE_LOADS[1].load(Relaxed), sass_refused: refused }
}

/// Whether a kernel image's SASS is loaded when it has some for the device: unless
/// `MAX_GPU_SASS=0` (A/B runs of the driver's PTX compile) or the driver refused a cubin.
fn sass_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("MAX_GPU_SASS").map_or(true, |v| v.trim() != "0")) && SASS_REFUSED.lock().unwrap_or_else(|p| p.into_inner()).is_none()
}

/// The bytes of an embedded kernel image: a [`crate::gpu_image`] container, or plain
/// NUL-terminated PTX (an artifact compiled without SASS, a custom op's PTX).
///
/// # Safety
/// `data` must point to such an image that outlives the returned slice.
unsafe fn image_bytes<'a>(data: *const u8) -> &'a [u8] {
    use crate::gpu_image::{total_len, MAGIC};
    // Compared a byte at a time: PTX shorter than the magic ends at a NUL, which only the
    // magic's last byte matches.
    // SAFETY: every byte read is at or before the first NUL or the first mismatch.
    let magic = (0..MAGIC.len()).all(|i| unsafe { *data.add(i) } == MAGIC[i]);
    if magic {
        // SAFETY: a container starts with its 24-byte header, which records its length.
        let header = unsafe { std::slice::from_raw_parts(data, 24) };
        if let Some(n) = total_len(header) {
            // SAFETY: as above.
            return unsafe { std::slice::from_raw_parts(data, n) };
        }
    }
    // SAFETY: plain PTX is text up to its NUL.
    unsafe { CStr::from_ptr(data as *const c_char) }.to_bytes_with_nul()
}

/// Loads a module from `image` (NUL-terminated PTX or a cubin).
fn load_module(image: &[u8]) -> (sys::CUmodule, sys::CUresult) {
    let mut m = std::ptr::null_mut();
    // SAFETY: `image` is a whole PTX text with its NUL, or a whole cubin.
    let r = unsafe { sys::cuModuleLoadData(&mut m, image.as_ptr() as *const c_void) };
    (m, r)
}

extern "C" fn mgpu_module_load(data: *mut c_void, _size: u64) -> *mut c_void {
    use crate::gpu_image::{parse, sass_runs_on, Kind};
    use std::sync::atomic::Ordering::Relaxed;
    // SAFETY: `data` is a kernel image embedded in the artifact's library, loaded for good.
    let image = unsafe { image_bytes(data as *const u8) };
    let (ptx, sass) = if crate::gpu_image::is_image(image) {
        let entries = match parse(image) {
            Ok(e) => e,
            Err(e) => {
                record(sys::CUresult::CUDA_ERROR_INVALID_IMAGE, &e.to_string());
                return std::ptr::null_mut();
            }
        };
        let Some(ptx) = entries.iter().find(|e| e.kind == Kind::Ptx) else {
            record(sys::CUresult::CUDA_ERROR_INVALID_IMAGE, "a GPU kernel image without PTX");
            return std::ptr::null_mut();
        };
        let cc = LOADING_FOR.with(|c| c.get());
        // The PTX entry's NUL follows its bytes (checked by `parse`).
        // SAFETY: that NUL lies inside the image.
        let ptx = unsafe { std::slice::from_raw_parts(ptx.bytes.as_ptr(), ptx.bytes.len() + 1) };
        (ptx, entries.into_iter().find(|e| e.kind == Kind::Sass && sass_runs_on(e.chip, cc)))
    } else {
        (image, None)
    };
    let mut m = std::ptr::null_mut();
    if let Some(cubin) = sass.filter(|_| sass_enabled()) {
        let (loaded, r) = load_module(cubin.bytes);
        match check(r, &format!("loading a GPU kernel module's SASS for {}", cubin.chip)) {
            Ok(()) => {
                m = loaded;
                MODULE_LOADS[0].fetch_add(1, Relaxed);
            }
            Err(e) => {
                let why = e.to_string().trim_start_matches("CUDA error: ").to_string();
                tracing::warn!("the driver refused the kernels' SASS ({why}); loading their PTX instead, which the driver compiles (a slower first load)");
                *SASS_REFUSED.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
            }
        }
    }
    if m.is_null() {
        let (loaded, r) = load_module(ptx);
        record(r, "loading a GPU kernel module");
        m = loaded;
        if !m.is_null() {
            MODULE_LOADS[1].fetch_add(1, Relaxed);
        }
    }
    // The PTX says which kernels wait for their predecessor, whichever form was loaded.
    if !m.is_null() {
        let waiting = waiting_entries(&String::from_utf8_lossy(ptx));
        if !waiting.is_empty() {
            WAITING.lock().unwrap_or_else(|p| p.into_inner()).insert(m as usize, waiting);
        }
    }
    m as *mut c_void
}

extern "C" fn mgpu_module_load_jit(data: *mut c_void, _opt: i32) -> *mut c_void {
    mgpu_module_load(data, 0)
}

extern "C" fn mgpu_module_unload(m: *mut c_void) {
    if !m.is_null() {
        WAITING.lock().unwrap_or_else(|p| p.into_inner()).remove(&(m as usize));
        // SAFETY: `m` came from mgpu_module_load.
        record(unsafe { sys::cuModuleUnload(m as sys::CUmodule) }, "unloading a GPU kernel module");
    }
}

extern "C" fn mgpu_module_get_function(m: *mut c_void, name: *const c_char) -> *mut c_void {
    let mut f = std::ptr::null_mut();
    if m.is_null() {
        record(sys::CUresult::CUDA_ERROR_INVALID_HANDLE, "a GPU kernel module failed to load");
        return f as *mut c_void;
    }
    // SAFETY: `m` is a loaded module, `name` a NUL-terminated kernel name.
    record(unsafe { sys::cuModuleGetFunction(&mut f, m as sys::CUmodule, name) }, "finding a GPU kernel");
    // SAFETY: as above.
    let name = unsafe { CStr::from_ptr(name) }.to_string_lossy();
    let waits = WAITING.lock().unwrap_or_else(|p| p.into_inner()).get(&(m as usize)).is_some_and(|w| w.iter().any(|e| *e == name));
    // Decided at every lookup: a handle of an unloaded module's kernel may come back for
    // another kernel.
    let mut programmatic = PROGRAMMATIC.lock().unwrap_or_else(|p| p.into_inner());
    if waits && !f.is_null() {
        programmatic.insert(f as usize);
    } else {
        programmatic.remove(&(f as usize));
    }
    f as *mut c_void
}

#[allow(clippy::too_many_arguments)]
extern "C" fn mgpu_launch_kernel(f: *mut c_void, gx: i64, gy: i64, gz: i64, bx: i64, by: i64, bz: i64, smem: i32, stream: *mut c_void, params: *mut *mut c_void, extra: *mut *mut c_void, _n: i64) {
    if f.is_null() {
        return; // the lookup already recorded why
    }
    if gx <= 0 || gy <= 0 || gz <= 0 {
        return; // an empty grid (a zero-sized dim): nothing to do
    }
    if smem > 48 * 1024 {
        // More than the default 48 KiB of dynamic shared memory must be opted into, once
        // per kernel and size, not on every launch. (Modules are never unloaded, so a
        // function handle names one kernel for the life of the process.)
        static RAISED: Mutex<Vec<(usize, i32)>> = Mutex::new(Vec::new());
        let mut raised = RAISED.lock().unwrap_or_else(|p| p.into_inner());
        if !raised.contains(&(f as usize, smem)) {
            // SAFETY: `f` is a loaded kernel; the attribute takes a byte count.
            let r = unsafe { sys::cuFuncSetAttribute(f as sys::CUfunction, sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, smem) };
            if r == sys::CUresult::CUDA_SUCCESS {
                raised.push((f as usize, smem));
            }
            record(r, "raising a GPU kernel's shared memory limit");
        }
    }
    let programmatic = programmatic_enabled() && PROGRAMMATIC.lock().unwrap_or_else(|p| p.into_inner()).contains(&(f as usize));
    if programmatic {
        // Programmatic stream serialization: the kernel may start once every block of the
        // one before it has passed its `griddepcontrol.launch_dependents`; it waits for
        // that one's completion itself (`griddepcontrol.wait`). In a stream capture this
        // becomes a programmatic edge of the CUDA graph.
        // SAFETY: the value is a C union of integers, pointers and arrays of them, for which
        // all-zero bytes are valid.
        let mut value: sys::CUlaunchAttributeValue = unsafe { std::mem::zeroed() };
        value.programmaticStreamSerializationAllowed = 1;
        let mut attr = sys::CUlaunchAttribute { id: sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION, pad: [0; 4], value };
        let config = sys::CUlaunchConfig {
            gridDimX: gx as u32,
            gridDimY: gy as u32,
            gridDimZ: gz as u32,
            blockDimX: bx as u32,
            blockDimY: by as u32,
            blockDimZ: bz as u32,
            sharedMemBytes: smem as u32,
            hStream: stream_or_current(stream),
            attrs: &mut attr,
            numAttrs: 1,
        };
        // SAFETY: as for cuLaunchKernel below; `config` and its one attribute outlive the
        // call.
        let r = unsafe { sys::cuLaunchKernelEx(&config, f as sys::CUfunction, params, extra) };
        if r == sys::CUresult::CUDA_SUCCESS {
            LAUNCHES[0].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return;
        }
        // A driver that takes the kernel but not the attribute: the waits return at once in
        // an ordinary launch, so launch it (and every later kernel) that way.
        if !PROGRAMMATIC_REFUSED.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tracing::warn!(error = ?r, "the driver refused a programmatic dependent launch; launching kernels the ordinary way");
        }
    }
    LAUNCHES[1].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // SAFETY: `f` is a kernel of a loaded module; `params` points at the kernel's
    // arguments as the compiled host code laid them out for its PTX signature.
    record(
        unsafe { sys::cuLaunchKernel(f as sys::CUfunction, gx as u32, gy as u32, gz as u32, bx as u32, by as u32, bz as u32, smem as u32, stream_or_current(stream), params, extra) },
        "launching a GPU kernel",
    );
}

extern "C" fn mgpu_stream_create() -> *mut c_void {
    CURRENT_STREAM.with(|c| c.get()) as *mut c_void
}

extern "C" fn mgpu_stream_destroy(_s: *mut c_void) {
    // The model's stream outlives dispatches.
}

extern "C" fn mgpu_stream_synchronize(_s: *mut c_void) {
    // Work on the one stream is ordered; the executor synchronizes before reading results.
}

extern "C" fn mgpu_stream_wait_event(s: *mut c_void, e: *mut c_void) {
    // SAFETY: an event made by mgpu_event_create.
    record(unsafe { sys::cuStreamWaitEvent(stream_or_current(s), e as sys::CUevent, 0) }, "waiting for a GPU event");
}

extern "C" fn mgpu_event_create() -> *mut c_void {
    let mut e = std::ptr::null_mut();
    // SAFETY: out-pointer to a local.
    record(unsafe { sys::cuEventCreate(&mut e, sys::CUevent_flags::CU_EVENT_DISABLE_TIMING as u32) }, "creating a GPU event");
    e as *mut c_void
}

extern "C" fn mgpu_event_destroy(e: *mut c_void) {
    // SAFETY: an event made by mgpu_event_create.
    record(unsafe { sys::cuEventDestroy_v2(e as sys::CUevent) }, "destroying a GPU event");
}

extern "C" fn mgpu_event_synchronize(e: *mut c_void) {
    // SAFETY: an event made by mgpu_event_create.
    record(unsafe { sys::cuEventSynchronize(e as sys::CUevent) }, "waiting for a GPU event");
}

extern "C" fn mgpu_event_record(e: *mut c_void, s: *mut c_void) {
    // SAFETY: an event made by mgpu_event_create.
    record(unsafe { sys::cuEventRecord(e as sys::CUevent, stream_or_current(s)) }, "recording a GPU event");
}

extern "C" fn mgpu_mem_alloc(bytes: u64, s: *mut c_void, _host_shared: bool) -> *mut c_void {
    let mut p: sys::CUdeviceptr = 0;
    if bytes > 0 {
        // SAFETY: out-pointer to a local.
        record(unsafe { sys::cuMemAllocAsync(&mut p, bytes as usize, stream_or_current(s)) }, "allocating a GPU temporary");
    }
    p as *mut c_void
}

extern "C" fn mgpu_mem_free(p: *mut c_void, s: *mut c_void) {
    if !p.is_null() {
        // SAFETY: `p` came from mgpu_mem_alloc.
        record(unsafe { sys::cuMemFreeAsync(p as sys::CUdeviceptr, stream_or_current(s)) }, "freeing a GPU temporary");
    }
}

extern "C" fn mgpu_memcpy(dst: *mut c_void, src: *mut c_void, bytes: u64, s: *mut c_void) {
    if bytes > 0 {
        // SAFETY: both are device addresses of live buffers of at least `bytes`.
        record(unsafe { sys::cuMemcpyAsync(dst as sys::CUdeviceptr, src as sys::CUdeviceptr, bytes as usize, stream_or_current(s)) }, "copying on the GPU");
    }
}

extern "C" fn mgpu_memset32(dst: *mut c_void, v: u32, count: u64, s: *mut c_void) {
    // SAFETY: a device buffer of at least `count` 32-bit words.
    record(unsafe { sys::cuMemsetD32Async(dst as sys::CUdeviceptr, v, count as usize, stream_or_current(s)) }, "filling GPU memory");
}

extern "C" fn mgpu_memset16(dst: *mut c_void, v: u16, count: u64, s: *mut c_void) {
    // SAFETY: a device buffer of at least `count` 16-bit words.
    record(unsafe { sys::cuMemsetD16Async(dst as sys::CUdeviceptr, v, count as usize, stream_or_current(s)) }, "filling GPU memory");
}

/// The ABI table, in [`GPU_API`] order.
pub fn api_table() -> Vec<*const c_void> {
    vec![
        mgpu_module_load as *const c_void,
        mgpu_module_load_jit as *const c_void,
        mgpu_module_unload as *const c_void,
        mgpu_module_get_function as *const c_void,
        mgpu_launch_kernel as *const c_void,
        mgpu_stream_create as *const c_void,
        mgpu_stream_destroy as *const c_void,
        mgpu_stream_synchronize as *const c_void,
        mgpu_stream_wait_event as *const c_void,
        mgpu_event_create as *const c_void,
        mgpu_event_destroy as *const c_void,
        mgpu_event_synchronize as *const c_void,
        mgpu_event_record as *const c_void,
        mgpu_mem_alloc as *const c_void,
        mgpu_mem_free as *const c_void,
        mgpu_memcpy as *const c_void,
        mgpu_memset32 as *const c_void,
        mgpu_memset16 as *const c_void,
    ]
}

/// Wires a GPU artifact's loaded host library to `dev`: fills its `max_gpu_api` table and
/// runs `max_gpu_init` (loads the kernel modules: SASS for this chip, or PTX the driver
/// compiles once).
pub fn init_library(dev: &CudaDevice, lib: &libloading::Library) -> Result<(), RuntimeError> {
    let table = api_table();
    // SAFETY: `max_gpu_api` is a `[N x ptr]` global of the library (N = GPU_API.len(), the
    // compiler's table has the same entries); it is written before any kernel runs.
    unsafe {
        let slot = lib
            .get::<*mut *const c_void>(b"max_gpu_api\0")
            .map_err(|_| RuntimeError::KernelLoad("the GPU artifact's library has no max_gpu_api table".into()))?;
        let base: *mut *const c_void = *slot;
        for (i, f) in table.iter().enumerate() {
            *base.add(i) = *f;
        }
        let init = lib
            .get::<unsafe extern "C" fn()>(b"max_gpu_init\0")
            .map_err(|_| RuntimeError::KernelLoad("the GPU artifact's library has no max_gpu_init".into()))?;
        LOADING_FOR.with(|c| c.set(dev.compute_capability));
        dev.with_stream(|| init())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_the_kernels_that_wait() {
        let ptx = ".version 8.0\n.target sm_90\n.visible .entry a(\n.param .u64 a_param_0\n)\n{\ngriddepcontrol.wait;\nret;\n}\n.visible .entry b_1(\n)\n{\nret;\n}\n.func helper()\n{\ngriddepcontrol.wait;\nret;\n}\n.visible .entry c$x()\n{\n\tgriddepcontrol.wait;\n}\n";
        assert_eq!(super::waiting_entries(ptx), ["a", "c$x"]);
        assert!(super::waiting_entries(".version 8.0\n.target sm_80\n.visible .entry a()\n{\nret;\n}\n").is_empty());
    }

    #[test]
    fn table_matches_names() {
        assert_eq!(super::api_table().len(), super::GPU_API.len());
    }
}
