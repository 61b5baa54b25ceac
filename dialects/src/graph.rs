//! The graph IR: a function of tensors made of `max` ops, in SSA form.
//!
//! This is what both front ends produce (the MLIR importer in `max-compiler` and the Rust
//! Graph API) and what the verifier, shape inference and lowering consume.

use crate::diag::Location;
use crate::ops::Op;
use crate::types::{DeclaredType, TensorType};

/// An SSA value of the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(pub usize);

/// One op application.
#[derive(Debug, Clone)]
pub struct Node {
    pub op: Op,
    pub inputs: Vec<ValueId>,
    pub outputs: Vec<ValueId>,
    /// Result types as written in the source (checked against inference), if any.
    pub declared: Vec<Option<DeclaredType>>,
    pub loc: Location,
}

/// A named graph input.
#[derive(Debug, Clone)]
pub struct Input {
    pub name: String,
    pub value: ValueId,
}

/// A graph: inputs, ops in topological order, outputs.
#[derive(Debug, Clone)]
pub struct Graph {
    pub name: String,
    /// Names of the dynamic dimension symbols (`DimExpr::Sym(i)` is `symbols[i]`).
    pub symbols: Vec<String>,
    pub inputs: Vec<Input>,
    pub nodes: Vec<Node>,
    pub outputs: Vec<ValueId>,
    /// Type of every value; `None` until shape inference has run for its producer.
    pub types: Vec<Option<TensorType>>,
    /// Declared output types (the function signature), checked by the verifier.
    pub declared_outputs: Vec<Option<DeclaredType>>,
    pub loc: Location,
}

impl Graph {
    /// An empty graph.
    pub fn new(name: impl Into<String>, loc: Location) -> Self {
        Graph {
            name: name.into(),
            symbols: Vec::new(),
            inputs: Vec::new(),
            nodes: Vec::new(),
            outputs: Vec::new(),
            types: Vec::new(),
            declared_outputs: Vec::new(),
            loc,
        }
    }

    /// Returns the symbol index for `name`, creating it if new.
    pub fn symbol(&mut self, name: &str) -> u32 {
        if let Some(i) = self.symbols.iter().position(|s| s == name) {
            return i as u32;
        }
        self.symbols.push(name.to_string());
        (self.symbols.len() - 1) as u32
    }

    /// Adds a value with an optional known type.
    pub fn new_value(&mut self, ty: Option<TensorType>) -> ValueId {
        self.types.push(ty);
        ValueId(self.types.len() - 1)
    }

    /// Adds a graph input of type `ty`.
    pub fn add_input(&mut self, name: impl Into<String>, ty: TensorType) -> ValueId {
        let v = self.new_value(Some(ty));
        self.inputs.push(Input { name: name.into(), value: v });
        v
    }

    /// Appends a node with `num_outputs` fresh result values; returns them.
    pub fn add_node(
        &mut self,
        op: Op,
        inputs: Vec<ValueId>,
        num_outputs: usize,
        declared: Vec<Option<DeclaredType>>,
        loc: Location,
    ) -> Vec<ValueId> {
        let outputs: Vec<ValueId> = (0..num_outputs).map(|_| self.new_value(None)).collect();
        let declared = if declared.is_empty() { vec![None; num_outputs] } else { declared };
        self.nodes.push(Node { op, inputs, outputs: outputs.clone(), declared, loc });
        outputs
    }

    /// The type of `v`.
    ///
    /// # Panics
    /// If shape inference has not assigned it yet (an internal ordering bug, not user input).
    pub fn ty(&self, v: ValueId) -> &TensorType {
        self.types[v.0].as_ref().expect("value type queried before shape inference")
    }

    /// The node producing `v`, if any (graph inputs have none).
    pub fn producer(&self, v: ValueId) -> Option<usize> {
        self.nodes.iter().position(|n| n.outputs.contains(&v))
    }
}
