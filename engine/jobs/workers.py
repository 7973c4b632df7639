"""Workers in the engine process: lease a job, run its kind's handler, heartbeat, record.

A handler is ``async def handler(ctx: JobContext) -> result`` (JSON-able). It runs at least
once per acknowledged job — again after a crash — so it must be idempotent by ``ctx.job.id``.
An exception fails the attempt (retried with backoff, then dead); a cancel asked for while it
runs cancels its task at the next heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from engine.jobs.queue import JobQueue
from engine.storage import Job

log = logging.getLogger(__name__)

POLL_S = 0.2


class JobCancelled(Exception):
    """Raised inside a handler's ``progress`` call once a cancel was asked for."""


@dataclass
class JobContext:
    """What a handler sees: its job (id, tenant, payload, attempt) and a progress reporter."""

    job: Job
    queue: JobQueue
    _cancelled: bool = field(default=False, repr=False)

    @property
    def payload(self) -> dict[str, Any]:
        return self.job.payload or {}

    async def progress(self, percent: int, stage: str | None = None) -> None:
        """Record progress 0-99 and a named stage; raises :class:`JobCancelled` on cancel."""
        alive = await asyncio.to_thread(self.queue.heartbeat, self.job.id, percent, stage)
        if not alive:
            self._cancelled = True
            raise JobCancelled(self.job.id)


Handler = Callable[[JobContext], Awaitable[Any]]


class Workers:
    """``concurrency`` loops over one :class:`JobQueue`; handlers registered by kind."""

    def __init__(self, queue: JobQueue, *, concurrency: int = 1) -> None:
        self.queue = queue
        self.concurrency = concurrency
        self._handlers: dict[str, Handler] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self._closing = False

    def register(self, kind: str, handler: Handler) -> None:
        self._handlers[kind] = handler
        self._wake.set()

    def wake(self) -> None:
        """A job was enqueued: look now instead of at the next poll."""
        self._wake.set()

    async def start(self) -> None:
        recovered = await asyncio.to_thread(self.queue.recover)
        if recovered:
            log.warning("re-queued %d durable job(s) a restart interrupted", recovered)
        for i in range(self.concurrency):
            self._tasks.append(asyncio.create_task(self._loop(), name=f"hearth-worker-{i}"))

    async def close(self) -> None:
        """Stop the loops; a job cut short stays ``running`` and is re-queued at next start."""
        self._closing = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        self._closing = False

    async def _loop(self) -> None:
        while not self._closing:
            job = await asyncio.to_thread(self.queue.lease, list(self._handlers))
            if job is None:
                self._wake.clear()
                # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancel that
                # arrives as its timeout fires, and close() would wait forever.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(POLL_S * 5):
                        await self._wake.wait()
                continue
            try:
                await self.run_one(job)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("worker failed to record job %s", job.id)

    async def run_one(self, job: Job) -> None:
        """Run one leased job to its recorded outcome."""
        ctx = JobContext(job, self.queue)
        task = asyncio.create_task(self._handlers[job.kind](ctx))
        beat = asyncio.create_task(self._heartbeat(job, task, ctx))
        try:
            result = await task
        except asyncio.CancelledError:
            if not ctx._cancelled:
                raise  # the worker itself is stopping: the job stays running (re-queued later)
            await asyncio.to_thread(self.queue.mark_cancelled, job.id)
            return
        except JobCancelled:
            await asyncio.to_thread(self.queue.mark_cancelled, job.id)
            return
        except Exception as exc:
            log.warning("job %s (%s) attempt %d failed: %s", job.id, job.kind, job.attempts, exc)
            await asyncio.to_thread(self.queue.fail, job.id, f"{type(exc).__name__}: {exc}")
            return
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
            if not task.done():
                task.cancel()
        await asyncio.to_thread(self.queue.succeed, job.id, result)

    async def _heartbeat(self, job: Job, task: asyncio.Task[Any], ctx: JobContext) -> None:
        interval = max(self.queue.limits.lease_s / 3, 0.05)
        while True:
            await asyncio.sleep(interval)
            if not await asyncio.to_thread(self.queue.heartbeat, job.id):
                ctx._cancelled = True
                task.cancel()
                return
