"""Limits per tenant and per API key (engine.LimitService, checked in server.auth before any
handler): 429 naming the limit, Retry-After and OpenAI's x-ratelimit-* headers; one tenant's use
never counts against another's; admin overrides per tenant and per key; storage limits."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from engine import LimitService, Quota, TooManyRequestsError
from server.app import create_app
from tests.server.fakes import REPLY, FakeParts, fake_settings
from tests.server.test_routes import MODEL, MSG, wait_ready

ADMIN = {"Authorization": "Bearer adm"}


class Tenants:
    """The app with two tenants, ``a`` (two keys) and ``b`` (one key)."""

    def __init__(self, client: TestClient, parts: FakeParts) -> None:
        self.client, self.parts = client, parts
        self.keys: dict[str, dict[str, Any]] = {}
        for name, n in (("a", 2), ("b", 1)):
            assert client.post("/v1/admin/tenants", json={"name": name}, headers=ADMIN).is_success
            for i in range(n):
                r = client.post(f"/v1/admin/tenants/{name}/keys", json={}, headers=ADMIN)
                self.keys[f"{name}{i + 1}"] = r.json()

    def auth(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[key]['key']}"}

    def chat(self, key: str, **extra: Any) -> Any:
        body = {"model": MODEL, "messages": MSG, **extra}
        return self.client.post("/v1/chat/completions", json=body, headers=self.auth(key))

    def limit(self, subject: str, **limits: int | None) -> dict[str, Any]:
        r = self.client.put(f"/v1/admin/limits/{subject}", json={"limits": limits}, headers=ADMIN)
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture
def tenants(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Tenants]:
    monkeypatch.setenv("HEARTH_ADMIN_KEY", "adm")
    settings = fake_settings(tmp_path)
    parts = FakeParts(settings)
    app = create_app(settings, open_services=parts.open, exit_on_start_failure=False)
    with TestClient(app, base_url="http://testclient") as client:
        wait_ready(client)
        yield Tenants(client, parts)


def test_requests_per_minute_429_names_the_limit_and_spares_other_tenants(
    tenants: Tenants,
) -> None:
    tenants.limit("a", requests_per_min=2)
    first = tenants.chat("a1")
    assert first.status_code == 200
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert first.headers["x-ratelimit-reset-requests"].endswith("s")
    assert tenants.chat("a2").status_code == 200  # the tenant's keys share its limit
    over = tenants.chat("a1")
    assert over.status_code == 429
    error = over.json()["error"]
    assert error["type"] == "rate_limit_error" and error["code"] == "requests_per_min"
    assert "requests_per_min" in error["message"]
    assert int(over.headers["retry-after"]) >= 1
    assert over.headers["x-ratelimit-remaining-requests"] == "0"
    assert tenants.chat("b1").status_code == 200  # another tenant is not affected


def test_admission_comes_before_any_work(tenants: Tenants) -> None:
    tenants.limit("a", requests_per_min=1)
    assert tenants.chat("a1").status_code == 200
    submitted = len(tenants.parts.backend.submitted)
    # Over the limit, not even the body is read: an invalid one is a 429, not a 400.
    r = tenants.client.post(
        "/v1/chat/completions",
        content=b"{not json",
        headers={"content-type": "application/json", **tenants.auth("a1")},
    )
    assert r.status_code == 429
    assert len(tenants.parts.backend.submitted) == submitted


def test_a_key_override_limits_that_key_only(tenants: Tenants) -> None:
    key_id = tenants.keys["a1"]["id"]
    out = tenants.limit(key_id, requests_per_min=1)
    assert out["subject_type"] == "api_key" and out["overrides"] == {"requests_per_min": 1}
    assert tenants.chat("a1").status_code == 200
    assert tenants.chat("a1").status_code == 429
    assert tenants.chat("a2").status_code == 200
    out = tenants.limit(key_id, requests_per_min=None)  # null removes the override
    assert out["overrides"] == {} and tenants.chat("a1").status_code == 200


def test_tokens_per_minute_counts_what_requests_used(tenants: Tenants) -> None:
    tenants.limit("a", tokens_per_min=len(REPLY))
    r = tenants.chat("a1")
    assert r.status_code == 200 and r.headers["x-ratelimit-limit-tokens"] == str(len(REPLY))
    over = tenants.chat("a1")
    assert over.status_code == 429 and over.json()["error"]["code"] == "tokens_per_min"
    assert tenants.chat("b1").status_code == 200


def test_storage_limits(tenants: Tenants) -> None:
    tenants.limit("a", collections=1)
    c = tenants.client
    assert c.post("/v1/collections", json={"name": "one"}, headers=tenants.auth("a1")).is_success
    r = c.post("/v1/collections", json={"name": "two"}, headers=tenants.auth("a1"))
    assert r.status_code == 429 and r.json()["error"]["code"] == "collections"
    assert c.post("/v1/collections", json={"name": "two"}, headers=tenants.auth("b1")).is_success


@pytest.mark.parametrize(
    ("limits", "param"),
    [
        ({"requests_per_hour": 5}, "limits.requests_per_hour"),
        ({"requests_per_min": -1}, "limits.requests_per_min"),
        ({"requests_per_min": "5"}, "limits.requests_per_min"),
    ],
)
def test_bad_overrides_are_a_400_naming_the_limit(
    tenants: Tenants, limits: dict[str, Any], param: str
) -> None:
    r = tenants.client.put("/v1/admin/limits/a", json={"limits": limits}, headers=ADMIN)
    assert r.status_code == 400 and r.json()["error"]["param"] == param


def test_unknown_subject_is_404(tenants: Tenants) -> None:
    r = tenants.client.put("/v1/admin/limits/nobody", json={"limits": {}}, headers=ADMIN)
    assert r.status_code == 404


def test_concurrency_limit_and_windows() -> None:
    now = [1000.0]
    quota = Quota(concurrent_requests=1, requests_per_min=2)
    limits = LimitService(quota, None, clock=lambda: now[0])
    first = limits.admit("t")
    with pytest.raises(TooManyRequestsError) as err:
        limits.admit("t")
    assert err.value.code == "concurrent_requests"
    limits.admit("u").release()  # another tenant has its own slot
    first.release()
    first.release()  # once only
    limits.admit("t").release()
    with pytest.raises(TooManyRequestsError) as err:
        limits.admit("t")
    assert err.value.code == "requests_per_min" and 1 <= err.value.retry_after <= 60
    now[0] += 60  # the next minute
    limits.admit("t").release()


def test_cross_tenant_figures_are_for_the_admin_only(tenants: Tenants) -> None:
    c = tenants.client
    assert tenants.chat("a1").status_code == 200
    assert c.get("/metrics", headers=tenants.auth("b1")).status_code == 401
    scraped = c.get("/metrics", headers=ADMIN)
    assert scraped.status_code == 200 and "hearth_requests_total" in scraped.text
    public = c.get("/ready", headers=tenants.auth("b1")).json()
    assert public["status"] == "ready" and "stats" not in public
    assert "inflight_sequences" not in public
    assert "stats" in c.get("/ready", headers=ADMIN).json()


def test_a_revoked_key_is_refused_at_once(tenants: Tenants) -> None:
    assert tenants.chat("a2").status_code == 200  # known, and remembered
    key_id = tenants.keys["a2"]["id"]
    assert tenants.client.post(f"/v1/admin/keys/{key_id}/revoke", headers=ADMIN).is_success
    assert tenants.chat("a2").status_code == 401
    assert tenants.chat("a1").status_code == 200
