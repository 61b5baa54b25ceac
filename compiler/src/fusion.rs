//! Fusion: dispatch-region formation.
//!
//! A region is a chain: a root op (any op that needs a kernel: contraction, reduction,
//! data movement, elementwise) followed by consumers that are elementwise or softmax, each
//! taking the previous op's result. Each region becomes one kernel, so intermediate values
//! of the chain never reach memory outside the kernel (`custom_mlp` is matmul+relu and
//! matmul+softmax; an elementwise chain is one kernel).
//!
//! A split along a non-leading axis whose results only one elementwise region reads then
//! moves into that region ([`absorb_splits`]). On a GPU, the RoPE of q and k and the KV-cache
//! writes that one attention reads become one region with several results
//! ([`merge_rope_cache_writes`]), and a region computing a matmul's A moves into the
//! matmul's ([`merge_prologues_into_matmuls`]).
//!
//! A consumer joins the region of its producer when:
//! - the producer has one result, used by nothing outside the consumer, and not a graph
//!   output (it is not materialized, so nobody else can read it);
//! - the consumer's result has the producer's shape (so every value of a chain has the
//!   region result's shape, and temporaries are shaped like the output binding);
//! - if the region splits rows over workgroups, the consumer can too, reading the chain
//!   value row-aligned, and it agrees with the region on how each outside operand is read.

use crate::lower::partition_for;
use max_dialects::{Graph, Op, ValueId};
use std::collections::HashMap;

/// A dispatch region: node indices in order, and its partitioning decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Region {
    pub nodes: Vec<usize>,
    /// Whether the kernel splits rows over workgroups, and for each value read from outside
    /// the region, whether it is sliced along with the rows.
    pub partition: Option<HashMap<ValueId, bool>>,
    /// The region's results when they are not its last node's: a region that is not a chain
    /// (see [`merge_rope_cache_writes`]). Its other values, and reshapes of them, are never
    /// materialized.
    pub outputs: Option<Vec<ValueId>>,
}

/// Whether the op is materialized without a kernel (weights, constants, free reshapes).
pub fn needs_kernel(op: &Op) -> bool {
    !matches!(op, Op::Constant(_) | Op::Weight { .. } | Op::Reshape { .. })
}

fn fusible_consumer(op: &Op) -> bool {
    matches!(op, Op::Unary(_) | Op::Binary(_) | Op::Cast(_) | Op::Softmax { .. } | Op::RmsNorm { .. } | Op::LayerNorm { .. })
}

/// Per-input partition flags of `node` keyed by value (a value read twice must agree).
fn flags_by_value(graph: &Graph, node: usize) -> Option<Option<HashMap<ValueId, bool>>> {
    let n = &graph.nodes[node];
    match partition_for(graph, n) {
        None => Some(None),
        Some(flags) => {
            let mut m = HashMap::new();
            for (v, f) in n.inputs.iter().zip(flags) {
                if *m.entry(*v).or_insert(f) != f {
                    return None;
                }
            }
            Some(Some(m))
        }
    }
}

/// What a backend's kernels let fusion do.
pub struct Policy<'a> {
    /// Roots that take no consumers (native custom kernels, GPU PTX custom ops).
    pub closed: &'a dyn Fn(usize) -> bool,
    /// Nodes that never join their producer's region (GPU row reductions).
    pub solo: &'a dyn Fn(usize) -> bool,
    /// Whether the kernel for a region (its nodes, root first) can compute a node too (on a
    /// GPU a row reduction takes only a cast, and a matmul's epilogue reads no operand of
    /// the matmul).
    pub admits: &'a dyn Fn(&[usize], usize) -> bool,
    /// Whether a consumer may join a region while another of its inputs comes from an open
    /// region whose result is read elsewhere too (and so is in memory anyway): on a GPU the
    /// residual of `x + matmul(norm(x))` becomes the matmul's epilogue. The CPU keeps them
    /// apart: there the layer norm after such an add joins as well, and the matmul would
    /// split over batch rows (one workgroup for one sequence) instead of token rows.
    pub join_past_shared: bool,
    /// Whether attention over a KV cache takes a cast as its consumer (the GPU kernel stores
    /// its output converted; the CPU's cache kernels take no consumers).
    pub attention_takes_cast: bool,
    /// Whether the RoPE of q and k, the K/V cache writes and the split of a merged q/k/v
    /// projection before an attention are one kernel ([`crate::gpu_rope_cache`]).
    pub rope_cache_writes: bool,
    /// Whether a quantized matmul takes elementwise consumers as its epilogue (the GPU
    /// kernels apply it as they store; the CPU's kernel takes none).
    pub qmatmul_takes_epilogue: bool,
    /// Whether a region computing a matmul's A (`cast(rms_norm(x, w))`, elementwise ops)
    /// moves into the matmul region that alone reads it ([`crate::gpu_prologue`]).
    pub prologue_into_matmul: bool,
    /// The same for quantized matmuls rounding their activations.
    pub prologue_into_qmatmul: bool,
}

/// Forms dispatch regions over the kernel-needing nodes of a verified graph, as `policy`
/// allows.
pub fn form_regions(graph: &Graph, enable: bool, policy: &Policy) -> Vec<Region> {
    let mut uses: HashMap<ValueId, Vec<usize>> = HashMap::new();
    for (i, n) in graph.nodes.iter().enumerate() {
        for v in &n.inputs {
            uses.entry(*v).or_default().push(i);
        }
    }
    let mut regions: Vec<Region> = Vec::new();
    // Region index by the value its last node produces (the value a consumer may extend).
    let mut open: HashMap<ValueId, usize> = HashMap::new();
    for (i, node) in graph.nodes.iter().enumerate() {
        if !needs_kernel(&node.op) {
            continue;
        }
        let joined = if enable && fusible_consumer(&node.op) && !(policy.solo)(i) { try_join(graph, i, &uses, &open, &mut regions, policy) } else { None };
        let r = joined.unwrap_or_else(|| {
            regions.push(Region { nodes: vec![i], partition: flags_by_value(graph, i).flatten(), outputs: None });
            regions.len() - 1
        });
        open.retain(|_, reg| *reg != r);
        // KV-cache kernels are written whole at the memref level and take no consumers (but
        // a cast after attention, where the policy says so).
        let qmatmul = crate::qmatmul::applies(graph, node) && !policy.qmatmul_takes_epilogue;
        let own_kernel = matches!(node.op, Op::CacheWrite { .. } | Op::CachedAttention { .. }) || qmatmul || crate::rope::applies(graph, node);
        let takes_cast = policy.attention_takes_cast && matches!(node.op, Op::CachedAttention { .. });
        if node.outputs.len() == 1 && !(policy.closed)(i) && (!own_kernel || takes_cast) {
            open.insert(node.outputs[0], r);
        }
    }
    if enable {
        absorb_splits(graph, &uses, &mut regions);
        if policy.rope_cache_writes {
            merge_rope_cache_writes(graph, &uses, &mut regions);
        }
        if policy.prologue_into_matmul || policy.prologue_into_qmatmul {
            merge_prologues_into_matmuls(graph, &uses, &mut regions, policy);
        }
    }
    regions
}

/// Moves each region computing a matmul's A (`cast(rms_norm(x, w))`, or elementwise ops)
/// that only that matmul reads into the matmul's region, ahead of it
/// ([`crate::gpu_prologue::fusible`] says when): on a GPU the matrix-vector kernel then
/// computes A itself.
fn merge_prologues_into_matmuls(graph: &Graph, uses: &HashMap<ValueId, Vec<usize>>, regions: &mut Vec<Region>, policy: &Policy) {
    let mut absorbed = Vec::new();
    for s in 0..regions.len() {
        let Some(&last) = regions[s].nodes.last() else { continue };
        let h = graph.nodes[last].outputs[0];
        let Some(&[mm]) = uses.get(&h).map(Vec::as_slice) else { continue };
        let Some(r) = regions.iter().position(|reg| reg.nodes.first() == Some(&mm) && reg.outputs.is_none()) else { continue };
        let own = regions[s].outputs.is_none() && graph.nodes[last].outputs.len() == 1;
        if !own || graph.outputs.contains(&h) || !crate::gpu_prologue::fusible(graph, &regions[s].nodes, &regions[r].nodes, policy.prologue_into_matmul, policy.prologue_into_qmatmul) {
            continue;
        }
        let moved = regions[s].nodes.clone();
        let target = &mut regions[r];
        target.nodes.splice(0..0, moved);
        target.partition = None;
        absorbed.push(s);
    }
    for s in absorbed.into_iter().rev() {
        regions.remove(s);
    }
}

/// Merges, for each attention over a KV cache, the regions of the RoPE of its q, of the
/// keys it writes, of its K and V cache writes and of the split of a merged q/k/v
/// projection they read ([`crate::gpu_rope_cache::group`]) into one region whose results are
/// the rotated q and the two caches: a decode step's five launches between the q/k/v
/// projection and attention become one. Each of those nodes must be a region of its own.
/// The merged kernel runs where the group's last node ran, so the group's results must be
/// read only after it.
fn merge_rope_cache_writes(graph: &Graph, uses: &HashMap<ValueId, Vec<usize>>, regions: &mut Vec<Region>) {
    for (a, node) in graph.nodes.iter().enumerate() {
        if !matches!(node.op, Op::CachedAttention { .. }) {
            continue;
        }
        let Some(group) = crate::gpu_rope_cache::group(graph, uses, a) else { continue };
        let Some(mut members) = group.nodes.iter().map(|n| regions.iter().position(|r| r.nodes == [*n])).collect::<Option<Vec<usize>>>() else { continue };
        let last = *group.nodes.last().expect("a group has nodes");
        if group.outputs.iter().any(|v| uses.get(v).is_some_and(|u| u.iter().any(|r| *r <= last))) {
            continue;
        }
        members.sort_unstable();
        let at = members[0];
        for r in members.into_iter().rev() {
            regions.remove(r);
        }
        regions.insert(at, Region { nodes: group.nodes, partition: None, outputs: Some(group.outputs) });
    }
}

/// Moves a split into the elementwise region that reads all its results, ahead of that
/// region's nodes: the split's results become slices of its operand read in place, so
/// `silu(gate) * up` of a merged gate/up projection is one kernel, where the split was a
/// kernel of its own writing both halves to memory (two launches on a GPU). The split must
/// be along a non-leading axis (regions split rows over workgroups), and its results must
/// be shaped like the region's result (the kernel's temporaries are) and read by that
/// region only.
fn absorb_splits(graph: &Graph, uses: &HashMap<ValueId, Vec<usize>>, regions: &mut Vec<Region>) {
    let mut absorbed = Vec::new();
    for s in 0..regions.len() {
        let [split] = regions[s].nodes[..] else { continue };
        let node = &graph.nodes[split];
        let Op::Split { axis, .. } = node.op else { continue };
        let rank = graph.ty(node.inputs[0]).rank() as i64;
        if rank < 2 || axis.rem_euclid(rank) == 0 {
            continue;
        }
        // The one region reading the results, after the split.
        let readers: Vec<usize> = node.outputs.iter().flat_map(|v| uses.get(v).into_iter().flatten()).copied().collect();
        let Some(&first) = readers.first() else { continue };
        let Some(r) = regions.iter().position(|reg| reg.nodes.contains(&first)) else { continue };
        let target = &regions[r];
        let last = &graph.nodes[*target.nodes.last().expect("regions are not empty")];
        let out_dims = &graph.ty(last.outputs[0]).dims;
        let elementwise = target.nodes.iter().all(|n| matches!(graph.nodes[*n].op, Op::Unary(_) | Op::Binary(_) | Op::Cast(_)));
        let fits = r != s
            && elementwise
            && last.outputs.len() == 1
            && readers.iter().all(|n| target.nodes.contains(n))
            && node.outputs.iter().all(|v| !graph.outputs.contains(v) && &graph.ty(*v).dims == out_dims);
        // Rows of the split's operand go with the region's rows.
        let rows_agree = target.partition.as_ref().is_none_or(|p| p.get(&node.inputs[0]) != Some(&false));
        if !fits || !rows_agree {
            continue;
        }
        let target = &mut regions[r];
        target.nodes.insert(0, split);
        if let Some(p) = &mut target.partition {
            for v in &node.outputs {
                p.remove(v);
            }
            p.insert(node.inputs[0], true);
        }
        absorbed.push(s);
    }
    // Ascending: later indices go first, so earlier ones stay valid.
    for s in absorbed.into_iter().rev() {
        regions.remove(s);
    }
}

/// Appends node `i` to the region it continues, if legal; returns that region.
fn try_join(graph: &Graph, i: usize, uses: &HashMap<ValueId, Vec<usize>>, open: &HashMap<ValueId, usize>, regions: &mut [Region], policy: &Policy) -> Option<usize> {
    let node = &graph.nodes[i];
    // A region can take this node when it is open, its kernel admits the node, and nothing
    // else reads its result (which is then never materialized).
    let admitted = |v: &ValueId| open.get(v).is_some_and(|r| (policy.admits)(&regions[*r].nodes, i));
    let only_here = |v: &ValueId| uses[v].iter().all(|u| *u == i) && !graph.outputs.contains(v);
    let link = if policy.join_past_shared {
        node.inputs.iter().copied().find(|v| admitted(v) && only_here(v))?
    } else {
        let v = node.inputs.iter().copied().find(|v| open.contains_key(v))?;
        if !admitted(&v) || !only_here(&v) {
            return None;
        }
        v
    };
    let r = open[&link];
    // Only one region may be extended: another that could take this node would need its
    // result in memory anyway.
    let other = |v: &ValueId| *v != link && open.get(v).is_some_and(|o| *o != r) && (!policy.join_past_shared || (admitted(v) && only_here(v)));
    if node.inputs.iter().any(other) {
        return None;
    }
    if graph.ty(node.outputs[0]).dims != graph.ty(link).dims {
        return None;
    }
    let region = &regions[r];
    let partition = match (&region.partition, flags_by_value(graph, i)) {
        (_, None) => return None,
        (None, _) => None,
        (Some(_), Some(None)) => return None,
        (Some(rp), Some(Some(np))) => {
            if np.get(&link) != Some(&true) {
                return None;
            }
            let mut merged = rp.clone();
            for (v, f) in np {
                if v == link {
                    continue;
                }
                if *merged.entry(v).or_insert(f) != f {
                    return None;
                }
            }
            Some(merged)
        }
    };
    let region = &mut regions[r];
    region.nodes.push(i);
    region.partition = partition;
    Some(r)
}
