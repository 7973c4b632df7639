"""Sentence embeddings with sentence-transformers, loaded from a local folder only.

``Embedder`` is the one embedding class: the engine's, the document services' and the one that
benchmarks and tests load without an engine (``Embedder.load``). ``encode`` blocks (torch releases
the GIL while it computes); ``embed`` runs it in a worker thread. One lock serializes calls so two
requests never oversubscribe the configured threads.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from configs import EmbeddingSettings
    from models import ModelCard

log = logging.getLogger(__name__)


class TextEmbedder(Protocol):
    """What the document services need from an embedding model (``Embedder``, or a stand-in)."""

    @property
    def dim(self) -> int: ...

    @property
    def tokenizer(self) -> Any:
        """The model's own tokenizer (Hugging Face fast): chunk sizes are counted with it."""
        ...

    async def embed(self, texts: list[str]) -> np.ndarray:
        """(n, dim) float32, L2-normalized rows; never blocks the event loop."""
        ...


class Embedder:
    def __init__(self, card: ModelCard, path: Path, settings: EmbeddingSettings):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(settings.n_threads)
        self.card = card
        self._settings = settings
        self._lock = threading.Lock()
        self._model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        self.max_seq_length: int = int(self._model.max_seq_length)
        self.dim: int = int(self._model.get_embedding_dimension())
        log.info(
            "embeddings: %s loaded (dim %d, max %d word pieces)",
            card.id,
            self.dim,
            self.max_seq_length,
        )

    @property
    def tokenizer(self) -> Any:
        """The model's own (Hugging Face fast) tokenizer: chunking must count with this."""
        return self._model.tokenizer

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Word pieces each text takes, special tokens included (truncation not applied)."""
        enc = self.tokenizer(texts, add_special_tokens=True, truncation=False)["input_ids"]
        return [len(ids) for ids in enc]

    def encode(self, texts: list[str]) -> np.ndarray:
        """(n, dim) float32, L2-normalized rows. Inputs longer than max_seq_length are truncated."""
        with self._lock:
            vecs = self._model.encode(
                texts,
                batch_size=self._settings.batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(vecs, dtype=np.float32).reshape(len(texts), self.dim)

    async def embed(self, texts: list[str]) -> np.ndarray:
        """``encode`` in a worker thread."""
        return await asyncio.to_thread(self.encode, texts)

    @classmethod
    def load(
        cls, models_dir: Path, model_id: str = "all-minilm-l6-v2", threads: int = 2
    ) -> Embedder:
        """The embedding model ``model_id`` from ``models_dir`` (checked by sha256), for code that
        runs without an ``Engine`` (benchmarks, offline ingestion, tests)."""
        from configs import EmbeddingSettings
        from models.cards import get_card
        from models.store import verify_model

        card = get_card(model_id)
        path = verify_model(card, Path(models_dir))
        return cls(card, path, EmbeddingSettings(model=model_id, n_threads=threads))
