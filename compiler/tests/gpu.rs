//! The GPU backend end to end, where a GPU is present: a graph compiled for a cuda target
//! runs on gpu:0 and gives the CPU artifact's results. Without a GPU (or CUDA driver) the
//! test says it was skipped; `benches/gpu/check.sh` runs the full GPU check on a GPU machine.

use max_compiler::gpu::CudaTarget;
use max_compiler::{compile_source, CompileOptions, Emit, Target};
use max_runtime::{Artifact, Device, InferenceSession, RuntimeError, Tensor};

mod common;
use common::values;

const GRAPH: &str = r#"
func.func @g(%x: tensor<?x96xf32> {max.name = "x"}, %y: tensor<?x96xf32> {max.name = "y"}) -> tensor<?x64xf32> {
  %w = "max.weight"() {name = "w", init = "normal", scale = 0.1 : f64, seed = 3 : i64} : () -> tensor<96x64xf32>
  %a = "max.add"(%x, %y) : (tensor<?x96xf32>, tensor<?x96xf32>) -> tensor<?x96xf32>
  %r = "max.relu"(%a) : (tensor<?x96xf32>) -> tensor<?x96xf32>
  %m = "max.matmul"(%r, %w) : (tensor<?x96xf32>, tensor<96x64xf32>) -> tensor<?x64xf32>
  %s = "max.softmax"(%m) {axis = -1 : i64} : (tensor<?x64xf32>) -> tensor<?x64xf32>
  func.return %s : tensor<?x64xf32>
}
"#;

fn artifact(cuda: Option<CudaTarget>) -> Artifact {
    let mut opts = CompileOptions::new(Target::named("x86-64").unwrap());
    opts.cuda = cuda;
    Artifact::from_bytes(&compile_source(GRAPH, "gpu.mlir", &opts, Emit::Artifact).unwrap().bytes).unwrap()
}

#[test]
fn gpu_results_match_the_cpu() {
    let cpu = InferenceSession::new(Device::Cpu).load(&artifact(None)).unwrap();
    // sm_80 PTX runs on any GPU from Ampere on (the driver JIT-compiles it); sm_90's kernels
    // are launched as programmatic dependents (on Hopper and later).
    for chip in ["cuda:sm_80", "cuda:sm_90"] {
        let gpu_artifact = artifact(Some(CudaTarget::parse(chip).unwrap()));
        let model = match InferenceSession::new(Device::Gpu(0)).load(&gpu_artifact) {
            Ok(m) => m,
            Err(RuntimeError::Device(why)) if chip == "cuda:sm_80" => {
                eprintln!("skipped: no GPU to run on ({why})");
                return;
            }
            Err(RuntimeError::Device(why)) => {
                eprintln!("{chip}: not run on this GPU ({why})");
                continue;
            }
            Err(e) => panic!("loading the {chip} artifact: {e}"),
        };
        // With ptxas at compile time the sm_90 artifact carries SASS for sm_90(a), which a
        // Hopper GPU loads unless told not to; a driver that refuses it (as the PTX emulator
        // does) leaves the PTX, which every check below then runs.
        let loads = max_runtime::cuda::module_loads();
        let hopper = Device::Gpu(0).compute_capability().unwrap() == Some((9, 0));
        if chip == "cuda:sm_90" && hopper && max_compiler::gpu_sass::find_ptxas().is_some() {
            if std::env::var("MAX_GPU_SASS").is_ok_and(|v| v == "0") {
                assert!(loads.sass == 0 && loads.sass_refused.is_none() && loads.ptx > 0, "MAX_GPU_SASS=0 loads PTX only: {loads:?}");
            } else {
                assert!(loads.sass > 0 || loads.sass_refused.is_some(), "the SASS was not offered to the GPU: {loads:?}");
            }
            eprintln!("{chip}: kernel modules loaded {loads:?}");
        }
        for rows in [1usize, 5, 300] {
            let x = Tensor::from_slice(&[rows, 96], &values(rows * 96, 1, 1.0)).unwrap();
            let y = Tensor::from_slice(&[rows, 96], &values(rows * 96, 2, 1.0)).unwrap();
            let want = cpu.execute(&[x.clone(), y.clone()]).unwrap().remove(0).to_f32_vec();
            let got = model.execute(&[x, y]).unwrap().remove(0).to_f32_vec();
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() <= 1e-5 + 1e-4 * w.abs(), "{chip}, rows {rows}: gpu {g} vs cpu {w}");
            }
        }
    }
}

/// A call repeated at one shape is recorded into a CUDA graph (its second run) and replayed
/// (its third): both give the eager call's results, and the graph's temporaries share
/// buffers as the eager call's do, so it holds no more than the pool the eager call filled.
#[test]
fn recorded_graphs_share_temporaries_and_match_eager_calls() {
    // Four layers: seven temporaries in a row, at most two in use at once.
    let artifact = common::gpu::sm80_artifact(&common::gpu::chain_graph(4));
    let Some(model) = common::gpu::load_on_gpu(&InferenceSession::new(Device::Gpu(0)), &artifact) else { return };
    let x = Tensor::from_slice(&[300, 64], &values(300 * 64, 7, 1.0)).unwrap();
    let eager = model.execute(std::slice::from_ref(&x)).unwrap().remove(0).to_f32_vec();
    let after_eager = model.device_memory().unwrap();
    for run in ["recorded", "replayed"] {
        let got = model.execute(std::slice::from_ref(&x)).unwrap().remove(0).to_f32_vec();
        assert_eq!(got, eager, "the {run} graph's results differ from the eager call's");
    }
    let mem = model.device_memory().unwrap();
    eprintln!("after the eager call: {after_eager:?}; after the graph: {mem:?}");
    if mem.graphs == 0 {
        eprintln!("no CUDA graph was recorded (MAX_CUDA_GRAPHS=0?): memory not compared");
        return;
    }
    assert_eq!(mem.graphs, 1);
    assert!(
        mem.graph_temp_bytes <= after_eager.pooled_bytes,
        "the graph holds {} bytes of temporaries, the eager call needed {}",
        mem.graph_temp_bytes,
        after_eager.pooled_bytes
    );
}

/// Two models on one GPU, on two threads: one records a CUDA graph at each new shape (its
/// second call) while the other runs calls eagerly. The models share the device's stream,
/// and a capture takes in whatever is queued on it, so without the stream being held for
/// the capture's length the eager calls' launches were recorded into the other's graph
/// instead of run. Every result must equal a lone model's.
#[test]
fn graph_captures_and_eager_calls_on_two_threads() {
    let artifact = common::gpu::sm80_artifact(&common::gpu::chain_graph(4));
    let session = InferenceSession::new(Device::Gpu(0));
    let Some(lone) = common::gpu::load_on_gpu(&session, &artifact) else { return };
    let rows: Vec<usize> = (1..=24).collect();
    let input = |r: usize| Tensor::from_slice(&[r, 64], &values(r * 64, r as u64, 1.0)).unwrap();
    let want: Vec<Vec<f32>> = rows.iter().map(|&r| lone.execute(&[input(r)]).unwrap().remove(0).to_f32_vec()).collect();
    drop(lone);
    let (recording, eager) = (session.load(&artifact).unwrap(), session.load(&artifact).unwrap());
    std::thread::scope(|s| {
        s.spawn(|| {
            for (i, &r) in rows.iter().enumerate() {
                for call in 0..3 {
                    let got = recording.execute(&[input(r)]).unwrap().remove(0).to_f32_vec();
                    assert_eq!(got, want[i], "recording thread, {r} rows, call {call}");
                }
            }
        });
        s.spawn(|| {
            for _ in 0..3 {
                for (i, &r) in rows.iter().enumerate().rev() {
                    let got = eager.execute(&[input(r)]).unwrap().remove(0).to_f32_vec();
                    assert_eq!(got, want[i], "eager thread, {r} rows");
                }
            }
        });
    });
}

/// The device's default memory pool keeps what a dispatch frees for the next call, where the
/// driver's default unmaps it at each synchronization (and a call then maps its temporaries
/// again: TF32's transposed B cost about 300 us a call on an H200, NOTES item 24).
#[test]
fn the_device_pool_keeps_freed_memory() {
    let dev = match max_runtime::cuda::CudaDevice::open(0) {
        Ok(d) => d,
        Err(RuntimeError::Device(why)) => {
            eprintln!("skipped: no GPU to run on ({why})");
            return;
        }
        Err(e) => panic!("opening gpu:0: {e}"),
    };
    let want = std::env::var("MAX_CUDA_POOL_KEEP_MB").ok().and_then(|v| v.parse::<u64>().ok()).map_or(u64::MAX, |mb| mb << 20);
    assert_eq!(dev.pool_release_threshold().unwrap(), want);
}
