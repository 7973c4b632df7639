"""The app's typed state: the services (once started), the metrics, a start-up failure.

Handlers reach the services through :func:`services`, which answers 503 ``not_ready_error`` with
Retry-After while Hearth is starting — the one answer for "the services are not available" on
every route.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine import Hearth, NotReadyError
from server.drain import Drain
from server.metrics import Metrics

if TYPE_CHECKING:
    from configs import Settings


@dataclass
class ServerState:
    settings: Settings
    metrics: Metrics
    hearth: Hearth | None = None
    start_error: str | None = None
    drain: Drain = field(default_factory=Drain)  # graceful shutdown (server.drain)

    def services(self) -> Hearth:
        if self.hearth is None:
            raise NotReadyError("Hearth is starting", retry_after=2)
        return self.hearth


def state_of(app: Any) -> ServerState:
    """The state ``create_app``'s lifespan put on the Litestar app."""
    return app.state.server


def services(request: Any) -> Hearth:
    """The started services of the request's app (503 while starting)."""
    return state_of(request.app).services()
