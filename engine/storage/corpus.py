"""Collections, documents, chunks and their vectors: the source of truth every index is built from.

Each collection has a ``generation`` (in ``collection_state``) that grows by one in the same
transaction as any change to its chunks; a saved index records the generation it reflects, so a
stale or half-written index is detected at start-up and rebuilt from here.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import duckdb
import numpy as np

from engine.errors import InvalidRequestError, NotFoundError
from engine.storage.db import Store, register_migration
from engine.storage.tenants import check_name

# Document lifecycle: pending -> processing -> ready | failed. A crash leaves pending/processing
# rows behind; ``CorpusRepo.fail_interrupted`` turns them into failed (retry = upload again).
PENDING, PROCESSING, READY, FAILED = "pending", "processing", "ready", "failed"


# Each collection records its embedding model; a re-embedding job stages the new vectors here
# (committed per batch, so a restarted job resumes) until one transaction swaps them in.
register_migration(
    "corpus",
    1,
    "collections record their embedding model; staged vectors of re-embedding jobs",
    """
    ALTER TABLE collections ADD COLUMN embedding_model TEXT DEFAULT '';
    CREATE TABLE reembed_vectors (
        job_id TEXT NOT NULL,
        chunk_id BIGINT NOT NULL,
        collection_id TEXT NOT NULL,
        dim INTEGER NOT NULL,
        embedding BLOB NOT NULL,
        PRIMARY KEY (job_id, chunk_id)
    );
    """,
)


@dataclass(frozen=True)
class Collection:
    id: str
    tenant_id: str
    name: str
    chunk_tokens: int
    chunk_overlap: int
    metadata: dict[str, Any]
    created_at: datetime
    # The embedding model (card id) its vectors come from ("" before it was recorded).
    embedding_model: str = ""


@dataclass(frozen=True)
class Document:
    id: str
    tenant_id: str
    collection_id: str
    client_id: str | None
    title: str | None
    content_hash: str
    status: str
    error: str | None
    metadata: dict[str, Any]
    source_type: str | None
    n_bytes: int | None
    n_pages: int | None
    n_chunks: int
    job_id: str | None
    created_at: datetime
    updated_at: datetime

    @property
    def public_id(self) -> str:
        """The id clients see: theirs when they gave one, else Hearth's."""
        return self.client_id or self.id


@dataclass(frozen=True)
class NewChunk:
    """A chunk before storage. Offsets index the document's extracted text; ``page`` is 1-based."""

    text: str
    n_tokens: int
    char_start: int
    char_end: int
    page: int | None = None


@dataclass(frozen=True)
class Chunk:
    id: int
    document_id: str
    collection_id: str
    ord: int
    text: str
    n_tokens: int
    char_start: int
    char_end: int
    page: int | None
    extra: dict[str, Any] = field(default_factory=dict)


_COLLECTION_COLS = (
    "id, tenant_id, name, chunk_tokens, chunk_overlap, metadata, created_at, embedding_model"
)
_DOC_COLS = (
    "id, tenant_id, collection_id, client_id, title, content_hash, status, error, metadata, "
    "source_type, n_bytes, n_pages, n_chunks, job_id, created_at, updated_at"
)
_CHUNK_COLS = "id, document_id, collection_id, ord, text, n_tokens, char_start, char_end, page"


def _collection(row: tuple) -> Collection:
    values = list(row)
    values[5] = json.loads(values[5]) if values[5] else {}
    values[7] = values[7] or ""
    return Collection(*values)


def _document(row: tuple) -> Document:
    values = list(row)
    values[8] = json.loads(values[8]) if values[8] else {}
    return Document(*values)


class CorpusRepo:
    def __init__(self, store: Store) -> None:
        self.store = store

    # ---- collections ----------------------------------------------------------------------

    def create_collection(
        self,
        tenant_id: str,
        name: str,
        chunk_tokens: int,
        chunk_overlap: int,
        metadata: dict[str, Any] | None = None,
        embedding_model: str = "",
    ) -> Collection:
        check_name(name)
        if self.find_collection(tenant_id, name) is not None:
            raise InvalidRequestError(f"collection {name!r} already exists", param="name")
        cid = "col_" + secrets.token_hex(8)
        with self.store.transaction() as conn:
            conn.execute(
                "INSERT INTO collections (id, tenant_id, name, chunk_tokens, chunk_overlap, "
                "metadata, embedding_model) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    cid,
                    tenant_id,
                    name,
                    chunk_tokens,
                    chunk_overlap,
                    json.dumps(metadata or {}),
                    embedding_model,
                ],
            )
            conn.execute("INSERT INTO collection_state VALUES (?, 0)", [cid])
        return self.get_collection(tenant_id, name)

    def find_collection(self, tenant_id: str, name: str) -> Collection | None:
        row = self.store.fetchone(
            f"SELECT {_COLLECTION_COLS} FROM collections WHERE tenant_id = ? AND name = ?",
            [tenant_id, name],
        )
        return _collection(row) if row else None

    def get_collection(self, tenant_id: str, name: str) -> Collection:
        """The tenant's collection ``name``; another tenant's answers exactly like a missing one."""
        found = self.find_collection(tenant_id, name)
        if found is None:
            raise NotFoundError(f"collection {name!r} not found", param="collection")
        return found

    def list_collections(self, tenant_id: str | None = None) -> list[Collection]:
        """A tenant's collections, or every collection (``None``: index rebuilds at start-up)."""
        where, params = ("WHERE tenant_id = ?", [tenant_id]) if tenant_id else ("", [])
        rows = self.store.fetchall(
            f"SELECT {_COLLECTION_COLS} FROM collections {where} ORDER BY created_at, name", params
        )
        return [_collection(r) for r in rows]

    def collection_stats(self, collection_id: str) -> dict[str, int]:
        row = self.store.fetchone(
            "SELECT (SELECT count(*) FROM documents WHERE collection_id = ?), "
            "(SELECT count(*) FROM chunks WHERE collection_id = ?), "
            "(SELECT generation FROM collection_state WHERE collection_id = ?)",
            [collection_id] * 3,
        )
        assert row is not None  # aggregates always return a row
        return {"documents": row[0], "chunks": row[1], "generation": row[2] or 0}

    def generation(self, collection_id: str) -> int:
        row = self.store.fetchone(
            "SELECT generation FROM collection_state WHERE collection_id = ?", [collection_id]
        )
        return int(row[0]) if row else 0

    def delete_collection(self, collection: Collection) -> None:
        with self.store.transaction() as conn:
            for table in ("vectors", "chunks", "documents", "reembed_vectors"):
                conn.execute(f"DELETE FROM {table} WHERE collection_id = ?", [collection.id])
            conn.execute("DELETE FROM collection_state WHERE collection_id = ?", [collection.id])
            conn.execute("DELETE FROM collections WHERE id = ?", [collection.id])

    # ---- documents ------------------------------------------------------------------------

    def find_document(self, collection: Collection, doc_id: str) -> Document | None:
        """By the client's id or Hearth's id, within one collection of one tenant."""
        row = self.store.fetchone(
            f"SELECT {_DOC_COLS} FROM documents WHERE collection_id = ? AND tenant_id = ? "
            "AND (client_id = ? OR (id = ? AND client_id IS NULL)) ",
            [collection.id, collection.tenant_id, doc_id, doc_id],
        )
        return _document(row) if row else None

    def find_by_hash(self, collection: Collection, content_hash: str) -> Document | None:
        row = self.store.fetchone(
            f"SELECT {_DOC_COLS} FROM documents WHERE collection_id = ? AND content_hash = ? "
            "AND client_id IS NULL ORDER BY created_at LIMIT 1",
            [collection.id, content_hash],
        )
        return _document(row) if row else None

    def get_document(self, collection: Collection, doc_id: str) -> Document:
        found = self.find_document(collection, doc_id)
        if found is None:
            raise NotFoundError(f"document {doc_id!r} not found", param="document_id")
        return found

    def documents_by_id(self, ids: Iterable[str]) -> dict[str, Document]:
        ids = list(set(ids))
        if not ids:
            return {}
        rows = self.store.fetchall(
            f"SELECT {_DOC_COLS} FROM documents WHERE id IN (SELECT unnest(?::TEXT[]))", [ids]
        )
        return {r[0]: _document(r) for r in rows}

    def list_documents(
        self, collection: Collection, limit: int = 100, offset: int = 0
    ) -> list[Document]:
        rows = self.store.fetchall(
            f"SELECT {_DOC_COLS} FROM documents WHERE collection_id = ? AND tenant_id = ? "
            "ORDER BY created_at, id LIMIT ? OFFSET ?",
            [collection.id, collection.tenant_id, limit, offset],
        )
        return [_document(r) for r in rows]

    def add_document(
        self,
        collection: Collection,
        *,
        client_id: str | None,
        title: str | None,
        content_hash: str,
        metadata: dict[str, Any],
        source_type: str,
        n_bytes: int,
        job_id: str | None,
    ) -> Document:
        """A new document row in state ``pending`` (its chunks come with ``complete_document``)."""
        doc_id = "doc_" + secrets.token_hex(10)
        self.store.execute(
            "INSERT INTO documents (id, tenant_id, collection_id, client_id, title, content_hash, "
            "status, metadata, source_type, n_bytes, job_id) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            [
                doc_id,
                collection.tenant_id,
                collection.id,
                client_id,
                title,
                content_hash,
                PENDING,
                json.dumps(metadata),
                source_type,
                n_bytes,
                job_id,
            ],
        )
        return self.get_document(collection, client_id or doc_id)

    def set_status(self, doc_id: str, status: str, error: str | None = None) -> None:
        self.store.execute(
            "UPDATE documents SET status = ?, error = ?, updated_at = current_timestamp "
            "WHERE id = ?",
            [status, error, doc_id],
        )

    def complete_document(
        self,
        doc: Document,
        chunks: Sequence[NewChunk],
        vectors: np.ndarray,
        n_pages: int | None,
    ) -> list[int]:
        """Store chunks + vectors and mark the document ready, all in one transaction.

        Returns the new chunk ids. Either everything lands or nothing does (a crash in between
        leaves the document ``processing`` with no chunks).
        """
        if len(chunks) != len(vectors):
            raise ValueError(f"{len(chunks)} chunks but {len(vectors)} vectors")
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        with self.store.transaction() as conn:
            ids = self._next_chunk_ids(conn, len(chunks))
            self._insert_chunks(conn, doc, chunks, ids, vectors)
            conn.execute(
                "UPDATE documents SET status = ?, error = NULL, n_chunks = ?, n_pages = ?, "
                "updated_at = current_timestamp WHERE id = ?",
                [READY, len(chunks), n_pages, doc.id],
            )
            _bump(conn, doc.collection_id)
        return ids

    @staticmethod
    def _next_chunk_ids(conn: duckdb.DuckDBPyConnection, n: int) -> list[int]:
        if n == 0:
            return []
        rows = conn.execute("SELECT nextval('chunk_ids') FROM range(?)", [n]).fetchall()
        return [int(r[0]) for r in rows]

    @staticmethod
    def _insert_chunks(
        conn: duckdb.DuckDBPyConnection,
        doc: Document,
        chunks: Sequence[NewChunk],
        ids: list[int],
        vectors: np.ndarray,
    ) -> None:
        if not chunks:
            return
        conn.executemany(
            "INSERT INTO chunks (id, tenant_id, collection_id, document_id, ord, text, n_tokens, "
            "char_start, char_end, page) VALUES (?,?,?,?,?,?,?,?,?,?)",
            [
                [cid, doc.tenant_id, doc.collection_id, doc.id, i, c.text, c.n_tokens]
                + [c.char_start, c.char_end, c.page]
                for i, (cid, c) in enumerate(zip(ids, chunks, strict=True))
            ],
        )
        dim = int(vectors.shape[1])
        conn.executemany(
            "INSERT INTO vectors (chunk_id, collection_id, dim, embedding) VALUES (?,?,?,?)",
            [[cid, doc.collection_id, dim, vectors[i].tobytes()] for i, cid in enumerate(ids)],
        )

    def delete_document(self, doc: Document) -> list[int]:
        """Remove a document with its chunks and vectors; returns the chunk ids removed."""
        with self.store.transaction() as conn:
            return self._delete_rows(conn, doc)

    def complete_replacement(
        self,
        doc: Document,
        chunks: Sequence[NewChunk],
        vectors: np.ndarray,
        n_pages: int | None,
        old: Document,
        client_id: str | None,
    ) -> tuple[list[int], list[int]]:
        """Store the new version ``doc`` (its chunks and vectors), then switch to it and delete
        ``old``, in one transaction: a crash or failure at any point leaves the old version.
        Returns (the new chunk ids, the old chunk ids removed)."""
        if len(chunks) != len(vectors):
            raise ValueError(f"{len(chunks)} chunks but {len(vectors)} vectors")
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        with self.store.transaction() as conn:
            ids = self._next_chunk_ids(conn, len(chunks))
            self._insert_chunks(conn, doc, chunks, ids, vectors)
            removed = self._delete_rows(conn, old)
            conn.execute(
                "UPDATE documents SET status = ?, error = NULL, n_chunks = ?, n_pages = ?, "
                "client_id = ?, updated_at = current_timestamp WHERE id = ?",
                [READY, len(chunks), n_pages, client_id, doc.id],
            )
            _bump(conn, doc.collection_id)
        return ids, removed

    @staticmethod
    def _delete_rows(conn: duckdb.DuckDBPyConnection, doc: Document) -> list[int]:
        ids = [
            int(r[0])
            for r in conn.execute(
                "SELECT id FROM chunks WHERE document_id = ?", [doc.id]
            ).fetchall()
        ]
        if ids:
            conn.execute(
                "DELETE FROM vectors WHERE chunk_id IN (SELECT unnest(?::BIGINT[]))", [ids]
            )
            conn.execute("DELETE FROM chunks WHERE document_id = ?", [doc.id])
            _bump(conn, doc.collection_id)
        conn.execute("DELETE FROM documents WHERE id = ?", [doc.id])
        return ids

    def fail_interrupted(self) -> int:
        """At start-up: documents left pending/processing by a crash become failed (retryable)."""
        row = self.store.fetchone(
            "SELECT count(*) FROM documents WHERE status IN (?, ?)", [PENDING, PROCESSING]
        )
        self.store.execute(
            "UPDATE documents SET status = ?, error = ?, updated_at = current_timestamp "
            "WHERE status IN (?, ?)",
            [
                FAILED,
                "interrupted before completion; upload it again to retry",
                PENDING,
                PROCESSING,
            ],
        )
        return int(row[0]) if row else 0

    # ---- chunks and vectors ---------------------------------------------------------------

    def chunks(self, ids: Sequence[int]) -> dict[int, Chunk]:
        if not ids:
            return {}
        rows = self.store.fetchall(
            f"SELECT {_CHUNK_COLS} FROM chunks WHERE id IN (SELECT unnest(?::BIGINT[]))",
            [list(map(int, ids))],
        )
        return {int(r[0]): Chunk(*r) for r in rows}

    def chunk_texts(self, collection_id: str) -> tuple[np.ndarray, list[str]]:
        """(chunk ids int64, title-prefixed texts) of a collection, ordered by chunk id."""
        rows = self.store.fetchall(
            "SELECT c.id, d.title, c.text FROM chunks c JOIN documents d ON d.id = c.document_id "
            "WHERE c.collection_id = ? ORDER BY c.id",
            [collection_id],
        )
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        return ids, [index_text(r[1], r[2]) for r in rows]

    def vectors(
        self, collection_id: str, chunk_ids: Sequence[int] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(ids int64 (n,), vectors float32 (n, dim)) of a collection, ordered by chunk id."""
        sql = "SELECT chunk_id, dim, embedding FROM vectors WHERE collection_id = ?"
        params: list[Any] = [collection_id]
        if chunk_ids is not None:
            sql += " AND chunk_id IN (SELECT unnest(?::BIGINT[]))"
            params.append(list(map(int, chunk_ids)))
        rows = self.store.fetchall(sql + " ORDER BY chunk_id", params)
        if not rows:
            return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        mat = np.frombuffer(b"".join(r[2] for r in rows), dtype=np.float32)
        return ids, mat.reshape(len(rows), int(rows[0][1]))

    def chunk_ids_matching(self, collection_id: str, where: dict[str, Any]) -> np.ndarray:
        """Chunk ids of the collection's documents whose metadata matches every key of ``where``.

        A value matches by equality; a list value matches any of its items.
        """
        docs = self.store.fetchall(
            "SELECT id, metadata, client_id, title FROM documents WHERE collection_id = ?",
            [collection_id],
        )
        keep = [d[0] for d in docs if _matches(_doc_fields(d), where)]
        if not keep:
            return np.zeros(0, dtype=np.int64)
        rows = self.store.fetchall(
            "SELECT id FROM chunks WHERE document_id IN (SELECT unnest(?::TEXT[]))", [keep]
        )
        return np.array(sorted(r[0] for r in rows), dtype=np.int64)

    # ---- re-embedding ---------------------------------------------------------------------

    def record_embedding_model(self, model: str) -> int:
        """Collections created before the model was recorded were built with the model the
        server ran then: record ``model`` (the one it runs now) for them; returns how many."""
        with self.store.transaction() as conn:
            n = conn.execute(
                "SELECT count(*) FROM collections WHERE coalesce(embedding_model, '') = ''"
            ).fetchone()[0]
            if n:
                conn.execute(
                    "UPDATE collections SET embedding_model = ? "
                    "WHERE coalesce(embedding_model, '') = ''",
                    [model],
                )
        return int(n)

    def unstaged_chunks(
        self, collection_id: str, job_id: str, limit: int
    ) -> tuple[np.ndarray, list[str]]:
        """Up to ``limit`` chunks of the collection (ids, index texts) that job ``job_id`` has
        not re-embedded yet, by chunk id."""
        rows = self.store.fetchall(
            "SELECT c.id, d.title, c.text FROM chunks c JOIN documents d ON d.id = c.document_id "
            "WHERE c.collection_id = ? AND c.id NOT IN "
            "(SELECT chunk_id FROM reembed_vectors WHERE job_id = ?) ORDER BY c.id LIMIT ?",
            [collection_id, job_id, int(limit)],
        )
        return np.array([r[0] for r in rows], np.int64), [index_text(r[1], r[2]) for r in rows]

    def stage_vectors(
        self, collection_id: str, job_id: str, ids: np.ndarray, vectors: np.ndarray
    ) -> None:
        """Keep a batch of the job's new vectors (committed: a restarted job skips them)."""
        dim = int(vectors.shape[1])
        with self.store.transaction() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO reembed_vectors VALUES (?, ?, ?, ?, ?)",
                [
                    [job_id, int(cid), collection_id, dim, vectors[i].tobytes()]
                    for i, cid in enumerate(ids)
                ],
            )

    def staged_count(self, job_id: str) -> int:
        row = self.store.fetchone("SELECT count(*) FROM reembed_vectors WHERE job_id = ?", [job_id])
        return int(row[0]) if row else 0

    def swap_vectors(self, collection: Collection, job_id: str, model: str) -> bool:
        """In one transaction: the job's staged vectors replace the collection's, the collection
        records ``model``, its generation grows. False (nothing changed) while a chunk has no
        staged vector yet (one was added meanwhile)."""
        with self.store.transaction() as conn:
            missing = conn.execute(
                "SELECT count(*) FROM chunks WHERE collection_id = ? AND id NOT IN "
                "(SELECT chunk_id FROM reembed_vectors WHERE job_id = ?)",
                [collection.id, job_id],
            ).fetchone()[0]
            if missing:
                return False
            conn.execute("DELETE FROM vectors WHERE collection_id = ?", [collection.id])
            conn.execute(
                "INSERT INTO vectors (chunk_id, collection_id, dim, embedding) "
                "SELECT r.chunk_id, r.collection_id, r.dim, r.embedding FROM reembed_vectors r "
                "JOIN chunks c ON c.id = r.chunk_id "
                "WHERE r.job_id = ? AND c.collection_id = ?",
                [job_id, collection.id],
            )
            conn.execute(
                "UPDATE collections SET embedding_model = ? WHERE id = ?", [model, collection.id]
            )
            # This job's rows, and any an earlier failed job left for this collection.
            conn.execute(
                "DELETE FROM reembed_vectors WHERE job_id = ? OR collection_id = ?",
                [job_id, collection.id],
            )
            _bump(conn, collection.id)
        return True

    def drop_staged(self, job_id: str) -> None:
        self.store.execute("DELETE FROM reembed_vectors WHERE job_id = ?", [job_id])


def index_text(title: str | None, text: str) -> str:
    """What the indexes see for a chunk: the document title (when any) on its own line, then the
    chunk. The chunker leaves room for the title in the embedder's 256 word pieces."""
    return f"{title}\n{text}" if title else text


def _doc_fields(row: tuple) -> dict[str, Any]:
    meta = json.loads(row[1]) if row[1] else {}
    return {"document_id": row[2] or row[0], "title": row[3], **meta}


def _matches(meta: dict[str, Any], where: dict[str, Any]) -> bool:
    for key, want in where.items():
        have = meta.get(key)
        if isinstance(want, list):
            if have not in want:
                return False
        elif have != want:
            return False
    return True


def _bump(conn: duckdb.DuckDBPyConnection, collection_id: str) -> None:
    conn.execute(
        "UPDATE collection_state SET generation = generation + 1 WHERE collection_id = ?",
        [collection_id],
    )
