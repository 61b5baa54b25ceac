//! Sessions and loaded models: the public execution API.

use crate::artifact::{AlignedBytes, Artifact, BufferKind, Entry};
use crate::cpu::{check_target, KernelFn, KernelLibrary};
use crate::error::RuntimeError;
use crate::state::State;
use crate::tensor::Tensor;
use max_dialects::{DType, DimExpr};
use std::path::Path;
use std::sync::Arc;

/// Where a model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
    /// A CUDA GPU by ordinal (needs the `cuda` feature and an NVIDIA driver).
    Gpu(usize),
}

impl Device {
    /// The compute capability (major, minor) of a GPU; `None` for the CPU. Opens the GPU
    /// (an error if this build has no `cuda` feature or the GPU is not there).
    pub fn compute_capability(&self) -> Result<Option<(i32, i32)>, RuntimeError> {
        match *self {
            Device::Cpu => Ok(None),
            #[cfg(feature = "cuda")]
            Device::Gpu(i) => Ok(Some(crate::cuda::CudaDevice::open(i)?.compute_capability)),
            #[cfg(not(feature = "cuda"))]
            Device::Gpu(i) => Err(RuntimeError::Device(format!("device gpu:{i} is not available in this build (built without the `cuda` feature)"))),
        }
    }

    /// Parses `cpu`, `gpu` (GPU 0) or `gpu:N`.
    pub fn parse(s: &str) -> Result<Device, RuntimeError> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "gpu" | "cuda" => Ok(Device::Gpu(0)),
            other => other
                .strip_prefix("gpu:")
                .or_else(|| other.strip_prefix("cuda:"))
                .and_then(|n| n.parse().ok())
                .map(Device::Gpu)
                .ok_or_else(|| RuntimeError::Device(format!("unknown device {other:?} (expected cpu, gpu or gpu:N)"))),
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Gpu(i) => write!(f, "gpu:{i}"),
        }
    }
}

/// Loads artifacts onto a device. Holds the thread pool models share, so several models or
/// requests do not oversubscribe the cores.
///
/// One call at a time runs on the pool: the others wait their turn. Every call already
/// spreads its dispatches over all the workers, so taking turns loses no throughput, and it
/// keeps a call from stalling inside another: a worker waiting for its own call's
/// workgroups would otherwise pick up a whole later call (rayon runs injected jobs while it
/// waits) and finish that one first.
pub struct InferenceSession {
    device: Device,
    pool: Arc<rayon::ThreadPool>,
    turn: Arc<std::sync::Mutex<()>>,
}

impl InferenceSession {
    /// A session on `device` using all cores.
    pub fn new(device: Device) -> Self {
        let n = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        Self::with_threads(device, n)
    }

    /// A session on `device` with `threads` worker threads (at least 1), each pinned to a
    /// CPU of its own when there are as many as the process may use (see
    /// [`crate::affinity`]).
    pub fn with_threads(device: Device, threads: usize) -> Self {
        let threads = threads.max(1);
        let cpus = crate::affinity::worker_cpus(threads);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("max-worker-{i}"))
            // Kernels keep scratch tiles on the stack (attention score rows, decoded weight panels).
            .stack_size(8 << 20)
            .start_handler(move |i| {
                if let Some(cpu) = cpus.as_ref().map(|c| c[i]) {
                    if !crate::affinity::pin_current_thread(cpu) {
                        tracing::debug!("worker {i} could not be pinned to CPU {cpu}");
                    }
                }
            })
            .build()
            .expect("building the worker thread pool");
        InferenceSession { device, pool: Arc::new(pool), turn: Arc::default() }
    }

    /// Number of worker threads.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Loads an artifact: checks its target, loads its kernels.
    pub fn load(&self, artifact: &Artifact) -> Result<Model, RuntimeError> {
        let gpu = match self.device {
            Device::Cpu => {
                check_target(&artifact.manifest().target)?;
                None
            }
            #[cfg(not(feature = "cuda"))]
            Device::Gpu(i) => return Err(RuntimeError::Device(format!("device gpu:{i} is not available in this build (built without the `cuda` feature)"))),
            #[cfg(feature = "cuda")]
            Device::Gpu(i) => Some(crate::gpu_exec::GpuModel::check_target(i, &artifact.manifest().target)?),
        };
        artifact.check_program()?;
        let missing = artifact.missing_weights();
        if !missing.is_empty() {
            return Err(RuntimeError::ExternalWeights(missing.join(", ")));
        }
        let kernels = KernelLibrary::load(artifact)?;
        let profile = std::env::var_os("MAX_PROFILE").filter(|v| !v.is_empty() && v != "0").map(|_| Default::default());
        let plans = artifact.manifest().entries.iter().map(BufferPlan::new).collect();
        #[cfg(feature = "cuda")]
        let gpu = match gpu {
            Some(dev) => Some(crate::gpu_exec::GpuModel::load(dev, artifact, &kernels)?),
            None => None,
        };
        #[cfg(not(feature = "cuda"))]
        let _: Option<()> = gpu;
        Ok(Model {
            artifact: artifact.clone(),
            kernels,
            pool: self.pool.clone(),
            turn: self.turn.clone(),
            plans,
            pool_buffers: Default::default(),
            profile,
            #[cfg(feature = "cuda")]
            gpu,
        })
    }

    /// Opens and loads the artifact at `path`.
    pub fn load_path(&self, path: impl AsRef<Path>) -> Result<Model, RuntimeError> {
        self.load(&Artifact::open(path)?)
    }
}

/// A loaded artifact, ready to execute.
pub struct Model {
    artifact: Artifact,
    kernels: KernelLibrary,
    pool: Arc<rayon::ThreadPool>,
    /// The session's turn on the pool (see [`InferenceSession`]).
    turn: Arc<std::sync::Mutex<()>>,
    /// Per entry: buffer lifetimes, for reusing temporaries.
    plans: Vec<BufferPlan>,
    /// Temporaries no longer in use, kept for the next dispatch or call.
    pool_buffers: std::sync::Mutex<Vec<AlignedBytes>>,
    /// Time per kernel when `MAX_PROFILE` is set (printed to stderr when the model drops).
    profile: Option<std::sync::Mutex<std::collections::BTreeMap<String, (u64, std::time::Duration)>>>,
    /// The device state of a model loaded on a GPU.
    #[cfg(feature = "cuda")]
    gpu: Option<crate::gpu_exec::GpuModel>,
}

impl Drop for Model {
    fn drop(&mut self) {
        let Some(p) = &self.profile else { return };
        let p = p.lock().unwrap_or_else(|e| e.into_inner());
        let total: std::time::Duration = p.values().map(|v| v.1).sum();
        let mut rows: Vec<(&String, &(u64, std::time::Duration))> = p.iter().collect();
        rows.sort_by_key(|r| std::cmp::Reverse(r.1 .1));
        eprintln!("max profile: {} kernels, {:.3} ms in total", rows.len(), total.as_secs_f64() * 1e3);
        eprintln!("{:>10} {:>7} {:>10} {:>6}  kernel", "ms", "calls", "us/call", "%");
        for (name, (calls, t)) in rows {
            let ms = t.as_secs_f64() * 1e3;
            eprintln!("{ms:>10.3} {calls:>7} {:>10.1} {:>5.1}%  {name}", ms * 1e3 / *calls as f64, 100.0 * t.as_secs_f64() / total.as_secs_f64().max(1e-12));
        }
    }
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let entries: Vec<&str> = self.artifact.manifest().entries.iter().map(|e| e.name.as_str()).collect();
        f.debug_struct("Model").field("artifact", &self.artifact.origin()).field("entries", &entries).finish()
    }
}

impl std::fmt::Debug for InferenceSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InferenceSession").field("device", &self.device).field("threads", &self.threads()).finish()
    }
}

/// Raw binding pointers shared read-only by the workgroups of one dispatch.
struct Bindings<'a> {
    ptrs: &'a [*mut u8],
    push: &'a [i64],
}
// SAFETY: the pointers are only dereferenced by kernels, and workgroups of a dispatch write
// disjoint parts of the output buffers (the compiler partitions them that way).
unsafe impl Sync for Bindings<'_> {}

/// A dispatch's kernel (or one of its column-split phases): the kernel, its name, its
/// bindings and its workgroup count at most.
type Phase<'a> = (KernelFn, &'a str, &'a [usize], &'a DimExpr);

/// One kernel launch of a call: the kernel, its bindings and push constants, and how many
/// workgroups run it.
struct Launch<'a> {
    f: KernelFn,
    name: &'a str,
    bind: Vec<*mut u8>,
    push: Vec<i64>,
    workgroups: i64,
}
// SAFETY: a call's launches run on one pool worker while the calling thread waits for them;
// the pointers stay valid (the call's buffers outlive the launches) and are only dereferenced
// by the kernels, as for [`Bindings`].
unsafe impl Send for Launch<'_> {}
unsafe impl Sync for Launch<'_> {}

impl Model {
    /// The artifact this model was loaded from.
    pub fn artifact(&self) -> &Artifact {
        &self.artifact
    }

    /// Time per kernel so far when `MAX_PROFILE` was set at load: (kernel, calls, total).
    /// On a GPU the times are device times of each dispatch's kernels (CUDA events).
    pub fn kernel_times(&self) -> Option<Vec<(String, u64, std::time::Duration)>> {
        let p = self.profile.as_ref()?.lock().unwrap_or_else(|e| e.into_inner());
        Some(p.iter().map(|(k, (n, t))| (k.clone(), *n, *t)).collect())
    }

    /// The first (default) entry.
    pub fn entry(&self) -> &Entry {
        &self.artifact.manifest().entries[0]
    }

    /// Runs the default entry.
    pub fn execute(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, RuntimeError> {
        let name = self.entry().name.clone();
        self.execute_entry(&name, inputs)
    }

    /// Runs the entry `name` on `inputs` (in signature order) and returns its outputs.
    /// An entry with mutable inputs (state such as a KV cache) needs
    /// [`Model::execute_with_state`].
    pub fn execute_entry(&self, name: &str, inputs: &[Tensor]) -> Result<Vec<Tensor>, RuntimeError> {
        self.execute_with_state(name, inputs, &mut [])
    }

    /// Runs the entry `name` with `inputs` (its read-only inputs, in signature order) and
    /// `state` (its mutable inputs, in signature order), which the program updates in place
    /// and the caller keeps between calls.
    pub fn execute_with_state(&self, name: &str, inputs: &[Tensor], state: &mut [Tensor]) -> Result<Vec<Tensor>, RuntimeError> {
        let (entry_index, syms) = self.bind_call(name, inputs, &crate::state::shapes_of(state))?;
        #[cfg(feature = "cuda")]
        if let Some(g) = &self.gpu {
            return g.execute(self, entry_index, &syms, inputs, crate::gpu_exec::StateRef::Host(state));
        }
        self.execute_on_cpu(entry_index, &syms, inputs, state)
    }

    /// Moves `tensors`, the initial values of an entry's mutable inputs (in signature
    /// order), to where this model runs: a GPU model keeps them in device memory, so calls
    /// with [`Model::execute_stateful`] never copy them.
    pub fn new_state(&self, tensors: Vec<Tensor>) -> Result<State, RuntimeError> {
        #[cfg(feature = "cuda")]
        if let Some(g) = &self.gpu {
            let bufs = tensors.iter().map(|t| g.upload(t.bytes())).collect::<Result<Vec<_>, _>>()?;
            return Ok(State { meta: crate::state::shapes_of(&tensors), data: crate::state::StateData::Device(bufs) });
        }
        Ok(State::host(tensors))
    }

    /// Runs entry `name` with `inputs` (its read-only inputs) and `state` (from
    /// [`Model::new_state`]), which the program updates where it lives.
    pub fn execute_stateful(&self, name: &str, inputs: &[Tensor], state: &mut State) -> Result<Vec<Tensor>, RuntimeError> {
        #[cfg(feature = "cuda")]
        if let crate::state::StateData::Device(bufs) = &state.data {
            let g = self.gpu_of_state()?;
            let (entry_index, syms) = self.bind_call(name, inputs, &state.meta)?;
            let ptrs: Vec<u64> = bufs.iter().map(|b| b.ptr()).collect();
            return g.execute(self, entry_index, &syms, inputs, crate::gpu_exec::StateRef::Device(&ptrs));
        }
        self.execute_with_state(name, inputs, state.host_tensors()?)
    }

    /// The current values of `state`, copied to the host.
    pub fn read_state(&self, state: &State) -> Result<Vec<Tensor>, RuntimeError> {
        match &state.data {
            crate::state::StateData::Host(t) => Ok(t.clone()),
            #[cfg(feature = "cuda")]
            crate::state::StateData::Device(bufs) => {
                let g = self.gpu_of_state()?;
                state.meta.iter().zip(bufs).map(|((dt, shape), b)| g.download(b, *dt, shape)).collect()
            }
        }
    }

    /// The device memory a model on a GPU holds beyond its weights: buffers pooled for the
    /// next call, and recorded CUDA graphs' own (`None` on the CPU).
    #[cfg(feature = "cuda")]
    pub fn device_memory(&self) -> Option<crate::gpu_exec::DeviceMemory> {
        self.gpu.as_ref().map(crate::gpu_exec::GpuModel::memory)
    }

    /// This model's GPU, for state in device memory.
    #[cfg(feature = "cuda")]
    fn gpu_of_state(&self) -> Result<&crate::gpu_exec::GpuModel, RuntimeError> {
        self.gpu.as_ref().ok_or_else(|| RuntimeError::Device("this state lives on a GPU, but the model runs on the CPU".into()))
    }

    /// Runs entry `entry_index` on the CPU.
    ///
    /// Memory is laid out first, on the calling thread (so buffers come from, and go back
    /// to, its allocator arena as before); then the launches all run on one of the pool's
    /// workers, which takes a share of each dispatch's workgroups itself. The calling thread
    /// thus sleeps once per call, not once per dispatch, and the other workers are still
    /// spinning for work between dispatches: a decode step is ~200 short dispatches, and a
    /// futex wake per dispatch cost ~14 µs each on a 2-vCPU VM.
    fn execute_on_cpu(&self, entry_index: usize, syms: &[Option<i64>], inputs: &[Tensor], state: &mut [Tensor]) -> Result<Vec<Tensor>, RuntimeError> {
        let m = self.artifact.manifest();
        let entry = &m.entries[entry_index];
        // Where each input's memory is, in signature order.
        let ptrs_in: Vec<*mut u8> =
            signature_order(entry, inputs.iter().map(|t| t.bytes().as_ptr() as *mut u8), state.iter_mut().map(|t| t.bytes_mut().as_mut_ptr()));

        // Shapes of every buffer; memory of inputs and weights. Temporaries get memory at
        // their first use, from the pool of buffers earlier dispatches (or calls) are done
        // with, and go back to it after their last use.
        let plan = &self.plans[entry_index];
        let shapes = buffer_shapes(entry, syms)?;
        let mut temps: Vec<Option<AlignedBytes>> = (0..entry.buffers.len()).map(|_| None).collect();
        let mut ptrs: Vec<*mut u8> = Vec::with_capacity(entry.buffers.len());
        for b in &entry.buffers {
            let ptr = match b.kind {
                BufferKind::Input(i) => ptrs_in[i],
                BufferKind::Weight(s) => self.artifact.section_bytes(s).as_ptr() as *mut u8,
                BufferKind::Alias(a) => ptrs[a],
                BufferKind::Temp => std::ptr::null_mut(),
            };
            ptrs.push(ptr);
        }
        let mut pool = std::mem::take(&mut *self.pool_buffers.lock().unwrap_or_else(|e| e.into_inner()));

        let threads = self.pool.current_num_threads() as i64;
        // 1. Every launch's bindings, with temporaries taken from (and after their last use
        // given back to) the buffer pool in dispatch order.
        let mut launches: Vec<Launch<'_>> = Vec::with_capacity(entry.dispatches.len());
        for (di, d) in entry.dispatches.iter().enumerate() {
            let f = self.kernels.kernel(entry_index, di).ok_or_else(|| RuntimeError::KernelLoad(format!("kernel '{}' not loaded", d.kernel)))?;
            // The phases to run.
            let split = match (&d.column_split, self.kernels.split_kernels(entry_index, di)) {
                (Some(c), Some(fs)) if threads > 1 && c.rows.eval(syms)? < threads * c.below_rows_per_thread => Some((c, fs)),
                _ => None,
            };
            let phases: [Option<Phase<'_>>; 2] = match split {
                Some((c, (fc, ff))) => [
                    Some((fc, c.columns_kernel.as_str(), c.columns_bindings.as_slice(), &c.columns_workgroups)),
                    Some((ff, c.finish_kernel.as_str(), c.finish_bindings.as_slice(), &c.rows)),
                ],
                None => [Some((f, d.kernel.as_str(), d.bindings.as_slice(), &d.workgroups)), None],
            };
            for &(_, _, bindings, _) in phases.iter().flatten() {
                for &b in bindings {
                    let r = plan.root[b];
                    if ptrs[r].is_null() {
                        let bytes = shapes[r].iter().product::<usize>() * entry.buffers[r].dtype.size_bytes();
                        // Outputs leave with the caller: they get an exact allocation
                        // (the kernel writes all of it, as it does pooled temporaries).
                        let mut t = if plan.last_use[r] == usize::MAX { AlignedBytes::for_overwrite(bytes) } else { take_buffer(&mut pool, bytes) };
                        ptrs[r] = t.as_mut_slice().as_mut_ptr();
                        temps[r] = Some(t);
                    }
                }
            }
            let push = d.push_constants.iter().map(|e| e.eval(syms)).collect::<Result<Vec<_>, _>>()?;
            for &(f, name, bindings, workgroups) in phases.iter().flatten() {
                let bind = bindings.iter().map(|&b| ptrs[plan.root[b]]).collect();
                let workgroups = workgroups.eval(syms)?.clamp(1, threads.max(1));
                launches.push(Launch { f, name, bind, push: push.clone(), workgroups });
            }
            for b in d.all_bindings() {
                let r = plan.root[b];
                if plan.last_use[r] == di {
                    if let Some(t) = temps[r].take() {
                        pool.push(t);
                    }
                }
            }
        }
        // 2. The launches, in order.
        let run = || -> Result<(), RuntimeError> {
            for l in &launches {
                let b = Bindings { ptrs: &l.bind, push: &l.push };
                let started = self.profile.as_ref().map(|_| std::time::Instant::now());
                let status = if l.workgroups == 1 {
                    // SAFETY: bindings point at live buffers sized from the same shapes the
                    // kernel was compiled against; push constants are those sizes.
                    unsafe { (l.f)(b.ptrs.as_ptr(), b.push.as_ptr(), 0, 1) }
                } else {
                    let worst = std::sync::atomic::AtomicI32::new(0);
                    self.pool.scope(|s| {
                        for id in 0..l.workgroups {
                            let (b, worst, f, wg) = (&b, &worst, l.f, l.workgroups);
                            s.spawn(move |_| {
                                // SAFETY: as above; workgroups write disjoint rows (or
                                // column stripes).
                                let st = unsafe { f(b.ptrs.as_ptr(), b.push.as_ptr(), id, wg) };
                                if st != 0 {
                                    worst.store(st, std::sync::atomic::Ordering::Relaxed);
                                }
                            });
                        }
                    });
                    worst.into_inner()
                };
                if let Some(t0) = started {
                    self.record_profile(l.name, t0.elapsed());
                }
                if status != 0 {
                    return Err(RuntimeError::KernelFailed { kernel: l.name.to_string(), status });
                }
            }
            Ok(())
        };
        let ran = {
            let _turn = self.turn.lock().unwrap_or_else(|e| e.into_inner());
            self.pool.install(run)
        };
        *self.pool_buffers.lock().unwrap_or_else(|e| e.into_inner()) = pool;
        ran?;

        let mut outs = Vec::with_capacity(entry.outputs.len());
        for (k, &b) in entry.output_buffers.iter().enumerate() {
            let sig = &entry.outputs[k];
            let r = plan.root[b];
            // Hand a temp over without copying the first time it is returned.
            let t = match temps[r].take() {
                Some(bytes) => Tensor::from_aligned(sig.dtype, &shapes[b], bytes)?,
                None => {
                    let n = shapes[b].iter().product::<usize>() * sig.dtype.size_bytes();
                    // SAFETY: `ptrs[r]` points at a live buffer of at least `n` bytes (an
                    // alias has its root's size).
                    let src = unsafe { std::slice::from_raw_parts(ptrs[r] as *const u8, n) };
                    Tensor::from_bytes(sig.dtype, &shapes[b], src)?
                }
            };
            outs.push(t);
        }
        Ok(outs)
    }
}

impl Model {
    /// The entry `name`'s index and its dimension symbols bound from `inputs` and `state`
    /// (counts, dtypes and shapes checked against the signature).
    fn bind_call(&self, name: &str, inputs: &[Tensor], state: &[(DType, Vec<usize>)]) -> Result<(usize, Vec<Option<i64>>), RuntimeError> {
        let m = self.artifact.manifest();
        let entry_index = m.entries.iter().position(|e| e.name == name).ok_or_else(|| RuntimeError::Missing { what: format!("entry '{name}'") })?;
        let entry = &m.entries[entry_index];
        let n_state = entry.inputs.iter().filter(|s| s.mutable).count();
        if inputs.len() + n_state != entry.inputs.len() || state.len() != n_state {
            let names = |mutable: bool| entry.inputs.iter().filter(|s| s.mutable == mutable).map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ");
            return Err(if state.len() != n_state {
                RuntimeError::StateCount { entry: entry.name.clone(), expected: n_state, got: state.len(), names: names(true) }
            } else {
                RuntimeError::InputCount { entry: entry.name.clone(), expected: entry.inputs.len() - n_state, got: inputs.len(), names: names(false) }
            });
        }
        let all = signature_order(entry, inputs.iter().map(|t| (t.dtype(), t.shape())), state.iter().map(|(d, s)| (*d, s.as_slice())));
        Ok((entry_index, bind_inputs(entry, &all, &m.symbols)?))
    }

    /// Whether `MAX_PROFILE` asked for time per kernel.
    #[cfg(feature = "cuda")]
    pub(crate) fn profiling(&self) -> bool {
        self.profile.is_some()
    }

    /// Adds one call of `kernel` taking `t` to the profile.
    pub(crate) fn record_profile(&self, kernel: &str, t: std::time::Duration) {
        if let Some(p) = &self.profile {
            let mut p = p.lock().unwrap_or_else(|e| e.into_inner());
            let e = p.entry(kernel.to_string()).or_default();
            e.0 += 1;
            e.1 += t;
        }
    }

    /// The loaded kernels (the GPU executor calls the same host functions).
    #[cfg(feature = "cuda")]
    pub(crate) fn kernels(&self) -> &KernelLibrary {
        &self.kernels
    }

    /// Buffer lifetimes of entry `i`.
    #[cfg(feature = "cuda")]
    pub(crate) fn plan(&self, i: usize) -> (&[usize], &[usize]) {
        (&self.plans[i].root, &self.plans[i].last_use)
    }
}

/// The shape of every buffer of `entry` at the dims `syms`. A reshape (alias) whose sizes are
/// only known at run time must keep the element count.
pub(crate) fn buffer_shapes(entry: &Entry, syms: &[Option<i64>]) -> Result<Vec<Vec<usize>>, RuntimeError> {
    let mut shapes: Vec<Vec<usize>> = Vec::with_capacity(entry.buffers.len());
    for b in &entry.buffers {
        let shape = b.shape.iter().map(|d| d.eval(syms).map(|v| v.max(0) as usize)).collect::<Result<Vec<_>, _>>()?;
        if let BufferKind::Alias(a) = b.kind {
            if shape.iter().product::<usize>() != shapes[a].iter().product::<usize>() {
                return Err(RuntimeError::Reshape { from: shapes[a].clone(), to: shape });
            }
        }
        shapes.push(shape);
    }
    Ok(shapes)
}

/// An entry's read-only inputs and its state (mutable inputs), each in their own order,
/// merged into signature order. (Their counts are checked first.)
pub(crate) fn signature_order<T>(entry: &Entry, inputs: impl IntoIterator<Item = T>, state: impl IntoIterator<Item = T>) -> Vec<T> {
    let (mut ri, mut si) = (inputs.into_iter(), state.into_iter());
    entry.inputs.iter().filter_map(|sig| if sig.mutable { si.next() } else { ri.next() }).collect()
}

/// Checks inputs against the entry signature and binds the dimension symbols.
fn bind_inputs(entry: &Entry, inputs: &[(DType, &[usize])], names: &[String]) -> Result<Vec<Option<i64>>, RuntimeError> {
    if inputs.len() != entry.inputs.len() {
        return Err(RuntimeError::InputCount {
            entry: entry.name.clone(),
            expected: entry.inputs.len(),
            got: inputs.len(),
            names: entry.inputs.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", "),
        });
    }
    let mut syms: Vec<Option<i64>> = vec![None; names.len()];
    let mut bound_by: Vec<&str> = vec![""; names.len()];
    for (sig, &(dtype, shape)) in entry.inputs.iter().zip(inputs) {
        if dtype != sig.dtype {
            return Err(RuntimeError::InputDType { name: sig.name.clone(), expected: sig.dtype, got: dtype });
        }
        let expected = || {
            let dims: Vec<String> = sig.shape.iter().map(|d| d.display(names).to_string()).collect();
            format!("[{}]", dims.join(", "))
        };
        if shape.len() != sig.shape.len() {
            return Err(RuntimeError::InputShape { name: sig.name.clone(), expected: expected(), got: shape.to_vec() });
        }
        for (d, &actual) in sig.shape.iter().zip(shape) {
            let actual = actual as i64;
            match d {
                max_dialects::DimExpr::Sym(s) => {
                    let s = *s as usize;
                    match syms[s] {
                        None => {
                            syms[s] = Some(actual);
                            bound_by[s] = &sig.name;
                        }
                        Some(v) if v != actual => {
                            return Err(RuntimeError::InputShape {
                                name: sig.name.clone(),
                                expected: format!("{} (dim '{}' is {v}, from input '{}')", expected(), names[s], bound_by[s]),
                                got: shape.to_vec(),
                            })
                        }
                        Some(_) => {}
                    }
                }
                other => {
                    if other.eval(&syms).ok() != Some(actual) {
                        return Err(RuntimeError::InputShape { name: sig.name.clone(), expected: expected(), got: shape.to_vec() });
                    }
                }
            }
        }
    }
    Ok(syms)
}

/// Lifetimes of an entry's buffers: each alias resolves to the buffer that owns the memory
/// (its root), and each root's last use is the last dispatch binding it or any alias of it
/// (`usize::MAX` for outputs, which outlive the call).
struct BufferPlan {
    root: Vec<usize>,
    last_use: Vec<usize>,
}

impl BufferPlan {
    fn new(entry: &Entry) -> Self {
        let n = entry.buffers.len();
        let mut root: Vec<usize> = (0..n).collect();
        for (i, b) in entry.buffers.iter().enumerate() {
            if let BufferKind::Alias(a) = b.kind {
                // Aliases point backwards (checked when the artifact is opened).
                root[i] = if a < i { root[a] } else { a };
            }
        }
        let mut last_use = vec![0usize; n];
        for (di, d) in entry.dispatches.iter().enumerate() {
            for b in d.all_bindings() {
                if let Some(&r) = root.get(b) {
                    last_use[r] = last_use[r].max(di);
                }
            }
        }
        for &o in &entry.output_buffers {
            if let Some(&r) = root.get(o) {
                last_use[r] = usize::MAX;
            }
        }
        BufferPlan { root, last_use }
    }
}

/// A pooled buffer of at least `bytes` (the smallest that fits), or a new one.
fn take_buffer(pool: &mut Vec<AlignedBytes>, bytes: usize) -> AlignedBytes {
    let best = pool.iter().enumerate().filter(|(_, b)| b.capacity() >= bytes).min_by_key(|(_, b)| b.capacity()).map(|(i, _)| i);
    match best {
        Some(i) => {
            let mut b = pool.swap_remove(i);
            b.set_len(bytes);
            b
        }
        None => AlignedBytes::zeroed(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_get_a_cpu_each() {
        let cpus = crate::affinity::allowed_cpus();
        if crate::affinity::worker_cpus(cpus.len()).is_none() {
            eprintln!("skipped: fewer than 2 CPUs allowed, or pinning turned off");
            return;
        }
        let session = InferenceSession::with_threads(Device::Cpu, cpus.len());
        let seen: Vec<Vec<usize>> = session.pool.broadcast(|_| crate::affinity::allowed_cpus());
        assert_eq!(seen, cpus.iter().map(|c| vec![*c]).collect::<Vec<_>>());
        // One thread: left to the scheduler.
        let single = InferenceSession::with_threads(Device::Cpu, 1);
        assert_eq!(single.pool.broadcast(|_| crate::affinity::allowed_cpus()), vec![cpus]);
    }
}
