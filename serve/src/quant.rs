//! ggml tensor element types: block sizes and dequantization to `f32`.
//!
//! ggml stores a tensor row as a sequence of fixed-size *blocks*; each block packs
//! [`GgmlType::block_size`] elements into [`GgmlType::type_size`] bytes (plain float types
//! are blocks of one element). Every multi-byte field is little-endian. This module knows
//! the supported block layouts and nothing about files; `gguf` finds the bytes.
//!
//! Only the types that current small LLM checkpoints use are supported. The other
//! standard ggml type ids are still recognized by name so that an error says "Q5_K is not
//! supported" rather than "unknown type 13".

use half::{bf16, f16};

/// Elements per block of the 32-element formats (Q4_0, Q4_1, Q8_0).
const QK: usize = 32;
/// Elements per super-block of the k-quant formats (Q4_K, Q6_K).
const QK_K: usize = 256;

/// Errors about element types and quantized data (no file context; `gguf` adds it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantError {
    /// The id is not any ggml type this crate knows of.
    #[error("unknown ggml tensor type id {id}")]
    UnknownType {
        /// The raw type id.
        id: u32,
    },
    /// A known ggml type that this crate cannot dequantize.
    #[error(
        "ggml tensor type {name} (id {id}) is not supported (supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q6_K)"
    )]
    UnsupportedType {
        /// The raw type id.
        id: u32,
        /// ggml's name for it, e.g. `Q5_K`.
        name: &'static str,
    },
    /// The element count does not split into whole blocks.
    #[error("{n_elements} elements of {ty} do not fill whole blocks of {block_size}")]
    PartialBlock {
        /// The element type.
        ty: GgmlType,
        /// The requested element count.
        n_elements: u64,
        /// Elements per block of `ty`.
        block_size: usize,
    },
    /// The byte size of the requested elements does not fit in 64 bits / the address space.
    #[error("{n_elements} elements of {ty} overflow the addressable size")]
    Overflow {
        /// The element type.
        ty: GgmlType,
        /// The requested element count.
        n_elements: u64,
    },
    /// The input has the wrong number of bytes for the requested elements.
    #[error("{n_elements} elements of {ty} take {expected} bytes, but {actual} bytes were given")]
    SizeMismatch {
        /// The element type.
        ty: GgmlType,
        /// The requested element count.
        n_elements: u64,
        /// Bytes those elements occupy.
        expected: u64,
        /// Bytes actually given.
        actual: u64,
    },
}

/// A ggml tensor element type that this crate can read and dequantize.
///
/// The discriminants are ggml's type ids as stored in GGUF tensor infos.
#[allow(non_camel_case_types)] // ggml's own names, so they match tools and file dumps
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlType {
    /// IEEE 754 single precision.
    F32 = 0,
    /// IEEE 754 half precision.
    F16 = 1,
    /// 32 elements in 18 bytes: f16 scale `d`, 16 bytes of 4-bit quants; `(q - 8) * d`.
    Q4_0 = 2,
    /// 32 elements in 20 bytes: f16 scale `d`, f16 min `m`, 16 bytes of 4-bit quants; `q * d + m`.
    Q4_1 = 3,
    /// 32 elements in 22 bytes: f16 scale `d`, 32 high bits, 16 bytes of low nibbles; `(q - 16) * d`.
    Q5_0 = 6,
    /// 32 elements in 24 bytes: f16 scale `d`, f16 min `m`, 32 high bits, 16 bytes of low nibbles; `q * d + m`.
    Q5_1 = 7,
    /// 32 elements in 34 bytes: f16 scale `d`, 32 signed bytes; `q * d`.
    Q8_0 = 8,
    /// 256 elements in 144 bytes: 8 sub-blocks of 32 with 6-bit scales and mins, 4-bit quants.
    Q4_K = 12,
    /// 256 elements in 210 bytes: 16 sub-blocks of 16 with 8-bit scales, 6-bit quants.
    Q6_K = 14,
    /// bfloat16 (the upper half of an f32).
    BF16 = 30,
}

/// ggml's name for a type id, supported or not; `None` for ids ggml never assigned.
pub fn ggml_type_name(id: u32) -> Option<&'static str> {
    Some(match id {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        // 4 and 5 were Q4_2 and Q4_3, removed from ggml before GGUF existed.
        4 => "Q4_2",
        5 => "Q4_3",
        6 => "Q5_0",
        7 => "Q5_1",
        8 => "Q8_0",
        9 => "Q8_1",
        10 => "Q2_K",
        11 => "Q3_K",
        12 => "Q4_K",
        13 => "Q5_K",
        14 => "Q6_K",
        15 => "Q8_K",
        16 => "IQ2_XXS",
        17 => "IQ2_XS",
        18 => "IQ3_XXS",
        19 => "IQ1_S",
        20 => "IQ4_NL",
        21 => "IQ3_S",
        22 => "IQ2_S",
        23 => "IQ4_XS",
        24 => "I8",
        25 => "I16",
        26 => "I32",
        27 => "I64",
        28 => "F64",
        29 => "IQ1_M",
        30 => "BF16",
        // 31..=33 and 36..=38 were interleaved CPU repackings, no longer stored in files.
        31 => "Q4_0_4_4",
        32 => "Q4_0_4_8",
        33 => "Q4_0_8_8",
        34 => "TQ1_0",
        35 => "TQ2_0",
        36 => "IQ4_NL_4_4",
        37 => "IQ4_NL_4_8",
        38 => "IQ4_NL_8_8",
        39 => "MXFP4",
        40 => "NVFP4",
        41 => "Q1_0",
        _ => return None,
    })
}

impl GgmlType {
    /// Every supported type, in id order.
    pub const ALL: [GgmlType; 10] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
        GgmlType::BF16,
    ];

    /// The supported type with ggml id `id`; names known-but-unsupported ids in the error.
    pub fn from_id(id: u32) -> Result<Self, QuantError> {
        if let Some(ty) = Self::ALL.into_iter().find(|ty| ty.id() == id) {
            return Ok(ty);
        }
        Err(match ggml_type_name(id) {
            Some(name) => QuantError::UnsupportedType { id, name },
            None => QuantError::UnknownType { id },
        })
    }

    /// ggml's type id.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// ggml's name, e.g. `Q4_K`.
    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "F32",
            GgmlType::F16 => "F16",
            GgmlType::Q4_0 => "Q4_0",
            GgmlType::Q4_1 => "Q4_1",
            GgmlType::Q5_0 => "Q5_0",
            GgmlType::Q5_1 => "Q5_1",
            GgmlType::Q8_0 => "Q8_0",
            GgmlType::Q4_K => "Q4_K",
            GgmlType::Q6_K => "Q6_K",
            GgmlType::BF16 => "BF16",
        }
    }

    /// Elements per block.
    pub fn block_size(self) -> usize {
        match self {
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => 1,
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::Q8_0 => QK,
            GgmlType::Q4_K | GgmlType::Q6_K => QK_K,
        }
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        match self {
            GgmlType::F32 => 4,
            GgmlType::F16 | GgmlType::BF16 => 2,
            GgmlType::Q4_0 => 2 + QK / 2,
            GgmlType::Q4_1 => 2 + 2 + QK / 2,
            GgmlType::Q5_0 => 2 + 4 + QK / 2,
            GgmlType::Q5_1 => 2 + 2 + 4 + QK / 2,
            GgmlType::Q8_0 => 2 + QK,
            GgmlType::Q4_K => 2 + 2 + 12 + QK_K / 2,
            GgmlType::Q6_K => QK_K / 2 + QK_K / 4 + QK_K / 16 + 2,
        }
    }

    /// Bytes taken by `n_elements` elements; they must fill whole blocks.
    pub fn byte_size(self, n_elements: u64) -> Result<u64, QuantError> {
        let block = self.block_size() as u64;
        if n_elements % block != 0 {
            return Err(QuantError::PartialBlock { ty: self, n_elements, block_size: self.block_size() });
        }
        (n_elements / block).checked_mul(self.type_size() as u64).ok_or(QuantError::Overflow { ty: self, n_elements })
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Dequantizes `n_elements` elements of type `ty` stored in `bytes` (exactly their size).
pub fn dequantize(ty: GgmlType, bytes: &[u8], n_elements: usize) -> Result<Vec<f32>, QuantError> {
    // Check before allocating: `n_elements` may come from untrusted input.
    check_size(ty, bytes, n_elements as u64)?;
    let mut out = vec![0.0; n_elements];
    dequantize_into(ty, bytes, &mut out)?;
    Ok(out)
}

/// Dequantizes `out.len()` elements of type `ty` from `bytes` (exactly their size) into `out`.
pub fn dequantize_into(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<(), QuantError> {
    check_size(ty, bytes, out.len() as u64)?;
    // From here on the sizes agree, so block-wise chunking covers both slices exactly.
    let blocks = bytes.chunks_exact(ty.type_size()).zip(out.chunks_exact_mut(ty.block_size()));
    match ty {
        GgmlType::F32 => blocks.for_each(|(b, y)| y[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        GgmlType::F16 => blocks.for_each(|(b, y)| y[0] = half_at(b, 0)),
        GgmlType::BF16 => blocks.for_each(|(b, y)| y[0] = bf16::from_bits(u16_at(b, 0)).to_f32()),
        GgmlType::Q4_0 => blocks.for_each(|(b, y)| block_q4_0(b, y)),
        GgmlType::Q4_1 => blocks.for_each(|(b, y)| block_q4_1(b, y)),
        GgmlType::Q5_0 => blocks.for_each(|(b, y)| block_q5(b, y, false)),
        GgmlType::Q5_1 => blocks.for_each(|(b, y)| block_q5(b, y, true)),
        GgmlType::Q8_0 => blocks.for_each(|(b, y)| block_q8_0(b, y)),
        GgmlType::Q4_K => blocks.for_each(|(b, y)| block_q4_k(b, y)),
        GgmlType::Q6_K => blocks.for_each(|(b, y)| block_q6_k(b, y)),
    }
    Ok(())
}

fn check_size(ty: GgmlType, bytes: &[u8], n_elements: u64) -> Result<(), QuantError> {
    let expected = ty.byte_size(n_elements)?;
    if expected != bytes.len() as u64 {
        return Err(QuantError::SizeMismatch { ty, n_elements, expected, actual: bytes.len() as u64 });
    }
    Ok(())
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn half_at(b: &[u8], at: usize) -> f32 {
    f16::from_bits(u16_at(b, at)).to_f32()
}

/// Q4_0: `d: f16, qs: [u8; 16]`. Element `j < 16` is the low nibble of `qs[j]`, element
/// `j + 16` its high nibble, so a block's two halves share bytes.
fn block_q4_0(b: &[u8], y: &mut [f32]) {
    let d = half_at(b, 0);
    let qs = &b[2..2 + QK / 2];
    for (j, &q) in qs.iter().enumerate() {
        y[j] = ((q & 0x0F) as i32 - 8) as f32 * d;
        y[j + QK / 2] = ((q >> 4) as i32 - 8) as f32 * d;
    }
}

/// Q4_1: `d: f16, m: f16, qs: [u8; 16]`, nibbles ordered as in Q4_0, unsigned with an offset.
fn block_q4_1(b: &[u8], y: &mut [f32]) {
    let d = half_at(b, 0);
    let m = half_at(b, 2);
    let qs = &b[4..4 + QK / 2];
    for (j, &q) in qs.iter().enumerate() {
        y[j] = (q & 0x0F) as f32 * d + m;
        y[j + QK / 2] = (q >> 4) as f32 * d + m;
    }
}

/// Q5_0 (`d: f16, qh: u32, qs: [u8; 16]`) and Q5_1 (`d, m: f16, qh, qs`): the nibbles as in
/// Q4_0, each with a fifth bit from `qh` (bit `j` for element `j`); Q5_0 is offset by 16,
/// Q5_1 adds its min.
fn block_q5(b: &[u8], y: &mut [f32], with_min: bool) {
    let d = half_at(b, 0);
    let (m, at) = if with_min { (half_at(b, 2), 4) } else { (0.0, 2) };
    let qh = u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    let qs = &b[at + 4..at + 4 + QK / 2];
    for (j, &q) in qs.iter().enumerate() {
        let lo = (q & 0x0F) as u32 | ((qh >> j) & 1) << 4;
        let hi = (q >> 4) as u32 | ((qh >> (j + QK / 2)) & 1) << 4;
        if with_min {
            y[j] = lo as f32 * d + m;
            y[j + QK / 2] = hi as f32 * d + m;
        } else {
            y[j] = (lo as i32 - 16) as f32 * d;
            y[j + QK / 2] = (hi as i32 - 16) as f32 * d;
        }
    }
}

/// Q8_0: `d: f16, qs: [i8; 32]`.
fn block_q8_0(b: &[u8], y: &mut [f32]) {
    let d = half_at(b, 0);
    for (y, &q) in y.iter_mut().zip(&b[2..2 + QK]) {
        *y = (q as i8) as f32 * d;
    }
}

/// Scale and min (both 6-bit) of Q4_K sub-block `j` (0..8) from the 12 packed bytes.
///
/// Bytes 0..4 hold scales 0..4 in their low 6 bits, bytes 4..8 mins 0..4 likewise; bytes
/// 8..12 hold the low 4 bits of scale `j` (low nibble) and min `j` (high nibble) for
/// j = 4..8, whose top 2 bits are the spare top bits of bytes `j - 4` (scale) and `j` (min).
fn q4_k_scale_min(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 0x3F, s[j + 4] & 0x3F)
    } else {
        let scale = (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4);
        let min = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
        (scale, min)
    }
}

/// Q4_K: `d: f16, dmin: f16, scales: [u8; 12], qs: [u8; 128]`, 8 sub-blocks of 32.
///
/// Each 32 bytes of `qs` serve two consecutive sub-blocks: low nibbles the first (even)
/// one, high nibbles the second. Value = `d * scale * q - dmin * min`.
fn block_q4_k(b: &[u8], y: &mut [f32]) {
    let d = half_at(b, 0);
    let dmin = half_at(b, 2);
    let scales = &b[4..16];
    let qs = &b[16..16 + QK_K / 2];
    for (pair, (q, y)) in qs.chunks_exact(32).zip(y.chunks_exact_mut(64)).enumerate() {
        let (sc_lo, m_lo) = q4_k_scale_min(2 * pair, scales);
        let (sc_hi, m_hi) = q4_k_scale_min(2 * pair + 1, scales);
        let (d_lo, min_lo) = (d * sc_lo as f32, dmin * m_lo as f32);
        let (d_hi, min_hi) = (d * sc_hi as f32, dmin * m_hi as f32);
        for (l, &q) in q.iter().enumerate() {
            y[l] = d_lo * (q & 0x0F) as f32 - min_lo;
            y[l + 32] = d_hi * (q >> 4) as f32 - min_hi;
        }
    }
}

/// Q6_K: `ql: [u8; 128], qh: [u8; 64], scales: [i8; 16], d: f16`, 16 sub-blocks of 16.
///
/// Each half of the block (128 elements) uses 64 bytes of `ql`, 32 of `qh` and 8 scales.
/// Within a half, element `l + 32 * k` (l < 32, k < 4) takes its low 4 bits from
/// `ql[l]` (k = 0: low nibble, k = 2: high nibble) or `ql[l + 32]` (k = 1 low, k = 3 high),
/// and its top 2 bits from bits `2k..2k+2` of `qh[l]`; the 6-bit value is offset by 32.
/// Its scale is `scales[8 * half + 2 * k + l / 16]`. Value = `d * scale * (q - 32)`.
fn block_q6_k(b: &[u8], y: &mut [f32]) {
    let ql = &b[0..QK_K / 2];
    let qh = &b[QK_K / 2..QK_K / 2 + QK_K / 4];
    let scales = &b[QK_K / 2 + QK_K / 4..QK_K / 2 + QK_K / 4 + QK_K / 16];
    let d = half_at(b, QK_K / 2 + QK_K / 4 + QK_K / 16);
    for half in 0..2 {
        let ql = &ql[64 * half..64 * (half + 1)];
        let qh = &qh[32 * half..32 * (half + 1)];
        let sc = &scales[8 * half..8 * (half + 1)];
        let y = &mut y[128 * half..128 * (half + 1)];
        for l in 0..32 {
            let low = [ql[l] & 0x0F, ql[l + 32] & 0x0F, ql[l] >> 4, ql[l + 32] >> 4];
            for (k, low) in low.into_iter().enumerate() {
                let q = (low | (((qh[l] >> (2 * k)) & 3) << 4)) as i32 - 32;
                let scale = sc[2 * k + l / 16] as i8 as f32;
                y[l + 32 * k] = d * scale * q as f32;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)] // element indices are the point of these checks
mod tests {
    use super::*;

    fn f16_bytes(v: f32) -> [u8; 2] {
        f16::from_f32(v).to_bits().to_le_bytes()
    }

    #[test]
    fn sizes_match_ggml() {
        let expect = [
            (GgmlType::F32, 1, 4),
            (GgmlType::F16, 1, 2),
            (GgmlType::BF16, 1, 2),
            (GgmlType::Q4_0, 32, 18),
            (GgmlType::Q4_1, 32, 20),
            (GgmlType::Q5_0, 32, 22),
            (GgmlType::Q5_1, 32, 24),
            (GgmlType::Q8_0, 32, 34),
            (GgmlType::Q4_K, 256, 144),
            (GgmlType::Q6_K, 256, 210),
        ];
        for (ty, block, bytes) in expect {
            assert_eq!((ty.block_size(), ty.type_size()), (block, bytes), "{ty}");
            assert_eq!(GgmlType::from_id(ty.id()), Ok(ty));
            assert_eq!(ggml_type_name(ty.id()), Some(ty.name()));
        }
    }

    #[test]
    fn unsupported_and_unknown_ids() {
        for (id, name) in [
            (9, "Q8_1"),
            (10, "Q2_K"),
            (11, "Q3_K"),
            (13, "Q5_K"),
            (15, "Q8_K"),
            (16, "IQ2_XXS"),
            (23, "IQ4_XS"),
            (29, "IQ1_M"),
        ] {
            let err = GgmlType::from_id(id).unwrap_err();
            assert_eq!(err, QuantError::UnsupportedType { id, name });
            assert!(err.to_string().contains(name), "{err}");
        }
        for id in [99, 1000, u32::MAX] {
            let err = GgmlType::from_id(id).unwrap_err();
            assert_eq!(err, QuantError::UnknownType { id });
            assert!(err.to_string().contains(&id.to_string()), "{err}");
        }
    }

    #[test]
    fn size_errors() {
        assert!(matches!(GgmlType::Q4_0.byte_size(33), Err(QuantError::PartialBlock { .. })));
        assert!(matches!(GgmlType::F32.byte_size(u64::MAX), Err(QuantError::Overflow { .. })));
        assert_eq!(GgmlType::Q4_K.byte_size(512), Ok(288));
        let err = dequantize(GgmlType::Q8_0, &[0; 33], 32).unwrap_err();
        assert_eq!(err, QuantError::SizeMismatch { ty: GgmlType::Q8_0, n_elements: 32, expected: 34, actual: 33 });
        assert!(dequantize(GgmlType::Q6_K, &[0; 210], 255).is_err());
        assert_eq!(dequantize(GgmlType::Q4_1, &[], 0), Ok(vec![]));
    }

    #[test]
    fn float_types() {
        let vals = [1.5f32, -2.25, 0.0, 65504.0];
        let f32_bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(dequantize(GgmlType::F32, &f32_bytes, 4).unwrap(), vals);
        let f16_data: Vec<u8> = vals.iter().flat_map(|&v| f16_bytes(v)).collect();
        assert_eq!(dequantize(GgmlType::F16, &f16_data, 4).unwrap(), vals);
        // bf16 is the top half of the f32 bit pattern; these values are exact in bf16.
        let bf16_data: Vec<u8> = vals[..3].iter().flat_map(|v| ((v.to_bits() >> 16) as u16).to_le_bytes()).collect();
        assert_eq!(dequantize(GgmlType::BF16, &bf16_data, 3).unwrap(), vals[..3]);
    }

    #[test]
    fn q4_0_block() {
        let mut b = Vec::from(f16_bytes(0.5));
        // qs[j] = low nibble j, high nibble 15 - j.
        b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let y = dequantize(GgmlType::Q4_0, &b, 32).unwrap();
        for j in 0..16 {
            assert_eq!(y[j], (j as f32 - 8.0) * 0.5, "element {j}");
            assert_eq!(y[j + 16], ((15 - j) as f32 - 8.0) * 0.5, "element {}", j + 16);
        }
        assert_eq!((y[0], y[15], y[16], y[31]), (-4.0, 3.5, 3.5, -4.0));
    }

    #[test]
    fn q4_1_block() {
        let (d, m) = (0.25f32, -1.5f32);
        let mut b = Vec::from(f16_bytes(d));
        b.extend(f16_bytes(m));
        b.extend((0..16u8).map(|j| ((j * 3) % 16) | ((15 - j) << 4)));
        let y = dequantize(GgmlType::Q4_1, &b, 32).unwrap();
        for j in 0..16 {
            assert_eq!(y[j], ((j * 3) % 16) as f32 * d + m, "element {j}");
            assert_eq!(y[j + 16], (15 - j) as f32 * d + m, "element {}", j + 16);
        }
        // Spot values worked out by hand: q=0 -> m, q=15 -> 15/4 - 1.5.
        assert_eq!((y[0], y[16], y[31], y[1]), (-1.5, 2.25, -1.5, -0.75));
    }

    #[test]
    fn q8_0_two_blocks() {
        let mut b = Vec::new();
        for (d, base) in [(0.125f32, -16i32), (2.0, 100)] {
            b.extend(f16_bytes(d));
            b.extend((0..32).map(|j| (base + j) as i8 as u8));
        }
        let y = dequantize(GgmlType::Q8_0, &b, 64).unwrap();
        for j in 0..32 {
            assert_eq!(y[j], (j as f32 - 16.0) * 0.125, "element {j}");
        }
        // Second block: 100 + j wraps to negative past 127.
        assert_eq!((y[32], y[59], y[60], y[63]), (200.0, 254.0, -256.0, -250.0));
    }

    /// Packs 8 scales and 8 mins (each < 64) into Q4_K's 12 scale bytes, spelled out
    /// independently of the decoder: bytes 0..4 = scale[i] | (scale[i+4] >> 4) << 6, bytes
    /// 4..8 = min[i] | (min[i+4] >> 4) << 6, bytes 8..12 = (scale[i+4] & 15) | (min[i+4] & 15) << 4.
    fn pack_q4_k_scales(sc: [u8; 8], mn: [u8; 8]) -> [u8; 12] {
        let mut s = [0u8; 12];
        for i in 0..4 {
            s[i] = sc[i] | ((sc[i + 4] >> 4) << 6);
            s[i + 4] = mn[i] | ((mn[i + 4] >> 4) << 6);
            s[i + 8] = (sc[i + 4] & 0x0F) | ((mn[i + 4] & 0x0F) << 4);
        }
        s
    }

    #[test]
    fn q4_k_block() {
        let (d, dmin) = (0.5f32, 0.25f32);
        // Upper sub-blocks use values >= 16 so their top bits live in bytes 0..8.
        let sc = [1, 2, 3, 63, 17, 33, 48, 5];
        let mn = [0, 4, 8, 12, 63, 20, 1, 40];
        let mut b = Vec::from(f16_bytes(d));
        b.extend(f16_bytes(dmin));
        b.extend(pack_q4_k_scales(sc, mn));
        // qs[32 * p + l]: low nibble l % 16 (sub-block 2p), high nibble 15 - l % 16 (sub-block 2p + 1).
        b.extend((0..128u8).map(|i| (i % 16) | ((15 - i % 16) << 4)));
        assert_eq!(b.len(), 144);
        let y = dequantize(GgmlType::Q4_K, &b, 256).unwrap();
        let q = |e: usize| if (e / 32) % 2 == 0 { (e % 32 % 16) as f32 } else { (15 - e % 32 % 16) as f32 };
        for e in 0..256 {
            let s = e / 32;
            assert_eq!(y[e], d * sc[s] as f32 * q(e) - dmin * mn[s] as f32, "element {e}");
        }
        // By hand: element 0 is sub-block 0, q=0: 0.5*1*0 - 0.25*0 = 0.
        assert_eq!(y[0], 0.0);
        // Element 31 (last of sub-block 0): q=15: 0.5*1*15 - 0 = 7.5.
        assert_eq!(y[31], 7.5);
        // Element 32 (first of sub-block 1): q=15, scale 2, min 4: 15 - 1 = 14.
        assert_eq!(y[32], 14.0);
        // Element 127 (end of sub-block 3): q=0, scale 63, min 12: -3.
        assert_eq!(y[127], -3.0);
        // Element 128 (sub-block 4, packed high bits): q=0, min 63: -15.75.
        assert_eq!(y[128], -15.75);
        // Element 129: q=1, scale 17: 8.5 - 15.75 = -7.25.
        assert_eq!(y[129], -7.25);
        // Element 160 (sub-block 5): q=15, scale 33, min 20: 247.5 - 5 = 242.5.
        assert_eq!(y[160], 242.5);
        // Element 224 (sub-block 7): q=15, scale 5, min 40: 37.5 - 10 = 27.5.
        assert_eq!(y[224], 27.5);
        // Element 255: q=0, min 40: -10.
        assert_eq!(y[255], -10.0);
    }

    #[test]
    fn q6_k_block() {
        let d = 0.5f32;
        // q(e) for element e, 0..64; scales per 16-element sub-block, signed.
        let q = |e: usize| ((e * 7 + 3) % 64) as u8;
        let scales: [i8; 16] = [1, -2, 3, -4, 5, 6, 7, 8, -9, 10, 11, 12, 13, 14, 15, -128];
        // Pack independently of the decoder: element e = 128 h + 32 k + l.
        let (mut ql, mut qh) = ([0u8; 128], [0u8; 64]);
        for e in 0..256 {
            let (h, k, l) = (e / 128, (e % 128) / 32, e % 32);
            let v = q(e);
            let ql_index = 64 * h + l + if k % 2 == 1 { 32 } else { 0 };
            ql[ql_index] |= if k < 2 { v & 0x0F } else { (v & 0x0F) << 4 };
            qh[32 * h + l] |= (v >> 4) << (2 * k);
        }
        let mut b = Vec::new();
        b.extend(ql);
        b.extend(qh);
        b.extend(scales.map(|s| s as u8));
        b.extend(f16_bytes(d));
        assert_eq!(b.len(), 210);
        let y = dequantize(GgmlType::Q6_K, &b, 256).unwrap();
        for e in 0..256 {
            let expect = d * scales[e / 16] as f32 * (q(e) as f32 - 32.0);
            assert_eq!(y[e], expect, "element {e}");
        }
        // By hand: element 0: q=3, scale 1: 0.5 * (3 - 32) = -14.5.
        assert_eq!(y[0], -14.5);
        // Element 16 (sub-block 1): q=(112+3)%64=51, scale -2: 0.5 * -2 * 19 = -19.
        assert_eq!(y[16], -19.0);
        // Element 127 (end of first half): q=(889+3)%64=60, scale 8: 0.5 * 8 * 28 = 112.
        assert_eq!(y[127], 112.0);
        // Element 128 (second half): q=(896+3)%64=3, scale -9: 0.5 * -9 * -29 = 130.5.
        assert_eq!(y[128], 130.5);
        // Element 255: q=(1785+3)%64=60, scale -128: 0.5 * -128 * 28 = -1792.
        assert_eq!(y[255], -1792.0);
    }

    /// Byte offset of an f16 scale field in a block, and its value for block `i`.
    type ScaleField = (usize, fn(usize) -> f32);
    /// Type, scale fields, FNV-1a of the output, its f64 sum, and sample elements.
    type ReferenceCase = (GgmlType, Vec<ScaleField>, u64, f64, &'static [(usize, f32)]);

    /// Blocks of xorshift bytes with the f16 scale fields set to exact small values, four
    /// blocks per type; the same generator is easy to mirror in a script.
    fn pseudo_random_blocks(ty: GgmlType, scale_fields: &[ScaleField]) -> Vec<u8> {
        const N_BLOCKS: usize = 4;
        let mut s = 0x243F_6A88_85A3_08D3u64 + ty.id() as u64;
        let mut b: Vec<u8> = (0..ty.type_size() * N_BLOCKS)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 24) as u8
            })
            .collect();
        for i in 0..N_BLOCKS {
            for &(at, value) in scale_fields {
                let at = i * ty.type_size() + at;
                b[at..at + 2].copy_from_slice(&f16_bytes(value(i)));
            }
        }
        b
    }

    /// FNV-1a over the values' little-endian bit patterns: an exact whole-vector match.
    fn fnv1a(values: &[f32]) -> u64 {
        values
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .fold(0xcbf2_9ce4_8422_2325, |h, byte| (h ^ byte as u64).wrapping_mul(0x0000_0100_0000_01b3))
    }

    /// Cross-check against an independent decoder: the expected hashes, sums and samples
    /// were computed once with gguf-py 0.19.0 (`gguf.quants.dequantize`, NumPy) from
    /// byte-identical blocks; every value here is exact in f32, so the match is bit-exact.
    #[test]
    #[allow(clippy::excessive_precision)] // exact dyadic values, written in full
    fn matches_reference_decoder_on_pseudo_random_blocks() {
        let d: fn(usize) -> f32 = |i| (i + 1) as f32 / 128.0;
        let cases: [ReferenceCase; 7] = [
            (
                GgmlType::Q4_0,
                vec![(0, d)],
                0xca99ffa7c1a9f613,
                -2.4765625,
                &[(0, 0.0546875), (16, -0.0234375), (127, -0.09375)],
            ),
            (
                GgmlType::Q4_1,
                vec![(0, d), (2, |i| -((i + 1) as f32) / 64.0)],
                0x7c9de836c6d6ae61,
                13.53125,
                &[(0, 0.0234375), (32, 0.15625), (127, 0.34375)],
            ),
            (
                GgmlType::Q5_0,
                vec![(0, d)],
                0xeb84b22fdc96cfa8,
                0.8515625,
                &[(0, 0.0234375), (16, 0.0390625), (127, -0.40625)],
            ),
            (
                GgmlType::Q5_1,
                vec![(0, d), (2, |i| -((i + 1) as f32) / 64.0)],
                0xfa1b4c414131baac,
                31.4921875,
                &[(0, 0.1875), (16, 0.015625), (127, 0.40625)],
            ),
            (
                GgmlType::Q8_0,
                vec![(0, d)],
                0x77b050e766958b43,
                25.3203125,
                &[(0, 0.90625), (64, -2.9765625), (127, -1.59375)],
            ),
            (
                GgmlType::Q4_K,
                vec![(0, d), (2, |i| (i + 1) as f32 / 256.0)],
                0xc3938cd72f30448e,
                3067.6640625,
                &[(0, -0.109375), (16, 4.25), (64, 0.80078125), (128, 1.71484375), (200, 1.109375), (1023, 0.765625)],
            ),
            (
                GgmlType::Q6_K,
                vec![(208, d)],
                0x2b3ac123e0003ac0,
                311.25,
                &[(0, -15.5), (1, 26.15625), (32, 11.3671875), (128, 8.0078125), (200, -20.671875), (1023, -16.5)],
            ),
        ];
        for (ty, fields, hash, sum, samples) in cases {
            let bytes = pseudo_random_blocks(ty, &fields);
            let y = dequantize(ty, &bytes, 4 * ty.block_size()).unwrap();
            for &(i, v) in samples {
                assert_eq!(y[i], v, "{ty} element {i}");
            }
            assert_eq!(y.iter().map(|&v| v as f64).sum::<f64>(), sum, "{ty}");
            assert_eq!(fnv1a(&y), hash, "{ty}");
        }
    }
}
