//! GGUF reader tests: files built by a small test-only writer, round-tripped; malformed
//! inputs (all must be errors, never panics); and the real SmolLM2 file when available.

use half::f16;
mod common;

use common::{put_str, put_value};
use max_serve::gguf::{GgufError, GgufFile, MetadataArray, MetadataValue, ValueType};
use max_serve::quant::{GgmlType, QuantError};

// ---------------------------------------------------------------------------------------
// Test-only GGUF writer
// ---------------------------------------------------------------------------------------

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend(v.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend(v.to_le_bytes());
}


struct TensorSpec {
    name: String,
    dims: Vec<u64>,
    type_id: u32,
    data: Vec<u8>,
    /// Overrides the offset the writer would choose (to build broken files).
    offset: Option<u64>,
}

/// Builds GGUF files; `general.alignment` is written when `alignment` is set.
struct Writer {
    version: u32,
    alignment: Option<u32>,
    kvs: Vec<(String, MetadataValue)>,
    tensors: Vec<TensorSpec>,
}

impl Writer {
    fn new() -> Self {
        Writer { version: 3, alignment: None, kvs: Vec::new(), tensors: Vec::new() }
    }

    fn kv(mut self, key: &str, v: MetadataValue) -> Self {
        self.kvs.push((key.to_string(), v));
        self
    }

    fn tensor(self, name: &str, dims: &[u64], ty: GgmlType, data: Vec<u8>) -> Self {
        self.tensor_raw(name, dims, ty.id(), data, None)
    }

    fn tensor_raw(mut self, name: &str, dims: &[u64], type_id: u32, data: Vec<u8>, offset: Option<u64>) -> Self {
        self.tensors.push(TensorSpec { name: name.to_string(), dims: dims.to_vec(), type_id, data, offset });
        self
    }

    /// The file bytes. Tensor data is packed in order, each start aligned; no padding
    /// follows the last tensor, so every truncation of a file with tensors is detectable.
    fn build(&self) -> Vec<u8> {
        let align = self.alignment.unwrap_or(32) as u64;
        let mut out = Vec::new();
        out.extend(b"GGUF");
        put_u32(&mut out, self.version);
        put_u64(&mut out, self.tensors.len() as u64);
        put_u64(&mut out, self.kvs.len() as u64 + self.alignment.is_some() as u64);
        if let Some(a) = self.alignment {
            put_str(&mut out, "general.alignment");
            put_value(&mut out, &MetadataValue::U32(a));
        }
        for (k, v) in &self.kvs {
            put_str(&mut out, k);
            put_value(&mut out, v);
        }
        let mut next = 0u64;
        let mut placed = Vec::new();
        for t in &self.tensors {
            let offset = next.div_ceil(align) * align;
            next = offset + t.data.len() as u64;
            placed.push(offset);
            put_str(&mut out, &t.name);
            put_u32(&mut out, t.dims.len() as u32);
            t.dims.iter().for_each(|&d| put_u64(&mut out, d));
            put_u32(&mut out, t.type_id);
            put_u64(&mut out, t.offset.unwrap_or(offset));
        }
        let data_start = (out.len() as u64).div_ceil(align) * align;
        out.resize(data_start as usize, 0);
        for (t, offset) in self.tensors.iter().zip(placed) {
            out.resize((data_start + offset) as usize, 0);
            out.extend(&t.data);
        }
        out
    }
}

/// Raw header prefix: magic, version, counts.
fn header(version: u32, tensors: u64, kvs: u64) -> Vec<u8> {
    let mut out = b"GGUF".to_vec();
    put_u32(&mut out, version);
    put_u64(&mut out, tensors);
    put_u64(&mut out, kvs);
    out
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn f16_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|&x| f16::from_f32(x).to_bits().to_le_bytes()).collect()
}

/// One Q4_1 block: d, m, and quants `q[j]` (each < 16).
fn q4_1_block(d: f32, m: f32, q: impl Fn(usize) -> u8) -> Vec<u8> {
    let mut b = f16_bytes(&[d, m]);
    b.extend((0..16).map(|j| q(j) | (q(j + 16) << 4)));
    b
}

/// A file using every metadata value type, nested arrays and several tensors.
fn sample() -> Writer {
    use MetadataArray as A;
    use MetadataValue as V;
    Writer::new()
        .kv("general.architecture", V::String("llama".into()))
        .kv("t.u8", V::U8(200))
        .kv("t.i8", V::I8(-100))
        .kv("t.u16", V::U16(60000))
        .kv("t.i16", V::I16(-30000))
        .kv("t.u32", V::U32(4_000_000_000))
        .kv("t.i32", V::I32(-2_000_000_000))
        .kv("t.f32", V::F32(1.5e-5))
        .kv("t.bool", V::Bool(true))
        .kv("t.false", V::Bool(false))
        .kv("t.str", V::String("héllo ✓ Ġworld".into()))
        .kv("t.empty_str", V::String(String::new()))
        .kv("t.u64", V::U64(u64::MAX - 1))
        .kv("t.i64", V::I64(i64::MIN))
        .kv("t.f64", V::F64(-2.5e300))
        .kv("a.u8", V::Array(A::U8(vec![1, 2, 255])))
        .kv("a.i8", V::Array(A::I8(vec![-1, 127])))
        .kv("a.u16", V::Array(A::U16(vec![65535])))
        .kv("a.i16", V::Array(A::I16(vec![-5, 5])))
        .kv("a.u32", V::Array(A::U32(vec![7, 8, 9])))
        .kv("a.i32", V::Array(A::I32(vec![3, -3, 0, 1])))
        .kv("a.f32", V::Array(A::F32(vec![0.5, -0.25, f32::INFINITY])))
        .kv("a.bool", V::Array(A::Bool(vec![true, false, true])))
        .kv("a.str", V::Array(A::String(vec!["<|endoftext|>".into(), "".into(), "Ġ t".into()])))
        .kv("a.u64", V::Array(A::U64(vec![u64::MAX])))
        .kv("a.i64", V::Array(A::I64(vec![i64::MIN, 0])))
        .kv("a.f64", V::Array(A::F64(vec![1e-300])))
        .kv("a.empty", V::Array(A::U32(vec![])))
        .kv(
            "a.nested",
            V::Array(A::Array(vec![
                A::U8(vec![1]),
                A::String(vec!["x".into()]),
                A::Array(vec![A::F32(vec![2.0]), A::Bool(vec![])]),
            ])),
        )
        .tensor("norm.weight", &[5], GgmlType::F32, f32_bytes(&[1.0, 2.0, -3.0, 0.5, 7.25]))
        .tensor("half", &[3, 2], GgmlType::F16, f16_bytes(&[1.0, -1.0, 0.5, 2.0, 4.0, -8.0]))
        .tensor(
            "q41",
            &[32, 2],
            GgmlType::Q4_1,
            [q4_1_block(0.5, -1.0, |j| (j % 16) as u8), q4_1_block(2.0, 3.0, |j| (15 - j % 16) as u8)].concat(),
        )
        .tensor("scalar", &[], GgmlType::F32, f32_bytes(&[42.0]))
}

// ---------------------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------------------

#[test]
fn round_trips_every_value_type() {
    let w = sample();
    let f = GgufFile::parse(w.build()).unwrap();
    assert_eq!(f.version(), 3);
    assert_eq!(f.alignment(), 32);
    // Every written key reads back equal, in order.
    let read: Vec<_> = f.metadata().map(|(k, v)| (k.to_string(), v.clone())).collect();
    assert_eq!(read, w.kvs);

    assert_eq!(f.get_str("general.architecture").unwrap(), "llama");
    assert_eq!(f.get_u8("t.u8").unwrap(), 200);
    assert_eq!(f.get_i8("t.i8").unwrap(), -100);
    assert_eq!(f.get_u16("t.u16").unwrap(), 60000);
    assert_eq!(f.get_i16("t.i16").unwrap(), -30000);
    assert_eq!(f.get_u32("t.u32").unwrap(), 4_000_000_000);
    assert_eq!(f.get_i32("t.i32").unwrap(), -2_000_000_000);
    assert_eq!(f.get_f32("t.f32").unwrap(), 1.5e-5);
    assert!(f.get_bool("t.bool").unwrap());
    assert!(!f.get_bool("t.false").unwrap());
    assert_eq!(f.get_str("t.str").unwrap(), "héllo ✓ Ġworld");
    assert_eq!(f.get_str("t.empty_str").unwrap(), "");
    assert_eq!(f.get_u64("t.u64").unwrap(), u64::MAX - 1);
    assert_eq!(f.get_i64("t.i64").unwrap(), i64::MIN);
    assert_eq!(f.get_f64("t.f64").unwrap(), -2.5e300);

    assert_eq!(f.get_u8_array("a.u8").unwrap(), [1, 2, 255]);
    assert_eq!(f.get_i8_array("a.i8").unwrap(), [-1, 127]);
    assert_eq!(f.get_u16_array("a.u16").unwrap(), [65535]);
    assert_eq!(f.get_i16_array("a.i16").unwrap(), [-5, 5]);
    assert_eq!(f.get_u32_array("a.u32").unwrap(), [7, 8, 9]);
    assert_eq!(f.get_i32_array("a.i32").unwrap(), [3, -3, 0, 1]);
    assert_eq!(f.get_f32_array("a.f32").unwrap(), [0.5, -0.25, f32::INFINITY]);
    assert_eq!(f.get_bool_array("a.bool").unwrap(), [true, false, true]);
    assert_eq!(f.get_str_array("a.str").unwrap(), ["<|endoftext|>", "", "Ġ t"]);
    assert_eq!(f.get_u64_array("a.u64").unwrap(), [u64::MAX]);
    assert_eq!(f.get_i64_array("a.i64").unwrap(), [i64::MIN, 0]);
    assert_eq!(f.get_f64_array("a.f64").unwrap(), [1e-300]);
    assert!(f.get_u32_array("a.empty").unwrap().is_empty());
    let nested = f.get_array("a.nested").unwrap();
    assert_eq!(nested.elem_type(), ValueType::Array);
    assert_eq!(nested.len(), 3);

    // Any integer width reads as an unsigned count; negatives and non-integers do not.
    assert_eq!(f.get_uint("t.u8").unwrap(), 200);
    assert_eq!(f.get_uint("t.u32").unwrap(), 4_000_000_000);
    assert!(matches!(f.get_uint("t.i8"), Err(GgufError::WrongType { .. })));
    assert!(matches!(f.get_uint("t.f32"), Err(GgufError::WrongType { .. })));
}

#[test]
fn getter_errors_name_key_and_types() {
    let f = GgufFile::parse(sample().build()).unwrap();
    let err = f.get_u32("t.str").unwrap_err();
    assert_eq!(err.to_string(), "metadata key `t.str`: expected u32, found string");
    let err = f.get_str("a.str").unwrap_err();
    assert_eq!(err.to_string(), "metadata key `a.str`: expected string, found array of string");
    let err = f.get_str_array("a.u32").unwrap_err();
    assert_eq!(err.to_string(), "metadata key `a.u32`: expected array of string, found array of u32");
    let err = f.get_f32_array("t.f32").unwrap_err();
    assert_eq!(err.to_string(), "metadata key `t.f32`: expected array, found f32");
    let err = f.get_u64("t.u32").unwrap_err();
    assert_eq!(err.to_string(), "metadata key `t.u32`: expected u64, found u32");
    let err = f.get_bool("no.such.key").unwrap_err();
    assert!(matches!(&err, GgufError::MissingKey { key } if key == "no.such.key"), "{err}");
    assert_eq!(err.to_string(), "metadata key `no.such.key` not found");
    assert!(f.get("no.such.key").is_none());
}

#[test]
fn tensors_round_trip() {
    let w = sample();
    let bytes = w.build();
    let f = GgufFile::parse(bytes.clone()).unwrap();
    assert_eq!(f.data_offset() % 32, 0);
    let names: Vec<_> = f.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["norm.weight", "half", "q41", "scalar"]);
    for spec in &w.tensors {
        let t = f.tensor(&spec.name).unwrap();
        assert_eq!(t.info().dims, spec.dims);
        assert_eq!(t.info().ty.id(), spec.type_id);
        assert_eq!(t.data(), spec.data.as_slice(), "{}", spec.name);
        assert_eq!(t.info().offset % 32, 0);
        // The data slice is the file's bytes at data_offset + offset.
        let start = (f.data_offset() + t.info().offset) as usize;
        assert_eq!(&bytes[start..start + spec.data.len()], spec.data.as_slice());
    }

    let norm = f.tensor("norm.weight").unwrap();
    assert_eq!((norm.info().n_elements, norm.info().n_bytes, norm.info().n_rows()), (5, 20, 1));
    assert_eq!(norm.dequantize().unwrap(), [1.0, 2.0, -3.0, 0.5, 7.25]);

    let half = f.tensor("half").unwrap();
    assert_eq!((half.info().row_len(), half.info().n_rows()), (3, 2));
    assert_eq!(half.dequantize().unwrap(), [1.0, -1.0, 0.5, 2.0, 4.0, -8.0]);
    assert_eq!(half.dequantize_rows(1..2).unwrap(), [2.0, 4.0, -8.0]);
    assert!(half.dequantize_rows(1..3).is_err());
    assert!(matches!(
        half.dequantize_rows(std::ops::Range { start: 2, end: 1 }),
        Err(GgufError::RowsOutOfRange { .. })
    ));

    // Q4_1: row 0 is q = j % 16 with d = 0.5, m = -1; row 1 is q = 15 - j % 16, d = 2, m = 3.
    let q = f.tensor("q41").unwrap();
    assert_eq!(q.info().ty, GgmlType::Q4_1);
    let all = q.dequantize().unwrap();
    for j in 0..32 {
        assert_eq!(all[j], (j % 16) as f32 * 0.5 - 1.0, "row 0 element {j}");
        assert_eq!(all[32 + j], (15 - j % 16) as f32 * 2.0 + 3.0, "row 1 element {j}");
    }
    assert_eq!(q.dequantize_rows(1..2).unwrap(), all[32..]);
    assert_eq!((all[0], all[15], all[16], all[32], all[47]), (-1.0, 6.5, -1.0, 33.0, 3.0));

    let scalar = f.tensor("scalar").unwrap();
    assert_eq!((scalar.info().n_elements, scalar.info().n_rows()), (1, 1));
    assert_eq!(scalar.dequantize().unwrap(), [42.0]);

    let err = f.tensor("missing.weight").unwrap_err();
    assert_eq!(err.to_string(), "tensor `missing.weight` not found");
}

#[test]
fn custom_alignment() {
    for align in [1u32, 8, 64, 256] {
        let mut w = sample();
        w.alignment = Some(align);
        let f = GgufFile::parse(w.build()).unwrap();
        assert_eq!(f.alignment(), align as u64);
        assert_eq!(f.get_u32("general.alignment").unwrap(), align);
        assert_eq!(f.data_offset() % align as u64, 0);
        for t in f.tensors() {
            assert_eq!(t.offset % align as u64, 0);
            let spec = w.tensors.iter().find(|s| s.name == t.name).unwrap();
            assert_eq!(f.tensor(&t.name).unwrap().data(), spec.data.as_slice());
        }
    }
}

#[test]
fn version_2_and_empty_files() {
    let mut w = sample();
    w.version = 2;
    let f = GgufFile::parse(w.build()).unwrap();
    assert_eq!(f.version(), 2);
    assert_eq!(f.tensors().len(), 4);

    // No tensors, no metadata: just the 24-byte header.
    let f = GgufFile::parse(header(3, 0, 0)).unwrap();
    assert_eq!((f.tensors().len(), f.metadata().len()), (0, 0));
}

#[test]
fn open_maps_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.gguf");
    std::fs::write(&path, sample().build()).unwrap();
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.tensor("norm.weight").unwrap().dequantize().unwrap()[4], 7.25);
    let err = GgufFile::open(dir.path().join("absent.gguf")).unwrap_err();
    assert!(matches!(err, GgufError::Io { .. }));
    assert!(err.to_string().contains("absent.gguf"), "{err}");
}

// ---------------------------------------------------------------------------------------
// Malformed input: errors, never panics
// ---------------------------------------------------------------------------------------

fn parse_err(bytes: Vec<u8>) -> GgufError {
    GgufFile::parse(bytes).expect_err("malformed file must be rejected")
}

#[test]
fn truncated_at_every_offset() {
    let bytes = sample().build();
    for len in 0..bytes.len() {
        let err = parse_err(bytes[..len].to_vec());
        assert!(
            matches!(
                err,
                GgufError::Truncated { .. } | GgufError::OutOfBounds { .. } | GgufError::CountTooLarge { .. }
            ),
            "prefix of {len} bytes: {err}"
        );
    }
    // A truncation inside a tensor's data names the tensor.
    let err = parse_err(bytes[..bytes.len() - 1].to_vec());
    assert!(err.to_string().contains("tensor `scalar`"), "{err}");
}

#[test]
fn truncation_message_says_what_and_where() {
    let bytes = header(3, 0, 1);
    let mut b = bytes.clone();
    put_str(&mut b, "general.name");
    put_u32(&mut b, ValueType::U32 as u32);
    b.extend([1, 2]); // half a u32
    let err = parse_err(b);
    assert_eq!(
        err.to_string(),
        "truncated GGUF: value of metadata key `general.name` at offset 48 needs 4 bytes, but the file is 50 bytes long"
    );
}

/// Deterministic xorshift, so failures reproduce.
fn rng(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[test]
fn corrupted_bytes_never_panic() {
    let bytes = sample().build();
    let f = GgufFile::parse(bytes.clone()).unwrap();
    let header_len = f.data_offset() as usize;
    // Every header byte set to a few interesting values.
    for i in 0..header_len {
        for v in [0x00, 0x01, 0x7F, 0x80, 0xFF, bytes[i] ^ 0x10] {
            let mut b = bytes.clone();
            b[i] = v;
            if let Ok(f) = GgufFile::parse(b) {
                // Whatever parses must be fully usable.
                for t in f.tensors() {
                    let _ = f.tensor(&t.name).unwrap().dequantize();
                }
            }
        }
    }
    // Random multi-byte corruption.
    let mut seed = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..3000 {
        let mut b = bytes.clone();
        for _ in 0..1 + rng(&mut seed) % 4 {
            let i = (rng(&mut seed) % header_len as u64) as usize;
            b[i] = rng(&mut seed) as u8;
        }
        if let Ok(f) = GgufFile::parse(b) {
            for t in f.tensors() {
                let _ = f.tensor(&t.name).unwrap().dequantize();
            }
        }
    }
}

#[test]
fn bad_magic_and_versions() {
    let mut b = sample().build();
    b[..4].copy_from_slice(b"GGML");
    let err = parse_err(b);
    assert!(matches!(err, GgufError::BadMagic { found } if &found == b"GGML"), "{err}");
    assert!(err.to_string().contains("not a GGUF file"), "{err}");

    for version in [0, 1, 4, 1000] {
        let err = parse_err(header(version, 0, 0));
        assert!(matches!(err, GgufError::UnsupportedVersion { version: v } if v == version), "{err}");
        assert!(err.to_string().contains(&format!("version {version}")), "{err}");
    }
    let err = parse_err(header(3u32.swap_bytes(), 0, 0));
    assert!(matches!(err, GgufError::BigEndian { version: 3 }), "{err}");
}

#[test]
fn tensor_range_outside_file() {
    let w = Writer::new().tensor("a", &[4], GgmlType::F32, f32_bytes(&[1.0; 4])).tensor_raw(
        "b",
        &[8],
        GgmlType::F32.id(),
        f32_bytes(&[1.0; 8]),
        Some(4096),
    );
    let err = parse_err(w.build());
    assert!(matches!(&err, GgufError::OutOfBounds { name, .. } if name == "b"), "{err}");
    assert!(err.to_string().contains("tensor `b`"), "{err}");

    // Dims claiming more data than written.
    let w = Writer::new().tensor("big", &[1000], GgmlType::F32, f32_bytes(&[0.0; 10]));
    assert!(matches!(parse_err(w.build()), GgufError::OutOfBounds { .. }));
}

#[test]
fn misaligned_tensor_offset() {
    let w = Writer::new().tensor_raw("m", &[1], GgmlType::F32.id(), f32_bytes(&[0.0; 4]), Some(4));
    let err = parse_err(w.build());
    assert!(matches!(&err, GgufError::Misaligned { name, data_offset: 4, alignment: 32 } if name == "m"), "{err}");
}

#[test]
fn unknown_tensor_type_refused_by_number() {
    let w = Writer::new().tensor_raw("weird.weight", &[32], 99, vec![0; 32], None);
    let err = parse_err(w.build());
    assert!(
        matches!(&err, GgufError::TensorType { name, source: QuantError::UnknownType { id: 99 }, .. } if name == "weird.weight"),
        "{err}"
    );
    let msg = err.to_string();
    assert!(msg.contains("weird.weight") && msg.contains("99"), "{msg}");
}

#[test]
fn unsupported_tensor_type_refused_by_name() {
    for (id, name) in [(13u32, "Q5_K"), (9, "Q8_1"), (10, "Q2_K"), (16, "IQ2_XXS")] {
        let w = Writer::new().tensor_raw("blk.0.ffn_up.weight", &[256], id, vec![0; 256], None);
        let err = parse_err(w.build());
        assert!(matches!(&err, GgufError::TensorType { source: QuantError::UnsupportedType { .. }, .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains(name) && msg.contains("blk.0.ffn_up.weight") && msg.contains("not supported"), "{msg}");
    }
}

#[test]
fn row_must_be_whole_blocks() {
    let w = Writer::new().tensor("q", &[16, 2], GgmlType::Q4_0, vec![0; 18]);
    let err = parse_err(w.build());
    assert!(matches!(&err, GgufError::TensorType { source: QuantError::PartialBlock { .. }, .. }), "{err}");
}

#[test]
fn huge_counts_are_errors() {
    // Tensor and key/value counts far beyond the file.
    for (tensors, kvs) in [(u64::MAX, 0), (0, u64::MAX), (1 << 40, 0), (u64::MAX / 24 + 1, 0)] {
        let err = parse_err(header(3, tensors, kvs));
        assert!(matches!(err, GgufError::CountTooLarge { .. }), "{err}");
    }

    // A string length of u64::MAX (the key).
    let mut b = header(3, 0, 1);
    put_u64(&mut b, u64::MAX);
    b.extend([0; 64]);
    assert!(matches!(parse_err(b), GgufError::Truncated { needed: u64::MAX, .. }));

    // Array element counts of u64::MAX, for fixed-size, string and nested elements.
    for elem in [ValueType::U8, ValueType::U64, ValueType::String, ValueType::Array] {
        let mut b = header(3, 0, 1);
        put_str(&mut b, "tokenizer.ggml.tokens");
        put_u32(&mut b, ValueType::Array as u32);
        put_u32(&mut b, elem as u32);
        put_u64(&mut b, u64::MAX);
        b.extend([0; 64]);
        let err = parse_err(b);
        assert!(matches!(err, GgufError::CountTooLarge { .. }), "{elem}: {err}");
        assert!(err.to_string().contains("tokenizer.ggml.tokens"), "{err}");
    }

    // Dimensions whose product overflows, and an offset that overflows the data range.
    let w = Writer::new().tensor_raw("o", &[u64::MAX, 2], GgmlType::F32.id(), vec![], None);
    assert!(matches!(parse_err(w.build()), GgufError::TensorOverflow { .. }));
    let w = Writer::new().tensor_raw("o", &[1 << 62], GgmlType::F32.id(), vec![], None);
    assert!(matches!(parse_err(w.build()), GgufError::TensorOverflow { .. }));
    let w = Writer::new().tensor_raw("o", &[8], GgmlType::F32.id(), vec![0; 32], Some(u64::MAX - 31));
    assert!(matches!(parse_err(w.build()), GgufError::TensorOverflow { .. }));

    // Too many dimensions.
    for n_dims in [5u32, u32::MAX] {
        let mut b = header(3, 1, 0);
        put_str(&mut b, "t");
        put_u32(&mut b, n_dims);
        b.extend([0; 64]);
        assert!(matches!(parse_err(b), GgufError::TooManyDims { .. }));
    }
}

#[test]
fn bad_metadata_values() {
    // Unknown value type.
    let mut b = header(3, 0, 1);
    put_str(&mut b, "k");
    put_u32(&mut b, 13);
    b.extend([0; 8]);
    let err = parse_err(b);
    assert!(matches!(&err, GgufError::UnknownValueType { key, type_id: 13, offset: 33 } if key == "k"), "{err}");

    // Unknown array element type.
    let mut b = header(3, 0, 1);
    put_str(&mut b, "arr");
    put_u32(&mut b, ValueType::Array as u32);
    put_u32(&mut b, 77);
    put_u64(&mut b, 0);
    assert!(matches!(parse_err(b), GgufError::UnknownValueType { type_id: 77, .. }));

    // Bool byte 2.
    let mut b = header(3, 0, 1);
    put_str(&mut b, "flag");
    put_u32(&mut b, ValueType::Bool as u32);
    b.push(2);
    assert!(matches!(parse_err(b), GgufError::InvalidBool { value: 2, .. }));

    // Invalid UTF-8 in a key and in a value.
    let mut b = header(3, 0, 1);
    put_u64(&mut b, 2);
    b.extend([0xC3, 0x28]);
    b.extend([0; 16]); // room for a type and value, so the key is what fails
    let err = parse_err(b);
    assert!(matches!(&err, GgufError::InvalidUtf8 { offset: 32, .. }), "{err}");
    assert_eq!(err.to_string(), "metadata key at offset 32 is not valid UTF-8");
    let mut b = header(3, 0, 1);
    put_str(&mut b, "name");
    put_u32(&mut b, ValueType::String as u32);
    put_u64(&mut b, 1);
    b.push(0xFF);
    let err = parse_err(b);
    assert!(err.to_string().contains("`name`"), "{err}");

    // Duplicate key.
    let w = Writer::new().kv("k", MetadataValue::U8(1)).kv("k", MetadataValue::U8(2));
    assert!(matches!(parse_err(w.build()), GgufError::DuplicateKey { .. }));

    // Arrays nested 100 deep.
    let mut b = header(3, 0, 1);
    put_str(&mut b, "deep");
    put_u32(&mut b, ValueType::Array as u32);
    for _ in 0..100 {
        put_u32(&mut b, ValueType::Array as u32);
        put_u64(&mut b, 1);
    }
    b.extend([0; 64]);
    assert!(matches!(parse_err(b), GgufError::NestingTooDeep { .. }));
}

#[test]
fn bad_alignment_and_duplicate_tensor() {
    for a in [0u32, 3, 48] {
        let w = sample().kv("general.alignment", MetadataValue::U32(a));
        let err = parse_err(w.build());
        assert!(matches!(err, GgufError::BadAlignment { value } if value == a as u64), "{err}");
    }
    let w = Writer::new().kv("general.alignment", MetadataValue::U64(32));
    let err = parse_err(w.build());
    assert_eq!(err.to_string(), "metadata key `general.alignment`: expected u32, found u64");

    let w = Writer::new().tensor("t", &[1], GgmlType::F32, f32_bytes(&[1.0])).tensor(
        "t",
        &[1],
        GgmlType::F32,
        f32_bytes(&[2.0]),
    );
    assert!(matches!(parse_err(w.build()), GgufError::DuplicateTensor { .. }));
}

// ---------------------------------------------------------------------------------------
// The real model, when present
// ---------------------------------------------------------------------------------------

#[test]
#[allow(clippy::excessive_precision)] // exact f32 values, printed in full by the reference
fn smollm2_135m_instruct_q4_1() {
    let path = match std::env::var_os("MAX_SMOLLM2_GGUF") {
        Some(p) if std::path::Path::new(&p).is_file() => p,
        _ => {
            println!("skipped: set MAX_SMOLLM2_GGUF (see serve/tests/fetch_smollm2.sh)");
            return;
        }
    };
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.version(), 3);
    assert_eq!(f.get_str("general.architecture").unwrap(), "llama");
    assert_eq!(f.get_u32("llama.block_count").unwrap(), 30);
    assert_eq!(f.get_u32("llama.embedding_length").unwrap(), 576);
    assert_eq!(f.get_u32("llama.feed_forward_length").unwrap(), 1536);
    assert_eq!(f.get_u32("llama.attention.head_count").unwrap(), 9);
    assert_eq!(f.get_u32("llama.attention.head_count_kv").unwrap(), 3);
    assert_eq!(f.get_u32("llama.context_length").unwrap(), 8192);
    assert_eq!(f.get_f32("llama.rope.freq_base").unwrap(), 100000.0);
    assert_eq!(f.get_f32("llama.attention.layer_norm_rms_epsilon").unwrap(), 1e-5);
    assert_eq!(f.get_u32("general.file_type").unwrap(), 3); // MOSTLY_Q4_1
    assert_eq!(f.get_str("tokenizer.ggml.model").unwrap(), "gpt2");
    let tokens = f.get_str_array("tokenizer.ggml.tokens").unwrap();
    assert_eq!(tokens.len(), 49152);
    assert_eq!(&tokens[..3], ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]);
    assert_eq!(f.get_i32_array("tokenizer.ggml.token_type").unwrap().len(), 49152);
    let merges = f.get_str_array("tokenizer.ggml.merges").unwrap();
    assert_eq!(merges.len(), 48900);
    assert_eq!(merges[0], "Ġ t");
    assert_eq!(f.get_u32("tokenizer.ggml.bos_token_id").unwrap(), 1);
    assert_eq!(f.get_u32("tokenizer.ggml.eos_token_id").unwrap(), 2);
    assert!(f.get_str("tokenizer.chat_template").unwrap().contains("<|im_start|>"));

    // 30 blocks x 9 tensors + token_embd + output_norm; the output head is tied to token_embd.
    assert_eq!(f.tensors().len(), 272);
    assert!(f.tensor_info("output.weight").is_none());
    let count = |ty| f.tensors().iter().filter(|t| t.ty == ty).count();
    assert_eq!((count(GgmlType::Q4_1), count(GgmlType::F32), count(GgmlType::Q8_0)), (210, 61, 1));

    // The file says Q4_1, but its embedding table is Q8_0 (llama.cpp keeps it at higher precision).
    let embd = f.tensor("token_embd.weight").unwrap();
    assert_eq!(embd.info().dims, [576, 49152]);
    assert_eq!(embd.info().ty, GgmlType::Q8_0);
    assert_eq!(embd.info().n_bytes, 49152 * 18 * 34);
    let q = f.tensor("blk.0.attn_q.weight").unwrap();
    assert_eq!((q.info().dims.as_slice(), q.info().ty), (&[576u64, 576][..], GgmlType::Q4_1));
    let down = f.tensor("blk.0.ffn_down.weight").unwrap();
    assert_eq!((down.info().dims.as_slice(), down.info().ty), (&[1536u64, 576][..], GgmlType::Q4_1));
    let norm = f.tensor("output_norm.weight").unwrap();
    assert_eq!((norm.info().dims.as_slice(), norm.info().ty), (&[576u64][..], GgmlType::F32));

    // Reference values from an independent NumPy decoding of this file (first four
    // elements, max |x| and f64 sum of the row).
    let check = |name: &str, row: u64, first: [f32; 4], max_abs: f32, sum: f64| {
        let v = f.tensor(name).unwrap().dequantize_rows(row..row + 1).unwrap();
        assert_eq!(v.len(), 576);
        assert!(v.iter().all(|x| x.is_finite()), "{name} row {row}");
        assert_eq!(v[..4], first, "{name} row {row}");
        assert_eq!(v.iter().fold(0f32, |m, x| m.max(x.abs())), max_abs, "{name} row {row}");
        let s: f64 = v.iter().map(|&x| x as f64).sum();
        assert!((s - sum).abs() < 1e-6, "{name} row {row}: sum {s} vs {sum}");
    };
    check(
        "token_embd.weight",
        0,
        [-0.10654449462890625, 0.032978057861328125, 0.048198699951171875, -0.022830963134765625],
        0.5115966796875,
        -2.2541093826293945,
    );
    check(
        "token_embd.weight",
        1,
        [-0.0238037109375, -0.015869140625, -0.0396728515625, 0.015869140625],
        1.0706710815429688,
        0.35922718048095703,
    );
    check(
        "token_embd.weight",
        49151,
        [0.011505126953125, 0.0057525634765625, 0.0977935791015625, -0.0977935791015625],
        0.7693328857421875,
        -0.4662208557128906,
    );
    check(
        "blk.0.attn_q.weight",
        0,
        [-0.0963134765625, 0.1573486328125, -0.0963134765625, -0.73046875],
        1.265625,
        1.00726318359375,
    );
    check(
        "blk.0.attn_q.weight",
        575,
        [-0.15679931640625, 0.154327392578125, 0.34100341796875, 0.029876708984375],
        0.796875,
        -4.734954833984375,
    );
    check("output_norm.weight", 0, [1.7578125, 1.8203125, 1.78125, 1.6015625], 3.34375, 1038.33203125);

    // The first rows of the embedding table: finite, embedding-sized magnitudes.
    let rows = embd.dequantize_rows(0..64).unwrap();
    assert_eq!(rows.len(), 64 * 576);
    assert!(rows.iter().all(|x| x.is_finite() && x.abs() < 4.0));
    let rms = (rows.iter().map(|x| x * x).sum::<f32>() / rows.len() as f32).sqrt();
    assert!((0.005..1.0).contains(&rms), "rms {rms}");

    // Every tensor is readable and dequantizes to finite values.
    for t in f.tensors() {
        let v = f.tensor(&t.name).unwrap().dequantize().unwrap();
        assert_eq!(v.len() as u64, t.n_elements);
        assert!(v.iter().all(|x| x.is_finite()), "{}", t.name);
    }
}

// ---------------------------------------------------------------------------------------
// bf16/f16 weights kept in their type (GPU targets)
// ---------------------------------------------------------------------------------------

#[cfg(feature = "compile")]
mod half_weights {
    use super::*;

    /// A 1-layer Llama as a GGUF file whose weights are stored in several types: q/k/v in F16
    /// (one merged f16 matmul), the output projection, the head and the embedding table in
    /// BF16, gate in F16 and up in BF16 (a mix: merged in f32), down in F32; norms F32.
    fn mixed_type_llama(cfg: &max_serve::llama::LlamaConfig) -> Vec<u8> {
        let (e, ff, v) = (cfg.n_embd as u64, cfg.n_ff as u64, cfg.vocab_size as u64);
        let (qd, kvd) = ((cfg.n_heads * cfg.head_dim) as u64, (cfg.n_kv_heads * cfg.head_dim) as u64);
        let mut seed = 11u64;
        let mut values = |n: u64, scale: f32| -> Vec<f32> { (0..n).map(|_| ((rng(&mut seed) % 2001) as f32 / 1000.0 - 1.0) * scale).collect() };
        let bf16_bytes = |x: &[f32]| -> Vec<u8> { x.iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect() };
        let mut w = Writer::new();
        // GGUF dims are [columns, rows].
        let mut add = |w: Writer, name: &str, dims: &[u64], ty: GgmlType, scale: f32| {
            let x = values(dims.iter().product(), scale);
            let data = match ty {
                GgmlType::F16 => f16_bytes(&x),
                GgmlType::BF16 => bf16_bytes(&x),
                _ => f32_bytes(&x),
            };
            w.tensor(name, dims, ty, data)
        };
        w = add(w, "token_embd.weight", &[e, v], GgmlType::BF16, 1.0);
        w = add(w, "blk.0.attn_norm.weight", &[e], GgmlType::F32, 1.0);
        for (n, rows) in [("attn_q", qd), ("attn_k", kvd), ("attn_v", kvd)] {
            w = add(w, &format!("blk.0.{n}.weight"), &[e, rows], GgmlType::F16, 0.2);
        }
        w = add(w, "blk.0.attn_output.weight", &[qd, e], GgmlType::BF16, 0.2);
        w = add(w, "blk.0.ffn_norm.weight", &[e], GgmlType::F32, 1.0);
        w = add(w, "blk.0.ffn_gate.weight", &[e, ff], GgmlType::F16, 0.2);
        w = add(w, "blk.0.ffn_up.weight", &[e, ff], GgmlType::BF16, 0.2);
        w = add(w, "blk.0.ffn_down.weight", &[ff, e], GgmlType::F32, 0.2);
        w = add(w, "output_norm.weight", &[e], GgmlType::F32, 1.0);
        w = add(w, "output.weight", &[e, v], GgmlType::BF16, 0.2);
        w.build()
    }

    /// Prefill logits of `graph` (5 tokens) on the CPU.
    fn prefill_logits(graph: &max_compiler::Graph, cfg: &max_serve::llama::LlamaConfig, tag: &str) -> Vec<f32> {
        use max_runtime::{Artifact, Device, InferenceSession, Tensor};
        let mut opts = max_serve::compile::ModelTarget::from(max_compiler::Target::host()).options().unwrap();
        opts.weights = graph.weight_store();
        let bytes = max_compiler::graph_api::compile_graph_with(graph, &opts).unwrap();
        let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("gguf-half-{tag}.maxa"));
        std::fs::write(&path, &bytes).unwrap();
        let model = InferenceSession::with_threads(Device::Cpu, 2).load(&Artifact::open(&path).unwrap()).unwrap();
        let cache = || Tensor::zeros(max_compiler::DType::F16, &[1, 1, 8, cfg.n_kv_heads, cfg.head_dim]);
        let mut state = model.new_state(vec![cache(), cache()]).unwrap();
        let i32s = |v: &[i32]| Tensor::from_slice(&[v.len()], v).unwrap();
        let out = model.execute_stateful("forward", &[i32s(&[1, 2, 3, 4, 5]), i32s(&[0, 1, 2, 3, 4]), i32s(&[0]), i32s(&[0]), i32s(&[4])], &mut state).unwrap();
        out[0].to_f32_vec()
    }

    #[test]
    fn f16_and_bf16_weights_keep_their_type_when_asked() {
        let cfg = max_serve::llama::LlamaConfig {
            architecture: "llama".into(),
            name: None,
            n_layers: 1,
            n_embd: 64,
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 16,
            n_ff: 96,
            vocab_size: 128,
            rope_base: 10000.0,
            rms_eps: 1e-5,
            context_length: 8,
            rope_interleaved: true,
            tied_embeddings: false,
        };
        let g = GgufFile::parse(mixed_type_llama(&cfg)).unwrap();
        use max_serve::llama::{build_graph_with, LlamaWeights};
        let wide = build_graph_with(LlamaWeights::Gguf(&g), &cfg, false).unwrap();
        let kept = build_graph_with(LlamaWeights::Gguf(&g), &cfg, true).unwrap();
        let decl = |graph: &max_compiler::Graph, name: &str| {
            let text = graph.to_mlir().unwrap();
            text.lines().find(|l| l.contains(&format!("name = \"{name}\""))).unwrap_or_else(|| panic!("no weight {name} in\n{text}")).to_string()
        };
        // Widened, every weight is f32; kept, each 16-bit weight (or merge of one type) keeps it.
        for (name, ty) in [
            ("blk.0.attn_qkv.weight^T", "64x128xf16"),
            ("blk.0.attn_output.weight^T", "64x64xbf16"),
            ("blk.0.ffn_gate_up.weight^T", "64x192xf32"),
            ("blk.0.ffn_down.weight^T", "96x64xf32"),
            ("output.weight^T", "64x128xbf16"),
            ("token_embd.weight", "128x64xbf16"),
        ] {
            assert!(decl(&kept, name).contains(ty), "{name}: {}", decl(&kept, name));
            assert!(decl(&wide, name).contains("xf32>"), "{name}: {}", decl(&wide, name));
        }
        // The same weight values either way (the file's), transposed and merged alike: the
        // logits differ only by the activations' rounding to bf16/f16 for the kept products.
        let (a, b) = (prefill_logits(&wide, &cfg, "wide"), prefill_logits(&kept, &cfg, "kept"));
        let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        let diff: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x - y).collect();
        let rel = norm(&diff) / norm(&a);
        assert!(rel < 2e-2 && norm(&a) > 0.0, "kept-type logits {rel:.2e} (relative L2) from the widened ones");
    }
}
