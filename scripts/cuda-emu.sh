#!/usr/bin/env bash
# Builds max-cuda-emu (tools/cuda-emu: the CUDA driver API over a PTX interpreter on the
# CPU) and links it as libcuda.so in target/cuda-emu, then defines `cuda_emu CMD...`, which
# runs a command with that folder first on LD_LIBRARY_PATH: the runtime's CUDA executor
# then finds the emulator as its driver, and `--device gpu:0` runs on the CPU.
# Never put target/cuda-emu on LD_LIBRARY_PATH for good on a machine with a real GPU.
# Usage: source scripts/cuda-emu.sh; cuda_emu max run model.maxa --device gpu:0 ...
_max_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
(cd "$_max_root" && cargo build --release --locked -q -p max-cuda-emu) || { echo "cuda-emu.sh: building max-cuda-emu failed" >&2; return 1 2>/dev/null || exit 1; }
mkdir -p "$_max_root/target/cuda-emu"
ln -sf ../release/libmax_cuda_emu.so "$_max_root/target/cuda-emu/libcuda.so"
ln -sf ../release/libmax_cuda_emu.so "$_max_root/target/cuda-emu/libcuda.so.1"
export MAX_CUDA_EMU_DIR="$_max_root/target/cuda-emu"
cuda_emu() {
  LD_LIBRARY_PATH="$MAX_CUDA_EMU_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$@"
}
