"""``TenancyService``: tenants, their API keys and their users. A key is shown once, at creation;
only its hash is stored. Until the first key (or user) exists Hearth runs open as the single
default tenant (``auth_required`` is False); the server's auth middleware asks this service who a
bearer token speaks for (:meth:`identify`). Blocking DuckDB work runs in threads.

Users log in with e-mail and password (:meth:`login`) and get a short-lived access token (a JWT,
``engine.tokens``) and a refresh token that works once (:meth:`refresh` rotates it).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from configs import AuthSettings
from engine import tokens
from engine.errors import TooManyRequestsError
from engine.lru import LRU
from engine.storage import ROLES, ApiKey, Database, Identity, Tenant, User

# Keys looked up recently (by digest), known or not: a flood of requests (or of bad keys) costs
# no database work per request, so it does not queue ahead of other tenants' lookups.
_CACHED_KEYS = 4096
# Password checks (scrypt: ~16 MiB and tens of ms each) at once, and waiting; past both, 429.
_PASSWORD_CHECKS, _PASSWORD_WAITING = 2, 16


class TenancyService:
    def __init__(
        self, db: Database, has_keys: bool, auth: AuthSettings | None = None, secret: bytes = b""
    ) -> None:
        """Use :meth:`open` (it reads ``has_keys`` from the store and loads the token secret)."""
        self._db = db
        self._has_keys = has_keys
        self._auth = auth or AuthSettings()
        self._secret = secret
        self._identities: LRU[str, Identity | None] = LRU(_CACHED_KEYS)
        self._password_checks = asyncio.Semaphore(_PASSWORD_CHECKS)
        self._password_waiting = 0

    @classmethod
    async def open(
        cls, db: Database, auth: AuthSettings | None = None, data_dir: Path | None = None
    ) -> TenancyService:
        secret = tokens.load_secret(data_dir) if data_dir is not None else b""
        return cls(db, await asyncio.to_thread(db.tenants.has_keys), auth, secret)

    @property
    def auth_required(self) -> bool:
        """True once any tenant key or user exists; before, Hearth runs open as the default
        tenant."""
        return self._has_keys

    async def authenticate(self, key: str) -> str | None:
        """The tenant id of ``key``, or None for an unknown, revoked or expired key."""
        return await asyncio.to_thread(self._db.tenants.authenticate, key)

    async def identify(self, token: str) -> Identity | None:
        """Who a bearer token speaks for: an API key (unknown or revoked: None; expired: the
        identity, whose ``expired()`` the caller checks) or a user's access token (None when
        invalid or expired). Keys seen recently are answered from memory (forgotten when any key
        is created or revoked)."""
        if tokens.looks_like_jwt(token):
            return self._user_identity(token)
        digest = hashlib.sha256(token.encode()).hexdigest()
        if digest in self._identities:
            return self._identities[digest]
        found = await asyncio.to_thread(self._db.tenants.identify, token)
        self._identities[digest] = found
        return found

    def _user_identity(self, token: str) -> Identity | None:
        if not self._secret:
            return None
        try:
            claims = tokens.decode(token, self._secret)
        except tokens.TokenError:
            return None
        role = claims.get("role")
        if role not in ROLES or not isinstance(claims.get("tenant"), str):
            return None
        return Identity(
            claims["tenant"], None, ROLES[role], user_id=str(claims.get("sub")), role=role
        )

    # ---- tenants and keys ----------------------------------------------------------------------

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

    async def create_key(
        self,
        tenant: str,
        name: str | None = None,
        scopes: Sequence[str] | None = None,
        expires_at: datetime | None = None,
    ) -> tuple[str, ApiKey]:
        """The new key (returned once) and its record; ``scopes`` None = every scope,
        ``expires_at`` naive UTC or None (never)."""
        key = await asyncio.to_thread(self._db.tenants.create_key, tenant, name, scopes, expires_at)
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

    def forget_tenant(self, tenant: str) -> None:
        """Forget cached key lookups (the tenant's keys are gone) and whether keys exist."""
        self._identities.clear()
        self._has_keys = self._db.tenants.has_keys()

    # ---- users ---------------------------------------------------------------------------------

    async def create_user(self, tenant: str, email: str, password: str, role: str) -> User:
        user = await asyncio.to_thread(self._db.users.create, tenant, email, password, role)
        self._has_keys = True
        return user

    async def list_users(self, tenant: str) -> list[User]:
        return await asyncio.to_thread(self._db.users.list, tenant)

    async def get_user(self, user_id: str, tenant: str | None = None) -> User:
        return await asyncio.to_thread(self._db.users.get, user_id, tenant)

    async def set_role(self, user_id: str, role: str, tenant: str | None = None) -> User:
        """Takes effect at the user's next refresh (access tokens carry the role)."""
        return await asyncio.to_thread(self._db.users.set_role, user_id, role, tenant)

    async def disable_user(self, user_id: str, tenant: str | None = None) -> User:
        user = await asyncio.to_thread(self._db.users.disable, user_id, tenant)
        self._has_keys = await asyncio.to_thread(self._db.tenants.has_keys)
        return user

    async def login(self, email: str, password: str) -> dict[str, Any]:
        """An access token and a refresh token for a user's e-mail and password (401 if
        wrong)."""
        if self._password_waiting >= _PASSWORD_WAITING:
            raise TooManyRequestsError("too many logins at once; retry", retry_after=2)
        self._password_waiting += 1
        try:
            async with self._password_checks:
                user = await asyncio.to_thread(self._db.users.login, email, password)
        finally:
            self._password_waiting -= 1
        refresh = await asyncio.to_thread(
            self._db.users.issue_refresh, user, self._auth.refresh_token_ttl_s
        )
        return self._grant(user, refresh)

    async def refresh(self, refresh_token: str) -> dict[str, Any]:
        """Use a refresh token once: a new access token and the next refresh token. A token used
        twice is a 401 and ends its login (every token of it is revoked)."""
        user, refresh = await asyncio.to_thread(
            self._db.users.rotate_refresh, refresh_token, self._auth.refresh_token_ttl_s
        )
        return self._grant(user, refresh)

    def _grant(self, user: User, refresh: str) -> dict[str, Any]:
        now = int(time.time())
        ttl = self._auth.access_token_ttl_s
        claims = {
            "sub": user.id,
            "tenant": user.tenant_id,
            "role": user.role,
            "iat": now,
            "exp": now + ttl,
        }
        return {
            "access_token": tokens.encode(claims, self._secret),
            "token_type": "bearer",
            "expires_in": ttl,
            "refresh_token": refresh,
            "user": {"id": user.id, "tenant_id": user.tenant_id, "role": user.role},
        }
