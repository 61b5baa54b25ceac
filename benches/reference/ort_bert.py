"""ONNX Runtime reference for BERT sentence embeddings (all-MiniLM-L6-v2): the same forward
pass as the compiled graph, built here as an ONNX graph from the model's safetensors
weights (embeddings and layer norm; per layer 12-head attention with the padding mask,
residual and layer norm, exact-GELU MLP, residual and layer norm; masked mean pooling and
L2 normalization). ORT applies its own graph optimizations (ORT_ENABLE_ALL).

Usage: ort_bert.py MODEL_DIR TOKENS.npy MASK.npy RUNS THREADS OUT.npy
Writes the embeddings to OUT.npy; prints {"median_ms": ..., "ort": version} last."""
import json
import math
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from ort_timing import median_ms, session

model_dir, tokens_path, mask_path, runs, threads, out_path = sys.argv[1:7]
runs, threads = int(runs), int(threads)
d = Path(model_dir)
cfg = json.loads((d / "config.json").read_text())
raw = (d / "model.safetensors").read_bytes()
n = int.from_bytes(raw[:8], "little")
header = json.loads(raw[8:8 + n])
W = {}
for name, info in header.items():
    if name != "__metadata__" and info["dtype"] == "F32":
        a, b = info["data_offsets"]
        W[name.removeprefix("bert.")] = np.frombuffer(raw[8 + n + a:8 + n + b], dtype="<f4").reshape(info["shape"])

H, NH, EPS = cfg["hidden_size"], cfg["num_attention_heads"], cfg["layer_norm_eps"]
HD = H // NH
nodes, inits = [], []
counter = [0]


def const(value, name=None):
    name = name or f"c{len(inits)}"
    inits.append(numpy_helper.from_array(np.asarray(value), name))
    return name


def op(kind, inputs, **attrs):
    counter[0] += 1
    out = f"{kind.lower()}{counter[0]}"
    nodes.append(helper.make_node(kind, inputs, [out], **attrs))
    return out


def linear(x, prefix):
    # PyTorch stores [out, in]; ONNX MatMul wants [in, out].
    return op("Add", [op("MatMul", [x, const(np.ascontiguousarray(W[prefix + ".weight"].T))]), const(W[prefix + ".bias"])])


def layer_norm(x, prefix):
    return op("LayerNormalization", [x, const(W[prefix + ".weight"]), const(W[prefix + ".bias"])], axis=-1, epsilon=EPS)


def heads(x):
    # [B, T, H] -> [B, NH, T, HD]
    return op("Transpose", [op("Reshape", [x, const(np.array([0, 0, NH, HD], np.int64))])], perm=[0, 2, 1, 3])


pos = op("Range", [const(np.array(0, np.int64)), op("Gather", [op("Shape", ["input_ids"]), const(np.array(1, np.int64))]), const(np.array(1, np.int64))])
x = op("Add", [op("Gather", [const(W["embeddings.word_embeddings.weight"]), "input_ids"]), op("Gather", [const(W["embeddings.position_embeddings.weight"]), pos])])
x = op("Add", [x, const(W["embeddings.token_type_embeddings.weight"][0])])
x = layer_norm(x, "embeddings.LayerNorm")
# Additive mask [B, 1, 1, T]: 0 for tokens, -1e4 for padding.
bias = op("Mul", [op("Sub", [const(np.float32(1)), "attention_mask"]), const(np.float32(-1e4))])
bias = op("Unsqueeze", [bias, const(np.array([1, 2], np.int64))])
for i in range(cfg["num_hidden_layers"]):
    p = f"encoder.layer.{i}."
    q, k, v = (heads(linear(x, p + f"attention.self.{t}")) for t in ("query", "key", "value"))
    s = op("Add", [op("Mul", [op("MatMul", [q, op("Transpose", [k], perm=[0, 1, 3, 2])]), const(np.float32(1 / math.sqrt(HD)))]), bias])
    ctx = op("MatMul", [op("Softmax", [s], axis=-1), v])
    ctx = op("Reshape", [op("Transpose", [ctx], perm=[0, 2, 1, 3]), const(np.array([0, 0, H], np.int64))])
    x = layer_norm(op("Add", [linear(ctx, p + "attention.output.dense"), x]), p + "attention.output.LayerNorm")
    m = linear(x, p + "intermediate.dense")
    erf = op("Erf", [op("Div", [m, const(np.float32(math.sqrt(2)))])])
    m = op("Mul", [op("Mul", [m, op("Add", [erf, const(np.float32(1))])]), const(np.float32(0.5))])
    x = layer_norm(op("Add", [linear(m, p + "output.dense"), x]), p + "output.LayerNorm")
mask3 = op("Unsqueeze", ["attention_mask", const(np.array([2], np.int64))])
summed = op("ReduceSum", [op("Mul", [x, mask3]), const(np.array([1], np.int64))], keepdims=0)
count = op("Max", [op("ReduceSum", [mask3, const(np.array([1], np.int64))], keepdims=0), const(np.float32(1e-9))])
mean = op("Div", [summed, count])
norm = op("Max", [op("Sqrt", [op("ReduceSum", [op("Mul", [mean, mean]), const(np.array([1], np.int64))], keepdims=1)]), const(np.float32(1e-12))])
nodes.append(helper.make_node("Div", [mean, norm], ["embeddings"]))
graph = helper.make_graph(
    nodes, "bert",
    [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["B", "T"]), helper.make_tensor_value_info("attention_mask", TensorProto.FLOAT, ["B", "T"])],
    [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["B", H])], inits)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
sess = session(model, threads)
feeds = {"input_ids": np.load(tokens_path).astype(np.int64), "attention_mask": np.load(mask_path).astype(np.float32)}
np.save(out_path, sess.run(None, feeds)[0])
print(json.dumps({"median_ms": median_ms(sess, feeds, runs, warmup=2), "ort": ort.__version__}))
