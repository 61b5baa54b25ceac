"""Assembles each PTX module of `maxc --emit ptx` output with ptxas for one chip.
Usage: ptxas_each.py PTXAS CHIP FILE.ptx"""
import subprocess
import sys
import tempfile

ptxas, chip, path = sys.argv[1:4]
modules = [m for m in open(path).read().split("// ----- PTX module ") if m.strip()]
if not modules:
    sys.exit("no PTX modules in " + path)
for i, m in enumerate(modules):
    text = m.split("\n", 1)[1]
    with tempfile.NamedTemporaryFile("w", suffix=".ptx") as f:
        f.write(text)
        f.flush()
        r = subprocess.run([ptxas, f"-arch={chip}", "-v", f.name, "-o", "/dev/null"], capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"module {i}: ptxas failed:\n{r.stderr}")
        # Spills would mean the tiling overflows the register file.
        if "bytes spill stores" in r.stderr and " 0 bytes spill stores" not in r.stderr:
            sys.exit(f"module {i}: register spills:\n{r.stderr}")
print(f"{len(modules)} module(s) assembled for {chip}")
