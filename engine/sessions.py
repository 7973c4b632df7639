"""``SessionService``: the stored turns of RAG chat sessions, per tenant (another tenant's session
answers 404 like a missing one). Blocking DuckDB work runs in threads."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from engine.storage import ChatMessage, Database


class SessionService:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def ensure(self, tenant: str, session_id: str) -> bool:
        """Create the session if missing; True when it was created now."""
        return await asyncio.to_thread(self._db.chats.ensure_session, tenant, session_id)

    async def messages(self, tenant: str, session_id: str, limit: int = 100) -> list[ChatMessage]:
        """A chat session's stored turns, oldest first (the last ``limit``)."""
        return await asyncio.to_thread(self._db.chats.messages, tenant, session_id, limit)

    async def add(
        self,
        tenant: str,
        session_id: str,
        role: str,
        content: str,
        sources: Sequence[dict[str, Any]] | None = None,
        confidence: float | None = None,
    ) -> None:
        stored = None if sources is None else list(sources)
        await asyncio.to_thread(
            self._db.chats.add_message, tenant, session_id, role, content, stored, confidence
        )
