"""Request ids and the access log.

``RequestIds`` (the outermost middleware) takes the client's ``X-Request-Id`` when it is a sane
token (1-128 of ``[A-Za-z0-9._:-]``), else makes one (``req_<hex>``); returns it as
``x-request-id`` on every response; keeps it in a context variable, so every log line written
while serving the request carries it; and writes one access line per request: method, path,
status, duration, tenant — never headers, bodies or prompt text. Every log line (Hearth's and
uvicorn's) passes ``RedactFilter``: e-mail addresses, phone numbers, API keys (all but their
public prefix), access and refresh tokens, bearer values and the admin key are replaced.

``JsonFormatter`` writes log records as one JSON object per line (``server.log_format = "json"``):
``ts``, ``level``, ``logger``, ``message``, ``request_id`` (when in a request), ``exc`` (a
traceback).
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import re
import secrets
import time
from typing import Any

from litestar.types import ASGIApp, Message, Receive, Scope, Send

from configs import ConfigError

access = logging.getLogger("hearth.access")
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
_SANE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def request_id_of(headers: list[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name.lower() == b"x-request-id":
            text = value.decode("latin-1").strip()
            if _SANE.match(text):
                return text
            break
    return "req_" + secrets.token_hex(12)


class RequestIds:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id_of(scope.get("headers", []))  # type: ignore[arg-type]
        scope.setdefault("state", {})["request_id"] = rid  # type: ignore[typeddict-item]
        token = REQUEST_ID.set(rid)
        started = time.perf_counter()
        status = [500]

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                headers = [*message.get("headers", []), (b"x-request-id", rid.encode())]
                message = {**message, "headers": headers}  # type: ignore[assignment]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            access.info(
                "%s %s %d",
                scope.get("method"),
                scope["path"],
                status[0],
                extra={
                    "status": status[0],
                    "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                    "tenant": scope.get("state", {}).get("tenant"),
                },
            )
            REQUEST_ID.reset(token)


_REDACTIONS = (
    # API keys keep their public prefix (it names the key in the admin API), never the secret.
    (re.compile(r"hth_([0-9a-f]{12})_[A-Za-z0-9_-]+"), r"hth_\1_<redacted>"),
    (re.compile(r"hrt_[A-Za-z0-9_-]+"), "hrt_<redacted>"),
    (re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), "<jwt>"),
    (re.compile(r"(?i)\b(bearer\s+)[^\s'\"]+"), r"\1<redacted>"),
    (re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"), "<email>"),
    (
        re.compile(
            r"(?<![\w/.:-])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)[\s.-]?|\d{2,4}[\s.-])"
            r"\d{3,4}[\s.-]\d{3,5}(?![\w/.:-])"
        ),
        "<phone>",
    ),
)


def redact(text: str) -> str:
    """``text`` without e-mail addresses, phone numbers, API keys, tokens or the admin key."""
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    admin_key = os.environ.get("HEARTH_ADMIN_KEY")
    if admin_key and len(admin_key) >= 8:
        text = text.replace(admin_key, "<admin-key>")
    return text


class RedactFilter(logging.Filter):
    """Rewrites each record's message (and traceback) through :func:`redact` before any
    handler formats it."""

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def redact_every_handler() -> None:
    """Add :class:`RedactFilter` to every handler configured so far (root, uvicorn's)."""
    loggers = [logging.getLogger(), *logging.root.manager.loggerDict.values()]
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            if not any(isinstance(f, RedactFilter) for f in handler.filters):
                handler.addFilter(RedactFilter())


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to every record (None outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


_EXTRAS = ("status", "duration_ms", "tenant")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None) or REQUEST_ID.get()
        if rid:
            out["request_id"] = rid
        for key in _EXTRAS:
            if hasattr(record, key):
                out[key] = getattr(record, key)
        if record.exc_text:
            out["exc"] = record.exc_text
        elif record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure_logging(log_format: str, level: str = "info") -> None:
    """Root logging: ``text`` (with the request id) or ``json``; one handler on stderr."""
    if log_format not in ("text", "json"):
        raise ConfigError(f"setting server.log_format: {log_format!r} is not 'text' or 'json'")
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.addFilter(RedactFilter())
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s")
        )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
