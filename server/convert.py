"""Wire → engine: request structs become the engine's requests (the other direction, engine
events → response structs, is ``server.mappers``).

Everything here validates what msgspec's types cannot (ranges, combinations) and raises
InvalidRequestError naming the field.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from engine import (
    Engine,
    GenerateRequest,
    InvalidRequestError,
    NotFoundError,
    RetrievalOptions,
    SamplingParams,
    StructuredSpec,
    build_spec,
)
from models import ModelCard
from models.chat_templates import ROLES, ChatMessage
from server.wire import ChatCompletionRequest, CompletionRequest, Message

MAX_STOP = 16
MAX_LOGPROBS = 20


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def _bad(message: str, param: str) -> InvalidRequestError:
    return InvalidRequestError(message, param=param)


def _check_range(name: str, value: float | None, low: float, high: float) -> None:
    if value is None:
        return
    if not math.isfinite(value) or not low <= value <= high:
        raise _bad(f"{name} must be between {low} and {high}, got {value}", name)


def _stop_list(stop: str | list[str] | None) -> tuple[str, ...]:
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else list(stop)
    if len(stops) > MAX_STOP:
        raise _bad(f"at most {MAX_STOP} stop sequences, got {len(stops)}", "stop")
    if any(s == "" for s in stops):
        raise _bad("stop sequences must not be empty strings", "stop")
    return tuple(stops)


def _logit_bias(bias: dict[str, float] | None, n_vocab: int) -> dict[int, float]:
    out: dict[int, float] = {}
    for key, value in (bias or {}).items():
        try:
            tok = int(key)
        except ValueError:
            raise _bad(f"logit_bias keys must be token ids, got {key!r}", "logit_bias") from None
        if not 0 <= tok < n_vocab:
            raise _bad(
                f"logit_bias token id {tok} is outside the vocabulary (0..{n_vocab - 1})",
                "logit_bias",
            )
        if not -100 <= value <= 100:
            raise _bad(f"logit_bias values must be between -100 and 100, got {value}", "logit_bias")
        out[tok] = float(value)
    return out


def sampling_params(
    req: CompletionRequest | ChatCompletionRequest,
    *,
    max_tokens: int | None,
    default_max_tokens: int,
    max_n: int,
    n_vocab: int,
    logprobs: int | None,
    prompt_logprobs: bool = False,
) -> SamplingParams:
    if not 1 <= req.n <= max_n:
        raise _bad(f"n must be between 1 and {max_n}, got {req.n}", "n")
    if max_tokens is not None and max_tokens < 1:
        raise _bad(f"max_tokens must be at least 1, got {max_tokens}", "max_tokens")
    _check_range("temperature", req.temperature, 0.0, 2.0)
    _check_range("top_p", req.top_p, 0.0, 1.0)
    if req.top_p is not None and req.top_p <= 0.0:
        raise _bad("top_p must be greater than 0", "top_p")
    _check_range("presence_penalty", req.presence_penalty, -2.0, 2.0)
    _check_range("frequency_penalty", req.frequency_penalty, -2.0, 2.0)
    _check_range("min_p", req.min_p, 0.0, 1.0)
    _check_range("repetition_penalty", req.repetition_penalty, 0.01, 10.0)
    if req.top_k is not None and req.top_k < -1:
        raise _bad("top_k must be -1 (off), 0 (off) or a positive number", "top_k")
    if logprobs is not None and not 0 <= logprobs <= MAX_LOGPROBS:
        raise _bad(f"logprobs must be between 0 and {MAX_LOGPROBS}, got {logprobs}", "logprobs")
    limit = max_tokens if max_tokens is not None else default_max_tokens
    if req.min_tokens < 0 or req.min_tokens > limit:
        raise _bad(f"min_tokens must be between 0 and max_tokens ({limit})", "min_tokens")
    if req.seed is not None and not -(2**63) <= req.seed < 2**64:
        raise _bad("seed must fit in 64 bits", "seed")
    return SamplingParams(
        max_tokens=limit,
        min_tokens=req.min_tokens,
        temperature=1.0 if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p,
        top_k=max(0, req.top_k or 0),
        min_p=req.min_p or 0.0,
        seed=req.seed,
        presence_penalty=req.presence_penalty,
        frequency_penalty=req.frequency_penalty,
        repetition_penalty=req.repetition_penalty or 1.0,
        logit_bias=_logit_bias(req.logit_bias, n_vocab),
        stop=_stop_list(req.stop),
        ignore_eos=req.ignore_eos,
        logprobs=logprobs,
        prompt_logprobs=prompt_logprobs,
    )


def request_timeout(req: CompletionRequest | ChatCompletionRequest, limit: float) -> float:
    """The request's deadline in seconds: its ``timeout`` (0 < timeout <= limit) or the limit."""
    if req.timeout is None:
        return limit
    if not 0 < req.timeout <= limit:
        raise _bad(f"timeout must be more than 0 and at most {limit:g} seconds", "timeout")
    return req.timeout


def _content_text(msg: Message, index: int) -> str:
    if msg.content is None:
        if msg.role == "assistant" and msg.tool_calls:
            return ""
        raise _bad(f"messages[{index}] ({msg.role}) has no content", f"messages[{index}].content")
    if isinstance(msg.content, str):
        return msg.content
    parts = []
    for j, part in enumerate(msg.content):
        if part.type != "text" or part.text is None:
            raise _bad(
                f"messages[{index}].content[{j}] is of type {part.type!r}: this model reads "
                "text only",
                f"messages[{index}].content[{j}].type",
            )
        parts.append(part.text)
    return "\n".join(parts)


def chat_messages(messages: Sequence[Message]) -> list[ChatMessage]:
    if not messages:
        raise _bad("messages must contain at least one message", "messages")
    out = []
    for i, msg in enumerate(messages):
        if msg.role not in ROLES:
            raise _bad(
                f"messages[{i}].role {msg.role!r} is not one of {', '.join(ROLES)}",
                f"messages[{i}].role",
            )
        text = _content_text(msg, i)
        if msg.role == "assistant" and msg.tool_calls:
            calls = "\n".join(
                f'{{"name": "{c.function.name}", "arguments": {c.function.arguments}}}'
                for c in msg.tool_calls
            )
            text = f"{text}\n{calls}".strip()
        out.append(ChatMessage(msg.role, text, msg.name or msg.tool_call_id))
    return out


# ---- requests → engine calls ------------------------------------------------------------------

COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for the legacy completions API
RAG_PREFIX = "rag/"
_RETRIEVAL_KEYS = {"collections", "collection", "top_k", "mode", "min_score", "filter"}


def resolve_model(engine: Engine, model: str, capability: str) -> ModelCard:
    """The card a request's ``model`` names; 404 with the choices if none fits."""
    for card in (engine.card, engine.embedding_card):
        if card.id == model and card.supports(capability):
            return card
    usable = [c.id for c in (engine.card, engine.embedding_card) if c.supports(capability)]
    raise NotFoundError(
        f"The model {model!r} does not exist or cannot serve {capability}; available: {usable}",
        param="model",
        code="model_not_found",
    )


def resolve_generator(engine: Engine, model: str, capability: str) -> ModelCard:
    """The generation card a chat/completions request names: the server's model or any other
    installed one (the engine's model pool loads it on use); 404 with the choices otherwise."""
    if model == engine.card.id and engine.card.supports(capability):
        return engine.card
    return engine.models.card_of(model, capability)


def keep_alive(req: CompletionRequest | ChatCompletionRequest, limit: float) -> float | None:
    """The request's ``keep_alive`` in seconds (0 <= keep_alive <= limit), or None."""
    if req.keep_alive is None:
        return None
    if not 0 <= req.keep_alive <= limit:
        raise _bad(f"keep_alive must be between 0 and {limit:g} seconds", "keep_alive")
    return float(req.keep_alive)


@dataclass(frozen=True)
class ChatCall:
    """A chat request for the engine; ``retrieval`` set: a RAG turn (``RagService.generate``)."""

    generate: GenerateRequest
    retrieval: RetrievalOptions | None
    session_id: str | None


def chat_call(engine: Engine, req: ChatCompletionRequest) -> ChatCall:
    """Validate a chat request (400/404 naming the field) and build the engine's request. A model
    ``rag/<collection>`` or a ``retrieval`` object makes it a RAG turn on the server's model."""
    rag = req.retrieval is not None or req.model.startswith(RAG_PREFIX)
    # rag/<collection> answers on [tasks] rag_model (default the server's model).
    rag_model = engine.settings.tasks.rag_model or engine.card.id
    model = rag_model if req.model.startswith(RAG_PREFIX) else req.model
    resolve_generator(engine, model, "chat")
    if req.top_logprobs is not None and not req.logprobs:
        raise _bad("top_logprobs needs logprobs: true", "top_logprobs")
    if req.top_logprobs is not None and not 0 <= req.top_logprobs <= MAX_LOGPROBS:
        raise _bad(
            f"top_logprobs must be between 0 and {MAX_LOGPROBS}, got {req.top_logprobs}",
            "top_logprobs",
        )
    params = sampling_params(
        req,
        max_tokens=req.max_completion_tokens
        if req.max_completion_tokens is not None
        else req.max_tokens,
        default_max_tokens=engine.settings.llm.default_max_tokens,
        max_n=engine.settings.llm.max_n,
        n_vocab=engine.n_vocab,
        logprobs=(req.top_logprobs or 0) if req.logprobs else None,
    )
    messages = chat_messages(req.messages)
    if not rag and req.session_id is not None:
        raise _bad("session_id needs retrieval", "session_id")
    options = retrieval_options(req.model, req.retrieval) if rag else None
    generate = GenerateRequest(
        request_id=new_id("chatcmpl"),
        model=model,
        params=params,
        messages=messages,
        n=req.n,
        response_format=spec_of(req),
        timeout_s=request_timeout(req, engine.settings.llm.request_timeout_s),
        cache=req.cache,
        keep_alive=keep_alive(req, engine.settings.models.max_keep_alive_s),
    )
    return ChatCall(generate, options, req.session_id)


def retrieval_options(model: str, raw: dict[str, Any] | None) -> RetrievalOptions:
    """The ``retrieval`` object (and a ``rag/<collection>`` model) → RetrievalOptions."""
    raw = dict(raw or {})
    unknown = set(raw) - _RETRIEVAL_KEYS
    if unknown:
        key = sorted(unknown)[0]
        raise _bad(f"unknown retrieval option {key!r}", f"retrieval.{key}")
    names = raw.get("collections") or ([raw["collection"]] if raw.get("collection") else [])
    if model.startswith(RAG_PREFIX):
        names = [model[len(RAG_PREFIX) :], *names]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise _bad(
            "retrieval.collections must be a non-empty list of collection names",
            "retrieval.collections",
        )
    top_k, min_score, mode = raw.get("top_k"), raw.get("min_score"), raw.get("mode", "hybrid")
    if min_score is not None and (
        isinstance(min_score, bool) or not isinstance(min_score, int | float)
    ):
        raise _bad("retrieval.min_score must be a number", "retrieval.min_score")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int)):
        raise _bad("retrieval.top_k must be an integer", "retrieval.top_k")
    if not isinstance(mode, str):
        raise _bad("retrieval.mode must be a string", "retrieval.mode")
    flt = raw.get("filter")
    if flt is not None and not isinstance(flt, dict):
        raise _bad("retrieval.filter must be an object", "retrieval.filter")
    return RetrievalOptions(list(dict.fromkeys(names)), top_k, mode, min_score, flt)


def _prompts(prompt: str | list[Any]) -> list[str | list[int]]:
    if isinstance(prompt, str):
        return [prompt]
    if not prompt:
        raise _bad("prompt must not be empty", "prompt")
    if all(isinstance(p, int) for p in prompt):
        return [list(prompt)]
    if all(isinstance(p, list) for p in prompt) and not all(prompt):
        raise _bad("prompt: a list of token ids must not be empty", "prompt")
    if all(isinstance(p, str) for p in prompt) or all(isinstance(p, list) for p in prompt):
        return list(prompt)
    raise _bad(
        "prompt must be a string, a list of strings, a list of token ids or a list of token-id "
        "lists",
        "prompt",
    )


def completion_calls(engine: Engine, req: CompletionRequest) -> list[GenerateRequest]:
    """Validate a completions request; one engine request per prompt (ids ``<rid>-<k>``)."""
    resolve_generator(engine, req.model, "completion")
    if req.suffix is not None:
        raise _bad("suffix (insertion) is not supported by this model", "suffix")
    if req.best_of is not None and req.best_of != req.n:
        raise _bad("best_of other than n is not supported", "best_of")
    prompts = _prompts(req.prompt)
    max_n = engine.settings.llm.max_n
    if len(prompts) * req.n > max_n:
        raise _bad(f"prompts × n must be at most {max_n}, got {len(prompts)} × {req.n}", "prompt")
    params = sampling_params(
        req,
        max_tokens=req.max_tokens if req.max_tokens is not None else COMPLETIONS_DEFAULT_MAX_TOKENS,
        default_max_tokens=COMPLETIONS_DEFAULT_MAX_TOKENS,
        max_n=max_n,
        n_vocab=engine.n_vocab,
        logprobs=req.logprobs,
        prompt_logprobs=bool(req.echo and req.logprobs is not None),
    )
    rid = new_id("cmpl")
    fmt = spec_of(req)
    timeout_s = request_timeout(req, engine.settings.llm.request_timeout_s)
    alive = keep_alive(req, engine.settings.models.max_keep_alive_s)
    return [
        GenerateRequest(
            request_id=f"{rid}-{k}",
            model=req.model,
            params=params,
            prompt=p if isinstance(p, str) else None,
            prompt_tokens=p if isinstance(p, list) else None,
            n=req.n,
            response_format=fmt,
            timeout_s=timeout_s,
            cache=req.cache,
            keep_alive=alive,
        )
        for k, p in enumerate(prompts)
    ]


def spec_of(req: CompletionRequest | ChatCompletionRequest) -> StructuredSpec | None:
    """The request's structured-output spec (400 naming the field when malformed), or None."""
    chat = isinstance(req, ChatCompletionRequest)
    return build_spec(
        response_format=req.response_format,
        structured_outputs=req.structured_outputs,
        tools=req.tools if chat else None,
        tool_choice=req.tool_choice if chat else None,
        parallel_tool_calls=req.parallel_tool_calls if chat else None,
    )
