"""Graceful shutdown of a real server process (uvicorn, the stand-in model): on SIGTERM readiness
turns 503, new requests are refused with 503 + Retry-After, requests in flight finish; past the
drain timeout a stream still running ends with a terminal event; then the process exits."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.server.fake_server import FakeServerProcess
from tests.server.test_routes import MODEL, MSG

CHAT = {"model": MODEL, "messages": MSG, "max_tokens": 40, "stream": True}


@pytest.fixture
def server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[FakeServerProcess]:
    env = getattr(request, "param", {})
    proc = FakeServerProcess(tmp_path, env)
    proc.start()
    yield proc
    proc.stop()


class Stream:
    """A streaming chat request on its own thread; ``first`` is set once a chunk arrived."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.events: list[str] = []
        self.status: int | None = None
        self.first = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with httpx.stream("POST", self.url + "/v1/chat/completions", json=CHAT, timeout=60) as r:
            self.status = r.status_code
            for line in r.iter_lines():
                if line.startswith("data: "):
                    self.events.append(line[6:])
                    self.first.set()
        self.first.set()

    def finish(self) -> list[str]:
        self.thread.join(timeout=60)
        assert not self.thread.is_alive()
        return self.events


def wait_draining(url: str) -> httpx.Response:
    deadline = time.monotonic() + 30
    while True:
        r = httpx.get(url + "/ready", timeout=5)
        if r.status_code == 503 or time.monotonic() > deadline:
            return r
        time.sleep(0.05)


def exit_code(proc: FakeServerProcess) -> int:
    assert proc.proc is not None
    return proc.proc.wait(timeout=60)


def test_sigterm_refuses_new_requests_and_lets_running_ones_finish(
    server: FakeServerProcess,
) -> None:
    server.hold_file.touch()  # sequences stop after their first token until it is removed
    stream = Stream(server.base_url)
    assert stream.first.wait(30) and stream.status == 200
    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)

    ready = wait_draining(server.base_url)
    assert ready.status_code == 503 and ready.json()["status"] == "draining"
    assert httpx.get(server.base_url + "/health").json()["draining"] is True
    refused = httpx.post(server.base_url + "/v1/chat/completions", json={**CHAT, "stream": False})
    assert refused.status_code == 503 and int(refused.headers["retry-after"]) > 0
    assert refused.json()["error"]["code"] == "draining"
    assert stream.thread.is_alive()  # still held: the drain waits for it

    server.hold_file.unlink()
    events = stream.finish()
    assert events[-1] == "[DONE]"
    assert not any("error" in json.loads(e) for e in events[:-1])
    text = "".join(json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-1])
    assert text == "Hello from the fake model."
    assert exit_code(server) in (0, -signal.SIGTERM)
    assert "drained" in server.log_tail(200)


@pytest.mark.parametrize("server", [{"HEARTH_DRAIN_TIMEOUT_S": "0.5"}], indirect=True)
def test_a_stream_still_running_at_the_drain_timeout_ends_with_a_terminal_event(
    server: FakeServerProcess,
) -> None:
    server.hold_file.touch()  # never released: only the drain timeout ends it
    stream = Stream(server.base_url)
    assert stream.first.wait(30) and stream.status == 200
    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)
    events = stream.finish()
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["error"]["code"] == "draining"
    assert exit_code(server) in (0, -signal.SIGTERM)
    log = server.log_tail(200)
    assert "drain timeout" in log and "Traceback" not in log
