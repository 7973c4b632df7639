"""Graceful shutdown: on SIGTERM Hearth drains before it exits.

1. The first SIGTERM (or SIGINT) starts the drain: ``/ready`` turns 503 (``draining``), and every
   new request but ``/health`` and ``/ready`` is answered 503 ``draining`` with ``Retry-After``
   (a load balancer moves its traffic elsewhere; a client retries later).
2. Requests already in flight run to their end, for at most ``server.drain_timeout_s`` seconds.
3. Past that deadline each request still running is cancelled (its sequences are aborted in the
   engine): a stream that already answered 200 ends with a terminal SSE error event
   (``code: "draining"``) and ``data: [DONE]``; one that had not answered gets the 503.
4. Then the server stops as before: the listening socket closes and the services close in reverse
   order (job worker, indexes saved, DuckDB, engine). A second signal exits at once.

``Drain`` holds the state (shared by the middleware, ``/ready`` and the server);
``DrainGate`` is the ASGI middleware; ``DrainingServer`` is uvicorn's server with the SIGTERM
handler that starts the drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from types import FrameType
from typing import Any

import uvicorn
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from engine import ShuttingDownError
from server.errors import error_body, send_error
from server.routes.common import SSE_DONE, sse

log = logging.getLogger(__name__)

# Routes that still answer while draining: liveness and readiness (which says "draining").
_ALWAYS_OPEN = frozenset({"/health", "/ready"})
DRAIN_RETRY_AFTER_S = 5
_MESSAGE = "Hearth is shutting down; retry on another instance or after it restarts"


class Drain:
    """Whether the server drains, how many requests are in flight, and the drain's deadline."""

    def __init__(self) -> None:
        self.draining = False
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._expired = asyncio.Event()

    def begin(self) -> None:
        if not self.draining:
            log.warning("draining: new requests are refused, %d in flight", self.in_flight)
        self.draining = True

    def enter(self) -> None:
        self.in_flight += 1
        self._idle.clear()

    def leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    async def run(self, timeout_s: float) -> None:
        """Drain: refuse new requests, wait up to ``timeout_s`` for those in flight, then cancel
        the rest (``DrainGate`` ends each with a terminal event) and wait for them to go."""
        self.begin()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            log.warning("drain timeout (%g s): ending %d requests", timeout_s, self.in_flight)
            self._expired.set()
            await self._idle.wait()
        log.info("drained")

    async def expired(self) -> None:
        await self._expired.wait()


class DrainGate:
    """Counts requests in flight; refuses new ones while draining; ends the stragglers."""

    def __init__(self, app: ASGIApp, drain: Drain) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in _ALWAYS_OPEN:
            await self.app(scope, receive, send)
            return
        if self.drain.draining:
            await send_error(send, _draining())
            return
        self.drain.enter()
        try:
            await self._run(scope, receive, send)
        finally:
            self.drain.leave()

    async def _run(self, scope: Scope, receive: Receive, send: Send) -> None:
        started: dict[str, Any] = {}  # "sse": bool, "done": bool
        closed = False

        async def sending(message: Message) -> None:
            if closed:  # the drain already ended this response
                raise ConnectionError("the response was ended by the drain")
            if message["type"] == "http.response.start":
                started["sse"] = any(
                    k.lower() == b"content-type" and v.startswith(b"text/event-stream")
                    for k, v in message.get("headers", [])
                )
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                started["done"] = True
            await send(message)

        task = asyncio.ensure_future(self.app(scope, receive, sending))
        expiry = asyncio.ensure_future(self.drain.expired())
        try:
            await asyncio.wait({task, expiry}, return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                task.result()
                return
            task.cancel()  # the handler's finally aborts its sequences in the engine
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            closed = True
            if started.get("done"):
                return
            if "sse" not in started:
                await send_error(send, _draining())
            elif started["sse"]:
                exc = _draining()
                event = sse(error_body(exc.message, exc.type, exc.param, exc.code))
                await send({"type": "http.response.body", "body": event, "more_body": True})
                await send({"type": "http.response.body", "body": SSE_DONE})
            else:
                await send({"type": "http.response.body", "body": b""})
        finally:
            expiry.cancel()
            if not task.done():
                task.cancel()


def _draining() -> ShuttingDownError:
    """The answer to a request the drain refuses or ends (a 503 through the one error table)."""
    exc = ShuttingDownError(_MESSAGE, retry_after=DRAIN_RETRY_AFTER_S, code="draining")
    exc.headers["Connection"] = "close"
    return exc


def drain_gate(drain: Drain):  # noqa: ANN201 - a Litestar middleware factory
    """The middleware for ``create_app``'s list: ``drain_gate(drain)``."""

    def factory(app: ASGIApp) -> ASGIApp:
        return DrainGate(app, drain)

    return factory


class DrainingServer(uvicorn.Server):
    """uvicorn's server whose first SIGTERM/SIGINT drains (see the module) before it exits."""

    def __init__(self, config: uvicorn.Config, drain: Drain, timeout_s: float) -> None:
        super().__init__(config)
        self.drain = drain
        self.timeout_s = timeout_s
        self._signalled = False
        self._draining: asyncio.Task[None] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._signalled or self.should_exit:
            super().handle_exit(sig, frame)  # a second signal: exit now
            self.force_exit = True
            return
        log.info("received %s", signal.Signals(sig).name)
        self._signalled = True
        self._captured_signals.append(sig)
        # A signal handler runs between bytecodes, possibly inside the loop's own code: start the
        # drain from a callback of the loop instead.
        asyncio.get_event_loop().call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        if self._draining is None:
            self._draining = asyncio.create_task(self._drain_then_exit(), name="hearth-drain")

    async def _drain_then_exit(self) -> None:
        try:
            await self.drain.run(self.timeout_s)
        finally:
            self.should_exit = True
