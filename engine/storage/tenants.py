"""Tenants and API keys. A key is shown once; only its SHA-256 is stored, and checked in constant
time. A key reads ``hth_<prefix>_<secret>``: the prefix finds the row, the digest decides.

A key has scopes (``SCOPES``; none stored = every scope) and an optional expiry (UTC): what a
request may do is decided by ``server.auth`` from the :class:`Identity` a key resolves to."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from engine.errors import InvalidRequestError, NotFoundError
from engine.storage.db import Store

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class Tenant:
    id: str
    name: str
    created_at: datetime


# What a key (or a user's role) may do: ``read`` every GET of its tenant; ``inference`` the model
# routes (chat, completions, embeddings, retrieval, classify, extract, tokenize); ``write`` every
# other change of its tenant's data (uploads, deletes, training, agents, jobs); ``admin`` the
# tenant's own users.
SCOPES = ("read", "inference", "write", "admin")
ROLES = {
    "viewer": frozenset({"read", "inference"}),
    "member": frozenset({"read", "inference", "write"}),
    "admin": frozenset(SCOPES),
}


@dataclass(frozen=True)
class ApiKey:
    id: str
    tenant_id: str
    prefix: str
    name: str | None
    created_at: datetime
    revoked_at: datetime | None
    scopes: tuple[str, ...] = SCOPES
    expires_at: datetime | None = None  # naive UTC


@dataclass(frozen=True)
class Identity:
    """Who a credential (API key or user token) speaks for and what it may do."""

    tenant: str
    key_id: str | None
    scopes: frozenset[str]
    user_id: str | None = None
    role: str | None = None
    expires_at: datetime | None = None  # naive UTC

    def expired(self, now: datetime | None = None) -> bool:
        now = now or utcnow()
        return self.expires_at is not None and self.expires_at <= now


def utcnow() -> datetime:
    """Now in naive UTC, as the store's TIMESTAMP columns hold it."""
    return datetime.now(UTC).replace(tzinfo=None)


def check_scopes(scopes: object, param: str = "scopes") -> tuple[str, ...]:
    """A non-empty list of known scopes, without repeats, in ``SCOPES`` order."""
    if (
        not isinstance(scopes, list | tuple)
        or not scopes
        or len(scopes) > len(SCOPES)
        or not all(isinstance(x, str) and x in SCOPES for x in scopes)
    ):
        raise InvalidRequestError(
            f"{param} must be a non-empty list of {list(SCOPES)}; got {scopes!r}", param=param
        )
    return tuple(x for x in SCOPES if x in scopes)


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def check_name(name: object, param: str = "name") -> str:
    """A tenant or collection name: 1-64 of ``[A-Za-z0-9_.-]``, starting alphanumeric."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidRequestError(
            f"{param} must be 1-64 characters of letters, digits, '_', '.', '-' starting with a "
            f"letter or digit; got {name!r}",
            param=param,
        )
    return name


class TenantRepo:
    def __init__(self, store: Store) -> None:
        self.store = store

    def create(self, name: str) -> Tenant:
        check_name(name)
        if self.store.fetchone("SELECT 1 FROM tenants WHERE name = ?", [name]):
            raise InvalidRequestError(f"tenant {name!r} already exists", param="name")
        tenant_id = "ten_" + secrets.token_hex(8)
        self.store.execute("INSERT INTO tenants (id, name) VALUES (?, ?)", [tenant_id, name])
        return self.get(tenant_id)

    def get(self, tenant_id: str) -> Tenant:
        row = self.store.fetchone(
            "SELECT id, name, created_at FROM tenants WHERE id = ? OR name = ?", [tenant_id] * 2
        )
        if row is None:
            raise NotFoundError(f"tenant {tenant_id!r} not found", param="tenant")
        return Tenant(*row)

    def list(self) -> list[Tenant]:
        rows = self.store.fetchall("SELECT id, name, created_at FROM tenants ORDER BY created_at")
        return [Tenant(*r) for r in rows]

    # ---- keys -----------------------------------------------------------------------------

    def create_key(
        self,
        tenant: str,
        name: str | None = None,
        scopes: Sequence[str] | None = None,
        expires_at: datetime | None = None,
    ) -> tuple[str, ApiKey]:
        """A new key for ``tenant`` (id or name); returns (the key, shown only now, its record).
        ``scopes``: None for every scope; ``expires_at``: naive UTC, in the future."""
        tenant_id = self.get(tenant).id
        kept = None if scopes is None else ",".join(check_scopes(list(scopes)))
        if expires_at is not None and expires_at <= utcnow():
            raise InvalidRequestError("expires_at must be in the future", param="expires_at")
        prefix = secrets.token_hex(6)
        key = f"hth_{prefix}_{secrets.token_urlsafe(32)}"
        key_id = "key_" + secrets.token_hex(8)
        self.store.execute(
            "INSERT INTO api_keys (id, tenant_id, prefix, key_hash, name, scopes, expires_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [key_id, tenant_id, prefix, _digest(key), name, kept, expires_at],
        )
        return key, self._key(key_id)

    def get_key(self, key_id: str) -> ApiKey:
        return self._key(key_id)

    def _key(self, key_id: str) -> ApiKey:
        row = self.store.fetchone(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE id = ?", [key_id])
        if row is None:
            raise NotFoundError(f"api key {key_id!r} not found", param="key_id")
        return _api_key(row)

    def list_keys(self, tenant: str | None = None) -> list[ApiKey]:
        sql = f"SELECT {_KEY_COLUMNS} FROM api_keys"
        params: list[str] = []
        if tenant is not None:
            sql += " WHERE tenant_id = ?"
            params.append(self.get(tenant).id)
        return [_api_key(r) for r in self.store.fetchall(sql + " ORDER BY created_at", params)]

    def revoke_key(self, key_id: str) -> ApiKey:
        self._key(key_id)
        self.store.execute(
            "UPDATE api_keys SET revoked_at = current_timestamp "
            "WHERE id = ? AND revoked_at IS NULL",
            [key_id],
        )
        return self._key(key_id)

    def has_keys(self) -> bool:
        """True once any unrevoked key or enabled user exists (then every request needs one)."""
        return (
            self.store.fetchone(
                "SELECT 1 FROM api_keys WHERE revoked_at IS NULL "
                "UNION ALL SELECT 1 FROM users WHERE disabled_at IS NULL LIMIT 1"
            )
            is not None
        )

    def authenticate(self, key: str) -> str | None:
        """The tenant id of a valid, unrevoked key; None otherwise. Constant-time on the digest."""
        found = self.identify(key)
        return found.tenant if found and not found.expired() else None

    def identify(self, key: str) -> Identity | None:
        """Who a valid, unrevoked key speaks for (expired or not: the caller says which); None
        otherwise."""
        parts = key.split("_", 2)
        if len(parts) != 3 or parts[0] != "hth":
            _digest(key)  # same work on malformed input
            return None
        row = self.store.fetchone(
            "SELECT tenant_id, key_hash, id, scopes, expires_at FROM api_keys "
            "WHERE prefix = ? AND revoked_at IS NULL",
            [parts[1]],
        )
        expected = row[1] if row else "0" * 64
        ok = hmac.compare_digest(_digest(key), expected)
        if not (row and ok):
            return None
        scopes = frozenset(row[3].split(",")) if row[3] else frozenset(SCOPES)
        return Identity(row[0], row[2], scopes, expires_at=row[4])


_KEY_COLUMNS = "id, tenant_id, prefix, name, created_at, revoked_at, scopes, expires_at"


def _api_key(row: Sequence[object]) -> ApiKey:
    scopes = tuple(str(row[6]).split(",")) if row[6] else SCOPES
    return ApiKey(*row[:6], scopes=scopes, expires_at=row[7])  # type: ignore[arg-type]
