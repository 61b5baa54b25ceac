"""NumPy reference for sentence-transformers BERT embeddings (all-MiniLM-L6-v2).

Independent of the compiler: Hugging Face's `tokenizers` package tokenizes (the model's own
tokenizer.json, its fixed padding and truncation switched off), and the forward pass is
written here from the safetensors weights in float64, following Hugging Face's BertModel:
embeddings (word + position + token type 0) and layer norm; per layer, 12-head
self-attention, residual and layer norm, exact-GELU MLP, residual and layer norm; then the
mean over the tokens and L2 normalization (1_Pooling/config.json, modules.json).
"""
import json
import math
from pathlib import Path

import numpy as np


def load_safetensors(path):
    """All tensors of a .safetensors file as float64 NumPy arrays (F32 only, as MiniLM)."""
    data = Path(path).read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__" or info["dtype"] != "F32":
            continue
        a, b = info["data_offsets"]
        out[name] = np.frombuffer(data[8 + n + a:8 + n + b], dtype="<f4").reshape(info["shape"]).astype(np.float64)
    return out


def _layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


_erf = np.vectorize(math.erf)


class Bert:
    """A BERT sentence-embedding model read from a sentence-transformers directory."""

    def __init__(self, model_dir):
        from tokenizers import Tokenizer

        d = Path(model_dir)
        self.cfg = json.loads((d / "config.json").read_text())
        self.w = load_safetensors(d / "model.safetensors")
        self.tok = Tokenizer.from_file(str(d / "tokenizer.json"))
        self.tok.no_padding()
        self.tok.no_truncation()

    def ids(self, text):
        return self.tok.encode(text).ids

    def embed_ids(self, ids):
        w, cfg = self.w, self.cfg
        h, nh, eps = cfg["hidden_size"], cfg["num_attention_heads"], cfg["layer_norm_eps"]
        hd = h // nh
        t = len(ids)
        x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:t] \
            + w["embeddings.token_type_embeddings.weight"][0]
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
        lin = lambda v, p: v @ w[p + ".weight"].T + w[p + ".bias"]
        for i in range(cfg["num_hidden_layers"]):
            p = f"encoder.layer.{i}."
            q, k, v = (lin(x, p + f"attention.self.{n}").reshape(t, nh, hd).transpose(1, 0, 2) for n in ("query", "key", "value"))
            s = q @ k.transpose(0, 2, 1) / math.sqrt(hd)
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            ctx = (s @ v).transpose(1, 0, 2).reshape(t, h)
            x = _layer_norm(lin(ctx, p + "attention.output.dense") + x, w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"], eps)
            m = lin(x, p + "intermediate.dense")
            m = 0.5 * m * (1.0 + _erf(m / math.sqrt(2.0)))
            x = _layer_norm(lin(m, p + "output.dense") + x, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], eps)
        v = x.mean(0)
        return v / max(np.linalg.norm(v), 1e-12)

    def embed(self, text):
        return self.embed_ids(self.ids(text))
