"""Typed messages that cross the engine's boundaries (server → engine → backend and back)."""

from __future__ import annotations

import contextvars
import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from models.chat_templates import ChatMessage

if TYPE_CHECKING:
    from engine.grammar.spec import StructuredSpec


class FinishReason(enum.StrEnum):
    STOP = "stop"  # EOS, a stop token or a stop string
    LENGTH = "length"  # max_tokens or the context limit
    ABORT = "abort"  # cancelled (client went away); never shown to a client
    TOOL_CALLS = "tool_calls"
    # Structured output complete but failed a check run after generation (engine.grammar).
    CONTENT_FILTER = "content_filter"


@dataclass(frozen=True)
class SamplingParams:
    """Per-request sampling knobs; defaults are OpenAI's. ``temperature == 0`` means greedy."""

    max_tokens: int = 16
    min_tokens: int = 0
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    min_p: float = 0.0
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    # None = no logprobs; k >= 0 = the sampled token's logprob plus the k most likely.
    logprobs: int | None = None
    # Completions' echo+logprobs: logprobs of the prompt tokens too.
    prompt_logprobs: bool = False


class TokenConstraint(Protocol):
    """A grammar constraint on one sequence (implemented in ``engine.grammar``).

    The backend calls ``mask_logits`` before sampling each token and ``advance`` after; both are
    called from the backend's thread. ``prepare`` may run in another thread while the backend
    decodes, so the mask for the next token is ready when the logits are.
    """

    # The grammar's text (llguidance JSON or Lark), for backends that enforce it with their own
    # grammar engine (vLLM) instead of calling the methods below.
    grammar: str | None

    def prepare(self) -> None: ...

    def mask_logits(self, logits: np.ndarray) -> None: ...

    def advance(self, token_id: int) -> None: ...

    def is_complete(self) -> bool: ...


@dataclass
class BackendRequest:
    """One sequence for the backend: token ids in, token ids out."""

    request_id: str
    prompt_tokens: list[int]
    params: SamplingParams
    # Token ids that end the sequence (EOS, end-of-turn), unless ignore_eos.
    eos_token_ids: frozenset[int] = frozenset()
    constraint: TokenConstraint | None = None
    # KV prefixes are reused only between requests with the same salt (the tenant).
    cache_salt: str = ""


@dataclass(frozen=True)
class TopLogprob:
    token_id: int
    logprob: float


@dataclass(frozen=True)
class TokenOutput:
    """One sampled token of one sequence, as the backend reports it."""

    request_id: str
    token_id: int
    logprob: float | None = None
    top_logprobs: tuple[TopLogprob, ...] = ()
    finish_reason: FinishReason | None = None


@dataclass(frozen=True)
class PromptLogprobs:
    """Logprob of each prompt token given the tokens before it (None for the first)."""

    request_id: str
    logprobs: tuple[float | None, ...]
    top_logprobs: tuple[tuple[TopLogprob, ...], ...]


@dataclass(frozen=True)
class SequenceFinished:
    """The backend dropped a sequence without a token (aborted, or failed)."""

    request_id: str
    finish_reason: FinishReason
    error: str | None = None


BackendOutput = TokenOutput | PromptLogprobs | SequenceFinished


@dataclass(frozen=True)
class BackendStats:
    running: int
    waiting: int
    kv_cells_used: int
    kv_cells_total: int
    steps: int
    prefix_hit_tokens: int = 0
    # Prompt-lookup speculative decoding: tokens drafted, and those the model confirmed.
    draft_tokens: int = 0
    draft_accepted: int = 0


# ---- engine → caller -----------------------------------------------------------------------


@dataclass(frozen=True)
class LogprobEntry:
    token: str
    token_id: int
    bytes: bytes
    logprob: float | None
    top: tuple[tuple[str, int, bytes, float], ...] = ()


@dataclass(frozen=True)
class ToolCall:
    """One function call parsed from a tools-constrained output."""

    id: str
    name: str
    arguments: str  # JSON text, as OpenAI sends it


@dataclass
class SchemaReport:
    """What was enforced and how the output fared."""

    kind: str
    enforced_by_grammar: list[str] = field(default_factory=list)
    validated_after_generation: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    valid: bool | None = None
    errors: list[str] = field(default_factory=list)
    error: str | None = None  # None | "truncated" | "validation_failed" | "invalid_json"


@dataclass
class Outcome:
    """How one constrained choice ended (``engine.grammar.finalize``): its finish reason, the
    schema report, and the content and tool calls parsed from its text."""

    finish_reason: FinishReason
    report: SchemaReport
    content: str | None
    tool_calls: list[ToolCall] = field(default_factory=list)


@dataclass(frozen=True)
class ChoiceDelta:
    """New output of one choice. ``text`` may be empty (held back while it could start a stop)."""

    index: int
    text: str
    token_ids: tuple[int, ...] = ()
    logprobs: tuple[LogprobEntry, ...] | None = None
    finish_reason: FinishReason | None = None
    # Last delta of a constrained choice: how its output fared (schema_report, tool calls).
    structured: Outcome | None = None


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    # Served from the exact response cache (engine.response_cache), without an engine call.
    cached: bool = False

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class GenerationDone:
    """Last event of a generation."""

    usage: Usage
    prompt_logprobs: tuple[LogprobEntry, ...] | None = None
    prompt_text: str = ""
    ttft_s: float | None = None
    duration_s: float = 0.0


GenerationEvent = ChoiceDelta | GenerationDone


# The tenant being served, for engine calls made on its behalf that do not name it (task
# pipelines): the server sets it per request; engine code reads it with ``current_tenant.get()``.
current_tenant: contextvars.ContextVar[str] = contextvars.ContextVar("hearth_tenant", default="")


@dataclass(frozen=True)
class GenerateRequest:
    """What the engine needs for one generation: a prompt (text, tokens or chat) and parameters."""

    request_id: str
    model: str
    params: SamplingParams
    prompt: str | None = None
    prompt_tokens: Sequence[int] | None = None
    messages: Sequence[ChatMessage] | None = None
    n: int = 1
    # The structured-output spec engine.grammar compiles (None = unconstrained).
    response_format: StructuredSpec | None = None
    # Tool definitions (OpenAI shape) the model's chat template renders itself; set by
    # engine.grammar when the template supports tools (else they go in as a system message).
    template_tools: tuple[dict[str, Any], ...] | None = None
    add_special_tokens: bool = True
    # Seconds from submission until the request is aborted (408); None: llm.request_timeout_s.
    timeout_s: float | None = None
    # Who asked: cached prompt prefixes are shared only within one tenant.
    tenant: str = ""
    # Seconds the model stays loaded once idle after this request (None: [models] keep_alive_s).
    keep_alive: float | None = None
    # A deterministic request (greedy or seeded) may be answered from the exact response cache.
    cache: bool = True


# ---- retrieval → caller ---------------------------------------------------------------------


@dataclass(frozen=True)
class RetrievedChunk:
    """A retrieval hit joined with its chunk and document."""

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

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)
