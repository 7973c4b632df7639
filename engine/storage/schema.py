"""The core schema (module ``core``). Every tenant-owned row carries ``tenant_id``.

Foreign keys are enforced by the repositories, not by DuckDB: DuckDB forbids deleting a parent
row whose children were deleted in the same transaction, which a cascading delete needs.
"""

from __future__ import annotations

from engine.storage.db import Migration

DEFAULT_TENANT = "default"

CORE_V1 = f"""
CREATE TABLE tenants (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);
INSERT INTO tenants (id, name) VALUES ('{DEFAULT_TENANT}', '{DEFAULT_TENANT}');
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    prefix TEXT NOT NULL UNIQUE,
    key_hash TEXT NOT NULL,
    name TEXT,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    revoked_at TIMESTAMP
);
CREATE TABLE collections (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    name TEXT NOT NULL,
    chunk_tokens INTEGER NOT NULL,
    chunk_overlap INTEGER NOT NULL,
    metadata JSON,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    UNIQUE (tenant_id, name)
);
CREATE TABLE collection_state (
    collection_id TEXT PRIMARY KEY,
    generation BIGINT NOT NULL
);
CREATE TABLE documents (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    collection_id TEXT NOT NULL,
    client_id TEXT,
    title TEXT,
    content_hash TEXT NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    metadata JSON,
    source_type TEXT,
    n_bytes BIGINT,
    n_pages INTEGER,
    n_chunks INTEGER NOT NULL DEFAULT 0,
    job_id TEXT,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    updated_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);
CREATE INDEX documents_by_collection ON documents (collection_id);
CREATE SEQUENCE chunk_ids START 1;
CREATE TABLE chunks (
    id BIGINT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    collection_id TEXT NOT NULL,
    document_id TEXT NOT NULL,
    ord INTEGER NOT NULL,
    text TEXT NOT NULL,
    n_tokens INTEGER NOT NULL,
    char_start INTEGER NOT NULL,
    char_end INTEGER NOT NULL,
    page INTEGER
);
CREATE INDEX chunks_by_collection ON chunks (collection_id);
CREATE INDEX chunks_by_document ON chunks (document_id);
CREATE TABLE vectors (
    chunk_id BIGINT PRIMARY KEY,
    collection_id TEXT NOT NULL,
    dim INTEGER NOT NULL,
    embedding BLOB NOT NULL
);
CREATE INDEX vectors_by_collection ON vectors (collection_id);
CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    collection_id TEXT,
    status TEXT NOT NULL,
    progress INTEGER NOT NULL DEFAULT 0,
    total INTEGER NOT NULL DEFAULT 0,
    done INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    skipped INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    result JSON,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    updated_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);
CREATE TABLE chat_sessions (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    updated_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (tenant_id, id)
);
CREATE SEQUENCE message_ids START 1;
CREATE TABLE chat_messages (
    id BIGINT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    sources JSON,
    confidence DOUBLE,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);
CREATE INDEX messages_by_session ON chat_messages (tenant_id, session_id);
CREATE TABLE usage (
    tenant_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    ts TIMESTAMP NOT NULL DEFAULT current_timestamp,
    prompt_tokens BIGINT NOT NULL DEFAULT 0,
    completion_tokens BIGINT NOT NULL DEFAULT 0,
    items BIGINT NOT NULL DEFAULT 0
)
"""

CORE_V2 = """
ALTER TABLE api_keys ADD COLUMN scopes TEXT;
ALTER TABLE api_keys ADD COLUMN expires_at TIMESTAMP;
CREATE TABLE users (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    email TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    disabled_at TIMESTAMP
);
CREATE TABLE refresh_tokens (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    family TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    expires_at TIMESTAMP NOT NULL,
    used_at TIMESTAMP,
    revoked_at TIMESTAMP
)
"""

CORE_MIGRATIONS = (
    Migration("core", 1, "tenants, keys, documents, chunks, jobs, chat", CORE_V1),
    Migration("core", 2, "key scopes and expiry, users, refresh tokens", CORE_V2),
)
