"""After a request: its tokens are charged to its admission ticket (the tenant's per-minute and
per-day token limits) and one usage row is recorded (tenant, kind, model, tokens, seconds)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from engine import Usage
from server.auth import tenant_of
from server.state import services


def usage_hook(request: Any, kind: str, model: str) -> Callable[[Usage], None]:
    """What ``mappers.metered`` calls once with the request's summed usage. ``kind``: ``chat``,
    ``rag``, ``completions``, ``embeddings``; ``model``: the model that did the work."""
    ticket = request.scope.get("state", {}).get("ticket")
    ledger = services(request).usage
    tenant = tenant_of(request)
    started = time.perf_counter()

    def done(usage: Usage) -> None:
        if ticket is not None:
            ticket.charge(usage.prompt_tokens + usage.completion_tokens)
        ledger.record(
            tenant,
            kind,
            model,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            seconds=time.perf_counter() - started,
        )

    return done
