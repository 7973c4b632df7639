"""Sentence embeddings with sentence-transformers, loaded from a local folder only.

``encode`` blocks (torch releases the GIL while it computes): the engine calls it from a worker
thread. One lock serializes calls so two requests never oversubscribe the configured threads.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from configs import EmbeddingSettings
    from models import ModelCard

log = logging.getLogger(__name__)


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
        log.info("embeddings: %s loaded (dim %d, max %d word pieces)", card.id, self.dim,
                 self.max_seq_length)

    @property
    def tokenizer(self):
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
        return np.ascontiguousarray(vecs, dtype=np.float32)
