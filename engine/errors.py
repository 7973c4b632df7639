"""The one error hierarchy. The server maps each class to an HTTP status and an OpenAI error
body."""

from __future__ import annotations

import errno


class HearthError(Exception):
    """Base class. ``param`` names the request field at fault; ``code`` is a stable machine tag."""

    status = 500
    type = "server_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code

    def __reduce__(self) -> tuple:
        # Pickled with its fields (errors raised in a sandboxed worker cross a process boundary).
        return (_rebuild, (type(self), self.message, dict(self.__dict__)))


def _rebuild(cls: type[HearthError], message: str, state: dict) -> HearthError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return error


class InvalidRequestError(HearthError):
    status = 400
    type = "invalid_request_error"


class ContextLengthError(InvalidRequestError):
    def __init__(self, message: str, *, param: str | None = "messages"):
        super().__init__(message, param=param, code="context_length_exceeded")


class AuthenticationError(HearthError):
    status = 401
    type = "authentication_error"


class PermissionDeniedError(HearthError):
    status = 403
    type = "permission_error"


class NotFoundError(HearthError):
    status = 404
    type = "not_found_error"


class ConflictError(HearthError):
    """The request conflicts with the current state (e.g. deleting a tenant whose job runs)."""

    status = 409
    type = "conflict_error"


class PayloadTooLargeError(HearthError):
    status = 413
    type = "invalid_request_error"


class UnsupportedMediaTypeError(HearthError):
    """A body in a format the route does not read (JSON, or multipart for uploads)."""

    status = 415
    type = "invalid_request_error"


class RequestTimeoutError(HearthError):
    """A request passed its deadline (its ``timeout``, at most the server's maximum)."""

    status = 408
    type = "timeout_error"


class UnprocessableError(HearthError):
    """The request is well-formed but cannot be served, e.g. a JSON Schema too complex to
    compile."""

    status = 422
    type = "invalid_request_error"


class RetryableError(HearthError):
    """Errors that carry a Retry-After (seconds)."""

    def __init__(self, message: str, *, retry_after: int = 1, code: str | None = None):
        super().__init__(message, code=code)
        self.retry_after = retry_after
        # Extra response headers (the x-ratelimit-* figures of a 429).
        self.headers: dict[str, str] = {}


class TooManyRequestsError(RetryableError):
    status = 429
    type = "rate_limit_error"


class OverloadedError(RetryableError):
    status = 503
    type = "overloaded_error"


class NotReadyError(RetryableError):
    status = 503
    type = "not_ready_error"


class ShuttingDownError(RetryableError):
    """The server drains for shutdown: retry on another instance or after it restarts."""

    status = 503
    type = "unavailable_error"


class InsufficientStorageError(HearthError):
    """The disk is full: nothing of the request was kept (its transaction rolled back)."""

    status = 507
    type = "insufficient_storage_error"


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (an OSError, or DuckDB's error text) says the disk is full."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return "No space left on device" in str(exc) or "Disk quota exceeded" in str(exc)


class BackendError(HearthError):
    status = 500
    type = "server_error"
