"""The long-lived objects a running service holds, created by the lifespan handler and injected into routes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fastapi import Header, Request

from encoder import PromptedCLIP
from photo_index import Reader

from .access import Access
from .batching import MicroBatcher
from .errors import APIError
from .index_holder import IndexHolder
from .metrics import Metrics
from .photos import ThumbnailCache
from .query_sample import QuerySample
from .search import Query, QueryResult, SearchEngine
from .settings import Settings

RANDOM_WEIGHTS_WARNING = (
    "The encoder has random weights (pretrained=none): search results are meaningless. "
    "This mode is for smoke tests only."
)


@dataclass
class Services:
    settings: Settings
    encoder: PromptedCLIP
    metrics: Metrics
    index: IndexHolder
    engine: SearchEngine
    batcher: MicroBatcher[Query, QueryResult]
    thumbnails: ThumbnailCache
    fingerprint: str
    query_sample: QuerySample | None = None

    def gallery_root(self, reader: Reader) -> Path | None:
        """Where photos may be served from: the configured root, else the folder the index was built from."""
        if self.settings.gallery_root is not None:
            return self.settings.gallery_root
        return Path(reader.gallery_root) if reader.gallery_root else None

    @property
    def warning(self) -> str | None:
        return RANDOM_WEIGHTS_WARNING if self.encoder.random_weights else None


# The dependencies of every request are `async def` although they never await: FastAPI runs a plain `def` dependency
# in its thread pool, a round trip through a worker thread (and the GIL) per dependency per request, for what is a
# look-up on the app's state. At c=16 those hops were a fifth of the event loop's CPU (py-spy).
async def get_services(request: Request) -> Services:
    services = getattr(request.app.state, "services", None)
    if services is None:
        raise APIError(503, "not_ready", "The service is starting.")
    return services


def get_access(request: Request) -> Access:
    return request.app.state.access


def require_api_key(request: Request, x_api_key: str | None = Header(None, description="needed when an API key "
                                                                                      "is configured")) -> None:
    """Refuse (401) when API keys are configured and the X-API-Key header is none of them."""
    if not get_access(request).key_ok(x_api_key):
        raise APIError(401, "unauthorized", "A valid X-API-Key header is required.")
