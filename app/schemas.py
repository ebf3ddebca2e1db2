"""Typed response bodies of the API (they are the OpenAPI schema at /docs)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class StrokesQuery(BaseModel):
    """JSON body of POST /search (the encoder's stroke formats: `strokes` or QuickDraw `drawing`)."""

    strokes: list[list[list[float]]] | None = Field(
        None, description="plain strokes: [[[x, y], [x, y], ...], ...] in any coordinate range"
    )
    drawing: list[list[list[float]]] | None = Field(None, description="QuickDraw: [[[x...], [y...]], ...]")
    k: int = Field(10, ge=1, description="how many photos to return (at most SBIR_MAX_K)")
    category: str | None = Field(None, description="only photos of this category")


class Photo(BaseModel):
    id: int
    score: float = Field(description="cosine similarity of sketch and photo, higher is closer")
    url: str = Field(description="the photo file (signed and expiring when an API key is configured)")
    thumbnail_url: str = Field(description="a 256 px thumbnail (signed likewise)")
    category: str | None
    metadata: dict[str, Any] = Field(default_factory=dict)


class SearchResponse(BaseModel):
    results: list[Photo]
    k: int
    category: str | None
    index_version: str
    input: str = Field(description="image | strokes")
    batch_size: int = Field(description="how many sketches shared this request's encoder call")
    timings_ms: dict[str, float] = Field(description="read, decode, queue, encode, search, metadata, total")


class Error(BaseModel):
    error: str = Field(description="stable machine-readable code")
    detail: str = Field(description="what was wrong, for people")


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    ready: bool
    model_loaded: bool
    index_loaded: bool
    index_version: str | None
    index_size: int
    detail: str | None = None


class LockedInfo(BaseModel):
    """GET /info without a valid key, when one is configured: only that a key is needed."""

    api_key_required: bool = True
    authorized: bool = False
    detail: str


class Info(BaseModel):
    encoder: dict[str, Any] = Field(description="the encoder's describe(): config, fingerprint, ...")
    fingerprint: str
    random_weights: bool
    warning: str | None = Field(None, description="set when results are meaningless (random weights)")
    device: str
    index_version: str | None
    index_size: int
    categories: list[str]
    api_key_required: bool
    authorized: bool = Field(True, description="the request may search (no key needed, or a valid one sent)")
    max_k: int
    max_upload_bytes: int
    max_batch: int
    max_wait_ms: float


class QuerySampleSaved(BaseModel):
    vectors: int = Field(description="query vectors written to SBIR_QUERY_SAMPLE_PATH")
    seen: int = Field(description="queries embedded since the service started")
    capacity: int = Field(description="SBIR_QUERY_SAMPLE: the most vectors the sample keeps")
