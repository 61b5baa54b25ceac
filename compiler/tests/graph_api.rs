//! The Graph API end to end: build `custom_mlp` in Rust, compile, execute with the runtime,
//! compare with a plain Rust reference at several batch sizes.

use max_compiler::{compile, ops, DType, Dim, Graph, Target, TensorType};
use max_runtime::{Device, InferenceSession, Tensor};

mod common;
use common::values;

fn matmul(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut c = vec![0f64; m * n];
    for i in 0..m {
        for p in 0..k {
            let av = a[i * k + p] as f64;
            for j in 0..n {
                c[i * n + j] += av * b[p * n + j] as f64;
            }
        }
    }
    c
}

fn reference_mlp(x: &[f32], w1: &[f32], w2: &[f32], batch: usize, d: usize, h: usize) -> Vec<f64> {
    let hid: Vec<f32> = matmul(x, w1, batch, d, h).into_iter().map(|v| v.max(0.0) as f32).collect();
    let out = matmul(&hid, w2, batch, h, d);
    let mut y = vec![0f64; batch * d];
    for r in 0..batch {
        let row = &out[r * d..(r + 1) * d];
        let mx = row.iter().cloned().fold(f64::MIN, f64::max);
        let sum: f64 = row.iter().map(|v| (v - mx).exp()).sum();
        for j in 0..d {
            y[r * d + j] = (row[j] - mx).exp() / sum;
        }
    }
    y
}

#[test]
fn custom_mlp_matches_reference() {
    let (d, h) = (768usize, 3072usize);
    let w1 = values(d * h, 1, 0.036);
    let w2 = values(h * d, 2, 0.018);
    let graph = Graph::with_named_inputs("custom_mlp", [("x", TensorType::new(DType::F32, [Dim::dynamic("batch"), Dim::from(768)]))]);
    let x = graph.input(0);
    let w1v = graph.weight_f32("w1", &[768, 3072], &w1);
    let w2v = graph.weight_f32("w2", &[3072, 768], &w2);
    let y = ops::softmax(&ops::matmul(&ops::relu(&ops::matmul(&x, &w1v)), &w2v), -1);
    assert_eq!(y.ty().unwrap().describe(&["batch".to_string()]), "[batch, 768] f32");
    graph.output([y]);
    let artifact = compile(&graph, Target::host()).expect("compiles");
    let model = InferenceSession::with_threads(Device::Cpu, 2).load(&artifact).expect("loads");
    for batch in [1usize, 7, 64] {
        let xv = values(batch * d, 100 + batch as u64, 1.0);
        let out = model.execute(&[Tensor::from_slice(&[batch, d], &xv).unwrap()]).expect("runs");
        assert_eq!(out[0].shape(), &[batch, d]);
        let got = out[0].to_vec::<f32>().unwrap();
        let want = reference_mlp(&xv, &w1, &w2, batch, d, h);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let err = (*g as f64 - w).abs();
            assert!(err <= 1e-4 * w.abs() + 1e-7, "batch {batch} element {i}: got {g}, want {w}");
        }
    }
}

/// Two models of one session called from several threads at once take turns on its
/// workers: every call still gives the numbers it gives alone, and none is lost.
#[test]
fn models_of_one_session_called_from_many_threads() {
    let build = |name: &str, n: i64, seed: u64| {
        let graph = Graph::with_named_inputs(name, [("x", TensorType::new(DType::F32, [Dim::dynamic("m"), Dim::from(256)]))]);
        let w = graph.weight_f32("w", &[256, n], &values(256 * n as usize, seed, 0.1));
        graph.output([ops::relu(&ops::matmul(&graph.input(0), &w))]);
        compile(&graph, Target::host()).expect("compiles")
    };
    let session = InferenceSession::with_threads(Device::Cpu, 2);
    let models = [session.load(&build("a", 512, 1)).unwrap(), session.load(&build("b", 96, 2)).unwrap()];
    let inputs: Vec<Tensor> = [1usize, 50, 200].iter().map(|&m| Tensor::from_slice(&[m, 256], &values(m * 256, m as u64, 1.0)).unwrap()).collect();
    let alone: Vec<Vec<Vec<f32>>> = models.iter().map(|model| inputs.iter().map(|x| model.execute(std::slice::from_ref(x)).unwrap()[0].to_vec::<f32>().unwrap()).collect()).collect();
    std::thread::scope(|s| {
        for t in 0..4 {
            let (models, inputs, alone) = (&models, &inputs, &alone);
            s.spawn(move || {
                for i in 0..30 {
                    let (mi, xi) = ((t + i) % 2, (t * 7 + i) % inputs.len());
                    let got = models[mi].execute(std::slice::from_ref(&inputs[xi])).unwrap()[0].to_vec::<f32>().unwrap();
                    assert!(got == alone[mi][xi], "thread {t} call {i}: model {mi} on input {xi} differs from its lone call");
                }
            });
        }
    });
}

#[test]
fn weights_from_safetensors_and_constants() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    let w: Vec<f32> = (0..12).map(|i| i as f32 * 0.5).collect();
    let bytes: Vec<u8> = w.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![4, 3], &bytes).unwrap();
    safetensors::serialize_to_file([("proj", view)], None, &path).unwrap();

    let graph = Graph::new("proj", [TensorType::new(DType::F32, [Dim::dynamic("n"), Dim::from(4)])]);
    graph.load_safetensors(&path).unwrap();
    let x = graph.input(0);
    let wv = graph.weight("proj", DType::F32, &[4, 3]);
    let bias = graph.constant_f32(&[3], &[1.0, -1.0, 0.5]);
    graph.output([ops::add(&ops::matmul(&x, &wv), &bias)]);
    let model = InferenceSession::new(Device::Cpu).load(&compile(&graph, Target::host()).unwrap()).unwrap();
    let xv = [1.0f32, 2.0, 3.0, 4.0, -1.0, 0.0, 1.0, 0.5];
    let out = model.execute(&[Tensor::from_slice(&[2, 4], &xv).unwrap()]).unwrap()[0].to_vec::<f32>().unwrap();
    let mut want = vec![0f32; 6];
    for r in 0..2 {
        for j in 0..3 {
            want[r * 3 + j] = (0..4).map(|k| xv[r * 4 + k] * w[k * 3 + j]).sum::<f32>() + [1.0, -1.0, 0.5][j];
        }
    }
    assert_eq!(out, want);
}

#[test]
fn shape_errors_point_at_the_rust_call_site() {
    let graph = Graph::new("bad", [TensorType::new(DType::F32, [Dim::from(2), Dim::from(3)])]);
    let x = graph.input(0);
    let line = line!() + 1;
    let y = ops::matmul(&x, &x);
    graph.output([y]);
    let err = compile(&graph, Target::host()).unwrap_err().to_string();
    assert!(err.contains(&format!("graph_api.rs:{line}:")), "{err}");
    assert!(err.contains("contraction dims differ"), "{err}");
}

#[test]
fn missing_outputs_and_weights_are_errors() {
    let graph = Graph::new("g", [TensorType::new(DType::F32, [Dim::from(2)])]);
    assert!(compile(&graph, Target::host()).unwrap_err().to_string().contains("has no outputs"));
    let w = graph.weight("nowhere", DType::F32, &[2]);
    graph.output([ops::add(&graph.input(0), &w)]);
    let err = compile(&graph, Target::host()).unwrap_err().to_string();
    assert!(err.contains("weight \"nowhere\" is not in any weights file"), "{err}");
}

#[test]
fn custom_op_from_an_mlir_kernel_library() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/custom_ops/softsign");
    let graph = Graph::new("g", [TensorType::new(DType::F32, [Dim::dynamic("n"), Dim::from(3)])]);
    graph.load_kernels(dir).unwrap();
    let x = graph.input(0);
    let y = ops::custom("softsign", &[&x], &[x.ty().unwrap()]).remove(0);
    graph.output([y]);
    let model = InferenceSession::new(Device::Cpu).load(&compile(&graph, Target::host()).unwrap()).unwrap();
    let xv = [-2.0f32, 0.0, 1.0, 3.0, -0.5, 9.0];
    let out = model.execute(&[Tensor::from_slice(&[2, 3], &xv).unwrap()]).unwrap()[0].to_vec::<f32>().unwrap();
    let want: Vec<f32> = xv.iter().map(|v| v / (1.0 + v.abs())).collect();
    assert_eq!(out, want);
    // An undeclared op is reported at this file's call site.
    let g2 = Graph::new("g2", [TensorType::new(DType::F32, [Dim::from(3)])]);
    let x2 = g2.input(0);
    let line = line!() + 1;
    let y2 = ops::custom("nope", &[&x2], &[x2.ty().unwrap()]).remove(0);
    g2.output([y2]);
    let err = compile(&g2, Target::host()).unwrap_err().to_string();
    assert!(err.contains(&format!("graph_api.rs:{line}:")) && err.contains("unknown custom op 'nope'"), "{err}");
}
