"""kill -9 a real server while durable jobs run: a background agent run on the real model, and a
batch of 50 signed webhook jobs with callbacks; after a restart every acknowledged job finishes
exactly once."""

from __future__ import annotations

import json
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from benchmarks.launch import _Process
from engine.agents.http import DELIVERY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
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


class Receiver:
    """A local HTTP server standing for the CRM: records each signed callback it is sent."""

    def __init__(self) -> None:
        self.deliveries: list[tuple[str, dict]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                outer.deliveries.append((self.headers[DELIVERY_HEADER], json.loads(body)))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


JOBS = 50


def test_kill_9_during_50_webhook_jobs_loses_none_and_duplicates_no_side_effect(
    tmp_path: Path,
) -> None:
    """50 signed webhook calls, each a durable job running an agent on the real model and then a
    signed callback; kill -9 mid-batch; after the restart every job ends exactly once, each has
    one agent run, and the receiver sees each delivery id (its dedupe key) for every job."""
    receiver = Receiver()
    server = HearthProcess(
        tmp_path,
        env={
            "HEARTH_AGENTS_HTTP_ALLOW_HOSTS": f"127.0.0.1:{receiver.port}",
            "HEARTH_LIMITS_QUEUED_JOBS": "500",
        },
    )
    server.start()
    bodies = [json.dumps({"input": f"Lead {i}: reply with ok."}).encode() for i in range(JOBS)]

    def send_all(client: httpx.Client, secret: str) -> list[str]:
        ids = []
        for i, body in enumerate(bodies):
            stamp = str(int(time.time()))
            headers = {
                TIMESTAMP_HEADER: stamp,
                SIGNATURE_HEADER: sign(secret, stamp, body),
                "Idempotency-Key": f"lead-{i}",
                "content-type": "application/json",
            }
            r = client.post("/v1/webhooks/crm", content=body, headers=headers)
            assert r.status_code == 202, r.text
            ids.append(r.json()["id"])
        return ids

    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            agent = {**AGENT, "name": "lead", "tools": [], "max_steps": 1, "step_tokens": 16}
            assert client.post("/v1/agents", json=agent).status_code == 201
            hook = client.post(
                "/v1/webhooks",
                json={
                    "name": "crm",
                    "agent": "lead",
                    "callback_url": f"http://127.0.0.1:{receiver.port}/cb",
                },
            ).json()
            job_ids = send_all(client, hook["secret"])
            assert len(set(job_ids)) == JOBS
            deadline = time.monotonic() + 600
            while len(receiver.deliveries) < 3:  # some done, most still queued
                assert time.monotonic() < deadline
                time.sleep(0.05)
            _Process.stop(server, signal.SIGKILL)
        server.start()
        with httpx.Client(base_url=server.url, timeout=60) as client:
            assert send_all(client, hook["secret"]) == job_ids  # replays: the same jobs
            jobs = [
                wait_for(
                    client,
                    f"/v1/jobs/{j}",
                    lambda b: b["status"] in ("succeeded", "dead"),
                    timeout=900,
                )
                for j in job_ids
            ]
            assert all(j["status"] == "succeeded" for j in jobs), [
                (j["id"], j["status"], j["error"]) for j in jobs if j["status"] != "succeeded"
            ]
            listed = client.get("/v1/jobs", params={"limit": 500}).json()["data"]
            assert sum(j["kind"] == "webhook" for j in listed) == JOBS  # no second job
            deliveries = [j for j in listed if j["kind"] == "webhook_delivery"]
            assert len(deliveries) == JOBS  # one per webhook job, even when it ran twice
            for d in deliveries:
                wait_for(client, f"/v1/jobs/{d['id']}", lambda b: b["status"] == "succeeded")
            runs = {j["result"]["run_id"] for j in jobs}
            assert len(runs) == JOBS  # one agent run per job
            for job in jobs[:5]:
                run = client.get(f"/v1/agents/lead/runs/{job['result']['run_id']}").json()
                assert [s["index"] for s in run["steps"]] == list(range(len(run["steps"])))
        seen = {delivery_id for delivery_id, _ in receiver.deliveries}
        assert seen == {d["id"] for d in deliveries}
        assert {body["run_id"] for _, body in receiver.deliveries} == runs
    finally:
        server.stop()
        receiver.server.shutdown()
