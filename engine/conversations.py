"""``ConversationService``: memory across requests for chat completions, RAG chat and agent runs.

A conversation keeps its last ``memory_turns`` turns verbatim; an older turn is folded into a
running summary (one line per turn: its role and first sentence, the newest lines kept within
``MAX_SUMMARY_CHARS``) and its row is deleted, so a conversation's storage stays bounded. The
summary is extractive: no model call happens while a turn is stored. Memory given to a model is
cut to a token budget, oldest turns first, so memory never overflows a context.

Conversations are tenant-scoped (another tenant's id answers 404 like a missing one), expire
``ttl_s`` after their last turn, and are deleted with their turns on request.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from engine.errors import InvalidRequestError, NotFoundError
from engine.storage import Store, register_migration
from engine.types import ChoiceDelta
from models.chat_templates import ChatMessage

register_migration(
    "conversations",
    1,
    "conversations: recent turns and a running summary",
    """
    CREATE TABLE conversations (
        id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        summary TEXT NOT NULL DEFAULT '',
        turns INTEGER NOT NULL DEFAULT 0,
        ttl_s DOUBLE NOT NULL,
        created_at DOUBLE NOT NULL,
        updated_at DOUBLE NOT NULL
    );
    CREATE TABLE conversation_turns (
        conversation_id TEXT NOT NULL,
        idx INTEGER NOT NULL,
        role TEXT NOT NULL,
        content TEXT NOT NULL,
        PRIMARY KEY (conversation_id, idx)
    )
    """,
)

MAX_SUMMARY_CHARS = 2000
MAX_LINE_CHARS = 200
MAX_TURN_CHARS = 16_000
MAX_CONVERSATIONS = 10_000
MAX_TTL_S = 90 * 86_400.0
ID = re.compile(r"^conv_[0-9a-f]{20}$")
Clock = Callable[[], float]
T = TypeVar("T")


@dataclass(frozen=True)
class Turn:
    role: str  # "user" | "assistant"
    content: str


@dataclass(frozen=True)
class Conversation:
    id: str
    summary: str
    recent: tuple[Turn, ...]  # oldest first, at most memory_turns
    turns: int  # every turn ever added
    created_at: float
    expires_at: float


def summary_line(turn: Turn) -> str:
    """``role: first sentence`` of a turn, at most ``MAX_LINE_CHARS``."""
    text = " ".join(turn.content.split())
    first = re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0]
    if len(first) > MAX_LINE_CHARS:
        first = first[: MAX_LINE_CHARS - 1] + "…"
    return f"{turn.role}: {first}"


def fold(summary: str, turns: Sequence[Turn]) -> str:
    """The summary with ``turns`` added, the oldest lines dropped past ``MAX_SUMMARY_CHARS``."""
    lines = [line for line in summary.splitlines() if line] + [summary_line(t) for t in turns]
    while lines and len("\n".join(lines)) > MAX_SUMMARY_CHARS:
        lines.pop(0)
    return "\n".join(lines)


def memory_messages(
    conv: Conversation, budget_tokens: int, count: Callable[[str], int]
) -> list[ChatMessage]:
    """The summary (as a system message) and the recent turns that fit ``budget_tokens``:
    the newest turns are kept first; the summary only when it fits too."""
    kept: list[ChatMessage] = []
    used = 0
    for turn in reversed(conv.recent):
        cost = count(turn.content) + 8  # the template's markup per message
        if used + cost > budget_tokens:
            break
        kept.insert(0, ChatMessage(turn.role, turn.content))
        used += cost
    if conv.summary and len(kept) == len(conv.recent):
        note = "Summary of the earlier conversation:\n" + conv.summary
        if used + count(note) + 8 <= budget_tokens:
            kept.insert(0, ChatMessage("system", note))
    return kept


def memory_text(conv: Conversation, max_chars: int) -> str:
    """The memory as plain text for a prompt (agents): the newest turns within ``max_chars``."""
    lines: list[str] = []
    used = 0
    for turn in reversed(conv.recent):
        line = f"{turn.role.capitalize()}: {turn.content}"
        if used + len(line) > max_chars:
            break
        lines.insert(0, line)
        used += len(line)
    if conv.summary and len(lines) == len(conv.recent) and used + len(conv.summary) <= max_chars:
        lines.insert(0, "Summary of earlier turns:\n" + conv.summary)
    return "\n".join(lines)


class ConversationService:
    def __init__(
        self,
        store: Store,
        *,
        memory_turns: int = 10,
        ttl_s: float = 604_800.0,
        clock: Clock = time.time,
    ) -> None:
        self.store = store
        self.memory_turns = memory_turns
        self.ttl_s = ttl_s
        self.clock = clock

    async def create(self, tenant: str, ttl_s: float | None = None) -> Conversation:
        ttl = self.ttl_s if ttl_s is None else ttl_s
        if not 60 <= ttl <= MAX_TTL_S:
            raise InvalidRequestError(f"ttl_s must be 60-{MAX_TTL_S:g}", param="ttl_s")
        conv_id = "conv_" + secrets.token_hex(10)
        now = self.clock()

        def write() -> None:
            with self.store.transaction() as conn:
                self._purge(conn, now)
                row = conn.execute(
                    "SELECT count(*) FROM conversations WHERE tenant_id = ?", [tenant]
                ).fetchone()
                if row and row[0] >= MAX_CONVERSATIONS:
                    raise InvalidRequestError(
                        f"at most {MAX_CONVERSATIONS} conversations per tenant; delete some",
                        param="conversation",
                        code="conversation_limit",
                    )
                conn.execute(
                    "INSERT INTO conversations (id, tenant_id, ttl_s, created_at, updated_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    [conv_id, tenant, ttl, now, now],
                )

        await asyncio.to_thread(write)
        return await self.get(tenant, conv_id)

    async def get(self, tenant: str, conv_id: str) -> Conversation:
        """The conversation; 404 when missing, another tenant's, or expired."""
        return await asyncio.to_thread(self._load, tenant, conv_id)

    async def delete(self, tenant: str, conv_id: str) -> None:
        await self.get(tenant, conv_id)

        def drop() -> None:
            with self.store.transaction() as conn:
                conn.execute("DELETE FROM conversation_turns WHERE conversation_id = ?", [conv_id])
                conn.execute("DELETE FROM conversations WHERE id = ?", [conv_id])

        await asyncio.to_thread(drop)

    async def append(self, tenant: str, conv_id: str, turns: Sequence[Turn]) -> Conversation:
        """Store ``turns``; those past the last ``memory_turns`` fold into the summary."""
        now = self.clock()

        def write() -> None:
            conv = self._load(tenant, conv_id)
            with self.store.transaction() as conn:
                for i, turn in enumerate(turns):
                    conn.execute(
                        "INSERT INTO conversation_turns (conversation_id, idx, role, content) "
                        "VALUES (?, ?, ?, ?)",
                        [conv_id, conv.turns + i, turn.role, turn.content[:MAX_TURN_CHARS]],
                    )
                total = conv.turns + len(turns)
                keep_from = total - self.memory_turns
                old = conn.execute(
                    "SELECT role, content FROM conversation_turns WHERE conversation_id = ? "
                    "AND idx < ? ORDER BY idx",
                    [conv_id, keep_from],
                ).fetchall()
                summary = fold(conv.summary, [Turn(r, c) for r, c in old])
                conn.execute(
                    "DELETE FROM conversation_turns WHERE conversation_id = ? AND idx < ?",
                    [conv_id, keep_from],
                )
                conn.execute(
                    "UPDATE conversations SET summary = ?, turns = ?, updated_at = ? WHERE id = ?",
                    [summary, total, now, conv_id],
                )

        await asyncio.to_thread(write)
        return await self.get(tenant, conv_id)

    def _load(self, tenant: str, conv_id: str) -> Conversation:
        missing = NotFoundError(f"conversation {conv_id!r} not found", param="conversation")
        if not isinstance(conv_id, str) or not ID.match(conv_id):
            raise missing
        row = self.store.fetchone(
            "SELECT summary, turns, ttl_s, created_at, updated_at FROM conversations "
            "WHERE id = ? AND tenant_id = ?",
            [conv_id, tenant],
        )
        if row is None or row[4] + row[2] < self.clock():
            raise missing
        turns = self.store.fetchall(
            "SELECT role, content FROM conversation_turns WHERE conversation_id = ? ORDER BY idx",
            [conv_id],
        )
        recent = tuple(Turn(r, c) for r, c in turns[-self.memory_turns :])
        return Conversation(conv_id, row[0], recent, int(row[1]), row[3], row[4] + row[2])

    @staticmethod
    def _purge(conn: object, now: float) -> None:
        """Delete expired conversations and their turns (runs with each create)."""
        conn.execute(  # type: ignore[attr-defined]
            "DELETE FROM conversation_turns WHERE conversation_id IN "
            "(SELECT id FROM conversations WHERE updated_at + ttl_s < ?)",
            [now],
        )
        conn.execute("DELETE FROM conversations WHERE updated_at + ttl_s < ?", [now])  # type: ignore[attr-defined]

    def with_memory(
        self,
        conv: Conversation,
        messages: Sequence[ChatMessage],
        budget_tokens: int,
        count: Callable[[str], int],
    ) -> list[ChatMessage]:
        """``messages`` with the conversation's memory inserted after the leading system
        messages, the memory cut to ``budget_tokens``."""
        memory = memory_messages(conv, max(budget_tokens, 0), count)
        lead = 0
        while lead < len(messages) and messages[lead].role in ("system", "developer"):
            lead += 1
        return [*messages[:lead], *memory, *messages[lead:]]

    async def remember(
        self,
        tenant: str,
        conv_id: str,
        user_text: str,
        events: AsyncIterator[T],
    ) -> AsyncGenerator[T, None]:
        """Pass ``events`` through; once they end normally, store the user's turn and the
        answer (the text of choice 0). A stream cut short stores nothing."""
        answer: list[str] = []
        async for item in events:
            if isinstance(item, ChoiceDelta) and item.index == 0:
                answer.append(item.text)
            yield item
        await self.append(
            tenant, conv_id, [Turn("user", user_text), Turn("assistant", "".join(answer))]
        )
