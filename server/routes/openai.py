"""OpenAI-compatible routes: /v1/models, /v1/completions, /v1/chat/completions, /v1/embeddings.

Each handler decodes its wire struct, lets ``server.convert`` validate it into the engine's
request, calls one service method and hands the events to its API's mapper (``server.mappers``),
which owns the response shape, SSE and the request's metrics.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from litestar import Request, Response, get, post
from litestar.response import Stream

from engine import (
    Conversation,
    Engine,
    GenerateRequest,
    Hearth,
    InvalidRequestError,
    NotFoundError,
    Usage,
)
from server import convert
from server.auth import tenant_of
from server.mappers import ChatMapper, CompletionMapper, embedding_data, respond
from server.routes.common import merge, read_body
from server.state import services
from server.usage import usage_hook
from server.wire import (
    ChatCompletion,
    ChatCompletionRequest,
    Completion,
    CompletionRequest,
    EmbeddingList,
    EmbeddingRequest,
    EmbeddingUsage,
    ModelEntry,
    ModelList,
)

# ---- models -------------------------------------------------------------------------------


def model_entries(engine: Engine, *, detail: bool = False) -> list[ModelEntry]:
    """Every installed model card: the loaded ones and those the pool loads on first use."""
    pool = engine.models
    cards = {c.id: c for c in pool.installed_cards()}
    cards.setdefault(engine.card.id, engine.card)
    cards.setdefault(engine.embedding_card.id, engine.embedding_card)
    entries = []
    for card in cards.values():
        loaded = pool.is_loaded(card.id) or card.id == engine.embedding_card.id
        if card.id == engine.card.id:
            max_len = engine.settings.llm.max_model_len
        else:
            max_len = min(card.context_length, engine.settings.llm.max_model_len)
            if not card.supports("chat") and not card.supports("completion"):
                max_len = card.context_length
        entries.append(
            ModelEntry(
                id=card.id,
                created=int(engine.started_at),
                capabilities=list(card.capabilities),
                max_model_len=max_len,
                format=card.format,
                state="loaded" if loaded else "available",
                size_bytes=pool.file_bytes(card),
                context_length=card.context_length if detail else None,
                template_source=(card.chat_template or "model file") if detail else None,
                sha256=card.sha256 if detail else None,
            )
        )
    return entries


async def rag_model_entries(request: Request) -> list[ModelEntry]:
    """``rag/<collection>`` for each of the caller's collections."""
    hearth = services(request)
    cols = await hearth.documents.list_collections(tenant_of(request))
    return [
        ModelEntry(
            id=f"{convert.RAG_PREFIX}{c.name}",
            created=int(hearth.engine.started_at),
            capabilities=["chat", "rag"],
            collection=c.name,
        )
        for c in cols
    ]


@get("/v1/models")
async def list_models(request: Request) -> ModelList:
    engine = services(request).engine
    return ModelList(model_entries(engine) + await rag_model_entries(request))


@get("/v1/models/{model_id:path}")
async def get_model(request: Request, model_id: str) -> ModelEntry:
    wanted = model_id.lstrip("/")
    entries = model_entries(services(request).engine, detail=True)
    if wanted.startswith(convert.RAG_PREFIX):
        entries = await rag_model_entries(request)
    for entry in entries:
        if entry.id == wanted:
            return entry
    raise NotFoundError(
        f"The model {wanted!r} does not exist", param="model", code="model_not_found"
    )


# ---- chat completions and completions ------------------------------------------------------


@post("/v1/chat/completions", status_code=200)
async def chat_completions(request: Request) -> Response[ChatCompletion] | Stream:
    """A chat turn; with ``retrieval`` (or model ``rag/<collection>``) a RAG turn."""
    hearth = services(request)
    req = await read_body(request, ChatCompletionRequest)
    call = convert.chat_call(hearth.engine, req)
    call = dataclasses.replace(
        call, generate=dataclasses.replace(call.generate, tenant=tenant_of(request))
    )
    conv = None
    if req.conversation is not None:
        conv = await hearth.conversations.get(tenant_of(request), req.conversation)
        call = dataclasses.replace(call, generate=with_memory(hearth, conv, call.generate))
    if call.retrieval is None:
        events = hearth.engine.generate(call.generate)
    else:
        events = hearth.rag.generate(
            tenant_of(request), call.generate, call.retrieval, call.session_id
        )
    if conv is not None:
        asked = [m.content for m in req_messages(call.generate) if m.role == "user"]
        events = hearth.conversations.remember(
            tenant_of(request), conv.id, asked[-1] if asked else "", events
        )
    hook = usage_hook(request, "chat" if call.retrieval is None else "rag", call.generate.model)
    return await respond(request, ChatMapper(req, call.generate), events, req.stream, hook)


def with_memory(hearth: Hearth, conv: Conversation, generate: GenerateRequest) -> GenerateRequest:
    """The request with the conversation's memory before its messages, cut so the prompt and
    ``max_tokens`` still fit the context."""
    engine = hearth.engine
    messages = req_messages(generate)
    used = sum(engine.count_tokens(m.content) + 8 for m in messages)
    budget = engine.max_model_len - (generate.params.max_tokens or 0) - used
    merged = hearth.conversations.with_memory(conv, messages, budget, engine.count_tokens)
    return dataclasses.replace(generate, messages=merged)


def req_messages(generate: GenerateRequest) -> list[Any]:
    return list(generate.messages or [])


@post("/v1/completions", status_code=200)
async def completions(request: Request) -> Response[Completion] | Stream:
    engine = services(request).engine
    req = await read_body(request, CompletionRequest)
    tenant = tenant_of(request)
    generates = [
        dataclasses.replace(g, tenant=tenant) for g in convert.completion_calls(engine, req)
    ]
    events = merge([engine.generate(g) for g in generates])
    mapper = CompletionMapper(req, generates, engine.detokenize)
    hook = usage_hook(request, "completions", req.model)
    return await respond(request, mapper, events, req.stream, hook)


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
async def embeddings(request: Request) -> EmbeddingList:
    engine = services(request).engine
    req = await read_body(request, EmbeddingRequest)
    card = convert.resolve_model(engine, req.model, "embedding")
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
    vectors = await engine.embed(texts, input_type=req.input_type)  # type: ignore[arg-type]
    used = sum(min(n, limit) for n in counts)
    usage_hook(request, "embeddings", card.id)(Usage(used, 0))
    return EmbeddingList(
        data=embedding_data(vectors, req.encoding_format),
        model=card.id,
        usage=EmbeddingUsage(prompt_tokens=used, total_tokens=used),
    )


ROUTES = [list_models, get_model, chat_completions, completions, embeddings]
