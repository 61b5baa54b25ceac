//! Compiling a model into a `.maxa` artifact (needs the `compile` feature, which links the
//! MLIR/LLVM compiler), and the on-disk cache of compiled models.
//!
//! Models come as a GGUF file (Llama family) or a Hugging Face directory with safetensors
//! weights: Llama-family causal LMs, or BERT sentence-embedding models.

use crate::bert::BertConfig;
use crate::chat_template::ChatTemplate;
use crate::embedding::{EmbeddingInfo, EMBEDDING_INFO_VERSION, SECTION_EMBEDDING_CONFIG, SECTION_EMBEDDING_TOKENIZER};
use crate::gguf::GgufFile;
use crate::hf::{is_model_dir, HfDir, HfError};
use crate::llama::{build_graph_with, LlamaConfig, LlamaWeights, ModelError, HF_LLAMA_ARCHITECTURES};
use crate::model_info::{ModelInfo, MODEL_INFO_VERSION, SECTION_CHAT_TEMPLATE, SECTION_CONFIG, SECTION_TOKENIZER};
use crate::tokenizer::Tokenizer;
use max_compiler::gpu::CudaTarget;
use max_compiler::{CompileOptions, Target};
use std::path::{Path, PathBuf};

/// Errors compiling a model.
#[derive(Debug, thiserror::Error)]
pub enum CompileModelError {
    #[error("{path}: {source}")]
    Model { path: String, source: ModelError },
    #[error("{path}: tokenizer: {source}")]
    Tokenizer { path: String, source: crate::tokenizer::TokenizerError },
    #[error("{path}: chat template: {source}")]
    Template { path: String, source: crate::chat_template::ChatTemplateError },
    #[error("compiling {path}: {source}")]
    Compile { path: String, source: max_compiler::CompileError },
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("{path}: {source}")]
    Hf { path: String, source: HfError },
    #[error("{0}")]
    Device(String),
    #[error("{0}: not a model: give a GGUF file (.gguf) or a Hugging Face model directory (with config.json and safetensors weights)")]
    Format(String),
    #[error("{path}: architecture {arch:?} is not supported (supported: Llama-family causal LMs {llama:?}, BERT embedding models {bert:?})")]
    Architecture { path: String, arch: String, llama: &'static [&'static str], bert: &'static [&'static str] },
}

/// Where a compiled model runs: a CPU (with its instruction set), or an NVIDIA GPU (kernels
/// as PTX for the chip; the host code that launches them is baseline x86-64).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelTarget {
    Cpu(Target),
    Cuda(CudaTarget),
}

impl From<Target> for ModelTarget {
    fn from(t: Target) -> Self {
        ModelTarget::Cpu(t)
    }
}

impl ModelTarget {
    /// Parses `host`, `cpu=LEVEL`, a CPU name or `cuda:sm_XX` (as `maxc --target`).
    pub fn parse(s: &str) -> Result<Self, max_compiler::CompileError> {
        if s.starts_with("cuda") {
            return Ok(ModelTarget::Cuda(CudaTarget::parse(s)?));
        }
        Ok(ModelTarget::Cpu(match s {
            "host" | "cpu" | "cpu=host" => Target::host(),
            other => Target::named(other.strip_prefix("cpu=").unwrap_or(other))?,
        }))
    }

    /// The target for running on `device`: this CPU, or the chip of that GPU (Hopper gets
    /// sm_90's warpgroup MMA; chips newer than the backend knows get sm_89's portable PTX,
    /// which their driver compiles).
    pub fn for_device(device: max_runtime::Device) -> Result<Self, CompileModelError> {
        let dev_err = |e: max_runtime::RuntimeError| CompileModelError::Device(e.to_string());
        let Some((major, minor)) = device.compute_capability().map_err(dev_err)? else {
            return Ok(ModelTarget::Cpu(Target::host()));
        };
        let chip = match (major, minor) {
            (9, 0) => "sm_90",
            (8, 9) => "sm_89",
            (8, m) if m >= 6 => "sm_86",
            (8, _) => "sm_80",
            (m, _) if m > 9 => "sm_89",
            _ => return Err(CompileModelError::Device(format!("{device} is sm_{major}{minor}; GPU models need sm_80 (Ampere) or newer"))),
        };
        let mut cuda = CudaTarget::parse(&format!("cuda:{chip}")).map_err(|e| CompileModelError::Device(e.to_string()))?;
        if major > 9 {
            // SASS of an older major version does not run on this GPU: its driver compiles
            // the PTX either way.
            cuda.sass = max_compiler::gpu_sass::Sass::Never;
        }
        Ok(ModelTarget::Cuda(cuda))
    }

    /// Whether an LLM's bf16/f16 weights keep their type: on a GPU, whose 16-bit matmul
    /// kernels read half the bytes of f32 (a decode step is bound by reading the weights);
    /// the CPU's kernels read f32.
    pub fn keeps_half_weights(&self) -> bool {
        matches!(self, ModelTarget::Cuda(_))
    }

    /// The compile options for this target, with nothing else set.
    pub fn options(&self) -> Result<CompileOptions, max_compiler::CompileError> {
        Ok(match self {
            ModelTarget::Cpu(t) => CompileOptions::new(t.clone()),
            ModelTarget::Cuda(c) => {
                let mut o = CompileOptions::new(Target::named("x86-64")?);
                o.cuda = Some(c.clone());
                o
            }
        })
    }
}

/// Compiles a model, a `.gguf` file or a Hugging Face directory, into artifact bytes.
pub fn compile_model(path: &Path, target: impl Into<ModelTarget>) -> Result<Vec<u8>, CompileModelError> {
    let target = target.into();
    if is_model_dir(path) {
        compile_dir(path, target)
    } else if path.extension().and_then(|e| e.to_str()) == Some("gguf") {
        compile_gguf(path, target)
    } else {
        Err(CompileModelError::Format(path.display().to_string()))
    }
}

/// Compiles a Hugging Face model directory: a Llama-family causal LM or a BERT embedding
/// model, by `config.json`'s architecture.
pub fn compile_dir(path: &Path, target: impl Into<ModelTarget>) -> Result<Vec<u8>, CompileModelError> {
    let target = target.into();
    let p = path.display().to_string();
    let dir = HfDir::open(path).map_err(|source| CompileModelError::Hf { path: p.clone(), source })?;
    let arch = dir.architecture().unwrap_or_default().to_string();
    if crate::bert::BERT_ARCHITECTURES.contains(&arch.as_str()) {
        compile_bert(&dir, target)
    } else if HF_LLAMA_ARCHITECTURES.contains(&arch.as_str()) {
        compile_llama_dir(&dir, target)
    } else {
        Err(CompileModelError::Architecture { path: p, arch, llama: HF_LLAMA_ARCHITECTURES, bert: crate::bert::BERT_ARCHITECTURES })
    }
}

fn dir_name(dir: &HfDir) -> String {
    dir.path().canonicalize().ok().and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned())).unwrap_or_default()
}

/// The directory's `tokenizer.json` with any fixed padding and truncation removed (the
/// runtime pads batches itself and refuses over-long inputs rather than cutting them).
fn hf_tokenizer(dir: &HfDir) -> Result<Tokenizer, CompileModelError> {
    let path = dir.path().join("tokenizer.json");
    let tok_err = |source| CompileModelError::Tokenizer { path: dir.path().display().to_string(), source };
    let loaded = Tokenizer::from_file(&path).map_err(tok_err)?;
    let mut inner = loaded.inner().clone();
    inner.with_padding(None);
    inner
        .with_truncation(None)
        .map_err(|e| tok_err(crate::tokenizer::TokenizerError::File { path: path.clone(), message: e.to_string() }))?;
    Ok(Tokenizer::from_parts(inner, loaded.bos_id(), loaded.eos_ids().to_vec()))
}

/// Compiles a BERT sentence-embedding directory (entry `embed`).
fn compile_bert(dir: &HfDir, target: ModelTarget) -> Result<Vec<u8>, CompileModelError> {
    let p = dir.path().display().to_string();
    let hf = |source| CompileModelError::Hf { path: p.clone(), source };
    let cfg = BertConfig::from_dir(dir).map_err(hf)?;
    let tokenizer = hf_tokenizer(dir)?;
    let tok_json = tokenizer.to_json().map_err(|source| CompileModelError::Tokenizer { path: p.clone(), source })?;
    let info = EmbeddingInfo { version: EMBEDDING_INFO_VERSION, source: dir_name(dir), model: cfg.clone() };
    let graph = crate::bert::build_graph(dir, &cfg).map_err(hf)?;
    let mut opts = target.options().map_err(|source| CompileModelError::Compile { path: p.to_string(), source })?;
    opts.weights = graph.weight_store();
    opts.data = vec![
        (SECTION_EMBEDDING_CONFIG.to_string(), serde_json::to_vec_pretty(&info).expect("EmbeddingInfo serializes")),
        (SECTION_EMBEDDING_TOKENIZER.to_string(), tok_json.into_bytes()),
    ];
    max_compiler::graph_api::compile_graph_with(&graph, &opts).map_err(|source| CompileModelError::Compile { path: p, source })
}

/// Compiles a Hugging Face Llama-family directory (entry `forward`, as from a GGUF).
fn compile_llama_dir(dir: &HfDir, target: ModelTarget) -> Result<Vec<u8>, CompileModelError> {
    let p = dir.path().display().to_string();
    let model_err = |source| CompileModelError::Model { path: p.clone(), source };
    let cfg = LlamaConfig::from_hf(dir).map_err(model_err)?;
    let tokenizer = hf_tokenizer(dir)?;
    let template_err = |source| CompileModelError::Template { path: p.clone(), source };
    let source = dir.json("tokenizer_config.json").map_err(|source| CompileModelError::Hf { path: p.clone(), source })?.and_then(|c| match &c["chat_template"] {
        serde_json::Value::String(s) => Some(s.clone()),
        // A list of named templates: the default one.
        serde_json::Value::Array(list) => list.iter().find(|t| t["name"] == "default").and_then(|t| t["template"].as_str()).map(str::to_string),
        _ => None,
    });
    let template = match source {
        Some(src) => ChatTemplate::new(src, tokenizer.bos_token(), tokenizer.eos_token()).map_err(template_err)?,
        None => {
            tracing::warn!("{p} has no chat template; using ChatML");
            ChatTemplate::chatml(tokenizer.bos_token(), tokenizer.eos_token())
        }
    };
    let info = llm_info(dir_name(dir), &cfg, &tokenizer);
    let graph = build_graph_with(LlamaWeights::Hf(dir), &cfg, target.keeps_half_weights()).map_err(model_err)?;
    llm_artifact(&p, graph, &info, &tokenizer, &template, target)
}

/// What a compiled LLM records about itself.
fn llm_info(source: String, cfg: &LlamaConfig, tokenizer: &Tokenizer) -> ModelInfo {
    ModelInfo {
        version: MODEL_INFO_VERSION,
        source,
        model: cfg.clone(),
        cache_dtype: crate::llama::CACHE_DTYPE.to_string(),
        bos: tokenizer.bos_id(),
        eos: tokenizer.eos_ids().to_vec(),
        add_bos: tokenizer.adds_bos(),
        add_eos: tokenizer.adds_eos(),
    }
}

/// Compiles an LLM's `forward` graph with its configuration, tokenizer and chat template.
fn llm_artifact(p: &str, graph: max_compiler::Graph, info: &ModelInfo, tokenizer: &Tokenizer, template: &ChatTemplate, target: ModelTarget) -> Result<Vec<u8>, CompileModelError> {
    let tok_json = tokenizer.to_json().map_err(|source| CompileModelError::Tokenizer { path: p.to_string(), source })?;
    let mut opts = target.options().map_err(|source| CompileModelError::Compile { path: p.to_string(), source })?;
    opts.weights = graph.weight_store();
    opts.data = vec![
        (SECTION_CONFIG.to_string(), serde_json::to_vec_pretty(info).expect("ModelInfo serializes")),
        (SECTION_TOKENIZER.to_string(), tok_json.into_bytes()),
        (SECTION_CHAT_TEMPLATE.to_string(), template.source().as_bytes().to_vec()),
    ];
    max_compiler::graph_api::compile_graph_with(&graph, &opts).map_err(|source| CompileModelError::Compile { path: p.to_string(), source })
}

/// Compiles a GGUF model into artifact bytes: the forward graph, its weights (quantized
/// blocks kept as they are), and the tokenizer, chat template and configuration.
pub fn compile_gguf(path: &Path, target: impl Into<ModelTarget>) -> Result<Vec<u8>, CompileModelError> {
    let target = target.into();
    let p = path.display().to_string();
    let model_err = |source| CompileModelError::Model { path: p.clone(), source };
    let gguf = GgufFile::open(path).map_err(|e| model_err(e.into()))?;
    let cfg = LlamaConfig::from_gguf(&gguf).map_err(model_err)?;
    let tokenizer = Tokenizer::from_gguf(&gguf).map_err(|source| CompileModelError::Tokenizer { path: p.clone(), source })?;
    let template = ChatTemplate::from_gguf(&gguf).map_err(|source| CompileModelError::Template { path: p.clone(), source })?;
    if template.is_fallback() {
        tracing::warn!("{p} has no chat template; using ChatML");
    }
    let info = llm_info(path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(), &cfg, &tokenizer);
    let graph = build_graph_with(LlamaWeights::Gguf(&gguf), &cfg, target.keeps_half_weights()).map_err(model_err)?;
    llm_artifact(&p, graph, &info, &tokenizer, &template, target)
}

/// Where compiled models are cached: `$MAX_CACHE_DIR/compiled` (default `~/.cache/max`).
pub fn cache_dir() -> PathBuf {
    let base = std::env::var_os("MAX_CACHE_DIR").map(PathBuf::from).unwrap_or_else(|| {
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
        home.join(".cache").join("max")
    });
    base.join("compiled")
}

/// The files of a model whose changes call for a new compile: the file itself, or a
/// directory's JSON files and weights.
pub fn model_files(canonical: &Path) -> std::io::Result<Vec<PathBuf>> {
    if !canonical.is_dir() {
        return Ok(vec![canonical.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(canonical)? {
        let p = entry?.path();
        if matches!(p.extension().and_then(|e| e.to_str()), Some("json" | "safetensors")) {
            files.push(p);
        }
    }
    for sub in ["1_Pooling/config.json"] {
        if canonical.join(sub).is_file() {
            files.push(canonical.join(sub));
        }
    }
    files.sort();
    Ok(files)
}

/// The cache file for `model`: named after the file or directory, keyed by its path, its
/// files' sizes and modification times, the compiler version and build (the running
/// executable's size and time), the artifact and kernel ABI versions, the target and the
/// code-generation knobs set in the environment ([`max_compiler::tuning::KNOBS`]), so a
/// changed model, a new compiler or a changed knob compiles afresh.
pub fn cached_artifact_path(model: &Path, target: &ModelTarget) -> Result<PathBuf, CompileModelError> {
    cache_path_with_knobs(model, target, &max_compiler::tuning::env_stamp())
}

/// [`cached_artifact_path`] with the knobs' stamp given.
fn cache_path_with_knobs(model: &Path, target: &ModelTarget, knobs: &str) -> Result<PathBuf, CompileModelError> {
    let io = |source| CompileModelError::Io { what: format!("reading {}", model.display()), source };
    let canonical = model.canonicalize().map_err(io)?;
    let mut stamp = String::new();
    for f in model_files(&canonical).map_err(io)? {
        let meta = std::fs::metadata(&f).map_err(io)?;
        let mtime = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_nanos()).unwrap_or(0);
        stamp.push_str(&format!("{}:{}:{mtime};", f.display(), meta.len()));
    }
    // The compiler build: a rebuilt compiler (same version, new code) compiles afresh.
    let build = std::env::current_exe()
        .and_then(std::fs::metadata)
        .map(|m| format!("{}:{:?}", m.len(), m.modified().ok()))
        .unwrap_or_default();
    let key = format!(
        "{}|{stamp}|{}|{build}|{}|{}|{:?}|{}",
        canonical.display(),
        env!("CARGO_PKG_VERSION"),
        max_runtime::artifact::FORMAT_VERSION,
        max_runtime::artifact::KERNEL_ABI_VERSION,
        target,
        knobs
    );
    let stem = canonical.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into());
    Ok(cache_dir().join(format!("{stem}-{:08x}.maxa", crc32fast::hash(key.as_bytes()))))
}

/// Whether `path` is a model to compile (a `.gguf` or a Hugging Face directory) rather than
/// a compiled artifact.
pub fn is_model_file(path: &Path) -> bool {
    is_model_dir(path) || path.extension().and_then(|e| e.to_str()) == Some("gguf")
}

/// Compiles `model` unless the cache already holds it; returns the artifact's path.
/// `on_compile` is called before a compile starts (to show progress).
pub fn compile_cached(model: &Path, target: impl Into<ModelTarget>, on_compile: impl FnOnce(&Path)) -> Result<PathBuf, CompileModelError> {
    if !is_model_file(model) {
        return Err(CompileModelError::Format(model.display().to_string()));
    }
    let target = target.into();
    let out = cached_artifact_path(model, &target)?;
    if out.is_file() {
        return Ok(out);
    }
    on_compile(&out);
    let bytes = compile_model(model, target)?;
    let dir = out.parent().expect("cache path has a parent");
    let io = |what: String| move |source| CompileModelError::Io { what, source };
    std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    // Written next to its final name and renamed, so a concurrent reader never sees half.
    let tmp = dir.join(format!(".{}.{}.tmp", out.file_name().unwrap().to_string_lossy(), std::process::id()));
    std::fs::write(&tmp, &bytes).map_err(io(format!("writing {}", tmp.display())))?;
    std::fs::rename(&tmp, &out).map_err(io(format!("renaming {} to {}", tmp.display(), out.display())))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A code-generation knob set in the environment names another cache file, so an
    /// artifact compiled without it is not reused.
    #[test]
    fn cache_key_follows_tuning_knobs() {
        let dir = std::env::temp_dir().join(format!("max-cache-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let model = dir.join("m.gguf");
        std::fs::write(&model, b"GGUF").unwrap();
        let target = ModelTarget::Cpu(Target::host());
        let path = |knobs: &str| cache_path_with_knobs(&model, &target, knobs).unwrap();
        assert_eq!(path(""), path(""));
        assert_ne!(path(""), path("MAX_ZERO_SKIP=0;"));
        assert_ne!(path("MAX_ZERO_SKIP=0;"), path("MAX_ZERO_SKIP=1;"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
