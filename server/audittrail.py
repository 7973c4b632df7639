"""The audit trail of changes made over HTTP: an ASGI middleware (innermost, after auth) that
writes one row to the audit log (``engine.AuditLog``, DuckDB) for every successful

- admin action: any POST/PUT/PATCH/DELETE under ``/v1/admin`` (tenants, keys, limits, users,
  purges) — action ``admin.<handler>``, e.g. ``admin.create_key``, ``admin.set_limits``;
- change to a tenant's users (``/v1/users``): ``users.<handler>``;
- delete of a tenant's data (any DELETE): ``delete.<handler>``, e.g. ``delete.delete_collection``.

A row: the tenant it concerns (the caller's; for admin actions the tenant named by the path,
the key's tenant, or the tenant in the answer; ``_server`` when none), ``action``, ``subject``
(the path parameters), the request id and ``detail``: method, path template, status and the
actor (``admin``, a key id, a user id, or ``open``). No bodies, no secrets. Agent and tool runs
are audited by the agent service itself. A failure to write is logged; the answer is not
changed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from litestar.types import ASGIApp, Message, Receive, Scope, Send

from server.state import state_of

log = logging.getLogger(__name__)

SERVER_TENANT = "_server"
_CHANGES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_MAX_BODY = 64 * 1024  # admin answers kept to read the tenant from (they are small)


def _area(method: str, path: str) -> str | None:
    if method not in _CHANGES:
        return None
    if path.startswith("/v1/admin/"):
        return "admin"
    if path == "/v1/users" or path.startswith("/v1/users/"):
        return "users"
    return "delete" if method == "DELETE" else None


class AuditTrail:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        area = (
            _area(scope.get("method", ""), scope.get("path", ""))
            if scope["type"] == "http"
            else None
        )
        if area is None:
            await self.app(scope, receive, send)
            return
        status = [500]
        body = bytearray()

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            elif message["type"] == "http.response.body" and len(body) < _MAX_BODY:
                body.extend(message.get("body", b"")[: _MAX_BODY - len(body)])
            await send(message)

        await self.app(scope, receive, sending)
        if status[0] < 400:
            try:
                await self._record(scope, area, status[0], bytes(body))
            except Exception:
                log.exception("could not write the audit row of %s", scope.get("path"))

    async def _record(self, scope: Scope, area: str, status: int, body: bytes) -> None:
        hearth = state_of(scope["app"]).hearth
        if hearth is None:
            return
        state = scope.get("state", {})
        handler = scope.get("route_handler")
        name = getattr(handler, "handler_name", None) or "unknown"
        params = {k: str(v) for k, v in (scope.get("path_params") or {}).items()}
        tenant = state.get("tenant")
        if area == "admin":
            tenant = await _admin_tenant(hearth, params, body)
            if name == "delete_tenant":  # the tenant is gone: keep the fact, not its id
                gone = json.loads(body).get("id", "") if body else ""
                params = {"tenant_sha256": hashlib.sha256(gone.encode()).hexdigest()[:16]}
        actor = (
            "admin"
            if area == "admin"
            else state.get("user_id") or state.get("key_id") or ("open" if tenant else None)
        )
        await hearth.audit.record(
            tenant or SERVER_TENANT,
            f"{area}.{name}",
            ",".join(f"{k}={v}" for k, v in params.items()) or None,
            {
                "method": scope.get("method"),
                "route": scope.get("path_template") or scope.get("path"),
                "status": status,
                "actor": actor,
            },
            request_id=state.get("request_id"),
        )


async def _admin_tenant(hearth: Any, params: dict[str, str], body: bytes) -> str | None:
    """The tenant an admin action concerns: named by the path, owning the key, or in the answer
    (a new tenant, key or user). None when it cannot be told (or the tenant is gone)."""
    try:
        answer = json.loads(body) if body else {}
    except ValueError:
        answer = {}
    if isinstance(answer, dict):
        if answer.get("object") == "tenant" and not answer.get("deleted"):
            return answer.get("id")
        if isinstance(answer.get("tenant_id"), str):
            return answer["tenant_id"]
        if answer.get("deleted"):
            return None  # a purged tenant: the row goes to the server's log (see below)
    subject = params.get("tenant") or params.get("subject") or params.get("key_id")
    if not subject:
        return None
    try:
        if subject.startswith("key_"):
            return (await hearth.tenancy.get_key(subject)).tenant_id
        return (await hearth.tenancy.get_tenant(subject)).id
    except Exception:  # noqa: BLE001 - unknown: the server's row
        return None
