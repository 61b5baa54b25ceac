#!/usr/bin/env bash
# Installs (once) the two pieces of NVIDIA's CUDA compiler that `maxc --target cuda:*` uses
# on a machine without CUDA, from PyPI's nvidia-cuda-nvcc-cu12 wheel: libdevice (the math
# library the NVPTX kernels link: expf, tanhf, logf, ...) and ptxas (which assembles each
# kernel module's SASS, machine code carried beside its PTX: `maxc --sass`). Nothing else of
# CUDA is needed to compile; the runtime loads the driver (libcuda) only when a GPU is used.
# Exports MAX_CUDA_TOOLKIT (the folder holding nvvm/libdevice and bin/ptxas).
# Usage: source scripts/cuda-env.sh
_max_nvcc_version=12.8.93
_max_cuda_dir=${MAX_CACHE_DIR:-$HOME/.cache/max}/cuda-$_max_nvcc_version

if [ ! -f "$_max_cuda_dir/nvvm/libdevice/libdevice.10.bc" ] || [ ! -x "$_max_cuda_dir/bin/ptxas" ]; then
  _max_wheels=${MAX_CACHE_DIR:-$HOME/.cache/max}/wheels
  mkdir -p "$_max_wheels" "$_max_cuda_dir"
  _max_py=$(command -v python3 || command -v python)
  if ! ls "$_max_wheels"/nvidia_cuda_nvcc_cu12-"$_max_nvcc_version"-*.whl >/dev/null 2>&1; then
    echo "cuda-env.sh: fetching nvidia-cuda-nvcc-cu12 $_max_nvcc_version (40 MB) into $_max_wheels" >&2
    "$_max_py" -m pip --disable-pip-version-check download -q --no-deps --only-binary=:all: \
      --platform manylinux_2_12_x86_64 --platform manylinux2010_x86_64 \
      "nvidia-cuda-nvcc-cu12==$_max_nvcc_version" -d "$_max_wheels" >&2 ||
      echo "cuda-env.sh: download failed; CUDA targets will compile without libdevice" >&2
  fi
  _max_whl=$(ls "$_max_wheels"/nvidia_cuda_nvcc_cu12-"$_max_nvcc_version"-*.whl 2>/dev/null | head -1)
  if [ -n "$_max_whl" ]; then
    "$_max_py" - "$_max_whl" "$_max_cuda_dir" <<'PY'
import os, sys, zipfile
whl, dest = sys.argv[1], sys.argv[2]
prefix = "nvidia/cuda_nvcc/"
with zipfile.ZipFile(whl) as z:
    for name in z.namelist():
        if name.startswith(prefix + "nvvm/libdevice/") or name == prefix + "bin/ptxas":
            out = os.path.join(dest, name[len(prefix):])
            os.makedirs(os.path.dirname(out), exist_ok=True)
            with z.open(name) as src, open(out, "wb") as dst:
                dst.write(src.read())
            if name.endswith("ptxas"):
                os.chmod(out, 0o755)
PY
  fi
fi
if [ -f "$_max_cuda_dir/nvvm/libdevice/libdevice.10.bc" ]; then
  export MAX_CUDA_TOOLKIT="$_max_cuda_dir"
fi
