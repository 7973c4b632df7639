"""Each tenant's own example tables, in a DuckDB file of its own, for the ``sql_query`` tool.

The file is separate from Hearth's database so a query can never reach another tenant's rows or
Hearth's tables. Writes (``put``) open it read-write; a query opens it read-only with external
access off (no files, no ATTACH, no extensions) and the configuration locked, returns at most
``max_rows`` rows, and is interrupted after ``timeout_s``. One lock serializes the opens: DuckDB
allows one configuration per file in a process.
"""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from engine.errors import InvalidRequestError, NotFoundError

NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]{0,62}$")
MAX_ROWS_IN = 10_000
MAX_COLUMNS = 64
MAX_SQL_CHARS = 4000


class QueryError(Exception):
    """A query that failed or ran out of time (goes back to the model as ``success: false``)."""


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    rows: list[list[Any]]
    truncated: bool


def _sql_type(values: list[Any]) -> str:
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return "BOOLEAN"
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return "BIGINT"
    if present and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return "DOUBLE"
    return "VARCHAR"


class TableStore:
    """``root``: the folder of the per-tenant files (created on first write)."""

    def __init__(self, root: Path, *, max_rows: int = 200, timeout_s: float = 5.0) -> None:
        self.root = root
        self.max_rows = max_rows
        self.timeout_s = timeout_s
        self._lock = threading.Lock()

    def path(self, tenant: str) -> Path:
        return self.root / (hashlib.sha256(tenant.encode()).hexdigest()[:24] + ".duckdb")

    def put(self, tenant: str, name: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """Create or replace table ``name`` from ``rows`` (objects; columns are the union of
        their keys, types inferred: BOOLEAN, BIGINT, DOUBLE, else VARCHAR)."""
        if not NAME.match(name):
            raise InvalidRequestError(
                "table name: a-z A-Z 0-9 _, 1-63, not a digit first", param="name"
            )
        if not 0 < len(rows) <= MAX_ROWS_IN or not all(isinstance(r, dict) for r in rows):
            raise InvalidRequestError(f"rows: 1-{MAX_ROWS_IN} objects", param="rows")
        columns: list[str] = []
        for row in rows:
            columns += [k for k in row if k not in columns]
        bad = [c for c in columns if not NAME.match(c)]
        if bad or len(columns) > MAX_COLUMNS:
            raise InvalidRequestError(
                f"columns: at most {MAX_COLUMNS}, each a-z A-Z 0-9 _; bad: {bad[:5]}", param="rows"
            )
        values = [[_scalar(r.get(c)) for c in columns] for r in rows]
        types = [_sql_type([v[i] for v in values]) for i in range(len(columns))]
        ddl = ", ".join(f'"{c}" {t}' for c, t in zip(columns, types, strict=True))
        marks = ", ".join("?" * len(columns))
        self.root.mkdir(parents=True, exist_ok=True)
        with self._lock, duckdb.connect(str(self.path(tenant))) as conn:
            conn.execute("BEGIN")
            conn.execute(f'CREATE OR REPLACE TABLE "{name}" ({ddl})')
            conn.executemany(f'INSERT INTO "{name}" VALUES ({marks})', values)
            conn.execute("COMMIT")
        return {"name": name, "columns": dict(zip(columns, types, strict=True)), "rows": len(rows)}

    def list(self, tenant: str) -> list[dict[str, Any]]:
        path = self.path(tenant)
        if not path.exists():
            return []
        with self._lock, self._connect(path) as conn:
            found = conn.execute(
                "SELECT table_name, estimated_size FROM duckdb_tables() ORDER BY table_name"
            ).fetchall()
        return [{"name": n, "rows": int(r)} for n, r in found]

    def drop(self, tenant: str, name: str) -> None:
        if name not in {t["name"] for t in self.list(tenant)}:
            raise NotFoundError(f"table {name!r} not found", param="name")
        with self._lock, duckdb.connect(str(self.path(tenant))) as conn:
            conn.execute(f'DROP TABLE "{name}"')

    def query(
        self,
        tenant: str,
        sql: str,
        params: dict[str, Any] | None = None,
        *,
        write: bool = False,
    ) -> QueryResult:
        """Run ``sql`` with named ``$params`` over the tenant's tables, read-only unless
        ``write`` (a tenant's own SQL tool that records rows); external access is off either
        way. Raises :class:`QueryError`."""
        if not 0 < len(sql) <= MAX_SQL_CHARS:
            raise QueryError(f"sql: 1-{MAX_SQL_CHARS} characters")
        path = self.path(tenant)
        if not path.exists():
            raise QueryError("this tenant has no tables yet (PUT /v1/tables/{name})")
        with self._lock, self._connect(path, read_only=not write) as conn:
            timer = threading.Timer(self.timeout_s, conn.interrupt)
            timer.start()
            try:
                cursor = conn.execute(sql, params or None)
                if cursor.description is None:
                    return QueryResult([], [], False)
                columns = [d[0] for d in cursor.description]
                rows = cursor.fetchmany(self.max_rows + 1)
            except duckdb.InterruptException:
                raise QueryError(f"the query ran past {self.timeout_s:g} s") from None
            except duckdb.Error as exc:
                raise QueryError(str(exc).splitlines()[0][:300]) from None
            finally:
                timer.cancel()
        out = [[_jsonable(v) for v in row] for row in rows[: self.max_rows]]
        return QueryResult(columns, out, len(rows) > self.max_rows)

    @staticmethod
    def _connect(path: Path, *, read_only: bool = True) -> duckdb.DuckDBPyConnection:
        return duckdb.connect(
            str(path),
            read_only=read_only,
            config={
                "enable_external_access": False,
                "autoinstall_known_extensions": False,
                "autoload_known_extensions": False,
                "threads": 1,
                "lock_configuration": True,
            },
        )


def _scalar(value: Any) -> Any:
    return value if value is None or isinstance(value, str | int | float | bool) else str(value)


def _jsonable(value: Any) -> Any:
    return value if value is None or isinstance(value, str | int | float | bool) else str(value)
