"""Structured output through a real server and the real model: JSON modes, tools, extras, errors.

The promise under test: a 200 with ``finish_reason: "stop"`` always carries output that validates;
bad schemas are refused with a 4xx before any generation, and the server keeps serving.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from tests.support import LLM

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 16},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}
# A one-field object: complete after a few tokens.
FLAG = {
    "type": "object",
    "properties": {"ok": {"type": "boolean"}},
    "required": ["ok"],
    "additionalProperties": False,
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 20}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "parameters": {
            "type": "object",
            "properties": {"x": {"type": "integer", "maximum": 99}, "y": {"type": "integer"}},
            "required": ["x", "y"],
            "additionalProperties": False,
        },
    },
}
CHAT = [{"role": "user", "content": "Describe a person as JSON."}]


def _post(hearth: Any, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{hearth.url}/v1/{path}", json={"model": LLM, **body}, timeout=600)


def _sse(hearth: Any, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    chunks = []
    with httpx.stream(
        "POST", f"{hearth.url}/v1/{path}", json={"model": LLM, "stream": True, **body}, timeout=600
    ) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunks.append(json.loads(line[6:]))
    return chunks


def _text_of(path: str, choice: dict[str, Any]) -> str:
    return choice["message"]["content"] if path == "chat/completions" else choice["text"]


def _stream_text(path: str, chunks: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    text, last = "", {}
    for c in chunks:
        for ch in c["choices"]:
            piece = ch.get("delta", {}).get("content") if path == "chat/completions" else ch["text"]
            text += piece or ""
            if ch.get("finish_reason"):
                last = ch
    return text, last


def _assert_valid(text: str, finish: str, schema: dict[str, Any], report: dict) -> None:
    assert finish in ("stop", "length")
    if finish == "stop":
        jsonschema.validate(json.loads(text), schema)
        assert report["valid"] is True and report["error"] is None
    else:
        assert report["error"] == "truncated" and report["valid"] is False


MODES = [
    ({"type": "json_object"}, {"type": "object"}),
    ({"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}, PERSON),
]


@pytest.mark.parametrize("path", ["chat/completions", "completions"])
@pytest.mark.parametrize(("response_format", "schema"), MODES)
def test_response_format_non_streaming(hearth, path, response_format, schema) -> None:
    body: dict[str, Any] = {
        "response_format": response_format,
        "max_tokens": 48,
        "temperature": 0.7,
        "seed": 3,
    }
    body.update({"messages": CHAT} if path == "chat/completions" else {"prompt": "JSON:"})
    r = _post(hearth, path, body)
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    _assert_valid(_text_of(path, choice), choice["finish_reason"], schema, choice["schema_report"])
    assert "type" in choice["schema_report"]["enforced_by_grammar"]


@pytest.mark.parametrize("path", ["chat/completions", "completions"])
@pytest.mark.parametrize(("response_format", "schema"), MODES)
def test_response_format_streaming(hearth, path, response_format, schema) -> None:
    body: dict[str, Any] = {"response_format": response_format, "max_tokens": 48, "seed": 5}
    body.update({"messages": CHAT} if path == "chat/completions" else {"prompt": "JSON:"})
    text, last = _stream_text(path, _sse(hearth, path, body))
    _assert_valid(text, last["finish_reason"], schema, last["schema_report"])


def test_parse_with_pydantic(client) -> None:
    class Person(BaseModel):
        name: str = Field(max_length=16)
        age: int = Field(ge=0, le=120)

    r = client.chat.completions.parse(
        model=LLM, messages=CHAT, response_format=Person, max_tokens=64, temperature=0.5, seed=1
    )
    choice = r.choices[0]
    assert choice.finish_reason == "stop"
    assert isinstance(choice.message.parsed, Person)


@pytest.mark.parametrize(
    ("tool_choice", "want"),
    [
        ("required", "tool_calls"),
        ({"type": "function", "function": {"name": "add"}}, "tool_calls"),
        ("none", None),
        ("auto", None),
    ],
)
def test_tools_with_each_tool_choice(hearth, tool_choice, want) -> None:
    msgs = [{"role": "user", "content": "What is the weather in Paris?"}]
    r = _post(
        hearth,
        "chat/completions",
        {
            "messages": msgs,
            "tools": [WEATHER, ADD],
            "tool_choice": tool_choice,
            "max_tokens": 48,
            "seed": 2,
        },
    )
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    calls = choice["message"].get("tool_calls") or []
    if want == "tool_calls":
        assert choice["finish_reason"] == "tool_calls" and calls
        for call in calls:
            assert call["id"].startswith("call_") and call["type"] == "function"
            schema = {"get_weather": WEATHER, "add": ADD}[call["function"]["name"]]
            args = json.loads(call["function"]["arguments"])
            jsonschema.validate(args, schema["function"]["parameters"])
        if isinstance(tool_choice, dict):
            assert {c["function"]["name"] for c in calls} == {"add"}
    elif tool_choice == "none":
        assert not calls and "schema_report" not in choice
    else:  # auto: either calls (finish tool_calls) or text (finish stop/length)
        assert (choice["finish_reason"] == "tool_calls") == bool(calls)


def test_tool_message_round_trip(hearth) -> None:
    msgs = [
        {"role": "user", "content": "Weather in Oslo?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 4}'},
    ]
    r = _post(hearth, "chat/completions", {"messages": msgs, "tools": [WEATHER], "max_tokens": 16})
    assert r.status_code == 200, r.text


def test_streamed_tool_calls(hearth) -> None:
    msgs = [{"role": "user", "content": "Add 2 and 3."}]
    chunks = _sse(
        hearth,
        "chat/completions",
        {
            "messages": msgs,
            "tools": [ADD, WEATHER],
            "tool_choice": "required",
            "parallel_tool_calls": False,
            "max_tokens": 48,
        },
    )
    calls: dict[int, dict[str, str]] = {}
    finish = None
    for c in chunks:
        ch = c["choices"][0]
        finish = ch.get("finish_reason") or finish
        for tc in ch["delta"].get("tool_calls") or []:
            slot = calls.setdefault(tc["index"], {"id": "", "name": "", "arguments": ""})
            slot["id"] = tc.get("id") or slot["id"]
            fn = tc.get("function") or {}
            slot["name"] = fn.get("name") or slot["name"]
            slot["arguments"] += fn.get("arguments") or ""
    assert finish == "tool_calls" and len(calls) == 1
    call = calls[0]
    assert call["id"].startswith("call_") and call["name"] in ("add", "get_weather")
    schema = {"add": ADD, "get_weather": WEATHER}[call["name"]]["function"]["parameters"]
    jsonschema.validate(json.loads(call["arguments"]), schema)


def test_extras_regex_choice_grammar(hearth) -> None:
    cases = [
        ({"regex": "[0-9]{3}-[0-9]{4}"}, lambda t: len(t) == 8 and t[3] == "-"),
        ({"choice": ["positive", "negative"]}, lambda t: t in ("positive", "negative")),
        ({"grammar": 'root ::= "yes" | "no"'}, lambda t: t in ("yes", "no")),
    ]
    for so, check in cases:
        r = _post(
            hearth, "completions", {"prompt": "Answer:", "structured_outputs": so, "max_tokens": 16}
        )
        assert r.status_code == 200, r.text
        choice = r.json()["choices"][0]
        assert choice["finish_reason"] == "stop" and check(choice["text"]), choice


def test_budget_aware_closing(hearth) -> None:
    rf = {"type": "json_schema", "json_schema": {"name": "s", "schema": FLAG}}
    r = _post(
        hearth, "chat/completions", {"messages": CHAT, "response_format": rf, "max_tokens": 7}
    )
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "stop", choice
    assert isinstance(json.loads(choice["message"]["content"])["ok"], bool)
    rf = {"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON}}
    r = _post(
        hearth, "chat/completions", {"messages": CHAT, "response_format": rf, "max_tokens": 3}
    )
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "length"
    assert choice["schema_report"]["error"] == "truncated"


def test_ignore_eos_does_not_outlast_a_finished_structure(hearth) -> None:
    """ignore_eos and min_tokens cannot keep a complete JSON value going: the answer ends there,
    valid, instead of sampling from an all-blocked row."""
    rf = {"type": "json_schema", "json_schema": {"name": "s", "schema": FLAG}}
    body = {"messages": CHAT, "response_format": rf, "max_tokens": 40, "ignore_eos": True,
            "min_tokens": 30}
    choice = _post(hearth, "chat/completions", body).json()["choices"][0]
    assert choice["finish_reason"] == "stop", choice
    assert isinstance(json.loads(choice["message"]["content"])["ok"], bool)


def test_unsupported_keyword_is_rejected_unless_lenient(hearth) -> None:
    schema = {"type": "object", "properties": {"when": {"type": "string", "format": "x-epoch"}}}
    rf = {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}
    r = _post(hearth, "chat/completions", {"messages": CHAT, "response_format": rf})
    assert r.status_code == 400
    err = r.json()["error"]
    assert "/properties/when/format" in err["message"]
    assert err["code"] == "unsupported_schema_keyword"
    rf["json_schema"]["lenient"] = True
    r = _post(
        hearth, "chat/completions", {"messages": CHAT, "response_format": rf, "max_tokens": 24}
    )
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["schema_report"]["ignored"]


def test_validated_keyword_is_reported(hearth) -> None:
    schema = {"type": "array", "items": {"type": "integer"}, "maxItems": 3, "uniqueItems": True}
    rf = {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}
    r = _post(hearth, "completions", {"prompt": "[", "response_format": rf, "max_tokens": 24})
    choice = r.json()["choices"][0]
    report = choice["schema_report"]
    assert report["validated_after_generation"] == ["uniqueItems"]
    if choice["finish_reason"] == "stop":
        jsonschema.validate(json.loads(choice["text"]), schema)
    else:
        assert choice["finish_reason"] in ("content_filter", "length") and not report["valid"]


BAD_SCHEMAS = {
    "invalid": ({"type": "object", "properties": {"a": {"type": "strnig"}}}, "invalid_schema"),
    "remote_ref": ({"$ref": "https://example.com/schema.json"}, "remote_ref"),
    "file_ref": ({"properties": {"a": {"$ref": "file:///etc/passwd"}}}, "remote_ref"),
    "recursive": ({"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}, "recursive_schema"),
    "oversized": (
        {
            "type": "object",
            "properties": {
                f"field_{i}": {"type": "string", "description": "x" * 40} for i in range(5000)
            },
        },
        "schema_too_large",
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_SCHEMAS))
def test_bad_schemas_are_4xx_and_server_stays_up(hearth, name) -> None:
    schema, code = BAD_SCHEMAS[name]
    rf = {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}
    r = _post(hearth, "chat/completions", {"messages": CHAT, "response_format": rf})
    assert 400 <= r.status_code < 500, r.text
    if r.status_code != 413:  # the oversized body may be refused before it is parsed
        assert r.json()["error"]["code"] == code
    ok = _post(hearth, "completions", {"prompt": "Hi", "max_tokens": 2})
    assert ok.status_code == 200


# ---- property: hypothesis-generated schemas through the real server --------------------------

_leaf = st.one_of(
    st.fixed_dictionaries({"type": st.just("string")}, optional={"maxLength": st.integers(0, 6)}),
    st.fixed_dictionaries(
        {"type": st.just("integer")},
        optional={"minimum": st.integers(-9, 0), "maximum": st.integers(1, 9)},
    ),
    st.just({"type": "boolean"}),
    st.lists(st.sampled_from(["x", "y", "z"]), min_size=1, max_size=3, unique=True).map(
        lambda xs: {"enum": xs}
    ),
)
_schema = st.recursive(
    _leaf,
    lambda inner: st.one_of(
        st.builds(
            lambda i, n: {"type": "array", "items": i, "maxItems": n}, inner, st.integers(0, 2)
        ),
        st.dictionaries(st.sampled_from(["a", "b", "c"]), inner, min_size=1, max_size=2).map(
            lambda p: {
                "type": "object",
                "properties": p,
                "required": sorted(p),
                "additionalProperties": False,
            }
        ),
    ),
    max_leaves=4,
)


@settings(
    max_examples=6,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(schema=_schema)
def test_property_any_stop_output_validates(hearth, schema) -> None:
    rf = {"type": "json_schema", "json_schema": {"name": "h", "schema": schema}}
    r = _post(hearth, "completions", {"prompt": "JSON:", "response_format": rf, "max_tokens": 32})
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    _assert_valid(choice["text"], choice["finish_reason"], schema, choice["schema_report"])
