#!/usr/bin/env bash
# Runs a benchmark (default: all) in release mode with the Python reference environment.
# Usage: bash benches/run.sh [custom_mlp|sgemm|all] [-- extra args]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck disable=SC1091
source ./llvm-env.sh
# shellcheck disable=SC1091
source scripts/python-env.sh
benches=("${1:-all}")
[ "${benches[0]}" = all ] && benches=(custom_mlp sgemm)
shift || true
[ "${1:-}" = "--" ] && shift
for b in "${benches[@]}"; do
  cargo run --release --locked -q -p max-benches --bin "$b" -- --python "$(command -v python)" "$@"
done
