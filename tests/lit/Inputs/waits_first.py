"""Checks that every kernel of `maxc --emit ptx` output waits for the kernel before it
(`griddepcontrol.wait`) before it touches global memory, and counts the prefetches that run
before the wait and the kernels that let the next one launch right after it
(`launch_dependents`, which must not come before the wait).
Usage: waits_first.py FILE.ptx"""
import re
import sys

text = open(sys.argv[1]).read()
# Instructions that read or write global (or generic, which may be global) memory.
memory = re.compile(r"^\s*(?:@%p\d+\s+)?(ld|st|atom|red|cp\.async|ldu)\.(?!param|shared|local|const)")
entries = re.split(r"\.entry ", text)[1:]
if not entries:
    sys.exit("no kernels in " + sys.argv[1])
bad, prefetching, triggering = [], 0, 0
for e in entries:
    name = e.split("(", 1)[0]
    body = e.split("\n.func", 1)[0]
    lines = body.splitlines()
    wait = next((i for i, l in enumerate(lines) if "griddepcontrol.wait;" in l), None)
    if wait is None:
        bad.append(f"{name}: no griddepcontrol.wait")
        continue
    trigger = next((i for i, l in enumerate(lines) if "griddepcontrol.launch_dependents;" in l), None)
    if trigger is not None and trigger < wait:
        bad.append(f"{name}: launch_dependents before the wait")
    triggering += trigger is not None
    early = [l.strip() for l in lines[:wait] if memory.match(l)]
    if early:
        bad.append(f"{name}: touches memory before the wait: {early[0]}")
    if any("prefetch.L2" in l for l in lines[:wait]):
        prefetching += 1
for b in bad:
    print(b)
print(f"{len(entries) - len(bad)} of {len(entries)} kernels wait first; {prefetching} prefetch before the wait; {triggering} trigger after it")
