"""The one DuckDB file: open it (one writer), run migrations, run statements under one lock.

DuckDB takes an exclusive file lock per process, so a second process that opens the same file
fails; :class:`Store` turns that failure into :class:`StoreLockedError` with the path and the
holder, before any table is touched. Inside the process every statement runs on one connection
behind a lock: the methods block the calling thread, so async code calls them through
``asyncio.to_thread``.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import duckdb

log = logging.getLogger(__name__)


class StorageError(RuntimeError):
    """The database cannot be opened or migrated."""


class StoreLockedError(StorageError):
    """Another process holds the database file (there is one writer: the server)."""


Apply = str | Callable[[duckdb.DuckDBPyConnection], None]


@dataclass(frozen=True)
class Migration:
    """One schema step of one module. ``apply`` is SQL (``;``-separated) or a function.

    Versions of a module run in ascending order, each once, each in its own transaction together
    with its row in ``schema_migrations``.
    """

    module: str
    version: int
    description: str
    apply: Apply


class MigrationRegistry:
    """Migrations by module. Other modules (audit, workflows, ...) add their own tables here."""

    def __init__(self) -> None:
        self._by_module: dict[str, dict[int, Migration]] = {}

    def register(self, migration: Migration) -> None:
        """Add a migration; registering the same (module, version) twice must be the same step."""
        known = self._by_module.setdefault(migration.module, {})
        old = known.get(migration.version)
        if old is not None and old != migration:
            raise StorageError(
                f"migration {migration.module} v{migration.version} registered twice, differently"
            )
        known[migration.version] = migration

    def register_all(self, migrations: Sequence[Migration]) -> None:
        for migration in migrations:
            self.register(migration)

    def ordered(self) -> list[Migration]:
        """Every migration; ``core`` first, then modules by name, versions ascending."""
        modules = sorted(self._by_module, key=lambda m: (m != "core", m))
        return [self._by_module[m][v] for m in modules for v in sorted(self._by_module[m])]


#: The process-wide registry ``Store`` applies by default; modules add to it at import time.
MIGRATIONS = MigrationRegistry()


def register_migration(module: str, version: int, description: str, apply: Apply) -> None:
    """Register a schema step of ``module`` in the default registry (see :class:`Migration`)."""
    MIGRATIONS.register(Migration(module, version, description, apply))


_LOCK_HOLDER = re.compile(r"PID (\d+)")


class Store:
    """One open DuckDB database. Thread-safe: every call takes the store's lock."""

    def __init__(self, path: Path | str, *, threads: int = 2, read_only: bool = False) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = self._connect(read_only, threads)
        self._closed = False

    def _connect(self, read_only: bool, threads: int) -> duckdb.DuckDBPyConnection:
        """Open the file. A write-ahead log that cannot be replayed is moved aside (the changes
        since the last checkpoint are lost, said loudly); a corrupt database file is moved aside
        and the start fails, saying how to restore it (see :meth:`corrupt`)."""
        open_ = partial(
            duckdb.connect, str(self.path), read_only=read_only, config={"threads": threads}
        )
        try:
            return open_()
        except duckdb.IOException as exc:
            text = str(exc)
            if "lock" in text.lower():
                holder = _LOCK_HOLDER.search(text)
                who = f"process {holder.group(1)}" if holder else "another process"
                raise StoreLockedError(
                    f"database {self.path} is in use by {who}; only one Hearth server may open "
                    "a data directory at a time (stop it, or use another data directory)"
                ) from None
            if "not a valid DuckDB database" in text:
                raise self.corrupt(text) from None
            raise StorageError(f"cannot open database {self.path}: {text}") from exc
        except duckdb.Error as exc:
            text = str(exc)
            wal = self.path.with_name(self.path.name + ".wal")
            if "replaying WAL" in text and not read_only and wal.exists():
                moved = _move_aside(wal)
                log.critical(
                    "the write-ahead log of %s could not be replayed (%s): moved it to %s; the "
                    "changes made after the last checkpoint are lost",
                    self.path,
                    text.splitlines()[0][:200],
                    moved,
                )
                return open_()
            if "Corrupt database" in text:
                raise self.corrupt(text) from None
            raise StorageError(f"cannot open database {self.path}: {text}") from exc

    def corrupt(self, detail: str) -> StorageError:
        """Move the corrupt database file (and its log) aside and say how to restore it."""
        moved = _move_aside(self.path)
        wal = self.path.with_name(self.path.name + ".wal")
        if wal.exists():
            _move_aside(wal)
        message = (
            f"database {self.path} is corrupt ({detail.splitlines()[0][:200]}); it was moved to "
            f"{moved}. To restore, stop Hearth and copy your last backup to {self.path}; or "
            "start again to begin with an empty database"
        )
        log.critical("%s", message)
        return StorageError(message)

    # ---- lifecycle ------------------------------------------------------------------------

    def migrate(self, registry: MigrationRegistry | Sequence[Migration] | None = None) -> list[str]:
        """Apply every migration not yet applied; returns ``module vN`` of each one applied."""
        migrations = (
            (registry or MIGRATIONS).ordered()
            if registry is None or isinstance(registry, MigrationRegistry)
            else list(registry)
        )
        applied: list[str] = []
        with self._lock:
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (module TEXT NOT NULL, "
                "version INTEGER NOT NULL, description TEXT, "
                "applied_at TIMESTAMP DEFAULT current_timestamp, PRIMARY KEY (module, version))"
            )
            done = set(
                self._conn.execute("SELECT module, version FROM schema_migrations").fetchall()
            )
            for mig in migrations:
                if (mig.module, mig.version) in done:
                    continue
                self._apply(mig)
                applied.append(f"{mig.module} v{mig.version}")
        if applied:
            log.info("database %s: applied %s", self.path, ", ".join(applied))
        return applied

    def _apply(self, mig: Migration) -> None:
        conn = self._conn
        conn.execute("BEGIN TRANSACTION")
        try:
            if isinstance(mig.apply, str):
                for statement in _split_sql(mig.apply):
                    conn.execute(statement)
            else:
                mig.apply(conn)
            conn.execute(
                "INSERT INTO schema_migrations (module, version, description) VALUES (?, ?, ?)",
                [mig.module, mig.version, mig.description],
            )
            conn.execute("COMMIT")
        except Exception as exc:
            conn.execute("ROLLBACK")
            raise StorageError(f"migration {mig.module} v{mig.version} failed: {exc}") from exc

    def schema_versions(self) -> dict[str, int]:
        rows = self.fetchall("SELECT module, max(version) FROM schema_migrations GROUP BY module")
        return {m: int(v) for m, v in rows}

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    # ---- statements -----------------------------------------------------------------------

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> None:
        with self._lock:
            self._conn.execute(sql, params or [])

    def fetchall(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple]:
        with self._lock:
            return self._conn.execute(sql, params or []).fetchall()

    def fetchone(self, sql: str, params: Sequence[Any] | None = None) -> tuple | None:
        with self._lock:
            return self._conn.execute(sql, params or []).fetchone()

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """Hold the lock and one transaction; commits on success, rolls back on any exception."""
        with self._lock:
            self._conn.execute("BEGIN TRANSACTION")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")


def _move_aside(path: Path) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    path.rename(target)
    return target


def _split_sql(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]
