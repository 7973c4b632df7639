"""Lexical index of one collection: BM25 (Lucene variant, k1=1.5, b=0.75) through ``bm25s``.

Texts are lower-cased, English stop words dropped and words Snowball-stemmed (PyStemmer). bm25s
cannot add to an index, so a change to the collection marks it stale and the next search (or
save) rebuilds it from the stored chunk texts. On disk: a folder written beside the target and
renamed into place, holding bm25s's files, the chunk ids and the generation.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path

import bm25s
import numpy as np
import Stemmer

log = logging.getLogger(__name__)
_STEMMER = Stemmer.Stemmer("english")


def _tokenize(texts: list[str]) -> list[list[str]]:
    return bm25s.tokenize(
        texts, stopwords="en", stemmer=_STEMMER, show_progress=False, return_ids=False
    )


class LexicalIndex:
    """BM25 over (chunk ids, texts). Immutable: rebuild to change."""

    def __init__(self, ids: np.ndarray, retriever: bm25s.BM25 | None) -> None:
        self.ids = np.asarray(ids, dtype=np.int64)
        self.retriever = retriever

    @classmethod
    def build(cls, ids: np.ndarray, texts: list[str]) -> LexicalIndex:
        corpus = _tokenize(texts) if len(ids) else []
        if not any(corpus):
            # Nothing indexable (no texts, or only stop words and punctuation): bm25s cannot build
            # a vocabulary from that, and lexical search has nothing to find anyway.
            return cls(ids, None)
        retriever = bm25s.BM25()
        retriever.index(corpus, show_progress=False)
        return cls(ids, retriever)

    @property
    def size(self) -> int:
        return len(self.ids)

    def search(
        self, queries: list[str], k: int, allowed: np.ndarray | None = None
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per query (chunk ids, scores) of at most ``k`` hits with a positive score.

        ``allowed`` (chunk ids) restricts the hits, e.g. to a metadata filter.
        """
        if self.retriever is None or k <= 0:
            return [(np.zeros(0, np.int64), np.zeros(0, np.float32)) for _ in queries]
        mask = None
        if allowed is not None:
            mask = np.isin(self.ids, allowed).astype(np.float32)
        top = min(k, self.size)
        rows, scores = self.retriever.retrieve(
            _tokenize(queries), k=top, show_progress=False, weight_mask=mask, n_threads=1
        )
        out = []
        for r, s in zip(rows, scores, strict=True):
            keep = s > 0
            out.append((self.ids[r[keep]], s[keep].astype(np.float32)))
        return out

    def save(self, path: Path, generation: int) -> None:
        """Write to a temporary folder and rename it over ``path``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent))
        try:
            if self.retriever is not None:
                self.retriever.save(str(tmp / "bm25"), show_progress=False)
            np.save(tmp / "ids.npy", self.ids)
            (tmp / "meta.json").write_text(
                json.dumps(
                    {
                        "generation": generation,
                        "size": self.size,
                        "indexed": self.retriever is not None,
                    }
                )
            )
            old = path.with_name(path.name + ".old")
            shutil.rmtree(old, ignore_errors=True)
            if path.exists():
                path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    @classmethod
    def load(cls, path: Path) -> tuple[LexicalIndex, int]:
        """(index, generation); raises OSError/ValueError when the folder cannot be trusted."""
        meta = json.loads((path / "meta.json").read_text())
        ids = np.load(path / "ids.npy")
        if len(ids) != int(meta["size"]):
            raise ValueError(f"{path}: {len(ids)} ids, meta says {meta['size']}")
        retriever = None
        if meta.get("indexed", len(ids) > 0):  # False when nothing was indexable
            retriever = bm25s.BM25.load(str(path / "bm25"), show_progress=False)
        return cls(ids, retriever), int(meta["generation"])
