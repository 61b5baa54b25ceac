//! Tokenizer tests: tiny synthetic vocabularies (no model file), metadata errors, and the real
//! SmolLM2 GGUF when `MAX_SMOLLM2_GGUF` is set.
//!
//! Every expected id list for SmolLM2 and for the tiny SentencePiece vocabulary comes from
//! Hugging Face transformers' own GGUF tokenizer loader, not from this crate. They were made
//! in a throwaway venv (Python 3.11.7; transformers 5.24.0, tokenizers 0.23.3, gguf 0.19.0,
//! jinja2 3.1.6, all from PyPI) with
//!
//! ```python
//! from transformers import PreTrainedTokenizerFast
//! tok = PreTrainedTokenizerFast.from_pretrained(dir, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
//! tok.encode(text, add_special_tokens=False)          # == add_special_tokens=True here
//! tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
//! ```
//!
//! (`PreTrainedTokenizerFast` rather than `AutoTokenizer` because the latter also builds the
//! model config, which needs torch; transformers' GGUF reader module imports torch only for
//! tensor dtypes, so a stand-in `torch` module on PYTHONPATH satisfied that import.) The
//! pre-tokenizer variants and the SentencePiece vocabulary were written to GGUF files with the
//! `gguf` package's `GGUFWriter` (metadata only) and loaded the same way.

mod common;

use common::{byte_char, f32s, gguf_with, i32s, smollm2_path, string, strings};
use max_serve::gguf::{GgufError, GgufFile, MetadataArray, MetadataValue};
use max_serve::tokenizer::{Tokenizer, TokenizerError};

// ---------------------------------------------------------------------------------------
// A tiny byte-level (gpt2) vocabulary
// ---------------------------------------------------------------------------------------

const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const NORMAL: i32 = 1;

/// ids 0..3: control tokens; 3..259: the 256 byte characters (id = 3 + byte); then merges.
fn byte_level_kvs() -> Vec<(&'static str, MetadataValue)> {
    let mut tokens: Vec<String> = vec!["<|endoftext|>".into(), "<|im_start|>".into(), "<|im_end|>".into()];
    tokens.extend((0..=255u8).map(|b| byte_char(b).to_string()));
    let merged = ["he", "ll", "hell", "hello", "Ġw", "or", "Ġwor", "ld", "Ġworld"];
    tokens.extend(merged.iter().map(|s| s.to_string()));
    tokens.push("<think>".into());
    let mut types = vec![CONTROL; 3];
    types.extend(std::iter::repeat_n(NORMAL, 256 + merged.len()));
    types.push(USER_DEFINED);
    let merges = ["h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld"];
    vec![
        ("tokenizer.ggml.model", string("gpt2")),
        ("tokenizer.ggml.pre", string("gpt2")),
        ("tokenizer.ggml.tokens", strings(&tokens)),
        ("tokenizer.ggml.token_type", i32s(&types)),
        ("tokenizer.ggml.merges", strings(&merges)),
        ("tokenizer.ggml.bos_token_id", MetadataValue::U32(0)),
        ("tokenizer.ggml.eos_token_id", MetadataValue::U32(2)),
        ("tokenizer.ggml.add_bos_token", MetadataValue::Bool(true)),
    ]
}

fn byte_id(b: u8) -> u32 {
    3 + b as u32
}
const HELLO: u32 = 262;
const SP_WORLD: u32 = 267;
const THINK: u32 = 268;

fn byte_level() -> Tokenizer {
    Tokenizer::from_gguf(&gguf_with(&byte_level_kvs())).unwrap()
}

fn with(mut kvs: Vec<(&'static str, MetadataValue)>, key: &'static str, value: Option<MetadataValue>) -> GgufFile {
    kvs.retain(|(k, _)| *k != key);
    if let Some(value) = value {
        kvs.push((key, value));
    }
    gguf_with(&kvs)
}

/// Streams `ids` through a [`StreamDecoder`] and returns the chunks (flush included).
fn stream(tok: &Tokenizer, ids: &[u32], skip_special: bool) -> Vec<String> {
    let mut decoder = tok.stream_decoder(skip_special);
    let mut chunks: Vec<String> = ids.iter().filter_map(|&id| decoder.step(id).unwrap()).collect();
    chunks.extend(decoder.flush().unwrap());
    chunks
}

#[test]
fn byte_level_encodes_with_merges_and_special_tokens() {
    let tok = byte_level();
    assert_eq!(tok.vocab_size(), 269);
    assert_eq!(tok.encode("hello world", false).unwrap(), [HELLO, SP_WORLD]);
    // BOS comes from add_bos_token; it is not added without add_special.
    assert_eq!(tok.encode("hello world", true).unwrap(), [0, HELLO, SP_WORLD]);
    assert_eq!(tok.encode("hi", false).unwrap(), [byte_id(b'h'), byte_id(b'i')]);
    // Control tokens are single tokens wherever they appear; so are user-defined ones.
    assert_eq!(tok.encode("<|im_start|>hello<|im_end|>", false).unwrap(), [1, HELLO, 2]);
    assert_eq!(tok.encode("hello<think> world", false).unwrap(), [HELLO, THINK, SP_WORLD]);
    // Bytes outside ASCII go through the byte alphabet: é is C3 A9.
    assert_eq!(tok.encode("é", false).unwrap(), [byte_id(0xC3), byte_id(0xA9)]);
    assert_eq!(tok.encode("", true).unwrap(), [0]);
}

#[test]
fn byte_level_special_ids_and_lookup() {
    let tok = byte_level();
    assert_eq!(tok.bos_id(), Some(0));
    assert_eq!(tok.bos_token().as_deref(), Some("<|endoftext|>"));
    // The declared EOS first, then other end-of-turn control tokens.
    assert_eq!(tok.eos_ids(), [2, 0]);
    assert_eq!(tok.eos_token().as_deref(), Some("<|im_end|>"));
    assert!(tok.is_eos(2) && tok.is_eos(0) && !tok.is_eos(1));
    assert!(tok.adds_bos());
    assert_eq!(tok.token_to_id("Ġworld"), Some(SP_WORLD));
    assert_eq!(tok.token_to_id("<|im_start|>"), Some(1));
    assert_eq!(tok.token_to_id("nope"), None);
    assert_eq!(tok.id_to_token(HELLO).as_deref(), Some("hello"));
}

#[test]
fn byte_level_decode_round_trips_and_skips_special() {
    let tok = byte_level();
    for text in
        ["hello world", "  spaces  and\ttabs\n", "naïve café 🍕 日本", "<|im_start|>user\nhello<|im_end|>", "x<think>y"]
    {
        let ids = tok.encode(text, false).unwrap();
        assert_eq!(tok.decode(&ids, false).unwrap(), text, "{ids:?}");
    }
    let ids = tok.encode("<|im_start|>hello<|im_end|><think>", true).unwrap();
    assert_eq!(tok.decode(&ids, true).unwrap(), "hello<think>", "user-defined tokens are not special");
    assert_eq!(tok.decode(&ids, false).unwrap(), "<|endoftext|><|im_start|>hello<|im_end|><think>");
}

#[test]
fn tokenizer_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<Tokenizer>();
    assert_send_sync::<max_serve::tokenizer::StreamDecoder>();
    let tok = byte_level();
    let handle = std::thread::spawn({
        let tok = tok.clone();
        move || tok.encode("hello world", false).unwrap()
    });
    assert_eq!(handle.join().unwrap(), tok.encode("hello world", false).unwrap());
}

#[test]
fn duplicate_tokens_do_not_break_the_vocabulary() {
    let mut kvs = byte_level_kvs();
    let tokens = match &kvs.iter().find(|(k, _)| *k == "tokenizer.ggml.tokens").unwrap().1 {
        MetadataValue::Array(MetadataArray::String(v)) => v.clone(),
        _ => unreachable!(),
    };
    let mut duplicated = tokens.clone();
    duplicated[THINK as usize] = "hello".into(); // the user-defined slot now repeats id 262
    kvs.retain(|(k, _)| *k != "tokenizer.ggml.tokens");
    kvs.push(("tokenizer.ggml.tokens", strings(&duplicated)));
    let tok = Tokenizer::from_gguf(&gguf_with(&kvs)).unwrap();
    assert_eq!(tok.encode("hello", false).unwrap(), [HELLO]);
    assert_eq!(tok.decode(&[HELLO], false).unwrap(), "hello");
}

#[test]
fn decode_rejects_ids_outside_the_vocabulary() {
    let tok = byte_level();
    let err = tok.decode(&[HELLO, 269], false).unwrap_err();
    assert!(matches!(err, TokenizerError::IdOutOfRange { id: 269, vocab_size: 269 }), "{err:?}");
    assert_eq!(err.to_string(), "token id 269 is out of range: the vocabulary has 269 tokens");
    assert!(tok.stream_decoder(false).step(u32::MAX).is_err());
}

#[test]
fn stream_decoder_holds_back_incomplete_characters() {
    let tok = byte_level();
    let mut decoder = tok.stream_decoder(false);
    // é = C3 A9, 🍕 = F0 9F 8D 95: nothing comes out until a character is complete.
    assert_eq!(decoder.step(byte_id(0xC3)).unwrap(), None);
    assert_eq!(decoder.step(byte_id(0xA9)).unwrap().as_deref(), Some("é"));
    for b in [0xF0, 0x9F, 0x8D] {
        assert_eq!(decoder.step(byte_id(b)).unwrap(), None);
    }
    assert_eq!(decoder.step(byte_id(0x95)).unwrap().as_deref(), Some("🍕"));
    assert_eq!(decoder.step(HELLO).unwrap().as_deref(), Some("hello"));
    assert_eq!(decoder.step(SP_WORLD).unwrap().as_deref(), Some(" world"));
    assert_eq!(decoder.flush().unwrap(), None);

    // A character cut off at the end comes out as U+FFFD on flush.
    assert_eq!(decoder.step(byte_id(0xF0)).unwrap(), None);
    assert_eq!(decoder.flush().unwrap().as_deref(), Some("\u{FFFD}"));

    // Bytes that never form a character are not held forever.
    let invalid: Vec<u32> = vec![byte_id(0xFF); 6];
    let chunks: Vec<String> = invalid.iter().filter_map(|&id| decoder.step(id).unwrap()).collect();
    assert!(!chunks.is_empty(), "invalid bytes must eventually be emitted");
    let mut all = chunks.concat();
    all.extend(decoder.flush().unwrap());
    assert_eq!(all, tok.decode(&invalid, false).unwrap());
}

#[test]
fn stream_decoder_matches_full_decode() {
    let tok = byte_level();
    for text in ["hello world", "naïve café 🍕🍕 日本語", "<|im_start|>hello<|im_end|> world"] {
        let ids = tok.encode(text, true).unwrap();
        for skip in [false, true] {
            assert_eq!(stream(&tok, &ids, skip).concat(), tok.decode(&ids, skip).unwrap(), "{text:?} skip={skip}");
        }
    }
    // Skipped special tokens produce no chunks at all.
    assert_eq!(stream(&tok, &[1, HELLO, 2], true), ["hello"]);
}

#[test]
fn from_file_loads_tokenizer_json_with_config() {
    let tok = byte_level();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("tokenizer.json");
    tok.inner().save(&json, false).unwrap();
    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        r#"{"bos_token": "<|endoftext|>", "eos_token": {"content": "<|im_end|>", "special": true}}"#,
    )
    .unwrap();
    let loaded = Tokenizer::from_file(&json).unwrap();
    assert_eq!(loaded.bos_id(), Some(0));
    assert_eq!(loaded.eos_ids(), [2, 0]);
    assert_eq!(loaded.vocab_size(), 269);
    let text = "<|im_start|>hello world<think> é";
    // tokenizer.json carries no BOS rule of ours, so add_special adds nothing here.
    assert_eq!(loaded.encode(text, true).unwrap(), tok.encode(text, false).unwrap());
    let ids = loaded.encode(text, false).unwrap();
    assert_eq!(loaded.decode(&ids, true).unwrap(), "hello world<think> é");

    let missing = dir.path().join("nope.json");
    let err = Tokenizer::from_file(&missing).unwrap_err();
    assert!(matches!(err, TokenizerError::File { .. }), "{err:?}");
    assert!(err.to_string().contains("nope.json"), "{err}");

    std::fs::write(dir.path().join("tokenizer_config.json"), r#"{"eos_token": "<|missing|>"}"#).unwrap();
    let err = Tokenizer::from_file(&json).unwrap_err();
    assert!(err.to_string().contains("<|missing|>"), "{err}");
}

// ---------------------------------------------------------------------------------------
// A tiny SentencePiece ("llama") vocabulary, checked against transformers
// ---------------------------------------------------------------------------------------

/// `<unk>`, `<s>`, `</s>`, the 256 byte tokens, single characters, then merged pieces scored
/// by the order a BPE would learn them, then a user-defined token. Identical to the list in
/// the Python script that produced [`SPM_CASES`].
fn spm_kvs() -> Vec<(&'static str, MetadataValue)> {
    let mut vocab: Vec<(String, f32, i32)> =
        vec![("<unk>".into(), 0.0, 2), ("<s>".into(), 0.0, CONTROL), ("</s>".into(), 0.0, CONTROL)];
    vocab.extend((0..=255u32).map(|b| (format!("<0x{b:02X}>"), 0.0, 6)));
    let chars = ["▁", "h", "e", "l", "o", "w", "r", "d", "t", "s", "a", "n", "i"];
    vocab.extend(chars.iter().enumerate().map(|(i, c)| (c.to_string(), -1000.0 - i as f32, NORMAL)));
    let pieces = [
        "ll", "▁h", "▁w", "or", "▁he", "llo", "▁t", "st", "ld", "▁hello", "▁wor", "es", "▁world", "▁te", "▁test", "▁a",
        "an", "in", "▁an",
    ];
    vocab.extend(pieces.iter().enumerate().map(|(i, p)| (p.to_string(), -(i as f32), NORMAL)));
    vocab.push(("<|user|>".into(), 0.0, USER_DEFINED));
    let tokens: Vec<&str> = vocab.iter().map(|v| v.0.as_str()).collect();
    let scores: Vec<f32> = vocab.iter().map(|v| v.1).collect();
    let types: Vec<i32> = vocab.iter().map(|v| v.2).collect();
    vec![
        ("tokenizer.ggml.model", string("llama")),
        ("tokenizer.ggml.tokens", strings(&tokens)),
        ("tokenizer.ggml.scores", f32s(&scores)),
        ("tokenizer.ggml.token_type", i32s(&types)),
        ("tokenizer.ggml.bos_token_id", MetadataValue::U32(1)),
        ("tokenizer.ggml.eos_token_id", MetadataValue::U32(2)),
        ("tokenizer.ggml.unknown_token_id", MetadataValue::U32(0)),
        ("tokenizer.ggml.add_bos_token", MetadataValue::Bool(true)),
    ]
}

/// (text, ids with special tokens, ids without, decode(ids without), decode(ids with, skip
/// special)) from transformers 5.24.0 on the same vocabulary.
#[allow(clippy::type_complexity)]
const SPM_CASES: &[(&str, &[u32], &[u32], &str, &str)] = &[
    ("hello world", &[1, 281, 284], &[281, 284], "hello world", "hello world"),
    (" hello  world", &[1, 281, 259, 284], &[281, 259, 284], "hello  world", "hello  world"),
    ("hello\nworld", &[1, 281, 13, 264, 275, 280], &[281, 13, 264, 275, 280], "hello\nworld", "hello\nworld"),
    ("test a test", &[1, 286, 287, 286], &[286, 287, 286], "test a test", "test a test"),
    (
        "naïve 🍕",
        &[1, 259, 270, 269, 198, 178, 121, 261, 259, 243, 162, 144, 152],
        &[259, 270, 269, 198, 178, 121, 261, 259, 243, 162, 144, 152],
        "naïve 🍕",
        "naïve 🍕",
    ),
    ("<s>hello</s>", &[1, 1, 260, 261, 277, 2], &[1, 260, 261, 277, 2], "<s>hello</s>", "hello"),
    ("an<|user|>in", &[1, 290, 291, 289], &[290, 291, 289], "an<|user|>in", "an<|user|>in"),
    ("hellohello", &[1, 281, 260, 261, 277], &[281, 260, 261, 277], "hellohello", "hellohello"),
    (
        "worldless tent",
        &[1, 284, 262, 283, 268, 285, 270, 267],
        &[284, 262, 283, 268, 285, 270, 267],
        "worldless tent",
        "worldless tent",
    ),
];

#[test]
fn sentencepiece_matches_transformers() {
    let tok = Tokenizer::from_gguf(&gguf_with(&spm_kvs())).unwrap();
    assert_eq!(tok.bos_id(), Some(1));
    assert_eq!(tok.eos_ids(), [2]);
    for &(text, with_special, plain, decoded, decoded_skip) in SPM_CASES {
        assert_eq!(tok.encode(text, true).unwrap(), with_special, "{text:?}");
        assert_eq!(tok.encode(text, false).unwrap(), plain, "{text:?}");
        assert_eq!(tok.decode(plain, false).unwrap(), decoded, "{text:?}");
        assert_eq!(tok.decode(with_special, true).unwrap(), decoded_skip, "{text:?}");
        for skip in [false, true] {
            assert_eq!(stream(&tok, with_special, skip).concat(), tok.decode(with_special, skip).unwrap(), "{text:?}");
        }
    }
}

#[test]
fn sentencepiece_without_space_prefix_and_with_explicit_merges() {
    let mut kvs = spm_kvs();
    kvs.push(("tokenizer.ggml.add_space_prefix", MetadataValue::Bool(false)));
    let tok = Tokenizer::from_gguf(&gguf_with(&kvs)).unwrap();
    // No `▁` is prepended, so the first word is cut from single characters.
    assert_eq!(tok.encode("hello world", false).unwrap(), [260, 261, 277, 284]);
    assert_eq!(tok.decode(&[281, 284], false).unwrap(), " hello world");

    // Merges in the file take precedence over scores.
    let kvs = spm_kvs();
    let file = with(kvs, "tokenizer.ggml.merges", Some(strings(&["l l", "ll o"])));
    let tok = Tokenizer::from_gguf(&file).unwrap();
    assert_eq!(tok.encode("hello", false).unwrap(), [259, 260, 261, 277]);
}

// ---------------------------------------------------------------------------------------
// Metadata errors
// ---------------------------------------------------------------------------------------

fn build_err(file: &GgufFile) -> TokenizerError {
    Tokenizer::from_gguf(file).expect_err("tokenizer must be refused")
}

#[test]
fn missing_keys_are_named() {
    let err = build_err(&with(byte_level_kvs(), "tokenizer.ggml.model", None));
    assert!(
        matches!(&err, TokenizerError::Metadata(GgufError::MissingKey { key }) if key == "tokenizer.ggml.model"),
        "{err:?}"
    );
    assert!(err.to_string().contains("tokenizer.ggml.model"), "{err}");

    let err = build_err(&with(byte_level_kvs(), "tokenizer.ggml.tokens", None));
    assert!(err.to_string().contains("tokenizer.ggml.tokens"), "{err}");

    let mut kvs = spm_kvs();
    kvs.retain(|(k, _)| *k != "tokenizer.ggml.scores");
    let err = build_err(&gguf_with(&kvs));
    assert!(matches!(err, TokenizerError::NoMergesOrScores), "{err:?}");
}

#[test]
fn unknown_models_and_pre_tokenizers_are_refused_by_name() {
    for model in ["bert", "t5", "rwkv", ""] {
        let err = build_err(&with(byte_level_kvs(), "tokenizer.ggml.model", Some(string(model))));
        assert!(matches!(&err, TokenizerError::UnsupportedModel { model: m } if m == model), "{err:?}");
        assert!(err.to_string().contains(&format!("\"{model}\"")), "{err}");
    }
    let mut kvs = spm_kvs();
    kvs.push(("general.architecture", string("gemma2")));
    let err = build_err(&gguf_with(&kvs));
    assert!(
        matches!(&err, TokenizerError::UnsupportedArchitecture { architecture } if architecture == "gemma2"),
        "{err:?}"
    );
    let mut kvs = spm_kvs();
    kvs.push(("general.architecture", string("llama")));
    assert!(Tokenizer::from_gguf(&gguf_with(&kvs)).is_ok());

    let err = build_err(&with(byte_level_kvs(), "tokenizer.ggml.pre", Some(string("chatglm-bpe"))));
    assert!(matches!(err, TokenizerError::UnsupportedPreTokenizer { .. }), "{err:?}");
    assert!(err.to_string().contains("chatglm-bpe") && err.to_string().contains("smollm"), "{err}");

    // Files from before `tokenizer.ggml.pre` existed get GPT-2's regex.
    let tok = Tokenizer::from_gguf(&with(byte_level_kvs(), "tokenizer.ggml.pre", None)).unwrap();
    assert_eq!(tok.encode("hello world", false).unwrap(), [HELLO, SP_WORLD]);
}

#[test]
fn malformed_metadata_is_an_error() {
    let short_types = i32s(&[NORMAL; 10]);
    let err = build_err(&with(byte_level_kvs(), "tokenizer.ggml.token_type", Some(short_types)));
    assert!(matches!(err, TokenizerError::LengthMismatch { actual: 10, expected: 269, .. }), "{err:?}");

    let err = build_err(&with(byte_level_kvs(), "tokenizer.ggml.token_type", Some(strings(&["x"]))));
    assert!(err.to_string().contains("tokenizer.ggml.token_type"), "{err}");

    let err = build_err(&with(byte_level_kvs(), "tokenizer.ggml.merges", Some(strings(&["h e", "hello"]))));
    assert!(matches!(&err, TokenizerError::BadMerge { index: 1, merge } if merge == "hello"), "{err:?}");

    // A merge of tokens that are not in the vocabulary is the BPE library's error, reported.
    let err = build_err(&with(byte_level_kvs(), "tokenizer.ggml.merges", Some(strings(&["xyz abc"]))));
    assert!(matches!(err, TokenizerError::Build { .. }), "{err:?}");

    let err = build_err(&with(byte_level_kvs(), "tokenizer.ggml.bos_token_id", Some(MetadataValue::U32(9999))));
    assert!(
        matches!(&err, TokenizerError::BadSpecialId { key, id: 9999, vocab_size: 269 } if key == "tokenizer.ggml.bos_token_id"),
        "{err:?}"
    );

    let err = build_err(&with(byte_level_kvs(), "tokenizer.ggml.eos_token_id", Some(MetadataValue::I32(-1))));
    assert!(err.to_string().contains("tokenizer.ggml.eos_token_id"), "{err}");

    let err = build_err(&with(
        byte_level_kvs(),
        "tokenizer.ggml.tokens",
        Some(MetadataValue::Array(MetadataArray::U32(vec![1]))),
    ));
    assert!(matches!(err, TokenizerError::Metadata(GgufError::WrongType { .. })), "{err:?}");

    let err = build_err(&with(byte_level_kvs(), "tokenizer.ggml.tokens", Some(strings::<&str>(&[]))));
    assert!(matches!(err, TokenizerError::EmptyVocabulary), "{err:?}");

    let err = build_err(&with(byte_level_kvs(), "tokenizer.ggml.add_bos_token", Some(string("yes"))));
    assert!(err.to_string().contains("tokenizer.ggml.add_bos_token"), "{err}");

    let mut kvs = spm_kvs();
    kvs.retain(|(k, _)| *k != "tokenizer.ggml.scores");
    kvs.push(("tokenizer.ggml.scores", f32s(&[0.0; 3])));
    let err = build_err(&gguf_with(&kvs));
    assert!(matches!(err, TokenizerError::LengthMismatch { actual: 3, .. }), "{err:?}");
}

// ---------------------------------------------------------------------------------------
// The real SmolLM2 GGUF
// ---------------------------------------------------------------------------------------

/// SmolLM2-135M-Instruct: (text, ids) from transformers (see the file header).
const SMOLLM2_CASES: &[(&str, &[u32])] = &[
    ("Hello, world! This is a test.", &[19556, 28, 905, 17, 669, 314, 253, 1028, 30]),
    ("  leading and trailing spaces  ", &[216, 2899, 284, 35079, 5600, 256]),
    ("12345 678", &[33, 34, 35, 36, 37, 216, 38, 39, 40]),
    (
        "Punctuation: (a), [b]; {c}... \"quoted\" 'single' — dash?!",
        &[
            64, 8859, 6584, 42, 365, 81, 643, 933, 82, 26695, 1662, 83, 109, 2026, 476, 385, 5036, 18, 637, 18536, 23,
            1841, 20740, 17593,
        ],
    ),
    ("naïve café 🍕", &[3546, 46494, 37366, 15107, 231, 239]),
    ("line one\nline two\n\n\tindented", &[1311, 582, 198, 1311, 827, 1116, 197, 526, 6574]),
    ("<|im_start|>user\nHi<|im_end|>", &[1, 4093, 198, 26843, 2]),
    ("I'm sure they'll say it's John's.", &[57, 5248, 2090, 502, 3060, 1643, 357, 506, 2322, 506, 30]),
    (
        "def f(x):\n    return x ** 2  # square",
        &[1604, 275, 24, 104, 727, 472, 1003, 1792, 1903, 216, 34, 216, 907, 5222],
    ),
    ("日本語のテキスト", &[23274, 115, 40993, 179, 120, 248, 26453, 11100, 224, 10391, 251, 10391, 134, 11100, 226]),
];

/// transformers' `apply_chat_template(messages, add_generation_prompt=True, tokenize=True)`
/// for the system + user conversation of `smollm2_chat_template_matches_transformers`.
const SMOLLM2_CHAT_IDS: &[u32] = &[
    1, 9690, 198, 2683, 359, 253, 19484, 11173, 30, 2, 198, 1, 4093, 198, 1780, 314, 216, 34, 27, 34, 47, 2, 198, 1,
    520, 9531, 198,
];

fn smollm2() -> Option<(GgufFile, Tokenizer)> {
    let path = smollm2_path()?;
    let gguf = GgufFile::open(&path).unwrap();
    let tok = Tokenizer::from_gguf(&gguf).unwrap();
    Some((gguf, tok))
}

#[test]
fn smollm2_encodes_like_transformers() {
    let Some((gguf, tok)) = smollm2() else { return };
    assert_eq!(gguf.get_str("tokenizer.ggml.pre").unwrap(), "smollm");
    assert_eq!(tok.vocab_size(), 49152);
    for &(text, expected) in SMOLLM2_CASES {
        assert_eq!(tok.encode(text, false).unwrap(), expected, "{text:?}");
        // add_bos_token is false for SmolLM2, so add_special changes nothing.
        assert_eq!(tok.encode(text, true).unwrap(), expected, "{text:?}");
    }
}

#[test]
fn smollm2_decodes_and_streams() {
    let Some((_, tok)) = smollm2() else { return };
    for &(text, ids) in SMOLLM2_CASES {
        assert_eq!(tok.decode(ids, false).unwrap(), text);
        let full = tok.decode(ids, true).unwrap();
        assert_eq!(stream(&tok, ids, true).concat(), full, "{text:?}");
        assert_eq!(stream(&tok, ids, false).concat(), text, "{text:?}");
    }
    assert_eq!(tok.decode(&[1, 4093, 198, 26843, 2], true).unwrap(), "user\nHi");
    // " 🍕" (F0 9F 8D 95 after the space) is three tokens: nothing comes out until the last.
    let mut decoder = tok.stream_decoder(false);
    assert_eq!(decoder.step(3546).unwrap().as_deref(), Some("na"));
    assert_eq!(decoder.step(15107).unwrap(), None);
    assert_eq!(decoder.step(231).unwrap(), None);
    assert_eq!(decoder.step(239).unwrap().as_deref(), Some(" 🍕"));
}

#[test]
fn smollm2_special_tokens() {
    let Some((_, tok)) = smollm2() else { return };
    assert_eq!(tok.bos_id(), Some(1));
    assert_eq!(tok.bos_token().as_deref(), Some("<|im_start|>"));
    assert_eq!(tok.eos_token().as_deref(), Some("<|im_end|>"));
    // <|im_end|> is the declared EOS; <|endoftext|> also ends generation.
    assert_eq!(tok.eos_ids(), [2, 0]);
    assert!(!tok.adds_bos());
    for (text, id) in
        [("<|endoftext|>", 0), ("<|im_start|>", 1), ("<|im_end|>", 2), ("<repo_name>", 3), ("<empty_output>", 16)]
    {
        assert_eq!(tok.token_to_id(text), Some(id));
        assert_eq!(tok.encode(text, false).unwrap(), [id], "{text} is one token");
        assert_eq!(tok.decode(&[id], true).unwrap(), "", "{text} is special");
    }
}

#[test]
fn smollm2_chat_template_matches_transformers() {
    use max_serve::chat_template::{ChatMessage, ChatTemplate};
    let Some((gguf, tok)) = smollm2() else { return };
    let template = ChatTemplate::from_gguf(&gguf).unwrap();
    assert!(!template.is_fallback());
    let messages =
        [ChatMessage::new("system", "You are a concise assistant."), ChatMessage::new("user", "What is 2+2?")];
    let prompt = template.render(&messages, true).unwrap();
    // From transformers' apply_chat_template(..., add_generation_prompt=True, tokenize=False).
    assert_eq!(
        prompt,
        "<|im_start|>system\nYou are a concise assistant.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    );
    assert_eq!(tok.encode(&prompt, false).unwrap(), SMOLLM2_CHAT_IDS);
    // Without a system message the template inserts its own (same reference).
    assert_eq!(
        template.render(&[ChatMessage::new("user", "Hi")], false).unwrap(),
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
    );
}

/// SmolLM2's vocabulary relabelled with other `tokenizer.ggml.pre` values; (text, ids) from
/// transformers for files written the same way (see the file header).
#[allow(clippy::type_complexity)]
const PRE_VARIANTS: &[(&str, &[(&str, &[u32])])] = &[
    (
        "gpt2",
        &[
            ("I'LL DO IT, don't you?", &[57, 23, 16421, 10108, 9627, 28, 1326, 982, 346, 47]),
            ("hello\n\n\nworld  \n  x", &[28120, 1116, 198, 6693, 256, 3805, 1792]),
            ("(hello) [world] x=-1; a.b", &[24, 28120, 25, 933, 6693, 77, 1792, 15196, 33, 43, 253, 30, 82]),
            ("12345 678 9", &[33, 34, 35, 36, 37, 216, 38, 39, 40, 216, 41]),
            ("   spaced    out   ", &[256, 23861, 333, 578, 333]),
            ("naïve café 🍕", &[3546, 46494, 37366, 15107, 231, 239]),
        ],
    ),
    (
        "llama-bpe",
        &[
            ("I'LL DO IT, don't you?", &[57, 23, 16421, 10108, 9627, 28, 1326, 982, 346, 47]),
            ("hello\n\n\nworld  \n  x", &[28120, 16506, 6693, 32057, 216, 1792]),
            ("(hello) [world] x=-1; a.b", &[24, 28120, 25, 933, 6693, 77, 1792, 15196, 33, 43, 253, 30, 82]),
            ("12345 678 9", &[33, 34, 35, 36, 37, 216, 38, 39, 40, 216, 41]),
            ("   spaced    out   ", &[256, 23861, 333, 578, 333]),
            ("naïve café 🍕", &[3546, 46494, 37366, 15107, 231, 239]),
        ],
    ),
    (
        "qwen2",
        &[
            ("I'LL DO IT, don't you?", &[57, 23, 16421, 10108, 9627, 28, 1326, 982, 346, 47]),
            ("hello\n\n\nworld  \n  x", &[28120, 16506, 6693, 32057, 216, 1792]),
            ("(hello) [world] x=-1; a.b", &[24, 28120, 25, 933, 6693, 77, 1792, 15196, 33, 43, 253, 30, 82]),
            ("12345 678 9", &[33, 34, 35, 36, 37, 216, 38, 39, 40, 216, 41]),
            ("   spaced    out   ", &[256, 23861, 333, 578, 333]),
            ("naïve café 🍕", &[3546, 46494, 37366, 15107, 231, 239]),
        ],
    ),
];

#[test]
fn pre_tokenizer_variants_match_transformers() {
    let Some((gguf, _)) = smollm2() else { return };
    let copy = |key: &'static str| (key, gguf.get(key).unwrap().clone());
    for &(pre, cases) in PRE_VARIANTS {
        let file = gguf_with(&[
            ("tokenizer.ggml.model", string("gpt2")),
            ("tokenizer.ggml.pre", string(pre)),
            copy("tokenizer.ggml.tokens"),
            copy("tokenizer.ggml.token_type"),
            copy("tokenizer.ggml.merges"),
            ("tokenizer.ggml.bos_token_id", MetadataValue::U32(1)),
            ("tokenizer.ggml.eos_token_id", MetadataValue::U32(2)),
        ]);
        let tok = Tokenizer::from_gguf(&file).unwrap();
        for &(text, expected) in cases {
            assert_eq!(tok.encode(text, false).unwrap(), expected, "pre={pre} {text:?}");
            assert_eq!(tok.decode(expected, false).unwrap(), text, "pre={pre}");
        }
    }
}
