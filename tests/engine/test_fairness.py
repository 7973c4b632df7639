"""Fair admission: a tenant with many queued requests cannot starve one with a single request,
both in the queue itself and through the engine on the stand-in backend."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from engine import GenerateRequest, GenerationDone, SamplingParams
from engine.fairness import FairQueue
from tests.server.fakes import FakeParts, fake_settings


def test_round_robin_across_tenants() -> None:
    async def main() -> list[str]:
        fair = FairQueue(capacity=1)
        order: list[str] = []

        async def one(tenant: str) -> None:
            n = await fair.acquire(tenant)
            order.append(tenant)
            await asyncio.sleep(0)
            fair.release(n)

        first = await fair.acquire("a")  # the batch is full
        tasks = [asyncio.create_task(one("a")) for _ in range(100)]
        await asyncio.sleep(0)
        tasks.append(asyncio.create_task(one("b")))  # queued after a's hundred
        await asyncio.sleep(0)
        assert fair.waiting == 101
        fair.release(first)
        await asyncio.gather(*tasks)
        return order

    order = asyncio.run(main())
    assert order.index("b") <= 1  # served within one round, not after a's hundred
    assert len(order) == 101


def test_a_cancelled_waiter_leaves_its_place_and_room() -> None:
    async def main() -> None:
        fair = FairQueue(capacity=1)
        held = await fair.acquire("a")
        waiter = asyncio.create_task(fair.acquire("b"))
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert fair.waiting == 0
        fair.release(held)
        assert fair.used == 0
        assert await fair.acquire("c") == 1  # nothing leaked

    asyncio.run(main())


def test_the_engine_serves_tenants_in_turn(tmp_path: Path) -> None:
    settings = fake_settings(tmp_path)
    settings = dataclasses.replace(settings, llm=dataclasses.replace(settings.llm, max_running=1))
    parts = FakeParts(settings)
    started: list[int] = []  # a's requests in the backend when b arrives

    async def main() -> None:
        hearth = await parts.open(settings)
        try:

            async def run(tenant: str, i: int) -> None:
                request = GenerateRequest(
                    request_id=f"{tenant}-{i}",
                    model=settings.llm.model,
                    params=SamplingParams(max_tokens=2),
                    prompt="hi",
                    tenant=tenant,
                )
                events = [e async for e in hearth.engine.generate(request)]
                assert isinstance(events[-1], GenerationDone)

            parts.backend.hold = True  # a's first request stays in the batch until b is queued
            flood = [asyncio.create_task(run("a", i)) for i in range(12)]
            fair = hearth.engine.models.default._fair
            while fair.waiting < 11 or not parts.backend.submitted:  # one of a's runs, eleven wait
                await asyncio.sleep(0.001)
            started.append(len(parts.backend.submitted))
            late = asyncio.create_task(run("b", 0))
            while fair.waiting < 12:  # b is queued behind a's eleven
                await asyncio.sleep(0.001)
            parts.backend.hold = False
            await asyncio.gather(late, *flood)
        finally:
            await hearth.close()

    asyncio.run(main())
    order = [r.cache_salt for r in parts.backend.submitted]
    assert len(order) == 13
    assert started == [1]  # only a's first request had reached the backend when b arrived
    # b's one request went within one round (at most one more of a's first), not after a's eleven
    assert order.index("b") <= 2
