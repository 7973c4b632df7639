"""The card catalogue: the shipped cards (one TOML file per model in ``models/cards/``) and the
ones the user added to the data directory (``models/registry.py``); a new model is a new file, not
new code. ``get_card`` is the one lookup."""

from __future__ import annotations

from pathlib import Path

from models.card import CARDS_DIR, ModelCard, card_from_dict, shipped_cards
from models.registry import all_cards

__all__ = ["CARDS_DIR", "ModelCard", "card_from_dict", "get_card", "list_cards", "shipped_cards"]


def list_cards(data_dir: Path | None = None) -> list[ModelCard]:
    """Shipped cards and the user's (``data_dir``, default ``HEARTH_DATA_DIR``)."""
    return list(all_cards(data_dir).values())


def get_card(
    model_id: str, capability: str | None = None, *, data_dir: Path | None = None
) -> ModelCard:
    """The card for ``model_id`` (that has ``capability``, if given), shipped or added by the user
    to ``data_dir`` (default ``HEARTH_DATA_DIR``); KeyError names the ids to choose from."""
    cards = all_cards(data_dir)
    card = cards.get(model_id)
    if card is None or (capability is not None and not card.supports(capability)):
        known = sorted(c.id for c in cards.values() if capability is None or c.supports(capability))
        what = f"{capability} model" if capability else "model card"
        raise KeyError(f"no {what} {model_id!r}; known: {known}")
    return card
