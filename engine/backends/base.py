"""The backend protocol: what the engine needs from an inference runtime (llama.cpp, vLLM).

A backend owns the model, the KV cache, batching and sampling. It takes token-level requests and
reports token-level outputs through a sink; everything textual (chat templates, stop strings,
detokenized deltas, logprob formatting) stays in the engine, so both backends behave the same.

Threading contract: ``submit`` and ``abort`` may be called from any thread and never block on a
forward pass. The sink is called from the backend's own thread with every output of one step in
one list; it must not block (the engine hands the list to the event loop).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from engine.types import BackendOutput, BackendRequest, BackendStats

if TYPE_CHECKING:
    from llguidance import LLTokenizer

    from configs import Settings
    from models import ModelCard

Sink = Callable[[Sequence[BackendOutput]], None]


class Backend(Protocol):
    name: str
    card: ModelCard

    @property
    def n_vocab(self) -> int: ...

    @property
    def eos_token_ids(self) -> frozenset[int]:
        """Tokens that end a generation (EOS, end-of-turn)."""
        ...

    @property
    def bos_token_id(self) -> int | None: ...

    @property
    def max_model_len(self) -> int: ...

    def start(self, sink: Sink) -> None:
        """Load the model and start stepping; returns once the first step could run."""
        ...

    def tokenize(self, text: str, *, add_bos: bool, parse_special: bool) -> list[int]: ...

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes a token adds to the text (empty for control tokens such as EOS)."""
        ...

    def token_text(self, token_id: int) -> str:
        """The token's own spelling, special tokens included (for logprobs and /detokenize)."""
        ...

    def grammar_tokenizer(self) -> LLTokenizer | None:
        """The llguidance tokenizer of this vocabulary, built anew on each call (slow: 1-3 s;
        ``engine.grammar`` calls it once, off the event loop). None: this backend cannot enforce
        structured output (a 400 for requests that ask for it)."""
        ...

    def submit(self, request: BackendRequest) -> None:
        """Queue a sequence; it joins the running batch at the next step."""
        ...

    def abort(self, request_id: str) -> None:
        """Drop a sequence and free its KV within one step; unknown ids are ignored."""
        ...

    def stats(self) -> BackendStats: ...

    def is_stepping(self) -> bool:
        """True while the step loop is alive (readiness)."""
        ...

    def close(self) -> None:
        """Stop the loop, abort everything, free the model. Idempotent."""
        ...


# name -> "module:Class"; imported lazily so that importing the engine pulls no heavy library.
BACKENDS: dict[str, str] = {
    "llamacpp": "engine.backends.llamacpp:LlamaCppBackend",
    "vllm": "engine.backends.vllm:VLLMBackend",
}


def create_backend(settings: Settings, card: ModelCard) -> Backend:
    try:
        target = BACKENDS[settings.llm.backend]
    except KeyError:
        raise ValueError(
            f"setting llm.backend: unknown backend {settings.llm.backend!r}; "
            f"known: {sorted(BACKENDS)}"
        ) from None
    module_name, class_name = target.split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(settings, card)
