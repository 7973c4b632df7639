"""Token ids → text, incrementally: UTF-8 reassembly across tokens and stop-string matching.

A token may end in the middle of a UTF-8 character, and a stop string may span tokens; the
decoder holds back exactly what could still change: an incomplete character, or a tail that is a
prefix of some stop string. Nothing after a stop string is ever emitted.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Sequence


class IncrementalText:
    """Feed token bytes in, get text deltas out; ``stopped`` once a stop string matched."""

    def __init__(self, stop: Sequence[str] = ()):
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stop = tuple(s for s in stop if s)
        self._max_hold = max((len(s) for s in self._stop), default=0)
        self._pending = ""  # decoded but held back (could be the start of a stop string)
        self.text = ""  # everything emitted so far
        self.stopped = False

    def feed(self, data: bytes) -> str:
        """Add a token's bytes; return the text that is now final (possibly empty)."""
        if self.stopped:
            return ""
        self._pending += self._decoder.decode(data)
        return self._release(final=False)

    def flush(self) -> str:
        """End of generation: release whatever was held (an incomplete character becomes U+FFFD)."""
        if self.stopped:
            return ""
        self._pending += self._decoder.decode(b"", final=True)
        return self._release(final=True)

    def _release(self, *, final: bool) -> str:
        if self._stop:
            cut = _first_stop(self._pending, self._stop)
            if cut is not None:
                out, self._pending, self.stopped = self._pending[:cut], "", True
                self.text += out
                return out
        if final or not self._stop:
            out, self._pending = self._pending, ""
        else:
            keep = _stop_prefix_len(self._pending, self._stop, self._max_hold)
            split = len(self._pending) - keep
            out, self._pending = self._pending[:split], self._pending[split:]
        self.text += out
        return out


def _first_stop(text: str, stops: Sequence[str]) -> int | None:
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else None


def _stop_prefix_len(text: str, stops: Sequence[str], max_hold: int) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of a stop string."""
    for n in range(min(len(text), max_hold - 1), 0, -1):
        tail = text[-n:]
        if any(s.startswith(tail) for s in stops):
            return n
    return 0


def detokenize(token_bytes: Callable[[int], bytes], ids: Sequence[int]) -> str:
    return b"".join(token_bytes(t) for t in ids).decode("utf-8", errors="replace")
