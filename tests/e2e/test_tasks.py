"""Task routes through a real server process (Gemma GGUF, MiniLM, DuckDB): classifiers (JSON and
CSV), /v1/classify, /v1/extract, the leads workflow and its results, document analysis, usage, and
two tenants that never see each other's classifiers, workflows, results or usage."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import pytest

from engine.tasks.analyze import RESULT_SCHEMAS, strip_meta
from tests.engine.tasks.fixtures_tasks import IN_SCOPE_PROBES, OUT_OF_SCOPE_PROBES, examples
from tests.support import HearthProcess

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1800)]

ADMIN_KEY = "tasks-admin-key-0123456789"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HearthProcess]:
    proc = HearthProcess(
        tmp_path_factory.mktemp("tasks"), env={"HEARTH_ADMIN_KEY": ADMIN_KEY}
    ).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def tenants(server: HearthProcess) -> dict[str, httpx.Client]:
    admin = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    clients = {}
    for name in ("acme", "globex"):
        ok(admin.post("/v1/admin/tenants", json={"name": name}), 201)
        key = ok(admin.post(f"/v1/admin/tenants/{name}/keys", json={}), 201)["key"]
        clients[name] = httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=600
        )
    return clients


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def error_param(response: httpx.Response, status: int) -> str | None:
    assert response.status_code == status, response.text
    return response.json()["error"]["param"]


def test_classifier_crud_classify_and_isolation(tenants: dict[str, httpx.Client]) -> None:
    acme, globex = tenants["acme"], tenants["globex"]
    body = {"name": "intents", "examples": [{"text": e.text, "label": e.label} for e in examples()]}
    created = ok(acme.post("/v1/classifiers", json=body), 201)
    assert created["version"] == 1 and 0 < created["abstain_threshold"] < 1
    texts = list(IN_SCOPE_PROBES) + OUT_OF_SCOPE_PROBES
    data = ok(acme.post("/v1/classify", json={"classifier": "intents", "input": texts}))["data"]
    assert [d["label"] for d in data[:3]] == list(IN_SCOPE_PROBES.values())
    assert sum(d["abstained"] for d in data[3:]) >= 2
    one = ok(
        acme.post(
            "/v1/classify",
            json={
                "classifier": "intents",
                "input": "refund the double charge on my card",
                "top_k": 1,
            },
        )
    )["data"]
    assert len(one) == 1 and len(one[0]["scores"]) == 1

    csv_text = "text,label\n" + "\n".join(f'"{e.text}",{e.label}' for e in examples())
    files = {"file": ("intents.csv", csv_text.encode(), "text/csv")}
    up = ok(acme.post("/v1/classifiers", data={"name": "intents"}, files=files), 201)
    assert up["version"] == 2
    listed = ok(acme.get("/v1/classifiers"))["data"]
    assert [(c["name"], c["version"]) for c in listed] == [("intents", 2)]

    assert ok(globex.get("/v1/classifiers"))["data"] == []
    assert (
        error_param(globex.post("/v1/classify", json={"classifier": "intents", "input": "hi"}), 404)
        == "classifier"
    )
    assert globex.delete("/v1/classifiers/intents").status_code == 404
    assert (
        error_param(acme.post("/v1/classify", json={"classifier": "intents", "input": []}), 400)
        == "input"
    )
    assert (
        error_param(
            acme.post(
                "/v1/classifiers", json={"name": "x", "examples": [{"text": "a", "label": "only"}]}
            ),
            400,
        )
        == "examples"
    )
    bad_csv = {"file": ("x.csv", b"foo,bar\n1,2\n", "text/csv")}
    assert (
        error_param(acme.post("/v1/classifiers", data={"name": "x"}, files=bad_csv), 400) == "file"
    )
    assert ok(acme.delete("/v1/classifiers/intents"))["versions"] == 2
    assert acme.get("/v1/classifiers/intents").status_code == 404


def test_extract_leads_workflow_results_and_usage(tenants: dict[str, httpx.Client]) -> None:
    acme, globex = tenants["acme"], tenants["globex"]
    schema = {
        "type": "object",
        "properties": {
            "email": {"type": ["string", "null"]},
            "budget": {"type": ["number", "null"]},
        },
        "required": ["email", "budget"],
        "additionalProperties": False,
    }
    text = "Write to li@wu.cn, our budget is 8,000 EUR."
    [got] = ok(acme.post("/v1/extract", json={"input": text, "schema": schema}))["data"]
    assert got["valid"] and got["object"]["email"] == "li@wu.cn"
    assert got["object"]["budget"] == 8000
    span = got["fields"]["email"]["span"]
    assert text[span[0] : span[1]] == "li@wu.cn"
    assert (
        error_param(acme.post("/v1/extract", json={"input": text, "schema": {"type": "x"}}), 400)
        == "schema"
    )

    run = ok(
        acme.post(
            "/v1/workflows/leads/run",
            json={
                "input": {
                    "name": "Bo",
                    "message": "Partnership idea: we'd like to resell your product. "
                    "Call +1 212 555 0100.",
                }
            },
            headers={"x-request-id": "rq-77"},
        )
    )
    assert set(run) == {"id", "intent", "confidence", "low_confidence", "fields"}
    assert run["fields"]["name"] == "Bo"
    # The number must be right; its formatting is the model's (or the fallback's) choice.
    assert re.sub(r"\D", "", run["fields"]["phone"]).endswith("2125550100")
    results = ok(acme.get("/v1/workflows/leads/results"))["data"]
    assert [r["id"] for r in results] == [run["id"]] and results[0]["request_id"] == "rq-77"
    assert ok(globex.get("/v1/workflows/leads/results"))["data"] == []
    assert globex.get(f"/v1/results/{run['id']}").status_code == 404
    assert (
        error_param(acme.post("/v1/workflows/leads/run", json={"input": {"name": "x"}}), 400)
        == "input[0].message"
    )
    assert acme.post("/v1/workflows/nope/run", json={"input": "x"}).status_code == 404

    usage = ok(acme.get("/v1/usage"))["tasks"]
    assert usage["extract"]["items"] == 1 and usage["workflow:leads"]["items"] == 1
    assert usage["extract"]["prompt_tokens"] > 0 and usage["extract"]["seconds"] > 0
    assert "extract" not in ok(globex.get("/v1/usage"))["tasks"]


def test_workflow_defined_by_api_is_per_tenant(tenants: dict[str, httpx.Client]) -> None:
    acme, globex = tenants["acme"], tenants["globex"]
    leads = ok(acme.get("/v1/workflows/leads"))
    saved = ok(
        acme.post(
            "/v1/workflows", json={**leads, "name": "acme-leads", "gate": {"min_confidence": 1.0}}
        ),
        201,
    )
    assert saved["version"] == 1
    assert globex.get("/v1/workflows/acme-leads").status_code == 404
    # Gate at 1.0: always the regex path, no model call.
    out = ok(
        acme.post(
            "/v1/workflows/acme-leads/run",
            json={"input": [{"message": "price for 3 seats? x@y.io"}, {"message": "hello"}]},
        )
    )["data"]
    assert [o["low_confidence"] for o in out] == [True, True]
    assert out[0]["fields"]["email"] == "x@y.io"


def test_document_analysis_job(tenants: dict[str, httpx.Client]) -> None:
    acme, globex = tenants["acme"], tenants["globex"]
    ok(acme.post("/v1/collections", json={"name": "notes"}), 201)
    doc = (
        "Board meeting notes. Priya will send the revised budget by 2027-05-02. "
        "Severe risk: the supplier contract expires and prices may double."
    )
    job = ok(
        acme.post(
            "/v1/collections/notes/documents", json={"documents": [{"id": "m1", "text": doc}]}
        ),
        202,
    )
    wait(acme, job["id"])
    started = ok(acme.post("/v1/collections/notes/documents/m1/analyze"), 202)
    assert started["kind"] == "analyze"
    assert globex.post("/v1/collections/notes/documents/m1/analyze").status_code == 404
    done = wait(acme, started["id"])
    assert done["status"] == "succeeded" and done["progress"] == 100
    for task, schema in RESULT_SCHEMAS.items():
        jsonschema.validate(strip_meta(done["result"]["results"][task]), schema)
    stored = ok(acme.get("/v1/collections/notes/documents/m1/analysis"))["results"]
    assert set(stored) == set(RESULT_SCHEMAS)
    assert (
        error_param(
            acme.post("/v1/collections/notes/documents/m1/analyze", json={"tasks": ["poetry"]}), 400
        )
        == "tasks"
    )


def wait(client: httpx.Client, job_id: str, timeout: float = 900) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = ok(client.get(f"/v1/jobs/{job_id}"))
        if job["status"] in ("succeeded", "failed"):
            return job
        time.sleep(0.5)
    raise TimeoutError(job_id)
