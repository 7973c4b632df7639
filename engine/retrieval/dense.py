"""Dense index of one collection: FAISS ``IndexIDMap2`` whose ids are chunk ids.

Exact inner product (``IndexFlatIP``) below ``hnsw_threshold`` vectors, HNSW above; vectors are
L2-normalized, so inner product is cosine similarity. HNSW cannot remove vectors: removed ids
become tombstones, filtered out of results and dropped at the next compaction (on save, or when
they pass a fifth of the index). With faiss-gpu and a visible GPU, a flat index is searched on
the GPU (a copy; the CPU index stays the one saved).

On disk an index is one file: ``HRTHIDX1``, an 8-byte header length, a JSON header (generation,
size, kind, dim, sha256 of the body) and FAISS's serialized index, written to a temporary file,
fsynced and renamed into place, so a reader sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

log = logging.getLogger(__name__)

MAGIC = b"HRTHIDX1"
FLAT, HNSW = "flat", "hnsw"


class IndexFileError(RuntimeError):
    """An index file is missing, truncated, corrupt or of another format."""


@dataclass(frozen=True)
class DenseParams:
    hnsw_threshold: int = 50_000
    hnsw_m: int = 32
    ef_construction: int = 200
    ef_search: int = 256
    use_gpu: bool = False


def gpu_available() -> bool:
    """True when the faiss build has GPU support and sees at least one GPU."""
    get = getattr(faiss, "get_num_gpus", None)
    return bool(get and get() > 0)


class DenseIndex:
    """One collection's vectors. Not thread-safe: the caller serializes writes with searches."""

    def __init__(self, dim: int, params: DenseParams, kind: str | None = None) -> None:
        self.dim = dim
        self.params = params
        self.kind = kind or FLAT
        self.index = self._empty(self.kind)
        self.tombstones: set[int] = set()
        self._gpu: object | None = None

    def _empty(self, kind: str) -> faiss.IndexIDMap2:
        if kind == HNSW:
            inner = faiss.IndexHNSWFlat(self.dim, self.params.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = self.params.ef_construction
            inner.hnsw.efSearch = self.params.ef_search
        else:
            inner = faiss.IndexFlatIP(self.dim)
        return faiss.IndexIDMap2(inner)

    @classmethod
    def build(cls, ids: np.ndarray, vectors: np.ndarray, params: DenseParams) -> DenseIndex:
        """A fresh index over (ids int64 (n,), vectors float32 (n, dim)); kind chosen by size."""
        dim = vectors.shape[1] if vectors.ndim == 2 and vectors.shape[1] else 384
        kind = HNSW if len(ids) > params.hnsw_threshold else FLAT
        index = cls(dim, params, kind)
        index._add(ids, vectors)
        return index

    @property
    def size(self) -> int:
        """Live vectors (tombstones excluded)."""
        return int(self.index.ntotal) - len(self.tombstones)

    def ids(self) -> np.ndarray:
        stored = faiss.vector_to_array(self.index.id_map).astype(np.int64)
        if self.tombstones:
            stored = stored[~np.isin(stored, list(self.tombstones))]
        return stored

    # ---- writes ---------------------------------------------------------------------------

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add vectors; past the threshold a flat index is rebuilt as HNSW."""
        if len(ids) == 0:
            return
        if self.kind == FLAT and self.size + len(ids) > self.params.hnsw_threshold:
            old_ids, old_vecs = self.contents()
            self.kind = HNSW
            self.index = self._empty(HNSW)
            self.tombstones.clear()
            self._add(old_ids, old_vecs)
            log.info("index switched to HNSW at %d vectors", self.size + len(ids))
        self._add(ids, vectors)

    def _add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):
            self.index.add_with_ids(
                np.ascontiguousarray(vectors, dtype=np.float32),
                np.ascontiguousarray(ids, dtype=np.int64),
            )
        self._gpu = None

    def remove(self, ids: np.ndarray) -> None:
        if len(ids) == 0:
            return
        if self.kind == FLAT:
            self.index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64))
        else:
            self.tombstones.update(int(i) for i in ids)
            if len(self.tombstones) * 5 > max(int(self.index.ntotal), 1):
                self.compact()
        self._gpu = None

    def contents(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of the live entries, read back from the index."""
        n = int(self.index.ntotal)
        if n == 0:
            return np.zeros(0, np.int64), np.zeros((0, self.dim), np.float32)
        ids = faiss.vector_to_array(self.index.id_map).astype(np.int64)
        vecs = self.index.index.reconstruct_n(0, n)
        if self.tombstones:
            keep = ~np.isin(ids, list(self.tombstones))
            ids, vecs = ids[keep], vecs[keep]
        return ids, vecs

    def compact(self) -> None:
        """Rebuild without tombstones (HNSW only; flat removes in place)."""
        if not self.tombstones:
            return
        ids, vecs = self.contents()
        self.tombstones.clear()
        self.index = self._empty(self.kind)
        self._add(ids, vecs)

    # ---- search ---------------------------------------------------------------------------

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` per query: (scores float32 (m, k), ids int64 (m, k)); missing slots are -1."""
        m = len(queries)
        if self.size == 0 or k <= 0:
            return np.zeros((m, max(k, 0)), np.float32), np.full((m, max(k, 0)), -1, np.int64)
        fetch = min(k + len(self.tombstones), int(self.index.ntotal))
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        scores, ids = self._search(queries, fetch)
        if self.tombstones:
            scores, ids = _drop(scores, ids, self.tombstones, k)
        return _pad(scores[:, :k], ids[:, :k], k)

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self.kind == FLAT and self.params.use_gpu and gpu_available():
            return self._search_gpu(queries, k)
        return self.index.search(queries, k)

    def _search_gpu(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self._gpu is None:
            resources = faiss.StandardGpuResources()
            self._gpu = faiss.index_cpu_to_gpu(resources, 0, self.index.index)
        scores, rows = self._gpu.search(queries, k)  # type: ignore[attr-defined]
        id_map = faiss.vector_to_array(self.index.id_map).astype(np.int64)
        return scores, np.where(rows >= 0, id_map[np.maximum(rows, 0)], -1)

    # ---- files ----------------------------------------------------------------------------

    def save(self, path: Path, generation: int) -> None:
        """Write atomically (temp file, fsync, rename) with the generation it reflects."""
        self.compact()
        body = faiss.serialize_index(self.index).tobytes()
        header = json.dumps(
            {
                "generation": generation,
                "size": self.size,
                "kind": self.kind,
                "dim": self.dim,
                "sha256": hashlib.sha256(body).hexdigest(),
            }
        ).encode()
        atomic_write(path, [MAGIC, struct.pack("<Q", len(header)), header, body])

    @classmethod
    def load(cls, path: Path, params: DenseParams) -> tuple[DenseIndex, int]:
        """(index, generation) from ``path``; IndexFileError when it cannot be trusted."""
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise IndexFileError(f"{path}: {exc.strerror}") from None
        header, body = _split(path, data)
        if hashlib.sha256(body).hexdigest() != header.get("sha256"):
            raise IndexFileError(f"{path}: checksum mismatch (corrupt file)")
        try:
            raw = faiss.deserialize_index(np.frombuffer(body, dtype=np.uint8))
            index = cls(int(header["dim"]), params, str(header["kind"]))
            if not isinstance(raw, faiss.IndexIDMap2):
                raise IndexFileError(f"{path}: not an IndexIDMap2")
            index.index = raw
        except (RuntimeError, KeyError, ValueError) as exc:
            raise IndexFileError(f"{path}: unreadable index ({exc})") from None
        if index.kind == HNSW:
            faiss.downcast_index(index.index.index).hnsw.efSearch = params.ef_search
        if index.size != int(header["size"]):
            raise IndexFileError(
                f"{path}: holds {index.size} vectors, header says {header['size']}"
            )
        return index, int(header["generation"])


def _split(path: Path, data: bytes) -> tuple[dict, bytes]:
    if len(data) < 16 or data[:8] != MAGIC:
        raise IndexFileError(f"{path}: not a Hearth index file")
    (n,) = struct.unpack("<Q", data[8:16])
    try:
        header = json.loads(data[16 : 16 + n])
    except ValueError:
        raise IndexFileError(f"{path}: corrupt header") from None
    return header, data[16 + n :]


def atomic_write(path: Path, parts: list[bytes]) -> None:
    """Write ``parts`` to ``path`` so that readers see the old or the new file, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            for part in parts:
                fh.write(part)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _drop(
    scores: np.ndarray, ids: np.ndarray, dead: set[int], k: int
) -> tuple[np.ndarray, np.ndarray]:
    out_s = np.full((len(ids), k), -np.inf, np.float32)
    out_i = np.full((len(ids), k), -1, np.int64)
    for row in range(len(ids)):
        keep = [j for j in range(ids.shape[1]) if ids[row, j] >= 0 and int(ids[row, j]) not in dead]
        keep = keep[:k]
        out_s[row, : len(keep)] = scores[row, keep]
        out_i[row, : len(keep)] = ids[row, keep]
    return out_s, out_i


def _pad(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    if ids.shape[1] >= k:
        return scores, ids
    extra = k - ids.shape[1]
    return (
        np.pad(scores, ((0, 0), (0, extra)), constant_values=-np.inf),
        np.pad(ids, ((0, 0), (0, extra)), constant_values=-1),
    )


def exact_search(
    queries: np.ndarray, ids: np.ndarray, vectors: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top ``k`` over an explicit set (used under metadata filters)."""
    if len(ids) == 0:
        return _pad(np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0)), k)
    sims = queries @ vectors.T  # (m, n)
    top = min(k, len(ids))
    part = np.argpartition(-sims, top - 1, axis=1)[:, :top]
    order = np.take_along_axis(sims, part, 1).argsort(axis=1)[:, ::-1]
    rows = np.take_along_axis(part, order, 1)
    return _pad(np.take_along_axis(sims, rows, 1).astype(np.float32), ids[rows], k)
