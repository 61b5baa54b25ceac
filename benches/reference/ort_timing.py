"""What the ONNX Runtime references share: a CPU session with the benchmark's intra-op
threads and full graph optimizations, and the median of timed runs after warm-up ones."""
import time

import onnxruntime as ort


def session(model, threads):
    """An InferenceSession for the ONNX `model` (a ModelProto) on `threads` intra-op threads."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def median_ms(sess, feeds, runs, warmup):
    """Median wall time of `runs` calls, in milliseconds, after `warmup` untimed ones."""
    for _ in range(warmup):
        sess.run(None, feeds)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, feeds)
        times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    return times[len(times) // 2]
