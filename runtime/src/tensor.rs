//! Host tensors: dtype, shape and 64-byte aligned data.

use crate::artifact::AlignedBytes;
use crate::error::RuntimeError;
use max_dialects::DType;

/// A dense, row-major host tensor.
pub struct Tensor {
    dtype: DType,
    shape: Vec<usize>,
    data: AlignedBytes,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({}, {:?})", self.dtype, self.shape)
    }
}

impl Clone for Tensor {
    fn clone(&self) -> Self {
        Tensor { dtype: self.dtype, shape: self.shape.clone(), data: AlignedBytes::from_slice(self.data.as_slice()) }
    }
}

/// Rust scalar types that map to a tensor dtype.
pub trait Element: Copy + 'static {
    const DTYPE: DType;
    fn to_le(self, out: &mut Vec<u8>);
    fn from_le(b: &[u8]) -> Self;
}

macro_rules! element {
    ($t:ty, $d:expr) => {
        impl Element for $t {
            const DTYPE: DType = $d;
            fn to_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn from_le(b: &[u8]) -> Self {
                <$t>::from_le_bytes(b.try_into().unwrap())
            }
        }
    };
}
element!(f32, DType::F32);
element!(i32, DType::I32);
element!(i64, DType::I64);
element!(i8, DType::I8);
element!(half::f16, DType::F16);
element!(half::bf16, DType::BF16);

impl Tensor {
    /// A zero-filled tensor.
    pub fn zeros(dtype: DType, shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        Tensor { dtype, shape: shape.to_vec(), data: AlignedBytes::zeroed(n * dtype.size_bytes()) }
    }

    /// A tensor from little-endian bytes; the length must match the shape.
    pub fn from_bytes(dtype: DType, shape: &[usize], bytes: &[u8]) -> Result<Tensor, RuntimeError> {
        let expected = shape.iter().product::<usize>() * dtype.size_bytes();
        if bytes.len() != expected {
            return Err(RuntimeError::TensorSize { shape: shape.to_vec(), dtype, expected, got: bytes.len() });
        }
        Ok(Tensor { dtype, shape: shape.to_vec(), data: AlignedBytes::from_slice(bytes) })
    }

    /// A tensor that takes ownership of aligned bytes; the length must match the shape.
    pub fn from_aligned(dtype: DType, shape: &[usize], data: AlignedBytes) -> Result<Tensor, RuntimeError> {
        let expected = shape.iter().product::<usize>() * dtype.size_bytes();
        if data.len() != expected {
            return Err(RuntimeError::TensorSize { shape: shape.to_vec(), dtype, expected, got: data.len() });
        }
        Ok(Tensor { dtype, shape: shape.to_vec(), data })
    }

    /// A tensor from a slice of elements; the length must match the shape.
    pub fn from_slice<T: Element>(shape: &[usize], values: &[T]) -> Result<Tensor, RuntimeError> {
        let mut bytes = Vec::with_capacity(values.len() * T::DTYPE.size_bytes());
        for v in values {
            v.to_le(&mut bytes);
        }
        Tensor::from_bytes(T::DTYPE, shape, &bytes)
    }

    /// The elements as `T`, or `None` if the dtype differs.
    pub fn to_vec<T: Element>(&self) -> Option<Vec<T>> {
        if T::DTYPE != self.dtype {
            return None;
        }
        Some(self.data.as_slice().chunks_exact(self.dtype.size_bytes()).map(T::from_le).collect())
    }

    /// The elements converted to f32 (any dtype).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        let b = self.data.as_slice();
        match self.dtype {
            DType::F32 => self.to_vec::<f32>().unwrap(),
            DType::F16 => b.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            DType::BF16 => b.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            DType::I32 => self.to_vec::<i32>().unwrap().into_iter().map(|v| v as f32).collect(),
            DType::I64 => self.to_vec::<i64>().unwrap().into_iter().map(|v| v as f32).collect(),
            DType::I8 => b.iter().map(|v| *v as i8 as f32).collect(),
        }
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of elements.
    pub fn num_elements(&self) -> usize {
        self.shape.iter().product()
    }

    /// Raw little-endian bytes.
    pub fn bytes(&self) -> &[u8] {
        self.data.as_slice()
    }

    /// Raw bytes, mutably.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        self.data.as_mut_slice()
    }
}
