"""``ExtractionService``: fields out of texts by a JSON Schema (patterns first, the LLM for the
rest, every value checked; see :mod:`engine.tasks.extract`)."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from engine.tasks.common import check_inputs
from engine.tasks.extract import Extraction, check_schema, extract

if TYPE_CHECKING:
    from engine.tasks.llm import TaskLLM, TaskModels
    from engine.tasks.usage import TaskUsage


class ExtractionService:
    def __init__(self, llm: TaskLLM, usage: TaskUsage, models: TaskModels | None = None) -> None:
        """``models``: the LLMs a request may pick by ``model`` (None: only ``llm``)."""
        self._llm = llm
        self._usage = usage
        self._models = models

    async def extract(
        self,
        tenant: str,
        inputs: list[str],
        schema: Any,
        instructions: str | None = None,
        model: str | None = None,
    ) -> list[Extraction]:
        """``model``: the generation model to run on (any installed one, loaded by the pool);
        None: ``[tasks] extract_model`` or the server's."""
        check_inputs(inputs)
        schema = check_schema(schema)
        llm = self._llm
        if model is not None and self._models is not None:
            llm = self._models.get(model)
            model = llm.model
        started = time.perf_counter()
        results = list(
            await asyncio.gather(*(extract(llm, t, schema, instructions) for t in inputs))
        )
        await self._usage.record(
            tenant,
            "extract",
            model=model,
            prompt_tokens=int(sum(r.usage.get("prompt_tokens", 0) for r in results)),
            completion_tokens=int(sum(r.usage.get("completion_tokens", 0) for r in results)),
            items=len(inputs),
            seconds=time.perf_counter() - started,
        )
        return results
