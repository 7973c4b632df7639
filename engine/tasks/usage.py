"""``TaskUsage``: the usage ledger of the task services, and the caller's usage report.

Every task call records its figures twice: in the ``tasks`` usage table (per task) and in the
server-wide ledger (per day and model, kind ``task:<name>``); its tokens are charged to the
tenant's limits.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

    from engine.engine import Engine
    from engine.limits import LimitService
    from engine.storage import Database
    from engine.tasks.store import TaskRepo


class TaskUsage:
    def __init__(
        self,
        engine: Engine,
        db: Database,
        repo: TaskRepo,
        limits: LimitService | None = None,
        models: Mapping[str, str] | None = None,
    ) -> None:
        self._engine = engine
        # The model each task runs on ("extract", "analyze", ...; else the server's).
        self._models = dict(models or {})
        self._db = db
        self._repo = repo
        self._limits = limits  # the tenants' token limits: task tokens are charged to them

    async def record(
        self, tenant: str, task: str, model: str | None = None, **figures: Any
    ) -> None:
        """Record one call's figures (prompt_tokens, completion_tokens, items, seconds);
        ``model``: the one that served when the request chose it (else the task's)."""
        await asyncio.to_thread(self._repo.record_usage, tenant, task, **figures)
        # The ledger of every route, by day and the model that served.
        model = model or self._models.get(task.split(":")[0], self._engine.card.id)
        await asyncio.to_thread(
            self._db.usage.record, tenant, f"task:{task}", model=model, **figures
        )
        if self._limits is not None:  # the tenant's tokens per minute and per day
            used = figures.get("prompt_tokens", 0) + figures.get("completion_tokens", 0)
            self._limits.charge(tenant, int(used))

    async def report(self, tenant: str) -> dict[str, Any]:
        """The tenant's usage: per task (``tasks``) and per kind of every other route
        (``other``)."""
        tasks = await asyncio.to_thread(self._repo.usage, tenant)
        other = await asyncio.to_thread(self._db.usage.totals, tenant)
        return {"tenant": tenant, "tasks": tasks, "other": other}
