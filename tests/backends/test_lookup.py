"""The n-gram lookup that drafts tokens for prompt-lookup speculative decoding."""

from __future__ import annotations

import pytest

pytest.importorskip("llama_cpp")

from engine.backends.llamacpp import _lookup  # noqa: E402


def test_drafts_what_followed_the_latest_match_of_the_longest_tail() -> None:
    #          0  1  2  3  4  5  6  7  8  9  10 11
    tokens = [1, 2, 3, 9, 9, 1, 2, 3, 7, 8, 1, 2, 3]
    assert _lookup(tokens, 3) == [7, 8, 1]  # the later "1 2 3" wins
    assert _lookup(tokens, 1) == [7]


def test_falls_back_to_shorter_tails_and_to_nothing() -> None:
    assert _lookup([5, 6, 4, 6], 2) == [4, 6]  # only "6" recurs
    assert _lookup([1, 2, 3, 4], 4) == []
    assert _lookup([1], 4) == []
    assert _lookup([3, 3], 4) == [3]  # a run drafts itself
