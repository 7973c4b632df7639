"""Token-aware chunking with the embedding model's own tokenizer.

Contract: for every chunk, ``tokenizer(title_prefix + "\\n" + chunk.text)`` with special tokens is
at most ``max_tokens`` word pieces (all-MiniLM-L6-v2 truncates silently past 256, so a longer chunk
would be embedded without its end). Chunks never cross a page, start and end on word boundaries,
prefer to end at a sentence end in the second half of the window, and overlap the previous chunk
by about ``overlap`` word pieces. Offsets index the document text (pages joined by
``PAGE_JOIN``), so ``text[char_start:char_end] == chunk.text``.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenizers import Encoding, Tokenizer

from engine.ingest.extract import PAGE_JOIN
from engine.storage import NewChunk

# The title takes at most this many word pieces of every chunk's budget.
MAX_TITLE_TOKENS = 48
_SENTENCE_END = ".!?"


@dataclass(frozen=True)
class ChunkPlan:
    """Chunks of one document and the (possibly shortened) title that prefixes each when indexed."""

    chunks: list[NewChunk]
    title_prefix: str | None


class Chunker:
    def __init__(self, tokenizer: object, max_tokens: int = 256, overlap: int = 32) -> None:
        """``tokenizer`` is a Hugging Face fast tokenizer (or a ``tokenizers.Tokenizer``)."""
        backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
        # A private copy: the wrapper sets truncation/padding on its backend per call.
        self.tok = Tokenizer.from_str(backend.to_str())  # type: ignore[attr-defined]
        self.tok.no_truncation()
        self.tok.no_padding()
        self.max_tokens = max_tokens
        self.overlap = overlap
        self.n_special = len(self.tok.encode("", add_special_tokens=True).ids)

    def count(self, text: str) -> int:
        """Word pieces of ``text`` with special tokens, as the embedder sees it."""
        return len(self.tok.encode(text, add_special_tokens=True).ids)

    def title_prefix(self, title: str | None) -> str | None:
        if not title or not title.strip():
            return None
        enc = self.tok.encode(title, add_special_tokens=False)
        if len(enc.ids) <= MAX_TITLE_TOKENS:
            return title
        return title[: enc.offsets[MAX_TITLE_TOKENS - 1][1]]

    def chunk(
        self, pages: list[str], title: str | None = None, *, overlap: int | None = None
    ) -> ChunkPlan:
        prefix = self.title_prefix(title)
        head = len(self.tok.encode(prefix, add_special_tokens=False).ids) if prefix else 0
        budget = self.max_tokens - self.n_special - head
        if budget < 8:
            raise ValueError(f"max_tokens {self.max_tokens} leaves no room for text")
        overlap = self.overlap if overlap is None else overlap
        out: list[NewChunk] = []
        base = 0
        for number, page in enumerate(pages, start=1):
            page_no = number if len(pages) > 1 else None
            out += self._page(page, base, page_no, prefix, budget, min(overlap, budget // 2))
            base += len(page) + len(PAGE_JOIN)
        return ChunkPlan(out, prefix)

    def _page(
        self, text: str, base: int, page: int | None, prefix: str | None, budget: int, overlap: int
    ) -> list[NewChunk]:
        enc = self.tok.encode(text, add_special_tokens=False)
        n = len(enc.ids)
        chunks: list[NewChunk] = []
        start = 0
        while start < n:
            end = self._end(enc, text, start, budget)
            chunk = self._fit(enc, text, start, end, prefix, base, page)
            chunks.append(chunk)
            if chunk.char_end - base >= len(text.rstrip()) or end >= n:
                break
            start = _word_start(enc, max(end - overlap, start + 1), forward=True)
        return chunks

    def _end(self, enc: Encoding, text: str, start: int, budget: int) -> int:
        n = len(enc.ids)
        end = min(start + budget, n)
        if end == n:
            return end
        snapped = _word_start(enc, end, forward=False)
        end = snapped if snapped > start else end
        # Prefer a sentence end in the second half of the window.
        for j in range(end - 1, start + budget // 2, -1):
            last = enc.offsets[j][1]
            if last and text[last - 1] in _SENTENCE_END and _is_word_start(enc, j + 1):
                return j + 1
        return end

    def _fit(
        self,
        enc: Encoding,
        text: str,
        start: int,
        end: int,
        prefix: str | None,
        base: int,
        page: int | None,
    ) -> NewChunk:
        """Shrink ``end`` until the re-tokenized chunk (with title and specials) fits."""
        while True:
            lo, hi = enc.offsets[start][0], enc.offsets[end - 1][1]
            body = text[lo:hi]
            n_tokens = self.count(f"{prefix}\n{body}" if prefix else body)
            if n_tokens <= self.max_tokens or end - start <= 1:
                return NewChunk(body, n_tokens, base + lo, base + hi, page)
            end -= 1


def _is_word_start(enc: Encoding, i: int) -> bool:
    if i <= 0 or i >= len(enc.ids):
        return True
    words = enc.word_ids
    return words[i] != words[i - 1] or enc.offsets[i][0] > enc.offsets[i - 1][1]


def _word_start(enc: Encoding, i: int, *, forward: bool) -> int:
    """The nearest token index at or after (forward) / at or before ``i`` that starts a word."""
    n = len(enc.ids)
    step = 1 if forward else -1
    j = i
    while 0 < j < n and not _is_word_start(enc, j):
        j += step
    return j
