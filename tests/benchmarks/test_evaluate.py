"""``python -m benchmarks eval``: the labelled sets load, and each task's scoring tells a right
answer from a wrong one (the model runs are measured, not tested: docs/models.md)."""

from __future__ import annotations

import json

import pytest

from benchmarks.__main__ import EVAL_DATA
from benchmarks.evaluate import BUILDERS, TASKS, _follow_check, load_set, table


@pytest.mark.parametrize("task", TASKS)
def test_sets_load_and_build_prompts(task: str) -> None:
    examples = load_set(EVAL_DATA, task)
    assert len(examples) >= 10
    for example in examples:
        prompts = BUILDERS[task](example)
        assert prompts and all(p.pipeline or p.messages or p.text for p in prompts.values())


def test_extract_scores_exact_fields() -> None:
    example = load_set(EVAL_DATA, "extract")[0]
    score = BUILDERS["extract"](example)["chat"].score
    right = json.dumps(example["expected"])
    assert score(f"Here you go: {right} done") == {"correct": 1.0, "fields": 1.0}
    wrong = dict(example["expected"], seats=1)
    assert score(json.dumps(wrong)) == {"correct": 0.0, "fields": 0.75}
    assert score("no json")["correct"] == 0.0


def test_rag_needs_the_right_block_cited() -> None:
    example = load_set(EVAL_DATA, "rag")[0]
    score = BUILDERS["rag"](example)["chat"].score
    right, fact = example["answer_block"], example["answer_contains"][0]
    other = 1 if right != 1 else 2
    assert score(f"It opens at {fact} [{right}].") == {"correct": 1.0, "marker": 1.0, "answer": 1.0}
    assert score(f"It opens at {fact} [{other}].")["correct"] == 0.0
    assert score(f"{fact}.")["correct"] == 0.0  # no marker, nothing quoted: nothing cited


def test_classify_takes_the_first_label_named() -> None:
    example = {"text": "x", "labels": ["billing", "sales"], "label": "sales"}
    score = BUILDERS["classify"](example)["chat"].score
    assert score("Sales.")["correct"] == 1.0
    assert score("billing, not sales")["correct"] == 0.0


@pytest.mark.parametrize(
    ("check", "arg", "good", "bad"),
    [
        ("one_word", "blue", "Blue.", "It is blue."),
        ("yes_no", None, "Yes.", "Yes, it is."),
        ("bullets", 3, "- a\n- b\n- c", "- a\n- b"),
        ("exact", "HELLO", "HELLO", "hello"),
        ("json_key", ["city", "rome"], '{"city": "Rome"}', '{"town": "Rome"}'),
        ("number", 12, "12", "12 apples"),
        ("lowercase", None, "cats like to sleep.", "Cats like to sleep."),
        ("max_words_contains", [5, "jupiter"], "Jupiter.", "The largest planet is surely Jupiter."),
    ],
)
def test_follow_checks(check: str, arg: object, good: str, bad: str) -> None:
    assert _follow_check(check, arg, good)
    assert not _follow_check(check, arg, bad)


def test_table_has_a_row_per_result() -> None:
    row = {
        "model": "m",
        "settings": {"task": "rag", "variant": "chat"},
        "figures": {"correct": 0.5, "answer": 0.7, "n": 10, "tokens_per_s": 20.0, "seconds": 3},
    }
    assert "| m | rag | chat | 0.50 | answer 0.7 | 10 | 20.0 |" in table([row])


def test_rag_without_marker_cites_the_quoted_block() -> None:
    example = {
        "question": "q",
        "blocks": ["The office opens at eight every weekday.", "Lunch is served at noon daily."],
        "answer_block": 2,
        "answer_contains": ["noon"],
    }
    score = BUILDERS["rag"](example)["chat"].score
    assert score("Lunch is served at noon.") == {"correct": 1.0, "marker": 0.0, "answer": 1.0}
    assert score("The office opens at eight.")["correct"] == 0.0
    assert score("Noon.")["correct"] == 0.0  # too short a quote to cite anything
