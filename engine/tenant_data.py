"""Everything Hearth holds about one tenant: export it as files, or purge it.

Where a tenant's data lives (``remnants`` checks every one of them):
- **DuckDB**: every table with a ``tenant_id`` column; the child tables in ``CHILD_TABLES`` (rows
  reached through a parent that has one); ``tenants`` (its row) and ``limit_overrides`` (its id and
  its keys' ids). ``GLOBAL_TABLES`` hold nothing of any tenant. A table in none of these sets is a
  programming error that ``tests/engine/test_tenant_data.py`` catches.
- **Index files**: ``<data>/indexes/<collection id>/`` (FAISS + BM25), and their copies in memory.
- **The tenant's example tables**: its own DuckDB file under ``<data>/tables/``.
- **Caches in memory** (``TenantCache``): the exact response cache, trained and inline
  classifiers, API-key lookups, limit counters.

``export_tenant`` writes ``manifest.json``, ``db/<table>.jsonl`` (one JSON object per row;
credential hashes and tool secrets are left out: ``SECRET_COLUMNS``), ``indexes/<collection>/``
and ``tables.duckdb``. ``TenantDataService.purge`` deletes all of it in one DuckDB transaction
plus the files and caches, refusing (409) while one of the tenant's jobs is running.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import decimal
import json
import logging
import shutil
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from engine.errors import ConflictError, InvalidRequestError
from engine.storage import DEFAULT_TENANT, Database, Store

log = logging.getLogger(__name__)

# Rows without a tenant_id, reached through a parent row that has one:
# table -> (its column, the parent table, the parent's column).
CHILD_TABLES = {
    "agent_steps": ("run_id", "agent_runs", "id"),
    "conversation_turns": ("conversation_id", "conversations", "id"),
    "vectors": ("collection_id", "collections", "id"),
    "collection_state": ("collection_id", "collections", "id"),
    "reembed_vectors": ("collection_id", "collections", "id"),
}
# Tables that name the tenant otherwise (exported and purged specially).
OWN_TABLES = ("tenants", "limit_overrides")
GLOBAL_TABLES = frozenset({"schema_migrations"})
# Columns never exported: credential hashes and tools' signing secrets.
SECRET_COLUMNS = frozenset({"key_hash", "password_hash", "token_hash", "secret"})


class TenantCache(Protocol):
    """Anything that keeps a tenant's data in memory."""

    def forget_tenant(self, tenant: str) -> None: ...


def tenant_tables(store: Store) -> list[str]:
    """Tables with a ``tenant_id`` column."""
    rows = store.fetchall(
        "SELECT table_name FROM information_schema.columns "
        "WHERE table_schema = 'main' AND column_name = 'tenant_id' ORDER BY table_name"
    )
    return [r[0] for r in rows]


def all_tables(store: Store) -> list[str]:
    rows = store.fetchall(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' "
        "ORDER BY table_name"
    )
    return [r[0] for r in rows]


def _selections(store: Store, tenant: str) -> dict[str, tuple[str, list[Any]]]:
    """Per table, the WHERE clause (and its parameters) that selects the tenant's rows."""
    out: dict[str, tuple[str, list[Any]]] = {}
    for table in tenant_tables(store):
        out[table] = ("tenant_id = ?", [tenant])
    for table, (column, parent, parent_column) in CHILD_TABLES.items():
        if table in out or parent not in out:
            continue
        out[table] = (
            f'"{column}" IN (SELECT "{parent_column}" FROM "{parent}" WHERE tenant_id = ?)',
            [tenant],
        )
    out["tenants"] = ("id = ?", [tenant])
    out["limit_overrides"] = (
        "subject = ? OR subject IN (SELECT id FROM api_keys WHERE tenant_id = ?)",
        [tenant, tenant],
    )
    return out


def db_remnants(store: Store, tenant: str) -> dict[str, int]:
    """Rows of ``tenant`` per table (tables with none left out)."""
    found = {}
    existing = set(all_tables(store))
    for table, (where, params) in _selections(store, tenant).items():
        if table not in existing:
            continue
        row = store.fetchone(f'SELECT count(*) FROM "{table}" WHERE {where}', params)
        if row and row[0]:
            found[table] = int(row[0])
    return found


def _json_value(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return {"base64": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot export {type(value).__name__}")


def export_tenant(
    db: Database, tenant: str, dest: Path, *, index_dir: Path, tables_file: Path | None
) -> dict[str, Any]:
    """Write the tenant's rows, index files and example tables under ``dest`` (created; must
    not exist or be empty). Returns the manifest. Blocking: run it in a thread."""
    tenant_id = db.tenants.get(tenant).id
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise InvalidRequestError(f"{dest} is not empty", param="out")
    (dest / "db").mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    store = db.store
    existing = set(all_tables(store))
    for table, (where, params) in sorted(_selections(store, tenant_id).items()):
        if table not in existing:
            continue
        cursor_rows, columns = _select(store, table, where, params)
        keep = [i for i, c in enumerate(columns) if c not in SECRET_COLUMNS]
        with (dest / "db" / f"{table}.jsonl").open("w", encoding="utf-8") as f:
            for row in cursor_rows:
                record = {columns[i]: row[i] for i in keep}
                f.write(json.dumps(record, default=_json_value, ensure_ascii=False) + "\n")
        counts[table] = len(cursor_rows)
    collections = [
        r[0] for r in store.fetchall("SELECT id FROM collections WHERE tenant_id = ?", [tenant_id])
    ]
    for col in collections:
        source = Path(index_dir) / col
        if source.is_dir():
            shutil.copytree(source, dest / "indexes" / col)
    if tables_file is not None and tables_file.exists():
        shutil.copy2(tables_file, dest / "tables.duckdb")
    manifest = {
        "object": "tenant_export",
        "tenant": tenant_id,
        "exported_at": dt.datetime.now(dt.UTC).isoformat(),
        "schema": store.schema_versions(),
        "rows": counts,
        "indexes": collections,
        "tables_file": (dest / "tables.duckdb").exists(),
        "omitted_columns": sorted(SECRET_COLUMNS),
    }
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _select(
    store: Store, table: str, where: str, params: Sequence[Any]
) -> tuple[list[tuple[Any, ...]], list[str]]:
    with store.transaction() as con:
        cursor = con.execute(f'SELECT * FROM "{table}" WHERE {where}', list(params))
        columns = [d[0] for d in cursor.description]
        return cursor.fetchall(), columns


def purge_rows(db: Database, tenant_id: str) -> dict[str, int]:
    """Delete every row of the tenant in one transaction (children before parents). Returns
    rows deleted per table."""
    store = db.store
    existing = set(all_tables(store))
    selections = _selections(store, tenant_id)
    # Children first: their WHERE reads the parent rows; then limit overrides (read api_keys).
    order = [t for t in CHILD_TABLES if t in selections]
    order += ["limit_overrides"]
    order += [t for t in selections if t not in order and t != "tenants"]
    order += ["tenants"]
    deleted = {}
    with store.transaction() as con:
        for table in order:
            if table not in existing:
                continue
            where, params = selections[table]
            n = con.execute(f'SELECT count(*) FROM "{table}" WHERE {where}', params).fetchone()
            con.execute(f'DELETE FROM "{table}" WHERE {where}', params)
            if n and n[0]:
                deleted[table] = int(n[0])
    return deleted


class TenantDataService:
    """Export and purge of a whole tenant across every store (see the module)."""

    def __init__(
        self,
        db: Database,
        index_dir: Path,
        drop_index: Callable[[str], None],
        caches: Sequence[TenantCache],
        tables_path: Callable[[str], Path] | None = None,
        flush: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """``drop_index(collection_id)`` drops a collection's indexes from memory and disk;
        ``tables_path(tenant)`` is the tenant's example-tables file; ``caches`` every holder
        of the tenant's data in memory; ``flush`` writes rows still buffered (usage)."""
        self._flush = flush
        self._db = db
        self._index_dir = Path(index_dir)
        self._drop_index = drop_index
        self._caches = list(caches)
        self._tables_path = tables_path

    def tables_file(self, tenant_id: str) -> Path | None:
        return None if self._tables_path is None else Path(self._tables_path(tenant_id))

    async def export(self, tenant: str, dest: Path) -> dict[str, Any]:
        tenant_id = (await asyncio.to_thread(self._db.tenants.get, tenant)).id
        return await asyncio.to_thread(
            export_tenant,
            self._db,
            tenant_id,
            dest,
            index_dir=self._index_dir,
            tables_file=self.tables_file(tenant_id),
        )

    async def purge(self, tenant: str) -> dict[str, Any]:
        """Delete the tenant and everything it holds; returns what was deleted and what
        remains (nothing, unless something went wrong)."""
        tenant_id = (await asyncio.to_thread(self._db.tenants.get, tenant)).id
        if tenant_id == DEFAULT_TENANT:
            raise InvalidRequestError(
                "the default tenant cannot be deleted (it serves open mode)", param="tenant"
            )
        running = await asyncio.to_thread(
            self._db.store.fetchone,
            "SELECT id FROM jobs WHERE tenant_id = ? AND status = 'running' LIMIT 1",
            [tenant_id],
        )
        if running:
            raise ConflictError(
                f"job {running[0]} of this tenant is running; cancel it "
                f"(POST /v1/jobs/{running[0]}/cancel as the tenant) or wait, then delete",
                code="job_running",
            )
        if self._flush is not None:
            await self._flush()  # no buffered row of the tenant lands after the purge
        collections = [
            r[0]
            for r in await asyncio.to_thread(
                self._db.store.fetchall,
                "SELECT id FROM collections WHERE tenant_id = ?",
                [tenant_id],
            )
        ]
        deleted = await asyncio.to_thread(purge_rows, self._db, tenant_id)
        for col in collections:
            await asyncio.to_thread(self._drop_index, col)
        tables = self.tables_file(tenant_id)
        if tables is not None:
            for path in (tables, tables.with_name(tables.name + ".wal")):
                path.unlink(missing_ok=True)
        for cache in self._caches:
            cache.forget_tenant(tenant_id)
        log.warning("tenant %s purged: %s", tenant_id, deleted)
        return {
            "id": tenant_id,
            "object": "tenant",
            "deleted": True,
            "rows": deleted,
            "indexes": collections,
            "remaining": await self.remnants(tenant_id, collections),
        }

    async def remnants(self, tenant_id: str, collections: Sequence[str]) -> dict[str, Any]:
        """What is still held of the tenant: rows per table, index folders, the tables file."""
        left: dict[str, Any] = {}
        rows = await asyncio.to_thread(db_remnants, self._db.store, tenant_id)
        if rows:
            left["rows"] = rows
        folders = [c for c in collections if (self._index_dir / c).exists()]
        if folders:
            left["indexes"] = folders
        tables = self.tables_file(tenant_id)
        if tables is not None and tables.exists():
            left["tables_file"] = str(tables.name)
        return left
