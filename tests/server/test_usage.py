"""Every route records usage (tenant, kind, model, tokens, seconds); ``GET /v1/usage`` reports it
per UTC day and model with an estimated cost from ``[usage] prices``, per tenant."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from litestar.testing import TestClient

from engine.usage import parse_prices
from server.app import create_app
from tests.server.fakes import FakeParts, fake_settings
from tests.server.test_routes import MODEL, MSG, wait_ready

EMBEDDER = "all-minilm-l6-v2"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = fake_settings(tmp_path)
    prices = f"{MODEL}=1000000/2000000; {EMBEDDER}=500000"  # large, to see the arithmetic
    settings = dataclasses.replace(
        settings, usage=dataclasses.replace(settings.usage, prices=prices)
    )
    parts = FakeParts(settings)
    app = create_app(settings, open_services=parts.open, exit_on_start_failure=False)
    with TestClient(app, base_url="http://testclient") as c:
        wait_ready(c)
        yield c


def test_each_route_is_recorded_by_day_and_model_with_its_cost(client: TestClient) -> None:
    chat = client.post("/v1/chat/completions", json={"model": MODEL, "messages": MSG}).json()
    done = client.post("/v1/completions", json={"model": MODEL, "prompt": "hi", "max_tokens": 3})
    emb = client.post("/v1/embeddings", json={"model": EMBEDDER, "input": ["a b", "c"]}).json()
    assert done.status_code == 200
    body = client.get("/v1/usage").json()
    today = dt.datetime.now(dt.UTC).date().isoformat()
    rows = {row["model"]: row for row in body["days"]}
    assert set(rows) == {MODEL, EMBEDDER} and {r["date"] for r in body["days"]} == {today}
    gen = rows[MODEL]
    assert gen["requests"] == 2
    assert gen["prompt_tokens"] == chat["usage"]["prompt_tokens"] + 3  # BOS + "hi"
    assert gen["completion_tokens"] == chat["usage"]["completion_tokens"] + 3
    assert gen["cost"] == pytest.approx(gen["prompt_tokens"] + 2 * gen["completion_tokens"])
    assert rows[EMBEDDER]["prompt_tokens"] == emb["usage"]["prompt_tokens"]
    assert rows[EMBEDDER]["cost"] == pytest.approx(emb["usage"]["prompt_tokens"] / 2)
    assert body["total_cost"] == pytest.approx(gen["cost"] + rows[EMBEDDER]["cost"])
    assert body["currency"] == "USD" and gen["seconds"] >= 0
    assert set(body["other"]) >= {"chat", "completions", "embeddings"}  # totals per kind
    assert "tasks" in body  # the task totals are still there


def test_days_is_bounded(client: TestClient) -> None:
    r = client.get("/v1/usage", params={"days": 0})
    assert r.status_code == 400 and r.json()["error"]["param"] == "days"


@pytest.mark.parametrize("text", ["m", "m=x", "m=1/2/3", "=1", "m=-1"])
def test_a_bad_price_is_named(text: str) -> None:
    with pytest.raises(ValueError, match="usage.prices"):
        parse_prices(text)


def test_prices_parse() -> None:
    prices = parse_prices(" a=1.5/3 ; b=2 ;")
    assert prices["a"].cost(1_000_000, 1_000_000) == 4.5 and prices["b"].completion == 2
