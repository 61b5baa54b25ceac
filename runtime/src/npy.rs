//! NumPy `.npy` files (format versions 1.0-3.0), the exchange format of `maxc run`.

use crate::error::RuntimeError;
use crate::tensor::Tensor;
use max_dialects::DType;
use std::path::Path;

const MAGIC: &[u8] = b"\x93NUMPY";

fn err(path: &str, why: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Npy(format!("{path}: {why}"))
}

fn dtype_from_descr(d: &str) -> Option<DType> {
    Some(match d {
        "<f4" => DType::F32,
        "<f2" => DType::F16,
        "<i4" => DType::I32,
        "<i8" => DType::I64,
        "|i1" | "<i1" => DType::I8,
        _ => return None,
    })
}

fn descr(d: DType) -> Option<&'static str> {
    Some(match d {
        DType::F32 => "<f4",
        DType::F16 => "<f2",
        DType::I32 => "<i4",
        DType::I64 => "<i8",
        DType::I8 => "|i1",
        DType::BF16 => return None,
    })
}

/// Looks up `'key': value` in the header dict; returns the raw value text.
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let k = header.find(&format!("'{key}'"))?;
    let rest = header[k + key.len() + 2..].trim_start().strip_prefix(':')?.trim_start();
    let end = if rest.starts_with('(') {
        rest.find(')')? + 1
    } else {
        rest.find([',', '}']).unwrap_or(rest.len())
    };
    Some(rest[..end].trim())
}

/// Parses `.npy` bytes. `name` is used in error messages.
pub fn parse_npy(name: &str, bytes: &[u8]) -> Result<Tensor, RuntimeError> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(err(name, "not a .npy file (bad magic)"));
    }
    let major = bytes[6];
    let (hlen, hstart) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize, 12),
        _ => return Err(err(name, format!("unsupported .npy version {major}"))),
    };
    let header = bytes.get(hstart..hstart + hlen).ok_or_else(|| err(name, "truncated header"))?;
    let header = std::str::from_utf8(header).map_err(|_| err(name, "header is not text"))?;
    let descr_s = dict_value(header, "descr").ok_or_else(|| err(name, "header has no 'descr'"))?.trim_matches(|c| c == '\'' || c == '"');
    let dtype = match dtype_from_descr(descr_s) {
        Some(d) => d,
        None if descr_s == "|b1" || descr_s == "<f8" || descr_s == "<u1" => {
            return Err(err(name, format!("dtype '{descr_s}' is not supported; convert to float32, float16, int32, int64 or int8 (e.g. arr.astype(np.float32))")))
        }
        None => return Err(err(name, format!("unsupported dtype '{descr_s}' (little-endian float32, float16, int32 or int64 only)"))),
    };
    if dict_value(header, "fortran_order") == Some("True") {
        return Err(err(name, "Fortran-ordered arrays are not supported; save with np.ascontiguousarray"));
    }
    let shape_s = dict_value(header, "shape").ok_or_else(|| err(name, "header has no 'shape'"))?;
    let shape = shape_s
        .trim_matches(|c| c == '(' || c == ')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| err(name, format!("bad shape {shape_s}")))?;
    let data = &bytes[hstart + hlen..];
    let expected = shape.iter().product::<usize>() * dtype.size_bytes();
    if data.len() != expected {
        return Err(err(name, format!("data has {} bytes, shape {shape:?} of {dtype} needs {expected}", data.len())));
    }
    Tensor::from_bytes(dtype, &shape, data)
}

/// Serializes a tensor as `.npy` (version 1.0).
pub fn to_npy(t: &Tensor) -> Result<Vec<u8>, RuntimeError> {
    let d = descr(t.dtype()).ok_or_else(|| RuntimeError::Npy("bf16 has no .npy dtype; cast the output to f32 in the graph".into()))?;
    let shape = match t.shape() {
        [] => "()".to_string(),
        [one] => format!("({one},)"),
        s => format!("({})", s.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let mut header = format!("{{'descr': '{d}', 'fortran_order': False, 'shape': {shape}, }}");
    // Pad so that the data starts 64-byte aligned, as NumPy does.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + t.bytes().len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(t.bytes());
    Ok(out)
}

/// Reads a `.npy` file.
pub fn read_npy(path: impl AsRef<Path>) -> Result<Tensor, RuntimeError> {
    let p = path.as_ref();
    let bytes = std::fs::read(p).map_err(|e| RuntimeError::Io { what: format!("reading {}", p.display()), cause: e })?;
    parse_npy(&p.display().to_string(), &bytes)
}

/// Writes a `.npy` file.
pub fn write_npy(path: impl AsRef<Path>, t: &Tensor) -> Result<(), RuntimeError> {
    let p = path.as_ref();
    std::fs::write(p, to_npy(t)?).map_err(|e| RuntimeError::Io { what: format!("writing {}", p.display()), cause: e })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let t = Tensor::from_slice(&[2, 3], &[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        let bytes = to_npy(&t).unwrap();
        let back = parse_npy("t", &bytes).unwrap();
        assert_eq!(back.shape(), &[2, 3]);
        assert_eq!(back.to_vec::<f32>().unwrap(), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let s = Tensor::from_slice::<i64>(&[], &[7]).unwrap();
        assert_eq!(parse_npy("s", &to_npy(&s).unwrap()).unwrap().to_vec::<i64>().unwrap(), vec![7]);
    }

    #[test]
    fn rejects_bad_files() {
        assert!(parse_npy("x", b"hello").unwrap_err().to_string().contains("not a .npy"));
        let t = Tensor::from_slice(&[4], &[1.0f32; 4]).unwrap();
        let bytes = to_npy(&t).unwrap();
        let e = parse_npy("x", &bytes[..bytes.len() - 3]).unwrap_err().to_string();
        assert!(e.contains("needs 16"), "{e}");
    }
}
