"""Background jobs: status, progress 0-100 with a named stage, counts, attempts and a JSON result.

One table holds every job. Durable jobs (:mod:`engine.jobs`) also carry their payload and the
queue's bookkeeping (attempts, next run time, lease); the queue's SQL lives in
:class:`engine.jobs.queue.JobQueue`.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from engine.errors import NotFoundError
from engine.storage.db import Store, register_migration

QUEUED, RUNNING, SUCCEEDED, FAILED = "queued", "running", "succeeded", "failed"
DEAD, CANCELLED = "dead", "cancelled"
TERMINAL = frozenset({SUCCEEDED, FAILED, DEAD, CANCELLED})

# The durable queue's columns (a job with a payload is durable; run_at/lease_until are epoch s).
register_migration(
    "jobs",
    1,
    "durable queue: payload, attempts, backoff, lease, stage, idempotency key, cancel",
    """
    ALTER TABLE jobs ADD COLUMN payload JSON;
    ALTER TABLE jobs ADD COLUMN attempts INTEGER DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN max_attempts INTEGER DEFAULT 1;
    ALTER TABLE jobs ADD COLUMN run_at DOUBLE DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN lease_until DOUBLE;
    ALTER TABLE jobs ADD COLUMN stage TEXT;
    ALTER TABLE jobs ADD COLUMN idempotency_key TEXT;
    ALTER TABLE jobs ADD COLUMN cancel_requested BOOLEAN DEFAULT false
    """,
)


@dataclass(frozen=True)
class Job:
    id: str
    tenant_id: str
    kind: str
    collection_id: str | None
    status: str
    progress: int
    total: int
    done: int
    failed: int
    skipped: int
    error: str | None
    result: list[dict[str, Any]] | dict[str, Any] | None
    created_at: datetime
    updated_at: datetime
    attempts: int = 0
    max_attempts: int = 1
    stage: str | None = None
    payload: dict[str, Any] | None = None

    @property
    def durable(self) -> bool:
        """Run by the durable queue (its payload is stored), not by an in-process closure."""
        return self.payload is not None

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL


_COLS = (
    "id, tenant_id, kind, collection_id, status, progress, total, done, failed, skipped, error, "
    "result, created_at, updated_at, coalesce(attempts, 0), coalesce(max_attempts, 1), stage, "
    "payload"
)


def _job(row: tuple) -> Job:
    values = list(row)
    values[11] = json.loads(values[11]) if values[11] else None
    values[17] = json.loads(values[17]) if values[17] else None
    return Job(*values)


class JobRepo:
    def __init__(self, store: Store) -> None:
        self.store = store

    def create(self, tenant_id: str, kind: str, collection_id: str | None, total: int) -> Job:
        job_id = "job_" + secrets.token_hex(10)
        self.store.execute(
            "INSERT INTO jobs (id, tenant_id, kind, collection_id, status, total) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [job_id, tenant_id, kind, collection_id, QUEUED, total],
        )
        return self.get(tenant_id, job_id)

    def get(self, tenant_id: str, job_id: str) -> Job:
        row = self.store.fetchone(
            f"SELECT {_COLS} FROM jobs WHERE id = ? AND tenant_id = ?", [job_id, tenant_id]
        )
        if row is None:
            raise NotFoundError(f"job {job_id!r} not found", param="job_id")
        return _job(row)

    def list(self, tenant_id: str, limit: int = 50, status: str | None = None) -> list[Job]:
        where, params = "tenant_id = ?", [tenant_id]
        if status is not None:
            where, params = where + " AND status = ?", [*params, status]
        rows = self.store.fetchall(
            f"SELECT {_COLS} FROM jobs WHERE {where} ORDER BY created_at DESC LIMIT ?",
            [*params, limit],
        )
        return [_job(r) for r in rows]

    def update(
        self,
        job: Job,
        *,
        status: str,
        done: int,
        failed: int,
        skipped: int,
        error: str | None = None,
        result: Any = None,
    ) -> Job:
        """Record progress; progress is the share of items handled, 100 only when finished."""
        handled = done + failed + skipped
        progress = 100 if status in TERMINAL else min(99, (100 * handled) // max(job.total, 1))
        self.store.execute(
            "UPDATE jobs SET status = ?, progress = ?, done = ?, failed = ?, skipped = ?, "
            "error = ?, result = ?, updated_at = current_timestamp WHERE id = ?",
            [
                status,
                progress,
                done,
                failed,
                skipped,
                error,
                json.dumps(result) if result is not None else None,
                job.id,
            ],
        )
        return self.get(job.tenant_id, job.id)

    def fail_interrupted(self) -> int:
        """At start-up: in-process jobs (no stored payload) a crash left queued/running become
        failed; durable jobs are the queue's to resume (:meth:`JobQueue.recover`)."""
        row = self.store.fetchone(
            "SELECT count(*) FROM jobs WHERE status IN (?, ?) AND payload IS NULL",
            [QUEUED, RUNNING],
        )
        self.store.execute(
            "UPDATE jobs SET status = ?, progress = 100, error = ?, "
            "updated_at = current_timestamp WHERE status IN (?, ?) AND payload IS NULL",
            [FAILED, "interrupted by a restart; upload the documents again", QUEUED, RUNNING],
        )
        return int(row[0]) if row else 0
