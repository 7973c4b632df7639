"""Text out of uploaded bytes. The type is decided by content (magic bytes, UTF-8 validity), never
by the file name; the name only tells Markdown from plain text.

PDFs go through pypdf with limits on bytes, pages and time: the clock is checked between pages,
so one pathological page can overrun the limit by its own extraction time. The caller runs a PDF's
extraction in a killable child process (``extract_isolated``): past the time limit plus a grace
period, or past ``memory_bytes``, the child is killed and the file is a 422.
"""

from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass

from engine.errors import InvalidRequestError, PayloadTooLargeError, UnprocessableError
from engine.sandbox import Budget, DeadlineExceeded, Sandbox, SandboxError

log = logging.getLogger(__name__)

# Binary formats worth naming in the error (first bytes -> name).
_MAGIC = {
    b"\x89PNG": "PNG image",
    b"\xff\xd8\xff": "JPEG image",
    b"GIF8": "GIF image",
    b"PK\x03\x04": "ZIP archive (or DOCX/XLSX)",
    b"\x1f\x8b": "gzip archive",
    b"\xd0\xcf\x11\xe0": "legacy Office document",
    b"\x7fELF": "executable",
}
TEXT, MARKDOWN, PDF = "text", "markdown", "pdf"


@dataclass(frozen=True)
class Limits:
    max_bytes: int
    max_pages: int
    timeout_s: float
    memory_bytes: int = 1 << 30


@dataclass(frozen=True)
class Extracted:
    """Extracted text as pages (one page for text files); pages are joined by ``PAGE_JOIN``."""

    source_type: str
    pages: list[str]

    @property
    def text(self) -> str:
        return PAGE_JOIN.join(self.pages)


PAGE_JOIN = "\n\n"


def sniff(data: bytes, filename: str | None = None) -> str:
    """``pdf``, ``markdown`` or ``text`` from the bytes; InvalidRequestError for anything else."""
    if data.lstrip()[:5] == b"%PDF-":
        return PDF
    for magic, name in _MAGIC.items():
        if data.startswith(magic):
            raise InvalidRequestError(
                f"unsupported file type ({name}); upload TXT, Markdown or PDF", param="file"
            )
    if b"\x00" in data[:8192]:
        raise InvalidRequestError(
            "unsupported binary file; upload TXT, Markdown or PDF", param="file"
        )
    name = (filename or "").lower()
    return MARKDOWN if name.endswith((".md", ".markdown")) else TEXT


def extract(data: bytes, limits: Limits, filename: str | None = None) -> Extracted:
    """Pages of text from an upload; 4xx errors name the ``file`` field."""
    if len(data) > limits.max_bytes:
        raise PayloadTooLargeError(
            f"file is {len(data)} bytes; the limit is {limits.max_bytes}", param="file"
        )
    kind = sniff(data, filename)
    if kind == PDF:
        return Extracted(PDF, _pdf_pages(data, limits))
    return Extracted(kind, [decode_text(data)])


# Time a child gets past the extraction's own limit (which is checked only between pages).
_GRACE_S = 5.0


def extract_isolated(data: bytes, limits: Limits, filename: str | None = None) -> Extracted:
    """:func:`extract`, with a PDF's parsing in a child process killed past its time or memory
    budget (422 naming ``file``). Blocks: call it from a worker thread."""
    if sniff(data, filename) != PDF or len(data) > limits.max_bytes:
        return extract(data, limits, filename)
    sandbox = Sandbox(Budget(limits.timeout_s + _GRACE_S, limits.memory_bytes), "PDF extraction")
    try:
        return sandbox.run_sync(extract, data, limits, filename)
    except DeadlineExceeded:
        raise UnprocessableError(
            f"PDF text extraction passed {limits.timeout_s:g} s and was stopped", param="file"
        ) from None
    except SandboxError as exc:
        raise UnprocessableError(f"PDF text extraction failed: {exc}", param="file") from None


def decode_text(data: bytes) -> str:
    """UTF-8 (a BOM is dropped); invalid UTF-8 is a 400, not a guess at another encoding."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidRequestError(
            f"file is not valid UTF-8 text (byte {exc.start}); upload TXT, Markdown or PDF",
            param="file",
        ) from None
    return text.replace("\r\n", "\n")


def _pdf_pages(data: bytes, limits: Limits) -> list[str]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    start = time.monotonic()
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise UnprocessableError("PDF is encrypted", param="file")
        n = len(reader.pages)
    except (PdfReadError, ValueError, KeyError, TypeError) as exc:
        raise InvalidRequestError(f"unreadable PDF: {exc}", param="file") from None
    if n > limits.max_pages:
        raise PayloadTooLargeError(
            f"PDF has {n} pages; the limit is {limits.max_pages}", param="file"
        )
    pages = []
    for i, page in enumerate(reader.pages):
        if time.monotonic() - start > limits.timeout_s:
            raise UnprocessableError(
                f"PDF text extraction passed {limits.timeout_s} s at page {i + 1} of {n}",
                param="file",
            )
        try:
            pages.append((page.extract_text() or "").replace("\r\n", "\n"))
        except Exception as exc:  # pypdf raises many types on damaged content streams
            raise InvalidRequestError(f"unreadable PDF page {i + 1}: {exc}", param="file") from None
    if not any(p.strip() for p in pages):
        raise UnprocessableError(
            "PDF has no extractable text (a scanned PDF? OCR is not supported)", param="file"
        )
    return pages
