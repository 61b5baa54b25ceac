#!/usr/bin/env bash
# The GPU path without a GPU: every parity case of the GPU check (each op, custom_mlp, the
# custom ops, the LLM kernels, attention over a long cache) compiled for cuda:sm_90 and
# cuda:sm_80, loaded by the runtime's CUDA executor and run on max-cuda-emu, a stand-in for
# the CUDA driver that interprets the PTX on the CPU (tools/cuda-emu). The GPU end-to-end
# cargo test runs on it too. Results are compared with NumPy's or the CPU path's, as on a
# GPU machine (benches/gpu/check.sh).
# Usage: bash tests/gpu_emulated.sh   (called by scripts/test.sh; needs the environments it sets up)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck disable=SC1091
source ./llvm-env.sh
# shellcheck disable=SC1091
source scripts/python-env.sh
# shellcheck disable=SC1091
source scripts/cuda-env.sh
# shellcheck disable=SC1091
source scripts/cuda-emu.sh
work=$(mktemp -d "${TMPDIR:-/tmp}/max-gpu-emulated.XXXXXX")
trap 'rm -rf "$work"' EXIT
status=0
for chip in sm_90 sm_80; do
  echo "== GPU parity cases for cuda:$chip on the PTX emulator"
  bash benches/gpu/prepare.sh --target "cuda:$chip" --cases-only "$work/$chip" > "$work/$chip.log" 2>&1 ||
    { cat "$work/$chip.log"; echo "gpu_emulated.sh: building the cases for $chip failed" >&2; exit 1; }
  # The device reports the chip the cases were compiled for.
  if ! MAX_CUDA_EMU_SM=${chip#sm_} cuda_emu target/release/gpu-check cases "$work/$chip/cases" > "$work/$chip.run" 2>&1; then
    status=1
  fi
  grep -v '^ok ' "$work/$chip.run" | tail -40
done
if [ -f "${MAX_SMOLLM2_GGUF:-}" ]; then
  # A real model end to end: SmolLM2 (Q4_1) compiled for sm_90, its prefill and two greedy
  # tokens on the emulated GPU (about 4 minutes) against the CPU's tokens. The prompt's 77
  # tokens take the quantized matmuls' tensor-core path (16 rows and more); the decode
  # steps the few-rows kernels.
  echo "== SmolLM2 on the PTX emulator vs the CPU"
  target/release/maxc compile-model "$MAX_SMOLLM2_GGUF" --target cuda:sm_90 -o "$work/smollm2-gpu.maxa" 2> "$work/smollm2.log"
  target/release/maxc compile-model "$MAX_SMOLLM2_GGUF" -o "$work/smollm2-cpu.maxa" 2>> "$work/smollm2.log"
  prompt="The history of the city of Paris begins with a small settlement of a Celtic people called the Parisii on an island in the river Seine. Over two thousand years the town grew into the capital of a kingdom and then of a republic. In the Middle Ages it was the largest city in Europe, known for its university, its cathedral and its markets. Today the capital of France is"
  gen=(generate --prompt "$prompt" --max-tokens 2 --temperature 0 --json)
  target/release/max "${gen[@]}" --model "$work/smollm2-cpu.maxa" > "$work/cpu.json"
  if cuda_emu target/release/max "${gen[@]}" --model "$work/smollm2-gpu.maxa" --device gpu:0 > "$work/gpu.json" 2>> "$work/smollm2.log" &&
    python - "$work/cpu.json" "$work/gpu.json" <<'PY'
import json, sys
cpu, gpu = (json.load(open(p)) for p in sys.argv[1:3])
print(f"cpu tokens {cpu['tokens']}, emulated gpu tokens {gpu['tokens']}")
sys.exit(0 if cpu["tokens"] == gpu["tokens"] and len(cpu["tokens"]) == 2 else 1)
PY
  then
    echo "SmolLM2: the emulated GPU's tokens match the CPU's"
  else
    cat "$work/smollm2.log"
    echo "SmolLM2: FAILED (tokens differ, or the run failed)"
    status=1
  fi
fi
if [ -f "${MAX_SMOLLM2_GGUF:-}" ]; then
  # A bf16 Llama: SmolLM2 written as a Hugging Face directory (bf16 safetensors), compiled
  # for the emulated chip with its projections in bf16 (the decode kernels of the bf16
  # roofline target) against the CPU's f32 artifact: logits and 4 greedy tokens (about 3
  # minutes).
  echo "== SmolLM2 as a bf16 Hugging Face model on the PTX emulator vs the CPU"
  if cuda_emu cargo test --locked -q --workspace --test hf_models a_llama_directory_on_the_gpu -- --nocapture > "$work/hf-gpu.log" 2>&1 &&
    grep -q "greedy tokens" "$work/hf-gpu.log"; then
    grep -E "^sm_|test result" "$work/hf-gpu.log"
  else
    cat "$work/hf-gpu.log"
    echo "bf16 SmolLM2 on the emulated GPU: FAILED or skipped"
    status=1
  fi
fi
echo "== cargo test --test gpu --test gpu_graph_budget on the PTX emulator"
# It must run, not skip: a skip here means the emulator was not taken for the driver.
if cuda_emu cargo test --locked -q --workspace --test gpu --test gpu_graph_budget -- --nocapture > "$work/cargo-gpu.log" 2>&1 && ! grep -q skipped "$work/cargo-gpu.log"; then
  grep -E "test result" "$work/cargo-gpu.log"
else
  cat "$work/cargo-gpu.log"
  echo "cargo test --test gpu: FAILED or skipped on the emulator"
  status=1
fi
# A driver that refuses programmatic dependent launches: the runtime falls back to ordinary
# launches (the kernels' waits then return at once).
if MAX_CUDA_EMU_REFUSE_PDL=1 cuda_emu cargo test --locked -q --workspace --test gpu --test gpu_graph_budget -- --nocapture > "$work/cargo-gpu-nopdl.log" 2>&1 && ! grep -q skipped "$work/cargo-gpu-nopdl.log"; then
  echo "cargo test --test gpu with programmatic launches refused: passed"
else
  cat "$work/cargo-gpu-nopdl.log"
  echo "cargo test --test gpu with programmatic launches refused: FAILED or skipped on the emulator"
  status=1
fi
exit $status
