"""DocumentService end to end in-process, with real MiniLM, DuckDB, FAISS and BM25 files."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engine import DocumentInput
from engine.app import Corpus, open_corpus
from engine.errors import InvalidRequestError, NotFoundError
from tests.docfixtures import embedder, make_pdf, settings

PLANTED = "The Zanzibar project uses the code name BLUE HERON for its internal reports."
FILLER = [
    "Quarterly revenue grew by four percent, driven by subscriptions in the northern region.",
    "The cafeteria menu changes every Monday and includes a vegetarian option daily.",
    "Employees must renew their parking permits before the end of January each year.",
]


def run(coro):
    return asyncio.run(coro)


async def started(data_dir: Path) -> Corpus:
    svc = await open_corpus(settings(data_dir), embedder())
    return svc


async def ingest(svc: Corpus, tenant: str, collection: str, items: list[DocumentInput]):
    job = await svc.documents.submit(tenant, collection, items)
    return await svc.jobs.wait(tenant, job.id)


def corpus() -> list[DocumentInput]:
    return [
        DocumentInput(data=("\n".join(FILLER) + "\n" + PLANTED).encode(), filename="memo.txt"),
        DocumentInput(data=b"# Handbook\n\n" + FILLER[1].encode(), filename="handbook.md"),
        DocumentInput(
            data=make_pdf([[FILLER[0]], [FILLER[2]]]), filename="report.pdf", client_id="rep"
        ),
        DocumentInput(text=FILLER[2], client_id="json-1", title="Parking", metadata={"dept": "hr"}),
    ]


def test_ingest_retrieve_each_mode_reupload_delete_restart(tmp_path: Path) -> None:
    async def first() -> None:
        svc = await started(tmp_path)
        await svc.documents.create_collection("default", "kb")
        job = await ingest(svc, "default", "kb", corpus())
        assert (job.status, job.progress, job.done, job.failed) == ("succeeded", 100, 4, 0)
        pdf = await svc.documents.get_document("default", "kb", "rep")
        assert pdf.status == "ready" and pdf.n_pages == 2
        chunks = await svc.documents.document_chunks("default", "kb", "rep")
        assert {c.page for c in chunks} == {1, 2} or len(chunks) == 1
        for mode in ("dense", "lexical", "hybrid"):
            hits = (
                await svc.retrieval.retrieve("default", ["kb"], ["code name of Zanzibar"], 3, mode)
            )[0]
            assert "BLUE HERON" in hits[0].text, mode
            assert hits[0].text == PLANTED or PLANTED in hits[0].text
        hr = (
            await svc.retrieval.retrieve(
                "default", ["kb"], ["parking"], 5, "hybrid", {"dept": "hr"}
            )
        )[0]
        assert [h.document_id for h in hr] == ["json-1"]
        again = await ingest(svc, "default", "kb", corpus())
        assert again.skipped == 4 and again.done == 0
        assert len(await svc.documents.list_documents("default", "kb")) == 4
        memo = next(
            d for d in await svc.documents.list_documents("default", "kb") if d.title == "memo.txt"
        )
        await svc.documents.delete_document("default", "kb", memo.id)
        for mode in ("dense", "lexical", "hybrid"):
            hits = (
                await svc.retrieval.retrieve("default", ["kb"], ["BLUE HERON Zanzibar"], 10, mode)
            )[0]
            assert all("BLUE HERON" not in h.text for h in hits), mode
        await svc.close()

    async def second() -> None:
        svc = await started(tmp_path)
        for mode in ("dense", "lexical", "hybrid"):
            hits = (
                await svc.retrieval.retrieve("default", ["kb"], ["BLUE HERON Zanzibar"], 10, mode)
            )[0]
            assert all("BLUE HERON" not in h.text for h in hits), mode
            parking = (
                await svc.retrieval.retrieve("default", ["kb"], ["parking permits"], 3, mode)
            )[0]
            assert parking and "parking" in parking[0].text, mode
        with pytest.raises(NotFoundError):
            await svc.documents.get_document("default", "kb", "missing")
        await svc.close()

    run(first())
    run(second())


def test_tenants_never_see_each_other(tmp_path: Path) -> None:
    async def body() -> None:
        svc = await started(tmp_path)
        a, b = (
            (await svc.tenancy.create_tenant("alpha")).id,
            (await svc.tenancy.create_tenant("beta")).id,
        )
        for tenant, canary in ((a, "ALPHA-CANARY-7731"), (b, "BETA-CANARY-9902")):
            await svc.documents.create_collection(tenant, "kb")
            text = f"The secret canary token is {canary}. " + FILLER[0]
            await ingest(svc, tenant, "kb", [DocumentInput(text=text, client_id="secret")])
        for mode in ("dense", "lexical", "hybrid"):
            hits = (await svc.retrieval.retrieve(a, ["kb"], ["secret canary token"], 10, mode))[0]
            assert hits and all("BETA" not in h.text for h in hits)
        doc_b = await svc.documents.get_document(b, "kb", "secret")
        with pytest.raises(NotFoundError):
            await svc.documents.get_document(a, "kb", doc_b.id)
        jobs_b = await svc.jobs.list(b)
        with pytest.raises(NotFoundError):
            await svc.jobs.get(a, jobs_b[0].id)
        with pytest.raises(NotFoundError):
            await svc.retrieval.retrieve("default", ["kb"], ["canary"])
        assert [c.tenant_id for c in await svc.documents.list_collections(a)] == [a]
        await svc.close()

    run(body())


def test_bad_inputs_are_4xx_before_the_job(tmp_path: Path) -> None:
    async def body() -> None:
        svc = await started(tmp_path)
        await svc.documents.create_collection("default", "kb")
        cases = [
            ([], "documents"),
            ([DocumentInput(text=" ")], "documents[0].text"),
            (
                [DocumentInput(text="a", client_id="x"), DocumentInput(text="b", client_id="x")],
                "documents[1].id",
            ),
            ([DocumentInput(data=b"\x89PNG\r\n", filename="a.png")], "file"),
        ]
        for items, param in cases:
            with pytest.raises(InvalidRequestError) as info:
                await svc.documents.submit("default", "kb", items)
            assert info.value.param == param
        with pytest.raises(InvalidRequestError):
            await svc.retrieval.retrieve("default", ["kb"], ["q"], 0)
        with pytest.raises(InvalidRequestError):
            await svc.retrieval.retrieve("default", ["kb"], ["q"], 3, "fuzzy")
        with pytest.raises(InvalidRequestError):
            await svc.documents.create_collection("default", "kb2", chunk_tokens=300)
        await svc.close()

    run(body())


CRASH_WORKER = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from engine import DocumentInput
    from engine.app import open_corpus
    from tests.docfixtures import embedder, settings

    async def main():
        svc = await open_corpus(settings(Path(sys.argv[1])), embedder())
        await svc.documents.create_collection("default", "kb")
        words = " ".join(f"word{i}" for i in range(400))
        items = [DocumentInput(text=f"document {n}. {words}", client_id=f"d{n}") for n in range(60)]
        job = await svc.documents.submit("default", "kb", items)
        async for state in await svc.jobs.events("default", job.id):
            if state is not None and state.done >= 3:
                print("INGESTING", flush=True)
                await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


@pytest.mark.slow
def test_kill_9_during_ingestion_leaves_documents_complete_or_failed(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(Path.cwd()))
    proc = subprocess.Popen(
        [sys.executable, "-c", CRASH_WORKER, str(tmp_path)],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "INGESTING"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)

    async def after() -> None:
        svc = await started(tmp_path)
        docs = await svc.documents.list_documents("default", "kb", limit=1000)
        assert docs and {d.status for d in docs} <= {"ready", "failed"}
        assert any(d.status == "ready" for d in docs)
        db = svc.db
        assert db is not None
        for doc in docs:
            stored = db.store.fetchone(
                "SELECT count(*) FROM chunks WHERE document_id = ?", [doc.id]
            )[0]
            assert stored == (doc.n_chunks if doc.status == "ready" else 0)
        col = await svc.documents.get_collection("default", "kb")
        stats = await svc.documents.collection_stats(col)
        assert stats["index"]["vectors"] == stats["chunks"]
        jobs = await svc.jobs.list("default")
        assert jobs[0].status == "failed" and "interrupted" in (jobs[0].error or "")
        # Retry: upload again; ready ones are unchanged, failed ones are ingested.
        words = " ".join(f"word{i}" for i in range(400))
        done = {d.client_id for d in docs if d.status == "ready"}
        retry = [DocumentInput(text=f"document {n}. {words}", client_id=f"d{n}") for n in range(60)]
        job = await ingest(svc, "default", "kb", retry[: len(docs)])
        assert job.skipped == len(done) and job.done == len(docs) - len(done)
        await svc.close()

    run(after())


def test_reupload_stores_the_new_version_before_the_old_one_goes(tmp_path: Path) -> None:
    async def main() -> None:
        svc = await started(tmp_path)
        await svc.documents.create_collection("default", "kb")
        v1 = DocumentInput(text=PLANTED, client_id="memo", title="Memo")
        assert (await ingest(svc, "default", "kb", [v1])).done == 1
        ingestor = svc.documents._ingestor
        real_embed = ingestor.embed

        async def broken(texts: list[str]):
            raise RuntimeError("embedder crashed")

        ingestor.embed = broken  # the new version fails half-way
        v2 = DocumentInput(text=FILLER[0], client_id="memo", title="Memo")
        failed = await ingest(svc, "default", "kb", [v2])
        assert failed.failed == 1
        kept = await svc.documents.get_document("default", "kb", "memo")
        assert (
            kept.status == "ready" and len(await svc.documents.list_documents("default", "kb")) == 1
        )
        hits = (await svc.retrieval.retrieve("default", ["kb"], ["BLUE HERON"], 3, "lexical"))[0]
        assert hits and "BLUE HERON" in hits[0].text  # the old version still answers
        ingestor.embed = real_embed
        replaced = await ingest(svc, "default", "kb", [v2])
        assert replaced.done == 1
        docs = await svc.documents.list_documents("default", "kb")
        assert [d.public_id for d in docs] == ["memo"] and docs[0].status == "ready"
        for mode in ("dense", "lexical"):
            hits = (await svc.retrieval.retrieve("default", ["kb"], ["revenue"], 3, mode))[0]
            assert hits and all("BLUE HERON" not in h.text for h in hits), mode
            assert "revenue" in hits[0].text
        await svc.close()

    run(main())
