"""Short-lived access tokens for users: JWTs signed with HS256 (RFC 7519), standard library only.

Claims: ``sub`` (user id), ``tenant``, ``role``, ``iat`` and ``exp`` (seconds since the epoch).
Only ``{"alg": "HS256", "typ": "JWT"}`` is accepted: another ``alg`` (``none`` included) is
refused before any signature check. The signing secret is ``$HEARTH_JWT_SECRET`` or, without
it, 32 random bytes kept in ``<data dir>/jwt.secret`` (mode 0600), made on first start.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

SECRET_ENV = "HEARTH_JWT_SECRET"
_HEADER = {"alg": "HS256", "typ": "JWT"}
MAX_TOKEN_CHARS = 4096


class TokenError(ValueError):
    """The token is malformed, not signed by this server, or expired."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode(claims: dict[str, Any], secret: bytes) -> str:
    head = _b64(json.dumps(_HEADER, separators=(",", ":")).encode())
    body = _b64(json.dumps(claims, separators=(",", ":")).encode())
    signature = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(signature)}"


def decode(token: str, secret: bytes, now: float | None = None) -> dict[str, Any]:
    """The claims of a valid, unexpired token; ``TokenError`` otherwise."""
    if len(token) > MAX_TOKEN_CHARS or token.count(".") != 2:
        raise TokenError("not a JWT")
    head, body, signature = token.split(".")
    try:
        header = json.loads(_unb64(head))
        given = _unb64(signature)
    except (ValueError, UnicodeDecodeError) as exc:
        raise TokenError("malformed JWT") from exc
    if header != _HEADER:
        raise TokenError("only HS256 JWTs are accepted")
    expected = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(given, expected):
        raise TokenError("bad signature")
    try:
        claims = json.loads(_unb64(body))
    except (ValueError, UnicodeDecodeError) as exc:
        raise TokenError("malformed JWT") from exc
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        raise TokenError("no expiry")
    if exp <= (time.time() if now is None else now):
        raise TokenError("expired")
    return claims


def looks_like_jwt(token: str) -> bool:
    return token.startswith("eyJ") and token.count(".") == 2


def load_secret(data_dir: Path) -> bytes:
    """``$HEARTH_JWT_SECRET``, else the data directory's ``jwt.secret`` (created if absent)."""
    from_env = os.environ.get(SECRET_ENV)
    if from_env:
        return from_env.encode()
    path = Path(data_dir) / "jwt.secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
    return path.read_bytes()
