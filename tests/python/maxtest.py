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


def maxc(*args, check=True, env=None):
    """Runs maxc (with `env`'s variables added to the environment), returning the
    CompletedProcess."""
    full_env = {**os.environ, **env} if env else None
    p = subprocess.run([maxc_path(), *map(str, args)], capture_output=True, text=True, env=full_env)
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


def cuda_compile_enabled() -> bool:
    """Whether op tests also compile each graph for a GPU target: when libdevice is installed
    (scripts/cuda-env.sh sets MAX_CUDA_TOOLKIT) or GPU cases are being recorded."""
    return bool(os.environ.get("MAX_CUDA_TOOLKIT")) or bool(os.environ.get("MAX_GPU_CASES"))


def gpu_case(src: Path, runs, rtol: float, atol: float, name: str = None, flags=(), env=None):
    """Compiles `src` for the GPU target (MAX_GPU_TARGET, default cuda:sm_90) and, when
    MAX_GPU_CASES names a folder, records a case there for benches/gpu/check.sh to run on a
    GPU: the artifact, and per run its inputs and the expected outputs as .npy files.
    `runs` is a list of (inputs: dict name -> array, wanted: list of arrays); `flags` are
    extra compile flags (--allow-tf32), `env` tuning knobs for the compile
    (MAX_GPU_QMATMUL=tc_rows=0). A test that records several cases gets them numbered."""
    if not cuda_compile_enabled():
        return
    target = os.environ.get("MAX_GPU_TARGET", "cuda:sm_90")
    out_dir = os.environ.get("MAX_GPU_CASES")
    if name is None:
        name = os.environ.get("PYTEST_CURRENT_TEST", src.stem).split(" ")[0]
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in name)[-120:]
    case = Path(out_dir) / safe if out_dir else src.parent / "gpu_case"
    k = 2
    while out_dir and case.exists():
        case = Path(out_dir) / f"{safe}_{k}"
        k += 1
    case.mkdir(parents=True, exist_ok=True)
    maxc("compile", src, "--target", target, *flags, "-o", case / "g.maxa", env=env)
    if not out_dir:
        return
    # The graph and flags too, so the case can be recompiled (benches/gpu/tune.sh).
    (case / "g.mlir").write_text(src.read_text())
    meta = {"name": name, "rtol": rtol, "atol": atol, "flags": list(flags), "env": env or {}, "runs": []}
    for k, (inputs, wanted) in enumerate(runs):
        ins = {}
        for n, arr in inputs.items():
            p = f"in{k}_{n}.npy"
            np.save(case / p, np.ascontiguousarray(arr))
            ins[n] = p
        outs = []
        for j, w in enumerate(wanted):
            p = f"want{k}_{j}.npy"
            np.save(case / p, np.ascontiguousarray(w))
            outs.append(p)
        meta["runs"].append({"inputs": ins, "outputs": outs})
    (case / "case.json").write_text(json.dumps(meta, indent=1))


def free_port():
    """A loopback port nothing listens on now."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args, env=None, timeout=120):
    """Starts `max serve ARGS --port P` and waits until /health answers 200; returns
    (process, base URL). A server that exits while loading fails the test with its stderr."""
    import time
    import urllib.request
    port = free_port()
    proc = subprocess.Popen([str(Path(maxc_path()).with_name("max")), "serve", *map(str, args), "--port", str(port)],
                            stderr=subprocess.PIPE, text=True, env=env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout
    while True:
        try:
            with urllib.request.urlopen(base + "/health", timeout=1) as r:
                if r.status == 200:
                    return proc, base
        except Exception:
            pass
        assert proc.poll() is None, proc.stderr.read()
        assert time.time() < deadline, "server did not become ready"
        time.sleep(0.2)


def stop_server(proc):
    """SIGTERM, then the server must finish in-flight work and exit 0."""
    import signal
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0, proc.stderr.read()
