"""Request fields → StructuredSpec: every malformed field is a 400 naming it."""

from __future__ import annotations

import pytest

from engine.errors import InvalidRequestError
from engine.grammar.spec import build_spec

TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


def test_no_fields_is_unconstrained() -> None:
    assert build_spec() is None
    assert build_spec(response_format={"type": "text"}) is None


def test_json_schema_fields() -> None:
    spec = build_spec(
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "p", "schema": {"type": "object"}, "lenient": True},
        }
    )
    assert spec is not None and spec.kind == "json_schema"
    assert spec.lenient and spec.name == "p" and spec.schema == {"type": "object"}


def test_key_depends_on_content_only() -> None:
    a = build_spec(structured_outputs={"regex": "[a-z]+"})
    b = build_spec(structured_outputs={"regex": "[a-z]+"})
    c = build_spec(structured_outputs={"regex": "[a-z]*"})
    assert a is not None and b is not None and c is not None
    assert a.key == b.key != c.key


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"response_format": {"type": "xml"}}, "response_format.type"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {}}},
            "response_format.json_schema.schema",
        ),
        ({"response_format": "json"}, "response_format"),
        ({"structured_outputs": {"regex": ""}}, "structured_outputs.regex"),
        ({"structured_outputs": {"choice": []}}, "structured_outputs.choice"),
        ({"structured_outputs": {"choice": ["a", 1]}}, "structured_outputs.choice"),
        ({"structured_outputs": {"regex": "a", "choice": ["a"]}}, "structured_outputs"),
        ({"structured_outputs": {"grammar": " "}}, "structured_outputs.grammar"),
        ({"tools": []}, "tools"),
        (
            {"tools": [{"type": "function", "function": {"name": "bad name"}}]},
            "tools[0].function.name",
        ),
        ({"tools": [TOOL, TOOL]}, "tools"),
        ({"tools": [TOOL], "tool_choice": "sometimes"}, "tool_choice"),
        (
            {"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "g"}}},
            "tool_choice",
        ),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": [TOOL], "parallel_tool_calls": "yes"}, "parallel_tool_calls"),
    ],
)
def test_malformed_fields_name_the_field(kwargs: dict, param: str) -> None:
    with pytest.raises(InvalidRequestError) as exc:
        build_spec(**kwargs)
    assert exc.value.param == param
    assert exc.value.status == 400


def test_tool_choices() -> None:
    assert build_spec(tools=[TOOL], tool_choice="none") is None
    named = build_spec(tools=[TOOL], tool_choice={"type": "function", "function": {"name": "f"}})
    assert named is not None and named.tool_choice == "named" and named.tool_name == "f"
    auto = build_spec(tools=[TOOL], parallel_tool_calls=False)
    assert auto is not None and auto.tool_choice == "auto" and not auto.parallel_tool_calls
