"""Requests that would never finish are ended: an empty token prompt is a 400 at admission, a
request's ``timeout`` (at most the server's maximum) aborts it with 408 and frees its slot, and a
client that stops reading an SSE stream is dropped at the write deadline (its sequences abort)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from server.app import create_app
from server.deadlines import SlowReaderError
from tests.server.fakes import FakeParts, fake_settings
from tests.server.test_routes import MODEL, MSG, running, sse_events, wait_ready


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[TestClient, FakeParts]]:
    settings = fake_settings(tmp_path)
    settings = dataclasses.replace(
        settings, llm=dataclasses.replace(settings.llm, request_timeout_s=30.0)
    )
    parts = FakeParts(settings)
    app = create_app(settings, open_services=parts.open, exit_on_start_failure=False)
    with TestClient(app, base_url="http://testclient") as c:
        wait_ready(c)
        yield c, parts


@pytest.mark.parametrize("prompt", [[[]], [[1, 2], []]])
def test_an_empty_token_prompt_is_a_400(setup: tuple[TestClient, FakeParts], prompt: Any) -> None:
    client, parts = setup
    r = client.post("/v1/completions", json={"model": MODEL, "prompt": prompt, "max_tokens": 2})
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"
    assert not parts.backend.submitted


@pytest.mark.parametrize("stream", [False, True])
def test_a_request_past_its_timeout_is_aborted_with_408(
    setup: tuple[TestClient, FakeParts], stream: bool
) -> None:
    client, parts = setup
    parts.backend.hold = True  # the sequence never finishes on its own
    body = {"model": MODEL, "messages": MSG, "timeout": 0.5, "stream": stream}
    r = client.post("/v1/chat/completions", json=body)
    if stream:
        assert r.status_code == 200
        error = json.loads(sse_events(r.text)[-2])["error"]
    else:
        assert r.status_code == 408
        error = r.json()["error"]
    assert error["code"] == "request_timeout" and error["param"] == "timeout"
    assert [s.request_id for s in parts.backend.submitted] == parts.backend.aborted
    # The slot is free again: nothing of that request is still admitted.
    assert client.app.state.server.hearth.engine.models.default.inflight == 0


@pytest.mark.parametrize("timeout", [0, -1, 31])
def test_a_timeout_outside_the_server_maximum_is_a_400(
    setup: tuple[TestClient, FakeParts], timeout: float
) -> None:
    client, _ = setup
    body = {"model": MODEL, "prompt": "hi", "timeout": timeout}
    r = client.post("/v1/completions", json=body)
    assert r.status_code == 400 and r.json()["error"]["param"] == "timeout"


def test_a_client_that_stops_reading_is_dropped_and_its_generation_aborted(
    tmp_path: Path,
) -> None:
    settings = fake_settings(tmp_path)
    settings = dataclasses.replace(
        settings, server=dataclasses.replace(settings.server, sse_write_timeout_s=0.3)
    )
    parts = FakeParts(settings)
    parts.backend.hold = True
    app = create_app(settings, open_services=parts.open, exit_on_start_failure=False)
    body = json.dumps({"model": MODEL, "messages": MSG, "stream": True}).encode()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"host", b"localhost")],
        "client": ("127.0.0.1", 5000),
        "server": ("localhost", 80),
        "state": {},
    }

    async def scenario() -> None:
        async with running(app):
            while parts.backend._thread is None or app.state.server.hearth is None:
                await asyncio.sleep(0.02)
            sent = [False]

            async def receive() -> dict[str, Any]:
                if not sent[0]:
                    sent[0] = True
                    return {"type": "http.request", "body": body, "more_body": False}
                await asyncio.Event().wait()  # never disconnects
                return {}

            async def send(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.body" and message.get("body"):
                    await asyncio.Event().wait()  # the socket's buffer is full: never drains

            with pytest.raises(Exception) as info:  # the response ends with the error
                await asyncio.wait_for(app(scope, receive, send), 30)  # type: ignore[arg-type]
            chain = "".join(traceback.format_exception(info.value))
            assert SlowReaderError.__name__ in chain
            for _ in range(100):  # the stream's iterator is closed, then the engine aborts
                if parts.backend.aborted:
                    break
                await asyncio.sleep(0.02)

    asyncio.run(scenario())
    assert parts.backend.submitted
    assert [s.request_id for s in parts.backend.submitted] == parts.backend.aborted
