"""PyTorch/cuBLAS reference for benches/gpu/check.sh: 4096^3 matmul throughput per dtype,
custom_mlp latency, and device copy bandwidth, timed with CUDA events (median of runs)."""
import torch

def bench(fn, iters=20):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e))
    times.sort()
    return times[len(times) // 2] / 1e3

n = 4096
flops = 2 * n ** 3
for name, dt, tf32 in [("bf16", torch.bfloat16, False), ("f16", torch.float16, False), ("tf32", torch.float32, True), ("f32", torch.float32, False)]:
    torch.backends.cuda.matmul.allow_tf32 = tf32
    a = torch.rand(n, n, device="cuda", dtype=dt) * 2 - 1
    b = torch.rand(n, n, device="cuda", dtype=dt) * 2 - 1
    t = bench(lambda: a @ b)
    print(f"torch matmul {name}: {flops / t / 1e12:.1f} TFLOP/s ({t * 1e3:.3f} ms)")
torch.backends.cuda.matmul.allow_tf32 = False
w1 = torch.randn(768, 3072, device="cuda") * 0.036
w2 = torch.randn(3072, 768, device="cuda") * 0.018
for batch in [1, 64]:
    x = torch.randn(batch, 768, device="cuda")
    t = bench(lambda: torch.softmax(torch.relu(x @ w1) @ w2, dim=-1))
    print(f"torch custom_mlp batch {batch}: {t * 1e3:.4f} ms")
src = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
dst = torch.empty_like(src)
t = bench(lambda: dst.copy_(src), iters=10)
print(f"copy bandwidth: {2 * src.numel() / t / 1e9:.0f} GB/s")
