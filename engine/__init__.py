"""Hearth's engine: usable from Python without the server.

    hearth = await open_hearth(load_settings("cpu"))     # every service, started in order
    async for event in hearth.engine.generate(GenerateRequest(...)): ...
    async for event in hearth.rag.generate(tenant, request, RetrievalOptions(["kb"])): ...
    await hearth.close()

This module is the public API: the server imports from ``engine`` only (a test enforces it).
Heavy libraries (llama_cpp, torch, vllm, faiss) are imported lazily by the parts that need them.
"""

from engine.app import Hearth, open_hearth
from engine.engine import Engine
from engine.errors import (
    AuthenticationError,
    BackendError,
    ContextLengthError,
    HearthError,
    InvalidRequestError,
    NotFoundError,
    NotReadyError,
    OverloadedError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RetryableError,
    TooManyRequestsError,
    UnprocessableError,
)
from engine.ingest.inputs import DocumentInput
from engine.rag import Citation, RagDone, RagEvent, Refusal, RetrievalOptions, RetrievalStats
from engine.runner import ModelPool, ModelRunner
from engine.types import (
    ChoiceDelta,
    FinishReason,
    GenerateRequest,
    GenerationDone,
    GenerationEvent,
    LogprobEntry,
    SamplingParams,
    Usage,
)

__all__ = [
    "AuthenticationError",
    "BackendError",
    "ChoiceDelta",
    "Citation",
    "ContextLengthError",
    "DocumentInput",
    "Engine",
    "FinishReason",
    "GenerateRequest",
    "GenerationDone",
    "GenerationEvent",
    "Hearth",
    "HearthError",
    "InvalidRequestError",
    "LogprobEntry",
    "ModelPool",
    "ModelRunner",
    "NotFoundError",
    "NotReadyError",
    "OverloadedError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "RagDone",
    "RagEvent",
    "Refusal",
    "RetrievalOptions",
    "RetrievalStats",
    "RetryableError",
    "SamplingParams",
    "TooManyRequestsError",
    "UnprocessableError",
    "Usage",
    "open_hearth",
]
