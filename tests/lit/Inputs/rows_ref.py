"""Data for batched-rows.test: dense layers x[B, T, 37] @ w[37, 48] on batches of rows.

  rows_ref.py setup PREFIX            writes PREFIX.weights.safetensors and inputs per shape
  rows_ref.py check PREFIX dense|softmax B,T...   compares PREFIX.{kind}.B_T.npy with NumPy
"""
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "python"))
from maxtest import save_safetensors  # noqa: E402

SHAPES = ["1,1", "1,7", "3,5", "2,37", "5,13", "1,200"]
rng = np.random.default_rng(31)
W = (rng.standard_normal((37, 48)) * 0.3).astype(np.float32)
B = rng.standard_normal(48).astype(np.float32)
erf = np.vectorize(math.erf)

prefix = sys.argv[2]
if sys.argv[1] == "setup":
    save_safetensors(prefix + ".weights.safetensors", {"w": W, "b": B})
    for s in SHAPES:
        bt = tuple(int(v) for v in s.split(","))
        tag = s.replace(",", "_")
        np.save(f"{prefix}.x.{tag}.npy", rng.standard_normal(bt + (37,)).astype(np.float32))
        np.save(f"{prefix}.r.{tag}.npy", rng.standard_normal(bt + (48,)).astype(np.float32))
else:
    kind = sys.argv[3]
    for s in sys.argv[4:]:
        tag = s.replace(",", "_")
        x = np.load(f"{prefix}.x.{tag}.npy").astype(np.float64)
        h = x @ W
        if kind == "dense":
            h = h + B
            want = 0.5 * h * (1 + erf(h / math.sqrt(2))) + np.load(f"{prefix}.r.{tag}.npy")
        else:
            e = np.exp(h - h.max(-1, keepdims=True))
            want = e / e.sum(-1, keepdims=True)
        got = np.load(f"{prefix}.{kind}.{tag}.npy")
        assert got.shape == want.shape, (s, got.shape, want.shape)
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6, err_msg=f"{kind} {s}")
