//! Tensor types with symbolic shapes.

use crate::dim::DimExpr;
use crate::dtype::DType;
use std::fmt;

/// A tensor type: dtype and a shape whose dims are constants or symbolic expressions.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TensorType {
    pub dtype: DType,
    pub dims: Vec<DimExpr>,
}

impl TensorType {
    /// A tensor type with the given dims.
    pub fn new(dtype: DType, dims: Vec<DimExpr>) -> Self {
        TensorType { dtype, dims }
    }

    /// The rank.
    pub fn rank(&self) -> usize {
        self.dims.len()
    }

    /// Number of elements as an expression.
    pub fn num_elements(&self) -> DimExpr {
        DimExpr::product(&self.dims)
    }

    /// Static dims, or `None` where a dim is dynamic.
    pub fn static_dims(&self) -> Vec<Option<i64>> {
        self.dims.iter().map(DimExpr::as_const).collect()
    }

    /// The MLIR spelling, e.g. `tensor<?x768xf32>` (symbolic dims print as `?`).
    pub fn to_mlir(&self) -> String {
        let mut s = String::from("tensor<");
        for d in &self.dims {
            match d.as_const() {
                Some(c) => s.push_str(&c.to_string()),
                None => s.push('?'),
            }
            s.push('x');
        }
        s.push_str(self.dtype.mlir_name());
        s.push('>');
        s
    }

    /// Formats the shape with symbol names, e.g. `[batch, 768] f32`.
    pub fn describe(&self, names: &[String]) -> String {
        let dims: Vec<String> = self.dims.iter().map(|d| d.display(names).to_string()).collect();
        format!("[{}] {}", dims.join(", "), self.dtype)
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_mlir())
    }
}

/// A tensor type as written in MLIR: `None` marks a `?` dim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredType {
    pub dtype: DType,
    pub dims: Vec<Option<i64>>,
}

impl DeclaredType {
    /// Parses `tensor<?x768xf32>`; `None` if it is not a ranked tensor of a supported dtype.
    pub fn parse(s: &str) -> Option<DeclaredType> {
        let inner = s.trim().strip_prefix("tensor<")?.strip_suffix('>')?;
        let mut parts: Vec<&str> = inner.split('x').collect();
        let elem = parts.pop()?;
        let dtype = DType::from_mlir_name(elem)?;
        let dims = parts
            .into_iter()
            .map(|p| if p == "?" { Some(None) } else { p.parse::<i64>().ok().map(Some) })
            .collect::<Option<Vec<_>>>()?;
        Some(DeclaredType { dtype, dims })
    }

    /// Whether `t` is compatible: same dtype and rank, static dims equal where declared.
    pub fn accepts(&self, t: &TensorType) -> bool {
        self.dtype == t.dtype
            && self.dims.len() == t.dims.len()
            && self.dims.iter().zip(&t.dims).all(|(d, e)| match d {
                None => true,
                Some(c) => e.as_const() == Some(*c),
            })
    }

    /// The MLIR spelling.
    pub fn to_mlir(&self) -> String {
        let mut s = String::from("tensor<");
        for d in &self.dims {
            match d {
                Some(c) => s.push_str(&c.to_string()),
                None => s.push('?'),
            }
            s.push('x');
        }
        s.push_str(self.dtype.mlir_name());
        s.push('>');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tensor_types() {
        let t = DeclaredType::parse("tensor<?x768xf32>").unwrap();
        assert_eq!(t.dims, vec![None, Some(768)]);
        assert_eq!(t.to_mlir(), "tensor<?x768xf32>");
        assert_eq!(DeclaredType::parse("tensor<f16>").unwrap().dims, vec![]);
        assert!(DeclaredType::parse("tensor<4xf8E4M3>").is_none());
        assert!(DeclaredType::parse("memref<4xf32>").is_none());
    }
}
