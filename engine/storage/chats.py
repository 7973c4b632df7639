"""Chat sessions and their messages (with sources and confidence), and the usage ledger."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from engine.errors import NotFoundError
from engine.storage.db import Store, register_migration

register_migration(
    "usage",
    1,
    "usage rows name their model and duration",
    "ALTER TABLE usage ADD COLUMN model TEXT DEFAULT '';"
    "ALTER TABLE usage ADD COLUMN seconds DOUBLE DEFAULT 0",
)


@dataclass(frozen=True)
class ChatMessage:
    id: int
    session_id: str
    role: str
    content: str
    sources: list[dict[str, Any]] | None
    confidence: float | None
    created_at: datetime


class ChatRepo:
    def __init__(self, store: Store) -> None:
        self.store = store

    def ensure_session(self, tenant_id: str, session_id: str) -> bool:
        """Create the session if the tenant has none of that id; True when it was created.

        Session ids are scoped by tenant: two tenants may use the same id and never share turns.
        """
        if self.store.fetchone(
            "SELECT 1 FROM chat_sessions WHERE tenant_id = ? AND id = ?", [tenant_id, session_id]
        ):
            return False
        self.store.execute(
            "INSERT INTO chat_sessions (tenant_id, id) VALUES (?, ?)", [tenant_id, session_id]
        )
        return True

    def add_message(
        self,
        tenant_id: str,
        session_id: str,
        role: str,
        content: str,
        sources: list[dict[str, Any]] | None = None,
        confidence: float | None = None,
    ) -> None:
        with self.store.transaction() as conn:
            conn.execute(
                "INSERT INTO chat_messages (id, tenant_id, session_id, role, content, sources, "
                "confidence) VALUES (nextval('message_ids'), ?, ?, ?, ?, ?, ?)",
                [
                    tenant_id,
                    session_id,
                    role,
                    content,
                    json.dumps(sources) if sources is not None else None,
                    confidence,
                ],
            )
            conn.execute(
                "UPDATE chat_sessions SET updated_at = current_timestamp "
                "WHERE tenant_id = ? AND id = ?",
                [tenant_id, session_id],
            )

    def messages(self, tenant_id: str, session_id: str, limit: int = 50) -> list[ChatMessage]:
        """The session's last ``limit`` messages, oldest first; 404 for another tenant's id."""
        if not self.store.fetchone(
            "SELECT 1 FROM chat_sessions WHERE tenant_id = ? AND id = ?", [tenant_id, session_id]
        ):
            raise NotFoundError(f"session {session_id!r} not found", param="session_id")
        rows = self.store.fetchall(
            "SELECT id, session_id, role, content, sources, confidence, created_at FROM "
            "(SELECT * FROM chat_messages WHERE tenant_id = ? AND session_id = ? "
            "ORDER BY id DESC LIMIT ?) ORDER BY id",
            [tenant_id, session_id, limit],
        )
        return [
            ChatMessage(r[0], r[1], r[2], r[3], json.loads(r[4]) if r[4] else None, r[5], r[6])
            for r in rows
        ]


class UsageRepo:
    def __init__(self, store: Store) -> None:
        self.store = store

    def record(
        self,
        tenant_id: str,
        kind: str,
        *,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        items: int = 0,
        model: str = "",
        seconds: float = 0.0,
    ) -> None:
        self.store.execute(
            "INSERT INTO usage (tenant_id, kind, prompt_tokens, completion_tokens, items, model, "
            "seconds) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [tenant_id, kind, prompt_tokens, completion_tokens, items, model, seconds],
        )

    def daily(self, tenant_id: str, days: int) -> list[tuple]:
        """(day, model, requests, prompt_tokens, completion_tokens, seconds) of the last ``days``
        UTC days, oldest first."""
        return self.store.fetchall(
            "SELECT CAST(ts AS DATE) AS day, coalesce(model, ''), count(*), sum(prompt_tokens), "
            "sum(completion_tokens), sum(seconds) FROM usage WHERE tenant_id = ? "
            "AND ts >= current_date - CAST(? AS INTEGER) + 1 GROUP BY day, model "
            "ORDER BY day, model",
            [tenant_id, days],
        )

    def totals(self, tenant_id: str) -> dict[str, dict[str, int]]:
        rows = self.store.fetchall(
            "SELECT kind, sum(prompt_tokens), sum(completion_tokens), sum(items) FROM usage "
            "WHERE tenant_id = ? GROUP BY kind ORDER BY kind",
            [tenant_id],
        )
        return {
            r[0]: {"prompt_tokens": int(r[1]), "completion_tokens": int(r[2]), "items": int(r[3])}
            for r in rows
        }
