# lit configuration for maxc's pass, diagnostic and end-to-end tests.
# Run: lit tests/lit   (binaries from target/debug unless MAX_BIN_DIR is set)
import os
import shutil
import sys

import lit.formats

config.name = "max"
config.test_format = lit.formats.ShTest(execute_external=False)
config.suffixes = [".mlir", ".test"]
config.excludes = ["Inputs", "Output", "lit.cfg.py"]
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(config.test_source_root, "Output")

root = os.path.abspath(os.path.join(config.test_source_root, "..", ".."))
bin_dir = os.environ.get("MAX_BIN_DIR", os.path.join(root, "target", "debug"))
llvm_bin = os.environ.get("LLVM_BIN_DIR", "/usr/lib/llvm-22/bin")

for tool in ("maxc", "max"):
    if not os.path.exists(os.path.join(bin_dir, tool)):
        lit_config.fatal(f"{tool} not found in {bin_dir}; run `cargo build` first or set MAX_BIN_DIR")

config.environment["PATH"] = os.pathsep.join([bin_dir, llvm_bin, config.environment.get("PATH", os.environ.get("PATH", ""))])
config.environment["RUST_BACKTRACE"] = "0"
config.substitutions.append(("%python", sys.executable))
config.substitutions.append(("%examples", os.path.join(root, "examples")))
config.substitutions.append(("%inputs", os.path.join(config.test_source_root, "Inputs")))
# maxc and max alone, for a PATH without other tools (no ptxas).
config.substitutions.append(("%bin_dir", bin_dir))

# GPU targets: libdevice (and ptxas, to check the emitted PTX) from scripts/cuda-env.sh.
cuda_toolkit = os.environ.get("MAX_CUDA_TOOLKIT", "")
if cuda_toolkit:
    config.environment["MAX_CUDA_TOOLKIT"] = cuda_toolkit
    config.available_features.add("libdevice")
    ptxas = os.path.join(cuda_toolkit, "bin", "ptxas")
    if os.path.exists(ptxas):
        config.available_features.add("ptxas")
        config.substitutions.append(("%ptxas", ptxas))

# A ptxas on the system PATH (a CUDA install) defeats the tests of a machine without one.
if shutil.which("ptxas"):
    config.available_features.add("system-ptxas")
if shutil.which("ninja"):
    config.available_features.add("ninja")
for tool in ("embed-graph",):
    if not os.path.exists(os.path.join(bin_dir, tool)):
        lit_config.warning(f"{tool} not built in {bin_dir}; its test will fail (cargo build --workspace)")
