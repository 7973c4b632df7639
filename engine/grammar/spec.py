"""What a request asks to constrain, parsed from its OpenAI-style fields into one frozen spec.

``build_spec`` is the only entry point: it takes the plain JSON values of ``response_format``,
``structured_outputs`` (Hearth's extra, in the style of vLLM), ``tools``, ``tool_choice`` and
``parallel_tool_calls`` and returns a ``StructuredSpec`` (or None: unconstrained). Every malformed
field raises ``InvalidRequestError`` naming it. ``key`` (a hash of the content) is the cache key.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from engine.errors import InvalidRequestError

Kind = Literal["json_object", "json_schema", "regex", "choice", "grammar", "tools"]
MAX_CHOICES = 1024
MAX_PATTERN_CHARS = 16 * 1024
MAX_GRAMMAR_CHARS = 64 * 1024
MAX_TOOLS = 128
_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


@dataclass(frozen=True)
class ToolSpec:
    name: str
    parameters: Any  # a JSON Schema (dict or bool)
    description: str = ""


@dataclass(frozen=True)
class StructuredSpec:
    """One request's constraint. Exactly the fields of its ``kind`` are set."""

    kind: Kind
    param: str  # the request field errors name
    schema: Any = None  # json_schema (and the free-text branch of tools when response_format set)
    name: str | None = None
    pattern: str | None = None
    choices: tuple[str, ...] = ()
    grammar: str | None = None  # Lark text (GBNF is converted on parse)
    lenient: bool = False
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: str = "auto"  # "auto" | "required" | "named"
    tool_name: str | None = None
    parallel_tool_calls: bool = True

    @property
    def key(self) -> str:
        """sha256 of the canonical JSON of everything that shapes the grammar."""
        body = {
            "kind": self.kind,
            "schema": self.schema,
            "pattern": self.pattern,
            "choices": self.choices,
            "grammar": self.grammar,
            "lenient": self.lenient,
            "tools": [[t.name, t.parameters] for t in self.tools],
            "tool_choice": self.tool_choice,
            "tool_name": self.tool_name,
            "parallel": self.parallel_tool_calls,
        }
        raw = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(raw.encode()).hexdigest()

    @property
    def is_json(self) -> bool:
        return self.kind in ("json_object", "json_schema")


def _obj(value: Any, param: str) -> dict:
    if not isinstance(value, dict):
        raise InvalidRequestError(f"{param} must be an object", param=param)
    return value


def _response_format(rf: dict) -> StructuredSpec | None:
    kind = rf.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return StructuredSpec("json_object", "response_format", schema={"type": "object"})
    if kind == "json_schema":
        js = _obj(rf.get("json_schema"), "response_format.json_schema")
        if "schema" not in js:
            raise InvalidRequestError(
                "response_format.json_schema.schema is required",
                param="response_format.json_schema.schema",
            )
        name = js.get("name")
        if name is not None and (not isinstance(name, str) or not _NAME.match(name)):
            raise InvalidRequestError(
                "response_format.json_schema.name must match [A-Za-z0-9_.-]{1,64}",
                param="response_format.json_schema.name",
            )
        return StructuredSpec(
            "json_schema",
            "response_format.json_schema.schema",
            schema=js["schema"],
            name=name,
            lenient=js.get("lenient") is True,
        )
    raise InvalidRequestError(
        f"response_format.type must be text, json_object or json_schema, got {kind!r}",
        param="response_format.type",
    )


def _structured_outputs(so: dict) -> StructuredSpec | None:
    p = "structured_outputs"
    lenient = so.get("lenient") is True
    given = [
        k for k in ("json", "regex", "choice", "grammar", "json_object") if so.get(k) is not None
    ]
    if len(given) > 1:
        raise InvalidRequestError(
            f"{p}: give only one of json, regex, choice, grammar; got {given}", param=p
        )
    if not given:
        return None
    key = given[0]
    value = so[key]
    if key == "json_object":
        return StructuredSpec("json_object", f"{p}.json_object", schema={"type": "object"})
    if key == "json":
        schema = json.loads(value) if isinstance(value, str) else value
        return StructuredSpec("json_schema", f"{p}.json", schema=schema, lenient=lenient)
    if key == "regex":
        if not isinstance(value, str) or not value or len(value) > MAX_PATTERN_CHARS:
            raise InvalidRequestError(
                f"{p}.regex must be a non-empty string of at most {MAX_PATTERN_CHARS} characters",
                param=f"{p}.regex",
            )
        return StructuredSpec("regex", f"{p}.regex", pattern=value)
    if key == "choice":
        ok = isinstance(value, list) and 0 < len(value) <= MAX_CHOICES
        if not ok or not all(isinstance(c, str) and c for c in value):
            raise InvalidRequestError(
                f"{p}.choice must be a list of 1 to {MAX_CHOICES} non-empty strings",
                param=f"{p}.choice",
            )
        return StructuredSpec("choice", f"{p}.choice", choices=tuple(value))
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_GRAMMAR_CHARS:
        raise InvalidRequestError(
            f"{p}.grammar must be a Lark or GBNF grammar of at most {MAX_GRAMMAR_CHARS} characters",
            param=f"{p}.grammar",
        )
    return StructuredSpec("grammar", f"{p}.grammar", grammar=value)


def _tools(
    tools: list, tool_choice: Any, parallel: Any
) -> tuple[tuple[ToolSpec, ...], str, str | None]:
    if not isinstance(tools, list) or not tools or len(tools) > MAX_TOOLS:
        raise InvalidRequestError(f"tools must be a list of 1 to {MAX_TOOLS} tools", param="tools")
    specs: list[ToolSpec] = []
    for i, tool in enumerate(tools):
        t = _obj(tool, f"tools[{i}]")
        if t.get("type", "function") != "function":
            raise InvalidRequestError(
                f"tools[{i}].type must be 'function'", param=f"tools[{i}].type"
            )
        fn = _obj(t.get("function"), f"tools[{i}].function")
        name = fn.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise InvalidRequestError(
                f"tools[{i}].function.name must match [A-Za-z0-9_.-]{{1,64}}",
                param=f"tools[{i}].function.name",
            )
        params = fn.get("parameters", {"type": "object", "properties": {}})
        specs.append(ToolSpec(name, params, str(fn.get("description") or "")))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise InvalidRequestError("tools: function names must be unique", param="tools")
    choice, named = _tool_choice(tool_choice, names)
    return tuple(specs), choice, named


def _tool_choice(tool_choice: Any, names: list[str]) -> tuple[str, str | None]:
    if tool_choice is None or tool_choice in ("auto", "required", "none"):
        return tool_choice or "auto", None
    if isinstance(tool_choice, dict) and tool_choice.get("type") == "function":
        name = (tool_choice.get("function") or {}).get("name")
        if name not in names:
            raise InvalidRequestError(
                f"tool_choice names function {name!r}, which is not in tools", param="tool_choice"
            )
        return "named", name
    raise InvalidRequestError(
        "tool_choice must be none, auto, required or "
        '{"type": "function", "function": {"name": ...}}',
        param="tool_choice",
    )


def build_spec(
    response_format: Any = None,
    structured_outputs: Any = None,
    tools: Any = None,
    tool_choice: Any = None,
    parallel_tool_calls: Any = None,
) -> StructuredSpec | None:
    """The request's constraint, or None. Raises ``InvalidRequestError`` on malformed fields."""
    base = None
    if response_format is not None:
        base = _response_format(_obj(response_format, "response_format"))
    if structured_outputs is not None:
        extra = _structured_outputs(_obj(structured_outputs, "structured_outputs"))
        if extra is not None and base is not None:
            raise InvalidRequestError(
                "give either response_format or structured_outputs, not both",
                param="structured_outputs",
            )
        base = base or extra
    if parallel_tool_calls is not None and not isinstance(parallel_tool_calls, bool):
        raise InvalidRequestError(
            "parallel_tool_calls must be a boolean", param="parallel_tool_calls"
        )
    if tools is None:
        if tool_choice not in (None, "none", "auto"):
            raise InvalidRequestError("tool_choice needs tools", param="tool_choice")
        return base
    specs, choice, named = _tools(tools, tool_choice, parallel_tool_calls)
    if choice == "none":
        return base
    if base is not None and not base.is_json:
        raise InvalidRequestError(
            "tools combine only with a JSON response_format", param="structured_outputs"
        )
    return StructuredSpec(
        "tools",
        "tools",
        schema=base.schema if base else None,
        lenient=bool(base and base.lenient),
        tools=specs,
        tool_choice=choice,
        tool_name=named,
        parallel_tool_calls=parallel_tool_calls is not False,
    )
