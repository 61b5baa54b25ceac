//! Artifacts compiled with `--external-weights`: no weight data in the file; the runtime
//! takes it from a .safetensors file (results identical to the self-contained artifact) or
//! generates it (deterministic per seed); loading without it fails with a clear error.

use max_compiler::{compile_source, CompileOptions, Emit, Target};
use max_runtime::{Artifact, Device, InferenceSession, RuntimeError, Tensor, WeightSource};

const GRAPH: &str = r#"
func.func @g(%x: tensor<?x16xf32> {max.name = "x"}) -> tensor<?x8xf32> {
  %w = "max.weight"() {name = "w"} : () -> tensor<16x32xf32>
  %v = "max.weight"() {name = "v"} : () -> tensor<32x8xf32>
  %h = "max.matmul"(%x, %w) : (tensor<?x16xf32>, tensor<16x32xf32>) -> tensor<?x32xf32>
  %r = "max.relu"(%h) : (tensor<?x32xf32>) -> tensor<?x32xf32>
  %y = "max.matmul"(%r, %v) : (tensor<?x32xf32>, tensor<32x8xf32>) -> tensor<?x8xf32>
  func.return %y : tensor<?x8xf32>
}
"#;

fn save(path: &std::path::Path, w_shape: [usize; 2]) {
    let w: Vec<u8> = (0..w_shape[0] * w_shape[1]).flat_map(|i| ((i % 7) as f32 * 0.1 - 0.3).to_le_bytes()).collect();
    let v: Vec<u8> = (0..32 * 8).flat_map(|i| ((i % 5) as f32 * 0.2 - 0.4).to_le_bytes()).collect();
    let wv = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, w_shape.to_vec(), &w).unwrap();
    let vv = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![32, 8], &v).unwrap();
    safetensors::serialize_to_file([("w", wv), ("v", vv)], None, path).unwrap();
}

fn compile(weights: Option<&std::path::Path>, external: bool) -> Artifact {
    let mut opts = CompileOptions::new(Target::host());
    if let Some(p) = weights {
        opts.weights.add_safetensors(p).unwrap();
    }
    opts.external_weights = external;
    Artifact::from_bytes(&compile_source(GRAPH, "g.mlir", &opts, Emit::Artifact).unwrap().bytes).unwrap()
}

#[test]
fn external_weights_come_from_a_file_or_a_generator() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("w.safetensors");
    save(&file, [16, 32]);
    let inline = compile(Some(&file), false);
    let external = compile(None, true);
    use max_runtime::artifact::SectionKind;
    let sections = &external.manifest().sections;
    assert!(!sections.iter().any(|s| s.kind == SectionKind::Weight), "the external artifact carries no weight data");
    assert_eq!(sections.iter().filter(|s| s.kind == SectionKind::External).map(|s| s.size).sum::<u64>(), (16 * 32 + 32 * 8) * 4);
    assert_eq!(external.external_weights().iter().map(|w| w.1.as_str()).collect::<Vec<_>>(), ["w", "v"]);

    let session = InferenceSession::new(Device::Cpu);
    let x = Tensor::from_slice(&[3, 16], &(0..48).map(|i| i as f32 * 0.05 - 1.0).collect::<Vec<_>>()).unwrap();
    let want = session.load(&inline).unwrap().execute(std::slice::from_ref(&x)).unwrap().remove(0).to_f32_vec();

    // Loading without the data says what to do.
    match session.load(&external) {
        Err(RuntimeError::ExternalWeights(names)) => assert_eq!(names, "w, v"),
        other => panic!("expected an external-weights error, got {other:?}"),
    }
    let from_file = external.with_weights(&WeightSource::Safetensors(file.clone())).unwrap();
    let got = session.load(&from_file).unwrap().execute(std::slice::from_ref(&x)).unwrap().remove(0).to_f32_vec();
    assert_eq!(got, want, "the same weights give the same results");

    let r1 = external.with_weights(&WeightSource::Random { seed: 3 }).unwrap();
    let r2 = external.with_weights(&WeightSource::Random { seed: 3 }).unwrap();
    let a = session.load(&r1).unwrap().execute(std::slice::from_ref(&x)).unwrap().remove(0).to_f32_vec();
    let b = session.load(&r2).unwrap().execute(std::slice::from_ref(&x)).unwrap().remove(0).to_f32_vec();
    assert_eq!(a, b, "generated weights are deterministic per seed");
    assert!(a.iter().all(|v| v.is_finite()) && a.iter().any(|v| *v != 0.0));

    // A file whose tensor has another shape is refused, naming it.
    let bad = dir.path().join("bad.safetensors");
    save(&bad, [32, 16]);
    let e = external.with_weights(&WeightSource::Safetensors(bad)).unwrap_err().to_string();
    assert!(e.contains("weight 'w' as f32 [16, 32]") && e.contains("[32, 16]"), "{e}");
}
