"""Helpers for tests that drive `maxc` and compare against NumPy."""
import json
import os
import struct
import subprocess
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def maxc_path() -> str:
    """The maxc binary under test (MAXC env var, else target/debug/maxc)."""
    return os.environ.get("MAXC", str(ROOT / "target" / "debug" / "maxc"))


def maxc(*args, check=True):
    """Runs maxc, returning the CompletedProcess."""
    p = subprocess.run([maxc_path(), *map(str, args)], capture_output=True, text=True)
    if check and p.returncode != 0:
        raise AssertionError(f"maxc {' '.join(map(str, args))} failed ({p.returncode}):\n{p.stderr}")
    return p


_ST_DTYPES = {np.float32: "F32", np.float16: "F16", np.int32: "I32", np.int64: "I64"}


def save_safetensors(path, tensors: dict):
    """Writes a .safetensors file (format: u64 header length, JSON header, raw data)."""
    header, blobs, offset = {}, [], 0
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr)
        data = arr.tobytes()
        header[name] = {"dtype": _ST_DTYPES[arr.dtype.type], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def run_artifact(artifact, inputs: dict, tmp: Path, n_outputs=1):
    """Runs `maxc run` with .npy inputs; returns the outputs as arrays."""
    args = ["run", artifact]
    for name, arr in inputs.items():
        p = tmp / f"in_{name}.npy"
        np.save(p, arr)
        args += ["--input", f"{name}={p}"]
    outs = [tmp / f"out{i}.npy" for i in range(n_outputs)]
    for o in outs:
        args += ["--output", o]
    maxc(*args)
    return [np.load(o) for o in outs]
