//! Common-subexpression elimination on the `max` graph (the `graph-cse` stage).
//!
//! Two nodes that apply the same op, with equal attributes, to the same operands compute
//! the same values, so the later one is dropped and its uses read the earlier one's
//! results. This runs before dispatch formation: a graph builder can then write a repeated
//! expression where it reads naturally (the cast of an activation before each of several
//! projections, a weight named twice) and still get one kernel and one buffer.
//!
//! Two nodes also need equal result types: a `max.weight` takes its type from its declared
//! result, not its attributes.
//!
//! Left alone, because two applications may differ:
//! - `max.cache_write` (it writes its operand in place);
//! - ops that read a buffer a cache write updates in place, directly or through a reshape
//!   (a view of the same memory): what they read depends on where they run relative to the
//!   write, not on their operands alone;
//! - custom ops (their kernels are the user's, and may keep state).

use max_dialects::{Graph, Op, ValueId};
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

/// Whether two applications of `op` to the same operands always give the same values and
/// do nothing else.
fn is_pure(op: &Op) -> bool {
    !matches!(op, Op::CacheWrite { .. } | Op::Custom { .. })
}

/// Which nodes repeat an earlier one, and which value replaces each of their results.
struct Plan {
    replace: HashMap<ValueId, ValueId>,
    dropped: Vec<bool>,
}

/// The value whose buffer `v` is (following reshapes, which are views, and cache writes,
/// whose result is the cache they wrote).
fn storage(g: &Graph, producer: &HashMap<ValueId, usize>, mut v: ValueId) -> ValueId {
    while let Some(n) = producer.get(&v).map(|&i| &g.nodes[i]) {
        match n.op {
            Op::Reshape { .. } | Op::CacheWrite { .. } => v = n.inputs[0],
            _ => break,
        }
    }
    v
}

fn plan(g: &Graph) -> Plan {
    let producer: HashMap<ValueId, usize> = g.nodes.iter().enumerate().flat_map(|(i, n)| n.outputs.iter().map(move |o| (*o, i))).collect();
    // Buffers some cache write updates in place.
    let written: HashSet<ValueId> = g.nodes.iter().filter(|n| matches!(n.op, Op::CacheWrite { .. })).map(|n| storage(g, &producer, n.inputs[0])).collect();
    let types = |n: &max_dialects::Node| n.outputs.iter().map(|o| g.types.get(o.0).cloned().flatten()).collect::<Vec<_>>();
    let mut replace = HashMap::new();
    let mut dropped = vec![false; g.nodes.len()];
    // Nodes kept so far, bucketed by op kind and (already replaced) operands; equal ops are
    // then found by comparing attributes within a bucket.
    let mut seen: HashMap<(std::mem::Discriminant<Op>, Vec<ValueId>), Vec<usize>> = HashMap::new();
    for (i, node) in g.nodes.iter().enumerate() {
        let inputs: Vec<ValueId> = node.inputs.iter().map(|v| *replace.get(v).unwrap_or(v)).collect();
        if !is_pure(&node.op) || (!written.is_empty() && inputs.iter().any(|v| written.contains(&storage(g, &producer, *v)))) {
            continue;
        }
        let bucket = seen.entry((std::mem::discriminant(&node.op), inputs)).or_default();
        match bucket.iter().find(|&&k| g.nodes[k].op == node.op && types(&g.nodes[k]) == types(node)) {
            Some(&k) => {
                dropped[i] = true;
                replace.extend(node.outputs.iter().copied().zip(g.nodes[k].outputs.iter().copied()));
            }
            None => bucket.push(i),
        }
    }
    Plan { replace, dropped }
}

fn apply(g: &mut Graph, p: &Plan) {
    let nodes = std::mem::take(&mut g.nodes);
    g.nodes = nodes.into_iter().zip(&p.dropped).filter(|(_, d)| !**d).map(|(n, _)| n).collect();
    let rewrite = |v: &mut ValueId| {
        if let Some(r) = p.replace.get(v) {
            *v = *r;
        }
    };
    for n in &mut g.nodes {
        n.inputs.iter_mut().for_each(rewrite);
    }
    g.outputs.iter_mut().for_each(rewrite);
}

/// Removes every node that repeats an earlier one (same pure op, attributes and operands),
/// rewriting its uses and the graph's outputs; returns how many nodes were removed.
pub fn eliminate(g: &mut Graph) -> usize {
    let p = plan(g);
    apply(g, &p);
    p.dropped.iter().filter(|d| **d).count()
}

/// `g` without repeated nodes: borrowed as it is when it has none (the common case, which
/// then costs no copy of the graph and its constants).
pub fn run(g: &Graph) -> Cow<'_, Graph> {
    let p = plan(g);
    if !p.dropped.contains(&true) {
        return Cow::Borrowed(g);
    }
    let mut out = g.clone();
    apply(&mut out, &p);
    tracing::debug!(graph = %g.name, removed = p.dropped.iter().filter(|d| **d).count(), "graph-cse");
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ops, DType, Dim, Graph as Builder, TensorType};

    fn f32_type(dims: &[i64]) -> TensorType {
        TensorType::new(DType::F32, dims.iter().map(|d| Dim::Static(*d)))
    }

    #[test]
    fn repeated_nodes_fold_and_chains_follow() {
        let b = Builder::with_named_inputs("g", [("x", f32_type(&[4, 8])), ("w", f32_type(&[8, 8]))]);
        let (x, w) = (b.input(0), b.input(1));
        // Two casts of x; the matmuls reading them become equal once the casts fold.
        let w16 = ops::cast(&w, DType::BF16);
        let y1 = ops::matmul(&ops::cast(&x, DType::BF16), &w16);
        let y2 = ops::matmul(&ops::cast(&x, DType::BF16), &w16);
        // Another cast target, and the same op with other attributes, stay.
        let y3 = ops::cast(&x, DType::F16);
        let (s1, s0) = (ops::softmax(&x, 1), ops::softmax(&x, 0));
        b.output([y1, y2, y3, s1, s0]);
        let mut g = b.verified().unwrap();
        assert_eq!(g.nodes.len(), 8);
        assert_eq!(eliminate(&mut g), 2);
        assert_eq!(g.nodes.len(), 6);
        assert_eq!(g.outputs[0], g.outputs[1]);
        assert_ne!(g.outputs[3], g.outputs[4]);
        // Every operand is still defined before its use.
        let mut defined: HashSet<ValueId> = g.inputs.iter().map(|i| i.value).collect();
        for n in &g.nodes {
            assert!(n.inputs.iter().all(|v| defined.contains(v)), "{n:?}");
            defined.extend(n.outputs.iter().copied());
        }
        assert!(g.outputs.iter().all(|v| defined.contains(v)));
    }

    #[test]
    fn a_weight_named_twice_folds_only_with_one_type() {
        let b = Builder::with_named_inputs("g", [("x", f32_type(&[4]))]);
        let x = b.input(0);
        let w = b.weight("w", DType::F32, &[4]);
        let again = b.weight("w", DType::F32, &[4]);
        let other_type = b.weight("w", DType::F32, &[2, 2]);
        b.output([ops::add(&x, &w), ops::add(&x, &again), ops::reshape(&other_type, &[4])]);
        let mut g = b.verified().unwrap();
        // The second "w" folds into the first (and so does its add); the [2, 2] one stays.
        assert_eq!(eliminate(&mut g), 2);
        assert_eq!(g.nodes.iter().filter(|n| matches!(n.op, Op::Weight { .. })).count(), 2);
    }

    #[test]
    fn a_graph_without_repeats_is_borrowed() {
        let b = Builder::with_named_inputs("g", [("x", f32_type(&[4]))]);
        let x = b.input(0);
        b.output([ops::relu(&x), ops::exp(&x)]);
        let g = b.verified().unwrap();
        assert!(matches!(run(&g), Cow::Borrowed(_)));
    }

    #[test]
    fn cache_writes_and_reads_of_written_values_stay() {
        let i32_type = TensorType::new(DType::I32, [Dim::Static(1)]);
        let b = Builder::with_named_inputs(
            "g",
            [("cache", f32_type(&[1, 1, 8, 1, 4])), ("new", f32_type(&[1, 1, 1, 4])), ("pos", i32_type.clone()), ("slot", i32_type)],
        );
        let (cache, new, pos, slot) = (b.input(0), b.input(1), b.input(2), b.input(3));
        // The same read of the cache before and after a write of it differ, and two equal
        // writes are two writes.
        let before = ops::exp(&cache);
        // Also through a reshape, which is a view of the cache's memory.
        let view = ops::reshape(&cache, &[8, 4]);
        let view_before = ops::exp(&view);
        let written = ops::cache_write(&cache, &new, &pos, &slot, 0);
        let after = ops::exp(&cache);
        let view_after = ops::exp(&view);
        let again = ops::cache_write(&written, &new, &pos, &slot, 0);
        let third = ops::cache_write(&written, &new, &pos, &slot, 0);
        b.output([before, after, view_before, view_after, again, third]);
        let mut g = b.verified().unwrap();
        assert_eq!(eliminate(&mut g), 0);
    }
}
