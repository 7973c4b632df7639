"""Switching the server's embedding model (HEARTH_EMBEDDINGS_MODEL=all-mpnet-base-v2) on a data
directory built with the default MiniLM: the new model serves /v1/embeddings and trains classifiers,
while classifiers and collections built on the old one answer a clear 422, not a 500 or nonsense."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import openai
import pytest

from models import get_card, install_model
from tests.engine.tasks.fixtures_tasks import IN_SCOPE_PROBES, examples
from tests.support import MODELS_DIR, HearthProcess

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1800)]

MPNET = "all-mpnet-base-v2"


def ok(response: httpx.Response, status: int = 200) -> dict:
    assert response.status_code == status, response.text
    return response.json()


def wait_job(http: httpx.Client, job_id: str) -> dict:
    with http.stream("GET", f"/v1/jobs/{job_id}/events", timeout=600) as response:
        for line in response.iter_lines():
            if line.startswith("data:"):
                event = json.loads(line[5:])
                if event["status"] in ("succeeded", "failed"):
                    return event
    raise AssertionError("job events ended without a final status")


def mismatch(response: httpx.Response) -> str:
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "embedding_model_mismatch" and error["type"] == "invalid_request_error"
    return error["message"]


def test_switching_the_embedding_model(tmp_path: Path) -> None:
    install_model(get_card(MPNET), MODELS_DIR)
    body = {"name": "intents", "examples": [{"text": e.text, "label": e.label} for e in examples()]}
    docs = {"documents": [{"id": "d1", "text": "The canteen opens at 8 and closes at 15."}]}
    minilm = HearthProcess(tmp_path).start()
    try:
        http = httpx.Client(base_url=minilm.url, timeout=600)
        ok(http.post("/v1/classifiers", json=body), 201)
        ok(http.post("/v1/collections", json={"name": "kb"}), 201)
        job = ok(http.post("/v1/collections/kb/documents", json=docs), 202)
        assert wait_job(http, job["id"])["status"] == "succeeded"
    finally:
        minilm.stop()

    mpnet = HearthProcess(tmp_path, env={"HEARTH_EMBEDDINGS_MODEL": MPNET}).start()
    try:
        http = httpx.Client(base_url=mpnet.url, timeout=600)
        assert ok(http.get("/ready"))["embedding_model"] == MPNET
        client = openai.OpenAI(base_url=f"{mpnet.url}/v1", api_key="unused")
        vectors = client.embeddings.create(model=MPNET, input=["hello", "hi"]).data
        assert [len(v.embedding) for v in vectors] == [768, 768]
        with pytest.raises(openai.NotFoundError):  # the other model is not loaded
            client.embeddings.create(model="all-minilm-l6-v2", input=["hello"])

        probe = next(iter(IN_SCOPE_PROBES))
        message = mismatch(
            http.post("/v1/classify", json={"classifier": "intents", "input": probe})
        )
        assert "all-minilm-l6-v2" in message and "HEARTH_EMBEDDINGS_MODEL" in message
        query = {"collection": "kb", "query": "when does the canteen open", "mode": "hybrid"}
        for mode in ("hybrid", "dense", "lexical"):  # lexical hits carry a dense score too
            answer = http.post("/v1/retrieve", json=query | {"mode": mode})
            assert "384-dimensional" in mismatch(answer)
        # a new collection on the new model works
        ok(http.post("/v1/collections", json={"name": "kb2"}), 201)
        job = ok(http.post("/v1/collections/kb2/documents", json=docs), 202)
        assert wait_job(http, job["id"])["status"] == "succeeded"
        hits = ok(http.post("/v1/retrieve", json=query | {"collection": "kb2"}))["data"]
        assert hits and "canteen" in hits[0]["text"]

        retrained = ok(http.post("/v1/classifiers", json=body), 201)  # a new version, on mpnet
        assert retrained["version"] == 2
        answer = ok(
            http.post(
                "/v1/classify", json={"classifier": "intents", "input": list(IN_SCOPE_PROBES)}
            )
        )["data"]
        assert [a["label"] for a in answer] == list(IN_SCOPE_PROBES.values())
    finally:
        mpnet.stop()
