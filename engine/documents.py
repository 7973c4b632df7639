"""``DocumentService``: a tenant's collections and documents — create, list, delete, and ingest
(validated now, 4xx; parsed, chunked, embedded and indexed in a background job). Every method
takes the tenant id first; the server takes it from the API key, never from the request body, and
an id of another tenant answers 404 like a missing one. Blocking work (DuckDB, FAISS, parsing)
runs in threads.
"""

from __future__ import annotations

import asyncio
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
    import numpy as np

    from configs import Settings
    from engine.embeddings import EmbedderSet
    from engine.job_service import JobService
    from engine.jobs.workers import JobContext
    from engine.limits import LimitService
    from engine.retrieval.service import RetrievalService

log = logging.getLogger(__name__)

#: The durable job kind that moves a collection to another embedding model.
REEMBED_JOB = "reembed_collection"
#: Embed-then-swap rounds before giving up while documents keep arriving.
REEMBED_ROUNDS = 5

CACHED_CHUNKERS = 16  # one per (chunk_tokens, chunk_overlap) in use

__all__ = ["DocumentInput", "DocumentService"]


class DocumentService:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        retrieval: RetrievalService,
        jobs: JobService,
        embedders: EmbedderSet,
        limit_service: LimitService | None = None,
    ) -> None:
        """``limit_service``: the tenants' storage limits, checked before anything is stored.
        ``embedders``: each collection embeds with the model it records (the server's unless it
        was created with or re-embedded into another)."""
        embedder = embedders.default
        self._embedders = embedders
        jobs.register(REEMBED_JOB, self._reembed_job)
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
            self._embed_passages,
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
        embedding_model: str | None = None,
    ) -> Collection:
        """``embedding_model``: the embedding card its passages and queries are embedded with
        (default: the server's); it is loaded now, so a model that cannot load fails here."""
        ing = self.settings.ingest
        tokens = ing.chunk_tokens if chunk_tokens is None else chunk_tokens
        overlap = ing.chunk_overlap if chunk_overlap is None else chunk_overlap
        if not 32 <= tokens <= 256:
            raise InvalidRequestError("chunk_tokens must be in 32..256", param="chunk_tokens")
        if not 0 <= overlap <= tokens // 2:
            raise InvalidRequestError(
                "chunk_overlap must be in 0..chunk_tokens/2", param="chunk_overlap"
            )
        model = await self._embedding_model(embedding_model, "embedding_model")
        if self._limits is not None:
            await self._limits.check_storage(tenant, new_collections=1)
        col = await asyncio.to_thread(
            self._db.corpus.create_collection, tenant, name, tokens, overlap, metadata, model
        )
        self._index.create(col.id)
        return col

    async def _embedding_model(self, model: str | None, param: str) -> str:
        """The embedding card id ``model`` names (None: the server's), loaded: 400 naming the
        embedding cards for an id that is not one."""
        if model is None or model == self._embedders.default_id:
            return self._embedders.default_id
        from models import get_card

        try:
            get_card(model, "embedding", data_dir=self.settings.data_dir)
        except KeyError as exc:
            raise InvalidRequestError(exc.args[0], param=param, code="model_not_found") from None
        await self._embedders.get(model)
        return model

    async def _embed_passages(self, texts: list[str], collection: Collection) -> np.ndarray:
        embedder = await self._embedders.get(collection.embedding_model)
        return await embedder.embed(texts, input_type="document")

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

    # ---- re-embedding ---------------------------------------------------------------------

    async def reembed(self, tenant: str, name: str, model: str) -> Job:
        """Start a durable job that re-embeds every chunk of the collection with ``model`` and
        then switches the collection to it (searches use the old vectors until then)."""
        col = await self.get_collection(tenant, name)
        if not isinstance(model, str) or not model:
            raise InvalidRequestError("model: an embedding model id", param="model")
        model = await self._embedding_model(model, "model")
        if model == col.embedding_model:
            raise InvalidRequestError(
                f"collection {name!r} is already embedded with {model!r}", param="model"
            )
        payload = {"collection_id": col.id, "collection": name, "model": model}
        return await self._jobs.enqueue(tenant, REEMBED_JOB, payload, max_attempts=3)

    async def _reembed_job(self, ctx: JobContext) -> dict[str, Any]:
        """Embed, in batches committed to a staging table (a restarted attempt resumes after the
        last one), every chunk the job has not embedded yet; then, holding the index writer
        (no ingestion commits meanwhile), swap the vectors in and rebuild the dense index. Chunks
        added while it ran are embedded in a further round before the swap."""
        p = ctx.payload
        col_id, model = str(p["collection_id"]), str(p["model"])
        cols = await asyncio.to_thread(self._db.corpus.list_collections, ctx.job.tenant_id)
        col = next((c for c in cols if c.id == col_id), None)
        if col is None:
            return {"collection": p.get("collection"), "model": model, "outcome": "deleted"}
        embedder = await self._embedders.get(model)
        total = max(1, (await self.collection_stats(col))["chunks"])
        batch = max(1, self.settings.ingest.embed_batch)
        for _round in range(REEMBED_ROUNDS):
            while True:
                ids, texts = await asyncio.to_thread(
                    self._db.corpus.unstaged_chunks, col.id, ctx.job.id, batch
                )
                if not len(ids):
                    break
                vectors = await embedder.embed(texts, input_type="document")
                await asyncio.to_thread(
                    self._db.corpus.stage_vectors, col.id, ctx.job.id, ids, vectors
                )
                done = await asyncio.to_thread(self._db.corpus.staged_count, ctx.job.id)
                await ctx.progress(min(99, done * 100 // total), "embedding")
            if await asyncio.to_thread(self._swap, col, ctx.job.id, model):
                chunks = (await self.collection_stats(col))["chunks"]
                log.info("collection %s re-embedded with %s (%d chunks)", col.id, model, chunks)
                return {"collection": col.name, "model": model, "chunks": chunks,
                        "dim": int(embedder.dim)}  # fmt: skip
        raise RuntimeError(f"documents kept arriving for {REEMBED_ROUNDS} rounds; retry later")

    def _swap(self, col: Collection, job_id: str, model: str) -> bool:
        with self._index.writing(col.id):
            if not self._db.corpus.swap_vectors(col, job_id, model):
                return False
            self._index.reload(col.id)
            self._index.save(col.id)
        return True

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
