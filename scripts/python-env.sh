#!/usr/bin/env bash
# Creates (once) and activates the Python environment the tests and benchmarks use:
# NumPy (reference results), pytest, lit, the official openai client (server tests) and
# Hugging Face's tokenizers (the embedding reference's tokenizer).
# Lives outside the repo, in $MAX_CACHE_DIR
# (default ~/.cache/max). Debian 12's system Python refuses global pip installs, hence a venv.
# Usage: source scripts/python-env.sh
_max_cache=${MAX_CACHE_DIR:-$HOME/.cache/max}
_max_venv=$_max_cache/venv
_max_py_pkgs="numpy pytest lit openai tokenizers"

if [ ! -x "$_max_venv/bin/python" ]; then
  mkdir -p "$_max_cache"
  if ! python3 -m venv "$_max_venv" >/dev/null 2>&1; then
    echo "python-env.sh: installing python3-venv" >&2
    _sudo=""; [ "$(id -u)" = 0 ] || _sudo="sudo"
    DEBIAN_FRONTEND=noninteractive $_sudo apt-get install -y -q python3-venv python3-pip >&2
    rm -rf "$_max_venv"
    python3 -m venv "$_max_venv" || { echo "python-env.sh: cannot create a venv" >&2; return 1 2>/dev/null || exit 1; }
  fi
fi
# shellcheck disable=SC1091
. "$_max_venv/bin/activate"
if ! python -c "import numpy, pytest, lit, openai, tokenizers" >/dev/null 2>&1; then
  echo "python-env.sh: installing $_max_py_pkgs into $_max_venv" >&2
  python -m pip install --quiet --disable-pip-version-check $_max_py_pkgs >&2 ||
    { echo "python-env.sh: pip install failed" >&2; return 1 2>/dev/null || exit 1; }
fi
