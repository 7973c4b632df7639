"""Tenant authentication: an ASGI middleware that puts the caller's tenant in ``request.state``.

- ``/health``, ``/ready`` and the console's static page (``/``, ``/console/...``) are open.
- ``/v1/admin/...`` needs ``Authorization: Bearer $HEARTH_ADMIN_KEY`` (unset: the admin API is
  off, 403); it sets no tenant. So does ``/metrics`` once tenant keys exist: its figures come
  from every tenant's traffic (in open mode there is one tenant, and it stays open to loopback).
- ``/v1/auth/login`` and ``/v1/auth/refresh`` are open: they take a user's password or refresh
  token in the body.
- Everything else: 503 until Hearth's services are up. Then, once any tenant key (or user)
  exists, ``Authorization: Bearer <tenant key or user access token>`` is required and decides
  the tenant (never the request body); an expired key is a 401. The credential's scopes (a key's
  own, a user's role's: ``engine.storage.ROLES``) must include the one the route needs
  (:func:`required_scope`), else 403 ``permission_error``. With no keys, Hearth runs open as the
  single ``default`` tenant for loopback clients only, with every scope; a bearer token is then
  ignored (OpenAI clients always send one).

Then admission by the tenant's limits (``engine.LimitService.admit``) for every request that does
work (POST, PUT, PATCH, DELETE), before the body is even read: over a limit it is a 429 naming the
limit with Retry-After and OpenAI's ``x-ratelimit-*`` headers; admitted, the request's
``Ticket`` is in ``request.state["ticket"]`` (its tokens are charged when it ends), its response
carries the same headers, and its concurrency slot is given back when the response is done.

Failures are answered here, before any handler runs, through the one error table
(``server.errors.send_error``).
"""

from __future__ import annotations

import hmac
import logging
import os
from typing import Any

from litestar.types import ASGIApp, Receive, Scope, Send

from engine import (
    AuthenticationError,
    HearthError,
    NotReadyError,
    PermissionDeniedError,
    TooManyRequestsError,
    current_tenant,
)
from server.errors import send_error
from server.state import state_of

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset(
    {"/health", "/ready", "/", "/openapi.json", "/v1/auth/login", "/v1/auth/refresh"}
)
OPEN_PREFIXES = ("/console/",)  # the console's static files (server.console)
CROSS_TENANT_PATHS = frozenset({"/metrics"})
ADMIN_PREFIX = "/v1/admin"
ADMIN_KEY_ENV = "HEARTH_ADMIN_KEY"
DEFAULT_TENANT = "default"
_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost", "testclient"})
_ADMITTED_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# POST routes that only run the models over the request (nothing of the tenant's is changed).
INFERENCE_PATHS = frozenset(
    {
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/retrieve",
        "/v1/classify",
        "/v1/extract",
        "/tokenize",
        "/detokenize",
    }
)
TENANT_ADMIN_PREFIX = "/v1/users"
TENANT_ADMIN_PATHS = frozenset({TENANT_ADMIN_PREFIX, "/v1/audit"})


def required_scope(method: str, path: str) -> str:
    """The scope a request needs: ``admin`` for the tenant's users (``/v1/users``) and audit log
    (``/v1/audit``), ``read`` for
    any other GET, ``inference`` for the model routes, ``write`` for every other change."""
    if path in TENANT_ADMIN_PATHS or path.startswith(TENANT_ADMIN_PREFIX + "/"):
        return "admin"
    if method in _READ_METHODS:
        return "read"
    return "inference" if path in INFERENCE_PATHS else "write"


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
        if scope["path"].startswith(ADMIN_PREFIX) or _cross_tenant(scope):
            error = self._admin(token)
        else:
            error = await self._tenant(scope, token)
        if error is not None:
            await send_error(send, error)
            return
        state = scope.get("state", {})
        if "tenant" in state:  # engine work done on the tenant's behalf knows whose it is
            current_tenant.set(state["tenant"])
        if "tenant" not in state or scope.get("method") not in _ADMITTED_METHODS:
            await self.app(scope, receive, send)
            return
        limits = state_of(scope["app"]).hearth.limits  # type: ignore[union-attr]
        try:
            ticket = limits.admit(state["tenant"], state.get("key_id"))
        except TooManyRequestsError as exc:
            await send_error(send, exc)
            return
        state["ticket"] = ticket
        try:
            await self.app(scope, receive, _with_headers(send, ticket.headers))
        finally:
            ticket.release()

    def _admin(self, token: str | None) -> HearthError | None:
        if not self.admin_key:
            return PermissionDeniedError(f"the admin API is disabled; set {ADMIN_KEY_ENV}")
        if token is None or not hmac.compare_digest(token.encode(), self.admin_key.encode()):
            return AuthenticationError("invalid admin key")
        return None

    async def _tenant(self, scope: Scope, token: str | None) -> HearthError | None:
        hearth = state_of(scope["app"]).hearth
        state = scope.setdefault("state", {})  # type: ignore[typeddict-item]
        if hearth is None:  # keys cannot be checked yet: nothing passes
            return NotReadyError("Hearth is starting", retry_after=2)
        service = hearth.tenancy
        if not service.auth_required:
            client = (scope.get("client") or ("", 0))[0]
            if client not in _LOOPBACK:
                return AuthenticationError(
                    "Hearth has no tenant keys yet and accepts only loopback clients; "
                    "create a tenant and a key with the admin API"
                )
            if not self._warned_open:
                log.warning("no tenant keys: running open as the %r tenant", DEFAULT_TENANT)
                self._warned_open = True
            state["tenant"] = DEFAULT_TENANT
            return None
        if token is None:
            return AuthenticationError("missing Authorization: Bearer <api key>")
        found = await service.identify(token)
        if found is None:
            return AuthenticationError("invalid API key or access token")
        if found.expired():
            return AuthenticationError("this API key has expired; create a new one")
        needed = required_scope(scope.get("method", "GET"), scope.get("path", ""))
        if needed not in found.scopes:
            who = f"role {found.role!r}" if found.role else "this API key"
            return PermissionDeniedError(
                f"{who} lacks the {needed!r} scope this request needs "
                f"(it has {sorted(found.scopes)})"
            )
        state["tenant"], state["key_id"] = found.tenant, found.key_id
        state["user_id"], state["scopes"] = found.user_id, found.scopes
        return None


def _with_headers(send: Send, headers: dict[str, str]) -> Send:
    """``send`` that adds ``headers`` to the response's start."""
    if not headers:
        return send
    raw = [(k.encode(), v.encode()) for k, v in headers.items()]

    async def sending(message: Any) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *raw]}
        await send(message)

    return sending


def _cross_tenant(scope: Scope) -> bool:
    """Routes whose figures mix every tenant's traffic: admin-only once tenants exist."""
    if scope["path"] not in CROSS_TENANT_PATHS:
        return False
    hearth = state_of(scope["app"]).hearth
    return hearth is None or hearth.tenancy.auth_required


def is_admin(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether the request carries the admin key (``$HEARTH_ADMIN_KEY``, when set)."""
    admin_key, token = os.environ.get(ADMIN_KEY_ENV), bearer(headers)
    return bool(admin_key and token) and hmac.compare_digest(
        token.encode(),  # type: ignore[union-attr]
        admin_key.encode(),  # type: ignore[union-attr]
    )


def tenant_of(request: Any) -> str:
    """The tenant the middleware resolved; the default tenant when the middleware is absent."""
    return (
        request.state.get("tenant", DEFAULT_TENANT)
        if hasattr(request.state, "get")
        else (getattr(request.state, "tenant", DEFAULT_TENANT))
    )
