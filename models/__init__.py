"""Model cards, local model files and chat templates. Never weights: those live in the data dir."""

from models.cards import ModelCard, get_card, list_cards
from models.store import ModelFileError, install_model, model_path, verify_model

__all__ = [
    "ModelCard",
    "ModelFileError",
    "get_card",
    "install_model",
    "list_cards",
    "model_path",
    "verify_model",
]
