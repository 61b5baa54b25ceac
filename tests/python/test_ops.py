"""Every `max` op, compiled once with a dynamic dim and run at sizes 1, 7 and 33, checked
against NumPy. Tolerances: f32 elementwise rtol 1e-5, reductions/matmul rtol 1e-4,
f16 rtol 2e-3 (half precision storage), integers exact."""
import math
import os

import numpy as np
import pytest

from maxtest import gpu_case, maxc, run_artifact

SIZES = [1, 7, 33]
_erf = np.vectorize(math.erf, otypes=[np.float32])

NP = {"f32": np.float32, "f16": np.float16, "i32": np.int32, "i64": np.int64}


def ttype(shape, dt):
    return "tensor<" + "".join(("?" if d is None else str(d)) + "x" for d in shape) + dt + ">"


def concrete(shape, b):
    return tuple(b if d is None else d for d in shape)


def graph(inputs, body, out_types):
    """A func.func @g with inputs [(name, shape, dtype)], body lines, returning %r..."""
    args = ", ".join(f'%{n}: {ttype(s, d)} {{max.name = "{n}"}}' for n, s, d in inputs)
    rets = ", ".join(f"%r{i}" for i in range(len(out_types)))
    return (f"func.func @g({args}) -> ({', '.join(out_types)}) {{\n" + "\n".join("  " + l for l in body)
            + f"\n  func.return {rets} : {', '.join(out_types)}\n}}\n")


def data(shape, dt, rng, positive=False, low=None):
    if dt.startswith("i"):
        a = rng.integers(-20, 20, size=shape)
        return a.astype(NP[dt])
    a = rng.standard_normal(shape)
    if positive:
        a = np.abs(a) + 0.1
    return a.astype(NP[dt])


def check(tmp_path, mlir, inputs, ref, n_out=1, rtol=1e-5, atol=1e-6, sizes=SIZES, positive=False):
    """Compiles `mlir`, runs at each size, compares with `ref(*arrays)`. With
    MAX_GPU_CASES_ONLY set (benches/gpu/prepare.sh --cases-only, after the suite has run
    these checks) only the GPU case is recorded."""
    src = tmp_path / "g.mlir"
    src.write_text(mlir)
    art = tmp_path / "g.maxa"
    cpu = not os.environ.get("MAX_GPU_CASES_ONLY")
    if cpu:
        maxc("compile", src, "-o", art)
    rng = np.random.default_rng(42)
    runs = []
    for b in sizes:
        arrays = {n: data(concrete(s, b), d, rng, positive) for n, s, d in inputs}
        want = ref(*arrays.values())
        if not isinstance(want, (list, tuple)):
            want = [want]
        runs.append((arrays, want))
        if not cpu:
            continue
        got = run_artifact(art, arrays, tmp_path, n_out)
        for g, w in zip(got, want):
            w = np.asarray(w)
            assert g.shape == w.shape, f"size {b}: shape {g.shape} != {w.shape}"
            assert g.dtype == w.dtype, f"size {b}: dtype {g.dtype} != {w.dtype}"
            if g.dtype.kind in "iu":
                np.testing.assert_array_equal(g, w, err_msg=f"size {b}")
            else:
                np.testing.assert_allclose(g.astype(np.float64), w.astype(np.float64), rtol=rtol, atol=atol, err_msg=f"size {b}")
    # The same graph for the GPU: it must compile; on a GPU machine the case runs there.
    gpu_case(src, runs, rtol, atol)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


UNARY = {
    "neg": (lambda x: -x, False),
    "abs": (np.abs, False),
    "exp": (np.exp, False),
    "log": (np.log, True),
    "sqrt": (np.sqrt, True),
    "rsqrt": (lambda x: 1 / np.sqrt(x), True),
    "relu": (lambda x: np.maximum(x, 0), False),
    "sigmoid": (sigmoid, False),
    "tanh": (np.tanh, False),
    "gelu": (lambda x: 0.5 * x * (1 + _erf(x / np.sqrt(2)).astype(x.dtype)), False),
    "silu": (lambda x: x * sigmoid(x), False),
}


@pytest.mark.parametrize("op", sorted(UNARY))
@pytest.mark.parametrize("dt", ["f32", "f16"])
def test_unary(tmp_path, op, dt):
    fn, positive = UNARY[op]
    s = (None, 5)
    t = ttype(s, dt)
    body = [f'%r0 = "max.{op}"(%x) : ({t}) -> {t}']
    ref = (lambda x: fn(x.astype(np.float32)).astype(np.float16)) if dt == "f16" else (lambda x: fn(x).astype(np.float32))
    tol = dict(rtol=2e-3, atol=2e-3) if dt == "f16" else dict(rtol=1e-5, atol=1e-6)
    check(tmp_path, graph([("x", s, dt)], body, [t]), [("x", s, dt)], ref, positive=positive, **tol)


@pytest.mark.parametrize("op", ["tanh", "gelu"])
def test_inline_tanh_and_erf_over_their_range(tmp_path, op):
    """tanh and GELU's erf are inline rational functions, not libm calls: compared with
    float64 libm over the whole range (tiny values, the fitted interval, the saturated
    tails, infinities). Within 1e-6 relative (measured: 3e-7 for tanh)."""
    t = ttype((None,), "f32")
    src = tmp_path / "g.mlir"
    src.write_text(graph([("x", (None,), "f32")], [f'%r0 = "max.{op}"(%x) : ({t}) -> {t}'], [t]))
    art = tmp_path / "g.maxa"
    maxc("compile", src, "-o", art)
    x = np.concatenate([np.linspace(-12, 12, 24001), np.logspace(-30, 1, 500), -np.logspace(-30, 1, 500), [0.0, np.inf, -np.inf]]).astype(np.float32)
    got = run_artifact(art, {"x": x}, tmp_path)[0].astype(np.float64)
    x64 = x.astype(np.float64)
    with np.errstate(invalid="ignore"):
        want = np.tanh(x64) if op == "tanh" else 0.5 * x64 * (1 + np.vectorize(math.erf)(x64 / np.sqrt(2)))
    finite = np.isfinite(x)
    # GELU's negative tail is 0.5 x (1 + erf), where 1 + erf cancels: its absolute error is
    # about |x| * 2e-7 there (libm's erff: about |x| * 3e-8).
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-6, atol=1e-30 if op == "tanh" else 1.5e-6)
    if op == "tanh":
        np.testing.assert_allclose(got[-2:], [1.0, -1.0], rtol=3e-7)


@pytest.mark.parametrize("op", ["neg", "abs", "relu"])
@pytest.mark.parametrize("dt", ["i32", "i64"])
def test_unary_int(tmp_path, op, dt):
    s = (None, 3)
    t = ttype(s, dt)
    fn = UNARY[op][0]
    check(tmp_path, graph([("x", s, dt)], [f'%r0 = "max.{op}"(%x) : ({t}) -> {t}'], [t]), [("x", s, dt)], fn)


BINARY = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "div": np.divide,
    "maximum": np.maximum,
    "minimum": np.minimum,
    "pow": np.power,
}

# (lhs shape, rhs shape, result shape): same shape, trailing broadcast, leading broadcast, both.
BROADCASTS = [
    ((None, 5), (None, 5), (None, 5)),
    ((None, 5), (5,), (None, 5)),
    ((1, 5), (None, 1), (None, 5)),
    ((None, 1, 3), (4, 3), (None, 4, 3)),
]


@pytest.mark.parametrize("op", sorted(BINARY))
@pytest.mark.parametrize("shapes", BROADCASTS, ids=["same", "trailing", "outer", "rank"])
def test_binary(tmp_path, op, shapes):
    a, b, r = shapes
    ta, tb, tr = ttype(a, "f32"), ttype(b, "f32"), ttype(r, "f32")
    body = [f'%r0 = "max.{op}"(%x, %y) : ({ta}, {tb}) -> {tr}']
    check(tmp_path, graph([("x", a, "f32"), ("y", b, "f32")], body, [tr]), [("x", a, "f32"), ("y", b, "f32")],
          lambda x, y: BINARY[op](x, y).astype(np.float32), positive=(op == "pow"), rtol=2e-5)


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div", "maximum", "minimum"])
@pytest.mark.parametrize("dt", ["i32", "i64"])
def test_binary_int(tmp_path, op, dt):
    s = (None, 4)
    t = ttype(s, dt)

    def ref(x, y):
        if op == "div":
            # C semantics: truncate toward zero; division by zero yields 0.
            safe = np.where(y == 0, 1, y)
            q = np.trunc(x.astype(np.float64) / safe).astype(x.dtype)
            return np.where(y == 0, 0, q).astype(x.dtype)
        return BINARY[op](x, y).astype(x.dtype)

    check(tmp_path, graph([("x", s, dt), ("y", s, dt)], [f'%r0 = "max.{op}"(%x, %y) : ({t}, {t}) -> {t}'], [t]),
          [("x", s, dt), ("y", s, dt)], ref)


@pytest.mark.parametrize("src,dst", [("f32", "f16"), ("f16", "f32"), ("f32", "i32"), ("i64", "f32"), ("i32", "i64"), ("i64", "i32")])
def test_cast(tmp_path, src, dst):
    s = (None, 6)
    ts, td = ttype(s, src), ttype(s, dst)
    ref = (lambda x: np.trunc(x).astype(NP[dst])) if src.startswith("f") and dst.startswith("i") else (lambda x: x.astype(NP[dst]))
    check(tmp_path, graph([("x", s, src)], [f'%r0 = "max.cast"(%x) : ({ts}) -> {td}'], [td]), [("x", s, src)], ref,
          rtol=1e-3 if "f16" in (src, dst) else 1e-6)


def test_cast_bf16_round_trip(tmp_path):
    s = (None, 8)
    t, tb = ttype(s, "f32"), ttype(s, "bf16")
    body = [f'%b = "max.cast"(%x) : ({t}) -> {tb}', f'%r0 = "max.cast"(%b) : ({tb}) -> {t}']

    def ref(x):
        # Round to nearest even on the top 16 bits.
        u = x.view(np.uint32).astype(np.uint64)
        u = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16
        return u.astype(np.uint32).view(np.float32)

    check(tmp_path, graph([("x", s, "f32")], body, [t]), [("x", s, "f32")], ref, rtol=0, atol=0)


MATMULS = [
    ((None, 5), (5, 7), (None, 7)),
    ((2, None, 5), (2, 5, 3), (2, None, 3)),
    ((None, 4, 5), (5, 6), (None, 4, 6)),
    ((None, 1, 4, 5), (3, 5, 2), (None, 3, 4, 2)),
]


@pytest.mark.parametrize("shapes", MATMULS, ids=["2d", "batched", "bcast-rhs", "bcast-both"])
def test_matmul(tmp_path, shapes):
    a, b, r = shapes
    ta, tb, tr = ttype(a, "f32"), ttype(b, "f32"), ttype(r, "f32")
    check(tmp_path, graph([("a", a, "f32"), ("b", b, "f32")], [f'%r0 = "max.matmul"(%a, %b) : ({ta}, {tb}) -> {tr}'], [tr]),
          [("a", a, "f32"), ("b", b, "f32")], lambda x, y: np.matmul(x, y), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("k,n,sizes", [(300, 200, [1, 7, 130]), (256, 384, [129]), (512, 640, [300])], ids=["edges", "aligned", "wide"])
def test_matmul_f16_tiles(tmp_path, k, n, sizes):
    """f16 matmuls large enough for several 128x128 tiles and K slices: on a GPU these take
    the tensor-core kernel, with guarded edges when K or N is not a multiple of 8."""
    a, b, r = (None, k), (k, n), (None, n)
    ta, tb, tr = ttype(a, "f16"), ttype(b, "f16"), ttype(r, "f16")
    check(tmp_path, graph([("a", a, "f16"), ("b", b, "f16")], [f'%r0 = "max.matmul"(%a, %b) : ({ta}, {tb}) -> {tr}'], [tr]),
          [("a", a, "f16"), ("b", b, "f16")], lambda x, y: (x.astype(np.float32) @ y.astype(np.float32)).astype(np.float16),
          rtol=1e-2, atol=2e-2, sizes=sizes)


@pytest.mark.parametrize("dt,k,n", [("f32", 96, 80), ("f16", 512, 384), ("f16", 72, 42)], ids=["f32", "f16", "f16-mma"])
def test_matmul_epilogue(tmp_path, dt, k, n):
    """A matmul with a fused elementwise tail: bias add (broadcast row), tanh, and a product
    with a full-size operand. On a GPU the tail runs in the matmul kernel's epilogue."""
    x, w, b, r, o = (None, k), (k, n), (n,), (None, n), (None, n)
    tx, tw, tb, tr, to = (ttype(s, dt) for s in (x, w, b, r, o))
    body = [f'%m = "max.matmul"(%x, %w) : ({tx}, {tw}) -> {to}',
            f'%a = "max.add"(%m, %b) : ({to}, {tb}) -> {to}',
            f'%t = "max.tanh"(%a) : ({to}) -> {to}',
            f'%r0 = "max.mul"(%t, %r) : ({to}, {tr}) -> {to}']
    np_dt = NP[dt]

    def ref(xv, wv, bv, rv):
        m = (xv.astype(np.float32) @ wv.astype(np.float32)).astype(np_dt)
        a = (m.astype(np.float32) + bv.astype(np.float32)).astype(np_dt)
        t = np.tanh(a.astype(np.float32)).astype(np_dt)
        return (t.astype(np.float32) * rv.astype(np.float32)).astype(np_dt)
    tol = 1e-4 if dt == "f32" else 1e-2
    check(tmp_path, graph([("x", x, dt), ("w", w, dt), ("b", b, dt), ("r", r, dt)], body, [to]),
          [("x", x, dt), ("w", w, dt), ("b", b, dt), ("r", r, dt)], ref, rtol=tol, atol=tol, sizes=[1, 7, 130])


@pytest.mark.parametrize("dt", ["f32", "f16"])
def test_matmul_residual_is_its_input(tmp_path, dt):
    """`x + x @ w`: the add joins the matmul's kernel and reads the matmul's own left
    operand (on a GPU, where the epilogue reads only extra operands, the fused kernel takes
    the generic path)."""
    x, w = (None, 64), (64, 64)
    tx, tw = ttype(x, dt), ttype(w, dt)
    body = [f'%m = "max.matmul"(%x, %w) : ({tx}, {tw}) -> {tx}', f'%r0 = "max.add"(%x, %m) : ({tx}, {tx}) -> {tx}']
    np_dt = NP[dt]

    def ref(xv, wv):
        m = (xv.astype(np.float32) @ wv.astype(np.float32)).astype(np_dt)
        return (xv.astype(np.float32) + m.astype(np.float32)).astype(np_dt)
    tol = 1e-4 if dt == "f32" else 1e-2
    check(tmp_path, graph([("x", x, dt), ("w", w, dt)], body, [tx]), [("x", x, dt), ("w", w, dt)], ref, rtol=tol, atol=tol, sizes=[1, 5, 70])


def test_matmul_decode_rows(tmp_path):
    """f16 matmuls of 1 to 5 rows with a bias: on a GPU, 1 to 4 rows take the
    matrix-vector kernel (264 columns end in a partial block of columns) and 5 the
    tensor cores, both with the epilogue in the split-K reduction."""
    x, w, b, o = (None, 768), (768, 264), (264,), (None, 264)
    tx, tw, tb, to = (ttype(s, "f16") for s in (x, w, b, o))
    body = [f'%m = "max.matmul"(%x, %w) : ({tx}, {tw}) -> {to}', f'%r0 = "max.add"(%m, %b) : ({to}, {tb}) -> {to}']

    def ref(xv, wv, bv):
        m = (xv.astype(np.float32) @ wv.astype(np.float32)).astype(np.float16)
        return (m.astype(np.float32) + bv.astype(np.float32)).astype(np.float16)
    check(tmp_path, graph([("x", x, "f16"), ("w", w, "f16"), ("b", b, "f16")], body, [to]),
          [("x", x, "f16"), ("w", w, "f16"), ("b", b, "f16")], ref, rtol=2e-2, atol=2e-2, sizes=[1, 2, 4, 5])


def test_matmul_decode_rows_partial_chunk(tmp_path):
    """f16 matmuls of 1 and 3 rows whose K (2240) splits into chunks of 96 rows for the
    GPU's matrix-vector kernel, the last of them 32 rows long."""
    x, w, o = (None, 2240), (2240, 256), (None, 256)
    tx, tw, to = (ttype(s, "f16") for s in (x, w, o))
    body = [f'%r0 = "max.matmul"(%x, %w) : ({tx}, {tw}) -> {to}']

    def ref(xv, wv):
        return (xv.astype(np.float32) @ wv.astype(np.float32)).astype(np.float16)
    check(tmp_path, graph([("x", x, "f16"), ("w", w, "f16")], body, [to]),
          [("x", x, "f16"), ("w", w, "f16")], ref, rtol=2e-2, atol=2e-2, sizes=[1, 3])


@pytest.mark.parametrize("dt", ["f32", "f16"])
def test_matmul_batch_of_rows(tmp_path, dt):
    """x[B, T, K] @ w[K, N] with a bias and a residual of the output's shape: on a GPU the
    kernel views the B * T rows as one 2-D matmul (tensor cores for f16, the SIMT kernel
    for f32) instead of the generic loops."""
    x, w, b, r, o = (None, None, 256), (256, 136), (136,), (None, None, 136), (None, None, 136)
    tx, tw, tb, tr, to = (ttype(s, dt) for s in (x, w, b, r, o))
    body = [f'%m = "max.matmul"(%x, %w) : ({tx}, {tw}) -> {to}', f'%a = "max.add"(%m, %b) : ({to}, {tb}) -> {to}',
            f'%r0 = "max.add"(%a, %r) : ({to}, {tr}) -> {to}']
    np_dt = NP[dt]

    def ref(xv, wv, bv, rv):
        m = (xv.astype(np.float32) @ wv.astype(np.float32)).astype(np_dt)
        a = (m.astype(np.float32) + bv.astype(np.float32)).astype(np_dt)
        return (a.astype(np.float32) + rv.astype(np.float32)).astype(np_dt)
    tol = 1e-4 if dt == "f32" else 1e-2
    check(tmp_path, graph([("x", x, dt), ("w", w, dt), ("b", b, dt), ("r", r, dt)], body, [to]),
          [("x", x, dt), ("w", w, dt), ("b", b, dt), ("r", r, dt)], ref, rtol=tol, atol=tol, sizes=[1, 3, 9])


@pytest.mark.parametrize("k,n", [(256, 384), (264, 512)])
def test_matmul_tf32_case(tmp_path, k, n):
    """An f32 matmul compiled with --allow-tf32 (recorded for the GPU check; TF32 keeps 10
    mantissa bits, so the tolerance is about 1e-3 relative to the row's scale). N = 384 leaves
    the last 256-column tile half outside B, K = 264 a last slice of 8 of its 32; 5 rows split
    K over blocks. Each is recorded twice: B transposed by a transpose kernel first (the
    default), and as slices are copied."""
    import maxtest
    if not maxtest.cuda_compile_enabled():
        pytest.skip("no CUDA toolkit (source scripts/cuda-env.sh)")
    a, b, r = (None, k), (k, n), (None, n)
    ta, tb, tr = ttype(a, "f32"), ttype(b, "f32"), ttype(r, "f32")
    src = tmp_path / "g.mlir"
    src.write_text(graph([("a", a, "f32"), ("b", b, "f32")], [f'%r0 = "max.matmul"(%a, %b) : ({ta}, {tb}) -> {tr}'], [tr]))
    rng = np.random.default_rng(7)
    runs = []
    for m in [5, 129]:
        x, y = data((m, k), "f32", rng), data((k, n), "f32", rng)
        runs.append(({"a": x, "b": y}, [x @ y]))
    gpu_case(src, runs, rtol=2e-2, atol=5e-2, flags=("--allow-tf32",))
    # Each slice of B transposed as it is copied (the A/B for benches/gpu/check.sh).
    gpu_case(src, runs, rtol=2e-2, atol=5e-2, flags=("--allow-tf32",), env={"MAX_GPU_WGMMA": "tf32_transpose=0"})


def test_matmul_f16_and_int(tmp_path):
    a, b, r = (None, 16), (16, 3), (None, 3)
    ta, tb, tr = ttype(a, "f16"), ttype(b, "f16"), ttype(r, "f16")
    check(tmp_path, graph([("a", a, "f16"), ("b", b, "f16")], [f'%r0 = "max.matmul"(%a, %b) : ({ta}, {tb}) -> {tr}'], [tr]),
          [("a", a, "f16"), ("b", b, "f16")], lambda x, y: (x.astype(np.float32) @ y.astype(np.float32)).astype(np.float16),
          rtol=5e-3, atol=5e-3)
    ta, tb, tr = ttype(a, "i32"), ttype(b, "i32"), ttype(r, "i32")
    check(tmp_path, graph([("a", a, "i32"), ("b", b, "i32")], [f'%r0 = "max.matmul"(%a, %b) : ({ta}, {tb}) -> {tr}'], [tr]),
          [("a", a, "i32"), ("b", b, "i32")], lambda x, y: x @ y)


@pytest.mark.parametrize("perm", [(1, 0, 2), (0, 2, 1), (2, 0, 1)])
def test_transpose(tmp_path, perm):
    s = (None, 3, 4)
    r = tuple(s[p] for p in perm)
    ts, tr = ttype(s, "f32"), ttype(r, "f32")
    p = ", ".join(map(str, perm))
    check(tmp_path, graph([("x", s, "f32")], [f'%r0 = "max.transpose"(%x) {{perm = array<i64: {p}>}} : ({ts}) -> {tr}'], [tr]),
          [("x", s, "f32")], lambda x: np.transpose(x, perm))


@pytest.mark.parametrize("kind", ["sum", "mean", "max"])
@pytest.mark.parametrize("axes,keep", [((-1,), False), ((0,), False), ((0, 2), True), ((1,), True)])
def test_reduce(tmp_path, kind, axes, keep):
    s = (None, 3, 4)
    out = [d for i, d in enumerate(s) if i not in [a % 3 for a in axes]] if not keep else [1 if i in [a % 3 for a in axes] else d for i, d in enumerate(s)]
    ts, tr = ttype(s, "f32"), ttype(out, "f32")
    a = ", ".join(map(str, axes))
    kd = ", keepdims = true" if keep else ""
    fn = {"sum": np.sum, "mean": np.mean, "max": np.max}[kind]
    check(tmp_path, graph([("x", s, "f32")], [f'%r0 = "max.reduce_{kind}"(%x) {{axes = array<i64: {a}>{kd}}} : ({ts}) -> {tr}'], [tr]),
          [("x", s, "f32")], lambda x: fn(x, axis=axes, keepdims=keep).astype(np.float32), rtol=1e-4, atol=1e-5)


def test_reduce_int(tmp_path):
    s = (None, 5)
    ts, tr = ttype(s, "i64"), ttype((None,), "i64")
    for kind, fn in [("sum", np.sum), ("max", np.max)]:
        check(tmp_path, graph([("x", s, "i64")], [f'%r0 = "max.reduce_{kind}"(%x) {{axes = array<i64: 1>}} : ({ts}) -> {tr}'], [tr]),
              [("x", s, "i64")], lambda x: fn(x, axis=1))


@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_softmax(tmp_path, axis):
    s = (None, 4, 6)
    t = ttype(s, "f32")

    def ref(x):
        e = np.exp(x - x.max(axis=axis, keepdims=True))
        return (e / e.sum(axis=axis, keepdims=True)).astype(np.float32)

    check(tmp_path, graph([("x", s, "f32")], [f'%r0 = "max.softmax"(%x) {{axis = {axis} : i64}} : ({t}) -> {t}'], [t]),
          [("x", s, "f32")], ref, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("shape", [(None, 3, 16), (None, 3, 40), (None, 777), (None, 2, None), (None,)])
def test_softmax_rows(tmp_path, shape):
    """Softmax over the last axis runs row by row in 16-lane vectors, with scalar steps past
    the last whole vector: rows of one vector, two and a half, 48 and a half, a width known
    only at run time (5, 16, 37), and a single row of that width, with -inf entries (masked
    keys), large values, a row of equal values and one all -inf (NaN, as NumPy gives). NumPy's
    numbers, on 1 and 2 threads."""
    t = ttype(shape, "f32")
    src = tmp_path / "g.mlir"
    src.write_text(graph([("x", shape, "f32")], [f'%r0 = "max.softmax"(%x) {{axis = -1 : i64}} : ({t}) -> {t}'], [t]))
    art = tmp_path / "g.maxa"
    maxc("compile", src, "-o", art)
    rng = np.random.default_rng(17)
    for b in [5, 16, 37]:
        x = (rng.standard_normal(concrete(shape, b)) * 4).astype(np.float32)
        flat = x.reshape(-1, x.shape[-1])
        flat[0, ::3] = -np.inf
        if flat.shape[0] > 1:
            flat[-1, :] = 2.5
        if flat.shape[0] > 3:
            flat[1, -1] = 80.0
            flat[2, :] = -np.inf
        with np.errstate(invalid="ignore"):
            e = np.exp(x.astype(np.float64) - x.max(axis=-1, keepdims=True))
            want = e / e.sum(axis=-1, keepdims=True)
        for threads in ["1", "2"]:
            np.save(tmp_path / "x.npy", x)
            maxc("run", art, "--threads", threads, "--input", f"x={tmp_path / 'x.npy'}", "--output", tmp_path / "o.npy")
            np.testing.assert_allclose(np.load(tmp_path / "o.npy"), want, rtol=1e-5, atol=1e-7, err_msg=f"size {b}, threads={threads}")


def test_reshape_feeds_kernels(tmp_path):
    s, r = (None, 12), (None, 3, 4)
    ts, tr = ttype(s, "f32"), ttype(r, "f32")
    body = [f'%a = "max.reshape"(%x) {{shape = array<i64: -1, 3, 4>}} : ({ts}) -> {tr}',
            f'%r0 = "max.exp"(%a) : ({tr}) -> {tr}',
            f'%r1 = "max.reshape"(%r0) {{shape = array<i64: 0, 12>}} : ({tr}) -> {ts}']
    check(tmp_path, graph([("x", s, "f32")], body, [tr, ts]), [("x", s, "f32")],
          lambda x: [np.exp(x.reshape(-1, 3, 4)), np.exp(x)], n_out=2)


def test_broadcast_to(tmp_path):
    s, r = (None, 1, 5), (None, 4, 5)
    ts, tr = ttype(s, "f32"), ttype(r, "f32")
    check(tmp_path, graph([("x", s, "f32")], [f'%r0 = "max.broadcast_to"(%x) {{shape = array<i64: -1, 4, 5>}} : ({ts}) -> {tr}'], [tr]),
          [("x", s, "f32")], lambda x: np.broadcast_to(x, (x.shape[0], 4, 5)))


@pytest.mark.parametrize("axis", [0, 1])
def test_concat(tmp_path, axis):
    a = (None, 2)
    b = (None, 3) if axis == 1 else (None, 2)
    r = (None, 7) if axis == 1 else (None, 2)
    ta, tb, tr = ttype(a, "f32"), ttype(b, "f32"), ttype(r, "f32")
    check(tmp_path, graph([("x", a, "f32"), ("y", b, "f32")], [f'%r0 = "max.concat"(%x, %y, %x) {{axis = {axis} : i64}} : ({ta}, {tb}, {ta}) -> {tr}'], [tr]),
          [("x", a, "f32"), ("y", b, "f32")], lambda x, y: np.concatenate([x, y, x], axis=axis))


def test_split(tmp_path):
    s = (None, 6)
    ts, t2, t4 = ttype(s, "f32"), ttype((None, 2), "f32"), ttype((None, 4), "f32")
    body = ['%r0, %r1, %r2 = "max.split"(%x) {axis = 1 : i64, num_splits = 3 : i64} : (' + ts + f") -> ({t2}, {t2}, {t2})",
            f'%r3, %r4 = "max.split"(%x) {{axis = -1 : i64, sizes = array<i64: 2, 4>}} : ({ts}) -> ({t2}, {t4})']
    check(tmp_path, graph([("x", s, "f32")], body, [t2, t2, t2, t2, t4]), [("x", s, "f32")],
          lambda x: [x[:, 0:2], x[:, 2:4], x[:, 4:6], x[:, :2], x[:, 2:]], n_out=5)


def test_split_middle_and_leading_axes(tmp_path):
    """A rank-3 f16 split along a middle axis (an outer, an axis and an inner index per
    element in the GPU's one-launch split) and a static split along the rows."""
    s, z = (None, 6, 5), (4, 3)
    ts, ta, tb = ttype(s, "f16"), ttype((None, 2, 5), "f16"), ttype((None, 4, 5), "f16")
    tz, tz1, tz3 = ttype(z, "f32"), ttype((1, 3), "f32"), ttype((3, 3), "f32")
    body = [f'%r0, %r1 = "max.split"(%x) {{axis = -2 : i64, sizes = array<i64: 2, 4>}} : ({ts}) -> ({ta}, {tb})',
            f'%r2, %r3 = "max.split"(%z) {{axis = 0 : i64, sizes = array<i64: 1, 3>}} : ({tz}) -> ({tz1}, {tz3})']
    check(tmp_path, graph([("x", s, "f16"), ("z", z, "f32")], body, [ta, tb, tz1, tz3]), [("x", s, "f16"), ("z", z, "f32")],
          lambda x, z: [x[:, :2], x[:, 2:], z[:1], z[1:]], n_out=4)


def test_slice(tmp_path):
    s = (None, 10)
    ts = ttype(s, "f32")
    body = [f'%r0 = "max.slice"(%x) {{starts = array<i64: 1, -7>, ends = array<i64: 1000, -1>, steps = array<i64: 1, 2>}} : ({ts}) -> {ttype((None, 3), "f32")}',
            f'%r1 = "max.slice"(%x) {{starts = array<i64: 2>, ends = array<i64: 8>, axes = array<i64: 1>}} : ({ts}) -> {ttype((None, 6), "f32")}']
    check(tmp_path, graph([("x", s, "f32")], body, [ttype((None, 3), "f32"), ttype((None, 6), "f32")]), [("x", s, "f32")],
          lambda x: [x[1:1000, -7:-1:2], x[:, 2:8]], n_out=2, sizes=[1, 7, 33])


def test_gather(tmp_path):
    # Embedding lookup: table[10, 4] at indices[?] (negative and out-of-range indices clamp).
    table = np.arange(40, dtype=np.float32).reshape(10, 4)
    dense = ", ".join(str(float(v)) for v in table.ravel())
    tt = ttype((10, 4), "f32")
    body = [f'%t = "max.constant"() {{value = dense<[{dense}]> : tensor<40xf32>}} : () -> tensor<40xf32>',
            f'%tab = "max.reshape"(%t) {{shape = array<i64: 10, 4>}} : (tensor<40xf32>) -> {tt}',
            f'%r0 = "max.gather"(%tab, %i) {{axis = 0 : i64}} : ({tt}, {ttype((None,), "i64")}) -> {ttype((None, 4), "f32")}',
            f'%r1 = "max.gather"(%x, %j) {{axis = 1 : i64}} : ({ttype((None, 5), "f32")}, {ttype((2,), "i32")}) -> {ttype((None, 2), "f32")}']
    src = graph([("i", (None,), "i64"), ("x", (None, 5), "f32"), ("j", (2,), "i32")], body, [ttype((None, 4), "f32"), ttype((None, 2), "f32")])
    p = tmp_path / "g.mlir"
    p.write_text(src)
    maxc("compile", p, "-o", tmp_path / "g.maxa")
    rng = np.random.default_rng(3)
    for b in SIZES:
        idx = rng.integers(-3, 12, size=b).astype(np.int64)
        x = rng.standard_normal((b, 5)).astype(np.float32)
        j = np.array([4, 1], dtype=np.int32)
        got = run_artifact(tmp_path / "g.maxa", {"i": idx, "x": x, "j": j}, tmp_path, 2)
        wrapped = np.clip(np.where(idx < 0, idx + 10, idx), 0, 9)
        np.testing.assert_array_equal(got[0], table[wrapped])
        np.testing.assert_array_equal(got[1], x[:, [4, 1]])


def test_constant_and_f16_weights(tmp_path):
    s = (None, 3)
    t = ttype(s, "f32")
    body = [f'%c = "max.constant"() {{value = dense<[1.5, -2.0, 0.25]> : tensor<3xf32>}} : () -> tensor<3xf32>',
            f'%r0 = "max.mul"(%x, %c) : ({t}, tensor<3xf32>) -> {t}']
    check(tmp_path, graph([("x", s, "f32")], body, [t]), [("x", s, "f32")], lambda x: x * np.array([1.5, -2.0, 0.25], np.float32))


@pytest.mark.parametrize("fusion", [True, False], ids=["fused", "unfused"])
def test_fused_chains_match_numpy(tmp_path, fusion):
    """Chains that fusion merges into one kernel (matmul epilogues, elementwise chains with
    broadcast operands, matmul+softmax) give NumPy's numbers with and without fusion, at
    sizes that do not divide evenly over workgroups."""
    t, tw, tb = ttype((None, 6), "f32"), ttype((6, 6), "f32"), ttype((6,), "f32")
    body = [f'%0 = "max.matmul"(%x, %w) : ({t}, {tw}) -> {t}',
            f'%1 = "max.add"(%0, %b) : ({t}, {tb}) -> {t}',
            f'%r0 = "max.silu"(%1) : ({t}) -> {t}',
            f'%3 = "max.mul"(%x, %b) : ({t}, {tb}) -> {t}',
            f'%4 = "max.sub"(%3, %x) : ({t}, {t}) -> {t}',
            f'%r1 = "max.softmax"(%4) {{axis = -1 : i64}} : ({t}) -> {t}',
            f'%6 = "max.matmul"(%x, %w) : ({t}, {tw}) -> {t}',
            f'%r2 = "max.softmax"(%6) {{axis = 1 : i64}} : ({t}) -> {t}']
    src = tmp_path / "g.mlir"
    src.write_text(graph([("x", (None, 6), "f32"), ("w", (6, 6), "f32"), ("b", (6,), "f32")], body, [t, t, t]))
    art = tmp_path / "g.maxa"
    maxc("compile", src, "-o", art, *([] if fusion else ["--no-fusion"]))

    def softmax(v):
        e = np.exp(v - v.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    rng = np.random.default_rng(5)
    for n in [1, 7, 33]:
        x, w, b = (rng.standard_normal(s).astype(np.float32) for s in [(n, 6), (6, 6), (6,)])
        got = run_artifact(art, {"x": x, "w": w, "b": b}, tmp_path, 3)
        h = x @ w + b
        want = [h / (1 + np.exp(-h)), softmax(x * b - x), softmax(x @ w)]
        for g, r in zip(got, want):
            np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6)


def microkernel_graph(tmp_path, k, rng):
    """The graph of the micro-kernel tests (see test_matmul_microkernel_tiles) with its
    weights saved as w.safetensors: returns (graph file, wp, wu)."""
    from maxtest import save_safetensors
    wp = rng.standard_normal((k, 48)).astype(np.float32)
    wu = rng.standard_normal((k, 40)).astype(np.float32)
    save_safetensors(tmp_path / "w.safetensors", {"wp": wp, "wu": wu})
    ta, tb = ttype((None, k), "f32"), ttype((k, 40), "f32")
    t48, tbias = ttype((None, 48), "f32"), ttype((48,), "f32")
    body = [f'%wp = "max.weight"() {{name = "wp"}} : () -> tensor<{k}x48xf32>',
            f'%wu = "max.weight"() {{name = "wu"}} : () -> tensor<{k}x40xf32>',
            f'%r0 = "max.matmul"(%a, %wp) : ({ta}, tensor<{k}x48xf32>) -> {t48}',
            f'%r1 = "max.matmul"(%a, %wu) : ({ta}, tensor<{k}x40xf32>) -> {ttype((None, 40), "f32")}',
            f'%r2 = "max.matmul"(%a, %b) : ({ta}, {tb}) -> {ttype((None, 40), "f32")}',
            f'%h = "max.matmul"(%a, %wp) : ({ta}, tensor<{k}x48xf32>) -> {t48}',
            f'%hb = "max.add"(%h, %bias) : ({t48}, {tbias}) -> {t48}',
            f'%hr = "max.add"(%hb, %res) : ({t48}, {t48}) -> {t48}',
            f'%r3 = "max.relu"(%hr) : ({t48}) -> {t48}']
    src = tmp_path / "g.mlir"
    src.write_text(graph([("a", (None, k), "f32"), ("b", (k, 40), "f32"), ("bias", (48,), "f32"), ("res", (None, 48), "f32")], body,
                         [t48, ttype((None, 40), "f32"), ttype((None, 40), "f32"), t48]))
    return src, wp, wu


# The micro-kernel's vectors: 512-bit where the host has AVX-512F (16 lanes; hosts without
# it take 8 either way), and 256-bit (MAX_MATMUL_LANES=8).
LANES = pytest.mark.parametrize("lanes", ["16", "8"], ids=["lanes16", "lanes8"])


@LANES
@pytest.mark.parametrize("k", [1, 5, 37, 601])
def test_matmul_microkernel_tiles(tmp_path, monkeypatch, k, lanes):
    """The register-blocked f32 path at shapes that do not divide its tiles: rows not a
    multiple of 6 (leftover 4-, 2- and 1-row tiles; 100 rows split by rows, fewer by columns), k
    in several 256-deep blocks with a short last one (601), k not a multiple of the k-split, a
    width with leftover columns (40 = 32 + 8), a weight stored pre-packed (48 columns, 3
    panels, so the workgroups split its columns unevenly) and one that cannot be (40), an
    activation right operand, and a column-split matmul whose epilogue reads a bias [n] and
    a residual [m, n] (sliced with the columns). 512-bit and 256-bit vectors alike."""
    monkeypatch.setenv("MAX_MATMUL_LANES", lanes)
    rng = np.random.default_rng(k)
    src, wp, wu = microkernel_graph(tmp_path, k, rng)
    art = tmp_path / "g.maxa"
    maxc("compile", src, "-o", art, "--weights", tmp_path / "w.safetensors")
    sections = maxc("inspect", art).stdout
    assert "weight:wp:packed16" in sections and "weight:wu " in sections, sections
    bias = rng.standard_normal(48).astype(np.float32)
    for m in [1, 2, 3, 4, 5, 6, 7, 10, 13, 33, 100]:
        a = rng.standard_normal((m, k)).astype(np.float32)
        b = rng.standard_normal((k, 40)).astype(np.float32)
        res = rng.standard_normal((m, 48)).astype(np.float32)
        got = run_artifact(art, {"a": a, "b": b, "bias": bias, "res": res}, tmp_path, 4)
        for g, w in zip(got, [a @ wp, a @ wu, a @ b, np.maximum(a @ wp + bias + res, 0)]):
            tol = 1e-5 if k < 256 else 1e-4  # a long k sums in a different order
            np.testing.assert_allclose(g, w, rtol=tol, atol=tol, err_msg=f"m={m}")


@LANES
def test_matmul_blocked_tiles_match_unblocked(tmp_path, monkeypatch, lanes):
    """The cache-blocked tiles of deep f32 matmuls (taken at run time from 2.5 MiB of `a` rows
    per workgroup; MAX_BLOCKED_MIN_A_BYTES=0 makes every deep matmul take them) give the
    unblocked tiles' results bit for bit (each sum is the same chain of FMAs), at shapes that
    divide none of the blocks: k = 601 (k-slices of 512 and 89), up to 1000 rows (row blocks
    of 192 with a partial last one, then leftover rows), a packed weight of 3 panels (also
    with a column-split epilogue), a weight that cannot be packed, and an activation right
    operand (packed into panels at run time) with 8 leftover columns. 512-bit and 256-bit
    vectors alike."""
    monkeypatch.setenv("MAX_MATMUL_LANES", lanes)
    k = 601
    rng = np.random.default_rng(11)
    src, wp, wu = microkernel_graph(tmp_path, k, rng)
    arts = []
    for threshold in ["0", str(1 << 62)]:
        monkeypatch.setenv("MAX_BLOCKED_MIN_A_BYTES", threshold)
        arts.append(tmp_path / f"g{len(arts)}.maxa")
        maxc("compile", src, "-o", arts[-1], "--weights", tmp_path / "w.safetensors")
    bias = rng.standard_normal(48).astype(np.float32)
    for m in [7, 200, 1000]:
        a = rng.standard_normal((m, k)).astype(np.float32)
        b = rng.standard_normal((k, 40)).astype(np.float32)
        res = rng.standard_normal((m, 48)).astype(np.float32)
        ins = {"a": a, "b": b, "bias": bias, "res": res}
        blocked, unblocked = (run_artifact(art, ins, tmp_path, 4) for art in arts)
        for i, (g, u, w) in enumerate(zip(blocked, unblocked, [a @ wp, a @ wu, a @ b, np.maximum(a @ wp + bias + res, 0)])):
            np.testing.assert_array_equal(g.view(np.uint32), u.view(np.uint32), err_msg=f"m={m} output {i}")
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4, err_msg=f"m={m} output {i}")


def test_matmul_activation_column_split(tmp_path, monkeypatch):
    """A deep matmul of two activations, `relu(a @ b + bias + res)`, splits b's 16-column
    stripes over the workgroups when a workgroup's rows of `a` would take the blocked tiles
    and b is at least as wide as a is tall (MAX_BLOCKED_MIN_A_BYTES=0 makes any `a` big
    enough), and its rows
    otherwise (MAX_COLUMN_SPLIT_ROWS=0 always splits rows). Both forms give the same bits
    and NumPy's numbers: 200 columns (12 panels and 8 leftover columns, in the last stripe),
    k = 601, 2 and 3 workgroups (stripes of 7 and 5 panels), rows below and above the
    width, the bias and the residual sliced with the stripes."""
    k, n = 601, 200
    ta, tb, tr, tbias = ttype((None, k), "f32"), ttype((k, n), "f32"), ttype((None, n), "f32"), ttype((n,), "f32")
    body = [f'%h = "max.matmul"(%a, %b) : ({ta}, {tb}) -> {tr}',
            f'%hb = "max.add"(%h, %bias) : ({tr}, {tbias}) -> {tr}',
            f'%hr = "max.add"(%hb, %res) : ({tr}, {tr}) -> {tr}',
            f'%r0 = "max.relu"(%hr) : ({tr}) -> {tr}']
    src = tmp_path / "g.mlir"
    src.write_text(graph([("a", (None, k), "f32"), ("b", (k, n), "f32"), ("bias", (n,), "f32"), ("res", (None, n), "f32")], body, [tr]))
    monkeypatch.setenv("MAX_BLOCKED_MIN_A_BYTES", "0")
    arts = []
    for min_rows in [None, "0"]:
        if min_rows is not None:
            monkeypatch.setenv("MAX_COLUMN_SPLIT_ROWS", min_rows)
        arts.append(tmp_path / f"g{len(arts)}.maxa")
        maxc("compile", src, "-o", arts[-1])
    rng = np.random.default_rng(12)
    bias = rng.standard_normal(n).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    for m in [7, 150, 250]:
        a = rng.standard_normal((m, k)).astype(np.float32)
        res = rng.standard_normal((m, n)).astype(np.float32)
        want = np.maximum(a @ b + bias + res, 0)
        for threads in [2, 3]:
            outs = []
            for art in arts:
                args = ["run", art, "--threads", str(threads), "--output", tmp_path / "out.npy"]
                for name, v in {"a": a, "b": b, "bias": bias, "res": res}.items():
                    np.save(tmp_path / f"{name}.npy", v)
                    args += ["--input", f"{name}={tmp_path / f'{name}.npy'}"]
                maxc(*args)
                outs.append(np.load(tmp_path / "out.npy"))
            np.testing.assert_array_equal(outs[0].view(np.uint32), outs[1].view(np.uint32), err_msg=f"m={m} threads={threads}")
            np.testing.assert_allclose(outs[0], want, rtol=1e-4, atol=1e-4, err_msg=f"m={m} threads={threads}")


def test_matmul_activation_packed_at_run_time(tmp_path, monkeypatch):
    """Matmuls of two activations with enough static rows read `b` from panels a pack
    dispatch writes once per call (MAX_PACK_MIN_BYTES=0 packs any size): one pack serves
    both matmuls on `b`. Split by rows, by columns (MAX_COLUMN_SPLIT_ROWS huge), with the
    blocked tiles (MAX_BLOCKED_MIN_A_BYTES=0) or not, on 1 to 3 threads, they give the
    bits `b` read in place gives (MAX_PACK_MIN_BYTES huge) and NumPy's numbers: k = 601,
    13 panels (uneven shares), 263 and 300 rows (leftover row tiles), a bias and a
    residual in the epilogue."""
    k, n, m, m2 = 601, 208, 263, 300
    ta, ta2, tb = ttype((m, k), "f32"), ttype((m2, k), "f32"), ttype((k, n), "f32")
    tr, tr2, tbias = ttype((m, n), "f32"), ttype((m2, n), "f32"), ttype((n,), "f32")
    body = [f'%h = "max.matmul"(%a, %b) : ({ta}, {tb}) -> {tr}',
            f'%hb = "max.add"(%h, %bias) : ({tr}, {tbias}) -> {tr}',
            f'%hr = "max.add"(%hb, %res) : ({tr}, {tr}) -> {tr}',
            f'%r0 = "max.relu"(%hr) : ({tr}) -> {tr}',
            f'%r1 = "max.matmul"(%a2, %b) : ({ta2}, {tb}) -> {tr2}']
    src = tmp_path / "g.mlir"
    src.write_text(graph([("a", (m, k), "f32"), ("a2", (m2, k), "f32"), ("b", (k, n), "f32"), ("bias", (n,), "f32"),
                          ("res", (m, n), "f32")], body, [tr, tr2]))
    arts = {}
    for pack in ["0", "999999999999"]:
        for blocked in [None, "0"]:
            for cols in [None, "100000"]:
                for var, v in [("MAX_PACK_MIN_BYTES", pack), ("MAX_BLOCKED_MIN_A_BYTES", blocked), ("MAX_COLUMN_SPLIT_ROWS", cols)]:
                    if v is None:
                        monkeypatch.delenv(var, raising=False)
                    else:
                        monkeypatch.setenv(var, v)
                art = tmp_path / f"g_{pack}_{blocked}_{cols}.maxa"
                maxc("compile", src, "-o", art)
                arts[(pack, blocked, cols)] = art
    plan = maxc("inspect", arts[("0", None, None)]).stdout
    assert plan.count("_pack ") == 1, plan
    rng = np.random.default_rng(13)
    ins = {"a": (m, k), "a2": (m2, k), "b": (k, n), "bias": (n,), "res": (m, n)}
    vals = {name: rng.standard_normal(shape).astype(np.float32) for name, shape in ins.items()}
    args = []
    for name, v in vals.items():
        np.save(tmp_path / f"{name}.npy", v)
        args += ["--input", f"{name}={tmp_path / f'{name}.npy'}"]
    want = [np.maximum(vals["a"] @ vals["b"] + vals["bias"] + vals["res"], 0), vals["a2"] @ vals["b"]]
    for (pack, blocked, cols), art in arts.items():
        if pack != "0":
            continue
        for threads in ["1", "2", "3"]:
            outs = []
            for a in [art, arts[("999999999999", blocked, cols)]]:
                maxc("run", a, "--threads", threads, "--output", tmp_path / "o0.npy", "--output", tmp_path / "o1.npy", *args)
                outs.append([np.load(tmp_path / "o0.npy"), np.load(tmp_path / "o1.npy")])
            what = f"blocked={blocked} cols={cols} threads={threads}"
            for i in range(2):
                np.testing.assert_array_equal(outs[0][i].view(np.uint32), outs[1][i].view(np.uint32), err_msg=f"output {i} {what}")
                np.testing.assert_allclose(outs[0][i], want[i], rtol=1e-4, atol=1e-4, err_msg=f"output {i} {what}")


def test_one_row_matmul_split_by_rows(tmp_path, monkeypatch):
    """A static one-row matmul on a packed weight followed by a residual add, made to split
    rows (MAX_COLUMN_SPLIT_ROWS=0), where workgroups past the only row get empty views of
    `x` and of the result: NumPy's numbers on 1 to 3 threads."""
    from maxtest import save_safetensors
    w = np.random.default_rng(6).standard_normal((64, 48)).astype(np.float32)
    save_safetensors(tmp_path / "w.safetensors", {"w": w})
    t, tw = ttype((1, 48), "f32"), ttype((64, 48), "f32")
    body = [f'%w = "max.weight"() {{name = "w"}} : () -> {tw}',
            f'%h = "max.matmul"(%x, %w) : ({ttype((1, 64), "f32")}, {tw}) -> {t}',
            f'%r0 = "max.add"(%h, %res) : ({t}, {t}) -> {t}']
    src = tmp_path / "g.mlir"
    src.write_text(graph([("x", (1, 64), "f32"), ("res", (1, 48), "f32")], body, [t]))
    monkeypatch.setenv("MAX_COLUMN_SPLIT_ROWS", "0")
    maxc("compile", src, "-o", tmp_path / "g.maxa", "--weights", tmp_path / "w.safetensors")
    rng = np.random.default_rng(7)
    for threads in ["1", "2", "3"]:
        x, res = rng.standard_normal((1, 64)).astype(np.float32), rng.standard_normal((1, 48)).astype(np.float32)
        np.save(tmp_path / "x.npy", x)
        np.save(tmp_path / "res.npy", res)
        maxc("run", tmp_path / "g.maxa", "--threads", threads, "--input", f"x={tmp_path / 'x.npy'}", "--input", f"res={tmp_path / 'res.npy'}",
             "--output", tmp_path / "o.npy")
        np.testing.assert_allclose(np.load(tmp_path / "o.npy"), x @ w + res, rtol=1e-5, atol=1e-5, err_msg=f"threads={threads}")


@LANES
def test_matmul_after_relu_skips_zeros(tmp_path, monkeypatch, lanes):
    """`relu(x) @ w + bias` on a packed weight, where a one-row product runs over the
    nonzeros of relu(x) only (MAX_ZERO_SKIP=0 compiles the dense path): k = 601 (a list
    length that leaves entries past the 4 chains), 13 panels, rows with no zeros (dense
    path), half, 95% and all zeros, and 3 rows (dense tiles). NumPy's numbers, and the dense
    path's to rounding, on 1 to 3 threads. 512-bit and 256-bit vectors alike."""
    monkeypatch.setenv("MAX_MATMUL_LANES", lanes)
    from maxtest import save_safetensors
    k, n = 601, 208
    rng = np.random.default_rng(21)
    w = rng.standard_normal((k, n)).astype(np.float32)
    bias = rng.standard_normal((n,)).astype(np.float32)
    save_safetensors(tmp_path / "w.safetensors", {"w": w, "bias": bias})
    tx, tw, tb, t = ttype((None, k), "f32"), ttype((k, n), "f32"), ttype((n,), "f32"), ttype((None, n), "f32")
    body = [f'%w = "max.weight"() {{name = "w"}} : () -> {tw}',
            f'%bias = "max.weight"() {{name = "bias"}} : () -> {tb}',
            f'%r = "max.relu"(%x) : ({tx}) -> {tx}',
            f'%h = "max.matmul"(%r, %w) : ({tx}, {tw}) -> {t}',
            f'%r0 = "max.add"(%h, %bias) : ({t}, {tb}) -> {t}']
    src = tmp_path / "g.mlir"
    src.write_text(graph([("x", (None, k), "f32")], body, [t]))
    arts = {}
    for skip in ["1", "0"]:
        monkeypatch.setenv("MAX_ZERO_SKIP", skip)
        arts[skip] = tmp_path / f"g{skip}.maxa"
        maxc("compile", src, "-o", arts[skip], "--weights", tmp_path / "w.safetensors")
        # The nonzero lists (i32 columns) exist only in the zero-skipping kernel.
        kernels = maxc("compile", src, "--emit", "linalg", "-o", "-", "--weights", tmp_path / "w.safetensors").stdout
        assert ("tensor<?xi32>" in kernels) == (skip == "1"), f"MAX_ZERO_SKIP={skip}"
    cases = {"no zeros": np.abs(rng.standard_normal((1, k))) + 0.1, "half": rng.standard_normal((1, k)),
             "95% zeros": np.where(rng.random((1, k)) < 0.95, -1.0, rng.standard_normal((1, k))),
             "all zeros": -np.abs(rng.standard_normal((1, k))), "3 rows": rng.standard_normal((3, k))}
    for what, x in cases.items():
        x = x.astype(np.float32)
        np.save(tmp_path / "x.npy", x)
        want = np.maximum(x, 0) @ w + bias
        for threads in ["1", "2", "3"]:
            outs = []
            for skip in ["1", "0"]:
                maxc("run", arts[skip], "--threads", threads, "--input", f"x={tmp_path / 'x.npy'}", "--output", tmp_path / "o.npy")
                outs.append(np.load(tmp_path / "o.npy"))
            np.testing.assert_allclose(outs[0], want, rtol=1e-4, atol=1e-4, err_msg=f"{what}, threads={threads}")
            np.testing.assert_allclose(outs[0], outs[1], rtol=1e-5, atol=1e-5, err_msg=f"{what}, threads={threads}")


def test_matmul_of_a_value_with_itself(tmp_path):
    """`x @ x` binds one buffer for both operands, so its kernel splits neither b's columns
    nor (the operand must stay whole) its rows: the result is NumPy's on 1 to 3 threads."""
    t = ttype((64, 64), "f32")
    src = tmp_path / "g.mlir"
    src.write_text(graph([("x", (64, 64), "f32")], [f'%r0 = "max.matmul"(%x, %x) : ({t}, {t}) -> {t}'], [t]))
    maxc("compile", src, "-o", tmp_path / "g.maxa")
    x = np.random.default_rng(4).standard_normal((64, 64)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    for threads in ["1", "2", "3"]:
        maxc("run", tmp_path / "g.maxa", "--threads", threads, "--input", f"x={tmp_path / 'x.npy'}", "--output", tmp_path / "o.npy")
        np.testing.assert_allclose(np.load(tmp_path / "o.npy"), x @ x, rtol=1e-5, atol=1e-4, err_msg=f"threads={threads}")


@pytest.mark.parametrize("dt", ["f32", "f16"])
def test_rms_and_layer_norm(tmp_path, dt):
    s = (None, 3, 16)
    t, tw = ttype(s, dt), ttype((16,), dt)
    body = [f'%r0 = "max.rms_norm"(%x, %w) {{epsilon = 1.0e-6 : f64}} : ({t}, {tw}) -> {t}',
            f'%r1 = "max.layer_norm"(%x, %w, %b) : ({t}, {tw}, {tw}) -> {t}']

    def ref(x, w, b):
        x64, w64, b64 = (v.astype(np.float64) for v in (x, w, b))
        rms = x64 / np.sqrt((x64 ** 2).mean(-1, keepdims=True) + 1e-6) * w64
        mu = x64.mean(-1, keepdims=True)
        ln = (x64 - mu) / np.sqrt(((x64 - mu) ** 2).mean(-1, keepdims=True) + 1e-5) * w64 + b64
        return [rms.astype(x.dtype), ln.astype(x.dtype)]

    tol = dict(rtol=3e-3, atol=3e-3) if dt == "f16" else dict(rtol=1e-5, atol=1e-5)
    check(tmp_path, graph([("x", s, dt), ("w", (16,), dt), ("b", (16,), dt)], body, [t, t]),
          [("x", s, dt), ("w", (16,), dt), ("b", (16,), dt)], ref, n_out=2, **tol)


@pytest.mark.parametrize("width", [40, 777, None])
def test_norm_rows(tmp_path, width):
    """f32 rms_norm and layer_norm (after a residual add fused into the same kernel, as in
    BERT) run row by row in 16-lane vectors with scalar steps past the last whole vector:
    two and a half vectors, 48 and a half, and a width known only at run time (5, 16, 37).
    NumPy's numbers, on 1 and 2 threads."""
    s, sw = (None, 3, width), (width,)
    t, tw = ttype(s, "f32"), ttype(sw, "f32")
    body = [f'%h = "max.add"(%x, %res) : ({t}, {t}) -> {t}',
            f'%r0 = "max.rms_norm"(%h, %w) {{epsilon = 1.0e-6 : f64}} : ({t}, {tw}) -> {t}',
            f'%r1 = "max.layer_norm"(%h, %w, %b) {{epsilon = 1.0e-5 : f64}} : ({t}, {tw}, {tw}) -> {t}']
    src = tmp_path / "g.mlir"
    src.write_text(graph([("x", s, "f32"), ("res", s, "f32"), ("w", sw, "f32"), ("b", sw, "f32")], body, [t, t]))
    art = tmp_path / "g.maxa"
    maxc("compile", src, "-o", art)
    rng = np.random.default_rng(23)
    for b in [5, 16, 37]:
        w_len = width or b
        ins = {"x": rng.standard_normal((b, 3, w_len)) * 3 + 1, "res": rng.standard_normal((b, 3, w_len)),
               "w": rng.standard_normal(w_len), "b": rng.standard_normal(w_len)}
        ins = {k: v.astype(np.float32) for k, v in ins.items()}
        h = ins["x"].astype(np.float64) + ins["res"]
        rms = h / np.sqrt((h ** 2).mean(-1, keepdims=True) + 1e-6) * ins["w"]
        mu = h.mean(-1, keepdims=True)
        ln = (h - mu) / np.sqrt(((h - mu) ** 2).mean(-1, keepdims=True) + 1e-5) * ins["w"] + ins["b"]
        for threads in ["1", "2"]:
            args = []
            for k, v in ins.items():
                np.save(tmp_path / f"{k}.npy", v)
                args += ["--input", f"{k}={tmp_path / f'{k}.npy'}"]
            maxc("run", art, "--threads", threads, *args, "--output", tmp_path / "o0.npy", "--output", tmp_path / "o1.npy")
            for i, want in enumerate([rms, ln]):
                np.testing.assert_allclose(np.load(tmp_path / f"o{i}.npy"), want, rtol=1e-5, atol=1e-5, err_msg=f"output {i}, size {b}, threads={threads}")


@pytest.mark.parametrize("width", [96, 4096])
def test_rms_norm_then_cast(tmp_path, width):
    """rms_norm rounded to f16 by a cast after it: on a GPU one row kernel (1024 threads
    for the 4096-wide rows) that rounds as it stores."""
    s, sw = (None, width), (width,)
    t, tw, th = ttype(s, "f32"), ttype(sw, "f32"), ttype(s, "f16")
    body = [f'%n = "max.rms_norm"(%x, %w) {{epsilon = 1.0e-6 : f64}} : ({t}, {tw}) -> {t}',
            f'%r0 = "max.cast"(%n) : ({t}) -> {th}']

    def ref(x, w):
        x64 = x.astype(np.float64)
        rms = x64 / np.sqrt((x64 ** 2).mean(-1, keepdims=True) + 1e-6) * w.astype(np.float64)
        return rms.astype(np.float32).astype(np.float16)
    check(tmp_path, graph([("x", s, "f32"), ("w", sw, "f32")], body, [th]),
          [("x", s, "f32"), ("w", sw, "f32")], ref, rtol=2e-3, atol=2e-3, sizes=[1, 5])


@pytest.mark.parametrize("k", [256, 2048])
def test_rms_norm_into_matmul(tmp_path, k):
    """`cast(rms_norm(x, w)) @ b + r`, a projection after a Llama norm: on an sm_90 GPU one
    dispatch whose matrix-vector kernel computes the norm for 1-4 rows (1, 3, 4 here); 7 rows
    run the row kernel, then the matmul. The 2048-wide rows take the row kernel's 1024
    threads there and the matrix-vector kernel's 256 here."""
    s, sw, sb, so = (None, k), (k,), (k, 64), (None, 64)
    t, tw, th, tb, ty, to = ttype(s, "f32"), ttype(sw, "f32"), ttype(s, "f16"), ttype(sb, "f16"), ttype(so, "f16"), ttype(so, "f32")
    body = [f'%n = "max.rms_norm"(%x, %w) {{epsilon = 1.0e-5 : f64}} : ({t}, {tw}) -> {t}',
            f'%h = "max.cast"(%n) : ({t}) -> {th}',
            f'%y = "max.matmul"(%h, %b) : ({th}, {tb}) -> {ty}',
            f'%y32 = "max.cast"(%y) : ({ty}) -> {to}',
            f'%r0 = "max.add"(%y32, %r) : ({to}, {to}) -> {to}']

    def ref(x, w, b, r):
        x64 = x.astype(np.float64)
        h = (x64 / np.sqrt((x64 ** 2).mean(-1, keepdims=True) + 1e-5) * w).astype(np.float32).astype(np.float16)
        y = (h.astype(np.float64) @ b.astype(np.float64)).astype(np.float16)
        return (y.astype(np.float32) + r).astype(np.float32)
    ins = [("x", s, "f32"), ("w", sw, "f32"), ("b", sb, "f16"), ("r", so, "f32")]
    check(tmp_path, graph(ins, body, [to]), ins, ref, rtol=5e-3, atol=5e-3, sizes=[1, 3, 4, 7])


@pytest.mark.parametrize("k", [256, 1056])
def test_silu_mul_into_matmul(tmp_path, k):
    """`cast(silu(gate) * up) @ b + r` with gate and up halves of one input (Llama's FFN
    after its merged gate/up projection): on an sm_90 GPU one dispatch whose matrix-vector
    kernel computes A for 1-4 rows; 7 rows compute A with a thread per element, then run the
    matmul. K = 1056 leaves the matrix-vector kernel's last K chunk short (17 chunks of 64)."""
    s, sb, so = (None, 2 * k), (k, 64), (None, 64)
    t, th, tg, tb, ty, to = ttype(s, "f32"), ttype((None, k), "f16"), ttype((None, k), "f32"), ttype(sb, "f16"), ttype(so, "f16"), ttype(so, "f32")
    body = [f'%g, %u = "max.split"(%gu) {{axis = 1 : i64, sizes = array<i64: {k}, {k}>}} : ({t}) -> ({tg}, {tg})',
            f'%s = "max.silu"(%g) : ({tg}) -> {tg}',
            f'%m = "max.mul"(%s, %u) : ({tg}, {tg}) -> {tg}',
            f'%h = "max.cast"(%m) : ({tg}) -> {th}',
            f'%y = "max.matmul"(%h, %b) : ({th}, {tb}) -> {ty}',
            f'%y32 = "max.cast"(%y) : ({ty}) -> {to}',
            f'%r0 = "max.add"(%y32, %r) : ({to}, {to}) -> {to}']

    def ref(gu, b, r):
        g, u = gu[:, :k].astype(np.float64), gu[:, k:].astype(np.float64)
        h = (g / (1 + np.exp(-g)) * u).astype(np.float32).astype(np.float16)
        y = (h.astype(np.float64) @ b.astype(np.float64)).astype(np.float16)
        return (y.astype(np.float32) + r).astype(np.float32)
    ins = [("gu", s, "f32"), ("b", sb, "f16"), ("r", so, "f32")]
    check(tmp_path, graph(ins, body, [to]), ins, ref, rtol=5e-3, atol=5e-3, sizes=[1, 3, 4, 7])


def rope_ref(x, pos, base, interleaved):
    d = x.shape[-1]
    inv = base ** (-np.arange(0, d, 2, dtype=np.float64) / d)          # [d/2]
    ang = pos.astype(np.float64)[:, None] * inv[None, :]              # [s, d/2]
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]       # [s, 1, d/2]
    x64 = x.astype(np.float64)
    if interleaved:
        a, b = x64[..., 0::2], x64[..., 1::2]
    else:
        a, b = x64[..., : d // 2], x64[..., d // 2:]
    ya, yb = a * cos - b * sin, a * sin + b * cos
    y = np.empty_like(x64)
    if interleaved:
        y[..., 0::2], y[..., 1::2] = ya, yb
    else:
        y[..., : d // 2], y[..., d // 2:] = ya, yb
    return y.astype(x.dtype)


@pytest.mark.parametrize("interleaved", [True, False], ids=["adjacent-pairs", "half-split"])
@pytest.mark.parametrize("batch", [False, True], ids=["seq-heads-dim", "batched"])
def test_rope(tmp_path, interleaved, batch):
    s = (2, None, 3, 8) if batch else (None, 3, 8)
    t, tp = ttype(s, "f32"), ttype((None,), "i64")
    flag = ", interleaved = true" if interleaved else ""
    src = tmp_path / "g.mlir"
    src.write_text(graph([("x", s, "f32"), ("p", (None,), "i64")], [f'%r0 = "max.rope"(%x, %p) {{base = 1.0e4 : f64{flag}}} : ({t}, {tp}) -> {t}'], [t]))
    maxc("compile", src, "-o", tmp_path / "g.maxa")
    rng = np.random.default_rng(1)
    for n in [1, 7, 33]:
        x = rng.standard_normal(concrete(s, n)).astype(np.float32)
        p = (np.arange(n) * 97 + 5).astype(np.int64)  # positions up to a few thousand
        (got,) = run_artifact(tmp_path / "g.maxa", {"x": x, "p": p}, tmp_path)
        # x[N, H, D] takes the RoPE kernel, whose angles are f32 as in llama.cpp (at positions
        # in the thousands they are off by up to ~1e-4 radians); the batched form uses f64.
        tol = 1e-5 if batch else 1e-4
        np.testing.assert_allclose(got, rope_ref(x, p, 1e4, interleaved), rtol=tol, atol=tol)


def test_norm_fuses_after_matmul(tmp_path):
    t, tw = ttype((None, 32), "f32"), ttype((32,), "f32")
    body = ['%w = "max.weight"() {name = "w", init = "uniform", scale = 0.5 : f64, seed = 4 : i64} : () -> tensor<32x32xf32>',
            f'%h = "max.matmul"(%x, %w) : ({t}, tensor<32x32xf32>) -> {t}',
            f'%r0 = "max.rms_norm"(%h, %g) : ({t}, {tw}) -> {t}']
    src = tmp_path / "g.mlir"
    src.write_text(graph([("x", (None, 32), "f32"), ("g", (32,), "f32")], body, [t]))
    maxc("compile", src, "-o", tmp_path / "g.maxa")
    assert "max_kernel_g_k0_matmul_rms_norm" in maxc("inspect", tmp_path / "g.maxa").stdout


def q4_k_scale_min(sc, j):
    """ggml's get_scale_min_k4: the 6-bit scale and min of sub-block j from 12 bytes."""
    sc = [int(v) for v in sc]
    if j < 4:
        return sc[j] & 63, sc[j + 4] & 63
    return (sc[j + 4] & 15) | ((sc[j - 4] >> 6) << 4), (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4)


def make_q4_k_blocks(n, k, rng):
    """Random Q4_K super-blocks (256 weights, 144 bytes) for an [n, k] weight and their
    dequantized values, decoded as ggml defines the format."""
    rows, deq = [], np.zeros((n, k), np.float64)
    for r in range(n):
        row = bytearray()
        for b in range(k // 256):
            d, dmin = np.float16(rng.uniform(0.001, 0.01)), np.float16(rng.uniform(0.001, 0.02))
            sc = rng.integers(0, 256, size=12).astype(np.uint8)
            qs = rng.integers(0, 256, size=128).astype(np.uint8)
            row += d.tobytes() + dmin.tobytes() + sc.tobytes() + qs.tobytes()
            for j in range(8):
                s6, m6 = q4_k_scale_min(sc, j)
                q = (qs[(j // 2) * 32:(j // 2) * 32 + 32] >> (4 * (j % 2))) & 15
                deq[r, b * 256 + j * 32:b * 256 + j * 32 + 32] = float(d) * s6 * q.astype(np.float64) - float(dmin) * m6
        rows.append(np.frombuffer(bytes(row), dtype=np.int8))
    return np.stack(rows), deq


def q6_k_quants(ql, qh):
    """The 256 6-bit quants (0..63) of a Q6_K super-block, as ggml lays them out: per half
    n, element l + 32k takes its low bits from ql[64n + l + 32(k % 2)] (high nibble for
    k >= 2) and its high bits from bits 2k of qh[32n + l]."""
    q = np.zeros(256, np.int32)
    for n in range(2):
        for l in range(32):
            for k in range(4):
                lo = int(ql[64 * n + l + 32 * (k % 2)]) >> (4 * (k // 2)) & 15
                hi = (int(qh[32 * n + l]) >> (2 * k)) & 3
                q[128 * n + l + 32 * k] = lo | hi << 4
    return q


def make_q6_k_blocks(n, k, rng):
    """Random Q6_K super-blocks (256 weights, 210 bytes) and their dequantized values."""
    rows, deq = [], np.zeros((n, k), np.float64)
    for r in range(n):
        row = bytearray()
        for b in range(k // 256):
            ql = rng.integers(0, 256, size=128).astype(np.uint8)
            qh = rng.integers(0, 256, size=64).astype(np.uint8)
            sc = rng.integers(-128, 128, size=16).astype(np.int8)
            d = np.float16(rng.uniform(0.0005, 0.002))
            row += ql.tobytes() + qh.tobytes() + sc.tobytes() + d.tobytes()
            q = q6_k_quants(ql, qh)
            deq[r, b * 256:(b + 1) * 256] = float(d) * np.repeat(sc.astype(np.float64), 16) * (q - 32)
        rows.append(np.frombuffer(bytes(row), dtype=np.int8))
    return np.stack(rows), deq


# GPU cases of the quantized kernels past the few-rows form (9 to 45 rows here), which the
# tensor cores take by default from 16 rows: compiled with that path off, so the quantizer
# and the dot kernel keep their parity checks (test_qmatmul_tensor_cores checks the other).
DOT_KERNEL = {"MAX_GPU_QMATMUL": "tc_rows=0"}


def make_blocks(fmt, n, k, rng):
    """Random GGUF blocks for an [n, k] weight and their dequantized values (NumPy)."""
    if fmt == "q4_k":
        return make_q4_k_blocks(n, k, rng)
    if fmt == "q6_k":
        return make_q6_k_blocks(n, k, rng)
    nb = k // 32
    d = rng.uniform(0.01, 0.1, size=(n, nb)).astype(np.float16)
    # Scales of the other kinds an f16 holds: negative, zeros, subnormals (the kernels widen
    # a lone scale with integer arithmetic, which must be exact for all of them).
    for i, v in enumerate(np.array([-0.05, 0.0, -0.0, 6e-8, -3e-5, 6.1e-5], np.float16)):
        d[i % n, (3 * i) % nb] = v
    rows, deq = [], np.zeros((n, k), np.float64)
    for r in range(n):
        row = bytearray()
        for b in range(nb):
            if fmt == "q8_0":
                q = rng.integers(-128, 128, size=32).astype(np.int8)
                row += d[r, b].tobytes() + q.tobytes()
                deq[r, b * 32:(b + 1) * 32] = q.astype(np.float64) * float(d[r, b])
            elif fmt in ("q5_0", "q5_1"):
                # 5-bit quants: nibbles as in Q4, bit i of the 32-bit qh adds 16 to quant i.
                q = rng.integers(0, 32, size=32).astype(np.uint8)
                packed = ((q[:16] & 15) | ((q[16:] & 15) << 4)).astype(np.uint8)
                qh = np.uint32(sum(int(q[i] >> 4) << i for i in range(32)))
                if fmt == "q5_0":
                    row += d[r, b].tobytes() + qh.tobytes() + packed.tobytes()
                    deq[r, b * 32:(b + 1) * 32] = (q.astype(np.float64) - 16) * float(d[r, b])
                else:
                    m = np.float16(rng.uniform(-0.5, 0.5))
                    row += d[r, b].tobytes() + m.tobytes() + qh.tobytes() + packed.tobytes()
                    deq[r, b * 32:(b + 1) * 32] = q.astype(np.float64) * float(d[r, b]) + float(m)
            else:
                q = rng.integers(0, 16, size=32).astype(np.uint8)
                packed = (q[:16] | (q[16:] << 4)).astype(np.uint8)
                if fmt == "q4_0":
                    row += d[r, b].tobytes() + packed.tobytes()
                    deq[r, b * 32:(b + 1) * 32] = (q.astype(np.float64) - 8) * float(d[r, b])
                else:
                    m = np.float16(rng.uniform(-0.5, 0.5))
                    row += d[r, b].tobytes() + m.tobytes() + packed.tobytes()
                    deq[r, b * 32:(b + 1) * 32] = q.astype(np.float64) * float(d[r, b]) + float(m)
        rows.append(np.frombuffer(bytes(row), dtype=np.int8))
    return np.stack(rows), deq


@pytest.mark.parametrize("fmt,bb,blen", [("q4_0", 18, 32), ("q4_1", 20, 32), ("q5_0", 22, 32), ("q5_1", 24, 32), ("q8_0", 34, 32),
                                          ("q4_k", 144, 256), ("q6_k", 210, 256)])
def test_qmatmul_gguf_blocks(tmp_path, fmt, bb, blen):
    """x @ dequantize(w)^T with the weight kept in GGUF block layout, against NumPy's
    decoding of the same bytes: the micro-kernel (few rows: per-block decoding; 33 rows: a
    decoded panel), the generic contraction (an f16 activation) and `max.dequantize`."""
    n, k = 24, 2 * 256
    nbytes = k // blen * bb
    tx, tw, tr = ttype((None, k), "f32"), ttype((n, nbytes), "i8"), ttype((None, n), "f32")
    txh, trh, tdq = ttype((None, k), "f16"), ttype((None, n), "f16"), ttype((n, k), "f32")
    src = tmp_path / "g.mlir"
    src.write_text(graph([("x", (None, k), "f32"), ("xh", (None, k), "f16"), ("w", (n, nbytes), "i8")],
                         [f'%r0 = "max.qmatmul"(%x, %w) {{format = "{fmt}"}} : ({tx}, {tw}) -> {tr}',
                          f'%r1 = "max.qmatmul"(%xh, %w) {{format = "{fmt}"}} : ({txh}, {tw}) -> {trh}',
                          f'%r2 = "max.dequantize"(%w) {{format = "{fmt}"}} : ({tw}) -> {tdq}'], [tr, trh, tdq]))
    maxc("compile", src, "-o", tmp_path / "g.maxa")
    rng = np.random.default_rng(3)
    w, deq = make_blocks(fmt, n, k, rng)
    for m in [1, 7, 33]:
        x = rng.standard_normal((m, k)).astype(np.float32)
        got, got_h, got_dq = run_artifact(tmp_path / "g.maxa", {"x": x, "xh": x.astype(np.float16), "w": w}, tmp_path, 3)
        want = x.astype(np.float64) @ deq.T
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4 * np.abs(want).max())
        want_h = x.astype(np.float16).astype(np.float64) @ deq.T
        np.testing.assert_allclose(got_h.astype(np.float64), want_h, rtol=2e-3, atol=2e-3 * np.abs(want_h).max())
        np.testing.assert_allclose(got_dq, deq, rtol=1e-6, atol=1e-6)
    # The GPU kernel (f32 activations) on the same blocks.
    gsrc = tmp_path / "gpu.mlir"
    gsrc.write_text(graph([("x", (None, k), "f32"), ("w", (n, nbytes), "i8")], [f'%r0 = "max.qmatmul"(%x, %w) {{format = "{fmt}"}} : ({tx}, {tw}) -> {tr}'], [tr]))
    runs = []
    for m in [1, 7, 33]:
        x = rng.standard_normal((m, k)).astype(np.float32)
        runs.append(({"x": x, "w": w}, [(x.astype(np.float64) @ deq.T).astype(np.float32)]))
    gpu_case(gsrc, runs, rtol=1e-4, atol=1e-3, env=DOT_KERNEL)
    # 80 rows take the tensor cores, on x and the decoded weights rounded to f16.
    x = rng.standard_normal((80, k)).astype(np.float32)
    want = (x.astype(np.float64) @ deq.T).astype(np.float32)
    gpu_case(gsrc, [({"x": x, "w": w}, [want])], rtol=1e-2, atol=2e-3 * float(np.abs(want).max()), name="qmatmul_gguf_blocks_tc_" + fmt)


def test_qmatmul_real_smollm2_q8_0_embeddings(tmp_path):
    """The real SmolLM2 token_embd (Q8_0, the tied output head) used as qmatmul weights,
    against a NumPy decoding of the same GGUF bytes (skipped without the model file)."""
    import os
    path = os.environ.get("MAX_SMOLLM2_GGUF", "")
    if not os.path.exists(path):
        pytest.skip("set MAX_SMOLLM2_GGUF (see serve/tests/fetch_smollm2.sh)")
    raw = open(path, "rb").read()
    # Locate token_embd.weight's bytes: parse just enough of the GGUF header.
    import struct
    off = 8
    n_tensors, n_kv = struct.unpack_from("<QQ", raw, off); off += 16
    def rstr(o):
        (l,) = struct.unpack_from("<Q", raw, o); return raw[o + 8:o + 8 + l].decode(), o + 8 + l
    sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
    def skip_val(t, o):
        if t == 8:
            return rstr(o)[1]
        if t == 9:
            et, cnt = struct.unpack_from("<IQ", raw, o); o += 12
            for _ in range(cnt):
                o = skip_val(et, o)
            return o
        return o + sizes[t]
    align = 32
    for _ in range(n_kv):
        key, off = rstr(off)
        (t,) = struct.unpack_from("<I", raw, off); off += 4
        if key == "general.alignment":
            (align,) = struct.unpack_from("<I", raw, off)
        off = skip_val(t, off)
    info = {}
    for _ in range(n_tensors):
        name, off = rstr(off)
        (nd,) = struct.unpack_from("<I", raw, off); off += 4
        dims = struct.unpack_from(f"<{nd}Q", raw, off); off += 8 * nd
        ty, toff = struct.unpack_from("<IQ", raw, off); off += 12
        info[name] = (dims, ty, toff)
    data0 = (off + align - 1) // align * align
    dims, ty, toff = info["token_embd.weight"]
    assert ty == 8, "expected Q8_0"
    k, rows = dims[0], 64  # the first 64 vocabulary rows
    bb = 34
    w = np.frombuffer(raw, dtype=np.int8, count=rows * k // 32 * bb, offset=data0 + toff).reshape(rows, k // 32 * bb)
    blocks = w.reshape(rows, k // 32, bb)
    d = blocks[:, :, :2].copy().view(np.float16).astype(np.float64)
    deq = (blocks[:, :, 2:].astype(np.float64) * d).reshape(rows, k)
    tx, tw, tr = ttype((None, k), "f32"), ttype((rows, k // 32 * bb), "i8"), ttype((None, rows), "f32")
    src = tmp_path / "g.mlir"
    src.write_text(graph([("x", (None, k), "f32"), ("w", (rows, k // 32 * bb), "i8")],
                         [f'%r0 = "max.qmatmul"(%x, %w) {{format = "q8_0"}} : ({tx}, {tw}) -> {tr}'], [tr]))
    maxc("compile", src, "-o", tmp_path / "g.maxa")
    x = np.random.default_rng(0).standard_normal((3, k)).astype(np.float32)
    (got,) = run_artifact(tmp_path / "g.maxa", {"x": x, "w": np.ascontiguousarray(w)}, tmp_path)
    np.testing.assert_allclose(got, x.astype(np.float64) @ deq.T, rtol=1e-5, atol=1e-4)


def attention_ref(q, k, v, causal, scale=None):
    q64, k64, v64 = (a.astype(np.float64) for a in (q, k, v))
    b, s, hq, d = q.shape
    t, hkv = k.shape[1], k.shape[2]
    g = hq // hkv
    scale = scale if scale is not None else 1 / np.sqrt(d)
    kk = np.repeat(k64, g, axis=2)   # head h reads kv head h // g
    vv = np.repeat(v64, g, axis=2)
    sc = np.einsum("bshd,bthd->bhst", q64, kk) * scale
    if causal:
        mask = np.arange(t)[None, :] > (t - s + np.arange(s))[:, None]
        sc = np.where(mask[None, None], -np.inf, sc)
    p = np.exp(sc - sc.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.einsum("bhst,bthd->bshd", p, vv).astype(q.dtype)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "full"])
@pytest.mark.parametrize("dt", ["f32", "f16"])
def test_attention_gqa(tmp_path, causal, dt):
    """Grouped-query attention (6 query heads over 2 kv heads): prefill (S == T) and
    decode-like steps (S < T, queries at the end of the sequence), batch 1 and 3."""
    tq, tk, to = ttype((None, None, 6, 8), dt), ttype((None, None, 2, 8), dt), ttype((None, None, 6, 8), dt)
    flag = "causal = true" if causal else "causal = false"
    src = tmp_path / "g.mlir"
    src.write_text(graph([("q", (None, None, 6, 8), dt), ("k", (None, None, 2, 8), dt), ("v", (None, None, 2, 8), dt)],
                         [f'%r0 = "max.attention"(%q, %k, %v) {{{flag}}} : ({tq}, {tk}, {tk}) -> {to}'], [to]))
    maxc("compile", src, "-o", tmp_path / "g.maxa")
    rng = np.random.default_rng(2)
    tol = dict(rtol=5e-3, atol=5e-3) if dt == "f16" else dict(rtol=1e-5, atol=1e-6)
    for b, s, t in [(1, 7, 7), (3, 1, 9), (1, 4, 33), (3, 33, 33)]:
        q = rng.standard_normal((b, s, 6, 8)).astype(NP[dt])
        k = rng.standard_normal((b, t, 2, 8)).astype(NP[dt])
        v = rng.standard_normal((b, t, 2, 8)).astype(NP[dt])
        (got,) = run_artifact(tmp_path / "g.maxa", {"q": q, "k": k, "v": v}, tmp_path)
        np.testing.assert_allclose(got.astype(np.float64), attention_ref(q, k, v, causal).astype(np.float64), err_msg=f"b={b} s={s} t={t}", **tol)


def ggml_q8_matmul(x, w_bytes, fmt):
    """NumPy model of llama.cpp's CPU arithmetic for x @ dequantize(w)^T with x quantized
    to Q8_1 (q4_1, q5_1 weights) or Q8_0 (others) per 32-block: integer block dot products in 8
    lanes of 4, f32 lane accumulators, the lane sum in AVX order, then the Q4_1 min term.
    For q4_k it models our arithmetic, which treats each 32-weight sub-block like a Q4_1
    block (scale d * sc, min -dmin * m) against Q8_1 activations; llama.cpp instead
    quantizes activations in 256-wide Q8_K blocks."""
    f32, f16 = np.float32, np.float16
    m, k = x.shape
    nb = k // 32
    bb = {"q4_0": 18, "q4_1": 20, "q5_0": 22, "q5_1": 24, "q8_0": 34, "q4_k": 144, "q6_k": 210}[fmt]
    n = w_bytes.shape[0]
    raw = w_bytes.view(np.uint8)
    out = np.zeros((m, n), np.float32)
    for i in range(m):
        qx, dx, sx = [], [], []
        for b in range(nb):
            xb = x[i, b * 32:(b + 1) * 32].astype(f32)
            amax = f32(np.max(np.abs(xb)))
            d = f32(amax / f32(127))
            inv = f32(f32(127) / amax) if amax != 0 else f32(0)
            q = np.round((xb * inv).astype(f32)).astype(np.int32)
            qx.append(q)
            dx.append(f32(f16(d)))
            sx.append(f32(f16(f32(d * f32(q.sum())))))
        for j in range(n):
            acc = np.zeros(8, np.float32)
            summs = f32(0)
            for b in range(nb):
                if fmt == "q6_k":
                    # Sub-block b % 8 of super-block b // 8; one scale per 16 weights.
                    sb, sub = raw[j, (b // 8) * bb:(b // 8 + 1) * bb], b % 8
                    qw = q6_k_quants(sb[:128], sb[128:192])[sub * 32:sub * 32 + 32] - 32
                    sc = sb[192:208].view(np.int8)[2 * sub:2 * sub + 2].astype(f32)
                    d01 = f32(f32(sb[208:210].view(f16)[0]) * dx[b])
                    lanes = (qw * qx[b]).reshape(8, 4).sum(axis=1).astype(f32)
                    dv = np.repeat((d01 * sc).astype(f32), 4)
                    acc = (dv.astype(np.float64) * lanes + acc).astype(f32)
                    continue
                if fmt == "q4_k":
                    # Sub-block b % 8 of super-block b // 8: w = q * (d * sc) - dmin * m.
                    sb, sub = raw[j, (b // 8) * bb:(b // 8 + 1) * bb], b % 8
                    s6, m6 = q4_k_scale_min(sb[4:16], sub)
                    dw = f32(f32(sb[0:2].view(f16)[0]) * f32(s6))
                    mw = -f32(f32(sb[2:4].view(f16)[0]) * f32(m6))
                    qw = ((sb[16 + (sub // 2) * 32:48 + (sub // 2) * 32] >> (4 * (sub % 2))) & 15).astype(np.int32)
                    lanes = (qw * qx[b]).reshape(8, 4).sum(axis=1).astype(f32)
                    acc = (f32(dw * dx[b]).astype(np.float64) * lanes + acc).astype(f32)
                    summs = f32(summs + f32(mw * sx[b]))
                    continue
                blk = raw[j, b * bb:(b + 1) * bb]
                dw = f32(blk[:2].view(f16)[0])
                if fmt == "q8_0":
                    qw = blk[2:].view(np.int8).astype(np.int32)
                elif fmt in ("q5_0", "q5_1"):
                    at = 2 if fmt == "q5_0" else 4
                    qh = int(blk[at:at + 4].view(np.uint32)[0])
                    nib = blk[at + 4:]
                    qw = np.concatenate([nib & 15, nib >> 4]).astype(np.int32) + np.array([(qh >> i & 1) << 4 for i in range(32)])
                    if fmt == "q5_0":
                        qw = qw - 16
                else:
                    nib = blk[4:] if fmt == "q4_1" else blk[2:]
                    qw = np.concatenate([nib & 15, nib >> 4]).astype(np.int32)
                    if fmt == "q4_0":
                        qw = qw - 8
                lanes = (qw * qx[b]).reshape(8, 4).sum(axis=1).astype(f32)
                d01 = f32(dw * dx[b])
                acc = (d01.astype(np.float64) * lanes + acc).astype(f32)
                if fmt in ("q4_1", "q5_1"):
                    mw = f32(blk[2:4].view(f16)[0])
                    summs = f32(summs + f32(mw * sx[b]))
            l = acc
            h = f32(f32(f32(l[4] + l[0]) + f32(l[6] + l[2])) + f32(f32(l[5] + l[1]) + f32(l[7] + l[3])))
            out[i, j] = f32(h + summs)
    return out


def quantized_matmul_graph(tmp_path, fmt, bb, blen, n, k):
    """Writes tmp_path/g.mlir: `qmatmul {quantize_input}` of x `[?, k]` (f32) by `n` weight
    rows of `fmt` blocks (`bb` bytes per `blen` weights); returns its path."""
    tx, tw, tr = ttype((None, k), "f32"), ttype((n, k // blen * bb), "i8"), ttype((None, n), "f32")
    src = tmp_path / "g.mlir"
    src.write_text(graph([("x", (None, k), "f32"), ("w", (n, k // blen * bb), "i8")],
                         [f'%r0 = "max.qmatmul"(%x, %w) {{format = "{fmt}", quantize_input = true}} : ({tx}, {tw}) -> {tr}'], [tr]))
    return src


@pytest.mark.parametrize("target", ["host", "cpu=x86-64-v2"], ids=["avx2", "portable"])
@pytest.mark.parametrize("fmt,bb", [("q4_0", 18), ("q4_1", 20), ("q5_0", 22), ("q5_1", 24), ("q8_0", 34)])
def test_qmatmul_quantized_input_matches_ggml_arithmetic(tmp_path, fmt, bb, target):
    """qmatmul {quantize_input} computes what llama.cpp's CPU backend computes: 8-bit
    activation blocks and integer block products (NumPy model above; the only slack is
    NumPy's lack of a true fma), with AVX2 byte multiply-adds or portable vector code; 30
    columns split over workgroups in blocks that are not whole multiples of 8."""
    n, k = 30, 96
    src = quantized_matmul_graph(tmp_path, fmt, bb, 32, n, k)
    maxc("compile", src, "-o", tmp_path / "g.maxa", "--target", target)
    rng = np.random.default_rng(5)
    w, deq = make_blocks(fmt, n, k, rng)
    runs = []
    # 45 rows: blocks of 16, 16 and 13 rows, i.e. register tiles of 8 rows and rows past them.
    for m in [1, 7, 45]:
        x = rng.standard_normal((m, k)).astype(np.float32)
        x[0, :32] = 0.0  # an all-zero block quantizes with scale 0
        want = ggml_q8_matmul(x, w, fmt)
        runs.append(({"x": x, "w": w}, [want.astype(np.float32)]))
        (got,) = run_artifact(tmp_path / "g.maxa", {"x": x, "w": w}, tmp_path)
        # The AVX2 build is llama.cpp's arithmetic (AVX2 kernels); the portable one keeps the
        # quantization but may round a few sums differently (as llama.cpp's scalar code does).
        tol = 2e-6 if target == "host" else 1e-4
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol / 2)
        # ... and it is a matmul: close to the exact product, within 8-bit quantization error.
        np.testing.assert_allclose(got, x.astype(np.float64) @ deq.T, rtol=0.05, atol=0.05 * np.abs(deq).max() * k ** 0.5)
    if target == "host":
        # The GPU kernels round activations the same way; sums differ only in their order.
        gpu_case(src, runs, rtol=1e-4, atol=1e-4, env=DOT_KERNEL)


@pytest.mark.parametrize("fmt,bb", [("q4_1", 20), ("q8_0", 34)])
def test_qmatmul_residual_epilogue(tmp_path, fmt, bb):
    """`r + qmatmul(x, w)` then a cast to f16, as a quantized LLM's residual stream reads its
    output projections: on a GPU the quantized matmul kernels apply the add and the cast as
    they store (1 and 7 rows: one kernel that rounds activations where it uses them; 45: the
    quantizer, then the dot kernel)."""
    n, k = 30, 96
    tx, tw, tr, th = ttype((None, k), "f32"), ttype((n, k // 32 * bb), "i8"), ttype((None, n), "f32"), ttype((None, n), "f16")
    body = [f'%q = "max.qmatmul"(%x, %w) {{format = "{fmt}", quantize_input = true}} : ({tx}, {tw}) -> {tr}',
            f'%s = "max.add"(%r, %q) : ({tr}, {tr}) -> {tr}',
            f'%r0 = "max.cast"(%s) : ({tr}) -> {th}']
    src = tmp_path / "g.mlir"
    src.write_text(graph([("x", (None, k), "f32"), ("w", (n, k // 32 * bb), "i8"), ("r", (None, n), "f32")], body, [th]))
    maxc("compile", src, "-o", tmp_path / "g.maxa")
    rng = np.random.default_rng(9)
    w, _ = make_blocks(fmt, n, k, rng)
    runs = []
    for m in [1, 7, 45]:
        x = rng.standard_normal((m, k)).astype(np.float32)
        r = rng.standard_normal((m, n)).astype(np.float32)
        want = (r + ggml_q8_matmul(x, w, fmt)).astype(np.float16)
        runs.append(({"x": x, "w": w, "r": r}, [want]))
        (got,) = run_artifact(tmp_path / "g.maxa", {"x": x, "w": w, "r": r}, tmp_path)
        np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), rtol=1e-3, atol=1e-3)
    gpu_case(src, runs, rtol=2e-3, atol=2e-3, env=DOT_KERNEL)


@pytest.mark.parametrize("fmt,bb,blen", [("q4_0", 18, 32), ("q4_1", 20, 32), ("q5_0", 22, 32), ("q5_1", 24, 32),
                                         ("q8_0", 34, 32), ("q4_k", 144, 256), ("q6_k", 210, 256)])
def test_qmatmul_few_rows_wide(tmp_path, fmt, bb, blen):
    """Decode-shaped quantized matmuls (1, 2, 8 and 13 rows) with a wide K: on a GPU the
    few-rows kernel's blocks of 256 threads round their four rows to 8 bits in shared memory
    (2304 values a row, 576 words of four quants; 13 rows leave the last block one) and
    their lanes walk a column's 72 weight blocks (a lane a block, or for the k-quants a pair; the
    last pass of lanes part-full), each for all the block's rows; 37 columns leave the last
    block of 16 columns part empty. Expected: llama.cpp's arithmetic (the NumPy model), on
    the CPU and the GPU."""
    n, k = 37, 2304
    src = quantized_matmul_graph(tmp_path, fmt, bb, blen, n, k)
    maxc("compile", src, "-o", tmp_path / "g.maxa")
    rng = np.random.default_rng(17)
    w, deq = make_blocks(fmt, n, k, rng)
    runs = []
    for m in [1, 2, 8, 13]:
        x = rng.standard_normal((m, k)).astype(np.float32)
        x[-1, 64:96] = 0.0  # an all-zero block quantizes with scale 0
        x[0, 2000] = 40.0  # a block with one large value
        want = ggml_q8_matmul(x, w, fmt)
        (got,) = run_artifact(tmp_path / "g.maxa", {"x": x, "w": w}, tmp_path)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(got, x.astype(np.float64) @ deq.T, rtol=0.05, atol=0.05 * np.abs(deq).max() * k ** 0.5)
        runs.append(({"x": x, "w": w}, [want.astype(np.float32)]))
    gpu_case(src, runs, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("k", [14336, 20480])
def test_qmatmul_few_rows_long_rows(tmp_path, k):
    """The few-rows kernel's blocks take four rows while their 8-bit copies fit in shared
    memory, two up to K = 18022 (Llama-3.1-8B's down projection, K = 14336: rows 1-2, 3-4,
    5) and then one (K = 20480); Q4_1, with the block sums its min needs. Expected:
    llama.cpp's arithmetic (the NumPy model), on the CPU and the GPU."""
    fmt, bb, n = "q4_1", 20, 19
    src = quantized_matmul_graph(tmp_path, fmt, bb, 32, n, k)
    maxc("compile", src, "-o", tmp_path / "g.maxa")
    rng = np.random.default_rng(23)
    w, _ = make_blocks(fmt, n, k, rng)
    runs = []
    for m in [1, 5]:
        x = rng.standard_normal((m, k)).astype(np.float32)
        want = ggml_q8_matmul(x, w, fmt)
        (got,) = run_artifact(tmp_path / "g.maxa", {"x": x, "w": w}, tmp_path)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
        runs.append(({"x": x, "w": w}, [want.astype(np.float32)]))
    gpu_case(src, runs, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("n", [64, 30], ids=["n64", "n30"])
@pytest.mark.parametrize("fmt,bb,blen", [("q4_0", 18, 32), ("q4_1", 20, 32), ("q5_1", 24, 32), ("q8_0", 34, 32),
                                         ("q4_k", 144, 256), ("q6_k", 210, 256)])
def test_qmatmul_tensor_cores(tmp_path, fmt, bb, blen, n):
    """Quantized matmuls of 16 rows and more (prefill, a serving batch) on a GPU: the weights
    decoded once to f16 and the activations (rounded to 8 bits as the CPU rounds them) to
    f16, then a tensor-core matmul with the residual add as its epilogue (wgmma for 64
    columns on sm_90, mma.sync for 30). Expected: the CPU path's outputs within f16
    rounding of both operands; fewer rows keep the quantized kernels (7 and 15 rows here)."""
    k = 256
    tx, tw, tr = ttype((None, k), "f32"), ttype((n, k // blen * bb), "i8"), ttype((None, n), "f32")
    body = [f'%q = "max.qmatmul"(%x, %w) {{format = "{fmt}", quantize_input = true}} : ({tx}, {tw}) -> {tr}',
            f'%r0 = "max.add"(%r, %q) : ({tr}, {tr}) -> {tr}']
    src = tmp_path / "g.mlir"
    src.write_text(graph([("x", (None, k), "f32"), ("w", (n, k // blen * bb), "i8"), ("r", (None, n), "f32")], body, [tr]))
    maxc("compile", src, "-o", tmp_path / "g.maxa")
    rng = np.random.default_rng(31)
    w, deq = make_blocks(fmt, n, k, rng)
    runs = []
    for m in [7, 15, 16, 64, 133]:
        x = rng.standard_normal((m, k)).astype(np.float32)
        r = rng.standard_normal((m, n)).astype(np.float32)
        want = r + ggml_q8_matmul(x, w, fmt)
        (got,) = run_artifact(tmp_path / "g.maxa", {"x": x, "w": w, "r": r}, tmp_path)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
        runs.append(({"x": x, "w": w, "r": r}, [got]))
    # f16 keeps 11 bits of each operand: about 1e-3 of a product's terms, which a sum of 256
    # random-signed terms grows by its square root relative to the sum's size.
    scale = float(np.abs(deq).max()) * k ** 0.5
    gpu_case(src, runs, rtol=1e-2, atol=2e-3 * scale)


@pytest.mark.parametrize("fmt,bb,blen,quantize_input,k", [("q8_0", 34, 32, True, 4352), ("q6_k", 210, 256, True, 4352),
                                                          ("q4_1", 20, 32, False, 4352), ("q4_k", 144, 256, False, 36864)],
                         ids=["q8_0-q8_input", "q6_k-q8_input", "q4_1-f32_input", "q4_k-f32_input-long"])
def test_qmatmul_tensor_cores_beyond_f16(tmp_path, fmt, bb, blen, quantize_input, k):
    """Activations past f16's range (65504) through the tensor-core path of a quantized
    matmul (24 rows): the CPU keeps them (8-bit blocks whose f16 scale reaches 8.3e6, or
    f32), and so must the GPU, whose f16 copy of the activations divides each row reaching
    2^15 by a power of two that the matmul multiplies back. Two cases: every row wide (up to
    about 5e5), and a spike of 1e5-2e6 in each row of otherwise normal values. K = 4352 (136
    32-blocks): a block of 160 threads a row, 7 vectors of 4 values a thread, the last
    warp's seventh past the row; K = 36864: 1024 threads, 9 vectors each. Formats with a min
    (Q4_1, Q4_K) only with f32 activations: with 8-bit ones their block sums are f16
    (llama.cpp's `block_q8_1`), which such blocks overflow on the CPU too. Expected: the CPU
    path's outputs (themselves checked against NumPy), within f16 rounding."""
    n, m = 16, 24
    q = ', quantize_input = true' if quantize_input else ''
    tx, tw, tr = ttype((None, k), "f32"), ttype((n, k // blen * bb), "i8"), ttype((None, n), "f32")
    src = tmp_path / "g.mlir"
    src.write_text(graph([("x", (None, k), "f32"), ("w", (n, k // blen * bb), "i8")],
                         [f'%r0 = "max.qmatmul"(%x, %w) {{format = "{fmt}"{q}}} : ({tx}, {tw}) -> {tr}'], [tr]))
    maxc("compile", src, "-o", tmp_path / "g.maxa")
    rng = np.random.default_rng(37)
    w, deq = make_blocks(fmt, n, k, rng)
    wide = rng.standard_normal((m, k)).astype(np.float32) * 1e5
    spikes = rng.standard_normal((m, k)).astype(np.float32)
    spikes[np.arange(m), rng.integers(0, k, m)] = rng.choice([-1, 1], m) * np.geomspace(1e5, 2e6, m)
    for x in [wide, spikes]:
        want = ggml_q8_matmul(x, w, fmt) if quantize_input else x.astype(np.float64) @ deq.T
        (got,) = run_artifact(tmp_path / "g.maxa", {"x": x, "w": w}, tmp_path)
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
        gpu_case(src, [({"x": x, "w": w}, [got])], rtol=1e-2, atol=2e-3 * float(np.abs(got).max()))


@pytest.mark.parametrize("prologue", ["norm", "silu_mul"])
def test_qmatmul_computed_input(tmp_path, prologue):
    """A quantized LLM's projections read `rms_norm(x, w)` and `silu(gate) * up` (the split
    of a merged gate/up read in place), then add the residual: on a GPU one dispatch, whose
    few-rows kernel computes its row of the input as it rounds it to 8 bits (1, 7 and 12
    rows); 45 and 70 rows compute the input into a temporary first (70: then the tensor
    cores, on f16 operands). Expected: the
    CPU path's outputs (rounding to 8 bits amplifies the order of the norm's sums, so the
    tolerance is wider than the other quantized cases')."""
    fmt, bb, n, k = "q4_1", 20, 30, 256
    tw, tr = ttype((n, k // 32 * bb), "i8"), ttype((None, n), "f32")
    ta = ttype((None, k), "f32")
    if prologue == "norm":
        ins = [("x", (None, k), "f32"), ("g", (k,), "f32")]
        a_body = [f'%a = "max.rms_norm"(%x, %g) {{epsilon = 1.0e-5 : f64}} : ({ta}, {ttype((k,), "f32")}) -> {ta}']
    else:
        tg = ttype((None, 2 * k), "f32")
        ins = [("x", (None, 2 * k), "f32")]
        a_body = [f'%p, %u = "max.split"(%x) {{axis = 1 : i64, sizes = array<i64: {k}, {k}>}} : ({tg}) -> ({ta}, {ta})',
                  f'%s = "max.silu"(%p) : ({ta}) -> {ta}',
                  f'%a = "max.mul"(%s, %u) : ({ta}, {ta}) -> {ta}']
    body = a_body + [f'%q = "max.qmatmul"(%a, %w) {{format = "{fmt}", quantize_input = true}} : ({ta}, {tw}) -> {tr}',
                     f'%r0 = "max.add"(%r, %q) : ({tr}, {tr}) -> {tr}']
    ins += [("w", (n, k // 32 * bb), "i8"), ("r", (None, n), "f32")]
    src = tmp_path / "g.mlir"
    src.write_text(graph(ins, body, [tr]))
    maxc("compile", src, "-o", tmp_path / "g.maxa")
    rng = np.random.default_rng(21)
    w, _ = make_blocks(fmt, n, k, rng)
    runs = []
    for m in [1, 7, 12, 45, 70]:
        arrays = {name: data(concrete(shape, m), dt, rng) for name, shape, dt in ins if name != "w"}
        arrays["w"] = w
        (got,) = run_artifact(tmp_path / "g.maxa", arrays, tmp_path)
        if prologue == "norm":
            x64 = arrays["x"].astype(np.float64)
            a = (x64 / np.sqrt((x64 ** 2).mean(-1, keepdims=True) + 1e-5) * arrays["g"]).astype(np.float32)
        else:
            gate, up = arrays["x"][:, :k].astype(np.float64), arrays["x"][:, k:].astype(np.float64)
            a = (gate / (1 + np.exp(-gate)) * up).astype(np.float32)
        np.testing.assert_allclose(got, arrays["r"] + ggml_q8_matmul(a, w, fmt), rtol=1e-2, atol=1e-2)
        runs.append((arrays, [got]))
    gpu_case(src, runs[:4], rtol=5e-3, atol=5e-3, env=DOT_KERNEL)
    # 70 rows: f16 operands (see test_qmatmul_tensor_cores).
    gpu_case(src, runs[4:], rtol=1e-2, atol=2e-3 * float(np.abs(runs[4][1][0]).max()), name=f"qmatmul_computed_input_tc_{prologue}")


@pytest.mark.parametrize("target", ["host", "cpu=x86-64-v2"], ids=["avx2", "portable"])
@pytest.mark.parametrize("fmt,bb", [("q4_k", 144), ("q6_k", 210)])
def test_qmatmul_k_quants_quantized_input(tmp_path, fmt, bb, target):
    """qmatmul {quantize_input} on Q4_K/Q6_K weights: 8-bit activation blocks against each
    32-weight sub-block's scales (the NumPy model above), close to the exact product within
    8-bit quantization error; two super-blocks per row, 1 to 33 rows, 26 columns."""
    n, k = 26, 512
    src = quantized_matmul_graph(tmp_path, fmt, bb, 256, n, k)
    maxc("compile", src, "-o", tmp_path / "g.maxa", "--target", target)
    rng = np.random.default_rng(6)
    w, deq = make_blocks(fmt, n, k, rng)
    runs = []
    for m in [1, 7, 33]:
        x = rng.standard_normal((m, k)).astype(np.float32)
        x[0, :32] = 0.0
        (got,) = run_artifact(tmp_path / "g.maxa", {"x": x, "w": w}, tmp_path)
        tol = 2e-6 if target == "host" else 1e-4
        want = ggml_q8_matmul(x, w, fmt)
        runs.append(({"x": x, "w": w}, [want.astype(np.float32)]))
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max())
        exact = x.astype(np.float64) @ deq.T
        np.testing.assert_allclose(got, exact, rtol=0.05, atol=0.02 * np.abs(exact).max())
    if target == "host":
        gpu_case(src, runs, rtol=1e-4, atol=1e-4 * float(np.abs(runs[-1][1][0]).max()), env=DOT_KERNEL)
