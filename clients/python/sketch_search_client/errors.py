"""Exceptions of the client: every refusal of the service carries its HTTP status and stable error code."""

from __future__ import annotations


class SketchSearchError(Exception):
    """Anything that went wrong talking to the service."""


class ServiceUnreachableError(SketchSearchError):
    """No answer: the connection failed or timed out."""


class ServiceError(SketchSearchError):
    """The service refused the request: `status` (HTTP), `code` (e.g. "bad_k", "unauthorized") and `detail`."""

    def __init__(self, status: int, code: str, detail: str, retry_after: float | None = None) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.retry_after = retry_after  # seconds the service asked to wait (Retry-After on 503/429), or None


class AuthError(ServiceError):
    """401 (no or wrong key) or 403 (a key of the other kind: admin for search, search for admin)."""


class NotReadyError(ServiceError):
    """503: the service is starting, has no index yet, or its index server is unreachable; retry later."""


class UnexpectedAnswerError(ServiceError):
    """An answer that is not the service's: a success status with a body that is no such result (a proxy's HTML
    page, a truncated or undecodable body). `code` is "unexpected_answer"; `detail` shows the body's start."""


class InputError(SketchSearchError, ValueError):
    """A query the client cannot send (a sketch of unknown type, an unreadable file, NaN in strokes, text that is
    not valid Unicode, a photo id that is no integer, no sketch, text or like at all) — found before any request."""


def error_for(status: int, code: str, detail: str, retry_after: float | None = None) -> ServiceError:
    kind = AuthError if status in (401, 403) else NotReadyError if status == 503 else ServiceError
    return kind(status, code, detail, retry_after)
