//! Compiling a model file into a `.maxa` artifact (needs the `compile` feature, which links
//! the MLIR/LLVM compiler), and the on-disk cache of compiled models.

use crate::chat_template::ChatTemplate;
use crate::gguf::GgufFile;
use crate::llama::{build_graph, LlamaConfig, ModelError};
use crate::model_info::{ModelInfo, MODEL_INFO_VERSION, SECTION_CHAT_TEMPLATE, SECTION_CONFIG, SECTION_TOKENIZER};
use crate::tokenizer::Tokenizer;
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
    #[error("{0}: only GGUF model files (.gguf) can be compiled")]
    Format(String),
}

/// Compiles a GGUF model into artifact bytes: the forward graph, its weights (quantized
/// blocks kept as they are), and the tokenizer, chat template and configuration.
pub fn compile_gguf(path: &Path, target: Target) -> Result<Vec<u8>, CompileModelError> {
    let p = path.display().to_string();
    let model_err = |source| CompileModelError::Model { path: p.clone(), source };
    let gguf = GgufFile::open(path).map_err(|e| model_err(e.into()))?;
    let cfg = LlamaConfig::from_gguf(&gguf).map_err(model_err)?;
    let tokenizer = Tokenizer::from_gguf(&gguf).map_err(|source| CompileModelError::Tokenizer { path: p.clone(), source })?;
    let template = ChatTemplate::from_gguf(&gguf).map_err(|source| CompileModelError::Template { path: p.clone(), source })?;
    if template.is_fallback() {
        tracing::warn!("{p} has no chat template; using ChatML");
    }
    let info = ModelInfo {
        version: MODEL_INFO_VERSION,
        source: path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        model: cfg.clone(),
        cache_dtype: crate::llama::CACHE_DTYPE.to_string(),
        bos: tokenizer.bos_id(),
        eos: tokenizer.eos_ids().to_vec(),
        add_bos: tokenizer.adds_bos(),
        add_eos: tokenizer.adds_eos(),
    };
    let tok_json = tokenizer.to_json().map_err(|source| CompileModelError::Tokenizer { path: p.clone(), source })?;
    let graph = build_graph(&gguf, &cfg).map_err(model_err)?;
    let mut opts = CompileOptions::new(target);
    opts.weights = graph.weight_store();
    opts.data = vec![
        (SECTION_CONFIG.to_string(), serde_json::to_vec_pretty(&info).expect("ModelInfo serializes")),
        (SECTION_TOKENIZER.to_string(), tok_json.into_bytes()),
        (SECTION_CHAT_TEMPLATE.to_string(), template.source().as_bytes().to_vec()),
    ];
    max_compiler::graph_api::compile_graph_with(&graph, &opts).map_err(|source| CompileModelError::Compile { path: p, source })
}

/// Where compiled models are cached: `$MAX_CACHE_DIR/compiled` (default `~/.cache/max`).
pub fn cache_dir() -> PathBuf {
    let base = std::env::var_os("MAX_CACHE_DIR").map(PathBuf::from).unwrap_or_else(|| {
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
        home.join(".cache").join("max")
    });
    base.join("compiled")
}

/// The cache file for `model`: named after the file, keyed by its path, size and
/// modification time, the compiler version and build (the running executable's size and
/// time), the artifact and kernel ABI versions and the target, so a changed model or a new
/// compiler compiles afresh.
pub fn cached_artifact_path(model: &Path, target: &Target) -> Result<PathBuf, CompileModelError> {
    let io = |source| CompileModelError::Io { what: format!("reading {}", model.display()), source };
    let canonical = model.canonicalize().map_err(io)?;
    let meta = std::fs::metadata(&canonical).map_err(io)?;
    let mtime = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_nanos()).unwrap_or(0);
    // The compiler build: a rebuilt compiler (same version, new code) compiles afresh.
    let build = std::env::current_exe()
        .and_then(std::fs::metadata)
        .map(|m| format!("{}:{:?}", m.len(), m.modified().ok()))
        .unwrap_or_default();
    let key = format!(
        "{}|{}|{mtime}|{}|{build}|{}|{}|{:?}",
        canonical.display(),
        meta.len(),
        env!("CARGO_PKG_VERSION"),
        max_runtime::artifact::FORMAT_VERSION,
        max_runtime::artifact::KERNEL_ABI_VERSION,
        target
    );
    let stem = canonical.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into());
    Ok(cache_dir().join(format!("{stem}-{:08x}.maxa", crc32fast::hash(key.as_bytes()))))
}

/// Compiles `model` unless the cache already holds it; returns the artifact's path.
/// `on_compile` is called before a compile starts (to show progress).
pub fn compile_cached(model: &Path, target: Target, on_compile: impl FnOnce(&Path)) -> Result<PathBuf, CompileModelError> {
    if model.extension().and_then(|e| e.to_str()) != Some("gguf") {
        return Err(CompileModelError::Format(model.display().to_string()));
    }
    let out = cached_artifact_path(model, &target)?;
    if out.is_file() {
        return Ok(out);
    }
    on_compile(&out);
    let bytes = compile_gguf(model, target)?;
    let dir = out.parent().expect("cache path has a parent");
    let io = |what: String| move |source| CompileModelError::Io { what, source };
    std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    // Written next to its final name and renamed, so a concurrent reader never sees half.
    let tmp = dir.join(format!(".{}.{}.tmp", out.file_name().unwrap().to_string_lossy(), std::process::id()));
    std::fs::write(&tmp, &bytes).map_err(io(format!("writing {}", tmp.display())))?;
    std::fs::rename(&tmp, &out).map_err(io(format!("renaming {} to {}", tmp.display(), out.display())))?;
    Ok(out)
}
