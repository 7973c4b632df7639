"""Agent tools on the stand-in model, against a real local HTTP endpoint: webhook tools signed with
HMAC (and refused hosts, redirects, oversized and late answers), ``sql_query`` over the tenant's
own tables (read-only), and the audit rows every run and tool call leaves."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from configs import load_settings
from engine.agents.http import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from server.app import create_app
from server.state import state_of
from tests.server.fakes import FakeParts
from tests.server.test_agents_routes import ScriptedLLM


class Endpoint:
    """A local HTTP server: records every request; ``/tool`` answers a tool result,
    ``/redirect`` a 302, ``/fail`` a 500, ``/big`` more than the response bound, ``/hold`` waits
    until the test ends."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                outer.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": body}
                )
                if self.path == "/hold":
                    outer.release.wait(60)
                if self.path == "/fail":
                    self.send_response(500)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                if self.path == "/redirect":
                    self.send_response(302)
                    self.send_header("Location", "http://example.com/")
                    self.end_headers()
                    return
                data = (
                    b"x" * 5000
                    if self.path == "/big"
                    else json.dumps(
                        {"success": True, "data": {"echo": json.loads(body)}, "message": "ok"}
                    ).encode()
                )
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()


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
        overrides={
            "agents": {
                "http_allow_hosts": f"127.0.0.1:{endpoint.port}",
                "http_timeout_s": 1.0,
                "http_max_response_bytes": 1000,
            }
        },
    )
    app = create_app(settings, open_services=FakeParts(settings).open, exit_on_start_failure=False)
    with TestClient(app, base_url="http://testclient") as c:
        deadline = time.monotonic() + 60
        while c.get("/ready").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        yield c


PARAMS = {
    "type": "object",
    "properties": {"order_id": {"type": "string", "maxLength": 20}},
    "required": ["order_id"],
    "additionalProperties": False,
}


def make_tool(client: TestClient, endpoint: Endpoint, name: str, path: str) -> dict[str, Any]:
    r = client.post(
        "/v1/tools",
        json={
            "name": name,
            "description": "Look up an order.",
            "parameters": PARAMS,
            "url": endpoint.url(path),
        },
    )
    assert r.status_code == 201, r.text
    return r.json()


def test_webhook_tool_is_signed_and_its_answer_reaches_the_agent(
    client: TestClient, endpoint: Endpoint
) -> None:
    tool = make_tool(client, endpoint, "order_lookup", "/tool")
    assert tool["secret"].startswith("whsec_")
    listed = {t["name"]: t for t in client.get("/v1/tools").json()["data"]}
    assert "secret" not in listed["order_lookup"] and listed["order_lookup"]["type"] == "webhook"
    assert {"calculator", "sql_query", "http_request"} <= set(listed)

    llm = ScriptedLLM(
        '{"tool": "order_lookup", "arguments": {"order_id": "ORD-7"}}',
        '{"tool": "final", "answer": "shipped"}',
    )
    state_of(client.app).services().agents.llm = llm
    agent = {"name": "shop", "instructions": "Help.", "tools": ["order_lookup"], "max_steps": 3}
    assert client.post("/v1/agents", json=agent).status_code == 201
    run = client.post("/v1/agents/shop/runs", json={"input": "Where is ORD-7?"}).json()
    assert run["status"] == "succeeded", run
    assert run["steps"][0]["result"] == {
        "success": True,
        "data": {"echo": {"tool": "order_lookup", "arguments": {"order_id": "ORD-7"}}},
        "message": "ok",
    }
    sent = endpoint.requests[-1]
    headers = {k.lower(): v for k, v in sent["headers"].items()}
    problem = verify(
        tool["secret"],
        headers[TIMESTAMP_HEADER.lower()],
        sent["body"],
        headers[SIGNATURE_HEADER.lower()],
        max_skew_s=300,
    )
    assert problem is None
    assert verify(
        "whsec_other",
        headers[TIMESTAMP_HEADER.lower()],
        sent["body"],
        headers[SIGNATURE_HEADER.lower()],
        max_skew_s=300,
    )

    audit = client.get("/v1/audit", params={"subject": run["id"]}).json()["data"]
    actions = sorted(a["action"] for a in audit)
    assert actions == ["agent.run", "agent.tool_call"]
    call = next(a for a in audit if a["action"] == "agent.tool_call")
    assert call["detail"]["tool"] == "order_lookup" and call["detail"]["success"] is True


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/redirect", "redirects are not followed"),
        ("/big", "over 1000 bytes"),
        ("/hold", "no answer within 1 s"),
    ],
)
def test_webhook_tool_failures_are_tool_results_not_crashes(
    client: TestClient, endpoint: Endpoint, path: str, message: str
) -> None:
    make_tool(client, endpoint, "t", path)
    r = client.post("/v1/tools/t/call", json={"arguments": {"order_id": "ORD-1"}})
    assert r.status_code == 200
    assert r.json()["success"] is False and message in r.json()["message"], r.json()


def test_tool_mistakes_are_4xx(client: TestClient, endpoint: Endpoint) -> None:
    good = {"name": "t", "description": "d", "parameters": PARAMS, "url": endpoint.url("/tool")}
    cases = [
        ({**good, "url": "http://10.0.0.5/hook"}, "url", "host_not_allowed"),
        ({**good, "url": f"http://u:p@127.0.0.1:{endpoint.port}/"}, "url", None),
        ({**good, "url": "file:///etc/passwd"}, "url", None),
        ({**good, "name": "calculator"}, "name", None),
        ({**good, "name": "a b"}, "name", None),
        ({**good, "parameters": {"type": "string"}}, "parameters", None),
        ({**good, "description": ""}, "description", None),
    ]
    for body, param, code in cases:
        r = client.post("/v1/tools", json=body)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["error"]["param"] == param
        if code:
            assert r.json()["error"]["code"] == code
    assert client.post("/v1/tools", json={**good, "extra": 1}).status_code == 400
    assert client.delete("/v1/tools/nope").status_code == 404
    assert client.post("/v1/tools/nope/call", json={}).status_code == 404
    assert client.get("/v1/audit", params={"limit": "0"}).status_code == 400
    make_tool(client, endpoint, "t", "/tool")
    assert client.delete("/v1/tools/t").status_code == 200
    assert "t" not in {t["name"] for t in client.get("/v1/tools").json()["data"]}


def test_sql_query_reads_only_the_tenants_own_tables(client: TestClient) -> None:
    rows = [
        {"id": "ORD-1", "status": "shipped", "total": 19.5},
        {"id": "ORD-2", "status": "pending", "total": 5},
    ]
    r = client.put("/v1/tables/orders", json={"rows": rows})
    assert r.status_code == 200 and r.json()["columns"]["total"] == "DOUBLE"
    assert client.get("/v1/tables").json()["data"][0]["name"] == "orders"

    def sql(text: str) -> dict[str, Any]:
        return client.post("/v1/tools/sql_query/call", json={"arguments": {"sql": text}}).json()

    found = sql("SELECT id FROM orders WHERE status = 'shipped'")
    assert found["success"] and found["data"]["rows"] == [["ORD-1"]]
    for bad in ("DELETE FROM orders", "SELECT * FROM read_csv('/etc/passwd')", "SELECT * FROM x"):
        assert sql(bad)["success"] is False, bad
    assert len(sql("SELECT * FROM orders")["data"]["rows"]) == 2  # nothing was deleted

    assert client.put("/v1/tables/1bad", json={"rows": rows}).status_code == 400
    assert client.put("/v1/tables/t", json={"rows": []}).status_code == 400
    assert client.put("/v1/tables/t", json={"rows": [{"a b": 1}]}).status_code == 400
    assert client.delete("/v1/tables/orders").status_code == 200
    assert client.delete("/v1/tables/orders").status_code == 404


def test_the_air_gap_guard_lets_through_only_the_allow_listed_hosts() -> None:
    from server import airgap

    assert not airgap.is_local("192.0.2.77")
    airgap.permit("192.0.2.77:8080")
    assert airgap.is_local("192.0.2.77") and not airgap.is_local("192.0.2.78")


def test_http_request_reaches_only_allow_listed_hosts(
    client: TestClient, endpoint: Endpoint
) -> None:
    def call(url: str) -> dict[str, Any]:
        args = {"method": "POST", "url": url, "body": {"q": 1}}
        return client.post("/v1/tools/http_request/call", json={"arguments": args}).json()

    ok = call(endpoint.url("/tool"))
    assert ok["success"] is True and ok["data"]["data"]["echo"] == {"q": 1}
    assert not any("signature" in k.lower() for k in endpoint.requests[-1]["headers"])
    refused = call("http://127.0.0.2:9/x")
    assert refused["success"] is False and "not allow-listed" in refused["message"]
    before = len(endpoint.requests)
    assert call(endpoint.url("/redirect"))["success"] is False
    assert len(endpoint.requests) == before + 1  # the redirect was not followed
