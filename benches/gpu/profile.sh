#!/usr/bin/env bash
# Hardware-counter profiles (Nsight Compute) of the kernels behind #7's open targets, run on
# a GPU machine after check.sh has been prepared (benches/gpu/prepare.sh): the TF32 matmul
# (B's transpose kernel, then the wgmma kernel; and the in-copy transpose of NOTES item 23)
# beside the bf16 one, the bf16 8B decode's matrix-vector products and attention, and the
# Q4_K few-rows kernel. About 90 s on an H200.
# Clocks are left alone (--clock-control none), as on the card's ordinary runs. Writes the
# details pages to $OUT/ncu.txt (or /tmp/ncu.txt) and, for the TF32 and bf16 matmuls, the
# per-instruction SASS counters to $OUT/ncu-sass.csv. Skips, saying so, where ncu is missing
# or cannot read the counters.
# Usage: bash benches/gpu/profile.sh [NAME ...]   (NAME: tf32, tf32_transpose, tf32c, bf16,
#   decode_gemv, decode_attention, q4k_down, q4k_up; without any, all)
set -uo pipefail
cd "$(dirname "$0")/../.."
g=.gpu
out=${OUT:-/tmp}
txt=$out/ncu.txt
sass=$out/ncu-sass.csv
: > "$txt"
: > "$sass"
ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1 || true)
[ -n "$ncu" ] || { echo "profile.sh: no ncu on this machine; skipped" | tee -a "$txt"; exit 0; }
rep=${TMPDIR:-/tmp}/max-ncu
mkdir -p "$rep"
sections=(--section SpeedOfLight --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis
  --section SchedulerStats --section WarpStateStats --section Occupancy --section LaunchStats
  --section InstructionStats --section SourceCounters)
# profile NAME KERNEL-REGEX SKIP COUNT -- COMMAND...: one report, its details page to $txt.
wanted=("$@")
[ ${#wanted[@]} -gt 0 ] || wanted=(tf32 tf32_transpose tf32c bf16 decode_gemv decode_attention q4k_down q4k_up)
profile() {
  local name=$1 kernels=$2 skip=$3 count=$4
  shift 5
  [[ " ${wanted[*]} " == *" $name "* ]] || return 0
  echo "== ncu: $name (kernels /$kernels/, skip $skip, count $count): $*" | tee -a "$txt"
  if timeout 180 "$ncu" --clock-control none --target-processes all -k "regex:$kernels" \
      --launch-skip "$skip" --launch-count "$count" "${sections[@]}" -f -o "$rep/$name" "$@" \
      > "$rep/$name.log" 2>&1; then
    "$ncu" --import "$rep/$name.ncu-rep" --page details >> "$txt" 2>&1
  else
    echo "ncu failed (exit $?); its log's tail:" | tee -a "$txt"
    tail -15 "$rep/$name.log" | tee -a "$txt"
  fi
}
# The matmuls: gpu-check time calls the model 3 times to warm up, so the fourth mm is warm.
# TF32 runs B's transpose kernel before each mm (the default), or transposes each slice as
# it is copied (tf32c, NOTES item 23).
profile tf32 '^mm$' 3 1 -- $g/gpu-check time $g/art/matmul_tf32.maxa --iters 1
profile tf32_transpose '^transpose$' 3 1 -- $g/gpu-check time $g/art/matmul_tf32.maxa --iters 1
profile tf32c '^mm$' 3 1 -- $g/gpu-check time $g/art/matmul_tf32c.maxa --iters 1
profile bf16 '^mm$' 3 1 -- $g/gpu-check time $g/art/matmul_bf16.maxa --iters 1
for name in tf32 tf32c bf16; do
  [ -f "$rep/$name.ncu-rep" ] || continue
  echo "== $name" >> "$sass"
  "$ncu" --import "$rep/$name.ncu-rep" --page source --csv --print-source sass >> "$sass" 2>&1 || true
done
# Decode: a 512-token prefill takes the tensor-core kernels but for its last row's head,
# and gpu-check decode prefills twice, so gemv1's launches 3 to 7 are the first decode step's
# layer 0 q/k/v, o, gate/up and down and layer 1's q/k/v; then the decode attention of two
# layers (the prefill's is attention_mma).
profile decode_gemv 'gemv1' 2 5 -- $g/gpu-check decode $g/art/llama8b_bf16.maxa --context 512 --steps 2
profile decode_attention '^attention$|^attention_rows$' 0 2 -- $g/gpu-check decode $g/art/llama8b_bf16.maxa --context 512 --steps 2
# The Q4_K few-rows kernel at one row (0.3 of the copy bandwidth at items 18 and 24): the
# down projection (256 blocks) and the up projection (896 blocks, no faster).
profile q4k_down 'qmatmul_few' 3 1 -- $g/gpu-check time $g/art/gemv_down_q4k.maxa --dim m=1 --iters 1
profile q4k_up 'qmatmul_few' 3 1 -- $g/gpu-check time $g/art/gemv_up_q4k.maxa --dim m=1 --iters 1
echo "profile.sh: details in $txt, SASS counters in $sass"
