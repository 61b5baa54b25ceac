"""Small .npy helpers for lit tests.

  npy.py random OUT SHAPE DTYPE [SEED]   write random data (shape like 3,4)
  npy.py close A B [RTOL]                 assert two .npy files are allclose
  npy.py corrupt FILE OFFSET              flip the bits of the byte at OFFSET (negative: from end)
  npy.py patch-u32 FILE OFFSET VALUE      overwrite a little-endian u32
  npy.py values OUT V1,V2,... DTYPE       write a 1-D array of these values
  npy.py zeros OUT SHAPE DTYPE            write zeros
  npy.py cache-row CACHE NEW LAYER SLOT POS
                                          assert CACHE[LAYER, SLOT, POS:POS+n] == NEW (as the
                                          cache's dtype) and every other entry of CACHE is 0
"""
import struct
import sys

import numpy as np

cmd = sys.argv[1]
if cmd == "random":
    shape = tuple(int(s) for s in sys.argv[3].split(",") if s)
    dt = np.dtype(sys.argv[4])
    rng = np.random.default_rng(int(sys.argv[5]) if len(sys.argv) > 5 else 0)
    a = rng.standard_normal(shape) if dt.kind == "f" else rng.integers(-5, 5, size=shape)
    np.save(sys.argv[2], a.astype(dt))
elif cmd == "close":
    a, b = np.load(sys.argv[2]), np.load(sys.argv[3])
    rtol = float(sys.argv[4]) if len(sys.argv) > 4 else 1e-5
    assert a.shape == b.shape, (a.shape, b.shape)
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * 1e-2)
elif cmd == "corrupt":
    data = bytearray(open(sys.argv[2], "rb").read())
    off = int(sys.argv[3])
    data[off] ^= 0xFF
    open(sys.argv[2], "wb").write(bytes(data))
elif cmd == "patch-u32":
    data = bytearray(open(sys.argv[2], "rb").read())
    off = int(sys.argv[3])
    data[off:off + 4] = struct.pack("<I", int(sys.argv[4]))
    open(sys.argv[2], "wb").write(bytes(data))
elif cmd == "values":
    np.save(sys.argv[2], np.array([float(v) for v in sys.argv[3].split(",")]).astype(np.dtype(sys.argv[4])))
elif cmd == "zeros":
    shape = tuple(int(s) for s in sys.argv[3].split(",") if s)
    np.save(sys.argv[2], np.zeros(shape, np.dtype(sys.argv[4])))
elif cmd == "cache-row":
    cache, new = np.load(sys.argv[2]), np.load(sys.argv[3])
    layer, slot, pos = (int(v) for v in sys.argv[4:7])
    want = np.zeros_like(cache)
    want[layer, slot, pos:pos + new.shape[0]] = new.astype(cache.dtype)
    np.testing.assert_array_equal(cache, want)
    print("cache row ok")
else:
    sys.exit(f"unknown command {cmd}")
