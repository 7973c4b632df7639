"""The ONNX runtimes of the embedder: ``install-models`` exports MiniLM offline into the models
directory (fp32 and per-channel int8, with a sha256 manifest), and the ONNX embedder gives the same
dimension, unit rows and per-sentence cosine >= 0.98 to sentence-transformers (fp32 torch)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.embeddings import Embedder
from models import get_card, install_model
from models.onnx_export import ONNX_FILES, OnnxExportError, onnx_dir, verify_onnx
from tests.support import LLM, MODELS_DIR, ROOT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

MINILM = "all-minilm-l6-v2"
SENTENCES = [
    "The cat sat on the mat.",
    "Aspirin lowers the risk of a first heart attack in adults over fifty.",
    "DNA replication is semi-conservative.",
    "x",
    "Glucocorticoid receptor signalling modulates inflammation in macrophages. " * 30,
    "Quarterly tax filings are due in April; late filings pay a penalty.",
    "Ünïcödé text, numbers 3.14159 and symbols ✓ → ∞",
    "Mutations in BRCA1 increase the lifetime risk of breast and ovarian cancer.",
]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh models directory holding the test models (links) and nothing exported yet, then
    ``install-models`` run on it with the ONNX int8 runtime, offline."""
    for model_id in (LLM, MINILM):
        install_model(get_card(model_id), MODELS_DIR)
    fresh = tmp_path_factory.mktemp("models")
    for model_id in (LLM, MINILM):
        top = Path(get_card(model_id).file).parts[0]
        (fresh / top).symlink_to(MODELS_DIR / top)
    env = dict(
        os.environ,
        HEARTH_MODELS_DIR=str(fresh),
        HEARTH_EMBEDDINGS_RUNTIME="onnx-int8",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        PYTHONPATH=str(ROOT),
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "server",
            "install-models",
            "--profile",
            "test",
            "--data-dir",
            str(fresh.parent / "data"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return fresh


def test_install_models_exports_both_onnx_files_with_a_manifest(models: Path) -> None:
    card = get_card(MINILM)
    out = onnx_dir(card, models)
    for runtime, name in ONNX_FILES.items():
        assert verify_onnx(card, models, runtime) == out / name
    # the MatMul weights are int8 (the embeddings and fused attention weights stay fp32)
    assert (out / ONNX_FILES["onnx-int8"]).stat().st_size < 0.9 * (
        out / ONNX_FILES["onnx-fp32"]
    ).stat().st_size


@pytest.mark.parametrize("runtime", ["onnx-int8", "onnx-fp32"])
def test_onnx_embedder_matches_sentence_transformers(models: Path, runtime: str) -> None:
    reference = Embedder.load(models, MINILM, threads=1)
    onnx = Embedder.load(models, MINILM, threads=1, runtime=runtime)
    assert onnx.runtime == runtime and reference.runtime == "torch"
    assert onnx.dim == reference.dim == 384
    assert onnx.max_seq_length == reference.max_seq_length
    a, b = reference.encode(SENTENCES), onnx.encode(SENTENCES)
    assert b.shape == a.shape and b.dtype == np.float32
    assert np.allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    cosine = (a * b).sum(axis=1)
    assert cosine.min() >= (0.98 if runtime == "onnx-int8" else 0.9999), cosine
    # the same tokenizer counts the same word pieces
    assert onnx.count_tokens(SENTENCES) == reference.count_tokens(SENTENCES)


def test_an_altered_onnx_file_is_refused(models: Path, tmp_path: Path) -> None:
    card = get_card(MINILM)
    copy = tmp_path / "models"
    (copy / "onnx").mkdir(parents=True)
    import shutil

    shutil.copytree(onnx_dir(card, models), onnx_dir(card, copy))
    target = onnx_dir(card, copy) / ONNX_FILES["onnx-int8"]
    data = bytearray(target.read_bytes())
    data[-100] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(OnnxExportError, match="altered"):
        verify_onnx(card, copy, "onnx-int8")


def test_a_server_on_onnx_int8_serves_embeddings(models: Path, tmp_path: Path) -> None:
    import openai

    from tests.support import HearthProcess

    hearth = HearthProcess(
        tmp_path / "data",
        env={"HEARTH_MODELS_DIR": str(models), "HEARTH_EMBEDDINGS_RUNTIME": "onnx-int8"},
    ).start()
    try:
        client = openai.OpenAI(base_url=f"{hearth.url}/v1", api_key="unused", max_retries=0)
        got = client.embeddings.create(model=MINILM, input=SENTENCES[:4])
        vecs = np.array([d.embedding for d in got.data], dtype=np.float32)
        assert "onnx-int8" in hearth.log_tail(200)
    finally:
        hearth.stop()
    reference = Embedder.load(models, MINILM, threads=1).encode(SENTENCES[:4])
    assert vecs.shape == (4, 384)
    assert ((vecs * reference).sum(axis=1) >= 0.98).all(), (vecs * reference).sum(axis=1)
