"""Task pipelines: classification, extraction, workflows, document analysis, usage.

``await attach(engine)`` creates the :class:`~engine.tasks.service.TaskService` over the engine and
its DocumentService, starts it (its DuckDB tables migrate) and registers it as
``engine.services["tasks"]``; the engine closes it with its other services.
"""

from __future__ import annotations

import asyncio
from typing import Any

_lock = asyncio.Lock()


async def attach(engine: Any) -> Any:
    """The engine's TaskService, created and started on first use (idempotent)."""
    from engine.errors import NotReadyError
    from engine.tasks.service import TaskService

    found = engine.services.get("tasks")
    if found is not None:
        return found
    async with _lock:
        found = engine.services.get("tasks")
        if found is not None:
            return found
        documents = engine.services.get("documents")
        if documents is None or getattr(documents, "db", None) is None:
            raise NotReadyError("Hearth is starting: the document store is not open yet")
        service = TaskService(engine, documents)
        await service.start()
        engine.services["tasks"] = service
        return service
