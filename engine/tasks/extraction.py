"""``ExtractionService``: fields out of texts by a JSON Schema (patterns first, the LLM for the
rest, every value checked; see :mod:`engine.tasks.extract`)."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from engine.tasks.common import check_inputs
from engine.tasks.extract import Extraction, check_schema, extract

if TYPE_CHECKING:
    from engine.tasks.llm import TaskLLM
    from engine.tasks.usage import TaskUsage


class ExtractionService:
    def __init__(self, llm: TaskLLM, usage: TaskUsage) -> None:
        self._llm = llm
        self._usage = usage

    async def extract(
        self, tenant: str, inputs: list[str], schema: Any, instructions: str | None = None
    ) -> list[Extraction]:
        check_inputs(inputs)
        schema = check_schema(schema)
        started = time.perf_counter()
        results = list(
            await asyncio.gather(*(extract(self._llm, t, schema, instructions) for t in inputs))
        )
        await self._usage.record(
            tenant,
            "extract",
            prompt_tokens=int(sum(r.usage.get("prompt_tokens", 0) for r in results)),
            completion_tokens=int(sum(r.usage.get("completion_tokens", 0) for r in results)),
            items=len(inputs),
            seconds=time.perf_counter() - started,
        )
        return results
