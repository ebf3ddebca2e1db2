"""Client of the sketch-search service: `Client` / `AsyncClient`, typed results, errors carrying the service's
error code, and the `sketch-search` CLI. Needs only httpx (Pillow to pass PIL images)."""

from .client import AsyncClient, Client
from .errors import (
    AuthError,
    InputError,
    NotReadyError,
    ServiceError,
    ServiceUnreachableError,
    SketchSearchError,
    UnexpectedAnswerError,
)
from .models import BuildStatus, SearchPage, SearchResult, ServiceInfo

__all__ = [
    "AsyncClient",
    "AuthError",
    "BuildStatus",
    "Client",
    "InputError",
    "NotReadyError",
    "SearchPage",
    "SearchResult",
    "ServiceError",
    "ServiceInfo",
    "ServiceUnreachableError",
    "SketchSearchError",
    "UnexpectedAnswerError",
]
