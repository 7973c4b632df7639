"""``JobService``: background jobs (ingestion, classifier training, document analysis) — their
rows in DuckDB, the worker that runs them (:class:`engine.ingest.jobs.JobRunner`) and the progress
stream. Another tenant's job answers 404 like a missing one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from engine.ingest.jobs import JobBody, JobRunner
from engine.storage import Database, Job

if TYPE_CHECKING:
    from engine.limits import LimitService

log = logging.getLogger(__name__)


class JobService:
    def __init__(self, db: Database, limits: LimitService | None = None) -> None:
        """``limits``: each tenant's ``queued_jobs`` limit is checked before a job is created."""
        self._db = db
        self._limits = limits
        self._runner = JobRunner(db)

    async def start(self) -> None:
        """Fail the jobs a crash left running, then start the worker."""
        failed = await asyncio.to_thread(self._db.jobs.fail_interrupted)
        if failed:
            log.warning("marked %d interrupted job(s) as failed", failed)
        self._runner.start()

    async def close(self) -> None:
        """Stop the worker; a job cut short stays ``running`` and fails at the next start."""
        await self._runner.close()

    async def create(self, tenant: str, kind: str, collection_id: str | None, total: int) -> Job:
        """Store a queued job (then :meth:`submit` its body); 429 ``queued_jobs`` when the tenant
        has as many queued or running already as its limit."""
        if self._limits is not None:
            await self._limits.check_storage(tenant, new_jobs=1)
        return await asyncio.to_thread(self._db.jobs.create, tenant, kind, collection_id, total)

    def submit(self, job: Job, body: JobBody) -> None:
        """Hand ``body`` to the worker; jobs run one at a time, tenants in turn."""
        self._runner.submit(job, body)

    async def get(self, tenant: str, job_id: str) -> Job:
        return await asyncio.to_thread(self._db.jobs.get, tenant, job_id)

    async def list(self, tenant: str) -> list[Job]:
        return await asyncio.to_thread(self._db.jobs.list, tenant)

    async def events(self, tenant: str, job_id: str) -> AsyncIterator[Job | None]:
        """Checks ownership first (404), then yields the job at every change until it ends;
        ``None`` is a heartbeat."""
        job = await self.get(tenant, job_id)
        return self._runner.events(job)

    async def wait(self, tenant: str, job_id: str) -> Job:
        """The job once it has finished."""
        async for job in await self.events(tenant, job_id):
            if job is not None and job.finished:
                return job
        return await self.get(tenant, job_id)
