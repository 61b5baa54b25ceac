"""NumPy reference for custom_mlp: prints {"median_ms": ..., "blas": ...} as its last line.
Usage: numpy_mlp.py BATCH RUNS"""
import json
import sys
import time

import numpy as np

batch, runs = int(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
w1 = (rng.standard_normal((768, 3072)) * 0.036).astype(np.float32)
w2 = (rng.standard_normal((3072, 768)) * 0.018).astype(np.float32)
x = np.full((batch, 768), 0.1, dtype=np.float32)


def mlp(x):
    h = np.maximum(x @ w1, 0) @ w2
    e = np.exp(h - h.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


for _ in range(3):
    mlp(x)
times = []
for _ in range(runs):
    t = time.perf_counter()
    mlp(x)
    times.append((time.perf_counter() - t) * 1e3)
times.sort()
try:
    blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"]
except Exception:  # older NumPy
    blas = "unknown"
print(json.dumps({"median_ms": times[len(times) // 2], "blas": blas}))
