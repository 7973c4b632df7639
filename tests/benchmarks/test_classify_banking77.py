"""The Banking77 benchmark's pieces on synthetic vectors: the self-chosen threshold follows
``--keep``, the abstention curve and the latency line (no model, no data file)."""

from __future__ import annotations

import argparse

import numpy as np

from benchmarks import classify_banking77 as bench
from engine.tasks.classify import DEFAULT_KEEP


def _data(n_per_label: int = 20) -> tuple[list[str], list[str], np.ndarray]:
    """Three labels whose vectors overlap (some held-back predictions are unsure)."""
    rng = np.random.default_rng(0)
    centers = np.eye(3, 8, dtype=np.float32)
    labels = [name for name in ("a", "b", "c") for _ in range(n_per_label)]
    vectors = np.vstack([centers[i] + rng.normal(0, 0.6, (n_per_label, 8)) for i in range(3)])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    texts = [f"text {i}" for i in range(len(labels))]
    return texts, labels, vectors.astype(np.float32)


def _args(keep: float) -> argparse.Namespace:
    return argparse.Namespace(no_ngrams=True, keep=keep, seed=0, embedding_model="test-encoder")


def test_keep_sets_the_self_chosen_threshold() -> None:
    texts, labels, vectors = _data()
    idx = np.arange(len(labels))
    strict, _ = bench.train(texts, labels, vectors, idx, _args(0.5))
    lenient, _ = bench.train(texts, labels, vectors, idx, _args(0.99))
    assert strict.threshold > lenient.threshold


def test_abstention_curve_answers_the_most_confident_first() -> None:
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.55, 0.45]])
    correct = np.array([True, True, False, False])
    curve = bench.abstention_curve(probs, correct)
    assert curve["acc_at_100pct_answered"] == 0.5
    assert curve["acc_at_50pct_answered"] == 1.0


class _Embedder:
    def encode(self, texts: list[str]) -> np.ndarray:
        return np.ones((len(texts), 8), dtype=np.float32) / np.sqrt(8)


def test_latency_line_reports_the_median_of_one_classify() -> None:
    texts, labels, vectors = _data(5)
    model, _ = bench.train(texts, labels, vectors, np.arange(len(labels)), _args(DEFAULT_KEEP))
    figures = bench.run_latency(model, _Embedder(), texts, 7)
    assert figures["samples"] == 7
    assert figures["classify_p50_ms"] == figures["classify_one"]["median"]
    assert figures["classify_one"]["median"] >= figures["head_one"]["median"]


def test_test_file_trains_on_all_of_train_csv_and_tests_on_it(tmp_path) -> None:
    """With ``--test-file`` nothing is split: every training row trains, every test row tests
    (real MiniLM embeddings, a small CSV pair shaped like Banking77's)."""
    import csv
    import json

    from tests.engine.tasks.fixtures_tasks import IN_SCOPE_PROBES, examples
    from tests.support import ensure_models

    def write(path, rows) -> None:
        with path.open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["text", "category"])
            w.writerows(rows)

    train_rows = [(e.text, e.label) for e in examples()]
    write(tmp_path / "train.csv", train_rows)
    write(tmp_path / "test.csv", list(IN_SCOPE_PROBES.items()))
    out = tmp_path / "rows.jsonl"
    argv = [str(tmp_path), "--test-file", str(tmp_path / "test.csv"), "--parts", "inscope"]
    bench.main([*argv, "--results", str(out), "--models-dir", str(ensure_models())])
    row = json.loads(out.read_text().splitlines()[0])
    assert row["model"] == "all-minilm-l6-v2" and row["settings"]["split"] == "official test file"
    figures = row["figures"]
    assert figures["train_examples"] == len(train_rows)
    assert figures["test_examples"] == len(IN_SCOPE_PROBES)
    assert figures["accuracy"] == 1.0
