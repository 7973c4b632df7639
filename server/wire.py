"""Bodies on the wire (msgspec). Request structs reject unknown fields, never silently ignoring
them; response structs are built by the mappers (``server.mappers``, ``server.convert``).
"""

from __future__ import annotations

from typing import Any

import msgspec


class Strict(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    pass


class StreamOptions(Strict):
    include_usage: bool = False
    continuous_usage_stats: bool = False


class ContentPart(Strict):
    type: str
    text: str | None = None
    image_url: Any = None
    input_audio: Any = None
    file: Any = None
    refusal: str | None = None


class ToolCallFunction(Strict):
    name: str
    arguments: str


class ToolCall(Strict):
    id: str
    type: str
    function: ToolCallFunction
    index: int | None = None


class Message(Strict):
    role: str
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    refusal: str | None = None


class _Sampling(Strict):
    """Fields shared by completions and chat completions."""

    model: str
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[str, float] | None = None
    seed: int | None = None
    user: str | None = None
    # Extras of vLLM / llama.cpp that OpenAI lacks.
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    ignore_eos: bool = False
    min_tokens: int = 0
    # Structured output (engine.grammar): validated by the grammar layer.
    response_format: dict[str, Any] | None = None
    structured_outputs: dict[str, Any] | None = None
    # Hearth: seconds until the request is aborted (408); at most [llm] request_timeout_s.
    timeout: float | None = None
    # Hearth: false keeps a greedy/seeded request out of the exact response cache.
    cache: bool = True
    # Hearth (as Ollama): seconds the model stays loaded once idle after this request.
    keep_alive: float | None = None


class CompletionRequest(_Sampling, kw_only=True):
    prompt: str | list[str | int | list[int]]
    echo: bool = False
    logprobs: int | None = None
    best_of: int | None = None
    suffix: str | None = None


class ChatCompletionRequest(_Sampling, kw_only=True):
    messages: list[Message]
    max_completion_tokens: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    # Retrieval-augmented chat (documents subsystem).
    retrieval: dict[str, Any] | None = None
    session_id: str | None = None


class EmbeddingRequest(Strict):
    model: str
    input: str | list[str | int | list[int]]
    encoding_format: str = "float"
    dimensions: int | None = None
    user: str | None = None
    # Extra: cut inputs longer than the model's window instead of rejecting them.
    truncate: bool = False
    # Extra: "query" or "document" puts the model's prompt for that side of a search before each
    # input (models with such prompts, e.g. EmbeddingGemma); omitted: the text as given.
    input_type: str | None = None


class TokenizeRequest(Strict):
    model: str | None = None
    prompt: str | None = None
    messages: list[Message] | None = None
    add_special_tokens: bool = True
    return_token_strs: bool = False


class DetokenizeRequest(Strict):
    tokens: list[int]
    model: str | None = None


# ---- responses ---------------------------------------------------------------------------------


class ErrorDetail(msgspec.Struct):
    """OpenAI's error object; ``param`` and ``code`` are always present (null when unknown)."""

    message: str
    type: str
    param: str | None
    code: str | None


class ErrorBody(msgspec.Struct, omit_defaults=True):
    """Every error response: ``{"error": {...}}`` (``status``: /ready's loading state)."""

    error: ErrorDetail
    status: str | None = None


class ModelEntry(msgspec.Struct, omit_defaults=True):
    """One entry of ``/v1/models``: a loaded model, or a ``rag/<collection>`` pseudo-model."""

    id: str
    created: int
    capabilities: list[str]
    object: str = "model"
    owned_by: str = "hearth"
    max_model_len: int | None = None
    format: str | None = None
    collection: str | None = None
    # Hearth: "loaded" (in memory now) or "available" (installed, loaded on first use).
    state: str | None = None
    size_bytes: int | None = None
    # GET /v1/models/{id} only.
    context_length: int | None = None
    template_source: str | None = None
    sha256: str | None = None


class ModelList(msgspec.Struct):
    data: list[ModelEntry]
    object: str = "list"


class EmbeddingEntry(msgspec.Struct):
    index: int
    embedding: list[float] | str  # floats, or base64 of little-endian float32
    object: str = "embedding"


class EmbeddingUsage(msgspec.Struct):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(msgspec.Struct):
    data: list[EmbeddingEntry]
    model: str
    usage: EmbeddingUsage
    object: str = "list"
