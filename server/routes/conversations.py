"""Conversations: ``POST /v1/conversations`` (→ ``{id}``), ``GET /v1/conversations/{id}`` (the
summary and recent turns), ``DELETE /v1/conversations/{id}``. A ``conversation`` id on chat
completions, RAG chat and agent runs adds its memory and stores the turn. See docs/agents.md.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, delete, get, post
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from engine import Conversation
from server.auth import tenant_of
from server.routes.common import read_body
from server.state import services


class ConversationCreate(msgspec.Struct, forbid_unknown_fields=True):
    ttl_s: float | None = None


def conversation_out(conv: Conversation) -> dict[str, Any]:
    return {
        "id": conv.id,
        "object": "conversation",
        "summary": conv.summary,
        "turns": [{"role": t.role, "content": t.content} for t in conv.recent],
        "turn_count": conv.turns,
        "created_at": int(conv.created_at),
        "expires_at": int(conv.expires_at),
    }


@post("/v1/conversations", status_code=HTTP_201_CREATED)
async def create_conversation(request: Request) -> dict[str, Any]:
    body = await read_body(request, ConversationCreate, empty=ConversationCreate())
    conv = await services(request).conversations.create(tenant_of(request), body.ttl_s)
    return conversation_out(conv)


@get("/v1/conversations/{conv_id:str}")
async def get_conversation(request: Request, conv_id: str) -> dict[str, Any]:
    return conversation_out(await services(request).conversations.get(tenant_of(request), conv_id))


@delete("/v1/conversations/{conv_id:str}", status_code=HTTP_200_OK)
async def delete_conversation(request: Request, conv_id: str) -> dict[str, Any]:
    await services(request).conversations.delete(tenant_of(request), conv_id)
    return {"id": conv_id, "object": "conversation", "deleted": True}


HANDLERS = [create_conversation, get_conversation, delete_conversation]
