"""Fixtures for the backend contract suite: one started backend per backend name.

Each backend runs under its own interpreter's libraries: llama.cpp in the main environment,
vLLM in ``.venv-vllm`` (``make test-vllm``). A backend whose library or model is not installed
here is skipped, so the same file runs in both environments.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from configs import load_settings
from engine.types import BackendOutput, PromptLogprobs, SequenceFinished, TokenOutput
from models.cards import get_card
from models.store import ModelFileError, verify_model

# backend name -> (python module it needs, model card it serves)
BACKENDS = {
    "llamacpp": ("llama_cpp", "gemma-3-270m-q4km"),
    "vllm": ("vllm", "gemma-3-270m-bf16"),
}
MODELS_DIR = Path(os.environ.get("HEARTH_MODELS_DIR", "data/models"))


@dataclass
class Run:
    """Everything one sequence reported, and when it ended."""

    batches: int = 0  # sink calls that carried something for this sequence
    tokens: list[TokenOutput] = field(default_factory=list)
    prompt_logprobs: PromptLogprobs | None = None
    finished: SequenceFinished | None = None
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def token_ids(self) -> list[int]:
        return [t.token_id for t in self.tokens]

    @property
    def finish_reason(self):
        if self.finished is not None:
            return self.finished.finish_reason
        return self.tokens[-1].finish_reason if self.tokens else None


class Collector:
    """The sink: files each output under its request id; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.runs: dict[str, Run] = {}

    def run(self, request_id: str) -> Run:
        with self._lock:
            return self.runs.setdefault(request_id, Run())

    def __call__(self, outputs: Sequence[BackendOutput]) -> None:
        seen: set[str] = set()
        for out in outputs:
            run = self.run(out.request_id)
            if out.request_id not in seen:
                run.batches += 1
                seen.add(out.request_id)
            if isinstance(out, TokenOutput):
                run.tokens.append(out)
                if out.finish_reason is not None:
                    run.done.set()
            elif isinstance(out, PromptLogprobs):
                run.prompt_logprobs = out
            else:
                run.finished = out
                run.done.set()

    def wait(self, request_id: str, timeout: float = 300) -> Run:
        run = self.run(request_id)
        if not run.done.wait(timeout):
            raise TimeoutError(f"{request_id} did not finish in {timeout} s")
        return run


@dataclass
class Started:
    name: str
    backend: object
    sink: Collector


def _settings(name: str, model: str):
    settings = load_settings(
        "test",
        env={},
        overrides={"llm": {"backend": name, "model": model, "max_model_len": 1024}},
    )
    if name == "vllm":
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    return settings


@pytest.fixture(scope="session", params=sorted(BACKENDS))
def started(request) -> Iterator[Started]:
    name = request.param
    module, model = BACKENDS[name]
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed in this environment")
    card = get_card(model)
    try:
        verify_model(card, MODELS_DIR)
    except ModelFileError as exc:
        pytest.skip(f"model not installed: {exc}")
    from engine.backends.base import create_backend

    settings = dataclasses.replace(_settings(name, model), model_dir=MODELS_DIR)
    backend = create_backend(settings, card)
    sink = Collector()
    backend.start(sink)
    try:
        yield Started(name, backend, sink)
    finally:
        backend.close()
