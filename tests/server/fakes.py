"""Stand-ins for the model parts, so the server's routes run in seconds without real models.

``FakeBackend`` implements the ``Backend`` protocol over a byte vocabulary (token id = byte value;
256 is BOS, 257 EOS): every sequence answers ``REPLY`` one token per step on its own thread, then
EOS, or stops at ``max_tokens``. ``hold`` keeps sequences from finishing (a client-disconnect test
needs a generation that is still running); ``aborted`` records every abort.
``FakeEmbedder`` maps a text to a deterministic unit vector.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from configs import Settings, load_settings
from engine import Hearth, open_hearth
from engine.backends.base import Sink
from engine.types import (
    BackendOutput,
    BackendRequest,
    BackendStats,
    FinishReason,
    TokenOutput,
)
from models import ModelCard, get_card

BOS, EOS = 256, 257
REPLY = "Hello from the fake model."


class FakeBackend:
    name = "fake"

    def __init__(self, card: ModelCard, step_s: float = 0.001) -> None:
        self.card = card
        self.step_s = step_s
        self.hold = False
        self.aborted: list[str] = []
        self.submitted: list[BackendRequest] = []
        self._live: dict[str, tuple[BackendRequest, int]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sink: Sink | None = None

    n_vocab = 258
    eos_token_ids = frozenset({EOS})
    bos_token_id = BOS
    max_model_len = 2048

    def start(self, sink: Sink) -> None:
        self._stop.clear()  # a restart after close (the runner's supervisor) runs again
        self._sink = sink
        self._thread = threading.Thread(target=self._loop, name="fake-backend", daemon=True)
        self._thread.start()

    def tokenize(self, text: str, *, add_bos: bool, parse_special: bool) -> list[int]:
        return ([BOS] if add_bos else []) + list(text.encode("utf-8"))

    def token_bytes(self, token_id: int) -> bytes:
        return bytes([token_id]) if token_id < 256 else b""

    def token_text(self, token_id: int) -> str:
        return {BOS: "<bos>", EOS: "<eos>"}.get(token_id) or bytes([token_id]).decode("latin-1")

    def grammar_tokenizer(self) -> None:
        return None  # no grammar engine: structured output is a 400 here

    def submit(self, request: BackendRequest) -> None:
        with self._lock:
            self.submitted.append(request)
            self._live[request.request_id] = (request, 0)

    def abort(self, request_id: str) -> None:
        with self._lock:
            self.aborted.append(request_id)
            self._live.pop(request_id, None)

    def stats(self) -> BackendStats:
        with self._lock:
            return BackendStats(len(self._live), 0, 0, 1024, 0)

    def is_stepping(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        reply = list(REPLY.encode())
        while not self._stop.is_set():
            out: list[BackendOutput] = []
            with self._lock:
                for rid, (req, n) in list(self._live.items()):
                    if self.hold and n >= 1:
                        continue
                    limit = req.params.max_tokens
                    token = reply[n] if n < len(reply) else EOS
                    reason = None
                    if token == EOS:
                        reason = FinishReason.STOP
                    elif n + 1 >= limit:
                        reason = FinishReason.LENGTH
                    out.append(TokenOutput(rid, token, -0.5, (), reason))
                    if reason is None:
                        self._live[rid] = (req, n + 1)
                    else:
                        del self._live[rid]
            if out and self._sink is not None:
                self._sink(out)
            time.sleep(self.step_s)


class FakeEmbedder:
    """Deterministic unit vectors; no tokenizer (documents are not ingested in these tests)."""

    dim = 8
    tokenizer: Any = None
    max_seq_length = 256

    def encode(self, texts: Sequence[str], input_type: str | None = None) -> np.ndarray:
        rows = []
        for text in texts:
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
            v = np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
            rows.append(v / np.linalg.norm(v))
        return np.stack(rows) if rows else np.zeros((0, self.dim), dtype=np.float32)

    async def embed(self, texts: list[str], input_type: str | None = None) -> np.ndarray:
        return self.encode(texts, input_type)

    def count_tokens(self, texts: list[str]) -> list[int]:
        return [len(t.split()) + 2 for t in texts]


def fake_settings(data_dir: Any) -> Settings:
    return load_settings("test", env={}, data_dir=data_dir)


class FakeParts:
    """The backend and embedder one app was built with (for assertions)."""

    def __init__(self, settings: Settings) -> None:
        self.backend = FakeBackend(get_card(settings.llm.model))
        self.embedder = FakeEmbedder()

    async def open(self, settings: Settings) -> Hearth:
        return await open_hearth(
            settings,
            backend=self.backend,
            embedder=self.embedder,  # type: ignore[arg-type]
        )
