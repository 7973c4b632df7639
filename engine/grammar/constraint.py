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
single characters that prefers characters leading to states it has not seen yet. Both try the
schema's own words as well (``closing_hints``: required and declared property names as ``"name":``,
string enum/const values): where extra properties are allowed, a generic search would write
anonymous keys forever instead of the required ones. Inside a string they try ``string_endings``:
a short match of each ``pattern`` (and an example of each ``format``), since inside a pattern the
model filled with other text every state allows the same characters and nothing tells a search
which way the match lies.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from dataclasses import dataclass, field

import llguidance
import numpy as np

from engine.grammar.schema_check import iter_subschemas

logger = logging.getLogger(__name__)

_NEG_INF_BITS = np.uint32(0xFF800000)  # float32 -inf

# Track the closing path closely (a search every few tokens) when this few tokens remain.
CLOSING_WINDOW = 48
# Start looking for a closing path when this few tokens remain: a deep structure (required
# objects, counted digits written a character at a time) can need more than the window to close.
# Out here searches are sparse: the next one comes after half the slack, at most 16 tokens.
CLOSING_HORIZON = 192
# Bound on the matcher states one closing search visits.
CLOSING_NODES = 160
# Force the closing path this many tokens (plus a quarter of its length) before the budget would
# just fit it: one more model token can lengthen the closing (a new key that needs its value).
CLOSING_MARGIN = 4
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
# Bound on the schema words (``closing_hints``) a search tries.
MAX_HINTS = 256


def closing_hints(*schemas: object) -> list[str]:
    """Texts a closing may need that no generic search guesses: ``"name":`` for required, then
    declared, property names, and ``"value"`` for string enum and const values, in schema order."""
    required: list[str] = []
    declared: list[str] = []
    values: list[object] = []
    for schema in schemas:
        for _, node in iter_subschemas(schema):
            names = node.get("required")
            if isinstance(names, list):
                required.extend(names)
            if isinstance(node.get("properties"), dict):
                declared.extend(node["properties"])
            if isinstance(node.get("enum"), list):
                values.extend(node["enum"])
            if "const" in node:
                values.append(node["const"])
    texts = [json.dumps(n) + ":" for n in required + declared if isinstance(n, str)]
    texts += [json.dumps(v) for v in values if isinstance(v, str)]
    return list(dict.fromkeys(texts))[:MAX_HINTS]


def string_endings(*schemas: object) -> list[str]:
    """Texts that can end a string the model has begun: for each ``pattern`` (and ``format``) of
    the schemas, a short match, JSON-escaped, with the closing quote. A pattern is searched, not
    anchored, so appending a match finishes most strings; one ending per top-level alternative
    (``^A|B$`` ends with a match of ``B``)."""
    found: list[str] = []
    for schema in schemas:
        for _, node in iter_subschemas(schema):
            if isinstance(node.get("pattern"), str):
                found.extend(shortest_matches(node["pattern"]))
            if isinstance(node.get("format"), str) and node["format"] in FORMAT_EXAMPLES:
                found.append(FORMAT_EXAMPLES[node["format"]])
    return [json.dumps(t)[1:] for t in dict.fromkeys(found)][:MAX_HINTS]


#: A short valid value of each format the grammar enforces.
FORMAT_EXAMPLES = {
    "date-time": "2000-01-01T00:00:00Z",
    "date": "2000-01-01",
    "time": "00:00:00Z",
    "duration": "P1D",
    "email": "a@b.co",
    "hostname": "a.co",
    "ipv4": "0.0.0.0",
    "ipv6": "::1",
    "uri": "a:b",
    "uuid": "00000000-0000-0000-0000-000000000000",
}


def shortest_matches(pattern: str) -> list[str]:
    """A short string matching each top-level alternative of ``pattern`` (Python's regex parser;
    lookarounds and back references give up). Empty when the pattern cannot be parsed."""
    import re._parser as sre  # noqa: PLC0415 - stdlib, only needed here

    try:
        tree = sre.parse(pattern)
    except Exception:  # noqa: BLE001 - any parse error: no hint
        return []
    items = list(tree)
    alternatives = [items]
    if len(items) == 1 and items[0][0] is sre.BRANCH:
        alternatives = [list(alt) for alt in items[0][1][1]]
    out = []
    for alt in alternatives:
        try:
            out.append(_shortest(alt, sre))
        except ValueError:
            continue
    return out


def _shortest(items, sre) -> str:
    text = []
    for op, arg in items:
        if op is sre.LITERAL:
            text.append(chr(arg))
        elif op is sre.NOT_LITERAL:
            text.append("a" if arg != ord("a") else "b")
        elif op is sre.ANY:
            text.append("a")
        elif op is sre.IN:
            text.append(_class_member(arg, sre))
        elif op is sre.BRANCH:
            text.append(min((_shortest(list(a), sre) for a in arg[1]), key=len))
        elif op is sre.SUBPATTERN:
            text.append(_shortest(list(arg[-1]), sre))
        elif op in (sre.MAX_REPEAT, sre.MIN_REPEAT, getattr(sre, "POSSESSIVE_REPEAT", None)):
            low, _high, sub = arg
            text.append(_shortest(list(sub), sre) * low)
        elif op is sre.AT:
            continue
        else:  # lookarounds, back references, conditionals
            raise ValueError(op)
    return "".join(text)


def _class_member(members, sre) -> str:
    if members and members[0][0] is sre.NEGATE:
        excluded = {chr(a) for op, a in members[1:] if op is sre.LITERAL}
        return next(c for c in "a0 _" if c not in excluded)
    for op, arg in members:
        if op is sre.LITERAL:
            return chr(arg)
        if op is sre.RANGE:
            return chr(arg[0])
        if op is sre.CATEGORY:
            return {"CATEGORY_DIGIT": "0", "CATEGORY_SPACE": " ", "CATEGORY_NOT_WORD": " "}.get(
                str(arg), "a"
            )
    raise ValueError("empty class")


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


def open_string(text: bytes) -> bytes:
    """The content of the JSON string ``text`` ends inside (after its last unescaped quote)."""
    i = len(text)
    while True:
        i = text.rfind(b'"', 0, i)
        if i < 0:
            return text
        slashes = len(text[:i]) - len(text[:i].rstrip(b"\\"))
        if slashes % 2 == 0:
            return text[i + 1 :]


def _single_token_ids(tokenizer: llguidance.LLTokenizer, texts: list[str]) -> tuple[int, ...]:
    """The ids of the texts that are one token each, in order, without repeats."""
    ids: list[int] = []
    for text in texts:
        toks = tokenizer.tokenize_str(text)
        if len(toks) == 1 and toks[0] not in ids:
            ids.append(toks[0])
    return tuple(ids)


@dataclass(frozen=True)
class ClosingTables:
    """What every closing search over one vocabulary tries; built once per compiler."""

    tokenizer: llguidance.LLTokenizer
    eos: frozenset[int]
    mask_words: int
    inside: tuple[int, ...]  # IN_STRING
    outside: tuple[int, ...]  # OUTSIDE
    closers: tuple[int, ...]  # "}" and "]": tried before any schema word
    alphabet: tuple[int, ...]  # ALPHABET, for the exploring search

    @classmethod
    def build(
        cls, tokenizer: llguidance.LLTokenizer, eos: frozenset[int], mask_words: int
    ) -> ClosingTables:
        ids = functools.partial(_single_token_ids, tokenizer)
        return cls(
            tokenizer, eos, mask_words, ids(IN_STRING), ids(OUTSIDE), ids(["}", "]"]),
            ids(list(ALPHABET)),
        )  # fmt: skip


@dataclass(frozen=True)
class ClosingWords:
    """One schema's words as token ids (``closing_hints``, ``string_endings``); built once per
    compiled grammar."""

    # Hints grouped by first token: one validate_tokens call rules a whole group out.
    hints: dict[int, tuple[tuple[int, ...], ...]] = field(default_factory=dict)
    hint_texts: tuple[bytes, ...] = ()
    endings: tuple[tuple[int, ...], ...] = ()  # ways to finish a begun string

    @classmethod
    def of(cls, tokenizer: llguidance.LLTokenizer, *schemas: object) -> ClosingWords:
        def tokenized(texts: list[str]) -> list[tuple[int, ...]]:
            return [ids for ids in (tuple(tokenizer.tokenize_str(t)) for t in texts) if ids]

        hints = tokenized(closing_hints(*schemas))
        grouped: dict[int, list[tuple[int, ...]]] = {}
        for h in hints:
            grouped.setdefault(h[0], []).append(h)
        return cls(
            {first: tuple(group) for first, group in grouped.items()},
            tuple(tokenizer.decode_bytes(list(h)) for h in hints),
            tuple(tokenized(string_endings(*schemas))),
        )

    @property
    def size(self) -> int:
        return len(self.hint_texts) + len(self.endings)


class ClosingSearch:
    """Depth-first search for a short completion, trying structure-closing tokens first.

    Candidates are checked with ``validate_tokens`` (no full mask); a full mask is computed only
    when no candidate fits (e.g. a string with a minimum length, or an enum). The token tables and
    the schema's words are shared; a search owns only its scratch mask and node count.
    """

    def __init__(self, tables: ClosingTables, words: ClosingWords | None = None) -> None:
        words = words or ClosingWords()
        self.tokenizer = tables.tokenizer
        self.eos = tables.eos
        self.inside, self.outside = tables.inside, tables.outside
        self.closers, self.alphabet = tables.closers, tables.alphabet
        self.hints, self.hint_texts, self.endings = words.hints, words.hint_texts, words.endings
        self.mask = np.zeros(tables.mask_words, dtype=np.int32)
        self.nodes = 0

    def _hint_rests(self, m: llguidance.LLMatcher, begun: bytes) -> list[tuple[int, ...]]:
        """The rests of the schema words that start with ``begun`` (a string's quote and content)
        that ``m`` accepts whole."""
        out = []
        for text in self.hint_texts:
            if len(text) > len(begun) and text.startswith(begun):
                ids = tuple(self.tokenizer.tokenize_bytes(text[len(begun) :]))
                if ids and m.validate_tokens(list(ids)) == len(ids):
                    out.append(ids)
        return out

    def _hint_options(self, m: llguidance.LLMatcher) -> list[tuple[int, ...]]:
        """The schema words ``m`` accepts whole at this point."""
        out = []
        for first, group in self.hints.items():
            if m.validate_tokens([first]) != 1:
                continue
            out.extend(h for h in group if m.validate_tokens(list(h)) == len(h))
        return out

    def find(
        self,
        matcher: llguidance.LLMatcher,
        max_len: int,
        in_string: bool,
        escaped: bool = False,
        explore: bool = True,
        tail: bytes = b"",
    ) -> list[int] | None:
        """Token ids that lead ``matcher`` to an accepting state, at most ``max_len`` of them.
        ``in_string``/``escaped``: the JSON string state of the text so far (orders the search);
        ``explore`` allows the costlier exploring search when structure-closing tokens fail;
        ``tail``: the last bytes of the text so far (a key being written completes to a hint)."""
        self.nodes = 0
        path = self._dfs(matcher.deep_copy(), max_len, in_string, tail)
        if path is None and explore:
            self.nodes = 0
            path = self._explore(matcher.deep_copy(), max_len, (in_string, escaped), set())
        return path

    def _dfs(
        self, m: llguidance.LLMatcher, depth: int, in_string: bool, tail: bytes
    ) -> list[int] | None:
        if m.is_accepting():
            return []
        self.nodes += 1
        if depth <= 0 or self.nodes > CLOSING_NODES or m.is_error():
            return None
        forced = m.compute_ff_tokens()
        if forced:
            if len(forced) > depth or not m.consume_tokens(forced):
                return None
            text = self.tokenizer.decode_bytes(forced)
            state, _ = scan_json(in_string, False, text)
            rest = self._dfs(m, depth - len(forced), state, (tail + text)[-64:])
            return None if rest is None else forced + rest
        tried = 0
        for seq in self._options(m, in_string, tail):
            if len(seq) > depth:
                continue
            child = m.deep_copy()
            if not child.consume_tokens(list(seq)):
                continue
            text = self.tokenizer.decode_bytes(list(seq))
            state, _ = scan_json(in_string, False, text)
            rest = self._dfs(child, depth - len(seq), state, (tail + text)[-64:])
            if rest is not None:
                return [*seq, *rest]
            if self.nodes > CLOSING_NODES:
                return None  # out of budget: stop, do not try the siblings
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
        words = self._hint_options(m) if not in_string and self.hints else []
        if in_string and not escaped:
            words = [e for e in self.endings if m.validate_tokens(list(e)) == len(e)]
        if words:  # the schema's words first: required keys, enum values, pattern matches
            for seq in words:
                self.nodes += 1
                child = m.deep_copy()
                if len(seq) > depth or not child.consume_tokens(list(seq)):
                    continue
                state = scan_json(*json_state, self.tokenizer.decode_bytes(list(seq)))
                rest = self._explore(child, depth - len(seq), state, seen)
                if rest is not None:
                    return [*seq, *rest]
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

    def _options(
        self, m: llguidance.LLMatcher, in_string: bool, tail: bytes = b""
    ) -> list[tuple[int, ...]]:
        """Token sequences to try: closing tokens, then schema words (outside a string), then the
        other structural tokens; the shortest allowed tokens when none of those fits. Inside a
        string, the rest of a schema word the string has begun comes first."""
        order = self.inside if in_string else self.outside
        ok = [(t,) for t in order if m.validate_tokens([t]) == 1]
        if in_string and (self.hint_texts or self.endings):
            ends = [e for e in self.endings if m.validate_tokens(list(e)) == len(e)]
            ok = self._hint_rests(m, b'"' + open_string(tail)) + ok + ends
        elif self.hints:
            closers = [o for o in ok if o[0] in self.closers]
            ok = closers + self._hint_options(m) + [o for o in ok if o[0] not in self.closers]
        return ok or [(t,) for t in self._shortest_allowed(m)]


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
        self._tail = b""  # the last bytes of the output (a key being written, for the search)
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
            self._tail = (self._tail + piece)[-64:]
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
        if remaining > CLOSING_HORIZON or self.generated < self._next_search:
            return
        if self.matcher.is_accepting():
            return
        explore = self.generated >= self._next_explore
        path = self.closing.find(
            self.matcher, remaining - 1, self._in_string, self._escaped, explore, self._tail
        )
        if path is None:
            self.truncated = True  # no valid closing fits: the sequence will end "length"
            # Far from the end a failed search (up to ~30 ms) is retried every few tokens.
            far = max(0, remaining - CLOSING_WINDOW) // 8
            self._next_search = self.generated + max(1, min(far, 16))
            if explore:  # far from the end an exploring search (up to ~60 ms) runs rarely
                far = max(0, remaining - CLOSING_WINDOW) // 4
                self._next_explore = self.generated + max(EXPLORE_BACKOFF, far)
            return
        self.truncated = False
        need = len(path) + 1 + CLOSING_MARGIN + len(path) // 4
        if need >= remaining:
            self._forced = path
        else:  # search again every few tokens, and every token once the end is near
            slack = remaining - need
            step = 4 if remaining <= CLOSING_WINDOW else 16
            self._next_search = self.generated + max(1, min(step, slack // 2))
