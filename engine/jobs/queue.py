"""The durable queue's SQL over the ``jobs`` table (rows with a payload).

States: ``queued -> running -> succeeded | dead | cancelled``; a failed attempt goes back to
``queued`` with ``run_at`` pushed out by exponential backoff with jitter until ``max_attempts``,
then ``dead`` with its last error. Every method is one transaction under the store's lock, so
``enqueue`` returns only after its row is committed (an acknowledged job survives kill -9).
Times are epoch seconds from an injectable clock (tests move it by hand).
"""

from __future__ import annotations

import json
import random
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from engine.errors import InvalidRequestError, NotFoundError, TooManyRequestsError
from engine.storage.db import Store
from engine.storage.jobs import _COLS, CANCELLED, DEAD, QUEUED, RUNNING, SUCCEEDED, Job, _job

Clock = Callable[[], float]

MAX_PAYLOAD_BYTES = 256 * 1024
MAX_KEY_CHARS = 200


@dataclass(frozen=True)
class QueueLimits:
    """Bounds of the queue: ``max_queued`` jobs queued or running per tenant (past it: 429);
    ``lease_s`` is the visibility timeout a heartbeat renews; backoff is
    ``min(backoff_s * 2**(attempt-1), max_backoff_s)`` times a jitter in [0.5, 1]."""

    max_queued: int = 1000
    lease_s: float = 30.0
    backoff_s: float = 1.0
    max_backoff_s: float = 300.0
    max_attempts: int = 5


class JobQueue:
    def __init__(
        self, store: Store, limits: QueueLimits | None = None, clock: Clock = time.time
    ) -> None:
        self.store = store
        self.limits = limits or QueueLimits()
        self.clock = clock

    # ---- producers ----------------------------------------------------------------------

    def enqueue(
        self,
        tenant_id: str,
        kind: str,
        payload: dict[str, Any],
        *,
        idempotency_key: str | None = None,
        max_attempts: int | None = None,
        delay_s: float = 0.0,
    ) -> Job:
        """Store a queued job and commit; the same ``idempotency_key`` of a tenant returns the
        job it first created instead of a second one."""
        body = json.dumps(payload)
        if len(body) > MAX_PAYLOAD_BYTES:
            raise InvalidRequestError(
                f"job payload is {len(body)} bytes; the limit is {MAX_PAYLOAD_BYTES}",
                param="payload",
            )
        if idempotency_key is not None and not 0 < len(idempotency_key) <= MAX_KEY_CHARS:
            raise InvalidRequestError(
                f"idempotency key must be 1-{MAX_KEY_CHARS} characters", param="Idempotency-Key"
            )
        attempts = max_attempts or self.limits.max_attempts
        if not 1 <= attempts <= 100:
            raise InvalidRequestError("max_attempts must be 1-100", param="max_attempts")
        job_id = "job_" + secrets.token_hex(10)
        with self.store.transaction() as conn:
            if idempotency_key is not None:
                row = conn.execute(
                    "SELECT id FROM jobs WHERE tenant_id = ? AND idempotency_key = ?",
                    [tenant_id, idempotency_key],
                ).fetchone()
                if row is not None:
                    job_id = row[0]
                    return self._get(conn, job_id)
            queued = self._count_active(conn, tenant_id)
            if queued >= self.limits.max_queued:
                raise TooManyRequestsError(
                    f"tenant has {queued} jobs queued or running (limit {self.limits.max_queued});"
                    " retry when some have finished",
                    retry_after=5,
                    code="job_queue_full",
                )
            conn.execute(
                "INSERT INTO jobs (id, tenant_id, kind, status, total, payload, attempts, "
                "max_attempts, run_at, idempotency_key) VALUES (?, ?, ?, ?, 1, ?, 0, ?, ?, ?)",
                [
                    job_id,
                    tenant_id,
                    kind,
                    QUEUED,
                    body,
                    attempts,
                    self.clock() + delay_s,
                    idempotency_key,
                ],
            )
            return self._get(conn, job_id)

    def count_queued(self, tenant_id: str) -> int:
        """Durable jobs of the tenant queued or running (what ``max_queued`` bounds)."""
        with self.store.transaction() as conn:
            return self._count_active(conn, tenant_id)

    # ---- workers ------------------------------------------------------------------------

    def lease(self, kinds: Sequence[str]) -> Job | None:
        """Take the next runnable job of one of ``kinds`` (or an expired lease), mark it
        ``running`` for ``lease_s``, count the attempt. Fair between tenants: the tenant with
        the fewest running jobs goes first, then the earliest ``run_at``."""
        if not kinds:
            return None
        now = self.clock()
        marks = ", ".join("?" * len(kinds))
        with self.store.transaction() as conn:
            self._bury_expired(conn, now)
            row = conn.execute(
                f"SELECT j.id FROM jobs j WHERE j.payload IS NOT NULL AND j.kind IN ({marks}) "
                "AND ((j.status = ? AND j.run_at <= ?) OR (j.status = ? AND j.lease_until < ?)) "
                "ORDER BY (SELECT count(*) FROM jobs r WHERE r.tenant_id = j.tenant_id "
                "AND r.status = ? AND r.payload IS NOT NULL), j.run_at, j.created_at LIMIT 1",
                [*kinds, QUEUED, now, RUNNING, now, RUNNING],
            ).fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE jobs SET status = ?, attempts = attempts + 1, lease_until = ?, "
                "updated_at = current_timestamp WHERE id = ?",
                [RUNNING, now + self.limits.lease_s, row[0]],
            )
            return self._get(conn, row[0])

    def heartbeat(self, job_id: str, progress: int | None = None, stage: str | None = None) -> bool:
        """Renew the lease (and record progress); False when a cancel was asked for."""
        now = self.clock()
        with self.store.transaction() as conn:
            conn.execute(
                "UPDATE jobs SET lease_until = ?, progress = coalesce(?, progress), "
                "stage = coalesce(?, stage), updated_at = current_timestamp "
                "WHERE id = ? AND status = ?",
                [
                    now + self.limits.lease_s,
                    None if progress is None else max(0, min(99, progress)),
                    stage,
                    job_id,
                    RUNNING,
                ],
            )
            row = conn.execute(
                "SELECT cancel_requested FROM jobs WHERE id = ?", [job_id]
            ).fetchone()
        return not (row and row[0])

    def succeed(self, job_id: str, result: Any) -> None:
        self._finish(job_id, SUCCEEDED, None, result)

    def fail(self, job_id: str, error: str) -> Job:
        """Record a failed attempt: back to ``queued`` after a backoff, or ``dead`` when the
        attempts are spent. Returns the job after the change."""
        with self.store.transaction() as conn:
            job = self._get(conn, job_id)
            if job.attempts >= job.max_attempts:
                self._set_final(conn, job_id, DEAD, error[:2000], None)
            else:
                delay = min(
                    self.limits.backoff_s * 2 ** max(job.attempts - 1, 0),
                    self.limits.max_backoff_s,
                ) * (0.5 + random.random() / 2)
                conn.execute(
                    "UPDATE jobs SET status = ?, run_at = ?, error = ?, lease_until = NULL, "
                    "updated_at = current_timestamp WHERE id = ?",
                    [QUEUED, self.clock() + delay, error[:2000], job_id],
                )
            return self._get(conn, job_id)

    def mark_cancelled(self, job_id: str) -> None:
        self._finish(job_id, CANCELLED, "cancelled", None)

    def recover(self) -> int:
        """At start-up (this process is the only worker): jobs a crash left ``running`` go back
        to ``queued`` now; their attempt stays counted. Returns how many."""
        with self.store.transaction() as conn:
            row = conn.execute(
                "SELECT count(*) FROM jobs WHERE payload IS NOT NULL AND status = ?", [RUNNING]
            ).fetchone()
            conn.execute(
                "UPDATE jobs SET status = ?, run_at = ?, lease_until = NULL, "
                "error = 'interrupted by a restart', updated_at = current_timestamp "
                "WHERE payload IS NOT NULL AND status = ?",
                [QUEUED, self.clock(), RUNNING],
            )
        return int(row[0]) if row else 0

    # ---- operators ----------------------------------------------------------------------

    def cancel(self, tenant_id: str, job_id: str) -> Job:
        """A queued job ends ``cancelled`` now; a running one is asked to stop (its worker
        sees it at the next heartbeat). A finished job answers 400."""
        with self.store.transaction() as conn:
            job = self._get(conn, job_id, tenant_id)
            if job.finished:
                raise InvalidRequestError(
                    f"job {job_id!r} is already {job.status}", param="job_id", code="job_finished"
                )
            if job.status == QUEUED:
                self._set_final(conn, job_id, CANCELLED, "cancelled", None)
            else:
                conn.execute(
                    "UPDATE jobs SET cancel_requested = true, updated_at = current_timestamp "
                    "WHERE id = ?",
                    [job_id],
                )
            return self._get(conn, job_id)

    def retry(self, tenant_id: str, job_id: str) -> Job:
        """Put a dead (or cancelled) durable job back in the queue with fresh attempts."""
        with self.store.transaction() as conn:
            job = self._get(conn, job_id, tenant_id)
            if not job.durable or job.status not in (DEAD, CANCELLED):
                raise InvalidRequestError(
                    f"only a dead or cancelled durable job can be retried; {job_id!r} is "
                    f"{job.status}",
                    param="job_id",
                    code="job_not_retryable",
                )
            conn.execute(
                "UPDATE jobs SET status = ?, attempts = 0, run_at = ?, cancel_requested = false, "
                "progress = 0, stage = NULL, updated_at = current_timestamp WHERE id = ?",
                [QUEUED, self.clock(), job_id],
            )
            return self._get(conn, job_id)

    def get(self, job_id: str) -> Job:
        with self.store.transaction() as conn:
            return self._get(conn, job_id)

    # ---- helpers ------------------------------------------------------------------------

    def _finish(self, job_id: str, status: str, error: str | None, result: Any) -> None:
        with self.store.transaction() as conn:
            self._set_final(conn, job_id, status, error, result)

    @staticmethod
    def _set_final(conn: Any, job_id: str, status: str, error: str | None, result: Any) -> None:
        conn.execute(
            "UPDATE jobs SET status = ?, error = ?, result = ?, progress = 100, "
            "lease_until = NULL, done = CASE WHEN ? = 'succeeded' THEN 1 ELSE 0 END, "
            "failed = CASE WHEN ? = 'dead' THEN 1 ELSE 0 END, "
            "updated_at = current_timestamp WHERE id = ?",
            [status, error, None if result is None else json.dumps(result), status, status, job_id],
        )

    def _bury_expired(self, conn: Any, now: float) -> None:
        """Expired leases with no attempt left are dead letters (the worker died each time)."""
        conn.execute(
            "UPDATE jobs SET status = ?, progress = 100, lease_until = NULL, "
            "error = coalesce(error, 'lease expired'), updated_at = current_timestamp "
            "WHERE payload IS NOT NULL AND status = ? AND lease_until < ? "
            "AND attempts >= max_attempts",
            [DEAD, RUNNING, now],
        )

    @staticmethod
    def _count_active(conn: Any, tenant_id: str) -> int:
        row = conn.execute(
            "SELECT count(*) FROM jobs WHERE tenant_id = ? AND payload IS NOT NULL "
            "AND status IN (?, ?)",
            [tenant_id, QUEUED, RUNNING],
        ).fetchone()
        return int(row[0]) if row else 0

    @staticmethod
    def _get(conn: Any, job_id: str, tenant_id: str | None = None) -> Job:
        row = conn.execute(f"SELECT {_COLS} FROM jobs WHERE id = ?", [job_id]).fetchone()
        if row is None or (tenant_id is not None and row[1] != tenant_id):
            raise NotFoundError(f"job {job_id!r} not found", param="job_id")
        return _job(row)
