//! The GPU executor (feature `cuda`): runs a GPU artifact's program with every buffer in
//! device memory.
//!
//! Weights are uploaded once, at load. A call uploads its inputs, runs each dispatch's host
//! function (which launches the dispatch's kernels on the device's stream), and downloads
//! the outputs, and the state tensors it updated. Temporaries come from a per-model pool of
//! device buffers and go back to it after their last use; since all work is on one stream,
//! a buffer can be reused by the next dispatch without waiting.
//!
//! Calls that repeat an entry with the same input shapes (a decode loop, a server's steady
//! state) replay a CUDA graph: the second such call records the dispatches' launches, with
//! buffers of its own that stay allocated, and later calls only copy inputs in, launch the
//! graph and copy outputs out. Up to [`GRAPH_CACHE`] shapes are kept (least recently used
//! first out); `MAX_CUDA_GRAPHS=0` turns this off, and so does `MAX_PROFILE` (which times
//! each dispatch). A graph's temporaries share buffers by the same lifetimes as an eager
//! call's.

use crate::artifact::{Artifact, BufferKind, SectionKind};
use crate::cpu::KernelLibrary;
use crate::artifact::Entry;
use crate::cuda::{init_library, CudaDevice, CudaGraph, DeviceBuffer};
use crate::error::RuntimeError;
use crate::session::{buffer_shapes, signature_order, Model};
use crate::tensor::Tensor;
use std::sync::{Arc, Mutex};

/// Input shapes per model whose CUDA graphs are kept.
pub const GRAPH_CACHE: usize = 8;

/// A recorded call: the graph and the buffers its launches use.
struct GraphInstance {
    key: GraphKey,
    graph: CudaGraph,
    /// The buffers the graph's launches use (inputs, temporaries, outputs), kept alive with
    /// it; `ptrs` has every buffer's address (aliases and weights point elsewhere).
    _owned: Vec<DeviceBuffer>,
    ptrs: Vec<u64>,
    shapes: Vec<Vec<usize>>,
    /// Bytes of its temporaries' (and outputs') buffers.
    temp_bytes: usize,
}

/// An entry, its bound dims and the device addresses of its resident state (none when the
/// state comes from the host): what a recorded graph is for.
type GraphKey = (usize, Vec<Option<i64>>, Vec<u64>);

/// The mutable inputs of a call: host tensors (copied in, and back out after the call), or
/// buffers resident on this device (see [`crate::State`]), used in place.
pub(crate) enum StateRef<'a> {
    Host(&'a mut [Tensor]),
    Device(&'a [u64]),
}

impl StateRef<'_> {
    /// The device addresses of resident state (empty for host state).
    fn device_ptrs(&self) -> Vec<u64> {
        match self {
            StateRef::Host(_) => Vec::new(),
            StateRef::Device(p) => p.to_vec(),
        }
    }
}

/// Where input `i` (in signature order) of a call comes from.
enum Source<'a> {
    Host(&'a Tensor),
    Device(u64),
}

/// The call's inputs in signature order: read-only inputs from `inputs`, mutable ones from
/// the state.
fn sources<'a>(entry: &Entry, inputs: &'a [Tensor], state: &'a StateRef<'_>) -> Vec<Source<'a>> {
    let state: Vec<Source<'a>> = match state {
        StateRef::Host(t) => t.iter().map(Source::Host).collect(),
        StateRef::Device(p) => p.iter().map(|&p| Source::Device(p)).collect(),
    };
    signature_order(entry, inputs.iter().map(Source::Host), state)
}

/// Device memory a model holds beyond its weights ([`crate::Model::device_memory`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeviceMemory {
    /// Bytes of the buffers pooled for the next eager call (as many as its largest call
    /// needed at once).
    pub pooled_bytes: usize,
    /// Recorded CUDA graphs kept.
    pub graphs: usize,
    /// Bytes of those graphs' temporaries and outputs (each graph also holds its inputs).
    pub graph_temp_bytes: usize,
}

/// A model's device state.
pub struct GpuModel {
    dev: Arc<CudaDevice>,
    /// Weight sections in device memory, by section index.
    weights: Vec<Option<DeviceBuffer>>,
    /// Temporaries no longer in use.
    pool: Mutex<Vec<DeviceBuffer>>,
    /// Recorded calls, most recently used last; and how often each shape ran eagerly.
    graphs: Mutex<(Vec<GraphInstance>, std::collections::HashMap<GraphKey, u32>)>,
    use_graphs: bool,
}

impl GpuModel {
    /// Opens GPU `ordinal` after checking that the artifact's kernels can run on it.
    pub fn check_target(ordinal: usize, target: &crate::artifact::Target) -> Result<Arc<CudaDevice>, RuntimeError> {
        if target.arch != "cuda" {
            return Err(RuntimeError::Device(format!(
                "this artifact was compiled for a CPU ({}); compile it with --target cuda:sm_XX to run it on gpu:{ordinal}",
                target.arch
            )));
        }
        let dev = CudaDevice::open(ordinal)?;
        let needed: i32 = target.cpu.strip_prefix("sm_").and_then(|v| v.parse().ok()).unwrap_or(i32::MAX);
        let (major, minor) = dev.compute_capability;
        if major * 10 + minor < needed {
            return Err(RuntimeError::Device(format!(
                "gpu:{ordinal} ({}) is sm_{major}{minor}, but the artifact was compiled for {}; recompile with --target cuda:sm_{major}{minor}",
                dev.name, target.cpu
            )));
        }
        Ok(dev)
    }

    /// Wires the artifact's host library to the device and uploads its weights.
    pub fn load(dev: Arc<CudaDevice>, artifact: &Artifact, kernels: &KernelLibrary) -> Result<GpuModel, RuntimeError> {
        dev.bind()?;
        init_library(&dev, kernels.library())?;
        let mut weights = Vec::new();
        for (i, s) in artifact.manifest().sections.iter().enumerate() {
            weights.push(if matches!(s.kind, SectionKind::Weight | SectionKind::External) { Some(dev.upload(artifact.section_bytes(i))?) } else { None });
        }
        tracing::debug!(device = ?dev, "model loaded on the GPU");
        let use_graphs = std::env::var("MAX_CUDA_GRAPHS").map_or(true, |v| v != "0");
        Ok(GpuModel { dev, weights, pool: Mutex::new(Vec::new()), graphs: Mutex::new((Vec::new(), Default::default())), use_graphs })
    }

    /// The memory this model holds beyond its weights.
    pub fn memory(&self) -> DeviceMemory {
        let pooled_bytes = self.pool.lock().unwrap_or_else(|e| e.into_inner()).iter().map(DeviceBuffer::len).sum();
        let g = self.graphs.lock().unwrap_or_else(|e| e.into_inner());
        DeviceMemory { pooled_bytes, graphs: g.0.len(), graph_temp_bytes: g.0.iter().map(|i| i.temp_bytes).sum() }
    }

    /// Runs entry `entry_index` (its inputs already checked and its dims bound in `syms`).
    pub(crate) fn execute(&self, model: &Model, entry_index: usize, syms: &[Option<i64>], inputs: &[Tensor], mut state: StateRef<'_>) -> Result<Vec<Tensor>, RuntimeError> {
        if self.use_graphs && !model.profiling() {
            let key = (entry_index, syms.to_vec(), state.device_ptrs());
            let mut g = self.graphs.lock().unwrap_or_else(|e| e.into_inner());
            let (cache, seen) = &mut *g;
            if let Some(i) = cache.iter().position(|c| c.key == key) {
                let inst = cache.remove(i);
                let r = self.replay(model, &inst, inputs, &mut state);
                cache.push(inst);
                return r;
            }
            let runs = seen.entry(key.clone()).or_insert(0);
            *runs += 1;
            if *runs >= 2 {
                let inst = self.record(model, key, syms)?;
                let r = self.replay(model, &inst, inputs, &mut state);
                if cache.len() >= GRAPH_CACHE {
                    cache.remove(0);
                }
                cache.push(inst);
                return r;
            }
        }
        self.execute_eagerly(model, entry_index, syms, inputs, &mut state)
    }

    /// Records a call of `key`'s entry at its shapes into a CUDA graph, with buffers of its
    /// own for every input (but resident state, used where it is), temporary and output.
    /// Temporaries share buffers as in an eager call: one whose last dispatch has run hands
    /// its buffer to a later one (the launches run in stream order, in the graph as on the
    /// stream), so a graph holds about an eager call's peak, not the sum of every temporary
    /// of the step (which, for an 8B model's prefill, is tens of GB).
    fn record(&self, model: &Model, key: GraphKey, syms: &[Option<i64>]) -> Result<GraphInstance, RuntimeError> {
        let entry_index = key.0;
        let entry = &model.artifact().manifest().entries[entry_index];
        let (root, last_use) = model.plan(entry_index);
        let dev = &self.dev;
        let shapes = buffer_shapes(entry, syms)?;
        let bytes_of = |b: usize| shapes[b].iter().product::<usize>() * entry.buffers[b].dtype.size_bytes();
        let mut ptrs: Vec<u64> = Vec::with_capacity(entry.buffers.len());
        let mut owned = Vec::new();
        // Resident state, by input index.
        let mut resident = std::collections::HashMap::new();
        if !key.2.is_empty() {
            for (k, (i, _)) in entry.inputs.iter().enumerate().filter(|(_, s)| s.mutable).enumerate() {
                resident.insert(i, key.2[k]);
            }
        }
        for (b, buf) in entry.buffers.iter().enumerate() {
            let ptr = match buf.kind {
                BufferKind::Input(i) if resident.contains_key(&i) => resident[&i],
                BufferKind::Input(_) => {
                    owned.push(dev.alloc(bytes_of(b))?);
                    owned[owned.len() - 1].ptr()
                }
                BufferKind::Weight(s) => self.weight_ptr(s),
                // Placed below, at their first dispatch.
                BufferKind::Alias(_) | BufferKind::Temp => 0,
            };
            ptrs.push(ptr);
        }
        // Temporaries, in dispatch order: from the graph's free buffers (smallest that fits)
        // or new, and free again after their last dispatch.
        let mut held: Vec<Option<DeviceBuffer>> = (0..entry.buffers.len()).map(|_| None).collect();
        let mut free: Vec<DeviceBuffer> = Vec::new();
        for (di, d) in entry.dispatches.iter().enumerate() {
            for &b in &d.bindings {
                let r = root[b];
                if ptrs[r] == 0 && entry.buffers[r].kind == BufferKind::Temp {
                    let t = take_buffer(&mut free, bytes_of(r)).map_or_else(|| dev.alloc(bytes_of(r)), Ok)?;
                    ptrs[r] = t.ptr();
                    held[r] = Some(t);
                }
            }
            for &b in &d.bindings {
                let r = root[b];
                if last_use[r] == di {
                    free.extend(held[r].take());
                }
            }
        }
        for (i, b) in entry.buffers.iter().enumerate() {
            if let BufferKind::Alias(_) = b.kind {
                ptrs[i] = ptrs[root[i]];
            }
        }
        let temp_bytes = held.iter().flatten().chain(&free).map(DeviceBuffer::len).sum();
        owned.extend(held.into_iter().flatten());
        owned.extend(free);
        dev.sync()?;
        let ((), graph) = dev.capture(|| {
            for (di, d) in entry.dispatches.iter().enumerate() {
                let f = model.kernels().kernel(entry_index, di).ok_or_else(|| RuntimeError::KernelLoad(format!("kernel '{}' not loaded", d.kernel)))?;
                let bind: Vec<*mut u8> = d.bindings.iter().map(|&b| ptrs[root[b]] as usize as *mut u8).collect();
                let push = d.push_constants.iter().map(|e| e.eval(syms)).collect::<Result<Vec<_>, _>>()?;
                // SAFETY: as in execute_eagerly; the launches are recorded, not run.
                let status = unsafe { f(bind.as_ptr(), push.as_ptr(), 0, 1) };
                if status != 0 {
                    return Err(RuntimeError::KernelFailed { kernel: d.kernel.clone(), status });
                }
            }
            Ok(())
        })?;
        tracing::debug!(entry = %entry.name, temp_bytes, "recorded a CUDA graph");
        Ok(GraphInstance { key, graph, _owned: owned, ptrs, shapes, temp_bytes })
    }

    /// Runs a recorded call: inputs in, graph, outputs (and host state) out.
    fn replay(&self, model: &Model, inst: &GraphInstance, inputs: &[Tensor], state: &mut StateRef<'_>) -> Result<Vec<Tensor>, RuntimeError> {
        let entry = &model.artifact().manifest().entries[inst.key.0];
        let dev = &self.dev;
        let input_ptr = |i: usize| entry.buffers.iter().position(|b| b.kind == BufferKind::Input(i)).map(|b| inst.ptrs[b]);
        for (i, src) in sources(entry, inputs, state).iter().enumerate() {
            if let (Source::Host(t), Some(p)) = (src, input_ptr(i)) {
                dev.copy_in_async(p, t.bytes())?;
            }
        }
        dev.launch(&inst.graph)?;
        self.read_results(model, inst.key.0, &inst.shapes, &inst.ptrs, &input_ptr, state)
    }

    /// The outputs of a finished call, and host state tensors the device updated in place
    /// (copied back to the caller's); `input_ptr(i)` is where input `i` lives.
    fn read_results(&self, model: &Model, entry_index: usize, shapes: &[Vec<usize>], ptrs: &[u64], input_ptr: &dyn Fn(usize) -> Option<u64>, state: &mut StateRef<'_>) -> Result<Vec<Tensor>, RuntimeError> {
        let entry: &Entry = &model.artifact().manifest().entries[entry_index];
        let (root, _) = model.plan(entry_index);
        let mut outs = Vec::with_capacity(entry.outputs.len());
        for (sig, &b) in entry.outputs.iter().zip(&entry.output_buffers) {
            outs.push(self.tensor_at(ptrs[root[b]], sig.dtype, &shapes[b])?);
        }
        let StateRef::Host(state) = state else { return Ok(outs) };
        let mutable = entry.inputs.iter().enumerate().filter(|(_, sig)| sig.mutable).map(|(i, _)| i);
        for (t, i) in state.iter_mut().zip(mutable) {
            if let Some(p) = input_ptr(i) {
                self.dev.copy_out(p, t.bytes_mut())?;
            }
        }
        Ok(outs)
    }

    /// `bytes` in a new device buffer of this model's device.
    pub(crate) fn upload(&self, bytes: &[u8]) -> Result<DeviceBuffer, RuntimeError> {
        self.dev.bind()?;
        self.dev.upload(bytes)
    }

    /// The contents of `buf` as a host tensor.
    pub(crate) fn download(&self, buf: &DeviceBuffer, dtype: max_dialects::DType, shape: &[usize]) -> Result<Tensor, RuntimeError> {
        self.dev.bind()?;
        self.tensor_at(buf.ptr(), dtype, shape)
    }

    /// The tensor of `dtype` and `shape` at device address `ptr`, copied to the host.
    fn tensor_at(&self, ptr: u64, dtype: max_dialects::DType, shape: &[usize]) -> Result<Tensor, RuntimeError> {
        let mut bytes = vec![0u8; shape.iter().product::<usize>() * dtype.size_bytes()];
        self.dev.copy_out(ptr, &mut bytes)?;
        Tensor::from_bytes(dtype, shape, &bytes)
    }

    /// The device address of weight section `s` (0 if it has none).
    fn weight_ptr(&self, s: usize) -> u64 {
        self.weights.get(s).and_then(|w| w.as_ref()).map_or(0, DeviceBuffer::ptr)
    }

    /// Runs entry `entry_index` dispatch by dispatch, temporaries from the pool.
    fn execute_eagerly(&self, model: &Model, entry_index: usize, syms: &[Option<i64>], inputs: &[Tensor], state: &mut StateRef<'_>) -> Result<Vec<Tensor>, RuntimeError> {
        let m = model.artifact().manifest();
        let entry = &m.entries[entry_index];
        let (root, last_use) = model.plan(entry_index);
        let dev = &self.dev;
        dev.bind()?;
        // Host inputs are staged in device buffers; resident state is used where it is.
        let mut staged: Vec<DeviceBuffer> = Vec::new();
        let mut input_ptrs: Vec<u64> = Vec::with_capacity(entry.inputs.len());
        for src in sources(entry, inputs, state) {
            input_ptrs.push(match src {
                Source::Host(t) => {
                    staged.push(dev.upload(t.bytes())?);
                    staged[staged.len() - 1].ptr()
                }
                Source::Device(p) => p,
            });
        }

        let shapes = buffer_shapes(entry, syms)?;
        let mut ptrs: Vec<u64> = Vec::with_capacity(entry.buffers.len());
        for b in &entry.buffers {
            let ptr = match b.kind {
                BufferKind::Input(i) => input_ptrs[i],
                BufferKind::Weight(s) => self.weight_ptr(s),
                BufferKind::Alias(a) => ptrs[a],
                BufferKind::Temp => 0,
            };
            ptrs.push(ptr);
        }
        let mut temps: Vec<Option<DeviceBuffer>> = (0..entry.buffers.len()).map(|_| None).collect();
        let mut pool = std::mem::take(&mut *self.pool.lock().unwrap_or_else(|e| e.into_inner()));
        for (di, d) in entry.dispatches.iter().enumerate() {
            let f = model.kernels().kernel(entry_index, di).ok_or_else(|| RuntimeError::KernelLoad(format!("kernel '{}' not loaded", d.kernel)))?;
            for &b in &d.bindings {
                let r = root[b];
                if ptrs[r] == 0 {
                    let bytes = shapes[r].iter().product::<usize>() * entry.buffers[r].dtype.size_bytes();
                    let t = take_buffer(&mut pool, bytes).map_or_else(|| dev.alloc(bytes), Ok)?;
                    ptrs[r] = t.ptr();
                    temps[r] = Some(t);
                }
            }
            let bind: Vec<*mut u8> = d.bindings.iter().map(|&b| ptrs[root[b]] as usize as *mut u8).collect();
            let push = d.push_constants.iter().map(|e| e.eval(syms)).collect::<Result<Vec<_>, _>>()?;
            // SAFETY: the host function only forwards the binding addresses (device memory
            // sized from the same shapes it was compiled against) to the kernels it launches.
            let call = || unsafe { f(bind.as_ptr(), push.as_ptr(), 0, 1) };
            let status = if model.profiling() {
                let (st, t) = dev.timed(call)?;
                model.record_profile(&d.kernel, t);
                st
            } else {
                dev.with_stream(call)?
            };
            if status != 0 {
                return Err(RuntimeError::KernelFailed { kernel: d.kernel.clone(), status });
            }
            for &b in &d.bindings {
                let r = root[b];
                if last_use[r] == di {
                    if let Some(t) = temps[r].take() {
                        pool.push(t);
                    }
                }
            }
        }
        dev.sync()?;
        let outs = self.read_results(model, entry_index, &shapes, &ptrs, &|i| Some(input_ptrs[i]), state)?;
        drop(staged);
        // Outputs were copied out: their buffers serve the next call.
        pool.extend(temps.into_iter().flatten());
        *self.pool.lock().unwrap_or_else(|e| e.into_inner()) = pool;
        Ok(outs)
    }
}

/// The smallest pooled buffer of at least `bytes`.
fn take_buffer(pool: &mut Vec<DeviceBuffer>, bytes: usize) -> Option<DeviceBuffer> {
    let best = pool.iter().enumerate().filter(|(_, b)| b.len() >= bytes).min_by_key(|(_, b)| b.len()).map(|(i, _)| i)?;
    Some(pool.swap_remove(best))
}
