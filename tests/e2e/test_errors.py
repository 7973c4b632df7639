"""Every user mistake is a 4xx with an OpenAI error body, never a 500, and the server carries on."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.support import LLM

pytestmark = pytest.mark.e2e

CHAT = "/v1/chat/completions"
COMP = "/v1/completions"
EMB = "/v1/embeddings"
MSG = [{"role": "user", "content": "hi"}]


def chat(**kw):
    return json.dumps({"model": LLM, "messages": MSG, **kw}).encode()


CASES = [
    # (id, path, raw body, status, param)
    ("unknown model", CHAT, json.dumps({"model": "nope", "messages": MSG}).encode(), 404, "model"),
    ("n zero", CHAT, chat(n=0), 400, "n"),
    ("n too large", CHAT, chat(n=99), 400, "n"),
    ("negative max_tokens", CHAT, chat(max_tokens=-1), 400, "max_tokens"),
    ("huge max_tokens", CHAT, chat(max_tokens=10**9), 400, "messages"),
    ("empty messages", CHAT, json.dumps({"model": LLM, "messages": []}).encode(), 400, "messages"),
    ("unknown role", CHAT,
     json.dumps({"model": LLM, "messages": [{"role": "robot", "content": "x"}]}).encode(),
     400, "messages[0].role"),
    ("wrong type", CHAT, chat(temperature="hot"), 400, "temperature"),
    ("temperature range", CHAT, chat(temperature=5), 400, "temperature"),
    ("top_logprobs range", CHAT, chat(logprobs=True, top_logprobs=50), 400, "top_logprobs"),
    ("top_logprobs without logprobs", CHAT, chat(top_logprobs=2), 400, "top_logprobs"),
    ("unknown parameter", CHAT, chat(frobnicate=True), 400, "frobnicate"),
    ("image content", CHAT, json.dumps({"model": LLM, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "x"}}]}]}).encode(),
     400, "messages[0].content[0].type"),
    ("missing messages", CHAT, json.dumps({"model": LLM}).encode(), 400, None),
    ("malformed JSON", CHAT, b'{"model": "x", ', 400, None),
    ("JSON array body", CHAT, b"[1, 2, 3]", 400, None),
    ("nested 10000 deep", CHAT,
     b'{"model": "m", "messages": [{"role": "user", "content": "x", "name": '
     + b"[" * 10000 + b"]" * 10000 + b"}]}", 400, None),
    ("invalid UTF-8", CHAT,
     b'{"model": "' + LLM.encode() + b'", "messages": [{"role": "user", "content": "\xff\xfe"}]}',
     400, None),
    ("logit_bias key", CHAT, chat(logit_bias={"abc": 1}), 400, "logit_bias"),
    ("logit_bias out of vocab", CHAT, chat(logit_bias={"99999999": 1}), 400, "logit_bias"),
    ("stop empty string", CHAT, chat(stop=[""]), 400, "stop"),
    ("prompt token out of range", COMP,
     json.dumps({"model": LLM, "prompt": [1, 2, 99999999]}).encode(), 400, "prompt"),
    ("suffix unsupported", COMP,
     json.dumps({"model": LLM, "prompt": "x", "suffix": "y"}).encode(), 400, "suffix"),
    ("embedding dimensions", EMB,
     json.dumps({"model": "all-minilm-l6-v2", "input": "x", "dimensions": 8}).encode(),
     400, "dimensions"),
    ("embedding with chat model", EMB,
     json.dumps({"model": LLM, "input": "x"}).encode(), 404, "model"),
    ("embedding token ids", EMB,
     json.dumps({"model": "all-minilm-l6-v2", "input": [1, 2, 3]}).encode(), 400, "input"),
    ("body over the size limit", COMP,
     json.dumps({"model": LLM, "prompt": "a" * 2_000_000}).encode(), 413, None),
]


@pytest.mark.parametrize(("path", "body", "status", "param"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_a_clear_4xx(hearth, path, body, status, param):
    r = httpx.post(hearth.url + path, content=body,
                   headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["message"] and isinstance(err["message"], str)
    if param is not None:
        assert err["param"] == param
    # ... and the server still answers the next request.
    ok = httpx.post(hearth.url + COMP, json={"model": LLM, "prompt": "Hi", "max_tokens": 1},
                    timeout=120)
    assert ok.status_code == 200


def test_context_length_error_states_counts(hearth):
    prompt = "word " * 1500
    r = httpx.post(hearth.url + COMP, json={"model": LLM, "prompt": prompt, "max_tokens": 1000})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "context_length_exceeded"
    assert "2048" in err["message"] and "1000" in err["message"]


def test_unknown_route_and_method(hearth):
    r = httpx.get(hearth.url + "/v1/nothing-here")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
    r = httpx.delete(hearth.url + "/v1/models")
    assert r.status_code == 405 and "error" in r.json()
