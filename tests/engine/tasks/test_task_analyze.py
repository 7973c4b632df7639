"""Document analysis: map-reduce over pieces, schema-valid results with or without the model."""

from __future__ import annotations

import asyncio

import jsonschema

from engine.tasks import analyze as an
from tests.engine.tasks.fixtures_tasks import ScriptedLLM

DOC = [
    "Project Falcon kick-off notes. The team agreed to migrate the billing service by March 3, "
    "2027. Maria will prepare the data migration plan by 2027-02-10.",
    "There is a risk of a critical outage during the cut-over weekend. Vendor delays are a "
    "concern for the hardware order. Minor risk: documentation may lag.",
    "Next steps: John should review the security checklist. The budget is approved.",
]


def check(analysis: an.Analysis) -> None:
    for task, result in analysis.results.items():
        jsonschema.validate(an.strip_meta(result), an.RESULT_SCHEMAS[task])


def test_extractive_answers_without_a_model_are_schema_valid() -> None:
    got = asyncio.run(an.Analyzer(None, piece_chars=200).run(DOC, an.TASKS))
    check(got)
    items = got.results["action_items"]["action_items"]
    assert any(i["owner"] == "Maria" and i["due_date"] == "2027-02-10" for i in items)
    severities = {r["severity"] for r in got.results["risks"]["risks"]}
    assert "high" in severities and "low" in severities
    assert got.results["summary"]["meta"] == {"fallback": True, "pieces": 3}


def test_map_reduce_with_a_model_reports_progress() -> None:
    llm = ScriptedLLM(
        {
            "summary": "s",
            "short": "a",
            "medium": "b",
            "detailed": "c",
            "action_items": [{"title": "t", "owner": None, "due_date": "May 1, 2027"}],
            "risks": [{"description": "r", "severity": "extreme"}],
        }
    )
    seen: list[tuple[int, int]] = []

    async def report(done: int, total: int) -> None:
        seen.append((done, total))

    analyzer = an.Analyzer(llm, piece_chars=200)
    pieces, total = analyzer.plan(DOC, an.TASKS)
    got = asyncio.run(analyzer.run(DOC, an.TASKS, report))
    check(got)
    assert len(pieces) == 3 and total == 3 * 3 + 1
    assert [d for d, _ in seen] == list(range(1, total + 1))
    assert got.results["summary"]["short"] == "a"
    assert got.results["summary"]["meta"]["fallback"] is False
    # Model items are normalized (ISO dates) and de-duplicated across pieces.
    assert got.results["action_items"]["action_items"] == [
        {"title": "t", "owner": None, "due_date": "2027-05-01"}
    ]
    # A severity outside the enum fails the schema: that step falls back to the text.
    assert got.results["risks"]["meta"]["fallback"] is True
    assert got.usage["summary"].calls == 4


def test_split_pieces_bounds_length() -> None:
    pieces = an.split_pieces(["a. " * 500, "short"], 300)
    assert all(len(p) <= 300 for p in pieces) and pieces[-1].endswith("short")
