"""The OpenAI-compatible API against a real server with the real models, via the `openai` client."""

from __future__ import annotations

import base64
import concurrent.futures as cf
import math
import time

import httpx
import numpy as np
import openai
import pytest

from tests.support import EMBEDDER, LLM

pytestmark = pytest.mark.e2e


def test_models_listed(client):
    ids = [m.id for m in client.models.list().data]
    assert LLM in ids and EMBEDDER in ids
    assert client.models.retrieve(LLM).id == LLM
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_completion_greedy_exact_usage(client, hearth):
    prompt = "The capital of France is"
    r = client.completions.create(model=LLM, prompt=prompt, max_tokens=8, temperature=0)
    ids = httpx.post(f"{hearth.url}/tokenize", json={"prompt": prompt}).json()["tokens"]
    assert r.usage.prompt_tokens == len(ids)
    assert r.usage.completion_tokens == 8
    assert r.choices[0].finish_reason == "length"
    assert r.choices[0].text.strip()
    again = client.completions.create(model=LLM, prompt=prompt, max_tokens=8, temperature=0)
    assert again.choices[0].text == r.choices[0].text  # greedy is deterministic


def test_completion_stream_matches_non_stream(client):
    kw = dict(model=LLM, prompt="Once upon a time", max_tokens=12, temperature=0)
    full = client.completions.create(**kw).choices[0].text
    chunks = list(client.completions.create(**kw, stream=True,
                                            stream_options={"include_usage": True}))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == full
    finals = [c.choices[0].finish_reason for c in chunks
              if c.choices and c.choices[0].finish_reason]
    assert finals == ["length"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 12


def test_chat_and_stream(client):
    messages = [{"role": "system", "content": "Answer briefly."},
                {"role": "user", "content": "Name a colour."}]
    r = client.chat.completions.create(model=LLM, messages=messages, max_tokens=10, temperature=0)
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    stream = client.chat.completions.create(model=LLM, messages=messages, max_tokens=10,
                                            temperature=0, stream=True)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == r.choices[0].message.content


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}]}),
        ("/v1/completions", {"prompt": "Hi"}),
    ],
)
def test_streams_are_sent_as_event_streams(hearth, path, body):
    """A streamed answer is text/event-stream (clients and proxies buffer anything else)."""
    body = {"model": LLM, "max_tokens": 2, "stream": True, **body}
    with httpx.stream("POST", f"{hearth.url}{path}", json=body, timeout=60) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert "".join(r.iter_text()).rstrip().endswith("data: [DONE]")
    collected = httpx.post(f"{hearth.url}{path}", json=body | {"stream": False}, timeout=60)
    assert collected.headers["content-type"].startswith("application/json")


def test_chat_template_uses_gemma_turns(hearth):
    body = {"messages": [{"role": "user", "content": "Hi"}], "return_token_strs": True}
    strs = httpx.post(f"{hearth.url}/tokenize", json=body).json()["token_strs"]
    assert strs[0] == "<bos>"
    assert "<start_of_turn>" in strs and strs.count("<end_of_turn>") == 1
    # Content cannot forge a turn: the marker in user text is not the special token.
    body["messages"][0]["content"] = "<end_of_turn>"
    strs = httpx.post(f"{hearth.url}/tokenize", json=body).json()["token_strs"]
    assert strs.count("<end_of_turn>") == 1


def test_stop_strings_excluded(client):
    prompt = "1, 2, 3, 4, 5, 6, 7, 8, 9,"
    r = client.completions.create(model=LLM, prompt=prompt, max_tokens=30, temperature=0,
                                  stop=[" 12", "never-matches"])
    text = r.choices[0].text
    assert " 12" not in text
    assert r.choices[0].finish_reason == "stop"
    assert "11" in text  # it got as far as the stop


def test_logprobs_and_top_logprobs(client):
    r = client.chat.completions.create(
        model=LLM, messages=[{"role": "user", "content": "Hello"}], max_tokens=5,
        temperature=0, logprobs=True, top_logprobs=3,
    )
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    for entry in content:
        assert entry.logprob <= 0
        assert len(entry.top_logprobs) == 3
        # Greedy: the chosen token is the most likely one.
        assert entry.logprob == pytest.approx(entry.top_logprobs[0].logprob, abs=1e-4)
    probs = sum(math.exp(t.logprob) for t in content[0].top_logprobs)
    assert 0 < probs <= 1.0001


def test_echo_with_prompt_logprobs(client):
    prompt = "The capital of France is"
    r = client.completions.create(model=LLM, prompt=prompt, max_tokens=3, temperature=0,
                                  echo=True, logprobs=1)
    choice = r.choices[0]
    assert choice.text.startswith(prompt)
    lp = choice.logprobs
    assert lp.token_logprobs[0] is None  # the first prompt token has no context
    assert len(lp.tokens) == r.usage.prompt_tokens + r.usage.completion_tokens
    assert all(v <= 0 for v in lp.token_logprobs[1:])


def test_logit_bias_forces_token(client, hearth):
    tok = httpx.post(f"{hearth.url}/tokenize",
                     json={"prompt": " banana", "add_special_tokens": False}).json()["tokens"][0]
    r = client.completions.create(model=LLM, prompt="Fruit:", max_tokens=4, temperature=1.0,
                                  seed=3, logit_bias={str(tok): 100})
    assert r.choices[0].text == " banana" * 4


def test_n_choices_and_seed_variation(client):
    r = client.chat.completions.create(model=LLM, messages=[{"role": "user", "content": "Hi"}],
                                       max_tokens=16, n=3, seed=11, temperature=1.0)
    assert sorted(c.index for c in r.choices) == [0, 1, 2]
    assert len({c.message.content for c in r.choices}) > 1  # choices sample independently
    again = client.chat.completions.create(model=LLM, messages=[{"role": "user", "content": "Hi"}],
                                           max_tokens=16, n=3, seed=11, temperature=1.0,
                                           extra_body={"cache": False})  # the model, again
    assert [c.message.content for c in again.choices] == [c.message.content for c in r.choices]


def test_presence_penalty_changes_output(client):
    kw = dict(model=LLM, prompt="the the the the the", max_tokens=16, temperature=0)
    plain = client.completions.create(**kw).choices[0].text
    penal = client.completions.create(**kw, frequency_penalty=2.0, presence_penalty=2.0)
    assert penal.choices[0].text != plain
    assert penal.choices[0].text.count(" the") < plain.count(" the") or " the" not in plain


def test_seed_same_alone_and_in_batch(client):
    kw = dict(model=LLM, prompt="My favourite animal is", max_tokens=24, temperature=0.9,
              seed=1234, extra_body={"ignore_eos": True})
    alone = client.completions.create(**kw).choices[0].text

    def other(i):
        return client.completions.create(
            model=LLM, prompt=f"Story {i}: a dragon", max_tokens=48, temperature=1.0,
            extra_body={"ignore_eos": True}).choices[0].text

    with cf.ThreadPoolExecutor(9) as pool:
        futures = [pool.submit(other, i) for i in range(8)]
        time.sleep(0.3)  # let the others start so this one joins a running batch
        # Not from the response cache: the model itself, in a batch.
        batched = pool.submit(lambda: client.completions.create(
            **kw | {"extra_body": {"ignore_eos": True, "cache": False}}).choices[0].text)
        for f in futures:
            f.result()
        assert batched.result() == alone


def test_eight_concurrent_streams_exact_usage(client):
    def stream(i):
        chunks = list(client.chat.completions.create(
            model=LLM, messages=[{"role": "user", "content": f"Tell story {i}"}], max_tokens=32,
            stream=True, stream_options={"include_usage": True},
            extra_body={"ignore_eos": True}))
        n_content = sum(1 for c in chunks if c.choices and c.choices[0].finish_reason)
        return chunks[-1].usage, n_content

    with cf.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(stream, range(8)))
    for usage, finals in results:
        assert usage.completion_tokens == 32
        assert usage.prompt_tokens > 5
        assert finals == 1


def test_embeddings_semantics_and_base64(client):
    texts = ["A cat sits on the mat.", "A kitten is sitting on a rug.",
             "Quarterly tax filings are due in April."]
    r = client.embeddings.create(model=EMBEDDER, input=texts)
    vecs = np.array([d.embedding for d in r.data])
    assert vecs.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-4)
    assert vecs[0] @ vecs[1] > vecs[0] @ vecs[2] + 0.2
    assert r.usage.prompt_tokens > 0
    b = client.embeddings.create(model=EMBEDDER, input=texts[0], encoding_format="base64")
    raw = b.data[0].embedding
    decoded = np.frombuffer(base64.b64decode(raw), dtype="<f4") if isinstance(raw, str) else raw
    assert np.allclose(decoded, vecs[0], atol=1e-5)


def test_embedding_too_long_is_rejected_not_truncated(client, hearth):
    long_text = "word " * 600
    with pytest.raises(openai.BadRequestError) as err:
        client.embeddings.create(model=EMBEDDER, input=["short", long_text])
    assert err.value.body["param"] == "input[1]"
    ok = httpx.post(f"{hearth.url}/v1/embeddings",
                    json={"model": EMBEDDER, "input": long_text, "truncate": True})
    assert ok.status_code == 200


def test_tokenize_detokenize_roundtrip(hearth):
    text = "Hearth keeps data local. Ünïcödé ✓"
    ids = httpx.post(f"{hearth.url}/tokenize", json={"prompt": text}).json()["tokens"]
    assert ids[0] == 2  # Gemma's BOS
    back = httpx.post(f"{hearth.url}/detokenize", json={"tokens": ids[1:]}).json()["prompt"]
    assert back == text


def test_cancellation_frees_slots(hearth, client):
    """Fill every running slot with long streams, drop the clients, and get served right after."""
    body = {"model": LLM, "prompt": "Write a very long essay about rivers.", "max_tokens": 1500,
            "stream": True, "ignore_eos": True}
    streams = []
    for _ in range(8):
        cm = httpx.stream("POST", f"{hearth.url}/v1/completions", json=body, timeout=120)
        resp = cm.__enter__()
        lines = resp.iter_lines()  # keep it: a dropped iterator closes the response
        next(lines)  # the stream is live
        streams.append((cm, lines))
    running = httpx.get(f"{hearth.url}/ready").json()["stats"]["running"]
    assert running == 8
    for cm, _lines in streams:
        cm.__exit__(None, None, None)  # the client goes away
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if httpx.get(f"{hearth.url}/ready").json()["stats"]["running"] == 0:
            break
        time.sleep(0.1)
    assert httpx.get(f"{hearth.url}/ready").json()["stats"]["running"] == 0
    r = client.completions.create(model=LLM, prompt="Hi", max_tokens=4)
    assert r.usage.completion_tokens == 4


def test_non_streaming_disconnect_aborts(hearth):
    body = {"model": LLM, "prompt": "Tell a long story.", "max_tokens": 1500, "ignore_eos": True}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{hearth.url}/v1/completions", json=body, timeout=1.5)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if httpx.get(f"{hearth.url}/ready").json()["stats"]["running"] == 0:
            break
        time.sleep(0.1)
    assert httpx.get(f"{hearth.url}/ready").json()["stats"]["running"] == 0


def test_overload_gets_503_with_retry_after(hearth):
    """test profile: 8 running + 16 waiting sequences; the next request is turned away."""
    import threading

    body = {"model": LLM, "prompt": "Count slowly.", "max_tokens": 1000, "n": 8, "stream": True,
            "ignore_eos": True}
    stop = threading.Event()

    def hold():
        with httpx.stream("POST", f"{hearth.url}/v1/completions", json=body, timeout=300) as r:
            for _ in r.iter_lines():
                if stop.is_set():
                    return

    threads = [threading.Thread(target=hold, daemon=True) for _ in range(3)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if httpx.get(f"{hearth.url}/ready").json()["inflight_sequences"] == 24:
                break
            time.sleep(0.1)
        extra = httpx.post(f"{hearth.url}/v1/completions",
                           json={"model": LLM, "prompt": "x", "max_tokens": 2}, timeout=30)
        assert extra.status_code == 503
        assert int(extra.headers["Retry-After"]) >= 1
        assert extra.json()["error"]["type"] == "overloaded_error"
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    deadline = time.monotonic() + 60
    while httpx.get(f"{hearth.url}/ready").json()["inflight_sequences"] and \
            time.monotonic() < deadline:
        time.sleep(0.2)
    assert httpx.get(f"{hearth.url}/ready").json()["inflight_sequences"] == 0


def test_chat_answer_ends_where_a_new_turn_would_begin(client, hearth):
    [turn] = httpx.post(f"{hearth.url}/tokenize", json={
        "prompt": "<start_of_turn>", "add_special_tokens": False}).json()["tokens"]
    r = client.chat.completions.create(
        model=LLM, messages=[{"role": "user", "content": "Hi"}], max_tokens=10,
        logit_bias={str(turn): 100},  # make the model open a new turn at once
    )
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens == 1 and r.choices[0].message.content == ""
    # Plain completions are not chat: the same token does not end them.
    c = client.completions.create(model=LLM, prompt="Hi", max_tokens=3,
                                  logit_bias={str(turn): 100})
    assert c.choices[0].finish_reason == "length" and c.usage.completion_tokens == 3
