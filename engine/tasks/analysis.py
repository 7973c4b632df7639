"""``AnalysisService``: background analysis jobs over a stored document (summary, entities,
dates...; :mod:`engine.tasks.analyze`), cached by the document's content hash."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from engine.errors import InvalidRequestError
from engine.tasks.analyze import TASKS, Analyzer, content_hash

if TYPE_CHECKING:
    from engine.documents import DocumentService
    from engine.job_service import JobService
    from engine.storage import Document, Job
    from engine.tasks.llm import TaskLLM
    from engine.tasks.store import TaskRepo
    from engine.tasks.usage import TaskUsage

logger = logging.getLogger(__name__)


class AnalysisService:
    def __init__(
        self,
        repo: TaskRepo,
        jobs: JobService,
        documents: DocumentService,
        llm: TaskLLM,
        usage: TaskUsage,
    ) -> None:
        self._repo = repo
        self._jobs = jobs
        self._documents = documents
        self._llm = llm
        self._usage = usage

    async def analyze(
        self, tenant: str, collection: str, doc_id: str, tasks: Sequence[str] | None = None
    ) -> Job:
        """Start an analysis job for a document."""
        tasks = list(tasks or TASKS)
        bad = [t for t in tasks if t not in TASKS]
        if bad or not tasks:
            raise InvalidRequestError(f"tasks: each one of {list(TASKS)}", param="tasks")
        doc = await self._documents.get_document(tenant, collection, doc_id)
        chunks = await self._documents.document_chunks(tenant, collection, doc_id)
        parts = [c.text for c in chunks]
        if not parts:
            raise InvalidRequestError(
                f"document {doc_id!r} has no text yet (status {doc.status})", param="id"
            )
        analyzer = Analyzer(self._llm)
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
            repo = self._repo
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
                    await self._usage.record(
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
        doc = await self._documents.get_document(tenant, collection, doc_id)
        out: dict[str, Any] = {}
        for task in TASKS:
            hit = await asyncio.to_thread(
                self._repo.cached_analysis, tenant, doc.content_hash, task
            )
            if hit is not None:
                out[task] = hit
        return {"document_id": doc.public_id, "content_hash": doc.content_hash, "results": out}
