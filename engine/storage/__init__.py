"""Storage: one DuckDB file under the data directory, the source of truth of every tenant's data.

``open_store(path)`` opens (one writer per file), applies the registered migrations and returns a
:class:`Database` with one repository per concept. Other modules add tables with
``register_migration("<module>", version, description, sql_or_function)`` before the store opens,
or call ``database.store.migrate([...])`` afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb

from engine.storage.chats import ChatMessage, ChatRepo, UsageRepo
from engine.storage.corpus import Chunk, Collection, CorpusRepo, Document, NewChunk
from engine.storage.db import (
    MIGRATIONS,
    Migration,
    MigrationRegistry,
    StorageError,
    Store,
    StoreLockedError,
    register_migration,
)
from engine.storage.jobs import Job, JobRepo
from engine.storage.schema import CORE_MIGRATIONS, DEFAULT_TENANT
from engine.storage.tenants import ROLES, SCOPES, ApiKey, Identity, Tenant, TenantRepo
from engine.storage.users import User, UserRepo

MIGRATIONS.register_all(CORE_MIGRATIONS)


@dataclass
class Database:
    """The open store and its repositories; ``close()`` releases the file."""

    store: Store
    tenants: TenantRepo
    corpus: CorpusRepo
    jobs: JobRepo
    chats: ChatRepo
    usage: UsageRepo
    users: UserRepo

    def close(self) -> None:
        self.store.close()


def open_store(
    path: Path | str, *, threads: int = 2, registry: MigrationRegistry | None = None
) -> Database:
    """Open (creating if needed) and migrate the database at ``path``.

    Raises StoreLockedError when another process has it open.
    """
    store = Store(path, threads=threads)
    try:
        store.migrate(registry)
    except duckdb.Error as exc:  # a corrupt block is found when the first query reads it
        store.close()
        if "Corrupt database" in str(exc):
            raise store.corrupt(str(exc)) from None
        raise
    except BaseException:
        store.close()
        raise
    tenants = TenantRepo(store)
    return Database(
        store=store,
        tenants=tenants,
        corpus=CorpusRepo(store),
        jobs=JobRepo(store),
        chats=ChatRepo(store),
        usage=UsageRepo(store),
        users=UserRepo(store, tenants),
    )


__all__ = [
    "DEFAULT_TENANT",
    "MIGRATIONS",
    "ROLES",
    "SCOPES",
    "ApiKey",
    "ChatMessage",
    "Chunk",
    "Collection",
    "Database",
    "Document",
    "Identity",
    "Job",
    "Migration",
    "MigrationRegistry",
    "NewChunk",
    "StorageError",
    "Store",
    "StoreLockedError",
    "Tenant",
    "User",
    "open_store",
    "register_migration",
]
