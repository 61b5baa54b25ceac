#!/usr/bin/env bash
# The GPU check, run on a GPU machine from the repository root after benches/gpu/prepare.sh
# built .gpu/ elsewhere (the GPU machine needs no compiler). Prints one table: op parity
# (the LLM kernels included; compiled for sm_90, and again for sm_80), custom_mlp against
# the CPU path, SmolLM2's greedy tokens against the CPU's, MiniLM's embeddings, max serve,
# Llama-3.1-8B-shaped decode and prefill, and matmul throughput next to PyTorch/cuBLAS on
# the same card. Finishes in about 4 minutes on an H200.
# Usage: bash benches/gpu/check.sh [--quick]   (--quick: parity and the LLM only, no timings
# of the matmuls or the PyTorch reference)
set -uo pipefail
cd "$(dirname "$0")/../.."
quick=0
[ "${1:-}" = "--quick" ] && quick=1
g=.gpu
[ -x $g/gpu-check ] || { echo "check.sh: run benches/gpu/prepare.sh first (no $g/gpu-check)" >&2; exit 1; }
card=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)
echo "card: ${card:-unknown}"
log=${OUT:-/tmp}/gpu-check.log
: > "$log"
# The parity cases, the real models and the lean max CLI: .gpu-big/chunk-NN, each carried
# by a call of its own (see prepare.sh), joined and unpacked here.
bigdir=${TMPDIR:-/tmp}/max-gpu-big
llm_parity="SmolLM2: not run (no .gpu-big chunks)"
embed_parity="MiniLM: not run (no .gpu-big chunks)"
serve_result="max serve: not run (no .gpu-big chunks)"
if ls .gpu-big/chunk-* > /dev/null 2>&1; then
  if [ "$(cat .gpu-big/chunk-* | cksum)" = "$(cat $g/big.cksum)" ]; then
    rm -rf "$bigdir" && mkdir -p "$bigdir" && cat .gpu-big/chunk-* | tar xzf - -C "$bigdir"
  else
    llm_parity="SmolLM2: .gpu-big chunks missing or damaged"
  fi
fi
# The parity cases travel in the big payload (bundles built before they did: in .gpu/).
cases=$bigdir/cases
[ -d "$cases" ] || cases=$g/cases
parity="parity cases: not run (no .gpu-big chunks)"
if [ -d "$cases" ]; then
  echo "== parity cases" | tee -a "$log"
  $g/gpu-check cases "$cases" 2>&1 | tee -a "$log" | tail -25
  parity=$(grep '^cases:' "$log" | tail -1)
fi
parity80="parity cases compiled for sm_80: not run (none in the .gpu-big chunks)"
if [ -d "$bigdir/cases-sm_80" ]; then
  echo "== parity cases compiled for sm_80 (mma.sync and SIMT kernels; PTX compiled by the driver)" | tee -a "$log"
  $g/gpu-check cases "$bigdir/cases-sm_80" 2>&1 | tee -a "$log" | tail -10
  parity80="sm_80 PTX $(grep '^cases:' "$log" | tail -1)"
fi
if [ -f "$bigdir/smollm2.maxa" ]; then
  echo "== SmolLM2 on the GPU vs the CPU's recording" | tee -a "$log"
  timeout 240 $g/gpu-check llm "$bigdir/smollm2.maxa" $g/llm/want 2>&1 | tee -a "$log"
  llm_parity=$(grep '^llm parity:' "$log" | tail -1)
fi
if [ -f "$bigdir/minilm.maxa" ]; then
  echo "== MiniLM on the GPU vs the CPU's recording" | tee -a "$log"
  timeout 120 $g/gpu-check embed "$bigdir/minilm.maxa" $g/embed/want 2>&1 | tee -a "$log"
  embed_parity=$(grep '^embed parity:' "$log" | tail -1)
fi
if [ -x "$bigdir/max" ] && [ -f "$bigdir/smollm2.maxa" ]; then
  echo "== max generate and max serve on the GPU" | tee -a "$log"
  timeout 60 "$bigdir/max" generate --model "$bigdir/smollm2.maxa" --device gpu:0 --prompt "The capital of France is" --max-tokens 12 --temperature 0 --stats 2>&1 | tee -a "$log"
  models=(--model "$bigdir/smollm2.maxa" --served-model-name smollm2)
  [ -f "$bigdir/minilm.maxa" ] && models+=(--model "$bigdir/minilm.maxa" --served-model-name minilm)
  serve_result=$(timeout 150 python3 benches/gpu/serve_check.py "$bigdir/max" "${models[@]}" --devices gpu:0 2>&1 | tee -a "$log" | tail -1)
fi
echo "== Llama-3.1-8B-shaped decode at batch 1 (bf16, generated weights)" | tee -a "$log"
[ -f $g/art/llama8b_bf16.maxa ] && timeout 240 $g/gpu-check decode $g/art/llama8b_bf16.maxa --context 512 --steps 64 2>&1 | tee -a "$log"
echo "== Llama-3.1-8B-shaped decode at batch 1 (Q4_K throughout, generated weights)" | tee -a "$log"
[ -f $g/art/llama8b_q4k.maxa ] && timeout 180 $g/gpu-check decode $g/art/llama8b_q4k.maxa --context 512 --steps 64 2>&1 | tee -a "$log"
# A/B at run time, the same artifacts: kernels launched the ordinary way instead of as
# programmatic dependents (sm_90).
for a in llama8b_bf16 llama8b_q4k; do
  echo "== A/B: $a decode with programmatic dependent launch off (MAX_GPU_PDL=0)" | tee -a "$log"
  [ -f $g/art/$a.maxa ] && MAX_GPU_PDL=0 timeout 120 $g/gpu-check decode $g/art/$a.maxa --context 512 --steps 64 2>&1 | sed 's/^decode: /decode (MAX_GPU_PDL=0): /' | tee -a "$log"
done
# A/B: the bf16 artifact loaded from its PTX, which the driver compiles (26-34 s at item 18,
# before artifacts carried SASS), against the decode's load above from the SASS. (On a
# machine whose driver cache already holds that PTX, a rerun of the check, both are fast.)
echo "== A/B: llama8b_bf16 loaded from its PTX (MAX_GPU_SASS=0) instead of its SASS" | tee -a "$log"
[ -f $g/art/llama8b_bf16.maxa ] && MAX_GPU_SASS=0 timeout 120 $g/gpu-check load $g/art/llama8b_bf16.maxa 2>&1 | sed 's/^load: /load (MAX_GPU_SASS=0): /' | tee -a "$log"
# A long prompt: its prefill is where attention's tensor-core kernel shows (4096 tokens,
# about 270 M (query, key) pairs a layer), and decode steps then read a 4096-key cache.
echo "== Llama-3.1-8B-shaped prefill of 4096 tokens, then decode (Q4_K)" | tee -a "$log"
[ -f $g/art/llama8b_q4k.maxa ] && timeout 150 $g/gpu-check decode $g/art/llama8b_q4k.maxa --context 4096 --steps 32 2>&1 | tee -a "$log"
if [ $quick = 0 ]; then
  # A/B: the same prefill with attention on the SIMT kernel (compiled with
  # MAX_GPU_ATTENTION=mma_tokens=0), then per-dispatch profiles (eager launches timed with
  # events: MAX_PROFILE), to the log only.
  echo "== A/B: the 4096-token prefill with attention on the SIMT kernel" | tee -a "$log"
  [ -f $g/art/llama8b_q4k_simt_attention.maxa ] && timeout 150 $g/gpu-check decode $g/art/llama8b_q4k_simt_attention.maxa --context 4096 --steps 8 2>&1 | tee -a "$log" | grep '^decode: prefill'
  echo "== profiles (in $log)"
  for run in "llama8b_bf16 512" "llama8b_q4k 4096" "llama8b_q4k_simt_attention 4096"; do
    read -r a c <<< "$run"
    echo "== profile: $a, context $c" >> "$log"
    [ -f $g/art/$a.maxa ] && MAX_PROFILE=1 timeout 150 $g/gpu-check decode $g/art/$a.maxa --context "$c" --steps 8 >> "$log" 2>&1
  done
fi
# The card's clocks vary between runs (seen here: cuBLAS bf16 from 525 to 725 TFLOP/s), so
# the reference runs before and after our kernels and the table takes its best figures.
if [ $quick = 0 ]; then
echo "== PyTorch reference (before)" | tee -a "$log"
timeout 120 python3 benches/gpu/torch_reference.py 2>&1 | tee -a "$log"
echo "== matmul 4096^3 (our kernels)" | tee -a "$log"
flops=137438953472
for a in bf16 f16 bf16mma tf32 tf32c f32; do
  iters=20; [ $a = f32 ] && iters=3
  [ -f $g/art/matmul_$a.maxa ] || continue
  timeout 120 $g/gpu-check time $g/art/matmul_$a.maxa --iters $iters --flops $flops 2>&1 | tee -a "$log"
done
echo "== decode-shaped bf16 matmuls (weights' bytes per call)" | tee -a "$log"
for m in 1 8; do
  timeout 60 $g/gpu-check time $g/art/gemv_up_bf16.maxa --dim m=$m --iters 30 --bytes 117440512 2>&1 | tee -a "$log"
  timeout 60 $g/gpu-check time $g/art/gemv_down_bf16.maxa --dim m=$m --iters 30 --bytes 117440512 2>&1 | tee -a "$log"
done
echo "== decode-shaped Q4_K matmuls (the few-rows kernel, and its A/B with one weight item a loop trip: _unroll1; weights' bytes per call)" | tee -a "$log"
for m in 1 8 15; do
  for d in up down; do
    for v in "" _unroll1; do
      [ -f $g/art/gemv_${d}_q4k$v.maxa ] && timeout 60 $g/gpu-check time $g/art/gemv_${d}_q4k$v.maxa --dim m=$m --iters 30 --bytes 33030144 2>&1 | tee -a "$log"
    done
  done
done
timeout 60 $g/gpu-check time "$cases/custom_mlp/g.maxa" --dim batch=64 --iters 20 2>&1 | tee -a "$log"
timeout 60 $g/gpu-check time "$cases/custom_mlp/g.maxa" --dim batch=1 --iters 20 2>&1 | tee -a "$log"
echo "== PyTorch reference (after)" | tee -a "$log"
timeout 120 python3 benches/gpu/torch_reference.py 2>&1 | tee -a "$log"
fi
echo
echo "== table"
python3 - "$log" <<'PY'
import re, sys
log = open(sys.argv[1]).read()
ours = {m.group(1): float(m.group(2)) for m in re.finditer(r"matmul_(\w+)\.maxa: kernels [\d.]+ ms per call, ([\d.]+) TFLOP/s", log)}
ref = {}
for m in re.finditer(r"torch matmul (\w+): ([\d.]+) TFLOP/s", log):
    ref[m.group(1)] = max(ref.get(m.group(1), 0.0), float(m.group(2)))
ref["bf16mma"] = ref.get("bf16")
# tf32c: each slice of B transposed as it is copied (the A/B of NOTES items 23 and 24).
ref["tf32c"] = ref.get("tf32")
print(f"{'matmul 4096^3':<16}{'max TFLOP/s':>12}{'torch TFLOP/s':>15}{'ratio':>8}")
for k in ["bf16", "f16", "bf16mma", "tf32", "tf32c", "f32"]:
    o, r = ours.get(k), ref.get(k)
    ratio = f"{o / r:.2f}" if o and r else "-"
    print(f"{k:<16}{(f'{o:.1f}' if o else '-'):>12}{(f'{r:.1f}' if r else '-'):>15}{ratio:>8}")
for m in re.finditer(r"custom_mlp/g\.maxa(?: \[[^\]]*\])?: kernels ([\d.]+) ms per call", log):
    print(f"custom_mlp kernels {m.group(1)} ms per call (batch 64, then 1)")
for m in re.finditer(r"custom_mlp/g\.maxa(?: \[[^\]]*\])?: call with transfers ([\d.]+) ms \(CUDA graph replay\)", log):
    print(f"custom_mlp call with transfers, CUDA graph replay: {m.group(1)} ms (batch 64, then 1)")
best = {}
for m in re.finditer(r"torch custom_mlp batch (\d+): ([\d.]+) ms", log):
    best[m.group(1)] = min(best.get(m.group(1), 1e9), float(m.group(2)))
for b, t in sorted(best.items()):
    print(f"torch custom_mlp batch {b}: {t} ms")
bw = [float(x) for x in re.findall(r"copy bandwidth: ([\d.]+) GB/s", log)]
if bw:
    print(f"device copy bandwidth (read+write): {max(bw):.0f} GB/s")
for m in re.finditer(r"(gemv_\w+)\.maxa \[m=(\d+)\]: kernels ([\d.]+) ms per call, ([\d.]+) GB/s", log):
    frac = f" = {float(m.group(4)) / max(bw):.2f} of copy bandwidth" if bw else ""
    print(f"{m.group(1)} m={m.group(2)}: {m.group(3)} ms, {m.group(4)} GB/s{frac}")
PY
grep '^llm timing' "$log" | tail -1
grep -E '^decode( \(MAX_GPU_PDL=0\))?: (loaded|launches|device memory|prefill)|^load \(MAX_GPU_SASS=0\):|^cases: kernel modules' "$log"
echo "parity: $parity"
echo "$parity80"
echo "$llm_parity"
echo "$embed_parity"
echo "$serve_result"
