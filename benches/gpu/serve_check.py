"""`max serve` on a GPU, from the GPU check (standard library only: GPU machines may have no
network to install clients). Starts the server with the given arguments, then checks a chat
completion, a streamed completion, embeddings (when a model named `minilm` is served) and
/metrics, and measures generation throughput with concurrent streaming clients. The last
line printed is the summary check.sh reports.

Usage: python3 serve_check.py MAX_BINARY [max serve arguments...]
"""
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(base, path, body, stream=False):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    r = urllib.request.urlopen(req, timeout=120)
    if not stream:
        return json.loads(r.read())
    chunks = []
    for line in r:
        line = line.decode().strip()
        if line.startswith("data: ") and line != "data: [DONE]":
            chunks.append(json.loads(line[6:]))
    return chunks


def main():
    binary, args = sys.argv[1], sys.argv[2:]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([binary, "serve", *args, "--port", str(port), "--max-batch-size", "32"], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 90
        while True:
            if proc.poll() is not None:
                print(proc.stderr.read())
                print("max serve: FAILED (the server exited while loading)")
                return 1
            try:
                with urllib.request.urlopen(base + "/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                print("max serve: FAILED (not healthy after 90 s)")
                return 1
            time.sleep(0.5)
        results = []
        chat = post(base, "/v1/chat/completions", {"model": "smollm2", "messages": [{"role": "user", "content": "What is the capital of France?"}], "max_tokens": 16, "temperature": 0})
        text = chat["choices"][0]["message"]["content"]
        print(f"chat: {text!r}")
        results.append("chat ok" if text else "chat EMPTY")
        chunks = post(base, "/v1/completions", {"model": "smollm2", "prompt": "The capital of France is", "max_tokens": 16, "temperature": 0, "stream": True}, stream=True)
        streamed = "".join(c["choices"][0]["text"] for c in chunks if c.get("choices"))
        print(f"stream: {len(chunks)} chunks: {streamed!r}")
        results.append(f"stream ok ({len(chunks)} chunks)" if streamed else "stream EMPTY")
        if "minilm" in " ".join(args):
            e = post(base, "/v1/embeddings", {"model": "minilm", "input": ["a cat sat on the mat", "a dog lay on the rug", "stock markets fell"]})
            v = [d["embedding"] for d in e["data"]]
            cos = lambda a, b: sum(x * y for x, y in zip(a, b))
            print(f"embeddings: {len(v)} x {len(v[0])}; cos(cat, dog) {cos(v[0], v[1]):.3f}, cos(cat, stocks) {cos(v[0], v[2]):.3f}")
            results.append("embeddings ok" if cos(v[0], v[1]) > cos(v[0], v[2]) else "embeddings WRONG ORDER")
        with urllib.request.urlopen(base + "/metrics", timeout=10) as r:
            metrics = r.read().decode()
        results.append("metrics ok" if "max_generation_tokens_total" in metrics else "metrics MISSING")
        # Throughput: concurrent clients, 64 greedy tokens each (counted from `usage`).
        figures = []
        for clients in (1, 8, 32):
            counts = [0] * clients

            def client(i):
                r = post(base, "/v1/completions", {"model": "smollm2", "prompt": f"Story number {i}: once upon a time", "max_tokens": 64, "temperature": 0})
                counts[i] = r["usage"]["completion_tokens"]

            t0 = time.time()
            threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            dt = time.time() - t0
            figures.append(f"{clients} clients {sum(counts) / dt:.0f} tok/s")
        device = args[args.index("--devices") + 1] if "--devices" in args else "cpu"
        print(f"max serve on {device}: " + ", ".join(results) + "; " + ", ".join(figures))
        return 0
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    sys.exit(main())
