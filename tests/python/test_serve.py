"""`max serve` driven by the official openai client (chat, streaming with usage,
completions, models, tokenize, errors), on the SmolLM2 GGUF compiled by maxc.
Skipped without the model (MAX_SMOLLM2_GGUF)."""
import json
import os
import urllib.request

import pytest

from maxtest import maxc, start_server, stop_server

MODEL = os.environ.get("MAX_SMOLLM2_GGUF", "")
KEY = "test-key"
pytestmark = pytest.mark.skipif(not os.path.exists(MODEL), reason="set MAX_SMOLLM2_GGUF (see serve/tests/fetch_smollm2.sh)")
openai = pytest.importorskip("openai")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    artifact = tmp_path_factory.mktemp("serve") / "smollm2.maxa"
    maxc("compile-model", MODEL, "-o", artifact)
    proc, base = start_server(["--model", artifact, "--served-model-name", "smollm2", "--max-batch-size", "4",
                               "--max-cache-length", "256", "--api-key", KEY, "--max-body-bytes", "65536"])
    yield base
    stop_server(proc)


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key=KEY)


def test_chat(client):
    r = client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "What is the name of the capital city of France?"}],
                                       temperature=0, max_tokens=32)
    assert "Paris" in r.choices[0].message.content
    assert r.choices[0].finish_reason == "stop"
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-")
    assert r.usage.prompt_tokens > 0 and r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_chat_streaming_with_usage(client):
    stream = client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "What is the name of the capital city of France?"}],
                                            temperature=0, max_tokens=32, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "Paris" in text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    # Streaming gives the same text as the plain request.
    plain = client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "What is the name of the capital city of France?"}],
                                           temperature=0, max_tokens=32)
    assert text == plain.choices[0].message.content


def test_completions(client):
    r = client.completions.create(model="smollm2", prompt=["The capital of France is", "Hello"], temperature=0, max_tokens=4, n=2)
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    assert r.choices[0].text.startswith(" Paris") and r.choices[0].text == r.choices[1].text
    assert all(c.finish_reason == "length" for c in r.choices)
    assert r.usage.completion_tokens == 16
    r = client.completions.create(model="smollm2", prompt="The capital of France is", temperature=0, max_tokens=16, stop=["."])
    assert r.choices[0].text == " Paris" and r.choices[0].finish_reason == "stop"


def test_logprobs(client):
    """Non-streaming chat and completions report each generated token's log-probability
    and the most likely alternatives; greedy picks the top alternative every time."""
    r = client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "What is the name of the capital city of France?"}],
                                       temperature=0, max_tokens=8, logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens or (r.choices[0].finish_reason == "stop" and len(content) == r.usage.completion_tokens - 1)
    for t in content:
        assert t.logprob <= 0 and len(t.top_logprobs) == 3
        assert t.top_logprobs[0].token == t.token and abs(t.top_logprobs[0].logprob - t.logprob) < 1e-6
        assert t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob >= t.top_logprobs[2].logprob
    assert "".join(t.token for t in content).strip().startswith(r.choices[0].message.content.strip()[:4])
    assert client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "Hi"}], max_tokens=2).choices[0].logprobs is None

    c = client.completions.create(model="smollm2", prompt="The capital of France is", temperature=0, max_tokens=6, logprobs=2)
    lp = c.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) > 0
    assert "".join(lp.tokens) == c.choices[0].text
    assert lp.text_offset[0] == 0 and all(len(t) == 2 for t in lp.top_logprobs)
    assert all(max(t.values()) == pytest.approx(v, abs=1e-6) for t, v in zip(lp.top_logprobs, lp.token_logprobs))


def test_streaming_logprobs(client):
    """Streamed chunks carry the log-probabilities of the tokens they bring, the same values
    as the plain request; completions' text_offset counts across chunks."""
    msgs = [{"role": "user", "content": "What is the name of the capital city of France?"}]
    plain = client.chat.completions.create(model="smollm2", messages=msgs, temperature=0, max_tokens=12, logprobs=True, top_logprobs=2)
    chunks = list(client.chat.completions.create(model="smollm2", messages=msgs, temperature=0, max_tokens=12, logprobs=True,
                                                 top_logprobs=2, stream=True))
    streamed = [t for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content]
    assert [t.token for t in streamed] == [t.token for t in plain.choices[0].logprobs.content]
    for s, p in zip(streamed, plain.choices[0].logprobs.content):
        assert s.logprob == pytest.approx(p.logprob, abs=1e-4) and [a.token for a in s.top_logprobs] == [a.token for a in p.top_logprobs]
    # Each text chunk's entries spell its text.
    for c in chunks:
        if c.choices and c.choices[0].delta.content and c.choices[0].logprobs:
            assert "".join(t.token for t in c.choices[0].logprobs.content) == c.choices[0].delta.content
    # No logprobs unless asked.
    assert all(c.choices[0].logprobs is None for c in client.chat.completions.create(
        model="smollm2", messages=msgs, max_tokens=3, stream=True) if c.choices)

    stream = list(client.completions.create(model="smollm2", prompt="The capital of France is", temperature=0, max_tokens=6,
                                            logprobs=1, stream=True))
    tokens, offsets, text = [], [], ""
    for c in stream:
        lp = c.choices[0].logprobs
        if lp:
            tokens += lp.tokens
            offsets += lp.text_offset
        text += c.choices[0].text
    assert "".join(tokens) == text and offsets[0] == 0
    assert offsets == [sum(len(t) for t in tokens[:i]) for i in range(len(tokens))]


def test_models(client):
    models = client.models.list()
    assert [m.id for m in models.data] == ["smollm2"]
    assert client.models.retrieve("smollm2").id == "smollm2"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


def test_logprobs_errors(client):
    msgs = [{"role": "user", "content": "Hi"}]
    for kwargs, param in [({"logprobs": True, "top_logprobs": 21}, "top_logprobs"), ({"top_logprobs": 2}, "top_logprobs"),
                          ({"logprobs": True, "top_logprobs": 21, "stream": True}, "top_logprobs")]:
        with pytest.raises(openai.BadRequestError) as e:
            r = client.chat.completions.create(model="smollm2", messages=msgs, max_tokens=2, **kwargs)
            if kwargs.get("stream"):
                list(r)
        assert e.value.body["param"] == param, e.value.body
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="smollm2", prompt="Hi", max_tokens=2, logprobs=6)
    assert e.value.body["param"] == "logprobs"


def test_errors(client, server):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    assert e.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="smollm2", prompt="word " * 400, max_tokens=4)
    assert "maximum context length is 256" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="smollm2", prompt="hi", temperature=-1)
    assert e.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model="smollm2", input="hello")
    assert "does not serve embeddings" in e.value.body["message"]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server + "/v1", api_key="wrong").models.list()
    # Malformed JSON and an oversized body, with OpenAI's error shape.
    def post(body):
        req = urllib.request.Request(server + "/v1/completions", data=body, headers={"content-type": "application/json", "authorization": f"Bearer {KEY}"})
        try:
            urllib.request.urlopen(req)
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())
        raise AssertionError("expected an error")
    code, body = post(b"{not json")
    assert code == 400 and body["error"]["type"] == "invalid_request_error"
    code, body = post(json.dumps({"model": "smollm2", "prompt": "x" * 100000}).encode())
    assert code == 413 and "error" in body


def test_tokenize_detokenize_metrics(server):
    def call(path, body):
        req = urllib.request.Request(server + path, data=json.dumps(body).encode(), headers={"content-type": "application/json", "authorization": f"Bearer {KEY}"})
        with urllib.request.urlopen(req) as r:
            return json.loads(r.read())
    t = call("/tokenize", {"model": "smollm2", "prompt": "The capital of France is"})
    assert t["tokens"] == [504, 3575, 282, 4649, 314] and t["max_model_len"] == 256
    assert call("/detokenize", {"model": "smollm2", "tokens": t["tokens"]})["prompt"] == "The capital of France is"
    with urllib.request.urlopen(server + "/metrics") as r:
        text = r.read().decode()
    assert 'max_generation_tokens_total{model="smollm2"}' in text
    assert "max_time_to_first_token_seconds_bucket" in text
