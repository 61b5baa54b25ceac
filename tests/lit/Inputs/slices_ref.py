"""Data for batch-slices.test: attention as graph ops (q @ k^T, scale, two broadcast biases,
softmax, @ v) and a rank-3 batched matmul, at shapes that are not whole tiles.

  slices_ref.py setup PREFIX            writes inputs per shape (B, T; y's width is T + 3)
  slices_ref.py check PREFIX B,T...     compares PREFIX.{p,o,r}.B_T.npy with NumPy
"""
import os
import sys

import numpy as np

SHAPES = ["1,1", "1,5", "2,16", "3,37", "1,130"]
rng = np.random.default_rng(47)
prefix = sys.argv[2]


def load(name, tag):
    return np.load(f"{prefix}.{name}.{tag}.npy").astype(np.float64)


if sys.argv[1] == "setup":
    for s in SHAPES:
        b, t = (int(v) for v in s.split(","))
        tag = s.replace(",", "_")
        data = {
            "q": (b, 3, t, 24), "kt": (b, 3, 24, t), "v": (b, 3, t, 24),
            "bias": (b, 1, 1, t), "hbias": (3, 1, t), "x": (b, t, 20), "y": (b, 20, t + 3),
        }
        for name, shape in data.items():
            np.save(f"{prefix}.{name}.{tag}.npy", rng.standard_normal(shape).astype(np.float32))
else:
    for s in sys.argv[3:]:
        tag = s.replace(",", "_")
        h = (load("q", tag) @ load("kt", tag)) * np.float64(np.float32(0.2)) + load("bias", tag) + load("hbias", tag)
        e = np.exp(h - h.max(-1, keepdims=True))
        p = e / e.sum(-1, keepdims=True)
        want = {"p": p, "o": p @ load("v", tag), "r": load("x", tag) @ load("y", tag)}
        for name, w in want.items():
            got = np.load(f"{prefix}.{name}.{tag}.npy")
            assert got.shape == w.shape, (s, name, got.shape, w.shape)
            np.testing.assert_allclose(got, w, rtol=2e-5, atol=2e-5, err_msg=f"{name} {s}")
