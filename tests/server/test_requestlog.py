"""X-Request-Id is accepted (when sane) and returned on every response; logs carry it, as JSON
lines when asked, and never the prompt text."""

from __future__ import annotations

import json
import logging

import pytest
from litestar.testing import TestClient

from configs import ConfigError
from server.requestlog import REQUEST_ID, JsonFormatter, RequestIdFilter, configure_logging
from tests.server.test_routes import MODEL, app_parts, client  # noqa: F401 - the app fixtures

SECRET = "my account number is 4417-1234-5678-9113"


def test_request_ids_in_and_out(client: TestClient) -> None:  # noqa: F811
    mine = client.get("/v1/models", headers={"x-request-id": "trace-42.a"})
    assert mine.headers["x-request-id"] == "trace-42.a"
    made = client.get("/v1/models", headers={"x-request-id": "bad id\twith spaces"})
    assert made.headers["x-request-id"].startswith("req_")
    assert client.get("/health").headers["x-request-id"].startswith("req_")
    error = client.post("/v1/chat/completions", json={"model": "nope", "messages": []})
    assert error.status_code >= 400 and error.headers["x-request-id"].startswith("req_")


def test_logs_carry_the_request_id_and_no_prompt_text(
    client: TestClient,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    body = {"model": MODEL, "messages": [{"role": "user", "content": SECRET}]}
    r = client.post("/v1/chat/completions", json=body, headers={"x-request-id": "rid-7"})
    assert r.status_code == 200
    lines = [JsonFormatter().format(rec) for rec in caplog.records]
    assert not [line for line in lines if "4417" in line]
    access = [json.loads(line) for line in lines if '"logger": "hearth.access"' in line]
    chat = [a for a in access if "/v1/chat/completions" in a["message"]]
    assert chat and chat[-1]["status"] == 200 and chat[-1]["tenant"] == "default"


def test_json_lines_name_the_request() -> None:
    record = logging.LogRecord("engine.x", logging.WARNING, __file__, 1, "slow %s", ("step",), None)
    token = REQUEST_ID.set("rid-9")
    try:
        RequestIdFilter().filter(record)
        line = json.loads(JsonFormatter().format(record))
    finally:
        REQUEST_ID.reset(token)
    assert line["request_id"] == "rid-9" and line["message"] == "slow step"
    assert line["level"] == "warning" and line["logger"] == "engine.x"
    with pytest.raises(ConfigError, match="log_format"):
        configure_logging("xml")


SENSITIVE = {
    "ann.lee@example.com": "<email>",
    "+1 415 555 0100": "<phone>",
    "(415) 555-0100": "<phone>",
    "hth_0123456789ab_SeCrEtSeCrEtSeCrEt-_x": "hth_0123456789ab_<redacted>",
    "hrt_abcDEF123_-xyz": "hrt_<redacted>",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c3JfMSJ9.c2lnbmF0dXJl": "<jwt>",
}


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_logs_never_hold_emails_phone_numbers_or_keys(
    log_format: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HEARTH_ADMIN_KEY", "the-admin-key-42")
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure_logging(log_format)
        log = logging.getLogger("engine.test")
        for raw in SENSITIVE:
            log.warning("user said %s to us", raw)
        log.info("Authorization: Bearer the-admin-key-42 from 2026-12-05 08:09:36 on 127.0.0.1")
        try:
            raise ValueError("bad key hth_0123456789ab_AnotherSecretValue for bob@example.org")
        except ValueError:
            log.exception("failed")
        out = capsys.readouterr().err
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    for raw, replacement in SENSITIVE.items():
        assert raw not in out and replacement in out
    assert "the-admin-key-42" not in out and "AnotherSecretValue" not in out
    assert "bob@example.org" not in out and "ValueError" in out  # the traceback is still there
    # What is not personal stays readable: dates, times and addresses are not phone numbers.
    assert "2026-12-05 08:09:36" in out and "127.0.0.1" in out
