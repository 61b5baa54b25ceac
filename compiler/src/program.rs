//! Dispatch formation and the runtime program: which ops become kernels, which buffers
//! exist, and what each kernel launch binds.
//!
//! Weights and constants become aligned weight sections; `reshape` of a row-major buffer is
//! a free alias; every other op belongs to a dispatch region ([`crate::fusion`]), and each
//! region is one kernel. Buffer shapes and push constants are dim expressions the
//! runtime evaluates from the input shapes.

use crate::error::CompileError;
use crate::custom::{CustomImpl, KernelRegistry};
use crate::fusion::{form_regions, Policy, Region};
use crate::lower::{pack_rhs, packs_rhs, partition_extent, BindingType, FusedOp, KernelSpec, MlirCall, ValueRef, PACK_WIDTH};
use crate::weights::{generate, WeightStore};
use max_dialects::print::f64s_to_bytes;
use max_dialects::{DType, Diagnostic, DimExpr, Graph, Op, UnaryOp, ValueId};
use max_runtime::artifact::{Buffer, BufferKind, ColumnSplit, Dispatch, Entry, TensorSig};
use std::collections::{HashMap, HashSet};

/// Where a kernel's memref dim comes from in the ABI wrapper.
#[derive(Debug, Clone, PartialEq)]
pub enum DimSource {
    Static(i64),
    /// Index into the dispatch's push constants.
    Push(usize),
}

/// A compiled-to-be kernel with its ABI.
#[derive(Debug, Clone)]
pub struct PlannedKernel {
    pub spec: KernelSpec,
    /// Per binding, per dim: static size or push constant.
    pub dims: Vec<Vec<DimSource>>,
}

/// The program of all graphs: kernels, entries, weight sections (in section order after the
/// kernel library, which is section 0).
#[derive(Debug, Default)]
pub struct Program {
    pub kernels: Vec<PlannedKernel>,
    pub entries: Vec<Entry>,
    pub weights: Vec<(String, Vec<u8>)>,
    pub symbols: Vec<String>,
    /// Kernels by what they compute (spec and binding dims, name aside): dispatches of
    /// identical regions share one kernel (a model's layers differ only in their weights).
    by_body: HashMap<String, String>,
    /// Compiling for an NVIDIA GPU (set before adding graphs).
    pub gpu: Option<GpuOptions>,
    /// Weights stay out of the artifact (set before adding graphs): their sections record
    /// only sizes (see [`Program::external_sizes`]).
    pub external_weights: bool,
    /// Byte sizes of external weight sections, by section index (0-based).
    pub external_sizes: HashMap<usize, u64>,
}

/// What a GPU compile changes in dispatch formation.
#[derive(Debug, Clone, Copy, Default)]
pub struct GpuOptions {
    /// f32 matmuls may run on the tensor cores as TF32.
    pub allow_tf32: bool,
    /// The chip has warpgroup MMA (sm_90).
    pub wgmma: bool,
}

/// Symbols are per graph; the artifact has one table, so graphs after the first are shifted.
fn shift(e: &DimExpr, by: u32) -> DimExpr {
    e.map_syms(&|s| s + by)
}

impl Program {
    /// The section holding `bytes`: a section of the same name and contents is shared (two
    /// graphs of a module reading one weight); the same name with other contents gets a new,
    /// suffixed name.
    fn weight_section(&mut self, name: String, bytes: Vec<u8>) -> usize {
        if let Some(i) = self.weights.iter().position(|(n, b)| *n == name && *b == bytes) {
            return i + 1;
        }
        let mut unique = name.clone();
        let mut k = 1;
        while self.weights.iter().any(|(n, _)| *n == unique) {
            k += 1;
            unique = format!("{name}#{k}");
        }
        self.weights.push((unique, bytes));
        self.weights.len()
    }

    /// Adds a verified graph as an entry.
    pub fn add_graph(&mut self, graph: &Graph, store: &WeightStore, fuse: bool, kernels: &KernelRegistry, signatures: &HashMap<String, MlirCall>) -> Result<(), CompileError> {
        let base = self.symbols.len() as u32;
        self.symbols.extend(graph.symbols.iter().map(|s| if base == 0 { s.clone() } else { format!("{}.{s}", graph.name) }));
        let mut buffers: Vec<Buffer> = Vec::new();
        let mut of_value: HashMap<ValueId, usize> = HashMap::new();
        let sig = |v: ValueId, name: String| {
            let t = graph.ty(v);
            TensorSig { name, dtype: t.dtype, shape: t.dims.iter().map(|d| shift(d, base)).collect(), mutable: false }
        };
        let buffer = |v: ValueId, kind: BufferKind| {
            let t = graph.ty(v);
            Buffer { dtype: t.dtype, shape: t.dims.iter().map(|d| shift(d, base)).collect(), kind }
        };
        // Inputs a cache write updates are the caller's mutable state.
        let mutable: HashSet<ValueId> = graph.nodes.iter().filter(|n| matches!(n.op, Op::CacheWrite { .. })).map(|n| n.inputs[0]).collect();
        for n in graph.nodes.iter().filter(|n| matches!(n.op, Op::CacheWrite { .. })) {
            let root = cache_root(graph, n.inputs[0]);
            if !graph.inputs.iter().any(|i| i.value == root) {
                return Err(Diagnostic::new(&n.loc, "'max.cache_write' must write a graph input (the caller's KV cache) or the result of another cache write").into());
            }
        }
        let inputs: Vec<TensorSig> = graph
            .inputs
            .iter()
            .map(|i| TensorSig { mutable: mutable.contains(&i.value), ..sig(i.value, i.name.clone()) })
            .collect();
        for (k, i) in graph.inputs.iter().enumerate() {
            buffers.push(buffer(i.value, BufferKind::Input(k)));
            of_value.insert(i.value, buffers.len() - 1);
        }
        let mut dispatches = Vec::new();
        let gpu = self.gpu.is_some();
        // The CPU micro-kernel's packed weight layout means nothing to the GPU kernels, and
        // external weights arrive in their graph layout.
        let packed = if gpu || self.external_weights { HashSet::new() } else { packed_weights(graph) };
        let decl = |n: usize| match &graph.nodes[n].op {
            Op::Custom { name } => kernels.get(name),
            _ => None,
        };
        // On a GPU a custom op with a PTX kernel launches it; elsewhere the CPU kernel runs.
        let gpu_ptx = |n: usize| gpu && decl(n).is_some_and(|d| d.ptx.is_some());
        let is_native = |n: usize| !gpu_ptx(n) && decl(n).is_some_and(|d| matches!(d.imp, CustomImpl::Native { .. }));
        if gpu {
            check_gpu_support(graph, &is_native)?;
        } else if let Some(n) = (0..graph.nodes.len()).find(|&n| decl(n).is_some_and(|d| d.imp == CustomImpl::GpuOnly)) {
            let node = &graph.nodes[n];
            return Err(Diagnostic::new(&node.loc, format!("custom op '{}' has only a GPU (PTX) kernel; compile for a cuda target, or declare a native or mlir CPU kernel for it", decl(n).map(|d| d.name.as_str()).unwrap_or(""))).into());
        }
        // On a GPU a PTX custom op is its own kernel; a row reduction is one row-per-block
        // kernel, not joining its producer's region and taking no consumer but a cast to a
        // float type. A matmul (or quantized matmul) takes elementwise consumers as its
        // kernel's epilogue, which reads extra operands only (not A or B: `x + x @ w` keeps
        // its add apart there).
        // Attention over the KV cache takes a cast to a float type, which it stores.
        let row_op = |n: usize| gpu && matches!(graph.nodes[n].op, Op::Softmax { .. } | Op::RmsNorm { .. } | Op::LayerNorm { .. });
        let closed = |n: usize| is_native(n) || gpu_ptx(n);
        let admits = |region: &[usize], n: usize| {
            let (root, node) = (&graph.nodes[region[0]], &graph.nodes[n]);
            if !gpu {
                true
            } else if row_op(region[0]) || matches!(root.op, Op::CachedAttention { .. }) {
                region.len() == 1 && matches!(node.op, Op::Cast(_)) && graph.ty(node.outputs[0]).dtype.is_float()
            } else if matches!(root.op, Op::MatMul | Op::QMatMul { .. }) {
                !node.inputs.iter().any(|v| root.inputs.contains(v))
            } else {
                true
            }
        };
        let regions = form_regions(graph, fuse, &Policy { closed: &closed, solo: &row_op, admits: &admits, join_past_shared: gpu, attention_takes_cast: gpu, rope_cache_writes: gpu, qmatmul_takes_epilogue: gpu, prologue_into_matmul: self.gpu.is_some_and(|g| g.wgmma), prologue_into_qmatmul: gpu });
        // Values a region computes but does not store (a region with explicit results), and
        // reshapes of them: they get no buffer.
        let mut unstored: HashSet<ValueId> = regions
            .iter()
            .filter_map(|r| r.outputs.as_ref().map(|outs| (r, outs)))
            .flat_map(|(r, outs)| r.nodes.iter().flat_map(|n| graph.nodes[*n].outputs.iter().copied()).filter(move |v| !outs.contains(v)))
            .collect();
        // Activations packed at run time for the matmuls reading them: their packed buffers.
        let mut packed_acts: HashMap<ValueId, usize> = HashMap::new();
        let region_of: HashMap<usize, usize> = regions.iter().enumerate().flat_map(|(r, reg)| reg.nodes.iter().map(move |n| (*n, r))).collect();
        for (ni, node) in graph.nodes.iter().enumerate() {
            match &node.op {
                Op::Constant(c) => {
                    let v = node.outputs[0];
                    if packed.contains(&v) {
                        let (k, n) = (c.dims[0] as usize, c.dims[1] as usize);
                        let s = self.weight_section(format!("const:{}:{ni}:packed{PACK_WIDTH}", graph.name), pack_rhs(&c.bytes, k, n));
                        buffers.push(packed_buffer(graph, v, s));
                    } else {
                        let s = self.weight_section(format!("const:{}:{ni}", graph.name), c.bytes.clone());
                        buffers.push(buffer(v, BufferKind::Weight(s)));
                    }
                }
                Op::Weight { name, init } => {
                    let t = graph.ty(node.outputs[0]);
                    let shape: Vec<i64> = t.dims.iter().map(|d| d.as_const().unwrap_or(0)).collect();
                    if self.external_weights {
                        // Only the size is recorded; the runtime is given the data.
                        let size = shape.iter().product::<i64>().max(0) as u64 * t.dtype.size_bytes() as u64;
                        let section_name = format!("weight:{name}");
                        let s = match self.weights.iter().position(|(n, _)| *n == section_name) {
                            Some(i) => i + 1,
                            None => {
                                self.weights.push((section_name, Vec::new()));
                                self.external_sizes.insert(self.weights.len() - 1, size);
                                self.weights.len()
                            }
                        };
                        buffers.push(buffer(node.outputs[0], BufferKind::Weight(s)));
                        of_value.insert(node.outputs[0], buffers.len() - 1);
                        continue;
                    }
                    let bytes = match (store.get(name), init) {
                        (Some(w), _) => {
                            if w.dtype != t.dtype || w.shape != shape {
                                return Err(Diagnostic::new(
                                    &node.loc,
                                    format!("weight \"{name}\" in {} is {:?} {} but the graph declares {:?} {}", w.origin, w.shape, w.dtype, shape, t.dtype),
                                )
                                .into());
                            }
                            w.bytes.clone()
                        }
                        (None, Some(init)) => {
                            let n: i64 = shape.iter().product();
                            f64s_to_bytes(&generate(init, n as usize), t.dtype)
                        }
                        (None, None) if store.zeros_for_missing => {
                            vec![0u8; shape.iter().product::<i64>() as usize * t.dtype.size_bytes()]
                        }
                        (None, None) => {
                            return Err(Diagnostic::new(
                                &node.loc,
                                format!("weight \"{name}\" is not in any weights file (pass --weights FILE.safetensors) and has no init attribute"),
                            )
                            .into())
                        }
                    };
                    let v = node.outputs[0];
                    if packed.contains(&v) {
                        let (k, n) = (shape[0] as usize, shape[1] as usize);
                        let s = self.weight_section(format!("weight:{name}:packed{PACK_WIDTH}"), pack_rhs(&bytes, k, n));
                        buffers.push(packed_buffer(graph, v, s));
                    } else {
                        let s = self.weight_section(format!("weight:{name}"), bytes);
                        buffers.push(buffer(v, BufferKind::Weight(s)));
                    }
                }
                Op::Reshape { .. } if unstored.contains(&node.inputs[0]) => {
                    unstored.insert(node.outputs[0]);
                    continue;
                }
                Op::Reshape { .. } => {
                    let src = of_value[&node.inputs[0]];
                    buffers.push(buffer(node.outputs[0], BufferKind::Alias(src)));
                }
                _ => {
                    let r = region_of[&ni];
                    if regions[r].nodes.last() == Some(&ni) {
                        let prepacked = if gpu { None } else { self.add_pack(graph, &regions[r], &mut buffers, &of_value, &mut packed_acts, &mut dispatches) };
                        self.add_region(graph, &regions[r], base, &mut buffers, &mut of_value, &mut dispatches, &buffer, &packed, prepacked, kernels, signatures);
                    }
                    continue;
                }
            }
            of_value.insert(node.outputs[0], buffers.len() - 1);
        }
        let outputs: Vec<TensorSig> = graph.outputs.iter().enumerate().map(|(i, v)| sig(*v, format!("output{i}"))).collect();
        let output_buffers = graph.outputs.iter().map(|v| of_value[v]).collect();
        self.entries.push(Entry { name: graph.name.clone(), inputs, outputs, buffers, output_buffers, dispatches });
        Ok(())
    }
}

impl Program {
    /// The kernel named by `spec` and `dims`: an existing kernel computing the same (a
    /// model's layers differ only in their weights), or `spec`, added.
    fn intern(&mut self, spec: KernelSpec, dims: Vec<Vec<DimSource>>) -> String {
        let key = format!("{:?}|{:?}", KernelSpec { name: String::new(), ..spec.clone() }, dims);
        if let Some(existing) = self.by_body.get(&key) {
            return existing.clone();
        }
        let name = spec.name.clone();
        self.by_body.insert(key, name.clone());
        self.kernels.push(PlannedKernel { spec, dims });
        name
    }

    /// For a region whose matmul reads an activation packed at run time (see
    /// [`crate::pack`]): that activation and its packed buffer, after emitting the pack
    /// dispatch when it is the activation's first such use.
    fn add_pack(
        &mut self,
        graph: &Graph,
        region: &Region,
        buffers: &mut Vec<Buffer>,
        of_value: &HashMap<ValueId, usize>,
        packed_acts: &mut HashMap<ValueId, usize>,
        dispatches: &mut Vec<Dispatch>,
    ) -> Option<(ValueId, usize)> {
        let root = &graph.nodes[region.nodes[0]];
        if !crate::pack::applies(graph, root) {
            return None;
        }
        let b = root.inputs[1];
        // The packed copy stands in for `b` in the kernel's bindings: its epilogue must not
        // read `b` itself.
        if region.nodes[1..].iter().any(|n| graph.nodes[*n].inputs.contains(&b)) {
            return None;
        }
        if let Some(&p) = packed_acts.get(&b) {
            return Some((b, p));
        }
        let t = graph.ty(b);
        let (k, n) = (t.dims[0].as_const()?, t.dims[1].as_const()?);
        buffers.push(Buffer { dtype: DType::F32, shape: crate::pack::packed_dims(k, n).map(DimExpr::Const).to_vec(), kind: BufferKind::Temp });
        let packed = buffers.len() - 1;
        let bindings = vec![of_value[&b], packed];
        let mut push = Vec::new();
        let dims = binding_dims(&bindings, buffers, &mut push);
        let spec = crate::pack::spec(format!("{}_k{}_pack", sanitize(&graph.name), self.kernels.len()), k, n);
        let kernel = self.intern(spec, dims);
        // One workgroup per panel at most.
        let workgroups = DimExpr::Const(n / PACK_WIDTH as i64);
        dispatches.push(Dispatch { kernel: format!("max_kernel_{kernel}"), bindings, push_constants: push, workgroups, column_split: None });
        packed_acts.insert(b, packed);
        Some((b, packed))
    }

    /// Emits one dispatch region: buffers for its results, the kernel spec and the dispatch.
    /// With `prepacked`, the region's matmul reads that activation from its packed buffer.
    #[allow(clippy::too_many_arguments)]
    fn add_region(
        &mut self,
        graph: &Graph,
        region: &Region,
        base: u32,
        buffers: &mut Vec<Buffer>,
        of_value: &mut HashMap<ValueId, usize>,
        dispatches: &mut Vec<Dispatch>,
        buffer: &dyn Fn(ValueId, BufferKind) -> Buffer,
        packed: &HashSet<ValueId>,
        prepacked: Option<(ValueId, usize)>,
        kernels: &KernelRegistry,
        signatures: &HashMap<String, MlirCall>,
    ) {
        let last = &graph.nodes[*region.nodes.last().unwrap()];
        let produced: Vec<ValueId> = region.nodes.iter().flat_map(|n| graph.nodes[*n].outputs.iter().copied()).collect();
        // A reshape of a value the region computes is that value (a region with explicit
        // results reads its split's parts reshaped).
        let source = |v: ValueId| {
            let mut s = v;
            while let Some(p) = graph.producer(s).filter(|p| matches!(graph.nodes[*p].op, Op::Reshape { .. })) {
                s = graph.nodes[p].inputs[0];
                if produced.contains(&s) {
                    return s;
                }
            }
            v
        };
        // Inputs: values read from outside the region, in order of first use. The KV-cache
        // kernels take one binding per operand, in operand order, even where two operands are
        // one value (attention reading one cache as both K and V).
        let positional = region.outputs.is_none() && matches!(graph.nodes[region.nodes[0]].op, Op::CacheWrite { .. } | Op::CachedAttention { .. });
        let mut inputs: Vec<ValueId> = Vec::new();
        for n in &region.nodes {
            for v in graph.nodes[*n].inputs.iter().map(|v| source(*v)) {
                if !produced.contains(&v) && (positional || !inputs.contains(&v)) {
                    inputs.push(v);
                }
            }
        }
        let outputs: Vec<ValueId> = region.outputs.clone().unwrap_or_else(|| last.outputs.clone());
        let mut refs: HashMap<ValueId, ValueRef> = HashMap::new();
        for (i, v) in inputs.iter().enumerate() {
            refs.insert(*v, ValueRef::Input(i));
        }
        for (i, v) in outputs.iter().enumerate() {
            refs.insert(*v, ValueRef::Output(i));
        }
        let mut body = Vec::new();
        for n in &region.nodes {
            let node = &graph.nodes[*n];
            for o in &node.outputs {
                let next = refs.len();
                refs.entry(*o).or_insert(ValueRef::Temp(next, graph.ty(*o).dtype));
            }
            let packed_rhs = matches!(node.op, Op::MatMul) && (packed.contains(&node.inputs[1]) || prepacked.is_some_and(|(b, _)| node.inputs[1] == b));
            body.push(FusedOp {
                op: node.op.clone(),
                args: node.inputs.iter().map(|v| refs[&source(*v)]).collect(),
                results: node.outputs.iter().map(|v| refs[v]).collect(),
                packed_rhs,
                sparse_lhs: packed_rhs && self.gpu.is_none() && graph.producer(node.inputs[0]).is_some_and(|p| matches!(graph.nodes[p].op, Op::Unary(UnaryOp::Relu))),
                call: match &node.op {
                    Op::Custom { name } => signatures.get(name).cloned(),
                    _ => None,
                },
            });
        }
        // A matmul region that took the region computing its A (on a GPU,
        // `fusion::merge_prologues_into_matmuls`) is one kernel only where the kernels take
        // it; otherwise the two regions are emitted as they were formed.
        if let Some(p) = region.nodes.iter().position(|n| matches!(graph.nodes[*n].op, Op::MatMul | Op::QMatMul { .. })).filter(|p| *p > 0 && self.gpu.is_some() && region.outputs.is_none()) {
            let probe = KernelSpec {
                name: String::new(),
                inputs: inputs.iter().map(|v| BindingType { dtype: graph.ty(*v).dtype, dims: buffers[of_value[v]].shape.iter().map(DimExpr::as_const).collect() }).collect(),
                outputs: outputs.iter().map(|v| BindingType::of(graph.ty(*v))).collect(),
                body: body.clone(),
                partition: None,
                native: None,
                gpu: true,
                allow_tf32: self.gpu.is_some_and(|g| g.allow_tf32),
                wgmma: self.gpu.is_some_and(|g| g.wgmma),
                columns: false,
                ptx: None,
                packs_panels: false,
            };
            if !crate::gpu_prologue::is_gpu_prologue_matmul(&probe) {
                for part in [&region.nodes[..p], &region.nodes[p..]] {
                    let r = Region { nodes: part.to_vec(), partition: None, outputs: None };
                    self.add_region(graph, &r, base, buffers, of_value, dispatches, buffer, packed, prepacked, kernels, signatures);
                }
                return;
            }
        }
        for &o in &outputs {
            // A cache write updates its cache operand's buffer in place.
            let producer = &graph.nodes[graph.producer(o).expect("a region's result has a producer")];
            let kind = match &producer.op {
                Op::CacheWrite { .. } => BufferKind::Alias(of_value[&producer.inputs[0]]),
                _ => BufferKind::Temp,
            };
            buffers.push(buffer(o, kind));
            of_value.insert(o, buffers.len() - 1);
        }
        let binding_of = |v: &ValueId| match prepacked {
            Some((b, p)) if *v == b => p,
            _ => of_value[v],
        };
        let bindings: Vec<usize> = inputs.iter().chain(&outputs).map(binding_of).collect();
        let ops: Vec<&str> = region.nodes.iter().map(|n| graph.nodes[*n].op.name()).collect();
        let name = format!("{}_k{}_{}", sanitize(&graph.name), self.kernels.len(), ops.join("_"));
        // A GPU kernel spreads its work over blocks and threads itself: one dispatch.
        let partition = region.partition.as_ref().filter(|_| self.gpu.is_none()).map(|p| inputs.iter().map(|v| p.get(v).copied().unwrap_or(false)).collect::<Vec<bool>>());
        let root = &graph.nodes[region.nodes[0]];
        let mut workgroups = if self.gpu.is_some() {
            DimExpr::Const(1)
        } else if partition.is_some() {
            shift(&partition_extent(graph, root), base)
        } else if crate::qmatmul::applies(graph, root) {
            // The micro-kernel deals out output columns (weight rows).
            shift(&graph.ty(root.outputs[0]).dims[1], base)
        } else if crate::rope::applies(graph, root) {
            shift(&graph.ty(root.outputs[0]).dims[0], base)
        } else if let Op::CachedAttention { .. } = root.op {
            // One work item per (batch row, head, query), dealt out by the kernel itself.
            let q = graph.ty(root.inputs[0]);
            shift(&DimExpr::product(&q.dims[..3]), base)
        } else {
            DimExpr::Const(1)
        };
        let mut push: Vec<DimExpr> = Vec::new();
        let dims = binding_dims(&bindings, buffers, &mut push);
        let mut spec = KernelSpec {
            name: name.clone(),
            // A packed weight's binding has its stored [n/16][k][16] shape.
            inputs: inputs.iter().map(|v| BindingType { dtype: graph.ty(*v).dtype, dims: buffers[binding_of(v)].shape.iter().map(DimExpr::as_const).collect() }).collect(),
            outputs: outputs.iter().map(|v| BindingType::of(graph.ty(*v))).collect(),
            native: match (&root.op, self.gpu.is_some()) {
                (Op::Custom { name }, false) => match kernels.get(name).map(|d| &d.imp) {
                    Some(CustomImpl::Native { symbol, .. }) => Some(symbol.clone()),
                    _ => None,
                },
                _ => None,
            },
            ptx: match (&root.op, self.gpu.is_some()) {
                (Op::Custom { name }, true) => kernels.get(name).and_then(|d| d.ptx.clone()),
                _ => None,
            },
            body,
            partition,
            gpu: self.gpu.is_some(),
            allow_tf32: self.gpu.is_some_and(|g| g.allow_tf32),
            wgmma: self.gpu.is_some_and(|g| g.wgmma),
            columns: false,
            packs_panels: false,
        };
        spec.columns = crate::lower::splits_columns(&spec);
        if spec.columns {
            // Rows or column panels, whichever the kernel splits at run time (the runtime
            // uses one workgroup per thread at most).
            workgroups = DimExpr::max(workgroups, weight_panels(&spec));
        }
        // A dense layer on `[B, T, K]` runs over its `B * T` rows (see `flatten`).
        if let Some(flat) = crate::flatten::flat_form(&spec).filter(|_| self.gpu.is_none()) {
            workgroups = shift(&DimExpr::product(&graph.ty(root.outputs[0]).dims[..2]), base);
            if flat.columns {
                workgroups = DimExpr::max(workgroups, weight_panels(&flat));
            }
        }
        // A batched matmul of activations runs one batch slice per work item (see
        // `batch_slices`).
        if crate::batch_slices::slice_form(&spec).is_some() {
            let dims = &graph.ty(root.outputs[0]).dims;
            workgroups = shift(&DimExpr::product(&dims[..dims.len() - 2]), base);
        }
        // With few rows, a softmax-ended matmul can run as columns, then rows (see
        // `column_split`); its scratch is a temporary of the result's shape.
        let split = crate::column_split::derive(&spec).map(|(columns, finish)| {
            let out = &buffers[bindings[inputs.len()]];
            buffers.push(Buffer { dtype: DType::F32, shape: out.shape.clone(), kind: BufferKind::Temp });
            let scratch = buffers.len() - 1;
            let columns_bindings: Vec<usize> = bindings[..inputs.len()].iter().copied().chain([scratch]).collect();
            let finish_bindings: Vec<usize> = std::iter::once(scratch).chain(bindings.iter().copied()).collect();
            let split = ColumnSplit {
                columns_kernel: String::new(),
                columns_workgroups: weight_panels(&columns),
                finish_kernel: String::new(),
                rows: buffers[scratch].shape[0].clone(),
                below_rows_per_thread: crate::lower::column_split_rows() as i64,
                columns_bindings,
                finish_bindings,
            };
            let columns = PlannedKernel { dims: binding_dims(&split.columns_bindings, buffers, &mut push), spec: columns };
            let finish = PlannedKernel { dims: binding_dims(&split.finish_bindings, buffers, &mut push), spec: finish };
            (split, columns, finish)
        });
        let before = self.kernels.len();
        let kernel = self.intern(spec, dims);
        if self.kernels.len() > before {
            if let Some((_, columns, finish)) = &split {
                self.kernels.extend([columns.clone(), finish.clone()]);
            }
        }
        // The derived kernels are named after the main one (shared when it is).
        let column_split = split.map(|(c, _, _)| ColumnSplit { columns_kernel: format!("max_kernel_{kernel}_columns"), finish_kernel: format!("max_kernel_{kernel}_finish"), ..c });
        dispatches.push(Dispatch { kernel: format!("max_kernel_{kernel}"), bindings, push_constants: push, workgroups, column_split });
    }
}

/// Rejects, at the op's location, what the GPU backend cannot compile: native (CPU) custom
/// kernels, quantized matmuls whose activations are not f32, and attention over a KV cache
/// with a head dim the GPU kernel does not take.
fn check_gpu_support(graph: &Graph, is_native: &dyn Fn(usize) -> bool) -> Result<(), CompileError> {
    for (i, n) in graph.nodes.iter().enumerate() {
        let problem = if is_native(i) {
            Some("a native (CPU) custom kernel has no GPU kernel; compile this graph for a CPU target".to_string())
        } else if matches!(n.op, Op::QMatMul { .. }) && !crate::qmatmul::applies(graph, n) {
            Some("'max.qmatmul' runs on the GPU with f32 activations and results only".to_string())
        } else if let Op::CachedAttention { .. } = n.op {
            let d = graph.ty(n.inputs[0]).dims.last().and_then(|d| d.as_const()).unwrap_or(0);
            (!crate::gpu_kv_cache::supported_head_dim(d)).then(|| format!("'max.cached_attention' on the GPU takes head dims 32, 64, 128 or 256, not {d}"))
        } else {
            None
        };
        if let Some(msg) = problem {
            return Err(Diagnostic::new(&n.loc, msg).into());
        }
    }
    Ok(())
}

/// Constant matmul right operands stored pre-packed: weights and constants of static
/// shape whose every use is the right operand of a micro-kernel matmul.
fn packed_weights(graph: &Graph) -> HashSet<ValueId> {
    let mut out = HashSet::new();
    for node in &graph.nodes {
        if !matches!(node.op, Op::Weight { .. } | Op::Constant(_)) {
            continue;
        }
        let v = node.outputs[0];
        let uses: Vec<&max_dialects::Node> = graph.nodes.iter().filter(|n| n.inputs.contains(&v)).collect();
        let all_packable = !uses.is_empty()
            && !graph.outputs.contains(&v)
            && uses.iter().all(|u| {
                matches!(u.op, Op::MatMul)
                    && u.inputs[1] == v
                    && u.inputs[0] != v
                    && packs_rhs(graph.ty(u.inputs[0]), graph.ty(v), graph.ty(u.outputs[0]))
            });
        if all_packable {
            out.insert(v);
        }
    }
    out
}

/// The buffer of a packed weight: `[n/16][k][16]`.
fn packed_buffer(graph: &Graph, v: ValueId, section: usize) -> Buffer {
    let t = graph.ty(v);
    let (k, n) = (t.dims[0].as_const().unwrap(), t.dims[1].as_const().unwrap());
    Buffer { dtype: t.dtype, shape: crate::pack::packed_dims(k, n).map(DimExpr::Const).to_vec(), kind: BufferKind::Weight(section) }
}

/// The column panels of a column-split kernel's right operand (a packed weight or an
/// activation): the most workgroups its column split uses.
fn weight_panels(spec: &KernelSpec) -> DimExpr {
    let w = spec.body[0].matmul_weight_input().expect("column-split kernels start with a matmul of two inputs");
    let panels = if spec.body[0].packed_rhs {
        spec.inputs[w].dims[0]
    } else {
        // An activation `b[k, n]`: its 16-column panels, the last one maybe partial.
        spec.inputs[w].dims[1].map(|n| (n as u64).div_ceil(PACK_WIDTH as u64) as i64)
    };
    DimExpr::Const(panels.unwrap_or(1))
}

/// How a kernel sees each of its bindings' dims: static, or a push constant (added to
/// `push` when new).
fn binding_dims(bindings: &[usize], buffers: &[Buffer], push: &mut Vec<DimExpr>) -> Vec<Vec<DimSource>> {
    bindings
        .iter()
        .map(|&b| {
            buffers[b]
                .shape
                .iter()
                .map(|d| match d.as_const() {
                    Some(c) => DimSource::Static(c),
                    None => DimSource::Push(match push.iter().position(|p| p == d) {
                        Some(i) => i,
                        None => {
                            push.push(d.clone());
                            push.len() - 1
                        }
                    }),
                })
                .collect()
        })
        .collect()
}

/// The value a chain of cache writes started from.
fn cache_root(graph: &Graph, mut v: ValueId) -> ValueId {
    while let Some(p) = graph.producer(v) {
        match &graph.nodes[p].op {
            Op::CacheWrite { .. } => v = graph.nodes[p].inputs[0],
            _ => break,
        }
    }
    v
}

fn sanitize(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect()
}
