"""``AuditLog``: the tenant's audit rows (the ``task_audit`` table the tasks migration creates):
workflow saves and runs, agent runs and every tool call an agent makes, webhook deliveries, and
(written by ``server.audittrail``) admin actions, changes to users and deletes.

A row is ``{id, ts, action, subject, request_id, detail}``; ``detail`` is JSON and never holds a
secret. Rows are written in the same store as the data they describe.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from typing import Any

from engine.storage import Store

MAX_LIST = 500


class AuditLog:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def record(
        self,
        tenant: str,
        action: str,
        subject: str | None,
        detail: dict[str, Any] | None = None,
        request_id: str | None = None,
    ) -> None:
        await asyncio.to_thread(
            self.store.execute,
            "INSERT INTO task_audit (id, tenant_id, action, subject, request_id, detail) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [
                "aud_" + secrets.token_hex(10),
                tenant,
                action,
                subject,
                request_id,
                json.dumps(detail or {}),
            ],
        )

    async def list(
        self,
        tenant: str | None,
        *,
        action: str | None = None,
        subject: str | None = None,
        limit: int | None = 50,
    ) -> list[dict[str, Any]]:
        """Newest first; ``action`` matches a prefix (``agent.`` for every agent row). ``tenant``
        None: every tenant's rows (and the server's, ``_server``), each naming its tenant;
        ``limit`` None: all of them (the admin export)."""
        rows = await asyncio.to_thread(
            self.store.fetchall,
            "SELECT id, ts, action, subject, request_id, detail, tenant_id FROM task_audit "
            "WHERE (? IS NULL OR tenant_id = ?) AND (? IS NULL OR starts_with(action, ?)) "
            "AND (? IS NULL OR subject = ?) ORDER BY ts DESC, id"
            + ("" if limit is None else f" LIMIT {min(int(limit), MAX_LIST)}"),
            [tenant, tenant, action, action, subject, subject],
        )
        return [
            {
                "id": r[0],
                "ts": int(r[1].timestamp()),
                "action": r[2],
                "subject": r[3],
                "request_id": r[4],
                "detail": json.loads(r[5]) if r[5] else {},
            }
            | ({"tenant_id": r[6]} if tenant is None else {})
            for r in rows
        ]
