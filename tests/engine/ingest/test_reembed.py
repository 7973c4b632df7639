"""A collection records its embedding model and moves to another one in a durable job (real
MiniLM and mpnet, DuckDB, FAISS): queries are embedded with the collection's model, collections
of two models are not searched together, a restarted job resumes from its staged vectors, and the
switch survives a restart."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from engine import DocumentInput
from engine.app import Corpus, open_corpus
from engine.errors import InvalidRequestError
from models.cards import get_card
from models.store import install_model
from tests.docfixtures import embedder, models_dir, settings

pytestmark = pytest.mark.slow

MINILM, MPNET = "all-minilm-l6-v2", "all-mpnet-base-v2"
DOCS = [
    DocumentInput(text="The canteen opens at 8 and closes at 15.", client_id="canteen"),
    DocumentInput(text="Parking permits are renewed every January.", client_id="parking"),
    DocumentInput(text="Invoices are paid within thirty days.", client_id="invoices"),
]


class Counting:
    """An embedder that counts the passages it embeds (to see what a resumed job redoes)."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.texts = inner, 0
        self.dim, self.tokenizer = inner.dim, inner.tokenizer

    async def embed(self, texts: list[str], input_type: str | None = None) -> np.ndarray:
        self.texts += len(texts)
        return await self.inner.embed(texts, input_type)


@pytest.fixture(scope="module")
def mpnet() -> Counting:
    from engine.embeddings import Embedder

    install_model(get_card(MPNET), models_dir())
    return Counting(Embedder.load(models_dir(), MPNET, threads=1))


async def opened(data_dir: Path, mpnet: Counting) -> Corpus:
    loaders = {MPNET: mpnet}
    return await open_corpus(settings(data_dir), embedder(), loaders.__getitem__)


async def ingest(svc: Corpus, name: str) -> None:
    await svc.documents.create_collection("default", name)
    job = await svc.documents.submit("default", name, DOCS)
    assert (await svc.jobs.wait("default", job.id)).status == "succeeded"


async def top(svc: Corpus, names: list[str], query: str) -> str:
    hits = await svc.retrieval.retrieve("default", names, [query], 3, "dense")
    return hits[0][0].document_id


def test_reembed_switches_the_collection_and_survives_a_restart(
    tmp_path: Path, mpnet: Counting
) -> None:
    async def first() -> None:
        svc = await opened(tmp_path, mpnet)
        try:
            await ingest(svc, "kb")
            await ingest(svc, "other")
            col = await svc.documents.get_collection("default", "kb")
            assert col.embedding_model == MINILM
            with pytest.raises(InvalidRequestError) as err:  # already on it
                await svc.documents.reembed("default", "kb", MINILM)
            assert err.value.param == "model"
            for bad in ("no-such-model", "gemma-3-270m-q4km"):
                with pytest.raises(InvalidRequestError) as err:
                    await svc.documents.reembed("default", "kb", bad)
                assert err.value.code == "model_not_found" and MPNET in err.value.message
            job = await svc.documents.reembed("default", "kb", MPNET)
            done = await svc.jobs.wait("default", job.id)
            assert done.status == "succeeded", done.error
            assert done.result == {"collection": "kb", "model": MPNET, "chunks": 3, "dim": 768}
            col = await svc.documents.get_collection("default", "kb")
            assert col.embedding_model == MPNET
            _, vectors = svc.db.corpus.vectors(col.id)
            assert vectors.shape == (3, 768)
            assert await top(svc, ["kb"], "when can I eat lunch in the canteen") == "canteen"
            assert await top(svc, ["other"], "when do I renew my parking permit") == "parking"
            with pytest.raises(InvalidRequestError) as err:  # vectors of two models
                await svc.retrieval.retrieve("default", ["kb", "other"], ["canteen"], 3)
            assert err.value.code == "embedding_model_mismatch" and MPNET in err.value.message
            more = [DocumentInput(text="The library lends books for two weeks.", client_id="lib")]
            job = await svc.documents.submit("default", "kb", more)  # embedded with mpnet
            assert (await svc.jobs.wait("default", job.id)).status == "succeeded"
            assert svc.db.corpus.vectors(col.id)[1].shape == (4, 768)
        finally:
            await svc.close()

    async def second() -> None:
        svc = await opened(tmp_path, mpnet)
        try:
            assert (await svc.documents.get_collection("default", "kb")).embedding_model == MPNET
            assert await top(svc, ["kb"], "how long may I keep a library book") == "lib"
        finally:
            await svc.close()

    asyncio.run(first())
    asyncio.run(second())


def test_a_restarted_reembed_job_resumes_from_its_staged_vectors(
    tmp_path: Path, mpnet: Counting
) -> None:
    """An attempt that died after staging two chunks: the next embeds only the third."""

    async def main() -> None:
        svc = await opened(tmp_path, mpnet)
        try:
            await ingest(svc, "kb")
            col = await svc.documents.get_collection("default", "kb")
            ids, texts = svc.db.corpus.unstaged_chunks(col.id, "job_dead", 2)
            svc.db.corpus.stage_vectors(
                col.id, "job_dead", ids, await mpnet.embed(texts, "document")
            )
            # The job as a restart re-runs it: the same id as the attempt that staged them.
            job = SimpleNamespace(
                id="job_dead",
                tenant_id="default",
                payload={"collection_id": col.id, "collection": "kb", "model": MPNET},
            )
            before = mpnet.texts

            class Ctx:
                payload = job.payload

                def __init__(self) -> None:
                    self.job = job

                async def progress(self, percent: int, stage: str | None = None) -> None:
                    assert 0 <= percent <= 99

            result = await svc.documents._reembed_job(Ctx())  # type: ignore[arg-type]
            assert result["chunks"] == 3 and mpnet.texts - before == 1
            assert svc.db.corpus.staged_count("job_dead") == 0
            assert svc.db.corpus.vectors(col.id)[1].shape == (3, 768)
            assert await top(svc, ["kb"], "invoice payment terms") == "invoices"
        finally:
            await svc.close()

    asyncio.run(main())
