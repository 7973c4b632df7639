"""DuckDB storage: migrations, the one-writer lock, hashed keys, tenant scoping, atomic writes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.errors import InvalidRequestError, NotFoundError
from engine.storage import (
    Migration,
    MigrationRegistry,
    NewChunk,
    StorageError,
    Store,
    StoreLockedError,
    open_store,
)
from engine.storage.corpus import READY
from engine.storage.schema import CORE_MIGRATIONS


@pytest.fixture
def db(tmp_path: Path):
    database = open_store(tmp_path / "h.duckdb")
    yield database
    database.close()


def test_migrations_apply_once_and_other_modules_add_tables(tmp_path: Path) -> None:
    registry = MigrationRegistry()
    registry.register_all(CORE_MIGRATIONS)
    registry.register(Migration("audit", 1, "audit log", "CREATE TABLE audit_log (id INTEGER)"))
    database = open_store(tmp_path / "h.duckdb", registry=registry)
    assert database.store.schema_versions() == {"core": 2, "audit": 1}
    database.close()
    registry.register(Migration("audit", 2, "column", "ALTER TABLE audit_log ADD COLUMN what TEXT"))
    database = open_store(tmp_path / "h.duckdb", registry=registry)
    assert database.store.schema_versions() == {"core": 2, "audit": 2}
    assert database.store.migrate(registry) == []
    database.store.execute("INSERT INTO audit_log VALUES (1, 'x')")
    database.close()


def test_failed_migration_rolls_back(tmp_path: Path) -> None:
    registry = MigrationRegistry()
    registry.register_all(CORE_MIGRATIONS)
    registry.register(Migration("bad", 1, "broken", "CREATE TABLE ok (a INT); SELECT nope"))
    with pytest.raises(Exception, match="bad v1"):
        open_store(tmp_path / "h.duckdb", registry=registry)
    database = open_store(tmp_path / "h.duckdb")
    assert "bad" not in database.store.schema_versions()
    assert (
        database.store.fetchone("SELECT count(*) FROM duckdb_tables() WHERE table_name='ok'")[0]
        == 0
    )
    database.close()


def test_second_process_gets_a_clear_error(db, tmp_path: Path) -> None:
    code = (
        "from engine.storage import open_store, StoreLockedError\n"
        f"try:\n    open_store({str(tmp_path / 'h.duckdb')!r})\n"
        "except StoreLockedError as e:\n    print('LOCKED', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "LOCKED" in out.stdout and "only one Hearth server" in out.stdout
    assert issubclass(StoreLockedError, RuntimeError)


def test_keys_are_hashed_and_checked(db, tmp_path: Path) -> None:
    tenant = db.tenants.create("acme")
    key, record = db.tenants.create_key("acme", "ci")
    assert key.startswith("hth_") and record.tenant_id == tenant.id
    stored = db.store.fetchall("SELECT key_hash, prefix FROM api_keys")
    assert key not in {s[0] for s in stored} and len(stored[0][0]) == 64
    assert db.tenants.authenticate(key) == tenant.id
    assert db.tenants.authenticate(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    assert db.tenants.authenticate("garbage") is None
    assert db.tenants.has_keys()
    db.tenants.revoke_key(record.id)
    assert db.tenants.authenticate(key) is None and not db.tenants.has_keys()
    with pytest.raises(InvalidRequestError):
        db.tenants.create("acme")
    with pytest.raises(InvalidRequestError):
        db.tenants.create("bad name!")


def test_tenants_do_not_see_each_other(db) -> None:
    a, b = db.tenants.create("a").id, db.tenants.create("b").id
    col = db.corpus.create_collection(a, "kb", 128, 16)
    db.corpus.create_collection(b, "kb", 128, 16)  # same name, other tenant: allowed
    with pytest.raises(NotFoundError):
        db.corpus.get_collection("default", "kb")
    assert [c.tenant_id for c in db.corpus.list_collections(b)] == [b]
    job = db.jobs.create(a, "ingest", col.id, 1)
    with pytest.raises(NotFoundError):
        db.jobs.get(b, job.id)
    db.chats.ensure_session(a, "s")
    db.chats.add_message(a, "s", "user", "secret")
    with pytest.raises(NotFoundError):
        db.chats.messages(b, "s")
    db.chats.ensure_session(b, "s")
    assert db.chats.messages(b, "s") == []


def test_document_completes_atomically(db) -> None:
    col = db.corpus.create_collection("default", "kb", 128, 16)
    doc = db.corpus.add_document(
        col,
        client_id="d1",
        title="t",
        content_hash="h",
        metadata={},
        source_type="json",
        n_bytes=5,
        job_id=None,
    )
    chunks = [NewChunk("hello", 3, 0, 5), NewChunk("world", 3, 6, 11)]
    with pytest.raises(ValueError):
        db.corpus.complete_document(doc, chunks, np.ones((1, 384), np.float32), None)
    assert db.corpus.collection_stats(col.id)["chunks"] == 0
    ids = db.corpus.complete_document(doc, chunks, np.ones((2, 384), np.float32), None)
    assert db.corpus.get_document(col, "d1").status == READY
    assert db.corpus.collection_stats(col.id) == {"documents": 1, "chunks": 2, "generation": 1}
    got_ids, vecs = db.corpus.vectors(col.id)
    assert got_ids.tolist() == ids and vecs.shape == (2, 384)
    assert db.corpus.delete_document(doc) == ids
    assert db.corpus.vectors(col.id)[0].size == 0 and db.corpus.generation(col.id) == 2


def test_interrupted_documents_and_jobs_fail_cleanly(db) -> None:
    col = db.corpus.create_collection("default", "kb", 128, 16)
    doc = db.corpus.add_document(
        col,
        client_id=None,
        title=None,
        content_hash="h",
        metadata={},
        source_type="json",
        n_bytes=1,
        job_id=None,
    )
    job = db.jobs.create("default", "ingest", col.id, 1)
    assert db.corpus.fail_interrupted() == 1 and db.jobs.fail_interrupted() == 1
    assert db.corpus.get_document(col, doc.id).status == "failed"
    assert db.jobs.get("default", job.id).status == "failed"


def test_usage_ledger(db) -> None:
    db.usage.record("default", "chat", prompt_tokens=10, completion_tokens=5)
    db.usage.record("default", "chat", prompt_tokens=1)
    assert db.usage.totals("default")["chat"] == {
        "prompt_tokens": 11,
        "completion_tokens": 5,
        "items": 0,
    }


def test_a_corrupt_database_is_moved_aside_with_how_to_restore(tmp_path: Path) -> None:
    path = tmp_path / "hearth.duckdb"
    open_store(path).close()
    path.write_bytes(b"\x00" * 8192)  # not a database any more
    with pytest.raises(StorageError) as err:
        open_store(path)
    message = str(err.value)
    assert "corrupt" in message and "backup" in message and "moved to" in message
    moved = list(tmp_path.glob("hearth.duckdb.corrupt-*"))
    assert len(moved) == 1 and moved[0].read_bytes() == b"\x00" * 8192  # kept for forensics
    open_store(path).close()  # the next start begins with an empty database


def test_an_unreadable_write_ahead_log_is_moved_aside_and_the_database_opens(
    tmp_path: Path,
) -> None:
    path = tmp_path / "h.duckdb"
    crash = (
        "import duckdb, os\n"
        f"c = duckdb.connect({str(path)!r})\n"
        "c.execute('CREATE TABLE t (a INTEGER)')\n"
        "c.execute('INSERT INTO t SELECT * FROM range(1000)')\n"
        "c.execute('CHECKPOINT')\n"
        "c.execute('INSERT INTO t VALUES (-1)')\n"
        "os._exit(0)\n"  # killed: the last insert is only in the write-ahead log
    )
    subprocess.run([sys.executable, "-c", crash], check=True, timeout=120)
    wal = tmp_path / "h.duckdb.wal"
    data = wal.read_bytes()
    wal.write_bytes(data[: len(data) // 2] + b"\xff" * 64 + data[len(data) // 2 + 64 :])
    store = Store(path)
    try:
        assert store.fetchone("SELECT count(*) FROM t") == (1000,)  # the checkpointed rows
    finally:
        store.close()
    assert list(tmp_path.glob("h.duckdb.wal.corrupt-*"))
