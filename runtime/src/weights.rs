//! External weights (artifacts compiled with `--external-weights`): read from a .safetensors
//! file by name, or generated (deterministic pseudo-random values) for benchmarks that only
//! need the right shapes.

use crate::artifact::AlignedBytes;
use crate::error::RuntimeError;
use max_dialects::DType;
use std::path::Path;

/// A mapped .safetensors file.
pub struct SafetensorsFile {
    map: memmap2::Mmap,
    origin: String,
}

fn st_dtype(d: DType) -> safetensors::Dtype {
    match d {
        DType::F32 => safetensors::Dtype::F32,
        DType::F16 => safetensors::Dtype::F16,
        DType::BF16 => safetensors::Dtype::BF16,
        DType::I32 => safetensors::Dtype::I32,
        DType::I64 => safetensors::Dtype::I64,
        DType::I8 => safetensors::Dtype::I8,
    }
}

impl SafetensorsFile {
    /// Maps `path` (the header is checked when tensors are read).
    pub fn open(path: &Path) -> Result<SafetensorsFile, RuntimeError> {
        let origin = path.display().to_string();
        let f = std::fs::File::open(path).map_err(|e| RuntimeError::Io { what: format!("opening weights {origin}"), cause: e })?;
        // SAFETY: read-only private mapping; the bytes are only copied out.
        let map = unsafe { memmap2::Mmap::map(&f) }.map_err(|e| RuntimeError::Io { what: format!("mapping weights {origin}"), cause: e })?;
        Ok(SafetensorsFile { map, origin })
    }

    /// A copy of tensor `name`, which must have `dtype` and `shape`.
    pub fn tensor(&self, name: &str, dtype: DType, shape: &[usize]) -> Result<AlignedBytes, RuntimeError> {
        let st = safetensors::SafeTensors::deserialize(&self.map).map_err(|e| RuntimeError::Corrupt { origin: self.origin.clone(), why: e.to_string() })?;
        let t = st.tensor(name).map_err(|_| RuntimeError::Missing { what: format!("weight '{name}' in {} (the artifact's weights are external)", self.origin) })?;
        if t.dtype() != st_dtype(dtype) || t.shape() != shape {
            return Err(RuntimeError::Missing {
                what: format!("weight '{name}' as {dtype} {shape:?} in {} (it has {:?} {:?})", self.origin, t.dtype(), t.shape()),
            });
        }
        Ok(AlignedBytes::from_slice(t.data()))
    }
}

/// `n` values of `dtype`, uniform in [-0.05, 0.05) for floats (small integers otherwise),
/// from a generator seeded by `seed` and the weight's name, filled in parallel chunks.
pub fn random_bytes(dtype: DType, n: usize, seed: u64, name: &str) -> AlignedBytes {
    use rayon::prelude::*;
    let size = dtype.size_bytes();
    let mut out = AlignedBytes::zeroed(n * size);
    let name_hash = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
    const CHUNK: usize = 1 << 16;
    out.as_mut_slice().par_chunks_mut(CHUNK * size).enumerate().for_each(|(c, chunk)| {
        let mut s = (seed ^ name_hash ^ (c as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1;
        for v in chunk.chunks_exact_mut(size) {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let u = ((s >> 40) as f32 / (1u64 << 24) as f32) * 0.1 - 0.05;
            match dtype {
                DType::F32 => v.copy_from_slice(&u.to_le_bytes()),
                DType::F16 => v.copy_from_slice(&half::f16::from_f32(u).to_le_bytes()),
                DType::BF16 => v.copy_from_slice(&half::bf16::from_f32(u).to_le_bytes()),
                DType::I32 => v.copy_from_slice(&((u * 200.0) as i32).to_le_bytes()),
                DType::I64 => v.copy_from_slice(&((u * 200.0) as i64).to_le_bytes()),
                DType::I8 => v[0] = (u * 200.0) as i8 as u8,
            }
        }
    });
    out
}
