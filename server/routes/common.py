"""Helpers every route module uses: the one body decoder, SSE, disconnects, merging streams."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from typing import Any, TypeVar

import msgspec
from litestar import Request
from litestar.response import Stream

from engine import HearthError
from server.errors import decode_error, error_body

log = logging.getLogger(__name__)
T = TypeVar("T")

_json = msgspec.json.Encoder()


async def read_body(request: Request, cls: type[T], *, empty: T | None = None) -> T:
    """Decode the JSON body into ``cls``: the one body decoder of every route. Any decode or
    validation problem (bad JSON, invalid UTF-8, too deep, wrong type, unknown field) is a 400
    naming the field (``server.errors.decode_error``). ``empty``: the value of an empty body
    (else an empty body is invalid JSON)."""
    raw = await request.body()
    if empty is not None and not raw.strip():
        return empty
    try:
        return msgspec.json.decode(raw, type=cls)
    except (
        msgspec.DecodeError,
        msgspec.ValidationError,
        RecursionError,
        UnicodeDecodeError,
    ) as exc:
        raise decode_error(exc) from None


def sse(data: Any) -> bytes:
    return b"data: " + _json.encode(data) + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"


def sse_stream(chunks: AsyncGenerator[bytes, None]) -> Stream:
    return Stream(
        content=_guard_stream(chunks),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _guard_stream(chunks: AsyncGenerator[bytes, None]) -> AsyncGenerator[bytes, None]:
    """An error after the 200 went out is reported in-band, then the stream ends cleanly."""
    try:
        async for chunk in chunks:
            yield chunk
    except HearthError as exc:
        yield sse(error_body(exc.message, exc.type, exc.param, exc.code))
        yield SSE_DONE
    except Exception:
        log.exception("stream failed")
        yield sse(error_body("internal error; see the server log", "server_error"))
        yield SSE_DONE
    finally:
        await chunks.aclose()


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Run ``work``; if the client goes away first, cancel it (which aborts its sequences)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_disconnect(request))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        task.cancel()
        try:
            await task
        except (asyncio.CancelledError, Exception):
            pass
        raise asyncio.CancelledError("client disconnected")
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()


async def _wait_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def merge(iterators: list[AsyncIterator[T]]) -> AsyncGenerator[tuple[int, T], None]:
    """Interleave several async iterators as (which, item); closes them all on exit."""
    if len(iterators) == 1:
        async for item in iterators[0]:
            yield 0, item
        return
    queue: asyncio.Queue[tuple[int, Any, BaseException | None, bool]] = asyncio.Queue()

    async def pump(k: int, it: AsyncIterator[T]) -> None:
        try:
            async for item in it:
                await queue.put((k, item, None, False))
            await queue.put((k, None, None, True))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            await queue.put((k, None, exc, True))

    tasks = [asyncio.create_task(pump(k, it)) for k, it in enumerate(iterators)]
    open_count = len(tasks)
    try:
        while open_count:
            k, item, exc, finished = await queue.get()
            if exc is not None and not isinstance(exc, asyncio.CancelledError):
                raise exc
            if finished:
                open_count -= 1
                continue
            yield k, item
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
