#!/usr/bin/env bash
# Sets up everything (LLVM/MLIR 22, Python reference packages), builds the toolchain in
# release mode, then compiles the seed graph examples/custom_mlp.mlir and runs it on a
# batch of 7 random rows. Safe to re-run.
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
echo "== maxc compile examples/custom_mlp.mlir"
time ./target/release/maxc compile examples/custom_mlp.mlir -o "$out/mlp.maxa"
./target/release/maxc inspect "$out/mlp.maxa"
python -c "import numpy as np; np.save('$out/x.npy', np.random.default_rng(0).standard_normal((7, 768)).astype(np.float32))"
echo "== maxc run (batch 7)"
./target/release/maxc run "$out/mlp.maxa" --input x="$out/x.npy" --output "$out/y.npy" --repeat 10
python -c "import numpy as np; y = np.load('$out/y.npy'); print('y', y.shape, y.dtype, 'row sums', y.sum(axis=1).round(5))"
