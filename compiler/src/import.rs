//! Importing a parsed `max` MLIR module into the graph IR.
//!
//! The module must hold `func.func`s whose bodies are `max` ops ending in `func.return`.
//! Input names come from the `max.name` argument attribute (default `argN`), dynamic dim
//! names from `max.dims` (default `<input>.dN`).

use crate::error::CompileError;
use crate::mlir::MlirContext;
use max_dialects::{Attr, ConstantData, DeclaredType, Diagnostic, DimExpr, Graph, Location, Op, TensorType, ValueId};
use melior::ir::operation::OperationLike;
use melior::ir::{Attribute, AttributeLike, BlockLike, Module, OperationRef, RegionLike, TypeLike, ValueLike};
use mlir_sys as sys;
use std::collections::{BTreeMap, HashMap};

fn loc_of(op: &OperationRef) -> Location {
    Location::from_mlir(&op.location().to_string())
}

fn err(loc: &Location, msg: impl Into<String>) -> CompileError {
    CompileError::Diagnostic(Diagnostic::new(loc, msg))
}

fn string_ref(s: sys::MlirStringRef) -> String {
    if s.length == 0 || s.data.is_null() {
        return String::new();
    }
    // SAFETY: MLIR string refs point at `length` valid bytes owned by the context.
    let bytes = unsafe { std::slice::from_raw_parts(s.data as *const u8, s.length) };
    String::from_utf8_lossy(bytes).into_owned()
}

fn type_string(t: sys::MlirType) -> String {
    // SAFETY: `t` comes from a live attribute or value of this context.
    unsafe { melior::ir::Type::from_raw(t) }.to_string()
}

/// Converts an MLIR attribute to the dialect's attribute value.
fn convert_attr(a: Attribute) -> Result<Attr, String> {
    let raw = a.to_raw();
    // SAFETY: each query is a C API call on a live attribute; element access is bounded by
    // the element count MLIR reports.
    unsafe {
        if sys::mlirAttributeIsABool(raw) {
            return Ok(Attr::Bool(sys::mlirBoolAttrGetValue(raw)));
        }
        if sys::mlirAttributeIsAInteger(raw) {
            return Ok(Attr::Int(sys::mlirIntegerAttrGetValueInt(raw)));
        }
        if sys::mlirAttributeIsAFloat(raw) {
            return Ok(Attr::Float(sys::mlirFloatAttrGetValueDouble(raw)));
        }
        if sys::mlirAttributeIsAString(raw) {
            return Ok(Attr::Str(string_ref(sys::mlirStringAttrGetValue(raw))));
        }
        if sys::mlirAttributeIsADenseI64Array(raw) {
            let n = sys::mlirDenseArrayGetNumElements(raw);
            return Ok(Attr::Ints((0..n).map(|i| sys::mlirDenseI64ArrayGetElement(raw, i)).collect()));
        }
        if sys::mlirAttributeIsAArray(raw) {
            let n = sys::mlirArrayAttrGetNumElements(raw);
            let mut v = Vec::new();
            for i in 0..n {
                let e = sys::mlirArrayAttrGetElement(raw, i);
                if !sys::mlirAttributeIsAInteger(e) {
                    return Err(format!("array attribute {a} must hold integers"));
                }
                v.push(sys::mlirIntegerAttrGetValueInt(e));
            }
            return Ok(Attr::Ints(v));
        }
        if sys::mlirAttributeIsADenseElements(raw) {
            let ty = type_string(sys::mlirAttributeGetType(raw));
            let decl = DeclaredType::parse(&ty).ok_or_else(|| format!("dense constant type {ty} is not a tensor of f32, f16, bf16, i32 or i64"))?;
            let dims: Vec<i64> = decl.dims.iter().map(|d| d.unwrap_or(0)).collect();
            let n: i64 = dims.iter().product();
            let es = decl.dtype.size_bytes();
            let data = sys::mlirDenseElementsAttrGetRawData(raw) as *const u8;
            let splat = sys::mlirDenseElementsAttrIsSplat(raw);
            let stored = if splat { es } else { n as usize * es };
            let src = std::slice::from_raw_parts(data, stored);
            let bytes = if splat { src.repeat(n as usize) } else { src.to_vec() };
            return Ok(Attr::Dense(ConstantData { dtype: decl.dtype, dims, bytes }));
        }
        if sys::mlirAttributeIsAType(raw) {
            return Ok(Attr::Type(type_string(sys::mlirTypeAttrGetValue(raw))));
        }
    }
    Err(format!("unsupported attribute {a}"))
}

/// Reads a string or string-array entry of a function argument's attribute dictionary.
fn arg_attr(func: &OperationRef, index: usize, key: &str) -> Option<Attribute<'static>> {
    let all = func.attribute("arg_attrs").ok()?;
    // SAFETY: `arg_attrs` is an array of dictionaries, one per argument (func verifier).
    unsafe {
        let raw = all.to_raw();
        if !sys::mlirAttributeIsAArray(raw) || index as isize >= sys::mlirArrayAttrGetNumElements(raw) {
            return None;
        }
        let dict = sys::mlirArrayAttrGetElement(raw, index as isize);
        let v = sys::mlirDictionaryAttrGetElementByName(dict, melior::StringRef::new(key).to_raw());
        if v.ptr.is_null() {
            None
        } else {
            Some(Attribute::from_raw(v))
        }
    }
}

fn dims_names(a: Attribute) -> Option<Vec<String>> {
    // SAFETY: array elements are read within the reported count.
    unsafe {
        let raw = a.to_raw();
        if !sys::mlirAttributeIsAArray(raw) {
            return None;
        }
        (0..sys::mlirArrayAttrGetNumElements(raw))
            .map(|i| {
                let e = sys::mlirArrayAttrGetElement(raw, i);
                sys::mlirAttributeIsAString(e).then(|| string_ref(sys::mlirStringAttrGetValue(e)))
            })
            .collect()
    }
}

/// Imports every `func.func` of a parsed module as a graph.
pub fn import_module(_ctx: &MlirContext, module: &Module) -> Result<Vec<Graph>, CompileError> {
    let mut graphs = Vec::new();
    let mut op = module.body().first_operation();
    while let Some(o) = op {
        let name = o.name().as_string_ref().as_str().unwrap_or("").to_string();
        if name == "func.func" {
            graphs.push(import_func(&o)?);
        } else if !name.starts_with("irdl.") {
            return Err(err(&loc_of(&o), format!("expected func.func at the top level, found '{name}'")));
        }
        op = o.next_in_block();
    }
    if graphs.is_empty() {
        return Err(CompileError::Mlir("the module contains no func.func to compile".into()));
    }
    Ok(graphs)
}

fn import_func(func: &OperationRef) -> Result<Graph, CompileError> {
    let floc = loc_of(func);
    let sym = func
        .attribute("sym_name")
        .ok()
        .and_then(|a| convert_attr(a).ok())
        .and_then(|a| if let Attr::Str(s) = a { Some(s) } else { None })
        .unwrap_or_else(|| "main".into());
    let mut graph = Graph::new(sym.clone(), floc.clone());
    let region = func.region(0).map_err(|_| err(&floc, "func.func has no body"))?;
    let block = region.first_block().ok_or_else(|| err(&floc, format!("function @{sym} is only a declaration; it needs a body")))?;
    let mut values: HashMap<usize, ValueId> = HashMap::new();

    for i in 0..block.argument_count() {
        let arg = block.argument(i).unwrap();
        let ty = type_string(arg.r#type().to_raw());
        let decl = DeclaredType::parse(&ty)
            .ok_or_else(|| err(&floc, format!("argument #{i} of @{sym} has type {ty}; inputs must be ranked tensors of f32, f16, bf16, i32 or i64")))?;
        let name = arg_attr(func, i, "max.name")
            .and_then(|a| convert_attr(a).ok())
            .and_then(|a| if let Attr::Str(s) = a { Some(s) } else { None })
            .unwrap_or_else(|| format!("arg{i}"));
        let dim_names = arg_attr(func, i, "max.dims").and_then(dims_names);
        let dims = decl
            .dims
            .iter()
            .enumerate()
            .map(|(j, d)| match d {
                Some(c) => DimExpr::Const(*c),
                None => {
                    let n = dim_names.as_ref().and_then(|v| v.get(j)).filter(|s| !s.is_empty()).cloned().unwrap_or_else(|| format!("{name}.d{j}"));
                    DimExpr::Sym(graph.symbol(&n))
                }
            })
            .collect();
        let v = graph.add_input(name, TensorType::new(decl.dtype, dims));
        values.insert(arg.to_raw().ptr as usize, v);
    }

    let mut op = block.first_operation();
    let mut returned = false;
    while let Some(o) = op {
        let loc = loc_of(&o);
        let name = o.name().as_string_ref().as_str().unwrap_or("").to_string();
        if name == "func.return" {
            for k in 0..o.operand_count() {
                let v = o.operand(k).unwrap();
                let id = *values.get(&(v.to_raw().ptr as usize)).ok_or_else(|| err(&loc, "returned value is not defined in this function"))?;
                graph.outputs.push(id);
                graph.declared_outputs.push(DeclaredType::parse(&type_string(v.r#type().to_raw())));
            }
            returned = true;
            break;
        }
        let Some(opname) = name.strip_prefix("max.") else {
            return Err(err(&loc, format!("op '{name}' is not part of the max dialect; graphs are built from max ops only")));
        };
        let mut attrs = BTreeMap::new();
        for (id, a) in o.attributes() {
            let key = id.as_string_ref().as_str().unwrap_or("").to_string();
            let val = convert_attr(a).map_err(|m| err(&loc, format!("'{name}' attribute '{key}': {m}")))?;
            attrs.insert(key, val);
        }
        let mut declared = Vec::new();
        for k in 0..o.result_count() {
            let ty = type_string(o.result(k).unwrap().r#type().to_raw());
            let d = DeclaredType::parse(&ty).ok_or_else(|| err(&loc, format!("result #{k} of '{name}' has type {ty}; results must be ranked tensors of f32, f16, bf16, i32 or i64")))?;
            declared.push(Some(d));
        }
        let result_dtype = declared.first().and_then(|d| d.as_ref()).map(|d| d.dtype);
        let mop = Op::from_parts(opname, &attrs, result_dtype).map_err(|m| err(&loc, m))?;
        let mut inputs = Vec::new();
        for k in 0..o.operand_count() {
            let v = o.operand(k).unwrap();
            inputs.push(*values.get(&(v.to_raw().ptr as usize)).ok_or_else(|| err(&loc, format!("operand #{k} of '{name}' is not defined in this function")))?);
        }
        let outs = graph.add_node(mop, inputs, o.result_count(), declared, loc);
        for (k, id) in outs.into_iter().enumerate() {
            values.insert(o.result(k).unwrap().to_raw().ptr as usize, id);
        }
        op = o.next_in_block();
    }
    if !returned {
        return Err(err(&floc, format!("function @{sym} has no func.return")));
    }
    Ok(graph)
}
