"""Tool calls: the finished-output parser and the streaming parser agree on every split."""

from __future__ import annotations

import json

import pytest

from engine.grammar.spec import build_spec
from engine.grammar.tools import (
    MARKER,
    ToolStreamParser,
    parse_tool_output,
    tools_lark,
    tools_prompt,
)

CALLS = [
    ("get_weather", {"city": "Paris", "unit": "c"}),
    ("note", {"text": 'say "hi" \\ {not a brace} [x]', "tags": [{"a": [1, 2]}, {}]}),
]
OUTPUT = "".join(
    MARKER + json.dumps({"name": n, "arguments": a}, separators=(",", ":")) for n, a in CALLS
)


def _stream(text: str, size: int) -> ToolStreamParser:
    parser = ToolStreamParser()
    deltas = []
    for i in range(0, len(text), size):
        deltas += parser.feed(text[i : i + size])
    deltas += parser.finish()
    parser.deltas = deltas  # type: ignore[attr-defined]
    return parser


def test_parse_finished_output() -> None:
    content, calls = parse_tool_output(OUTPUT)
    assert content is None
    assert [(c.name, json.loads(c.arguments)) for c in calls] == CALLS
    assert len({c.id for c in calls}) == 2 and all(c.id.startswith("call_") for c in calls)
    assert parse_tool_output("plain words") == ("plain words", [])


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
def test_stream_parser_matches_at_every_split(size: int) -> None:
    parser = _stream(OUTPUT, size)
    deltas = parser.deltas  # type: ignore[attr-defined]
    starts = [d for d in deltas if d.id is not None]
    assert [d.name for d in starts] == [n for n, _ in CALLS]
    for index, (_, args) in enumerate(CALLS):
        text = "".join(d.arguments for d in deltas if d.index == index and d.id is None)
        assert json.loads(text) == args
    assert not any(d.content for d in deltas)


@pytest.mark.parametrize("size", [1, 4])
def test_stream_parser_passes_text_through(size: int) -> None:
    parser = _stream("<tool and more", size)
    assert "".join(d.content for d in parser.deltas) == "<tool and more"  # type: ignore[attr-defined]


def test_lark_and_prompt_follow_tool_choice() -> None:
    tools = [
        {"type": "function", "function": {"name": "f", "description": "does f"}},
        {"type": "function", "function": {"name": "g"}},
    ]
    auto = build_spec(tools=tools)
    named = build_spec(tools=tools, tool_choice={"type": "function", "function": {"name": "g"}})
    assert auto is not None and named is not None
    assert "content" in tools_lark(auto, False) and "call+" in tools_lark(auto, False)
    assert "content" not in tools_lark(named, False) and '"f"' not in tools_lark(named, False)
    assert "does f" in tools_prompt(auto) and "must call g" in tools_prompt(named)


def test_template_tools_are_the_openai_shape_a_chat_template_reads() -> None:
    from engine.grammar.spec import StructuredSpec, ToolSpec
    from engine.grammar.tools import template_tools

    spec = StructuredSpec(
        kind="tools",
        param="tools",
        tools=(ToolSpec("get_weather", {"type": "object"}, "Weather of a city"),),
    )
    assert template_tools(spec) == (
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather of a city",
                "parameters": {"type": "object"},
            },
        },
    )
