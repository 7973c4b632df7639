"""``ClassifierService``: train, store, version and run a tenant's classifiers.

A classifier is trained from labelled examples (embeddings + a linear head) or defined by label
descriptions (the LLM scores each label). Sets over ``TRAIN_JOB_THRESHOLD`` examples train as a
background job. Another tenant's classifier answers 404 like a missing one. Blocking work
(DuckDB, training) runs in threads.
"""

from __future__ import annotations

import asyncio
import csv
import io
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.errors import InvalidRequestError
from engine.lru import LRU
from engine.storage.tenants import check_name
from engine.tasks import classify as cls
from engine.tasks.common import check_inputs, embed
from models.cards import get_card

if TYPE_CHECKING:
    from engine.engine import Engine
    from engine.job_service import JobService
    from engine.tasks.llm import TaskLLM
    from engine.tasks.store import TaskRepo
    from engine.tasks.usage import TaskUsage

#: Training sets larger than this run as a background job (202 + job id).
TRAIN_JOB_THRESHOLD = 2000
# Stored classifiers kept loaded, bounded: a tenant with many costs reloads, not memory.
CACHED_CLASSIFIERS = 64
MAX_EXAMPLES = 50_000


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


class ClassifierService:
    def __init__(
        self, engine: Engine, repo: TaskRepo, jobs: JobService, llm: TaskLLM, usage: TaskUsage
    ) -> None:
        self._engine = engine
        self._repo = repo
        self._jobs = jobs
        self._llm = llm
        self._usage = usage
        self._classifiers: LRU[tuple[str, str, int], cls.Classifier] = LRU(CACHED_CLASSIFIERS)

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
            encoder = spec.encoder or self._engine.embedding_card.id
            embeddings = await embed(self._engine, [e.text for e in spec.examples], encoder)
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
            self._repo.save_classifier,
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
        await self._usage.record(
            tenant,
            "classifier_train",
            items=len(spec.examples),
            seconds=time.perf_counter() - started,
        )
        await asyncio.to_thread(
            self._repo.audit,
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
        rows = await asyncio.to_thread(self._repo.list_classifiers, tenant)
        return [r.to_dict() for r in rows]

    async def get_classifier(self, tenant: str, name: str) -> dict[str, Any]:
        repo = self._repo
        row = await asyncio.to_thread(repo.get_classifier, tenant, name)
        versions = await asyncio.to_thread(repo.classifier_versions, tenant, name)
        model = await self.load(tenant, name, None)
        return {
            **row.to_dict(),
            "descriptions": model.descriptions,
            "rules": [{"label": r.label, "pattern": r.pattern} for r in model.rules],
            "versions": [v.version for v in versions],
        }

    async def delete_classifier(self, tenant: str, name: str) -> dict[str, Any]:
        count = await asyncio.to_thread(self._repo.delete_classifier, tenant, name)
        for key in [k for k in self._classifiers if k[0] == tenant and k[1] == name]:
            del self._classifiers[key]
        await asyncio.to_thread(self._repo.audit, tenant, "classifier.delete", name)
        return {"name": name, "deleted": True, "versions": count}

    def forget_tenant(self, tenant: str) -> None:
        """Drop the tenant's trained classifiers from memory."""
        for key in [k for k in self._classifiers if k[0] == tenant]:
            del self._classifiers[key]

    async def load(self, tenant: str, name: str, version: int | None) -> cls.Classifier:
        """A stored classifier (the latest version when ``version`` is None); 404 if missing."""
        repo = self._repo
        row = await asyncio.to_thread(repo.get_classifier, tenant, name, version)
        key = (tenant, row.name, row.version)
        if key not in self._classifiers:
            blob = await asyncio.to_thread(repo.classifier_blob, tenant, row.name, row.version)
            self._classifiers[key] = cls.Classifier.from_bytes(blob)
        return self._classifiers[key]

    async def predict(
        self,
        model: cls.Classifier,
        texts: list[str],
        top_k: int | None,
        llm: TaskLLM | None = None,
    ) -> tuple[list[cls.Prediction], int]:
        """Predictions and the LLM prompt tokens spent (0 for embedding classifiers). ``llm``:
        the generation model of an LLM classifier for this call (default: the classify model)."""
        if model.method == "llm":
            probs, tokens = await cls.llm_probabilities(
                llm or self._llm, texts, model.labels, model.descriptions
            )
            return model.predict(texts, probs, top_k), tokens
        embeddings = await embed(self._engine, texts, model.encoder)
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
        check_inputs(inputs)
        if top_k is not None and top_k < 1:
            raise InvalidRequestError("top_k must be at least 1", param="top_k")
        started = time.perf_counter()
        model = await self.load(tenant, name, version)
        predictions, tokens = await self.predict(model, inputs, top_k)
        await self._usage.record(
            tenant,
            "classify",
            prompt_tokens=tokens,
            items=len(inputs),
            seconds=time.perf_counter() - started,
        )
        return [p.to_dict() for p in predictions]
