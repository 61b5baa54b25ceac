"""ONNX Runtime reference for custom_mlp (same graph: MatMul, Relu, MatMul, Softmax(-1),
dynamic batch), prints {"median_ms": ..., "ort": version} as its last line.
Usage: ort_mlp.py BATCH RUNS THREADS"""
import json
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from ort_timing import median_ms, session

batch, runs, threads = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(0)
w1 = (rng.standard_normal((768, 3072)) * 0.036).astype(np.float32)
w2 = (rng.standard_normal((3072, 768)) * 0.018).astype(np.float32)
graph = helper.make_graph(
    [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
     helper.make_node("MatMul", ["r", "w2"], ["o"]), helper.make_node("Softmax", ["o"], ["y"], axis=-1)],
    "custom_mlp",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 768])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 768])],
    [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
sess = session(model, threads)
x = np.full((batch, 768), 0.1, dtype=np.float32)
print(json.dumps({"median_ms": median_ms(sess, {"x": x}, runs, warmup=3), "ort": ort.__version__}))
