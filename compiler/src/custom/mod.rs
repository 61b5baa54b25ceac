//! Custom ops: kernels the user brings, declared in `kernels.toml` in a `--kernels` directory.
//!
//! ```toml
//! [[op]]
//! name = "custom_relu"
//! inputs = ["f32"]                                   # operand dtypes
//! outputs = [{ dtype = "f32", shape = "input0" }]    # or shape = ["input0.0", 16]
//!                                                    # or shape = { function = "f", file = "shapes.mlir" }
//! native = { library = "librelu.a", symbol = "custom_relu" }   # C ABI (include/max/custom_op.h)
//!
//! [[op]]
//! name = "softsign"
//! inputs = ["f32"]
//! outputs = [{ dtype = "f32", shape = "input0" }]
//! mlir = { file = "softsign.mlir", function = "softsign" }     # linalg/tensor/arith/math
//! ```
//!
//! Native kernels are linked from the user's static library or object file into the
//! artifact's kernel object and called with whole tensors. MLIR kernels are inlined into
//! the dispatch like built-in ops (their elementwise consumers fuse with them).

mod shape_function;

pub use shape_function::ShapeFunction;

use crate::error::CompileError;
use max_dialects::verify::CustomOps;
use max_dialects::{DType, DimExpr, TensorType};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Version of the native custom-op C ABI (`include/max/custom_op.h`).
pub const CUSTOM_OP_ABI_VERSION: u32 = 1;

/// How a custom op is implemented.
#[derive(Debug, Clone, PartialEq)]
pub enum CustomImpl {
    /// A C-ABI function in a static library or object file.
    Native { library: PathBuf, symbol: String },
    /// A `func.func` in an MLIR kernel library (the file's text is inlined).
    Mlir { file: PathBuf, function: String, source: String },
    /// No CPU kernel: the op has only a GPU (PTX) kernel.
    GpuOnly,
}

/// A tensor of a custom op's launch: operand or result `index`, and one of its dims or
/// (`dim: None`) its element count.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorRef {
    pub output: bool,
    pub index: usize,
    pub dim: Option<usize>,
}

/// One grid dimension of a PTX kernel launch: a constant, or `ceil(tensor ref / div)`.
#[derive(Debug, Clone, PartialEq)]
pub enum GridRule {
    Const(u64),
    Ref { of: TensorRef, div: u64 },
}

/// A GPU kernel given as PTX, with its launch rule. The kernel takes one `.u64` device
/// pointer per operand, then per result, then one `.u64` element count per operand, then
/// per result.
#[derive(Debug, Clone, PartialEq)]
pub struct PtxKernel {
    pub file: PathBuf,
    pub source: String,
    /// The `.entry` to launch.
    pub kernel: String,
    /// Threads per block.
    pub block: [u32; 3],
    /// Blocks per grid.
    pub grid: [GridRule; 3],
}

/// One dim of a declared result shape.
#[derive(Debug, Clone, PartialEq)]
pub enum DimRule {
    Const(i64),
    /// Dim `dim` of operand `input`.
    Input { input: usize, dim: usize },
}

/// How a declared result's shape follows from the operands'.
#[derive(Debug, Clone, PartialEq)]
pub enum ShapeRule {
    /// The shape of operand `n`.
    SameAs(usize),
    /// Dim by dim.
    Dims(Vec<DimRule>),
    /// Computed by the user's shape function.
    Function(ShapeFunction),
}

/// A declared result: dtype and shape rule.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputDecl {
    pub dtype: DType,
    pub shape: ShapeRule,
}

/// A declared custom op.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomOpDecl {
    pub name: String,
    pub inputs: Vec<DType>,
    pub outputs: Vec<OutputDecl>,
    pub imp: CustomImpl,
    /// The GPU kernel, for cuda targets (else the CPU kernel runs... only on CPU targets).
    pub ptx: Option<PtxKernel>,
    /// The `kernels.toml` it came from.
    pub declared_in: PathBuf,
}

/// Every custom op declared by the `--kernels` directories of a compile.
#[derive(Debug, Clone, Default)]
pub struct KernelRegistry {
    ops: BTreeMap<String, CustomOpDecl>,
    /// Files read (declarations, libraries, MLIR sources), for depfiles.
    pub files: Vec<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileToml {
    #[serde(default)]
    op: Vec<OpToml>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OpToml {
    name: String,
    inputs: Vec<String>,
    outputs: Vec<OutputToml>,
    native: Option<NativeToml>,
    mlir: Option<MlirToml>,
    ptx: Option<PtxToml>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PtxToml {
    file: String,
    kernel: Option<String>,
    block: Vec<u32>,
    grid: Vec<toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputToml {
    dtype: String,
    shape: toml::Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NativeToml {
    library: String,
    symbol: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MlirToml {
    file: String,
    function: Option<String>,
}

fn parse_input_ref(s: &str) -> Option<(usize, Option<usize>)> {
    let rest = s.strip_prefix("input")?;
    match rest.split_once('.') {
        Some((i, d)) => Some((i.parse().ok()?, Some(d.parse().ok()?))),
        None => Some((rest.parse().ok()?, None)),
    }
}

impl KernelRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads `dir/kernels.toml` and the kernels it names.
    pub fn add_dir(&mut self, dir: &Path) -> Result<(), CompileError> {
        let decl = dir.join("kernels.toml");
        let text = std::fs::read_to_string(&decl).map_err(|e| CompileError::Io { what: format!("reading {} (each --kernels directory needs one)", decl.display()), cause: e })?;
        self.record(&decl);
        let bad = |op: &str, why: String| CompileError::Kernels(format!("{}: op '{op}': {why}", decl.display()));
        let parsed: FileToml = toml::from_str(&text).map_err(|e| CompileError::Kernels(format!("{}: {e}", decl.display())))?;
        for op in parsed.op {
            let dtype = |s: &str| DType::from_mlir_name(s).ok_or_else(|| bad(&op.name, format!("unknown dtype '{s}' (f32, f16, bf16, i32, i64)")));
            let inputs = op.inputs.iter().map(|s| dtype(s)).collect::<Result<Vec<_>, _>>()?;
            let mut outputs = Vec::new();
            for (k, o) in op.outputs.iter().enumerate() {
                let dt = dtype(&o.dtype)?;
                let rule_err = || {
                    bad(&op.name, format!("output {k}: shape must be \"inputN\", a list of dims (integers or \"inputN.D\"), or {{ function = \"NAME\", file = \"FILE.mlir\" }}"))
                };
                let shape = match &o.shape {
                    toml::Value::String(s) => match parse_input_ref(s) {
                        Some((i, None)) if i < inputs.len() => ShapeRule::SameAs(i),
                        _ => return Err(rule_err()),
                    },
                    toml::Value::Array(items) => {
                        let mut dims = Vec::new();
                        for it in items {
                            dims.push(match it {
                                toml::Value::Integer(c) if *c >= 0 => DimRule::Const(*c),
                                toml::Value::String(s) => match parse_input_ref(s) {
                                    Some((i, Some(d))) if i < inputs.len() => DimRule::Input { input: i, dim: d },
                                    _ => return Err(rule_err()),
                                },
                                _ => return Err(rule_err()),
                            });
                        }
                        ShapeRule::Dims(dims)
                    }
                    toml::Value::Table(t) => {
                        let text = |key: &str| t.get(key).map(|v| v.as_str().map(str::to_string).ok_or_else(rule_err)).transpose();
                        if t.keys().any(|key| key != "function" && key != "file") {
                            return Err(rule_err());
                        }
                        let function = text("function")?.ok_or_else(rule_err)?;
                        // The file defaults to the op's MLIR kernel library.
                        let file = match (text("file")?, &op.mlir) {
                            (Some(f), _) => f,
                            (None, Some(m)) => m.file.clone(),
                            (None, None) => return Err(bad(&op.name, format!("output {k}: the shape function needs `file = \"...\"` (the op has no MLIR kernel file to default to)"))),
                        };
                        let file = dir.join(file);
                        let source = std::fs::read_to_string(&file).map_err(|e| CompileError::Io { what: format!("reading shape function file {}", file.display()), cause: e })?;
                        self.record(&file);
                        ShapeRule::Function(ShapeFunction::parse(&file, &source, &function)?)
                    }
                    _ => return Err(rule_err()),
                };
                outputs.push(OutputDecl { dtype: dt, shape });
            }
            if outputs.is_empty() {
                return Err(bad(&op.name, "declares no outputs".into()));
            }
            let imp = match (op.native, op.mlir) {
                (Some(n), None) => {
                    let library = dir.join(&n.library);
                    if !library.exists() {
                        return Err(bad(&op.name, format!("native library {} does not exist", library.display())));
                    }
                    self.record(&library);
                    CustomImpl::Native { library, symbol: n.symbol.unwrap_or_else(|| op.name.clone()) }
                }
                (None, Some(m)) => {
                    let file = dir.join(&m.file);
                    let source = std::fs::read_to_string(&file).map_err(|e| CompileError::Io { what: format!("reading MLIR kernel {}", file.display()), cause: e })?;
                    self.record(&file);
                    CustomImpl::Mlir { file, function: m.function.unwrap_or_else(|| op.name.clone()), source }
                }
                (None, None) if op.ptx.is_some() => CustomImpl::GpuOnly,
                _ => return Err(bad(&op.name, "needs exactly one CPU kernel, `native = {...}` or `mlir = {...}` (optional with `ptx = {...}`)".into())),
            };
            let ptx = match op.ptx {
                None => None,
                Some(p) => {
                    let file = dir.join(&p.file);
                    let source = std::fs::read_to_string(&file).map_err(|e| CompileError::Io { what: format!("reading PTX kernel {}", file.display()), cause: e })?;
                    self.record(&file);
                    let kernel = p.kernel.unwrap_or_else(|| op.name.clone());
                    if !ptx_defines_entry(&source, &kernel) {
                        return Err(bad(&op.name, format!("{} defines no `.entry {kernel}` (the kernel to launch)", file.display())));
                    }
                    if p.block.is_empty() || p.block.len() > 3 || p.block.contains(&0) || p.block.iter().product::<u32>() > 1024 {
                        return Err(bad(&op.name, "ptx.block must be 1 to 3 positive sizes with at most 1024 threads in all".into()));
                    }
                    if p.grid.is_empty() || p.grid.len() > 3 {
                        return Err(bad(&op.name, "ptx.grid must have 1 to 3 entries".into()));
                    }
                    let mut block = [1u32; 3];
                    block[..p.block.len()].copy_from_slice(&p.block);
                    let mut grid = [GridRule::Const(1), GridRule::Const(1), GridRule::Const(1)];
                    for (k, g) in p.grid.iter().enumerate() {
                        grid[k] = parse_grid_rule(g, inputs.len(), outputs.len()).ok_or_else(|| {
                            bad(&op.name, format!("ptx.grid[{k}]: expected a positive integer or \"REF\" / \"REF / N\" with REF = inputK.D, outputK.D, inputK.size or outputK.size"))
                        })?;
                    }
                    Some(PtxKernel { file, source, kernel, block, grid })
                }
            };
            if self.ops.contains_key(&op.name) {
                return Err(bad(&op.name, "is declared twice".into()));
            }
            self.ops.insert(op.name.clone(), CustomOpDecl { name: op.name, inputs, outputs, imp, ptx, declared_in: decl.clone() });
        }
        Ok(())
    }

    /// Notes a file read, once (a shape-function file may also be a kernel library).
    fn record(&mut self, file: &Path) {
        if !self.files.iter().any(|f| f == file) {
            self.files.push(file.to_path_buf());
        }
    }

    /// The declaration of op `name`.
    pub fn get(&self, name: &str) -> Option<&CustomOpDecl> {
        self.ops.get(name)
    }

    /// Whether nothing is declared.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Native libraries to link into the kernel object.
    pub fn native_libraries(&self) -> Vec<&Path> {
        let mut v: Vec<&Path> = self
            .ops
            .values()
            .filter_map(|d| match &d.imp {
                CustomImpl::Native { library, .. } => Some(library.as_path()),
                _ => None,
            })
            .collect();
        v.dedup();
        v
    }
}

/// Whether PTX text declares the kernel entry `name`.
fn ptx_defines_entry(ptx: &str, name: &str) -> bool {
    ptx.lines().any(|l| {
        let l = l.trim();
        l.contains(".entry") && l.split(|c: char| c.is_whitespace() || c == '(').any(|w| w == name)
    })
}

/// `3`, `"output0.size / 256"`, `"input1.0"`.
fn parse_grid_rule(v: &toml::Value, n_in: usize, n_out: usize) -> Option<GridRule> {
    match v {
        toml::Value::Integer(c) if *c > 0 => Some(GridRule::Const(*c as u64)),
        toml::Value::String(s) => {
            let (r, div) = match s.split_once('/') {
                Some((r, d)) => (r.trim(), d.trim().parse::<u64>().ok().filter(|d| *d > 0)?),
                None => (s.trim(), 1),
            };
            let (output, rest) = match (r.strip_prefix("input"), r.strip_prefix("output")) {
                (Some(rest), _) => (false, rest),
                (_, Some(rest)) => (true, rest),
                _ => return None,
            };
            let (i, d) = rest.split_once('.')?;
            let index: usize = i.parse().ok()?;
            if index >= if output { n_out } else { n_in } {
                return None;
            }
            let dim = if d == "size" { None } else { Some(d.parse().ok()?) };
            Some(GridRule::Ref { of: TensorRef { output, index, dim }, div })
        }
        _ => None,
    }
}

impl CustomOps for KernelRegistry {
    fn infer(&self, name: &str, inputs: &[TensorType], names: &[String]) -> Result<Vec<TensorType>, String> {
        let d = self.ops.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.ops.keys().map(String::as_str).collect();
            if known.is_empty() {
                format!("unknown custom op '{name}': no kernel declares it (pass --kernels DIR with a kernels.toml that does)")
            } else {
                format!("unknown custom op '{name}' (declared: {})", known.join(", "))
            }
        })?;
        if inputs.len() != d.inputs.len() {
            return Err(format!("custom op '{name}' takes {} operand(s) (declared in {}), got {}", d.inputs.len(), d.declared_in.display(), inputs.len()));
        }
        for (i, (t, want)) in inputs.iter().zip(&d.inputs).enumerate() {
            if t.dtype != *want {
                return Err(format!("custom op '{name}' operand #{i} must be {want} (declared in {}), got {}", d.declared_in.display(), t.describe(names)));
            }
        }
        d.outputs
            .iter()
            .map(|o| {
                let dims = match &o.shape {
                    ShapeRule::SameAs(i) => inputs[*i].dims.clone(),
                    ShapeRule::Function(f) => f.apply(name, &inputs.iter().map(|t| t.dims.as_slice()).collect::<Vec<_>>())?,
                    ShapeRule::Dims(rules) => rules
                        .iter()
                        .map(|r| match r {
                            DimRule::Const(c) => Ok(DimExpr::Const(*c)),
                            DimRule::Input { input, dim } => inputs[*input]
                                .dims
                                .get(*dim)
                                .cloned()
                                .ok_or_else(|| format!("custom op '{name}' shape rule reads dim {dim} of operand #{input}, which has rank {}", inputs[*input].rank())),
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                };
                Ok(TensorType::new(o.dtype, dims))
            })
            .collect()
    }
}

/// Parameter and result types (MLIR spelling) of `function` in an MLIR kernel library,
/// checked by parsing the file.
pub fn mlir_signature(ctx: &crate::mlir::MlirContext, file: &Path, source: &str, function: &str) -> Result<(Vec<String>, Vec<String>), CompileError> {
    use melior::ir::operation::OperationLike;
    use melior::ir::BlockLike;
    let module = ctx.parse(source, &file.display().to_string())?;
    let mut op = module.body().first_operation();
    while let Some(o) = op {
        if o.name().as_string_ref().as_str() == Ok("func.func") {
            let name = o.attribute("sym_name").ok().map(|a| a.to_string());
            if name.as_deref() == Some(&format!("{function:?}")) {
                let ty = o.attribute("function_type").map_err(|_| CompileError::Kernels(format!("{}: @{function} has no type", file.display())))?;
                // SAFETY: `function_type` of a func.func is a TypeAttr holding a FunctionType.
                let (ins, outs) = unsafe {
                    let t = mlir_sys::mlirTypeAttrGetValue(melior::ir::attribute::AttributeLike::to_raw(&ty));
                    let s = |x: mlir_sys::MlirType| melior::ir::Type::from_raw(x).to_string();
                    (
                        (0..mlir_sys::mlirFunctionTypeGetNumInputs(t)).map(|i| s(mlir_sys::mlirFunctionTypeGetInput(t, i))).collect::<Vec<_>>(),
                        (0..mlir_sys::mlirFunctionTypeGetNumResults(t)).map(|i| s(mlir_sys::mlirFunctionTypeGetResult(t, i))).collect::<Vec<_>>(),
                    )
                };
                return Ok((ins, outs));
            }
        }
        op = o.next_in_block();
    }
    Err(CompileError::Kernels(format!("{} has no func.func @{function}", file.display())))
}
