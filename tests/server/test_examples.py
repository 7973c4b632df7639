"""The shipped ``shop`` example installed through the routes (stand-in model): its SQL tools read
and write the tenant's tables, and the product graph walk stops at 3 hops."""

from __future__ import annotations

from litestar.testing import TestClient

from server.examples_cli import available, install, load_example
from tests.server.test_agent_tools import client, endpoint  # noqa: F401 - fixtures


def call(http: TestClient, tool: str, **arguments: str) -> dict:
    r = http.post(f"/v1/tools/{tool}/call", json={"arguments": arguments})
    assert r.status_code == 200, r.text
    return r.json()


def test_shop_installs_and_its_tools_work(client: TestClient) -> None:  # noqa: F811
    assert "shop" in available()
    made = install(client, load_example("shop"))
    assert made["agents"] == ["shop"] and "orders" in made["tables"]
    assert set(client.get("/v1/agents/shop").json()["tools"]) == set(made["tools"])

    status = call(client, "order_status", order_id="ORD-1001")
    assert status["success"] and status["data"][0]["product"] == "Aurora 14 Laptop"
    missing = call(client, "order_status", order_id="ORD-999999")
    assert missing["success"] is False and missing["message"] == "no matching rows"
    assert call(client, "order_status", order_id="1001; DROP TABLE orders")["success"] is False

    refund = call(client, "refund_request", order_id="ORD-1002", reason="arrived broken")
    assert refund["success"] and refund["data"][0]["refund_status"] == "requested"
    assert call(client, "order_status", order_id="ORD-1002")["data"][0]["refund_status"] == (
        "requested"
    )
    complaint = call(client, "file_complaint", order_id="ORD-1003", text="late")
    assert complaint["success"] and complaint["data"][0]["complaint"] == "late"

    near = call(client, "compatible_products", product="Aurora 14")["data"]
    assert sorted(p["hops"] for p in near) == [p["hops"] for p in near]  # nearest first
    assert {p["name"] for p in near if p["hops"] == 1} == {"USB-C Dock Pro", "65W USB-C Charger"}
    assert max(p["hops"] for p in near) <= 3
    assert {"USB-C Dock Pro", "Monitor Arm"} <= {p["name"] for p in near}
    sleeve = {p["name"] for p in call(client, "compatible_products", product="Sleeve")["data"]}
    assert "Aurora 14 Laptop" in sleeve and "USB-C Dock Pro" not in sleeve  # 4 hops away

    compared = call(client, "compare_products", first="Aurora 14", second="Nimbus 13")["data"]
    assert [p["name"] for p in compared] == ["Nimbus 13 Laptop", "Aurora 14 Laptop"]
    similar = call(client, "similar_products", product="Aurora 14")["data"]
    assert {p["name"] for p in similar} == {"Aurora 16 Laptop", "Nimbus 13 Laptop"}


def test_sql_tool_mistakes_are_4xx(client: TestClient) -> None:  # noqa: F811
    base = {
        "name": "t",
        "description": "d",
        "parameters": {"type": "object", "properties": {"x": {"type": "string"}}},
    }
    cases = [
        ({**base, "sql": "SELECT $y"}, "sql"),
        ({**base, "sql": ""}, "sql"),
        ({**base}, "url"),
        ({**base, "sql": "SELECT 1", "url": "http://127.0.0.1/"}, "url"),
    ]
    for body, param in cases:
        r = client.post("/v1/tools", json=body)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, (body, r.text)


def test_crm_lead_webhook_saves_a_row_audits_and_calls_back_signed(
    client: TestClient,  # noqa: F811
    endpoint,  # noqa: F811
) -> None:
    import json
    import time

    from engine.agents.http import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign, verify
    from server.state import state_of
    from tests.server.test_agents_routes import ScriptedLLM
    from tests.server.test_webhooks import wait_job

    made = install(client, load_example("crm"), callback_url=endpoint.url("/cb"))
    secret = made["webhooks"]["new_lead"]
    save = {
        "name": "Ada",
        "email": "ada@acme.example",
        "company": "Acme",
        "score": 85,
        "reasons": "CTO, 50 seats, this quarter",
        "reply": "Thanks Ada, we will call you.",
    }
    llm = ScriptedLLM(
        '{"tool": "extract", "arguments": {"text": "Ada", "fields": ["name", "email"]}}',
        json.dumps({"tool": "save_lead", "arguments": save}),
        '{"tool": "final", "answer": "Thanks Ada, we will call you."}',
    )
    state_of(client.app).services().agents.llm = llm
    body = json.dumps({"input": load_example("crm")["examples"][0]}).encode()
    stamp = str(int(time.time()))
    headers = {
        TIMESTAMP_HEADER: stamp,
        SIGNATURE_HEADER: sign(secret, stamp, body),
        "content-type": "application/json",
    }
    job = wait_job(
        client, client.post("/v1/webhooks/new_lead", content=body, headers=headers).json()["id"]
    )
    assert job["status"] == "succeeded" and job["result"]["status"] == "succeeded", job
    # The route made the first step an extraction.
    assert [o["properties"]["tool"]["enum"] for o in llm.schemas[0]["anyOf"]] == [["extract"]]
    saved = call(client, "sql_query", sql="SELECT name, score, source FROM leads ORDER BY id")
    assert saved["data"]["rows"][-1] == ["Ada", 85, "webhook"]
    run = client.get(f"/v1/agents/crm/runs/{job['result']['run_id']}").json()
    assert run["steps"][1]["result"]["success"] is True
    audit = {a["action"] for a in client.get("/v1/audit").json()["data"]}
    assert {"agent.tool_call", "agent.run", "webhook.run"} <= audit
    assert wait_job(client, job["result"]["delivery_job_id"])["status"] == "succeeded"
    sent = [r for r in endpoint.requests if r["path"] == "/cb"][-1]
    h = {k.lower(): v for k, v in sent["headers"].items()}
    assert (
        verify(
            secret,
            h[TIMESTAMP_HEADER.lower()],
            sent["body"],
            h[SIGNATURE_HEADER.lower()],
            max_skew_s=300,
        )
        is None
    )
    assert json.loads(sent["body"])["output"] == "Thanks Ada, we will call you."
