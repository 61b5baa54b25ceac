//! The device memory that recorded CUDA graphs may hold (`MAX_CUDA_GRAPH_MB`), where a GPU
//! (or the PTX emulator) is present: a call whose graph would not fit runs eagerly, and the
//! least recently used graphs make room for a new one. Its own test binary: the budget is
//! read from the environment when a model loads, which no other test may see.

use max_runtime::{Device, InferenceSession, Tensor};

mod common;
use common::values;

#[test]
fn graphs_stay_within_their_memory_budget() {
    // One MB: graphs of up to 1365 rows fit (768 bytes a row).
    std::env::set_var("MAX_CUDA_GRAPH_MB", "1");
    // Two layers: at `r` rows, 256 r bytes of input and 512 r of temporaries (two buffers
    // in turn) for a recorded graph.
    let artifact = common::gpu::sm80_artifact(&common::gpu::chain_graph(2));
    let Some(model) = common::gpu::load_on_gpu(&InferenceSession::new(Device::Gpu(0)), &artifact) else { return };
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
