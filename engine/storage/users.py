"""Users of a tenant (roles ``viewer``, ``member``, ``admin``) and their refresh tokens.

Passwords are hashed with scrypt (memory-hard: n=2^14, r=8, 16 MiB per hash) and a random salt;
only the hash is stored. A refresh token is shown once and stored as its SHA-256; it can be used
once: using it marks it used and issues the next token of the same family. A used (or revoked)
token presented again means it leaked: the whole family is revoked, so neither the thief nor
the user can refresh with it any more (the user logs in again).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from engine.errors import AuthenticationError, InvalidRequestError, NotFoundError
from engine.storage.db import Store
from engine.storage.tenants import ROLES, TenantRepo, utcnow

_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,190}$")
MIN_PASSWORD, MAX_PASSWORD = 10, 256
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}
_COLUMNS = "id, tenant_id, email, role, created_at, disabled_at"


@dataclass(frozen=True)
class User:
    id: str
    tenant_id: str
    email: str
    role: str
    created_at: datetime
    disabled_at: datetime | None


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, maxmem=64 << 20, **_SCRYPT)
    params = f"{_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}"
    return f"scrypt${params}${_b64(salt)}${_b64(digest)}"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def verify_password(password: str, stored: str) -> bool:
    try:
        _, n, r, p, salt, digest = stored.split("$")
        got = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=32,
            maxmem=64 << 20,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, base64.b64decode(digest))


# Checked against when the e-mail is unknown, so a wrong e-mail costs what a wrong password does.
_DUMMY_HASH = hash_password(secrets.token_hex(16))


def check_email(email: object) -> str:
    if not isinstance(email, str) or not _EMAIL.match(email):
        raise InvalidRequestError("email must be an e-mail address", param="email")
    return email.lower()


def check_password(password: object) -> str:
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise InvalidRequestError(
            f"password must be {MIN_PASSWORD}-{MAX_PASSWORD} characters", param="password"
        )
    return password


def check_role(role: object) -> str:
    if role not in ROLES:
        raise InvalidRequestError(f"role must be one of {list(ROLES)}", param="role")
    return str(role)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class UserRepo:
    def __init__(self, store: Store, tenants: TenantRepo) -> None:
        self.store = store
        self.tenants = tenants

    def create(self, tenant: str, email: str, password: str, role: str) -> User:
        tenant_id = self.tenants.get(tenant).id
        email, role = check_email(email), check_role(role)
        hashed = hash_password(check_password(password))
        if self.store.fetchone("SELECT 1 FROM users WHERE email = ?", [email]):
            raise InvalidRequestError(f"a user with e-mail {email!r} exists", param="email")
        user_id = "usr_" + secrets.token_hex(8)
        self.store.execute(
            "INSERT INTO users (id, tenant_id, email, password_hash, role) VALUES (?, ?, ?, ?, ?)",
            [user_id, tenant_id, email, hashed, role],
        )
        return self.get(user_id)

    def get(self, user_id: str, tenant: str | None = None) -> User:
        """404 when there is none (or it belongs to another tenant than ``tenant``)."""
        row = self.store.fetchone(f"SELECT {_COLUMNS} FROM users WHERE id = ?", [user_id])
        if row is None or (tenant is not None and row[1] != tenant):
            raise NotFoundError(f"user {user_id!r} not found", param="user_id")
        return User(*row)

    def list(self, tenant: str) -> list[User]:
        tenant_id = self.tenants.get(tenant).id
        rows = self.store.fetchall(
            f"SELECT {_COLUMNS} FROM users WHERE tenant_id = ? ORDER BY created_at", [tenant_id]
        )
        return [User(*r) for r in rows]

    def set_role(self, user_id: str, role: str, tenant: str | None = None) -> User:
        self.get(user_id, tenant)
        self.store.execute("UPDATE users SET role = ? WHERE id = ?", [check_role(role), user_id])
        return self.get(user_id)

    def disable(self, user_id: str, tenant: str | None = None) -> User:
        """The user can no longer log in; every refresh token of theirs is revoked."""
        self.get(user_id, tenant)
        with self.store.transaction() as tx:
            tx.execute(
                "UPDATE users SET disabled_at = current_timestamp "
                "WHERE id = ? AND disabled_at IS NULL",
                [user_id],
            )
            tx.execute(
                "UPDATE refresh_tokens SET revoked_at = current_timestamp "
                "WHERE user_id = ? AND revoked_at IS NULL",
                [user_id],
            )
        return self.get(user_id)

    def login(self, email: str, password: str) -> User:
        """The enabled user with this e-mail and password; 401 otherwise (one message for all)."""
        row = self.store.fetchone(
            "SELECT id, password_hash FROM users WHERE email = ? AND disabled_at IS NULL",
            [str(email).lower()],
        )
        ok = verify_password(str(password), row[1] if row else _DUMMY_HASH)
        if row is None or not ok:
            raise AuthenticationError("wrong e-mail or password")
        return self.get(row[0])

    # ---- refresh tokens ----------------------------------------------------------------------

    def issue_refresh(self, user: User, ttl_s: float, family: str | None = None) -> str:
        token = "hrt_" + secrets.token_urlsafe(32)
        self.store.execute(
            "INSERT INTO refresh_tokens (id, user_id, tenant_id, family, token_hash, expires_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [
                "rtk_" + secrets.token_hex(8),
                user.id,
                user.tenant_id,
                family or "fam_" + secrets.token_hex(8),
                _digest(token),
                utcnow() + timedelta(seconds=ttl_s),
            ],
        )
        return token

    def rotate_refresh(self, token: str, ttl_s: float) -> tuple[User, str]:
        """Use ``token`` once: (its user, the next token of its family). A token used before,
        revoked, expired or unknown is a 401; one used before also revokes its family."""
        with self.store.transaction() as tx:  # check and use in one step: used at most once
            row = tx.execute(
                "SELECT id, user_id, family, expires_at, used_at, revoked_at FROM refresh_tokens "
                "WHERE token_hash = ?",
                [_digest(str(token))],
            ).fetchone()
            if row is None:
                raise AuthenticationError("unknown refresh token")
            token_id, user_id, family, expires_at, used_at, revoked_at = row
            if used_at is not None:  # a replay: revoke the whole login
                tx.execute(
                    "UPDATE refresh_tokens SET revoked_at = current_timestamp "
                    "WHERE family = ? AND revoked_at IS NULL",
                    [family],
                )
            elif revoked_at is None and expires_at > utcnow():
                tx.execute(
                    "UPDATE refresh_tokens SET used_at = current_timestamp WHERE id = ?",
                    [token_id],
                )
        if used_at is not None:
            raise AuthenticationError(
                "this refresh token was already used: every token of its login is revoked; "
                "log in again"
            )
        if revoked_at is not None or expires_at <= utcnow():
            raise AuthenticationError("refresh token expired or revoked; log in again")
        user = self.get(user_id)
        if user.disabled_at is not None:
            raise AuthenticationError("user disabled")
        return user, self.issue_refresh(user, ttl_s, family)
