"""One document in: extract -> deduplicate -> chunk -> embed -> one DuckDB transaction -> indexes.

Crash safety: the document row is ``processing`` until a single transaction stores its chunks
and vectors and marks it ``ready``. A kill at any point leaves it either ready (complete) or
without chunks; at start-up such rows become ``failed`` and uploading the document again
re-ingests it. Indexes are updated after the commit and saved after each job; a stale saved index
is rebuilt from DuckDB at start-up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.errors import HearthError
from engine.ingest.chunker import Chunker
from engine.ingest.extract import TEXT, Extracted, Limits, extract_isolated
from engine.ingest.inputs import DocumentInput
from engine.retrieval import Retriever
from engine.storage import Collection, Database, Document
from engine.storage.corpus import FAILED, PROCESSING, READY, index_text

log = logging.getLogger(__name__)

# Passages of a collection -> their vectors, with the collection's own embedding model.
EmbedFn = Callable[[list[str], Collection], Awaitable[np.ndarray]]


@dataclass(frozen=True)
class ItemResult:
    """What happened to one input: ``created``, ``replaced``, ``unchanged`` or ``failed``."""

    index: int
    outcome: str
    document_id: str | None
    chunks: int = 0
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


class Ingestor:
    def __init__(
        self,
        db: Database,
        retriever: Retriever,
        chunker_for: Callable[[Collection], Chunker],
        embed: EmbedFn,
        limits: Limits,
        embed_batch: int = 32,
        *,
        embedding_model: str = "",
    ) -> None:
        self.db = db
        self.retriever = retriever
        self.chunker_for = chunker_for
        self.embed = embed
        self.limits = limits
        self.embed_batch = embed_batch
        self.embedding_model = embedding_model  # named in the usage rows

    async def ingest(
        self, collection: Collection, item: DocumentInput, index: int, job_id: str | None
    ) -> ItemResult:
        """Ingest one input; failures are caught and returned (the document row says why)."""
        existing = await asyncio.to_thread(self._existing, collection, item)
        if existing is not None and existing.status == READY:
            if existing.content_hash == item.content_hash:
                return ItemResult(index, "unchanged", existing.public_id, existing.n_chunks)
        # A new version is stored beside the old one (without the client's id until it is
        # ready), then one transaction switches to it and deletes the old.
        outcome = "created" if existing is None else "replaced"
        doc = await asyncio.to_thread(self._new_row, collection, item, job_id, existing is None)
        public_id = item.client_id or doc.id
        try:
            chunks = await self._process(collection, doc, item, existing)
        except Exception as exc:
            message = (
                exc.message if isinstance(exc, HearthError) else f"{type(exc).__name__}: {exc}"
            )
            if not isinstance(exc, HearthError):
                log.exception("document %s failed", doc.id)
            if existing is not None:  # the old version stays; the failed new one goes
                await asyncio.to_thread(self.db.corpus.delete_document, doc)
                return ItemResult(index, "failed", existing.public_id, error=message)
            await asyncio.to_thread(self.db.corpus.set_status, doc.id, FAILED, message)
            return ItemResult(index, "failed", public_id, error=message)
        return ItemResult(index, outcome, public_id, chunks)

    def _existing(self, collection: Collection, item: DocumentInput) -> Document | None:
        if item.client_id:
            return self.db.corpus.find_document(collection, item.client_id)
        return self.db.corpus.find_by_hash(collection, item.content_hash)

    def _new_row(
        self, collection: Collection, item: DocumentInput, job_id: str | None, named: bool
    ) -> Document:
        """``named``: the row carries the client's id now (a replacement gets it when ready)."""
        return self.db.corpus.add_document(
            collection,
            client_id=item.client_id if named else None,
            title=item.title or item.filename,
            content_hash=item.content_hash,
            metadata=item.metadata,
            source_type="json" if item.data is None else "file",
            n_bytes=item.size,
            job_id=job_id,
        )

    async def _process(
        self, collection: Collection, doc: Document, item: DocumentInput, old: Document | None
    ) -> int:
        await asyncio.to_thread(self.db.corpus.set_status, doc.id, PROCESSING)
        extracted = await asyncio.to_thread(self._extract, item)
        chunker = self.chunker_for(collection)
        plan = await asyncio.to_thread(chunker.chunk, extracted.pages, doc.title)
        texts = [index_text(plan.title_prefix, c.text) for c in plan.chunks]
        vectors = await self._embed(texts, collection)
        n_pages = len(extracted.pages) if extracted.source_type == "pdf" else None
        await asyncio.to_thread(
            self._commit, doc, plan.chunks, vectors, n_pages, old, item.client_id
        )
        self.db.usage.record(
            doc.tenant_id,
            "ingest",
            prompt_tokens=sum(c.n_tokens for c in plan.chunks),
            items=len(plan.chunks),
            model=collection.embedding_model or self.embedding_model,
        )
        return len(plan.chunks)

    def _extract(self, item: DocumentInput) -> Extracted:
        if item.data is not None:
            return extract_isolated(item.data, self.limits, item.filename)
        return Extracted(TEXT, [item.text or ""])

    async def _embed(self, texts: list[str], collection: Collection) -> np.ndarray:
        parts = [
            await self.embed(texts[i : i + self.embed_batch], collection)
            for i in range(0, len(texts), self.embed_batch)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, self.retriever.dim), np.float32)

    def _commit(
        self,
        doc: Document,
        chunks: list,
        vectors: np.ndarray,
        n_pages: int | None,
        old: Document | None = None,
        client_id: str | None = None,
    ) -> None:
        with self.retriever.writing(doc.collection_id):
            if old is None:
                ids = self.db.corpus.complete_document(doc, chunks, vectors, n_pages)
            else:
                ids, removed = self.db.corpus.complete_replacement(
                    doc, chunks, vectors, n_pages, old, client_id
                )
                self.retriever.removed(doc.collection_id, removed)
            self.retriever.added(doc.collection_id, ids, vectors)

    def delete(self, doc: Document) -> None:
        """Remove a document from DuckDB and from the in-memory indexes, together."""
        with self.retriever.writing(doc.collection_id):
            ids = self.db.corpus.delete_document(doc)
            self.retriever.removed(doc.collection_id, ids)
