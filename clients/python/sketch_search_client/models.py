"""Typed answers of the service (plain dataclasses; `raw` keeps the full JSON for fields added later)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SearchResult:
    id: int
    score: float
    url: str
    thumbnail_url: str
    category: str | None
    metadata: dict[str, Any] = field(default_factory=dict)
    path: str | None = None  # relative to the gallery; None when the service hides paths
    width: int | None = None
    height: int | None = None
    file_size: int | None = None
    modified_at: str | None = None  # ISO 8601, UTC
    taken_at: str | None = None  # EXIF capture time

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SearchResult:
        names = cls.__dataclass_fields__
        return cls(**{name: data[name] for name in names if name in data})


@dataclass(frozen=True)
class SearchPage:
    results: list[SearchResult]
    k: int
    offset: int
    has_more: bool  # a next page (offset + k) can be asked for
    query: str  # the query kind that ran: sketch, text, sketch+text, ...
    index_version: str
    category: str | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def next_offset(self) -> int | None:
        return self.offset + self.k if self.has_more else None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SearchPage:
        return cls(results=[SearchResult.from_json(item) for item in data["results"]], k=data["k"],
                   offset=data.get("offset", 0), has_more=data.get("has_more", False), query=data["query"],
                   index_version=data["index_version"], category=data.get("category"),
                   timings_ms=data.get("timings_ms", {}), raw=data)


@dataclass(frozen=True)
class ServiceInfo:
    authorized: bool  # False: the service needs a key and none (or a wrong one) was sent; the rest is empty
    api_key_required: bool
    index_version: str | None = None
    index_size: int = 0
    categories: list[str] = field(default_factory=list)
    query_kinds: list[str] = field(default_factory=list)
    max_k: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ServiceInfo:
        return cls(authorized=data.get("authorized", True), api_key_required=data.get("api_key_required", False),
                   index_version=data.get("index_version"), index_size=data.get("index_size", 0),
                   categories=data.get("categories", []), query_kinds=data.get("query_kinds", []),
                   max_k=data.get("max_k"), raw=data)


@dataclass(frozen=True)
class BuildStatus:
    id: str
    state: str  # queued | running | finished | failed
    progress: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] | None = None
    error: str | None = None

    @property
    def done(self) -> bool:
        return self.state in ("finished", "failed")

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BuildStatus:
        return cls(id=data["id"], state=data["state"], progress=data.get("progress") or {},
                   result=data.get("result"), error=data.get("error"))
