//! The `max` graph dialect.
//!
//! - [`IRDL`]: the dialect's IRDL definition, loaded into every MLIR context `maxc` makes;
//! - [`graph`]: the graph IR both front ends (MLIR importer, Graph API) produce;
//! - [`verify`]: shape and dtype verification with symbolic dims, reported at op locations.
//!
//! This crate is pure Rust (no MLIR linked): the runtime reuses [`DType`] and [`DimExpr`],
//! which are part of the artifact ABI.

pub mod diag;
pub mod dim;
pub mod dtype;
pub mod graph;
pub mod ops;
pub mod print;
pub mod types;
pub mod verify;

pub use diag::{Diagnostic, Location};
pub use dim::DimExpr;
pub use dtype::DType;
pub use graph::{Graph, Node, ValueId};
pub use ops::{Attr, BinaryOp, ConstantData, Op, QuantFormat, ReduceOp, SplitSpec, UnaryOp, WeightInit};
pub use types::{DeclaredType, TensorType};

/// IRDL definition of the `max` dialect.
pub const IRDL: &str = include_str!("max.irdl.mlir");
