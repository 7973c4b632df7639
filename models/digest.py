"""File digests shared by model installation (``store``) and conversion (``convert``)."""

from __future__ import annotations

import hashlib
from pathlib import Path

MANIFEST = "MANIFEST.sha256"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: Path) -> None:
    """``MANIFEST.sha256``: ``<sha256>  <relative path>`` for every other file, sorted."""
    lines = [
        f"{sha256_file(f)}  {f.relative_to(folder)}"
        for f in sorted(folder.rglob("*"))
        if f.is_file() and f.name != MANIFEST
    ]
    (folder / MANIFEST).write_text("\n".join(lines) + "\n")
