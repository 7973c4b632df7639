"""``AgentService``: agents as data, runs as a bounded loop of grammar-constrained tool calls.

Each step the model answers one JSON object under a grammar built from the agent's tools:
``{"tool": "<name>", "arguments": {...}}`` or ``{"tool": "final", "answer": "..."}``. The tool's
arguments are validated again and it runs; its ``{success, data, message}`` is appended to the
transcript for the next step. Every step is stored in DuckDB as it happens, so a run continues
from its last stored step after a crash. Background runs are durable jobs of kind
``agent_run`` (at-least-once: a step stored before the crash is not run again).
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from engine.agents.http import HttpPolicy
from engine.agents.tables import MAX_SQL_CHARS, TableStore
from engine.agents.tools import Tool, ToolResult, sql_params, sql_template_tool, webhook_tool
from engine.conversations import ConversationService, Turn, memory_text
from engine.errors import InvalidRequestError, NotFoundError
from engine.grammar.schema_check import check_schema
from engine.jobs import JobContext
from engine.storage import Store, register_migration

register_migration(
    "agents",
    1,
    "agents, agent runs and their steps",
    """
    CREATE TABLE agents (
        tenant_id TEXT NOT NULL,
        name TEXT NOT NULL,
        spec JSON NOT NULL,
        created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
        PRIMARY KEY (tenant_id, name)
    );
    CREATE TABLE agent_runs (
        id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        agent TEXT NOT NULL,
        status TEXT NOT NULL,
        input TEXT NOT NULL,
        output TEXT,
        error TEXT,
        job_id TEXT,
        tokens INTEGER NOT NULL DEFAULT 0,
        created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
    );
    CREATE TABLE agent_steps (
        run_id TEXT NOT NULL,
        idx INTEGER NOT NULL,
        step JSON NOT NULL,
        PRIMARY KEY (run_id, idx)
    )
    """,
)
register_migration(
    "agents",
    2,
    "user-defined webhook tools",
    """
    CREATE TABLE agent_tools (
        tenant_id TEXT NOT NULL,
        name TEXT NOT NULL,
        spec JSON NOT NULL,
        secret TEXT NOT NULL,
        created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
        PRIMARY KEY (tenant_id, name)
    )
    """,
)

register_migration(
    "agents",
    3,
    "the conversation an agent run belongs to",
    "ALTER TABLE agent_runs ADD COLUMN conversation TEXT",
)

NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
MAX_INPUT_CHARS = 8000
MAX_ANSWER_CHARS = 600
MAX_TENANT_TOOLS = 64
MEMORY_CHARS = 2400  # the conversation memory in an agent's prompt (about 600 tokens)
FINAL = "final"


@dataclass(frozen=True)
class ToolSpec:
    """A user-defined tool; ``parameters`` is the JSON schema of its arguments object. Exactly
    one body: a webhook (the arguments POSTed, signed, to ``url``, an allow-listed host) or
    ``sql`` (one statement over the tenant's tables, each ``$name`` bound to that argument;
    ``write`` lets it insert or update rows there, else it is read-only)."""

    name: str
    description: str
    parameters: dict[str, Any]
    url: str | None = None
    sql: str | None = None
    write: bool = False

    @property
    def type(self) -> str:
        return "sql" if self.sql is not None else "webhook"

    def as_dict(self) -> dict[str, Any]:
        body = {"url": self.url} if self.sql is None else {"sql": self.sql, "write": self.write}
        return {
            "name": self.name,
            "description": self.description,
            "parameters": self.parameters,
            **body,
        }


@dataclass(frozen=True)
class Route:
    """Keyword routing: an input containing one of ``keywords`` (case-insensitive) must start
    with a call of ``tool`` (the first step's grammar allows only that tool)."""

    keywords: tuple[str, ...]
    tool: str

    def as_dict(self) -> dict[str, Any]:
        return {"keywords": list(self.keywords), "tool": self.tool}


@dataclass(frozen=True)
class AgentSpec:
    """An agent: instructions, tool names, keyword routes to a first tool, and its bounds
    (steps, total tokens, seconds)."""

    name: str
    instructions: str
    tools: tuple[str, ...]
    max_steps: int = 5
    max_tokens: int = 2000
    time_limit_s: float = 120.0
    step_tokens: int = 96
    routes: tuple[Route, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "instructions": self.instructions,
            "tools": list(self.tools),
            "max_steps": self.max_steps,
            "max_tokens": self.max_tokens,
            "time_limit_s": self.time_limit_s,
            "step_tokens": self.step_tokens,
            "routes": [r.as_dict() for r in self.routes],
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> AgentSpec:
        routes = tuple(Route(tuple(r["keywords"]), r["tool"]) for r in raw.get("routes", []))
        return cls(**{**raw, "tools": tuple(raw["tools"]), "routes": routes})

    def route(self, text: str) -> str | None:
        """The tool of the first route with a keyword in ``text``, if any."""
        lowered = text.lower()
        for route in self.routes:
            if any(k.lower() in lowered for k in route.keywords):
                return route.tool
        return None


@dataclass
class AgentRun:
    id: str
    agent: str
    status: str  # queued | running | succeeded | failed | stopped
    input: str
    output: str | None
    error: str | None
    job_id: str | None
    tokens: int
    conversation: str | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.status in ("succeeded", "failed", "stopped")


class AgentService:
    """``llm``: a :class:`engine.tasks.llm.TaskLLM` (grammar-constrained completion);
    ``tools``: the built-in tools every tenant may name; ``jobs``: the durable queue for
    background runs; ``http``: where webhook tools may call; ``audit``: the tenant audit log
    (every run and tool call is recorded there)."""

    def __init__(
        self,
        store: Store,
        llm: Any,
        tools: dict[str, Tool],
        jobs: Any,
        *,
        http: HttpPolicy | None = None,
        audit: Any | None = None,
        conversations: ConversationService | None = None,
        tables: TableStore | None = None,
    ) -> None:
        self.store = store
        self.llm = llm
        self.tools = dict(tools)
        self.jobs = jobs
        self.http = http or HttpPolicy()
        self.audit = audit
        self.conversations = conversations
        self.tables = tables
        jobs.register("agent_run", self._run_job)

    def add_tool(self, tool: Tool) -> None:
        """Make a Python tool available to every tenant's agents."""
        self.tools[tool.name] = tool

    # ---- tools --------------------------------------------------------------------------

    async def create_tool(self, tenant: str, spec: ToolSpec) -> tuple[dict[str, Any], str]:
        """Store a tenant's tool; returns it and its signing secret (shown once; a re-create
        with the same name replaces the tool and its secret; SQL tools send no signature)."""
        if not NAME.match(spec.name):
            raise InvalidRequestError("name: 1-64 of a-z A-Z 0-9 _ -", param="name")
        if spec.name in self.tools or spec.name == FINAL:
            raise InvalidRequestError(f"{spec.name!r} is a built-in tool's name", param="name")
        if not 0 < len(spec.description) <= 500:
            raise InvalidRequestError("description: 1-500 characters", param="description")
        params = spec.parameters
        if not isinstance(params, dict) or params.get("type") != "object":
            raise InvalidRequestError(
                'parameters: a JSON schema with "type": "object"', param="parameters"
            )
        if len(json.dumps(params)) > 4000:
            raise InvalidRequestError("parameters: at most 4000 characters", param="parameters")
        check_schema(params, param="parameters")
        if (spec.url is None) == (spec.sql is None):
            raise InvalidRequestError("give exactly one of url or sql", param="url")
        if spec.url is not None:
            self.http.check_url(spec.url)
        else:
            self._check_sql(spec)
        secret = "whsec_" + secrets.token_hex(24)

        def write() -> None:
            with self.store.transaction() as conn:
                row = conn.execute(
                    "SELECT count(*) FROM agent_tools WHERE tenant_id = ? AND name <> ?",
                    [tenant, spec.name],
                ).fetchone()
                if row and row[0] >= MAX_TENANT_TOOLS:
                    raise InvalidRequestError(
                        f"at most {MAX_TENANT_TOOLS} tools per tenant; delete one first",
                        param="name",
                    )
                conn.execute(
                    "INSERT OR REPLACE INTO agent_tools (tenant_id, name, spec, secret) "
                    "VALUES (?, ?, ?, ?)",
                    [tenant, spec.name, json.dumps(spec.as_dict()), secret],
                )

        await asyncio.to_thread(write)
        return {"type": spec.type, **spec.as_dict()}, secret

    def _check_sql(self, spec: ToolSpec) -> None:
        sql = spec.sql or ""
        if self.tables is None:
            raise InvalidRequestError("SQL tools are not enabled", param="sql")
        if not 0 < len(sql) <= MAX_SQL_CHARS:
            raise InvalidRequestError(f"sql: 1-{MAX_SQL_CHARS} characters", param="sql")
        declared = set(spec.parameters.get("properties", {}))
        unknown = [p for p in sql_params(sql) if p not in declared]
        if unknown:
            raise InvalidRequestError(
                f"sql uses ${unknown[0]}, which is not in parameters.properties", param="sql"
            )

    async def list_tools(self, tenant: str) -> list[dict[str, Any]]:
        """The built-ins then the tenant's webhook tools (never their secrets)."""
        out = [
            {
                "type": "builtin",
                "name": t.name,
                "description": t.description,
                "parameters": t.parameters,
            }
            for t in self.tools.values()
        ]
        for spec, _ in await self._tenant_tools(tenant):
            out.append({"type": spec.type, **spec.as_dict()})
        return out

    async def delete_tool(self, tenant: str, name: str) -> None:
        row = await asyncio.to_thread(
            self.store.fetchone,
            "SELECT 1 FROM agent_tools WHERE tenant_id = ? AND name = ?",
            [tenant, name],
        )
        if row is None:
            raise NotFoundError(f"tool {name!r} not found", param="name")
        await asyncio.to_thread(
            self.store.execute,
            "DELETE FROM agent_tools WHERE tenant_id = ? AND name = ?",
            [tenant, name],
        )

    async def tools_for(self, tenant: str) -> dict[str, Tool]:
        """Every tool the tenant's agents may name: the built-ins and its webhook tools."""
        tools = dict(self.tools)
        for spec, secret in await self._tenant_tools(tenant):
            if spec.sql is not None and self.tables is not None:
                tools[spec.name] = sql_template_tool(
                    spec.name,
                    spec.description,
                    spec.parameters,
                    spec.sql,
                    spec.write,
                    self.tables,
                )
            elif spec.url is not None:
                tools[spec.name] = webhook_tool(
                    spec.name, spec.description, spec.parameters, spec.url, secret, self.http
                )
        return tools

    async def call_tool(self, tenant: str, name: str, arguments: Any) -> ToolResult:
        """Call one tool directly (no model), recorded in the audit log."""
        tool = (await self.tools_for(tenant)).get(name)
        if tool is None:
            raise NotFoundError(f"tool {name!r} not found", param="name")
        if not isinstance(arguments, dict):
            raise InvalidRequestError("arguments: a JSON object", param="arguments")
        result = await tool.call(tenant, arguments)
        await self.record_audit(
            tenant, "tool.call", name, {"arguments": arguments, "success": result.success}
        )
        return result

    async def _tenant_tools(self, tenant: str) -> list[tuple[ToolSpec, str]]:
        rows = await asyncio.to_thread(
            self.store.fetchall,
            "SELECT spec, secret FROM agent_tools WHERE tenant_id = ? ORDER BY name",
            [tenant],
        )
        return [(ToolSpec(**json.loads(spec)), secret) for spec, secret in rows]

    async def record_audit(
        self, tenant: str, action: str, subject: str | None, detail: dict[str, Any]
    ) -> None:
        if self.audit is not None:
            await self.audit.record(tenant, action, subject, detail)

    # ---- agents -------------------------------------------------------------------------

    async def create(self, tenant: str, spec: AgentSpec) -> AgentSpec:
        self._check(spec, await self.tools_for(tenant))
        await asyncio.to_thread(
            self.store.execute,
            "INSERT OR REPLACE INTO agents (tenant_id, name, spec) VALUES (?, ?, ?)",
            [tenant, spec.name, json.dumps(spec.as_dict())],
        )
        return spec

    async def get(self, tenant: str, name: str) -> AgentSpec:
        row = await asyncio.to_thread(
            self.store.fetchone,
            "SELECT spec FROM agents WHERE tenant_id = ? AND name = ?",
            [tenant, name],
        )
        if row is None:
            raise NotFoundError(f"agent {name!r} not found", param="name")
        return AgentSpec.from_dict(json.loads(row[0]))

    async def delete(self, tenant: str, name: str) -> None:
        await self.get(tenant, name)
        await asyncio.to_thread(
            self.store.execute,
            "DELETE FROM agents WHERE tenant_id = ? AND name = ?",
            [tenant, name],
        )

    def _check(self, spec: AgentSpec, available: dict[str, Tool]) -> None:
        if not NAME.match(spec.name):
            raise InvalidRequestError("name: 1-64 of a-z A-Z 0-9 _ -", param="name")
        if not 0 < len(spec.instructions) <= 4000:
            raise InvalidRequestError("instructions: 1-4000 characters", param="instructions")
        unknown = [t for t in spec.tools if t not in available]
        if unknown or len(spec.tools) > 16:
            raise InvalidRequestError(
                f"unknown tools {unknown}; available: {sorted(available)} (at most 16)",
                param="tools",
            )
        bounds = (
            ("max_steps", spec.max_steps, 1, 20),
            ("max_tokens", spec.max_tokens, 16, 32000),
            ("time_limit_s", spec.time_limit_s, 1, 3600),
            ("step_tokens", spec.step_tokens, 16, 1024),
        )
        for name, value, low, high in bounds:
            if not low <= value <= high:
                raise InvalidRequestError(f"{name} must be {low}-{high}", param=name)
        if len(spec.routes) > 16:
            raise InvalidRequestError("routes: at most 16", param="routes")
        for i, route in enumerate(spec.routes):
            if route.tool not in spec.tools:
                raise InvalidRequestError(
                    f"routes[{i}].tool {route.tool!r} is not one of the agent's tools",
                    param=f"routes[{i}].tool",
                )
            if not 0 < len(route.keywords) <= 20 or not all(
                0 < len(k) <= 40 for k in route.keywords
            ):
                raise InvalidRequestError(
                    "keywords: 1-20 of 1-40 characters", param=f"routes[{i}].keywords"
                )

    # ---- runs ---------------------------------------------------------------------------

    async def start(
        self,
        tenant: str,
        name: str,
        text: str,
        *,
        background: bool = False,
        idempotency_key: str | None = None,
        conversation: str | None = None,
    ) -> AgentRun:
        """Run the agent on ``text``: inline (the finished run) or as a durable job (queued).
        With ``conversation`` the prompt holds its memory and the turn is added to it."""
        spec = await self.get(tenant, name)
        if not 0 < len(text) <= MAX_INPUT_CHARS:
            raise InvalidRequestError(f"input: 1-{MAX_INPUT_CHARS} characters", param="input")
        if conversation is not None:
            if self.conversations is None:
                raise InvalidRequestError("conversations are not enabled", param="conversation")
            await self.conversations.get(tenant, conversation)  # 404 before any work
        run_id = "run_" + secrets.token_hex(10)
        await asyncio.to_thread(
            self.store.execute,
            "INSERT INTO agent_runs (id, tenant_id, agent, status, input, conversation) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [run_id, tenant, name, "queued", text, conversation],
        )
        if background:
            job = await self.jobs.enqueue(
                tenant, "agent_run", {"run_id": run_id}, idempotency_key=idempotency_key
            )
            first = str((job.payload or {}).get("run_id", run_id))
            if first != run_id:  # a replayed idempotency key: the first run is the answer
                await asyncio.to_thread(
                    self.store.execute, "DELETE FROM agent_runs WHERE id = ?", [run_id]
                )
                return await self.run(tenant, first)
            await asyncio.to_thread(
                self.store.execute,
                "UPDATE agent_runs SET job_id = ? WHERE id = ?",
                [job.id, run_id],
            )
            return await self.run(tenant, run_id)
        await self._loop(tenant, spec, run_id)
        return await self.run(tenant, run_id)

    async def run_as(
        self, tenant: str, name: str, text: str, run_id: str, ctx: JobContext | None = None
    ) -> AgentRun:
        """Run, or continue, run ``run_id`` of agent ``name`` on ``text``: the idempotent entry
        for a job that owns a run (run again after a crash, it continues the same run)."""
        spec = await self.get(tenant, name)
        if not 0 < len(text) <= MAX_INPUT_CHARS:
            raise InvalidRequestError(f"input: 1-{MAX_INPUT_CHARS} characters", param="input")
        await asyncio.to_thread(
            self.store.execute,
            "INSERT OR IGNORE INTO agent_runs (id, tenant_id, agent, status, input, job_id) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [run_id, tenant, name, "queued", text, None if ctx is None else ctx.job.id],
        )
        run = await self.run(tenant, run_id)
        if not run.finished:
            await self._loop(tenant, spec, run_id, ctx)
        return await self.run(tenant, run_id)

    async def run(self, tenant: str, run_id: str) -> AgentRun:
        def load() -> AgentRun:
            row = self.store.fetchone(
                "SELECT id, agent, status, input, output, error, job_id, tokens, conversation "
                "FROM agent_runs "
                "WHERE id = ? AND tenant_id = ?",
                [run_id, tenant],
            )
            if row is None:
                raise NotFoundError(f"run {run_id!r} not found", param="run_id")
            steps = self.store.fetchall(
                "SELECT step FROM agent_steps WHERE run_id = ? ORDER BY idx", [run_id]
            )
            return AgentRun(*row, steps=[json.loads(s[0]) for s in steps])

        return await asyncio.to_thread(load)

    async def _run_job(self, ctx: JobContext) -> dict[str, Any]:
        run_id = str(ctx.payload["run_id"])
        run = await self.run(ctx.job.tenant_id, run_id)
        if not run.finished:
            spec = await self.get(ctx.job.tenant_id, run.agent)
            await self._loop(ctx.job.tenant_id, spec, run_id, ctx)
            run = await self.run(ctx.job.tenant_id, run_id)
        return {"run_id": run_id, "status": run.status}

    async def _loop(
        self, tenant: str, spec: AgentSpec, run_id: str, ctx: JobContext | None = None
    ) -> None:
        """Run the steps, then record the run's outcome in the audit log."""
        await self._steps(tenant, spec, run_id, ctx)
        run = await self.run(tenant, run_id)
        if run.conversation and run.status == "succeeded" and self.conversations is not None:
            await self.conversations.append(
                tenant,
                run.conversation,
                [Turn("user", run.input), Turn("assistant", run.output or "")],
            )
        detail = {
            "agent": spec.name,
            "status": run.status,
            "steps": len(run.steps),
            "tokens": run.tokens,
            "error": run.error,
            "job_id": run.job_id,
        }
        await self.record_audit(tenant, "agent.run", run_id, detail)

    async def _steps(
        self, tenant: str, spec: AgentSpec, run_id: str, ctx: JobContext | None = None
    ) -> None:
        """Continue the run from its last stored step until a final answer or a bound."""
        run = await self.run(tenant, run_id)
        await self._set(run_id, status="running")
        available = await self.tools_for(tenant)
        tools = {n: available[n] for n in spec.tools if n in available}
        schema = action_schema(tools)
        tokens, started = run.tokens, time.monotonic()
        steps = list(run.steps)
        memory = ""
        if run.conversation and self.conversations is not None:
            conv = await self.conversations.get(tenant, run.conversation)
            memory = memory_text(conv, MEMORY_CHARS)
        while True:
            if len(steps) >= spec.max_steps:
                return await self._set(run_id, status="stopped", error="max_steps reached")
            if tokens >= spec.max_tokens:
                return await self._set(run_id, status="stopped", error="max_tokens reached")
            if time.monotonic() - started > spec.time_limit_s:
                return await self._set(run_id, status="stopped", error="time limit reached")
            if ctx is not None:
                await ctx.progress(100 * len(steps) // spec.max_steps, f"step {len(steps) + 1}")
            prompt = render_prompt(spec, tools, run.input, steps, memory)
            routed = step_schema(spec, tools, run.input, steps)
            t0 = time.perf_counter()
            out = await self.llm.complete(
                prompt, schema=routed or schema, max_tokens=spec.step_tokens
            )
            used = out.prompt_tokens + out.completion_tokens
            tokens += used
            step: dict[str, Any] = {"index": len(steps), "model_output": out.text, "tokens": used}
            action = parse_action(out.text)
            if action is None:
                step |= {"type": "error", "message": "the model's output was not a JSON action"}
            elif action.get("tool") == FINAL:
                step |= {"type": "final", "answer": str(action.get("answer", ""))}
            elif repeats(steps, action):
                step |= {
                    "type": "repeat",
                    "tool": action.get("tool"),
                    "arguments": action.get("arguments") or {},
                    "message": "the same call as the step before: its result is above; answer now",
                }
            else:
                step |= await self._call_tool(tenant, spec, run_id, tools, action, len(steps))
            step["seconds"] = round(time.perf_counter() - t0, 3)
            await self._store_step(run_id, step, tokens)
            steps.append(step)
            if step["type"] == "final":
                return await self._set(run_id, status="succeeded", output=step["answer"])

    async def _call_tool(
        self,
        tenant: str,
        spec: AgentSpec,
        run_id: str,
        tools: dict[str, Tool],
        action: dict[str, Any],
        index: int,
    ) -> dict[str, Any]:
        """Run the action's tool (an unknown one is a failed result), audit the call, and
        return the step's fields."""
        name = str(action.get("tool"))
        args = action.get("arguments") or {}
        tool = tools.get(name)
        result = (
            await tool.call(tenant, args)
            if tool is not None
            else ToolResult(False, None, f"unknown tool {name!r}")
        )
        detail = {
            "agent": spec.name,
            "step": index,
            "tool": name,
            "arguments": args,
            "success": result.success,
            "message": result.message[:300],
        }
        await self.record_audit(tenant, "agent.tool_call", run_id, detail)
        return {"type": "tool", "tool": name, "arguments": args, "result": result.as_dict()}

    async def _store_step(self, run_id: str, step: dict[str, Any], tokens: int) -> None:
        def write() -> None:
            with self.store.transaction() as conn:
                conn.execute(
                    "INSERT INTO agent_steps (run_id, idx, step) VALUES (?, ?, ?)",
                    [run_id, step["index"], json.dumps(step)],
                )
                conn.execute("UPDATE agent_runs SET tokens = ? WHERE id = ?", [tokens, run_id])

        await asyncio.to_thread(write)

    async def _set(self, run_id: str, **fields: Any) -> None:
        cols = ", ".join(f"{k} = ?" for k in fields)
        await asyncio.to_thread(
            self.store.execute,
            f"UPDATE agent_runs SET {cols} WHERE id = ?",
            [*fields.values(), run_id],
        )


def step_schema(
    spec: AgentSpec, tools: dict[str, Tool], text: str, steps: list[dict[str, Any]]
) -> dict[str, Any] | None:
    """A narrower grammar for this step, or None for every tool: after a repeated call only an
    answer (the model has the result already); before any tool call, the routed tool when a
    keyword of ``spec.routes`` is in the input."""
    if steps and steps[-1]["type"] == "repeat":
        return FINAL_ONLY
    routed = spec.route(text)
    if routed in tools and not any(s["type"] == "tool" for s in steps):
        return action_schema({routed: tools[routed]}, final=False)
    return None


def parse_action(text: str) -> dict[str, Any] | None:
    try:
        action = json.loads(text)
    except ValueError:
        return None
    return action if isinstance(action, dict) else None


def repeats(steps: list[dict[str, Any]], action: dict[str, Any]) -> bool:
    """The action calls the same tool with the same arguments as the step before."""
    last = steps[-1] if steps else None
    return (
        last is not None
        and last["type"] == "tool"
        and last["tool"] == action.get("tool")
        and last["arguments"] == (action.get("arguments") or {})
    )


def action_schema(tools: dict[str, Tool], *, final: bool = True) -> dict[str, Any]:
    """One JSON object: a call of one of ``tools`` with its typed arguments, or (``final``) the
    answer."""
    options: list[dict[str, Any]] = [
        {
            "type": "object",
            "properties": {"tool": {"enum": [name]}, "arguments": tool.parameters},
            "required": ["tool", "arguments"],
            "additionalProperties": False,
        }
        for name, tool in tools.items()
    ]
    if final:
        options.append(
            {
                "type": "object",
                "properties": {
                    "tool": {"enum": [FINAL]},
                    "answer": {"type": "string", "maxLength": MAX_ANSWER_CHARS},
                },
                "required": ["tool", "answer"],
                "additionalProperties": False,
            }
        )
    return {"anyOf": options}


FINAL_ONLY = action_schema({})


def render_prompt(
    spec: AgentSpec,
    tools: dict[str, Tool],
    text: str,
    steps: list[dict[str, Any]],
    memory: str = "",
) -> str:
    lines = [spec.instructions, "", "Tools (answer with one JSON action per turn):"]
    for tool in tools.values():
        args = json.dumps(tool.parameters.get("properties", {}))
        lines.append(f'- {{"tool": "{tool.name}", "arguments": {args}}}: {tool.description}')
    lines.append(f'- {{"tool": "{FINAL}", "answer": "..."}}: reply to the user and stop.')
    if memory:
        lines += ["", "Earlier in this conversation:", memory]
    lines += ["", f"User: {text}"]
    for step in steps:
        if step["type"] == "tool":
            lines.append(
                f"Action: {json.dumps({'tool': step['tool'], 'arguments': step['arguments']})}"
            )
            lines.append(f"Result: {json.dumps(step['result'])[:1500]}")
        elif step["type"] in ("error", "repeat"):
            lines.append(f"Note: {step['message']}")
    lines.append("Action:")
    return "\n".join(lines)
