"""models.registry: user cards in the data directory beside the shipped ones; add (copy or link,
hashed once), remove, and export/import that checks every sha256 before anything is added."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from models import ModelFileError, get_card, list_cards, verify_model
from models.registry import (
    ModelRegistryError,
    add_model,
    card_toml,
    export_model,
    import_model,
    remove_model,
    user_cards,
)
from tests.models.ggufs import write_gguf


def tree(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


@pytest.fixture
def gguf(tmp_path: Path) -> Path:
    folder = tmp_path / "my models"
    folder.mkdir()
    return write_gguf(folder / "Tiny Chat.gguf")


def test_add_copies_once_and_the_card_is_found_beside_the_shipped_ones(
    gguf: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    card = add_model(gguf, data_dir=data)
    assert card.id == "tiny-chat" and card.origin == "user" and not card.linked
    copy = Path(card.file)
    assert (
        copy == data / "models" / "tiny-chat" / "Tiny Chat.gguf"
        and copy.read_bytes() == gguf.read_bytes()
    )
    assert (card.format, card.family, card.context_length, card.chat_template) == (
        "gguf",
        "llama",
        4096,
        "model",
    )
    assert card.capabilities == ("completion", "chat") and card.preferred_backend == "llamacpp"
    assert get_card("tiny-chat", "chat", data_dir=data) == card
    ids = {c.id for c in list_cards(data)}
    assert {"tiny-chat", "gemma-3-270m-q4km", "all-minilm-l6-v2"} <= ids
    with pytest.raises(KeyError, match="tiny-chat"):
        get_card("tiny-chat", data_dir=tmp_path / "other")  # another data dir: not there
    assert verify_model(card, Path("/unused")) == copy
    copy.write_bytes(copy.read_bytes()[:-1] + b"x")  # checked at load: a changed byte is refused
    with pytest.raises(ModelFileError, match="sha256"):
        verify_model(card, Path("/unused"))


def test_link_keeps_the_file_in_place_and_remove_leaves_it(gguf: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    card = add_model(gguf, data_dir=data, model_id="linked", link=True)
    assert card.linked and Path(card.file) == gguf.resolve()
    assert not (data / "models" / "linked").exists()
    remove_model("linked", data_dir=data)
    assert gguf.exists() and "linked" not in user_cards(data)


def test_remove_deletes_the_copy(gguf: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    add_model(gguf, data_dir=data)
    remove_model("tiny-chat", data_dir=data)
    assert not (data / "models" / "tiny-chat").exists() and user_cards(data) == {}
    with pytest.raises(ModelRegistryError, match="shipped model"):
        remove_model("gemma-3-270m-q4km", data_dir=data)
    with pytest.raises(ModelRegistryError, match="no model 'nope' was added"):
        remove_model("nope", data_dir=data)


def test_refusals(gguf: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    notes = tmp_path / "notes.txt"
    notes.write_text("not a model")
    with pytest.raises(ModelRegistryError, match="is not a GGUF file"):
        add_model(notes, data_dir=data)
    with pytest.raises(ModelRegistryError, match="already exists"):
        add_model(gguf, data_dir=data, model_id="gemma-3-270m-q4km")
    with pytest.raises(ModelRegistryError, match="is not valid"):
        add_model(gguf, data_dir=data, model_id="Bad Id")
    add_model(gguf, data_dir=data)
    with pytest.raises(ModelRegistryError, match="already exists"):
        add_model(gguf, data_dir=data)


def test_a_gguf_without_template_is_completion_only_unless_given_one(tmp_path: Path) -> None:
    bare = write_gguf(tmp_path / "bare.gguf", chat_template=None)
    data = tmp_path / "data"
    card = add_model(bare, data_dir=data, link=True)
    assert card.chat_template is None and card.capabilities == ("completion",)
    card = add_model(bare, data_dir=data, model_id="bare-chatml", link=True, chat_template="chatml")
    assert card.chat_template == "chatml" and card.supports("chat")
    with pytest.raises(ModelRegistryError, match="no built-in chat template 'nope'"):
        add_model(bare, data_dir=data, model_id="bare-nope", link=True, chat_template="nope")


def test_hf_folder_is_copied_with_a_manifest(tmp_path: Path) -> None:
    src = tmp_path / "hf model"
    src.mkdir()
    (src / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    (src / "model.safetensors").write_bytes(b"weights" * 100)
    card = add_model(src, data_dir=tmp_path / "data")
    assert card.format == "hf" and card.preferred_backend == "vllm"
    assert card.weights_file == "model.safetensors" and Path(card.file).name == "hf model"
    assert verify_model(card, Path("/unused")) == Path(card.file)
    (Path(card.file) / "config.json").write_text("{}")  # any file of a copied folder is checked
    with pytest.raises(ModelFileError, match="missing or altered"):
        verify_model(card, Path("/unused"))


def test_card_toml_round_trips(gguf: Path, tmp_path: Path) -> None:
    import tomllib

    from models.cards import card_from_dict

    card = add_model(gguf, data_dir=tmp_path / "data", model_id="x")
    assert card_from_dict(tomllib.loads(card_toml(card))) == card.__class__(
        **{**card.__dict__, "origin": "shipped"}
    )


def test_export_import_round_trip(gguf: Path, tmp_path: Path) -> None:
    card = add_model(gguf, data_dir=tmp_path / "a")
    archive = export_model(card.id, tmp_path / "out dir" / "tiny.tar", data_dir=tmp_path / "a")
    fresh = tmp_path / "b"
    imported = import_model(archive, data_dir=fresh)
    assert imported.sha256 == card.sha256 and imported.id == card.id
    assert Path(imported.file).read_bytes() == gguf.read_bytes()
    assert Path(imported.file).is_relative_to(fresh)
    assert verify_model(imported, Path("/unused"))
    assert import_model(archive, data_dir=fresh, model_id="again").id == "again"


def _rewrite(archive: Path, out: Path, change) -> Path:
    """Copy ``archive`` member by member, letting ``change(name, data)`` alter each."""
    with tarfile.open(archive) as src, tarfile.open(out, "w") as dst:
        for member in src:
            data = src.extractfile(member).read()
            data = change(member.name, data)
            if data is None:
                continue
            member.size = len(data)
            dst.addfile(member, io.BytesIO(data))
    return out


def test_corrupt_partial_or_altered_archives_change_nothing(gguf: Path, tmp_path: Path) -> None:
    card = add_model(gguf, data_dir=tmp_path / "a")
    archive = export_model(card.id, tmp_path / "tiny.tar", data_dir=tmp_path / "a")
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "keep.txt").write_text("unrelated")
    before = tree(fresh)

    def flip(name: str, data: bytes) -> bytes:
        return data if name == "manifest.json" else data[:100] + bytes([data[100] ^ 1]) + data[101:]

    corrupt = _rewrite(archive, tmp_path / "corrupt.tar", flip)
    with pytest.raises(
        ModelRegistryError,
        match=r"corrupt: file Tiny Chat\.gguf has sha256 [0-9a-f]{64}.*expects " + card.sha256,
    ):
        import_model(corrupt, data_dir=fresh)
    missing = _rewrite(
        archive, tmp_path / "missing.tar", lambda n, d: d if n == "manifest.json" else None
    )
    with pytest.raises(
        ModelRegistryError, match=r"incomplete: file Tiny Chat\.gguf \(sha256 " + card.sha256
    ):
        import_model(missing, data_dir=fresh)
    truncated = tmp_path / "truncated.tar"
    with tarfile.open(archive) as tar:
        member = tar.getmember("files/Tiny Chat.gguf")
        header_at, data_at = member.offset, member.offset_data
    truncated.write_bytes(archive.read_bytes()[: data_at + 300])  # cut inside the file
    with pytest.raises(
        ModelRegistryError, match=r"Tiny Chat\.gguf ends early.*expects " + card.sha256
    ):
        import_model(truncated, data_dir=fresh)
    truncated.write_bytes(archive.read_bytes()[:header_at])  # cut before the file
    with pytest.raises(ModelRegistryError, match=r"incomplete: file Tiny Chat\.gguf \(sha256 "):
        import_model(truncated, data_dir=fresh)
    not_tar = tmp_path / "notes.tar"
    not_tar.write_text("hello")
    with pytest.raises(ModelRegistryError, match="not a model archive"):
        import_model(not_tar, data_dir=fresh)
    assert tree(fresh) == before
