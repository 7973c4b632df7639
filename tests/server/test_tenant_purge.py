"""A tenant's export and purge on the real app (stand-in model, real DuckDB, FAISS index files):
the export holds every row, index file and table of the tenant and nothing of another; the purge
leaves no row in any table, no index file, no tables file and no cache entry, and the other
tenant keeps everything."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from litestar.testing import TestClient

from engine.storage import NewChunk
from engine.tenant_data import CHILD_TABLES, GLOBAL_TABLES, OWN_TABLES, all_tables, tenant_tables
from server.app import create_app
from tests.server.fakes import FakeParts, fake_settings
from tests.server.test_routes import MODEL, MSG, wait_ready

ADMIN = {"Authorization": "Bearer adm"}
PASSWORD = "correct horse battery"


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("HEARTH_ADMIN_KEY", "adm")
    settings = fake_settings(tmp_path)
    parts = FakeParts(settings)
    app = create_app(settings, open_services=parts.open, exit_on_start_failure=False)
    with TestClient(app, base_url="http://testclient") as c:
        wait_ready(c)
        yield c


def hearth(client: TestClient) -> Any:
    return client.app.state.server.hearth


def populate(client: TestClient, name: str) -> dict[str, Any]:
    """A tenant with a key, a user (and a refresh token), a limit override, a collection with a
    document, its vectors and saved index files, a cached chat answer, usage, a conversation and
    an example table."""
    tenant = client.post("/v1/admin/tenants", json={"name": name}, headers=ADMIN).json()
    key = client.post(f"/v1/admin/tenants/{name}/keys", json={}, headers=ADMIN).json()
    auth = {"Authorization": f"Bearer {key['key']}"}
    client.put(
        f"/v1/admin/limits/{key['id']}", json={"limits": {"requests_per_min": 500}}, headers=ADMIN
    )
    client.post(
        f"/v1/admin/tenants/{name}/users",
        json={"email": f"{name}@example.com", "password": PASSWORD},
        headers=ADMIN,
    )
    assert (
        client.post(
            "/v1/auth/login", json={"email": f"{name}@example.com", "password": PASSWORD}
        ).status_code
        == 200
    )
    chat = {"model": MODEL, "messages": MSG, "max_tokens": 3, "temperature": 0}
    assert client.post("/v1/chat/completions", json=chat, headers=auth).status_code == 200
    assert client.post("/v1/collections", json={"name": "kb"}, headers=auth).status_code == 201
    assert client.post("/v1/conversations", json={}, headers=auth).status_code == 201
    rows = [{"sku": "a1", "qty": 3}]
    assert client.put("/v1/tables/orders", json={"rows": rows}, headers=auth).status_code == 200

    h = hearth(client)
    col = h.db.corpus.get_collection(tenant["id"], "kb")
    doc = h.db.corpus.add_document(
        col,
        client_id="d1",
        title="t",
        content_hash="h",
        source_type="json",
        metadata={},
        n_bytes=4,
        job_id=None,
    )
    vec = np.ones((1, h.retrieval.index.dim), np.float32) / np.sqrt(h.retrieval.index.dim)
    with h.retrieval.index.writing(col.id):
        ids = h.db.corpus.complete_document(doc, [NewChunk(f"{name} text", 2, 0, 9)], vec, None)
        h.retrieval.index.added(col.id, ids, vec)
    h.retrieval.index.save(col.id)
    return {"tenant": tenant["id"], "key": key, "auth": auth, "collection": col.id}


def test_every_table_is_known_to_the_purge(client: TestClient) -> None:
    """A new table must carry tenant_id or be listed (child, own or global) in
    engine.tenant_data, or a purge would leave its rows behind."""
    store = hearth(client).db.store
    known = set(tenant_tables(store)) | set(CHILD_TABLES) | set(OWN_TABLES) | GLOBAL_TABLES
    assert set(all_tables(store)) - known == set()


def test_export_holds_the_tenants_rows_and_files_and_nothing_of_another(
    client: TestClient,
) -> None:
    a, b = populate(client, "acme"), populate(client, "globex")
    r = client.get("/v1/admin/tenants/acme/export", headers=ADMIN)
    assert r.status_code == 200 and r.headers["content-type"] == "application/gzip"
    with tarfile.open(fileobj=io.BytesIO(r.content), mode="r:gz") as tar:
        names = set(tar.getnames())
        files = {n: tar.extractfile(n).read() for n in names if tar.getmember(n).isfile()}
    manifest = json.loads(files["./manifest.json"])
    assert manifest["tenant"] == a["tenant"]
    for table in (
        "api_keys",
        "users",
        "collections",
        "documents",
        "chunks",
        "vectors",
        "usage",
        "conversations",
        "tenants",
        "limit_overrides",
        "refresh_tokens",
    ):
        assert manifest["rows"].get(table, 0) >= 1, table
    assert f"./indexes/{a['collection']}/dense.faiss" in names
    assert "./tables.duckdb" in names
    everything = b"".join(files.values())
    assert a["tenant"].encode() in everything
    assert b["tenant"].encode() not in everything and b"globex" not in everything
    keys = [json.loads(line) for line in files["./db/api_keys.jsonl"].splitlines()]
    assert keys[0]["id"] == a["key"]["id"] and "key_hash" not in keys[0]
    users = [json.loads(line) for line in files["./db/users.jsonl"].splitlines()]
    assert "password_hash" not in users[0]
    assert not list(Path(hearth(client).settings.data_dir).glob("export-*"))  # cleaned up


def test_purge_leaves_nothing_of_the_tenant_and_everything_of_the_other(
    client: TestClient,
) -> None:
    a, b = populate(client, "acme"), populate(client, "globex")
    h = hearth(client)
    index_dir = h.retrieval.index.index_dir
    tables_a = h.tables.path(a["tenant"])
    assert (index_dir / a["collection"]).exists() and tables_a.exists()
    assert any(k.startswith(f"{a['tenant']}:") for k in h.engine.responses._entries)

    r = client.delete("/v1/admin/tenants/acme", headers=ADMIN)
    assert r.status_code == 400 and r.json()["error"]["param"] == "purge"
    r = client.delete("/v1/admin/tenants/acme?purge=true", headers=ADMIN)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["deleted"] is True and body["remaining"] == {}
    assert body["rows"]["documents"] == 1 and body["rows"]["vectors"] == 1

    # Every store, checked directly: no row that names the tenant or its key in any column.
    store = h.db.store
    for table in all_tables(store):
        columns = [
            r[0]
            for r in store.fetchall(
                "SELECT column_name FROM information_schema.columns WHERE table_name = ? "
                "AND data_type IN ('VARCHAR', 'JSON')",
                [table],
            )
        ]
        for column in columns:
            for needle in (a["tenant"], a["key"]["id"], a["collection"]):
                hit = store.fetchone(
                    f'SELECT count(*) FROM "{table}" WHERE CAST("{column}" AS VARCHAR) LIKE ?',
                    [f"%{needle}%"],
                )
                assert hit[0] == 0, (table, column, needle)
    assert not (index_dir / a["collection"]).exists()
    assert a["collection"] not in h.retrieval.index.open_collections
    assert not tables_a.exists()
    assert not any(k.startswith(f"{a['tenant']}:") for k in h.engine.responses._entries)
    assert a["key"]["id"] not in h.limits._overrides and a["tenant"] not in h.limits._counters

    # The purged tenant's key and login no longer work; the other tenant has everything.
    assert client.get("/v1/collections", headers=a["auth"]).status_code == 401
    login = {"email": "acme@example.com", "password": PASSWORD}
    assert client.post("/v1/auth/login", json=login).status_code == 401
    assert client.get("/v1/admin/tenants/acme/export", headers=ADMIN).status_code == 404
    assert [c["name"] for c in client.get("/v1/collections", headers=b["auth"]).json()["data"]] == [
        "kb"
    ]
    hits = h.retrieval.index.search(
        [h.db.corpus.get_collection(b["tenant"], "kb")],
        ["globex"],
        np.ones((1, h.retrieval.index.dim), np.float32),
        1,
        "hybrid",
    )[0]
    assert len(hits) == 1 and h.tables.path(b["tenant"]).exists()
    assert any(k.startswith(f"{b['tenant']}:") for k in h.engine.responses._entries)


def test_purge_refuses_the_default_tenant_and_unknown_ones(client: TestClient) -> None:
    r = client.delete("/v1/admin/tenants/default?purge=true", headers=ADMIN)
    assert r.status_code == 400 and r.json()["error"]["param"] == "tenant"
    assert client.delete("/v1/admin/tenants/nope?purge=true", headers=ADMIN).status_code == 404
    assert client.delete("/v1/admin/tenants/nope?purge=true").status_code == 401


def test_the_cli_exports_and_purges_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from engine.storage import open_store
    from server.cli import main

    data = tmp_path / "data"
    db = open_store(data / "hearth.duckdb")
    tenant = db.tenants.create("acme")
    db.tenants.create_key("acme")
    db.corpus.create_collection(tenant.id, "kb", 128, 16)
    db.close()

    def admin(*argv: str) -> int:
        return main(["admin", "--profile", "test", "--data-dir", str(data), "--offline", *argv])

    assert admin("tenants", "export", "acme", "--out", str(tmp_path / "out")) == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["rows"]["collections"] == 1 and manifest["rows"]["api_keys"] == 1
    assert admin("tenants", "delete", "acme") == 1  # no --purge: refused
    assert admin("tenants", "delete", "acme", "--purge") == 0
    capsys.readouterr()
    db = open_store(data / "hearth.duckdb")
    try:
        assert [t.name for t in db.tenants.list()] == ["default"]
        assert db.store.fetchone("SELECT count(*) FROM collections")[0] == 0
    finally:
        db.close()
