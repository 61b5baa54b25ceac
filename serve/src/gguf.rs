//! GGUF model files (versions 2 and 3, little-endian): header, metadata, tensor infos and
//! the tensor data section.
//!
//! Layout: magic `GGUF`, `version: u32`, `tensor_count: u64`, `metadata_kv_count: u64`, the
//! key/value pairs (key string, `type: u32`, value), the tensor infos (name string,
//! `n_dims: u32`, `dims: [u64; n_dims]` with `dims[0]` varying fastest, `ggml type: u32`,
//! `offset: u64` into the data section), padding to `general.alignment` (default 32), then
//! the tensor data. Strings are a `u64` byte length and UTF-8 bytes.
//!
//! Everything is validated once in [`GgufFile::parse`]: every count is checked against the
//! bytes that remain before anything is allocated, and every tensor's byte range must lie
//! inside the file, so later accessors cannot fail on bounds.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::quant::{self, GgmlType, QuantError};

/// The four bytes every GGUF file starts with.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// Data alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// The metadata key that overrides the data alignment.
pub const ALIGNMENT_KEY: &str = "general.alignment";
/// ggml tensors have at most this many dimensions.
pub const MAX_DIMS: usize = 4;
/// Deepest array nesting accepted; real files nest at most once, and a bound keeps a
/// crafted file from exhausting the stack.
pub const MAX_ARRAY_DEPTH: usize = 8;

/// Errors from reading a GGUF file or querying it.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The file could not be opened or mapped.
    #[error("cannot read GGUF file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file ends inside a field.
    #[error("truncated GGUF: {what} at offset {offset} needs {needed} bytes, but the file is {len} bytes long")]
    Truncated {
        /// What was being read.
        what: String,
        /// Where it starts.
        offset: u64,
        /// How many bytes it needs.
        needed: u64,
        /// The file length.
        len: u64,
    },
    /// The first four bytes are not `GGUF`.
    #[error("not a GGUF file: magic at offset 0 is {found:02x?}, expected \"GGUF\" (47 47 55 46)")]
    BadMagic {
        /// The bytes found.
        found: [u8; 4],
    },
    /// A version other than 2 or 3.
    #[error("unsupported GGUF version {version} at offset 4 (supported: 2 and 3)")]
    UnsupportedVersion {
        /// The version found.
        version: u32,
    },
    /// The version reads as 2 or 3 only when byte-swapped: a big-endian file.
    #[error("big-endian GGUF (version {version} byte-swapped) is not supported")]
    BigEndian {
        /// The byte-swapped version.
        version: u32,
    },
    /// A count that cannot fit in the bytes that remain (guards against huge allocations).
    #[error("{what} at offset {offset} is {count}, more than the {remaining} bytes left in the file can hold")]
    CountTooLarge {
        /// What is being counted.
        what: String,
        /// Where the count is stored.
        offset: u64,
        /// The count read.
        count: u64,
        /// Bytes left after the count.
        remaining: u64,
    },
    /// A metadata value type id outside 0..=12.
    #[error("metadata key `{key}`: unknown value type {type_id} at offset {offset}")]
    UnknownValueType {
        /// The key being read.
        key: String,
        /// The type id found.
        type_id: u32,
        /// Where the type id is stored.
        offset: u64,
    },
    /// A bool byte other than 0 or 1.
    #[error("metadata key `{key}`: invalid bool byte {value} at offset {offset}")]
    InvalidBool {
        /// The key being read.
        key: String,
        /// The byte found.
        value: u8,
        /// Where it is stored.
        offset: u64,
    },
    /// A string that is not UTF-8.
    #[error("{what} at offset {offset} is not valid UTF-8")]
    InvalidUtf8 {
        /// Which string.
        what: String,
        /// Where its bytes start.
        offset: u64,
    },
    /// Arrays nested deeper than [`MAX_ARRAY_DEPTH`].
    #[error("metadata key `{key}`: arrays nested deeper than {MAX_ARRAY_DEPTH} at offset {offset}")]
    NestingTooDeep {
        /// The key being read.
        key: String,
        /// Where the too-deep array starts.
        offset: u64,
    },
    /// The same key twice.
    #[error("duplicate metadata key `{key}` at offset {offset}")]
    DuplicateKey {
        /// The key.
        key: String,
        /// Where the second occurrence starts.
        offset: u64,
    },
    /// `general.alignment` is zero or not a power of two.
    #[error("`{ALIGNMENT_KEY}` is {value}; it must be a non-zero power of two")]
    BadAlignment {
        /// The value found.
        value: u64,
    },
    /// The same tensor name twice.
    #[error("duplicate tensor `{name}` (tensor info at offset {offset})")]
    DuplicateTensor {
        /// The name.
        name: String,
        /// Where the second info starts.
        offset: u64,
    },
    /// More than [`MAX_DIMS`] dimensions.
    #[error(
        "tensor `{name}` (tensor info at offset {offset}) has {n_dims} dimensions; at most {MAX_DIMS} are allowed"
    )]
    TooManyDims {
        /// The tensor.
        name: String,
        /// Where its info starts.
        offset: u64,
        /// The dimension count found.
        n_dims: u32,
    },
    /// The tensor's type id is unknown or unsupported, or its shape does not fit its type.
    #[error("tensor `{name}` (tensor info at offset {offset}): {source}")]
    TensorType {
        /// The tensor.
        name: String,
        /// Where its info starts.
        offset: u64,
        /// What is wrong with the type.
        source: QuantError,
    },
    /// The element count or byte range overflows 64 bits.
    #[error("tensor `{name}` (tensor info at offset {offset}): size of dims {dims:?} overflows")]
    TensorOverflow {
        /// The tensor.
        name: String,
        /// Where its info starts.
        offset: u64,
        /// Its dimensions.
        dims: Vec<u64>,
    },
    /// The data offset is not a multiple of the alignment.
    #[error("tensor `{name}`: data offset {data_offset} is not a multiple of the alignment {alignment}")]
    Misaligned {
        /// The tensor.
        name: String,
        /// Its offset relative to the data section.
        data_offset: u64,
        /// The file's alignment.
        alignment: u64,
    },
    /// The data range extends past the end of the file.
    #[error("tensor `{name}`: data bytes {start}..{end} lie outside the file ({len} bytes)")]
    OutOfBounds {
        /// The tensor.
        name: String,
        /// Absolute start offset.
        start: u64,
        /// Absolute end offset (exclusive).
        end: u64,
        /// The file length.
        len: u64,
    },
    /// A metadata key that is not present.
    #[error("metadata key `{key}` not found")]
    MissingKey {
        /// The key.
        key: String,
    },
    /// A metadata key whose value has another type than asked for.
    #[error("metadata key `{key}`: expected {expected}, found {actual}")]
    WrongType {
        /// The key.
        key: String,
        /// The type asked for.
        expected: String,
        /// The type stored.
        actual: String,
    },
    /// A tensor name that is not present.
    #[error("tensor `{name}` not found")]
    MissingTensor {
        /// The name.
        name: String,
    },
    /// A row range outside the tensor.
    #[error("tensor `{name}`: rows {start}..{end} are outside its {rows} rows")]
    RowsOutOfRange {
        /// The tensor.
        name: String,
        /// First row asked for.
        start: u64,
        /// End row asked for (exclusive).
        end: u64,
        /// Rows the tensor has.
        rows: u64,
    },
    /// Dequantization failed (e.g. the result would not fit in memory).
    #[error("tensor `{name}`: {source}")]
    Dequantize {
        /// The tensor.
        name: String,
        /// Why.
        source: QuantError,
    },
}

/// Result alias for this module.
pub type Result<T, E = GgufError> = std::result::Result<T, E>;

/// The type of a metadata value, with GGUF's type ids as discriminants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueType {
    /// `u8`
    U8 = 0,
    /// `i8`
    I8 = 1,
    /// `u16`
    U16 = 2,
    /// `i16`
    I16 = 3,
    /// `u32`
    U32 = 4,
    /// `i32`
    I32 = 5,
    /// `f32`
    F32 = 6,
    /// `bool` (one byte, 0 or 1)
    Bool = 7,
    /// UTF-8 string
    String = 8,
    /// array of one element type
    Array = 9,
    /// `u64`
    U64 = 10,
    /// `i64`
    I64 = 11,
    /// `f64`
    F64 = 12,
}

impl ValueType {
    /// The value type with GGUF id `id`, if any.
    pub fn from_id(id: u32) -> Option<Self> {
        use ValueType::*;
        [U8, I8, U16, I16, U32, I32, F32, Bool, String, Array, U64, I64, F64].get(id as usize).copied()
    }

    /// Lower-case name used in error messages.
    pub fn name(self) -> &'static str {
        match self {
            ValueType::U8 => "u8",
            ValueType::I8 => "i8",
            ValueType::U16 => "u16",
            ValueType::I16 => "i16",
            ValueType::U32 => "u32",
            ValueType::I32 => "i32",
            ValueType::F32 => "f32",
            ValueType::Bool => "bool",
            ValueType::String => "string",
            ValueType::Array => "array",
            ValueType::U64 => "u64",
            ValueType::I64 => "i64",
            ValueType::F64 => "f64",
        }
    }

    /// The fewest bytes one value of this type occupies; bounds element counts before
    /// allocating (a string is at least its length field, an array its type and count).
    fn min_size(self) -> u64 {
        match self {
            ValueType::U8 | ValueType::I8 | ValueType::Bool => 1,
            ValueType::U16 | ValueType::I16 => 2,
            ValueType::U32 | ValueType::I32 | ValueType::F32 => 4,
            ValueType::U64 | ValueType::I64 | ValueType::F64 | ValueType::String => 8,
            ValueType::Array => 12,
        }
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum MetadataValue {
    /// `u8`
    U8(u8),
    /// `i8`
    I8(i8),
    /// `u16`
    U16(u16),
    /// `i16`
    I16(i16),
    /// `u32`
    U32(u32),
    /// `i32`
    I32(i32),
    /// `f32`
    F32(f32),
    /// `bool`
    Bool(bool),
    /// UTF-8 string
    String(String),
    /// array
    Array(MetadataArray),
    /// `u64`
    U64(u64),
    /// `i64`
    I64(i64),
    /// `f64`
    F64(f64),
}

/// A metadata array, stored by element type so that e.g. a vocabulary is a `Vec<String>`.
#[derive(Debug, Clone, PartialEq)]
pub enum MetadataArray {
    /// `u8` elements
    U8(Vec<u8>),
    /// `i8` elements
    I8(Vec<i8>),
    /// `u16` elements
    U16(Vec<u16>),
    /// `i16` elements
    I16(Vec<i16>),
    /// `u32` elements
    U32(Vec<u32>),
    /// `i32` elements
    I32(Vec<i32>),
    /// `f32` elements
    F32(Vec<f32>),
    /// `bool` elements
    Bool(Vec<bool>),
    /// string elements
    String(Vec<String>),
    /// nested arrays (each may have its own element type)
    Array(Vec<MetadataArray>),
    /// `u64` elements
    U64(Vec<u64>),
    /// `i64` elements
    I64(Vec<i64>),
    /// `f64` elements
    F64(Vec<f64>),
}

impl MetadataValue {
    /// The value's type.
    pub fn value_type(&self) -> ValueType {
        match self {
            MetadataValue::U8(_) => ValueType::U8,
            MetadataValue::I8(_) => ValueType::I8,
            MetadataValue::U16(_) => ValueType::U16,
            MetadataValue::I16(_) => ValueType::I16,
            MetadataValue::U32(_) => ValueType::U32,
            MetadataValue::I32(_) => ValueType::I32,
            MetadataValue::F32(_) => ValueType::F32,
            MetadataValue::Bool(_) => ValueType::Bool,
            MetadataValue::String(_) => ValueType::String,
            MetadataValue::Array(_) => ValueType::Array,
            MetadataValue::U64(_) => ValueType::U64,
            MetadataValue::I64(_) => ValueType::I64,
            MetadataValue::F64(_) => ValueType::F64,
        }
    }

    /// A description for error messages, e.g. `u32` or `array of string`.
    pub fn type_description(&self) -> String {
        match self {
            MetadataValue::Array(a) => a.type_description(),
            other => other.value_type().name().to_string(),
        }
    }

    /// The value as an unsigned integer if it is an integer of any width and not negative.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetadataValue::U8(v) => Some(v.into()),
            MetadataValue::U16(v) => Some(v.into()),
            MetadataValue::U32(v) => Some(v.into()),
            MetadataValue::U64(v) => Some(v),
            MetadataValue::I8(v) => u64::try_from(v).ok(),
            MetadataValue::I16(v) => u64::try_from(v).ok(),
            MetadataValue::I32(v) => u64::try_from(v).ok(),
            MetadataValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }
}

impl MetadataArray {
    /// The element type.
    pub fn elem_type(&self) -> ValueType {
        match self {
            MetadataArray::U8(_) => ValueType::U8,
            MetadataArray::I8(_) => ValueType::I8,
            MetadataArray::U16(_) => ValueType::U16,
            MetadataArray::I16(_) => ValueType::I16,
            MetadataArray::U32(_) => ValueType::U32,
            MetadataArray::I32(_) => ValueType::I32,
            MetadataArray::F32(_) => ValueType::F32,
            MetadataArray::Bool(_) => ValueType::Bool,
            MetadataArray::String(_) => ValueType::String,
            MetadataArray::Array(_) => ValueType::Array,
            MetadataArray::U64(_) => ValueType::U64,
            MetadataArray::I64(_) => ValueType::I64,
            MetadataArray::F64(_) => ValueType::F64,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            MetadataArray::U8(v) => v.len(),
            MetadataArray::I8(v) => v.len(),
            MetadataArray::U16(v) => v.len(),
            MetadataArray::I16(v) => v.len(),
            MetadataArray::U32(v) => v.len(),
            MetadataArray::I32(v) => v.len(),
            MetadataArray::F32(v) => v.len(),
            MetadataArray::Bool(v) => v.len(),
            MetadataArray::String(v) => v.len(),
            MetadataArray::Array(v) => v.len(),
            MetadataArray::U64(v) => v.len(),
            MetadataArray::I64(v) => v.len(),
            MetadataArray::F64(v) => v.len(),
        }
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A description for error messages, e.g. `array of string`.
    pub fn type_description(&self) -> String {
        format!("array of {}", self.elem_type())
    }
}

/// One tensor's description from the tensor-info table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// The tensor's name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Dimensions in ggml order: `dims[0]` varies fastest (the row length).
    pub dims: Vec<u64>,
    /// Element type.
    pub ty: GgmlType,
    /// Offset of the data relative to the start of the data section.
    pub offset: u64,
    /// Number of elements (product of `dims`; 1 for a scalar with no dims).
    pub n_elements: u64,
    /// Bytes of data.
    pub n_bytes: u64,
}

impl TensorInfo {
    /// Elements per row (`dims[0]`, or 1 for a scalar).
    pub fn row_len(&self) -> u64 {
        self.dims.first().copied().unwrap_or(1)
    }

    /// Number of rows (product of `dims[1..]`; 0 if the tensor has no elements).
    pub fn n_rows(&self) -> u64 {
        self.n_elements.checked_div(self.row_len()).unwrap_or(0)
    }
}

/// Where the file's bytes live.
enum Bytes {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

/// A parsed GGUF file: metadata and tensor infos decoded, tensor data left in place.
pub struct GgufFile {
    bytes: Bytes,
    version: u32,
    metadata: Vec<(String, MetadataValue)>,
    metadata_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    alignment: u64,
    data_offset: u64,
}

impl fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GgufFile")
            .field("len", &self.bytes.len())
            .field("version", &self.version)
            .field("metadata_keys", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .field("alignment", &self.alignment)
            .field("data_offset", &self.data_offset)
            .finish()
    }
}

/// A tensor's description and its data bytes.
#[derive(Debug, Clone, Copy)]
pub struct Tensor<'a> {
    info: &'a TensorInfo,
    data: &'a [u8],
}

impl<'a> Tensor<'a> {
    /// Name, shape, type, offsets.
    pub fn info(&self) -> &'a TensorInfo {
        self.info
    }

    /// Exactly `info().n_bytes` bytes of (possibly quantized) data, in ggml block layout.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// The whole tensor as `f32`, in ggml element order.
    pub fn dequantize(&self) -> Result<Vec<f32>> {
        self.dequantize_rows(0..self.info.n_rows())
    }

    /// Rows `rows` (each `dims[0]` elements) as `f32`; e.g. embedding lookups.
    pub fn dequantize_rows(&self, rows: Range<u64>) -> Result<Vec<f32>> {
        let info = self.info;
        if rows.start > rows.end || rows.end > info.n_rows() {
            return Err(GgufError::RowsOutOfRange {
                name: info.name.clone(),
                start: rows.start,
                end: rows.end,
                rows: info.n_rows(),
            });
        }
        let fail = |source| GgufError::Dequantize { name: info.name.clone(), source };
        // Parsing proved a row is whole blocks and the tensor fits the file, so none of this
        // fails for a parsed file; it stays checked rather than trusted.
        let row_bytes = info.ty.byte_size(info.row_len()).map_err(fail)?;
        let n_elements = (rows.end - rows.start) * info.row_len();
        let overflow = || fail(QuantError::Overflow { ty: info.ty, n_elements });
        let byte_range = |row: u64| row.checked_mul(row_bytes).and_then(|b| usize::try_from(b).ok());
        let (start, end) = byte_range(rows.start).zip(byte_range(rows.end)).ok_or_else(overflow)?;
        let bytes = self.data.get(start..end).ok_or_else(overflow)?;
        let n = usize::try_from(n_elements).map_err(|_| overflow())?;
        quant::dequantize(info.ty, bytes, n).map_err(fail)
    }
}

impl GgufFile {
    /// Memory-maps and parses the file at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let io = |source| GgufError::Io { path: path.to_owned(), source };
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: the map is read-only and private to this value; like every mmap reader we
        // rely on the file not being truncated or rewritten while it is open.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        Self::parse_bytes(Bytes::Mapped(map))
    }

    /// Parses a GGUF file held in memory.
    pub fn parse(bytes: impl Into<Vec<u8>>) -> Result<Self> {
        Self::parse_bytes(Bytes::Owned(bytes.into()))
    }

    fn parse_bytes(bytes: Bytes) -> Result<Self> {
        let header = parse_header(&bytes)?;
        Ok(GgufFile {
            bytes,
            version: header.version,
            metadata: header.metadata,
            metadata_index: header.metadata_index,
            tensors: header.tensors,
            tensor_index: header.tensor_index,
            alignment: header.alignment,
            data_offset: header.data_offset,
        })
    }

    /// The format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The data alignment (`general.alignment` or 32).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute file offset of the data section (may equal or exceed the file length when
    /// there are no tensors).
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// The whole file's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// All metadata key/value pairs, in file order.
    pub fn metadata(&self) -> impl ExactSizeIterator<Item = (&str, &MetadataValue)> {
        self.metadata.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&MetadataValue> {
        self.metadata_index.get(key).map(|&i| &self.metadata[i].1)
    }

    fn require(&self, key: &str) -> Result<&MetadataValue> {
        self.get(key).ok_or_else(|| GgufError::MissingKey { key: key.to_string() })
    }

    fn wrong_type(key: &str, expected: &str, actual: &MetadataValue) -> GgufError {
        GgufError::WrongType { key: key.to_string(), expected: expected.to_string(), actual: actual.type_description() }
    }

    /// The value of `key` as an unsigned integer, accepting any integer width (model
    /// writers differ on u32 vs u64 for counts); errors if negative or not an integer.
    pub fn get_uint(&self, key: &str) -> Result<u64> {
        let value = self.require(key)?;
        value.as_u64().ok_or_else(|| Self::wrong_type(key, "non-negative integer", value))
    }

    /// The value of `key` as an array of any element type.
    pub fn get_array(&self, key: &str) -> Result<&MetadataArray> {
        match self.require(key)? {
            MetadataValue::Array(a) => Ok(a),
            other => Err(Self::wrong_type(key, "array", other)),
        }
    }

    /// The value of `key`, which must be a string.
    pub fn get_str(&self, key: &str) -> Result<&str> {
        match self.require(key)? {
            MetadataValue::String(s) => Ok(s),
            other => Err(Self::wrong_type(key, "string", other)),
        }
    }

    /// The elements of `key`, which must be an array of strings.
    pub fn get_str_array(&self, key: &str) -> Result<&[String]> {
        match self.get_array(key)? {
            MetadataArray::String(v) => Ok(v),
            other => Err(GgufError::WrongType {
                key: key.to_string(),
                expected: "array of string".to_string(),
                actual: other.type_description(),
            }),
        }
    }
}

/// Generates a typed scalar getter and a typed array getter per value type.
macro_rules! typed_getters {
    ($($variant:ident, $ty:ty, $get:ident, $get_array:ident;)*) => {
        impl GgufFile {
            $(
                #[doc = concat!("The value of `key`, which must be a `", stringify!($ty), "`.")]
                pub fn $get(&self, key: &str) -> Result<$ty> {
                    match self.require(key)? {
                        MetadataValue::$variant(v) => Ok(*v),
                        other => Err(Self::wrong_type(key, ValueType::$variant.name(), other)),
                    }
                }

                #[doc = concat!("The elements of `key`, which must be an array of `", stringify!($ty), "`.")]
                pub fn $get_array(&self, key: &str) -> Result<&[$ty]> {
                    match self.get_array(key)? {
                        MetadataArray::$variant(v) => Ok(v),
                        other => Err(GgufError::WrongType {
                            key: key.to_string(),
                            expected: format!("array of {}", ValueType::$variant),
                            actual: other.type_description(),
                        }),
                    }
                }
            )*
        }
    };
}

typed_getters! {
    U8, u8, get_u8, get_u8_array;
    I8, i8, get_i8, get_i8_array;
    U16, u16, get_u16, get_u16_array;
    I16, i16, get_i16, get_i16_array;
    U32, u32, get_u32, get_u32_array;
    I32, i32, get_i32, get_i32_array;
    F32, f32, get_f32, get_f32_array;
    Bool, bool, get_bool, get_bool_array;
    U64, u64, get_u64, get_u64_array;
    I64, i64, get_i64, get_i64_array;
    F64, f64, get_f64, get_f64_array;
}

impl GgufFile {
    /// All tensor infos, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The info of tensor `name`, if present.
    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// Tensor `name` with its data bytes.
    pub fn tensor(&self, name: &str) -> Result<Tensor<'_>> {
        let info = self.tensor_info(name).ok_or_else(|| GgufError::MissingTensor { name: name.to_string() })?;
        // Parsing checked that this range lies inside the file.
        let start = (self.data_offset + info.offset) as usize;
        Ok(Tensor { info, data: &self.bytes[start..start + info.n_bytes as usize] })
    }
}

/// Most entries reserved up front for a count read from the file.
const PREALLOC_LIMIT: u64 = 4096;

/// Everything decoded from the bytes before the data section.
struct Header {
    version: u32,
    metadata: Vec<(String, MetadataValue)>,
    metadata_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    alignment: u64,
    data_offset: u64,
}

fn parse_header(bytes: &[u8]) -> Result<Header> {
    let mut r = Reader { bytes, pos: 0 };
    let magic: [u8; 4] = r.take(4, "magic")?.try_into().expect("4 bytes");
    if magic != GGUF_MAGIC {
        return Err(GgufError::BadMagic { found: magic });
    }
    let version = r.u32("version")?;
    if !matches!(version, 2 | 3) {
        if matches!(version.swap_bytes(), 2 | 3) {
            return Err(GgufError::BigEndian { version: version.swap_bytes() });
        }
        return Err(GgufError::UnsupportedVersion { version });
    }
    let tensor_count = r.u64("tensor count")?;
    let kv_count = r.u64("metadata key/value count")?;
    // A key/value is at least an empty key (8), a type (4) and a one-byte value; a tensor
    // info at least an empty name (8), n_dims (4), type (4) and offset (8).
    r.check_count(kv_count, 13, "metadata key/value count", 8)?;
    r.check_count(tensor_count, 24, "tensor count", 16)?;

    // Counts are bounded by the file size but not tightly, so preallocate modestly.
    let mut metadata = Vec::with_capacity(kv_count.min(PREALLOC_LIMIT) as usize);
    let mut metadata_index = HashMap::with_capacity(kv_count.min(PREALLOC_LIMIT) as usize);
    for _ in 0..kv_count {
        let entry_offset = r.offset();
        let key = r.string("metadata key")?;
        let type_offset = r.offset();
        let type_id = r.u32("metadata value type")?;
        let ty = ValueType::from_id(type_id).ok_or_else(|| GgufError::UnknownValueType {
            key: key.clone(),
            type_id,
            offset: type_offset,
        })?;
        let value = r.value(ty, &key, 0)?;
        if metadata_index.insert(key.clone(), metadata.len()).is_some() {
            return Err(GgufError::DuplicateKey { key, offset: entry_offset });
        }
        metadata.push((key, value));
    }

    let alignment = match metadata_index.get(ALIGNMENT_KEY).map(|&i| &metadata[i].1) {
        None => DEFAULT_ALIGNMENT,
        Some(MetadataValue::U32(a)) if a.is_power_of_two() => u64::from(*a),
        Some(MetadataValue::U32(a)) => return Err(GgufError::BadAlignment { value: u64::from(*a) }),
        Some(other) => {
            return Err(GgufError::WrongType {
                key: ALIGNMENT_KEY.to_string(),
                expected: "u32".to_string(),
                actual: other.type_description(),
            })
        }
    };

    let mut infos = Vec::with_capacity(tensor_count.min(PREALLOC_LIMIT) as usize);
    for _ in 0..tensor_count {
        infos.push(r.tensor_info()?);
    }

    let header_end = r.offset();
    let data_offset = header_end.div_ceil(alignment) * alignment;
    let len = bytes.len() as u64;
    let mut tensors = Vec::with_capacity(infos.len());
    let mut tensor_index = HashMap::with_capacity(infos.len());
    for raw in infos {
        let info_offset = raw.info_offset;
        let info = validate_tensor(raw, alignment, data_offset, len)?;
        if tensor_index.insert(info.name.clone(), tensors.len()).is_some() {
            return Err(GgufError::DuplicateTensor { name: info.name, offset: info_offset });
        }
        tensors.push(info);
    }
    Ok(Header { version, metadata, metadata_index, tensors, tensor_index, alignment, data_offset })
}

/// A tensor info as read, before its type and range are checked.
struct RawTensorInfo {
    name: String,
    info_offset: u64,
    dims: Vec<u64>,
    type_id: u32,
    offset: u64,
}

fn validate_tensor(raw: RawTensorInfo, alignment: u64, data_offset: u64, len: u64) -> Result<TensorInfo> {
    let RawTensorInfo { name, info_offset, dims, type_id, offset } = raw;
    let ty = GgmlType::from_id(type_id).map_err(|source| GgufError::TensorType {
        name: name.clone(),
        offset: info_offset,
        source,
    })?;
    let overflow = || GgufError::TensorOverflow { name: name.clone(), offset: info_offset, dims: dims.clone() };
    let n_elements = dims.iter().try_fold(1u64, |n, &d| n.checked_mul(d)).ok_or_else(overflow)?;
    // Rows are dequantized independently, so each must be whole blocks (ggml requires it).
    let row_len = dims.first().copied().unwrap_or(1);
    let row_bytes = ty.byte_size(row_len).map_err(|source| match source {
        QuantError::Overflow { .. } => overflow(),
        source => GgufError::TensorType { name: name.clone(), offset: info_offset, source },
    })?;
    let n_rows = n_elements.checked_div(row_len).unwrap_or(0);
    let n_bytes = n_rows.checked_mul(row_bytes).ok_or_else(overflow)?;
    if offset % alignment != 0 {
        return Err(GgufError::Misaligned { name, data_offset: offset, alignment });
    }
    let start = data_offset.checked_add(offset).ok_or_else(overflow)?;
    let end = start.checked_add(n_bytes).ok_or_else(overflow)?;
    if end > len {
        return Err(GgufError::OutOfBounds { name, start, end, len });
    }
    Ok(TensorInfo { name, dims, ty, offset, n_elements, n_bytes })
}

/// A bounds-checked little-endian cursor over the header bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn offset(&self) -> u64 {
        self.pos as u64
    }

    fn remaining(&self) -> u64 {
        (self.bytes.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(GgufError::Truncated {
                what: what.to_string(),
                offset: self.offset(),
                needed: n,
                len: self.bytes.len() as u64,
            });
        }
        let start = self.pos;
        self.pos += n as usize;
        Ok(&self.bytes[start..self.pos])
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        Ok(self.take(N as u64, what)?.try_into().expect("N bytes"))
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// Errors if `count` items of at least `min_size` bytes cannot fit in what remains.
    /// `back` is how far before the current position the count was stored.
    fn check_count(&self, count: u64, min_size: u64, what: &str, back: u64) -> Result<()> {
        match count.checked_mul(min_size) {
            Some(bytes) if bytes <= self.remaining() => Ok(()),
            _ => Err(GgufError::CountTooLarge {
                what: what.to_string(),
                offset: self.offset() - back,
                count,
                remaining: self.remaining(),
            }),
        }
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let len = self.u64(what)?;
        let start = self.offset();
        let raw = self.take(len, what)?;
        String::from_utf8(raw.to_vec()).map_err(|_| GgufError::InvalidUtf8 { what: what.to_string(), offset: start })
    }

    fn value(&mut self, ty: ValueType, key: &str, depth: usize) -> Result<MetadataValue> {
        let what = &format!("value of metadata key `{key}`");
        Ok(match ty {
            ValueType::U8 => MetadataValue::U8(self.array::<1>(what)?[0]),
            ValueType::I8 => MetadataValue::I8(self.array::<1>(what)?[0] as i8),
            ValueType::U16 => MetadataValue::U16(u16::from_le_bytes(self.array(what)?)),
            ValueType::I16 => MetadataValue::I16(i16::from_le_bytes(self.array(what)?)),
            ValueType::U32 => MetadataValue::U32(u32::from_le_bytes(self.array(what)?)),
            ValueType::I32 => MetadataValue::I32(i32::from_le_bytes(self.array(what)?)),
            ValueType::F32 => MetadataValue::F32(f32::from_le_bytes(self.array(what)?)),
            ValueType::Bool => MetadataValue::Bool(self.bool(key, what)?),
            ValueType::String => MetadataValue::String(self.string(what)?),
            ValueType::Array => MetadataValue::Array(self.array_value(key, depth)?),
            ValueType::U64 => MetadataValue::U64(u64::from_le_bytes(self.array(what)?)),
            ValueType::I64 => MetadataValue::I64(i64::from_le_bytes(self.array(what)?)),
            ValueType::F64 => MetadataValue::F64(f64::from_le_bytes(self.array(what)?)),
        })
    }

    fn bool(&mut self, key: &str, what: &str) -> Result<bool> {
        let offset = self.offset();
        match self.array::<1>(what)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(GgufError::InvalidBool { key: key.to_string(), value, offset }),
        }
    }

    fn array_value(&mut self, key: &str, depth: usize) -> Result<MetadataArray> {
        let start = self.offset();
        if depth >= MAX_ARRAY_DEPTH {
            return Err(GgufError::NestingTooDeep { key: key.to_string(), offset: start });
        }
        let type_id = self.u32(&format!("array element type of metadata key `{key}`"))?;
        let ty = ValueType::from_id(type_id).ok_or_else(|| GgufError::UnknownValueType {
            key: key.to_string(),
            type_id,
            offset: start,
        })?;
        let count_what = format!("array element count of metadata key `{key}`");
        let count = self.u64(&count_what)?;
        self.check_count(count, ty.min_size(), &count_what, 8)?;
        let what = &format!("elements of metadata key `{key}`");
        let n = count as usize;
        // Plain numbers: decode fixed-size chunks of one slice; the count check above
        // already proved the bytes exist for these.
        macro_rules! numbers {
            ($variant:ident, $t:ty) => {{
                const SIZE: usize = std::mem::size_of::<$t>();
                let raw = self.take((n * SIZE) as u64, what)?;
                MetadataArray::$variant(
                    raw.chunks_exact(SIZE).map(|c| <$t>::from_le_bytes(c.try_into().expect("SIZE bytes"))).collect(),
                )
            }};
        }
        Ok(match ty {
            ValueType::U8 => numbers!(U8, u8),
            ValueType::I8 => numbers!(I8, i8),
            ValueType::U16 => numbers!(U16, u16),
            ValueType::I16 => numbers!(I16, i16),
            ValueType::U32 => numbers!(U32, u32),
            ValueType::I32 => numbers!(I32, i32),
            ValueType::F32 => numbers!(F32, f32),
            ValueType::U64 => numbers!(U64, u64),
            ValueType::I64 => numbers!(I64, i64),
            ValueType::F64 => numbers!(F64, f64),
            ValueType::Bool => MetadataArray::Bool((0..n).map(|_| self.bool(key, what)).collect::<Result<_>>()?),
            ValueType::String => MetadataArray::String((0..n).map(|_| self.string(what)).collect::<Result<_>>()?),
            ValueType::Array => {
                MetadataArray::Array((0..n).map(|_| self.array_value(key, depth + 1)).collect::<Result<_>>()?)
            }
        })
    }

    fn tensor_info(&mut self) -> Result<RawTensorInfo> {
        let info_offset = self.offset();
        let name = self.string("tensor name")?;
        let what = |field: &str| format!("{field} of tensor `{name}`");
        let n_dims = self.u32(&what("n_dims"))?;
        if n_dims as usize > MAX_DIMS {
            return Err(GgufError::TooManyDims { name, offset: info_offset, n_dims });
        }
        let dims = (0..n_dims).map(|_| self.u64(&what("dimension"))).collect::<Result<Vec<_>>>()?;
        let type_id = self.u32(&what("type"))?;
        let offset = self.u64(&what("data offset"))?;
        Ok(RawTensorInfo { name, info_offset, dims, type_id, offset })
    }
}
