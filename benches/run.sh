#!/usr/bin/env bash
# Runs a benchmark (default: all) in release mode with the Python reference environment.
# Usage: bash benches/run.sh [custom_mlp|sgemm|llm|serve|embed|all] [-- extra args]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck disable=SC1091
source ./llvm-env.sh
# shellcheck disable=SC1091
source scripts/python-env.sh
# Reference systems the benchmarks compare against (not needed by the tests).
python -c "import onnx, onnxruntime" >/dev/null 2>&1 || python -m pip install --quiet --disable-pip-version-check onnx onnxruntime >&2 ||
  echo "run.sh: onnxruntime unavailable; its column will be empty" >&2
benches=("${1:-all}")
[ "${benches[0]}" = all ] && benches=(custom_mlp sgemm llm serve embed)
if [[ " ${benches[*]} " == *" llm "* || " ${benches[*]} " == *" serve "* ]]; then
  # llama.cpp for the llm comparison, and the model (cached outside the repo).
  # shellcheck disable=SC1091
  source scripts/llama-cpp-env.sh || echo "run.sh: llama-cpp-python unavailable; the llm comparison will be one-sided" >&2
  MAX_SMOLLM2_GGUF=${MAX_SMOLLM2_GGUF:-$(bash serve/tests/fetch_smollm2.sh)}
  export MAX_SMOLLM2_GGUF
  # The lean runtime CLI (no MLIR/LLVM linked), whose memory the llm benchmark reports.
  CARGO_TARGET_DIR=target/lean cargo build --release --locked -q -p max-tools --no-default-features --bin max
  # `max serve` for the serve benchmark, and llama.cpp's server as its reference.
  cargo build --release --locked -q -p max-tools --bin max
  python -c "import llama_cpp.server, uvicorn, fastapi, sse_starlette, starlette_context, pydantic_settings" >/dev/null 2>&1 || python -m pip install --quiet --disable-pip-version-check \
    --find-links "${MAX_CACHE_DIR:-$HOME/.cache/max}/wheels" --only-binary llama-cpp-python "llama-cpp-python[server]==0.3.36" >&2 ||
    echo "run.sh: llama-cpp-python[server] unavailable; the serve comparison will be one-sided" >&2
fi
if [[ " ${benches[*]} " == *" embed "* ]]; then
  # all-MiniLM-L6-v2 for the embeddings comparison (cached outside the repo).
  MAX_MINILM_DIR=${MAX_MINILM_DIR:-$(bash serve/tests/fetch_minilm.sh)}
  export MAX_MINILM_DIR
fi
shift || true
[ "${1:-}" = "--" ] && shift
for b in "${benches[@]}"; do
  cargo run --release --locked -q -p max-benches --bin "$b" -- --python "$(command -v python)" "$@"
done
