"""The per-sequence constraint: an llguidance matcher behind ``engine.types.TokenConstraint``.

Threading contract: ``prepare`` may run on a worker thread while the backend decodes (llguidance
drops the GIL while it computes a mask); ``mask_logits``, ``advance`` and ``is_complete`` run on the
backend's thread, never concurrently with ``prepare`` of the same sequence.

Budget-aware closing: the constraint knows how many tokens it may still produce. Near the end of
that budget it searches (on a copy of the matcher) for a short token path to an accepting state and,
once the remaining budget equals that path plus one token for end-of-sequence, forces the path. When
no path fits, generation runs on and ends ``length``; ``truncated`` then says so. The search first
tries structure-closing tokens (cheap, enough for most states); states that need specific text
first (an e-mail without its ``@``, a pattern's literal parts) are left by an exploring search over
single characters that prefers characters leading to states it has not seen yet.
"""

from __future__ import annotations

import logging
import time

import llguidance
import numpy as np

logger = logging.getLogger(__name__)

_NEG_INF_BITS = np.uint32(0xFF800000)  # float32 -inf

# Start looking for a closing path when this few tokens remain.
CLOSING_WINDOW = 48
# Bound on the matcher states one closing search visits.
CLOSING_NODES = 96
# Children tried per state.
CLOSING_BRANCH = 3
# Texts the search tries first, in order: inside a JSON string, and outside one.
IN_STRING = ['"', '"}', '"]', '"}}', '"]}']
OUTSIDE = ["}", "]", ",", "0", '""', "null", "false", "[]", "{}", '"', "1", "true", "}}", "]}"]
# Bound on the characters the exploring search tries (2-60 us each, the cost of a mask).
EXPLORE_TRIES = 1000
# After an exploring search failed, tokens until the next one (the cheap search runs every time).
EXPLORE_BACKOFF = 6
# The exploring search's alphabet: printable ASCII, structural characters first.
ALPHABET = '"}],:{[0a' + "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) not in '"}],:{[0a')


def scan_json(in_string: bool, escaped: bool, data: bytes) -> tuple[bool, bool]:
    """Whether the text after ``data`` is inside a JSON string (and after a backslash)."""
    for ch in data:
        if escaped:
            escaped = False
        elif in_string and ch == 0x5C:  # backslash
            escaped = True
        elif ch == 0x22:  # quote
            in_string = not in_string
    return in_string, escaped


class ClosingSearch:
    """Depth-first search for a short completion, trying structure-closing tokens first.

    Candidates are checked with ``validate_tokens`` (no full mask); a full mask is computed only
    when no candidate fits (e.g. a string with a minimum length, or an enum).
    """

    def __init__(
        self, tokenizer: llguidance.LLTokenizer, eos: frozenset[int], mask_words: int
    ) -> None:
        self.tokenizer = tokenizer
        self.eos = eos
        self.mask = np.zeros(mask_words, dtype=np.int32)
        self.inside = self._ids(IN_STRING)
        self.outside = self._ids(OUTSIDE)
        self.alphabet = self._ids(list(ALPHABET))
        self.nodes = 0

    def _ids(self, texts: list[str]) -> list[int]:
        ids = []
        for text in texts:
            toks = self.tokenizer.tokenize_str(text)
            if len(toks) == 1 and toks[0] not in ids:
                ids.append(toks[0])
        return ids

    def find(
        self,
        matcher: llguidance.LLMatcher,
        max_len: int,
        in_string: bool,
        escaped: bool = False,
        explore: bool = True,
    ) -> list[int] | None:
        """Token ids that lead ``matcher`` to an accepting state, at most ``max_len`` of them.
        ``in_string``/``escaped``: the JSON string state of the text so far (orders the search);
        ``explore`` allows the costlier exploring search when structure-closing tokens fail."""
        self.nodes = 0
        path = self._dfs(matcher.deep_copy(), max_len, in_string)
        if path is None and explore:
            self.nodes = 0
            path = self._explore(matcher.deep_copy(), max_len, (in_string, escaped), set())
        return path

    def _dfs(self, m: llguidance.LLMatcher, depth: int, in_string: bool) -> list[int] | None:
        if m.is_accepting():
            return []
        self.nodes += 1
        if depth <= 0 or self.nodes > CLOSING_NODES or m.is_error():
            return None
        forced = m.compute_ff_tokens()
        if forced:
            if len(forced) > depth or not m.consume_tokens(forced):
                return None
            state, _ = scan_json(in_string, False, self.tokenizer.decode_bytes(forced))
            rest = self._dfs(m, depth - len(forced), state)
            return None if rest is None else forced + rest
        tried = 0
        for tok in self._options(m, in_string):
            child = m.deep_copy()
            if not child.consume_token(tok):
                continue
            state, _ = scan_json(in_string, False, self.tokenizer.decode_bytes([tok]))
            rest = self._dfs(child, depth - 1, state)
            if rest is not None:
                return [tok, *rest]
            tried += 1
            if tried >= CLOSING_BRANCH:
                break
        return None

    def _explore(
        self, m: llguidance.LLMatcher, depth: int, json_state: tuple[bool, bool], seen: set[bytes]
    ) -> list[int] | None:
        """Depth-first over single characters, one child per distinct next state (states are told
        apart by which characters they allow).

        Every state llguidance allows can still be completed, so a path exists; the search only
        has to find a short one. Children are ranked: characters that close a string or a
        structure first, then characters leading to states not seen yet, then known states, and
        among those a state leading to itself last (counted repetitions such as ``[0-9]{8}`` need
        it); within each group, characters that open something new (``,`` ``{`` ``[``, a string
        escape) come last."""
        if m.is_accepting():
            return []
        if depth <= 0 or self.nodes >= EXPLORE_TRIES or m.is_error():
            return None
        forced = m.compute_ff_tokens()
        if forced:
            if len(forced) > depth or not m.consume_tokens(forced):
                return None
            state = scan_json(*json_state, self.tokenizer.decode_bytes(forced))
            rest = self._explore(m, depth - len(forced), state, seen)
            return None if rest is None else forced + rest
        in_string, escaped = json_state
        allowed = self._allowed_chars(m)
        seen.add(allowed)
        children: dict[bytes, tuple[tuple[bool, ...], int, llguidance.LLMatcher]] = {}
        for tok in self._char_options(m, allowed):
            self.nodes += 1
            if self.nodes > EXPLORE_TRIES:
                return None
            child = m.deep_copy()
            if not child.consume_token(tok):
                continue
            if child.is_accepting():
                return [tok]
            sig = self._allowed_chars(child)
            if sig not in children:
                text = self.tokenizer.decode_bytes([tok])
                closes, opens = self._closes_opens(text, in_string, escaped)
                rank = (not closes, sig in seen, sig == allowed, opens)
                children[sig] = (rank, tok, child)
        for _, tok, child in sorted(children.values(), key=lambda c: c[0]):  # stable
            state = scan_json(*json_state, self.tokenizer.decode_bytes([tok]))
            rest = self._explore(child, depth - 1, state, seen)
            if rest is not None:
                return [tok, *rest]
        return None

    @staticmethod
    def _closes_opens(text: bytes, in_string: bool, escaped: bool) -> tuple[bool, bool]:
        """Whether the character ends a string or structure, and whether it starts something."""
        if escaped:
            return False, False
        if in_string:
            return text == b'"', text == b"\\"
        return text in (b"}", b"]"), text in (b",", b"{", b"[")

    def _allowed_chars(self, m: llguidance.LLMatcher) -> bytes:
        """Which alphabet tokens ``m`` allows next (the state's signature). One ``validate_tokens``
        per character (~0.3 us) is several times cheaper than a full mask in wide states."""
        return bytes(m.validate_tokens([t]) for t in self.alphabet)

    def _char_options(self, m: llguidance.LLMatcher, allowed: bytes) -> list[int]:
        """The allowed alphabet tokens; when none is allowed (non-ASCII text only), the shortest
        allowed tokens of the full mask."""
        chars = [t for t, ok in zip(self.alphabet, allowed, strict=True) if ok]
        return chars or self._shortest_allowed(m)

    def _shortest_allowed(self, m: llguidance.LLMatcher) -> list[int]:
        m.unsafe_compute_mask_ptr(self.mask.ctypes.data, self.mask.nbytes)
        bits = np.unpackbits(self.mask.view(np.uint8), bitorder="little")
        ids = [int(t) for t in np.flatnonzero(bits)[:256] if int(t) not in self.eos]
        return sorted(ids, key=lambda t: len(self.tokenizer.decode_bytes([t])))[:CLOSING_BRANCH]

    def _options(self, m: llguidance.LLMatcher, in_string: bool) -> list[int]:
        order = self.inside if in_string else self.outside
        opts = [t for t in order if m.validate_tokens([t]) == 1]
        return opts or self._shortest_allowed(m)


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
        self._bias_bits = np.zeros(n_vocab, dtype=np.uint32)  # float32 bit patterns
        self._n_allowed = 0
        self._next_search = 0  # token count at which the next closing search runs
        self._next_explore = 0  # token count from which a search may explore again
        self._in_string = False  # JSON string state of the output so far (orders the search)
        self._escaped = False
        self.truncated = False
        # The grammar text, for backends with their own grammar engine (set by BoundFormat).
        self.grammar: str | None = None
        self.mask_times: list[float] = []  # seconds per computed mask (for benchmarks)

    # ---- TokenConstraint ------------------------------------------------------------------
    def prepare(self) -> None:
        """Computes the next mask as an additive bias (0 or -inf per token); may run off the
        backend thread, so ``mask_logits`` is one vector add."""
        if self._mask_valid:
            return
        self._plan_closing()
        if self._must_end():
            self._allow_only(sorted(self.eos))
        elif self._forced:
            self._allow_only(self._forced[:1])
        else:
            t0 = time.perf_counter()
            self.matcher.unsafe_compute_mask_ptr(self.mask.ctypes.data, self.mask.nbytes)
            bits = np.unpackbits(self.mask.view(np.uint8), bitorder="little")[: self.n_vocab]
            self._n_allowed = int(np.count_nonzero(bits))
            if self._n_allowed == 0:  # grammar error: only end-of-sequence remains possible
                self._allow_only(sorted(self.eos))
            else:  # allowed → 0x00000000 (+0.0), disallowed → 0xFF800000 (-inf)
                np.subtract(1, bits, out=bits)
                np.multiply(bits, _NEG_INF_BITS, out=self._bias_bits, dtype=np.uint32)
            self.mask_times.append(time.perf_counter() - t0)
        self._mask_valid = True

    def _allow_only(self, ids: list[int]) -> None:
        self._bias_bits.fill(_NEG_INF_BITS)
        self._bias_bits[ids] = 0
        self._n_allowed = len(ids)

    def mask_logits(self, logits: np.ndarray) -> None:
        """Sets each disallowed entry of ``logits`` (float32, (n_vocab,)) to -inf, in place."""
        self.prepare()
        np.add(logits, self._bias_bits.view(np.float32), out=logits)

    def advance(self, token_id: int) -> None:
        self.generated += 1
        if self.closing is not None:
            piece = self.closing.tokenizer.decode_bytes([token_id])
            self._in_string, self._escaped = scan_json(self._in_string, self._escaped, piece)
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
        eos_allowed = sum(1 for t in self.eos if t < self.n_vocab and self._bias_bits[t] == 0)
        return self._n_allowed == eos_allowed

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
        return last and self.closing is not None and self.matcher.is_accepting()

    def _plan_closing(self) -> None:
        if self.budget is None or self.closing is None or self._forced:
            return
        remaining = self.budget - self.generated
        if remaining > CLOSING_WINDOW or self.generated < self._next_search:
            return
        if self.matcher.is_accepting():
            return
        explore = self.generated >= self._next_explore
        path = self.closing.find(
            self.matcher, remaining - 1, self._in_string, self._escaped, explore
        )
        if path is None:
            self.truncated = True  # no valid closing fits: the sequence will end "length"
            self._next_search = self.generated + 1
            if explore:
                self._next_explore = self.generated + EXPLORE_BACKOFF
            return
        self.truncated = False
        if len(path) + 1 >= remaining:
            self._forced = path
        else:  # search again every few tokens, and every token once the end is near
            slack = remaining - len(path) - 1
            self._next_search = self.generated + max(1, min(4, slack // 2))
