"""Typed response bodies of the API (they are the OpenAPI schema at /docs)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .query_fields import DEFAULT_TEXT_WEIGHT, MAX_TEXT_CHARS

TEXT_HELP = ("words to search for (the frozen CLIP text tower, prompt 'a photo of a {text}'), alone or with a "
             f"sketch, photo or liked photo; at most {MAX_TEXT_CHARS} characters by default (SBIR_MAX_TEXT_CHARS)")
TEXT_WEIGHT_HELP = ("0..1: weight of the text in a composed query, the normalised (1-w)·picture + w·text "
                    f"(default {DEFAULT_TEXT_WEIGHT}, SBIR_TEXT_WEIGHT)")
LIKE_HELP = "id of an indexed photo: its stored vector is the query (more like this); not with a sketch"
OFFSET_HELP = "results to skip (paging, in a stable order); offset + k at most SBIR_MAX_RESULTS"
AS_HELP = "photo: the uploaded image is a photo, embedded by the photo branch; sketch (default) otherwise"


class StrokesQuery(BaseModel):
    """JSON body of POST /search: a sketch as strokes (the encoder's formats: `strokes` or QuickDraw `drawing`),
    text, a liked photo, or strokes/liked photo with text. Every field may also go in the query string."""

    model_config = ConfigDict(populate_by_name=True)

    strokes: list[list[list[float]]] | None = Field(
        None, description="plain strokes: [[[x, y], [x, y], ...], ...] in any coordinate range"
    )
    drawing: list[list[list[float]]] | None = Field(None, description="QuickDraw: [[[x...], [y...]], ...]")
    k: int = Field(10, ge=1, description="how many photos to return (at most SBIR_MAX_K)")
    offset: int = Field(0, ge=0, description=OFFSET_HELP)
    category: str | None = Field(None, description="only photos of this category")
    text: str | None = Field(None, max_length=MAX_TEXT_CHARS, description=TEXT_HELP)
    text_weight: float = Field(DEFAULT_TEXT_WEIGHT, ge=0, le=1, description=TEXT_WEIGHT_HELP)
    like: int | None = Field(None, ge=0, description=LIKE_HELP)
    upload_as: Literal["sketch", "photo"] = Field("sketch", alias="as", description=AS_HELP)


class Photo(BaseModel):
    id: int
    score: float = Field(description="cosine similarity of sketch and photo, higher is closer")
    url: str = Field(description="the photo file (signed and expiring when an API key is configured)")
    thumbnail_url: str = Field(description="a 256 px thumbnail (signed likewise)")
    category: str | None
    metadata: dict[str, Any] = Field(default_factory=dict)
    path: str | None = Field(None, description="where the photo lies in the gallery, relative to its root (null "
                             "when SBIR_HIDE_PATHS is set or it lies outside)")
    width: int | None = Field(None, description="pixels, when the index recorded them")
    height: int | None = Field(None, description="pixels, when the index recorded them")
    file_size: int | None = Field(None, description="bytes of the photo file when it was indexed")
    modified_at: str | None = Field(None, description="the file's modification time when indexed (ISO 8601, UTC)")
    taken_at: str | None = Field(None, description="EXIF capture time, as the camera wrote it (ISO 8601, no zone), "
                                 "when the photo has one and the index recorded it")


class SearchResponse(BaseModel):
    results: list[Photo]
    k: int
    offset: int = Field(0, description="results skipped before these (paging)")
    has_more: bool = Field(False, description="a next page (offset + k) can be asked for and holds results")
    category: str | None
    index_version: str
    query: str = Field(description="the query kind that ran: sketch | photo | like | text | sketch+text | "
                       "photo+text | like+text")
    input: str | None = Field(description="format of the uploaded picture: image | strokes (null without one)")
    text: str | None = Field(None, description="the query text as searched (trimmed, NFC)")
    like: int | None = Field(None, description="the photo whose stored vector was the query (left out of results)")
    text_weight: float | None = Field(None, description="weight of the text in a composed query (null otherwise)")
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
    precision: str = Field(description="what the encoder computes in: fp32, bf16 (weights and inputs) or "
                           "bf16-/fp16-autocast (CUDA); set by SBIR_PRECISION")
    index_version: str | None
    index_size: int
    index_refused: str | None = Field(None, description="why the published index version is not served (built "
                                      "with another encoder, damaged, unreadable); the previous one, if any, "
                                      "keeps serving. null when the published version is the one served")
    index_segments: int = Field(1, description="segments of the served index (a one-copy or Milvus version: 1)")
    index_deleted: int = Field(0, description="tombstones: rows of deleted or replaced photos (a changed photo's "
                               "old row) still held by its segments until a "
                               "merge or `compact` rewrites them")
    categories: list[str]
    api_key_required: bool
    authorized: bool = Field(True, description="the request may search (no key needed, or a valid one sent)")
    max_k: int
    max_upload_bytes: int
    max_batch: int
    max_wait_ms: float
    query_kinds: list[str] = Field(description="query kinds the loaded encoder answers (text needs a text tower)")
    text_weight: float = Field(description="default text_weight of composed queries")
    max_text_chars: int = Field(description="longest query text")


class QuerySampleSaved(BaseModel):
    vectors: int = Field(description="query vectors written to SBIR_QUERY_SAMPLE_PATH")
    seen: int = Field(description="queries embedded since the service started")
    capacity: int = Field(description="SBIR_QUERY_SAMPLE: the most vectors the sample keeps")


class UploadedPhoto(BaseModel):
    path: str = Field(description="where it is stored, relative to the gallery: uploads/<sha256>.<ext>")
    sha256: str
    bytes: int
    created: bool = Field(description="false when the same content was already uploaded (nothing written)")


class UploadedPhotos(BaseModel):
    photos: list[UploadedPhoto]
    detail: str = Field(description="what happens next (a build makes them searchable)")


class BuildStarted(BaseModel):
    id: str


class BuildStatus(BaseModel):
    id: str
    state: Literal["queued", "running", "finished", "failed"]
    started_at: str | None = Field(None, description="ISO 8601, UTC")
    finished_at: str | None = None
    progress: dict[str, Any] = Field(default_factory=dict, description="the build's last progress line: stage, "
                                     "done, total")
    result: dict[str, Any] | None = Field(None, description="the build report (index_builder build --json) once "
                                          "finished")
    error: str | None = Field(None, description="why it failed (the build's last error line)")
