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
//! call's, and a model's graphs hold at most [`GRAPH_MEMORY`] together.

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

/// Device memory a model's recorded CUDA graphs may hold together (their own inputs,
/// temporaries and outputs), unless `MAX_CUDA_GRAPH_MB` says otherwise. A decode step's
/// graph needs a few MB to a few hundred (an 8B model's logits at batch 64: 33 MB); a long
/// prefill's, GBs, held for as long as the graph stays cached: the least recently used go
/// first to make room, and a call whose graph alone would not fit runs eagerly. (The
/// kernels' own scratch, allocated inside their host code, becomes the graph's memory nodes,
/// which CUDA manages: not counted here.)
pub const GRAPH_MEMORY: usize = 4 << 30;

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
    /// Bytes of all its buffers (inputs too).
    bytes: usize,
}

/// A call planned for recording: where its temporaries go ([`plan_temporaries`]) and the
/// bytes its graph would hold.
struct GraphPlan {
    /// Every buffer's shape at the call's dims.
    shapes: Vec<Vec<usize>>,
    /// The call's resident state, by input index ([`resident_inputs`]).
    resident: std::collections::HashMap<usize, u64>,
    slot_of: Vec<Option<usize>>,
    slot_bytes: Vec<usize>,
    input_bytes: usize,
}

impl GraphPlan {
    fn bytes(&self) -> usize {
        self.input_bytes + self.slot_bytes.iter().sum::<usize>()
    }
}

/// Buffers for a recorded call's temporaries, shared as an eager call's pool shares them:
/// walking the dispatches (each a list of buffer indices), a temporary root (`is_temp`)
/// takes, at its first dispatch, the smallest free slot of at least its `bytes` (or a new
/// one), and frees it after its last (`last_use`). Returns each buffer's slot (through its
/// root) and each slot's size.
fn plan_temporaries<'a>(dispatches: impl IntoIterator<Item = &'a [usize]>, root: &[usize], last_use: &[usize], bytes: &dyn Fn(usize) -> usize, is_temp: &dyn Fn(usize) -> bool) -> (Vec<Option<usize>>, Vec<usize>) {
    let mut slot_of: Vec<Option<usize>> = vec![None; root.len()];
    let mut slot_bytes: Vec<usize> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    for (di, bindings) in dispatches.into_iter().enumerate() {
        for &b in bindings {
            let r = root[b];
            if slot_of[r].is_none() && is_temp(r) {
                let need = bytes(r);
                slot_of[r] = Some(match best_fit(free.iter().map(|&s| slot_bytes[s]), need) {
                    Some(i) => free.swap_remove(i),
                    None => {
                        slot_bytes.push(need);
                        slot_bytes.len() - 1
                    }
                });
            }
        }
        for &b in bindings {
            let r = root[b];
            if last_use[r] == di {
                free.extend(slot_of[r]);
            }
        }
    }
    let slots: Vec<Option<usize>> = (0..root.len()).map(|b| slot_of[root[b]]).collect();
    (slots, slot_bytes)
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

/// The resident state of a recorded call (`key.2`), by input index.
fn resident_inputs(entry: &Entry, key: &GraphKey) -> std::collections::HashMap<usize, u64> {
    if key.2.is_empty() {
        return Default::default();
    }
    entry.inputs.iter().enumerate().filter(|(_, s)| s.mutable).map(|(i, _)| i).zip(key.2.iter().copied()).collect()
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
    /// The most bytes the graphs may hold ([`GRAPH_MEMORY`]).
    graph_budget: usize,
}

/// A shape's count of eager calls that marks it as too large to record.
const TOO_LARGE: u32 = u32::MAX;

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
        let graph_budget = match std::env::var("MAX_CUDA_GRAPH_MB") {
            Ok(v) => v.trim().parse::<usize>().map(|mb| mb << 20).map_err(|_| RuntimeError::Device(format!("MAX_CUDA_GRAPH_MB={v:?} is not a whole number of MB")))?,
            Err(_) => GRAPH_MEMORY,
        };
        Ok(GpuModel { dev, weights, pool: Mutex::new(Vec::new()), graphs: Mutex::new((Vec::new(), Default::default())), use_graphs, graph_budget })
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
            *runs = runs.saturating_add(1);
            if *runs >= 2 && *runs != TOO_LARGE {
                let plan = self.plan(model, &key, syms)?;
                if plan.bytes() > self.graph_budget {
                    tracing::debug!(bytes = plan.bytes(), budget = self.graph_budget, "a call too large to record runs eagerly");
                    seen.insert(key, TOO_LARGE);
                } else {
                    // Room first: the least recently used graphs go.
                    while !cache.is_empty() && (cache.len() >= GRAPH_CACHE || cache.iter().map(|c| c.bytes).sum::<usize>() + plan.bytes() > self.graph_budget) {
                        cache.remove(0);
                    }
                    let inst = self.record(model, key, syms, plan)?;
                    let r = self.replay(model, &inst, inputs, &mut state);
                    cache.push(inst);
                    return r;
                }
            }
        }
        self.execute_eagerly(model, entry_index, syms, inputs, &mut state)
    }

    /// Plans the recording of `key`'s entry at its shapes ([`GpuModel::record`]).
    fn plan(&self, model: &Model, key: &GraphKey, syms: &[Option<i64>]) -> Result<GraphPlan, RuntimeError> {
        let entry = &model.artifact().manifest().entries[key.0];
        let (root, last_use) = model.plan(key.0);
        let shapes = buffer_shapes(entry, syms)?;
        let bytes = |b: usize| shapes[b].iter().product::<usize>() * entry.buffers[b].dtype.size_bytes();
        let resident = resident_inputs(entry, key);
        let input_bytes = entry.buffers.iter().enumerate().filter(|(_, b)| matches!(b.kind, BufferKind::Input(i) if !resident.contains_key(&i))).map(|(i, _)| bytes(i)).sum();
        let is_temp = |r: usize| entry.buffers[r].kind == BufferKind::Temp;
        let (slot_of, slot_bytes) = plan_temporaries(entry.dispatches.iter().map(|d| d.bindings.as_slice()), root, last_use, &bytes, &is_temp);
        Ok(GraphPlan { shapes, resident, slot_of, slot_bytes, input_bytes })
    }

    /// Records a call of `key`'s entry at its shapes into a CUDA graph, with buffers of its
    /// own for every input (but resident state, used where it is), temporary and output.
    /// Temporaries share buffers as in an eager call (`plan`): one whose last dispatch has
    /// run hands its buffer to a later one (the launches run in stream order, in the graph
    /// as on the stream), so a graph holds about an eager call's peak, not the sum of every
    /// temporary of the step (which, for an 8B model's prefill, is tens of GB).
    fn record(&self, model: &Model, key: GraphKey, syms: &[Option<i64>], plan: GraphPlan) -> Result<GraphInstance, RuntimeError> {
        let entry_index = key.0;
        let entry = &model.artifact().manifest().entries[entry_index];
        let (root, _) = model.plan(entry_index);
        let dev = &self.dev;
        let bytes = plan.bytes();
        let GraphPlan { shapes, resident, slot_of, slot_bytes, .. } = plan;
        let mut owned = Vec::new();
        let slots = slot_bytes.iter().map(|&b| dev.alloc(b)).collect::<Result<Vec<_>, _>>()?;
        let mut ptrs: Vec<u64> = Vec::with_capacity(entry.buffers.len());
        for (b, buf) in entry.buffers.iter().enumerate() {
            let ptr = match buf.kind {
                BufferKind::Input(i) if resident.contains_key(&i) => resident[&i],
                BufferKind::Input(_) => {
                    owned.push(dev.alloc(shapes[b].iter().product::<usize>() * buf.dtype.size_bytes())?);
                    owned[owned.len() - 1].ptr()
                }
                BufferKind::Weight(s) => self.weight_ptr(s),
                // A temporary never bound by a dispatch has no slot (and no use).
                BufferKind::Alias(_) | BufferKind::Temp => slot_of[b].map_or(0, |s| slots[s].ptr()),
            };
            ptrs.push(ptr);
        }
        // Aliases of inputs and weights: their root's address.
        for (i, b) in entry.buffers.iter().enumerate() {
            if matches!(b.kind, BufferKind::Alias(_)) && ptrs[i] == 0 {
                ptrs[i] = ptrs[root[i]];
            }
        }
        let temp_bytes = slot_bytes.iter().sum();
        owned.extend(slots);
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
        Ok(GraphInstance { key, graph, _owned: owned, ptrs, shapes, temp_bytes, bytes })
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
    let best = best_fit(pool.iter().map(DeviceBuffer::len), bytes)?;
    Some(pool.swap_remove(best))
}

/// The index of the smallest of `sizes` that holds `need` bytes: the eager pool's choice
/// of a buffer, and a recording's of a slot ([`plan_temporaries`]).
fn best_fit(sizes: impl Iterator<Item = usize>, need: usize) -> Option<usize> {
    sizes.enumerate().filter(|&(_, s)| s >= need).min_by_key(|&(_, s)| s).map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::plan_temporaries;

    /// A chain of dispatches over buffers: 0 (an input), then temporaries, each written by
    /// one dispatch and read by the next; the last is an output.
    fn chain(n: usize) -> (Vec<Vec<usize>>, Vec<usize>, Vec<usize>) {
        let dispatches: Vec<Vec<usize>> = (0..n).map(|d| vec![d, d + 1]).collect();
        let root: Vec<usize> = (0..=n).collect();
        let mut last_use: Vec<usize> = (0..=n).map(|b| b.min(n - 1)).collect();
        last_use[n] = usize::MAX;
        (dispatches, root, last_use)
    }

    #[test]
    fn a_chain_of_temporaries_takes_two_buffers_in_turn() {
        let (dispatches, root, last_use) = chain(8);
        let (slot_of, slot_bytes) = plan_temporaries(dispatches.iter().map(Vec::as_slice), &root, &last_use, &|_| 100, &|b| b > 0);
        assert_eq!(slot_of[0], None, "inputs have no slot");
        // Buffer d + 1 is written by dispatch d while d is read: two slots in turn, the
        // output (never freed) in one of them.
        assert_eq!(slot_bytes, vec![100, 100]);
        for b in 1..8 {
            assert_ne!(slot_of[b], slot_of[b + 1], "buffers {b} and {} are live together", b + 1);
        }
    }

    #[test]
    fn the_smallest_free_slot_that_fits_is_taken_and_outputs_keep_theirs() {
        // Dispatch 0 writes 1 (400 bytes) and 2 (100); 1 dies. Dispatch 1 reads 2 and writes
        // 3 (100): 1's slot is free, 400 >= 100, so 3 takes it. Dispatch 2 writes 4 (500): no
        // free slot fits, a new one. 2 is an output: its slot is never reused.
        let dispatches = [vec![0, 1, 2], vec![2, 3], vec![3, 4]];
        let root = vec![0, 1, 2, 3, 4];
        let last_use = vec![0, 0, usize::MAX, 2, usize::MAX];
        let size = [0, 400, 100, 100, 500];
        let (slot_of, slot_bytes) = plan_temporaries(dispatches.iter().map(Vec::as_slice), &root, &last_use, &|b| size[b], &|b| b > 0);
        assert_eq!(slot_of[3], slot_of[1]);
        assert_eq!(slot_bytes, vec![400, 100, 500]);
        assert_eq!(slot_of[4], Some(2));
    }

    #[test]
    fn an_alias_lives_in_its_roots_slot() {
        // Buffer 2 is a reshape of 1; dispatch 1 reads it.
        let dispatches = [vec![0, 1], vec![2, 3]];
        let root = vec![0, 1, 1, 3];
        let last_use = vec![0, 1, 1, usize::MAX];
        let (slot_of, slot_bytes) = plan_temporaries(dispatches.iter().map(Vec::as_slice), &root, &last_use, &|_| 64, &|b| b == 1 || b == 3);
        assert_eq!(slot_of[2], slot_of[1]);
        assert_ne!(slot_of[3], slot_of[1], "1 is read by dispatch 1, which writes 3");
        assert_eq!(slot_bytes.len(), 2);
    }
}
