"""What an upload is, before ingestion (kept free of heavy imports: the server builds these)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class DocumentInput:
    """An uploaded file (``data``) or a JSON document (``text``)."""

    data: bytes | None = None
    text: str | None = None
    filename: str | None = None
    client_id: str | None = None
    title: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def content_hash(self) -> str:
        raw = self.data if self.data is not None else (self.text or "").encode()
        return hashlib.sha256(raw).hexdigest()

    @property
    def size(self) -> int:
        return len(self.data) if self.data is not None else len((self.text or "").encode())
