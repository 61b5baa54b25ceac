"""llama.cpp reference for greedy generation from a GGUF model (via llama-cpp-python).

For each prompt: tokenize with llama.cpp's tokenizer (BOS added only if the GGUF asks for it,
tokenizer.ggml.add_bos_token; SmolLM2's GGUF says false, so no BOS), then decode greedily:
after each llama_decode, take np.argmax over the last position's logits (no temperature,
top-k/p, or repeat penalty), stopping after --max-tokens or at an end-of-generation token
(EOS/EOT), which is then included in "tokens" and reported as "eos": true. "margins" holds,
per generated token, the gap between the best and second-best logit (how close a tie it was).
Prints a JSON list of {"prompt", "prompt_tokens", "tokens", "margins", "text", "eos"} to stdout.
Setup: source scripts/python-env.sh && source scripts/llama-cpp-env.sh
Usage: python tests/python/llama_ref.py --model M.gguf --max-tokens 32 [--threads 2] \
           --prompt "The capital of France is" [--prompt ...]
"""
import argparse
import json

import llama_cpp
import numpy as np


def greedy(llm, prompt_tokens, max_tokens):
    """Greedy continuation of prompt_tokens: returns (generated ids, top-2 logit gaps, hit
    end-of-generation)."""
    n_vocab = llm.n_vocab()
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    llm.reset()  # fresh KV cache: Llama.eval drops every cached position >= n_tokens
    llm.eval(prompt_tokens)
    out, margins = [], []
    while len(out) < max_tokens:
        # Llama.scores is only filled with logits_all=True, so read the context's logits directly.
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,))
        tok = int(np.argmax(logits))
        top2 = np.partition(logits, -2)[-2:]
        out.append(tok)
        margins.append(float(top2[1] - top2[0]))
        if llama_cpp.llama_vocab_is_eog(vocab, tok):
            return out, margins, True
        llm.eval([tok])
    return out, margins, False


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-ctx", type=int, default=2048)
    ap.add_argument("--prompt", action="append", required=True)
    args = ap.parse_args()
    llm = llama_cpp.Llama(model_path=args.model, n_ctx=args.n_ctx, n_threads=args.threads,
                          n_threads_batch=args.threads, verbose=False)
    add_bos = llm.metadata.get("tokenizer.ggml.add_bos_token", "true") == "true"
    results = []
    for prompt in args.prompt:
        prompt_tokens = llm.tokenize(prompt.encode(), add_bos=add_bos, special=False)
        if len(prompt_tokens) + args.max_tokens > args.n_ctx:
            ap.error(f"prompt ({len(prompt_tokens)} tokens) + --max-tokens exceeds --n-ctx")
        tokens, margins, eos = greedy(llm, prompt_tokens, args.max_tokens)
        text = llm.detokenize(tokens).decode("utf-8", errors="replace")
        results.append({"prompt": prompt, "prompt_tokens": prompt_tokens, "tokens": tokens,
                        "margins": margins, "text": text, "eos": eos})
    print(json.dumps(results))


if __name__ == "__main__":
    main()
