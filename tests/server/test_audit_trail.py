"""The audit trail on the real app (real DuckDB): admin actions, user changes and deletes each
leave one durable row naming the actor, the tenant and the request; tenants read only their own
rows (admin scope); the admin lists and exports every row as JSON lines."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from server.app import create_app
from tests.server.fakes import FakeParts, fake_settings
from tests.server.test_routes import wait_ready

ADMIN = {"Authorization": "Bearer adm"}


def app_for(data: Path) -> Litestar:
    settings = fake_settings(data)
    parts = FakeParts(settings)
    return create_app(settings, open_services=parts.open, exit_on_start_failure=False)


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("HEARTH_ADMIN_KEY", "adm")
    with TestClient(app_for(tmp_path), base_url="http://testclient") as c:
        wait_ready(c)
        yield c


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_admin_actions_and_deletes_are_audited_durably(client: TestClient, tmp_path: Path) -> None:
    tenant = client.post("/v1/admin/tenants", json={"name": "acme"}, headers=ADMIN).json()
    key = client.post("/v1/admin/tenants/acme/keys", json={"name": "ci"}, headers=ADMIN).json()
    r = client.put("/v1/admin/limits/acme", json={"limits": {"requests_per_min": 9}}, headers=ADMIN)
    assert r.status_code == 200
    auth = bearer(key["key"])
    assert client.post("/v1/collections", json={"name": "kb"}, headers=auth).status_code == 201
    r = client.delete("/v1/collections/kb", headers={**auth, "X-Request-Id": "rid-del-1"})
    assert r.status_code == 200
    client.delete("/v1/collections/nope", headers=auth)  # a 404: nothing changed, no row
    other = client.post("/v1/admin/tenants", json={"name": "globex"}, headers=ADMIN).json()

    rows = client.get(f"/v1/admin/audit?tenant={tenant['id']}", headers=ADMIN).json()["data"]
    by_action = {r["action"]: r for r in rows}
    assert set(by_action) == {
        "delete.delete_collection",
        "admin.set_limits",
        "admin.create_key",
        "admin.create_tenant",
    }
    assert rows[0]["action"] == "delete.delete_collection"  # newest first
    deleted = by_action["delete.delete_collection"]
    assert deleted["subject"] == "name=kb" and deleted["request_id"] == "rid-del-1"
    assert deleted["detail"]["actor"] == key["id"] and deleted["detail"]["status"] == 200
    created = by_action["admin.create_key"]
    assert created["detail"]["actor"] == "admin" and created["subject"] == "tenant=acme"
    assert key["key"] not in str(rows)  # no secrets

    # The tenant sees its own rows (an admin-scoped key), never another tenant's.
    mine = client.get("/v1/audit", headers=auth).json()["data"]
    assert {r["action"] for r in mine} >= {"delete.delete_collection", "admin.create_key"}
    assert other["id"] not in str(mine)
    reader = client.post(
        "/v1/admin/tenants/acme/keys", json={"scopes": ["read"]}, headers=ADMIN
    ).json()
    assert client.get("/v1/audit", headers=bearer(reader["key"])).status_code == 403

    # Durable: a new server on the same data directory has every row.
    client.__exit__(None, None, None)
    with TestClient(app_for(tmp_path), base_url="http://testclient") as again:
        wait_ready(again)
        export = again.get("/v1/admin/audit/export", headers=ADMIN)
    assert export.status_code == 200
    assert export.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in export.text.splitlines()]
    assert {"admin.create_tenant", "delete.delete_collection", "admin.create_key"} <= {
        row["action"] for row in lines
    }
    assert all("tenant_id" in row for row in lines)


def test_a_purge_is_audited_without_the_tenants_id(client: TestClient) -> None:
    tenant = client.post("/v1/admin/tenants", json={"name": "acme"}, headers=ADMIN).json()
    client.post("/v1/admin/tenants/acme/keys", json={}, headers=ADMIN)
    r = client.delete("/v1/admin/tenants/acme?purge=true", headers=ADMIN)
    assert r.status_code == 200 and r.json()["remaining"] == {}
    rows = client.get("/v1/admin/audit", headers=ADMIN).json()["data"]
    assert rows[0]["action"] == "admin.delete_tenant" and rows[0]["tenant_id"] == "_server"
    assert rows[0]["subject"].startswith("tenant_sha256=")
    assert tenant["id"] not in str(rows)  # the tenant's own rows went with it


@pytest.mark.parametrize("query", ["limit=0", "limit=501", "limit=x", "tenant=" + "t" * 201])
def test_bad_audit_queries_are_400s(client: TestClient, query: str) -> None:
    r = client.get(f"/v1/admin/audit?{query}", headers=ADMIN)
    assert r.status_code == 400 and r.json()["error"]["param"] in ("limit", "tenant")


def test_the_cli_exports_the_audit_log_offline(
    client: TestClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from server.cli import main

    client.post("/v1/admin/tenants", json={"name": "acme"}, headers=ADMIN)
    client.__exit__(None, None, None)  # the CLI opens the database itself
    out = tmp_path / "audit.jsonl"
    argv = ["admin", "--profile", "test", "--data-dir", str(tmp_path), "--offline"]
    assert main([*argv, "audit", "export", "--out", str(out)]) == 0
    capsys.readouterr()
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["action"] for r in rows] == ["admin.create_tenant"]
