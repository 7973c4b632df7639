"""Tenant regexes (classifier and workflow rules) run on RE2: linear time, bounded size, and a
400 naming the field for anything RE2 does not support."""

from __future__ import annotations

import pytest

from engine.errors import InvalidRequestError
from engine.tasks import classify as cls
from engine.tasks import patterns
from engine.tasks.workflows import parse_workflow


def test_a_backtracking_pattern_answers_at_once() -> None:
    # With a backtracking engine this search takes 2**n steps for n a's: it would never return.
    rule = cls.Rule("x", r"(a+)+$b")
    assert not rule.matches("a" * 100_000 + "c")
    assert cls.Rule("x", r"(a|aa)+z").matches("A" * 5_000 + "Z")  # case-insensitive


@pytest.mark.parametrize(
    ("pattern", "words"),
    [
        (r"(?=refund)\w+", "look-around"),  # look-ahead: Python's re accepts it, RE2 does not
        (r"(a)\1", "back-references"),
        ("a" * (patterns.MAX_PATTERN_CHARS + 1), "limit"),
        (r"(\w{500}){500}", "supported"),  # a program past RE2's size bounds
        ("(", "supported"),
    ],
)
def test_unsupported_or_oversized_patterns_are_a_400_naming_the_rule(
    pattern: str, words: str
) -> None:
    with pytest.raises(InvalidRequestError) as err:
        cls.llm_classifier("c", ["a", "b"], rules=[cls.Rule("a", "ok"), cls.Rule("b", pattern)])
    assert err.value.param == "rules[1].pattern"
    assert words in err.value.message


def test_workflow_rules_are_checked_when_the_workflow_is_parsed() -> None:
    raw = {
        "name": "w",
        "classify": {"labels": ["a", "b"], "rules": [{"label": "a", "pattern": r"(?<=x)y"}]},
    }
    with pytest.raises(InvalidRequestError) as err:
        parse_workflow(raw)
    assert err.value.param == "classify.rules[0].pattern"


def test_a_stored_pattern_re2_rejects_never_matches() -> None:
    assert not patterns.search(r"(?=x)x", "x")
    assert patterns.search(r"\bparcel\b", "my PARCEL is late")
