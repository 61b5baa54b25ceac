"""Sums the PTX emulator's per-launch counts (`MAX_CUDA_EMU_PROFILE=1`, on stderr) by
kernel: launches, warp instructions, the longest block's, and global bytes read and
written. A measure of work, the same on any machine, to compare two forms of a kernel or a
model step where no GPU can time them.

Usage: MAX_CUDA_EMU_PROFILE=1 cuda_emu max ... 2> log; python benches/gpu/emu_profile.py log
"""
import re
import sys
from collections import defaultdict

LINE = re.compile(r"cuda-emu: profile (\S+) blocks (\d+) warp-insts (\d+) max-block-insts (\d+) "
                  r"global-read (\d+) global-written (\d+)")


def main(path):
    rows = defaultdict(lambda: [0, 0, 0, 0, 0])
    for line in open(path, errors="replace"):
        m = LINE.search(line)
        if not m:
            continue
        r = rows[m.group(1)]
        _, insts, longest, read, written = (int(x) for x in m.groups()[1:])
        r[0] += 1
        r[1] += insts
        r[2] = max(r[2], longest)
        r[3] += read
        r[4] += written
    if not rows:
        sys.exit(f"{path}: no `cuda-emu: profile` lines (set MAX_CUDA_EMU_PROFILE=1)")
    total = [sum(r[i] for r in rows.values()) for i in range(5)]
    print(f"{'kernel':<28}{'launches':>9}{'warp insts':>14}{'longest block':>15}{'MB read':>10}{'MB written':>12}")
    for name, r in sorted(rows.items(), key=lambda kv: -kv[1][1]):
        print(f"{name:<28}{r[0]:>9}{r[1]:>14}{r[2]:>15}{r[3] / 1e6:>10.2f}{r[4] / 1e6:>12.2f}")
    print(f"{'total':<28}{total[0]:>9}{total[1]:>14}{'':>15}{total[3] / 1e6:>10.2f}{total[4] / 1e6:>12.2f}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
