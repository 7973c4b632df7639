"""Users, roles and key scopes on the real app (stand-in model, real DuckDB): login issues a
short-lived HS256 JWT and a refresh token that works once; roles and key scopes decide what a
request may do (403 otherwise); expired keys are refused."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from litestar.testing import TestClient

from engine.storage import tenants
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
        assert c.post("/v1/admin/tenants", json={"name": "acme"}, headers=ADMIN).status_code == 201
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def add_user(c: TestClient, email: str, role: str) -> dict:
    r = c.post(
        "/v1/admin/tenants/acme/users",
        json={"email": email, "password": PASSWORD, "role": role},
        headers=ADMIN,
    )
    assert r.status_code == 201, r.text
    return r.json()


def login(c: TestClient, email: str) -> dict:
    r = c.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return r.json()


def claims(jwt: str) -> dict:
    body = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


def test_login_issues_a_short_lived_jwt_with_the_users_claims(client: TestClient) -> None:
    user = add_user(client, "Ann@Example.com", "member")
    grant = login(client, "ann@example.com")
    c = claims(grant["access_token"])
    assert grant["token_type"] == "bearer" and grant["expires_in"] == 900
    assert c["sub"] == user["id"] and c["tenant"] == user["tenant_id"] and c["role"] == "member"
    assert c["exp"] - c["iat"] == 900 and abs(c["iat"] - time.time()) < 60
    r = client.post("/v1/collections", json={"name": "kb"}, headers=bearer(grant["access_token"]))
    assert r.status_code == 201
    # The collection is the user's tenant's: a key of that tenant sees it.
    key = client.post("/v1/admin/tenants/acme/keys", json={}, headers=ADMIN).json()["key"]
    names = [x["name"] for x in client.get("/v1/collections", headers=bearer(key)).json()["data"]]
    assert names == ["kb"]


@pytest.mark.parametrize(
    "body",
    [
        {"email": "ann@example.com", "password": "wrong password!"},
        {"email": "nobody@example.com", "password": PASSWORD},
    ],
)
def test_a_wrong_password_or_email_is_one_401(client: TestClient, body: dict) -> None:
    add_user(client, "ann@example.com", "member")
    r = client.post("/v1/auth/login", json=body)
    assert r.status_code == 401 and r.json()["error"]["message"] == "wrong e-mail or password"


def test_a_refresh_token_works_once_and_its_reuse_ends_the_login(client: TestClient) -> None:
    add_user(client, "ann@example.com", "member")
    first = login(client, "ann@example.com")
    r = client.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert r.status_code == 200
    second = r.json()
    assert second["refresh_token"] != first["refresh_token"]
    reuse = client.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert reuse.status_code == 401 and "already used" in reuse.json()["error"]["message"]
    # The replay revoked the whole login: the newest token is refused too.
    again = client.post("/v1/auth/refresh", json={"refresh_token": second["refresh_token"]})
    assert again.status_code == 401
    bogus = client.post("/v1/auth/refresh", json={"refresh_token": "hrt_nope"})
    assert bogus.status_code == 401


def test_a_viewer_reads_and_asks_but_cannot_change_or_delete(client: TestClient) -> None:
    add_user(client, "mem@example.com", "member")
    add_user(client, "view@example.com", "viewer")
    member = bearer(login(client, "mem@example.com")["access_token"])
    viewer = bearer(login(client, "view@example.com")["access_token"])
    assert client.post("/v1/collections", json={"name": "kb"}, headers=member).status_code == 201
    assert client.get("/v1/collections", headers=viewer).status_code == 200
    chat = {"model": MODEL, "messages": MSG, "max_tokens": 2}
    assert client.post("/v1/chat/completions", json=chat, headers=viewer).status_code == 200
    r = client.delete("/v1/collections/kb", headers=viewer)
    assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error"
    assert "'write'" in r.json()["error"]["message"]
    assert client.post("/v1/collections", json={"name": "x"}, headers=viewer).status_code == 403
    assert client.get("/v1/users", headers=member).status_code == 403  # admin role only
    assert client.delete("/v1/collections/kb", headers=member).status_code == 200


def test_a_tenant_admin_manages_its_own_users_only(client: TestClient) -> None:
    add_user(client, "boss@example.com", "admin")
    boss = bearer(login(client, "boss@example.com")["access_token"])
    r = client.post(
        "/v1/users", json={"email": "new@example.com", "password": PASSWORD}, headers=boss
    )
    assert r.status_code == 201 and r.json()["role"] == "member"
    new_id = r.json()["id"]
    emails = {u["email"] for u in client.get("/v1/users", headers=boss).json()["data"]}
    assert emails == {"boss@example.com", "new@example.com"}
    r = client.put(f"/v1/users/{new_id}", json={"role": "viewer"}, headers=boss)
    assert r.status_code == 200 and r.json()["role"] == "viewer"
    assert claims(login(client, "new@example.com")["access_token"])["role"] == "viewer"
    assert client.post(f"/v1/users/{new_id}/disable", headers=boss).json()["disabled"] is True
    r = client.post("/v1/auth/login", json={"email": "new@example.com", "password": PASSWORD})
    assert r.status_code == 401
    # Another tenant's admin does not see or touch acme's users.
    client.post("/v1/admin/tenants", json={"name": "other"}, headers=ADMIN)
    client.post(
        "/v1/admin/tenants/other/users",
        json={"email": "o@example.com", "password": PASSWORD, "role": "admin"},
        headers=ADMIN,
    )
    other = bearer(login(client, "o@example.com")["access_token"])
    assert [u["email"] for u in client.get("/v1/users", headers=other).json()["data"]] == [
        "o@example.com"
    ]
    assert (
        client.put(f"/v1/users/{new_id}", json={"role": "admin"}, headers=other).status_code == 404
    )


@pytest.mark.parametrize(
    "body,param",
    [
        ({"email": "not-an-email", "password": PASSWORD}, "email"),
        ({"email": "a@example.com", "password": "short"}, "password"),
        ({"email": "a@example.com", "password": PASSWORD, "role": "owner"}, "role"),
        ({"email": "a@example.com", "password": PASSWORD, "extra": 1}, "extra"),
    ],
)
def test_bad_user_fields_are_400s_naming_the_field(
    client: TestClient, body: dict, param: str
) -> None:
    r = client.post("/v1/admin/tenants/acme/users", json=body, headers=ADMIN)
    assert r.status_code == 400 and r.json()["error"]["param"] == param


def test_a_forged_or_expired_access_token_is_a_401(client: TestClient) -> None:
    add_user(client, "ann@example.com", "admin")
    token = login(client, "ann@example.com")["access_token"]
    head, body, sig = token.split(".")
    forged_claims = {**claims(token), "tenant": "default"}
    forged_body = base64.urlsafe_b64encode(json.dumps(forged_claims).encode()).rstrip(b"=")
    forged = f"{head}.{forged_body.decode()}.{sig}"
    assert client.get("/v1/collections", headers=bearer(forged)).status_code == 401
    none_alg = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    assert client.get("/v1/collections", headers=bearer(f"{none_alg}.{body}.")).status_code == 401


def test_key_scopes_and_expiry(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    def key(**body) -> dict:
        r = client.post("/v1/admin/tenants/acme/keys", json=body, headers=ADMIN)
        assert r.status_code == 201, r.text
        return r.json()

    inference = key(scopes=["inference"])
    assert inference["scopes"] == ["inference"] and inference["expires_at"] is None
    chat = {"model": MODEL, "messages": MSG, "max_tokens": 2}
    h = bearer(inference["key"])
    assert client.post("/v1/chat/completions", json=chat, headers=h).status_code == 200
    assert client.get("/v1/collections", headers=h).status_code == 403
    assert client.post("/v1/collections", json={"name": "kb"}, headers=h).status_code == 403
    read_only = bearer(key(scopes=["read"])["key"])
    assert client.get("/v1/collections", headers=read_only).status_code == 200
    assert client.post("/v1/chat/completions", json=chat, headers=read_only).status_code == 403

    later = key(expires_at=int(time.time()) + 3600)
    assert later["scopes"] == ["read", "inference", "write", "admin"]
    assert abs(later["expires_at"] - (time.time() + 3600)) < 60
    assert client.get("/v1/collections", headers=bearer(later["key"])).status_code == 200
    # Two hours on (the key's identity is cached by now: the expiry is checked at every use).
    moved = datetime.now(UTC).replace(tzinfo=None) + timedelta(hours=2)
    monkeypatch.setattr(tenants, "utcnow", lambda: moved)
    r = client.get("/v1/collections", headers=bearer(later["key"]))
    assert r.status_code == 401 and "expired" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    "body,param",
    [
        ({"scopes": []}, "scopes"),
        ({"scopes": ["everything"]}, "scopes"),
        ({"scopes": "read"}, "scopes"),
        ({"expires_at": 1}, "expires_at"),
        ({"expires_at": 2**40}, "expires_at"),
    ],
)
def test_bad_key_fields_are_400s(client: TestClient, body: dict, param: str) -> None:
    r = client.post("/v1/admin/tenants/acme/keys", json=body, headers=ADMIN)
    assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text


def test_the_cli_creates_scoped_expiring_keys_and_users_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import io

    from engine.storage import open_store
    from server.cli import main

    def admin(*argv: str) -> dict:
        assert (
            main(["admin", "--profile", "test", "--data-dir", str(tmp_path), "--offline", *argv])
            == 0
        )
        return json.loads(capsys.readouterr().out)

    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    user = admin("users", "create", "default", "cli@example.com", "--role", "viewer")
    assert user["role"] == "viewer" and user["email"] == "cli@example.com"
    key = admin("keys", "create", "default", "--scopes", "read,inference", "--expires-days", "1")
    assert key["scopes"] == ["read", "inference"]
    db = open_store(tmp_path / "hearth.duckdb")
    try:
        assert db.users.login("cli@example.com", PASSWORD).role == "viewer"
        found = db.tenants.identify(key["key"])
        assert found is not None and found.scopes == {"read", "inference"}
        assert found.expires_at is not None and not found.expired()
    finally:
        db.close()
