"""`/v1/embeddings` on all-MiniLM-L6-v2 (a BERT graph compiled by maxc from its safetensors
directory on first use), next to SmolLM2 in the same server: the official openai client's
embeddings (float and base64) against an independent NumPy reference, token-id inputs, the
models list of a multi-model server, and each error status.
Skipped without the models (MAX_MINILM_DIR, MAX_SMOLLM2_GGUF)."""
import os
import urllib.request

import numpy as np
import pytest

from maxtest import maxc, start_server, stop_server

MINILM = os.environ.get("MAX_MINILM_DIR", "")
SMOLLM2 = os.environ.get("MAX_SMOLLM2_GGUF", "")
pytestmark = pytest.mark.skipif(not (os.path.isdir(MINILM) and os.path.exists(SMOLLM2)),
                                reason="set MAX_MINILM_DIR and MAX_SMOLLM2_GGUF (see serve/tests/fetch_*.sh)")
openai = pytest.importorskip("openai")

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello",
    "A compiler turns graphs into kernels; the runtime runs them on the CPU or the GPU.",
    "Ünïcödé, accents and CJK 東京 are normalized the way BERT's tokenizer does it.",
    " ".join(["long input"] * 100),
]


@pytest.fixture(scope="module")
def reference():
    from bert_ref import Bert
    return Bert(MINILM)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    artifact = tmp_path_factory.mktemp("serve") / "smollm2.maxa"
    maxc("compile-model", SMOLLM2, "-o", artifact)
    # The embedding model is a directory: compiled on first use into a cache of its own.
    env = dict(os.environ, MAX_CACHE_DIR=str(tmp_path_factory.mktemp("cache")))
    proc, base = start_server(["--model", artifact, "--model", MINILM, "--served-model-name", "smollm2",
                               "--served-model-name", "minilm", "--max-batch-size", "2", "--max-cache-length", "128"],
                              env=env, timeout=300)
    yield base
    stop_server(proc)


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key="unused")


def cosine(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_embeddings_match_reference(client, reference):
    # The openai client asks for base64 by default and decodes it.
    r = client.embeddings.create(model="minilm", input=TEXTS)
    assert r.object == "list" and r.model == "minilm" and [d.index for d in r.data] == list(range(len(TEXTS)))
    want_tokens = sum(len(reference.ids(t)) for t in TEXTS)
    assert r.usage.prompt_tokens == r.usage.total_tokens == want_tokens
    for text, d in zip(TEXTS, r.data):
        assert len(d.embedding) == 384
        assert cosine(d.embedding, reference.embed(text)) >= 0.999, text
        assert abs(np.linalg.norm(d.embedding) - 1) < 1e-4
    # float encoding gives the same vectors; a text alone gives what it gives in a batch
    # (padding is masked out).
    one = client.embeddings.create(model="minilm", input=TEXTS[1], encoding_format="float")
    assert np.allclose(one.data[0].embedding, r.data[1].embedding, atol=1e-5)


def test_embeddings_similarity_orders_meanings(client):
    v = [np.array(d.embedding) for d in client.embeddings.create(model="minilm", input=[
        "A man is eating food.", "A man is eating a piece of bread.", "The stock market fell sharply today."]).data]
    assert v[0] @ v[1] > v[0] @ v[2] + 0.3


def test_embeddings_token_input(client, reference):
    ids = reference.ids(TEXTS[0])
    r = client.embeddings.create(model="minilm", input=[ids, ids[:5]])
    assert cosine(r.data[0].embedding, reference.embed(TEXTS[0])) >= 0.999
    assert cosine(r.data[1].embedding, reference.embed_ids(ids[:5])) >= 0.999
    assert r.usage.prompt_tokens == len(ids) + 5


def test_multi_model_server(client):
    models = {m.id: m for m in client.models.list().data}
    assert set(models) == {"smollm2", "minilm"}
    assert models["minilm"].model_extra["max_model_len"] == 256 and models["minilm"].model_extra["dimensions"] == 384
    assert models["smollm2"].model_extra["max_model_len"] == 128
    # Both models answer in the same server.
    r = client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "What is the name of the capital city of France?"}],
                                       temperature=0, max_tokens=16)
    assert "Paris" in r.choices[0].message.content


def test_embeddings_errors(client, server):
    cases = [
        ({"model": "minilm", "input": " ".join(["word"] * 300)}, openai.BadRequestError, "input"),
        ({"model": "minilm", "input": ""}, openai.BadRequestError, "input"),
        ({"model": "minilm", "input": []}, openai.BadRequestError, "input"),
        ({"model": "minilm", "input": [[1, 2, 999999]]}, openai.BadRequestError, "input"),
        ({"model": "minilm", "input": "x", "dimensions": 128}, openai.BadRequestError, "dimensions"),
        ({"model": "minilm", "input": "x", "encoding_format": "hex"}, openai.BadRequestError, "encoding_format"),
        ({"model": "smollm2", "input": "x"}, openai.BadRequestError, "model"),
        ({"model": "nope", "input": "x"}, openai.NotFoundError, "model"),
    ]
    for kwargs, err, param in cases:
        with pytest.raises(err) as e:
            client.embeddings.create(**kwargs)
        assert e.value.body["param"] == param, (kwargs, e.value.body)
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model="minilm", input=" ".join(["word"] * 300))
    assert "256" in e.value.body["message"] and e.value.body["code"] == "context_length_exceeded"
    # An embedding model does not generate text.
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="minilm", messages=[{"role": "user", "content": "hi"}])
    assert e.value.body["param"] == "model"
    # Tokenize works on both.
    req = urllib.request.Request(server + "/tokenize", data=b'{"model": "minilm", "prompt": "Hello world"}',
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req) as r:
        import json
        body = json.loads(r.read())
    assert body["tokens"] == [101, 7592, 2088, 102] and body["max_model_len"] == 256
