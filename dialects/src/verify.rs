//! Verification and shape inference: the first pass of the compiler.
//!
//! IRDL checks op names and operand counts; everything about shapes and dtypes is checked
//! here, in op order, and reported at the offending op's location. Dynamic dims are symbols;
//! ops that require two symbolic dims to be equal (broadcasting, matmul's contraction dim)
//! unify them, and the runtime checks the unified inputs agree.

use crate::diag::Diagnostic;
use crate::dim::DimExpr;
use crate::dtype::DType;
use crate::graph::{Graph, Node};
use crate::ops::{BinaryOp, Op, ReduceOp, SplitSpec, UnaryOp};
use crate::types::TensorType;

/// Declarations of the custom ops a compile knows (from `--kernels` directories).
pub trait CustomOps {
    /// The result types of custom op `name` applied to operands of type `inputs`; an error
    /// message (reported at the op) for an unknown op, wrong arity or dtypes.
    fn infer(&self, name: &str, inputs: &[TensorType], names: &[String]) -> Result<Vec<TensorType>, String>;
}

/// No custom ops declared.
pub struct NoCustomOps;

impl CustomOps for NoCustomOps {
    fn infer(&self, name: &str, _: &[TensorType], _: &[String]) -> Result<Vec<TensorType>, String> {
        Err(format!("unknown custom op '{name}': no kernel declares it (pass --kernels DIR with a kernels.toml that does)"))
    }
}

/// Verifies `graph` (with no custom ops declared) and assigns a type to every value.
pub fn verify(graph: &mut Graph) -> Result<(), Diagnostic> {
    verify_with(graph, &NoCustomOps)
}

/// Verifies `graph` and assigns a type to every value. Symbols that the graph forces equal
/// are merged, and every type is rewritten to use the representative symbol.
pub fn verify_with(graph: &mut Graph, custom: &dyn CustomOps) -> Result<(), Diagnostic> {
    let mut uf = SymUnion::new(graph.symbols.len());
    if graph.outputs.is_empty() {
        return Err(Diagnostic::new(&graph.loc, format!("graph '{}' has no outputs", graph.name)));
    }
    // Disjoint borrows: read the nodes while writing the types (no copy of the nodes and
    // their constant data).
    let Graph { nodes, types, symbols, .. } = &mut *graph;
    for node in nodes.iter() {
        let ins: Vec<TensorType> = node
            .inputs
            .iter()
            .map(|v| {
                types[v.0].clone().ok_or_else(|| {
                    Diagnostic::new(&node.loc, format!("operand of 'max.{}' is used before it is defined", node.op.name()))
                })
            })
            .collect::<Result<_, _>>()?;
        let ins: Vec<TensorType> = ins.into_iter().map(|t| uf.canon_type(&t)).collect();
        let outs = match &node.op {
            Op::Custom { name } => custom.infer(name, &ins, symbols),
            _ => infer_node(node, &ins, &mut uf, symbols),
        }
        .map_err(|m| Diagnostic::new(&node.loc, m))?;
        if outs.len() != node.outputs.len() {
            return Err(Diagnostic::new(
                &node.loc,
                format!("'max.{}' produces {} results but {} are declared", node.op.name(), outs.len(), node.outputs.len()),
            ));
        }
        for (i, (t, v)) in outs.into_iter().zip(&node.outputs).enumerate() {
            if let Some(Some(decl)) = node.declared.get(i) {
                if !decl.accepts(&t) {
                    return Err(Diagnostic::new(
                        &node.loc,
                        format!(
                            "'max.{}' result #{i} is declared {} but inferred as {}",
                            node.op.name(),
                            decl.to_mlir(),
                            t.describe(symbols)
                        ),
                    ));
                }
            }
            types[v.0] = Some(t);
        }
    }
    for (i, v) in graph.outputs.clone().iter().enumerate() {
        let t = graph.types[v.0].clone().ok_or_else(|| Diagnostic::new(&graph.loc, "graph output is undefined"))?;
        if let Some(Some(decl)) = graph.declared_outputs.get(i) {
            if !decl.accepts(&uf.canon_type(&t)) {
                return Err(Diagnostic::new(
                    &graph.loc,
                    format!("output #{i} of '{}' is declared {} but computed as {}", graph.name, decl.to_mlir(), t.describe(&graph.symbols)),
                ));
            }
        }
    }
    for t in graph.types.iter_mut().flatten() {
        *t = uf.canon_type(t);
    }
    compact_symbols(graph, &uf);
    Ok(())
}

/// Drops symbols merged into others and renumbers the rest densely, in first-use order.
fn compact_symbols(graph: &mut Graph, uf: &SymUnion) {
    let mut new_index: Vec<Option<u32>> = vec![None; graph.symbols.len()];
    let mut names = Vec::new();
    for s in 0..graph.symbols.len() as u32 {
        if uf.find(s) == s {
            new_index[s as usize] = Some(names.len() as u32);
            names.push(graph.symbols[s as usize].clone());
        }
    }
    let remap = |s: u32| new_index[uf.find(s) as usize].expect("representatives are kept");
    for t in graph.types.iter_mut().flatten() {
        for d in &mut t.dims {
            *d = d.map_syms(&remap);
        }
    }
    graph.symbols = names;
}

/// Union-find over dimension symbols.
struct SymUnion {
    parent: Vec<u32>,
}

impl SymUnion {
    fn new(n: usize) -> Self {
        SymUnion { parent: (0..n as u32).collect() }
    }
    fn find(&self, mut s: u32) -> u32 {
        while self.parent[s as usize] != s {
            s = self.parent[s as usize];
        }
        s
    }
    fn union(&mut self, a: u32, b: u32) {
        let (a, b) = (self.find(a), self.find(b));
        // The smaller index (the earlier input) stays the representative.
        let (lo, hi) = if a < b { (a, b) } else { (b, a) };
        self.parent[hi as usize] = lo;
    }
    fn canon(&self, e: &DimExpr) -> DimExpr {
        e.map_syms(&|s| self.find(s))
    }
    fn canon_type(&self, t: &TensorType) -> TensorType {
        TensorType::new(t.dtype, t.dims.iter().map(|d| self.canon(d)).collect())
    }
    /// Makes `a` and `b` equal if possible, returning the common dim.
    fn unify(&mut self, a: &DimExpr, b: &DimExpr) -> Option<DimExpr> {
        let (a, b) = (self.canon(a), self.canon(b));
        if a == b {
            return Some(a);
        }
        match (&a, &b) {
            (DimExpr::Sym(x), DimExpr::Sym(y)) => {
                self.union(*x, *y);
                Some(DimExpr::Sym(self.find(*x)))
            }
            _ => None,
        }
    }
}

fn show(d: &DimExpr, names: &[String]) -> String {
    d.display(names).to_string()
}

/// Normalizes a possibly negative axis against `rank`.
fn norm_axis(axis: i64, rank: usize, what: &str) -> Result<usize, String> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r {
        return Err(format!("{what} {axis} is out of range for a tensor of rank {rank}"));
    }
    Ok(a as usize)
}

fn expect_arity(node: &Node, n: usize) -> Result<(), String> {
    if node.inputs.len() != n {
        return Err(format!("'max.{}' takes {n} operand(s), got {}", node.op.name(), node.inputs.len()));
    }
    Ok(())
}

fn expect_float(op: &str, t: &TensorType) -> Result<(), String> {
    if !t.dtype.is_float() {
        return Err(format!("'max.{op}' requires a floating-point operand, got {}", t.dtype));
    }
    Ok(())
}

/// NumPy broadcasting of two shapes.
fn broadcast(a: &[DimExpr], b: &[DimExpr], uf: &mut SymUnion, names: &[String]) -> Result<Vec<DimExpr>, String> {
    let rank = a.len().max(b.len());
    let mut out = Vec::with_capacity(rank);
    for i in 0..rank {
        let da = (i + a.len()).checked_sub(rank).map(|j| &a[j]);
        let db = (i + b.len()).checked_sub(rank).map(|j| &b[j]);
        let d = match (da, db) {
            (Some(x), None) | (None, Some(x)) => x.clone(),
            (Some(x), Some(y)) => {
                if x.as_const() == Some(1) {
                    y.clone()
                } else if y.as_const() == Some(1) {
                    x.clone()
                } else {
                    uf.unify(x, y).ok_or_else(|| {
                        format!("cannot broadcast dimension {} against {} (axis {i} of the result)", show(x, names), show(y, names))
                    })?
                }
            }
            (None, None) => unreachable!(),
        };
        out.push(d);
    }
    Ok(out)
}

fn infer_node(node: &Node, ins: &[TensorType], uf: &mut SymUnion, names: &[String]) -> Result<Vec<TensorType>, String> {
    let name = node.op.name();
    match &node.op {
        Op::Constant(c) => {
            expect_arity(node, 0)?;
            let n: i64 = c.dims.iter().product();
            if c.bytes.len() != n as usize * c.dtype.size_bytes() {
                return Err("'max.constant' data does not match its shape".into());
            }
            Ok(vec![TensorType::new(c.dtype, c.dims.iter().map(|d| DimExpr::Const(*d)).collect())])
        }
        Op::Weight { name: wname, .. } => {
            expect_arity(node, 0)?;
            let decl = node.declared.first().cloned().flatten().ok_or_else(|| format!("'max.weight' \"{wname}\" needs a result type"))?;
            let dims = decl
                .dims
                .iter()
                .map(|d| d.map(DimExpr::Const).ok_or_else(|| format!("weight \"{wname}\" must have a static shape, got {}", decl.to_mlir())))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(vec![TensorType::new(decl.dtype, dims)])
        }
        Op::Unary(u) => {
            expect_arity(node, 1)?;
            let t = &ins[0];
            if !matches!(u, UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Relu) {
                expect_float(name, t)?;
            }
            Ok(vec![t.clone()])
        }
        Op::Binary(b) => {
            expect_arity(node, 2)?;
            let (x, y) = (&ins[0], &ins[1]);
            if x.dtype != y.dtype {
                return Err(format!("'max.{name}' operands have different dtypes: {} and {}", x.dtype, y.dtype));
            }
            if *b == BinaryOp::Pow {
                expect_float(name, x)?;
            }
            Ok(vec![TensorType::new(x.dtype, broadcast(&x.dims, &y.dims, uf, names)?)])
        }
        Op::Cast(to) => {
            expect_arity(node, 1)?;
            Ok(vec![TensorType::new(*to, ins[0].dims.clone())])
        }
        Op::MatMul => {
            expect_arity(node, 2)?;
            let (a, b) = (&ins[0], &ins[1]);
            if a.dtype != b.dtype {
                return Err(format!("'max.matmul' operands have different dtypes: {} and {}", a.dtype, b.dtype));
            }
            if a.rank() < 2 || b.rank() < 2 {
                return Err(format!("'max.matmul' needs operands of rank >= 2, got ranks {} and {}", a.rank(), b.rank()));
            }
            let (m, ka) = (&a.dims[a.rank() - 2], &a.dims[a.rank() - 1]);
            let (kb, n) = (&b.dims[b.rank() - 2], &b.dims[b.rank() - 1]);
            uf.unify(ka, kb).ok_or_else(|| {
                format!(
                    "'max.matmul' contraction dims differ: lhs {} has {} columns, rhs {} has {} rows",
                    a.describe(names),
                    show(ka, names),
                    b.describe(names),
                    show(kb, names)
                )
            })?;
            let mut dims = broadcast(&a.dims[..a.rank() - 2], &b.dims[..b.rank() - 2], uf, names)?;
            dims.push(m.clone());
            dims.push(n.clone());
            Ok(vec![TensorType::new(a.dtype, dims)])
        }
        Op::Transpose { perm } => {
            expect_arity(node, 1)?;
            let t = &ins[0];
            let mut seen = vec![false; t.rank()];
            if perm.len() != t.rank() {
                return Err(format!("'max.transpose' perm has {} entries but the operand has rank {}", perm.len(), t.rank()));
            }
            let mut dims = Vec::new();
            for &p in perm {
                let p = norm_axis(p, t.rank(), "perm entry")?;
                if std::mem::replace(&mut seen[p], true) {
                    return Err(format!("'max.transpose' perm {perm:?} is not a permutation"));
                }
                dims.push(t.dims[p].clone());
            }
            Ok(vec![TensorType::new(t.dtype, dims)])
        }
        Op::Reduce { op, axes, keepdims } => {
            expect_arity(node, 1)?;
            let t = &ins[0];
            if *op == ReduceOp::Mean {
                expect_float(name, t)?;
            }
            let mut red = vec![false; t.rank()];
            for &a in axes {
                let a = norm_axis(a, t.rank(), "reduction axis")?;
                if std::mem::replace(&mut red[a], true) {
                    return Err(format!("'max.{name}' axes {axes:?} repeat an axis"));
                }
            }
            let dims = t
                .dims
                .iter()
                .zip(&red)
                .filter_map(|(d, r)| match (r, keepdims) {
                    (false, _) => Some(d.clone()),
                    (true, true) => Some(DimExpr::Const(1)),
                    (true, false) => None,
                })
                .collect();
            Ok(vec![TensorType::new(t.dtype, dims)])
        }
        Op::Softmax { axis } => {
            expect_arity(node, 1)?;
            expect_float(name, &ins[0])?;
            norm_axis(*axis, ins[0].rank(), "softmax axis")?;
            Ok(vec![ins[0].clone()])
        }
        Op::Reshape { shape } => {
            expect_arity(node, 1)?;
            let t = &ins[0];
            let total = t.num_elements();
            let mut dims: Vec<Option<DimExpr>> = Vec::new();
            let mut infer_at = None;
            for (i, &s) in shape.iter().enumerate() {
                match s {
                    -1 if infer_at.is_some() => return Err("'max.reshape' shape may contain at most one -1".into()),
                    -1 => {
                        infer_at = Some(i);
                        dims.push(None);
                    }
                    0 => dims.push(Some(t.dims.get(i).cloned().ok_or_else(|| format!("'max.reshape' shape entry {i} is 0 (copy) but the operand has rank {}", t.rank()))?)),
                    s if s < 0 => return Err(format!("'max.reshape' shape entry {s} is invalid (use -1 once, or 0 to copy a dim)")),
                    s => dims.push(Some(DimExpr::Const(s))),
                }
            }
            let known = DimExpr::product(dims.iter().flatten());
            if let Some(i) = infer_at {
                let d = match DimExpr::exact_div(&total, &known) {
                    Some(d) => d,
                    // Symbolic sizes that cannot be proven divisible: the runtime checks that
                    // the reshaped buffer has its operand's element count.
                    None if !(total.is_static() && known.is_static()) => DimExpr::div(total.clone(), known.clone()),
                    None => {
                        return Err(format!(
                            "'max.reshape' cannot infer -1: {} elements are not divisible by {}",
                            show(&total, names),
                            show(&known, names)
                        ))
                    }
                };
                dims[i] = Some(d);
            } else if uf.unify(&total, &known).is_none() && !(total.is_static() && total == known) {
                return Err(format!(
                    "'max.reshape' changes the element count from {} ({}) to {}",
                    show(&total, names),
                    t.describe(names),
                    show(&known, names)
                ));
            }
            Ok(vec![TensorType::new(t.dtype, dims.into_iter().map(Option::unwrap).collect())])
        }
        Op::BroadcastTo { shape } => {
            expect_arity(node, 1)?;
            let t = &ins[0];
            if shape.len() < t.rank() {
                return Err(format!("'max.broadcast_to' target rank {} is below the operand rank {}", shape.len(), t.rank()));
            }
            let off = shape.len() - t.rank();
            let mut dims = Vec::new();
            for (i, &s) in shape.iter().enumerate() {
                let src = i.checked_sub(off).map(|j| &t.dims[j]);
                let d = match (s, src) {
                    (-1, Some(d)) => d.clone(),
                    (-1, None) => return Err(format!("'max.broadcast_to' shape entry {i} is -1 but there is no operand dim to keep")),
                    (s, _) if s < 0 => return Err(format!("'max.broadcast_to' shape entry {s} is invalid")),
                    (s, Some(d)) if d.as_const() != Some(1) && d.as_const() != Some(s) => {
                        return Err(format!("'max.broadcast_to' cannot broadcast dimension {} to {s}", show(d, names)))
                    }
                    (s, _) => DimExpr::Const(s),
                };
                dims.push(d);
            }
            Ok(vec![TensorType::new(t.dtype, dims)])
        }
        Op::Concat { axis } => {
            if ins.is_empty() {
                return Err("'max.concat' needs at least one operand".into());
            }
            let first = &ins[0];
            let ax = norm_axis(*axis, first.rank(), "concat axis")?;
            let mut dims = first.dims.clone();
            for (k, t) in ins.iter().enumerate().skip(1) {
                if t.dtype != first.dtype || t.rank() != first.rank() {
                    return Err(format!("'max.concat' operand #{k} is {} but operand #0 is {}", t.describe(names), first.describe(names)));
                }
                for (i, (d, td)) in dims.iter_mut().zip(&t.dims).enumerate() {
                    *d = if i == ax {
                        DimExpr::add(d.clone(), td.clone())
                    } else {
                        uf.unify(d, td).ok_or_else(|| {
                            format!("'max.concat' operand #{k} has dim {} on axis {i} but operand #0 has {}", show(td, names), show(d, names))
                        })?
                    };
                }
            }
            Ok(vec![TensorType::new(first.dtype, dims)])
        }
        Op::Split { axis, spec } => {
            expect_arity(node, 1)?;
            let t = &ins[0];
            let ax = norm_axis(*axis, t.rank(), "split axis")?;
            let d = &t.dims[ax];
            let sizes: Vec<DimExpr> = match spec {
                SplitSpec::Sizes(s) => {
                    if s.iter().any(|x| *x < 0) {
                        return Err(format!("'max.split' sizes {s:?} must not be negative"));
                    }
                    let sum: i64 = s.iter().sum();
                    if d.as_const() != Some(sum) {
                        return Err(format!("'max.split' sizes {s:?} add up to {sum} but axis {ax} has size {}", show(d, names)));
                    }
                    s.iter().map(|x| DimExpr::Const(*x)).collect()
                }
                SplitSpec::Num(n) => {
                    let n = if *n == 0 { node.outputs.len() } else { *n };
                    if n == 0 {
                        return Err("'max.split' must produce at least one result".into());
                    }
                    let part = DimExpr::exact_div(d, &DimExpr::Const(n as i64))
                        .ok_or_else(|| format!("'max.split' cannot split axis {ax} of size {} into {n} equal parts", show(d, names)))?;
                    vec![part; n]
                }
            };
            Ok(sizes
                .into_iter()
                .map(|s| {
                    let mut dims = t.dims.clone();
                    dims[ax] = s;
                    TensorType::new(t.dtype, dims)
                })
                .collect())
        }
        Op::Slice { starts, ends, axes, steps } => {
            expect_arity(node, 1)?;
            let t = &ins[0];
            let axes: Vec<i64> = axes.clone().unwrap_or_else(|| (0..starts.len() as i64).collect());
            let steps = steps.clone().unwrap_or_else(|| vec![1; starts.len()]);
            if starts.len() != ends.len() || starts.len() != axes.len() || starts.len() != steps.len() {
                return Err("'max.slice' starts, ends, axes and steps must have the same length".into());
            }
            let mut dims = t.dims.clone();
            for k in 0..starts.len() {
                let ax = norm_axis(axes[k], t.rank(), "slice axis")?;
                let step = steps[k];
                if step <= 0 {
                    return Err(format!("'max.slice' step {step} must be positive"));
                }
                let (lo, hi) = slice_bounds(&t.dims[ax], starts[k], ends[k]);
                dims[ax] = DimExpr::ceil_div(DimExpr::max(DimExpr::sub(hi, lo), DimExpr::Const(0)), DimExpr::Const(step));
            }
            Ok(vec![TensorType::new(t.dtype, dims)])
        }
        Op::Gather { axis } => {
            expect_arity(node, 2)?;
            let (data, idx) = (&ins[0], &ins[1]);
            if !matches!(idx.dtype, DType::I32 | DType::I64) {
                return Err(format!("'max.gather' indices must be i32 or i64, got {}", idx.dtype));
            }
            let ax = norm_axis(*axis, data.rank(), "gather axis")?;
            let mut dims = data.dims[..ax].to_vec();
            dims.extend(idx.dims.iter().cloned());
            dims.extend(data.dims[ax + 1..].iter().cloned());
            Ok(vec![TensorType::new(data.dtype, dims)])
        }
        Op::Custom { .. } => unreachable!("custom ops are inferred by their declaration"),
        Op::RmsNorm { epsilon } | Op::LayerNorm { epsilon } => {
            let is_rms = matches!(node.op, Op::RmsNorm { .. });
            expect_arity(node, if is_rms { 2 } else { 3 })?;
            let x = &ins[0];
            expect_float(name, x)?;
            if x.rank() == 0 {
                return Err(format!("'max.{name}' needs an operand of rank >= 1"));
            }
            if epsilon.is_nan() || *epsilon < 0.0 {
                return Err(format!("'max.{name}' epsilon must be >= 0, got {epsilon}"));
            }
            let d = &x.dims[x.rank() - 1];
            for (k, p) in ins.iter().enumerate().skip(1) {
                let what = if is_rms { "weight" } else if k == 1 { "gamma" } else { "beta" };
                if p.dtype != x.dtype || p.rank() != 1 {
                    return Err(format!("'max.{name}' {what} must be a 1-D {} tensor, got {}", x.dtype, p.describe(names)));
                }
                uf.unify(d, &p.dims[0])
                    .ok_or_else(|| format!("'max.{name}' {what} has {} elements but the normalized axis has {}", show(&p.dims[0], names), show(d, names)))?;
            }
            Ok(vec![x.clone()])
        }
        Op::Attention { .. } => {
            expect_arity(node, 3)?;
            let (q, k, v) = (&ins[0], &ins[1], &ins[2]);
            for (what, t) in [("query", q), ("key", k), ("value", v)] {
                expect_float(name, t)?;
                if t.rank() != 4 || t.dtype != q.dtype {
                    return Err(format!("'max.attention' {what} must be a rank-4 {} tensor [batch, seq, heads, dim], got {}", q.dtype, t.describe(names)));
                }
            }
            let unify = |uf: &mut SymUnion, a: &DimExpr, b: &DimExpr, what: &str| {
                uf.unify(a, b).ok_or_else(|| format!("'max.attention' {what} differ: {} vs {}", show(a, names), show(b, names)))
            };
            unify(uf, &q.dims[0], &k.dims[0], "batch sizes of query and key")?;
            unify(uf, &k.dims[0], &v.dims[0], "batch sizes of key and value")?;
            unify(uf, &k.dims[1], &v.dims[1], "key and value lengths")?;
            unify(uf, &k.dims[2], &v.dims[2], "key and value head counts")?;
            unify(uf, &q.dims[3], &k.dims[3], "query and key head dims")?;
            match (q.dims[2].as_const(), k.dims[2].as_const()) {
                (Some(hq), Some(hkv)) if hkv > 0 && hq % hkv == 0 => {}
                _ => {
                    return Err(format!(
                        "'max.attention' query heads ({}) must be a static multiple of key/value heads ({})",
                        show(&q.dims[2], names),
                        show(&k.dims[2], names)
                    ))
                }
            }
            if q.dims[3].as_const().is_none() {
                return Err("'max.attention' head dim must be static".into());
            }
            Ok(vec![TensorType::new(q.dtype, vec![q.dims[0].clone(), q.dims[1].clone(), q.dims[2].clone(), v.dims[3].clone()])])
        }
        Op::QMatMul { format, quantize_input } => {
            if *quantize_input && ins[0].dtype != DType::F32 {
                return Err(format!("'max.qmatmul' with quantize_input takes f32 activations, got {}", ins[0].describe(names)));
            }
            expect_arity(node, 2)?;
            let (x, w) = (&ins[0], &ins[1]);
            expect_float(name, x)?;
            if x.rank() != 2 || w.rank() != 2 || w.dtype != DType::I8 {
                return Err(format!("'max.qmatmul' takes x[M, K] and i8 weight blocks w[N, bytes], got {} and {}", x.describe(names), w.describe(names)));
            }
            let bb = format.block_bytes();
            let bytes = w.dims[1].as_const().filter(|b| b % bb == 0).ok_or_else(|| {
                format!("'max.qmatmul' {} rows must be a static multiple of {bb} bytes, got {}", format.name(), show(&w.dims[1], names))
            })?;
            let k = DimExpr::Const(bytes / bb * format.block_len());
            uf.unify(&x.dims[1], &k).ok_or_else(|| {
                format!("'max.qmatmul' weight rows hold {} weights ({bytes} bytes of {}) but x has {} columns", show(&k, names), format.name(), show(&x.dims[1], names))
            })?;
            Ok(vec![TensorType::new(x.dtype, vec![x.dims[0].clone(), w.dims[0].clone()])])
        }
        Op::Dequantize { format } => {
            expect_arity(node, 1)?;
            let w = &ins[0];
            let bb = format.block_bytes();
            let last = w.dims.last().and_then(DimExpr::as_const).filter(|b| b % bb == 0);
            let (Some(bytes), DType::I8) = (last, w.dtype) else {
                return Err(format!("'max.dequantize' {} takes i8 blocks with a static last dim that is a multiple of {bb} bytes, got {}", format.name(), w.describe(names)));
            };
            let mut dims = w.dims.clone();
            *dims.last_mut().unwrap() = DimExpr::Const(bytes / bb * format.block_len());
            Ok(vec![TensorType::new(DType::F32, dims)])
        }
        Op::CacheWrite { layer } => {
            expect_arity(node, 4)?;
            let (cache, new) = (&ins[0], &ins[1]);
            check_cache(name, cache, *layer, names)?;
            if !(new.rank() == 3 || new.rank() == 4) || !new.dtype.is_float() {
                return Err(format!("'max.cache_write' new entries must be a float tensor [batch, seq, heads, dim] or [batch * seq, heads, dim], got {}", new.describe(names)));
            }
            let r = new.rank();
            for (i, what) in [(r - 2, "head counts"), (r - 1, "head dims")] {
                let c = &cache.dims[i + 5 - r];
                uf.unify(c, &new.dims[i]).ok_or_else(|| format!("'max.cache_write' {what} of cache and new entries differ: {} vs {}", show(c, names), show(&new.dims[i], names)))?;
            }
            if r == 4 {
                check_rows(name, &ins[2..4], &new.dims[0], uf, names)?;
            } else {
                let b = ins[2].dims.first().cloned().unwrap_or(DimExpr::Const(1));
                check_rows(name, &ins[2..4], &b, uf, names)?;
            }
            Ok(vec![cache.clone()])
        }
        Op::CachedAttention { layer, .. } => {
            expect_arity(node, 5)?;
            let (q, kc, vc) = (&ins[0], &ins[1], &ins[2]);
            if !(q.rank() == 3 || q.rank() == 4) || !q.dtype.is_float() {
                return Err(format!("'max.cached_attention' query must be a float tensor [batch, seq, heads, dim] or [batch * seq, heads, dim], got {}", q.describe(names)));
            }
            let r = q.rank();
            check_cache(name, kc, *layer, names)?;
            check_cache(name, vc, *layer, names)?;
            if kc.dtype != vc.dtype {
                return Err(format!("'max.cached_attention' key and value caches differ in dtype: {} vs {}", kc.dtype, vc.dtype));
            }
            for i in 0..4 {
                uf.unify(&kc.dims[i], &vc.dims[i])
                    .ok_or_else(|| format!("'max.cached_attention' key and value caches differ: {} vs {}", kc.describe(names), vc.describe(names)))?;
            }
            uf.unify(&q.dims[r - 1], &kc.dims[4])
                .ok_or_else(|| format!("'max.cached_attention' query head dim {} differs from the cache's {}", show(&q.dims[r - 1], names), show(&kc.dims[4], names)))?;
            match (q.dims[r - 2].as_const(), kc.dims[3].as_const(), q.dims[r - 1].as_const(), vc.dims[4].as_const()) {
                (Some(hq), Some(hkv), Some(d), Some(dv)) if hkv > 0 && hq % hkv == 0 && d % 8 == 0 && dv == d => {}
                _ => {
                    return Err(format!(
                        "'max.cached_attention' needs static heads, query heads a multiple of kv heads and a head dim that is a multiple of 8, got query {} and cache {}",
                        q.describe(names),
                        kc.describe(names)
                    ))
                }
            }
            if r == 4 {
                check_rows(name, &ins[3..5], &q.dims[0], uf, names)?;
            } else {
                let b = ins[3].dims.first().cloned().unwrap_or(DimExpr::Const(1));
                check_rows(name, &ins[3..5], &b, uf, names)?;
            }
            Ok(vec![q.clone()])
        }
        Op::Rope { base, .. } => {
            expect_arity(node, 2)?;
            let (x, pos) = (&ins[0], &ins[1]);
            expect_float(name, x)?;
            if x.rank() < 3 {
                return Err(format!("'max.rope' input must be [..., seq, heads, head_dim], got rank {}", x.rank()));
            }
            match x.dims[x.rank() - 1].as_const() {
                Some(d) if d % 2 == 0 && d > 0 => {}
                _ => return Err(format!("'max.rope' head_dim must be static and even, got {}", show(&x.dims[x.rank() - 1], names))),
            }
            // Positions per sequence index `[S]`, or per batch row and index `[B, S]`.
            if !matches!(pos.dtype, DType::I32 | DType::I64) || pos.rank() == 0 || pos.rank() > 2 || pos.rank() + 2 > x.rank() {
                return Err(format!("'max.rope' positions must be an i32 or i64 tensor [seq] or [batch, seq], got {}", pos.describe(names)));
            }
            let lead = &x.dims[x.rank() - 2 - pos.rank()..x.rank() - 2];
            for (k, (d, p)) in lead.iter().zip(&pos.dims).enumerate() {
                let what = if k + 1 == lead.len() { "a sequence" } else { "a batch" };
                uf.unify(d, p).ok_or_else(|| format!("'max.rope' has {} positions for {what} of {}", show(p, names), show(d, names)))?;
            }
            if base.is_nan() || *base <= 0.0 {
                return Err(format!("'max.rope' base must be > 0, got {base}"));
            }
            Ok(vec![x.clone()])
        }
    }
}

/// Clamped `[start, end)` bounds of a slice along a dim of size `d` (Python semantics:
/// negative indices count from the end, out-of-range bounds clamp).
pub fn slice_bounds(d: &DimExpr, start: i64, end: i64) -> (DimExpr, DimExpr) {
    let clamp = |i: i64| -> DimExpr {
        if i >= 0 {
            DimExpr::min(DimExpr::Const(i), d.clone())
        } else {
            DimExpr::max(DimExpr::sub(d.clone(), DimExpr::Const(-i)), DimExpr::Const(0))
        }
    };
    (clamp(start), clamp(end))
}

/// A KV cache operand: `[layers, max_batch, max_len, heads, head_dim]`, float, static layer
/// count, heads and head dim, with `layer` in range.
fn check_cache(op: &str, cache: &TensorType, layer: i64, names: &[String]) -> Result<(), String> {
    if cache.rank() != 5 || !cache.dtype.is_float() {
        return Err(format!("'max.{op}' cache must be a rank-5 float tensor [layers, max_batch, max_len, heads, head_dim], got {}", cache.describe(names)));
    }
    let Some(layers) = cache.dims[0].as_const() else {
        return Err(format!("'max.{op}' cache layer count must be static, got {}", cache.describe(names)));
    };
    if cache.dims[3].as_const().is_none() || cache.dims[4].as_const().is_none() {
        return Err(format!("'max.{op}' cache heads and head dim must be static, got {}", cache.describe(names)));
    }
    if layer < 0 || layer >= layers {
        return Err(format!("'max.{op}' layer {layer} is out of range for a cache of {layers} layers"));
    }
    Ok(())
}

/// Per-row `positions[B]` and `slots[B]` operands: i32, one per batch row.
fn check_rows(op: &str, rows: &[TensorType], batch: &DimExpr, uf: &mut SymUnion, names: &[String]) -> Result<(), String> {
    for (t, what) in rows.iter().zip(["positions", "slots"]) {
        if t.dtype != DType::I32 || t.rank() != 1 {
            return Err(format!("'max.{op}' {what} must be a 1-D i32 tensor [batch], got {}", t.describe(names)));
        }
        uf.unify(batch, &t.dims[0]).ok_or_else(|| format!("'max.{op}' has {} {what} for a batch of {}", show(&t.dims[0], names), show(batch, names)))?;
    }
    Ok(())
}


#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::Location;

    fn t(dtype: DType, dims: Vec<DimExpr>) -> TensorType {
        TensorType::new(dtype, dims)
    }

    #[test]
    fn matmul_unifies_symbols_and_reports_mismatch() {
        let mut g = Graph::new("g", Location::default());
        let b = g.symbol("batch");
        let k = g.symbol("k");
        let x = g.add_input("x", t(DType::F32, vec![DimExpr::Sym(b), DimExpr::Sym(k)]));
        let w = g.add_input("w", t(DType::F32, vec![DimExpr::Const(8), DimExpr::Const(4)]));
        let y = g.add_input("y", t(DType::F32, vec![DimExpr::Sym(k), DimExpr::Const(4)]));
        let o = g.add_node(Op::MatMul, vec![x, y], 1, vec![], Location::new("a.mlir", 3, 5))[0];
        g.outputs = vec![o];
        verify(&mut g).unwrap();
        assert_eq!(g.ty(o).dims, vec![DimExpr::Sym(b), DimExpr::Const(4)]);

        let bad = g.add_node(Op::MatMul, vec![w, w], 1, vec![], Location::new("a.mlir", 4, 9))[0];
        g.outputs = vec![bad];
        let err = verify(&mut g).unwrap_err();
        assert_eq!(err.loc, Location::new("a.mlir", 4, 9));
        assert!(err.message.contains("contraction dims differ"), "{}", err.message);
    }

    #[test]
    fn reshape_infers_symbolic_dim() {
        let mut g = Graph::new("g", Location::default());
        let b = g.symbol("batch");
        let x = g.add_input("x", t(DType::F32, vec![DimExpr::Sym(b), DimExpr::Const(768)]));
        let r = g.add_node(Op::Reshape { shape: vec![-1, 12, 64] }, vec![x], 1, vec![], Location::default())[0];
        g.outputs = vec![r];
        verify(&mut g).unwrap();
        assert_eq!(g.ty(r).dims, vec![DimExpr::Sym(b), DimExpr::Const(12), DimExpr::Const(64)]);
    }

    #[test]
    fn slice_and_concat_shapes() {
        let mut g = Graph::new("g", Location::default());
        let x = g.add_input("x", t(DType::F32, vec![DimExpr::Const(10), DimExpr::Const(3)]));
        let s = g.add_node(Op::Slice { starts: vec![-4], ends: vec![100], axes: None, steps: Some(vec![3]) }, vec![x], 1, vec![], Location::default())[0];
        let c = g.add_node(Op::Concat { axis: 0 }, vec![s, x], 1, vec![], Location::default())[0];
        g.outputs = vec![c];
        verify(&mut g).unwrap();
        assert_eq!(g.ty(s).static_dims(), vec![Some(2), Some(3)]);
        assert_eq!(g.ty(c).static_dims(), vec![Some(12), Some(3)]);
    }
}
