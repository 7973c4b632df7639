"""``DocumentService``: a tenant's collections and documents — create, list, delete, and ingest
(validated now, 4xx; parsed, chunked, embedded and indexed in a background job). Every method
takes the tenant id first; the server takes it from the API key, never from the request body, and
an id of another tenant answers 404 like a missing one. Blocking work (DuckDB, FAISS, parsing)
runs in threads.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from engine.errors import InvalidRequestError
from engine.ingest.chunker import Chunker
from engine.ingest.extract import Limits, sniff
from engine.ingest.inputs import DocumentInput
from engine.ingest.pipeline import Ingestor, ItemResult
from engine.lru import LRU
from engine.storage import Chunk, Collection, Database, Document, Job

if TYPE_CHECKING:
    from configs import Settings
    from engine.embeddings import TextEmbedder
    from engine.job_service import JobService
    from engine.limits import LimitService
    from engine.retrieval.service import RetrievalService

log = logging.getLogger(__name__)

CACHED_CHUNKERS = 16  # one per (chunk_tokens, chunk_overlap) in use

__all__ = ["DocumentInput", "DocumentService"]


class DocumentService:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        retrieval: RetrievalService,
        jobs: JobService,
        embedder: TextEmbedder,
        limit_service: LimitService | None = None,
    ) -> None:
        """``limit_service``: the tenants' storage limits, checked before anything is stored."""
        self.settings = settings
        self._limits = limit_service
        self._db = db
        self._index = retrieval.index
        self._jobs = jobs
        self._tokenizer = embedder.tokenizer
        self._chunkers: LRU[tuple[int, int], Chunker] = LRU(CACHED_CHUNKERS)
        ing = settings.ingest
        limits = Limits(
            ing.max_file_bytes, ing.max_pdf_pages, ing.pdf_timeout_s, ing.pdf_memory_mib << 20
        )
        self._ingestor = Ingestor(
            db,
            self._index,
            self._chunker,
            functools.partial(embedder.embed, input_type="document"),
            limits,
            ing.embed_batch,
            embedding_model=settings.embeddings.model,
        )

    @staticmethod
    async def recover(db: Database) -> None:
        """Fail the documents a crash left half-ingested (before any index is opened)."""
        failed = await asyncio.to_thread(db.corpus.fail_interrupted)
        if failed:
            log.warning("marked %d interrupted document(s) as failed", failed)

    def _chunker(self, collection: Collection) -> Chunker:
        key = (collection.chunk_tokens, collection.chunk_overlap)
        if key not in self._chunkers:
            self._chunkers[key] = Chunker(self._tokenizer, *key)
        return self._chunkers[key]

    # ---- collections ----------------------------------------------------------------------

    async def create_collection(
        self,
        tenant: str,
        name: str,
        chunk_tokens: int | None = None,
        chunk_overlap: int | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Collection:
        ing = self.settings.ingest
        tokens = ing.chunk_tokens if chunk_tokens is None else chunk_tokens
        overlap = ing.chunk_overlap if chunk_overlap is None else chunk_overlap
        if not 32 <= tokens <= 256:
            raise InvalidRequestError("chunk_tokens must be in 32..256", param="chunk_tokens")
        if not 0 <= overlap <= tokens // 2:
            raise InvalidRequestError(
                "chunk_overlap must be in 0..chunk_tokens/2", param="chunk_overlap"
            )
        if self._limits is not None:
            await self._limits.check_storage(tenant, new_collections=1)
        col = await asyncio.to_thread(
            self._db.corpus.create_collection, tenant, name, tokens, overlap, metadata
        )
        self._index.create(col.id)
        return col

    async def get_collection(self, tenant: str, name: str) -> Collection:
        return await asyncio.to_thread(self._db.corpus.get_collection, tenant, name)

    async def list_collections(self, tenant: str) -> list[Collection]:
        return await asyncio.to_thread(self._db.corpus.list_collections, tenant)

    async def collection_stats(self, collection: Collection) -> dict[str, Any]:
        stats = await asyncio.to_thread(self._db.corpus.collection_stats, collection.id)
        return {**stats, "index": self._index.stats(collection.id)}

    async def delete_collection(self, tenant: str, name: str) -> None:
        col = await self.get_collection(tenant, name)

        def drop() -> None:
            with self._index.writing():
                self._db.corpus.delete_collection(col)
                self._index.drop(col.id)

        await asyncio.to_thread(drop)

    # ---- documents ------------------------------------------------------------------------

    async def submit(self, tenant: str, collection: str, items: Sequence[DocumentInput]) -> Job:
        """Validate the inputs now (4xx), then ingest them in a background job."""
        col = await self.get_collection(tenant, collection)
        self._validate(items)
        if self._limits is not None:
            await self._limits.check_storage(
                tenant,
                new_bytes=sum(item.size for item in items),
                new_documents=len(items),
            )
        job = await self._jobs.create(tenant, "ingest", col.id, len(items))
        self._jobs.submit(job, lambda report: self._ingest_all(col, list(items), job, report))
        return job

    def _validate(self, items: Sequence[DocumentInput]) -> None:
        if not items:
            raise InvalidRequestError("no documents given", param="documents")
        if len(items) > self.settings.ingest.max_documents:
            raise InvalidRequestError(
                f"at most {self.settings.ingest.max_documents} documents per request",
                param="documents",
            )
        seen: set[str] = set()
        for i, item in enumerate(items):
            where = f"documents[{i}]"
            if item.client_id is not None:
                if not item.client_id or len(item.client_id) > 256:
                    raise InvalidRequestError("id must be 1-256 characters", param=f"{where}.id")
                if item.client_id in seen:
                    raise InvalidRequestError(
                        f"id {item.client_id!r} appears twice", param=f"{where}.id"
                    )
                seen.add(item.client_id)
            if item.data is not None:
                sniff(item.data[:8192], item.filename)
                if len(item.data) > self.settings.ingest.max_file_bytes:
                    raise InvalidRequestError(
                        f"file is larger than {self.settings.ingest.max_file_bytes} bytes",
                        param="file",
                    )
            elif not (item.text or "").strip():
                raise InvalidRequestError("text must not be empty", param=f"{where}.text")

    async def _ingest_all(
        self,
        col: Collection,
        items: list[DocumentInput],
        job: Job,
        report: Callable[..., Awaitable[None]],
    ) -> list[dict[str, Any]]:
        results: list[ItemResult] = []
        counts = {"done": 0, "failed": 0, "skipped": 0}
        for i, item in enumerate(items):
            result = await self._ingestor.ingest(col, item, i, job.id)
            results.append(result)
            key = {"failed": "failed", "unchanged": "skipped"}.get(result.outcome, "done")
            counts[key] += 1
            await report(**counts)
        await asyncio.to_thread(self._index.save, col.id)
        return [r.as_dict() for r in results]

    async def get_document(self, tenant: str, collection: str, doc_id: str) -> Document:
        col = await self.get_collection(tenant, collection)
        return await asyncio.to_thread(self._db.corpus.get_document, col, doc_id)

    async def list_documents(
        self, tenant: str, collection: str, limit: int = 100, offset: int = 0
    ) -> list[Document]:
        col = await self.get_collection(tenant, collection)
        return await asyncio.to_thread(self._db.corpus.list_documents, col, limit, offset)

    async def document_chunks(self, tenant: str, collection: str, doc_id: str) -> list[Chunk]:
        doc = await self.get_document(tenant, collection, doc_id)
        rows = await asyncio.to_thread(
            self._db.store.fetchall,
            "SELECT id FROM chunks WHERE document_id = ? ORDER BY ord",
            [doc.id],
        )
        chunks = await asyncio.to_thread(self._db.corpus.chunks, [r[0] for r in rows])
        return [chunks[r[0]] for r in rows]

    async def delete_document(self, tenant: str, collection: str, doc_id: str) -> Document:
        doc = await self.get_document(tenant, collection, doc_id)
        await asyncio.to_thread(self._ingestor.delete, doc)
        await asyncio.to_thread(self._index.save, doc.collection_id)
        return doc
