"""Agents: ``POST /v1/agents``, ``GET/DELETE /v1/agents/{name}``, ``POST /v1/agents/{name}/runs``
(inline, ``"background": true`` as a durable job, or ``"stream": true`` for SSE steps),
``GET /v1/agents/{name}/runs/{id}`` and ``GET /v1/agents/{name}/runs/{id}/events``.
Shapes: docs/agents.md.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import msgspec
from litestar import Request, delete, get, post
from litestar.response import ServerSentEvent, ServerSentEventMessage
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from engine import AgentSpec, InvalidRequestError, Route
from server.auth import tenant_of
from server.routes.common import read_body
from server.state import services

if TYPE_CHECKING:
    from engine import AgentRun, AgentService

POLL_S = 0.25


class RouteBody(msgspec.Struct, forbid_unknown_fields=True):
    keywords: list[str]
    tool: str


class AgentCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    instructions: str
    tools: list[str] = msgspec.field(default_factory=list)
    max_steps: int = 5
    max_tokens: int = 2000
    time_limit_s: float = 120.0
    step_tokens: int = 96
    routes: list[RouteBody] = msgspec.field(default_factory=list)


class RunBody(msgspec.Struct, forbid_unknown_fields=True):
    input: str
    background: bool = False
    stream: bool = False
    conversation: str | None = None


def agent_out(spec: AgentSpec) -> dict[str, Any]:
    return {"object": "agent", **spec.as_dict()}


def run_out(run: AgentRun) -> dict[str, Any]:
    return {
        "id": run.id,
        "object": "agent.run",
        "agent": run.agent,
        "status": run.status,
        "input": run.input,
        "output": run.output,
        "error": run.error,
        "job_id": run.job_id,
        "tokens": run.tokens,
        "conversation": run.conversation,
        "steps": run.steps,
    }


@post("/v1/agents", status_code=HTTP_201_CREATED)
async def create_agent(request: Request) -> dict[str, Any]:
    body = await read_body(request, AgentCreate)
    spec = AgentSpec(
        name=body.name,
        instructions=body.instructions,
        tools=tuple(body.tools),
        max_steps=body.max_steps,
        max_tokens=body.max_tokens,
        time_limit_s=body.time_limit_s,
        step_tokens=body.step_tokens,
        routes=tuple(Route(tuple(r.keywords), r.tool) for r in body.routes),
    )
    return agent_out(await services(request).agents.create(tenant_of(request), spec))


@get("/v1/agents/{name:str}")
async def get_agent(request: Request, name: str) -> dict[str, Any]:
    return agent_out(await services(request).agents.get(tenant_of(request), name))


@delete("/v1/agents/{name:str}", status_code=HTTP_200_OK)
async def delete_agent(request: Request, name: str) -> dict[str, Any]:
    await services(request).agents.delete(tenant_of(request), name)
    return {"id": name, "object": "agent", "deleted": True}


@post("/v1/agents/{name:str}/runs", status_code=HTTP_200_OK)
async def start_run(request: Request, name: str) -> Any:
    """The finished run (inline), the queued run (``background``), or SSE steps (``stream``)."""
    body = await read_body(request, RunBody)
    key = request.headers.get("idempotency-key")
    if key is not None and not body.background and not body.stream:
        raise InvalidRequestError(
            "Idempotency-Key applies to background runs", param="Idempotency-Key"
        )
    agents = services(request).agents
    tenant = tenant_of(request)
    run = await agents.start(
        tenant,
        name,
        body.input,
        background=body.background or body.stream,
        idempotency_key=key,
        conversation=body.conversation,
    )
    if body.stream:
        return ServerSentEvent(_events(agents, tenant, run.id))
    return run_out(run)


@get("/v1/agents/{name:str}/runs/{run_id:str}")
async def get_run(request: Request, name: str, run_id: str) -> dict[str, Any]:
    run = await services(request).agents.run(tenant_of(request), run_id)
    return run_out(run)


@get("/v1/agents/{name:str}/runs/{run_id:str}/events")
async def run_events(request: Request, name: str, run_id: str) -> ServerSentEvent:
    """``event: step`` per stored step as it happens, ``event: done`` with the whole run."""
    agents = services(request).agents
    tenant = tenant_of(request)
    await agents.run(tenant, run_id)  # 404 before the stream starts
    return ServerSentEvent(_events(agents, tenant, run_id))


async def _events(
    agents: AgentService, tenant: str, run_id: str
) -> AsyncIterator[ServerSentEventMessage]:
    sent = 0
    while True:
        run = await agents.run(tenant, run_id)
        for step in run.steps[sent:]:
            yield ServerSentEventMessage(data=json.dumps(step), event="step")
        sent = len(run.steps)
        if run.finished:
            yield ServerSentEventMessage(data=json.dumps(run_out(run)), event="done")
            return
        await asyncio.sleep(POLL_S)


HANDLERS = [create_agent, get_agent, delete_agent, start_run, get_run, run_events]
