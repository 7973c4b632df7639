"""Agent routes on the stand-in model: create/get/delete, 4xx answers, and a run's shape."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from engine.agents.tools import calculate, check_arguments
from engine.tasks.llm import Completion
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


AGENT = {
    "name": "calc",
    "instructions": "Compute with the calculator.",
    "tools": ["calculator"],
    "max_steps": 2,
    "step_tokens": 32,
}


def test_create_get_delete_and_errors(client: TestClient) -> None:
    r = client.post("/v1/agents", json=AGENT)
    assert r.status_code == 201 and r.json()["tools"] == ["calculator"]
    assert client.get("/v1/agents/calc").json()["max_steps"] == 2
    bad = client.post("/v1/agents", json={**AGENT, "tools": ["rm_rf"]})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "tools"
    assert client.post("/v1/agents", json={**AGENT, "max_steps": 500}).status_code == 400
    assert client.post("/v1/agents", json={**AGENT, "name": "a b"}).status_code == 400
    assert client.post("/v1/agents/calc/runs", json={"input": ""}).status_code == 400
    assert client.post("/v1/agents/nope/runs", json={"input": "hi"}).status_code == 404
    assert client.get("/v1/agents/calc/runs/run_missing").status_code == 404
    assert client.delete("/v1/agents/calc").status_code == 200
    assert client.get("/v1/agents/calc").status_code == 404


class ScriptedLLM:
    """Answers the loop's grammar-constrained calls with fixed actions (the stand-in backend has
    no grammar support; the real model runs in tests/e2e/test_agents_e2e.py)."""

    def __init__(self, *actions: str) -> None:
        self.actions = list(actions)
        self.prompts: list[str] = []
        self.schemas: list[Any] = []

    async def complete(self, prompt: str, *, schema: Any = None, max_tokens: int = 256) -> Any:
        assert schema is not None and "anyOf" in schema
        self.prompts.append(prompt)
        self.schemas.append(schema)
        return Completion(text=self.actions.pop(0), prompt_tokens=10, completion_tokens=5)


def test_inline_run_calls_a_tool_then_answers(client: TestClient) -> None:
    llm = ScriptedLLM(
        '{"tool": "calculator", "arguments": {"expression": "2+2"}}',
        '{"tool": "final", "answer": "4"}',
    )
    state_of(client.app).services().agents.llm = llm
    client.post("/v1/agents", json=AGENT)
    run = client.post("/v1/agents/calc/runs", json={"input": "2+2?"}).json()
    assert (run["status"], run["output"], run["tokens"]) == ("succeeded", "4", 30)
    tool_step = run["steps"][0]
    assert tool_step["result"] == {"success": True, "data": {"value": 4}, "message": "2+2 = 4"}
    assert '"success": true' in llm.prompts[1]  # the tool result went back to the model
    assert client.get(f"/v1/agents/calc/runs/{run['id']}").json()["steps"] == run["steps"]


def test_a_looping_agent_stops_at_max_steps_and_a_bad_tool_call_does_not_crash(
    client: TestClient,
) -> None:
    loop = '{"tool": "calculator", "arguments": {"expression": "1/0"}}'
    state_of(client.app).services().agents.llm = ScriptedLLM(loop, loop, loop)
    client.post("/v1/agents", json=AGENT)
    run = client.post("/v1/agents/calc/runs", json={"input": "loop"}).json()
    assert (run["status"], run["error"], len(run["steps"])) == ("stopped", "max_steps reached", 2)
    assert run["steps"][0]["result"]["success"] is False
    assert "ZeroDivisionError" in run["steps"][0]["result"]["message"]


def test_a_repeated_call_is_not_run_again_and_the_next_step_must_answer(
    client: TestClient,
) -> None:
    call = '{"tool": "calculator", "arguments": {"expression": "2+2"}}'
    llm = ScriptedLLM(call, call, '{"tool": "final", "answer": "4"}')
    state_of(client.app).services().agents.llm = llm
    client.post("/v1/agents", json={**AGENT, "max_steps": 3})
    run = client.post("/v1/agents/calc/runs", json={"input": "2+2?"}).json()
    assert [s["type"] for s in run["steps"]] == ["tool", "repeat", "final"]
    assert run["status"] == "succeeded"
    only = [o["properties"]["tool"]["enum"] for o in llm.schemas[2]["anyOf"]]
    assert only == [["final"]] and len(llm.schemas[0]["anyOf"]) == 2
    calls = client.get("/v1/audit", params={"action": "agent.tool_call"}).json()["data"]
    assert len(calls) == 1  # the repeat ran nothing


def test_a_keyword_route_makes_the_first_step_call_its_tool(client: TestClient) -> None:
    llm = ScriptedLLM(
        '{"tool": "calculator", "arguments": {"expression": "6*7"}}',
        '{"tool": "final", "answer": "42"}',
        '{"tool": "final", "answer": "hi"}',
    )
    state_of(client.app).services().agents.llm = llm
    routes = [{"keywords": ["Compute", "sum"], "tool": "calculator"}]
    made = client.post("/v1/agents", json={**AGENT, "routes": routes})
    assert made.status_code == 201 and made.json()["routes"] == routes
    assert (
        client.post("/v1/agents/calc/runs", json={"input": "compute 6*7"}).json()["output"] == "42"
    )
    assert [o["properties"]["tool"]["enum"] for o in llm.schemas[0]["anyOf"]] == [["calculator"]]
    assert len(llm.schemas[1]["anyOf"]) == 2  # after the call, tools or an answer again
    client.post("/v1/agents/calc/runs", json={"input": "hello"})  # no keyword: no route
    assert len(llm.schemas[2]["anyOf"]) == 2
    bad = [
        [{"keywords": ["x"], "tool": "retrieve"}],
        [{"keywords": [], "tool": "calculator"}],
        [{"keywords": ["x" * 41], "tool": "calculator"}],
    ]
    for value in bad:
        r = client.post("/v1/agents", json={**AGENT, "routes": value})
        assert r.status_code == 400 and r.json()["error"]["param"].startswith("routes[0]"), r.text


def test_background_run_is_a_durable_job(client: TestClient) -> None:
    state_of(client.app).services().agents.llm = ScriptedLLM('{"tool": "final", "answer": "hi"}')
    client.post("/v1/agents", json=AGENT)
    headers = {"Idempotency-Key": "k1"}
    run = client.post(
        "/v1/agents/calc/runs", json={"input": "hi", "background": True}, headers=headers
    ).json()
    assert run["status"] == "queued" and run["job_id"].startswith("job_")
    text = client.get(f"/v1/agents/calc/runs/{run['id']}/events").text
    assert "event: done" in text
    done = client.get(f"/v1/agents/calc/runs/{run['id']}").json()
    assert (done["status"], done["output"]) == ("succeeded", "hi")
    replay = client.post(
        "/v1/agents/calc/runs", json={"input": "hi", "background": True}, headers=headers
    ).json()
    assert replay["id"] == run["id"]
    job = client.get(f"/v1/jobs/{run['job_id']}").json()
    assert (job["kind"], job["status"]) == ("agent_run", "succeeded")


def test_calculator_and_argument_checks() -> None:
    assert calculate("12*(3+4)") == 84
    with pytest.raises(ValueError):
        calculate("__import__('os')")
    schema = {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}
    assert check_arguments(schema, {"x": 1}) is None
    assert check_arguments(schema, {}) == "missing 'x'"
    assert check_arguments(schema, {"x": "1"}) == "'x' must be integer"
