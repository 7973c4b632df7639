"""Signed webhooks on the stand-in model: a good call becomes one durable job that runs the agent
and posts a signed callback; a bad signature, a stale timestamp and a replayed idempotency key are
refused or answered with the first job; a failing callback is retried, then a dead letter."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from configs import load_settings
from engine.agents.http import DELIVERY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign, verify
from engine.jobs import QueueLimits
from server.app import create_app
from server.state import state_of
from tests.server.fakes import FakeParts
from tests.server.test_agent_tools import Endpoint
from tests.server.test_agents_routes import ScriptedLLM


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    ep = Endpoint()
    yield ep
    ep.close()


@pytest.fixture
def client(tmp_path: Path, endpoint: Endpoint) -> Iterator[TestClient]:
    settings = load_settings(
        "test",
        env={},
        data_dir=tmp_path,
        overrides={"agents": {"http_allow_hosts": f"127.0.0.1:{endpoint.port}"}},
    )
    app = create_app(settings, open_services=FakeParts(settings).open, exit_on_start_failure=False)
    with TestClient(app, base_url="http://testclient") as c:
        deadline = time.monotonic() + 60
        while c.get("/ready").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        hearth = state_of(c.app).services()
        hearth.agents.llm = ScriptedLLM(*['{"tool": "final", "answer": "qualified"}'] * 10)
        hearth.jobs.queue.limits = QueueLimits(backoff_s=0.01, max_backoff_s=0.02, max_attempts=2)
        c.post("/v1/agents", json={"name": "lead", "instructions": "Qualify.", "tools": []})
        yield c


def signed(secret: str, body: bytes, stamp: float | None = None) -> dict[str, str]:
    ts = str(int(time.time() if stamp is None else stamp))
    return {
        TIMESTAMP_HEADER: ts,
        SIGNATURE_HEADER: sign(secret, ts, body),
        "content-type": "application/json",
    }


def wait_job(client: TestClient, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "dead", "cancelled"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.02)


def test_a_signed_call_runs_the_agent_once_and_calls_back_signed(
    client: TestClient, endpoint: Endpoint
) -> None:
    r = client.post(
        "/v1/webhooks", json={"name": "crm", "agent": "lead", "callback_url": endpoint.url("/cb")}
    )
    assert r.status_code == 201, r.text
    secret = r.json()["secret"]
    assert "secret" not in client.get("/v1/webhooks").json()["data"][0]

    body = json.dumps({"input": "New lead: Ada, CTO at Acme, wants 50 seats."}).encode()
    headers = {**signed(secret, body), "Idempotency-Key": "lead-1"}
    first = client.post("/v1/webhooks/crm", content=body, headers=headers)
    assert first.status_code == 202 and first.json()["kind"] == "webhook"
    job = wait_job(client, first.json()["id"])
    assert job["status"] == "succeeded", job
    assert job["result"]["status"] == "succeeded" and job["result"]["output"] == "qualified"
    run = client.get(f"/v1/agents/lead/runs/{job['result']['run_id']}").json()
    assert run["input"].startswith("New lead: Ada")

    delivery = wait_job(client, job["result"]["delivery_job_id"])
    assert delivery["status"] == "succeeded"
    sent = [r for r in endpoint.requests if r["path"] == "/cb"]
    assert len(sent) == 1
    h = {k.lower(): v for k, v in sent[0]["headers"].items()}
    assert h[DELIVERY_HEADER.lower()] == delivery["id"]
    assert (
        verify(
            secret,
            h[TIMESTAMP_HEADER.lower()],
            sent[0]["body"],
            h[SIGNATURE_HEADER.lower()],
            max_skew_s=300,
        )
        is None
    )
    assert json.loads(sent[0]["body"])["run_id"] == run["id"]

    replay = client.post("/v1/webhooks/crm", content=body, headers=headers)
    assert replay.status_code == 202 and replay.json()["id"] == first.json()["id"]
    webhook_jobs = [j for j in client.get("/v1/jobs").json()["data"] if j["kind"] == "webhook"]
    assert len(webhook_jobs) == 1
    actions = {a["action"] for a in client.get("/v1/audit").json()["data"]}
    assert {"webhook.run", "webhook.delivered", "agent.run"} <= actions


def test_bad_signatures_are_refused_before_the_body_is_read(client: TestClient) -> None:
    secret = client.post("/v1/webhooks", json={"name": "crm", "agent": "lead"}).json()["secret"]
    body = b'{"input": "x"}'
    cases = [
        {"content-type": "application/json"},  # no signature at all
        signed("whsec_wrong", body),
        signed(secret, body, stamp=time.time() - 400),  # stale
        signed(secret, body, stamp=time.time() + 400),  # from the future
        {**signed(secret, body), TIMESTAMP_HEADER: "yesterday"},
    ]
    for headers in cases:
        r = client.post("/v1/webhooks/crm", content=body, headers=headers)
        assert r.status_code == 401, (headers, r.text)
        assert r.json()["error"]["type"] == "authentication_error"
    tampered = client.post(
        "/v1/webhooks/crm", content=b'{"input": "y"}', headers=signed(secret, body)
    )
    assert tampered.status_code == 401
    garbage = b"not json"
    r = client.post("/v1/webhooks/crm", content=garbage, headers=signed(secret, garbage))
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid_json"  # the same answer as every JSON route
    assert (
        client.post("/v1/webhooks/nope", content=body, headers=signed(secret, body)).status_code
        == 404
    )
    assert client.get("/v1/jobs").json()["data"] == []  # nothing was enqueued


def test_webhook_definition_mistakes_are_4xx(client: TestClient) -> None:
    cases = [
        ({"name": "a", "agent": "nope"}, 404, "name"),
        ({"name": "a"}, 400, "agent"),
        ({"name": "a", "agent": "lead", "workflow": "w"}, 400, "agent"),
        ({"name": "a b", "agent": "lead"}, 400, "name"),
        ({"name": "a", "agent": "lead", "callback_url": "http://10.1.2.3/cb"}, 400, "callback_url"),
    ]
    for body, status, param in cases:
        r = client.post("/v1/webhooks", json=body)
        assert r.status_code == status, (body, r.text)
        if status == 400:
            assert r.json()["error"]["param"] == param
    assert client.delete("/v1/webhooks/nope").status_code == 404


def test_a_failing_callback_is_retried_then_dead_and_retry_sends_it_again(
    client: TestClient, endpoint: Endpoint
) -> None:
    made = client.post(
        "/v1/webhooks", json={"name": "crm", "agent": "lead", "callback_url": endpoint.url("/fail")}
    )
    secret = made.json()["secret"]
    body = b'{"input": "lead"}'
    job = wait_job(
        client,
        client.post("/v1/webhooks/crm", content=body, headers=signed(secret, body)).json()["id"],
    )
    delivery = wait_job(client, job["result"]["delivery_job_id"])
    assert (delivery["status"], delivery["attempts"]) == ("dead", 2)
    assert "HTTP 500" in delivery["error"]
    assert len([r for r in endpoint.requests if r["path"] == "/fail"]) == 2
    dead = client.get("/v1/jobs", params={"status": "dead"}).json()["data"]
    assert [d["id"] for d in dead] == [delivery["id"]]
    assert client.post(f"/v1/jobs/{delivery['id']}/retry").json()["status"] == "queued"
    assert wait_job(client, delivery["id"])["status"] == "dead"
    assert len([r for r in endpoint.requests if r["path"] == "/fail"]) == 4
