"""Outbound HTTP for agents and webhooks: only to hosts the operator allow-lists, signed with
HMAC-SHA256, under a deadline, with a bounded response and no redirects.

The signature scheme is the same both ways (inbound webhooks verify it, webhook tools and result
callbacks send it): ``X-Hearth-Timestamp: <unix seconds>`` and
``X-Hearth-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from engine.errors import InvalidRequestError

TIMESTAMP_HEADER = "X-Hearth-Timestamp"
SIGNATURE_HEADER = "X-Hearth-Signature"
DELIVERY_HEADER = "X-Hearth-Delivery"
MAX_URL_CHARS = 2000


class HttpCallError(Exception):
    """An outbound call that did not give a usable answer (refused, timed out, too big, 3xx)."""


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(
    secret: str,
    timestamp: str | None,
    body: bytes,
    signature: str | None,
    *,
    max_skew_s: float,
    now: float | None = None,
) -> str | None:
    """What is wrong with a signed request (``None`` when it is good). Constant-time compare;
    a timestamp further than ``max_skew_s`` from now is refused (replays of old requests)."""
    if not timestamp or not signature:
        return f"send the {TIMESTAMP_HEADER} and {SIGNATURE_HEADER} headers"
    try:
        sent = float(timestamp)
    except ValueError:
        return f"{TIMESTAMP_HEADER} must be unix seconds"
    if abs((time.time() if now is None else now) - sent) > max_skew_s:
        return f"{TIMESTAMP_HEADER} is more than {max_skew_s:g} s from the server's clock"
    if not hmac.compare_digest(sign(secret, timestamp, body), signature.strip()):
        return "the signature does not match the body (HMAC-SHA256 of timestamp.body)"
    return None


@dataclass(frozen=True)
class HttpPolicy:
    """Where agents may connect. ``allow_hosts`` holds ``host`` or ``host:port`` entries (lower
    case); empty means no outbound call at all (the default)."""

    allow_hosts: frozenset[str] = frozenset()
    timeout_s: float = 10.0
    max_response_bytes: int = 256 * 1024

    @classmethod
    def parse(cls, hosts: str, timeout_s: float, max_response_bytes: int) -> HttpPolicy:
        entries = frozenset(h.strip().lower() for h in hosts.split(",") if h.strip())
        return cls(entries, timeout_s, max_response_bytes)

    @property
    def enabled(self) -> bool:
        return bool(self.allow_hosts)

    def check_url(self, url: str, param: str = "url") -> str:
        """The URL when it may be called, else a 400 naming ``param`` and what to change."""
        if len(url) > MAX_URL_CHARS:
            raise InvalidRequestError(f"{param}: at most {MAX_URL_CHARS} characters", param=param)
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidRequestError(f"{param}: an http(s) URL with a host", param=param)
        if parts.username or parts.password:
            raise InvalidRequestError(f"{param}: credentials in the URL", param=param)
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise InvalidRequestError(f"{param}: bad port", param=param) from None
        host = parts.hostname.lower()
        if host not in self.allow_hosts and f"{host}:{port}" not in self.allow_hosts:
            raise InvalidRequestError(
                f"{param}: host {host}:{port} is not allow-listed; the operator adds it to "
                "[agents] http_allow_hosts (HEARTH_AGENTS_HTTP_ALLOW_HOSTS)",
                param=param,
                code="host_not_allowed",
            )
        return url

    async def call(
        self,
        method: str,
        url: str,
        payload: Any = None,
        *,
        secret: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """Send ``payload`` as JSON (signed when ``secret`` is given); return the status and the
        body (JSON when it parses, else text). Raises :class:`HttpCallError` on a refused host,
        the deadline, a body over ``max_response_bytes`` or a redirect."""
        try:
            self.check_url(url)
        except InvalidRequestError as exc:
            raise HttpCallError(exc.message) from None
        body = b"" if payload is None else json.dumps(payload).encode()
        sent = {"content-type": "application/json", **(headers or {})}
        if secret is not None:
            stamp = str(int(time.time()))
            sent[TIMESTAMP_HEADER] = stamp
            sent[SIGNATURE_HEADER] = sign(secret, stamp, body)
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self._send(method, url, body, sent)
        except TimeoutError:
            raise HttpCallError(f"no answer within {self.timeout_s:g} s") from None
        except httpx.HTTPError as exc:
            raise HttpCallError(f"{type(exc).__name__}: {exc}") from None

    async def _send(
        self, method: str, url: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, Any]:
        # trust_env=False: no proxy or netrc from the environment; redirects are answers.
        async with (
            httpx.AsyncClient(follow_redirects=False, trust_env=False) as client,
            client.stream(method, url, content=body or None, headers=headers) as resp,
        ):
            if resp.is_redirect:
                raise HttpCallError(f"HTTP {resp.status_code}: redirects are not followed")
            data = bytearray()
            async for chunk in resp.aiter_bytes():
                data += chunk
                if len(data) > self.max_response_bytes:
                    raise HttpCallError(
                        f"the answer is over {self.max_response_bytes} bytes; refused"
                    )
            text = data.decode(errors="replace")
            try:
                return resp.status_code, json.loads(text)
            except ValueError:
                return resp.status_code, text
