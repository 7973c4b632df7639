"""Structured output on the wire: how a constrained choice's outcome looks in OpenAI's shapes.

The engine (``engine.grammar``) compiles and enforces; the request fields become a spec in
``server.convert.spec_of``. Here, for ``server.mappers``: non-streaming choices get
``message.tool_calls`` / ``content`` and a ``schema_report`` field; streamed tool calls become
OpenAI ``delta.tool_calls`` pieces (the first piece of each call carries id and name, later pieces
slices of its arguments), and the finishing chunk carries the ``schema_report``.
"""

from __future__ import annotations

import msgspec
from msgspec import UNSET, UnsetType

from engine import Outcome, StructuredSpec, ToolDelta, ToolStreamParser
from server.wire import (
    ChatDelta,
    FunctionDelta,
    SchemaReport,
    ToolCall,
    ToolCallDelta,
    ToolCallFunction,
)


def schema_report(outcome: Outcome | None) -> SchemaReport | UnsetType:
    """The ``schema_report`` of a finished constrained choice (UNSET, left out, otherwise)."""
    if outcome is None:
        return UNSET
    return msgspec.convert(outcome.report, SchemaReport, from_attributes=True)


def tool_calls(outcome: Outcome | None) -> list[ToolCall]:
    """The calls parsed from a finished tools-constrained choice (none: the answer is text)."""
    if outcome is None:
        return []
    return [
        ToolCall(id=c.id, type="function", function=ToolCallFunction(c.name, c.arguments))
        for c in outcome.tool_calls
    ]


def _tool_delta(d: ToolDelta) -> ChatDelta:
    if d.content:
        return ChatDelta(content=d.content)
    if d.id is not None:
        piece = ToolCallDelta(
            index=d.index,
            id=d.id,
            type="function",
            function=FunctionDelta(name=d.name or "", arguments=""),
        )
    else:
        piece = ToolCallDelta(index=d.index, function=FunctionDelta(arguments=d.arguments))
    return ChatDelta(tool_calls=[piece])


class ChatStreamShaper:
    """Per-request: turns each choice's streamed text into OpenAI chat deltas."""

    def __init__(self, spec: StructuredSpec | None) -> None:
        self.tools = spec is not None and spec.kind == "tools"
        self._parsers: dict[int, ToolStreamParser] = {}

    def deltas(self, index: int, text: str, final: bool) -> list[ChatDelta]:
        """Chat ``delta`` objects for new ``text`` of choice ``index``."""
        if not self.tools:
            return [ChatDelta(content=text)] if text else []
        parser = self._parsers.setdefault(index, ToolStreamParser())
        pieces = parser.feed(text) if text else []
        if final:
            pieces += parser.finish()
        return [_tool_delta(d) for d in pieces]
