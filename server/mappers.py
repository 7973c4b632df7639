"""Engine events → OpenAI wire structs (``server.wire``): one mapper per API, each owning the
request's metrics.

A handler builds the engine call, then ``respond(request, mapper, events, stream, on_usage)``:

- ``metered`` wraps the events once per request, under the mapper's ``endpoint``: it records
  time to first token and inter-token latency from the deltas' token ids, and on exit the status
  (200, the error's status, or 500) and the usage summed over every ``GenerationDone``, which
  goes to ``on_usage`` (``server.usage``: the tenant's ticket and the usage ledger);
- streaming pulls the first event before answering 200 (so a request error is still a proper 4xx),
  then the mapper's ``chunks`` go out as SSE ending ``data: [DONE]``; a client that disconnects
  closes the iterator, whose ``finally`` in the engine aborts the sequences;
- collecting runs the mapper's ``collect`` until it returns, cancelled if the client goes away.

RAG turns (``engine.RagService.generate``) end with ``RagDone`` (citations, confidence and
retrieval figures appended to the body, or a last chunk before ``[DONE]``) or are one ``Refusal``
(a fixed message, a typed ``refusal`` object, nothing generated).
"""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from typing import Any, Protocol, TypeVar

import msgspec
import numpy as np
from litestar import Request, Response
from litestar.response import Stream
from msgspec import UNSET

from engine import (
    ChoiceDelta,
    GenerateRequest,
    GenerationDone,
    HearthError,
    LogprobEntry,
    Outcome,
    RagDone,
    Refusal,
    RetrievalStats,
    StructuredSpec,
    Usage,
)
from server.metrics import RequestTimer
from server.routes.common import SSE_DONE, sse, sse_stream, until_disconnect
from server.state import state_of
from server.structured import ChatStreamShaper, schema_report, tool_calls
from server.wire import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatDelta,
    ChatLogprob,
    ChatLogprobs,
    Citation,
    Completion,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionUsage,
    EmbeddingEntry,
    RagRefusal,
    RetrievalFigures,
    TopLogprob,
)

T = TypeVar("T")
B = TypeVar("B", bound=msgspec.Struct)


class Mapper(Protocol[T, B]):
    endpoint: str  # the metrics label of its requests

    async def collect(self, events: AsyncIterator[T]) -> B: ...

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
    request: Request,
    mapper: Mapper[T, B],
    events: AsyncGenerator[T, None],
    stream: bool,
    on_usage: Callable[[Usage], None] | None = None,
) -> Response[B] | Stream:
    """SSE (first event pulled before the 200) or the collected body (cancelled on disconnect),
    metered once (``metered``)."""
    timer = state_of(request.app).metrics.request_timer(mapper.endpoint)
    events = metered(timer, events, on_usage)
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


# ---- pieces shared by chat and completions -----------------------------------------------------


def usage_of(usage: Usage) -> CompletionUsage:
    return CompletionUsage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
        cached=True if usage.cached else UNSET,  # answered from the exact response cache
    )


def chat_logprobs(entries: Sequence[LogprobEntry]) -> ChatLogprobs:
    return ChatLogprobs(
        [
            ChatLogprob(
                e.token,
                e.logprob,
                list(e.bytes),
                [TopLogprob(tok, lp, list(raw)) for tok, _tid, raw, lp in e.top],
            )
            for e in entries
        ]
    )


def completion_logprobs(entries: Sequence[LogprobEntry]) -> CompletionLogprobs:
    offsets, pos = [], 0
    for e in entries:
        offsets.append(pos)
        pos += len(e.token)
    return CompletionLogprobs(
        tokens=[e.token for e in entries],
        token_logprobs=[e.logprob for e in entries],
        top_logprobs=[{tok: lp for tok, _t, _b, lp in e.top} if e.top else None for e in entries],
        text_offset=offsets,
    )


class ChoiceAccumulator:
    """Collects one choice's deltas for a non-streaming response."""

    def __init__(self, index: int):
        self.index = index
        self.text: list[str] = []
        self.logprobs: list[LogprobEntry] = []
        self.finish_reason: str | None = None
        self.structured: Outcome | None = None  # how a constrained choice fared

    def add(self, delta: ChoiceDelta) -> None:
        self.text.append(delta.text)
        if delta.structured is not None:
            self.structured = delta.structured
        if delta.logprobs:
            self.logprobs.extend(delta.logprobs)
        if delta.finish_reason is not None:
            self.finish_reason = str(delta.finish_reason)


def _sum_usage(dones: list[GenerationDone | None]) -> Usage:
    done = [d for d in dones if d is not None]
    return Usage(
        sum(d.usage.prompt_tokens for d in done),
        sum(d.usage.completion_tokens for d in done),
        cached=bool(done) and all(d.usage.cached for d in done),
    )


# ---- chat -------------------------------------------------------------------------------------


class RagFields(msgspec.Struct, kw_only=True):
    """The fields a RAG turn adds to its response (or to its last chunk)."""

    citations: list[Citation]
    confidence: float
    refusal: RagRefusal | None
    session_id: str | None
    retrieval: RetrievalFigures | None

    @classmethod
    def of(cls, end: RagDone | Refusal) -> RagFields:
        if isinstance(end, Refusal):
            refusal = RagRefusal(
                reason=end.reason,
                best_score=end.best_score,
                min_score=end.min_score,
                message=end.message,
            )
            citations, confidence = [], 0.0
        else:
            refusal, confidence = None, end.confidence
            citations = [msgspec.convert(c, Citation, from_attributes=True) for c in end.citations]
        return cls(
            citations=citations,
            confidence=confidence,
            refusal=refusal,
            session_id=end.session_id,
            retrieval=_figures(end.retrieval),
        )

    def fields(self) -> dict[str, Any]:
        """As keyword arguments of ``ChatCompletion`` / ``ChatCompletionChunk``."""
        return msgspec.structs.asdict(self)


def _figures(stats: RetrievalStats | None) -> RetrievalFigures | None:
    return None if stats is None else msgspec.convert(stats, RetrievalFigures, from_attributes=True)


class ChatMapper:
    """Chat events (engine or RAG) → ``ChatCompletion`` or ``ChatCompletionChunk``s."""

    endpoint = "chat"

    def __init__(self, req: ChatCompletionRequest, generate: GenerateRequest) -> None:
        self.rid = generate.request_id
        self.model = req.model  # as the client named it (``rag/<collection>`` included)
        self.n = req.n
        self.logprobs = req.logprobs
        self.include_usage = bool(req.stream_options and req.stream_options.include_usage)
        self.spec: StructuredSpec | None = generate.response_format

    async def collect(self, events: AsyncIterator[Any]) -> ChatCompletion:
        choices = [ChoiceAccumulator(i) for i in range(self.n)]
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
                return self._body(choices, done, RagFields.of(event))
        assert done is not None  # an engine generation always ends with GenerationDone
        return self._body(choices, done)

    def _body(
        self, choices: list[ChoiceAccumulator], done: GenerationDone, rag: RagFields | None = None
    ) -> ChatCompletion:
        return ChatCompletion(
            id=self.rid,
            created=int(time.time()),
            model=self.model,
            choices=[self._choice(c) for c in choices],
            usage=usage_of(done.usage),
            **(rag.fields() if rag else {}),
        )

    def _choice(self, acc: ChoiceAccumulator) -> ChatChoice:
        outcome = acc.structured
        message = AssistantMessage(content="".join(acc.text))
        calls = tool_calls(outcome)
        if outcome is not None and calls:
            message = AssistantMessage(content=outcome.content, tool_calls=calls)
        return ChatChoice(
            index=acc.index,
            message=message,
            logprobs=chat_logprobs(acc.logprobs) if self.logprobs else None,
            finish_reason=acc.finish_reason,
            schema_report=schema_report(outcome),
        )

    def _refusal_body(self, refusal: Refusal) -> ChatCompletion:
        message = AssistantMessage(content=refusal.message, refusal=refusal.message)
        choice = ChatChoice(index=0, message=message, logprobs=None, finish_reason="stop")
        return ChatCompletion(
            id=self.rid,
            created=int(time.time()),
            model=self.model,
            choices=[choice],
            usage=usage_of(Usage(0, 0)),
            **RagFields.of(refusal).fields(),
        )

    def _chunk(self, created: int, choices: list[ChatChunkChoice], **extra: Any) -> bytes:
        return sse(
            ChatCompletionChunk(
                id=self.rid, created=created, model=self.model, choices=choices, **extra
            )
        )

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
                    opening = ChatDelta(role="assistant", content="")
                    yield self._chunk(created, [ChatChunkChoice(index=i, delta=opening)])
            if isinstance(event, GenerationDone):
                usage = event.usage
            elif isinstance(event, RagDone):
                rag_end = event
            else:
                for chunk in self._delta_chunks(event, shaper, created):
                    yield chunk
        if self.include_usage:
            yield self._chunk(created, [], usage=usage_of(usage))
        if rag_end is not None:  # citations: one chunk with no choices, just before [DONE]
            yield self._chunk(int(time.time()), [], **RagFields.of(rag_end).fields())
        yield SSE_DONE

    def _delta_chunks(
        self, event: ChoiceDelta, shaper: ChatStreamShaper, created: int
    ) -> list[bytes]:
        out = []
        final = event.finish_reason is not None
        deltas = shaper.deltas(event.index, event.text, final)
        if event.logprobs and not deltas:
            deltas = [ChatDelta(content="")]
        for j, delta in enumerate(deltas):
            lp = chat_logprobs(event.logprobs) if j == 0 and event.logprobs else None
            choice = ChatChunkChoice(index=event.index, delta=delta, logprobs=lp)
            out.append(self._chunk(created, [choice]))
        if final:
            choice = ChatChunkChoice(
                index=event.index,
                delta=ChatDelta(),
                finish_reason=str(event.finish_reason),
                schema_report=schema_report(event.structured),
            )
            out.append(self._chunk(created, [choice]))
        return out

    def _refusal_chunks(self, refusal: Refusal, created: int) -> list[bytes]:
        message = ChatDelta(role="assistant", content=refusal.message, refusal=refusal.message)
        opening = ChatChunkChoice(index=0, delta=message)
        closing = ChatChunkChoice(index=0, delta=ChatDelta(), finish_reason="stop")
        return [
            self._chunk(created, [opening]),
            self._chunk(created, [closing], **RagFields.of(refusal).fields()),
            SSE_DONE,
        ]


# ---- completions ------------------------------------------------------------------------------


class CompletionMapper:
    """Completions events, ``(prompt index, event)`` over several prompts → ``Completion``."""

    endpoint = "completions"

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

    async def collect(self, events: AsyncIterator[tuple[int, Any]]) -> Completion:
        req = self.req
        accs = [[ChoiceAccumulator(i) for i in range(req.n)] for _ in self.generates]
        dones: list[GenerationDone | None] = [None] * len(self.generates)
        async for k, event in events:
            if isinstance(event, ChoiceDelta):
                accs[k][event.index].add(event)
            else:
                dones[k] = event
        choices = [
            self._choice(acc, done, k * req.n) for k, done in enumerate(dones) for acc in accs[k]
        ]
        return Completion(
            id=self.rid,
            created=int(time.time()),
            model=req.model,
            choices=choices,
            usage=usage_of(_sum_usage(dones)),
        )

    def _choice(
        self, acc: ChoiceAccumulator, done: GenerationDone | None, offset: int
    ) -> CompletionChoice:
        want_logprobs = self.req.logprobs is not None
        echo = done.prompt_text if self.req.echo and done else ""
        entries = list(acc.logprobs)
        if echo and want_logprobs and done is not None and done.prompt_logprobs:
            entries = list(done.prompt_logprobs) + entries
        return CompletionChoice(
            index=acc.index + offset,
            text=echo + "".join(acc.text),
            logprobs=completion_logprobs(entries) if want_logprobs else None,
            finish_reason=acc.finish_reason,
            schema_report=schema_report(acc.structured),
        )

    def _chunk(self, created: int, choices: list[CompletionChoice], **extra: Any) -> bytes:
        return sse(
            Completion(id=self.rid, created=created, model=self.req.model, choices=choices, **extra)
        )

    async def chunks(self, events: AsyncIterator[tuple[int, Any]]) -> AsyncGenerator[bytes, None]:
        req = self.req
        created = int(time.time())
        dones: list[GenerationDone | None] = [None] * len(self.generates)
        if req.echo:
            for k, g in enumerate(self.generates):
                text = g.prompt if g.prompt is not None else self.detokenize(list(g.prompt_tokens))
                for i in range(req.n):
                    choice = CompletionChoice(
                        index=k * req.n + i, text=text, logprobs=None, finish_reason=None
                    )
                    yield self._chunk(created, [choice])
        async for k, event in events:
            if isinstance(event, GenerationDone):
                dones[k] = event
                continue
            lp = None
            if event.logprobs and req.logprobs is not None:
                lp = completion_logprobs(event.logprobs)
            reason = str(event.finish_reason) if event.finish_reason is not None else None
            if event.text or lp or reason:
                choice = CompletionChoice(
                    index=k * req.n + event.index,
                    text=event.text,
                    logprobs=lp,
                    finish_reason=reason,
                    schema_report=schema_report(event.structured),
                )
                yield self._chunk(created, [choice])
        if self.include_usage:
            yield self._chunk(created, [], usage=usage_of(_sum_usage(dones)))
        yield SSE_DONE


# ---- embeddings ---------------------------------------------------------------------------------


def embedding_data(vectors: np.ndarray, encoding_format: str) -> list[EmbeddingEntry]:
    data = []
    for i, vec in enumerate(vectors):
        if encoding_format == "base64":
            value: list[float] | str = base64.b64encode(vec.astype("<f4").tobytes()).decode("ascii")
        else:
            value = vec.tolist()
        data.append(EmbeddingEntry(i, value))
    return data
