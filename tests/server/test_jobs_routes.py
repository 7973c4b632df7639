"""The jobs routes on the stand-in model: list with a status filter, cancel, retry of a dead or
cancelled durable job, SSE progress, and the 4xx answers."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from litestar.testing import TestClient

from engine.jobs import JobContext
from engine.storage.schema import DEFAULT_TENANT
from server.app import create_app
from server.state import state_of
from tests.server.fakes import FakeParts, fake_settings


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = fake_settings(tmp_path)
    app = create_app(settings, open_services=FakeParts(settings).open, exit_on_start_failure=False)
    with TestClient(app, base_url="http://testclient") as c:
        deadline = time.monotonic() + 60
        while c.get("/ready").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        yield c


def test_cancel_retry_and_list_dead_letters(client: TestClient) -> None:
    jobs = state_of(client.app).services().jobs
    job = jobs.queue.enqueue(DEFAULT_TENANT, "nobody-runs-this", {"x": 1})
    got = client.get(f"/v1/jobs/{job.id}").json()
    assert (got["status"], got["attempts"], got["max_attempts"]) == ("queued", 0, 5)
    r = client.post(f"/v1/jobs/{job.id}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    again = client.post(f"/v1/jobs/{job.id}/cancel")
    assert again.status_code == 400 and again.json()["error"]["code"] == "job_finished"
    listed = client.get("/v1/jobs", params={"status": "cancelled"}).json()["data"]
    assert [j["id"] for j in listed] == [job.id]
    r = client.post(f"/v1/jobs/{job.id}/retry")
    assert r.status_code == 200 and r.json()["status"] == "queued"
    assert client.post(f"/v1/jobs/{job.id}/retry").status_code == 400
    assert client.get("/v1/jobs", params={"status": "dead"}).json()["data"] == []


def test_bad_queries_and_unknown_ids(client: TestClient) -> None:
    r = client.get("/v1/jobs", params={"status": "sleeping"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "status"
    assert client.get("/v1/jobs", params={"limit": "0"}).status_code == 400
    assert client.post("/v1/jobs/job_missing/cancel").status_code == 404
    assert client.post("/v1/jobs/job_missing/retry").status_code == 404
    assert client.get("/v1/jobs/job_missing/events").status_code == 404


def test_events_stream_progress_until_done(client: TestClient) -> None:
    jobs = state_of(client.app).services().jobs

    async def staged(ctx: JobContext) -> dict[str, str]:
        await ctx.progress(50, "halfway")
        return {"ok": "yes"}

    jobs.register("staged", staged)
    job = jobs.queue.enqueue(DEFAULT_TENANT, "staged", {})
    jobs._workers.wake()
    text = client.get(f"/v1/jobs/{job.id}/events").text
    frames = [f for f in re.split(r"\r?\n\r?\n", text) if f.strip()]
    last = frames[-1]
    assert last.startswith("event: done")
    done = json.loads(last.split("data: ", 1)[1])
    assert (done["status"], done["result"], done["progress"]) == ("succeeded", {"ok": "yes"}, 100)
