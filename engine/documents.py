"""``DocumentService``: the one facade the server calls for tenants, keys, collections, documents,
ingestion jobs, retrieval and RAG. Every method takes the tenant id first; the server takes it from
the API key, never from the request body, and an id of another tenant answers 404 like a missing
one. Blocking work (DuckDB, FAISS, parsing) runs in threads; embeddings go through ``embed``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from configs import Settings
from engine.errors import InvalidRequestError, NotFoundError
from engine.ingest.chunker import Chunker
from engine.ingest.extract import Limits, sniff
from engine.ingest.inputs import DocumentInput
from engine.ingest.jobs import JobRunner
from engine.ingest.pipeline import Ingestor, ItemResult
from engine.retrieval import MODES, DenseParams, Hit, Retriever
from engine.retrieval.device import select_faiss_device
from engine.storage import (
    DEFAULT_TENANT,
    ApiKey,
    ChatMessage,
    Collection,
    Database,
    Document,
    Job,
    Tenant,
    open_store,
)

log = logging.getLogger(__name__)

__all__ = ["DocumentInput", "DocumentService", "RetrievedChunk"]


class EmbedderLike(Protocol):
    tokenizer: object

    async def session_messages(self, tenant: str, session_id: str) -> list[ChatMessage]:
        """A chat session's stored turns, oldest first (404 for another tenant's session)."""
        db, _ = self._ready()
        return await asyncio.to_thread(db.chats.messages, tenant, session_id, 100)

    async def embed(self, texts: list[str]) -> np.ndarray: ...


@dataclass(frozen=True)
class RetrievedChunk:
    """A retrieval hit joined with its chunk and document."""

    document_id: str  # the client's id when given, else Hearth's
    chunk_id: int
    collection: str
    score: float
    dense_score: float
    rank: int
    text: str
    title: str | None
    metadata: dict[str, Any]
    char_start: int
    char_end: int
    page: int | None
    n_tokens: int

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class DocumentService:
    def __init__(
        self,
        settings: Settings,
        embed: Callable[[list[str]], Awaitable[np.ndarray]],
        tokenizer: object,
        dim: int = 384,
    ) -> None:
        self.settings = settings
        self._embed = embed
        self.tokenizer = tokenizer
        self.dim = dim
        self.db: Database | None = None
        self.retriever: Retriever | None = None
        self.jobs: JobRunner | None = None
        self.ingestor: Ingestor | None = None
        self._chunkers: dict[tuple[int, int], Chunker] = {}
        self._has_keys = False
        # Counts the generator's tokens for RAG's context budget (set by the Engine).
        self.count_llm_tokens: Callable[[str], int] | None = None
        self.rag: Any = None  # engine.rag.RagService once started

    @classmethod
    def from_embedder(cls, settings: Settings, embedder: EmbedderLike) -> DocumentService:
        return cls(settings, embedder.embed, embedder.tokenizer)

    # ---- lifecycle ------------------------------------------------------------------------

    @property
    def db_path(self) -> Path:
        path = Path(self.settings.storage.db_file)
        return path if path.is_absolute() else self.settings.data_dir / path

    @property
    def index_dir(self) -> Path:
        return self.settings.data_dir / "indexes"

    async def start(self) -> None:
        """Open DuckDB (StoreLockedError if another process has it), fail what a crash left
        half-done, load or rebuild every index, start the job worker."""
        self.db = await asyncio.to_thread(
            open_store, self.db_path, threads=self.settings.storage.threads
        )
        r = self.settings.retrieval
        params = DenseParams(
            hnsw_threshold=r.hnsw_threshold,
            hnsw_m=r.hnsw_m,
            ef_construction=r.hnsw_ef_construction,
            ef_search=r.hnsw_ef_search,
            use_gpu=select_faiss_device(r.device) == "gpu",
        )
        self.retriever = Retriever(self.db, self.index_dir, params, r.rrf_k, self.dim)
        docs = await asyncio.to_thread(self.db.corpus.fail_interrupted)
        jobs = await asyncio.to_thread(self.db.jobs.fail_interrupted)
        if docs or jobs:
            log.warning("marked %d interrupted document(s), %d job(s) as failed", docs, jobs)
        report = await asyncio.to_thread(self.retriever.open)
        rebuilt = [c for c, how in report.items() if how == "rebuilt"]
        if rebuilt:
            log.warning("rebuilt dense index of %s from the database", ", ".join(rebuilt))
        ing = self.settings.ingest
        limits = Limits(ing.max_file_bytes, ing.max_pdf_pages, ing.pdf_timeout_s)
        self.ingestor = Ingestor(
            self.db, self.retriever, self._chunker, self._embed, limits, ing.embed_batch
        )
        self.jobs = JobRunner(self.db)
        self.jobs.start()
        from engine.rag import RagService  # imports this module

        self.rag = RagService(self, self.count_llm_tokens)
        self._has_keys = await asyncio.to_thread(self.db.tenants.has_keys)

    async def close(self) -> None:
        if self.jobs is not None:
            await self.jobs.close()
        if self.retriever is not None:
            await asyncio.to_thread(self.retriever.save_all)
        if self.db is not None:
            self.db.close()
        self.db = self.retriever = self.jobs = self.ingestor = None

    def _ready(self) -> tuple[Database, Retriever]:
        if self.db is None or self.retriever is None:
            raise RuntimeError("DocumentService is not started")
        return self.db, self.retriever

    def _chunker(self, collection: Collection) -> Chunker:
        key = (collection.chunk_tokens, collection.chunk_overlap)
        if key not in self._chunkers:
            self._chunkers[key] = Chunker(self.tokenizer, *key)
        return self._chunkers[key]

    # ---- tenants and keys -----------------------------------------------------------------

    @property
    def auth_required(self) -> bool:
        """True once any tenant key exists; before that Hearth runs open as the default tenant."""
        return self._has_keys

    async def authenticate(self, key: str) -> str | None:
        db, _ = self._ready()
        return await asyncio.to_thread(db.tenants.authenticate, key)

    async def create_tenant(self, name: str) -> Tenant:
        db, _ = self._ready()
        return await asyncio.to_thread(db.tenants.create, name)

    async def list_tenants(self) -> list[Tenant]:
        db, _ = self._ready()
        return await asyncio.to_thread(db.tenants.list)

    async def create_key(self, tenant: str, name: str | None = None) -> tuple[str, ApiKey]:
        db, _ = self._ready()
        key = await asyncio.to_thread(db.tenants.create_key, tenant, name)
        self._has_keys = True
        return key

    async def list_keys(self, tenant: str | None = None) -> list[ApiKey]:
        db, _ = self._ready()
        return await asyncio.to_thread(db.tenants.list_keys, tenant)

    async def revoke_key(self, key_id: str) -> ApiKey:
        db, _ = self._ready()
        key = await asyncio.to_thread(db.tenants.revoke_key, key_id)
        self._has_keys = await asyncio.to_thread(db.tenants.has_keys)
        return key

    # ---- collections ----------------------------------------------------------------------

    async def create_collection(
        self,
        tenant: str,
        name: str,
        chunk_tokens: int | None = None,
        chunk_overlap: int | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Collection:
        db, retriever = self._ready()
        ing = self.settings.ingest
        tokens = ing.chunk_tokens if chunk_tokens is None else chunk_tokens
        overlap = ing.chunk_overlap if chunk_overlap is None else chunk_overlap
        if not 32 <= tokens <= 256:
            raise InvalidRequestError("chunk_tokens must be in 32..256", param="chunk_tokens")
        if not 0 <= overlap <= tokens // 2:
            raise InvalidRequestError(
                "chunk_overlap must be in 0..chunk_tokens/2", param="chunk_overlap"
            )
        col = await asyncio.to_thread(
            db.corpus.create_collection, tenant, name, tokens, overlap, metadata
        )
        retriever.create(col.id)
        return col

    async def get_collection(self, tenant: str, name: str) -> Collection:
        db, _ = self._ready()
        return await asyncio.to_thread(db.corpus.get_collection, tenant, name)

    async def list_collections(self, tenant: str) -> list[Collection]:
        db, _ = self._ready()
        return await asyncio.to_thread(db.corpus.list_collections, tenant)

    async def collection_stats(self, collection: Collection) -> dict[str, Any]:
        db, retriever = self._ready()
        stats = await asyncio.to_thread(db.corpus.collection_stats, collection.id)
        return {**stats, "index": retriever.stats(collection.id)}

    async def delete_collection(self, tenant: str, name: str) -> None:
        db, retriever = self._ready()
        col = await self.get_collection(tenant, name)

        def drop() -> None:
            with retriever.writing():
                db.corpus.delete_collection(col)
                retriever.drop(col.id)

        await asyncio.to_thread(drop)

    # ---- documents ------------------------------------------------------------------------

    async def submit(self, tenant: str, collection: str, items: Sequence[DocumentInput]) -> Job:
        """Validate the inputs now (4xx), then ingest them in a background job."""
        db, _ = self._ready()
        assert self.jobs is not None and self.ingestor is not None
        col = await self.get_collection(tenant, collection)
        self._validate(items)
        job = await asyncio.to_thread(db.jobs.create, tenant, "ingest", col.id, len(items))
        self.jobs.submit(job, lambda report: self._ingest_all(col, list(items), job, report))
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
        assert self.ingestor is not None and self.retriever is not None
        results: list[ItemResult] = []
        counts = {"done": 0, "failed": 0, "skipped": 0}
        for i, item in enumerate(items):
            result = await self.ingestor.ingest(col, item, i, job.id)
            results.append(result)
            key = {"failed": "failed", "unchanged": "skipped"}.get(result.outcome, "done")
            counts[key] += 1
            await report(**counts)
        await asyncio.to_thread(self.retriever.save, col.id)
        return [r.as_dict() for r in results]

    async def get_document(self, tenant: str, collection: str, doc_id: str) -> Document:
        db, _ = self._ready()
        col = await self.get_collection(tenant, collection)
        return await asyncio.to_thread(db.corpus.get_document, col, doc_id)

    async def list_documents(
        self, tenant: str, collection: str, limit: int = 100, offset: int = 0
    ) -> list[Document]:
        db, _ = self._ready()
        col = await self.get_collection(tenant, collection)
        return await asyncio.to_thread(db.corpus.list_documents, col, limit, offset)

    async def document_chunks(self, tenant: str, collection: str, doc_id: str) -> list[Any]:
        db, _ = self._ready()
        doc = await self.get_document(tenant, collection, doc_id)
        rows = await asyncio.to_thread(
            db.store.fetchall, "SELECT id FROM chunks WHERE document_id = ? ORDER BY ord", [doc.id]
        )
        chunks = await asyncio.to_thread(db.corpus.chunks, [r[0] for r in rows])
        return [chunks[r[0]] for r in rows]

    async def delete_document(self, tenant: str, collection: str, doc_id: str) -> Document:
        _, retriever = self._ready()
        assert self.ingestor is not None
        doc = await self.get_document(tenant, collection, doc_id)
        await asyncio.to_thread(self.ingestor.delete, doc)
        await asyncio.to_thread(retriever.save, doc.collection_id)
        return doc

    # ---- jobs -----------------------------------------------------------------------------

    async def get_job(self, tenant: str, job_id: str) -> Job:
        db, _ = self._ready()
        return await asyncio.to_thread(db.jobs.get, tenant, job_id)

    async def list_jobs(self, tenant: str) -> list[Job]:
        db, _ = self._ready()
        return await asyncio.to_thread(db.jobs.list, tenant)

    async def job_events(self, tenant: str, job_id: str) -> AsyncIterator[Job | None]:
        """Checks ownership first (404), then yields the job at every change until it ends."""
        job = await self.get_job(tenant, job_id)
        assert self.jobs is not None
        return self.jobs.events(job)

    async def wait_job(self, tenant: str, job_id: str) -> Job:
        async for job in await self.job_events(tenant, job_id):
            if job is not None and job.finished:
                return job
        return await self.get_job(tenant, job_id)

    # ---- retrieval ------------------------------------------------------------------------

    async def resolve_collections(self, tenant: str, names: Sequence[str]) -> list[Collection]:
        if not names:
            raise InvalidRequestError("give at least one collection", param="collections")
        return [await self.get_collection(tenant, n) for n in dict.fromkeys(names)]

    async def retrieve(
        self,
        tenant: str,
        collections: Sequence[str],
        queries: Sequence[str],
        top_k: int | None = None,
        mode: str = "hybrid",
        where: dict[str, Any] | None = None,
    ) -> list[list[RetrievedChunk]]:
        """Ranked chunks per query from the tenant's collections (filters only narrow)."""
        db, retriever = self._ready()
        top_k = self._top_k(top_k)
        if mode not in MODES:
            raise InvalidRequestError(f"mode must be one of {list(MODES)}", param="mode")
        if not queries or any(not isinstance(q, str) or not q.strip() for q in queries):
            raise InvalidRequestError("query must be a non-empty string or list", param="query")
        if where is not None and not isinstance(where, dict):
            raise InvalidRequestError("filter must be an object", param="filter")
        cols = await self.resolve_collections(tenant, collections)
        vectors = await self._embed(list(queries))
        hits = await asyncio.to_thread(
            retriever.search, cols, list(queries), vectors, top_k, mode, where
        )
        names = {c.id: c.name for c in cols}
        return [await asyncio.to_thread(self._join, db, h, names) for h in hits]

    def _top_k(self, top_k: int | None) -> int:
        r = self.settings.retrieval
        if top_k is None:
            return r.default_top_k
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= r.max_top_k:
            raise InvalidRequestError(f"top_k must be in 1..{r.max_top_k}", param="top_k")
        return top_k

    @staticmethod
    def _join(db: Database, hits: list[Hit], names: dict[str, str]) -> list[RetrievedChunk]:
        chunks = db.corpus.chunks([h.chunk_id for h in hits])
        docs = db.corpus.documents_by_id({c.document_id for c in chunks.values()})
        out = []
        for h in hits:
            chunk = chunks.get(h.chunk_id)
            doc = docs.get(chunk.document_id) if chunk else None
            if chunk is None or doc is None:  # deleted between search and join
                continue
            out.append(
                RetrievedChunk(
                    document_id=doc.public_id,
                    chunk_id=chunk.id,
                    collection=names[h.collection_id],
                    score=round(h.score, 6),
                    dense_score=round(h.dense_score, 6),
                    rank=h.rank,
                    text=chunk.text,
                    title=doc.title,
                    metadata=doc.metadata,
                    char_start=chunk.char_start,
                    char_end=chunk.char_end,
                    page=chunk.page,
                    n_tokens=chunk.n_tokens,
                )
            )
        return out

    async def chunk_text(self, tenant: str, chunk_id: int) -> str | None:
        """The stored text of a chunk of this tenant (None when absent or another tenant's)."""
        db, _ = self._ready()
        row = await asyncio.to_thread(
            db.store.fetchone,
            "SELECT text FROM chunks WHERE id = ? AND tenant_id = ?",
            [int(chunk_id), tenant],
        )
        return row[0] if row else None

    async def session_messages(self, tenant: str, session_id: str) -> list[ChatMessage]:
        """A chat session's stored turns, oldest first (404 for another tenant's session)."""
        db, _ = self._ready()
        return await asyncio.to_thread(db.chats.messages, tenant, session_id, 100)

    async def embed(self, texts: list[str]) -> np.ndarray:
        return await self._embed(texts)

    def require_tenant(self, tenant: str | None) -> str:
        if not tenant:
            raise NotFoundError("no tenant", param="tenant")
        return tenant


DEFAULT = DEFAULT_TENANT
