"""Typed exceptions built from convo's error body
``{"error": {"code", "message", "details", "traceId"}}``."""

from __future__ import annotations

from typing import Any


class ConvoError(Exception):
    """An error answer from convo (or no answer at all, for `ConvoUnavailable`)."""

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None,
                 trace_id: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(f"{status} {code}: {message}" + (f" (trace {trace_id})" if trace_id else ""))
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}
        self.trace_id = trace_id
        self.retry_after = retry_after

    @property
    def field(self) -> str | None:
        """The offending field (``messages[0].content``, ``maxAge``…) of a 400."""
        value = self.details.get("field")
        return value if isinstance(value, str) else None


class InvalidRequest(ConvoError):
    """400: the request was refused and changed nothing."""


class Unauthorized(ConvoError):
    """401: no valid bearer token."""


class NotFound(ConvoError):
    """404: no such conversation for this owner (or no such route)."""


class Conflict(ConvoError):
    """409: the conversation has ended, an idempotency key was reused, …"""


class PayloadTooLarge(ConvoError):
    """413: a message, metadata or request over its size limit."""


class RateLimited(ConvoError):
    """429: over the conversation's appends per minute; see ``retry_after``."""


class ConvoUnavailable(ConvoError):
    """5xx, or no answer: the request may be retried."""


_BY_STATUS: dict[int, type[ConvoError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    429: RateLimited,
}


def from_response(status: int, body: Any, retry_after: float | None) -> ConvoError:
    """The exception for an error answer, whatever its body holds."""
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        err = {}
    cls = _BY_STATUS.get(status, ConvoUnavailable if status >= 500 else ConvoError)
    return cls(
        status,
        str(err.get("code") or f"http_{status}"),
        str(err.get("message") or "no error body"),
        err.get("details") if isinstance(err.get("details"), dict) else None,
        err.get("traceId") if isinstance(err.get("traceId"), str) else None,
        retry_after,
    )
