"""Webhooks: ``POST /v1/webhooks`` (define one; the answer holds its secret, shown once),
``GET /v1/webhooks``, ``DELETE /v1/webhooks/{name}``, and ``POST /v1/webhooks/{name}``: a signed
call whose body becomes a durable job (202 with the job). Shapes: docs/agents.md.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, delete, get, post
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_202_ACCEPTED

from engine import SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookSpec
from server.auth import tenant_of
from server.routes.common import read_body
from server.routes.jobs import job_out
from server.state import services
from server.wire import JobInfo


class WebhookCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    agent: str | None = None
    workflow: str | None = None
    callback_url: str | None = None


@post("/v1/webhooks", status_code=HTTP_201_CREATED)
async def create_webhook(request: Request) -> dict[str, Any]:
    body = await read_body(request, WebhookCreate)
    spec = WebhookSpec(body.name, body.agent, body.workflow, body.callback_url)
    hook, secret = await services(request).webhooks.create(tenant_of(request), spec)
    return {"object": "webhook", **hook, "secret": secret}


@get("/v1/webhooks")
async def list_webhooks(request: Request) -> dict[str, Any]:
    hooks = await services(request).webhooks.list(tenant_of(request))
    return {"object": "list", "data": [{"object": "webhook", **h} for h in hooks]}


@delete("/v1/webhooks/{name:str}", status_code=HTTP_200_OK)
async def delete_webhook(request: Request, name: str) -> dict[str, Any]:
    await services(request).webhooks.delete(tenant_of(request), name)
    return {"id": name, "object": "webhook", "deleted": True}


@post("/v1/webhooks/{name:str}", status_code=HTTP_202_ACCEPTED)
async def receive_webhook(request: Request, name: str) -> JobInfo:
    """401 on a missing, stale or wrong signature (checked before the body is parsed); a
    replayed ``Idempotency-Key`` answers the first job."""
    job = await services(request).webhooks.receive(
        tenant_of(request),
        name,
        await request.body(),
        request.headers.get(TIMESTAMP_HEADER),
        request.headers.get(SIGNATURE_HEADER),
        request.headers.get("idempotency-key"),
    )
    return job_out(job)


HANDLERS = [create_webhook, list_webhooks, delete_webhook, receive_webhook]
