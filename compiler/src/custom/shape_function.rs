//! Shape functions: a custom op's result shape computed by a function the user writes.
//!
//! ```mlir
//! // Operand dims in order (x: [n, a], y: [n, b]); results: the output's dims.
//! func.func @concat_cols_shape(%n: index, %a: index, %n2: index, %b: index) -> (index, index) {
//!   %w = arith.addi %a, %b : index
//!   func.return %n, %w : index, index
//! }
//! ```
//!
//! The function is read once, when its `kernels.toml` is loaded, and turned into an
//! expression over its parameters. Each use of the op substitutes the operands' symbolic
//! dims, so a result dim stays an expression of the graph's dynamic dims (computed by the
//! artifact at run time) and folds to a constant where the operands are static. No code is
//! generated for the function itself, which is why only index arithmetic is accepted.

use crate::error::CompileError;
use crate::mlir::MlirContext;
use max_dialects::{DimExpr, Location};
use melior::ir::block::BlockLike;
use melior::ir::operation::OperationLike;
use melior::ir::{RegionLike, ValueLike};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A binary index operation of a shape function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BinOp {
    Add,
    Sub,
    Mul,
    /// Division of non-negative dims: `divsi`, `divui` and `floordivsi` agree.
    Div,
    CeilDiv,
    Rem,
    Min,
    Max,
}

impl BinOp {
    fn from_op_name(name: &str) -> Option<BinOp> {
        Some(match name {
            "arith.addi" => BinOp::Add,
            "arith.subi" => BinOp::Sub,
            "arith.muli" => BinOp::Mul,
            "arith.divsi" | "arith.divui" | "arith.floordivsi" => BinOp::Div,
            "arith.ceildivsi" | "arith.ceildivui" => BinOp::CeilDiv,
            "arith.remsi" | "arith.remui" => BinOp::Rem,
            "arith.minsi" | "arith.minui" => BinOp::Min,
            "arith.maxsi" | "arith.maxui" => BinOp::Max,
            _ => return None,
        })
    }

    fn apply(self, a: DimExpr, b: DimExpr) -> DimExpr {
        match self {
            BinOp::Add => DimExpr::add(a, b),
            BinOp::Sub => DimExpr::sub(a, b),
            BinOp::Mul => DimExpr::mul(a, b),
            BinOp::Div => DimExpr::div(a, b),
            BinOp::CeilDiv => DimExpr::ceil_div(a, b),
            // a - (a / b) * b: the dims' expressions have no remainder of their own.
            BinOp::Rem => DimExpr::sub(a.clone(), DimExpr::mul(DimExpr::div(a, b.clone()), b)),
            BinOp::Min => DimExpr::min(a, b),
            BinOp::Max => DimExpr::max(a, b),
        }
    }
}

/// One value of a shape function, as an expression of its parameters.
#[derive(Debug, Clone, PartialEq)]
enum Term {
    Param(usize),
    Const(i64),
    Bin(BinOp, Box<Term>, Box<Term>),
}

impl Term {
    fn eval(&self, params: &[DimExpr]) -> DimExpr {
        match self {
            Term::Param(i) => params[*i].clone(),
            Term::Const(c) => DimExpr::Const(*c),
            Term::Bin(op, a, b) => op.apply(a.eval(params), b.eval(params)),
        }
    }
}

/// A shape function read from an MLIR file: its parameter count and one expression per
/// result dim.
#[derive(Debug, Clone, PartialEq)]
pub struct ShapeFunction {
    pub file: PathBuf,
    pub function: String,
    params: usize,
    results: Vec<Term>,
}

/// The index ops a shape function may use, for error messages.
const ACCEPTED: &str = "arith.constant, addi, subi, muli, divsi/divui/floordivsi, ceildivsi/ceildivui, remsi/remui, minsi/minui, maxsi/maxui";

impl ShapeFunction {
    /// Reads `func.func @function` from `source` (the text of `file`).
    pub fn parse(file: &Path, source: &str, function: &str) -> Result<ShapeFunction, CompileError> {
        let ctx = MlirContext::new()?;
        let module = ctx.parse(source, &file.display().to_string())?;
        let at = |loc: melior::ir::Location| Location::from_mlir(&loc.to_string());
        let err = |loc: Location, why: String| CompileError::Kernels(format!("{loc}: shape function @{function}: {why}"));
        let mut op = module.body().first_operation();
        let func = loop {
            let Some(o) = op else {
                return Err(CompileError::Kernels(format!("{} has no func.func @{function} (the shape function)", file.display())));
            };
            if o.name().as_string_ref().as_str() == Ok("func.func") && o.attribute("sym_name").ok().map(|a| a.to_string()) == Some(format!("{function:?}")) {
                break o;
            }
            op = o.next_in_block();
        };
        let region = func.region(0).map_err(|_| err(at(func.location()), "has no body".into()))?;
        let block = region.first_block().ok_or_else(|| err(at(func.location()), "has no body (a declaration?)".into()))?;
        if block.next_in_region().is_some() {
            return Err(err(at(func.location()), "has more than one block; a shape function is straight-line index arithmetic".into()));
        }
        let mut values: HashMap<*const std::ffi::c_void, Term> = HashMap::new();
        let params = block.argument_count();
        for i in 0..params {
            let a = block.argument(i).map_err(|e| CompileError::Internal(e.to_string()))?;
            if a.r#type().to_string() != "index" {
                return Err(err(at(func.location()), format!("parameter #{i} is {}; every parameter is an operand dim (index)", a.r#type())));
            }
            values.insert(a.to_raw().ptr, Term::Param(i));
        }
        let mut op = block.first_operation();
        while let Some(o) = op {
            let name = o.name().as_string_ref().as_str().unwrap_or("").to_string();
            let operand = |k: usize| -> Result<Term, CompileError> {
                let v = o.operand(k).map_err(|e| CompileError::Internal(e.to_string()))?;
                values.get(&v.to_raw().ptr).cloned().ok_or_else(|| err(at(o.location()), format!("operand #{k} of '{name}' is not an index value of this function")))
            };
            if name == "func.return" {
                let results = (0..o.operand_count()).map(operand).collect::<Result<Vec<_>, _>>()?;
                if results.is_empty() {
                    return Err(err(at(o.location()), "returns nothing; return one index per result dim".into()));
                }
                return Ok(ShapeFunction { file: file.to_path_buf(), function: function.to_string(), params, results });
            }
            let result = o.result(0).map_err(|_| err(at(o.location()), format!("'{name}' has no result")))?;
            if o.result_count() != 1 || result.r#type().to_string() != "index" {
                return Err(err(at(o.location()), format!("'{name}' must give one index value")));
            }
            let term = if name == "arith.constant" {
                let v = o.attribute("value").map_err(|_| err(at(o.location()), "arith.constant without a value".into()))?.to_string();
                let c = v.split(':').next().unwrap_or("").trim().parse::<i64>().map_err(|_| err(at(o.location()), format!("constant {v} is not an integer")))?;
                Term::Const(c)
            } else if let Some(bin) = BinOp::from_op_name(&name) {
                Term::Bin(bin, Box::new(operand(0)?), Box::new(operand(1)?))
            } else {
                return Err(err(at(o.location()), format!("'{name}' is not supported; a shape function may use {ACCEPTED}")));
            };
            values.insert(result.to_raw().ptr, term);
            op = o.next_in_block();
        }
        Err(err(at(func.location()), "does not end with func.return".into()))
    }

    /// The result dims for operands of these dims (all operands' dims, in order).
    pub fn apply(&self, op: &str, operand_dims: &[&[DimExpr]]) -> Result<Vec<DimExpr>, String> {
        let flat: Vec<DimExpr> = operand_dims.iter().flat_map(|d| d.iter().cloned()).collect();
        if flat.len() != self.params {
            let ranks: Vec<String> = operand_dims.iter().map(|d| d.len().to_string()).collect();
            return Err(format!(
                "custom op '{op}': shape function @{} ({}) takes {} dims, but the operands have {} (ranks {})",
                self.function,
                self.file.display(),
                self.params,
                flat.len(),
                ranks.join(", ")
            ));
        }
        let dims: Vec<DimExpr> = self.results.iter().map(|t| t.eval(&flat)).collect();
        if let Some((k, c)) = dims.iter().enumerate().find_map(|(k, d)| d.as_const().filter(|c| *c < 0).map(|c| (k, c))) {
            return Err(format!("custom op '{op}': shape function @{} gives dim {k} = {c}, which is negative", self.function));
        }
        Ok(dims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(src: &str) -> Result<ShapeFunction, CompileError> {
        ShapeFunction::parse(Path::new("s.mlir"), src, "f")
    }

    #[test]
    fn concat_shape_keeps_symbols_and_folds_constants() {
        let f = parse(
            "func.func @f(%n: index, %a: index, %m: index, %b: index) -> (index, index) {\n\
               %w = arith.addi %a, %b : index\n\
               %c2 = arith.constant 2 : index\n\
               %h = arith.ceildivsi %n, %c2 : index\n\
               func.return %h, %w : index, index\n\
             }",
        )
        .unwrap();
        let dims = f.apply("cat", &[&[DimExpr::Sym(0), DimExpr::Const(3)], &[DimExpr::Sym(0), DimExpr::Const(5)]]).unwrap();
        assert_eq!(dims[0], DimExpr::ceil_div(DimExpr::Sym(0), DimExpr::Const(2)));
        assert_eq!(dims[1], DimExpr::Const(8));
        assert_eq!(dims[0].eval(&[Some(7)]).unwrap(), 4);
        let rem = parse("func.func @f(%a: index, %b: index) -> index {\n %r = arith.remsi %a, %b : index\n func.return %r : index\n}").unwrap();
        assert_eq!(rem.apply("r", &[&[DimExpr::Const(17), DimExpr::Const(5)]]).unwrap(), vec![DimExpr::Const(2)]);
    }

    #[test]
    fn errors_name_the_op_and_its_location() {
        let e = parse("func.func @f(%a: index) -> index {\n  %r = arith.shli %a, %a : index\n  func.return %r : index\n}").unwrap_err().to_string();
        assert!(e.contains("s.mlir:2:8") && e.contains("'arith.shli' is not supported"), "{e}");
        let e = parse("func.func @f(%a: f32) -> f32 {\n  func.return %a : f32\n}").unwrap_err().to_string();
        assert!(e.contains("parameter #0 is f32"), "{e}");
        let e = parse("func.func @g(%a: index) -> index {\n  func.return %a : index\n}").unwrap_err().to_string();
        assert!(e.contains("no func.func @f"), "{e}");
        let f = parse("func.func @f(%a: index) -> index {\n  %c = arith.constant 4 : index\n  %r = arith.subi %a, %c : index\n  func.return %r : index\n}").unwrap();
        let e = f.apply("op", &[&[DimExpr::Const(2)]]).unwrap_err();
        assert!(e.contains("gives dim 0 = -2"), "{e}");
        let e = f.apply("op", &[&[DimExpr::Const(2), DimExpr::Const(1)]]).unwrap_err();
        assert!(e.contains("takes 1 dims, but the operands have 2 (ranks 2)"), "{e}");
    }
}
