"""Declarative workflows: classify → confidence gate → extract → persist → respond.

A workflow is data (a TOML or JSON file, or a JSON body of the API), validated into
:class:`WorkflowSpec`::

    name = "leads"
    text = "message"              # the input field that is classified and extracted from
    inputs = ["name", "message"]  # fields the input may carry (``text`` is required)

    [classify]                    # one of: classifier (a stored one), examples, or labels only
    labels = { Sales = "buying", Support = "help with a product" }
    examples = [ { text = "...", label = "Sales" } ]

    [gate]
    min_confidence = 0.7          # below it: regex fallbacks only, and low_confidence = true

    [extract]
    schema = { type = "object", properties = { email = { type = ["string", "null"] } } }
    from_input = ["name"]         # fields copied from the input when it carries them

    [persist]
    table = "leads"               # also always recorded in workflow_runs, with an audit row

The response is ``{"id", "intent", "confidence", "low_confidence", "fields"}``. Running needs a
:class:`WorkflowContext` that can classify and extract; :mod:`engine.tasks.workflow_service`
provides it.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import InvalidRequestError
from engine.tasks import patterns
from engine.tasks.classify import Example, Prediction, Rule, check_labels
from engine.tasks.extract import Extraction, check_schema
from engine.tasks.store import PERSIST_TABLES

SEED_DIR = Path(__file__).resolve().parents[2] / "configs" / "workflows"


@dataclass(frozen=True)
class ClassifyStep:
    classifier: str | None = None  # a tenant's stored classifier
    labels: dict[str, str] = field(default_factory=dict)  # label -> description
    examples: tuple[Example, ...] = ()
    rules: tuple[Rule, ...] = ()


@dataclass(frozen=True)
class WorkflowSpec:
    name: str
    text: str
    inputs: tuple[str, ...]
    classify: ClassifyStep
    min_confidence: float
    schema: dict[str, Any]
    instructions: str | None = None
    from_input: tuple[str, ...] = ()
    persist_table: str | None = None
    description: str = ""
    # The generation model of its LLM steps (None: [tasks] extract_model, else the server's).
    model: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (what the API accepts and stores)."""
        c = self.classify
        classify: dict[str, Any] = {"labels": c.labels}
        if c.classifier:
            classify["classifier"] = c.classifier
        if c.examples:
            classify["examples"] = [{"text": e.text, "label": e.label} for e in c.examples]
        if c.rules:
            classify["rules"] = [{"label": r.label, "pattern": r.pattern} for r in c.rules]
        out: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "text": self.text,
            "inputs": list(self.inputs),
            "classify": classify,
            "gate": {"min_confidence": self.min_confidence},
            "extract": {"schema": self.schema, "from_input": list(self.from_input)},
        }
        if self.instructions:
            out["extract"]["instructions"] = self.instructions
        if self.persist_table:
            out["persist"] = {"table": self.persist_table}
        if self.model:
            out["model"] = self.model
        return out


# ---- parsing ------------------------------------------------------------------------------------


def _need(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = obj.get(key)
    if not isinstance(value, kind):
        name = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise InvalidRequestError(
            f"{where}{key}: expected {name}, got {value!r}", param=where + key
        )
    return value


def _classify_step(raw: dict[str, Any]) -> ClassifyStep:
    labels = raw.get("labels") or {}
    if isinstance(labels, list):
        labels = {str(label): "" for label in labels}
    if not isinstance(labels, dict):
        raise InvalidRequestError(
            "classify.labels: expected a table of label = description", param="classify.labels"
        )
    check_labels(list(labels), "classify.labels")
    examples = tuple(
        Example(
            str(_need(e, "text", str, "classify.examples[].")),
            str(_need(e, "label", str, "classify.examples[].")),
        )
        for e in raw.get("examples") or ()
    )
    rules = tuple(
        Rule(
            str(_need(r, "label", str, "classify.rules[].")),
            str(_need(r, "pattern", str, "classify.rules[].")),
        )
        for r in raw.get("rules") or ()
    )
    for i, rule in enumerate(rules):
        patterns.check_pattern(rule.pattern, f"classify.rules[{i}].pattern")
    classifier = raw.get("classifier")
    if classifier is not None and not isinstance(classifier, str):
        raise InvalidRequestError(
            "classify.classifier: expected a name", param="classify.classifier"
        )
    if not classifier and len(labels) < 2 and not examples:
        raise InvalidRequestError(
            "classify: give a classifier, examples, or at least two labels", param="classify"
        )
    unknown = {e.label for e in examples} - set(labels) if labels else set()
    if unknown:
        raise InvalidRequestError(
            f"classify.examples: labels {sorted(unknown)} are not in classify.labels",
            param="classify.examples",
        )
    return ClassifyStep(classifier, {str(k): str(v) for k, v in labels.items()}, examples, rules)


def parse_workflow(raw: dict[str, Any], name: str | None = None) -> WorkflowSpec:
    """Validate a workflow definition (400 naming the field at fault)."""
    if not isinstance(raw, dict):
        raise InvalidRequestError("a workflow definition must be an object", param="workflow")
    wf_name = name or _need(raw, "name", str, "")
    text = raw.get("text", "text")
    inputs = tuple(raw.get("inputs") or (text,))
    if text not in inputs:
        inputs = (*inputs, text)
    classify = _classify_step(_need(raw, "classify", dict, ""))
    gate = raw.get("gate") or {}
    threshold = gate.get("min_confidence", 0.0)
    if not isinstance(threshold, int | float) or not 0.0 <= threshold <= 1.0:
        raise InvalidRequestError(
            "gate.min_confidence: a number in [0, 1]", param="gate.min_confidence"
        )
    extract = _need(raw, "extract", dict, "")
    schema = check_schema(extract.get("schema"), "extract.schema")
    from_input = tuple(extract.get("from_input") or ())
    for f in from_input:
        if f not in schema["properties"] or f not in inputs:
            raise InvalidRequestError(
                f"extract.from_input: {f!r} must be both an input and a schema property",
                param="extract.from_input",
            )
    table = (raw.get("persist") or {}).get("table")
    if table is not None and table not in PERSIST_TABLES:
        raise InvalidRequestError(
            f"persist.table: one of {list(PERSIST_TABLES)} (runs are always recorded)",
            param="persist.table",
        )
    model = raw.get("model")
    if model is not None and (not isinstance(model, str) or not 0 < len(model) <= 128):
        raise InvalidRequestError("model: a model id of 1 to 128 characters", param="model")
    return WorkflowSpec(
        model=model,
        name=str(wf_name),
        text=str(text),
        inputs=tuple(str(i) for i in inputs),
        classify=classify,
        min_confidence=float(threshold),
        schema=schema,
        instructions=extract.get("instructions"),
        from_input=from_input,
        persist_table=table,
        description=str(raw.get("description", "")),
    )


def load_workflow_file(path: Path) -> WorkflowSpec:
    raw = (
        tomllib.loads(path.read_text()) if path.suffix == ".toml" else json.loads(path.read_text())
    )
    return parse_workflow(raw, raw.get("name") or path.stem)


def seed_workflows(directory: Path = SEED_DIR) -> dict[str, WorkflowSpec]:
    """The workflows shipped in ``configs/workflows`` (every tenant sees them)."""
    found: dict[str, WorkflowSpec] = {}
    for path in sorted(directory.glob("*.toml")) + sorted(directory.glob("*.json")):
        spec = load_workflow_file(path)
        found[spec.name] = spec
    return found


# ---- running ------------------------------------------------------------------------------------


@dataclass
class WorkflowContext:
    """What a run needs from the outside; the service binds these to the tenant and engine."""

    classify: Callable[[WorkflowSpec, str], Awaitable[Prediction]]
    extract: Callable[[WorkflowSpec, str, bool], Awaitable[Extraction]]  # (spec, text, use_llm)


@dataclass
class RunResult:
    response: dict[str, Any]
    raw_output: str
    extraction: Extraction


def check_input(spec: WorkflowSpec, item: object, param: str = "input") -> dict[str, Any]:
    if isinstance(item, str):
        item = {spec.text: item}
    if not isinstance(item, dict):
        raise InvalidRequestError(
            f"{param}: expected an object with {list(spec.inputs)}", param=param
        )
    unknown = set(item) - set(spec.inputs)
    if unknown:
        raise InvalidRequestError(
            f"{param}: unknown field(s) {sorted(unknown)}; this workflow takes {list(spec.inputs)}",
            param=param,
        )
    text = item.get(spec.text)
    if not isinstance(text, str) or not text.strip():
        raise InvalidRequestError(
            f"{param}.{spec.text}: a non-empty string is required", param=f"{param}.{spec.text}"
        )
    return item


async def run_workflow(
    spec: WorkflowSpec, item: dict[str, Any], ctx: WorkflowContext, run_id: str
) -> RunResult:
    """classify → gate → extract (LLM above the gate, regex fallbacks below) → response."""
    text = item[spec.text]
    prediction = await ctx.classify(spec, text)
    confidence = round(prediction.confidence, 6)
    low = prediction.abstained or prediction.confidence < spec.min_confidence
    extraction = await ctx.extract(spec, text, not low)
    fields = {name: extraction.object.get(name) for name in spec.schema["properties"]}
    for name in spec.from_input:
        given = item.get(name)
        if isinstance(given, str) and given.strip():
            fields[name] = given.strip()
            extraction.fields[name].value, extraction.fields[name].source = fields[name], "input"
    response = {
        "id": run_id,
        "intent": prediction.label if prediction.label is not None else _top(prediction),
        "confidence": confidence,
        "low_confidence": low,
        "fields": fields,
    }
    return RunResult(response, extraction.raw, extraction)


def _top(prediction: Prediction) -> str | None:
    """The most likely label even when abstained: the gate already flags it low_confidence."""
    return max(prediction.scores, key=prediction.scores.__getitem__) if prediction.scores else None
