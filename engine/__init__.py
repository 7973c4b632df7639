"""Hearth's engine: usable from Python without the server.

    hearth = await open_hearth(load_settings("cpu"))     # every service, started in order
    async for event in hearth.engine.generate(GenerateRequest(...)): ...
    async for event in hearth.rag.generate(tenant, request, RetrievalOptions(["kb"])): ...
    await hearth.close()

This module is the public API: the server imports from ``engine`` only (a test enforces it).
Heavy libraries (llama_cpp, torch, vllm, faiss) are imported lazily by the parts that need them.
"""

from engine.agents import (
    AgentRun,
    AgentService,
    AgentSpec,
    Route,
    ToolSpec,
    WebhookService,
    WebhookSpec,
)
from engine.agents.http import SIGNATURE_HEADER, TIMESTAMP_HEADER
from engine.agents.tables import TableStore
from engine.app import Corpus, Hearth, db_path, open_corpus, open_hearth
from engine.audit import AuditLog
from engine.benchmark_results import BenchmarkResults
from engine.conversations import Conversation, ConversationService, Turn
from engine.engine import Engine
from engine.errors import (
    AuthenticationError,
    BackendError,
    ConflictError,
    ContextLengthError,
    HearthError,
    InsufficientStorageError,
    InvalidRequestError,
    NotFoundError,
    NotReadyError,
    OverloadedError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RequestTimeoutError,
    RetryableError,
    ShuttingDownError,
    TooManyRequestsError,
    UnprocessableError,
    UnsupportedMediaTypeError,
    is_disk_full,
)
from engine.grammar import Outcome, StructuredSpec, ToolDelta, ToolStreamParser, build_spec
from engine.ingest.inputs import DocumentInput
from engine.limits import LIMIT_NAMES, LimitService, Quota, Ticket, check_overrides
from engine.rag import Citation, RagDone, RagEvent, Refusal, RetrievalOptions, RetrievalStats
from engine.runner import ModelPool, ModelRunner
from engine.storage import (
    ApiKey,
    Chunk,
    Collection,
    Document,
    Job,
    StorageError,
    Tenant,
    User,
    open_store,
)
from engine.tasks.analysis import AnalysisService
from engine.tasks.classifiers import ClassifierInput, ClassifierService, parse_examples_csv
from engine.tasks.classify import Example, Rule
from engine.tasks.extraction import ExtractionService
from engine.tasks.usage import TaskUsage
from engine.tasks.workflow_service import WorkflowService
from engine.tenant_data import TenantDataService
from engine.types import (
    ChoiceDelta,
    FinishReason,
    GenerateRequest,
    GenerationDone,
    GenerationEvent,
    LogprobEntry,
    RetrievedChunk,
    SamplingParams,
    Usage,
    current_tenant,
)

__all__ = [
    "AgentRun",
    "AgentService",
    "AgentSpec",
    "ApiKey",
    "AuditLog",
    "AuthenticationError",
    "BackendError",
    "ConflictError",
    "BenchmarkResults",
    "ChoiceDelta",
    "Chunk",
    "Citation",
    "AnalysisService",
    "ClassifierInput",
    "ClassifierService",
    "ExtractionService",
    "Collection",
    "ContextLengthError",
    "Corpus",
    "Document",
    "DocumentInput",
    "Engine",
    "Example",
    "FinishReason",
    "GenerateRequest",
    "GenerationDone",
    "GenerationEvent",
    "Hearth",
    "HearthError",
    "InsufficientStorageError",
    "InvalidRequestError",
    "Job",
    "LogprobEntry",
    "ModelPool",
    "ModelRunner",
    "NotFoundError",
    "NotReadyError",
    "Outcome",
    "OverloadedError",
    "PayloadTooLargeError",
    "UnsupportedMediaTypeError",
    "PermissionDeniedError",
    "RagDone",
    "RagEvent",
    "Refusal",
    "RetrievalOptions",
    "RetrievalStats",
    "RetrievedChunk",
    "LIMIT_NAMES",
    "LimitService",
    "Quota",
    "RequestTimeoutError",
    "Ticket",
    "check_overrides",
    "is_disk_full",
    "current_tenant",
    "RetryableError",
    "ShuttingDownError",
    "Rule",
    "SamplingParams",
    "StorageError",
    "StructuredSpec",
    "TaskUsage",
    "TableStore",
    "Tenant",
    "TenantDataService",
    "User",
    "TooManyRequestsError",
    "ToolDelta",
    "ToolStreamParser",
    "UnprocessableError",
    "Usage",
    "ToolSpec",
    "WebhookService",
    "WebhookSpec",
    "Route",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "Conversation",
    "ConversationService",
    "Turn",
    "build_spec",
    "db_path",
    "open_corpus",
    "open_hearth",
    "open_store",
    "WorkflowService",
    "parse_examples_csv",
]
