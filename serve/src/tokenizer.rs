//! Text <-> token ids for LLMs: built from a GGUF file's `tokenizer.ggml.*` metadata, or loaded
//! from a Hugging Face `tokenizer.json` (safetensors models).
//!
//! The BPE itself is the `tokenizers` crate's; this module only translates llama.cpp's metadata
//! into that crate's pieces:
//!
//! | `tokenizer.ggml.model` | built as |
//! |---|---|
//! | `gpt2` | byte-level BPE: the vocabulary and merges as stored (tokens are spelled in GPT-2's byte alphabet), a split regex chosen by `tokenizer.ggml.pre`, the byte-level decoder |
//! | `llama` | SentencePiece-style BPE: spaces are `▁`, a leading `▁` is added unless `tokenizer.ggml.add_space_prefix` is false, bytes missing from the vocabulary become `<0xNN>` tokens (byte fallback), merges come from `tokenizer.ggml.merges` or, when absent, from `tokenizer.ggml.scores` |
//!
//! Any other model is refused by name, and so are SentencePiece vocabularies of Gemma models
//! (their merge order is not given by their scores). Tokens whose `tokenizer.ggml.token_type` is control or
//! unknown become special tokens and user-defined ones become added tokens, so both are matched
//! whole in the input text (`<|im_start|>` is one token, never `<`, `|`, `im`, ...).
//!
//! Supported `tokenizer.ggml.pre` values (the split regex of a byte-level vocabulary):
//! absent, `default` and `gpt2` (GPT-2's regex; this follows Hugging Face transformers' GGUF
//! loader, which gives every unrecognised value GPT-2's regex), `smollm` (every digit on its
//! own, then GPT-2's regex), `llama3`/`llama-v3`/`llama-bpe` (Llama 3's regex, digits in groups
//! of up to three) and `qwen2`/`deepseek-r1-qwen` (Qwen2's regex, single digits). Others are
//! refused by name, because a wrong split regex silently produces token ids the model was
//! never trained on.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::replace::Replace;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, DecoderWrapper, PreTokenizerWrapper, SplitDelimiterBehavior};

use crate::gguf::{GgufError, GgufFile, MetadataArray, MetadataValue};

/// `tokenizer.ggml.model`: which kind of tokenizer the file describes.
pub const KEY_MODEL: &str = "tokenizer.ggml.model";
/// `tokenizer.ggml.pre`: which split regex a byte-level vocabulary was trained with.
pub const KEY_PRE: &str = "tokenizer.ggml.pre";
/// `tokenizer.ggml.tokens`: the vocabulary, indexed by token id.
pub const KEY_TOKENS: &str = "tokenizer.ggml.tokens";
/// `tokenizer.ggml.merges`: BPE merges, `"left right"`, best first.
pub const KEY_MERGES: &str = "tokenizer.ggml.merges";
/// `tokenizer.ggml.scores`: per-token scores of a SentencePiece vocabulary.
pub const KEY_SCORES: &str = "tokenizer.ggml.scores";
/// `tokenizer.ggml.token_type`: per-token kind (normal, unknown, control, user-defined, unused, byte).
pub const KEY_TOKEN_TYPE: &str = "tokenizer.ggml.token_type";

const KEY_BOS: &str = "tokenizer.ggml.bos_token_id";
const KEY_EOS: &str = "tokenizer.ggml.eos_token_id";
const KEY_EOT: &str = "tokenizer.ggml.eot_token_id";
const KEY_EOM: &str = "tokenizer.ggml.eom_token_id";
const KEY_UNK: &str = "tokenizer.ggml.unknown_token_id";
const KEY_ADD_BOS: &str = "tokenizer.ggml.add_bos_token";
const KEY_ADD_EOS: &str = "tokenizer.ggml.add_eos_token";
const KEY_ADD_SPACE_PREFIX: &str = "tokenizer.ggml.add_space_prefix";

/// llama.cpp's token types (the values of `tokenizer.ggml.token_type`).
mod token_type {
    pub const NORMAL: i64 = 1;
    pub const UNKNOWN: i64 = 2;
    pub const CONTROL: i64 = 3;
    pub const USER_DEFINED: i64 = 4;
}

/// The `tokenizer.ggml.pre` values this module implements, for error messages.
const SUPPORTED_PRE: &str = "default, gpt2, smollm, llama3, llama-v3, llama-bpe, qwen2, deepseek-r1-qwen";

/// Llama 3's split regex (the tiktoken cl100k pattern): case-insensitive English contractions,
/// letter runs with at most one leading non-letter, digit runs of up to three, punctuation runs
/// that keep trailing newlines, and whitespace.
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen2's split regex: Llama 3's, except that every digit stands alone.
const QWEN2_SPLIT: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Control tokens that end a turn in common chat formats. A model may emit any of these rather
/// than the one `eos_token_id` names (a ChatML model trained on documents ending in
/// `<|endoftext|>` still emits it), so generation must stop on all of them.
const END_OF_TURN_TOKENS: &[&str] =
    &["<|endoftext|>", "<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|end|>", "<end_of_turn>", "<|end_of_text|>"];

/// Errors from building or using a [`Tokenizer`].
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A metadata key is missing or has the wrong type (the message names the key).
    #[error("GGUF tokenizer metadata: {0}")]
    Metadata(#[from] GgufError),
    /// `tokenizer.ggml.model` names a tokenizer this module does not build.
    #[error("unsupported tokenizer model \"{model}\" in {KEY_MODEL} (supported: \"gpt2\" = byte-level BPE, \"llama\" = SentencePiece BPE with byte fallback)")]
    UnsupportedModel {
        /// The value found.
        model: String,
    },
    /// A SentencePiece vocabulary from a model family whose merges cannot be derived the
    /// usual way (Gemma's scores do not follow its merge order).
    #[error("SentencePiece (\"llama\") tokenizer of a \"{architecture}\" model is not supported: its token scores do not give the merge order")]
    UnsupportedArchitecture {
        /// `general.architecture`.
        architecture: String,
    },
    /// `tokenizer.ggml.pre` names a split regex this module does not implement.
    #[error("unsupported pre-tokenizer \"{pre}\" in {KEY_PRE} (supported: {SUPPORTED_PRE})")]
    UnsupportedPreTokenizer {
        /// The value found.
        pre: String,
    },
    /// `tokenizer.ggml.tokens` has no tokens.
    #[error("{KEY_TOKENS} is empty")]
    EmptyVocabulary,
    /// A per-token array does not have one entry per token.
    #[error("{key} has {actual} entries but {KEY_TOKENS} has {expected}")]
    LengthMismatch {
        /// The per-token array.
        key: &'static str,
        /// Its length.
        actual: usize,
        /// The number of tokens.
        expected: usize,
    },
    /// A merge is not two tokens separated by a space.
    #[error("{KEY_MERGES}[{index}] = {merge:?} is not two tokens separated by one space")]
    BadMerge {
        /// Position in the merges array.
        index: usize,
        /// The merge string.
        merge: String,
    },
    /// A special-token id in the metadata is not in the vocabulary.
    #[error("{key} = {id} is not a token id: the vocabulary has {vocab_size} tokens")]
    BadSpecialId {
        /// The metadata key.
        key: String,
        /// The id found.
        id: u64,
        /// The vocabulary size.
        vocab_size: usize,
    },
    /// A SentencePiece vocabulary has neither merges nor scores to derive them from.
    #[error("\"llama\" tokenizer needs {KEY_MERGES} or {KEY_SCORES}, and the file has neither")]
    NoMergesOrScores,
    /// The `tokenizers` crate rejected the assembled tokenizer.
    #[error("cannot build the {what}: {message}")]
    Build {
        /// The part being built.
        what: &'static str,
        /// The library's message.
        message: String,
    },
    /// A tokenizer file could not be read or parsed.
    #[error("cannot load tokenizer from {}: {message}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A token id passed to decoding is not in the vocabulary.
    #[error("token id {id} is out of range: the vocabulary has {vocab_size} tokens")]
    IdOutOfRange {
        /// The id.
        id: u32,
        /// The vocabulary size.
        vocab_size: usize,
    },
    /// Encoding failed inside the `tokenizers` crate.
    #[error("cannot encode text: {0}")]
    Encode(String),
    /// Decoding failed inside the `tokenizers` crate.
    #[error("cannot decode token ids: {0}")]
    Decode(String),
}

/// Result alias for this module.
pub type Result<T, E = TokenizerError> = std::result::Result<T, E>;

/// A tokenizer for one model. Cloning is cheap (the vocabulary is shared), so a server can
/// hand a clone to every request.
#[derive(Clone)]
pub struct Tokenizer {
    inner: Arc<Inner>,
}

struct Inner {
    tokenizer: tokenizers::Tokenizer,
    bos: Option<u32>,
    eos: Vec<u32>,
    /// Added by [`Tokenizer::encode`] itself for GGUF tokenizers; a `tokenizer.json` carries
    /// its own post-processor instead, and then both are false.
    add_bos: bool,
    add_eos: bool,
    vocab_size: usize,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.inner.vocab_size)
            .field("bos", &self.inner.bos)
            .field("eos", &self.inner.eos)
            .field("add_bos", &self.inner.add_bos)
            .finish_non_exhaustive()
    }
}

/// The tokenizer metadata of a GGUF file, read once.
struct GgufVocab<'a> {
    tokens: &'a [String],
    /// One type per token; all normal when the file has no `tokenizer.ggml.token_type`.
    types: Vec<i64>,
}

impl<'a> GgufVocab<'a> {
    fn read(gguf: &'a GgufFile) -> Result<Self> {
        let tokens = gguf.get_str_array(KEY_TOKENS)?;
        if tokens.is_empty() {
            return Err(TokenizerError::EmptyVocabulary);
        }
        let types = match gguf.get(KEY_TOKEN_TYPE) {
            None => vec![token_type::NORMAL; tokens.len()],
            Some(_) => int_array(gguf, KEY_TOKEN_TYPE)?,
        };
        if types.len() != tokens.len() {
            return Err(TokenizerError::LengthMismatch {
                key: KEY_TOKEN_TYPE,
                actual: types.len(),
                expected: tokens.len(),
            });
        }
        Ok(GgufVocab { tokens, types })
    }

    /// Token -> id. When a token is listed twice the first id wins; the later id is then
    /// never produced by encoding and decodes to nothing, which is the best a BPE over
    /// duplicate entries can do (real vocabularies have none).
    fn vocab(&self) -> Vocab {
        let mut vocab = Vocab::with_capacity(self.tokens.len());
        for (id, token) in self.tokens.iter().enumerate() {
            vocab.entry(token.clone()).or_insert(id as u32);
        }
        vocab
    }

    /// Optional token id under `key`, checked against the vocabulary.
    fn special_id(&self, gguf: &GgufFile, key: &str) -> Result<Option<u32>> {
        if gguf.get(key).is_none() {
            return Ok(None);
        }
        let id = gguf.get_uint(key)?;
        if id >= self.tokens.len() as u64 {
            return Err(TokenizerError::BadSpecialId { key: key.to_string(), id, vocab_size: self.tokens.len() });
        }
        Ok(Some(id as u32))
    }

    /// Control and unknown tokens as special tokens (skipped by `decode(.., true)`), and
    /// user-defined ones as plain added tokens. Both are matched whole in input text, as
    /// llama.cpp does; `normalized(false)` keeps the text from being rewritten (e.g. spaces to
    /// `▁`) before matching.
    fn added_tokens(&self) -> (Vec<AddedToken>, Vec<AddedToken>) {
        let mut special = Vec::new();
        let mut user = Vec::new();
        for (token, &ty) in self.tokens.iter().zip(&self.types) {
            if token.is_empty() {
                continue;
            }
            match ty {
                token_type::CONTROL | token_type::UNKNOWN => {
                    special.push(AddedToken::from(token.clone(), true).normalized(false))
                }
                token_type::USER_DEFINED => user.push(AddedToken::from(token.clone(), false).normalized(false)),
                _ => {}
            }
        }
        (special, user)
    }

    /// The ids that end generation: the declared EOS/EOT/EOM ids, then control tokens whose
    /// text is a well-known end-of-turn marker (see [`END_OF_TURN_TOKENS`]).
    fn end_ids(&self, gguf: &GgufFile) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        for key in [KEY_EOS, KEY_EOT, KEY_EOM] {
            if let Some(id) = self.special_id(gguf, key)? {
                push_unique(&mut ids, id);
            }
        }
        for (id, (token, &ty)) in self.tokens.iter().zip(&self.types).enumerate() {
            if ty == token_type::CONTROL && END_OF_TURN_TOKENS.contains(&token.as_str()) {
                push_unique(&mut ids, id as u32);
            }
        }
        Ok(ids)
    }
}

fn push_unique(ids: &mut Vec<u32>, id: u32) {
    if !ids.contains(&id) {
        ids.push(id);
    }
}

/// An integer array of any element type (writers differ: token types are usually i32).
fn int_array(gguf: &GgufFile, key: &str) -> Result<Vec<i64>> {
    let array = gguf.get_array(key)?;
    let out: Option<Vec<i64>> = match array {
        MetadataArray::U8(v) => Some(v.iter().map(|&x| x.into()).collect()),
        MetadataArray::I8(v) => Some(v.iter().map(|&x| x.into()).collect()),
        MetadataArray::U16(v) => Some(v.iter().map(|&x| x.into()).collect()),
        MetadataArray::I16(v) => Some(v.iter().map(|&x| x.into()).collect()),
        MetadataArray::U32(v) => Some(v.iter().map(|&x| x.into()).collect()),
        MetadataArray::I32(v) => Some(v.iter().map(|&x| x.into()).collect()),
        MetadataArray::I64(v) => Some(v.clone()),
        MetadataArray::U64(v) => v.iter().map(|&x| i64::try_from(x).ok()).collect(),
        _ => None,
    };
    out.ok_or_else(|| {
        TokenizerError::Metadata(GgufError::WrongType {
            key: key.to_string(),
            expected: "array of integers".to_string(),
            actual: array.type_description(),
        })
    })
}

fn optional_bool(gguf: &GgufFile, key: &str) -> Result<Option<bool>> {
    match gguf.get(key) {
        None => Ok(None),
        Some(_) => Ok(Some(gguf.get_bool(key)?)),
    }
}

fn build_error(what: &'static str) -> impl FnOnce(tokenizers::Error) -> TokenizerError {
    move |e| TokenizerError::Build { what, message: e.to_string() }
}

/// Parses `"left right"` merges.
fn parse_merges(merges: &[String]) -> Result<Vec<(String, String)>> {
    merges
        .iter()
        .enumerate()
        .map(|(index, merge)| match merge.split_once(' ') {
            Some((l, r)) if !l.is_empty() && !r.is_empty() && !r.contains(' ') => Ok((l.to_string(), r.to_string())),
            _ => Err(TokenizerError::BadMerge { index, merge: merge.clone() }),
        })
        .collect()
}

/// Merges implied by a SentencePiece vocabulary: SentencePiece's BPE repeatedly joins the
/// adjacent pair whose joined piece has the highest score, so every way of cutting a normal
/// token into two vocabulary pieces is a merge, ranked by that token's score. Ties (equal
/// scores) go to the token listed first, which is the order SentencePiece learned them in.
fn merges_from_scores(vocab: &GgufVocab<'_>, ids: &Vocab, scores: &[f32]) -> Vec<(String, String)> {
    let mut ranked: Vec<(f32, u32, usize, (String, String))> = Vec::new();
    for (id, token) in vocab.tokens.iter().enumerate() {
        if vocab.types[id] != token_type::NORMAL && vocab.types[id] != token_type::USER_DEFINED {
            continue;
        }
        for (cut, _) in token.char_indices().skip(1) {
            let (left, right) = token.split_at(cut);
            if ids.contains_key(left) && ids.contains_key(right) {
                // `cut` as the third key: among splits of one token, the longer left piece
                // first, so the ranking does not depend on hash order.
                ranked.push((scores[id], id as u32, usize::MAX - cut, (left.to_string(), right.to_string())));
            }
        }
    }
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    ranked.into_iter().map(|(_, _, _, merge)| merge).collect()
}

/// The pre-tokenizer of a byte-level vocabulary and whether whole words found in the
/// vocabulary skip the merges (Llama 3's tokenizer does; GPT-2's does not).
fn byte_level_pre_tokenizer(pre: Option<&str>) -> Result<(PreTokenizerWrapper, bool)> {
    // With a split regex of its own, ByteLevel must not split again (use_regex = false).
    let split_then_bytes = |regex: &str| -> Result<PreTokenizerWrapper> {
        let split = Split::new(SplitPattern::Regex(regex.to_string()), SplitDelimiterBehavior::Isolated, false)
            .map_err(build_error("split regex"))?;
        Ok(PreTokenizerSequence::new(vec![split.into(), ByteLevel::new(false, true, false).into()]).into())
    };
    let gpt2 = || ByteLevel::new(false, true, true);
    Ok(match pre {
        None | Some("default") | Some("gpt2") => (gpt2().into(), false),
        Some("smollm") => (PreTokenizerSequence::new(vec![Digits::new(true).into(), gpt2().into()]).into(), false),
        Some("llama3") | Some("llama-v3") | Some("llama-bpe") => (split_then_bytes(LLAMA3_SPLIT)?, true),
        Some("qwen2") | Some("deepseek-r1-qwen") => (split_then_bytes(QWEN2_SPLIT)?, false),
        Some(other) => return Err(TokenizerError::UnsupportedPreTokenizer { pre: other.to_string() }),
    })
}

impl Tokenizer {
    /// Builds the tokenizer a GGUF file describes (see the module docs for what is supported).
    ///
    /// BOS is added by [`encode`](Self::encode) when `tokenizer.ggml.add_bos_token` says so;
    /// when the key is absent it defaults to true for `llama` (SentencePiece) vocabularies and
    /// false otherwise, as in llama.cpp and transformers.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self> {
        let model = gguf.get_str(KEY_MODEL)?;
        // Refuse an unknown model before reading the (large) vocabulary.
        if model != "gpt2" && model != "llama" {
            return Err(TokenizerError::UnsupportedModel { model: model.to_string() });
        }
        let vocab = GgufVocab::read(gguf)?;
        let ids = vocab.vocab();
        let merges = match gguf.get(KEY_MERGES) {
            Some(_) => Some(parse_merges(gguf.get_str_array(KEY_MERGES)?)?),
            None => None,
        };

        let mut tokenizer = match model {
            "gpt2" => {
                let pre = match gguf.get(KEY_PRE) {
                    Some(_) => Some(gguf.get_str(KEY_PRE)?),
                    None => None,
                };
                let (pre_tokenizer, ignore_merges) = byte_level_pre_tokenizer(pre)?;
                let bpe = BPE::builder()
                    .vocab_and_merges(ids, merges.unwrap_or_default())
                    .ignore_merges(ignore_merges)
                    .build()
                    .map_err(build_error(
                        "byte-level BPE model from tokenizer.ggml.tokens and tokenizer.ggml.merges",
                    ))?;
                let mut tokenizer = tokenizers::Tokenizer::new(bpe);
                tokenizer.with_pre_tokenizer(Some(pre_tokenizer));
                tokenizer.with_decoder(Some(DecoderWrapper::from(ByteLevel::new(false, true, true))));
                tokenizer
            }
            _ => {
                let merges = match merges {
                    Some(merges) => merges,
                    None => {
                        // transformers rebuilds Gemma's merges from token positions and
                        // respells its space tokens; without a reference to check such a
                        // rebuild against, refuse rather than tokenize wrongly.
                        if let Some(MetadataValue::String(arch)) = gguf.get("general.architecture") {
                            if arch.starts_with("gemma") {
                                return Err(TokenizerError::UnsupportedArchitecture { architecture: arch.clone() });
                            }
                        }
                        if gguf.get(KEY_SCORES).is_none() {
                            return Err(TokenizerError::NoMergesOrScores);
                        }
                        let scores = gguf.get_f32_array(KEY_SCORES)?;
                        if scores.len() != vocab.tokens.len() {
                            return Err(TokenizerError::LengthMismatch {
                                key: KEY_SCORES,
                                actual: scores.len(),
                                expected: vocab.tokens.len(),
                            });
                        }
                        merges_from_scores(&vocab, &ids, scores)
                    }
                };
                let unk = match vocab.special_id(gguf, KEY_UNK)? {
                    Some(id) => Some(vocab.tokens[id as usize].clone()),
                    None => ids.contains_key("<unk>").then(|| "<unk>".to_string()),
                };
                let mut builder = BPE::builder().vocab_and_merges(ids, merges).byte_fallback(true).fuse_unk(true);
                if let Some(unk) = unk {
                    builder = builder.unk_token(unk);
                }
                let bpe = builder
                    .build()
                    .map_err(build_error("SentencePiece BPE model from tokenizer.ggml.tokens and its merges"))?;
                let add_space_prefix = optional_bool(gguf, KEY_ADD_SPACE_PREFIX)?.unwrap_or(true);
                let scheme = if add_space_prefix { PrependScheme::First } else { PrependScheme::Never };
                let mut tokenizer = tokenizers::Tokenizer::new(bpe);
                tokenizer.with_pre_tokenizer(Some(Metaspace::new('▁', scheme, false)));
                let mut decoders: Vec<DecoderWrapper> = vec![
                    Replace::new("▁", " ").map_err(build_error("decoder"))?.into(),
                    ByteFallback::new().into(),
                    Fuse::new().into(),
                ];
                if add_space_prefix {
                    // Undo the space prepended to the text's first word.
                    decoders.push(Strip::new(' ', 1, 0).into());
                }
                tokenizer.with_decoder(Some(DecoderSequence::new(decoders)));
                tokenizer
            }
        };

        let (special, user) = vocab.added_tokens();
        tokenizer.add_special_tokens(&special);
        tokenizer.add_tokens(&user);

        let bos = vocab.special_id(gguf, KEY_BOS)?;
        let add_bos = optional_bool(gguf, KEY_ADD_BOS)?.unwrap_or(model == "llama") && bos.is_some();
        let eos = vocab.end_ids(gguf)?;
        let add_eos = optional_bool(gguf, KEY_ADD_EOS)?.unwrap_or(false) && vocab.special_id(gguf, KEY_EOS)?.is_some();
        Ok(Tokenizer {
            inner: Arc::new(Inner { tokenizer, bos, eos, add_bos, add_eos, vocab_size: vocab.tokens.len() }),
        })
    }

    /// Loads a Hugging Face `tokenizer.json` (as shipped with safetensors models).
    ///
    /// A `tokenizer.json` does not say which tokens are BOS and EOS; they are read from a
    /// `tokenizer_config.json` next to it when there is one (`bos_token`, `eos_token`, either a
    /// string or `{"content": ...}`). End-of-turn markers among the special tokens (e.g.
    /// `<|im_end|>`) are added to [`eos_ids`](Self::eos_ids) either way. Adding BOS is left to
    /// the file's own post-processor.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file_error = |message: String| TokenizerError::File { path: path.to_owned(), message };
        let tokenizer = tokenizers::Tokenizer::from_file(path).map_err(|e| file_error(e.to_string()))?;

        let config_path = path.with_file_name("tokenizer_config.json");
        let (mut bos, mut eos) = (None, Vec::new());
        if config_path.is_file() {
            let config_error = |message: String| TokenizerError::File { path: config_path.clone(), message };
            let text = std::fs::read_to_string(&config_path).map_err(|e| config_error(e.to_string()))?;
            let config: serde_json::Value = serde_json::from_str(&text).map_err(|e| config_error(e.to_string()))?;
            let token_id = |field: &str| -> Result<Option<u32>> {
                let name = match &config[field] {
                    serde_json::Value::String(s) => s.as_str(),
                    serde_json::Value::Object(o) => match o.get("content") {
                        Some(serde_json::Value::String(s)) => s.as_str(),
                        _ => return Err(config_error(format!("`{field}` has no string `content`"))),
                    },
                    serde_json::Value::Null => return Ok(None),
                    other => return Err(config_error(format!("`{field}` is {other}, expected a token string"))),
                };
                tokenizer
                    .token_to_id(name)
                    .map(Some)
                    .ok_or_else(|| config_error(format!("`{field}` is {name:?}, which is not in the vocabulary")))
            };
            bos = token_id("bos_token")?;
            if let Some(id) = token_id("eos_token")? {
                eos.push(id);
            }
        }
        for token in END_OF_TURN_TOKENS {
            if let Some(id) = tokenizer.token_to_id(token) {
                if tokenizer.get_added_vocabulary().is_special_token(token) {
                    push_unique(&mut eos, id);
                }
            }
        }
        Ok(Self::from_parts(tokenizer, bos, eos))
    }

    /// Wraps an already built `tokenizers::Tokenizer` with the given BOS and end-of-generation
    /// ids. [`encode`](Self::encode) adds only what the tokenizer's own post-processor adds.
    pub fn from_parts(tokenizer: tokenizers::Tokenizer, bos: Option<u32>, eos: Vec<u32>) -> Self {
        let vocab_size = tokenizer.get_vocab_size(true);
        Tokenizer { inner: Arc::new(Inner { tokenizer, bos, eos, add_bos: false, add_eos: false, vocab_size }) }
    }

    /// Rebuilds a tokenizer saved with [`to_json`](Self::to_json): the `tokenizer.json` text
    /// and what [`encode`](Self::encode) adds itself (BOS/EOS), as stored in a compiled model.
    ///
    /// Then gives the process's free heap back to the OS
    /// ([`max_runtime::heap::release_free_memory`]): the parse's intermediate values (a
    /// JSON tree of the whole vocabulary and merges) and `json` itself, freed by then,
    /// would otherwise stay resident for the process's life.
    pub fn from_json(json: String, bos: Option<u32>, eos: Vec<u32>, add_bos: bool, add_eos: bool) -> Result<Self> {
        let tokenizer: tokenizers::Tokenizer =
            json.parse().map_err(|e: tokenizers::Error| TokenizerError::File { path: "<artifact tokenizer.json>".into(), message: e.to_string() })?;
        drop(json);
        max_runtime::heap::release_free_memory();
        let vocab_size = tokenizer.get_vocab_size(true);
        Ok(Tokenizer { inner: Arc::new(Inner { tokenizer, bos, eos, add_bos, add_eos, vocab_size }) })
    }

    /// The tokenizer as `tokenizer.json` text (BOS/EOS handling aside: see
    /// [`adds_bos`](Self::adds_bos), [`adds_eos`](Self::adds_eos)).
    pub fn to_json(&self) -> Result<String> {
        self.inner.tokenizer.to_string(false).map_err(|e| TokenizerError::Encode(format!("serializing the tokenizer: {e}")))
    }

    /// Whether [`encode`](Self::encode) with `add_special` appends EOS itself.
    pub fn adds_eos(&self) -> bool {
        self.inner.add_eos
    }

    /// Token ids of `text`. Special tokens written in the text (e.g. `<|im_start|>` in a
    /// rendered chat prompt) are always recognised. With `add_special`, BOS (and EOS) are
    /// added as the model's tokenizer metadata asks; pass `false` for a prompt whose chat
    /// template already writes `bos_token`, or BOS ends up twice.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        let inner = &*self.inner;
        let encoding =
            inner.tokenizer.encode_fast(text, add_special).map_err(|e| TokenizerError::Encode(e.to_string()))?;
        let ids = encoding.get_ids();
        let bos = inner.bos.filter(|_| add_special && inner.add_bos);
        let eos = inner.eos.first().copied().filter(|_| add_special && inner.add_eos);
        let mut out = Vec::with_capacity(ids.len() + 2);
        out.extend(bos);
        out.extend_from_slice(ids);
        out.extend(eos);
        Ok(out)
    }

    /// The text of `ids`. With `skip_special`, special tokens (BOS, `<|im_end|>`, ...) are
    /// left out. An id outside the vocabulary is an error rather than silently dropped.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.check_ids(ids)?;
        self.inner.tokenizer.decode(ids, skip_special).map_err(|e| TokenizerError::Decode(e.to_string()))
    }

    fn check_ids(&self, ids: &[u32]) -> Result<()> {
        let vocab_size = self.inner.vocab_size;
        match ids.iter().find(|&&id| id as usize >= vocab_size) {
            Some(&id) => Err(TokenizerError::IdOutOfRange { id, vocab_size }),
            None => Ok(()),
        }
    }

    /// A decoder for tokens that arrive one at a time (see [`StreamDecoder`]).
    pub fn stream_decoder(&self, skip_special: bool) -> StreamDecoder {
        StreamDecoder { tokenizer: self.clone(), skip_special, ids: Vec::new(), prefix_start: 0, read: 0 }
    }

    /// The BOS token id, if the model has one.
    pub fn bos_id(&self) -> Option<u32> {
        self.inner.bos
    }

    /// The text of the BOS token (for chat templates' `bos_token`).
    pub fn bos_token(&self) -> Option<String> {
        self.inner.bos.and_then(|id| self.id_to_token(id))
    }

    /// The ids that end generation, the declared EOS first (empty if the model declares none).
    pub fn eos_ids(&self) -> &[u32] {
        &self.inner.eos
    }

    /// The text of the declared EOS token (for chat templates' `eos_token`).
    pub fn eos_token(&self) -> Option<String> {
        self.inner.eos.first().and_then(|&id| self.id_to_token(id))
    }

    /// Whether `id` ends generation.
    pub fn is_eos(&self, id: u32) -> bool {
        self.inner.eos.contains(&id)
    }

    /// Whether [`encode`](Self::encode) with `add_special` prepends BOS itself.
    pub fn adds_bos(&self) -> bool {
        self.inner.add_bos
    }

    /// Number of token ids (the model's embedding rows), added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.vocab_size
    }

    /// The id of the token spelled `token` (as stored: byte-level vocabularies spell a space
    /// `Ġ`, SentencePiece ones `▁`), special tokens included.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.tokenizer.token_to_id(token)
    }

    /// The stored spelling of token `id`.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.tokenizer.id_to_token(id)
    }

    /// The underlying `tokenizers` tokenizer. For GGUF tokenizers it does not add BOS/EOS
    /// (this type's [`encode`](Self::encode) does).
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner.tokenizer
    }
}

/// Most tokens a [`StreamDecoder`] holds back waiting for the rest of a character: a UTF-8
/// character is at most four bytes and every token is at least one, so more than this means
/// the text really contains a replacement character (or invalid bytes) and must go out.
const MAX_HELD_TOKENS: usize = 4;

/// Turns tokens that arrive one at a time into text chunks whose concatenation equals
/// [`Tokenizer::decode`] of all of them.
///
/// Decoding token by token is wrong in two ways: a character split across byte-level tokens
/// would come out as replacement characters, and decoders that look at neighbours (the
/// SentencePiece decoder drops the text's first space) need context. So each step decodes a
/// short window — the previously emitted token(s) plus the new ones — and emits what the new
/// tokens added, holding text back while it ends in an incomplete character.
#[derive(Debug)]
pub struct StreamDecoder {
    tokenizer: Tokenizer,
    skip_special: bool,
    /// The window: `ids[prefix_start..read]` were emitted and are kept as context,
    /// `ids[read..]` are waiting to be emitted.
    ids: Vec<u32>,
    prefix_start: usize,
    read: usize,
}

impl StreamDecoder {
    /// Adds one token; returns the text it completes, or `None` while it is held back (an
    /// incomplete character, or a skipped special token).
    pub fn step(&mut self, id: u32) -> Result<Option<String>> {
        self.tokenizer.check_ids(&[id])?;
        self.ids.push(id);
        let text = self.tokenizer.decode(&self.ids[self.prefix_start..], self.skip_special)?;
        let held = self.ids.len() - self.read;
        if text.ends_with(char::REPLACEMENT_CHARACTER) && held <= MAX_HELD_TOKENS {
            return Ok(None);
        }
        self.emit(text)
    }

    /// Returns whatever is still held back (an incomplete character comes out as a
    /// replacement character) and starts over. Call it when generation ends.
    pub fn flush(&mut self) -> Result<Option<String>> {
        if self.read == self.ids.len() {
            self.reset();
            return Ok(None);
        }
        let text = self.tokenizer.decode(&self.ids[self.prefix_start..], self.skip_special)?;
        let out = self.emit(text);
        self.reset();
        out
    }

    /// Forgets all tokens seen so far.
    pub fn reset(&mut self) {
        self.ids.clear();
        self.prefix_start = 0;
        self.read = 0;
    }

    /// Emits what `text` (the decoded window) adds to the already emitted part of the window,
    /// then slides the window so the just-emitted tokens become the context.
    fn emit(&mut self, text: String) -> Result<Option<String>> {
        let prefix = self.tokenizer.decode(&self.ids[self.prefix_start..self.read], self.skip_special)?;
        if text.len() <= prefix.len() && text.starts_with(&prefix) {
            // Nothing visible yet (e.g. a skipped special token): keep waiting.
            return Ok(None);
        }
        // The window decodes to the emitted prefix plus new text. Should a decoder ever
        // rewrite the prefix, emit from where the two agree rather than fail a stream.
        let common = if text.starts_with(&prefix) {
            prefix.len()
        } else {
            text.char_indices()
                .zip(prefix.chars())
                .find(|((_, a), b)| a != b)
                .map(|((i, _), _)| i)
                .unwrap_or_else(|| text.len().min(prefix.len()))
        };
        let new = text[common..].to_string();
        // Drop ids that are no longer needed as context so the window stays short.
        self.ids.drain(..self.read);
        self.prefix_start = 0;
        self.read = self.ids.len();
        Ok(if new.is_empty() { None } else { Some(new) })
    }
}
