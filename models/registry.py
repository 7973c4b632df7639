"""The model cards a Hearth installation knows: the shipped ones (``models/cards/``) and the user's
own, added with ``hearth models add`` and stored in the data directory, never in the source tree.

Layout under ``<data_dir>/models/`` (``USER_DIR``)::

    cards/<id>.toml      one card per user model (the same fields as a shipped card)
    <id>/<file name>     the model file (or folder) when it was copied; a linked model stays put

A card's ``file`` is relative to ``<data_dir>/models`` when copied and absolute when linked; cards
read from here carry absolute paths, so ``models_dir / card.file`` finds the file either way.

Every file is hashed once while it is added (the copy and the hash are one pass over the bytes);
``models.store.verify_model`` hashes it again before it loads. Export writes one tar archive (the
card, the files, and ``manifest.json`` with every file's sha256 and size); import checks every
hash in a staging folder before anything becomes visible, and leaves no trace when one differs.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import shutil
import tarfile
import tempfile
import tomllib
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import IO, Any

from models.card import ModelCard, card_from_dict, shipped_cards
from models.digest import MANIFEST, sha256_file, write_manifest
from models.metadata import ModelMetadata, NotAModelError, read_metadata
from models.templates import BUILTIN_TEMPLATES, FROM_MODEL

log = logging.getLogger(__name__)

USER_DIR = "models"
CARDS = "cards"
ARCHIVE_MANIFEST = "manifest.json"
ARCHIVE_FORMAT = "hearth-model/1"
_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_CHUNK = 1 << 20


class ModelRegistryError(ValueError):
    """A user mistake in adding, removing, exporting or importing a model (the message says what
    to fix)."""


def default_data_dir() -> Path:
    return Path(os.environ.get("HEARTH_DATA_DIR") or "data")


def user_models_dir(data_dir: Path | None = None) -> Path:
    return Path(data_dir if data_dir is not None else default_data_dir()) / USER_DIR


def _cards_dir(data_dir: Path | None) -> Path:
    return user_models_dir(data_dir) / CARDS


# ---- reading --------------------------------------------------------------------------------


_Stamp = tuple[tuple[str, int, int], ...]
_cache: dict[Path, tuple[_Stamp, dict[str, ModelCard]]] = {}


def user_cards(data_dir: Path | None = None) -> dict[str, ModelCard]:
    """The user's cards by id, re-read when a card file is added, removed or rewritten (name,
    mtime and size of each: a folder's own mtime can miss two changes within one clock tick)."""
    folder = _cards_dir(data_dir).resolve()
    paths = sorted(folder.glob("*.toml"))
    try:
        stamp = tuple((p.name, (s := p.stat()).st_mtime_ns, s.st_size) for p in paths)
    except FileNotFoundError:  # removed while listing: read again next time
        stamp = ()
    cached = _cache.get(folder)
    if cached is not None and cached[0] == stamp and stamp:
        return cached[1]
    cards = {}
    for path in paths:
        try:
            card = _read_user_card(path)
        except (ValueError, TypeError, OSError) as exc:
            log.warning("skipping model card %s: %s", path, exc)
            continue
        cards[card.id] = card
    _cache[folder] = (stamp, cards)
    return cards


def _read_user_card(path: Path) -> ModelCard:
    card = card_from_dict(tomllib.loads(path.read_text(encoding="utf-8")))
    root = path.parent.parent
    file = Path(card.file)
    return replace(card, file=str(file if file.is_absolute() else root / file), origin="user")


def all_cards(data_dir: Path | None = None) -> dict[str, ModelCard]:
    """Shipped cards, then the user's (a user card never replaces a shipped one)."""
    cards = dict(shipped_cards())
    for card_id, card in user_cards(data_dir).items():
        cards.setdefault(card_id, card)
    return cards


# ---- add / remove ---------------------------------------------------------------------------


def add_model(
    source: Path,
    *,
    data_dir: Path | None = None,
    model_id: str | None = None,
    link: bool = False,
    chat_template: str | None = None,
) -> ModelCard:
    """Register a GGUF file or a Hugging Face / sentence-transformers folder as a user card.

    Copies it into ``<data_dir>/models/<id>/`` (hashing while copying) unless ``link``, in which
    case it is hashed where it lies and the card points there. ``chat_template``: a built-in
    template name for a model whose file carries none.
    """
    source = Path(source).expanduser().resolve()
    if chat_template is not None and chat_template not in BUILTIN_TEMPLATES:
        raise ModelRegistryError(
            f"no built-in chat template {chat_template!r}; choose one of {list(BUILTIN_TEMPLATES)}"
        )
    try:
        meta = read_metadata(source)
    except NotAModelError as exc:
        raise ModelRegistryError(f"cannot add {source}: {exc}") from None
    model_id = check_id(model_id or derive_id(source), data_dir)
    root = user_models_dir(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    if link:
        sha = _hash_weights(source, meta)
        file = str(source)
    else:
        sha = _copy_into(source, root / model_id, meta)
        file = f"{model_id}/{source.name}"
    card = _card_for(model_id, file, sha, meta, chat_template, linked=link)
    _write_card(card, data_dir)
    return user_cards(data_dir)[model_id]


def derive_id(source: Path) -> str:
    """A card id from a file or folder name: lower case, ``.gguf`` dropped, other characters
    folded to ``-``."""
    stem = source.name.removesuffix(".gguf").lower()
    return re.sub(r"[^a-z0-9._-]+", "-", stem).strip("-._")[:64] or "model"


def check_id(model_id: str, data_dir: Path | None) -> str:
    if not _ID.match(model_id):
        raise ModelRegistryError(
            f"model id {model_id!r} is not valid: use 1-64 lower-case letters, digits, '.', '_' "
            "or '-', starting with a letter or digit (--id)"
        )
    if model_id in all_cards(data_dir):
        raise ModelRegistryError(
            f"a model {model_id!r} already exists; choose another --id or `hearth models remove "
            f"{model_id}` first"
        )
    return model_id


def _card_for(
    model_id: str,
    file: str,
    sha: str,
    meta: ModelMetadata,
    chat_template: str | None,
    *,
    linked: bool,
) -> ModelCard:
    backend = {"gguf": "llamacpp", "hf": "vllm"}.get(meta.format, meta.format)
    generative = "chat" in meta.capabilities
    template = chat_template or (FROM_MODEL if meta.chat_template else None)
    template = template if generative else None
    # A generative model without a template is served for completions only.
    capabilities = meta.capabilities if template or not generative else ("completion",)
    return ModelCard(
        id=model_id,
        family=meta.architecture,
        format=meta.format,
        file=file,
        sha256=sha,
        context_length=meta.context_length or 2048,
        capabilities=capabilities,
        preferred_backend=backend,
        chat_template=template,
        weights_file=meta.weights_file,
        embedding_dim=meta.embedding_dim,
        query_prompt=meta.query_prompt,
        document_prompt=meta.document_prompt,
        weight_bytes=meta.size_bytes,
        quantization=meta.quantization,
        linked=linked,
    )


def _hash_weights(source: Path, meta: ModelMetadata) -> str:
    return sha256_file(source / meta.weights_file if meta.weights_file else source)


def _copy_hashing(src: IO[bytes], dst: IO[bytes], digest: Any = None) -> tuple[str, int]:
    """Copy ``src`` to ``dst``, hashing as it goes; (sha256, bytes). ``digest``: a sha256 object
    to update (so a caller whose copy fails midway still has the hash of what was read)."""
    digest = digest if digest is not None else hashlib.sha256()
    size = 0
    while block := src.read(_CHUNK):
        digest.update(block)
        dst.write(block)
        size += len(block)
    return digest.hexdigest(), size


def _copy_into(source: Path, target_dir: Path, meta: ModelMetadata) -> str:
    """Copy ``source`` into ``target_dir`` through a staging folder (one rename publishes it);
    the sha256 of the weights, computed during the copy."""
    staging = Path(tempfile.mkdtemp(prefix=".add-", dir=target_dir.parent))
    try:
        folder = staging / target_dir.name
        folder.mkdir()
        if source.is_dir():
            sha = ""
            for path in sorted(p for p in source.rglob("*") if p.is_file()):
                rel = path.relative_to(source)
                out = folder / source.name / rel
                out.parent.mkdir(parents=True, exist_ok=True)
                with path.open("rb") as src, out.open("wb") as dst:
                    digest, _ = _copy_hashing(src, dst)
                if rel.as_posix() == meta.weights_file:
                    sha = digest
            write_manifest(folder / source.name)
        else:
            with source.open("rb") as src, (folder / source.name).open("wb") as dst:
                sha, _ = _copy_hashing(src, dst)
        os.replace(folder, target_dir)
        return sha
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to a card")


def card_toml(card: ModelCard) -> str:
    """The card as TOML, fields with default values left out."""
    raw = {k: v for k, v in asdict(card).items() if k != "origin"}
    defaults = {k: v for k, v in asdict(ModelCard("", "", "", "", "", 0, (), "")).items()}
    lines, tables = ["# Added with `hearth models add`."], []
    for key, value in raw.items():
        if value == defaults[key] and key not in ModelCard.REQUIRED:
            continue
        if isinstance(value, dict):
            tables.append(f"\n[{key}]")
            tables += [f"{k} = {_toml_value(v)}" for k, v in value.items()]
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines + tables) + "\n"


def _write_card(card: ModelCard, data_dir: Path | None) -> None:
    folder = _cards_dir(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{card.id}.toml.tmp"
    tmp.write_text(card_toml(card), encoding="utf-8")
    os.replace(tmp, folder / f"{card.id}.toml")


def _user_card(model_id: str, data_dir: Path | None) -> ModelCard:
    card = user_cards(data_dir).get(model_id)
    if card is None:
        if model_id in shipped_cards():
            raise ModelRegistryError(f"{model_id!r} is a shipped model, not one you added")
        known = sorted(user_cards(data_dir))
        raise ModelRegistryError(f"no model {model_id!r} was added; added: {known}")
    return card


def remove_model(model_id: str, *, data_dir: Path | None = None) -> ModelCard:
    """Forget a user card and delete its copied files (a linked file is left where it is)."""
    card = _user_card(model_id, data_dir)
    (_cards_dir(data_dir) / f"{model_id}.toml").unlink()
    if not card.linked:
        shutil.rmtree(user_models_dir(data_dir) / model_id, ignore_errors=True)
    return card


# ---- export / import ------------------------------------------------------------------------


def _files_of(card: ModelCard) -> Iterator[tuple[str, Path]]:
    """(name in the archive, path on disk) of every file of the model."""
    path = Path(card.file)
    if path.is_dir():
        for f in sorted(p for p in path.rglob("*") if p.is_file() and p.name != MANIFEST):
            yield f"{path.name}/{f.relative_to(path).as_posix()}", f
    else:
        yield path.name, path


def export_model(model_id: str, out: Path, *, data_dir: Path | None = None) -> Path:
    """One uncompressed tar: ``manifest.json`` (card + sha256 and size of every file) first, then
    ``files/<name>``. Hashes are computed from the files as they are now, and checked against
    the card's."""
    card = _user_card(model_id, data_dir)
    files = dict(_files_of(card))
    sums = {name: sha256_file(path) for name, path in files.items()}
    weights = Path(card.file).name + (f"/{card.weights_file}" if card.weights_file else "")
    if sums.get(weights) != card.sha256:
        raise ModelRegistryError(
            f"model {card.id!r}: file {files.get(weights, weights)} has sha256 "
            f"{sums.get(weights)}, the card expects {card.sha256}; not exported"
        )
    manifest = {
        "format": ARCHIVE_FORMAT,
        "card": {k: v for k, v in asdict(card).items() if k not in ("origin", "linked", "file")},
        "file": Path(card.file).name,
        "files": {
            name: {"sha256": sums[name], "bytes": path.stat().st_size}
            for name, path in files.items()
        },
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        data = json.dumps(manifest, indent=2).encode()
        info = tarfile.TarInfo(ARCHIVE_MANIFEST)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        for name, path in files.items():
            tar.add(path, arcname=f"files/{name}", recursive=False)
    os.replace(tmp, out)
    return out


def import_model(
    archive: Path, *, data_dir: Path | None = None, model_id: str | None = None
) -> ModelCard:
    """Add the model in ``archive``. Every file is extracted into a staging folder and its sha256
    compared with the manifest before anything is published; any difference, a missing or an
    extra file refuses the whole archive and leaves the data directory as it was."""
    archive = Path(archive)
    data_root = Path(data_dir if data_dir is not None else default_data_dir())
    data_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".import-", dir=data_root))
    try:
        manifest, folder = _extract_checked(archive, staging)
        raw = dict(manifest["card"])
        model_id = check_id(model_id or str(raw["id"]), data_dir)
        raw.update(id=model_id, file=f"{model_id}/{manifest['file']}", linked=False)
        try:
            card = card_from_dict(raw)
        except (TypeError, ValueError) as exc:
            raise ModelRegistryError(
                f"{archive}: the card in the archive is not valid: {exc}"
            ) from None
        if (folder / manifest["file"]).is_dir():
            write_manifest(folder / manifest["file"])
        root = user_models_dir(data_dir)
        root.mkdir(parents=True, exist_ok=True)
        os.replace(folder, root / model_id)
        _write_card(card, data_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return user_cards(data_dir)[model_id]


def _extract_checked(archive: Path, staging: Path) -> tuple[dict[str, Any], Path]:
    folder = staging / "model"
    folder.mkdir()
    try:
        tar = tarfile.open(archive, "r:")
    except (OSError, tarfile.TarError) as exc:
        raise ModelRegistryError(f"{archive} is not a model archive: {exc}") from None
    with tar:
        try:
            manifest = _read_manifest(archive, tar)
        except (OSError, tarfile.TarError, EOFError) as exc:
            raise ModelRegistryError(f"{archive} is damaged or incomplete: {exc}") from None
        expected: dict[str, dict[str, Any]] = manifest["files"]
        seen: set[str] = set()
        damage = None
        try:
            for member in tar:  # from the first member again: the manifest is skipped
                if member.name == ARCHIVE_MANIFEST:
                    continue
                name = member.name.removeprefix("files/")
                if not member.isfile() or name not in expected or name in seen:
                    raise ModelRegistryError(
                        f"{archive}: unexpected entry {member.name!r} (not in its manifest)"
                    )
                seen.add(name)
                _extract_one(archive, tar, member, folder / name, name, expected[name])
        except (OSError, tarfile.TarError, EOFError) as exc:
            damage = exc  # cut between two files: the missing-file check below names the file
    missing = sorted(set(expected) - seen)
    if missing:
        raise ModelRegistryError(
            f"{archive} is incomplete: file {missing[0]} (sha256 "
            f"{expected[missing[0]]['sha256']}) is missing from the archive"
        )
    if damage is not None:
        raise ModelRegistryError(f"{archive} is damaged: {damage}")
    return manifest, folder


def _read_manifest(archive: Path, tar: tarfile.TarFile) -> dict[str, Any]:
    first = tar.next()
    if first is None or first.name != ARCHIVE_MANIFEST:
        raise ModelRegistryError(f"{archive} is not a Hearth model archive (no {ARCHIVE_MANIFEST})")
    fh = tar.extractfile(first)
    try:
        manifest = json.loads(fh.read() if fh else b"")
    except ValueError as exc:
        raise ModelRegistryError(f"{archive}: {ARCHIVE_MANIFEST} is not JSON: {exc}") from None
    ok = (
        isinstance(manifest, dict)
        and manifest.get("format") == ARCHIVE_FORMAT
        and isinstance(manifest.get("card"), dict)
        and isinstance(manifest.get("files"), dict)
        and isinstance(manifest.get("file"), str)
    )
    if not ok:
        raise ModelRegistryError(
            f"{archive}: {ARCHIVE_MANIFEST} is not a {ARCHIVE_FORMAT} manifest"
        )
    for name in manifest["files"]:
        inside = Path(name)
        if inside.is_absolute() or ".." in inside.parts:
            raise ModelRegistryError(f"{archive}: unsafe file name {name!r} in its manifest")
    return manifest


def _extract_one(
    archive: Path,
    tar: tarfile.TarFile,
    member: tarfile.TarInfo,
    target: Path,
    name: str,
    expected: dict[str, Any],
) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    src = tar.extractfile(member)
    if src is None:
        raise ModelRegistryError(f"{archive}: {member.name!r} is not a regular file")
    digest = hashlib.sha256()
    try:
        with src, target.open("wb") as dst:
            actual, size = _copy_hashing(src, dst, digest)
    except (tarfile.ReadError, EOFError) as exc:
        raise ModelRegistryError(
            f"{archive} is incomplete: file {name} ends early ({exc}); sha256 of the "
            f"{target.stat().st_size} bytes present {digest.hexdigest()}, the manifest expects "
            f"{expected.get('sha256')} ({expected.get('bytes')} bytes); nothing was imported"
        ) from None
    if actual != expected.get("sha256") or size != expected.get("bytes"):
        raise ModelRegistryError(
            f"{archive} is corrupt: file {name} has sha256 {actual} ({size} bytes), the "
            f"manifest expects {expected.get('sha256')} ({expected.get('bytes')} bytes); "
            "nothing was imported"
        )
