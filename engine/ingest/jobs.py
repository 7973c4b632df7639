"""A background job runner: one worker runs queued jobs in order; progress goes to DuckDB and to
anyone watching ``events(job_id)`` (the SSE stream of ``GET /v1/jobs/{id}/events``).

Jobs run one at a time, on purpose: ingestion is CPU-bound (parsing, tokenizing, embedding) and
two jobs side by side would only slow each other and the chat requests sharing the cores. The
queue is per tenant, served in turn (``RoundRobin``): a tenant that queued many jobs delays
another tenant's next job by one job at most.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from engine.storage import Database, Job
from engine.storage.jobs import FAILED, RUNNING

log = logging.getLogger(__name__)

# A job's body: gets a ``report(done, failed, skipped, result)`` callback, returns the result.
JobBody = Callable[[Callable[..., Awaitable[None]]], Awaitable[Any]]

HEARTBEAT_S = 10.0


class RoundRobin:
    """Items queued per tenant; ``get`` returns the oldest item of the next tenant in turn (a
    tenant just served goes to the back). Event-loop only."""

    def __init__(self) -> None:
        self._queues: OrderedDict[str, deque[Any]] = OrderedDict()
        self._ready = asyncio.Event()

    def put(self, tenant: str, item: Any) -> None:
        self._queues.setdefault(tenant, deque()).append(item)
        self._ready.set()

    async def get(self) -> Any:
        while not self._queues:
            self._ready.clear()
            await self._ready.wait()
        tenant, queue = next(iter(self._queues.items()))
        item = queue.popleft()
        if queue:
            self._queues.move_to_end(tenant)
        else:
            del self._queues[tenant]
        return item

    def qsize(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def drop(self, tenant: str) -> None:
        self._queues.pop(tenant, None)


class JobRunner:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._queue = RoundRobin()  # of (job, body), per tenant
        self._changed: dict[str, asyncio.Event] = {}
        self._worker: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.create_task(self._run(), name="hearth-jobs")

    async def close(self) -> None:
        """Stop the worker; a job cut short stays ``running`` in DuckDB and fails at next start."""
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None

    def submit(self, job: Job, body: JobBody) -> None:
        self._queue.put(job.tenant_id, (job, body))
        self._changed.setdefault(job.id, asyncio.Event())

    def forget_tenant(self, tenant: str) -> None:
        """Drop the tenant's jobs still waiting in memory (their rows are gone)."""
        self._queue.drop(tenant)

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    async def _run(self) -> None:
        while True:
            job, body = await self._queue.get()
            try:
                await self._run_one(job, body)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("job %s crashed", job.id)

    async def _run_one(self, job: Job, body: JobBody) -> None:
        current = await asyncio.to_thread(self.db.jobs.get, job.tenant_id, job.id)
        if current.finished:  # cancelled while queued
            return
        counts = {"done": 0, "failed": 0, "skipped": 0}
        await self._update(job, RUNNING, **counts)

        async def report(done: int, failed: int, skipped: int, result: Any = None) -> None:
            counts.update(done=done, failed=failed, skipped=skipped)
            await self._update(job, RUNNING, result=result, **counts)

        try:
            result, status, error = await body(report), None, None
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("job %s failed", job.id)
            result, status, error = None, FAILED, str(exc)
        if status is None:
            status = "failed" if counts["failed"] and not counts["done"] else "succeeded"
            error = f"{counts['failed']} document(s) failed" if counts["failed"] else None
        await self._update(job, status, error=error, result=result, **counts)

    async def _update(self, job: Job, status: str, **fields: Any) -> None:
        await asyncio.to_thread(self.db.jobs.update, job, status=status, **fields)
        event = self._changed.pop(job.id, None)
        self._changed[job.id] = asyncio.Event()
        if event is not None:
            event.set()

    async def events(self, job: Job) -> AsyncIterator[Job | None]:
        """The job's state now and after every change until it finishes; ``None`` is a
        heartbeat (nothing changed for ``HEARTBEAT_S``)."""
        while True:
            event = self._changed.setdefault(job.id, asyncio.Event())
            current = await asyncio.to_thread(self.db.jobs.get, job.tenant_id, job.id)
            yield current
            if current.finished:
                return
            try:
                await asyncio.wait_for(event.wait(), HEARTBEAT_S)
            except TimeoutError:
                yield None
