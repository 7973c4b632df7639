"""A full disk is a 507 that says so (not a 500), and nothing of the request is kept."""

from __future__ import annotations

import errno

import duckdb
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from engine.documents import DocumentService
from tests.server.fakes import FakeParts
from tests.server.test_routes import app_parts, client  # noqa: F401 - the app fixtures


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        duckdb.IOException(
            'IO Error: Could not write file "hearth.duckdb": No space left on device'
        ),
    ],
)
def test_disk_full_is_507(
    client: TestClient,  # noqa: F811
    app_parts: tuple[Litestar, FakeParts],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    error: Exception,
) -> None:
    async def full(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(DocumentService, "create_collection", full)
    r = client.post("/v1/collections", json={"name": "kb"})
    assert r.status_code == 507
    body = r.json()["error"]
    assert body["code"] == "disk_full" and "disk is full" in body["message"]
    monkeypatch.undo()
    assert client.get("/v1/collections").json()["data"] == []  # nothing half-made
