"""A backend whose step loop dies: the requests in flight fail with 503 instead of waiting
forever, a fresh loop is started, and /health says where the engine stands."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from litestar.testing import TestClient

from engine import GenerateRequest, OverloadedError, SamplingParams
from server.app import create_app
from tests.server.fakes import FakeParts, fake_settings
from tests.server.test_routes import wait_ready


def test_a_dead_step_loop_fails_its_requests_and_is_restarted(tmp_path: Path) -> None:
    settings = fake_settings(tmp_path)
    parts = FakeParts(settings)
    parts.backend.hold = True  # the request stays in flight

    def request(i: int) -> GenerateRequest:
        return GenerateRequest(
            request_id=f"r{i}",
            model=settings.llm.model,
            params=SamplingParams(max_tokens=4),
            prompt="hi",
        )

    async def main() -> None:
        hearth = await parts.open(settings)
        runner = hearth.engine.models.default
        try:
            in_flight = asyncio.create_task(_drain(hearth.engine.generate(request(0))))
            while not parts.backend.submitted:
                await asyncio.sleep(0.01)
            parts.backend._stop.set()  # the step loop dies
            with pytest.raises(OverloadedError) as err:
                await asyncio.wait_for(in_flight, 30)
            assert err.value.status == 503 and err.value.code == "engine_restarting"
            while not runner.ready:
                await asyncio.sleep(0.05)
            assert runner.restarts == 1
            parts.backend.hold = False
            events = await asyncio.wait_for(_drain(hearth.engine.generate(request(1))), 30)
            assert events  # served by the restarted loop
        finally:
            await hearth.close()

    asyncio.run(main())


async def _drain(events) -> list:
    return [e async for e in events]


def test_health_reports_the_engine(tmp_path: Path) -> None:
    settings = fake_settings(tmp_path)
    parts = FakeParts(settings)
    app = create_app(settings, open_services=parts.open, exit_on_start_failure=False)
    with TestClient(app, base_url="http://testclient") as client:
        wait_ready(client)
        assert client.get("/health").json() == {"status": "ok", "engine": "ready", "draining": False}
