"""Agents on the real server and the real model (the session's shared server): the shop example
installed by the CLI and asked about an order, and a conversation's memory through the official
openai client. Asserts the state the run leaves (tool calls with success, audit rows, stored
turns), not the model's wording."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from tests.support import LLM, ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_the_shop_example_answers_an_order_question_through_its_tools(hearth) -> None:
    installed = subprocess.run(
        [sys.executable, "-m", "server", "examples", "install", "shop", "--url", hearth.url],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert installed.returncode == 0, installed.stderr
    assert "example order ids: ORD-1001" in installed.stdout
    with httpx.Client(base_url=hearth.url, timeout=600) as http:
        run = http.post(
            "/v1/agents/shop/runs", json={"input": "Where is my order ORD-1001?"}
        ).json()
        assert run["status"] in ("succeeded", "stopped"), run
        calls = [s for s in run["steps"] if s["type"] == "tool"]
        assert calls, run["steps"]
        for call in calls:  # every call was validated and returned a typed result
            assert isinstance(call["result"]["success"], bool)
        lookup = [c for c in calls if c["tool"] == "order_status"]
        assert lookup and lookup[0]["arguments"] == {"order_id": "ORD-1001"}, calls
        assert lookup[0]["result"]["success"] is True
        assert lookup[0]["result"]["data"][0]["product"] == "Aurora 14 Laptop"
        audit = http.get("/v1/audit", params={"subject": run["id"]}).json()["data"]
        assert sum(a["action"] == "agent.tool_call" for a in audit) == len(calls)
        assert [a["action"] for a in audit].count("agent.run") == 1

        # The refund intent (keyword route) leaves its row: the order's refund is requested.
        refund = http.post(
            "/v1/agents/shop/runs",
            json={"input": "I want a refund for ORD-1002, it stopped working."},
        ).json()
        first = refund["steps"][0]
        assert (first["tool"], first["arguments"]["order_id"]) == ("refund_request", "ORD-1002")
        assert first["result"]["success"] is True, first
        row = http.post(
            "/v1/tools/order_status/call", json={"arguments": {"order_id": "ORD-1002"}}
        ).json()
        assert row["data"][0]["refund_status"] == "requested"


def test_a_conversation_remembers_across_openai_calls(hearth, client) -> None:
    conv = httpx.post(f"{hearth.url}/v1/conversations", json={}).json()["id"]

    def ask(text: str):
        return client.chat.completions.create(
            model=LLM,
            messages=[{"role": "user", "content": text}],
            max_tokens=8,
            extra_body={"conversation": conv},
        )

    first = ask("My name is Ada and I live in Lisbon.")
    second = ask("Where do I live?")
    # The second prompt carried the first exchange (both turns) as memory.
    assert second.usage.prompt_tokens > first.usage.prompt_tokens + 8
    stored = httpx.get(f"{hearth.url}/v1/conversations/{conv}").json()
    assert stored["turn_count"] == 4
    assert stored["turns"][0]["content"] == "My name is Ada and I live in Lisbon."
    assert stored["turns"][3]["content"] == second.choices[0].message.content
