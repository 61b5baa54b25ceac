//! Shared by the GGUF, tokenizer and chat-template tests: GGUF value encoding and a
//! metadata-only file writer, so tests can describe tokenizers (or break them) without a
//! model file.

#![allow(dead_code)] // each test binary uses a different subset

pub mod server;

use max_serve::gguf::{GgufFile, MetadataArray, MetadataValue};

/// Appends a GGUF string (u64 length, bytes).
pub fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

/// Appends a GGUF array (element type, count, elements).
pub fn put_array(out: &mut Vec<u8>, a: &MetadataArray) {
    out.extend((a.elem_type() as u32).to_le_bytes());
    out.extend((a.len() as u64).to_le_bytes());
    match a {
        MetadataArray::U8(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
        MetadataArray::I8(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
        MetadataArray::U16(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
        MetadataArray::I16(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
        MetadataArray::U32(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
        MetadataArray::I32(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
        MetadataArray::F32(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
        MetadataArray::Bool(v) => v.iter().for_each(|&x| out.push(x as u8)),
        MetadataArray::String(v) => v.iter().for_each(|x| put_str(out, x)),
        MetadataArray::Array(v) => v.iter().for_each(|x| put_array(out, x)),
        MetadataArray::U64(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
        MetadataArray::I64(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
        MetadataArray::F64(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
    }
}

/// Appends a typed GGUF metadata value.
pub fn put_value(out: &mut Vec<u8>, v: &MetadataValue) {
    out.extend((v.value_type() as u32).to_le_bytes());
    match v {
        MetadataValue::U8(x) => out.extend(x.to_le_bytes()),
        MetadataValue::I8(x) => out.extend(x.to_le_bytes()),
        MetadataValue::U16(x) => out.extend(x.to_le_bytes()),
        MetadataValue::I16(x) => out.extend(x.to_le_bytes()),
        MetadataValue::U32(x) => out.extend(x.to_le_bytes()),
        MetadataValue::I32(x) => out.extend(x.to_le_bytes()),
        MetadataValue::F32(x) => out.extend(x.to_le_bytes()),
        MetadataValue::Bool(x) => out.push(*x as u8),
        MetadataValue::String(x) => put_str(out, x),
        MetadataValue::Array(a) => put_array(out, a),
        MetadataValue::U64(x) => out.extend(x.to_le_bytes()),
        MetadataValue::I64(x) => out.extend(x.to_le_bytes()),
        MetadataValue::F64(x) => out.extend(x.to_le_bytes()),
    }
}

/// A GGUF v3 file with these metadata entries and no tensors.
pub fn gguf_with(kvs: &[(&str, MetadataValue)]) -> GgufFile {
    let mut out = Vec::new();
    out.extend(b"GGUF");
    out.extend(3u32.to_le_bytes());
    out.extend(0u64.to_le_bytes());
    out.extend((kvs.len() as u64).to_le_bytes());
    for (key, value) in kvs {
        put_str(&mut out, key);
        put_value(&mut out, value);
    }
    GgufFile::parse(out).expect("test GGUF parses")
}

pub fn string(s: &str) -> MetadataValue {
    MetadataValue::String(s.to_string())
}

pub fn strings<S: AsRef<str>>(v: &[S]) -> MetadataValue {
    MetadataValue::Array(MetadataArray::String(v.iter().map(|s| s.as_ref().to_string()).collect()))
}

pub fn i32s(v: &[i32]) -> MetadataValue {
    MetadataValue::Array(MetadataArray::I32(v.to_vec()))
}

pub fn f32s(v: &[f32]) -> MetadataValue {
    MetadataValue::Array(MetadataArray::F32(v.to_vec()))
}

/// GPT-2's byte alphabet: byte `b` is spelled by this char in byte-level vocabularies
/// (printable Latin-1 bytes stand for themselves, the rest are shifted past U+0100).
pub fn byte_char(b: u8) -> char {
    let printable = |b: u8| (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
    if printable(b) {
        return b as char;
    }
    let shifted = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + shifted).unwrap()
}

/// The path of the real SmolLM2 GGUF, or `None` (after saying so) when the test should skip.
pub fn smollm2_path() -> Option<std::path::PathBuf> {
    match std::env::var_os("MAX_SMOLLM2_GGUF") {
        Some(p) => Some(p.into()),
        None => {
            println!(
                "skipped: set MAX_SMOLLM2_GGUF to the SmolLM2-135M-Instruct GGUF (see serve/tests/fetch_smollm2.sh)"
            );
            None
        }
    }
}

/// SmolLM2 compiled once per test binary, into Cargo's temporary folder for integration
/// tests (`target/tmp`) under the binary's name: the next run overwrites it, so runs leave
/// nothing behind in the system's temporary directory.
#[cfg(feature = "compile")]
pub fn smollm2_artifact() -> Option<std::path::PathBuf> {
    static PATH: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let gguf = smollm2_path()?;
        let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("smollm2-{}.maxa", env!("CARGO_CRATE_NAME")));
        std::fs::write(&out, max_serve::compile::compile_gguf(&gguf, max_compiler::Target::host()).unwrap()).unwrap();
        Some(out)
    })
    .clone()
}
