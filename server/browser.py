"""Browser safety: what stops a web page from using a Hearth that runs open on this machine.

With no tenant keys any loopback client is the default tenant, and a browser on this machine is a
loopback client. Two attacks reach it: a page whose DNS name is rebound to 127.0.0.1 (same-origin
to the browser, so it reads the answers), and a cross-site form post (no preflight). So:

- **Host allow-list** (open mode): the ``Host`` header must name one of ``server.allowed_hosts``
  (loopback names by default; ``*`` turns the check off), else 400 — a rebound name is not one.
- **Origin** (open mode): a request that carries an ``Origin`` header must come from Hearth's own
  origin (same host and port as ``Host``) or one of ``server.cors_origins`` (none by default),
  else 403.
- **Content-Type** (always): a request with a body must be ``application/json`` (or
  ``multipart/form-data`` for uploads, which the Origin rule covers), else 415; the form
  encodings a page can post without a preflight are refused before any handler runs.

CORS headers are sent only for ``server.cors_origins`` (``server.app``). Binding to a non-loopback
address with no keys and no admin key refuses to start unless ``server.insecure_open``
(``--insecure-open``).
"""

from __future__ import annotations

from litestar.types import ASGIApp, Receive, Scope, Send

from engine import (
    HearthError,
    InvalidRequestError,
    PermissionDeniedError,
    UnsupportedMediaTypeError,
)
from server.errors import send_error
from server.state import state_of

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1", "testclient")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_UNCHECKED_PATHS = frozenset({"/health", "/ready"})


def names(csv: str) -> frozenset[str]:
    """A comma-separated setting as a set of lower-case names."""
    return frozenset(n.strip().lower() for n in csv.split(",") if n.strip())


def is_loopback(host: str) -> bool:
    return host.strip("[]").lower() in LOOPBACK_HOSTS or host.startswith("127.")


def _hostname(host: str) -> str:
    """``Host`` without its port: ``localhost:8000`` → ``localhost``, ``[::1]:80`` → ``::1``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class BrowserGuard:
    def __init__(self, app: ASGIApp, allowed_hosts: str, cors_origins: str) -> None:
        self.app = app
        self.hosts = names(allowed_hosts)
        self.origins = names(cors_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in _UNCHECKED_PATHS:
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        error = self._content_type(scope, headers)
        if error is None and self._open(scope):
            error = self._host(headers) or self._origin(headers)
        if error is not None:
            await send_error(send, error)
            return
        await self.app(scope, receive, send)

    @staticmethod
    def _open(scope: Scope) -> bool:
        hearth = state_of(scope["app"]).hearth
        return hearth is not None and not hearth.tenancy.auth_required

    def _host(self, headers: dict[bytes, str]) -> HearthError | None:
        if "*" in self.hosts or b"host" not in headers:  # browsers always send a Host
            return None
        host = _hostname(headers[b"host"])
        if host in self.hosts:
            return None
        return InvalidRequestError(
            f"Host {host!r} is not allowed: Hearth runs without API keys and answers only "
            "requests to its allowed host names (server.allowed_hosts)"
        )

    def _origin(self, headers: dict[bytes, str]) -> HearthError | None:
        origin = headers.get(b"origin")
        if origin is None or origin.lower() in self.origins:
            return None
        if origin.lower().split("://", 1)[-1] == headers.get(b"host", "").lower():
            return None  # same origin: a page Hearth served itself (its Host passed the list)
        return PermissionDeniedError(
            f"requests from web origin {origin!r} are refused: Hearth runs without API keys "
            "(allow an origin with server.cors_origins)"
        )

    @staticmethod
    def _content_type(scope: Scope, headers: dict[bytes, str]) -> HearthError | None:
        if scope.get("method") not in _BODY_METHODS:
            return None
        kind = headers.get(b"content-type", "").split(";")[0].strip().lower()
        if kind in ("application/json", "multipart/form-data"):
            return None
        no_body = headers.get(b"content-length", "0") == "0" and b"transfer-encoding" not in headers
        if not kind and no_body:
            return None  # no body at all
        return UnsupportedMediaTypeError(
            f"Content-Type {kind or '(none)'!r} is not accepted: send the body as "
            "application/json (uploads: multipart/form-data)"
        )


def open_mode_refusal(
    host: str, insecure_open: bool, has_keys: bool, admin_key_set: bool
) -> str | None:
    """Why Hearth must not start: bound beyond loopback with no tenant keys and no admin key to
    create them (unless ``insecure_open``)."""
    if has_keys or admin_key_set or insecure_open or is_loopback(host):
        return None
    return (
        f"refusing to serve on {host} with no tenant keys and no HEARTH_ADMIN_KEY: Hearth would "
        "run open, with no way to create keys remotely. Set HEARTH_ADMIN_KEY and create a tenant "
        "and a key (hearth admin), bind to 127.0.0.1, or pass --insecure-open "
        "(server.insecure_open) to accept the risk"
    )


def browser_guard(allowed_hosts: str, cors_origins: str):  # noqa: ANN201 - middleware factory
    def factory(app: ASGIApp) -> ASGIApp:
        return BrowserGuard(app, allowed_hosts, cors_origins)

    return factory
