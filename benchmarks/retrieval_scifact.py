"""Retrieval quality and speed on BEIR SciFact, through Hearth's own ingestion and retrieval.

Ingests the corpus (client ids = SciFact doc ids, titles kept) with the real chunker and the
embedding model ``--model`` (default the profile's; its query/document prompts applied),
then runs every query in each mode and reports, per mode, nDCG@10, Recall@100 and MRR@10
(document level: a document's rank is that of its best chunk), query latency p50/p95 (one query
at a time, embedding included), plus ingestion throughput (chunks/s) and index build times. With
``--synthetic N`` it instead measures exact vs HNSW search over N synthetic 384-d vectors
(clustered, like real embeddings): build time, latency and HNSW recall@10 against exact.

    python -m benchmarks.retrieval_scifact ../shared/datasets/scifact --split train
    python -m benchmarks.retrieval_scifact DATA/scifact --split train --model embeddinggemma-300m \
        --max-queries 60 --docs 400     # a subset: the queries' relevant documents + distractors
    python -m benchmarks.retrieval_scifact --synthetic 1000000

Each result is one JSON line (``benchmarks.report`` format) on stdout and in ``--results``.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import logging
import math
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.report import append_result, distribution, result_row

log = logging.getLogger(__name__)
MODES = ("dense", "lexical", "hybrid")
CHUNK_DEPTH = 300  # chunks fetched per query, folded into >= 100 distinct documents


def load_beir(path: Path, split: str) -> tuple[list[dict], dict[str, str], dict[str, set[str]]]:
    corpus = [json.loads(line) for line in (path / "corpus.jsonl").open()]
    queries = {q["_id"]: q["text"] for q in map(json.loads, (path / "queries.jsonl").open())}
    qrels: dict[str, set[str]] = defaultdict(set)
    with (path / "qrels" / f"{split}.tsv").open() as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            if int(row["score"]) > 0:
                qrels[row["query-id"]].add(row["corpus-id"])
    return corpus, {q: t for q, t in queries.items() if q in qrels}, qrels


def ndcg_at(ranked: list[str], relevant: set[str], k: int = 10) -> float:
    dcg = sum(1 / math.log2(i + 2) for i, d in enumerate(ranked[:k]) if d in relevant)
    ideal = sum(1 / math.log2(i + 2) for i in range(min(len(relevant), k)))
    return dcg / ideal if ideal else 0.0


def recall_at(ranked: list[str], relevant: set[str], k: int = 100) -> float:
    return len(set(ranked[:k]) & relevant) / len(relevant)


def mrr_at(ranked: list[str], relevant: set[str], k: int = 10) -> float:
    return next((1 / (i + 1) for i, d in enumerate(ranked[:k]) if d in relevant), 0.0)


def documents(hits: list[Any]) -> list[str]:
    """Chunk hits (best first) -> distinct document ids in order of their best chunk."""
    return list(dict.fromkeys(h.document_id for h in hits))


async def run_scifact(args: argparse.Namespace) -> None:
    from configs import load_settings
    from engine import DocumentInput
    from engine.app import open_corpus
    from engine.embeddings import Embedder

    corpus, queries, qrels = load_beir(args.data, args.split)
    if args.max_queries:
        queries = dict(list(queries.items())[: args.max_queries])
    if args.docs:
        corpus = subset(corpus, queries, qrels, args.docs)
    data_dir = Path(args.data_dir or tempfile.mkdtemp(prefix="hearth-scifact-"))
    overrides: dict[str, dict[str, Any]] = {"retrieval": {"max_top_k": CHUNK_DEPTH}}
    if args.model:
        overrides["embeddings"] = {"model": args.model}
    if args.runtime:
        overrides.setdefault("embeddings", {})["runtime"] = args.runtime
    settings = load_settings(args.profile, env={}, data_dir=data_dir, overrides=overrides)
    args.model = settings.embeddings.model
    embedder = Embedder.load(
        settings.models_dir if args.models_dir is None else args.models_dir,
        settings.embeddings.model,
        threads=args.threads,
        runtime=settings.embeddings.runtime,
    )
    svc = await open_corpus(settings, embedder)
    if not any(c.name == "scifact" for c in await svc.documents.list_collections("default")):
        await svc.documents.create_collection("default", "scifact")
    items = [
        DocumentInput(text=d["text"] or d["title"], client_id=d["_id"], title=d["title"] or None)
        for d in corpus
    ]
    start = time.perf_counter()
    job = await svc.documents.submit("default", "scifact", items)
    job = await svc.jobs.wait("default", job.id)
    ingest_s = time.perf_counter() - start
    col = await svc.documents.get_collection("default", "scifact")
    stats = await svc.documents.collection_stats(col)
    build = _index_build_times(svc, col)
    common = {
        "split": args.split,
        "documents": len(corpus),
        "queries": len(queries),
        "chunks": stats["chunks"],
        "chunk_tokens": col.chunk_tokens,
        "chunk_overlap": col.chunk_overlap,
        "profile": args.profile,
        "runtime": embedder.runtime,
        "corpus": "subset" if args.docs else "full",
    }
    made = [r for r in job.result or [] if r["outcome"] in ("created", "replaced")]
    new_chunks = sum(r.get("chunks", 0) for r in made)
    ingest_figures = {
        "ingest_s": round(ingest_s, 2),
        "documents_ingested": len(made),  # fewer than all on a resumed run (kept --data-dir)
        "chunks_ingested": new_chunks,
        "chunks_per_s": round(new_chunks / ingest_s, 1),
        "passages_per_s": round(len(made) / ingest_s, 2),
        "documents_failed": job.failed,
        **build,
    }
    if made:  # a rerun on a kept --data-dir may ingest nothing: then no figures
        emit(args, "retrieval_ingest", common, ingest_figures)
    for mode in args.modes:
        figures = await _evaluate(svc, queries, qrels, mode)
        emit(args, "retrieval_scifact", common | {"mode": mode}, figures)
    await svc.close()


def subset(
    corpus: list[dict], queries: dict[str, str], qrels: dict[str, set[str]], n: int
) -> list[dict]:
    """The documents relevant to ``queries`` plus the first others of the corpus, ``n`` in all
    (a cheaper run for a slow model; its scores are higher than the full corpus', compare models
    on the same subset only)."""
    relevant = set().union(*(qrels[q] for q in queries)) if queries else set()
    others = [d for d in corpus if d["_id"] not in relevant]
    keep = relevant | {d["_id"] for d in others[: max(0, n - len(relevant))]}
    return [d for d in corpus if d["_id"] in keep]


def _index_build_times(svc: Any, col: Any) -> dict[str, float]:
    from engine.retrieval import DenseIndex, LexicalIndex

    db = svc.db
    ids, vecs = db.corpus.vectors(col.id)
    start = time.perf_counter()
    DenseIndex.build(ids, vecs, svc.retrieval.index.params)
    dense_s = time.perf_counter() - start
    ids, texts = db.corpus.chunk_texts(col.id)
    start = time.perf_counter()
    LexicalIndex.build(ids, texts)
    return {
        "dense_build_s": round(dense_s, 3),
        "bm25_build_s": round(time.perf_counter() - start, 3),
    }


async def _evaluate(
    svc: Any, queries: dict[str, str], qrels: dict[str, set[str]], mode: str
) -> dict[str, Any]:
    ndcg, recall, mrr, latency = [], [], [], []
    await svc.retrieval.retrieve("default", ["scifact"], ["warm up"], 10, mode)
    for qid, text in queries.items():
        start = time.perf_counter()
        hits = (await svc.retrieval.retrieve("default", ["scifact"], [text], CHUNK_DEPTH, mode))[0]
        latency.append(time.perf_counter() - start)
        ranked = documents(hits)
        ndcg.append(ndcg_at(ranked, qrels[qid]))
        recall.append(recall_at(ranked, qrels[qid]))
        mrr.append(mrr_at(ranked, qrels[qid]))
    lat = distribution(latency)
    return {
        "ndcg@10": round(float(np.mean(ndcg)), 4),
        "recall@100": round(float(np.mean(recall)), 4),
        "mrr@10": round(float(np.mean(mrr)), 4),
        "query_p50_ms": lat.get("median"),
        "query_p95_ms": lat.get("p95"),
    }


def synthetic(n: int, dim: int, seed: int, clusters: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """N unit vectors around ``clusters`` random centres (noise 0.6 of the centre's norm), and
    1,000 queries drawn the same way."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    out = np.empty((n, dim), np.float32)
    step = 100_000
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        pick = rng.integers(0, clusters, hi - lo)
        block = centres[pick] + 0.6 * rng.standard_normal((hi - lo, dim)).astype(np.float32)
        out[lo:hi] = block / np.linalg.norm(block, axis=1, keepdims=True)
    q = centres[rng.integers(0, clusters, 1000)]
    q = q + 0.6 * rng.standard_normal(q.shape).astype(np.float32)
    return out, (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def run_synthetic(args: argparse.Namespace) -> None:
    import faiss

    faiss.omp_set_num_threads(args.threads)
    vecs, queries = synthetic(args.synthetic, 384, args.seed)
    queries = queries[: args.synthetic_queries]
    ids = np.arange(len(vecs), dtype=np.int64)
    exact = _exact_top10(vecs, queries)
    for kind in args.kinds:
        index, build_s = _build(kind, ids, vecs, args)
        for ef in args.ef_search if kind == "hnsw" else args.ef_search[:1]:
            if kind == "hnsw":
                faiss.downcast_index(index.index.index).hnsw.efSearch = ef
            latency, found = [], []
            for q in queries:
                t = time.perf_counter()
                _, hit = index.search(q[None, :], 10)
                latency.append(time.perf_counter() - t)
                found.append(hit[0])
            pairs = zip(found, exact, strict=True)
            recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in pairs]))
            lat = distribution(latency)
            figures = {
                "build_s": round(build_s, 1),
                "query_p50_ms": lat.get("median"),
                "query_p95_ms": lat.get("p95"),
                "recall@10_vs_exact": round(recall, 4),
            }
            settings = {
                "vectors": len(vecs),
                "dim": 384,
                "index": kind,
                "threads": args.threads,
                "queries": len(found),
                "hnsw_m": args.hnsw_m,
                "ef_construction": args.ef_construction,
                "ef_search": ef if kind == "hnsw" else None,
            }
            emit(args, "retrieval_synthetic", settings, figures)
        del index


def _exact_top10(vecs: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Exact top 10 ids per query, by blocks of a plain matrix product (the ground truth)."""
    best_s = np.full((len(queries), 10), -np.inf, np.float32)
    best_i = np.zeros((len(queries), 10), np.int64)
    for lo in range(0, len(vecs), 200_000):
        sims = queries @ vecs[lo : lo + 200_000].T
        top = np.argpartition(-sims, 9, axis=1)[:, :10]
        cand_s = np.concatenate([best_s, np.take_along_axis(sims, top, 1)], axis=1)
        cand_i = np.concatenate([best_i, top + lo], axis=1)
        keep = np.argsort(-cand_s, axis=1)[:, :10]
        best_s, best_i = np.take_along_axis(cand_s, keep, 1), np.take_along_axis(cand_i, keep, 1)
    return best_i


def _build(kind: str, ids: np.ndarray, vecs: np.ndarray, args: argparse.Namespace):
    from engine.retrieval import DenseIndex, DenseParams

    params = DenseParams(
        hnsw_threshold=len(vecs) + 1 if kind == "flat" else 0,
        hnsw_m=args.hnsw_m,
        ef_construction=args.ef_construction,
        ef_search=args.ef_search[0],
    )
    start = time.perf_counter()
    index = DenseIndex.build(ids, vecs, params)
    return index, time.perf_counter() - start


def emit(args: argparse.Namespace, name: str, settings: dict[str, Any], figures: dict[str, Any]):
    model = getattr(args, "model", None) or "all-minilm-l6-v2"
    row = result_row(name, model=model, backend="faiss+bm25s", settings=settings, figures=figures)
    append_result(row, args.results)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "data", nargs="?", type=Path, help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/"
    )
    p.add_argument("--split", default="test", help="qrels file to use (qrels/<split>.tsv)")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--profile", default="cpu")
    p.add_argument("--data-dir", type=Path, help="Hearth data dir (default: a temporary one)")
    p.add_argument("--models-dir", type=Path)
    p.add_argument("--max-queries", type=int, default=0)
    p.add_argument("--model", help="embedding model card id (default: the profile's)")
    p.add_argument("--runtime", choices=["torch", "onnx-int8", "onnx-fp32"], help="embeddings")
    p.add_argument(
        "--docs", type=int, default=0, help="a corpus subset: relevant documents + distractors"
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--results", type=Path, help="append result lines to this JSONL file")
    p.add_argument("--synthetic", type=int, default=0, help="run the N-vector exact/HNSW test")
    p.add_argument("--synthetic-queries", type=int, default=200)
    p.add_argument("--kinds", nargs="+", default=["flat", "hnsw"], choices=["flat", "hnsw"])
    p.add_argument("--hnsw-m", type=int, default=32)
    p.add_argument("--ef-construction", type=int, default=100)
    p.add_argument("--ef-search", type=int, nargs="+", default=[128], help="HNSW: each is measured")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.synthetic:
        run_synthetic(args)
    elif args.data is None:
        p.error("give the BEIR data folder, or --synthetic N")
    else:
        asyncio.run(run_scifact(args))


if __name__ == "__main__":
    main()
