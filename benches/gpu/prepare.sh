#!/usr/bin/env bash
# Builds the GPU check bundle on a build machine (with LLVM; no GPU needed): the lean
# `gpu-check` runner, every op test's graph compiled for the GPU with its inputs and
# NumPy-expected outputs, custom_mlp with the CPU path's outputs as expected values, and the
# 4096^3 matmul artifacts; SmolLM2 and MiniLM (MAX_SMOLLM2_GGUF, MAX_MINILM_DIR) compiled
# for the GPU with their CPU generations and embeddings recorded, and the lean `max` CLI.
# Writes .gpu/ (git-ignored; under 64 MiB without .gpu/cases, which the check's device call
# leaves out) and .gpu-big/chunk-NN (56 MiB each: the parity cases, the real models and the
# lean CLI, a device call each), which benches/gpu/check.sh runs on the GPU machine.
# Usage: bash benches/gpu/prepare.sh [--target cuda:sm_90] [--cases-only DIR]
# (--cases-only: only the parity cases, into DIR/cases, for the PTX emulator run of
# tests/gpu_emulated.sh; no real models, no timing artifacts)
set -euo pipefail
cd "$(dirname "$0")/../.."
target=cuda:sm_90
out=.gpu
cases_only=0
while [ $# -gt 0 ]; do
  case "$1" in
    --target) target=$2; shift 2 ;;
    --cases-only) out=$2; cases_only=1; shift 2 ;;
    *) echo "prepare.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
# shellcheck disable=SC1091
source ./llvm-env.sh
# shellcheck disable=SC1091
source scripts/python-env.sh
# shellcheck disable=SC1091
source scripts/cuda-env.sh
cargo build --release --locked -q -p max-tools --bin maxc --bin max
cargo build --release --locked -q -p max-gpu-check
rm -rf "$out"
mkdir -p "$out/cases" "$out/art"
maxc=target/release/maxc
# A case built by the Python on standard input: argv is maxc, the target and the case's own
# (new) directory under $out/cases.
case_py() {
  mkdir -p "$out/cases/$1"
  python - "$maxc" "$target" "$out/cases/$1"
}
echo "prepare: op cases for $target" >&2
# With --cases-only (the test suite's emulated run) the op tests' CPU checks, which the suite
# has just run, are skipped: NumPy's values are the expected ones either way.
only=()
if [ $cases_only = 1 ]; then
  only=(MAX_GPU_CASES_ONLY=1)
fi
env "${only[@]}" MAXC=$maxc MAX_GPU_CASES=$out/cases MAX_GPU_TARGET=$target python -m pytest -q -p no:cacheprovider tests/python/test_ops.py >&2
echo "prepare: custom_mlp (expected = the CPU path's outputs)" >&2
case_py custom_mlp <<'PY'
import json, subprocess, sys, tempfile
from pathlib import Path
import numpy as np
maxc, target, case = sys.argv[1], sys.argv[2], Path(sys.argv[3])
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
case_py custom_op_gpu_vector_add <<'PY'
import json, shutil, subprocess, sys, tempfile
from pathlib import Path
import numpy as np
maxc, target, case = sys.argv[1], sys.argv[2], Path(sys.argv[3])
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
echo "prepare: custom op from an MLIR kernel library, inlined and fused (examples/custom_ops/softsign)" >&2
case_py custom_op_softsign <<'PY'
import json, subprocess, sys
from pathlib import Path
import numpy as np
maxc, target, case = sys.argv[1], sys.argv[2], Path(sys.argv[3])
k = "examples/custom_ops/softsign"
subprocess.run([maxc, "compile", f"{k}/graph.mlir", "--kernels", k, "--target", target, "-o", case / "g.maxa"], check=True)
w = np.array([[1, 0, 0, 2], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, -3]], np.float32)
rng = np.random.default_rng(6)
runs = []
for i, rows in enumerate([1, 7, 3000]):
    x = rng.standard_normal((rows, 4)).astype(np.float32)
    h = x @ w
    np.save(case / f"in{i}_x.npy", x)
    np.save(case / f"want{i}_0.npy", h / (1 + np.abs(h)) + 1)
    runs.append({"inputs": {"x": f"in{i}_x.npy"}, "outputs": [f"want{i}_0.npy"]})
(case / "case.json").write_text(json.dumps({"name": "softsign (MLIR-library custom op)", "rtol": 1e-5, "atol": 1e-6, "runs": runs}))
PY
echo "prepare: the LLM kernels (quantized matmuls, RoPE, KV-cache write and attention; expected = the CPU path's)" >&2
case_py llm_kernels <<'PY'
import json, subprocess, sys, tempfile
from pathlib import Path
import numpy as np
sys.path.insert(0, "tests/python")
from test_ops import make_blocks
maxc, target, case = sys.argv[1], sys.argv[2], Path(sys.argv[3])
src = "tests/lit/gpu/llm-kernels.mlir"
subprocess.run([maxc, "compile", src, "--target", target, "-o", case / "g.maxa"], check=True)
rng = np.random.default_rng(11)
wq, _ = make_blocks("q4_1", 256, 64, rng)
wk, _ = make_blocks("q8_0", 128, 64, rng)
w4, _ = make_blocks("q4_k", 8, 256, rng)
runs = []
with tempfile.TemporaryDirectory() as t:
    cpu = Path(t) / "cpu.maxa"
    subprocess.run([maxc, "compile", src, "-o", cpu], check=True)
    # A prefill of two rows (3 tokens each, one continuing at position 5), then one decode
    # step; the caches hold earlier random keys and values the queries attend to.
    for k, (starts, slots, seq) in enumerate([([5, 0], [1, 0], 3), ([9], [2], 1)]):
        n = len(starts) * seq
        ins = {
            "x": rng.standard_normal((n, 64)).astype(np.float32), "wq": wq, "wk": wk, "w4": w4,
            "y": rng.standard_normal((n, 256)).astype(np.float32),
            "positions": np.array([s + i for s in starts for i in range(seq)], np.int32),
            "start": np.array(starts, np.int32), "slot": np.array(slots, np.int32),
            "kc": rng.standard_normal((2, 3, 16, 2, 64)).astype(np.float16),
            "vc": rng.standard_normal((2, 3, 16, 2, 64)).astype(np.float16),
        }
        args = []
        for name, a in ins.items():
            np.save(case / f"in{k}_{name}.npy", a)
            args += ["--input", f"{name}={case / f'in{k}_{name}.npy'}"]
        outs = [f"want{k}_0.npy", f"want{k}_1.npy", f"want{k}_kc.npy"]
        subprocess.run(["target/release/max", "run", cpu, *args, "--output", case / outs[0], "--output", case / outs[1], "--output", f"kc={case / outs[2]}"], check=True)
        runs.append({"inputs": {name: f"in{k}_{name}.npy" for name in ins}, "outputs": outs[:2], "state": {"kc": outs[2]}})
(case / "case.json").write_text(json.dumps({"name": "LLM kernels (vs CPU)", "rtol": 2e-3, "atol": 2e-3, "runs": runs}))
PY
echo "prepare: attention over a long cache (head dim 128, 520 positions; 256, many rows; 64; 32, an f32 cache; expected = the CPU path's)" >&2
attention_py=$(cat <<'PY'
import json, os, subprocess, sys, tempfile
from pathlib import Path
import numpy as np
maxc, target, case = sys.argv[1], sys.argv[2], Path(sys.argv[3])
# Llama's attention shapes: 8 query heads over 2 kv heads of 128, an f16 cache; a prefill of
# 5 tokens continuing at position 400 and decode steps at 517 and 0 (a split row, rows
# shorter than the splits, one-key rows); prefills of two rows of 20 tokens (from 1 to 500
# keys) and of 100 (two tiles of 64 queries, the second partial, over up to 400 keys): the
# tensor cores with an f16 cache, 128-thread blocks a row otherwise. A second query's
# attention is cast to f16, a cast the GPU's attention kernel stores itself. ATT_HD=256:
# head dim 256, the 20-token prefill only (a 128-thread block per row must still cover the
# head dim). ATT_DT=f32: an f32 cache (a lane's 16 values of a row in four 16-byte loads
# instead of two).
hd = int(os.environ.get("ATT_HD", "128"))
dt = os.environ.get("ATT_DT", "f16")
npdt = {"f16": np.float16, "f32": np.float32}[dt]
g = case / "g.mlir"
g.write_text(f"""func.func @g(%q: tensor<?x8x{hd}xf32> {{max.name = "q"}}, %k: tensor<?x2x{hd}xf32> {{max.name = "k"}},
             %st: tensor<?xi32> {{max.name = "start"}}, %sl: tensor<?xi32> {{max.name = "slot"}},
             %kc: tensor<1x?x?x2x{hd}x{dt}> {{max.name = "kc", max.dims = ["", "B", "T", "", ""]}},
             %vc: tensor<1x?x?x2x{hd}x{dt}> {{max.name = "vc", max.dims = ["", "B", "T", "", ""]}},
             %q2: tensor<?x8x{hd}xf32> {{max.name = "q2"}}) -> (tensor<?x8x{hd}xf32>, tensor<?x8x{hd}xf16>) {{
  %kc2 = "max.cache_write"(%kc, %k, %st, %sl) {{layer = 0 : i64}} : (tensor<1x?x?x2x{hd}x{dt}>, tensor<?x2x{hd}xf32>, tensor<?xi32>, tensor<?xi32>) -> tensor<1x?x?x2x{hd}x{dt}>
  %a = "max.cached_attention"(%q, %kc2, %vc, %st, %sl) {{layer = 0 : i64}} : (tensor<?x8x{hd}xf32>, tensor<1x?x?x2x{hd}x{dt}>, tensor<1x?x?x2x{hd}x{dt}>, tensor<?xi32>, tensor<?xi32>) -> tensor<?x8x{hd}xf32>
  %a2 = "max.cached_attention"(%q2, %kc2, %vc, %st, %sl) {{layer = 0 : i64}} : (tensor<?x8x{hd}xf32>, tensor<1x?x?x2x{hd}x{dt}>, tensor<1x?x?x2x{hd}x{dt}>, tensor<?xi32>, tensor<?xi32>) -> tensor<?x8x{hd}xf32>
  %h = "max.cast"(%a2) : (tensor<?x8x{hd}xf32>) -> tensor<?x8x{hd}xf16>
  func.return %a, %h : tensor<?x8x{hd}xf32>, tensor<?x8x{hd}xf16>
}}
""")
subprocess.run([maxc, "compile", g, "--target", target, "-o", case / "g.maxa"], check=True)
rng = np.random.default_rng(13)
runs = []
with tempfile.TemporaryDirectory() as t:
    cpu = Path(t) / "cpu.maxa"
    subprocess.run([maxc, "compile", g, "-o", cpu], check=True)
    # The caches' earlier keys and values are one pair of files that every run reads (the
    # bundle carries them once).
    for name in ["kc", "vc"]:
        np.save(case / f"{name}.npy", rng.standard_normal((1, 2, 520, 2, hd)).astype(npdt))
    all_runs = [([400], [1], 5), ([517], [0], 1), ([0, 517], [1, 0], 1), ([480, 0], [1, 0], 20), ([0, 300], [1, 0], 100)]
    for r, (starts, slots, seq) in enumerate(all_runs if hd != 256 else all_runs[3:4]):
        n = len(starts) * seq
        ins = {
            "q": rng.standard_normal((n, 8, hd)).astype(np.float32),
            "k": rng.standard_normal((n, 2, hd)).astype(np.float32),
            "start": np.array(starts, np.int32), "slot": np.array(slots, np.int32),
            "q2": rng.standard_normal((n, 8, hd)).astype(np.float32),
        }
        files = {name: f"in{r}_{name}.npy" for name in ins} | {"kc": "kc.npy", "vc": "vc.npy"}
        for name, a in ins.items():
            np.save(case / files[name], a)
        args = [x for name, f in files.items() for x in ["--input", f"{name}={case / f}"]]
        outs = [f"want{r}_0.npy", f"want{r}_1.npy"]
        subprocess.run(["target/release/max", "run", cpu, *args, "--output", case / outs[0], "--output", case / outs[1]], check=True)
        runs.append({"inputs": files, "outputs": outs})
(case / "case.json").write_text(json.dumps({"name": f"attention over a long {dt} cache, head dim {hd} (vs CPU)", "rtol": 2e-3, "atol": 2e-3, "runs": runs}))
PY
)
case_py attention_long <<< "$attention_py"
ATT_HD=256 case_py attention_rows_hd256 <<< "$attention_py"
ATT_HD=64 case_py attention_hd64 <<< "$attention_py"
ATT_HD=32 ATT_DT=f32 case_py attention_f32_hd32 <<< "$attention_py"
echo "prepare: RoPE and the K/V cache writes in one kernel (merged and separate q/k/v; expected = the CPU path's)" >&2
case_py rope_cache <<'PY'
import json, subprocess, sys, tempfile
from pathlib import Path
import numpy as np
maxc, target, case = sys.argv[1], sys.argv[2], Path(sys.argv[3])
src = "tests/lit/gpu/rope-cache.mlir"
subprocess.run([maxc, "compile", src, "--target", target, "-o", case / "g.maxa"], check=True)
rng = np.random.default_rng(17)
runs = []
with tempfile.TemporaryDirectory() as t:
    cpu = Path(t) / "cpu.maxa"
    subprocess.run([maxc, "compile", src, "-o", cpu], check=True)
    # A prefill of two rows (3 tokens each, one continuing at position 5), a decode step,
    # and a decode step of two rows at the cache's last and first positions.
    for k, (starts, slots, seq) in enumerate([([5, 0], [1, 0], 3), ([9], [2], 1), ([15, 0], [1, 2], 1)]):
        n = len(starts) * seq
        ins = {
            "x": rng.standard_normal((n, 64)).astype(np.float32),
            "w0": (rng.standard_normal((64, 512)) / 8).astype(np.float32),
            "wq": (rng.standard_normal((64, 256)) / 8).astype(np.float32),
            "wk": (rng.standard_normal((64, 128)) / 8).astype(np.float32),
            "wv": (rng.standard_normal((64, 128)) / 8).astype(np.float32),
            "positions": np.array([s + i for s in starts for i in range(seq)], np.int32),
            "start": np.array(starts, np.int32), "slot": np.array(slots, np.int32),
            "kc": rng.standard_normal((2, 3, 16, 2, 64)).astype(np.float16),
            "vc": rng.standard_normal((2, 3, 16, 2, 64)).astype(np.float16),
        }
        args = []
        for name, a in ins.items():
            np.save(case / f"in{k}_{name}.npy", a)
            args += ["--input", f"{name}={case / f'in{k}_{name}.npy'}"]
        outs = [f"want{k}_0.npy", f"want{k}_1.npy", f"want{k}_kc.npy", f"want{k}_vc.npy"]
        state = ["--output", f"kc={case / outs[2]}", "--output", f"vc={case / outs[3]}"]
        subprocess.run(["target/release/max", "run", cpu, "--entry", "layers", *args, "--output", case / outs[0], "--output", case / outs[1], *state], check=True)
        runs.append({"inputs": {name: f"in{k}_{name}.npy" for name in ins}, "outputs": outs[:2], "state": {"kc": outs[2], "vc": outs[3]}})
(case / "case.json").write_text(json.dumps({"name": "RoPE and K/V cache writes in one kernel (vs CPU)", "rtol": 2e-3, "atol": 2e-3, "runs": runs}))
PY
if [ $cases_only = 1 ]; then
  exit 0
fi
# The parity cases (about 80 MB per chip), real models and the lean `max` CLI are more than one
# device call carries (64 MiB): they go as one tar in chunks of 56 MiB under .gpu-big/, one
# call each before the call that runs the check (which joins and unpacks them). The cases
# also stay in $out/cases for the tuning scripts, but the check's own call leaves them out.
big=.gpu-big
rm -rf "$big"
mkdir -p "$big/src"
cp -r "$out/cases" "$big/src/cases"
# The same cases compiled for sm_80 (the mma.sync and SIMT kernels that sm_80/sm_89 get),
# which a Hopper card runs as well (its driver compiles the sm_80 PTX).
if [ "$target" = cuda:sm_90 ]; then
  echo "prepare: the op cases for cuda:sm_80 too" >&2
  bash benches/gpu/prepare.sh --cases-only "$big/sm_80" --target cuda:sm_80
  mv "$big/sm_80/cases" "$big/src/cases-sm_80"
  rm -rf "$big/sm_80"
fi
# A real model: its outputs recorded on the CPU (gpu-check SUBCOMMAND --record), and the
# model compiled for the GPU into the big payload.
real_model() { # NAME SOURCE SUBCOMMAND
  $maxc compile-model "$2" -o "$big/cpu.maxa"
  target/release/gpu-check "$3" "$big/cpu.maxa" "$out/$3/want" --record --device cpu >&2
  rm "$big/cpu.maxa"
  $maxc compile-model "$2" --target "$target" -o "$big/src/$1.maxa"
}
if [ -f "${MAX_SMOLLM2_GGUF:-}" ]; then
  echo "prepare: SmolLM2 greedy generations on the CPU (recorded), and the model for the GPU" >&2
  real_model smollm2 "$MAX_SMOLLM2_GGUF" llm
fi
if [ -d "${MAX_MINILM_DIR:-}" ]; then
  echo "prepare: MiniLM embeddings on the CPU (recorded), and the model for the GPU" >&2
  real_model minilm "$MAX_MINILM_DIR" embed
fi
echo "prepare: the lean max CLI (no compiler; cuda) for max serve / max generate on the GPU" >&2
CARGO_TARGET_DIR=target/lean cargo build --release --locked -q -p max-tools --no-default-features --features cuda --bin max
cp target/lean/release/max "$big/src/max"
strip "$big/src/max" 2>/dev/null || true
# Compressed: the cases' PTX and the CLI shrink well (the weights do not).
(cd "$big/src" && tar czf - .) > "$big/all.tar"
cksum < "$big/all.tar" > "$out/big.cksum"
split -b 56M -d "$big/all.tar" "$big/chunk-"
rm -rf "$big/src" "$big/all.tar"
echo "prepare: 4096^3 matmuls" >&2
for dt in bf16 f16 f32; do
  $maxc compile benches/gpu/graphs/matmul_$dt.mlir --target "$target" -o "$out/art/matmul_$dt.maxa"
done
$maxc compile benches/gpu/graphs/matmul_f32.mlir --target "$target" --allow-tf32 -o "$out/art/matmul_tf32.maxa"
# The TF32 A/B (NOTES items 23, 24): each slice of B transposed as it is copied, against the
# default's transpose of all of B by a kernel of its own before the matmul.
MAX_GPU_WGMMA=tf32_transpose=0 $maxc compile benches/gpu/graphs/matmul_f32.mlir --target "$target" --allow-tf32 -o "$out/art/matmul_tf32c.maxa"
# The mma.sync kernel too (what sm_80/sm_89 get), for comparison on the same card.
MAX_GPU_NO_WGMMA=1 $maxc compile benches/gpu/graphs/matmul_bf16.mlir --target "$target" -o "$out/art/matmul_bf16mma.maxa"
# The Q4_K pair: quantized decode's few-rows kernel on the same shapes (33 MB each).
for g in gemv_up_bf16 gemv_down_bf16 gemv_up_q4k gemv_down_q4k; do
  $maxc compile benches/gpu/graphs/$g.mlir --target "$target" --external-weights -o "$out/art/$g.maxa"
done
# The A/B of the few-rows kernels' unrolling (NOTES item 20): one weight item a lane per
# loop trip, as before it.
for g in gemv_up_q4k gemv_down_q4k; do
  MAX_GPU_QDOT=unroll=1 $maxc compile benches/gpu/graphs/$g.mlir --target "$target" --external-weights -o "$out/art/${g}_unroll1.maxa"
done
echo "prepare: Llama-3.1-8B-shaped models, bf16 and Q4_K, weights generated on the GPU machine" >&2
cargo build --release --locked -q -p max-benches --bin synthetic_llm
target/release/synthetic_llm --preset llama-3.1-8b --dtype bf16 --target "$target" -o "$out/art/llama8b_bf16.maxa"
# The same shape quantized throughout to Q4_K (projections, head, embedding table): the
# few-rows kernel's decode against its roofline.
target/release/synthetic_llm --preset llama-3.1-8b --dtype q4_k --target "$target" -o "$out/art/llama8b_q4k.maxa"
# A/B: attention's prefill on the SIMT kernel instead of the tensor cores.
MAX_GPU_ATTENTION=mma_tokens=0 target/release/synthetic_llm --preset llama-3.1-8b --dtype q4_k --target "$target" -o "$out/art/llama8b_q4k_simt_attention.maxa"
cp target/release/gpu-check "$out/"
strip "$out/gpu-check" 2>/dev/null || true
$maxc compile benches/gpu/graphs/matmul_bf16.mlir --target "$target" --emit ptx -o "$out/art/matmul_bf16.ptx"
du -sh "$out" "$big" >&2
# What the check's call carries: all of $out but the cases.
size=$(du -sm --exclude=cases "$out" | cut -f1)
if [ "$size" -gt 60 ]; then
  echo "prepare.sh: $out without its cases is $size MiB; one device call carries 64 MiB in all" >&2
  exit 1
fi
