"""The composition root: every service Hearth runs, built from the settings in dependency order.

``await open_hearth(settings)`` loads and starts, in this order, and returns a :class:`Hearth`:

1. the embedding model (:class:`~engine.embeddings.Embedder`) and the :class:`~engine.Engine`
   with its :class:`~engine.runner.ModelPool` (backend, batching, chat template per model);
2. storage: the DuckDB :class:`~engine.storage.Database` (one writer per file: a second process
   on the same data directory fails here, clearly); documents and jobs a crash left half-done are
   marked failed;
3. :class:`~engine.retrieval.service.RetrievalService` (loads or rebuilds every index);
4. :class:`~engine.job_service.JobService` (fails jobs a crash left running, starts the worker);
5. :class:`~engine.tenancy.TenancyService`, :class:`~engine.documents.DocumentService`,
   :class:`~engine.sessions.SessionService`, :class:`~engine.rag.RagService`;
6. the task services (their tables migrate first): :class:`~engine.tasks.usage.TaskUsage`,
   :class:`~engine.tasks.classifiers.ClassifierService`,
   :class:`~engine.tasks.extraction.ExtractionService`,
   :class:`~engine.tasks.workflow_service.WorkflowService` (over the classifiers) and
   :class:`~engine.tasks.analysis.AnalysisService`;
7. the tenant :class:`~engine.audit.AuditLog`, the tenants' example tables
   (:class:`~engine.agents.tables.TableStore`, for ``sql_query``),
   :class:`~engine.conversations.ConversationService`, :class:`~engine.agents.AgentService`
   (registers the ``agent_run`` durable job handler) and :class:`~engine.agents.WebhookService`
   (the ``webhook`` and ``webhook_delivery`` handlers).

``Hearth.close()`` closes them in reverse order. Each dependency is an explicit constructor
argument; nothing is found by name at run time. Heavy libraries (faiss, torch) are imported here
only when ``open_hearth`` runs, so importing this module (as the server does) stays light.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from engine.engine import Engine

if TYPE_CHECKING:
    from collections.abc import Callable

    from configs import Settings
    from engine.agents import AgentService, WebhookService
    from engine.agents.tables import TableStore
    from engine.audit import AuditLog
    from engine.backends.base import Backend
    from engine.conversations import ConversationService
    from engine.documents import DocumentService
    from engine.embeddings import Embedder, TextEmbedder
    from engine.job_service import JobService
    from engine.limits import LimitService
    from engine.rag import RagService
    from engine.retrieval.service import RetrievalService
    from engine.sessions import SessionService
    from engine.storage import Database
    from engine.tasks.analysis import AnalysisService
    from engine.tasks.classifiers import ClassifierService
    from engine.tasks.extraction import ExtractionService
    from engine.tasks.usage import TaskUsage
    from engine.tasks.workflow_service import WorkflowService
    from engine.tenancy import TenancyService
    from engine.tenant_data import TenantDataService
    from engine.usage import UsageService

log = logging.getLogger(__name__)


@dataclass
class Corpus:
    """The services that need no language model: storage, jobs, retrieval, tenants, documents and
    chat sessions (built by :func:`open_corpus`; also the benchmarks' and tests' entry point)."""

    db: Database
    jobs: JobService
    retrieval: RetrievalService
    tenancy: TenancyService
    limits: LimitService
    usage: UsageService
    documents: DocumentService
    sessions: SessionService
    _exit: contextlib.AsyncExitStack

    async def close(self) -> None:
        """Close every service in the reverse order of start."""
        await self._exit.aclose()


@dataclass
class Hearth:
    """Every started service, typed. Built by :func:`open_hearth`; ``close()`` once."""

    settings: Settings
    engine: Engine
    db: Database
    jobs: JobService
    retrieval: RetrievalService
    tenancy: TenancyService
    limits: LimitService
    usage: UsageService
    documents: DocumentService
    sessions: SessionService
    rag: RagService
    task_usage: TaskUsage
    classifiers: ClassifierService
    extraction: ExtractionService
    workflows: WorkflowService
    analysis: AnalysisService
    audit: AuditLog
    tables: TableStore
    conversations: ConversationService
    agents: AgentService
    webhooks: WebhookService
    tenant_data: TenantDataService
    _exit: contextlib.AsyncExitStack

    @property
    def ready(self) -> bool:
        return self.engine.ready

    async def close(self) -> None:
        """Close every service in the reverse order of start."""
        await self._exit.aclose()


def db_path(settings: Settings) -> Path:
    """The DuckDB file (``storage.db_file``, relative to the data directory unless absolute)."""
    path = Path(settings.storage.db_file)
    return path if path.is_absolute() else settings.data_dir / path


async def open_corpus(
    settings: Settings,
    embedder: TextEmbedder,
    load_embedder: Callable[[str], TextEmbedder] | None = None,
) -> Corpus:
    """Open storage and start the services over it (steps 2-5 of :func:`open_hearth` but RAG);
    on a failure, close what was started and re-raise. ``embedder`` is the server's embedding
    model; ``load_embedder`` loads another by card id, for a collection built with it."""
    from engine.documents import DocumentService
    from engine.embeddings import EmbedderSet
    from engine.job_service import JobService
    from engine.limits import LimitService, Quota  # also registers its table's migration
    from engine.retrieval.service import RetrievalService
    from engine.sessions import SessionService
    from engine.storage import open_store
    from engine.tenancy import TenancyService
    from engine.usage import UsageService, parse_prices

    prices = parse_prices(settings.usage.prices)  # a bad price stops start-up, naming it
    stack = contextlib.AsyncExitStack()
    try:
        db = await asyncio.to_thread(
            open_store, db_path(settings), threads=settings.storage.threads
        )
        stack.callback(db.close)
        await DocumentService.recover(db)
        embedders = EmbedderSet(embedder, settings.embeddings.model, load_embedder)
        retrieval = await RetrievalService.open(settings, db, embedders)
        stack.push_async_callback(retrieval.close)
        limits = await LimitService.open(Quota(**dataclasses.asdict(settings.limits)), db)
        jobs = JobService(db, limits)
        await jobs.start()
        # Closed before the indexes are saved: no job writes an index meanwhile.
        stack.push_async_callback(jobs.close)
        tenancy = await TenancyService.open(db, settings.auth, settings.data_dir)
        usage = UsageService(db, prices, settings.usage.currency)
        stack.push_async_callback(usage.flush)
        documents = DocumentService(settings, db, retrieval, jobs, embedders, limits)
        sessions = SessionService(db)
    except BaseException:
        await stack.aclose()
        raise
    return Corpus(db, jobs, retrieval, tenancy, limits, usage, documents, sessions, stack)


@dataclass(frozen=True)
class _Tasks:
    usage: TaskUsage
    classifiers: ClassifierService
    extraction: ExtractionService
    workflows: WorkflowService
    analysis: AnalysisService


async def open_tasks(engine: Engine, corpus: Corpus) -> _Tasks:
    """The task services over one task LLM and one ``tasks`` store (migrated first)."""
    from engine.tasks.analysis import AnalysisService
    from engine.tasks.classifiers import ClassifierService
    from engine.tasks.extraction import ExtractionService
    from engine.tasks.llm import EngineLLM, TaskModels
    from engine.tasks.store import TaskRepo
    from engine.tasks.usage import TaskUsage
    from engine.tasks.workflow_service import WorkflowService

    await asyncio.to_thread(corpus.db.store.migrate)
    repo = TaskRepo(corpus.db.store)
    routes = engine.settings.tasks
    default = engine.settings.llm.model
    # Each task on its configured model ([tasks] *_model; "" = the server's).
    models = {
        "extract": routes.extract_model or default,
        "workflow": routes.extract_model or default,
        "analyze": routes.analyze_model or default,
        "classify": routes.classify_model or default,
    }
    usage = TaskUsage(engine, corpus.db, repo, corpus.limits, models)
    classifiers = ClassifierService(
        engine, repo, corpus.jobs, EngineLLM(engine, models["classify"]), usage
    )
    extract_llm = EngineLLM(engine, models["extract"])
    # A request or a workflow may name another installed model; the pool loads it on use.
    choices = TaskModels(engine, extract_llm)
    return _Tasks(
        usage=usage,
        classifiers=classifiers,
        extraction=ExtractionService(extract_llm, usage, choices),
        workflows=WorkflowService(engine, repo, classifiers, extract_llm, usage, choices),
        analysis=AnalysisService(
            repo, corpus.jobs, corpus.documents, EngineLLM(engine, models["analyze"]), usage
        ),
    )


async def open_hearth(
    settings: Settings,
    *,
    backend: Backend | None = None,
    embedder: Embedder | None = None,
) -> Hearth:
    """Build and start every service; on a failure, close what was started and re-raise.

    ``backend``/``embedder``: ready-made parts (tests with a stand-in model); else both are loaded
    from the models directory, checked by sha256.
    """
    from engine.agents import (  # registers its tables' migrations
        AgentService,
        WebhookService,
        builtin_tools,
    )
    from engine.agents.http import HttpPolicy
    from engine.agents.tables import TableStore
    from engine.audit import AuditLog
    from engine.conversations import ConversationService  # registers its tables' migration
    from engine.rag import RagService
    from engine.tasks.llm import EngineLLM
    from engine.tenant_data import TenantDataService

    stack = contextlib.AsyncExitStack()
    try:
        engine = Engine(settings, backend=backend, embedder=embedder)
        stack.push_async_callback(engine.close)
        await engine.start()
        corpus = await open_corpus(settings, engine.embedder, engine.other_embedder)
        stack.push_async_callback(corpus.close)
        rag = RagService(settings.retrieval, corpus.retrieval, corpus.sessions, engine)
        tasks = await open_tasks(engine, corpus)
        conf = settings.agents
        http = HttpPolicy.parse(
            conf.http_allow_hosts, conf.http_timeout_s, conf.http_max_response_bytes
        )
        audit = AuditLog(corpus.db.store)
        tables = TableStore(
            settings.data_dir / "tables", max_rows=conf.sql_max_rows, timeout_s=conf.sql_timeout_s
        )
        tools = builtin_tools(
            corpus.retrieval,
            tables=tables,
            classifiers=tasks.classifiers,
            extraction=tasks.extraction,
            http=http,
        )
        conversations = ConversationService(
            corpus.db.store, memory_turns=conf.memory_turns, ttl_s=conf.conversation_ttl_s
        )
        agents = AgentService(
            corpus.db.store,
            EngineLLM(engine),
            tools,
            corpus.jobs,
            http=http,
            audit=audit,
            conversations=conversations,
            tables=tables,
        )
        webhooks = WebhookService(
            corpus.db.store,
            agents,
            tasks.workflows,
            corpus.jobs,
            http,
            max_skew_s=conf.webhook_max_skew_s,
        )
        tenant_data = TenantDataService(
            corpus.db,
            corpus.retrieval.index.index_dir,
            corpus.retrieval.index.drop,
            caches=[
                engine.responses,
                tasks.classifiers,
                tasks.workflows,
                corpus.tenancy,
                corpus.limits,
                corpus.jobs,
            ],
            tables_path=tables.path,
            flush=corpus.usage.flush,
        )
    except BaseException:
        await stack.aclose()
        raise
    log.info("services ready")
    return Hearth(
        settings=settings,
        engine=engine,
        db=corpus.db,
        jobs=corpus.jobs,
        retrieval=corpus.retrieval,
        tenancy=corpus.tenancy,
        limits=corpus.limits,
        usage=corpus.usage,
        documents=corpus.documents,
        sessions=corpus.sessions,
        rag=rag,
        task_usage=tasks.usage,
        classifiers=tasks.classifiers,
        extraction=tasks.extraction,
        workflows=tasks.workflows,
        analysis=tasks.analysis,
        audit=audit,
        tables=tables,
        conversations=conversations,
        agents=agents,
        webhooks=webhooks,
        tenant_data=tenant_data,
        _exit=stack,
    )
