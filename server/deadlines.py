"""A deadline on every write to the client, so a slow reader cannot hold a generation's slot.

An SSE stream writes as the model produces tokens; the server's ``send`` waits while the socket's
buffer is full, i.e. while the client does not read. Without a deadline such a client keeps its
sequences running (and its slot taken) for as long as it likes. ``WriteDeadline`` wraps ``send``:
a body write that waits longer than ``timeout_s`` raises ``SlowReaderError``, which ends the
response; the stream's iterator is closed and the engine aborts its sequences.
"""

from __future__ import annotations

import asyncio
import logging

from litestar.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)


class SlowReaderError(ConnectionError):
    """The client did not read a response body within the write deadline."""


class WriteDeadline:
    def __init__(self, app: ASGIApp, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_within_deadline(message: Message) -> None:
            if message["type"] != "http.response.body":
                await send(message)
                return
            try:
                await asyncio.wait_for(send(message), self.timeout_s)
            except TimeoutError:
                log.warning(
                    "dropped %s: the client read nothing for %g s", scope["path"], self.timeout_s
                )
                raise SlowReaderError(f"write deadline of {self.timeout_s:g} s passed") from None

        await self.app(scope, receive, send_within_deadline)


def write_deadline(timeout_s: float):  # noqa: ANN201 - a Litestar middleware factory
    """The middleware for ``create_app``'s list: ``write_deadline(seconds)``."""

    def factory(app: ASGIApp) -> ASGIApp:
        return WriteDeadline(app, timeout_s)

    return factory
