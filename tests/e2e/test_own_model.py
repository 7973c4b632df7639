"""Bring your own model, end to end: a GGUF that is not a shipped card, in a folder whose path has
a space, is added with the real CLI into a data directory, served by a real server and answers
through its own chat template (the official openai client); exported, imported into a fresh data
directory and served from there; a corrupted archive is refused and changes nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from models import get_card, install_model
from tests.support import MODELS_DIR, ROOT, HearthProcess

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1800)]

MODEL_ID = "pocket-chat"
MESSAGES = [
    {"role": "system", "content": "You answer in one short sentence."},
    {"role": "user", "content": "What is the capital of France?"},
]


def hearth_models(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HEARTH_MODELS_DIR=str(MODELS_DIR), PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "server", "models", "--data-dir", str(data_dir), *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def tree(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*")}


@pytest.fixture(scope="module")
def own_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The SmolLM2 GGUF under a new name in a folder with a space: Hearth has no card for it."""
    shipped = install_model(get_card("smollm2-135m-instruct"), MODELS_DIR)
    folder = tmp_path_factory.mktemp("own") / "my models"
    folder.mkdir()
    return Path(shutil.copy(shipped, folder / "Pocket Chat.gguf"))


@pytest.fixture(scope="module")
def data_a(own_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("data a")
    added = hearth_models(data, "add", str(own_gguf))
    assert added.returncode == 0, added.stderr
    assert f"added {MODEL_ID}" in added.stdout
    return data


@pytest.fixture(scope="module")
def archive(data_a: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("transfer disk") / "pocket chat.hearth-model"
    exported = hearth_models(data_a, "export", MODEL_ID, "--out", str(out))
    assert exported.returncode == 0, exported.stderr
    return out


@pytest.fixture(scope="module")
def expected_prompt_tokens(own_gguf: Path) -> int:
    """The prompt length transformers gives MESSAGES with the GGUF's own template."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(own_gguf.parent, gguf_file=own_gguf.name)
    text = tok.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    return len(tok.encode(text, add_special_tokens=False))


def serve(data_dir: Path) -> Iterator[Any]:
    from openai import OpenAI

    server = HearthProcess(data_dir, env={"HEARTH_LLM_MODEL": MODEL_ID})
    server.start()
    try:
        yield OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=300)
    finally:
        server.stop()


def ask(client: Any) -> Any:
    return client.chat.completions.create(
        model=MODEL_ID, messages=MESSAGES, max_tokens=24, temperature=0
    )


def test_list_shows_the_added_model(data_a: Path) -> None:
    listed = hearth_models(data_a, "list")
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if line.startswith(MODEL_ID))
    assert "gguf" in row and "user" in row and "chat" in row
    assert "gemma-3-270m-q4km" in listed.stdout  # the shipped cards are listed beside it


def test_a_file_that_is_not_a_model_is_refused(tmp_path: Path) -> None:
    notes = tmp_path / "my notes.gguf"
    notes.write_text("just text")
    refused = hearth_models(tmp_path / "data", "add", str(notes))
    assert refused.returncode != 0
    assert "is not a GGUF file" in refused.stderr and "my notes.gguf" in refused.stderr
    assert not (tmp_path / "data" / "models" / "cards").exists()


def test_served_with_its_own_template(data_a: Path, expected_prompt_tokens: int) -> None:
    for client in serve(data_a):
        answer = ask(client)
        assert answer.model == MODEL_ID
        assert "paris" in (answer.choices[0].message.content or "").lower()
        # The prompt is the GGUF's ChatML template (system turn kept), as transformers renders it.
        assert answer.usage.prompt_tokens == expected_prompt_tokens
        assert answer.choices[0].message.content.count("<|im_") == 0  # stopped at its EOS


def test_corrupted_archive_is_refused_and_changes_nothing(archive: Path, tmp_path: Path) -> None:
    data = tmp_path / "fresh"
    data.mkdir()
    before = tree(data)
    corrupt = tmp_path / "corrupt.hearth-model"
    raw = bytearray(archive.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # inside the GGUF's bytes
    corrupt.write_bytes(bytes(raw))
    refused = hearth_models(data, "import", str(corrupt))
    assert refused.returncode != 0
    assert "Pocket Chat.gguf" in refused.stderr and "corrupt" in refused.stderr
    assert refused.stderr.count("sha256") >= 1 and get_card("smollm2-135m-instruct").sha256 in (
        refused.stderr
    )
    assert tree(data) == before


def test_exported_model_is_imported_and_served_on_a_fresh_data_dir(
    archive: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    fresh = tmp_path_factory.mktemp("data b")
    imported = hearth_models(fresh, "import", str(archive))
    assert imported.returncode == 0, imported.stderr
    assert (fresh / "models" / MODEL_ID / "Pocket Chat.gguf").is_file()
    for client in serve(fresh):
        assert "paris" in (ask(client).choices[0].message.content or "").lower()
