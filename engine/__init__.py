"""Hearth's engine: usable from Python without the server.

    engine = Engine(load_settings("cpu")); await engine.start()
    async for event in engine.generate(GenerateRequest(...)): ...

Heavy libraries (llama_cpp, torch, vllm, faiss) are imported lazily by the parts that need them.
"""

from engine.engine import Engine
from engine.types import (
    ChoiceDelta,
    FinishReason,
    GenerateRequest,
    GenerationDone,
    SamplingParams,
    Usage,
)

__all__ = [
    "ChoiceDelta",
    "Engine",
    "FinishReason",
    "GenerateRequest",
    "GenerationDone",
    "SamplingParams",
    "Usage",
]
