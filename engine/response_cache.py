"""Exact response cache: a deterministic generation asked again is answered from memory.

A request is deterministic when it is greedy (temperature 0) or seeded; its key is a hash of
everything that decides the output (model, sampling parameters, prompt/tokens/messages, ``n``,
structured-output spec) salted with the tenant, so one tenant's answers are never served to
another. Only completed generations are stored (none aborted or timed out). Entries are kept in a
bounded LRU (``llm.response_cache_entries``; 0 turns the cache off). A request opts out with
``cache: false`` (``GenerateRequest.cache``). A replay's ``GenerationDone.usage.cached`` is true.
Not thread-safe: used from the event loop.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence

from engine.lru import LRU
from engine.types import (
    ChoiceDelta,
    FinishReason,
    GenerateRequest,
    GenerationDone,
    GenerationEvent,
    current_tenant,
)


class ResponseCache:
    def __init__(self, max_entries: int) -> None:
        self._entries: LRU[str, tuple[GenerationEvent, ...]] = LRU(max(1, max_entries))
        self.enabled = max_entries > 0
        self.hits = 0
        self.misses = 0

    def key(self, req: GenerateRequest) -> str | None:
        """The request's cache key, or None when it must not be cached."""
        p = req.params
        if not self.enabled or not req.cache or (p.temperature > 0.0 and p.seed is None):
            return None
        tenant = req.tenant or current_tenant.get()
        parts = (
            tenant,
            req.model,
            repr(p),
            req.prompt,
            None if req.prompt_tokens is None else tuple(req.prompt_tokens),
            None if req.messages is None else tuple(repr(m) for m in req.messages),
            req.n,
            repr(req.response_format),
            req.add_special_tokens,
        )
        return f"{tenant}:{hashlib.sha256(repr(parts).encode()).hexdigest()}"

    def forget_tenant(self, tenant: str) -> None:
        """Drop every answer cached for ``tenant`` (keys start with ``<tenant>:``)."""
        for key in [k for k in self._entries if k.startswith(f"{tenant}:")]:
            del self._entries[key]

    def get(self, key: str) -> tuple[GenerationEvent, ...] | None:
        events = self._entries.get(key)
        if events is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return tuple(_as_cached(e) for e in events)

    def put(self, key: str, events: Sequence[GenerationEvent]) -> None:
        """Store a completed generation (its last event is GenerationDone, nothing aborted)."""
        if not events or not isinstance(events[-1], GenerationDone):
            return
        for e in events:
            if isinstance(e, ChoiceDelta) and e.finish_reason == FinishReason.ABORT:
                return
        self._entries[key] = tuple(events)


def _as_cached(event: GenerationEvent) -> GenerationEvent:
    if isinstance(event, GenerationDone):
        usage = dataclasses.replace(event.usage, cached=True)
        return dataclasses.replace(event, usage=usage, ttft_s=0.0, duration_s=0.0)
    return event
