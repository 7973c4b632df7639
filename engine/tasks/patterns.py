"""Tenant-supplied regular expressions, run by RE2: time linear in the text, memory bounded.

Classifier and workflow rules are patterns a tenant writes. Python's ``re`` backtracks, so a
pattern such as ``(a+)+$`` against a long run of ``a`` blocks the thread that runs it for
minutes; RE2 has no backtracking (no look-around, no back-references) and answers in time linear
in the text. A pattern is also bounded in length (``MAX_PATTERN_CHARS``) and in the memory of its
compiled program (``MAX_PROGRAM_BYTES``): past either bound, or with syntax RE2 does not support,
the request is a 400 that names the field.

Matching is case-insensitive, anywhere in the text (``search``), as the rules document.
"""

from __future__ import annotations

import functools
import logging

import re2

from engine.errors import InvalidRequestError

logger = logging.getLogger(__name__)

MAX_PATTERN_CHARS = 1000
MAX_PROGRAM_BYTES = 4 << 20  # RE2's budget for one compiled program (and its DFA cache)
_CACHED_PATTERNS = 1024  # compiled patterns kept, shared by every tenant


def _options() -> re2.Options:
    options = re2.Options()
    options.case_sensitive = False
    options.max_mem = MAX_PROGRAM_BYTES
    options.log_errors = False  # errors are the caller's 400, not lines on stderr
    return options


def check_pattern(pattern: object, param: str) -> None:
    """Raise a 400 naming ``param`` unless ``pattern`` is a pattern RE2 compiles within bounds."""
    if not isinstance(pattern, str) or not pattern:
        raise InvalidRequestError(f"{param}: expected a non-empty regular expression", param=param)
    if len(pattern) > MAX_PATTERN_CHARS:
        raise InvalidRequestError(
            f"{param}: the pattern has {len(pattern)} characters; the limit is {MAX_PATTERN_CHARS}",
            param=param,
        )
    try:
        _compiled(pattern)
    except re2.error as exc:
        reason = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else exc
        raise InvalidRequestError(
            f"{param}: not a supported regular expression ({reason}); patterns use RE2 syntax "
            "(no look-around or back-references)",
            param=param,
        ) from None


def search(pattern: str, text: str) -> bool:
    """Whether ``pattern`` matches anywhere in ``text`` (case-insensitive). A pattern that does
    not compile (one stored before patterns were checked) never matches."""
    if len(pattern) > MAX_PATTERN_CHARS:
        return False
    try:
        compiled = _compiled(pattern)
    except re2.error:
        logger.warning("rule pattern %r is not supported by RE2; it never matches", pattern)
        return False
    return compiled.search(text) is not None


@functools.lru_cache(maxsize=_CACHED_PATTERNS)
def _compiled(pattern: str) -> re2._Regexp:
    return re2.compile(pattern, _options())
