"""Conversations on the stand-in model: memory reaches the model (chat and agent runs), older turns
fold into the summary, the memory is cut to the context, tenants are apart, TTL and delete."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from litestar.testing import TestClient

from configs import load_settings
from engine import NotFoundError
from engine.conversations import Conversation, Turn, fold, memory_messages
from server.app import create_app
from server.state import state_of
from tests.server.fakes import FakeParts
from tests.server.test_agents_routes import ScriptedLLM

MEMORY_TURNS = 4


@pytest.fixture
def parts_client(tmp_path: Path) -> Iterator[tuple[FakeParts, TestClient]]:
    settings = load_settings(
        "test", env={}, data_dir=tmp_path, overrides={"agents": {"memory_turns": MEMORY_TURNS}}
    )
    parts = FakeParts(settings)
    app = create_app(settings, open_services=parts.open, exit_on_start_failure=False)
    with TestClient(app, base_url="http://testclient") as c:
        deadline = time.monotonic() + 60
        while c.get("/ready").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        yield parts, c


def last_prompt(parts: FakeParts) -> str:
    tokens = parts.backend.submitted[-1].prompt_tokens
    return bytes(t for t in tokens if t < 256).decode()


def chat(client: TestClient, conv: str, text: str, **extra: object) -> dict:
    r = client.post(
        "/v1/chat/completions",
        json={
            "model": "gemma-3-270m-q4km",
            "messages": [{"role": "user", "content": text}],
            "max_tokens": 8,
            "conversation": conv,
            **extra,
        },
    )
    assert r.status_code == 200, r.text
    return r.json()


def test_chat_memory_turns_summary_and_delete(parts_client: tuple[FakeParts, TestClient]) -> None:
    parts, client = parts_client
    r = client.post("/v1/conversations", json={})
    assert r.status_code == 201
    conv = r.json()["id"]
    assert r.json()["turns"] == [] and r.json()["expires_at"] > r.json()["created_at"]

    chat(client, conv, "My name is Ada. I like tea.")
    answer = chat(client, conv, "What is my name?")["choices"][0]["message"]["content"]
    assert "My name is Ada" in last_prompt(parts)  # the first turn reached the model
    got = client.get(f"/v1/conversations/{conv}").json()
    assert [t["role"] for t in got["turns"]] == ["user", "assistant"] * 2
    assert got["turns"][-1]["content"] == answer and got["turn_count"] == 4

    for i in range(3):
        chat(client, conv, f"Question {i}. More text here.")
    got = client.get(f"/v1/conversations/{conv}").json()
    assert got["turn_count"] == 10 and len(got["turns"]) == MEMORY_TURNS
    assert got["summary"].splitlines()[0] == "user: My name is Ada."  # first sentence kept
    assert "My name is Ada" in last_prompt(parts)  # ...and still reaches the model

    # A streamed turn is stored too.
    r = client.post(
        "/v1/chat/completions",
        json={
            "model": "gemma-3-270m-q4km",
            "messages": [{"role": "user", "content": "s"}],
            "max_tokens": 4,
            "conversation": conv,
            "stream": True,
        },
    )
    assert r.status_code == 200 and "[DONE]" in r.text
    assert client.get(f"/v1/conversations/{conv}").json()["turn_count"] == 12

    convs = state_of(client.app).services().conversations
    with client.portal() as portal, pytest.raises(NotFoundError):
        portal.call(convs.get, "another-tenant", conv)  # another tenant's id is a missing one
    assert client.delete(f"/v1/conversations/{conv}").status_code == 200
    assert client.get(f"/v1/conversations/{conv}").status_code == 404
    missing = client.post(
        "/v1/chat/completions",
        json={
            "model": "gemma-3-270m-q4km",
            "messages": [{"role": "user", "content": "x"}],
            "conversation": conv,
        },
    )
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "conversation"


def test_agent_runs_remember_the_conversation(parts_client: tuple[FakeParts, TestClient]) -> None:
    _, client = parts_client
    llm = ScriptedLLM(
        '{"tool": "final", "answer": "Noted, Ada."}', '{"tool": "final", "answer": "Ada"}'
    )
    state_of(client.app).services().agents.llm = llm
    client.post("/v1/agents", json={"name": "a", "instructions": "Chat.", "tools": []})
    conv = client.post("/v1/conversations").json()["id"]
    first = client.post("/v1/agents/a/runs", json={"input": "I am Ada.", "conversation": conv})
    assert first.json()["conversation"] == conv
    client.post("/v1/agents/a/runs", json={"input": "Who am I?", "conversation": conv})
    assert "User: I am Ada.\nAssistant: Noted, Ada." in llm.prompts[1]
    assert client.get(f"/v1/conversations/{conv}").json()["turn_count"] == 4
    r = client.post("/v1/agents/a/runs", json={"input": "x", "conversation": "conv_nope"})
    assert r.status_code == 404


def test_conversation_mistakes_are_4xx(parts_client: tuple[FakeParts, TestClient]) -> None:
    _, client = parts_client
    assert client.post("/v1/conversations", json={"ttl_s": 1}).status_code == 400
    assert client.post("/v1/conversations", json={"ttl": 60}).status_code == 400
    assert client.get("/v1/conversations/conv_0123").status_code == 404
    assert client.delete("/v1/conversations/nope").status_code == 404


def test_memory_is_cut_to_the_budget_newest_first() -> None:
    recent = tuple(Turn("user" if i % 2 == 0 else "assistant", f"turn {i} " * 10) for i in range(4))
    conv = Conversation("conv_x", "user: old", recent, 6, 0.0, 1.0)
    count = len  # one token per character
    everything = memory_messages(conv, 10_000, count)
    assert everything[0].role == "system" and "user: old" in everything[0].content
    assert len(everything) == 5
    cut = memory_messages(conv, 2 * (len(recent[0].content) + 8), count)
    assert [m.content for m in cut] == [recent[2].content, recent[3].content]  # no summary
    assert memory_messages(conv, 0, count) == []


def test_summary_stays_bounded() -> None:
    summary = ""
    for i in range(200):
        summary = fold(summary, [Turn("user", f"message number {i}. " + "x" * 300)])
    assert len(summary) <= 2000
    assert "message number 199." in summary and "message number 0." not in summary


def test_a_conversation_expires_after_its_ttl(tmp_path: Path) -> None:
    import asyncio

    from engine.conversations import ConversationService
    from engine.storage import open_store

    db = open_store(tmp_path / "c.duckdb")
    db.store.migrate()
    now = [1000.0]
    convs = ConversationService(db.store, ttl_s=3600, clock=lambda: now[0])

    async def scenario() -> None:
        conv = await convs.create("t", ttl_s=60)
        await convs.append("t", conv.id, [Turn("user", "hi")])
        now[0] += 59  # the last turn renews the TTL
        assert (await convs.get("t", conv.id)).turns == 1
        now[0] += 2
        with pytest.raises(NotFoundError):
            await convs.get("t", conv.id)
        await convs.create("t")  # purges the expired one with its turns
        left = db.store.fetchone("SELECT count(*) FROM conversation_turns")
        assert left == (0,)

    asyncio.run(scenario())
    db.close()
