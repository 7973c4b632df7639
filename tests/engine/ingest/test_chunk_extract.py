"""Content sniffing, PDF limits, and token-aware chunking with MiniLM's own tokenizer."""

from __future__ import annotations

import os
import random

import pytest

from engine.errors import InvalidRequestError, PayloadTooLargeError, UnprocessableError
from engine.ingest import extract as extract_module
from engine.ingest.chunker import MAX_TITLE_TOKENS, Chunker
from engine.ingest.extract import PAGE_JOIN, Limits, extract, extract_isolated, sniff
from tests.docfixtures import embedder, make_pdf

LIMITS = Limits(max_bytes=100_000, max_pages=5, timeout_s=30)


def test_type_comes_from_content_not_name() -> None:
    pdf = make_pdf([["A PDF in disguise."]])
    assert sniff(pdf, "notes.txt") == "pdf"
    assert extract(pdf, LIMITS, "notes.txt").pages == ["A PDF in disguise.\n"]
    assert sniff(b"# Title\ntext", "readme.md") == "markdown"
    assert sniff(b"plain", "x.pdf") == "text"
    with pytest.raises(InvalidRequestError, match="PNG"):
        sniff(b"\x89PNG\r\n\x1a\n....", "a.txt")
    with pytest.raises(InvalidRequestError, match="binary"):
        sniff(b"ab\x00cd", "a.txt")
    with pytest.raises(InvalidRequestError, match="UTF-8") as info:
        extract(b"caf\xe9", LIMITS)
    assert info.value.param == "file"


def test_pdf_extraction_runs_in_a_child_killed_past_its_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pdf = make_pdf([["first page"], ["second page"]])
    assert extract_isolated(pdf, LIMITS).pages == extract(pdf, LIMITS).pages
    assert extract_isolated(b"plain text", LIMITS).pages == ["plain text"]
    in_server: list[int] = []
    server_pid = os.getpid()

    def stuck(data: bytes, limits: Limits) -> list[str]:  # one page that never finishes
        while True:
            if os.getpid() == server_pid:
                in_server.append(1)
                raise AssertionError("extraction ran in the server's process")

    monkeypatch.setattr(extract_module, "_pdf_pages", stuck)
    monkeypatch.setattr(extract_module, "_GRACE_S", 0.2)
    with pytest.raises(UnprocessableError, match="passed 0.3 s and was stopped") as info:
        extract_isolated(pdf, Limits(100_000, 5, 0.3))
    assert info.value.param == "file" and not in_server


def test_pdf_extraction_past_its_memory_budget_is_a_422(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        extract_module, "_pdf_pages", lambda data, limits: [str(bytearray(1 << 30))]
    )
    with pytest.raises(UnprocessableError, match="more than 64 MiB"):
        extract_isolated(make_pdf([["x"]]), Limits(100_000, 5, 30, memory_bytes=64 << 20))


def test_pdf_limits() -> None:
    pages = make_pdf([[f"page {i}"] for i in range(6)])
    with pytest.raises(PayloadTooLargeError, match="6 pages"):
        extract(pages, LIMITS)
    with pytest.raises(PayloadTooLargeError, match="bytes"):
        extract(b"x" * 200_000, LIMITS)
    with pytest.raises(UnprocessableError, match="no extractable text"):
        extract(make_pdf([[]]), LIMITS)
    with pytest.raises(InvalidRequestError, match="unreadable PDF"):
        extract(b"%PDF-1.4\nnot really", LIMITS)
    two = extract(make_pdf([["first page"], ["second page"]]), LIMITS)
    assert len(two.pages) == 2 and "second page" in two.pages[1]


@pytest.fixture(scope="module")
def tokenizer():
    return embedder().tokenizer


def _text(n_words: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    vocab = [
        "internationalization",
        "cat",
        "Dr.",
        "x",
        "antidisestablishmentarianism!",
        "naïve",
        "ok.",
        "42",
        "über-long-hyphenated-word",
        "\n\n",
        "C++",
        "e.g.",
    ]
    return " ".join(rng.choice(vocab) for _ in range(n_words))


@pytest.mark.parametrize("max_tokens,overlap", [(256, 32), (64, 8), (128, 0)])
def test_chunks_never_exceed_the_embedder_limit(tokenizer, max_tokens: int, overlap: int) -> None:
    chunker = Chunker(tokenizer, max_tokens, overlap)
    pages = [_text(2500, 1), _text(40, 2), ""]
    title = "Quarterly report " * 30  # longer than the title budget: shortened
    plan = chunker.chunk(pages, title)
    document = PAGE_JOIN.join(pages)
    assert len(plan.chunks) > 5
    assert (
        plan.title_prefix
        and len(tokenizer(plan.title_prefix, add_special_tokens=False)["input_ids"])
        <= MAX_TITLE_TOKENS
    )
    for chunk in plan.chunks:
        embedded = f"{plan.title_prefix}\n{chunk.text}"
        n = len(tokenizer(embedded, truncation=False)["input_ids"])  # with [CLS] and [SEP]
        assert n <= max_tokens and n == chunk.n_tokens
        assert document[chunk.char_start : chunk.char_end] == chunk.text
    assert {c.page for c in plan.chunks} == {1, 2}
    first, second = plan.chunks[0], plan.chunks[1]
    if overlap:
        assert second.char_start < first.char_end  # overlap
    else:
        assert second.char_start >= first.char_end


def test_chunks_start_and_end_on_word_boundaries(tokenizer) -> None:
    chunker = Chunker(tokenizer, 48, 8)
    text = "antidisestablishmentarianism " * 200
    for chunk in chunker.chunk([text]).chunks:
        assert chunk.text.startswith("antidis") and chunk.text.endswith("ism")
