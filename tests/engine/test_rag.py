"""RAG planning and citation checking with real retrieval (the generator is stood in by fixed
answers here; the end-to-end test drives the real model)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from engine import DocumentInput
from engine.app import Corpus, open_corpus
from engine.rag import REFUSAL_MESSAGE, RagService, RetrievalOptions, is_follow_up
from models.chat_templates import ChatMessage
from tests.docfixtures import embedder, settings

PLANTED = (
    "Project Zanzibar began in 2019. The Zanzibar project uses the code name BLUE HERON for all "
    "internal reports. Its budget was approved by the board."
)


async def service(tmp_path: Path) -> Corpus:
    svc = await open_corpus(settings(tmp_path), embedder())
    await svc.documents.create_collection("default", "kb")
    items = [
        DocumentInput(text=PLANTED, client_id="zanzibar", title="Zanzibar"),
        DocumentInput(text="Paris is the capital of France. It lies on the Seine.", client_id="p"),
    ]
    job = await svc.documents.submit("default", "kb", items)
    await svc.jobs.wait("default", job.id)
    return svc


def test_answer_cites_verified_span_and_weak_evidence_refuses(tmp_path: Path) -> None:
    async def body() -> None:
        svc = await service(tmp_path)
        rag = RagService(svc.retrieval.settings, svc.retrieval, svc.sessions)
        opts = RetrievalOptions(["kb"], top_k=3)
        ask = [ChatMessage("user", "What code name does the Zanzibar project use?")]
        plan = await rag.prepare("default", ask, opts)
        assert plan.refusal is None and plan.blocks[0].document_id == "zanzibar"
        turn = plan.messages[-1].content
        assert "<<<CONTEXT [1]" in turn and "BLUE HERON" in turn
        assert turn.endswith("Question: " + ask[-1].content) and len(plan.messages) == 1
        answer = await rag.finish(
            plan, "It uses the code name BLUE HERON for all internal reports [1]."
        )
        cite = answer.citations[0]
        assert cite.document_id == "zanzibar" and cite.verified and cite.match == "answer"
        assert "BLUE HERON" in cite.quote and PLANTED[cite.start : cite.end] == cite.quote
        assert 0.5 < answer.confidence <= 1.0
        # An answer with no marker and no shared words still cites the best evidence.
        vague = await rag.finish(plan, "Sorry.")
        assert vague.citations[0].match == "question" and vague.citations[0].verified
        assert vague.confidence < answer.confidence
        off = [ChatMessage("user", "How do I bake sourdough bread at home?")]
        refused = await rag.prepare("default", off, opts)
        assert refused.refusal is not None and refused.refusal.reason == "weak_evidence"
        assert refused.refusal.best_score < refused.refusal.min_score
        assert refused.refusal.message == REFUSAL_MESSAGE and refused.messages == []
        await svc.close()

    asyncio.run(body())


def test_session_memory_carries_a_follow_up(tmp_path: Path) -> None:
    async def body() -> None:
        svc = await service(tmp_path)
        rag = RagService(svc.retrieval.settings, svc.retrieval, svc.sessions)
        opts = RetrievalOptions(["kb"], top_k=2)
        follow = [ChatMessage("user", "And when did it begin?")]
        alone = await rag.prepare("default", follow, opts, session_id="other")
        assert alone.refusal is not None  # no history: the pronoun points nowhere
        first = [ChatMessage("user", "Tell me about the Zanzibar project.")]
        plan = await rag.prepare("default", first, opts, session_id="s1")
        await rag.finish(plan, "The Zanzibar project uses the code name BLUE HERON.")
        plan = await rag.prepare("default", follow, opts, session_id="s1")
        assert plan.refusal is None and plan.history_turns == 2
        assert [m.role for m in plan.messages] == ["user", "assistant", "user"]
        assert plan.messages[0].content == first[0].content
        assert plan.blocks[0].document_id == "zanzibar"
        stored = await svc.sessions.messages("default", "s1")
        assert [m.role for m in stored] == ["user", "assistant"]
        assert stored[1].sources and stored[1].sources[0]["document_id"] == "zanzibar"
        await svc.close()

    asyncio.run(body())


def test_follow_up_detection() -> None:
    assert is_follow_up("and what about the budget?")
    assert is_follow_up("When did it start?")
    assert not is_follow_up("What is the capital of France?")
