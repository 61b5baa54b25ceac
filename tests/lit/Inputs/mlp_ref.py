"""Reference data for the custom_mlp end-to-end test.

  mlp_ref.py setup PREFIX        writes PREFIX.weights.safetensors and PREFIX.x{B}.npy
  mlp_ref.py check PREFIX B...   compares PREFIX.y{B}.npy with NumPy's result
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "python"))
from maxtest import save_safetensors  # noqa: E402


def weights():
    rng = np.random.default_rng(7)
    return ((rng.standard_normal((768, 3072)) * 0.036).astype(np.float32),
            (rng.standard_normal((3072, 768)) * 0.018).astype(np.float32))


def reference(x, w1, w2):
    h = np.maximum(x @ w1, 0) @ w2
    e = np.exp(h - h.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


prefix = sys.argv[2]
if sys.argv[1] == "setup":
    w1, w2 = weights()
    save_safetensors(prefix + ".weights.safetensors", {"w1": w1, "w2": w2})
    rng = np.random.default_rng(11)
    for b in (1, 7, 33, 64):
        np.save(f"{prefix}.x{b}.npy", rng.standard_normal((b, 768)).astype(np.float32))
else:
    w1, w2 = weights()
    for b in sys.argv[3:]:
        x = np.load(f"{prefix}.x{b}.npy")
        y = np.load(f"{prefix}.y{b}.npy")
        ref = reference(x.astype(np.float64), w1.astype(np.float64), w2.astype(np.float64))
        assert y.shape == ref.shape and y.dtype == np.float32, (y.shape, y.dtype)
        np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-7, err_msg=f"batch {b}")
