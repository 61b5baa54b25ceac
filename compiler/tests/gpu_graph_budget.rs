//! The device memory that recorded CUDA graphs may hold (`MAX_CUDA_GRAPH_MB`), where a GPU
//! (or the PTX emulator) is present: a call whose graph would not fit runs eagerly, and the
//! least recently used graphs make room for a new one. Its own test binary: the budget is
//! read from the environment when a model loads, which no other test may see.

use max_compiler::gpu::CudaTarget;
use max_compiler::{compile_source, CompileOptions, Emit, Target};
use max_runtime::{Artifact, Device, InferenceSession, RuntimeError, Tensor};

mod common;
use common::values;

/// Two matmul + softmax layers: at `r` rows, 256 r bytes of input and 512 r of temporaries
/// (two buffers of r x 64 f32 in turn) for a recorded graph.
const CHAIN: &str = r#"
func.func @g(%x: tensor<?x64xf32> {max.name = "x"}) -> tensor<?x64xf32> {
  %w = "max.weight"() {name = "w", init = "normal", scale = 0.2 : f64, seed = 5 : i64} : () -> tensor<64x64xf32>
  %m1 = "max.matmul"(%x, %w) : (tensor<?x64xf32>, tensor<64x64xf32>) -> tensor<?x64xf32>
  %s1 = "max.softmax"(%m1) {axis = -1 : i64} : (tensor<?x64xf32>) -> tensor<?x64xf32>
  %m2 = "max.matmul"(%s1, %w) : (tensor<?x64xf32>, tensor<64x64xf32>) -> tensor<?x64xf32>
  %s2 = "max.softmax"(%m2) {axis = -1 : i64} : (tensor<?x64xf32>) -> tensor<?x64xf32>
  func.return %s2 : tensor<?x64xf32>
}
"#;

#[test]
fn graphs_stay_within_their_memory_budget() {
    // One MB: graphs of up to 1365 rows fit (768 bytes a row).
    std::env::set_var("MAX_CUDA_GRAPH_MB", "1");
    let mut opts = CompileOptions::new(Target::named("x86-64").unwrap());
    opts.cuda = Some(CudaTarget::parse("cuda:sm_80").unwrap());
    let artifact = Artifact::from_bytes(&compile_source(CHAIN, "chain.mlir", &opts, Emit::Artifact).unwrap().bytes).unwrap();
    let model = match InferenceSession::new(Device::Gpu(0)).load(&artifact) {
        Ok(m) => m,
        Err(RuntimeError::Device(why)) => {
            eprintln!("skipped: no GPU to run on ({why})");
            return;
        }
        Err(e) => panic!("loading the chain artifact: {e}"),
    };
    let run = |rows: usize| {
        let x = Tensor::from_slice(&[rows, 64], &values(rows * 64, rows as u64, 1.0)).unwrap();
        let first = model.execute(std::slice::from_ref(&x)).unwrap().remove(0).to_f32_vec();
        for _ in 0..2 {
            assert_eq!(model.execute(std::slice::from_ref(&x)).unwrap().remove(0).to_f32_vec(), first, "{rows} rows");
        }
        model.device_memory().unwrap()
    };
    // 2000 rows (1.5 MB): too large to record, eager each time.
    let m = run(2000);
    assert_eq!((m.graphs, m.graph_temp_bytes), (0, 0), "{m:?}");
    // 400, 600 and 300 rows (300, 450 and 225 KB): all kept.
    run(400);
    run(600);
    let m = run(300);
    assert_eq!((m.graphs, m.graph_temp_bytes), (3, 512 * 1300), "{m:?}");
    // 900 rows (675 KB): the least recently used go until it fits, 400 rows and then 600.
    let m = run(900);
    assert_eq!((m.graphs, m.graph_temp_bytes), (2, 512 * 1200), "{m:?}");
    // 1300 rows (975 KB): both others go.
    let m = run(1300);
    assert_eq!((m.graphs, m.graph_temp_bytes), (1, 512 * 1300), "{m:?}");
}
