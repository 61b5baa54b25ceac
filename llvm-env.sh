#!/usr/bin/env bash
# Installs (if missing) and exports the LLVM/MLIR 22 toolchain that maxc links against.
# Usage: `source ./llvm-env.sh` (exports into the current shell) or `bash llvm-env.sh` (install only).
# Debian 12 ships LLVM 22 in bookworm-security; the default `llvm-config` on PATH is LLVM 14,
# which melior's build scripts would otherwise pick up, so our prefix goes first on PATH.
_max_llvm_prefix=/usr/lib/llvm-22
_max_llvm_pkgs="llvm-22-dev libmlir-22-dev mlir-22-tools llvm-22-tools libclang-22-dev clang-22 \
libpolly-22-dev libzstd-dev zlib1g-dev libxml2-dev"

_max_llvm_missing() {
  [ -x "$_max_llvm_prefix/bin/mlir-opt" ] && [ -x "$_max_llvm_prefix/bin/FileCheck" ] &&
    [ -f "$_max_llvm_prefix/lib/libMLIRCAPIIR.a" ] && [ -x "$_max_llvm_prefix/bin/clang" ] && return 1
  return 0
}

if _max_llvm_missing; then
  echo "llvm-env.sh: installing LLVM/MLIR 22 from Debian packages" >&2
  _sudo=""
  [ "$(id -u)" = 0 ] || _sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $_sudo apt-get update -q >&2 &&
    $_sudo apt-get install -y -q $_max_llvm_pkgs >&2 ||
    { echo "llvm-env.sh: installing LLVM 22 failed" >&2; return 1 2>/dev/null || exit 1; }
fi

export MLIR_SYS_220_PREFIX=$_max_llvm_prefix
export TABLEGEN_220_PREFIX=$_max_llvm_prefix
export LLVM_SYS_221_PREFIX=$_max_llvm_prefix
case ":$PATH:" in
  *":$_max_llvm_prefix/bin:"*) ;;
  *) export PATH="$_max_llvm_prefix/bin:$PATH" ;;
esac
