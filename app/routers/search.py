"""POST /search: a sketch (image file, raw image or JSON strokes) → the closest gallery photos."""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool

from ..batching import Batched, BatcherClosedError
from ..errors import APIError
from ..hangup import ClientWatch
from ..inputs import QueryLimits, SearchRequest, parse_search_request, to_tensor
from ..key_roles import require_search_key
from ..photos import PHOTO_TAG_LENGTH
from ..query_fields import DEFAULT_TEXT_WEIGHT, MAX_TEXT_CHARS
from ..result_details import photo_details
from ..schemas import (
    AS_HELP,
    LIKE_HELP,
    OFFSET_HELP,
    TEXT_HELP,
    TEXT_WEIGHT_HELP,
    Error,
    Photo,
    SearchResponse,
    StrokesQuery,
)
from ..search import Query, QueryResult
from ..services import Services, get_access, get_services

router = APIRouter(tags=["search"])
THUMBNAIL_SIZE = 256  # the page's result tiles

_REQUEST_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": StrokesQuery.model_json_schema()},
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {
                    "sketch": {"type": "string", "format": "binary", "description": "image or strokes file"},
                    "strokes": {"type": "string", "description": "strokes JSON (instead of a file)"},
                    "k": {"type": "integer", "default": 10},
                    "offset": {"type": "integer", "minimum": 0, "default": 0, "description": OFFSET_HELP},
                    "category": {"type": "string"},
                    "text": {"type": "string", "maxLength": MAX_TEXT_CHARS, "description": TEXT_HELP},
                    "text_weight": {"type": "number", "minimum": 0, "maximum": 1, "default": DEFAULT_TEXT_WEIGHT,
                                    "description": TEXT_WEIGHT_HELP},
                    "like": {"type": "integer", "minimum": 0, "description": LIKE_HELP},
                    "as": {"type": "string", "enum": ["sketch", "photo"], "default": "sketch", "description": AS_HELP},
                },
            }
        },
        "image/*": {"schema": {"type": "string", "format": "binary"},
                    "description": "a raw sketch (or photo with ?as=photo) body; the other fields in the query string"},
    },
}
_QUERY_STRING = [
    {"name": name, "in": "query", "required": False, "schema": schema, "description": description}
    for name, schema, description in (
        ("k", {"type": "integer", "minimum": 1}, "how many photos to return"),
        ("offset", {"type": "integer", "minimum": 0}, OFFSET_HELP),
        ("category", {"type": "string"}, "only photos of this category"),
        ("text", {"type": "string", "maxLength": MAX_TEXT_CHARS}, TEXT_HELP),
        ("text_weight", {"type": "number", "minimum": 0, "maximum": 1}, TEXT_WEIGHT_HELP),
        ("like", {"type": "integer", "minimum": 0}, LIKE_HELP),
        ("as", {"type": "string", "enum": ["sketch", "photo"]}, AS_HELP),
    )
]
_ERRORS = {code: {"model": Error} for code in (400, 401, 403, 408, 413, 415, 422, 502, 503)}


async def _encode_and_search(query: SearchRequest, services: Services) -> tuple[Batched[QueryResult], float]:
    """The query prepared (decoded, or a liked photo's vector read) and run through the batcher; the decoding's ms."""
    step = time.perf_counter()
    fields, settings = query.fields, services.settings
    job = Query(query.k, query.category, modality=fields.upload_as, text=fields.text, text_weight=fields.text_weight,
                offset=fields.offset)
    try:
        if query.kind is not None:
            job.tensor = await services.batcher.prepare(
                to_tensor, query, services.encoder.preprocess, settings.max_image_pixels, settings.max_stroke_points)
        elif fields.like is not None:
            job.vector = await run_in_threadpool(_stored_vector, services, fields.like)
            job.exclude = fields.like
        decode_ms = _ms(step)
        return await services.batcher.submit(job), decode_ms
    except BatcherClosedError as error:
        raise APIError(503, "not_ready", str(error)) from None


def _stored_vector(services: Services, photo_id: int):
    """The indexed vector of photo `photo_id` (422 when the served index has no such photo)."""
    with services.index.lease() as reader:
        vector = reader.vector(photo_id)
    if vector is None:
        raise APIError(422, "unknown_photo", f"Photo {photo_id} is not in the index; like needs an indexed photo id.")
    return vector


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000.0, 3)


@router.post(
    "/search",
    response_model=SearchResponse,
    responses=_ERRORS,
    openapi_extra={"requestBody": _REQUEST_BODY, "parameters": _QUERY_STRING},
    dependencies=[Depends(require_search_key)],
    summary="Find the photos closest to a sketch, a photo, text, a liked photo, or a sketch/photo/like with text",
)
async def search(request: Request, services: Services = Depends(get_services)) -> SearchResponse:
    """Send JSON strokes, a multipart `sketch` file (or `strokes` field), or a raw image body, and/or `text`,
    or `like=<photo id>` (with or without `text`); `as=photo` reads an uploaded image as a photo. `k`, `category`,
    `text`, `text_weight`, `like`, `as` and `offset` go in the JSON body, the form, or the query string. The response's
    `query` says which kind ran."""
    settings = services.settings
    started = time.perf_counter()
    if not services.index.ready:
        raise APIError(503, "not_ready", services.index.reason or "No index is loaded.")
    limits = QueryLimits(settings.max_k, settings.max_text_chars, settings.text_weight)
    query = await parse_search_request(request, settings.max_upload_bytes, limits)
    fields = query.fields
    if fields.offset + query.k > settings.max_results:
        raise APIError(422, "bad_offset", f"offset + k must be at most {settings.max_results} (SBIR_MAX_RESULTS); "
                       f"got {fields.offset} + {query.k}.")
    if fields.text is not None and not services.encoder.has_text_tower:
        raise APIError(422, "text_unsupported", "The loaded encoder has no text tower; see query_kinds in GET /info.")
    if query.category is not None:
        category = services.index.find_category(query.category)
        if category is None:
            raise APIError(422, "unknown_category", f"Unknown category {query.category[:80]!r}; see GET /info.")
        query.category = category
    timings = {"read": _ms(started)}

    with ClientWatch(request) as watch:  # the body is read: from here on a hang-up stops the work
        try:
            batched, timings["decode"] = await _encode_and_search(query, services)
        except asyncio.CancelledError:
            watch.raise_if_gone()
            raise
    result = batched.value
    timings["queue"] = round(batched.queue_ms, 3)
    timings.update({name: round(ms, 3) for name, ms in result.timings_ms.items()})
    timings["total"] = _ms(started)
    services.metrics.observe_stages(timings)
    if query.kind is not None:
        services.metrics.searches.labels(query.kind).inc()
    services.metrics.queries.labels(query.query_kind).inc()

    access = get_access(request)
    root = settings.gallery_root or result.gallery_root
    photos = []
    for match in result.matches:
        tag = match.record.sha256[:PHOTO_TAG_LENGTH]
        photos.append(Photo(
            id=match.id,
            score=match.score,
            url=access.photo_url(match.id, None, tag),
            thumbnail_url=access.photo_url(match.id, THUMBNAIL_SIZE, tag),
            category=match.record.category,
            metadata=match.record.metadata or {},
            **photo_details(match.record, root, settings.hide_paths),
        ))
    has_more = result.has_more and fields.offset + query.k < settings.max_results  # a next page may be asked for
    return SearchResponse(
        results=photos, k=query.k, offset=fields.offset, has_more=has_more, category=query.category,
        index_version=result.index_version,
        query=query.query_kind, input=query.kind, text=fields.text, like=fields.like,
        text_weight=fields.text_weight if "+text" in query.query_kind else None,
        batch_size=batched.batch_size, timings_ms=timings,
    )
