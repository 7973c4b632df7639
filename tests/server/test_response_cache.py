"""The exact response cache on the stand-in model: a greedy or seeded request asked again is
answered without a backend call and says so in ``usage.cached``; sampled requests without a seed
and ``"cache": false`` always reach the model; the cache never answers one tenant with another's
generation."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from litestar.testing import TestClient

from engine import GenerateRequest
from engine.app import open_hearth
from engine.types import GenerationDone, SamplingParams
from server.app import create_app
from tests.server.fakes import FakeParts, fake_settings
from tests.server.test_routes import MODEL, wait_ready


@pytest.fixture
def parts_client(tmp_path: Path) -> Iterator[tuple[FakeParts, TestClient]]:
    settings = fake_settings(tmp_path)
    parts = FakeParts(settings)
    app = create_app(settings, open_services=parts.open, exit_on_start_failure=False)
    with TestClient(app, base_url="http://testclient") as c:
        wait_ready(c)
        yield parts, c


def _chat(c: TestClient, content: str, **extra) -> dict:
    body = {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 4}
    r = c.post("/v1/chat/completions", json=body | extra)
    assert r.status_code == 200, r.text
    return r.json()


def test_a_greedy_request_again_is_served_from_the_cache(parts_client) -> None:
    parts, c = parts_client
    first = _chat(c, "hello", temperature=0)
    calls = len(parts.backend.submitted)
    again = _chat(c, "hello", temperature=0)
    assert len(parts.backend.submitted) == calls  # no engine call
    assert again["usage"]["cached"] is True
    assert "cached" not in first["usage"]
    assert again["choices"][0]["message"] == first["choices"][0]["message"]
    assert again["usage"]["completion_tokens"] == first["usage"]["completion_tokens"]
    # A different prompt or parameter is a different key.
    _chat(c, "hello", temperature=0, max_tokens=3)
    assert len(parts.backend.submitted) == calls + 1


def test_seeded_requests_are_cached_unseeded_and_opted_out_are_not(parts_client) -> None:
    parts, c = parts_client
    _chat(c, "x", temperature=0.7, seed=5)
    assert _chat(c, "x", temperature=0.7, seed=5)["usage"].get("cached") is True
    calls = len(parts.backend.submitted)
    _chat(c, "y", temperature=0.7)
    _chat(c, "y", temperature=0.7)
    assert len(parts.backend.submitted) == calls + 2
    _chat(c, "z", temperature=0, cache=False)
    assert "cached" not in _chat(c, "z", temperature=0, cache=False)["usage"]
    assert len(parts.backend.submitted) == calls + 4


def test_the_cache_never_crosses_tenants(tmp_path: Path) -> None:
    settings = fake_settings(tmp_path)
    parts = FakeParts(settings)

    async def run() -> list[bool]:
        hearth = await parts.open(settings)
        try:
            while not hearth.engine.ready:
                await asyncio.sleep(0.01)
            cached = []
            for i, tenant in enumerate(["a", "b", "a", "b"]):
                req = GenerateRequest(
                    request_id=f"r{i}",
                    model=MODEL,
                    params=SamplingParams(max_tokens=3, temperature=0.0),
                    prompt="same prompt",
                    tenant=tenant,
                )
                done = [e async for e in hearth.engine.generate(req)][-1]
                assert isinstance(done, GenerationDone)
                cached.append(done.usage.cached)
            return cached
        finally:
            await hearth.close()

    assert asyncio.run(run()) == [False, False, True, True]
    assert len(parts.backend.submitted) == 2  # one generation per tenant
