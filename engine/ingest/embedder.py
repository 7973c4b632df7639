"""A sentence-transformers embedder loaded from the local model folder, for code that runs without
an ``Engine`` (benchmarks, the CLI's offline ingestion, tests). The server uses the engine's."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import numpy as np

from models.cards import get_card
from models.store import verify_model


class LocalEmbedder:
    """``encode`` blocks (torch, serialized by a lock); ``embed`` runs it in a thread."""

    def __init__(self, models_dir: Path, model_id: str = "all-minilm-l6-v2", threads: int = 2):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(threads)
        card = get_card(model_id)
        path = verify_model(card, Path(models_dir))
        self.model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        self.tokenizer = self.model.tokenizer
        self.max_seq_length = int(self.model.max_seq_length)
        self.dim = int(card.embedding_dim or 384)
        self._lock = threading.Lock()

    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """(n, dim) float32, L2-normalized."""
        with self._lock:
            out = self.model.encode(
                texts,
                batch_size=batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.asarray(out, dtype=np.float32).reshape(len(texts), self.dim)

    async def embed(self, texts: list[str]) -> np.ndarray:
        return await asyncio.to_thread(self.encode, texts)
