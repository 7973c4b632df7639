"""What the task services share: the batch bound, the input check and batched embeddings."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from engine.errors import InvalidRequestError
from models.cards import get_card

if TYPE_CHECKING:
    from engine.engine import Engine

MAX_BATCH = 64  # inputs (or workflow items) per call
EMBED_BATCH = 256  # texts per embedding call


def check_inputs(inputs: list[str]) -> None:
    """1 to ``MAX_BATCH`` non-empty strings; a 400 naming the item otherwise."""
    if not inputs or len(inputs) > MAX_BATCH:
        raise InvalidRequestError(f"input: 1 to {MAX_BATCH} strings", param="input")
    for i, text in enumerate(inputs):
        if not isinstance(text, str) or not text.strip():
            raise InvalidRequestError(
                f"input[{i}]: a non-empty string is required", param=f"input[{i}]"
            )


async def embed(engine: Engine, texts: list[str], encoder: str | None = None) -> np.ndarray:
    """Embeddings of ``texts`` with ``encoder`` (a card id; None: the server's embedding model),
    ``EMBED_BATCH`` at a time; shape (len(texts), dim), float32."""
    parts = [
        await engine.embed(texts[i : i + EMBED_BATCH], encoder)
        for i in range(0, len(texts), EMBED_BATCH)
    ]
    if parts:
        return np.vstack(parts)
    card = get_card(encoder) if encoder else engine.embedding_card
    return np.zeros((0, card.embedding_dim or 0), dtype=np.float32)
