"""The one exception → HTTP table. Every error leaves as an OpenAI error body.

``{"error": {"message", "type", "param", "code"}}``; 429/503 carry ``Retry-After``. Handlers
raise ``HearthError``s (Litestar's exception handlers below answer them); ASGI middleware that
answers before routing (auth, browser safety) sends the same answer with ``send_error``.
"""

from __future__ import annotations

import logging
import re

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException
from litestar.types import Send

from engine import (
    AuthenticationError,
    HearthError,
    InsufficientStorageError,
    InvalidRequestError,
    PayloadTooLargeError,
    RetryableError,
    is_disk_full,
)
from server.wire import ErrorBody, ErrorDetail

log = logging.getLogger(__name__)

# Litestar's own HTTP exceptions (routing, body size) → OpenAI error type.
_HTTP_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
    503: "overloaded_error",
}


def error_body(
    message: str, type_: str, param: str | None = None, code: str | None = None
) -> ErrorBody:
    """The OpenAI error body of every error response (and of an in-band SSE error)."""
    return ErrorBody(ErrorDetail(message, type_, param, code))


def _answer(exc: HearthError) -> tuple[ErrorBody, dict[str, str]]:
    """The body and headers of ``exc``'s response (its status is ``exc.status``)."""
    headers = {}
    if isinstance(exc, RetryableError):
        headers.update(exc.headers)
        headers["Retry-After"] = str(max(1, int(exc.retry_after)))
    if isinstance(exc, AuthenticationError):
        headers["WWW-Authenticate"] = "Bearer"
    if exc.status >= 500 and not isinstance(exc, RetryableError):  # 503s are expected states
        log.error("%s: %s", type(exc).__name__, exc.message)
    return error_body(exc.message, exc.type, exc.param, exc.code), headers


def hearth_error_response(exc: HearthError) -> Response:
    body, headers = _answer(exc)
    return Response(body, status_code=exc.status, headers=headers)


async def send_error(send: Send, exc: HearthError) -> None:
    """Answer ``exc`` from ASGI middleware, before any route runs, as the table does."""
    body, headers = _answer(exc)
    raw = msgspec.json.encode(body)
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
    head += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": exc.status, "headers": head})
    await send({"type": "http.response.body", "body": raw})


def _on_hearth_error(_: Request, exc: HearthError) -> Response:
    return hearth_error_response(exc)


def _on_http_exception(_: Request, exc: HTTPException) -> Response:
    status = exc.status_code
    message = exc.detail or "error"
    if status == 404:
        message = f"{message}: no such route"
    if status == 413:
        message = "the request body is larger than this server accepts (server.max_body_bytes)"
    if status >= 500:
        log.error("HTTP %d: %s", status, message)
    headers = dict(exc.headers or {})
    return Response(
        error_body(message, _HTTP_TYPES.get(status, "server_error"), None, None),
        status_code=status,
        headers=headers,
    )


def _on_unexpected(_: Request, exc: Exception) -> Response:
    if is_disk_full(exc):  # a full disk is the operator's to fix, and says so
        log.critical("disk full: %s", exc)
        return hearth_error_response(
            InsufficientStorageError(
                "the server's disk is full: nothing of this request was stored; retry after "
                "the operator frees space",
                code="disk_full",
            )
        )
    log.exception("unhandled error")
    return Response(
        error_body("internal error; see the server log", "server_error"), status_code=500
    )


EXCEPTION_HANDLERS = {
    HearthError: _on_hearth_error,
    HTTPException: _on_http_exception,
    Exception: _on_unexpected,
}


_AT = re.compile(r"at `\$(?P<path>[^`]*)`")
_UNKNOWN = re.compile(r"unknown field `(?P<name>[^`]+)`")


def decode_error(exc: Exception) -> InvalidRequestError:
    """msgspec's decode/validation error → 400 naming the field."""
    text = str(exc)
    if isinstance(exc, msgspec.ValidationError):
        unknown = _UNKNOWN.search(text)
        at = _AT.search(text)
        path = (at.group("path") if at else "").lstrip(".")
        if unknown:
            name = unknown.group("name")
            param = f"{path}.{name}" if path else name
            return InvalidRequestError(
                f"unknown parameter {param!r}: Hearth does not support it (it is not ignored "
                "silently; remove it)",
                param=param,
                code="unknown_parameter",
            )
        message = _AT.sub("", text).strip(" -")
        return InvalidRequestError(
            f"invalid value for {path or 'the body'!r}: {message}", param=path or None
        )
    if "depth" in text.lower() or "recursion" in text.lower():
        return InvalidRequestError("the JSON body is nested too deeply", code="invalid_json")
    if isinstance(exc, UnicodeDecodeError) or "utf-8" in text.lower():
        return InvalidRequestError(f"the body is not valid UTF-8: {text}", code="invalid_json")
    return InvalidRequestError(f"the body is not valid JSON: {text}", code="invalid_json")


def too_large(limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"the request body is larger than {limit} bytes (server.max_body_bytes)",
        code="payload_too_large",
    )
