"""Engine events → OpenAI JSON (``server.mappers``), fed with hand-made events: which fields are
there, which are left out, and in what order, for the shapes a stand-in model cannot produce
(tool calls, schema reports, RAG citations and refusals, cached usage, echo with logprobs)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable
from typing import Any

import msgspec

from engine import (
    ChoiceDelta,
    Citation,
    FinishReason,
    GenerateRequest,
    GenerationDone,
    LogprobEntry,
    Outcome,
    RagDone,
    Refusal,
    RetrievalStats,
    SamplingParams,
    Usage,
    build_spec,
)
from engine.types import SchemaReport, ToolCall
from server.mappers import ChatMapper, CompletionMapper
from server.wire import ChatCompletionRequest, CompletionRequest

MSG = [{"role": "user", "content": "hi"}]
PARAMS = SamplingParams(max_tokens=8)
REPORT = SchemaReport("tools", ["tools"], [], [], True, [], None)
STATS = RetrievalStats(["c"], "hybrid", 4, 2, 2, 0.8)
CITE = Citation(1, "d1", 3, "c", 0.9, "q", 0, 1, 10, 11, None, "answer", True)
RAG_KEYS = ["citations", "confidence", "refusal", "session_id", "retrieval"]


async def _events(items: Iterable[Any]) -> AsyncIterator[Any]:
    for item in items:
        yield item


def chat(body: dict[str, Any], events: list[Any], *, tools: bool = False) -> tuple[dict, list]:
    """(collected body, streamed chunks with [DONE] last) for the same events."""
    req = msgspec.convert({"model": "m", "messages": MSG} | body, ChatCompletionRequest)
    spec = build_spec(tools=[{"type": "function", "function": {"name": "w"}}]) if tools else None
    gen = GenerateRequest("chatcmpl-1", "m", PARAMS, messages=[], response_format=spec)
    mapper = ChatMapper(req, gen)

    async def both() -> tuple[dict, list]:
        body = json.loads(msgspec.json.encode(await mapper.collect(_events(events))))
        raw = [c async for c in mapper.chunks(_events(events))]
        return body, _frames(raw)

    return asyncio.run(both())


def _frames(raw: list[bytes]) -> list[Any]:
    assert all(c.startswith(b"data: ") and c.endswith(b"\n\n") for c in raw)
    assert raw[-1] == b"data: [DONE]\n\n"
    return [json.loads(c[6:]) for c in raw[:-1]] + ["[DONE]"]


def delta(i: int, text: str, reason: FinishReason | None = None, **kw: Any) -> ChoiceDelta:
    return ChoiceDelta(i, text, (1,), finish_reason=reason, **kw)


def test_plain_chat_keeps_null_logprobs_and_leaves_out_extras() -> None:
    events = [delta(0, "Hi"), delta(0, "!", FinishReason.STOP), GenerationDone(Usage(3, 2))]
    body, chunks = chat({}, events)
    assert list(body) == ["id", "object", "created", "model", "choices", "usage"]
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hi!"},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    assert [c["choices"][0]["delta"] for c in chunks[:-1]] == [
        {"role": "assistant", "content": ""},
        {"content": "Hi"},
        {"content": "!"},
        {},
    ]
    assert all("usage" not in c for c in chunks[:-1])  # no include_usage: no usage anywhere
    assert chunks[-2]["choices"][0] | {"delta": None} == {
        "index": 0,
        "delta": None,
        "logprobs": None,
        "finish_reason": "stop",
    }


def test_usage_chunk_only_with_include_usage_and_cached_only_when_cached() -> None:
    events = [delta(0, "x", FinishReason.STOP), GenerationDone(Usage(3, 1, cached=True))]
    body, chunks = chat({"stream_options": {"include_usage": True}}, events)
    assert body["usage"]["cached"] is True
    assert chunks[-2]["choices"] == [] and chunks[-2]["usage"] == {
        "prompt_tokens": 3,
        "completion_tokens": 1,
        "total_tokens": 4,
        "cached": True,
    }


def test_chat_logprobs_with_top_entries() -> None:
    lp = LogprobEntry("a", 97, b"a", -0.25, (("a", 97, b"a", -0.25), ("b", 98, b"b", -2.0)))
    events = [delta(0, "a", FinishReason.STOP, logprobs=(lp,)), GenerationDone(Usage(1, 1))]
    body, chunks = chat({"logprobs": True, "top_logprobs": 2}, events)
    want = {
        "content": [
            {
                "token": "a",
                "logprob": -0.25,
                "bytes": [97],
                "top_logprobs": [
                    {"token": "a", "logprob": -0.25, "bytes": [97]},
                    {"token": "b", "logprob": -2.0, "bytes": [98]},
                ],
            }
        ]
    }
    assert body["choices"][0]["logprobs"] == want
    assert chunks[1]["choices"][0]["logprobs"] == want


def test_tool_calls_collected_and_streamed_in_openai_pieces() -> None:
    outcome = Outcome(FinishReason.TOOL_CALLS, REPORT, None, [ToolCall("call_1", "w", '{"x":1}')])
    events = [
        delta(0, '<tool_call>{"name":"w","arguments":'),
        delta(0, '{"x":1}}', FinishReason.TOOL_CALLS, structured=outcome),
        GenerationDone(Usage(5, 4)),
    ]
    body, chunks = chat({}, events, tools=True)
    choice = body["choices"][0]
    assert choice["message"] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "w", "arguments": '{"x":1}'}}
        ],
    }
    assert list(choice) == ["index", "message", "logprobs", "finish_reason", "schema_report"]
    assert choice["finish_reason"] == "tool_calls" and choice["schema_report"]["valid"] is True
    pieces = [c["choices"][0]["delta"]["tool_calls"][0] for c in chunks[1:-2]]
    first, rest = pieces[0], pieces[1:]
    assert list(first) == ["index", "id", "type", "function"]
    assert first["function"] == {"name": "w", "arguments": ""}
    assert all(
        list(p) == ["index", "function"] and list(p["function"]) == ["arguments"] for p in rest
    )
    assert "".join(p["function"]["arguments"] for p in rest) == '{"x":1}'
    final = chunks[-2]["choices"][0]
    assert final["delta"] == {} and final["finish_reason"] == "tool_calls"
    assert final["schema_report"] == {
        "kind": "tools",
        "enforced_by_grammar": ["tools"],
        "validated_after_generation": [],
        "ignored": [],
        "valid": True,
        "errors": [],
        "error": None,
    }


def test_rag_turn_appends_citations_after_usage_and_in_a_last_chunk() -> None:
    events = [
        delta(0, "Yes [1]", FinishReason.STOP),
        GenerationDone(Usage(9, 3)),
        RagDone([CITE], 0.7, STATS, "s1"),
    ]
    body, chunks = chat({"model": "rag/c"}, events)
    assert list(body)[5:] == ["usage", *RAG_KEYS]
    assert body["model"] == "rag/c" and body["refusal"] is None and body["session_id"] == "s1"
    assert body["citations"][0]["quote"] == "q" and body["citations"][0]["page"] is None
    assert body["retrieval"]["chunks_in_context"] == 2
    last = chunks[-2]
    assert last["choices"] == [] and "usage" not in last and list(last)[5:] == RAG_KEYS
    assert last["citations"] == body["citations"]


def test_refusal_collected_and_streamed() -> None:
    events = [Refusal("weak_evidence", 0.1, 0.3, retrieval=STATS, session_id=None)]
    body, chunks = chat({}, events)
    msg = body["choices"][0]["message"]
    assert msg["refusal"] == msg["content"] and list(msg) == ["role", "content", "refusal"]
    assert body["usage"]["total_tokens"] == 0 and body["citations"] == []
    assert body["refusal"] == {
        "reason": "weak_evidence",
        "best_score": 0.1,
        "min_score": 0.3,
        "message": msg["content"],
        "type": "insufficient_evidence",
    }
    opening, closing, done = chunks
    assert opening["choices"][0]["delta"]["refusal"] == msg["content"]
    assert (
        closing["choices"][0]["finish_reason"] == "stop" and closing["refusal"] == body["refusal"]
    )
    assert done == "[DONE]"


def test_completions_echo_logprobs_and_prompt_order() -> None:
    req = msgspec.convert(
        {"model": "m", "prompt": ["p0", "p1"], "echo": True, "logprobs": 1}, CompletionRequest
    )
    gens = [GenerateRequest(f"cmpl-1-{k}", "m", PARAMS, prompt=f"p{k}") for k in range(2)]
    mapper = CompletionMapper(req, gens, lambda ids: "")
    tok = LogprobEntry("a", 97, b"a", -0.5)
    prompt_lp = (LogprobEntry("p", 112, b"p", None),)
    events = [
        (k, e)
        for k in (1, 0)
        for e in (
            delta(0, "a", FinishReason.LENGTH, logprobs=(tok,)),
            GenerationDone(Usage(2, 1), prompt_logprobs=prompt_lp, prompt_text=f"p{k}"),
        )
    ]

    async def both() -> tuple[dict, list]:
        body = json.loads(msgspec.json.encode(await mapper.collect(_events(events))))
        return body, _frames([c async for c in mapper.chunks(_events(events))])

    body, chunks = asyncio.run(both())
    assert body["id"] == "cmpl-1" and body["object"] == "text_completion"
    assert [c["text"] for c in body["choices"]] == ["p0a", "p1a"]
    assert body["choices"][0]["logprobs"] == {
        "tokens": ["p", "a"],
        "token_logprobs": [None, -0.5],
        "top_logprobs": [None, None],
        "text_offset": [0, 1],
    }
    assert body["usage"] == {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 4 + 2}
    assert [c["choices"][0]["text"] for c in chunks[:2]] == ["p0", "p1"]  # the echo goes first
    assert all("usage" not in c and c["object"] == "text_completion" for c in chunks[:-1])
