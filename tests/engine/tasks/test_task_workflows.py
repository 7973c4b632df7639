"""Workflow definitions: seeds parse, bad definitions name the field, runs gate on confidence."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from engine.errors import InvalidRequestError
from engine.tasks import workflows as wf
from engine.tasks.classify import Prediction
from engine.tasks.extract import extract


def test_seed_workflows_are_the_issue_s_two() -> None:
    seeds = wf.seed_workflows()
    leads, support = seeds["leads"], seeds["support"]
    assert set(leads.classify.labels) == {"Sales", "Support", "Partnership"}
    assert leads.min_confidence == 0.7 and leads.persist_table == "leads"
    assert set(leads.schema["properties"]) == {"name", "email", "phone", "budget"}
    assert "number" in leads.schema["properties"]["budget"]["type"]
    assert set(support.classify.labels) == {
        "product_info",
        "order_status",
        "complaint",
        "refund",
        "delivery",
        "comparison",
        "general",
    }
    assert support.schema["properties"]["order_id"]["pattern"] == "^ORD-[0-9]{4}$"
    assert wf.parse_workflow(leads.to_dict()) == leads  # the JSON form round-trips


@pytest.mark.parametrize(
    ("change", "param"),
    [
        (lambda d: d.pop("classify"), "classify"),
        (lambda d: d["gate"].update(min_confidence=2), "gate.min_confidence"),
        (lambda d: d["extract"].update(schema={"type": "string"}), "extract.schema"),
        (lambda d: d["extract"].update(from_input=["nope"]), "extract.from_input"),
        (lambda d: d.update(persist={"table": "users"}), "persist.table"),
        (
            lambda d: d["classify"].update(examples=[{"text": "x", "label": "Nope"}]),
            "classify.examples",
        ),
    ],
)
def test_bad_definitions_name_the_field(change: Any, param: str) -> None:
    raw = copy.deepcopy(wf.seed_workflows()["leads"].to_dict())
    change(raw)
    with pytest.raises(InvalidRequestError) as err:
        wf.parse_workflow(raw)
    assert err.value.param == param


def _ctx(confidence: float) -> wf.WorkflowContext:
    async def classify(spec: wf.WorkflowSpec, text: str) -> Prediction:
        return Prediction(
            "Sales", confidence, {"Sales": confidence, "Support": 1 - confidence}, False
        )

    async def do_extract(spec: wf.WorkflowSpec, text: str, use_llm: bool):
        assert not use_llm  # the scripted runs below exercise the regex path only
        return await extract(None, text, spec.schema)

    return wf.WorkflowContext(classify, do_extract)


def test_low_confidence_uses_regex_fallbacks_and_input_fields() -> None:
    spec = wf.seed_workflows()["leads"]
    item = wf.check_input(spec, {"name": "Ann", "message": "Quote please: ann@x.org, $12,500"})
    out = asyncio.run(wf.run_workflow(spec, item, _ctx(0.55), "run_1")).response
    assert out == {
        "id": "run_1",
        "intent": "Sales",
        "confidence": 0.55,
        "low_confidence": True,
        "fields": {"name": "Ann", "email": "ann@x.org", "phone": None, "budget": 12500.0},
    }


@pytest.mark.parametrize(
    ("item", "param"),
    [
        ({"name": "x"}, "input.message"),
        ({"message": "hi", "age": 3}, "input"),
        (42, "input"),
    ],
)
def test_bad_inputs_name_the_field(item: Any, param: str) -> None:
    with pytest.raises(InvalidRequestError) as err:
        wf.check_input(wf.seed_workflows()["leads"], item)
    assert err.value.param == param


def test_a_workflow_may_name_its_model_and_keeps_it_through_its_json_form() -> None:
    from engine.errors import InvalidRequestError
    from engine.tasks.workflows import parse_workflow

    raw = {
        "name": "small",
        "model": "smollm2-135m-instruct",
        "classify": {"labels": {"a": "first", "b": "second"}},
        "extract": {"schema": {"type": "object", "properties": {"x": {"type": "string"}}}},
    }
    spec = parse_workflow(raw)
    assert spec.model == "smollm2-135m-instruct"
    assert parse_workflow(spec.to_dict()).model == spec.model
    assert "model" not in parse_workflow(raw | {"model": None}).to_dict()
    for bad in ("", 7, "m" * 129):
        with pytest.raises(InvalidRequestError) as err:
            parse_workflow(raw | {"model": bad})
        assert err.value.param == "model"
