"""Two tenants with keys on a real server (real model, official OpenAI client): one tenant's
limits, deadlines, cached prompts and usage never reach the other."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.support import HearthProcess

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ADMIN_KEY = "isolation-admin-key-0123456789"
LLM = "gemma-3-270m-q4km"
SHARED_PROMPT = "You are a careful assistant for the accounts team. " * 12


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HearthProcess]:
    proc = HearthProcess(tmp_path_factory.mktemp("iso"), env={"HEARTH_ADMIN_KEY": ADMIN_KEY})
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def admin(server: HearthProcess) -> httpx.Client:
    return httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=60
    )


@pytest.fixture(scope="module")
def keys(admin: httpx.Client) -> dict[str, str]:
    out = {}
    for name in ("acme", "globex"):
        assert admin.post("/v1/admin/tenants", json={"name": name}).status_code == 201
        out[name] = admin.post(f"/v1/admin/tenants/{name}/keys", json={}).json()["key"]
    return out


def client(server: HearthProcess, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0, timeout=300)


def chat(c: openai.OpenAI, content: str = "Hi", **extra: Any) -> Any:
    return c.chat.completions.with_raw_response.create(
        model=LLM, messages=[{"role": "user", "content": content}], max_tokens=1, **extra
    )


def prefix_hits(admin: httpx.Client) -> int:
    return admin.get("/ready").json()["stats"]["prefix_hit_tokens"]


def test_cached_prompts_are_reused_within_a_tenant_only(
    server: HearthProcess, admin: httpx.Client, keys: dict[str, str]
) -> None:
    acme, globex = client(server, keys["acme"]), client(server, keys["globex"])
    chat(acme, SHARED_PROMPT)
    before = prefix_hits(admin)
    chat(globex, SHARED_PROMPT)  # the same prompt from another tenant: computed afresh
    assert prefix_hits(admin) == before
    chat(acme, SHARED_PROMPT)  # the same tenant again: its cached prefix is reused
    assert prefix_hits(admin) > before


def test_one_tenants_limit_and_deadline_do_not_touch_the_other(
    server: HearthProcess, admin: httpx.Client, keys: dict[str, str]
) -> None:
    # A fresh key of acme's, limited on its own to two requests a minute.
    key = admin.post("/v1/admin/tenants/acme/keys", json={"name": "batch"}).json()
    limit = {"limits": {"requests_per_min": 2}}
    assert admin.put(f"/v1/admin/limits/{key['id']}", json=limit).status_code == 200
    acme, globex = client(server, key["key"]), client(server, keys["globex"])
    first = chat(acme)
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    chat(acme)
    with pytest.raises(openai.RateLimitError) as err:
        chat(acme)
    assert err.value.code == "requests_per_min"
    assert int(err.value.response.headers["retry-after"]) >= 1
    assert chat(globex).parse().choices[0].message.content is not None
    with pytest.raises(openai.APIStatusError) as late:  # globex's own deadline: a 408
        chat(globex, "Write a long story.", extra_body={"timeout": 0.001, "max_tokens": 512})
    assert late.value.status_code == 408
    assert chat(globex).parse().choices  # and the next request is served
    # /metrics mixes every tenant's traffic: the admin's only.
    as_globex = {"Authorization": f"Bearer {keys['globex']}"}
    assert httpx.get(server.url + "/metrics", headers=as_globex).status_code == 401
    assert admin.get("/metrics").status_code == 200


def test_usage_is_per_tenant(server: HearthProcess, keys: dict[str, str]) -> None:
    def usage(key: str) -> dict[str, Any]:
        r = httpx.get(f"{server.url}/v1/usage", headers={"Authorization": f"Bearer {key}"})
        return r.json()

    acme, globex = usage(keys["acme"]), usage(keys["globex"])
    assert {d["model"] for d in acme["days"]} == {LLM}
    assert sum(d["requests"] for d in acme["days"]) == 4  # two cache probes, two under the limit
    assert sum(d["requests"] for d in globex["days"]) >= 3
    text = httpx.post(
        f"{server.url}/v1/chat/completions",
        content=b"{}",
        headers={"Authorization": f"Bearer {keys['globex']}", "content-type": "text/plain"},
    )
    assert text.status_code == 415


def test_limits_from_the_command_line(server: HearthProcess, keys: dict[str, str]) -> None:
    env = {**os.environ, "HEARTH_ADMIN_KEY": ADMIN_KEY}
    base = [sys.executable, "-m", "server", "admin", "--url", server.url, "limits"]
    done = subprocess.run(
        [*base, "set", "globex", "tokens_per_day=5000", "documents=none"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    shown = json.loads(
        subprocess.run(
            [*base, "show", "globex"], env=env, capture_output=True, text=True, timeout=120,
            check=True,
        ).stdout
    )  # fmt: skip
    assert shown["overrides"] == {"tokens_per_day": 5000}
    assert shown["effective"]["tokens_per_day"] == 5000


def test_a_viewer_logs_in_asks_the_model_and_cannot_delete(
    server: HearthProcess, admin: httpx.Client, keys: dict[str, str]
) -> None:
    """A user of acme with the viewer role: login, a chat through the official client with the
    access token as its API key, a 403 on delete, and the refused delete leaves no audit row
    while the admin's user creation left one."""
    password = "a long enough password"
    r = admin.post(
        "/v1/admin/tenants/acme/users",
        json={"email": "viewer@acme.example", "password": password, "role": "viewer"},
    )
    assert r.status_code == 201
    grant = httpx.post(
        f"{server.url}/v1/auth/login",
        json={"email": "viewer@acme.example", "password": password},
        timeout=60,
    ).json()
    viewer = client(server, grant["access_token"])
    assert chat(viewer).status_code == 200
    r = httpx.delete(
        f"{server.url}/v1/collections/kb",
        headers={"Authorization": f"Bearer {grant['access_token']}"},
        timeout=60,
    )
    assert r.status_code == 403 and "'write'" in r.json()["error"]["message"]
    rows = admin.get("/v1/admin/audit", params={"action": "admin."}).json()["data"]
    assert "admin.admin_create_user" in {row["action"] for row in rows}
    assert not admin.get("/v1/admin/audit", params={"action": "delete."}).json()["data"]
