"""Engine events → OpenAI responses: one mapper per API, each owning the request's metrics.

A handler builds the engine call, then ``respond(request, mapper, events, stream=...)``:

- ``metered`` wraps the events once per request: it records time to first token and inter-token
  latency from the deltas' token ids, and on exit the status (200, the error's status, or 500)
  and the usage summed over every ``GenerationDone``;
- streaming pulls the first event before answering 200 (so a request error is still a proper 4xx),
  then the mapper's ``chunks`` go out as SSE ending ``data: [DONE]``; a client that disconnects
  closes the iterator, whose ``finally`` in the engine aborts the sequences;
- collecting runs the mapper's ``collect`` until it returns, cancelled if the client goes away.

RAG turns (``engine.RagService.generate``) end with ``RagDone`` (citations, confidence and
retrieval figures appended to the body, or a last chunk before ``[DONE]``) or are one ``Refusal``
(a fixed message, a typed ``refusal`` object, nothing generated).
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any, Protocol, TypeVar

from litestar import Request, Response
from litestar.response import Stream

from engine import (
    ChoiceDelta,
    GenerateRequest,
    GenerationDone,
    HearthError,
    RagDone,
    Refusal,
    StructuredSpec,
    Usage,
)
from server import convert
from server.metrics import RequestTimer
from server.routes.common import SSE_DONE, sse, sse_stream, until_disconnect
from server.structured import ChatStreamShaper
from server.wire import ChatCompletionRequest, CompletionRequest

T = TypeVar("T")


class Mapper(Protocol[T]):
    async def collect(self, events: AsyncIterator[T]) -> dict[str, Any]: ...

    def chunks(self, events: AsyncIterator[T]) -> AsyncGenerator[bytes, None]: ...


def _event_of(item: Any) -> Any:
    """Completions merge several prompts' events as ``(prompt index, event)``."""
    return item[1] if isinstance(item, tuple) else item


async def metered(
    timer: RequestTimer,
    events: AsyncGenerator[T, None],
    on_usage: Callable[[Usage], None] | None = None,
) -> AsyncGenerator[T, None]:
    """Pass ``events`` through, recording the request's timings, status and usage; ``on_usage``
    gets the summed usage once at the end (charging the tenant, recording it)."""
    usage = Usage(0, 0)
    status = 500
    try:
        async for item in events:
            event = _event_of(item)
            if isinstance(event, ChoiceDelta) and event.token_ids:
                timer.tokens(len(event.token_ids))
            elif isinstance(event, GenerationDone):
                usage = Usage(
                    usage.prompt_tokens + event.usage.prompt_tokens,
                    usage.completion_tokens + event.usage.completion_tokens,
                )
            yield item
        status = 200
    except HearthError as exc:
        status = exc.status
        raise
    finally:
        timer.finish(status, usage.prompt_tokens, usage.completion_tokens)
        if on_usage is not None:
            on_usage(usage)
        await events.aclose()


async def respond(
    request: Request, mapper: Mapper[T], events: AsyncGenerator[T, None], *, stream: bool
) -> Response[dict[str, Any]] | Stream:
    """SSE (first event pulled before the 200) or the collected body (cancelled on disconnect)."""
    if not stream:
        return Response(await until_disconnect(request, mapper.collect(events)))
    first = await events.__anext__()
    return sse_stream(mapper.chunks(_prepend(first, events)))


async def _prepend(first: T, rest: AsyncGenerator[T, None]) -> AsyncGenerator[T, None]:
    try:
        yield first
        async for item in rest:
            yield item
    finally:
        await rest.aclose()


# ---- chat -------------------------------------------------------------------------------------


def rag_extra(end: RagDone | Refusal) -> dict[str, Any]:
    """The fields a RAG turn adds to its response (or to its last chunk)."""
    if isinstance(end, Refusal):
        citations, confidence, refusal = [], 0.0, end.as_dict()
    else:
        citations, confidence, refusal = [c.as_dict() for c in end.citations], end.confidence, None
    return {
        "citations": citations,
        "confidence": confidence,
        "refusal": refusal,
        "session_id": end.session_id,
        "retrieval": end.retrieval.as_dict() if end.retrieval else None,
    }


class ChatMapper:
    """Chat events (engine or RAG) → ``chat.completion`` or ``chat.completion.chunk``s."""

    def __init__(self, req: ChatCompletionRequest, generate: GenerateRequest) -> None:
        self.rid = generate.request_id
        self.model = req.model  # as the client named it (``rag/<collection>`` included)
        self.n = req.n
        self.logprobs = req.logprobs
        self.include_usage = bool(req.stream_options and req.stream_options.include_usage)
        self.spec: StructuredSpec | None = generate.response_format

    async def collect(self, events: AsyncIterator[Any]) -> dict[str, Any]:
        choices = [convert.ChoiceAccumulator(i) for i in range(self.n)]
        done: GenerationDone | None = None
        async for event in events:
            if isinstance(event, ChoiceDelta):
                choices[event.index].add(event)
            elif isinstance(event, GenerationDone):
                done = event
            elif isinstance(event, Refusal):
                return self._refusal_body(event)
            elif isinstance(event, RagDone):
                assert done is not None  # RagDone follows the generation's GenerationDone
                return convert.chat_response(
                    self.rid, self.model, choices, done, self.logprobs, rag_extra(event)
                )
        assert done is not None  # an engine generation always ends with GenerationDone
        return convert.chat_response(self.rid, self.model, choices, done, self.logprobs)

    def _refusal_body(self, refusal: Refusal) -> dict[str, Any]:
        message = {"role": "assistant", "content": refusal.message, "refusal": refusal.message}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
        body = {
            "id": self.rid,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": [choice],
            "usage": convert.usage_dict(Usage(0, 0)),
        }
        return body | rag_extra(refusal)

    async def chunks(self, events: AsyncIterator[Any]) -> AsyncGenerator[bytes, None]:
        created = int(time.time())
        shaper = ChatStreamShaper(self.spec)
        usage = Usage(0, 0)
        rag_end: RagDone | None = None
        opened = False
        async for event in events:
            if isinstance(event, Refusal):
                for chunk in self._refusal_chunks(event, created):
                    yield chunk
                return
            if not opened:  # the opening role chunk of every choice
                opened = True
                for i in range(self.n):
                    opening = {"role": "assistant", "content": ""}
                    yield sse(convert.chat_chunk(self.rid, self.model, created, opening, i))
            if isinstance(event, GenerationDone):
                usage = event.usage
            elif isinstance(event, RagDone):
                rag_end = event
            else:
                for chunk in self._delta_chunks(event, shaper, created):
                    yield chunk
        if self.include_usage:
            chunk = convert.chat_chunk(self.rid, self.model, created, {}, 0)
            chunk["choices"] = []
            chunk["usage"] = convert.usage_dict(usage)
            yield sse(chunk)
        if rag_end is not None:  # citations: one chunk with no choices, just before [DONE]
            chunk = convert.chat_chunk(self.rid, self.model, int(time.time()), {}, 0)
            chunk["choices"] = []
            yield sse(chunk | rag_extra(rag_end))
        yield SSE_DONE

    def _delta_chunks(
        self, event: ChoiceDelta, shaper: ChatStreamShaper, created: int
    ) -> list[bytes]:
        out = []
        final = event.finish_reason is not None
        deltas = shaper.deltas(event.index, event.text, final)
        if event.logprobs and not deltas:
            deltas = [{"content": ""}]
        for j, delta in enumerate(deltas):
            lp = event.logprobs if j == 0 else None
            chunk = convert.chat_chunk(
                self.rid, self.model, created, delta, event.index, logprobs=lp
            )
            out.append(sse(chunk))
        if final:
            reason = str(event.finish_reason)
            chunk = convert.chat_chunk(self.rid, self.model, created, {}, event.index, reason)
            chunk["choices"][0].update(shaper.finish_extra(event.structured))
            out.append(sse(chunk))
        return out

    def _refusal_chunks(self, refusal: Refusal, created: int) -> list[bytes]:
        message = {"role": "assistant", "content": refusal.message, "refusal": refusal.message}
        opening = convert.chat_chunk(self.rid, self.model, created, message, 0)
        closing = convert.chat_chunk(self.rid, self.model, created, {}, 0, "stop")
        return [sse(opening), sse(closing | rag_extra(refusal)), SSE_DONE]


# ---- completions ------------------------------------------------------------------------------


class CompletionMapper:
    """Completions events, ``(prompt index, event)`` over several prompts → ``text_completion``."""

    def __init__(
        self,
        req: CompletionRequest,
        generates: list[GenerateRequest],
        detokenize: Callable[[list[int]], str],
    ) -> None:
        self.req = req
        self.rid = generates[0].request_id.rsplit("-", 1)[0]
        self.generates = generates
        self.detokenize = detokenize
        self.include_usage = bool(req.stream_options and req.stream_options.include_usage)

    async def collect(self, events: AsyncIterator[tuple[int, Any]]) -> dict[str, Any]:
        req = self.req
        accs = [[convert.ChoiceAccumulator(i) for i in range(req.n)] for _ in self.generates]
        dones: list[GenerationDone | None] = [None] * len(self.generates)
        async for k, event in events:
            if isinstance(event, ChoiceDelta):
                accs[k][event.index].add(event)
            else:
                dones[k] = event
        choices = []
        for k, done in enumerate(dones):
            echo = done.prompt_text if req.echo and done else ""
            choices += convert.completion_response(
                self.rid, req.model, accs[k], done, echo, req.logprobs is not None,
                index_offset=k * req.n,
            )  # fmt: skip
        return {
            "id": self.rid,
            "object": "text_completion",
            "created": int(time.time()),
            "model": req.model,
            "choices": choices,
            "usage": convert.usage_dict(_sum_usage(dones)),
        }

    async def chunks(self, events: AsyncIterator[tuple[int, Any]]) -> AsyncGenerator[bytes, None]:
        req, rid = self.req, self.rid
        created = int(time.time())
        dones: list[GenerationDone | None] = [None] * len(self.generates)
        if req.echo:
            for k, g in enumerate(self.generates):
                text = g.prompt if g.prompt is not None else self.detokenize(list(g.prompt_tokens))
                for i in range(req.n):
                    index = k * req.n + i
                    yield sse(convert.completion_chunk(rid, req.model, created, index, text))
        async for k, event in events:
            if isinstance(event, GenerationDone):
                dones[k] = event
                continue
            lp = None
            if event.logprobs and req.logprobs is not None:
                lp = convert.completion_logprobs(event.logprobs)
            index = k * req.n + event.index
            reason = str(event.finish_reason) if event.finish_reason is not None else None
            if event.text or lp or reason:
                chunk = convert.completion_chunk(
                    rid, req.model, created, index, event.text, reason, lp
                )
                chunk["choices"][0].update(ChatStreamShaper.finish_extra(event.structured))
                yield sse(chunk)
        if self.include_usage:
            usage = convert.usage_dict(_sum_usage(dones))
            yield sse(
                {
                    "id": rid,
                    "object": "text_completion",
                    "created": created,
                    "model": req.model,
                    "choices": [],
                    "usage": usage,
                }
            )
        yield SSE_DONE


def _sum_usage(dones: list[GenerationDone | None]) -> Usage:
    done = [d for d in dones if d is not None]
    return Usage(
        sum(d.usage.prompt_tokens for d in done),
        sum(d.usage.completion_tokens for d in done),
        cached=bool(done) and all(d.usage.cached for d in done),
    )
