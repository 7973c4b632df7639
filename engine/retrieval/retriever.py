"""Every collection's dense and lexical index, kept in step with DuckDB.

DuckDB is the source of truth. At start-up each collection's saved indexes are loaded and
checked against it (same generation, same number of vectors); one that is missing, corrupt or
stale is rebuilt from the stored vectors and texts before anything is served. Writers commit to
DuckDB and update the in-memory index inside ``Retriever.writing()``, so a save never records a
generation whose vectors are not in the index.

At most ``max_open`` collections' indexes stay in memory (least recently used first out): a
tenant with many collections costs reloads from disk, not the server's memory. An index changed
since it was loaded is saved before it leaves; one evicted and used again is loaded and checked
against DuckDB like at start-up (rebuilt if stale).
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import InvalidRequestError, UnprocessableError
from engine.retrieval.dense import DenseIndex, DenseParams, IndexFileError, exact_search
from engine.retrieval.fusion import rrf
from engine.retrieval.lexical import LexicalIndex
from engine.storage import Collection, Database

log = logging.getLogger(__name__)

MODES = ("dense", "lexical", "hybrid")
# Candidates each list contributes to hybrid fusion.
FUSION_DEPTH = 100


@dataclass(frozen=True)
class Hit:
    """One retrieved chunk. ``score`` is the mode's score (cosine, BM25 or RRF); ``dense_score``
    is the query-chunk cosine similarity in every mode (the evidence strength RAG uses)."""

    chunk_id: int
    collection_id: str
    score: float
    dense_score: float
    lexical_score: float | None = None
    rank: int = 0


@dataclass
class _Indexes:
    dense: DenseIndex
    dense_generation: int
    lexical: LexicalIndex | None = None
    lexical_generation: int = -1
    changed: bool = False  # since loaded or saved: saved before it is evicted


class Retriever:
    def __init__(
        self,
        db: Database,
        index_dir: Path,
        params: DenseParams,
        rrf_k: int = 60,
        dim: int = 384,
        max_open: int = 64,
    ) -> None:
        if max_open < 1:
            raise ValueError("max_open must be at least 1")
        self.db = db
        self.index_dir = Path(index_dir)
        self.params = params
        self.rrf_k = rrf_k
        self.dim = dim
        self.max_open = max_open
        self._lock = threading.RLock()
        self._indexes: OrderedDict[str, _Indexes] = OrderedDict()  # least recently used first
        self.evictions = 0

    @property
    def open_collections(self) -> list[str]:
        """Ids of the collections whose indexes are in memory, least recently used first."""
        with self._lock:
            return list(self._indexes)

    def _keep(self, collection_id: str, state: _Indexes) -> None:
        """Hold ``state`` as the most recently used; evict (saving if changed) past the bound."""
        self._indexes[collection_id] = state
        self._indexes.move_to_end(collection_id)
        while len(self._indexes) > self.max_open:
            old_id = next(iter(self._indexes))
            if self._indexes[old_id].changed:
                self.save(old_id)
            del self._indexes[old_id]
            self.evictions += 1
            log.debug("index of %s left memory (at most %d open)", old_id, self.max_open)

    # ---- files ----------------------------------------------------------------------------

    def _dense_path(self, collection_id: str) -> Path:
        return self.index_dir / collection_id / "dense.faiss"

    def _lexical_path(self, collection_id: str) -> Path:
        return self.index_dir / collection_id / "bm25"

    def open(self) -> dict[str, str]:
        """Load or rebuild every collection's dense index; returns {collection id: how}."""
        report = {}
        for col in self.db.corpus.list_collections():
            report[col.id] = self._open_collection(col.id)
        stale = [p for p in self.index_dir.glob("col_*") if p.name not in report]
        for path in stale:
            shutil.rmtree(path, ignore_errors=True)
        return report

    def _open_collection(self, collection_id: str) -> str:
        generation = self.db.corpus.generation(collection_id)
        count = self.db.corpus.collection_stats(collection_id)["chunks"]
        path = self._dense_path(collection_id)
        how = "loaded"
        try:
            dense, saved = DenseIndex.load(path, self.params)
            if saved != generation or dense.size != count:
                raise IndexFileError(
                    f"{path}: reflects generation {saved} with {dense.size} vectors, "
                    f"database has generation {generation} with {count}"
                )
        except IndexFileError as exc:
            if path.exists():
                log.warning("rebuilding dense index of %s: %s", collection_id, exc)
            ids, vecs = self.db.corpus.vectors(collection_id)
            dense = DenseIndex.build(ids, vecs if len(ids) else _empty(self.dim), self.params)
            dense.save(path, generation)
            how = "rebuilt"
        with self._lock:
            self._keep(collection_id, _Indexes(dense, generation))
            self._load_lexical(collection_id, generation)
        return how

    def _load_lexical(self, collection_id: str, generation: int) -> None:
        state = self._indexes[collection_id]
        try:
            lexical, saved = LexicalIndex.load(self._lexical_path(collection_id))
        except (OSError, ValueError, KeyError) as exc:
            log.info("lexical index of %s will be rebuilt: %s", collection_id, exc)
            return
        if saved == generation:
            state.lexical, state.lexical_generation = lexical, saved

    def save(self, collection_id: str) -> None:
        """Persist both indexes with the generation they reflect (lexical rebuilt if stale)."""
        with self._lock:
            state = self._indexes.get(collection_id)
            if state is None:
                return
            state.dense.save(self._dense_path(collection_id), state.dense_generation)
            lexical = self._fresh_lexical(collection_id)
            lexical.save(self._lexical_path(collection_id), state.lexical_generation)
            state.changed = False

    def save_all(self) -> None:
        for collection_id in list(self._indexes):
            self.save(collection_id)

    # ---- writes ---------------------------------------------------------------------------

    @contextmanager
    def writing(self, collection_id: str | None = None) -> Iterator[None]:
        """Hold while committing a change to ``collection_id`` to DuckDB and applying it here.
        Its indexes are loaded first: loaded after the commit they would already hold it."""
        with self._lock:
            if collection_id is not None:
                self._state(collection_id)
            yield

    def create(self, collection_id: str) -> None:
        with self._lock:
            dense = DenseIndex(self.dim, self.params)
            state = _Indexes(dense, 0, LexicalIndex.build(_ids(), []), 0, changed=True)
            self._keep(collection_id, state)

    def added(self, collection_id: str, ids: Sequence[int], vectors: np.ndarray) -> None:
        """Apply vectors just committed (call inside ``writing()``)."""
        with self._lock:
            state = self._dense_state(collection_id, int(vectors.shape[1]))
            state.dense.add(np.asarray(ids, np.int64), vectors)
            state.dense_generation = self.db.corpus.generation(collection_id)
            state.changed = True

    def removed(self, collection_id: str, ids: Sequence[int]) -> None:
        """Apply a removal just committed (call inside ``writing()``)."""
        with self._lock:
            state = self._state(collection_id)
            state.dense.remove(np.asarray(ids, np.int64))
            state.dense_generation = self.db.corpus.generation(collection_id)
            state.changed = True

    def drop(self, collection_id: str) -> None:
        with self._lock:
            self._indexes.pop(collection_id, None)
            shutil.rmtree(self.index_dir / collection_id, ignore_errors=True)

    def _state(self, collection_id: str) -> _Indexes:
        """The collection's indexes, loaded (or rebuilt) if they are not in memory."""
        with self._lock:
            state = self._indexes.get(collection_id)
            if state is None:
                self._open_collection(collection_id)
                state = self._indexes[collection_id]
            else:
                self._indexes.move_to_end(collection_id)
            return state

    def _dense_state(self, collection_id: str, dim: int) -> _Indexes:
        """The collection's indexes, checked to hold vectors of ``dim`` (the size of the vectors
        being added or searched with).

        Vectors of another embedding model cannot be searched with these (nor added): that is a
        clear 422, not a FAISS assertion. The services embed with the collection's own model,
        so this guards against a mismatch they missed."""
        state = self._state(collection_id)
        if state.dense.dim != dim:
            if state.dense.size == 0:
                state.dense = DenseIndex(dim, self.params)
            else:
                raise UnprocessableError(
                    f"collection {collection_id} holds {state.dense.dim}-dimensional embeddings, "
                    f"not {dim}-dimensional ones: embed with the model the collection records, "
                    "or re-embed it (POST /v1/collections/{name}/reembed)",
                    code="embedding_model_mismatch",
                )
        return state

    def reload(self, collection_id: str) -> None:
        """Rebuild the collection's indexes from DuckDB (after its vectors were replaced; call
        inside ``writing()``)."""
        with self._lock:
            self._indexes.pop(collection_id, None)
            self._open_collection(collection_id)

    def _fresh_lexical(self, collection_id: str) -> LexicalIndex:
        state = self._state(collection_id)
        generation = state.dense_generation
        if state.lexical is None or state.lexical_generation != generation:
            ids, texts = self.db.corpus.chunk_texts(collection_id)
            state.lexical = LexicalIndex.build(ids, texts)
            state.lexical_generation = generation
            state.changed = True
        return state.lexical

    def stats(self, collection_id: str) -> dict[str, Any]:
        with self._lock:
            state = self._state(collection_id)
            return {"kind": state.dense.kind, "vectors": state.dense.size}

    # ---- search ---------------------------------------------------------------------------

    def search(
        self,
        collections: Sequence[Collection],
        queries: list[str],
        vectors: np.ndarray,
        k: int,
        mode: str = "hybrid",
        where: dict[str, Any] | None = None,
    ) -> list[list[Hit]]:
        """Top ``k`` hits per query over the given collections (all of one tenant: the caller
        resolved them from the tenant). ``where`` narrows to documents whose metadata match."""
        if mode not in MODES:
            raise InvalidRequestError(f"mode must be one of {list(MODES)}", param="mode")
        with self._lock:
            allowed = self._allowed(collections, where)
            depth = max(k, FUSION_DEPTH) if mode == "hybrid" else k
            dense = self._dense(collections, vectors, depth, allowed) if mode != "lexical" else None
            lexical = (
                self._lexical(collections, queries, depth, allowed) if mode != "dense" else None
            )
            owner = {c.id: c.id for c in collections}
            results = []
            for qi in range(len(queries)):
                ranked = _combine(
                    mode,
                    dense[qi] if dense else [],
                    lexical[qi] if lexical else [],
                    self.rrf_k,
                )[:k]
                results.append(self._hits(ranked, vectors[qi], dense, lexical, qi, owner))
            return results

    def _allowed(
        self, collections: Sequence[Collection], where: dict[str, Any] | None
    ) -> dict[str, np.ndarray] | None:
        if not where:
            return None
        return {c.id: self.db.corpus.chunk_ids_matching(c.id, where) for c in collections}

    def _dense(
        self,
        collections: Sequence[Collection],
        vectors: np.ndarray,
        k: int,
        allowed: dict[str, np.ndarray] | None,
    ) -> list[list[tuple[int, float, str]]]:
        per_query: list[list[tuple[int, float, str]]] = [[] for _ in range(len(vectors))]
        for col in collections:
            state = self._dense_state(col.id, int(vectors.shape[1]))
            if allowed is not None:
                ids, mat = self.db.corpus.vectors(col.id, allowed[col.id].tolist())
                scores, found = exact_search(vectors, ids, mat, k)
            else:
                scores, found = state.dense.search(vectors, k)
            for qi in range(len(vectors)):
                per_query[qi] += [
                    (int(i), float(s), col.id)
                    for i, s in zip(found[qi], scores[qi], strict=True)
                    if i >= 0
                ]
        return [sorted(hits, key=lambda h: -h[1])[:k] for hits in per_query]

    def _lexical(
        self,
        collections: Sequence[Collection],
        queries: list[str],
        k: int,
        allowed: dict[str, np.ndarray] | None,
    ) -> list[list[tuple[int, float, str]]]:
        per_query: list[list[tuple[int, float, str]]] = [[] for _ in queries]
        for col in collections:
            index = self._fresh_lexical(col.id)
            found = index.search(queries, k, None if allowed is None else allowed[col.id])
            for qi, (ids, scores) in enumerate(found):
                per_query[qi] += [
                    (int(i), float(s), col.id) for i, s in zip(ids, scores, strict=True)
                ]
        return [sorted(hits, key=lambda h: -h[1])[:k] for hits in per_query]

    def _hits(
        self,
        ranked: list[tuple[int, float, str]],
        query: np.ndarray,
        dense: list[list[tuple[int, float, str]]] | None,
        lexical: list[list[tuple[int, float, str]]] | None,
        qi: int,
        owner: dict[str, str],
    ) -> list[Hit]:
        cos = {h[0]: h[1] for h in dense[qi]} if dense else {}
        bm25 = {h[0]: h[1] for h in lexical[qi]} if lexical else {}
        hits = []
        for rank, (chunk_id, score, col_id) in enumerate(ranked, start=1):
            sim = cos.get(chunk_id)
            if sim is None:
                sim = self._cosine(col_id, chunk_id, query)
            hits.append(Hit(chunk_id, owner[col_id], score, sim, bm25.get(chunk_id), rank))
        return hits

    def _cosine(self, collection_id: str, chunk_id: int, query: np.ndarray) -> float:
        try:
            state = self._dense_state(collection_id, int(query.shape[-1]))
            vec = state.dense.index.reconstruct(int(chunk_id))
        except RuntimeError:
            return 0.0
        return float(np.dot(vec, query))


def _combine(
    mode: str,
    dense: list[tuple[int, float, str]],
    lexical: list[tuple[int, float, str]],
    k: int,
) -> list[tuple[int, float, str]]:
    if mode == "dense":
        return dense
    if mode == "lexical":
        return lexical
    owner = {h[0]: h[2] for h in dense + lexical}
    fused = rrf([[h[0] for h in dense], [h[0] for h in lexical]], k=k)
    return [(cid, score, owner[cid]) for cid, score in fused]


def _ids() -> np.ndarray:
    return np.zeros(0, np.int64)


def _empty(dim: int) -> np.ndarray:
    return np.zeros((0, dim), np.float32)
