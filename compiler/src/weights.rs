//! Where `max.weight` data comes from: `.safetensors` files, in-memory arrays given to the
//! Graph API, or a seeded initializer named on the op.

use crate::error::CompileError;
use max_dialects::{DType, WeightInit};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Weight data by name.
#[derive(Debug, Default, Clone)]
pub struct WeightStore {
    tensors: BTreeMap<String, WeightData>,
    /// Files read, for depfiles.
    pub files: Vec<PathBuf>,
    /// Fill weights that have no data with zeros instead of failing (for `maxc opt` and
    /// `--emit` of IR stages, where the data does not matter).
    pub zeros_for_missing: bool,
}

/// One weight tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightData {
    pub dtype: DType,
    pub shape: Vec<i64>,
    pub bytes: Vec<u8>,
    /// Where it came from, for error messages.
    pub origin: String,
}

fn st_dtype(d: safetensors::Dtype) -> Option<DType> {
    Some(match d {
        safetensors::Dtype::F32 => DType::F32,
        safetensors::Dtype::F16 => DType::F16,
        safetensors::Dtype::BF16 => DType::BF16,
        safetensors::Dtype::I32 => DType::I32,
        safetensors::Dtype::I64 => DType::I64,
        safetensors::Dtype::I8 => DType::I8,
        _ => return None,
    })
}

impl WeightStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds every tensor of a `.safetensors` file (later files override earlier names).
    pub fn add_safetensors(&mut self, path: &Path) -> Result<(), CompileError> {
        let bytes = std::fs::read(path).map_err(|e| CompileError::Io { what: format!("reading weights {}", path.display()), cause: e })?;
        let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| CompileError::Weights(format!("{}: {e}", path.display())))?;
        for (name, view) in st.tensors() {
            let dtype = st_dtype(view.dtype())
                .ok_or_else(|| CompileError::Weights(format!("{}: tensor '{name}' has unsupported dtype {:?}", path.display(), view.dtype())))?;
            self.tensors.insert(
                name.clone(),
                WeightData {
                    dtype,
                    shape: view.shape().iter().map(|d| *d as i64).collect(),
                    bytes: view.data().to_vec(),
                    origin: path.display().to_string(),
                },
            );
        }
        self.files.push(path.to_path_buf());
        Ok(())
    }

    /// Adds an in-memory tensor.
    pub fn insert(&mut self, name: impl Into<String>, data: WeightData) {
        self.tensors.insert(name.into(), data);
    }

    /// Looks a weight up by name.
    pub fn get(&self, name: &str) -> Option<&WeightData> {
        self.tensors.get(name)
    }

    /// Whether no tensors are stored.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }
}

/// SplitMix64: a tiny, well-known generator whose output is stable forever, so a seeded
/// initializer gives the same weights on every machine and compiler version.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Generates `n` values of the initializer: normal(0, scale) by Box-Muller, or
/// uniform(-scale, scale).
pub fn generate(init: &WeightInit, n: usize) -> Vec<f64> {
    let mut rng = SplitMix64(init.seed);
    let mut out = Vec::with_capacity(n);
    if init.distribution == "uniform" {
        for _ in 0..n {
            out.push((rng.next_f64() * 2.0 - 1.0) * init.scale);
        }
    } else {
        while out.len() < n {
            let u1 = rng.next_f64().max(f64::MIN_POSITIVE);
            let u2 = rng.next_f64();
            let r = (-2.0 * u1.ln()).sqrt();
            out.push(r * (2.0 * std::f64::consts::PI * u2).cos() * init.scale);
            if out.len() < n {
                out.push(r * (2.0 * std::f64::consts::PI * u2).sin() * init.scale);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initializers_are_seeded_and_scaled() {
        let init = WeightInit { distribution: "normal".into(), scale: 0.5, seed: 3 };
        let a = generate(&init, 10_000);
        assert_eq!(a, generate(&init, 10_000));
        let mean = a.iter().sum::<f64>() / a.len() as f64;
        let var = a.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / a.len() as f64;
        assert!(mean.abs() < 0.02 && (var.sqrt() - 0.5).abs() < 0.02, "mean {mean} std {}", var.sqrt());
        let u = generate(&WeightInit { distribution: "uniform".into(), scale: 2.0, seed: 1 }, 1000);
        assert!(u.iter().all(|x| x.abs() <= 2.0));
    }
}
