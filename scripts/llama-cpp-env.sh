#!/usr/bin/env bash
# Installs (once) llama-cpp-python, the llama.cpp reference for tests and benchmarks, into the
# venv of scripts/python-env.sh. PyPI ships it as source only, so the first run builds llama.cpp
# (about 8 minutes on 2 cores) and keeps the wheel in $MAX_CACHE_DIR/wheels (default
# ~/.cache/max/wheels); later runs, or a fresh venv, install that wheel without rebuilding.
# Built for AVX2/FMA/F16C without -march=native (native builds crash under this virtualization;
# this CPU has no AVX-512). Delete the cached wheel to rebuild with other flags.
# Usage: source scripts/python-env.sh && source scripts/llama-cpp-env.sh
_max_llama_version=0.3.36
_max_wheels=${MAX_CACHE_DIR:-$HOME/.cache/max}/wheels

if ! python -c "import llama_cpp" >/dev/null 2>&1; then
  _max_pip="python -m pip --disable-pip-version-check"
  if ! ls "$_max_wheels"/llama_cpp_python-"$_max_llama_version"-*.whl >/dev/null 2>&1; then
    if ! command -v cmake >/dev/null 2>&1 || ! command -v g++ >/dev/null 2>&1 || ! command -v make >/dev/null 2>&1; then
      echo "llama-cpp-env.sh: installing build-essential cmake" >&2
      _sudo=""; [ "$(id -u)" = 0 ] || _sudo="sudo"
      DEBIAN_FRONTEND=noninteractive $_sudo apt-get install -y -q build-essential cmake </dev/null >&2 ||
        { $_sudo apt-get update -q </dev/null >&2 &&
          DEBIAN_FRONTEND=noninteractive $_sudo apt-get install -y -q build-essential cmake </dev/null >&2; } ||
        echo "llama-cpp-env.sh: apt-get install failed; trying the build anyway" >&2
    fi
    echo "llama-cpp-env.sh: building llama-cpp-python $_max_llama_version (about 8 minutes on 2 cores) into $_max_wheels" >&2
    mkdir -p "$_max_wheels"
    # LLAVA_BUILD=OFF skips the multimodal library (imported lazily, unused here); llama.cpp's
    # tests, tools, examples and server are already off when it is built as a subproject.
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_BMI2=ON \
-DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_AVX_VNNI=OFF -DGGML_AMX_TILE=OFF \
-DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DGGML_CCACHE=OFF -DLLAVA_BUILD=OFF \
-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF" \
    CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)} \
      nice $_max_pip wheel --quiet --no-deps --no-binary llama-cpp-python \
        "llama-cpp-python==$_max_llama_version" -w "$_max_wheels" >&2 ||
      echo "llama-cpp-env.sh: building llama-cpp-python failed" >&2
  fi
  echo "llama-cpp-env.sh: installing llama-cpp-python $_max_llama_version from $_max_wheels" >&2
  $_max_pip install --quiet --find-links "$_max_wheels" --only-binary llama-cpp-python \
    "llama-cpp-python==$_max_llama_version" >&2 &&
    python -c "import llama_cpp" ||
    { echo "llama-cpp-env.sh: llama-cpp-python unavailable" >&2; return 1 2>/dev/null || exit 1; }
fi
