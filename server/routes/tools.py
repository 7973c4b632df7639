"""Agent tools, the tenant's example tables and the audit log:

- ``GET /v1/tools`` (built-ins and the tenant's own tools), ``POST /v1/tools`` (a webhook tool,
  whose answer holds its signing secret, shown once; or a SQL tool over the tenant's tables),
  ``DELETE /v1/tools/{name}``, ``POST /v1/tools/{name}/call`` (one call without a model);
- ``PUT /v1/tables/{name}`` (rows in), ``GET /v1/tables``, ``DELETE /v1/tables/{name}`` (what
  ``sql_query`` reads);
- ``GET /v1/audit[?action=&subject=&limit=]``.

Shapes: docs/agents.md.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from litestar import Request, delete, get, post, put
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from engine import InvalidRequestError, ToolSpec
from server.auth import tenant_of
from server.routes.common import read_body
from server.state import services

MAX_AUDIT = 500


class ToolCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    description: str
    url: str | None = None
    sql: str | None = None
    write: bool = False
    parameters: dict[str, Any] = msgspec.field(
        default_factory=lambda: {"type": "object", "properties": {}}
    )


class ToolCall(msgspec.Struct, forbid_unknown_fields=True):
    arguments: dict[str, Any] = msgspec.field(default_factory=dict)


class TableRows(msgspec.Struct, forbid_unknown_fields=True):
    rows: list[dict[str, Any]]


@get("/v1/tools")
async def list_tools(request: Request) -> dict[str, Any]:
    tools = await services(request).agents.list_tools(tenant_of(request))
    return {"object": "list", "data": [{"object": "tool", **t} for t in tools]}


@post("/v1/tools", status_code=HTTP_201_CREATED)
async def create_tool(request: Request) -> dict[str, Any]:
    """The tool and its ``secret``: the endpoint checks ``X-Hearth-Signature`` with it."""
    body = await read_body(request, ToolCreate)
    spec = ToolSpec(body.name, body.description, body.parameters, body.url, body.sql, body.write)
    tool, secret = await services(request).agents.create_tool(tenant_of(request), spec)
    return {"object": "tool", **tool, "secret": secret}


@delete("/v1/tools/{name:str}", status_code=HTTP_200_OK)
async def delete_tool(request: Request, name: str) -> dict[str, Any]:
    await services(request).agents.delete_tool(tenant_of(request), name)
    return {"id": name, "object": "tool", "deleted": True}


@post("/v1/tools/{name:str}/call", status_code=HTTP_200_OK)
async def call_tool(request: Request, name: str) -> dict[str, Any]:
    """``{success, data, message}``: a failing tool is a 200 with ``success: false``."""
    body = await read_body(request, ToolCall, empty=ToolCall())
    result = await services(request).agents.call_tool(tenant_of(request), name, body.arguments)
    return result.as_dict()


@put("/v1/tables/{name:str}", status_code=HTTP_200_OK)
async def put_table(request: Request, name: str) -> dict[str, Any]:
    """Create or replace the table from ``{"rows": [{...}, ...]}``."""
    body = await read_body(request, TableRows)
    tables = services(request).tables
    out = await asyncio.to_thread(tables.put, tenant_of(request), name, body.rows)
    return {"object": "table", **out}


@get("/v1/tables")
async def list_tables(request: Request) -> dict[str, Any]:
    found = await asyncio.to_thread(services(request).tables.list, tenant_of(request))
    return {"object": "list", "data": [{"object": "table", **t} for t in found]}


@delete("/v1/tables/{name:str}", status_code=HTTP_200_OK)
async def delete_table(request: Request, name: str) -> dict[str, Any]:
    await asyncio.to_thread(services(request).tables.drop, tenant_of(request), name)
    return {"id": name, "object": "table", "deleted": True}


@get("/v1/audit")
async def list_audit(request: Request) -> dict[str, Any]:
    """Newest first; ``action`` is a prefix (``agent.``), ``subject`` an exact id."""
    query = request.query_params
    raw_limit = query.get("limit", "50")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_AUDIT:
        raise InvalidRequestError(f"limit must be an integer 1-{MAX_AUDIT}", param="limit")
    for key in ("action", "subject"):
        if len(query.get(key) or "") > 200:
            raise InvalidRequestError(f"{key}: at most 200 characters", param=key)
    rows = await services(request).audit.list(
        tenant_of(request),
        action=query.get("action"),
        subject=query.get("subject"),
        limit=int(raw_limit),
    )
    return {"object": "list", "data": rows}


HANDLERS = [
    list_tools,
    create_tool,
    delete_tool,
    call_tool,
    put_table,
    list_tables,
    delete_table,
    list_audit,
]
