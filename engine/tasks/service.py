"""``TaskService``: the one facade the server calls for classifiers, extraction, workflows,
document analysis and usage. Every method takes the tenant id first; another tenant's classifier,
workflow, result or job answers 404 like a missing one.

Its dependencies are given by the composition root (:mod:`engine.app`): the engine (generation,
embeddings), the database (its tables are registered as migrations of module ``tasks``,
:mod:`engine.tasks.store`, applied by :meth:`TaskService.open`), the job service (training and
analysis jobs) and the document service (the documents analysed). Blocking work (DuckDB,
training) runs in threads.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.errors import InvalidRequestError, NotFoundError
from engine.lru import LRU
from engine.storage.tenants import check_name
from engine.tasks import classify as cls
from engine.tasks.analyze import TASKS, Analyzer, content_hash, strip_meta
from engine.tasks.extract import Extraction, check_schema, extract
from engine.tasks.llm import EngineLLM, TaskLLM
from engine.tasks.store import TaskRepo, new_id
from engine.tasks.workflows import (
    RunResult,
    WorkflowContext,
    WorkflowSpec,
    check_input,
    parse_workflow,
    run_workflow,
    seed_workflows,
)
from models.cards import get_card

if TYPE_CHECKING:
    from engine.documents import DocumentService
    from engine.engine import Engine
    from engine.job_service import JobService
    from engine.limits import LimitService
    from engine.storage import Database, Document, Job

logger = logging.getLogger(__name__)

#: Training sets larger than this run as a background job (202 + job id).
TRAIN_JOB_THRESHOLD = 2000
# Classifiers kept loaded (stored ones, and ones trained from a workflow's inline examples).
CACHED_CLASSIFIERS = 64
CACHED_INLINE_CLASSIFIERS = 32
MAX_EXAMPLES = 50_000
MAX_BATCH = 64
EMBED_BATCH = 256


@dataclass(frozen=True)
class ClassifierInput:
    name: str
    examples: tuple[cls.Example, ...] = ()
    labels: dict[str, str] | None = None
    abstain_threshold: float | None = None
    rules: tuple[cls.Rule, ...] = ()
    # Embedding model to train on (a card id); None: the server's (HEARTH_EMBEDDINGS_MODEL).
    encoder: str | None = None


def parse_examples_csv(data: bytes) -> list[cls.Example]:
    """CSV with a header: ``text`` and ``label`` (or ``category``) columns; 400 otherwise."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidRequestError("file: the CSV must be UTF-8", param="file") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    fields = [f.strip().lower() for f in reader.fieldnames or []]
    label_col = "label" if "label" in fields else "category" if "category" in fields else None
    if "text" not in fields or label_col is None:
        raise InvalidRequestError(
            "file: the CSV needs a header with 'text' and 'label' (or 'category') columns",
            param="file",
        )
    examples = []
    for row in reader:
        row = {k.strip().lower(): (v or "") for k, v in row.items() if k}
        if row["text"].strip():
            examples.append(cls.Example(row["text"].strip(), row[label_col].strip()))
    return examples


def _check_threshold(value: float | None) -> None:
    if value is not None and not 0.0 <= value <= 1.0:
        raise InvalidRequestError(
            "abstain_threshold must be a number in [0, 1]", param="abstain_threshold"
        )


class TaskService:
    def __init__(
        self,
        engine: Engine,
        db: Database,
        jobs: JobService,
        documents: DocumentService,
        llm: TaskLLM | None = None,
        limits: LimitService | None = None,
    ) -> None:
        """Use :meth:`open` (it migrates the ``tasks`` tables first)."""
        self.engine = engine
        self.documents = documents
        self.limits = limits  # the tenants' token limits: task tokens are charged to them
        self._db = db
        self._jobs = jobs
        self.llm: TaskLLM = llm or EngineLLM(engine)
        self.repo = TaskRepo(db.store)
        self.seeds: dict[str, WorkflowSpec] = seed_workflows()
        # Loaded classifiers, bounded: a tenant with many costs reloads, not memory.
        self._classifiers: LRU[tuple[str, str, int], cls.Classifier] = LRU(CACHED_CLASSIFIERS)
        # Workflow examples hash (tenant included) -> classifier trained from them.
        self._inline: LRU[str, cls.Classifier] = LRU(CACHED_INLINE_CLASSIFIERS)

    @classmethod
    async def open(
        cls,
        engine: Engine,
        db: Database,
        jobs: JobService,
        documents: DocumentService,
        llm: TaskLLM | None = None,
        limits: LimitService | None = None,
    ) -> TaskService:
        """Apply the ``tasks`` migrations to the store, then build the service."""
        await asyncio.to_thread(db.store.migrate)
        return cls(engine, db, jobs, documents, llm, limits)

    def _repo(self) -> TaskRepo:
        return self.repo

    async def _record(self, tenant: str, task: str, **figures: Any) -> None:
        await asyncio.to_thread(self._repo().record_usage, tenant, task, **figures)
        # The ledger of every route, by day and model (tasks run on the server's generator).
        await asyncio.to_thread(
            self._db.usage.record, tenant, f"task:{task}", model=self.engine.card.id, **figures
        )
        if self.limits is not None:  # the tenant's tokens per minute and per day
            used = figures.get("prompt_tokens", 0) + figures.get("completion_tokens", 0)
            self.limits.charge(tenant, int(used))

    async def embed(self, texts: list[str], encoder: str | None = None) -> np.ndarray:
        """Embeddings with ``encoder`` (a card id; None: the server's embedding model)."""
        parts = [
            await self.engine.embed(texts[i : i + EMBED_BATCH], encoder)
            for i in range(0, len(texts), EMBED_BATCH)
        ]
        if parts:
            return np.vstack(parts)
        card = get_card(encoder) if encoder else self.engine.embedding_card
        return np.zeros((0, card.embedding_dim or 0), dtype=np.float32)

    # ---- classifiers ---------------------------------------------------------------------------

    def _validate(self, spec: ClassifierInput) -> None:
        check_name(spec.name, "name")
        _check_threshold(spec.abstain_threshold)
        if spec.encoder is not None:
            try:
                get_card(spec.encoder, "embedding")
            except KeyError as exc:
                raise InvalidRequestError(f"encoder: {exc.args[0]}", param="encoder") from None
            if not spec.examples:
                raise InvalidRequestError(
                    "encoder: only a classifier trained from examples embeds its inputs",
                    param="encoder",
                )
        if len(spec.examples) > MAX_EXAMPLES:
            raise InvalidRequestError(f"examples: at most {MAX_EXAMPLES}", param="examples")
        if spec.labels is not None:
            cls.check_labels(list(spec.labels), "labels")
        if spec.examples:
            found = cls.check_examples(spec.examples)
            unknown = set(found) - set(spec.labels or found)
            if unknown:
                raise InvalidRequestError(
                    f"examples: labels {sorted(unknown)} are not in labels", param="examples"
                )
        elif not spec.labels:
            raise InvalidRequestError(
                "give examples (to train) or labels with descriptions (for the LLM path)",
                param="examples",
            )

    async def create_classifier(self, tenant: str, spec: ClassifierInput) -> dict[str, Any]:
        """Train (or define) and store a new version. Large sets run as a job: the answer is then
        ``{"job": ...}`` and the classifier appears when the job succeeds."""
        self._validate(spec)
        if len(spec.examples) > TRAIN_JOB_THRESHOLD:
            return {"job": await self._train_job(tenant, spec)}
        row = await self._build_and_save(tenant, spec)
        return row

    async def _build_and_save(self, tenant: str, spec: ClassifierInput) -> dict[str, Any]:
        started = time.perf_counter()
        if spec.examples:
            encoder = spec.encoder or self.engine.embedding_card.id
            embeddings = await self.embed([e.text for e in spec.examples], encoder)
            model = await asyncio.to_thread(
                cls.train,
                spec.name,
                spec.examples,
                embeddings,
                descriptions=spec.labels,
                rules=spec.rules,
                abstain_threshold=spec.abstain_threshold,
                encoder=encoder,
            )
        else:
            model = cls.llm_classifier(
                spec.name,
                list(spec.labels or {}),
                spec.labels,
                rules=spec.rules,
                abstain_threshold=spec.abstain_threshold,
            )
        row = await asyncio.to_thread(
            self._repo().save_classifier,
            tenant,
            spec.name,
            model.method,
            list(model.labels),
            model.threshold,
            model.metrics,
            model.to_bytes(),
            model.encoder,
        )
        self._classifiers[(tenant, row.name, row.version)] = model
        await self._record(
            tenant,
            "classifier_train",
            items=len(spec.examples),
            seconds=time.perf_counter() - started,
        )
        await asyncio.to_thread(
            self._repo().audit,
            tenant,
            "classifier.create",
            spec.name,
            None,
            {"version": row.version, "method": model.method},
        )
        return row.to_dict()

    async def _train_job(self, tenant: str, spec: ClassifierInput) -> dict[str, Any]:
        job = await self._jobs.create(tenant, "classifier_train", None, 1)

        async def body(report: Any) -> Any:
            result = await self._build_and_save(tenant, spec)
            await report(done=1, failed=0, skipped=0)
            return result

        self._jobs.submit(job, body)
        return {"id": job.id, "status": job.status}

    async def list_classifiers(self, tenant: str) -> list[dict[str, Any]]:
        rows = await asyncio.to_thread(self._repo().list_classifiers, tenant)
        return [r.to_dict() for r in rows]

    async def get_classifier(self, tenant: str, name: str) -> dict[str, Any]:
        repo = self._repo()
        row = await asyncio.to_thread(repo.get_classifier, tenant, name)
        versions = await asyncio.to_thread(repo.classifier_versions, tenant, name)
        model = await self._load(tenant, name, None)
        return {
            **row.to_dict(),
            "descriptions": model.descriptions,
            "rules": [{"label": r.label, "pattern": r.pattern} for r in model.rules],
            "versions": [v.version for v in versions],
        }

    async def delete_classifier(self, tenant: str, name: str) -> dict[str, Any]:
        count = await asyncio.to_thread(self._repo().delete_classifier, tenant, name)
        for key in [k for k in self._classifiers if k[0] == tenant and k[1] == name]:
            del self._classifiers[key]
        await asyncio.to_thread(self._repo().audit, tenant, "classifier.delete", name)
        return {"name": name, "deleted": True, "versions": count}

    async def _load(self, tenant: str, name: str, version: int | None) -> cls.Classifier:
        repo = self._repo()
        row = await asyncio.to_thread(repo.get_classifier, tenant, name, version)
        key = (tenant, row.name, row.version)
        if key not in self._classifiers:
            blob = await asyncio.to_thread(repo.classifier_blob, tenant, row.name, row.version)
            self._classifiers[key] = cls.Classifier.from_bytes(blob)
        return self._classifiers[key]

    async def predict(
        self, model: cls.Classifier, texts: list[str], top_k: int | None
    ) -> tuple[list[cls.Prediction], int]:
        """Predictions and the LLM prompt tokens spent (0 for embedding classifiers)."""
        if model.method == "llm":
            probs, tokens = await cls.llm_probabilities(
                self.llm, texts, model.labels, model.descriptions
            )
            return model.predict(texts, probs, top_k), tokens
        embeddings = await self.embed(texts, model.encoder)
        probs = await asyncio.to_thread(model.probabilities, texts, embeddings)
        return model.predict(texts, probs, top_k), 0

    async def classify(
        self,
        tenant: str,
        name: str,
        inputs: list[str],
        top_k: int | None = None,
        version: int | None = None,
    ) -> list[dict[str, Any]]:
        _check_inputs(inputs)
        if top_k is not None and top_k < 1:
            raise InvalidRequestError("top_k must be at least 1", param="top_k")
        started = time.perf_counter()
        model = await self._load(tenant, name, version)
        predictions, tokens = await self.predict(model, inputs, top_k)
        await self._record(
            tenant,
            "classify",
            prompt_tokens=tokens,
            items=len(inputs),
            seconds=time.perf_counter() - started,
        )
        return [p.to_dict() for p in predictions]

    # ---- extraction --------------------------------------------------------------------------

    async def extract(
        self, tenant: str, inputs: list[str], schema: Any, instructions: str | None = None
    ) -> list[Extraction]:
        _check_inputs(inputs)
        schema = check_schema(schema)
        started = time.perf_counter()
        results = list(
            await asyncio.gather(*(extract(self.llm, t, schema, instructions) for t in inputs))
        )
        await self._record(
            tenant,
            "extract",
            prompt_tokens=int(sum(r.usage.get("prompt_tokens", 0) for r in results)),
            completion_tokens=int(sum(r.usage.get("completion_tokens", 0) for r in results)),
            items=len(inputs),
            seconds=time.perf_counter() - started,
        )
        return results

    # ---- workflows ---------------------------------------------------------------------------

    async def workflow(self, tenant: str, name: str) -> WorkflowSpec:
        stored = await asyncio.to_thread(self._repo().get_workflow, tenant, name)
        if stored is not None:
            return parse_workflow(stored, name)
        if name in self.seeds:
            return self.seeds[name]
        raise NotFoundError(f"workflow {name!r} not found", param="name")

    async def list_workflows(self, tenant: str) -> list[dict[str, Any]]:
        own = await asyncio.to_thread(self._repo().list_workflows, tenant)
        names = sorted(set(own) | set(self.seeds))
        out = []
        for name in names:
            spec = await self.workflow(tenant, name)
            out.append({**spec.to_dict(), "builtin": name not in own})
        return out

    async def save_workflow(self, tenant: str, definition: dict[str, Any]) -> dict[str, Any]:
        spec = parse_workflow(definition)
        check_name(spec.name, "name")
        if spec.classify.classifier:
            await self._load(tenant, spec.classify.classifier, None)  # 404 if it is not there
        version = await asyncio.to_thread(
            self._repo().save_workflow, tenant, spec.name, spec.to_dict()
        )
        await asyncio.to_thread(
            self._repo().audit, tenant, "workflow.save", spec.name, None, {"version": version}
        )
        return {**spec.to_dict(), "version": version, "builtin": False}

    async def delete_workflow(self, tenant: str, name: str) -> dict[str, Any]:
        if not await asyncio.to_thread(self._repo().delete_workflow, tenant, name):
            raise NotFoundError(f"workflow {name!r} not found", param="name")
        return {"name": name, "deleted": True}

    async def _workflow_classifier(self, tenant: str, spec: WorkflowSpec) -> cls.Classifier:
        step = spec.classify
        if step.classifier:
            return await self._load(tenant, step.classifier, None)
        if not step.examples:
            return cls.llm_classifier(spec.name, list(step.labels), step.labels, rules=step.rules)
        # Per tenant: another tenant's training (and its timing) is never reused.
        classify = json.dumps(spec.to_dict()["classify"], sort_keys=True)
        key = hashlib.sha256(f"{tenant}\n{classify}".encode())
        digest = key.hexdigest()
        if digest not in self._inline:
            embeddings = await self.embed([e.text for e in step.examples])
            self._inline[digest] = await asyncio.to_thread(
                cls.train,
                spec.name,
                step.examples,
                embeddings,
                descriptions=step.labels,
                rules=step.rules,
                encoder=self.engine.embedding_card.id,
            )
        return self._inline[digest]

    async def run_workflow(
        self, tenant: str, name: str, items: Sequence[object], request_id: str | None
    ) -> list[dict[str, Any]]:
        spec = await self.workflow(tenant, name)
        if not items or len(items) > MAX_BATCH:
            raise InvalidRequestError(f"input: 1 to {MAX_BATCH} items", param="input")
        checked = [check_input(spec, item, f"input[{i}]") for i, item in enumerate(items)]
        model = await self._workflow_classifier(tenant, spec)
        usage = {"prompt_tokens": 0, "completion_tokens": 0}

        async def classify_one(spec: WorkflowSpec, text: str) -> cls.Prediction:
            predictions, tokens = await self.predict(model, [text], None)
            usage["prompt_tokens"] += tokens
            return predictions[0]

        async def extract_one(spec: WorkflowSpec, text: str, use_llm: bool) -> Extraction:
            result = await extract(
                self.llm if use_llm else None, text, spec.schema, spec.instructions
            )
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
        await self._record(
            tenant,
            f"workflow:{name}",
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
            self._repo().record_run,
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
        return await asyncio.to_thread(self._repo().runs, tenant, name, limit, offset)

    async def result(self, tenant: str, run_id: str) -> dict[str, Any]:
        return await asyncio.to_thread(self._repo().run, tenant, run_id)

    # ---- document analysis -------------------------------------------------------------------

    async def analyze(
        self, tenant: str, collection: str, doc_id: str, tasks: Sequence[str] | None = None
    ) -> Job:
        """Start an analysis job for a document."""
        tasks = list(tasks or TASKS)
        bad = [t for t in tasks if t not in TASKS]
        if bad or not tasks:
            raise InvalidRequestError(f"tasks: each one of {list(TASKS)}", param="tasks")
        doc = await self.documents.get_document(tenant, collection, doc_id)
        chunks = await self.documents.document_chunks(tenant, collection, doc_id)
        parts = [c.text for c in chunks]
        if not parts:
            raise InvalidRequestError(
                f"document {doc_id!r} has no text yet (status {doc.status})", param="id"
            )
        analyzer = Analyzer(self.llm)
        _, total = analyzer.plan(parts, tasks)
        job = await self._jobs.create(tenant, "analyze", doc.collection_id, total)
        self._jobs.submit(job, self._analysis_body(tenant, doc, parts, tasks, analyzer, total))
        return job

    def _analysis_body(
        self,
        tenant: str,
        doc: Document,
        parts: list[str],
        tasks: list[str],
        analyzer: Analyzer,
        total: int,
    ) -> Any:
        digest = doc.content_hash or content_hash("\n\n".join(parts))

        async def body(report: Any) -> Any:
            started = time.perf_counter()
            repo = self._repo()
            results: dict[str, Any] = {}
            cached = []
            for task in tasks:
                hit = await asyncio.to_thread(repo.cached_analysis, tenant, digest, task)
                if hit is not None:
                    results[task] = hit
                    cached.append(task)
            todo = [t for t in tasks if t not in results]
            if todo:

                async def progress(done: int, _total: int) -> None:
                    await report(done=min(done, total - 1), failed=0, skipped=0)

                analysis = await analyzer.run(parts, todo, progress)
                for task, result in analysis.results.items():
                    await asyncio.to_thread(
                        repo.save_analysis, tenant, digest, task, doc.id, result
                    )
                    results[task] = result
                for task, used in analysis.usage.items():
                    await self._record(
                        tenant,
                        f"analyze:{task}",
                        prompt_tokens=used.prompt_tokens,
                        completion_tokens=used.completion_tokens,
                        items=1,
                        seconds=used.seconds,
                    )
            await report(done=total, failed=0, skipped=0)
            logger.info(
                "analysis of %s: %s in %.1fs (cached: %s)",
                doc.id,
                tasks,
                time.perf_counter() - started,
                cached,
            )
            return {
                "document_id": doc.public_id,
                "content_hash": digest,
                "cached": cached,
                "results": results,
            }

        return body

    async def analysis(self, tenant: str, collection: str, doc_id: str) -> dict[str, Any]:
        """The stored results of a document's analyses (by its current content hash)."""
        doc = await self.documents.get_document(tenant, collection, doc_id)
        out: dict[str, Any] = {}
        for task in TASKS:
            hit = await asyncio.to_thread(
                self._repo().cached_analysis, tenant, doc.content_hash, task
            )
            if hit is not None:
                out[task] = hit
        return {"document_id": doc.public_id, "content_hash": doc.content_hash, "results": out}

    # ---- usage ---------------------------------------------------------------------------------

    async def usage(self, tenant: str) -> dict[str, Any]:
        tasks = await asyncio.to_thread(self._repo().usage, tenant)
        other = await asyncio.to_thread(self._db.usage.totals, tenant)
        return {"tenant": tenant, "tasks": tasks, "other": other}


def _check_inputs(inputs: list[str]) -> None:
    if not inputs or len(inputs) > MAX_BATCH:
        raise InvalidRequestError(f"input: 1 to {MAX_BATCH} strings", param="input")
    for i, text in enumerate(inputs):
        if not isinstance(text, str) or not text.strip():
            raise InvalidRequestError(
                f"input[{i}]: a non-empty string is required", param=f"input[{i}]"
            )


__all__ = ["ClassifierInput", "TaskService", "parse_examples_csv", "strip_meta"]
