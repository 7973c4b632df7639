"""Embedding throughput and retrieval quality of the CPU embedding runtimes, on the same texts.

Speed: the same SciFact passages embedded by each runtime (``torch`` = sentence-transformers
fp32, ``onnx-int8``, ``onnx-fp32``), interleaved A/B/C over ``--rounds`` so a shared machine's
drift hits every runtime alike; passages/s of wall time and per CPU-second (process CPU time, all
threads), pooled over rounds, with the ratio of each runtime over ``torch``. Quality: SciFact
nDCG@10 of the queries of ``--split`` in dense and hybrid mode, through Hearth's own ingestion
(chunker, DuckDB, FAISS, BM25) and retrieval, one fresh data directory per runtime.

    python -m benchmarks.embed_cpu PATH/TO/scifact --passages 512 --rounds 3 --split train

Each result is one JSON line (``benchmarks.report`` format) on stdout and in ``--results``
(default ``benchmarks/results/ingestion_cpu.jsonl``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.report import append_result, result_row
from benchmarks.retrieval_scifact import CHUNK_DEPTH, _evaluate, load_beir

RESULTS = Path(__file__).resolve().parent / "results" / "ingestion_cpu.jsonl"
RUNTIMES = ("torch", "onnx-int8", "onnx-fp32")


def measure_speed(args: argparse.Namespace, texts: list[str]) -> None:
    from engine.embeddings import Embedder

    embedders = {
        r: Embedder.load(args.models_dir, args.model, threads=args.threads, runtime=r)
        for r in args.runtimes
    }
    for e in embedders.values():
        e.encode(texts[: args.batch])  # warm up: first-call allocations
    wall = dict.fromkeys(embedders, 0.0)
    cpu = dict.fromkeys(embedders, 0.0)
    for _ in range(args.rounds):
        for runtime, e in embedders.items():
            w, c = time.perf_counter(), time.process_time()
            e.encode(texts)
            wall[runtime] += time.perf_counter() - w
            cpu[runtime] += time.process_time() - c
    n = len(texts) * args.rounds
    tokens = sum(min(t, 256) for t in embedders[args.runtimes[0]].count_tokens(texts))
    base = args.runtimes[0]
    for runtime in embedders:
        figures = {
            "passages_per_s": round(n / wall[runtime], 2),
            "passages_per_cpu_s": round(n / cpu[runtime], 2),
            f"ratio_wall_vs_{base}": round(wall[base] / wall[runtime], 3),
            f"ratio_cpu_vs_{base}": round(cpu[base] / cpu[runtime], 3),
        }
        settings = {
            "runtime": runtime,
            "passages": len(texts),
            "mean_word_pieces": round(tokens / len(texts), 1),
            "rounds": args.rounds,
            "threads": args.threads,
            "batch_size": 32,
            "interleaved": True,
        }
        emit(args, "embed_cpu_speed", runtime, settings, figures)


async def measure_quality(args: argparse.Namespace, runtime: str) -> None:
    from configs import load_settings
    from engine import DocumentInput
    from engine.app import open_corpus
    from engine.embeddings import Embedder

    corpus, queries, qrels = load_beir(args.data, args.split)
    if args.max_queries:
        queries = dict(list(queries.items())[: args.max_queries])
    data_dir = Path(tempfile.mkdtemp(prefix="hearth-embed-"))
    overrides = {"retrieval": {"max_top_k": CHUNK_DEPTH}}
    settings = load_settings(args.profile, env={}, data_dir=data_dir, overrides=overrides)
    embedder = Embedder.load(args.models_dir, args.model, threads=args.threads, runtime=runtime)
    svc = await open_corpus(settings, embedder)
    await svc.documents.create_collection("default", "scifact")
    items = [
        DocumentInput(text=d["text"] or d["title"], client_id=d["_id"], title=d["title"] or None)
        for d in corpus
    ]
    start = time.perf_counter()
    job = await svc.documents.submit("default", "scifact", items)
    job = await svc.jobs.wait("default", job.id)
    ingest_s = time.perf_counter() - start
    chunks = sum(r.get("chunks", 0) for r in job.result or [])
    figures: dict[str, Any] = {
        "ingest_s": round(ingest_s, 1),
        "chunks_per_s": round(chunks / ingest_s, 1),
    }
    for mode in ("dense", "hybrid"):
        result = await _evaluate(svc, queries, qrels, mode)
        figures[f"{mode}_ndcg@10"] = result["ndcg@10"]
    await svc.close()
    settings_row = {
        "runtime": runtime,
        "split": args.split,
        "documents": len(corpus),
        "queries": len(queries),
        "chunks": chunks,
        "threads": args.threads,
        "profile": args.profile,
    }
    emit(args, "embed_cpu_quality", runtime, settings_row, figures)


def emit(args: argparse.Namespace, name: str, runtime: str, settings: dict, figures: dict) -> None:
    backend = "sentence-transformers" if runtime == "torch" else "onnxruntime"
    row = result_row(name, model=args.model, backend=backend, settings=settings, figures=figures)
    append_result(row, args.results)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "data", type=Path, help="BEIR SciFact folder: corpus.jsonl, queries.jsonl, qrels/"
    )
    p.add_argument("--models-dir", type=Path, default=None, help="default: HEARTH_MODELS_DIR")
    p.add_argument("--model", default="all-minilm-l6-v2")
    p.add_argument("--runtimes", nargs="+", default=list(RUNTIMES), choices=RUNTIMES)
    p.add_argument("--passages", type=int, default=512, help="passages timed per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--split", default="train")
    p.add_argument("--max-queries", type=int, default=0)
    p.add_argument("--profile", default="cpu")
    p.add_argument(
        "--quality",
        nargs="*",
        default=["torch", "onnx-int8"],
        choices=RUNTIMES,
        help="runtimes whose SciFact nDCG@10 is measured (none: speed only)",
    )
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--results", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.models_dir is None:
        from configs import load_settings

        args.models_dir = load_settings(args.profile).models_dir
    corpus = [json.loads(line) for line in (args.data / "corpus.jsonl").open()]
    texts = [d["text"] or d["title"] for d in corpus[: args.passages]]
    if not args.skip_speed:
        measure_speed(args, texts)
    for runtime in args.quality:
        asyncio.run(measure_quality(args, runtime))


if __name__ == "__main__":
    main()
