"""Retrieval-augmented chat: evidence in numbered blocks, citations checked against storage.

``RagService.generate(tenant, request, options, session_id)`` is the whole turn, usable from Python,
benchmarks and the server alike. It yields the generation's events (``ChoiceDelta``,
``GenerationDone``) and ends with a typed :class:`RagDone` (citations, confidence, retrieval
figures) — or yields one :class:`Refusal` and generates nothing:

1. ``prepare`` retrieves for the last user message (and, in a session, when that message refers
   back with a pronoun such as "it" or "they", also for it joined to the previous user turn),
   and refuses without generating when the best evidence (query-chunk
   cosine similarity) is below ``min_score``.
2. Otherwise it builds the prompt: the session's recent turns within ``history_tokens``, then the
   client's messages, the last user turn holding the numbered, delimited context blocks that fit
   ``context_tokens`` (the rest are counted in ``dropped``), the instruction and the question.
3. The engine generates; ``finish`` extracts citations from choice 0's answer: blocks cited as
   ``[n]``, else blocks sharing a passage of at least ``MIN_SPAN_WORDS`` words with the answer,
   else the best block. Each quote is a span of the chunk with offsets, re-read from DuckDB and
   compared (``verified``). The turn is stored in the session with its sources and confidence.

``confidence`` = 0.5 × best evidence cosine (clipped to 0..1) + 0.5 × the share of answer
sentences that share a passage with a cited chunk.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine.errors import InvalidRequestError
from engine.types import ChoiceDelta, GenerateRequest, GenerationDone
from models.chat_templates import ChatMessage

if TYPE_CHECKING:
    from configs import RetrievalSettings
    from engine.engine import Engine
    from engine.retrieval.service import RetrievalService
    from engine.sessions import SessionService
    from engine.types import RetrievedChunk

REFUSAL_MESSAGE = (
    "I cannot answer this from the available documents: no passage matches the question closely "
    "enough."
)
MIN_SPAN_WORDS = 4
INSTRUCTION = (
    "Answer the question using only the numbered context blocks above, in one or two sentences. "
    "Cite the blocks you use as [1], [2]. If they do not contain the answer, say you do not know."
)
_WORD = re.compile(r"\w+", re.UNICODE)
_SENTENCE = re.compile(r"[^.!?\n]+[.!?]?")
_MARKER = re.compile(r"\[(\d{1,3})\]")


@dataclass(frozen=True)
class RetrievalOptions:
    collections: list[str]
    top_k: int | None = None
    mode: str = "hybrid"
    min_score: float | None = None
    filter: dict[str, Any] | None = None


@dataclass(frozen=True)
class RetrievalStats:
    """What retrieval contributed to a turn."""

    collections: list[str]
    mode: str
    chunks_retrieved: int
    chunks_in_context: int
    chunks_dropped: int
    best_score: float


@dataclass(frozen=True)
class Refusal:
    """The evidence is too weak to answer: nothing was generated. Also a terminal event of
    ``RagService.generate`` (then ``retrieval`` and ``session_id`` are set)."""

    reason: str  # "weak_evidence" | "no_evidence"
    best_score: float
    min_score: float
    message: str = REFUSAL_MESSAGE
    retrieval: RetrievalStats | None = None
    session_id: str | None = None


@dataclass(frozen=True)
class Citation:
    number: int
    document_id: str
    chunk_id: int
    collection: str
    score: float
    quote: str
    start: int  # offsets of the quote in the chunk text
    end: int
    document_start: int  # offsets of the quote in the document text
    document_end: int
    page: int | None
    match: str  # "answer": shares a passage with the answer; "question": best sentence
    verified: bool

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class RagPlan:
    tenant: str
    question: str
    options: RetrievalOptions
    session_id: str | None
    messages: list[ChatMessage]
    blocks: list[RetrievedChunk]
    dropped: int
    best_score: float
    refusal: Refusal | None = None
    history_turns: int = 0
    retrieved: list[RetrievedChunk] = field(default_factory=list)

    @property
    def stats(self) -> RetrievalStats:
        return RetrievalStats(
            collections=self.options.collections,
            mode=self.options.mode,
            chunks_retrieved=len(self.retrieved),
            chunks_in_context=len(self.blocks),
            chunks_dropped=self.dropped,
            best_score=round(self.best_score, 4),
        )


@dataclass(frozen=True)
class RagAnswer:
    citations: list[Citation]
    confidence: float
    refusal: Refusal | None


@dataclass(frozen=True)
class RagDone:
    """Last event of an answered RAG turn (after the generation's ``GenerationDone``)."""

    citations: list[Citation]
    confidence: float
    retrieval: RetrievalStats
    session_id: str | None


RagEvent = ChoiceDelta | GenerationDone | RagDone | Refusal


class RagService:
    def __init__(
        self,
        settings: RetrievalSettings,
        retrieval: RetrievalService,
        sessions: SessionService,
        engine: Engine | None = None,
        count_tokens: Callable[[str], int] | None = None,
    ) -> None:
        """``engine`` generates (``generate``); ``count_tokens`` counts the generator's tokens
        for the context budget (default: the engine's, else characters / 4)."""
        self.settings = settings
        self._retrieval = retrieval
        self._sessions = sessions
        self._engine = engine
        if count_tokens is None and engine is not None:
            count_tokens = engine.count_tokens
        self.count = count_tokens or (lambda text: len(text) // 4 + 1)

    async def generate(
        self,
        tenant: str,
        request: GenerateRequest,
        options: RetrievalOptions,
        session_id: str | None = None,
    ) -> AsyncIterator[RagEvent]:
        """One RAG turn over ``request.messages``: the generation's events, then ``RagDone``;
        or one ``Refusal`` (weak evidence; nothing generated). Citations come from choice 0."""
        if self._engine is None:
            raise RuntimeError("this RagService has no engine to generate with")
        if request.messages is None:
            raise InvalidRequestError("RAG needs messages", param="messages")
        plan = await self.prepare(tenant, request.messages, options, session_id)
        if plan.refusal is not None:
            await self.finish(plan, None)
            yield dataclasses.replace(plan.refusal, retrieval=plan.stats, session_id=session_id)
            return
        answer: list[str] = []
        augmented = dataclasses.replace(request, messages=plan.messages)
        async for event in self._engine.generate(augmented):
            if isinstance(event, ChoiceDelta) and event.index == 0:
                answer.append(event.text)
            yield event
        result = await self.finish(plan, "".join(answer))
        yield RagDone(result.citations, result.confidence, plan.stats, session_id)

    async def prepare(
        self,
        tenant: str,
        messages: Sequence[ChatMessage],
        options: RetrievalOptions,
        session_id: str | None = None,
    ) -> RagPlan:
        question = _last_user(messages)
        history = await self._history(tenant, session_id)
        queries = [question]
        previous = [m.content for m in history if m.role == "user"]
        if previous and is_follow_up(question):
            queries.append(f"{previous[-1]}\n{question}")
        min_score = self.settings.min_score if options.min_score is None else options.min_score
        if not -1.0 <= min_score <= 1.0:
            raise InvalidRequestError("min_score must be in -1..1", param="retrieval.min_score")
        results = await self._retrieval.retrieve(
            tenant, options.collections, queries, options.top_k, options.mode, options.filter
        )
        hits = _merge(results, options.top_k or self.settings.default_top_k)
        best = max((h.dense_score for h in hits), default=0.0)
        plan = RagPlan(tenant, question, options, session_id, [], [], 0, best, retrieved=hits)
        if not hits or best < min_score:
            reason = "no_evidence" if not hits else "weak_evidence"
            plan.refusal = Refusal(reason, round(best, 4), min_score)
            return plan
        plan.blocks, plan.dropped = self._fit_blocks(hits)
        plan.messages, plan.history_turns = self._prompt(plan.blocks, history, messages, question)
        return plan

    async def _history(self, tenant: str, session_id: str | None) -> list[ChatMessage]:
        if session_id is None:
            return []
        if not isinstance(session_id, str) or not 1 <= len(session_id) <= 128:
            raise InvalidRequestError("session_id must be 1-128 characters", param="session_id")
        if await self._sessions.ensure(tenant, session_id):
            return []
        stored = await self._sessions.messages(tenant, session_id, 20)
        turns: list[ChatMessage] = []
        used = 0
        for msg in reversed(stored):
            used += self.count(msg.content)
            if used > self.settings.history_tokens:
                break
            turns.append(ChatMessage(msg.role, msg.content))
        return list(reversed(turns))

    def _fit_blocks(self, hits: list[RetrievedChunk]) -> tuple[list[RetrievedChunk], int]:
        kept: list[RetrievedChunk] = []
        used = 0
        for hit in hits:
            cost = self.count(_block(len(kept) + 1, hit))
            if used + cost > self.settings.context_tokens:
                continue
            kept.append(hit)
            used += cost
        return kept, len(hits) - len(kept)

    @staticmethod
    def _prompt(
        blocks: list[RetrievedChunk],
        history: list[ChatMessage],
        messages: Sequence[ChatMessage],
        question: str,
    ) -> tuple[list[ChatMessage], int]:
        """History, then the client's messages with the last user turn replaced by the context
        blocks, the instruction and the question (small models follow what comes last)."""
        context = "\n".join(_block(i, b) for i, b in enumerate(blocks, start=1))
        last = max(i for i, m in enumerate(messages) if m.role == "user")
        turn = ChatMessage("user", f"{context}\n\n{INSTRUCTION}\n\nQuestion: {question}")
        return [*history, *messages[:last], turn, *messages[last + 1 :]], len(history)

    async def finish(self, plan: RagPlan, answer: str | None) -> RagAnswer:
        """Citations and confidence for ``answer``; stores the turn when there is a session."""
        if plan.refusal is not None:
            result = RagAnswer([], 0.0, plan.refusal)
            await self._store(plan, plan.refusal.message, result)
            return result
        text = answer or ""
        citations = [await self._verify(plan.tenant, c) for c in _cite(plan, text)]
        support = _support(text, [b.text for b in plan.blocks])
        confidence = round(0.5 * min(max(plan.best_score, 0.0), 1.0) + 0.5 * support, 3)
        result = RagAnswer(citations, confidence, None)
        await self._store(plan, text, result)
        return result

    async def _verify(self, tenant: str, c: Citation) -> Citation:
        stored = await self._retrieval.chunk_text(tenant, c.chunk_id)
        ok = stored is not None and stored[c.start : c.end] == c.quote and bool(c.quote)
        return Citation(**(c.__dict__ | {"verified": ok}))

    async def _store(self, plan: RagPlan, text: str, result: RagAnswer) -> None:
        if plan.session_id is None:
            return
        sources = [c.as_dict() for c in result.citations]
        await self._sessions.add(plan.tenant, plan.session_id, "user", plan.question)
        await self._sessions.add(
            plan.tenant, plan.session_id, "assistant", text, sources, result.confidence
        )


_FOLLOW_UP = re.compile(
    r"\b(it|its|they|them|their|this|that|these|those|he|she|his|her|there|also)\b"
    r"|^\s*(and|what about)\b",
    re.IGNORECASE,
)


def is_follow_up(question: str) -> bool:
    """True when the question leans on an earlier turn (an anaphoric pronoun, "and ...")."""
    return bool(_FOLLOW_UP.search(question))


def _last_user(messages: Sequence[ChatMessage]) -> str:
    for msg in reversed(messages):
        if msg.role == "user" and msg.content.strip():
            return msg.content
    raise InvalidRequestError("RAG needs a user message with text", param="messages")


def _merge(results: list[list[RetrievedChunk]], k: int) -> list[RetrievedChunk]:
    best: dict[int, RetrievedChunk] = {}
    for hits in results:
        for h in hits:
            if h.chunk_id not in best or h.score > best[h.chunk_id].score:
                best[h.chunk_id] = h
    return sorted(best.values(), key=lambda h: -h.score)[:k]


def _block(number: int, hit: RetrievedChunk) -> str:
    source = hit.title or hit.document_id
    return f"<<<CONTEXT [{number}] source: {source}>>>\n{hit.text}\n<<<END [{number}]>>>"


def _words(text: str) -> list[tuple[str, int, int]]:
    return [(m.group().lower(), m.start(), m.end()) for m in _WORD.finditer(text)]


def _shared_span(answer: str, chunk: str) -> tuple[int, int, int]:
    """Longest run of words of ``chunk`` that also appears, in order, in ``answer``:
    (words, char start, char end) in ``chunk``."""
    a = [w for w, _, _ in _words(answer)]
    c = _words(chunk)
    if not a or not c:
        return 0, 0, 0
    best = (0, 0, 0)
    prev = [0] * (len(a) + 1)
    for i in range(1, len(c) + 1):
        cur = [0] * (len(a) + 1)
        for j in range(1, len(a) + 1):
            if c[i - 1][0] == a[j - 1]:
                cur[j] = prev[j - 1] + 1
                if cur[j] > best[0]:
                    best = (cur[j], c[i - cur[j]][1], c[i - 1][2])
        prev = cur
    return best


def _best_sentence(question: str, chunk: str) -> tuple[int, int]:
    """Offsets of the chunk sentence sharing most words with the question."""
    q = {w for w, _, _ in _words(question) if len(w) > 2}
    best, span = -1, (0, len(chunk))
    for m in _SENTENCE.finditer(chunk):
        overlap = len(q & {w for w, _, _ in _words(m.group())})
        if overlap > best and m.group().strip():
            lead = len(m.group()) - len(m.group().lstrip())
            best, span = overlap, (m.start() + lead, m.end())
    return span


def _cite(plan: RagPlan, answer: str) -> list[Citation]:
    numbers = [int(n) for n in _MARKER.findall(answer) if 1 <= int(n) <= len(plan.blocks)]
    chosen = list(dict.fromkeys(numbers))
    if not chosen:
        spans = [(_shared_span(answer, b.text)[0], i + 1) for i, b in enumerate(plan.blocks)]
        chosen = [n for size, n in sorted(spans, reverse=True) if size >= MIN_SPAN_WORDS][:3]
    if not chosen and plan.blocks:
        chosen = [1]
    return [_citation(n, plan.blocks[n - 1], plan.question, answer) for n in chosen]


def _citation(number: int, block: RetrievedChunk, question: str, answer: str) -> Citation:
    size, start, end = _shared_span(answer, block.text)
    match = "answer"
    if size < MIN_SPAN_WORDS:
        start, end = _best_sentence(question, block.text)
        match = "question"
    return Citation(
        number=number,
        document_id=block.document_id,
        chunk_id=block.chunk_id,
        collection=block.collection,
        score=block.score,
        quote=block.text[start:end],
        start=start,
        end=end,
        document_start=block.char_start + start,
        document_end=block.char_start + end,
        page=block.page,
        match=match,
        verified=False,
    )


def _support(answer: str, chunks: list[str]) -> float:
    sentences = [s for s in _SENTENCE.findall(answer) if len(_words(s)) >= MIN_SPAN_WORDS]
    if not sentences:
        return 0.0
    supported = sum(
        1 for s in sentences if any(_shared_span(s, c)[0] >= MIN_SPAN_WORDS for c in chunks)
    )
    return supported / len(sentences)
