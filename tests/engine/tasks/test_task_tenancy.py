"""Task pipelines' engine calls carry the tenant being served (their cached prompt prefixes stay
within it) and their tokens count against the tenant's token limits."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from engine import LimitService, Quota, TooManyRequestsError, current_tenant
from engine.tasks.llm import EngineLLM
from engine.types import GenerationDone, Usage


class _Engine:
    settings = SimpleNamespace(llm=SimpleNamespace(max_running=2))
    card = SimpleNamespace(id="m")

    def __init__(self) -> None:
        self.requests: list[Any] = []

    async def generate(self, request: Any):
        self.requests.append(request)
        yield GenerationDone(Usage(3, 1), None, "", None)


def test_task_requests_name_the_tenant_being_served() -> None:
    engine = _Engine()
    llm = EngineLLM(engine, model="m")

    async def as_tenant(tenant: str) -> None:
        current_tenant.set(tenant)
        await llm.complete("Classify this.", max_tokens=1)

    asyncio.run(as_tenant("ten_a"))
    asyncio.run(as_tenant("ten_b"))
    assert [r.tenant for r in engine.requests] == ["ten_a", "ten_b"]


def test_task_tokens_count_against_the_tenants_limit() -> None:
    limits = LimitService(Quota(tokens_per_min=10), None)
    limits.charge("ten_a", 10)
    with pytest.raises(TooManyRequestsError) as err:
        limits.admit("ten_a")
    assert err.value.code == "tokens_per_min"
    limits.admit("ten_b").release()
