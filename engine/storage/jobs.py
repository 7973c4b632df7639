"""Background jobs (ingestion): status, progress 0-100, counts and a JSON result."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from engine.errors import NotFoundError
from engine.storage.db import Store

QUEUED, RUNNING, SUCCEEDED, FAILED = "queued", "running", "succeeded", "failed"
TERMINAL = frozenset({SUCCEEDED, FAILED})


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

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL


_COLS = (
    "id, tenant_id, kind, collection_id, status, progress, total, done, failed, skipped, error, "
    "result, created_at, updated_at"
)


def _job(row: tuple) -> Job:
    values = list(row)
    values[11] = json.loads(values[11]) if values[11] else None
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

    def list(self, tenant_id: str, limit: int = 50) -> list[Job]:
        rows = self.store.fetchall(
            f"SELECT {_COLS} FROM jobs WHERE tenant_id = ? ORDER BY created_at DESC LIMIT ?",
            [tenant_id, limit],
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
        """At start-up: jobs a crash left queued/running become failed."""
        row = self.store.fetchone(
            "SELECT count(*) FROM jobs WHERE status IN (?, ?)", [QUEUED, RUNNING]
        )
        self.store.execute(
            "UPDATE jobs SET status = ?, progress = 100, error = ?, "
            "updated_at = current_timestamp WHERE status IN (?, ?)",
            [FAILED, "interrupted by a restart; upload the documents again", QUEUED, RUNNING],
        )
        return int(row[0]) if row else 0
