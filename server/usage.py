"""After a request: its tokens are charged to its admission ticket (the tenant's per-minute and
per-day token limits)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine import Usage


def usage_hook(request: Any) -> Callable[[Usage], None]:
    """What ``mappers.metered`` calls once with the request's summed usage."""
    ticket = request.scope.get("state", {}).get("ticket")

    def done(usage: Usage) -> None:
        if ticket is not None:
            ticket.charge(usage.prompt_tokens + usage.completion_tokens)

    return done
