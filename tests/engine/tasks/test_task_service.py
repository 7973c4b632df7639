"""The task services over a real Engine (Gemma 3 270M GGUF, MiniLM, DuckDB): classifiers that
survive a restart, the LLM choice path, extraction, both seed workflows with their persisted rows, a
document analysis job, usage, and tenant isolation.

Gemma 3 270M is a tiny base model: these tests check the properties that make results dependable
(normalized scores, schema-valid objects, validated or fallback fields, stored rows), not the
model's judgement.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from configs import load_settings
from engine import DocumentInput, Hearth, open_hearth
from engine.errors import InvalidRequestError, NotFoundError
from engine.tasks.analyze import RESULT_SCHEMAS, strip_meta
from engine.tasks.classifiers import ClassifierInput, ClassifierService
from tests.engine.tasks.fixtures_tasks import IN_SCOPE_PROBES, OUT_OF_SCOPE_PROBES, examples
from tests.support import ensure_models

pytestmark = pytest.mark.slow

LEADS_SCHEMA_KEYS = {"name", "email", "phone", "budget"}


def settings(data_dir: Path):
    models = ensure_models()
    return load_settings("test", env={"HEARTH_MODELS_DIR": str(models)}, data_dir=data_dir)


async def open_service(data_dir: Path) -> tuple[Hearth, ClassifierService]:
    hearth = await open_hearth(settings(data_dir))
    return hearth, hearth.classifiers


def test_classifier_predicts_abstains_and_survives_restart(tmp_path: Path) -> None:
    async def first() -> list[dict[str, Any]]:
        engine, svc = await open_service(tmp_path)
        try:
            data = examples()
            row = await svc.create_classifier("default", ClassifierInput("intents", tuple(data)))
            assert row["version"] == 1 and row["method"] == "embedding"
            again = await svc.create_classifier("default", ClassifierInput("intents", tuple(data)))
            assert again["version"] == 2
            texts = list(IN_SCOPE_PROBES) + OUT_OF_SCOPE_PROBES
            return await svc.classify("default", "intents", texts)
        finally:
            await engine.close()

    async def second(before: list[dict[str, Any]]) -> None:
        engine, svc = await open_service(tmp_path)
        try:
            texts = list(IN_SCOPE_PROBES) + OUT_OF_SCOPE_PROBES
            after = await svc.classify("default", "intents", texts)
            assert [a["label"] for a in after] == [b["label"] for b in before]
            for a, b in zip(after, before, strict=True):
                assert a["confidence"] == pytest.approx(b["confidence"], abs=1e-5)
            info = await svc.get_classifier("default", "intents")
            assert info["versions"] == [1, 2]
            old = await svc.classify("default", "intents", texts[:1], version=1)
            assert old[0]["label"] == "billing"
        finally:
            await engine.close()

    before = asyncio.run(first())
    for text, got in zip(IN_SCOPE_PROBES, before, strict=False):
        assert got["label"] == IN_SCOPE_PROBES[text] and not got["abstained"]
    out = before[len(IN_SCOPE_PROBES) :]
    assert sum(o["abstained"] for o in out) >= 2
    assert all(o["label"] is None for o in out if o["abstained"])
    asyncio.run(second(before))


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """One Hearth (engine and task services) for the tests below, on one event loop."""
    loop = asyncio.new_event_loop()
    hearth, _ = loop.run_until_complete(open_service(tmp_path_factory.mktemp("tasks")))
    yield Live(loop, hearth)
    loop.run_until_complete(hearth.close())
    loop.close()


@dataclass
class Live:
    loop: asyncio.AbstractEventLoop
    hearth: Hearth

    def run(self, step: Callable[[Hearth], Awaitable[None]]) -> None:
        self.loop.run_until_complete(step(self.hearth))


@pytest.mark.timeout(1800)
def test_llm_choice_path_returns_normalized_scores(live: Live) -> None:
    live.run(_llm_choice)


@pytest.mark.timeout(1800)
def test_extraction_validates_and_reports_spans_and_fallbacks(live: Live) -> None:
    live.run(_extraction)


@pytest.mark.timeout(1800)
def test_seed_workflows_end_to_end_with_persisted_rows(live: Live) -> None:
    live.run(_workflows)


@pytest.mark.timeout(1800)
def test_document_analysis_job_is_schema_valid_and_cached(live: Live) -> None:
    live.run(_analysis)


@pytest.mark.timeout(1800)
def test_tenants_never_see_each_other(live: Live) -> None:
    live.run(_isolation)


async def _llm_choice(h: Hearth) -> None:
    labels = {"positive": "happy, pleased", "negative": "angry, disappointed"}
    row = await h.classifiers.create_classifier("default", ClassifierInput("tone", labels=labels))
    assert row["method"] == "llm"
    got = await h.classifiers.classify(
        "default", "tone", ["I love it, thank you!", "This is awful."]
    )
    for item in got:
        assert set(item["scores"]) == set(labels)
        assert sum(item["scores"].values()) == pytest.approx(1.0, abs=1e-5)
        assert item["source"] == "llm" and item["label"] in labels


async def _extraction(h: Hearth) -> None:
    schema = {
        "type": "object",
        "properties": {
            "email": {"type": ["string", "null"]},
            "phone": {"type": ["string", "null"]},
            "budget": {"type": ["number", "null"]},
        },
        "required": ["email", "phone", "budget"],
        "additionalProperties": False,
    }
    text = "Contact jo@example.org or +44 20 7946 0958. We can spend $12,000."
    [got] = await h.extraction.extract("default", [text], schema)
    assert got.valid
    jsonschema.validate(got.object, schema)
    json.loads(got.raw)  # the model's own output is JSON (constrained decoding)
    assert got.object["email"] == "jo@example.org"
    assert got.object["budget"] == 12000
    for name in ("email", "phone", "budget"):
        f = got.fields[name]
        assert f.valid and f.source in ("model", "fallback")
        assert f.span is not None
        if f.source == "model":
            assert f.confidence is not None and 0 < f.confidence <= 1
    with pytest.raises(InvalidRequestError):
        await h.extraction.extract("default", [text], {"type": "object"})


async def _workflows(h: Hearth) -> None:
    store = h.db.store
    leads = await h.workflows.run_workflow(
        "default",
        "leads",
        [
            {
                "name": "Ann Smith",
                "message": "We'd like a quote for 40 seats, budget $25,000. "
                "Reach me at ann@smith.io or 415-555-0101.",
            }
        ],
        "req-leads-1",
    )
    out = leads[0]
    assert set(out) == {"id", "intent", "confidence", "low_confidence", "fields"}
    assert out["intent"] in {"Sales", "Support", "Partnership"}
    assert set(out["fields"]) == LEADS_SCHEMA_KEYS
    assert out["fields"]["name"] == "Ann Smith"
    assert out["fields"]["email"] == "ann@smith.io" and out["fields"]["budget"] == 25000
    assert out["low_confidence"] == (out["confidence"] < 0.7)
    row = store.fetchone(
        "SELECT intent, fields, confidence, raw_output, request_id, processed_at FROM leads "
        "WHERE id = ? AND tenant_id = 'default'",
        [out["id"]],
    )
    assert row is not None and row[0] == out["intent"] and row[4] == "req-leads-1"
    assert json.loads(row[1]) == out["fields"] and row[5] is not None
    audit = store.fetchone(
        "SELECT action, request_id FROM task_audit WHERE subject = ?", [out["id"]]
    )
    assert audit == ("workflow.leads.run", "req-leads-1")

    [ticket] = await h.workflows.run_workflow(
        "default", "support", ["Where is my order ORD-4821? It still hasn't shipped."], "req-2"
    )
    assert ticket["fields"]["order_id"] == "ORD-4821"
    assert ticket["intent"] in h.workflows.seeds["support"].classify.labels
    stored = store.fetchone("SELECT fields FROM support_tickets WHERE id = ?", [ticket["id"]])
    assert stored is not None and json.loads(stored[0])["order_id"] == "ORD-4821"
    results = await h.workflows.results("default", "leads")
    assert out["id"] in [r["id"] for r in results]


async def _analysis(h: Hearth) -> None:
    docs = h.documents
    await docs.create_collection("default", "notes")
    text = (
        "Weekly operations review. Maria will renew the support contract by 2027-03-01. "
        "There is a high risk that the data center migration slips because of vendor delays. "
        "John should update the incident runbook before the audit."
    )
    job = await docs.submit("default", "notes", [DocumentInput(text=text, client_id="week1")])
    await h.jobs.wait("default", job.id)
    job = await h.analysis.analyze("default", "notes", "week1")
    progress = []
    async for state in await h.jobs.events("default", job.id):
        if state is not None:
            progress.append(state.progress)
    done = await h.jobs.get("default", job.id)
    assert done.status == "succeeded" and done.progress == 100
    assert progress == sorted(progress) and progress[-1] == 100
    results = done.result["results"]
    for task, schema in RESULT_SCHEMAS.items():
        jsonschema.validate(strip_meta(results[task]), schema)
    again = await h.analysis.analyze("default", "notes", "week1")
    cached = await h.jobs.wait("default", again.id)
    assert set(cached.result["cached"]) == set(RESULT_SCHEMAS)
    stored = await h.analysis.analysis("default", "notes", "week1")
    assert set(stored["results"]) == set(RESULT_SCHEMAS)
    usage = await h.task_usage.report("default")
    assert usage["tasks"]["analyze:summary"]["completion_tokens"] > 0
    assert usage["tasks"]["analyze:summary"]["seconds"] > 0


async def _isolation(h: Hearth) -> None:
    data = tuple(examples())
    await h.classifiers.create_classifier("default", ClassifierInput("tone", data))
    # Gate at 1.0: the regex path only (no model call), which is all isolation needs.
    regex_only = {
        **h.workflows.seeds["leads"].to_dict(),
        "name": "iso",
        "gate": {"min_confidence": 1.0},
    }
    await h.workflows.save_workflow("default", regex_only)
    [run] = await h.workflows.run_workflow("default", "iso", [{"message": "hi, a@b.io"}], None)
    assert run["low_confidence"] and run["fields"]["email"] == "a@b.io"
    await h.documents.create_collection("default", "iso")
    doc = DocumentInput(text="Quarterly planning notes for the sales team.", client_id="d")
    job = await h.documents.submit("default", "iso", [doc])
    await h.jobs.wait("default", job.id)
    other = "ten_other"
    with pytest.raises(NotFoundError):
        await h.classifiers.classify(other, "tone", ["hi"])
    with pytest.raises(NotFoundError):
        await h.classifiers.delete_classifier(other, "tone")
    assert await h.classifiers.list_classifiers(other) == []
    assert await h.workflows.results(other, "leads") == []
    with pytest.raises(NotFoundError):
        await h.workflows.results(other, "iso")
    with pytest.raises(NotFoundError):
        await h.workflows.result(other, run["id"])
    assert (await h.task_usage.report(other))["tasks"] == {}
    assert (await h.task_usage.report("default"))["tasks"]["workflow:iso"]["items"] == 1
    with pytest.raises(NotFoundError):
        await h.analysis.analyze(other, "iso", "d")
    await h.workflows.save_workflow(other, {**h.workflows.seeds["leads"].to_dict(), "name": "mine"})
    with pytest.raises(NotFoundError):
        await h.workflows.workflow("default", "mine")
    assert (await h.workflows.workflow(other, "mine")).name == "mine"
