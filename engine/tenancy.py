"""``TenancyService``: tenants and their API keys. A key is shown once, at creation; only its hash
is stored. Until the first key exists Hearth runs open as the single default tenant
(``auth_required`` is False); the server's auth middleware asks this service which tenant a key
belongs to. Blocking DuckDB work runs in threads.
"""

from __future__ import annotations

import asyncio
import hashlib

from engine.lru import LRU
from engine.storage import ApiKey, Database, Tenant

# Keys looked up recently (by digest), known or not: a flood of requests (or of bad keys) costs
# no database work per request, so it does not queue ahead of other tenants' lookups.
_CACHED_KEYS = 4096


class TenancyService:
    def __init__(self, db: Database, has_keys: bool) -> None:
        """Use :meth:`open` (it reads ``has_keys`` from the store)."""
        self._db = db
        self._has_keys = has_keys
        self._identities: LRU[str, tuple[str, str] | None] = LRU(_CACHED_KEYS)

    @classmethod
    async def open(cls, db: Database) -> TenancyService:
        return cls(db, await asyncio.to_thread(db.tenants.has_keys))

    @property
    def auth_required(self) -> bool:
        """True once any tenant key exists; before that Hearth runs open as the default tenant."""
        return self._has_keys

    async def authenticate(self, key: str) -> str | None:
        """The tenant id of ``key``, or None for an unknown or revoked key."""
        return await asyncio.to_thread(self._db.tenants.authenticate, key)

    async def identify(self, key: str) -> tuple[str, str] | None:
        """(tenant id, key id) of ``key``, or None for an unknown or revoked key. Answers from
        memory for keys seen recently (forgotten when any key is created or revoked)."""
        digest = hashlib.sha256(key.encode()).hexdigest()
        if digest in self._identities:
            return self._identities[digest]
        found = await asyncio.to_thread(self._db.tenants.identify, key)
        self._identities[digest] = found
        return found

    async def create_tenant(self, name: str) -> Tenant:
        return await asyncio.to_thread(self._db.tenants.create, name)

    async def get_tenant(self, tenant: str) -> Tenant:
        """By id or name; 404 when there is none."""
        return await asyncio.to_thread(self._db.tenants.get, tenant)

    async def get_key(self, key_id: str) -> ApiKey:
        """404 when there is none."""
        return await asyncio.to_thread(self._db.tenants.get_key, key_id)

    async def list_tenants(self) -> list[Tenant]:
        return await asyncio.to_thread(self._db.tenants.list)

    async def create_key(self, tenant: str, name: str | None = None) -> tuple[str, ApiKey]:
        """The new key (returned once) and its record."""
        key = await asyncio.to_thread(self._db.tenants.create_key, tenant, name)
        self._identities.clear()
        self._has_keys = True
        return key

    async def list_keys(self, tenant: str | None = None) -> list[ApiKey]:
        return await asyncio.to_thread(self._db.tenants.list_keys, tenant)

    async def revoke_key(self, key_id: str) -> ApiKey:
        key = await asyncio.to_thread(self._db.tenants.revoke_key, key_id)
        self._identities.clear()  # a revoked key is refused from the next request on
        self._has_keys = await asyncio.to_thread(self._db.tenants.has_keys)
        return key
