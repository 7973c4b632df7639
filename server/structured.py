"""Structured output on the wire: request fields → engine spec, outcomes → OpenAI JSON shapes.

The engine (``engine.grammar``) compiles and enforces; this module only converts (the request
fields become a spec in ``server.convert.spec_of``). Non-streaming
choices get ``message.tool_calls`` / ``content`` and a ``schema_report`` field; streamed tool calls
become OpenAI ``delta.tool_calls`` pieces (the first piece of each call carries id and name, later
pieces slices of its arguments), and the finishing chunk carries the ``schema_report``.
"""

from __future__ import annotations

from typing import Any

from engine import Outcome, StructuredSpec, ToolDelta, ToolStreamParser


def apply_outcome(choice: dict[str, Any], outcome: Outcome | None, *, chat: bool) -> None:
    """Adds tool calls and the schema report to a finished choice object, in place."""
    if outcome is None:
        return
    choice["schema_report"] = outcome.report.to_dict()
    if chat and outcome.tool_calls:
        message = choice["message"]
        message["content"] = outcome.content
        message["tool_calls"] = [c.to_openai() for c in outcome.tool_calls]


def _tool_delta(d: ToolDelta) -> dict[str, Any]:
    if d.content:
        return {"content": d.content}
    call: dict[str, Any] = {"index": d.index}
    if d.id is not None:
        call.update(id=d.id, type="function", function={"name": d.name, "arguments": ""})
    else:
        call["function"] = {"arguments": d.arguments}
    return {"tool_calls": [call]}


class ChatStreamShaper:
    """Per-request: turns each choice's streamed text into OpenAI chat deltas."""

    def __init__(self, spec: StructuredSpec | None) -> None:
        self.tools = spec is not None and spec.kind == "tools"
        self._parsers: dict[int, ToolStreamParser] = {}

    def deltas(self, index: int, text: str, final: bool) -> list[dict[str, Any]]:
        """Chat ``delta`` objects for new ``text`` of choice ``index``."""
        if not self.tools:
            return [{"content": text}] if text else []
        parser = self._parsers.setdefault(index, ToolStreamParser())
        pieces = parser.feed(text) if text else []
        if final:
            pieces += parser.finish()
        return [_tool_delta(d) for d in pieces]

    @staticmethod
    def finish_extra(outcome: Outcome | None) -> dict[str, Any]:
        """Extra fields of the finishing chunk's choice."""
        return {} if outcome is None else {"schema_report": outcome.report.to_dict()}
