#!/usr/bin/env bash
# Builds the GPU check bundle on a build machine (with LLVM; no GPU needed): the lean
# `gpu-check` runner, every op test's graph compiled for the GPU with its inputs and
# NumPy-expected outputs, custom_mlp with the CPU path's outputs as expected values, and the
# 4096^3 matmul artifacts. Writes .gpu/ (git-ignored, well under 64 MiB), which
# benches/gpu/check.sh runs on the GPU machine.
# Usage: bash benches/gpu/prepare.sh [--target cuda:sm_90]
set -euo pipefail
cd "$(dirname "$0")/../.."
target=cuda:sm_90
[ "${1:-}" = "--target" ] && target=$2
# shellcheck disable=SC1091
source ./llvm-env.sh
# shellcheck disable=SC1091
source scripts/python-env.sh
# shellcheck disable=SC1091
source scripts/cuda-env.sh
cargo build --release --locked -q -p max-tools --bin maxc --bin max
cargo build --release --locked -q -p max-gpu-check
out=.gpu
rm -rf "$out"
mkdir -p "$out/cases" "$out/art"
maxc=target/release/maxc
echo "prepare: op cases for $target" >&2
MAXC=$maxc MAX_GPU_CASES=$out/cases MAX_GPU_TARGET=$target python -m pytest -q -p no:cacheprovider tests/python/test_ops.py >&2
echo "prepare: custom_mlp (expected = the CPU path's outputs)" >&2
python - "$maxc" "$target" "$out/cases" <<'PY'
import json, subprocess, sys, tempfile
from pathlib import Path
import numpy as np
maxc, target, cases = sys.argv[1], sys.argv[2], Path(sys.argv[3])
case = cases / "custom_mlp"
case.mkdir(parents=True)
src = "examples/custom_mlp.mlir"
subprocess.run([maxc, "compile", src, "--target", target, "-o", case / "g.maxa"], check=True)
with tempfile.TemporaryDirectory() as t:
    cpu = Path(t) / "cpu.maxa"
    subprocess.run([maxc, "compile", src, "-o", cpu], check=True)
    rng = np.random.default_rng(3)
    runs = []
    for k, batch in enumerate([1, 64]):
        x = rng.standard_normal((batch, 768)).astype(np.float32)
        np.save(case / f"in{k}_x.npy", x)
        subprocess.run(["target/release/max", "run", cpu, "--input", f"x={case / f'in{k}_x.npy'}", "--output", case / f"want{k}_0.npy"], check=True)
        runs.append({"inputs": {"x": f"in{k}_x.npy"}, "outputs": [f"want{k}_0.npy"]})
(case / "case.json").write_text(json.dumps({"name": "custom_mlp (vs CPU)", "rtol": 1e-4, "atol": 1e-6, "runs": runs}))
PY
echo "prepare: custom op with a PTX kernel (examples/custom_ops/gpu_vector_add)" >&2
python - "$maxc" "$target" "$out/cases" <<'PY'
import json, shutil, subprocess, sys, tempfile
from pathlib import Path
import numpy as np
maxc, target, cases = sys.argv[1], sys.argv[2], Path(sys.argv[3])
case = cases / "custom_op_gpu_vector_add"
case.mkdir(parents=True)
with tempfile.TemporaryDirectory() as t:
    k = Path(t) / "k"
    shutil.copytree("examples/custom_ops/gpu_vector_add", k)
    subprocess.run(["cc", "-O2", "-fPIC", "-Iinclude", "-c", k / "vector_add.c", "-o", k / "v.o"], check=True)
    subprocess.run(["ar", "rcs", k / "libvector_add.a", k / "v.o"], check=True)
    subprocess.run([maxc, "compile", k / "graph.mlir", "--kernels", k, "--target", target, "-o", case / "g.maxa"], check=True)
rng = np.random.default_rng(5)
runs = []
for i, rows in enumerate([1, 37, 5000]):
    x = rng.standard_normal((rows, 8)).astype(np.float32)
    z = rng.standard_normal((rows, 8)).astype(np.float32)
    np.save(case / f"in{i}_x.npy", x)
    np.save(case / f"in{i}_z.npy", z)
    np.save(case / f"want{i}_0.npy", (x + np.maximum(z, 0)) * 2)
    runs.append({"inputs": {"x": f"in{i}_x.npy", "z": f"in{i}_z.npy"}, "outputs": [f"want{i}_0.npy"]})
(case / "case.json").write_text(json.dumps({"name": "gpu_vector_add (PTX custom op)", "rtol": 1e-6, "atol": 1e-6, "runs": runs}))
PY
echo "prepare: 4096^3 matmuls" >&2
for dt in bf16 f16 f32; do
  $maxc compile benches/gpu/graphs/matmul_$dt.mlir --target "$target" -o "$out/art/matmul_$dt.maxa"
done
$maxc compile benches/gpu/graphs/matmul_f32.mlir --target "$target" --allow-tf32 -o "$out/art/matmul_tf32.maxa"
# The mma.sync kernel too (what sm_80/sm_89 get), for comparison on the same card.
MAX_GPU_NO_WGMMA=1 $maxc compile benches/gpu/graphs/matmul_bf16.mlir --target "$target" -o "$out/art/matmul_bf16mma.maxa"
for g in gemv_up_bf16 gemv_down_bf16; do
  $maxc compile benches/gpu/graphs/$g.mlir --target "$target" --external-weights -o "$out/art/$g.maxa"
done
cp target/release/gpu-check "$out/"
strip "$out/gpu-check" 2>/dev/null || true
$maxc compile benches/gpu/graphs/matmul_bf16.mlir --target "$target" --emit ptx -o "$out/art/matmul_bf16.ptx"
du -sh "$out" >&2
