"""Documents, retrieval and RAG chat through a real server process (MiniLM, Gemma, DuckDB, FAISS).

Two servers: one open (no keys: the single default tenant on loopback), restarted mid-test to
check the indexes come back from DuckDB; one with two tenants and their keys.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from tests.docfixtures import make_pdf
from tests.support import HearthProcess

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ADMIN_KEY = "test-admin-key-0123456789"
MODEL = "gemma-3-270m-q4km"
FACT_TXT = "The Zanzibar project uses the code name BLUE HERON for all of its internal reports."
FACT_MD = "The staff canteen serves saffron risotto on the first Friday of every month."
FACT_PDF = "The Oslo warehouse keeps exactly 412 spare turbine blades in aisle seven."
FILLER = (
    "Quarterly revenue grew by four percent, driven by subscriptions in the northern region. "
    "Employees must renew their parking permits before the end of January each year. "
)


def _server(data_dir: Path) -> HearthProcess:
    """A Hearth process on a free port and its own data dir, with the admin key set."""
    return HearthProcess(data_dir, env={"HEARTH_ADMIN_KEY": ADMIN_KEY})


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HearthProcess]:
    server = _server(tmp_path_factory.mktemp("open"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HearthProcess]:
    server = _server(tmp_path_factory.mktemp("keyed"))
    server.start()
    yield server
    server.stop()


def ok(response: httpx.Response, status: int = 200) -> dict:
    assert response.status_code == status, response.text
    return response.json()


def wait_job(http: httpx.Client, job_id: str) -> list[dict]:
    """The job's SSE events until it finishes."""
    events = []
    with http.stream("GET", f"/v1/jobs/{job_id}/events", timeout=600) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data:"):
                events.append(json.loads(line[5:]))
                if events[-1]["status"] in ("succeeded", "failed"):
                    break
    return events


def retrieve(http: httpx.Client, query: str, mode: str, **extra) -> list[dict]:
    body = {"collection": "kb", "query": query, "top_k": 5, "mode": mode} | extra
    return ok(http.post("/v1/retrieve", json=body))["data"]


def upload_fixtures(http: httpx.Client) -> dict:
    files = [
        ("files", ("memo.txt", f"{FILLER}\n{FACT_TXT}\n{FILLER}".encode(), "text/plain")),
        ("files", ("canteen.md", f"# Canteen\n\n{FACT_MD}\n".encode(), "text/markdown")),
        ("files", ("stock.pdf", make_pdf([[FILLER[:80]], [FACT_PDF]]), "application/pdf")),
    ]
    job = ok(http.post("/v1/collections/kb/documents", files=files), 202)
    events = wait_job(http, job["id"])
    return events[-1] | {"events": events}


def test_open_mode_ingest_retrieve_chat_delete_and_restart(open_server: HearthProcess) -> None:
    http = httpx.Client(base_url=open_server.url, timeout=600)
    ok(http.post("/v1/collections", json={"name": "kb"}), 201)
    done = upload_fixtures(http)
    assert (done["status"], done["progress"], done["done"]) == ("succeeded", 100, 3)
    progress = [e["progress"] for e in done["events"]]
    assert progress == sorted(progress) and progress[-1] == 100
    batch = {"documents": [{"id": "faq-1", "title": "FAQ", "text": FILLER, "metadata": {"t": 1}}]}
    job = ok(http.post("/v1/collections/kb/documents", json=batch), 202)
    assert wait_job(http, job["id"])[-1]["done"] == 1
    assert ok(http.get("/v1/collections/kb/documents/faq-1"))["status"] == "ready"
    pdf = next(d for d in ok(http.get("/v1/collections/kb/documents"))["data"] if d["pages"])
    assert pdf["pages"] == 2

    for mode in ("dense", "lexical", "hybrid"):
        for query, fact in (
            ("What code name does the Zanzibar project use?", FACT_TXT),
            ("Which dish does the canteen serve on the first Friday?", FACT_MD),
            ("How many spare turbine blades are in the Oslo warehouse?", FACT_PDF),
        ):
            hits = retrieve(http, query, mode)
            assert fact in hits[0]["text"], (mode, query)
    pdf_hit = retrieve(http, "spare turbine blades Oslo", "hybrid")[0]
    assert pdf_hit["page"] == 2
    filtered = retrieve(http, "parking permits", "hybrid", filter={"t": 1})
    assert filtered and {h["document_id"] for h in filtered} == {"faq-1"}

    # RAG chat through the official client.
    client = OpenAI(base_url=f"{open_server.url}/v1", api_key="unused", max_retries=0)
    assert "rag/kb" in {m.id for m in client.models.list().data}
    asked = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "What code name does the Zanzibar project use?"}],
        max_tokens=24,
        temperature=0,
        extra_body={"retrieval": {"collections": ["kb"], "top_k": 3}, "session_id": "s-1"},
    ).to_dict()
    assert asked["refusal"] is None and asked["choices"][0]["message"]["content"]
    memo_cites = [c for c in asked["citations"] if "BLUE HERON" in c["quote"]]
    assert memo_cites and all(c["verified"] for c in asked["citations"])
    chunk = retrieve(http, FACT_TXT, "dense")[0]
    cite = memo_cites[0]
    assert chunk["text"][cite["start"] : cite["end"]] == cite["quote"]
    assert 0 < asked["confidence"] <= 1

    refused = client.chat.completions.create(
        model="rag/kb",
        messages=[{"role": "user", "content": "How do I bake sourdough bread at home?"}],
        max_tokens=24,
    ).to_dict()
    assert refused["refusal"]["type"] == "insufficient_evidence"
    assert refused["refusal"]["best_score"] < refused["refusal"]["min_score"]
    assert refused["usage"]["completion_tokens"] == 0 and refused["citations"] == []
    assert refused["choices"][0]["message"]["content"] == refused["refusal"]["message"]

    follow = client.chat.completions.create(
        model="rag/kb",
        messages=[{"role": "user", "content": "And what are its reports called?"}],
        max_tokens=16,
        temperature=0,
        extra_body={"session_id": "s-1"},
    ).to_dict()
    assert follow["refusal"] is None
    assert any("BLUE HERON" in c["quote"] for c in follow["citations"])
    turns = ok(http.get("/v1/sessions/s-1/messages"))["data"]
    assert [t["role"] for t in turns] == ["user", "assistant", "user", "assistant"]
    assert turns[1]["sources"] and turns[1]["confidence"] == asked["confidence"]

    # Streaming RAG: the citations arrive in the last chunk before [DONE].
    stream = client.chat.completions.create(
        model="rag/kb",
        messages=[{"role": "user", "content": "What code name does the Zanzibar project use?"}],
        max_tokens=8,
        stream=True,
    )
    chunks = [c.to_dict() for c in stream]
    assert chunks[-1]["choices"] == [] and chunks[-1]["citations"]

    # Re-uploading the same files is idempotent.
    again = upload_fixtures(http)
    assert (again["skipped"], again["done"]) == (3, 0)
    assert len(ok(http.get("/v1/collections/kb/documents"))["data"]) == 4

    # Delete the memo: gone from every index, now and after a restart.
    memo = next(
        d for d in ok(http.get("/v1/collections/kb/documents"))["data"] if d["title"] == "memo.txt"
    )
    ok(http.delete(f"/v1/collections/kb/documents/{memo['id']}"))
    assert http.get(f"/v1/collections/kb/documents/{memo['id']}").status_code == 404

    def memo_gone() -> None:
        for mode in ("dense", "lexical", "hybrid"):
            hits = retrieve(http, "Zanzibar BLUE HERON code name", mode)
            assert all("BLUE HERON" not in h["text"] for h in hits), mode

    memo_gone()
    http.close()
    open_server.stop()
    index_dir = open_server.data_dir / "indexes"
    dense_files = list(index_dir.glob("col_*/dense.faiss"))
    assert len(dense_files) == 1
    dense_files[0].write_bytes(dense_files[0].read_bytes()[:200])  # corrupt it
    open_server.start()
    http = httpx.Client(base_url=open_server.url, timeout=600)
    assert "rebuilding dense index" in open_server.log_path.read_text()
    memo_gone()
    for mode in ("dense", "lexical", "hybrid"):
        assert FACT_PDF in retrieve(http, "spare turbine blades Oslo", mode)[0]["text"]
    stats = ok(http.get("/v1/collections/kb"))
    assert stats["index"]["vectors"] == stats["chunks"] > 0
    # Deleted outright: rebuilt as well.
    http.close()
    open_server.stop()
    dense_files[0].unlink()
    open_server.start()
    http = httpx.Client(base_url=open_server.url, timeout=600)
    assert FACT_MD in retrieve(http, "saffron risotto canteen", "dense")[0]["text"]
    http.close()


def test_bad_requests_are_4xx(open_server: HearthProcess) -> None:
    http = httpx.Client(base_url=open_server.url, timeout=120)
    cases = [
        (http.post("/v1/collections", json={"name": "bad name!"}), 400, "name"),
        (http.post("/v1/collections", json={"nam": "x"}), 400, None),
        (http.post("/v1/retrieve", json={"collection": "nope", "query": "q"}), 404, "collection"),
        (
            http.post("/v1/retrieve", json={"collection": "kb", "query": "q", "mode": "x"}),
            400,
            "mode",
        ),
        (
            http.post("/v1/retrieve", json={"collection": "kb", "query": "q", "top_k": 0}),
            400,
            "top_k",
        ),
        (
            http.post("/v1/collections/kb/documents", json={"documents": [{"text": 3}]}),
            400,
            "documents[0].text",
        ),
        (
            http.post("/v1/collections/kb/documents", files=[("file", ("x.png", b"\x89PNG\r\n"))]),
            400,
            "file",
        ),
        (http.get("/v1/jobs/job_missing"), 404, "job_id"),
        (
            http.post(
                "/v1/chat/completions",
                json={
                    "model": MODEL,
                    "messages": [{"role": "user", "content": "hi"}],
                    "retrieval": {"collections": ["kb"], "bogus": 1},
                },
            ),
            400,
            "retrieval.bogus",
        ),
    ]
    for response, status, param in cases:
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert error["message"]
        if param is not None:
            assert error["param"] == param, error


def test_two_tenants_with_canaries_never_meet(keyed_server: HearthProcess) -> None:
    admin = httpx.Client(
        base_url=keyed_server.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=600
    )
    assert httpx.get(f"{keyed_server.url}/v1/admin/tenants").status_code == 401
    keys = {}
    for name in ("alpha", "beta"):
        ok(admin.post("/v1/admin/tenants", json={"name": name}), 201)
        keys[name] = ok(admin.post(f"/v1/admin/tenants/{name}/keys", json={}), 201)["key"]
    stored = ok(admin.get("/v1/admin/tenants/alpha/keys"))["data"]
    assert "key" not in stored[0] and stored[0]["prefix"] in keys["alpha"]
    assert httpx.get(f"{keyed_server.url}/v1/collections").status_code == 401
    bad = {"Authorization": "Bearer hth_nope_nope"}
    assert httpx.get(f"{keyed_server.url}/v1/collections", headers=bad).status_code == 401
    assert httpx.get(f"{keyed_server.url}/health").status_code == 200

    clients = {
        n: httpx.Client(
            base_url=keyed_server.url, timeout=600, headers={"Authorization": f"Bearer {k}"}
        )
        for n, k in keys.items()
    }
    canary = {"alpha": "ALPHA-CANARY-7731", "beta": "BETA-CANARY-9902"}
    jobs = {}
    for name, http in clients.items():
        ok(http.post("/v1/collections", json={"name": "kb"}), 201)  # same name in both
        text = f"The secret canary token of this company is {canary[name]}. {FILLER}"
        body = {"documents": [{"id": "secret", "text": text, "title": "Secret"}]}
        jobs[name] = ok(http.post("/v1/collections/kb/documents", json=body), 202)["id"]
        assert wait_job(http, jobs[name])[-1]["status"] == "succeeded"

    a, b = clients["alpha"], clients["beta"]
    for mode in ("dense", "lexical", "hybrid"):
        text = json.dumps(retrieve(a, "secret canary token", mode))
        assert canary["alpha"] in text and canary["beta"] not in text
    beta_doc = ok(b.get("/v1/collections/kb/documents/secret"))
    assert a.get(f"/v1/collections/kb/documents/{beta_doc['internal_id']}").status_code == 404
    assert a.get(f"/v1/jobs/{jobs['beta']}").status_code == 404
    assert a.get(f"/v1/jobs/{jobs['beta']}/events").status_code == 404
    assert {j["id"] for j in ok(a.get("/v1/jobs"))["data"]} == {jobs["alpha"]}
    listing = json.dumps(ok(a.get("/v1/collections/kb/documents")))
    assert canary["beta"] not in listing and beta_doc["internal_id"] not in listing

    client = OpenAI(base_url=f"{keyed_server.url}/v1", api_key=keys["alpha"], max_retries=0)
    answer = client.chat.completions.create(
        model="rag/kb",
        messages=[{"role": "user", "content": "What is the secret canary token?"}],
        max_tokens=16,
        temperature=0,
        extra_body={"session_id": "shared-id"},
    ).to_dict()
    assert canary["beta"] not in json.dumps(answer)
    assert any(
        canary["alpha"] in c["quote"] or c["document_id"] == "secret" for c in answer["citations"]
    )
    assert b.get("/v1/sessions/shared-id/messages").status_code == 404
    models = {m.id for m in client.models.list().data}
    assert "rag/kb" in models


def test_kill_9_during_ingestion_then_restart(tmp_path: Path) -> None:
    """Every document ends complete or cleanly failed; uploading again completes the rest."""
    server = _server(tmp_path)
    server.start()
    http = httpx.Client(base_url=server.url, timeout=600)
    ok(http.post("/v1/collections", json={"name": "kb"}), 201)
    words = " ".join(f"term{i}" for i in range(300))
    docs = [{"id": f"d{n}", "text": f"Document {n}. {words}"} for n in range(80)]
    job = ok(http.post("/v1/collections/kb/documents", json={"documents": docs}), 202)
    with http.stream("GET", f"/v1/jobs/{job['id']}/events", timeout=600) as response:
        for line in response.iter_lines():
            if line.startswith("data:") and json.loads(line[5:])["done"] >= 2:
                break
    assert server.proc is not None
    server.proc.kill()  # SIGKILL, mid-job
    server.proc.wait()
    http.close()
    server.start()
    http = httpx.Client(base_url=server.url, timeout=600)
    listed = ok(http.get("/v1/collections/kb/documents", params={"limit": 1000}))["data"]
    assert listed and {d["status"] for d in listed} <= {"ready", "failed"}
    assert all(d["chunks"] > 0 for d in listed if d["status"] == "ready")
    assert all(d["chunks"] == 0 and d["error"] for d in listed if d["status"] == "failed")
    stats = ok(http.get("/v1/collections/kb"))
    assert stats["index"]["vectors"] == stats["chunks"]
    assert ok(http.get(f"/v1/jobs/{job['id']}"))["status"] == "failed"
    ready = sum(d["status"] == "ready" for d in listed)
    retry = ok(http.post("/v1/collections/kb/documents", json={"documents": docs}), 202)
    final = wait_job(http, retry["id"])[-1]
    assert final["status"] == "succeeded" and final["skipped"] == ready
    assert final["done"] == len(docs) - ready
    http.close()
    server.stop()
