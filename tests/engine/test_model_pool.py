"""The model pool on the stand-in backend: load on first use (once under concurrency), keep-alive
expiry, least-recently-used eviction within the memory budget, 503 when nothing is evictable."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from engine import ModelPool, NotFoundError, OverloadedError
from models import ModelCard
from tests.server.fakes import FakeBackend, fake_settings

OTHER = "smollm2-135m-instruct"
THIRD = "qwen2.5-coder-0.5b-instruct"


def _pool(tmp_path: Path, **models: object) -> tuple[ModelPool, list[str]]:
    settings = fake_settings(tmp_path)
    settings = dataclasses.replace(settings, models=dataclasses.replace(settings.models, **models))
    built: list[str] = []

    def factory(card: ModelCard) -> FakeBackend:
        built.append(card.id)
        return FakeBackend(card)

    from models import get_card

    default = FakeBackend(get_card(settings.llm.model))
    return ModelPool.from_settings(settings, default, backend_factory=factory), built


def test_loads_once_under_concurrent_first_requests(tmp_path: Path) -> None:
    pool, built = _pool(tmp_path)

    async def main() -> None:
        await pool.start()
        try:
            runners = await asyncio.gather(*(pool.acquire(OTHER) for _ in range(8)))
            assert {id(r) for r in runners} == {id(runners[0])}
            assert built == [OTHER]
            assert pool.is_loaded(OTHER) and pool.loads == 1
            with pytest.raises(NotFoundError, match="known"):
                await pool.acquire("no-such-model")
            with pytest.raises(NotFoundError):
                await pool.acquire("all-minilm-l6-v2")  # an embedding model cannot generate
        finally:
            await pool.close()

    asyncio.run(main())


def test_keep_alive_unloads_an_idle_model_and_the_next_use_reloads_it(tmp_path: Path) -> None:
    pool, built = _pool(tmp_path)

    async def main() -> None:
        await pool.start()
        try:
            async with pool.lease(OTHER, keep_alive=0):
                await pool.expire()
                assert pool.is_loaded(OTHER)  # never while leased
            await pool.expire()
            assert not pool.is_loaded(OTHER) and pool.unloads == 1
            assert pool.is_loaded(pool.default.card.id)  # the configured model stays
            async with pool.lease(OTHER, keep_alive=3600):
                pass
            await pool.expire()
            assert pool.is_loaded(OTHER) and built == [OTHER, OTHER]
        finally:
            await pool.close()

    asyncio.run(main())


def test_budget_evicts_the_least_recently_used_idle_model(tmp_path: Path) -> None:
    pool, _ = _pool(tmp_path)
    from models import get_card

    budget = (
        pool.estimate_bytes(pool.default.card)
        + pool.estimate_bytes(get_card(OTHER))
        + pool.estimate_bytes(get_card(THIRD))
        - 1
    )
    pool.settings = dataclasses.replace(
        pool.settings, models=dataclasses.replace(pool.settings.models, max_resident_bytes=budget)
    )

    async def main() -> None:
        await pool.start()
        try:
            await pool.acquire(OTHER)
            await pool.acquire(THIRD)  # OTHER is idle and least recently used: unloaded
            assert not pool.is_loaded(OTHER) and pool.is_loaded(THIRD)
            assert pool.resident_bytes() <= budget
        finally:
            await pool.close()

    asyncio.run(main())


def test_no_room_and_nothing_idle_is_a_503_after_a_bounded_wait(tmp_path: Path) -> None:
    pool, _ = _pool(tmp_path, load_wait_s=0.2)
    from models import get_card

    budget = pool.estimate_bytes(pool.default.card) + pool.estimate_bytes(get_card(THIRD))
    pool.settings = dataclasses.replace(
        pool.settings, models=dataclasses.replace(pool.settings.models, max_resident_bytes=budget)
    )

    async def main() -> None:
        await pool.start()
        try:
            async with pool.lease(OTHER):
                with pytest.raises(OverloadedError) as err:
                    await pool.acquire(THIRD)
                assert err.value.retry_after >= 1
            await pool.acquire(THIRD)  # OTHER is idle now: it makes room
            assert pool.is_loaded(THIRD) and not pool.is_loaded(OTHER)
        finally:
            await pool.close()

    asyncio.run(main())
