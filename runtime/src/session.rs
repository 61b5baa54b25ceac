//! Sessions and loaded models: the public execution API.

use crate::artifact::{AlignedBytes, Artifact, BufferKind, Entry};
use crate::cpu::{check_target, KernelLibrary};
use crate::error::RuntimeError;
use crate::tensor::Tensor;
use std::path::Path;
use std::sync::Arc;

/// Where a model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
    /// A CUDA GPU by ordinal (not available in this build).
    Gpu(usize),
}

/// Loads artifacts onto a device. Holds the thread pool models share, so several models or
/// requests do not oversubscribe the cores.
pub struct InferenceSession {
    device: Device,
    pool: Arc<rayon::ThreadPool>,
}

impl InferenceSession {
    /// A session on `device` using all cores.
    pub fn new(device: Device) -> Self {
        let n = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        Self::with_threads(device, n)
    }

    /// A session on `device` with `threads` worker threads (at least 1).
    pub fn with_threads(device: Device, threads: usize) -> Self {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .thread_name(|i| format!("max-worker-{i}"))
            .build()
            .expect("building the worker thread pool");
        InferenceSession { device, pool: Arc::new(pool) }
    }

    /// Number of worker threads.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Loads an artifact: checks its target, loads its kernels.
    pub fn load(&self, artifact: &Artifact) -> Result<Model, RuntimeError> {
        if let Device::Gpu(i) = self.device {
            return Err(RuntimeError::Device(format!("gpu:{i}")));
        }
        check_target(&artifact.manifest().target)?;
        artifact.check_program()?;
        let kernels = KernelLibrary::load(artifact)?;
        Ok(Model { artifact: artifact.clone(), kernels, pool: self.pool.clone() })
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

impl Model {
    /// The artifact this model was loaded from.
    pub fn artifact(&self) -> &Artifact {
        &self.artifact
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
        // Every input in signature order, and where its memory is.
        let mut ptrs_in: Vec<*mut u8> = Vec::with_capacity(entry.inputs.len());
        let mut all: Vec<&Tensor> = Vec::with_capacity(entry.inputs.len());
        let (mut ri, mut si) = (0, 0);
        let state_ptrs: Vec<*mut u8> = state.iter_mut().map(|t| t.bytes_mut().as_mut_ptr()).collect();
        for sig in &entry.inputs {
            if sig.mutable {
                all.push(&state[si]);
                ptrs_in.push(state_ptrs[si]);
                si += 1;
            } else {
                all.push(&inputs[ri]);
                ptrs_in.push(inputs[ri].bytes().as_ptr() as *mut u8);
                ri += 1;
            }
        }
        let syms = bind_inputs(entry, &all, &m.symbols)?;

        // Shapes and memory of every buffer.
        let mut shapes: Vec<Vec<usize>> = Vec::with_capacity(entry.buffers.len());
        let mut temps: Vec<Option<AlignedBytes>> = Vec::with_capacity(entry.buffers.len());
        let mut ptrs: Vec<*mut u8> = Vec::with_capacity(entry.buffers.len());
        for b in &entry.buffers {
            let shape = b.shape.iter().map(|d| d.eval(&syms).map(|v| v.max(0) as usize)).collect::<Result<Vec<_>, _>>()?;
            let bytes = shape.iter().product::<usize>() * b.dtype.size_bytes();
            let (ptr, temp) = match b.kind {
                BufferKind::Input(i) => (ptrs_in[i], None),
                BufferKind::Weight(s) => (self.artifact.section_bytes(s).as_ptr() as *mut u8, None),
                BufferKind::Alias(a) => {
                    // A reshape whose size is only known at run time must keep the count.
                    let parent: usize = shapes[a].iter().product();
                    if shape.iter().product::<usize>() != parent {
                        return Err(RuntimeError::Reshape { from: shapes[a].clone(), to: shape });
                    }
                    (ptrs[a], None)
                }
                BufferKind::Temp => {
                    let mut t = AlignedBytes::zeroed(bytes);
                    (t.as_mut_slice().as_mut_ptr(), Some(t))
                }
            };
            shapes.push(shape);
            ptrs.push(ptr);
            temps.push(temp);
        }

        for (di, d) in entry.dispatches.iter().enumerate() {
            let f = self.kernels.kernel(entry_index, di).ok_or_else(|| RuntimeError::KernelLoad(format!("kernel '{}' not loaded", d.kernel)))?;
            let bind: Vec<*mut u8> = d.bindings.iter().map(|&b| ptrs[b]).collect();
            let push = d.push_constants.iter().map(|e| e.eval(&syms)).collect::<Result<Vec<_>, _>>()?;
            let extent = d.workgroups.eval(&syms)?.max(1);
            let wg = extent.min(self.pool.current_num_threads() as i64).max(1);
            let b = Bindings { ptrs: &bind, push: &push };
            let status = if wg == 1 {
                // SAFETY: bindings point at live buffers sized from the same shapes the kernel
                // was compiled against; push constants are those sizes.
                unsafe { f(b.ptrs.as_ptr(), b.push.as_ptr(), 0, 1) }
            } else {
                let worst = std::sync::atomic::AtomicI32::new(0);
                self.pool.scope(|s| {
                    for id in 0..wg {
                        let (b, worst) = (&b, &worst);
                        s.spawn(move |_| {
                            // SAFETY: as above; workgroups write disjoint rows.
                            let st = unsafe { f(b.ptrs.as_ptr(), b.push.as_ptr(), id, wg) };
                            if st != 0 {
                                worst.store(st, std::sync::atomic::Ordering::Relaxed);
                            }
                        });
                    }
                });
                worst.into_inner()
            };
            if status != 0 {
                return Err(RuntimeError::KernelFailed { kernel: d.kernel.clone(), status });
            }
        }

        let mut outs = Vec::with_capacity(entry.outputs.len());
        for (k, &b) in entry.output_buffers.iter().enumerate() {
            let sig = &entry.outputs[k];
            // Hand a temp over without copying the first time it is returned.
            let t = match temps[b].take() {
                Some(bytes) => Tensor::from_aligned(sig.dtype, &shapes[b], bytes)?,
                None => {
                    let n = shapes[b].iter().product::<usize>() * sig.dtype.size_bytes();
                    // SAFETY: `ptrs[b]` points at a live buffer of at least `n` bytes.
                    let src = unsafe { std::slice::from_raw_parts(ptrs[b] as *const u8, n) };
                    Tensor::from_bytes(sig.dtype, &shapes[b], src)?
                }
            };
            outs.push(t);
        }
        Ok(outs)
    }
}

/// Checks inputs against the entry signature and binds the dimension symbols.
fn bind_inputs(entry: &Entry, inputs: &[&Tensor], names: &[String]) -> Result<Vec<Option<i64>>, RuntimeError> {
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
    for (sig, t) in entry.inputs.iter().zip(inputs) {
        if t.dtype() != sig.dtype {
            return Err(RuntimeError::InputDType { name: sig.name.clone(), expected: sig.dtype, got: t.dtype() });
        }
        let expected = || {
            let dims: Vec<String> = sig.shape.iter().map(|d| d.display(names).to_string()).collect();
            format!("[{}]", dims.join(", "))
        };
        if t.shape().len() != sig.shape.len() {
            return Err(RuntimeError::InputShape { name: sig.name.clone(), expected: expected(), got: t.shape().to_vec() });
        }
        for (d, &actual) in sig.shape.iter().zip(t.shape()) {
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
                                got: t.shape().to_vec(),
                            })
                        }
                        Some(_) => {}
                    }
                }
                other => {
                    if other.eval(&syms).ok() != Some(actual) {
                        return Err(RuntimeError::InputShape { name: sig.name.clone(), expected: expected(), got: t.shape().to_vec() });
                    }
                }
            }
        }
    }
    Ok(syms)
}
