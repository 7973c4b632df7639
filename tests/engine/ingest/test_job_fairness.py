"""Background jobs run one at a time, tenants in turn: one tenant's many queued jobs delay
another's next job by one job at most."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from engine.ingest.jobs import JobRunner, RoundRobin


def test_round_robin_serves_tenants_in_turn() -> None:
    async def main() -> list[str]:
        queue = RoundRobin()
        for i in range(5):
            queue.put("a", f"a{i}")
        queue.put("b", "b0")
        queue.put("c", "c0")
        return [await queue.get() for _ in range(queue.qsize())]

    assert asyncio.run(main()) == ["a0", "b0", "c0", "a1", "a2", "a3", "a4"]


def test_the_job_worker_serves_tenants_in_turn() -> None:
    ran: list[str] = []
    queued = SimpleNamespace(finished=False)
    db = SimpleNamespace(
        jobs=SimpleNamespace(update=lambda job, **fields: None, get=lambda tenant, job_id: queued)
    )

    def job(tenant: str, i: int) -> Any:
        return SimpleNamespace(id=f"{tenant}{i}", tenant_id=tenant)

    async def main() -> None:
        runner = JobRunner(db)  # type: ignore[arg-type]
        done = asyncio.Event()

        def body(name: str):
            async def run(report: Any) -> None:
                ran.append(name)
                if len(ran) == 6:
                    done.set()

            return run

        for i in range(5):  # tenant a queues five jobs before b queues one
            runner.submit(job("a", i), body(f"a{i}"))
        runner.submit(job("b", 0), body("b0"))
        runner.start()
        await asyncio.wait_for(done.wait(), 30)
        await runner.close()

    asyncio.run(main())
    assert ran.index("b0") <= 1
