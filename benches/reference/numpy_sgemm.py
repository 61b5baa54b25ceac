"""NumPy reference for sgemm: prints {"median_ms": ...} as its last line.
Usage: numpy_sgemm.py N RUNS"""
import json
import sys
import time

import numpy as np

n, runs = int(sys.argv[1]), int(sys.argv[2])
a = (np.arange(n * n, dtype=np.float32).reshape(n, n) % 1000) / 1000 - 0.5
b = a.copy()
a @ b
times = []
for _ in range(runs):
    t = time.perf_counter()
    a @ b
    times.append((time.perf_counter() - t) * 1e3)
times.sort()
print(json.dumps({"median_ms": times[len(times) // 2]}))
