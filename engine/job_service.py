"""``JobService``: every background job — its row in DuckDB, the workers and the progress
stream. Another tenant's job answers 404 like a missing one.

Two kinds of body share one table, one id space and one set of routes:

- durable jobs (:mod:`engine.jobs`): a kind with a registered handler and a JSON payload stored
  with the row; acknowledged once committed, resumed after a restart or a kill -9, retried with
  backoff, dead-lettered, cancellable, retryable (:meth:`enqueue`);
- in-process jobs (document ingestion, classifier training, analysis): the row plus a closure
  held by :class:`engine.ingest.jobs.JobRunner`; one a crash interrupts is marked failed at the
  next start (:meth:`create` then :meth:`submit`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from engine.ingest.jobs import JobBody, JobRunner
from engine.jobs import Handler, JobQueue, QueueLimits, Workers
from engine.storage import Database, Job

if TYPE_CHECKING:
    from engine.limits import LimitService

log = logging.getLogger(__name__)

HEARTBEAT_S = 10.0
POLL_S = 0.25


class JobService:
    def __init__(
        self,
        db: Database,
        limits: LimitService | None = None,
        *,
        queue_limits: QueueLimits | None = None,
        concurrency: int = 1,
    ) -> None:
        """``limits``: each tenant's ``queued_jobs`` limit is checked before a job is created;
        ``queue_limits``: the durable queue's own bounds, lease and backoff."""
        self._db = db
        self._limits = limits
        self._runner = JobRunner(db)
        self.queue = JobQueue(db.store, queue_limits)
        self._workers = Workers(self.queue, concurrency=concurrency)

    async def start(self) -> None:
        """Fail the in-process jobs a crash left running, re-queue the durable ones, then start
        the workers."""
        failed = await asyncio.to_thread(self._db.jobs.fail_interrupted)
        if failed:
            log.warning("marked %d interrupted job(s) as failed", failed)
        self._runner.start()
        await self._workers.start()

    def forget_tenant(self, tenant: str) -> None:
        """Drop the tenant's jobs waiting in memory (``TenantDataService.purge``)."""
        self._runner.forget_tenant(tenant)

    async def close(self) -> None:
        """Stop the workers; a durable job cut short is re-queued at the next start."""
        await self._workers.close()
        await self._runner.close()

    # ---- durable jobs -------------------------------------------------------------------

    def register(self, kind: str, handler: Handler) -> None:
        """Run jobs of ``kind`` with ``handler`` (idempotent by job id: at-least-once)."""
        self._workers.register(kind, handler)

    async def enqueue(
        self,
        tenant: str,
        kind: str,
        payload: dict[str, Any],
        *,
        idempotency_key: str | None = None,
        max_attempts: int | None = None,
    ) -> Job:
        """Store a durable job; returns once committed. 429 past the tenant's ``queued_jobs``
        limit or past the queue's own bound; a replayed idempotency key returns the first job."""
        if self._limits is not None:
            await self._limits.check_storage(tenant, new_jobs=1)
        job = await asyncio.to_thread(
            self.queue.enqueue,
            tenant,
            kind,
            payload,
            idempotency_key=idempotency_key,
            max_attempts=max_attempts,
        )
        self._workers.wake()
        return job

    async def count_queued(self, tenant: str) -> int:
        """The tenant's durable jobs queued or running (the admission bound's measure)."""
        return await asyncio.to_thread(self.queue.count_queued, tenant)

    async def cancel(self, tenant: str, job_id: str) -> Job:
        return await asyncio.to_thread(self.queue.cancel, tenant, job_id)

    async def retry(self, tenant: str, job_id: str) -> Job:
        job = await asyncio.to_thread(self.queue.retry, tenant, job_id)
        self._workers.wake()
        return job

    # ---- in-process jobs ----------------------------------------------------------------

    async def create(self, tenant: str, kind: str, collection_id: str | None, total: int) -> Job:
        """Store a queued in-process job (then :meth:`submit` its body); 429 ``queued_jobs``
        when the tenant has as many queued or running already as its limit."""
        if self._limits is not None:
            await self._limits.check_storage(tenant, new_jobs=1)
        return await asyncio.to_thread(self._db.jobs.create, tenant, kind, collection_id, total)

    def submit(self, job: Job, body: JobBody) -> None:
        """Hand ``body`` to the in-process runner; those jobs run one at a time, tenants in
        turn."""
        self._runner.submit(job, body)

    # ---- every job ----------------------------------------------------------------------

    async def get(self, tenant: str, job_id: str) -> Job:
        return await asyncio.to_thread(self._db.jobs.get, tenant, job_id)

    async def list(self, tenant: str, status: str | None = None, limit: int = 50) -> list[Job]:
        return await asyncio.to_thread(self._db.jobs.list, tenant, limit, status)

    async def events(self, tenant: str, job_id: str) -> AsyncIterator[Job | None]:
        """Checks ownership first (404), then yields the job at every change until it ends;
        ``None`` is a heartbeat (nothing changed for ``HEARTBEAT_S``)."""
        job = await self.get(tenant, job_id)
        return self._watch(job)

    async def _watch(self, job: Job) -> AsyncIterator[Job | None]:
        last: tuple[Any, ...] | None = None
        quiet = 0.0
        while True:
            current = await self.get(job.tenant_id, job.id)
            seen = (
                current.status,
                current.progress,
                current.stage,
                current.done,
                current.failed,
                current.attempts,
            )
            if seen != last:
                last, quiet = seen, 0.0
                yield current
                if current.finished:
                    return
            elif quiet >= HEARTBEAT_S:
                quiet = 0.0
                yield None
            await asyncio.sleep(POLL_S)
            quiet += POLL_S

    async def wait(self, tenant: str, job_id: str) -> Job:
        """The job once it has finished."""
        async for job in await self.events(tenant, job_id):
            if job is not None and job.finished:
                return job
        return await self.get(tenant, job_id)
