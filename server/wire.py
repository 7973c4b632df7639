"""Bodies on the wire (msgspec). Request structs reject unknown fields, never silently ignoring
them; response structs are built by the mappers (``server.mappers``). A response field typed
``X | UnsetType`` is left out of the JSON while UNSET (OpenAI's shape leaves it out), while one
typed ``X | None`` is always there, null when empty (``logprobs: null``).
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import msgspec
from msgspec import UNSET, UnsetType

T = TypeVar("T")


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
    # Memory across requests: a conversation id from POST /v1/conversations.
    conversation: str | None = None


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


# ---- chat completions and completions ---------------------------------------------------------


class CompletionUsage(msgspec.Struct, kw_only=True):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cached: bool | UnsetType = UNSET  # Hearth: true when answered from the exact response cache


class TopLogprob(msgspec.Struct):
    token: str
    logprob: float
    bytes: list[int]


class ChatLogprob(msgspec.Struct):
    token: str
    logprob: float | None
    bytes: list[int]
    top_logprobs: list[TopLogprob]


class ChatLogprobs(msgspec.Struct):
    content: list[ChatLogprob]


class CompletionLogprobs(msgspec.Struct):
    """The legacy completions API's column-wise logprobs."""

    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class SchemaReport(msgspec.Struct):
    """Hearth: what a constrained choice's response format enforced and how the output fared."""

    kind: str
    enforced_by_grammar: list[str]
    validated_after_generation: list[str]
    ignored: list[str]
    valid: bool | None
    errors: list[str]
    error: str | None  # None | "truncated" | "validation_failed" | "invalid_json"


class AssistantMessage(msgspec.Struct, kw_only=True):
    role: str = "assistant"
    content: str | None
    tool_calls: list[ToolCall] | UnsetType = UNSET
    refusal: str | UnsetType = UNSET


class ChatChoice(msgspec.Struct, kw_only=True):
    index: int
    message: AssistantMessage
    logprobs: ChatLogprobs | None
    finish_reason: str | None
    schema_report: SchemaReport | UnsetType = UNSET


class FunctionDelta(msgspec.Struct, kw_only=True):
    name: str | UnsetType = UNSET  # the first piece of a call only
    arguments: str


class ToolCallDelta(msgspec.Struct, kw_only=True):
    """A streamed piece of tool call ``index``: the first carries id, type and name."""

    index: int
    id: str | UnsetType = UNSET
    type: str | UnsetType = UNSET
    function: FunctionDelta


class ChatDelta(msgspec.Struct, kw_only=True):
    role: str | UnsetType = UNSET
    content: str | UnsetType = UNSET
    tool_calls: list[ToolCallDelta] | UnsetType = UNSET
    refusal: str | UnsetType = UNSET


class ChatChunkChoice(msgspec.Struct, kw_only=True):
    index: int
    delta: ChatDelta
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None = None
    schema_report: SchemaReport | UnsetType = UNSET


class Citation(msgspec.Struct):
    """Hearth RAG: one numbered source of the answer, with the quote's offsets."""

    number: int
    document_id: str
    chunk_id: int
    collection: str
    score: float
    quote: str
    start: int  # the quote's offsets in the chunk text
    end: int
    document_start: int  # and in the document text
    document_end: int
    page: int | None
    match: str  # "answer": shares a passage with the answer; "question": best sentence
    verified: bool


class RetrievalFigures(msgspec.Struct):
    collections: list[str]
    mode: str
    chunks_retrieved: int
    chunks_in_context: int
    chunks_dropped: int
    best_score: float


class RagRefusal(msgspec.Struct, kw_only=True):
    reason: str  # "weak_evidence" | "no_evidence"
    best_score: float
    min_score: float
    message: str
    type: str = "insufficient_evidence"


class ChatCompletion(msgspec.Struct, kw_only=True):
    """``chat.completion``; a RAG turn adds the five Hearth fields after ``usage``."""

    id: str
    object: str = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: CompletionUsage
    citations: list[Citation] | UnsetType = UNSET
    confidence: float | UnsetType = UNSET
    refusal: RagRefusal | None | UnsetType = UNSET
    session_id: str | None | UnsetType = UNSET
    retrieval: RetrievalFigures | None | UnsetType = UNSET


class ChatCompletionChunk(msgspec.Struct, kw_only=True):
    """One SSE event; ``usage`` only in the last (with ``include_usage``), the RAG fields only in
    the chunk with no choices just before ``[DONE]`` (or a refusal's closing chunk)."""

    id: str
    object: str = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: CompletionUsage | UnsetType = UNSET
    citations: list[Citation] | UnsetType = UNSET
    confidence: float | UnsetType = UNSET
    refusal: RagRefusal | None | UnsetType = UNSET
    session_id: str | None | UnsetType = UNSET
    retrieval: RetrievalFigures | None | UnsetType = UNSET


class CompletionChoice(msgspec.Struct, kw_only=True):
    index: int
    text: str
    logprobs: CompletionLogprobs | None
    finish_reason: str | None
    schema_report: SchemaReport | UnsetType = UNSET


class Completion(msgspec.Struct, kw_only=True):
    """``text_completion``: the collected body (with ``usage``) and each SSE chunk (usage only in
    the last, with ``include_usage``)."""

    id: str
    object: str = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: CompletionUsage | UnsetType = UNSET


# ---- jobs, collections, documents, retrieval ---------------------------------------------------


class JobInfo(msgspec.Struct, kw_only=True):
    """Every background job, one shape (ingestion, analysis, durable queue jobs)."""

    id: str
    object: str = "job"
    kind: str
    status: str
    progress: int
    stage: str | None
    attempts: int
    max_attempts: int
    total: int
    done: int
    failed: int
    skipped: int
    error: str | None
    result: list[dict[str, Any]] | dict[str, Any] | None
    created_at: int  # Unix seconds
    updated_at: int


class CollectionInfo(msgspec.Struct, kw_only=True):
    """A collection; the counts and index figures when the route has them."""

    id: str
    object: str = "collection"
    name: str
    created_at: int
    chunk_tokens: int
    chunk_overlap: int
    metadata: dict[str, Any]
    embedding_model: str = ""  # the model its vectors come from
    documents: int | UnsetType = UNSET
    chunks: int | UnsetType = UNSET
    index: dict[str, Any] | UnsetType = UNSET


class DocumentInfo(msgspec.Struct, kw_only=True):
    id: str  # the client's id when it gave one, else Hearth's
    object: str = "document"
    collection: str
    internal_id: str
    title: str | None
    status: str
    error: str | None
    metadata: dict[str, Any]
    content_hash: str
    bytes: int | None
    pages: int | None
    chunks: int
    job_id: str | None
    created_at: int


class Deleted(msgspec.Struct, kw_only=True):
    id: str
    object: str
    deleted: bool = True


class ChunkInfo(msgspec.Struct, kw_only=True):
    chunk_id: int
    ord: int
    text: str
    tokens: int
    char_start: int
    char_end: int
    page: int | None


class RetrievalHit(msgspec.Struct, kw_only=True):
    document_id: str  # the client's id when given, else Hearth's
    chunk_id: int
    collection: str
    score: float
    dense_score: float
    rank: int
    text: str
    title: str | None
    metadata: dict[str, Any]
    char_start: int
    char_end: int
    page: int | None
    n_tokens: int


class QueryHits(msgspec.Struct, kw_only=True):
    query: str
    object: str = "retrieval"
    data: list[RetrievalHit]


class RetrievalList(msgspec.Struct, kw_only=True):
    """One query: ``data`` holds its hits; several: ``results`` holds one entry per query."""

    object: str = "list"
    mode: str
    data: list[RetrievalHit] | UnsetType = UNSET
    results: list[QueryHits] | UnsetType = UNSET


class SessionMessage(msgspec.Struct, kw_only=True):
    role: str
    content: str
    sources: list[dict[str, Any]] | None
    confidence: float | None
    created_at: int


class ListOf(msgspec.Struct, Generic[T], kw_only=True):
    """``{"object": "list", "data": [...]}``."""

    object: str = "list"
    data: list[T]
