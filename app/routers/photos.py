"""GET /photos/{id}: a gallery photo (or its thumbnail), only for ids the served index knows.

With API keys configured a photo needs a valid signature (the URLs in search results carry one) or
an X-API-Key header; the check comes first, so an unauthorised caller learns nothing, not even which
ids exist, and the answer is cached only privately.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from starlette.responses import MalformedRangeHeader, RangeNotSatisfiable

from ..batching import BatcherClosedError
from ..errors import APIError
from ..key_roles import refuse_admin_key
from ..photos import MAX_THUMBNAIL, MIN_THUMBNAIL, PHOTO_TAG_LENGTH, media_type_of, safe_photo_path
from ..query_fields import PLAIN_DIGITS
from ..schemas import Error
from ..services import Services, get_access, get_services

router = APIRouter(tags=["photos"])
INT64_MAX = 2**63 - 1


class PhotoFileResponse(FileResponse):
    """A photo file; byte ranges as Starlette serves them, except that a Range header it cannot read
    (``bytes=5-1``, ``garbage``) is ignored and the whole file sent, as RFC 9110 (14.2) says, instead of
    Starlette's plain-text 400; a range past the end is a 416 in the API's error shape (Starlette's is empty
    text)."""

    @classmethod
    def _parse_range_header(cls, http_range: str, file_size: int) -> list[tuple[int, int]]:
        try:
            return super()._parse_range_header(http_range, file_size)
        except MalformedRangeHeader:
            return []  # no ranges: the whole file, 200
        except RangeNotSatisfiable:
            raise APIError(416, "range_not_satisfiable", f"The range starts past the end of the photo file "
                           f"({file_size} bytes).", headers={"Content-Range": f"bytes */{file_size}"}) from None


@router.head("/photos/{photo_id}", include_in_schema=False, response_class=Response)
@router.get(
    "/photos/{photo_id}",
    responses={200: {"content": {"image/*": {}}}, 206: {"description": "the byte range asked with Range",
                                                          "content": {"image/*": {}}},
               304: {}, **{code: {"model": Error} for code in (401, 403, 404, 416, 422, 502, 503)}},
    response_class=Response,
    summary="A gallery photo, or its thumbnail with ?size=N",
)
async def get_photo(
    request: Request,
    photo_id: Annotated[int, Path(ge=0, le=INT64_MAX), PLAIN_DIGITS],
    size: Annotated[int | None, Query(ge=MIN_THUMBNAIL, le=MAX_THUMBNAIL, description="thumbnail box side, px"),
                    PLAIN_DIGITS] = None,
    v: str | None = Query(None, max_length=64, description="content tag from search results (enables long caching)"),
    exp: str | None = Query(None, description="expiry of a signed URL, Unix seconds (from search results)"),
    sig: str | None = Query(None, description="signature of a signed URL (from search results)"),
    x_api_key: str | None = Header(None, description="instead of a signature, when an API key is configured"),
    services: Services = Depends(get_services),
) -> Response:
    cache_control = _authorise(request, photo_id, size, v, exp, sig, x_api_key)

    def locate():
        with services.index.lease() as reader:
            record = reader.record(photo_id)
            if record is None:
                raise APIError(404, "not_found", f"Photo {photo_id} is not in the index.")
            return record, safe_photo_path(record, services.gallery_root(reader))

    record, path = await run_in_threadpool(locate)
    etag = f'"{record.sha256[:32]}-{size or 0}"'
    if cache_control is None:  # an open service
        immutable = v == record.sha256[:PHOTO_TAG_LENGTH]  # the tag results carry, not any prefix (or "")
        cache_control = "public, max-age=31536000, immutable" if immutable else "public, max-age=300"
    headers = {"ETag": etag, "Cache-Control": cache_control}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    if size is None:
        media_type = await run_in_threadpool(media_type_of, path)
        return PhotoFileResponse(path, media_type=media_type, headers=headers)
    try:  # decoded in the bounded pool beside the encoder (app/batching.py), not in one of 40 threads
        data = await services.batcher.beside(services.thumbnails.get, record.sha256, path, size)
    except BatcherClosedError as error:
        raise APIError(503, "not_ready", str(error)) from None
    return Response(data, media_type="image/jpeg", headers=headers)


def _authorise(request: Request, photo_id: int, size: int | None, v: str | None, exp: str | None,
               sig: str | None, x_api_key: str | None) -> str | None:
    """The Cache-Control of an authorised photo request (None: the service is open); 403 for an admin key (as on
    search routes, also on an open service), 401 otherwise."""
    refuse_admin_key(request, x_api_key)
    access = get_access(request)
    if not access.required:
        return None
    seconds_left = access.signed_seconds_left(photo_id, size, v, exp, sig)
    if seconds_left is not None:
        return f"private, max-age={seconds_left}"  # never outlives the signature, never in shared caches
    if access.key_ok(x_api_key):
        return "private, max-age=300"
    raise APIError(401, "unauthorized", "This photo needs a valid signed URL (from search results) "
                   "or an X-API-Key header.")
