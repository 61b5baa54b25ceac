//! Hugging Face model directories: `config.json`, the weights in one `model.safetensors` or in
//! shards listed by `model.safetensors.index.json`, and `tokenizer.json`.
//!
//! Weights are memory-mapped and read by name, widened to f32 ([`HfDir::f32`]), or as stored
//! when they are bf16/f16 ([`HfDir::half`]: a GPU model keeps its projections in their
//! 16-bit type; quantized models come as GGUF).

use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// What can be wrong with a model directory.
#[derive(Debug, thiserror::Error)]
pub enum HfError {
    #[error("{path}: {why}")]
    File { path: PathBuf, why: String },
    #[error("{dir}: config.json: {why}")]
    Config { dir: PathBuf, why: String },
    #[error("tensor {name}: {why}")]
    Tensor { name: String, why: String },
}

/// A Hugging Face model directory, opened.
pub struct HfDir {
    dir: PathBuf,
    /// `config.json`.
    pub config: serde_json::Value,
    files: Vec<(PathBuf, Mmap)>,
    /// Tensor name -> index into `files`.
    index: HashMap<String, usize>,
}

impl std::fmt::Debug for HfDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HfDir").field("dir", &self.dir).field("tensors", &self.index.len()).finish()
    }
}

/// Whether `path` looks like a Hugging Face model directory (it has a `config.json`).
pub fn is_model_dir(path: &Path) -> bool {
    path.is_dir() && path.join("config.json").is_file()
}

fn read_json(path: &Path) -> Result<serde_json::Value, HfError> {
    let text = std::fs::read_to_string(path).map_err(|e| HfError::File { path: path.to_owned(), why: e.to_string() })?;
    serde_json::from_str(&text).map_err(|e| HfError::File { path: path.to_owned(), why: format!("invalid JSON: {e}") })
}

impl HfDir {
    /// Opens `dir`: reads `config.json` and maps the safetensors files.
    pub fn open(dir: &Path) -> Result<Self, HfError> {
        let config = read_json(&dir.join("config.json"))?;
        let single = dir.join("model.safetensors");
        let index_path = dir.join("model.safetensors.index.json");
        let shards: Vec<PathBuf> = if single.is_file() {
            vec![single]
        } else if index_path.is_file() {
            let index = read_json(&index_path)?;
            let map = index["weight_map"]
                .as_object()
                .ok_or_else(|| HfError::File { path: index_path.clone(), why: "has no `weight_map` object".into() })?;
            let mut names: Vec<&str> = map.values().filter_map(|v| v.as_str()).collect();
            names.sort_unstable();
            names.dedup();
            names.iter().map(|n| dir.join(n)).collect()
        } else {
            return Err(HfError::File { path: dir.to_owned(), why: "has neither model.safetensors nor model.safetensors.index.json".into() });
        };
        let mut files = Vec::new();
        let mut index = HashMap::new();
        for path in shards {
            let file = std::fs::File::open(&path).map_err(|e| HfError::File { path: path.clone(), why: e.to_string() })?;
            // SAFETY: the map is read-only and private; a file changed underneath while the
            // model compiles could give wrong weights, never unsoundness in safe code reading
            // plain bytes.
            let map = unsafe { Mmap::map(&file) }.map_err(|e| HfError::File { path: path.clone(), why: e.to_string() })?;
            let st = SafeTensors::deserialize(&map).map_err(|e| HfError::File { path: path.clone(), why: format!("not a safetensors file: {e}") })?;
            for name in st.names() {
                index.insert(name.to_string(), files.len());
            }
            files.push((path, map));
        }
        Ok(HfDir { dir: dir.to_owned(), config, files, index })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The weight files (for cache keys and depfiles).
    pub fn weight_files(&self) -> impl Iterator<Item = &Path> {
        self.files.iter().map(|(p, _)| p.as_path())
    }

    /// Whether a tensor is present.
    pub fn has(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// A tensor's shape.
    pub fn shape(&self, name: &str) -> Result<Vec<usize>, HfError> {
        Ok(self.view(name, |v| v.shape().to_vec())?.1)
    }

    fn view<T>(&self, name: &str, f: impl FnOnce(&safetensors::tensor::TensorView<'_>) -> T) -> Result<(Dtype, T), HfError> {
        let missing = || HfError::Tensor { name: name.into(), why: format!("missing from the weights in {}", self.dir.display()) };
        let (path, map) = &self.files[*self.index.get(name).ok_or_else(missing)?];
        let st = SafeTensors::deserialize(map).map_err(|e| HfError::File { path: path.clone(), why: e.to_string() })?;
        let view = st.tensor(name).map_err(|_| missing())?;
        Ok((view.dtype(), f(&view)))
    }

    /// A tensor widened to f32, checked against `shape`.
    pub fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, HfError> {
        let (dtype, (got, values)) = self.view(name, |v| {
            let data = v.data();
            let words = |n: usize| data.chunks_exact(n);
            let values: Option<Vec<f32>> = match v.dtype() {
                Dtype::F32 => Some(words(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()),
                Dtype::F16 => Some(words(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect()),
                Dtype::BF16 => Some(words(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect()),
                Dtype::F64 => Some(words(8).map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32).collect()),
                _ => None,
            };
            (v.shape().to_vec(), values)
        })?;
        if got != shape {
            return Err(HfError::Tensor { name: name.into(), why: format!("has shape {got:?}, expected {shape:?}") });
        }
        values.ok_or_else(|| HfError::Tensor { name: name.into(), why: format!("has dtype {dtype:?}; only F32, F16, BF16 and F64 weights are read") })
    }

    /// A bf16 or f16 tensor's dtype and little-endian bytes as stored, checked against
    /// `shape`; `None` for other dtypes (which [`HfDir::f32`] widens).
    #[cfg(feature = "compile")]
    pub fn half(&self, name: &str, shape: &[usize]) -> Result<Option<(max_compiler::DType, Vec<u8>)>, HfError> {
        let (dtype, (got, bytes)) = self.view(name, |v| {
            let half = matches!(v.dtype(), Dtype::BF16 | Dtype::F16);
            (v.shape().to_vec(), half.then(|| v.data().to_vec()))
        })?;
        if got != shape {
            return Err(HfError::Tensor { name: name.into(), why: format!("has shape {got:?}, expected {shape:?}") });
        }
        let dt = if dtype == Dtype::BF16 { max_compiler::DType::BF16 } else { max_compiler::DType::F16 };
        Ok(bytes.map(|b| (dt, b)))
    }

    /// `config.json`'s positive integer `key`.
    pub fn usize(&self, key: &str) -> Result<usize, HfError> {
        self.config[key]
            .as_u64()
            .filter(|&v| v > 0)
            .map(|v| v as usize)
            .ok_or_else(|| HfError::Config { dir: self.dir.clone(), why: format!("`{key}` is missing or not a positive integer") })
    }

    /// `config.json`'s number `key`, or `default` when absent.
    pub fn f64_or(&self, key: &str, default: f64) -> Result<f64, HfError> {
        match &self.config[key] {
            serde_json::Value::Null => Ok(default),
            v => v.as_f64().ok_or_else(|| HfError::Config { dir: self.dir.clone(), why: format!("`{key}` is {v}, expected a number") }),
        }
    }

    /// The architecture `config.json` names (`architectures[0]`, else `model_type`).
    pub fn architecture(&self) -> Option<&str> {
        self.config["architectures"].get(0).and_then(|v| v.as_str()).or_else(|| self.config["model_type"].as_str())
    }

    /// A JSON file of the directory (e.g. `1_Pooling/config.json`), if present.
    pub fn json(&self, rel: &str) -> Result<Option<serde_json::Value>, HfError> {
        let p = self.dir.join(rel);
        if p.is_file() {
            read_json(&p).map(Some)
        } else {
            Ok(None)
        }
    }
}
