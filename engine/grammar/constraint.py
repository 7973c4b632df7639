"""The per-sequence constraint: an llguidance matcher behind ``engine.types.TokenConstraint``.

Threading contract: ``prepare`` may run on a worker thread while the backend decodes (llguidance
drops the GIL while it computes a mask); ``mask_logits``, ``advance`` and ``is_complete`` run on the
backend's thread, never concurrently with ``prepare`` of the same sequence.

Budget-aware closing: the constraint knows how many tokens it may still produce. Near the end of
that budget it searches (on a copy of the matcher) for a short token path to an accepting state and,
once the remaining budget equals that path plus one token for end-of-sequence, forces the path. When
no path fits, generation runs on and ends ``length``; ``truncated`` then says so.
"""

from __future__ import annotations

import logging
import time

import llguidance
import numpy as np

logger = logging.getLogger(__name__)

# Start looking for a closing path when this few tokens remain.
CLOSING_WINDOW = 48
# Bound on the matcher states one closing search visits.
CLOSING_NODES = 400


class ClosingSearch:
    """Depth-first search for a short completion, preferring tokens that close structures."""

    def __init__(self, candidates: list[int], eos: frozenset[int], mask_words: int) -> None:
        self.candidates = candidates
        self.eos = eos
        self.mask = np.zeros(mask_words, dtype=np.int32)
        self.nodes = 0

    def find(self, matcher: llguidance.LLMatcher, max_len: int) -> list[int] | None:
        """Token ids that lead ``matcher`` to an accepting state, at most ``max_len`` of them."""
        self.nodes = 0
        return self._dfs(matcher.deep_copy(), max_len)

    def _allowed(self, m: llguidance.LLMatcher) -> np.ndarray:
        m.unsafe_compute_mask_ptr(self.mask.ctypes.data, self.mask.nbytes)
        return self.mask

    def _dfs(self, m: llguidance.LLMatcher, depth: int) -> list[int] | None:
        if m.is_accepting():
            return []
        self.nodes += 1
        if depth <= 0 or self.nodes > CLOSING_NODES or m.is_error():
            return None
        forced = m.compute_ff_tokens()
        if forced:
            if len(forced) > depth:
                return None
            child = m.deep_copy()
            if not child.consume_tokens(forced):
                return None
            rest = self._dfs(child, depth - len(forced))
            return None if rest is None else forced + rest
        mask = self._allowed(m)
        bits = np.unpackbits(mask.view(np.uint8), bitorder="little")
        tried = 0
        for tok in self._options(bits):
            child = m.deep_copy()
            if not child.consume_token(tok):
                continue
            rest = self._dfs(child, depth - 1)
            if rest is not None:
                return [tok, *rest]
            tried += 1
            if tried >= 4:
                break
        return None

    def _options(self, bits: np.ndarray) -> list[int]:
        opts = [t for t in self.candidates if bits[t] and t not in self.eos]
        if len(opts) < 2:  # e.g. an enum or a key name: take a few of the allowed tokens
            allowed = np.flatnonzero(bits[: len(bits)])
            opts += [int(t) for t in allowed[:8] if int(t) not in self.eos and int(t) not in opts]
        return opts


class GrammarConstraint:
    """One sequence's constraint. Not thread-safe beyond the contract in the module docstring."""

    def __init__(
        self,
        matcher: llguidance.LLMatcher,
        n_vocab: int,
        eos: frozenset[int],
        closing: ClosingSearch | None,
        max_new_tokens: int | None = None,
    ) -> None:
        self.matcher = matcher
        self.n_vocab = n_vocab
        self.eos = eos
        self.closing = closing
        self.budget = max_new_tokens
        self.generated = 0
        self.mask = np.zeros((n_vocab + 31) // 32, dtype=np.int32)
        self._mask_valid = False
        self._forced: list[int] = []
        self._allowed = np.zeros(0, dtype=np.int64)
        self._next_search = 0  # token count at which the next closing search runs
        self.truncated = False
        # The grammar text, for backends with their own grammar engine (set by BoundFormat).
        self.grammar: str | None = None
        self.mask_times: list[float] = []  # seconds per computed mask (for benchmarks)

    # ---- TokenConstraint ------------------------------------------------------------------
    def prepare(self) -> None:
        """Computes the next mask (the expensive step; may run off the backend thread)."""
        if self._mask_valid:
            return
        self._plan_closing()
        if self._must_end():
            self._allowed = np.fromiter(sorted(self.eos), dtype=np.int64)
        elif self._forced:
            self._allowed = np.array(self._forced[:1], dtype=np.int64)
        else:
            t0 = time.perf_counter()
            self.matcher.unsafe_compute_mask_ptr(self.mask.ctypes.data, self.mask.nbytes)
            bits = np.unpackbits(self.mask.view(np.uint8), bitorder="little")[: self.n_vocab]
            self._allowed = np.flatnonzero(bits)
            self.mask_times.append(time.perf_counter() - t0)
            if self._allowed.size == 0:  # grammar error: only end-of-sequence remains possible
                self._allowed = np.fromiter(sorted(self.eos), dtype=np.int64)
        self._mask_valid = True

    def mask_logits(self, logits: np.ndarray) -> None:
        """Sets each disallowed entry of ``logits`` (float32, (n_vocab,)) to -inf, in place."""
        self.prepare()
        idx = self._allowed
        kept = logits[idx]
        logits.fill(-np.inf)
        logits[idx] = kept

    def advance(self, token_id: int) -> None:
        self.generated += 1
        self._mask_valid = False
        if self._forced and self._forced[0] == token_id:
            self._forced.pop(0)
        else:
            self._forced = []
        if token_id in self.eos and self.matcher.is_accepting():
            self.matcher.consume_token(token_id)
            return
        if not self.matcher.consume_token(token_id):
            logger.warning("constraint rejected token %d: %s", token_id, self.matcher.get_error())

    def is_complete(self) -> bool:
        """True when nothing but end-of-sequence can follow."""
        m = self.matcher
        if m.is_stopped():
            return True
        if not m.is_accepting():
            return False
        self.prepare()
        return self._allowed.size <= len(self.eos) and all(
            int(t) in self.eos for t in self._allowed
        )

    # ---- status ---------------------------------------------------------------------------
    @property
    def is_accepting(self) -> bool:
        return self.matcher.is_accepting() or self.matcher.is_stopped()

    @property
    def is_error(self) -> bool:
        return self.matcher.is_error()

    def _must_end(self) -> bool:
        """The last token of the budget, with a complete structure: only end-of-sequence."""
        last = self.budget is not None and self.budget - self.generated <= 1
        return last and self.matcher.is_accepting()

    def _plan_closing(self) -> None:
        if self.budget is None or self.closing is None or self._forced:
            return
        remaining = self.budget - self.generated
        if remaining > CLOSING_WINDOW or self.generated < self._next_search:
            return
        if self.matcher.is_accepting():
            return
        path = self.closing.find(self.matcher, remaining - 1)
        if path is None:
            self.truncated = True  # no valid closing fits: the sequence will end "length"
            return
        self.truncated = False
        if len(path) + 1 >= remaining:
            self._forced = path
        else:  # search again every few tokens, and every token once the end is near
            slack = remaining - len(path) - 1
            self._next_search = self.generated + max(1, min(4, slack // 2))
