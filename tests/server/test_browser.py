"""Browser safety (server.browser): in open mode a rebound DNS name (Host) and a cross-site page
(Origin) are refused; a body must be JSON (or multipart) in every mode; no CORS unless
configured; no open mode on a non-loopback address unless --insecure-open."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from server.app import create_app
from server.browser import open_mode_refusal
from tests.server.fakes import FakeParts, fake_settings
from tests.server.test_routes import MODEL, MSG, wait_ready


def _client(tmp_path: Path, **server: Any) -> TestClient:
    settings = fake_settings(tmp_path)
    settings = dataclasses.replace(settings, server=dataclasses.replace(settings.server, **server))
    parts = FakeParts(settings)
    app = create_app(settings, open_services=parts.open, exit_on_start_failure=False)
    return TestClient(app, base_url="http://testclient")


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with _client(tmp_path) as c:
        wait_ready(c)
        yield c


def test_open_mode_answers_only_its_host_names(client: TestClient) -> None:
    assert client.get("/v1/models", headers={"host": "localhost:8000"}).status_code == 200
    assert client.get("/v1/models", headers={"host": "[::1]:8000"}).status_code == 200
    r = client.get("/v1/models", headers={"host": "attacker.example:8000"})
    assert r.status_code == 400 and "allowed_hosts" in r.json()["error"]["message"]


def test_open_mode_refuses_web_origins(client: TestClient) -> None:
    body = {"model": MODEL, "messages": MSG}
    r = client.post("/v1/chat/completions", json=body, headers={"origin": "https://evil.example"})
    assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error"
    assert "access-control-allow-origin" not in r.headers
    assert client.post("/v1/chat/completions", json=body).status_code == 200
    own = {"origin": "http://localhost:8000", "host": "localhost:8000"}  # a page Hearth served
    assert client.post("/v1/chat/completions", json=body, headers=own).status_code == 200


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_a_body_must_be_json(client: TestClient, content_type: str | None) -> None:
    headers = {"content-type": content_type} if content_type else {}
    body = b'{"model": "%s", "messages": [{"role": "user", "content": "hi"}]}' % MODEL.encode()
    r = client.post("/v1/chat/completions", content=body, headers=headers)
    assert r.status_code == 415 and "application/json" in r.json()["error"]["message"]


def test_cors_only_for_configured_origins(tmp_path: Path) -> None:
    origin = "https://console.example"
    with _client(tmp_path, cors_origins=origin) as c:
        wait_ready(c)
        r = c.get("/v1/models", headers={"origin": origin})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == origin
        assert c.get("/v1/models", headers={"origin": "https://other.example"}).status_code == 403


def test_open_mode_on_a_public_address_refuses_to_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HEARTH_ADMIN_KEY", raising=False)
    with _client(tmp_path, host="0.0.0.0") as c:
        state = c.app.state.server
        deadline = time.monotonic() + 30
        while state.start_error is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert state.start_error and "--insecure-open" in state.start_error
        assert c.get("/ready").status_code == 503
    assert open_mode_refusal("0.0.0.0", True, has_keys=False, admin_key_set=False) is None
    assert open_mode_refusal("0.0.0.0", False, has_keys=True, admin_key_set=False) is None
    assert open_mode_refusal("0.0.0.0", False, has_keys=False, admin_key_set=True) is None
    assert open_mode_refusal("127.0.0.1", False, has_keys=False, admin_key_set=False) is None
