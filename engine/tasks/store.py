"""Task tables in the one DuckDB store (module ``tasks`` of the migration registry).

Every row carries ``tenant_id`` and every read filters on it: another tenant's classifier, workflow,
result or usage is indistinguishable from a missing one. Methods block (DuckDB under the store's
lock): async callers use ``asyncio.to_thread``.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from engine.errors import NotFoundError
from engine.storage import Store, register_migration
from engine.tasks.classify import stored_encoder

TASKS_V1 = """
CREATE TABLE task_classifiers (
    tenant_id TEXT NOT NULL,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    method TEXT NOT NULL,
    labels JSON NOT NULL,
    threshold DOUBLE NOT NULL,
    metrics JSON,
    model BLOB NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (tenant_id, name, version)
);
CREATE TABLE task_workflows (
    tenant_id TEXT NOT NULL,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    definition JSON NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (tenant_id, name, version)
);
CREATE TABLE workflow_runs (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    workflow TEXT NOT NULL,
    request_id TEXT,
    input JSON NOT NULL,
    output JSON NOT NULL,
    intent TEXT,
    confidence DOUBLE,
    low_confidence BOOLEAN NOT NULL DEFAULT false,
    raw_output TEXT,
    processed_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);
CREATE INDEX workflow_runs_by_tenant ON workflow_runs (tenant_id, workflow);
CREATE TABLE leads (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    intent TEXT,
    fields JSON NOT NULL,
    confidence DOUBLE,
    raw_output TEXT,
    request_id TEXT,
    processed_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);
CREATE TABLE support_tickets (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    intent TEXT,
    fields JSON NOT NULL,
    confidence DOUBLE,
    raw_output TEXT,
    request_id TEXT,
    processed_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);
CREATE TABLE task_audit (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    ts TIMESTAMP NOT NULL DEFAULT current_timestamp,
    action TEXT NOT NULL,
    subject TEXT,
    request_id TEXT,
    detail JSON
);
CREATE TABLE task_analyses (
    tenant_id TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    task TEXT NOT NULL,
    document_id TEXT,
    result JSON NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (tenant_id, content_hash, task)
);
CREATE TABLE task_usage (
    tenant_id TEXT NOT NULL,
    task TEXT NOT NULL,
    ts TIMESTAMP NOT NULL DEFAULT current_timestamp,
    prompt_tokens BIGINT NOT NULL DEFAULT 0,
    completion_tokens BIGINT NOT NULL DEFAULT 0,
    items BIGINT NOT NULL DEFAULT 0,
    seconds DOUBLE NOT NULL DEFAULT 0
)
"""

register_migration(
    "tasks", 1, "classifiers, workflows, runs, leads, tickets, audit, analyses", TASKS_V1
)
# The embedding model a classifier was trained on (NULL: an LLM classifier, or an embedding
# classifier stored before the column, which was then all-MiniLM-L6-v2).
register_migration(
    "tasks", 2, "classifier encoder", "ALTER TABLE task_classifiers ADD COLUMN encoder VARCHAR"
)

#: Tables a workflow's ``persist`` step may write (besides ``workflow_runs``, always written).
PERSIST_TABLES = ("leads", "support_tickets")


@dataclass(frozen=True)
class ClassifierRow:
    tenant_id: str
    name: str
    version: int
    method: str
    labels: list[str]
    threshold: float
    metrics: dict[str, Any]
    created_at: datetime
    encoder: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "method": self.method,
            "encoder": self.encoder,
            "labels": self.labels,
            "abstain_threshold": self.threshold,
            "metrics": self.metrics,
            "created_at": int(self.created_at.timestamp()),
        }


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(10)}"


class TaskRepo:
    def __init__(self, store: Store) -> None:
        self.store = store

    # ---- classifiers ------------------------------------------------------------------------

    def save_classifier(
        self,
        tenant: str,
        name: str,
        method: str,
        labels: list[str],
        threshold: float,
        metrics: dict[str, Any],
        blob: bytes,
        encoder: str | None = None,
    ) -> ClassifierRow:
        """Store a new version (1 + the latest, never reusing a deleted classifier's numbers)."""
        with self.store.transaction() as conn:
            row = conn.execute(
                "SELECT coalesce(max(version), 0) FROM task_classifiers "
                "WHERE tenant_id = ? AND name = ?",
                [tenant, name],
            ).fetchone()
            version = int(row[0]) + 1 if row else 1
            conn.execute(
                "INSERT INTO task_classifiers (tenant_id, name, version, method, labels, "
                "threshold, metrics, model, encoder) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    tenant,
                    name,
                    version,
                    method,
                    json.dumps(labels),
                    threshold,
                    json.dumps(metrics),
                    blob,
                    encoder,
                ],
            )
        return self.get_classifier(tenant, name, version)

    def _classifier_row(self, row: tuple) -> ClassifierRow:
        return ClassifierRow(
            row[0],
            row[1],
            int(row[2]),
            row[3],
            json.loads(row[4]),
            float(row[5]),
            json.loads(row[6]) if row[6] else {},
            row[7],
            stored_encoder(row[3], row[8]),
        )

    _CLS_COLS = "tenant_id, name, version, method, labels, threshold, metrics, created_at, encoder"

    def get_classifier(self, tenant: str, name: str, version: int | None = None) -> ClassifierRow:
        row = self.store.fetchone(
            f"SELECT {self._CLS_COLS} FROM task_classifiers WHERE tenant_id = ? AND name = ? "
            + ("AND version = ? " if version else "")
            + "ORDER BY version DESC LIMIT 1",
            [tenant, name] + ([version] if version else []),
        )
        if row is None:
            raise NotFoundError(f"classifier {name!r} not found", param="classifier")
        return self._classifier_row(row)

    def classifier_blob(self, tenant: str, name: str, version: int) -> bytes:
        row = self.store.fetchone(
            "SELECT model FROM task_classifiers WHERE tenant_id = ? AND name = ? AND version = ?",
            [tenant, name, version],
        )
        if row is None:
            raise NotFoundError(f"classifier {name!r} not found", param="classifier")
        return bytes(row[0])

    def list_classifiers(self, tenant: str) -> list[ClassifierRow]:
        rows = self.store.fetchall(
            f"SELECT {self._CLS_COLS} FROM task_classifiers c WHERE tenant_id = ? AND version = "
            "(SELECT max(version) FROM task_classifiers d WHERE d.tenant_id = c.tenant_id "
            "AND d.name = c.name) ORDER BY name",
            [tenant],
        )
        return [self._classifier_row(r) for r in rows]

    def classifier_versions(self, tenant: str, name: str) -> list[ClassifierRow]:
        rows = self.store.fetchall(
            f"SELECT {self._CLS_COLS} FROM task_classifiers WHERE tenant_id = ? AND name = ? "
            "ORDER BY version",
            [tenant, name],
        )
        return [self._classifier_row(r) for r in rows]

    def delete_classifier(self, tenant: str, name: str) -> int:
        """Delete every version; returns how many there were (404 when none)."""
        versions = self.classifier_versions(tenant, name)
        if not versions:
            raise NotFoundError(f"classifier {name!r} not found", param="classifier")
        self.store.execute(
            "DELETE FROM task_classifiers WHERE tenant_id = ? AND name = ?", [tenant, name]
        )
        return len(versions)

    # ---- workflows ----------------------------------------------------------------------------

    def save_workflow(self, tenant: str, name: str, definition: dict[str, Any]) -> int:
        with self.store.transaction() as conn:
            row = conn.execute(
                "SELECT coalesce(max(version), 0) FROM task_workflows WHERE tenant_id = ? "
                "AND name = ?",
                [tenant, name],
            ).fetchone()
            version = int(row[0]) + 1 if row else 1
            conn.execute(
                "INSERT INTO task_workflows (tenant_id, name, version, definition) "
                "VALUES (?, ?, ?, ?)",
                [tenant, name, version, json.dumps(definition)],
            )
        return version

    def get_workflow(self, tenant: str, name: str) -> dict[str, Any] | None:
        row = self.store.fetchone(
            "SELECT definition FROM task_workflows WHERE tenant_id = ? AND name = ? "
            "ORDER BY version DESC LIMIT 1",
            [tenant, name],
        )
        return json.loads(row[0]) if row else None

    def list_workflows(self, tenant: str) -> list[str]:
        rows = self.store.fetchall(
            "SELECT DISTINCT name FROM task_workflows WHERE tenant_id = ? ORDER BY name", [tenant]
        )
        return [r[0] for r in rows]

    def delete_workflow(self, tenant: str, name: str) -> bool:
        found = self.get_workflow(tenant, name) is not None
        self.store.execute(
            "DELETE FROM task_workflows WHERE tenant_id = ? AND name = ?", [tenant, name]
        )
        return found

    # ---- runs, persisted rows, audit ----------------------------------------------------------

    def record_run(
        self,
        tenant: str,
        workflow: str,
        run_id: str,
        request_id: str | None,
        inputs: dict[str, Any],
        output: dict[str, Any],
        raw_output: str,
        persist_table: str | None,
    ) -> None:
        """One run: its ``workflow_runs`` row, its row in the persist table, its audit row, in one
        transaction."""
        intent, confidence = output.get("intent"), output.get("confidence")
        low = bool(output.get("low_confidence", False))
        with self.store.transaction() as conn:
            conn.execute(
                "INSERT INTO workflow_runs (id, tenant_id, workflow, request_id, input, output, "
                "intent, confidence, low_confidence, raw_output) VALUES (?,?,?,?,?,?,?,?,?,?)",
                [
                    run_id,
                    tenant,
                    workflow,
                    request_id,
                    json.dumps(inputs),
                    json.dumps(output),
                    intent,
                    confidence,
                    low,
                    raw_output,
                ],
            )
            if persist_table is not None:
                if persist_table not in PERSIST_TABLES:
                    raise ValueError(f"unknown persist table {persist_table!r}")
                conn.execute(
                    f"INSERT INTO {persist_table} (id, tenant_id, intent, fields, confidence, "
                    "raw_output, request_id) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [
                        run_id,
                        tenant,
                        intent,
                        json.dumps(output.get("fields", {})),
                        confidence,
                        raw_output,
                        request_id,
                    ],
                )
            conn.execute(
                "INSERT INTO task_audit (id, tenant_id, action, subject, request_id, detail) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [
                    new_id("aud"),
                    tenant,
                    f"workflow.{workflow}.run",
                    run_id,
                    request_id,
                    json.dumps({"intent": intent, "confidence": confidence, "low_confidence": low}),
                ],
            )

    def audit(
        self,
        tenant: str,
        action: str,
        subject: str | None,
        request_id: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        self.store.execute(
            "INSERT INTO task_audit (id, tenant_id, action, subject, request_id, detail) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [new_id("aud"), tenant, action, subject, request_id, json.dumps(detail or {})],
        )

    def runs(
        self, tenant: str, workflow: str, limit: int = 50, offset: int = 0
    ) -> list[dict[str, Any]]:
        rows = self.store.fetchall(
            "SELECT id, request_id, input, output, raw_output, processed_at FROM workflow_runs "
            "WHERE tenant_id = ? AND workflow = ? ORDER BY processed_at DESC, id LIMIT ? OFFSET ?",
            [tenant, workflow, limit, offset],
        )
        return [
            {
                "id": r[0],
                "request_id": r[1],
                "input": json.loads(r[2]),
                "output": json.loads(r[3]),
                "raw_output": r[4],
                "processed_at": int(r[5].timestamp()),
            }
            for r in rows
        ]

    def run(self, tenant: str, run_id: str) -> dict[str, Any]:
        row = self.store.fetchone(
            "SELECT id, workflow, request_id, input, output, raw_output, processed_at "
            "FROM workflow_runs WHERE tenant_id = ? AND id = ?",
            [tenant, run_id],
        )
        if row is None:
            raise NotFoundError(f"result {run_id!r} not found", param="id")
        return {
            "id": row[0],
            "workflow": row[1],
            "request_id": row[2],
            "input": json.loads(row[3]),
            "output": json.loads(row[4]),
            "raw_output": row[5],
            "processed_at": int(row[6].timestamp()),
        }

    # ---- analyses (cache by content hash + task) ---------------------------------------------

    def cached_analysis(self, tenant: str, content_hash: str, task: str) -> Any | None:
        row = self.store.fetchone(
            "SELECT result FROM task_analyses "
            "WHERE tenant_id = ? AND content_hash = ? AND task = ?",
            [tenant, content_hash, task],
        )
        return json.loads(row[0]) if row else None

    def save_analysis(
        self, tenant: str, content_hash: str, task: str, document_id: str | None, result: Any
    ) -> None:
        self.store.execute(
            "INSERT OR REPLACE INTO task_analyses (tenant_id, content_hash, task, document_id, "
            "result) VALUES (?, ?, ?, ?, ?)",
            [tenant, content_hash, task, document_id, json.dumps(result)],
        )

    # ---- usage ----------------------------------------------------------------------------

    def record_usage(
        self,
        tenant: str,
        task: str,
        *,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        items: int = 0,
        seconds: float = 0.0,
    ) -> None:
        self.store.execute(
            "INSERT INTO task_usage (tenant_id, task, prompt_tokens, completion_tokens, items, "
            "seconds) VALUES (?, ?, ?, ?, ?, ?)",
            [tenant, task, prompt_tokens, completion_tokens, items, seconds],
        )

    def usage(self, tenant: str) -> dict[str, dict[str, float]]:
        rows = self.store.fetchall(
            "SELECT task, sum(prompt_tokens), sum(completion_tokens), sum(items), sum(seconds), "
            "count(*) FROM task_usage WHERE tenant_id = ? GROUP BY task ORDER BY task",
            [tenant],
        )
        return {
            r[0]: {
                "prompt_tokens": int(r[1]),
                "completion_tokens": int(r[2]),
                "items": int(r[3]),
                "seconds": round(float(r[4]), 3),
                "requests": int(r[5]),
            }
            for r in rows
        }
