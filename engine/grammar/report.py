"""Validation after generation and the ``schema_report`` each constrained response carries.

``finalize`` decides the choice's outcome from its text, the backend's finish reason and the
constraint's state. The promise it keeps: a ``stop`` finish is returned only with output that parses
and validates. Otherwise the finish becomes ``length`` (cut off, ``error: "truncated"``) or
``content_filter`` (complete but failed a keyword checked after generation,
``error: "validation_failed"``).
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
from jsonschema.validators import validator_for

from engine.grammar.compiler import CompiledGrammar
from engine.grammar.constraint import GrammarConstraint
from engine.grammar.schema_check import FORMAT_CHECKER, SchemaAnalysis
from engine.grammar.tools import parse_tool_output
from engine.types import FinishReason, Outcome, SchemaReport

MAX_ERRORS = 5


def validation_errors(schema: Any, instance: Any) -> list[str]:
    """python-jsonschema errors of ``instance`` (the schema's dialect, formats checked)."""
    if isinstance(schema, bool):
        return [] if schema else ["schema is false"]
    cls = validator_for(schema, default=jsonschema.Draft202012Validator)
    validator = cls(schema, format_checker=FORMAT_CHECKER)
    out = []
    for err in validator.iter_errors(instance):
        where = "/" + "/".join(str(p) for p in err.absolute_path)
        out.append(f"{where}: {err.message[:200]}")
        if len(out) >= MAX_ERRORS:
            break
    return out


def _base_report(compiled: CompiledGrammar) -> SchemaReport:
    spec = compiled.spec
    report = SchemaReport(spec.kind)
    analyses: list[SchemaAnalysis] = list(compiled.tool_analyses)
    if compiled.analysis is not None:
        analyses.append(compiled.analysis)
    if not analyses:
        report.enforced_by_grammar = [spec.kind]
    for a in analyses:
        report.enforced_by_grammar = sorted({*report.enforced_by_grammar, *a.enforced_by_grammar})
        report.validated_after_generation = sorted(
            {*report.validated_after_generation, *a.validated_after_generation}
        )
        report.ignored += list(a.ignored)
    return report


def finalize(
    compiled: CompiledGrammar,
    constraint: GrammarConstraint,
    text: str,
    finish: FinishReason,
) -> Outcome:
    """The choice's finish reason, report, content and tool calls."""
    report = _base_report(compiled)
    complete = constraint.is_accepting and not constraint.is_error
    if finish == FinishReason.ABORT:
        return Outcome(finish, report, text)
    if not complete:
        report.valid, report.error = False, "truncated"
        return Outcome(FinishReason.LENGTH, report, text)
    if compiled.spec.kind == "tools":
        return _finalize_tools(compiled, report, text, finish)
    if compiled.spec.is_json:
        try:
            instance = json.loads(text)
        except ValueError as exc:
            report.valid, report.error, report.errors = False, "invalid_json", [str(exc)]
            return Outcome(FinishReason.CONTENT_FILTER, report, text)
        report.errors = validation_errors(compiled.spec.schema, instance)
    report.valid = not report.errors
    if report.errors:
        report.error = "validation_failed"
        return Outcome(FinishReason.CONTENT_FILTER, report, text)
    return Outcome(FinishReason.STOP, report, text)


def _finalize_tools(
    compiled: CompiledGrammar, report: SchemaReport, text: str, finish: FinishReason
) -> Outcome:
    spec = compiled.spec
    try:
        content, calls = parse_tool_output(text)
    except (ValueError, KeyError) as exc:
        report.valid, report.error, report.errors = False, "invalid_json", [str(exc)]
        return Outcome(FinishReason.CONTENT_FILTER, report, text)
    schemas = {t.name: t.parameters for t in spec.tools}
    for call in calls:
        errs = validation_errors(schemas[call.name], json.loads(call.arguments))
        report.errors += [f"{call.name}{e}" for e in errs]
    if not calls and finish == FinishReason.LENGTH:  # free text cut by the budget
        return Outcome(FinishReason.LENGTH, report, content, calls)
    if not calls and spec.schema is not None and content is not None:
        report.errors += validation_errors(spec.schema, json.loads(content))
    report.valid = not report.errors
    if report.errors:
        report.error = "validation_failed"
        return Outcome(FinishReason.CONTENT_FILTER, report, content, calls)
    return Outcome(FinishReason.TOOL_CALLS if calls else FinishReason.STOP, report, content, calls)
