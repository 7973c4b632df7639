"""FAISS and BM25 indexes, RRF, and the retriever's start-up rebuild from DuckDB (random vectors;
the end-to-end tests use real embeddings)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.errors import UnprocessableError
from engine.retrieval import (
    DenseIndex,
    DenseParams,
    IndexFileError,
    LexicalIndex,
    Retriever,
    rrf,
)
from engine.retrieval.dense import FLAT, HNSW
from engine.storage import NewChunk, open_store


def unit(n: int, dim: int = 384, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.mark.parametrize("threshold,kind", [(10_000, FLAT), (100, HNSW)])
def test_dense_kinds_find_exact_matches_and_forget_removed(threshold: int, kind: str) -> None:
    vecs, ids = unit(400), np.arange(1000, 1400)
    index = DenseIndex.build(ids[:50], vecs[:50], DenseParams(hnsw_threshold=threshold))
    index.add(ids[50:], vecs[50:])
    assert index.kind == kind and index.size == 400
    scores, found = index.search(vecs[:20], 3)
    assert (found[:, 0] == ids[:20]).all() and np.allclose(scores[:, 0], 1.0, atol=1e-4)
    index.remove(ids[:5])
    _, found = index.search(vecs[:5], 3)
    assert not np.isin(found, ids[:5]).any() and index.size == 395


def test_dense_file_roundtrip_and_corruption(tmp_path: Path) -> None:
    params = DenseParams(hnsw_threshold=100)
    index = DenseIndex.build(np.arange(300), unit(300), params)
    index.remove(np.array([0, 1]))
    path = tmp_path / "d.faiss"
    index.save(path, generation=7)
    loaded, generation = DenseIndex.load(path, params)
    assert generation == 7 and loaded.size == 298 and loaded.kind == HNSW
    assert sorted(loaded.ids().tolist()) == list(range(2, 300))
    data = bytearray(path.read_bytes())
    data[-50] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IndexFileError, match="checksum"):
        DenseIndex.load(path, params)
    path.write_bytes(b"junk")
    with pytest.raises(IndexFileError):
        DenseIndex.load(path, params)
    assert not list(tmp_path.glob("*.tmp"))


def test_lexical_ranks_and_masks(tmp_path: Path) -> None:
    texts = ["the cat sat on the mat", "dogs are running fast", "cats and dogs together"]
    index = LexicalIndex.build(np.array([10, 20, 30]), texts)
    (ids, scores), (none, _) = index.search(["running dog", "zebra"], 3)
    assert ids[0] == 20 and len(ids) == 2 and none.size == 0 and (scores > 0).all()
    ids, _ = index.search(["dog"], 3, allowed=np.array([30]))[0]
    assert ids.tolist() == [30]
    index.save(tmp_path / "bm25", generation=3)
    loaded, generation = LexicalIndex.load(tmp_path / "bm25")
    assert generation == 3 and loaded.search(["mat"], 1)[0][0].tolist() == [10]


def test_lexical_index_of_texts_without_indexable_words(tmp_path: Path) -> None:
    """Only stop words and punctuation: bm25s has no vocabulary; the index finds nothing."""
    index = LexicalIndex.build(np.array([1, 2]), ["the and of", "!!! ???"])
    assert index.size == 2 and index.search(["the", "anything"], 5)[1][0].size == 0
    index.save(tmp_path / "bm25", generation=1)
    loaded, _ = LexicalIndex.load(tmp_path / "bm25")
    assert loaded.search(["anything"], 5)[0][0].size == 0


def test_rrf_uses_k_and_rank() -> None:
    fused = rrf([[1, 2, 3], [3, 1]], k=60)
    assert [i for i, _ in fused] == [1, 3, 2]
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 62)


def _corpus(tmp_path: Path, n: int = 120):
    db = open_store(tmp_path / "h.duckdb")
    col = db.corpus.create_collection("default", "kb", 128, 16)
    vecs = unit(n, seed=1)
    docs = []
    for i in range(n):
        doc = db.corpus.add_document(
            col,
            client_id=f"d{i}",
            title=None,
            content_hash=str(i),
            source_type="json",
            metadata={"group": i % 3},
            n_bytes=1,
            job_id=None,
        )
        db.corpus.complete_document(
            doc, [NewChunk(f"text number {i}", 4, 0, 14)], vecs[i : i + 1], None
        )
        docs.append(doc)
    return db, col, vecs, docs


@pytest.mark.parametrize("damage", ["delete", "corrupt", "stale"])
def test_retriever_rebuilds_untrustworthy_index_at_start(tmp_path: Path, damage: str) -> None:
    db, col, vecs, docs = _corpus(tmp_path)
    params = DenseParams(hnsw_threshold=50)
    retriever = Retriever(db, tmp_path / "idx", params)
    assert retriever.open() == {col.id: "rebuilt"}  # nothing saved yet
    retriever.save_all()
    assert Retriever(db, tmp_path / "idx", params).open() == {col.id: "loaded"}
    path = tmp_path / "idx" / col.id / "dense.faiss"
    if damage == "delete":
        path.unlink()
    elif damage == "corrupt":
        path.write_bytes(path.read_bytes()[:-100])
    else:  # a change committed after the save: the file is one generation behind
        db.corpus.delete_document(docs[0])
    fresh = Retriever(db, tmp_path / "idx", params)
    assert fresh.open() == {col.id: "rebuilt"}
    hits = fresh.search([col], ["q"], vecs[1:2], 3, "dense")[0]
    assert hits[0].chunk_id == db.corpus.vectors(col.id)[0][0 if damage == "stale" else 1]
    assert fresh.stats(col.id)["vectors"] == db.corpus.collection_stats(col.id)["chunks"]
    db.close()


def test_retriever_modes_and_filters(tmp_path: Path) -> None:
    db, col, vecs, _ = _corpus(tmp_path)
    retriever = Retriever(db, tmp_path / "idx", DenseParams())
    retriever.open()
    target = 7
    for mode in ("dense", "lexical", "hybrid"):
        hits = retriever.search([col], [f"number {target}"], vecs[target : target + 1], 5, mode)[0]
        assert hits and hits[0].dense_score <= 1.0001
        if mode != "lexical":
            assert hits[0].chunk_id == target + 1
    filtered = retriever.search([col], ["text"], vecs[7:8], 50, "hybrid", {"group": 1})[0]
    chunk_group = {i + 1: i % 3 for i in range(120)}
    assert filtered and all(chunk_group[h.chunk_id] == 1 for h in filtered)
    assert retriever.search([col], ["x"], vecs[7:8], 5, "dense", {"group": 9})[0] == []
    db.close()


@pytest.mark.parametrize("where", [None, {"group": 1}])
def test_collection_of_another_embedding_size_is_a_clear_error(
    tmp_path: Path, where: dict | None
) -> None:
    """A collection embedded with a 384-dim model, opened by a server that embeds with 768."""
    db, col, vecs, _ = _corpus(tmp_path)
    Retriever(db, tmp_path / "idx", DenseParams()).open()
    wider = Retriever(db, tmp_path / "idx", DenseParams(), dim=768)
    assert wider.open() == {col.id: "loaded"}  # starting is fine; searching it is not
    with pytest.raises(UnprocessableError) as err:
        wider.search([col], ["text"], unit(1, dim=768), 3, "hybrid", where)
    assert err.value.code == "embedding_model_mismatch" and "384" in err.value.message
    with pytest.raises(UnprocessableError), wider.writing():
        wider.added(col.id, [999], unit(1, dim=768))
    with pytest.raises(UnprocessableError):  # its hits carry a dense score too
        wider.search([col], ["number 7"], unit(1, dim=768), 3, "lexical")
    empty = db.corpus.create_collection("default", "empty", 128, 16)
    assert wider.search([empty], ["q"], unit(1, dim=768), 3, "dense") == [[]]
    db.close()


def test_at_most_max_open_indexes_stay_in_memory_and_changes_survive_eviction(
    tmp_path: Path,
) -> None:
    """Three collections, room for two: the least recently used leaves (saved if changed) and
    answers the same when it is used again; a write to an evicted collection is applied once."""
    db, first, vecs, _ = _corpus(tmp_path, n=30)
    others = [db.corpus.create_collection("default", f"c{i}", 128, 16) for i in range(2)]
    retriever = Retriever(db, tmp_path / "idx", DenseParams(), max_open=2)
    retriever.open()
    for col in others:
        retriever.create(col.id)
    assert retriever.open_collections == [c.id for c in others] and retriever.evictions >= 1

    # The evicted collection is loaded again on use and answers as before.
    before = [h.chunk_id for h in retriever.search([first], ["q"], vecs[3:4], 3, "dense")[0]]
    assert before[0] == 4 and first.id in retriever.open_collections
    assert len(retriever.open_collections) == 2

    # A write to a collection that is not in memory: loaded before the commit, applied once.
    target = others[0]
    retriever.search([others[1]], ["q"], vecs[:1], 1, "dense")  # evicts `target`
    assert target.id not in retriever.open_collections
    doc = db.corpus.add_document(
        target,
        client_id="x",
        title=None,
        content_hash="x",
        source_type="json",
        metadata={},
        n_bytes=1,
        job_id=None,
    )
    with retriever.writing(target.id):
        ids = db.corpus.complete_document(doc, [NewChunk("a new text", 3, 0, 10)], vecs[:1], None)
        retriever.added(target.id, ids, vecs[:1])
    assert retriever.stats(target.id)["vectors"] == 1
    # Evicted again (saved, as it changed), then a fresh retriever loads it without a rebuild.
    retriever.search([first], ["q"], vecs[:1], 1, "dense")
    retriever.search([others[1]], ["q"], vecs[:1], 1, "dense")
    assert target.id not in retriever.open_collections
    fresh = Retriever(db, tmp_path / "idx", DenseParams(), max_open=2)
    assert fresh.open()[target.id] == "loaded"
    hits = fresh.search([target], ["new"], vecs[:1], 3, "hybrid")[0]
    assert [h.chunk_id for h in hits] == list(ids)
    db.close()
