"""POST /search: a sketch (image file, raw image or JSON strokes) → the closest gallery photos."""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool

from ..batching import BatcherClosedError
from ..errors import APIError
from ..inputs import parse_search_request, to_tensor
from ..schemas import Error, Photo, SearchResponse, StrokesQuery
from ..search import Query
from ..services import Services, get_access, get_services, require_api_key

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
                    "category": {"type": "string"},
                },
            }
        },
        "image/*": {"schema": {"type": "string", "format": "binary"}},
    },
}
_ERRORS = {code: {"model": Error} for code in (401, 413, 415, 422, 503)}


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000.0, 3)


@router.post(
    "/search",
    response_model=SearchResponse,
    responses=_ERRORS,
    openapi_extra={"requestBody": _REQUEST_BODY},
    dependencies=[Depends(require_api_key)],
    summary="Find the photos closest to a sketch",
)
async def search(request: Request, services: Services = Depends(get_services)) -> SearchResponse:
    """Send JSON strokes, a multipart `sketch` file (or `strokes` field), or a raw image body;
    `k` and `category` go in the JSON body, the form, or the query string."""
    settings = services.settings
    started = time.perf_counter()
    if not services.index.ready:
        raise APIError(503, "not_ready", services.index.reason or "No index is loaded.")
    query = await parse_search_request(request, settings.max_upload_bytes, settings.max_k)
    if query.category is not None:
        category = services.index.find_category(query.category)
        if category is None:
            raise APIError(422, "unknown_category", f"Unknown category {query.category[:80]!r}; see GET /info.")
        query.category = category
    timings = {"read": _ms(started)}

    step = time.perf_counter()
    with services.batcher.expecting():
        tensor = await run_in_threadpool(
            to_tensor, query, services.encoder.preprocess, settings.max_image_pixels, settings.max_stroke_points
        )
    timings["decode"] = _ms(step)

    try:
        batched = await services.batcher.submit(Query(tensor, query.k, query.category))
    except BatcherClosedError as error:
        raise APIError(503, "not_ready", str(error)) from None
    result = batched.value
    timings["queue"] = round(batched.queue_ms, 3)
    timings.update({name: round(ms, 3) for name, ms in result.timings_ms.items()})
    timings["total"] = _ms(started)
    services.metrics.observe_stages(timings)
    services.metrics.searches.labels(query.kind).inc()

    access = get_access(request)
    photos = []
    for match in result.matches:
        tag = match.record.sha256[:16]
        photos.append(Photo(
            id=match.id,
            score=match.score,
            url=access.photo_url(match.id, None, tag),
            thumbnail_url=access.photo_url(match.id, THUMBNAIL_SIZE, tag),
            category=match.record.category,
            metadata=match.record.metadata or {},
        ))
    return SearchResponse(
        results=photos, k=query.k, category=query.category, index_version=result.index_version,
        input=query.kind, batch_size=batched.batch_size, timings_ms=timings,
    )
