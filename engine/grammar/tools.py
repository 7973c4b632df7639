"""Tool calls: the grammar that constrains them, the prompt that describes them, the parsers.

Wire format the model produces (enforced by the grammar, no whitespace padding):
``<tool_call>{"name":"NAME","arguments":{...}}`` repeated once per call. With ``tool_choice=auto``
the output is either free text that does not start with ``<`` or a run of calls.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from engine.grammar.schema_check import grammar_schema
from engine.grammar.spec import StructuredSpec
from engine.types import ToolCall

MARKER = "<tool_call>"
_HEADER = re.compile(r'^\{"name":"((?:[^"\\]|\\.)*)","arguments":')
JSON_OPTIONS = {"whitespace_flexible": False, "coerce_one_of": True}


def call_schema(name: str, parameters: Any, lenient: bool) -> dict:
    """The JSON Schema of one call object of one function."""
    return {
        "type": "object",
        "properties": {"name": {"const": name}, "arguments": grammar_schema(parameters)},
        "required": ["name", "arguments"],
        "additionalProperties": False,
        "x-guidance": {**JSON_OPTIONS, "lenient": lenient},
    }


def _json_rule(schema: Any) -> str:
    return "%json " + json.dumps(schema, separators=(",", ":"))


def tools_lark(spec: StructuredSpec, lenient: bool) -> str:
    """Lark grammar (llguidance dialect) for ``spec`` (kind ``tools``)."""
    tools = spec.tools
    if spec.tool_choice == "named":
        tools = tuple(t for t in tools if t.name == spec.tool_name)
    alts = [call_schema(t.name, t.parameters, lenient) for t in tools]
    one = (
        alts[0]
        if len(alts) == 1
        else {"anyOf": alts, "x-guidance": {**JSON_OPTIONS, "lenient": lenient}}
    )
    repeat = "+" if spec.parallel_tool_calls and spec.tool_choice != "named" else ""
    lines = [f"calls: call{repeat}", f'call: "{MARKER}" call_json', f"call_json: {_json_rule(one)}"]
    if spec.tool_choice in ("required", "named"):
        lines.insert(0, "start: calls")
    elif spec.schema is not None:
        schema = grammar_schema(spec.schema) if isinstance(spec.schema, dict) else {}
        opts = {**JSON_OPTIONS, "lenient": lenient}
        lines.insert(0, "start: calls | content")
        lines.append(f"content: {_json_rule({**schema, 'x-guidance': opts})}")
    else:
        lines.insert(0, "start: calls | content")
        lines += ["content: TEXT?", r"TEXT: /[^<][\s\S]*/"]
    return "\n".join(lines)


def tools_prompt(spec: StructuredSpec) -> str:
    """System text that tells the model which functions exist and how to call them."""
    listing = [
        {"name": t.name, "description": t.description, "parameters": t.parameters}
        for t in spec.tools
    ]
    text = (
        "You can call these functions:\n"
        + json.dumps(listing, ensure_ascii=False)
        + f'\nTo call one, answer with {MARKER}{{"name": NAME, "arguments": {{...}}}}.'
    )
    if spec.tool_choice == "required":
        text += " You must call at least one function."
    elif spec.tool_choice == "named":
        text += f" You must call {spec.tool_name}."
    if not spec.parallel_tool_calls or spec.tool_choice == "named":
        text += " Call one function only."
    return text


def template_tools(spec: StructuredSpec) -> tuple[dict[str, Any], ...]:
    """The request's tools in the OpenAI shape a model's chat template reads (``tools``)."""
    return tuple(
        {
            "type": "function",
            "function": {
                "name": t.name,
                "description": t.description,
                "parameters": t.parameters,
            },
        }
        for t in spec.tools
    )


def new_call_id() -> str:
    return "call_" + secrets.token_hex(12)


def parse_tool_output(text: str) -> tuple[str | None, list[ToolCall]]:
    """Splits a finished output into ``(content, tool_calls)``; content is None when calls exist.

    Raises ``ValueError`` when the text starts like calls but a call is not valid JSON (possible
    only when generation was cut off).
    """
    if not text.startswith(MARKER):
        return text, []
    calls = []
    for chunk in text.split(MARKER)[1:]:
        obj = json.loads(chunk)
        args = json.dumps(obj["arguments"], ensure_ascii=False, separators=(",", ":"))
        calls.append(ToolCall(new_call_id(), obj["name"], args))
    return None, calls


@dataclass(frozen=True)
class ToolDelta:
    """One streamed piece: content text, the start of call ``index``, or a slice of its args."""

    content: str = ""
    index: int = -1
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass
class ToolStreamParser:
    """Turns streamed output text into ``ToolDelta``s (OpenAI's streamed ``tool_calls`` shape)."""

    mode: str = "undecided"  # undecided | text | marker | header | args
    buf: str = ""
    index: int = -1
    depth: int = 0
    in_string: bool = False
    escaped: bool = False
    calls: list[ToolCall] = field(default_factory=list)
    _args: list[str] = field(default_factory=list)

    def feed(self, text: str) -> list[ToolDelta]:
        self.buf += text
        out: list[ToolDelta] = []
        progressed = True
        while progressed and self.buf:
            progressed = self._step(out)
        return out

    def finish(self) -> list[ToolDelta]:
        """Flushes held-back text (a partial marker that never completed is content)."""
        out = []
        if self.mode in ("undecided", "text") and self.buf:
            out.append(ToolDelta(content=self.buf))
            self.buf = ""
        return out

    def _step(self, out: list[ToolDelta]) -> bool:
        if self.mode == "undecided":
            if self.buf.startswith(MARKER):
                self.mode = "marker"
            elif not MARKER.startswith(self.buf):
                self.mode = "text"
            else:
                return False
            return True
        if self.mode == "text":
            out.append(ToolDelta(content=self.buf))
            self.buf = ""
            return False
        if self.mode == "marker":
            if len(self.buf) < len(MARKER):
                return False
            self.buf = self.buf[len(MARKER) :]
            self.mode = "header"
            return True
        if self.mode == "header":
            return self._header(out)
        return self._arguments(out)

    def _header(self, out: list[ToolDelta]) -> bool:
        m = _HEADER.match(self.buf)
        if m is None:
            return False
        self.index += 1
        name = json.loads(f'"{m.group(1)}"')
        call_id = new_call_id()
        self.calls.append(ToolCall(call_id, name, ""))
        self._args = []
        out.append(ToolDelta(index=self.index, id=call_id, name=name))
        self.buf = self.buf[m.end() :]
        self.mode, self.depth, self.in_string, self.escaped = "args", 1, False, False
        return True

    def _arguments(self, out: list[ToolDelta]) -> bool:
        for i, ch in enumerate(self.buf):
            if self.in_string:
                if self.escaped:
                    self.escaped = False
                elif ch == "\\":
                    self.escaped = True
                elif ch == '"':
                    self.in_string = False
                continue
            if ch == '"':
                self.in_string = True
            elif ch in "{[":
                self.depth += 1
            elif ch in "}]":
                self.depth -= 1
                if self.depth == 0:  # the call object's own closing brace
                    self._emit(out, self.buf[:i])
                    last = self.calls[-1]
                    self.calls[-1] = ToolCall(last.id, last.name, "".join(self._args))
                    self.buf = self.buf[i + 1 :]
                    self.mode = "marker"
                    return True
        self._emit(out, self.buf)
        self.buf = ""
        return False

    def _emit(self, out: list[ToolDelta], piece: str) -> None:
        if piece:
            self._args.append(piece)
            out.append(ToolDelta(index=self.index, arguments=piece))
