"""Declarative model cards: one TOML file per model in ``models/cards/``; a new model is a new
file."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

CARDS_DIR = Path(__file__).resolve().parent / "cards"


@dataclass(frozen=True)
class ModelCard:
    id: str
    family: str
    format: str  # "gguf" | "sentence-transformers" | "hf"
    file: str  # path relative to the models directory (a file or a folder)
    sha256: str  # of ``file``, or of ``weights_file`` inside it when ``file`` is a folder
    context_length: int
    capabilities: tuple[str, ...]
    preferred_backend: str
    chat_template: str | None = None
    source_package: str | None = None
    # Distributions each holding one part (``*.zip.NNN``) of a zip of the model folder, in order.
    source_parts: tuple[str, ...] = ()
    weights_file: str | None = None
    embedding_dim: int | None = None
    weight_bytes: int | None = None
    quantization: str | None = None
    # Id of the card this model is converted from (models/convert.py), instead of a package.
    converted_from: str | None = None
    default_sampling: dict[str, float] = field(default_factory=dict)

    def supports(self, capability: str) -> bool:
        return capability in self.capabilities


@cache
def _all_cards() -> dict[str, ModelCard]:
    cards = {}
    for path in sorted(CARDS_DIR.glob("*.toml")):
        raw = tomllib.loads(path.read_text())
        raw["capabilities"] = tuple(raw.get("capabilities", ()))
        raw["source_parts"] = tuple(raw.get("source_parts", ()))
        card = ModelCard(**raw)
        cards[card.id] = card
    return cards


def list_cards() -> list[ModelCard]:
    return list(_all_cards().values())


def get_card(model_id: str, capability: str | None = None) -> ModelCard:
    """The card for ``model_id`` (that has ``capability``, if given); KeyError names the ids to
    choose from."""
    card = _all_cards().get(model_id)
    if card is None or (capability is not None and not card.supports(capability)):
        known = sorted(c.id for c in list_cards() if capability is None or c.supports(capability))
        what = f"{capability} model" if capability else "model card"
        raise KeyError(f"no {what} {model_id!r}; known: {known}")
    return card
