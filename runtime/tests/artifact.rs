//! Artifact validation and load-time refusal, without a compiler: artifacts are written
//! with `ArtifactWriter` directly.

use max_runtime::artifact::{ArtifactWriter, Buffer, BufferKind, Entry, Manifest, SectionKind, Target, TensorSig};
use max_runtime::{Artifact, DType, DimExpr, Device, InferenceSession, RuntimeError};

fn host_target() -> Target {
    Target { arch: std::env::consts::ARCH.into(), os: std::env::consts::OS.into(), cpu: "generic".into(), features: vec![] }
}

fn manifest(target: Target, entries: Vec<Entry>) -> Manifest {
    Manifest { format_version: 0, compiler_version: "test".into(), target, symbols: vec!["n".into()], entries, sections: vec![], gpu_modules: vec![] }
}

fn identity_entry(input_index: usize) -> Entry {
    let sig = TensorSig { name: "x".into(), dtype: DType::F32, shape: vec![DimExpr::Sym(0)], mutable: false };
    Entry {
        name: "id".into(),
        inputs: vec![sig.clone()],
        outputs: vec![TensorSig { name: "y".into(), ..sig }],
        buffers: vec![Buffer { dtype: DType::F32, shape: vec![DimExpr::Sym(0)], kind: BufferKind::Input(input_index) }],
        output_buffers: vec![0],
        dispatches: vec![],
    }
}

fn write(target: Target, entries: Vec<Entry>, kernels: Option<&[u8]>) -> Vec<u8> {
    let mut w = ArtifactWriter::new();
    if let Some(k) = kernels {
        w.add_section("kernels.x86_64.so", SectionKind::CpuKernels, k);
    }
    w.add_section("weight:w", SectionKind::Weight, &[7u8; 100]);
    w.finish(manifest(target, entries))
}

#[test]
fn round_trips_and_aligns_sections() {
    let bytes = write(host_target(), vec![identity_entry(0)], Some(b"not really an ELF"));
    let a = Artifact::from_bytes(&bytes).unwrap();
    assert_eq!(a.manifest().format_version, max_runtime::artifact::FORMAT_VERSION);
    assert_eq!(a.manifest().sections.len(), 2);
    for (i, s) in a.manifest().sections.iter().enumerate() {
        assert_eq!(s.offset % 64, 0, "section {} unaligned", s.name);
        assert_eq!(a.section_bytes(i).len() as u64, s.size);
    }
    assert_eq!(a.section_bytes(1), &[7u8; 100]);
    // A file on disk is mapped, with the same contents.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.maxa");
    std::fs::write(&p, &bytes).unwrap();
    assert_eq!(Artifact::open(&p).unwrap().bytes(), &bytes[..]);
}

#[test]
fn every_corruption_is_detected() {
    let bytes = write(host_target(), vec![identity_entry(0)], Some(b"kernels"));
    let mut appended = bytes.clone();
    appended.push(0);
    assert!(matches!(Artifact::from_bytes(&appended), Err(RuntimeError::Corrupt { .. })));
    // Flip every byte after the header in turn: each flip must be caught (no panics).
    for i in 64..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 0x5A;
        let r = Artifact::from_bytes(&b);
        // Padding between sections is not covered by a checksum; everything else is.
        let in_section = Artifact::from_bytes(&bytes).unwrap().manifest().sections.iter().any(|s| (s.offset..s.offset + s.size).contains(&(i as u64)));
        let manifest_off = u64::from_le_bytes(bytes[16..24].try_into().unwrap()) as usize;
        if in_section || i >= manifest_off {
            assert!(r.is_err(), "flipping byte {i} went unnoticed");
        }
    }
    for len in [0, 10, 63, 64, 100, bytes.len() - 1] {
        assert!(Artifact::from_bytes(&bytes[..len]).is_err(), "truncation to {len} went unnoticed");
    }
}

#[test]
fn refuses_other_targets_and_missing_features() {
    let other = Target { arch: "aarch64".into(), ..host_target() };
    let a = Artifact::from_bytes(&write(other, vec![identity_entry(0)], Some(b"k"))).unwrap();
    let e = InferenceSession::new(Device::Cpu).load(&a).unwrap_err();
    assert!(matches!(e, RuntimeError::Target { .. }), "{e}");
    assert!(e.to_string().contains("artifact targets aarch64-linux"), "{e}");

    let future = Target { features: vec!["avx2".into(), "imaginary-simd".into()], ..host_target() };
    let a = Artifact::from_bytes(&write(future, vec![identity_entry(0)], Some(b"k"))).unwrap();
    let e = InferenceSession::new(Device::Cpu).load(&a).unwrap_err().to_string();
    assert!(e.contains("needs CPU features this machine lacks") && e.contains("imaginary-simd"), "{e}");
}

#[test]
fn refuses_bad_programs_and_libraries() {
    let a = Artifact::from_bytes(&write(host_target(), vec![identity_entry(3)], Some(b"k"))).unwrap();
    let e = InferenceSession::new(Device::Cpu).load(&a).unwrap_err().to_string();
    assert!(e.contains("buffer 0 names input 3"), "{e}");

    let a = Artifact::from_bytes(&write(host_target(), vec![identity_entry(0)], None)).unwrap();
    let e = InferenceSession::new(Device::Cpu).load(&a).unwrap_err().to_string();
    assert!(e.contains("no CPU kernel library"), "{e}");

    let a = Artifact::from_bytes(&write(host_target(), vec![identity_entry(0)], Some(b"garbage, not ELF"))).unwrap();
    let e = InferenceSession::new(Device::Cpu).load(&a).unwrap_err();
    assert!(matches!(e, RuntimeError::KernelLoad(_)), "{e}");

    // Not a GPU artifact (and, in builds without the `cuda` feature, no GPU executor).
    let e = InferenceSession::new(Device::Gpu(0)).load(&a).unwrap_err().to_string();
    assert!(e.contains("gpu:0 is not available") || e.contains("compiled for a CPU"), "{e}");
}
