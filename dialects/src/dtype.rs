//! Element types of `max` tensors.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Element type of a tensor. The discriminants are part of the artifact ABI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    F32,
    F16,
    BF16,
    I32,
    I64,
    /// Signed bytes; also the storage of quantized weight blocks (see `max.qmatmul`).
    I8,
}

impl DType {
    /// All dtypes, in a stable order.
    pub const ALL: [DType; 6] = [DType::F32, DType::F16, DType::BF16, DType::I32, DType::I64, DType::I8];

    /// Size of one element in bytes.
    pub fn size_bytes(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::I64 => 8,
            DType::I8 => 1,
        }
    }

    /// Whether this is a floating-point type (computed in f32).
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::BF16)
    }

    /// The MLIR spelling of the element type (`f32`, `bf16`, `i64`, ...).
    pub fn mlir_name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::I8 => "i8",
        }
    }

    /// Parses an MLIR element type spelling.
    pub fn from_mlir_name(s: &str) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.mlir_name() == s)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.mlir_name())
    }
}
