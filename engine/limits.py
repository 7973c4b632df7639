"""Limits per tenant and per API key, checked before any expensive work.

Eight limits (``[limits]`` in the config gives the defaults; 0 means unlimited), each overridable
for one tenant or one API key through the admin API (rows of ``limit_overrides``):

- ``requests_per_min``, ``tokens_per_min``, ``tokens_per_day``, ``concurrent_requests``:
  :meth:`LimitService.admit` checks them when a request arrives (the server calls it before the
  handler decodes anything) and returns a :class:`Ticket`; the request's tokens are charged to
  it when it ends (:meth:`Ticket.charge`) and its concurrency slot is given back
  (:meth:`Ticket.release`). Requests count in fixed one-minute windows; tokens per day in UTC
  days. A request is admitted while the window's tokens are under the limit (its own tokens are
  known only at its end, as OpenAI's estimate-free accounting does after the fact).
- ``stored_bytes``, ``collections``, ``documents``, ``queued_jobs``: :meth:`check_storage`
  counts the tenant's rows in DuckDB before an upload or a new collection is accepted.

Over a limit: ``TooManyRequestsError`` (429) whose ``code`` is the limit's name, with
Retry-After and the ``x-ratelimit-*`` headers OpenAI sends.

A key with overrides of its own is limited twice: by its tenant's figures (shared by every key
of the tenant) and by its own. Counters live in memory: a restart forgets the current minute and
day (usage itself is recorded in DuckDB).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.errors import InvalidRequestError, TooManyRequestsError
from engine.storage import register_migration

if TYPE_CHECKING:
    from engine.storage import Database

register_migration(
    "limits",
    1,
    "per-tenant and per-key limit overrides",
    """
CREATE TABLE limit_overrides (
    subject TEXT PRIMARY KEY,
    limits JSON NOT NULL,
    updated_at TIMESTAMP NOT NULL DEFAULT current_timestamp
)
""",
)


@dataclass(frozen=True)
class Quota:
    """The limits that apply to one tenant or key; 0 = unlimited."""

    requests_per_min: int = 0
    tokens_per_min: int = 0
    tokens_per_day: int = 0
    concurrent_requests: int = 0
    queued_jobs: int = 0
    stored_bytes: int = 0
    collections: int = 0
    documents: int = 0

    def merged(self, overrides: Mapping[str, int]) -> Quota:
        return dataclasses.replace(self, **overrides) if overrides else self


LIMIT_NAMES = tuple(f.name for f in dataclasses.fields(Quota))
_MAX_LIMIT = 10**15


def check_overrides(raw: object) -> dict[str, int | None]:
    """Validate an admin's ``{"limit name": int >= 0 | null}`` (null removes the override)."""
    if not isinstance(raw, dict):
        raise InvalidRequestError("limits must be an object of limit names", param="limits")
    out: dict[str, int | None] = {}
    for name, value in raw.items():
        if name not in LIMIT_NAMES:
            raise InvalidRequestError(
                f"unknown limit {name!r}; limits are {', '.join(LIMIT_NAMES)}",
                param=f"limits.{name}",
            )
        ok = value is None or (
            isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_LIMIT
        )
        if not ok:
            raise InvalidRequestError(
                f"limits.{name} must be a whole number >= 0 (0 = unlimited) or null",
                param=f"limits.{name}",
            )
        out[name] = value
    return out


@dataclass
class _Counters:
    window: int = -1  # the minute (epoch seconds // 60) the counts belong to
    requests: int = 0
    tokens: int = 0
    day: int = -1  # the UTC day (epoch seconds // 86400)
    day_tokens: int = 0
    running: int = 0

    def roll(self, now: float) -> None:
        minute, day = int(now // 60), int(now // 86400)
        if minute != self.window:
            self.window, self.requests, self.tokens = minute, 0, 0
        if day != self.day:
            self.day, self.day_tokens = day, 0


@dataclass
class Ticket:
    """One admitted request. ``headers``: the ``x-ratelimit-*`` headers for its response."""

    headers: dict[str, str]
    _counters: list[_Counters]
    _lock: threading.Lock
    _clock: Callable[[], float]
    _released: bool = False

    def charge(self, tokens: int) -> None:
        """Add the request's tokens (prompt + completion) to its minute and day."""
        if tokens <= 0:
            return
        with self._lock:
            now = self._clock()
            for c in self._counters:
                c.roll(now)
                c.tokens += tokens
                c.day_tokens += tokens

    def release(self) -> None:
        """The request ended: give its concurrency slot back (once)."""
        with self._lock:
            if not self._released:
                self._released = True
                for c in self._counters:
                    c.running -= 1


class LimitService:
    """Admission by limits, their overrides, and the storage checks. Thread-safe."""

    def __init__(
        self,
        defaults: Quota,
        db: Database | None,
        overrides: dict[str, dict[str, int]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Use :meth:`open`; ``clock`` (epoch seconds) is for tests."""
        self.defaults = defaults
        self._db = db
        self._overrides = overrides or {}
        self._clock = clock
        self._lock = threading.Lock()
        self._counters: dict[str, _Counters] = {}

    @classmethod
    async def open(cls, defaults: Quota, db: Database) -> LimitService:
        rows = await asyncio.to_thread(
            db.store.fetchall, "SELECT subject, limits FROM limit_overrides"
        )
        return cls(defaults, db, {subject: json.loads(raw) for subject, raw in rows})

    # ---- limits and their overrides ---------------------------------------------------------

    def quota(self, tenant: str, key_id: str | None = None) -> Quota:
        """The limits of ``tenant``, or of its key ``key_id`` (defaults < tenant < key)."""
        quota = self.defaults.merged(self._overrides.get(tenant, {}))
        return quota.merged(self._overrides.get(key_id, {})) if key_id else quota

    def overrides(self, subject: str) -> dict[str, int]:
        return dict(self._overrides.get(subject, {}))

    async def set_overrides(self, subject: str, changes: dict[str, int | None]) -> dict[str, int]:
        """Merge ``changes`` into the overrides of a tenant or key id (None removes one)."""
        current = self.overrides(subject)
        for name, value in changes.items():
            if value is None:
                current.pop(name, None)
            else:
                current[name] = value
        if self._db is not None:
            await asyncio.to_thread(self._store, subject, current)
        self._overrides[subject] = current
        return current

    def _store(self, subject: str, limits: dict[str, int]) -> None:
        assert self._db is not None
        with self._db.store.transaction() as con:
            con.execute("DELETE FROM limit_overrides WHERE subject = ?", [subject])
            if limits:
                con.execute(
                    "INSERT INTO limit_overrides (subject, limits) VALUES (?, ?)",
                    [subject, json.dumps(limits)],
                )

    def forget_tenant(self, tenant: str) -> None:
        """After a purge: reread the overrides (the tenant's and its keys' rows are gone) and
        drop counters of subjects that no longer have any."""
        assert self._db is not None
        rows = self._db.store.fetchall("SELECT subject, limits FROM limit_overrides")
        keys = {r[0] for r in self._db.store.fetchall("SELECT id FROM api_keys")}
        with self._lock:
            self._overrides = {subject: json.loads(raw) for subject, raw in rows}
            for subject in list(self._counters):
                if subject == tenant or (subject.startswith("key_") and subject not in keys):
                    del self._counters[subject]

    # ---- admission ---------------------------------------------------------------------------

    def admit(self, tenant: str, key_id: str | None = None) -> Ticket:
        """Admit one request of ``tenant`` (through ``key_id``) or raise 429 naming the limit."""
        scopes = [(tenant, self.quota(tenant))]
        if key_id and key_id in self._overrides:
            scopes.append((key_id, self.quota(tenant, key_id)))
        with self._lock:
            now = self._clock()
            counters = []
            for subject, quota in scopes:
                c = self._counters.setdefault(subject, _Counters())
                c.roll(now)
                error = _over(subject, quota, c, now)
                if error is not None:
                    error.headers = _headers(quota, c, now)
                    raise error
                counters.append(c)
            for c in counters:
                c.requests += 1
                c.running += 1
            headers = _headers(scopes[-1][1], counters[-1], now)
        return Ticket(headers, counters, self._lock, self._clock)

    def charge(self, tenant: str, tokens: int) -> None:
        """Charge tokens used outside an admitted request's ticket (task pipelines) to the
        tenant's minute and day."""
        if tokens <= 0:
            return
        with self._lock:
            c = self._counters.setdefault(tenant, _Counters())
            c.roll(self._clock())
            c.tokens += tokens
            c.day_tokens += tokens

    # ---- storage -----------------------------------------------------------------------------

    async def check_storage(
        self,
        tenant: str,
        *,
        new_bytes: int = 0,
        new_documents: int = 0,
        new_collections: int = 0,
        new_jobs: int = 0,
    ) -> None:
        """429 naming the limit if storing this much more would pass one of the tenant's."""
        quota = self.quota(tenant)
        wanted = {
            "stored_bytes": new_bytes,
            "documents": new_documents,
            "collections": new_collections,
            "queued_jobs": new_jobs,
        }
        checks = {name: n for name, n in wanted.items() if n and getattr(quota, name)}
        if not checks or self._db is None:
            return
        used = await asyncio.to_thread(self._storage_used, tenant)
        for name, adding in checks.items():
            limit = getattr(quota, name)
            if used[name] + adding > limit:
                raise TooManyRequestsError(
                    f"limit {name} reached for tenant {tenant!r}: {used[name]} in use, "
                    f"{adding} more requested, the limit is {limit}. Delete some or ask the "
                    "operator to raise it",
                    retry_after=60,
                    code=name,
                )

    def _storage_used(self, tenant: str) -> dict[str, int]:
        assert self._db is not None
        store = self._db.store
        docs = store.fetchone(
            "SELECT count(*), coalesce(sum(n_bytes), 0) FROM documents WHERE tenant_id = ?",
            [tenant],
        ) or (0, 0)
        cols = store.fetchone("SELECT count(*) FROM collections WHERE tenant_id = ?", [tenant])
        jobs = store.fetchone(
            "SELECT count(*) FROM jobs WHERE tenant_id = ? AND status IN ('queued', 'running')",
            [tenant],
        )
        return {
            "documents": int(docs[0]),
            "stored_bytes": int(docs[1]),
            "collections": int(cols[0] if cols else 0),
            "queued_jobs": int(jobs[0] if jobs else 0),
        }


def _over(subject: str, quota: Quota, c: _Counters, now: float) -> TooManyRequestsError | None:
    minute_left = _ceil(60 - now % 60)
    day_left = _ceil(86400 - now % 86400)
    over = [
        ("concurrent_requests", c.running, 1),
        ("requests_per_min", c.requests, minute_left),
        ("tokens_per_min", c.tokens, minute_left),
        ("tokens_per_day", c.day_tokens, day_left),
    ]
    for name, used, wait in over:
        limit = getattr(quota, name)
        if limit and used >= limit:
            return TooManyRequestsError(
                f"Rate limit reached for {name} on {subject}: limit {limit}, used {used}. "
                f"Retry after {wait} s",
                retry_after=wait,
                code=name,
            )
    return None


def _headers(quota: Quota, c: _Counters, now: float) -> dict[str, str]:
    """OpenAI's ``x-ratelimit-*`` headers for the limits that are set (after this request)."""
    reset = _duration(60 - now % 60)
    headers = {}
    if quota.requests_per_min:
        headers["x-ratelimit-limit-requests"] = str(quota.requests_per_min)
        headers["x-ratelimit-remaining-requests"] = str(max(0, quota.requests_per_min - c.requests))
        headers["x-ratelimit-reset-requests"] = reset
    if quota.tokens_per_min:
        headers["x-ratelimit-limit-tokens"] = str(quota.tokens_per_min)
        headers["x-ratelimit-remaining-tokens"] = str(max(0, quota.tokens_per_min - c.tokens))
        headers["x-ratelimit-reset-tokens"] = reset
    return headers


def _ceil(seconds: float) -> int:
    return max(1, math.ceil(seconds))


def _duration(seconds: float) -> str:
    """OpenAI's reset format: ``"1s"``, ``"6m0s"``, ``"250ms"``."""
    if seconds < 1:
        return f"{int(seconds * 1000)}ms"
    whole = math.ceil(seconds)
    minutes, secs = divmod(whole, 60)
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"
