"""``RetrievalService``: ranked chunks for queries over a tenant's collections (dense, lexical or
hybrid), joined with their chunk and document rows. It owns the per-collection indexes
(:class:`~engine.retrieval.Retriever`) that the document service updates on ingestion; blocking
work (FAISS, BM25, DuckDB) runs in threads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.errors import InvalidRequestError
from engine.retrieval.dense import DenseParams
from engine.retrieval.device import select_faiss_device
from engine.retrieval.retriever import MODES, Hit, Retriever
from engine.storage import Collection, Database
from engine.types import RetrievedChunk

if TYPE_CHECKING:
    from configs import Settings
    from engine.embeddings import EmbedderSet

log = logging.getLogger(__name__)


class RetrievalService:
    def __init__(
        self, settings: Settings, db: Database, index: Retriever, embedders: EmbedderSet
    ) -> None:
        """Use :meth:`open` (it loads or rebuilds every collection's indexes)."""
        self.settings = settings.retrieval
        self._db = db
        self.index = index
        self._embedders = embedders

    @classmethod
    async def open(
        cls, settings: Settings, db: Database, embedders: EmbedderSet
    ) -> RetrievalService:
        """``embedders``: a collection's queries are embedded with the model it records."""
        embedder = embedders.default
        recorded = await asyncio.to_thread(db.corpus.record_embedding_model, embedders.default_id)
        if recorded:
            log.info("%d collection(s) recorded as built with %s", recorded, embedders.default_id)
        r = settings.retrieval
        params = DenseParams(
            hnsw_threshold=r.hnsw_threshold,
            hnsw_m=r.hnsw_m,
            ef_construction=r.hnsw_ef_construction,
            ef_search=r.hnsw_ef_search,
            use_gpu=select_faiss_device(r.device) == "gpu",
        )
        index = Retriever(
            db, settings.data_dir / "indexes", params, r.rrf_k, embedder.dim, r.max_open_indexes
        )
        report = await asyncio.to_thread(index.open)
        rebuilt = [c for c, how in report.items() if how == "rebuilt"]
        if rebuilt:
            log.warning("rebuilt dense index of %s from the database", ", ".join(rebuilt))
        return cls(settings, db, index, embedders)

    async def close(self) -> None:
        """Write every changed index to disk."""
        await asyncio.to_thread(self.index.save_all)

    async def resolve_collections(self, tenant: str, names: Sequence[str]) -> list[Collection]:
        if not names:
            raise InvalidRequestError("give at least one collection", param="collections")
        return [
            await asyncio.to_thread(self._db.corpus.get_collection, tenant, n)
            for n in dict.fromkeys(names)
        ]

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
        top_k = self._top_k(top_k)
        if mode not in MODES:
            raise InvalidRequestError(f"mode must be one of {list(MODES)}", param="mode")
        if not queries or any(not isinstance(q, str) or not q.strip() for q in queries):
            raise InvalidRequestError("query must be a non-empty string or list", param="query")
        if where is not None and not isinstance(where, dict):
            raise InvalidRequestError("filter must be an object", param="filter")
        cols = await self.resolve_collections(tenant, collections)
        vectors = await self.embed_queries(cols, list(queries))
        hits = await asyncio.to_thread(
            self.index.search, cols, list(queries), vectors, top_k, mode, where
        )
        names = {c.id: c.name for c in cols}
        return [await asyncio.to_thread(self._join, h, names) for h in hits]

    async def embed_queries(self, cols: Sequence[Collection], queries: list[str]) -> np.ndarray:
        """The queries' vectors by the collections' embedding model (one model for all: vectors
        of two models are not comparable, so mixing them is a 400 naming both)."""
        used = {c.embedding_model or self._embedders.default_id: c.name for c in cols}
        if len(used) > 1:
            named = ", ".join(f"{name!r} ({model})" for model, name in used.items())
            raise InvalidRequestError(
                f"collections {named} are embedded with different models and cannot be searched "
                "together; re-embed one of them (POST /v1/collections/{name}/reembed)",
                param="collections",
                code="embedding_model_mismatch",
            )
        embedder = await self._embedders.get(next(iter(used)))
        return await embedder.embed(queries, input_type="query")

    def _top_k(self, top_k: int | None) -> int:
        r = self.settings
        if top_k is None:
            return r.default_top_k
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= r.max_top_k:
            raise InvalidRequestError(f"top_k must be in 1..{r.max_top_k}", param="top_k")
        return top_k

    def _join(self, hits: list[Hit], names: dict[str, str]) -> list[RetrievedChunk]:
        chunks = self._db.corpus.chunks([h.chunk_id for h in hits])
        docs = self._db.corpus.documents_by_id({c.document_id for c in chunks.values()})
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
        row = await asyncio.to_thread(
            self._db.store.fetchone,
            "SELECT text FROM chunks WHERE id = ? AND tenant_id = ?",
            [int(chunk_id), tenant],
        )
        return row[0] if row else None
