"""FAISS device selection, and GPU/CPU agreement on a fixed set (the latter needs a GPU)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from engine.retrieval.device import faiss_gpu_count, select_faiss_device


def test_auto_picks_what_faiss_sees_and_logs_it(caplog):
    with caplog.at_level(logging.INFO, logger="engine.retrieval.device"):
        device = select_faiss_device("auto")
    assert device == ("gpu" if faiss_gpu_count() else "cpu")
    assert f"on the {device}" in caplog.text


def test_cpu_is_always_possible():
    assert select_faiss_device("cpu") == "cpu"


def test_gpu_without_one_and_unknown_names_fail():
    if faiss_gpu_count() == 0:
        with pytest.raises(ValueError, match="no GPU"):
            select_faiss_device("gpu")
    with pytest.raises(ValueError, match="expected one of"):
        select_faiss_device("tpu")


@pytest.mark.gpu
def test_gpu_and_cpu_flat_search_agree():
    if faiss_gpu_count() == 0:
        pytest.skip("faiss sees no GPU")
    from engine.retrieval.dense import DenseIndex, DenseParams

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((5000, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[:20] + 0.01 * rng.standard_normal((20, 384)).astype(np.float32)
    ids = np.arange(10_000, 15_000, dtype=np.int64)
    cpu = DenseIndex.build(ids, vectors, DenseParams(use_gpu=False))
    gpu = DenseIndex.build(ids, vectors, DenseParams(use_gpu=True))
    cs, ci = cpu.search(queries, 10)
    gs, gi = gpu.search(queries, 10)
    np.testing.assert_allclose(gs, cs, atol=1e-4)
    assert (gi[:, 0] == ci[:, 0]).all()
