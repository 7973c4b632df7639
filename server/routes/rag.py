"""The RAG hook of ``/v1/chat/completions`` and the ``rag/<collection>`` model ids.

A chat request is retrieval-augmented when it carries a ``retrieval`` object (``collections``,
``top_k``, ``mode``, ``min_score``, ``filter``) or names a model ``rag/<collection>``. Then:
``rag_begin`` retrieves and either refuses (``rag_refusal``: a fixed message, a typed ``refusal``
object, no generation) or swaps in the augmented messages; the handler generates as usual; the
response gets ``citations``, ``confidence``, ``session_id`` and ``retrieval`` stats
(``rag_attach``, or the last SSE chunk before ``[DONE]`` via ``rag_tap`` + ``rag_stream``).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from litestar import Request
from litestar.response import Stream

from engine.errors import InvalidRequestError
from engine.rag import RagPlan, RetrievalOptions
from engine.types import ChoiceDelta
from models.chat_templates import ChatMessage
from server.auth import tenant_of
from server.state import services

RAG_PREFIX = "rag/"
_OPTION_KEYS = {"collections", "collection", "top_k", "mode", "min_score", "filter"}
_SSE_DONE = b"data: [DONE]\n\n"


@dataclass
class RagTurn:
    plan: RagPlan
    rag: Any  # engine.rag.RagService
    text: list[str] = field(default_factory=list)


def chat_model(engine: Any, model: str) -> str:
    """The generator's model id for a request: ``rag/<collection>`` means the engine's model."""
    return engine.card.id if model.startswith(RAG_PREFIX) else model


def _options(model: str, raw: dict[str, Any] | None) -> RetrievalOptions:
    raw = dict(raw or {})
    unknown = set(raw) - _OPTION_KEYS
    if unknown:
        key = sorted(unknown)[0]
        raise InvalidRequestError(f"unknown retrieval option {key!r}", param=f"retrieval.{key}")
    names = raw.get("collections") or ([raw["collection"]] if raw.get("collection") else [])
    if model.startswith(RAG_PREFIX):
        names = [model[len(RAG_PREFIX) :], *names]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise InvalidRequestError(
            "retrieval.collections must be a non-empty list of collection names",
            param="retrieval.collections",
        )
    top_k, min_score, mode = raw.get("top_k"), raw.get("min_score"), raw.get("mode", "hybrid")
    if min_score is not None and (
        isinstance(min_score, bool) or not isinstance(min_score, int | float)
    ):
        raise InvalidRequestError(
            "retrieval.min_score must be a number", param="retrieval.min_score"
        )
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int)):
        raise InvalidRequestError("retrieval.top_k must be an integer", param="retrieval.top_k")
    if not isinstance(mode, str):
        raise InvalidRequestError("retrieval.mode must be a string", param="retrieval.mode")
    flt = raw.get("filter")
    if flt is not None and not isinstance(flt, dict):
        raise InvalidRequestError("retrieval.filter must be an object", param="retrieval.filter")
    return RetrievalOptions(list(dict.fromkeys(names)), top_k, mode, min_score, flt)


async def rag_begin(
    request: Request,
    model: str,
    retrieval: dict[str, Any] | None,
    session_id: str | None,
    messages: list[ChatMessage],
) -> RagTurn | None:
    """None for a plain chat request; else the retrieval done and the prompt planned."""
    if retrieval is None and not model.startswith(RAG_PREFIX):
        if session_id is not None:
            raise InvalidRequestError("session_id needs retrieval", param="session_id")
        return None
    rag = services(request).rag
    options = _options(model, retrieval)
    plan = await rag.prepare(tenant_of(request), messages, options, session_id)
    return RagTurn(plan, rag)


def _extra(turn: RagTurn, answer: Any) -> dict[str, Any]:
    plan = turn.plan
    return {
        "citations": [c.as_dict() for c in answer.citations],
        "confidence": answer.confidence,
        "refusal": answer.refusal.as_dict() if answer.refusal else None,
        "session_id": plan.session_id,
        "retrieval": {
            "collections": plan.options.collections,
            "mode": plan.options.mode,
            "chunks_retrieved": len(plan.retrieved),
            "chunks_in_context": len(plan.blocks),
            "chunks_dropped": plan.dropped,
            "best_score": round(plan.best_score, 4),
        },
    }


async def rag_attach(turn: RagTurn, body: dict[str, Any]) -> dict[str, Any]:
    """Add citations etc. to a collected chat.completion body (citations from choice 0)."""
    text = body["choices"][0]["message"]["content"] if body.get("choices") else ""
    answer = await turn.rag.finish(turn.plan, text)
    return body | _extra(turn, answer)


async def rag_refusal(turn: RagTurn, rid: str, model: str, stream: bool) -> Any:
    """The answer when evidence is too weak: no generation, a fixed message, a typed refusal."""
    answer = await turn.rag.finish(turn.plan, None)
    assert answer.refusal is not None
    message = answer.refusal.message
    created = int(time.time())
    extra = _extra(turn, answer)
    if not stream:
        return {
            "id": rid,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": message, "refusal": message},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        } | extra
    import msgspec

    def chunk(delta: dict[str, Any], finish: str | None, more: dict[str, Any]) -> bytes:
        body = {
            "id": rid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        } | more
        return b"data: " + msgspec.json.encode(body) + b"\n\n"

    async def events() -> AsyncIterator[bytes]:
        yield chunk({"role": "assistant", "content": message, "refusal": message}, None, {})
        yield chunk({}, "stop", extra)
        yield _SSE_DONE

    return Stream(content=events(), media_type="text/event-stream")


async def rag_tap(turn: RagTurn, events: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """Pass generation events through, keeping choice 0's text for the citations."""
    async for event in events:
        if isinstance(event, ChoiceDelta) and event.index == 0:
            turn.text.append(event.text)
        yield event


async def rag_stream(
    turn: RagTurn, rid: str, model: str, chunks: AsyncIterator[bytes]
) -> AsyncIterator[bytes]:
    """Forward SSE chunks; just before ``[DONE]``, one chunk with no choices and the citations."""
    import msgspec

    async for data in chunks:
        if data == _SSE_DONE:
            answer = await turn.rag.finish(turn.plan, "".join(turn.text))
            body = {
                "id": rid,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
                "choices": [],
            } | _extra(turn, answer)
            yield b"data: " + msgspec.json.encode(body) + b"\n\n"
        yield data


async def rag_model_entries(request: Request, created: int) -> list[dict[str, Any]]:
    """``rag/<collection>`` for each of the caller's collections."""
    cols = await services(request).documents.list_collections(tenant_of(request))
    return [
        {
            "id": f"{RAG_PREFIX}{c.name}",
            "object": "model",
            "created": created,
            "owned_by": "hearth",
            "capabilities": ["chat", "rag"],
            "collection": c.name,
        }
        for c in cols
    ]
