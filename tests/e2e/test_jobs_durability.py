"""kill -9 a real server while a durable job (a background agent run on the real model) is
running; after a restart the acknowledged job runs again and finishes."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest

from benchmarks.launch import _Process
from tests.support import HearthProcess

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

AGENT = {
    "name": "calc",
    "instructions": "You answer arithmetic questions. Use the calculator, then give the answer.",
    "tools": ["calculator"],
    "max_steps": 3,
    "step_tokens": 48,
}


def wait_for(client: httpx.Client, path: str, done, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        body = client.get(path).json()
        if done(body):
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.05)


def test_a_running_job_survives_kill_9(tmp_path: Path) -> None:
    server = HearthProcess(tmp_path)
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            assert client.post("/v1/agents", json=AGENT).status_code == 201
            run = client.post(
                "/v1/agents/calc/runs", json={"input": "What is 17*23?", "background": True}
            ).json()
            job_path = f"/v1/jobs/{run['job_id']}"
            wait_for(client, job_path, lambda j: j["status"] != "queued")
            _Process.stop(server, signal.SIGKILL)  # kill -9 the process group
        server.start()
        with httpx.Client(base_url=server.url, timeout=60) as client:
            job = wait_for(client, job_path, lambda j: j["status"] in ("succeeded", "dead"))
            assert job["status"] == "succeeded" and job["attempts"] >= 2, job
            done = client.get(f"/v1/agents/calc/runs/{run['id']}").json()
            assert done["status"] in ("succeeded", "stopped") and done["steps"], done
            # Steps stored before the kill were kept, not run twice: indexes are 0..n-1.
            assert [s["index"] for s in done["steps"]] == list(range(len(done["steps"])))
    finally:
        server.stop()
