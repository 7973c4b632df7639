"""The tenant middleware on a bare Litestar app with a stand-in service (no models needed)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from litestar import Litestar, Request, get
from litestar.datastructures import State
from litestar.testing import TestClient

from configs import load_settings
from engine.storage import SCOPES, Identity
from server.auth import TenantAuthMiddleware, tenant_of
from server.metrics import Metrics
from server.state import ServerState


class FakeTenancy:
    def __init__(self, keys: dict[str, str]) -> None:
        self.keys = keys

    @property
    def auth_required(self) -> bool:
        return bool(self.keys)

    async def authenticate(self, key: str) -> str | None:
        return self.keys.get(key)

    async def identify(self, key: str) -> tuple[str, str] | None:
        tenant = self.keys.get(key)
        return Identity(tenant, f"key_{key}", frozenset(SCOPES)) if tenant else None


@get("/whoami")
async def whoami(request: Request) -> dict[str, Any]:
    return {"tenant": tenant_of(request)}


@get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@get("/v1/admin/ping")
async def admin_ping(request: Request) -> dict[str, Any]:
    return {"tenant": request.state.get("tenant")}


def client(tenancy: FakeTenancy | None, host: str = "testclient") -> TestClient:
    hearth = SimpleNamespace(tenancy=tenancy) if tenancy else None  # None: still starting
    state = ServerState(load_settings("test"), Metrics(), hearth)  # type: ignore[arg-type]
    app = Litestar(
        route_handlers=[whoami, health, admin_ping],
        middleware=[lambda app: TenantAuthMiddleware(app, admin_key="adm")],
        state=State({"server": state}),
    )
    return TestClient(app, base_url=f"http://{host}")


def test_open_mode_is_default_tenant_on_loopback_only() -> None:
    with client(FakeTenancy({})) as c:
        assert c.get("/whoami", headers={"Authorization": "Bearer x"}).json() == {
            "tenant": "default"
        }


def test_open_mode_refuses_remote_clients() -> None:
    sent: list[dict[str, Any]] = []
    reached: list[bool] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        reached.append(True)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    class App:
        hearth = SimpleNamespace(tenancy=FakeTenancy({}))
        state = State({"server": ServerState(load_settings("test"), Metrics(), hearth)})

    scope = {"type": "http", "path": "/whoami", "headers": [], "client": ("10.0.0.9", 5000)}
    scope["app"] = App()
    asyncio.run(TenantAuthMiddleware(inner, admin_key="adm")(scope, None, send))
    assert not reached and sent[0]["status"] == 401
    assert b"loopback" in sent[1]["body"]


def test_keys_decide_the_tenant() -> None:
    with client(FakeTenancy({"k-a": "ten_a", "k-b": "ten_b"})) as c:
        assert c.get("/whoami").status_code == 401
        assert c.get("/whoami").headers["www-authenticate"] == "Bearer"
        assert c.get("/whoami", headers={"Authorization": "Bearer nope"}).status_code == 401
        assert c.get("/whoami", headers={"Authorization": "Bearer k-b"}).json() == {
            "tenant": "ten_b"
        }
        assert c.get("/health").status_code == 200
        body = c.get("/whoami").json()
        assert body["error"]["type"] == "authentication_error"


def test_admin_routes_need_the_admin_key() -> None:
    with client(FakeTenancy({"k-a": "ten_a"})) as c:
        assert c.get("/v1/admin/ping").status_code == 401
        assert c.get("/v1/admin/ping", headers={"Authorization": "Bearer k-a"}).status_code == 401
        ok = c.get("/v1/admin/ping", headers={"Authorization": "Bearer adm"})
        assert ok.status_code == 200 and ok.json() == {"tenant": None}


def test_not_started_is_503() -> None:
    with client(None) as c:
        response = c.get("/whoami")
        assert response.status_code == 503 and response.headers["retry-after"] == "2"
