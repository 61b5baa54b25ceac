#!/usr/bin/env bash
# Tuning the Hopper matmul: builds .gpu/tune/ with the 4096^3 bf16 and TF32 matmuls and the
# f16 and TF32 matmul parity cases compiled for each wgmma configuration (MAX_GPU_WGMMA), and
# .gpu/tune/run.sh, which times and checks them all on a GPU machine in one go. Run after
# prepare.sh.
# Usage: bash benches/gpu/tune.sh [CONFIG ...]   (CONFIG: a MAX_GPU_WGMMA value such as
# bn=256,stages=4,overlap=1; without any, a sweep of tile widths and ring depths)
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck disable=SC1091
source ./llvm-env.sh >/dev/null
# shellcheck disable=SC1091
source scripts/cuda-env.sh
maxc=target/release/maxc
t=.gpu/tune
rm -rf "$t"
mkdir -p "$t"
run="$t/run.sh"
echo 'set -u; g=.gpu' > "$run"
configs=("$@")
[ ${#configs[@]} -gt 0 ] || configs=("bn=128,stages=3" "bn=128,stages=4" "bn=128,stages=4,overlap=1" "bn=128,stages=6,overlap=1" "bn=256,stages=3" "bn=256,stages=4" "bn=256,stages=4,overlap=1")
for v in "${configs[@]}"; do
  d="$t/$(echo "$v" | tr ',=' '__')"
  mkdir -p "$d/cases"
  MAX_GPU_WGMMA=$v $maxc compile benches/gpu/graphs/matmul_bf16.mlir --target cuda:sm_90 -o "$d/matmul_bf16.maxa"
  MAX_GPU_WGMMA=$v $maxc compile benches/gpu/graphs/matmul_f32.mlir --target cuda:sm_90 --allow-tf32 -o "$d/matmul_tf32.maxa"
  for c in .gpu/cases/*matmul_f16_tiles* .gpu/cases/*matmul_tf32*; do
    flags=()
    case "$c" in *tf32*) flags=(--allow-tf32) ;; esac
    cp -r "$c" "$d/cases/"
    MAX_GPU_WGMMA=$v $maxc compile "$c/g.mlir" --target cuda:sm_90 "${flags[@]}" -o "$d/cases/$(basename "$c")/g.maxa"
  done
  echo "echo '== $v'; for a in bf16 tf32; do \$g/gpu-check time $d/matmul_\$a.maxa --iters 30 --flops 137438953472 2>&1 | grep TFLOP; done; \$g/gpu-check cases $d/cases 2>&1 | tail -3" >> "$run"
done
echo "tune: $run" >&2
