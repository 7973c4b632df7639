"""Tenant authentication: an ASGI middleware that puts the caller's tenant in ``request.state``.

- ``/health``, ``/ready`` and the console's static page (``/``, ``/console/...``) are open.
- ``/v1/admin/...`` needs ``Authorization: Bearer $HEARTH_ADMIN_KEY`` (unset: the admin API is
  off, 403); it sets no tenant.
- Everything else: 503 until Hearth's services are up. Then, once any tenant key
  exists, ``Authorization: Bearer <tenant key>`` is required and decides the tenant (never the
  request body). With no keys, Hearth runs open as the single ``default`` tenant for loopback
  clients only; a bearer token is then ignored (OpenAI clients always send one).

Failures are answered here with an OpenAI error body, before any handler runs.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
from typing import Any

from litestar.types import ASGIApp, Receive, Scope, Send

from server.state import state_of

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/health", "/ready", "/"})
OPEN_PREFIXES = ("/console/",)  # the console's static files (server.console)
ADMIN_PREFIX = "/v1/admin"
ADMIN_KEY_ENV = "HEARTH_ADMIN_KEY"
DEFAULT_TENANT = "default"
_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost", "testclient"})


def bearer(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name.lower() == b"authorization":
            text = value.decode("latin-1").strip()
            if text[:7].lower() == "bearer ":
                return text[7:].strip() or None
            return None
    return None


class TenantAuthMiddleware:
    """Add as ``Litestar(middleware=[TenantAuthMiddleware])``; reads the admin key at start."""

    def __init__(self, app: ASGIApp, admin_key: str | None = None) -> None:
        self.app = app
        self.admin_key = admin_key if admin_key is not None else os.environ.get(ADMIN_KEY_ENV)
        self._warned_open = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (
            scope["type"] not in ("http", "websocket")
            or path in OPEN_PATHS
            or path.startswith(OPEN_PREFIXES)
        ):
            await self.app(scope, receive, send)
            return
        token = bearer(scope.get("headers", []))  # type: ignore[arg-type]
        if scope["path"].startswith(ADMIN_PREFIX):
            error = self._admin(token)
        else:
            error = await self._tenant(scope, token)
        if error is not None:
            await _reply(send, *error)
            return
        await self.app(scope, receive, send)

    def _admin(self, token: str | None) -> tuple[int, str, str] | None:
        if not self.admin_key:
            return 403, "permission_error", f"the admin API is disabled; set {ADMIN_KEY_ENV}"
        if token is None or not hmac.compare_digest(token.encode(), self.admin_key.encode()):
            return 401, "authentication_error", "invalid admin key"
        return None

    async def _tenant(self, scope: Scope, token: str | None) -> tuple[int, str, str] | None:
        hearth = state_of(scope["app"]).hearth
        state = scope.setdefault("state", {})  # type: ignore[typeddict-item]
        if hearth is None:  # keys cannot be checked yet: nothing passes
            return 503, "not_ready_error", "Hearth is starting"
        service = hearth.tenancy
        if not service.auth_required:
            client = (scope.get("client") or ("", 0))[0]
            if client not in _LOOPBACK:
                return (
                    401,
                    "authentication_error",
                    (
                        "Hearth has no tenant keys yet and accepts only loopback clients; "
                        "create a tenant and a key with the admin API"
                    ),
                )
            if not self._warned_open:
                log.warning("no tenant keys: running open as the %r tenant", DEFAULT_TENANT)
                self._warned_open = True
            state["tenant"] = DEFAULT_TENANT
            return None
        if token is None:
            return 401, "authentication_error", "missing Authorization: Bearer <api key>"
        tenant = await service.authenticate(token)
        if tenant is None:
            return 401, "authentication_error", "invalid API key"
        state["tenant"] = tenant
        return None


async def _reply(send: Send, status: int, kind: str, message: str) -> None:
    body = json.dumps(
        {"error": {"message": message, "type": kind, "param": None, "code": None}}
    ).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    if status == 503:
        headers.append((b"retry-after", b"2"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def tenant_of(request: Any) -> str:
    """The tenant the middleware resolved; the default tenant when the middleware is absent."""
    return (
        request.state.get("tenant", DEFAULT_TENANT)
        if hasattr(request.state, "get")
        else (getattr(request.state, "tenant", DEFAULT_TENANT))
    )
