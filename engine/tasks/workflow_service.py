"""``WorkflowService``: a tenant's workflows (stored, or the built-in seeds) and their runs.

A run classifies each item (a stored classifier, one trained from the workflow's inline
examples, or label descriptions) and extracts its fields, then persists input, output and raw
model output (:mod:`engine.tasks.workflows` holds the steps themselves).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from engine.errors import InvalidRequestError, NotFoundError
from engine.lru import LRU
from engine.storage.tenants import check_name
from engine.tasks import classify as cls
from engine.tasks.common import MAX_BATCH, embed
from engine.tasks.extract import Extraction, extract
from engine.tasks.store import new_id
from engine.tasks.workflows import (
    RunResult,
    WorkflowContext,
    WorkflowSpec,
    check_input,
    parse_workflow,
    run_workflow,
    seed_workflows,
)

if TYPE_CHECKING:
    from engine.engine import Engine
    from engine.tasks.classifiers import ClassifierService
    from engine.tasks.llm import TaskLLM, TaskModels
    from engine.tasks.store import TaskRepo
    from engine.tasks.usage import TaskUsage

# Classifiers trained from a workflow's inline examples, kept loaded (bounded).
CACHED_INLINE_CLASSIFIERS = 32


class WorkflowService:
    def __init__(
        self,
        engine: Engine,
        repo: TaskRepo,
        classifiers: ClassifierService,
        llm: TaskLLM,
        usage: TaskUsage,
        models: TaskModels | None = None,
    ) -> None:
        """``models``: the LLMs a workflow or a run may name by ``model`` (None: only ``llm``)."""
        self._engine = engine
        self._repo = repo
        self._classifiers = classifiers
        self._llm = llm
        self._usage = usage
        self._models = models
        self.seeds: dict[str, WorkflowSpec] = seed_workflows()
        # Workflow examples hash (tenant included) -> classifier trained from them.
        self._inline: LRU[str, cls.Classifier] = LRU(CACHED_INLINE_CLASSIFIERS)

    async def workflow(self, tenant: str, name: str) -> WorkflowSpec:
        stored = await asyncio.to_thread(self._repo.get_workflow, tenant, name)
        if stored is not None:
            return parse_workflow(stored, name)
        if name in self.seeds:
            return self.seeds[name]
        raise NotFoundError(f"workflow {name!r} not found", param="name")

    async def list_workflows(self, tenant: str) -> list[dict[str, Any]]:
        own = await asyncio.to_thread(self._repo.list_workflows, tenant)
        names = sorted(set(own) | set(self.seeds))
        out = []
        for name in names:
            spec = await self.workflow(tenant, name)
            out.append({**spec.to_dict(), "builtin": name not in own})
        return out

    async def save_workflow(self, tenant: str, definition: dict[str, Any]) -> dict[str, Any]:
        spec = parse_workflow(definition)
        check_name(spec.name, "name")
        if spec.model is not None and self._models is not None:
            self._models.get(spec.model)  # 404 naming the installed models
        if spec.classify.classifier:
            # 404 if it is not there
            await self._classifiers.load(tenant, spec.classify.classifier, None)
        version = await asyncio.to_thread(
            self._repo.save_workflow, tenant, spec.name, spec.to_dict()
        )
        await asyncio.to_thread(
            self._repo.audit, tenant, "workflow.save", spec.name, None, {"version": version}
        )
        return {**spec.to_dict(), "version": version, "builtin": False}

    async def delete_workflow(self, tenant: str, name: str) -> dict[str, Any]:
        if not await asyncio.to_thread(self._repo.delete_workflow, tenant, name):
            raise NotFoundError(f"workflow {name!r} not found", param="name")
        return {"name": name, "deleted": True}

    def forget_tenant(self, tenant: str) -> None:
        """Drop the tenant's inline classifiers from memory (keys start with ``<tenant>:``)."""
        for key in [k for k in self._inline if k.startswith(f"{tenant}:")]:
            del self._inline[key]

    async def _workflow_classifier(self, tenant: str, spec: WorkflowSpec) -> cls.Classifier:
        step = spec.classify
        if step.classifier:
            return await self._classifiers.load(tenant, step.classifier, None)
        if not step.examples:
            return cls.llm_classifier(spec.name, list(step.labels), step.labels, rules=step.rules)
        # Per tenant: another tenant's training (and its timing) is never reused.
        classify = json.dumps(spec.to_dict()["classify"], sort_keys=True)
        key = hashlib.sha256(f"{tenant}\n{classify}".encode())
        digest = f"{tenant}:{key.hexdigest()}"
        if digest not in self._inline:
            embeddings = await embed(self._engine, [e.text for e in step.examples])
            self._inline[digest] = await asyncio.to_thread(
                cls.train,
                spec.name,
                step.examples,
                embeddings,
                descriptions=step.labels,
                rules=step.rules,
                encoder=self._engine.embedding_card.id,
            )
        return self._inline[digest]

    async def run_workflow(
        self,
        tenant: str,
        name: str,
        items: Sequence[object],
        request_id: str | None,
        model: str | None = None,
    ) -> list[dict[str, Any]]:
        """``model``: the generation model of its LLM steps (extraction, an LLM classifier) for
        this run; else the workflow's ``model``, else ``[tasks] extract_model``, else the
        server's."""
        spec = await self.workflow(tenant, name)
        if not items or len(items) > MAX_BATCH:
            raise InvalidRequestError(f"input: 1 to {MAX_BATCH} items", param="input")
        checked = [check_input(spec, item, f"input[{i}]") for i, item in enumerate(items)]
        chosen = model or spec.model
        llm, step_llm = self._llm, None
        if chosen is not None and self._models is not None:
            llm = step_llm = self._models.get(chosen)
            chosen = step_llm.model
        classifier = await self._workflow_classifier(tenant, spec)
        usage = {"prompt_tokens": 0, "completion_tokens": 0}

        async def classify_one(spec: WorkflowSpec, text: str) -> cls.Prediction:
            predictions, tokens = await self._classifiers.predict(
                classifier, [text], None, llm=step_llm
            )
            usage["prompt_tokens"] += tokens
            return predictions[0]

        async def extract_one(spec: WorkflowSpec, text: str, use_llm: bool) -> Extraction:
            result = await extract(llm if use_llm else None, text, spec.schema, spec.instructions)
            usage["prompt_tokens"] += int(result.usage.get("prompt_tokens", 0))
            usage["completion_tokens"] += int(result.usage.get("completion_tokens", 0))
            return result

        ctx = WorkflowContext(classify_one, extract_one)
        started = time.perf_counter()
        results = await asyncio.gather(
            *(run_workflow(spec, item, ctx, new_id("run")) for item in checked)
        )
        for item, result in zip(checked, results, strict=True):
            await self._persist(tenant, spec, item, result, request_id)
        await self._usage.record(
            tenant,
            f"workflow:{name}",
            model=chosen,
            items=len(checked),
            seconds=time.perf_counter() - started,
            **usage,
        )
        return [r.response for r in results]

    async def _persist(
        self,
        tenant: str,
        spec: WorkflowSpec,
        item: dict[str, Any],
        result: RunResult,
        request_id: str | None,
    ) -> None:
        output = {
            **result.response,
            "extraction": {k: v.to_dict() for k, v in result.extraction.fields.items()},
        }
        await asyncio.to_thread(
            self._repo.record_run,
            tenant,
            spec.name,
            result.response["id"],
            request_id,
            item,
            output,
            result.raw_output,
            spec.persist_table,
        )

    async def results(
        self, tenant: str, name: str, limit: int = 50, offset: int = 0
    ) -> list[dict[str, Any]]:
        await self.workflow(tenant, name)
        return await asyncio.to_thread(self._repo.runs, tenant, name, limit, offset)

    async def result(self, tenant: str, run_id: str) -> dict[str, Any]:
        return await asyncio.to_thread(self._repo.run, tenant, run_id)
