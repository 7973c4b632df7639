"""The durable queue on a real DuckDB file: ordering, fairness, lease expiry, retries with
backoff, dead letters, idempotency, cancel, the per-tenant bound, recovery after reopening, and
the workers running handlers end to end."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from engine.errors import InvalidRequestError, TooManyRequestsError
from engine.jobs import JobContext, JobQueue, QueueLimits, Workers
from engine.storage import Database, open_store


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def db(tmp_path: Path):
    database = open_store(tmp_path / "hearth.duckdb")
    yield database
    database.close()


def queue(db: Database, clock: Clock, **limits: float) -> JobQueue:
    return JobQueue(db.store, QueueLimits(**limits), clock)  # type: ignore[arg-type]


def test_fifo_order_and_completion(db: Database) -> None:
    clock = Clock()
    q = queue(db, clock)
    ids = []
    for i in range(3):
        ids.append(q.enqueue("t", "echo", {"i": i}).id)
        clock.now += 1
    leased = [q.lease(["echo"]) for _ in range(3)]
    assert [j.id for j in leased if j] == ids
    assert q.lease(["echo"]) is None
    assert all(j and j.status == "running" and j.attempts == 1 for j in leased)
    q.succeed(ids[0], {"ok": True})
    done = q.get(ids[0])
    assert (done.status, done.result, done.progress) == ("succeeded", {"ok": True}, 100)


def test_lease_only_registered_kinds_and_tenants_take_turns(db: Database) -> None:
    clock = Clock()
    q = queue(db, clock)
    a1 = q.enqueue("a", "k", {}).id
    clock.now += 1
    q.enqueue("a", "k", {})
    clock.now += 1
    b1 = q.enqueue("b", "k", {}).id
    q.enqueue("a", "other", {})
    assert q.lease(["nope"]) is None
    first, second = q.lease(["k"]), q.lease(["k"])
    # a1 is oldest; then tenant b (no job running) goes before a's second job.
    assert (first.id, second.id) == (a1, b1)  # type: ignore[union-attr]


def test_failures_back_off_then_dead_letter_then_retry(db: Database) -> None:
    clock = Clock()
    q = queue(db, clock, backoff_s=10.0)
    job_id = q.enqueue("t", "k", {}, max_attempts=2).id
    assert q.lease(["k"]) is not None
    after = q.fail(job_id, "boom 1")
    assert after.status == "queued" and after.error == "boom 1"
    assert q.lease(["k"]) is None  # backing off: 5-10 s
    clock.now += 10.01
    assert q.lease(["k"]) is not None
    dead = q.fail(job_id, "boom 2")
    assert (dead.status, dead.error, dead.attempts) == ("dead", "boom 2", 2)
    assert [j.id for j in db.jobs.list("t", status="dead")] == [job_id]
    again = q.retry("t", job_id)
    assert (again.status, again.attempts) == ("queued", 0)
    assert q.lease(["k"]).id == job_id  # type: ignore[union-attr]


def test_expired_lease_is_taken_again_and_buried_when_spent(db: Database) -> None:
    clock = Clock()
    q = queue(db, clock, lease_s=5.0)
    job_id = q.enqueue("t", "k", {}, max_attempts=2).id
    assert q.lease(["k"]) is not None
    clock.now += 3
    assert q.heartbeat(job_id, 40, "parsing") is True
    clock.now += 3  # renewed: not expired yet
    assert q.lease(["k"]) is None
    clock.now += 3
    again = q.lease(["k"])
    assert again is not None and again.attempts == 2 and again.stage == "parsing"
    clock.now += 6
    assert q.lease(["k"]) is None
    assert q.get(job_id).status == "dead"


def test_idempotency_key_returns_the_first_job(db: Database) -> None:
    q = queue(db, Clock())
    first = q.enqueue("t", "k", {"n": 1}, idempotency_key="order-7")
    replay = q.enqueue("t", "k", {"n": 2}, idempotency_key="order-7")
    other = q.enqueue("u", "k", {"n": 3}, idempotency_key="order-7")
    assert replay.id == first.id and replay.payload == {"n": 1}
    assert other.id != first.id
    assert q.count_queued("t") == 1


def test_cancel_queued_and_running(db: Database) -> None:
    q = queue(db, Clock())
    queued = q.enqueue("t", "k", {}).id
    running = q.enqueue("t", "k2", {}).id
    assert q.lease(["k2"]) is not None
    assert q.cancel("t", queued).status == "cancelled"
    assert q.lease(["k"]) is None
    assert q.cancel("t", running).status == "running"
    assert q.heartbeat(running) is False
    with pytest.raises(InvalidRequestError):
        q.cancel("t", queued)
    with pytest.raises(Exception, match="not found"):
        q.cancel("someone-else", running)


def test_per_tenant_bound_and_payload_bound(db: Database) -> None:
    q = queue(db, Clock(), max_queued=2)
    q.enqueue("t", "k", {})
    q.enqueue("t", "k", {})
    with pytest.raises(TooManyRequestsError) as err:
        q.enqueue("t", "k", {})
    assert err.value.retry_after > 0
    q.enqueue("u", "k", {})  # another tenant has its own bound
    assert (q.count_queued("t"), q.count_queued("u")) == (2, 1)
    with pytest.raises(InvalidRequestError):
        q.enqueue("u", "k", {"x": "y" * 300_000})


def test_running_jobs_are_requeued_after_reopening(tmp_path: Path) -> None:
    path = tmp_path / "hearth.duckdb"
    database = open_store(path)
    q = queue(database, Clock())
    job_id = q.enqueue("t", "k", {"n": 1}).id
    assert q.lease(["k"]) is not None
    database.close()  # as if the process died here
    database = open_store(path)
    try:
        q = queue(database, Clock())
        assert q.recover() == 1
        job = q.lease(["k"])
        assert job is not None and job.id == job_id and job.attempts == 2
        assert job.payload == {"n": 1}
    finally:
        database.close()


def test_workers_retry_a_flaky_handler_and_bury_a_poisoned_one(db: Database) -> None:
    calls: dict[str, int] = {}

    async def flaky(ctx: JobContext) -> dict[str, int]:
        calls[ctx.job.id] = calls.get(ctx.job.id, 0) + 1
        await ctx.progress(50, "half")
        if ctx.payload.get("poison") or calls[ctx.job.id] < 3:
            raise RuntimeError("not yet")
        return {"calls": calls[ctx.job.id]}

    async def main() -> None:
        q = JobQueue(db.store, QueueLimits(backoff_s=0.01, max_backoff_s=0.02, lease_s=1.0))
        workers = Workers(q)
        workers.register("flaky", flaky)
        await workers.start()
        try:
            good = q.enqueue("t", "flaky", {}, max_attempts=5).id
            bad = q.enqueue("t", "flaky", {"poison": True}, max_attempts=2).id
            workers.wake()
            for _ in range(200):
                if q.get(good).finished and q.get(bad).finished:
                    break
                await asyncio.sleep(0.05)
        finally:
            await workers.close()
        assert (q.get(good).status, q.get(good).result) == ("succeeded", {"calls": 3})
        assert (q.get(bad).status, q.get(bad).error) == ("dead", "RuntimeError: not yet")

    asyncio.run(main())


def test_workers_cancel_a_running_handler(db: Database) -> None:
    async def slow(ctx: JobContext) -> None:
        for i in range(1000):
            await ctx.progress(i % 100, "looping")
            await asyncio.sleep(0.01)

    async def main() -> None:
        q = JobQueue(db.store, QueueLimits(lease_s=0.3))
        workers = Workers(q)
        workers.register("slow", slow)
        await workers.start()
        try:
            job_id = q.enqueue("t", "slow", {}).id
            workers.wake()
            for _ in range(100):
                if q.get(job_id).status == "running":
                    break
                await asyncio.sleep(0.02)
            q.cancel("t", job_id)
            for _ in range(200):
                if q.get(job_id).finished:
                    break
                await asyncio.sleep(0.02)
        finally:
            await workers.close()
        assert q.get(job_id).status == "cancelled"

    asyncio.run(main())
