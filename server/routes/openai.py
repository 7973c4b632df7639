"""OpenAI-compatible routes: /v1/models, /v1/completions, /v1/chat/completions, /v1/embeddings."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from litestar import Request, get, post

from engine import Engine
from engine.errors import InvalidRequestError
from engine.types import ChoiceDelta, GenerateRequest, GenerationDone, Usage
from server import convert, structured
from server.routes.common import (
    SSE_DONE,
    engine_of,
    merge,
    read_body,
    resolve_model,
    sse,
    sse_stream,
    until_disconnect,
)
from server.routes.rag import (  # documents/RAG hook
    RAG_PREFIX,
    chat_model,
    rag_attach,
    rag_begin,
    rag_model_entries,
    rag_refusal,
    rag_stream,
    rag_tap,
)
from server.state import state_of
from server.wire import ChatCompletionRequest, CompletionRequest, EmbeddingRequest

COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for the legacy completions API


# ---- models -------------------------------------------------------------------------------


def _model_entry(model_id: str, engine: Engine, extra: dict[str, Any] | None = None) -> dict:
    entry = {
        "id": model_id,
        "object": "model",
        "created": int(engine.started_at),
        "owned_by": "hearth",
    }
    entry.update(extra or {})
    return entry


def model_entries(engine: Engine) -> list[dict[str, Any]]:
    entries = []
    for card in (engine.card, engine.embedding_card):
        entries.append(
            _model_entry(
                card.id,
                engine,
                {
                    "capabilities": list(card.capabilities),
                    "max_model_len": (
                        engine.settings.llm.max_model_len
                        if card is engine.card
                        else card.context_length
                    ),
                    "format": card.format,
                },
            )
        )
    return entries


@get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    engine = engine_of(request)
    rag_models = await rag_model_entries(request, int(engine.started_at))  # rag/<collection>
    return {"object": "list", "data": model_entries(engine) + rag_models}


@get("/v1/models/{model_id:path}")
async def get_model(request: Request, model_id: str) -> dict[str, Any]:
    engine = engine_of(request)
    wanted = model_id.lstrip("/")
    for entry in model_entries(engine):
        if entry["id"] == wanted:
            return entry
    if wanted.startswith(RAG_PREFIX):  # rag/<collection>
        for entry in await rag_model_entries(request, int(engine.started_at)):
            if entry["id"] == wanted:
                return entry
    from engine.errors import NotFoundError

    raise NotFoundError(
        f"The model {wanted!r} does not exist", param="model", code="model_not_found"
    )


# ---- structured output hook -----------------------------------------------------------------


def _response_format(engine: Engine, req: CompletionRequest | ChatCompletionRequest):
    """The request's structured-output spec (engine.grammar compiles it), or None."""
    return structured.spec_of(req)


# ---- chat completions -----------------------------------------------------------------------


@post("/v1/chat/completions", status_code=200)
async def chat_completions(request: Request) -> Any:
    engine = engine_of(request)
    req = await read_body(request, ChatCompletionRequest)
    resolve_model(engine, chat_model(engine, req.model), "chat")
    max_tokens = req.max_tokens
    if req.max_completion_tokens is not None:
        max_tokens = req.max_completion_tokens
    if req.top_logprobs is not None and not req.logprobs:
        raise InvalidRequestError("top_logprobs needs logprobs: true", param="top_logprobs")
    if req.top_logprobs is not None and not 0 <= req.top_logprobs <= convert.MAX_LOGPROBS:
        raise InvalidRequestError(
            f"top_logprobs must be between 0 and {convert.MAX_LOGPROBS}, got {req.top_logprobs}",
            param="top_logprobs",
        )
    params = convert.sampling_params(
        req,
        max_tokens=max_tokens,
        default_max_tokens=engine.settings.llm.default_max_tokens,
        max_n=engine.settings.llm.max_n,
        n_vocab=engine.n_vocab,
        logprobs=(req.top_logprobs or 0) if req.logprobs else None,
    )
    messages = convert.chat_messages(req.messages)
    rid = convert.new_id("chatcmpl")
    # Retrieval-augmented chat: refuse on weak evidence, else answer from numbered context blocks.
    rag = await rag_begin(request, req.model, req.retrieval, req.session_id, messages)
    if rag is not None and rag.plan.refusal is not None:
        return await rag_refusal(rag, rid, req.model, req.stream)
    if rag is not None:
        messages = rag.plan.messages
    gen = GenerateRequest(
        request_id=rid,
        model=chat_model(engine, req.model),
        params=params,
        messages=messages,
        n=req.n,
        response_format=_response_format(engine, req),
    )
    timer = state_of(request.app).metrics.request_timer("chat")
    events = engine.generate(gen)
    if rag is not None:
        events = rag_tap(rag, events)
    if req.stream:
        first = await _first_event(events, timer)
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        chunks = _chat_sse(
            rid,
            req.model,
            req.n,
            first,
            events,
            include_usage,
            timer,
            structured.ChatStreamShaper(gen.response_format),
        )
        return sse_stream(rag_stream(rag, rid, req.model, chunks) if rag else chunks)
    result = await until_disconnect(request, _collect(events, req.n, timer))
    choices, done = result
    body = convert.chat_response(rid, req.model, choices, done, req.logprobs)
    return await rag_attach(rag, body) if rag is not None else body


async def _first_event(events: AsyncIterator[Any], timer) -> Any:
    """Pull the first event before answering 200, so request errors become proper 4xx."""
    try:
        return await events.__anext__()
    except BaseException as exc:
        if timer is not None:
            timer.finish(getattr(exc, "status", 500), 0, 0)
        raise


async def _collect(events: AsyncIterator[Any], n: int, timer):
    choices = [convert.ChoiceAccumulator(i) for i in range(n)]
    done = None
    status = 500
    try:
        async for event in events:
            if isinstance(event, ChoiceDelta):
                choices[event.index].add(event)
                if timer is not None and event.token_ids:
                    timer.tokens(len(event.token_ids))
            elif isinstance(event, GenerationDone):
                done = event
        status = 200
        return choices, done
    finally:
        if timer is not None:
            usage = done.usage if done else Usage(0, 0)
            timer.finish(status, usage.prompt_tokens, usage.completion_tokens)


async def _chat_sse(
    rid, model, n, first, events, include_usage, timer, shaper=None
) -> AsyncIterator[bytes]:
    shaper = shaper or structured.ChatStreamShaper(None)
    created = int(time.time())
    usage = Usage(0, 0)
    status = 500
    try:
        for i in range(n):
            opening = {"role": "assistant", "content": ""}
            yield sse(convert.chat_chunk(rid, model, created, opening, i))
        async for event in _prepend(first, events):
            if isinstance(event, GenerationDone):
                usage = event.usage
                continue
            if timer is not None and event.token_ids:
                timer.tokens(len(event.token_ids))
            final = event.finish_reason is not None
            deltas = shaper.deltas(event.index, event.text, final)
            if event.logprobs and not deltas:
                deltas = [{"content": ""}]
            for j, delta in enumerate(deltas):
                yield sse(
                    convert.chat_chunk(
                        rid,
                        model,
                        created,
                        delta,
                        event.index,
                        logprobs=event.logprobs if j == 0 else None,
                    )
                )
            if final:
                chunk = convert.chat_chunk(
                    rid, model, created, {}, event.index, str(event.finish_reason)
                )
                chunk["choices"][0].update(shaper.finish_extra(event.structured))
                yield sse(chunk)
        if include_usage:
            chunk = convert.chat_chunk(rid, model, created, {}, 0)
            chunk["choices"] = []
            chunk["usage"] = convert.usage_dict(usage)
            yield sse(chunk)
        yield SSE_DONE
        status = 200
    finally:
        if timer is not None:
            timer.finish(status, usage.prompt_tokens, usage.completion_tokens)


async def _prepend(first: Any, rest: AsyncIterator[Any]) -> AsyncIterator[Any]:
    yield first
    async for item in rest:
        yield item


# ---- completions ----------------------------------------------------------------------------


def _prompts(prompt: str | list) -> list[str | list[int]]:
    if isinstance(prompt, str):
        return [prompt]
    if not prompt:
        raise InvalidRequestError("prompt must not be empty", param="prompt")
    if all(isinstance(p, int) for p in prompt):
        return [list(prompt)]  # type: ignore[arg-type]
    if all(isinstance(p, str) for p in prompt) or all(isinstance(p, list) for p in prompt):
        return list(prompt)  # type: ignore[arg-type]
    raise InvalidRequestError(
        "prompt must be a string, a list of strings, a list of token ids "
        "or a list of token-id lists",
        param="prompt",
    )


@post("/v1/completions", status_code=200)
async def completions(request: Request) -> Any:
    engine = engine_of(request)
    req = await read_body(request, CompletionRequest)
    resolve_model(engine, req.model, "completion")
    if req.suffix is not None:
        raise InvalidRequestError(
            "suffix (insertion) is not supported by this model", param="suffix"
        )
    if req.best_of is not None and req.best_of != req.n:
        raise InvalidRequestError("best_of other than n is not supported", param="best_of")
    prompts = _prompts(req.prompt)
    if len(prompts) * req.n > engine.settings.llm.max_n:
        raise InvalidRequestError(
            f"prompts × n must be at most {engine.settings.llm.max_n}, got "
            f"{len(prompts)} × {req.n}",
            param="prompt",
        )
    params = convert.sampling_params(
        req,
        max_tokens=req.max_tokens if req.max_tokens is not None else COMPLETIONS_DEFAULT_MAX_TOKENS,
        default_max_tokens=COMPLETIONS_DEFAULT_MAX_TOKENS,
        max_n=engine.settings.llm.max_n,
        n_vocab=engine.n_vocab,
        logprobs=req.logprobs,
        prompt_logprobs=bool(req.echo and req.logprobs is not None),
    )
    rid = convert.new_id("cmpl")
    fmt = _response_format(engine, req)
    gens = [
        GenerateRequest(
            request_id=f"{rid}-{k}",
            model=req.model,
            params=params,
            prompt=p if isinstance(p, str) else None,
            prompt_tokens=p if isinstance(p, list) else None,
            n=req.n,
            response_format=fmt,
        )
        for k, p in enumerate(prompts)
    ]
    timer = state_of(request.app).metrics.request_timer("completions")
    events = merge([engine.generate(g) for g in gens])
    if req.stream:
        first = await _first_event(events, timer)
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        return sse_stream(
            _completion_sse(rid, req, first, events, include_usage, timer, engine, gens)
        )
    return await until_disconnect(request, _completion_body(rid, req, events, timer, len(gens)))


async def _completion_body(rid, req, events, timer, n_prompts) -> dict[str, Any]:
    accs = [[convert.ChoiceAccumulator(i) for i in range(req.n)] for _ in range(n_prompts)]
    dones: list[GenerationDone | None] = [None] * n_prompts
    status = 500
    try:
        async for k, event in events:
            if isinstance(event, ChoiceDelta):
                accs[k][event.index].add(event)
                if timer is not None and event.token_ids:
                    timer.tokens(len(event.token_ids))
            else:
                dones[k] = event
        status = 200
    finally:
        total = _sum_usage(dones)
        if timer is not None:
            timer.finish(status, total.prompt_tokens, total.completion_tokens)
    choices = []
    for k, done in enumerate(dones):
        echo = done.prompt_text if req.echo and done else ""
        choices += convert.completion_response(
            rid, req.model, accs[k], done, echo, req.logprobs is not None, index_offset=k * req.n
        )
    return {
        "id": rid,
        "object": "text_completion",
        "created": int(time.time()),
        "model": req.model,
        "choices": choices,
        "usage": convert.usage_dict(_sum_usage(dones)),
    }


def _sum_usage(dones) -> Usage:
    done = [d for d in dones if d is not None]
    return Usage(
        sum(d.usage.prompt_tokens for d in done), sum(d.usage.completion_tokens for d in done)
    )


async def _completion_sse(rid, req, first, events, include_usage, timer, engine, gens):
    created = int(time.time())
    dones: list[GenerationDone | None] = [None] * len(gens)
    status = 500
    try:
        if req.echo:
            for k, g in enumerate(gens):
                text = g.prompt if g.prompt is not None else engine.detokenize(g.prompt_tokens)
                for i in range(req.n):
                    index = k * req.n + i
                    yield sse(convert.completion_chunk(rid, req.model, created, index, text))
        async for k, event in _prepend(first, events):
            if isinstance(event, GenerationDone):
                dones[k] = event
                continue
            if timer is not None and event.token_ids:
                timer.tokens(len(event.token_ids))
            lp = (
                convert.completion_logprobs(event.logprobs)
                if event.logprobs and req.logprobs is not None
                else None
            )
            index = k * req.n + event.index
            reason = str(event.finish_reason) if event.finish_reason is not None else None
            if event.text or lp or reason:
                chunk = convert.completion_chunk(
                    rid, req.model, created, index, event.text, reason, lp
                )
                chunk["choices"][0].update(
                    structured.ChatStreamShaper.finish_extra(event.structured)
                )
                yield sse(chunk)
        if include_usage:
            yield sse(
                {
                    "id": rid,
                    "object": "text_completion",
                    "created": created,
                    "model": req.model,
                    "choices": [],
                    "usage": convert.usage_dict(_sum_usage(dones)),
                }
            )
        yield SSE_DONE
        status = 200
    finally:
        if timer is not None:
            total = _sum_usage(dones)
            timer.finish(status, total.prompt_tokens, total.completion_tokens)


# ---- embeddings -----------------------------------------------------------------------------


def _embedding_inputs(value: str | list) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not value:
        raise InvalidRequestError("input must not be empty", param="input")
    if all(isinstance(v, str) for v in value):
        return list(value)  # type: ignore[arg-type]
    raise InvalidRequestError(
        "input as token ids is not supported: the embedding model has its own tokenizer; send text",
        param="input",
    )


@post("/v1/embeddings", status_code=200)
async def embeddings(request: Request) -> dict[str, Any]:
    engine = engine_of(request)
    req = await read_body(request, EmbeddingRequest)
    card = resolve_model(engine, req.model, "embedding")
    if req.encoding_format not in ("float", "base64"):
        raise InvalidRequestError(
            f"encoding_format must be 'float' or 'base64', got {req.encoding_format!r}",
            param="encoding_format",
        )
    if req.dimensions is not None and req.dimensions != card.embedding_dim:
        raise InvalidRequestError(
            f"{card.id} produces {card.embedding_dim}-dimensional embeddings and cannot shorten "
            f"them; omit dimensions or set it to {card.embedding_dim}",
            param="dimensions",
        )
    texts = _embedding_inputs(req.input)
    counts = await engine.count_embedding_tokens(texts)
    limit = engine.embedder.max_seq_length
    if not req.truncate:
        for i, n in enumerate(counts):
            if n > limit:
                raise InvalidRequestError(
                    f"input[{i}] is {n} word pieces long; {card.id} reads at most {limit}. "
                    'Split it, or send "truncate": true to cut it',
                    param=f"input[{i}]",
                    code="context_length_exceeded",
                )
    vectors = await engine.embed(texts)
    used = sum(min(n, limit) for n in counts)
    return {
        "object": "list",
        "data": convert.embedding_data(vectors, req.encoding_format),
        "model": card.id,
        "usage": {"prompt_tokens": used, "total_tokens": used},
    }


ROUTES = [list_models, get_model, chat_completions, completions, embeddings]
