"""Embedding models through a real server: a classifier trained on all-mpnet-base-v2 next to the
default all-MiniLM-L6-v2 (each classifier embeds with the model it was trained on, loaded on first
use), and the server's own embedding model switched (HEARTH_EMBEDDINGS_MODEL) on a data directory
built with MiniLM: old classifiers keep working, old collections keep answering with the model
they record, and a re-embedding job moves one to the new model."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import openai
import pytest

from models import get_card, install_model
from tests.engine.tasks.fixtures_tasks import IN_SCOPE_PROBES, OUT_OF_SCOPE_PROBES, examples
from tests.support import MODELS_DIR, HearthProcess

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1800)]

MPNET = "all-mpnet-base-v2"
MINILM = "all-minilm-l6-v2"
EXAMPLES = [{"text": e.text, "label": e.label} for e in examples()]
DOCS = {"documents": [{"id": "d1", "text": "The canteen opens at 8 and closes at 15."}]}
QUERY = {"collection": "kb", "query": "when does the canteen open", "mode": "hybrid"}


def ok(response: httpx.Response, status: int = 200) -> dict:
    assert response.status_code == status, response.text
    return response.json()


def error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    return response.json()["error"]


def wait_job(http: httpx.Client, job_id: str) -> dict:
    with http.stream("GET", f"/v1/jobs/{job_id}/events", timeout=600) as response:
        for line in response.iter_lines():
            if line.startswith("data:"):
                event = json.loads(line[5:])
                if event["status"] in ("succeeded", "failed"):
                    return event
    raise AssertionError("job events ended without a final status")


def classify(http: httpx.Client, name: str) -> list[dict]:
    texts = list(IN_SCOPE_PROBES) + OUT_OF_SCOPE_PROBES[:1]
    return ok(http.post("/v1/classify", json={"classifier": name, "input": texts}))["data"]


def assert_routes_probes(answers: list[dict]) -> None:
    assert [a["label"] for a in answers[:-1]] == list(IN_SCOPE_PROBES.values())
    assert answers[-1]["confidence"] < min(a["confidence"] for a in answers[:-1])


def test_classifier_encoders_and_switching_the_server_embedding_model(tmp_path: Path) -> None:
    install_model(get_card(MPNET), MODELS_DIR)
    minilm = HearthProcess(tmp_path).start()
    try:
        http = httpx.Client(base_url=minilm.url, timeout=600)
        default = ok(http.post("/v1/classifiers", json={"name": "a", "examples": EXAMPLES}), 201)
        wide = {"name": "b", "examples": EXAMPLES, "encoder": MPNET}
        assert default["encoder"] == MINILM
        assert ok(http.post("/v1/classifiers", json=wide), 201)["encoder"] == MPNET
        listed = {c["name"]: c["encoder"] for c in ok(http.get("/v1/classifiers"))["data"]}
        assert listed == {"a": MINILM, "b": MPNET}
        assert_routes_probes(classify(http, "a"))
        assert_routes_probes(classify(http, "b"))
        for bad in ("nope", "gemma-3-270m-q4km"):  # unknown; not an embedding model
            body = {"name": "c", "examples": EXAMPLES, "encoder": bad}
            err = error(http.post("/v1/classifiers", json=body), 400)
            assert err["param"] == "encoder" and MPNET in err["message"]
        llm_path = {"name": "c", "labels": {"x": "an x", "y": "a y"}, "encoder": MPNET}
        assert error(http.post("/v1/classifiers", json=llm_path), 400)["param"] == "encoder"
        ok(http.post("/v1/collections", json={"name": "kb"}), 201)
        job = ok(http.post("/v1/collections/kb/documents", json=DOCS), 202)
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
        with pytest.raises(openai.NotFoundError):  # served embeddings: the server's model only
            client.embeddings.create(model=MINILM, input=["hello"])
        # both classifiers survive the switch: each embeds with its own model
        assert_routes_probes(classify(http, "a"))
        assert_routes_probes(classify(http, "b"))
        # a collection built with MiniLM records it: its queries are still embedded with MiniLM
        kb = ok(http.get("/v1/collections/kb"))
        assert kb["embedding_model"] == MINILM
        for mode in ("hybrid", "dense", "lexical"):
            hits = ok(http.post("/v1/retrieve", json=QUERY | {"mode": mode}))["data"]
            assert hits and "canteen" in hits[0]["text"]
        kb2 = ok(http.post("/v1/collections", json={"name": "kb2"}), 201)
        assert kb2["embedding_model"] == MPNET  # new collections take the server's model
        job = ok(http.post("/v1/collections/kb2/documents", json=DOCS), 202)
        assert wait_job(http, job["id"])["status"] == "succeeded"
        hits = ok(http.post("/v1/retrieve", json=QUERY | {"collection": "kb2"}))["data"]
        assert hits and "canteen" in hits[0]["text"]
        both = {"query": "canteen", "collections": ["kb", "kb2"]}
        err = error(http.post("/v1/retrieve", json=both), 400)  # vectors of two models
        assert err["code"] == "embedding_model_mismatch" and MINILM in err["message"]
        # re-embedding moves kb to mpnet in a durable job; then both search together
        assert error(http.post("/v1/collections/kb/reembed", json={"model": "x"}), 400)
        job = ok(http.post("/v1/collections/kb/reembed", json={"model": MPNET}), 202)
        done = wait_job(http, job["id"])
        assert done["status"] == "succeeded", done
        assert ok(http.get("/v1/collections/kb"))["embedding_model"] == MPNET
        hits = ok(http.post("/v1/retrieve", json=both))["data"]
        assert {h["collection"] for h in hits} == {"kb", "kb2"}
    finally:
        mpnet.stop()
