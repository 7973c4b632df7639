"""What the task pipelines need from a language model, and its implementation over the Engine.

Tasks talk to :class:`TaskLLM` (two calls: a constrained completion with token logprobs, and the
log-probability of given continuations of a prompt), so classification, extraction and analysis
are testable with a stand-in and run for real over :class:`EngineLLM`.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from engine.grammar.spec import StructuredSpec

from engine.types import (
    ChoiceDelta,
    GenerateRequest,
    GenerationDone,
    SamplingParams,
    current_tenant,
)


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token: the bytes it adds to the text and its log-probability."""

    bytes: bytes
    logprob: float


@dataclass
class Completion:
    text: str
    tokens: list[TokenLogprob] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    finish_reason: str | None = None


class TaskLLM(Protocol):
    async def complete(
        self, prompt: str, *, schema: dict[str, Any] | None = None, max_tokens: int = 256
    ) -> Completion:
        """Greedy completion of ``prompt``; with ``schema`` the output is JSON valid against it."""
        ...

    async def score(self, prompt: str, continuations: Sequence[str]) -> tuple[list[float], int]:
        """Log P(continuation | prompt) for each continuation (summed over its tokens), and the
        number of prompt tokens processed (for usage)."""
        ...


class Embedder(Protocol):
    async def embed(self, texts: list[str]) -> np.ndarray: ...


def json_schema_format(schema: dict[str, Any], name: str = "output") -> dict[str, Any]:
    """The OpenAI ``response_format`` for a JSON Schema (what ``engine.grammar`` compiles)."""
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def strip_extensions(schema: Any) -> Any:
    """The schema without ``x-*`` keywords (Hearth's own hints, e.g. ``x-type``)."""
    if isinstance(schema, dict):
        return {k: strip_extensions(v) for k, v in schema.items() if not str(k).startswith("x-")}
    if isinstance(schema, list):
        return [strip_extensions(v) for v in schema]
    return schema


class EngineLLM:
    """:class:`TaskLLM` over the Engine facade (``engine.generate``, ``engine.tokenize_prompt``).

    A JSON Schema goes to the engine as a ``StructuredSpec``; the engine's grammar support compiles
    it (cached) and constrains every sampled token, so the output is valid JSON under the schema
    (closed in time for ``max_tokens``).
    """

    def __init__(self, engine: Any, model: str | None = None) -> None:
        self.engine = engine
        self.model = model or engine.settings.llm.model
        # Task calls fan out (labels × inputs, batches): keep them within the running batch so
        # they queue here instead of being refused by the engine's admission (503).
        self._slots = asyncio.Semaphore(max(1, int(engine.settings.llm.max_running)))

    @staticmethod
    def _response_format(schema: dict[str, Any]) -> StructuredSpec | None:
        from engine.grammar import build_spec

        return build_spec(response_format=json_schema_format(strip_extensions(schema)))

    async def complete(
        self, prompt: str, *, schema: dict[str, Any] | None = None, max_tokens: int = 256
    ) -> Completion:
        async with self._slots:
            return await self._complete(prompt, schema, max_tokens)

    async def _complete(
        self, prompt: str, schema: dict[str, Any] | None, max_tokens: int
    ) -> Completion:
        request = GenerateRequest(
            request_id="task-" + uuid.uuid4().hex[:16],
            model=self.model,
            params=SamplingParams(max_tokens=max_tokens, temperature=0.0, logprobs=0),
            prompt=prompt,
            response_format=self._response_format(schema) if schema is not None else None,
            tenant=current_tenant.get(),
        )
        started = time.perf_counter()
        out = Completion(text="")
        parts: list[str] = []
        async for event in self.engine.generate(request):
            if isinstance(event, ChoiceDelta):
                parts.append(event.text)
                # One delta per token: its text (not the token's spelling) is what it added.
                for entry in event.logprobs or ():
                    out.tokens.append(
                        TokenLogprob(event.text.encode(), float(entry.logprob or 0.0))
                    )
                if event.finish_reason is not None:
                    out.finish_reason = str(event.finish_reason)
            elif isinstance(event, GenerationDone):
                out.prompt_tokens = event.usage.prompt_tokens
                out.completion_tokens = event.usage.completion_tokens
        out.text = "".join(parts)
        out.seconds = time.perf_counter() - started
        return out

    async def score(self, prompt: str, continuations: Sequence[str]) -> tuple[list[float], int]:
        prefix = await self._tokenize(prompt, add_bos=True)
        results = await asyncio.gather(*(self._score_one(prefix, text) for text in continuations))
        return [r[0] for r in results], sum(r[1] for r in results)

    async def _score_one(self, prefix: list[int], continuation: str) -> tuple[float, int]:
        async with self._slots:
            return await self._score_locked(prefix, continuation)

    async def _score_locked(self, prefix: list[int], continuation: str) -> tuple[float, int]:
        tail = await self._tokenize(continuation, add_bos=False)
        request = GenerateRequest(
            request_id="score-" + uuid.uuid4().hex[:16],
            model=self.model,
            params=SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=True),
            prompt_tokens=prefix + tail,
            tenant=current_tenant.get(),
        )
        done: GenerationDone | None = None
        async for event in self.engine.generate(request):
            if isinstance(event, GenerationDone):
                done = event
        if done is None or done.prompt_logprobs is None:
            raise RuntimeError("the engine returned no prompt logprobs")
        scored = done.prompt_logprobs[len(prefix) :]
        return float(sum(e.logprob or 0.0 for e in scored)), len(prefix) + len(tail)

    async def _tokenize(self, text: str, *, add_bos: bool) -> list[int]:
        if self.model == self.engine.card.id:
            return list(self.engine.tokenize_prompt(text, add_special_tokens=add_bos))
        runner = await self.engine.models.acquire(self.model)  # its own vocabulary
        return runner.tokenize_prompt(text, add_special_tokens=add_bos)


class TaskModels:
    """One :class:`EngineLLM` per generation model a task request names (made on first use, then
    kept: each holds its slot semaphore). ``get(None)`` is the task's configured model."""

    def __init__(self, engine: Any, default: EngineLLM) -> None:
        self._engine = engine
        self.default = default
        self._llms: dict[str, EngineLLM] = {default.model: default}

    def get(self, model: str | None) -> EngineLLM:
        """The LLM for ``model`` (None: the default); 404 naming the choices for an id that is
        not an installed generation model, 400 for a value that is not an id."""
        if model is None:
            return self.default
        if not isinstance(model, str) or not 0 < len(model) <= MAX_MODEL_ID:
            from engine.errors import InvalidRequestError

            raise InvalidRequestError(
                f"model must be a model id of 1 to {MAX_MODEL_ID} characters", param="model"
            )
        llm = self._llms.get(model)
        if llm is None:
            self._engine.models.card_of(model, "completion")  # 404 with the choices
            llm = self._llms[model] = EngineLLM(self._engine, model)
        return llm


#: Longest model id a request may name.
MAX_MODEL_ID = 128
