"""``WebhookService``: signed webhooks in, signed result callbacks out, both on the durable queue.

Inbound: a tenant defines ``{name, agent | workflow, callback_url?}`` and gets a secret. A call
to ``POST /v1/webhooks/{name}`` is checked before its body is parsed (HMAC-SHA256 over
``timestamp.body``, the timestamp within ``max_skew_s``; else 401), then its body becomes a
``webhook`` job (an ``Idempotency-Key`` replay returns the first job, no second one).

The job runs the agent (input: the body's ``input`` string, else the body as JSON) or the
workflow (the body as its one item). The agent run's id is derived from the job id, so a job run
again after a crash continues the same run instead of starting a second one. With a
``callback_url`` the result is posted back by a ``webhook_delivery`` job: signed the same way
with the webhook's secret, ``X-Hearth-Delivery: <delivery job id>`` for the receiver to drop
duplicates (delivery is at-least-once), retried with backoff on a failure or a non-2xx answer,
then a dead letter (``POST /v1/jobs/{id}/retry`` sends it again).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.agents.http import DELIVERY_HEADER, HttpCallError, HttpPolicy, verify
from engine.agents.service import MAX_INPUT_CHARS, NAME
from engine.errors import AuthenticationError, InvalidRequestError, NotFoundError
from engine.jobs import JobContext
from engine.storage import Job, Store, register_migration

if TYPE_CHECKING:
    from engine.agents.service import AgentService

register_migration(
    "agents",
    4,
    "inbound webhooks",
    """
    CREATE TABLE agent_webhooks (
        tenant_id TEXT NOT NULL,
        name TEXT NOT NULL,
        spec JSON NOT NULL,
        secret TEXT NOT NULL,
        created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
        PRIMARY KEY (tenant_id, name)
    )
    """,
)

MAX_WEBHOOKS = 64
MAX_BODY_BYTES = 64 * 1024


@dataclass(frozen=True)
class WebhookSpec:
    """Where a webhook's body goes: exactly one of ``agent`` or ``workflow``; the result is
    posted to ``callback_url`` (an allow-listed host) when set."""

    name: str
    agent: str | None = None
    workflow: str | None = None
    callback_url: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "agent": self.agent,
            "workflow": self.workflow,
            "callback_url": self.callback_url,
        }


def agent_input(body: Any) -> str:
    """What an agent target reads: the body's ``input`` string, else the body as JSON."""
    text = body.get("input") if isinstance(body, dict) else None
    return text if isinstance(text, str) else json.dumps(body)


class WebhookService:
    """``agents`` runs the agent targets; ``workflows`` (a
    :class:`~engine.tasks.workflow_service.WorkflowService`) the workflow targets."""

    def __init__(
        self,
        store: Store,
        agents: AgentService,
        workflows: Any,
        jobs: Any,
        http: HttpPolicy,
        *,
        max_skew_s: float = 300.0,
    ) -> None:
        self.store = store
        self.agents = agents
        self.workflows = workflows
        self.jobs = jobs
        self.http = http
        self.max_skew_s = max_skew_s
        jobs.register("webhook", self._run)
        jobs.register("webhook_delivery", self._deliver)

    # ---- definitions --------------------------------------------------------------------

    async def create(self, tenant: str, spec: WebhookSpec) -> tuple[dict[str, Any], str]:
        """Store the webhook; returns it and its secret (shown once; re-creating replaces
        both)."""

        if not NAME.match(spec.name):
            raise InvalidRequestError("name: 1-64 of a-z A-Z 0-9 _ -", param="name")
        if (spec.agent is None) == (spec.workflow is None):
            raise InvalidRequestError("give exactly one of agent or workflow", param="agent")
        if spec.agent is not None:
            await self.agents.get(tenant, spec.agent)  # 404 naming the agent
        else:
            await self.workflows.workflow(tenant, spec.workflow)
        if spec.callback_url is not None:
            self.http.check_url(spec.callback_url, param="callback_url")
        secret = "whsec_" + secrets.token_hex(24)

        def write() -> None:
            with self.store.transaction() as conn:
                row = conn.execute(
                    "SELECT count(*) FROM agent_webhooks WHERE tenant_id = ? AND name <> ?",
                    [tenant, spec.name],
                ).fetchone()
                if row and row[0] >= MAX_WEBHOOKS:
                    raise InvalidRequestError(
                        f"at most {MAX_WEBHOOKS} webhooks per tenant; delete one first",
                        param="name",
                    )
                conn.execute(
                    "INSERT OR REPLACE INTO agent_webhooks (tenant_id, name, spec, secret) "
                    "VALUES (?, ?, ?, ?)",
                    [tenant, spec.name, json.dumps(spec.as_dict()), secret],
                )

        await asyncio.to_thread(write)
        return spec.as_dict(), secret

    async def list(self, tenant: str) -> list[dict[str, Any]]:
        rows = await asyncio.to_thread(
            self.store.fetchall,
            "SELECT spec FROM agent_webhooks WHERE tenant_id = ? ORDER BY name",
            [tenant],
        )
        return [json.loads(r[0]) for r in rows]

    async def delete(self, tenant: str, name: str) -> None:
        await self._load(tenant, name)
        await asyncio.to_thread(
            self.store.execute,
            "DELETE FROM agent_webhooks WHERE tenant_id = ? AND name = ?",
            [tenant, name],
        )

    async def _load(self, tenant: str, name: str) -> tuple[WebhookSpec, str]:
        row = await asyncio.to_thread(
            self.store.fetchone,
            "SELECT spec, secret FROM agent_webhooks WHERE tenant_id = ? AND name = ?",
            [tenant, name],
        )
        if row is None:
            raise NotFoundError(f"webhook {name!r} not found", param="name")
        return WebhookSpec(**json.loads(row[0])), row[1]

    # ---- inbound ------------------------------------------------------------------------

    async def receive(
        self,
        tenant: str,
        name: str,
        body: bytes,
        timestamp: str | None,
        signature: str | None,
        idempotency_key: str | None,
    ) -> Job:
        """Check the signature (401 before the body is parsed), then enqueue the body; returns
        the job (the first one again for a replayed idempotency key)."""
        spec, secret = await self._load(tenant, name)
        problem = verify(secret, timestamp, body, signature, max_skew_s=self.max_skew_s)
        if problem is not None:
            raise AuthenticationError(problem, code="bad_signature")
        if len(body) > MAX_BODY_BYTES:
            raise InvalidRequestError(f"body: at most {MAX_BODY_BYTES} bytes", param="body")
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError) as exc:  # the same answer as the server's decoder
            raise InvalidRequestError(
                f"the body is not valid JSON: {exc}", param="body", code="invalid_json"
            ) from None
        if spec.agent is not None and len(agent_input(payload)) > MAX_INPUT_CHARS:
            raise InvalidRequestError(
                f"an agent's input is at most {MAX_INPUT_CHARS} characters (the body's "
                '"input" string, else the body as JSON)',
                param="body",
            )
        return await self.jobs.enqueue(
            tenant,
            "webhook",
            {"webhook": spec.name, "body": payload},
            idempotency_key=None if idempotency_key is None else f"webhook:{idempotency_key}",
        )

    # ---- job handlers -------------------------------------------------------------------

    async def _run(self, ctx: JobContext) -> dict[str, Any]:
        tenant = ctx.job.tenant_id
        spec, _ = await self._load(tenant, str(ctx.payload["webhook"]))
        body = ctx.payload["body"]
        await ctx.progress(10, "running")
        if spec.agent is not None:
            text = agent_input(body)
            run_id = "run_" + hashlib.sha256(ctx.job.id.encode()).hexdigest()[:20]
            run = await self.agents.run_as(tenant, spec.agent, text, run_id, ctx)
            result: dict[str, Any] = {
                "webhook": spec.name,
                "agent": spec.agent,
                "run_id": run.id,
                "status": run.status,
                "output": run.output,
                "error": run.error,
            }
        else:
            rows = await self.workflows.run_workflow(tenant, spec.workflow, [body], ctx.job.id)
            result = {"webhook": spec.name, "workflow": spec.workflow, "output": rows[0]}
        if spec.callback_url is not None:
            delivery = await self.jobs.enqueue(
                tenant,
                "webhook_delivery",
                {"webhook": spec.name, "url": spec.callback_url, "result": result},
                idempotency_key=f"delivery:{ctx.job.id}",
            )
            result["delivery_job_id"] = delivery.id
        await self.agents.record_audit(
            tenant, "webhook.run", ctx.job.id, {"webhook": spec.name, **result}
        )
        return result

    async def _deliver(self, ctx: JobContext) -> dict[str, Any]:
        """POST the result, signed; a failure raises (retried with backoff, then dead)."""
        tenant = ctx.job.tenant_id
        _, secret = await self._load(tenant, str(ctx.payload["webhook"]))
        try:
            status, _ = await self.http.call(
                "POST",
                str(ctx.payload["url"]),
                ctx.payload["result"],
                secret=secret,
                headers={DELIVERY_HEADER: ctx.job.id},
            )
        except HttpCallError as exc:
            raise RuntimeError(f"delivery failed: {exc}") from None
        if not 200 <= status < 300:
            raise RuntimeError(f"delivery answered HTTP {status}")
        await self.agents.record_audit(
            tenant, "webhook.delivered", ctx.job.id, {"url": ctx.payload["url"], "status": status}
        )
        return {"status": status}
