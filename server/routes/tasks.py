"""Task routes: classifiers, ``/v1/classify``, ``/v1/extract``, workflows and their results,
document analysis and ``/v1/usage``.

Handlers are thin: decode the wire struct, call one method of one task service (classifiers,
extraction, workflows, analysis, task usage) with the tenant the auth middleware resolved, return
its answer. Any name or id of another tenant answers 404.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import msgspec
from litestar import Request, delete, get, post
from litestar.datastructures import UploadFile
from litestar.response import Response
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_202_ACCEPTED

from engine import (
    ClassifierInput,
    Example,
    InvalidRequestError,
    Rule,
    parse_examples_csv,
)
from server.auth import tenant_of
from server.routes.common import read_body
from server.routes.jobs import job_out
from server.state import services
from server.wire import JobInfo

# ---- wire structs ---------------------------------------------------------------------------


class ExampleIn(msgspec.Struct, forbid_unknown_fields=True):
    text: str
    label: str


class RuleIn(msgspec.Struct, forbid_unknown_fields=True):
    label: str
    pattern: str


class ClassifierCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    examples: list[ExampleIn] = msgspec.field(default_factory=list)
    labels: dict[str, str] | list[str] | None = None
    abstain_threshold: float | None = None
    rules: list[RuleIn] = msgspec.field(default_factory=list)
    encoder: str | None = None


class ClassifyBody(msgspec.Struct, forbid_unknown_fields=True):
    classifier: str
    input: str | list[str]
    top_k: int | None = None
    version: int | None = None


class ExtractBody(msgspec.Struct, forbid_unknown_fields=True):
    input: str | list[str]
    schema: dict[str, Any]
    model: str | None = None
    instructions: str | None = None


class WorkflowRunBody(msgspec.Struct, forbid_unknown_fields=True):
    input: dict[str, Any] | str | list[dict[str, Any] | str]
    # The generation model of the run's LLM steps (default: the workflow's, else the task's).
    model: str | None = None


class AnalyzeBody(msgspec.Struct, forbid_unknown_fields=True):
    tasks: list[str] | None = None


# ---- plumbing ----------------------------------------------------------------------------------


def request_id_of(request: Request) -> str:
    given = request.headers.get("x-request-id")
    return given[:128] if given else "req_" + uuid.uuid4().hex[:20]


def _labels(raw: dict[str, str] | list[str] | None) -> dict[str, str] | None:
    if raw is None:
        return None
    return {str(k): "" for k in raw} if isinstance(raw, list) else dict(raw)


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# ---- classifiers ------------------------------------------------------------------------------


@post("/v1/classifiers", status_code=HTTP_201_CREATED)
async def create_classifier(request: Request) -> Response[dict[str, Any]]:
    """JSON ``{"name", "examples", "labels", "abstain_threshold", "rules", "encoder"}``, or
    multipart with a CSV ``file`` (columns text,label) and form fields ``name``,
    ``abstain_threshold`` and ``encoder``."""
    content_type = request.headers.get("content-type", "")
    spec = (
        await _multipart_spec(request)
        if content_type.startswith("multipart/")
        else _json_spec(await read_body(request, ClassifierCreate))
    )
    svc = services(request).classifiers
    out = await svc.create_classifier(tenant_of(request), spec)
    if "job" in out:
        return Response(out, status_code=HTTP_202_ACCEPTED)
    return Response({**out, "object": "classifier"}, status_code=HTTP_201_CREATED)


def _json_spec(body: ClassifierCreate) -> ClassifierInput:
    return ClassifierInput(
        name=body.name,
        examples=tuple(Example(e.text, e.label) for e in body.examples),
        labels=_labels(body.labels),
        abstain_threshold=body.abstain_threshold,
        rules=tuple(Rule(r.label, r.pattern) for r in body.rules),
        encoder=body.encoder,
    )


async def _multipart_spec(request: Request) -> ClassifierInput:
    form = await request.form()
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise InvalidRequestError("multipart upload has no CSV 'file' part", param="file")
    name = form.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidRequestError("name: a form field is required", param="name")
    threshold = form.get("abstain_threshold")
    try:
        value = float(threshold) if isinstance(threshold, str) and threshold else None
    except ValueError:
        raise InvalidRequestError(
            "abstain_threshold must be a number", param="abstain_threshold"
        ) from None
    labels = form.get("labels")
    try:
        parsed = json.loads(labels) if isinstance(labels, str) and labels else None
    except ValueError:
        raise InvalidRequestError("labels must be a JSON object", param="labels") from None
    if parsed is not None and not isinstance(parsed, dict | list):
        raise InvalidRequestError("labels must be a JSON object", param="labels")
    encoder = form.get("encoder")
    if encoder is not None and not isinstance(encoder, str):
        raise InvalidRequestError("encoder must be a model id", param="encoder")
    examples = parse_examples_csv(await upload.read())
    return ClassifierInput(name, tuple(examples), _labels(parsed), value, encoder=encoder or None)


@get("/v1/classifiers")
async def list_classifiers(request: Request) -> dict[str, Any]:
    svc = services(request).classifiers
    data = await svc.list_classifiers(tenant_of(request))
    return {"object": "list", "data": data}


@get("/v1/classifiers/{name:str}")
async def get_classifier(request: Request, name: str) -> dict[str, Any]:
    svc = services(request).classifiers
    out = await svc.get_classifier(tenant_of(request), name)
    return {**out, "object": "classifier"}


@delete("/v1/classifiers/{name:str}", status_code=HTTP_200_OK)
async def delete_classifier(request: Request, name: str) -> dict[str, Any]:
    svc = services(request).classifiers
    out = await svc.delete_classifier(tenant_of(request), name)
    return {**out, "object": "classifier"}


@post("/v1/classify", status_code=HTTP_200_OK)
async def classify(request: Request) -> dict[str, Any]:
    body = await read_body(request, ClassifyBody)
    svc = services(request).classifiers
    data = await svc.classify(
        tenant_of(request), body.classifier, _as_list(body.input), body.top_k, body.version
    )
    return {"object": "list", "classifier": body.classifier, "data": data}


# ---- extraction -------------------------------------------------------------------------------


@post("/v1/extract", status_code=HTTP_200_OK)
async def extract(request: Request) -> dict[str, Any]:
    body = await read_body(request, ExtractBody)
    svc = services(request).extraction
    results = await svc.extract(
        tenant_of(request), _as_list(body.input), body.schema, body.instructions, body.model
    )
    return {"object": "list", "data": [r.to_dict() for r in results]}


# ---- workflows --------------------------------------------------------------------------------


@get("/v1/workflows")
async def list_workflows(request: Request) -> dict[str, Any]:
    svc = services(request).workflows
    return {"object": "list", "data": await svc.list_workflows(tenant_of(request))}


@post("/v1/workflows", status_code=HTTP_201_CREATED)
async def save_workflow(request: Request) -> dict[str, Any]:
    raw = await read_body(request, dict[str, Any])
    svc = services(request).workflows
    return await svc.save_workflow(tenant_of(request), raw)


@get("/v1/workflows/{name:str}")
async def get_workflow(request: Request, name: str) -> dict[str, Any]:
    svc = services(request).workflows
    spec = await svc.workflow(tenant_of(request), name)
    return spec.to_dict()


@delete("/v1/workflows/{name:str}", status_code=HTTP_200_OK)
async def delete_workflow(request: Request, name: str) -> dict[str, Any]:
    svc = services(request).workflows
    return await svc.delete_workflow(tenant_of(request), name)


@post("/v1/workflows/{name:str}/run", status_code=HTTP_200_OK)
async def run_workflow(request: Request, name: str) -> dict[str, Any]:
    """One input → the workflow's response object; a list of inputs → ``{"data": [...]}``."""
    body = await read_body(request, WorkflowRunBody)
    batch = isinstance(body.input, list)
    svc = services(request).workflows
    out = await svc.run_workflow(
        tenant_of(request), name, _as_list(body.input), request_id_of(request), body.model
    )
    return {"object": "list", "data": out} if batch else out[0]


@get("/v1/workflows/{name:str}/results")
async def workflow_results(
    request: Request, name: str, limit: int = 50, offset: int = 0
) -> dict[str, Any]:
    if not 1 <= limit <= 1000 or offset < 0:
        raise InvalidRequestError("limit must be in 1..1000 and offset >= 0", param="limit")
    svc = services(request).workflows
    data = await svc.results(tenant_of(request), name, limit, offset)
    return {"object": "list", "data": data}


@get("/v1/results/{run_id:str}")
async def workflow_result(request: Request, run_id: str) -> dict[str, Any]:
    svc = services(request).workflows
    return await svc.result(tenant_of(request), run_id)


# ---- document analysis, usage -------------------------------------------------------------------


@post("/v1/collections/{name:str}/documents/{doc_id:str}/analyze", status_code=HTTP_202_ACCEPTED)
async def analyze_document(request: Request, name: str, doc_id: str) -> JobInfo:
    """Start an analysis job; follow it at ``/v1/jobs/{id}`` or ``/v1/jobs/{id}/events``."""
    body = await read_body(request, AnalyzeBody, empty=AnalyzeBody())
    svc = services(request).analysis
    job = await svc.analyze(tenant_of(request), name, doc_id, body.tasks)
    return job_out(job)


@get("/v1/collections/{name:str}/documents/{doc_id:str}/analysis")
async def document_analysis(request: Request, name: str, doc_id: str) -> dict[str, Any]:
    svc = services(request).analysis
    return await svc.analysis(tenant_of(request), name, doc_id)


@get("/v1/usage")
async def usage(request: Request, days: int = 30) -> dict[str, Any]:
    """The caller's usage: per task (``tasks``), per kind (``other``), and per UTC day and model
    over the last ``days`` (1-366) with an estimated cost (``days``, ``total_cost``)."""
    svc = services(request).task_usage
    tenant = tenant_of(request)
    report = await services(request).usage.report(tenant, days)
    return {**await svc.report(tenant), **report}


HANDLERS = [
    create_classifier,
    list_classifiers,
    get_classifier,
    delete_classifier,
    classify,
    extract,
    list_workflows,
    save_workflow,
    get_workflow,
    delete_workflow,
    run_workflow,
    workflow_results,
    workflow_result,
    analyze_document,
    document_analysis,
    usage,
]
