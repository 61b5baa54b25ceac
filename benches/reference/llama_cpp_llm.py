"""llama.cpp (llama-cpp-python) reference throughput on a GGUF model, CPU, --threads threads.

- prefill_tok_s: one llama_decode of a 512-token prompt (repeated English text, truncated to
  exactly 512 tokens) into an empty KV cache; one warm-up, median of 3.
- decode_b1_tok_s / decode_b8_tok_s: greedy decoding after a short prompt, timing 64 decode steps
  (each feeds one token per sequence and argmaxes its logits); one warm-up, median of 3.
  Batch 8 is true batching: 8 sequences (n_seq_max=8, same prompt) share each llama_decode call,
  one token per sequence per step; reported as 8 * 64 tokens / time.
Prints one JSON object to stdout. Setup: source scripts/python-env.sh && source
scripts/llama-cpp-env.sh. Usage: python benches/reference/llama_cpp_llm.py --model M.gguf [--threads 2]
"""
import argparse
import ctypes
import json
import os
import resource
import statistics
import time

import llama_cpp
import numpy as np

TEXT = ("The history of the city begins with a small settlement on the banks of the river, "
        "where farmers and traders gathered to exchange grain, cloth and tools. Over the "
        "centuries the market grew into a town, the town built walls and a cathedral, and "
        "scholars came from distant countries to study at its famous university. ")
PROMPT = "The capital of France is"
REPS = 3


def median_time(fn):
    fn()  # warm-up
    times = []
    for _ in range(REPS):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def new_context(llm, n_seq, n_ctx, n_batch):
    params = type(llm.context_params).from_buffer_copy(llm.context_params)  # same threads, flash-attn
    params.n_ctx, params.n_batch, params.n_ubatch, params.n_seq_max = n_ctx, n_batch, n_batch, n_seq
    ctx = llama_cpp.llama_init_from_model(llm.model, params)
    if not ctx:
        raise RuntimeError("llama_init_from_model failed")
    return ctx


def decode_rate(llm, n_seq, prompt, n_steps):
    """Tokens/s of greedy decoding of n_seq sequences in lockstep, one llama_decode per step."""
    n_vocab, n_prompt = llm.n_vocab(), len(prompt)
    ctx = new_context(llm, n_seq, n_ctx=n_seq * 256, n_batch=max(n_seq * n_prompt, 8))
    batch = llama_cpp.llama_batch_init(max(n_seq * n_prompt, 8), 0, n_seq)
    mem = llama_cpp.llama_get_memory(ctx)

    def fill(entries):  # entries: (token, pos, seq, want_logits)
        batch.n_tokens = len(entries)
        for i, (tok, pos, seq, logits) in enumerate(entries):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = tok, pos, 1
            batch.seq_id[i][0], batch.logits[i] = seq, logits
        if llama_cpp.llama_decode(ctx, batch) != 0:
            raise RuntimeError("llama_decode failed")

    def argmax(i):
        return int(np.argmax(np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, i), shape=(n_vocab,))))

    times = []

    def run():
        llama_cpp.llama_memory_clear(mem, True)
        fill([(t, p, s, p == n_prompt - 1) for s in range(n_seq) for p, t in enumerate(prompt)])
        next_tok = [argmax((s + 1) * n_prompt - 1) for s in range(n_seq)]
        t0 = time.perf_counter()
        for step in range(n_steps):
            fill([(next_tok[s], n_prompt + step, s, True) for s in range(n_seq)])
            next_tok = [argmax(s) for s in range(n_seq)]
        times.append(time.perf_counter() - t0)

    run()  # warm-up
    times.clear()
    for _ in range(REPS):
        run()
    llama_cpp.llama_batch_free(batch)
    llama_cpp.llama_free(ctx)
    return n_seq * n_steps / statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=os.environ.get("MAX_SMOLLM2_GGUF", os.path.expanduser(
        "~/.cache/max/models/SmolLM2-135M-Instruct.Q4_1.gguf")))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--flash-attn", action="store_true", help="llama-cpp-python's default is off")
    args = ap.parse_args()
    llm = llama_cpp.Llama(model_path=args.model, n_ctx=2048, n_batch=512, n_threads=args.threads,
                          n_threads_batch=args.threads, flash_attn=args.flash_attn, verbose=False)
    add_bos = llm.metadata.get("tokenizer.ggml.add_bos_token", "true") == "true"

    long_prompt = llm.tokenize((TEXT * 20).encode(), add_bos=add_bos)[:512]
    assert len(long_prompt) == 512

    def prefill():
        llm.reset()  # n_tokens = 0: Llama.eval then drops every cached position
        llm.eval(long_prompt)  # one llama_decode (n_batch = n_ubatch = 512)

    prefill_s = median_time(prefill)
    short = llm.tokenize(PROMPT.encode(), add_bos=add_bos)
    out = {
        "prefill_tok_s": round(512 / prefill_s, 1),
        "decode_b1_tok_s": round(decode_rate(llm, 1, short, 64), 1),
        "decode_b8_tok_s": round(decode_rate(llm, 8, short, 64), 1),
        "decode_b8_method": "llama_decode batch of 8 sequences (n_seq_max=8), 1 token each per step",
        "llama_cpp_version": llama_cpp.__version__,
        "threads": args.threads,
        "flash_attn": args.flash_attn,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "system_info": llama_cpp.llama_print_system_info().decode().strip(),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
