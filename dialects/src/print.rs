//! Printing a graph as `max` dialect MLIR in generic op form.

use crate::dtype::DType;
use crate::graph::Graph;
use crate::ops::ConstantData;
use std::fmt::Write;

/// The `dense<...>` attribute of a constant, as MLIR parses it (hex form for exactness).
pub fn dense_attr(c: &ConstantData) -> String {
    let ty = format!(
        "tensor<{}{}>",
        c.dims.iter().map(|d| format!("{d}x")).collect::<String>(),
        c.dtype.mlir_name()
    );
    let mut hex = String::with_capacity(2 + c.bytes.len() * 2);
    hex.push_str("0x");
    for b in &c.bytes {
        let _ = write!(hex, "{b:02X}");
    }
    format!("dense<\"{hex}\"> : {ty}")
}

/// Prints `graph` as a `func.func` of `max` ops. Types are the inferred ones where shape
/// inference has run, else the declared ones.
pub fn print_graph(graph: &Graph) -> String {
    let ty = |v: crate::graph::ValueId| -> String {
        match &graph.types[v.0] {
            Some(t) => t.to_mlir(),
            None => "tensor<*xf32>".into(),
        }
    };
    let name = |v: crate::graph::ValueId| format!("%v{}", v.0);
    let mut s = String::new();
    let args: Vec<String> = graph.inputs.iter().map(|i| format!("{}: {}", name(i.value), ty(i.value))).collect();
    let outs: Vec<String> = graph.outputs.iter().map(|v| ty(*v)).collect();
    let _ = writeln!(s, "func.func @{}({}) -> ({}) {{", graph.name, args.join(", "), outs.join(", "));
    for n in &graph.nodes {
        let res: Vec<String> = n.outputs.iter().map(|v| name(*v)).collect();
        let operands: Vec<String> = n.inputs.iter().map(|v| name(*v)).collect();
        let in_tys: Vec<String> = n.inputs.iter().map(|v| ty(*v)).collect();
        let out_tys: Vec<String> = n.outputs.iter().map(|v| ty(*v)).collect();
        let _ = writeln!(
            s,
            "  {} = \"max.{}\"({}){} : ({}) -> ({}) {}",
            res.join(", "),
            n.op.name(),
            operands.join(", "),
            n.op.attrs_mlir(),
            in_tys.join(", "),
            out_tys.join(", "),
            n.loc.to_mlir()
        );
    }
    let rets: Vec<String> = graph.outputs.iter().map(|v| name(*v)).collect();
    let _ = writeln!(s, "  func.return {} : {}", rets.join(", "), outs.join(", "));
    let _ = writeln!(s, "}} {}", graph.loc.to_mlir());
    s
}

/// Little-endian bytes of `values` converted to `dtype` (f16/bf16 rounded to nearest).
pub fn f64s_to_bytes(values: &[f64], dtype: DType) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * dtype.size_bytes());
    for &v in values {
        match dtype {
            DType::F32 => out.extend_from_slice(&(v as f32).to_le_bytes()),
            DType::F16 => out.extend_from_slice(&f32_to_f16_bits(v as f32).to_le_bytes()),
            DType::BF16 => out.extend_from_slice(&f32_to_bf16_bits(v as f32).to_le_bytes()),
            DType::I32 => out.extend_from_slice(&(v as i32).to_le_bytes()),
            DType::I64 => out.extend_from_slice(&(v as i64).to_le_bytes()),
            DType::I8 => out.push(v as i8 as u8),
        }
    }
    out
}

/// f32 -> bf16 bits, round to nearest even (NaN stays NaN).
pub fn f32_to_bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    let round = 0x7FFF + ((b >> 16) & 1);
    ((b.wrapping_add(round)) >> 16) as u16
}

/// f32 -> IEEE half bits, round to nearest even.
pub fn f32_to_f16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xFF) as i32;
    let man = b & 0x7F_FFFF;
    if exp == 0xFF {
        return sign | 0x7C00 | if man != 0 { 0x200 } else { 0 };
    }
    let e = exp - 127 + 15;
    if e >= 0x1F {
        return sign | 0x7C00;
    }
    if e <= 0 {
        if e < -10 {
            return sign;
        }
        let m = man | 0x80_0000;
        let shift = (14 - e) as u32;
        let half = 1u32 << (shift - 1);
        let rem = m & ((1 << shift) - 1);
        let mut r = m >> shift;
        if rem > half || (rem == half && (r & 1) == 1) {
            r += 1;
        }
        return sign | r as u16;
    }
    let mut r = ((e as u32) << 10) | (man >> 13);
    let rem = man & 0x1FFF;
    if rem > 0x1000 || (rem == 0x1000 && (r & 1) == 1) {
        r += 1;
    }
    sign | r as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_conversions_round_trip_common_values() {
        assert_eq!(f32_to_f16_bits(1.0), 0x3C00);
        assert_eq!(f32_to_f16_bits(-2.5), 0xC100);
        assert_eq!(f32_to_f16_bits(65520.0), 0x7C00);
        assert_eq!(f32_to_bf16_bits(1.0), 0x3F80);
        assert_eq!(f32_to_bf16_bits(-3.0), 0xC040);
    }
}
