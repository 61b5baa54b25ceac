"""Data for column-split.test: y = softmax(x @ w + b) * 2 + c, with w [37, 48] (k not a
multiple of the k-unroll, 3 weight panels) and rows that are not whole 6-row tiles.

  column_split_ref.py setup PREFIX        writes PREFIX.weights.safetensors, PREFIX.x{R}.npy
  column_split_ref.py check PREFIX R...   compares PREFIX.y{R}.npy with NumPy's result
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "python"))
from maxtest import save_safetensors  # noqa: E402

ROWS = (1, 2, 5, 7, 13, 200)


def weights():
    rng = np.random.default_rng(21)
    return {
        "w": (rng.standard_normal((37, 48)) * 0.3).astype(np.float32),
        "b": rng.standard_normal(48).astype(np.float32),
        "c": rng.standard_normal(48).astype(np.float32),
    }


prefix = sys.argv[2]
ws = weights()
if sys.argv[1] == "setup":
    save_safetensors(prefix + ".weights.safetensors", ws)
    rng = np.random.default_rng(22)
    for r in ROWS:
        np.save(f"{prefix}.x{r}.npy", rng.standard_normal((r, 37)).astype(np.float32))
else:
    for r in sys.argv[3:]:
        x = np.load(f"{prefix}.x{r}.npy").astype(np.float64)
        h = x @ ws["w"] + ws["b"]
        e = np.exp(h - h.max(-1, keepdims=True))
        want = e / e.sum(-1, keepdims=True) * 2 + ws["c"]
        got = np.load(f"{prefix}.y{r}.npy")
        assert got.shape == want.shape, (r, got.shape)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=f"rows {r}")
