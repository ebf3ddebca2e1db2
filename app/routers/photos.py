"""GET /photos/{id}: a gallery photo (or its thumbnail), only for ids the served index knows."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse

from ..errors import APIError
from ..photos import MAX_THUMBNAIL, MIN_THUMBNAIL, media_type_of, safe_photo_path
from ..schemas import Error
from ..services import Services, get_services

router = APIRouter(tags=["photos"])
INT64_MAX = 2**63 - 1


@router.head("/photos/{photo_id}", include_in_schema=False, response_class=Response)
@router.get(
    "/photos/{photo_id}",
    responses={200: {"content": {"image/*": {}}}, 304: {}, 404: {"model": Error}, 422: {"model": Error}},
    response_class=Response,
    summary="A gallery photo, or its thumbnail with ?size=N",
)
async def get_photo(
    request: Request,
    photo_id: int = Path(ge=0, le=INT64_MAX),
    size: int | None = Query(None, ge=MIN_THUMBNAIL, le=MAX_THUMBNAIL, description="thumbnail box side, px"),
    v: str | None = Query(None, max_length=64, description="content tag from search results (enables long caching)"),
    services: Services = Depends(get_services),
) -> Response:
    def locate():
        with services.index.lease() as reader:
            record = reader.record(photo_id)
            if record is None:
                raise APIError(404, "not_found", f"Photo {photo_id} is not in the index.")
            return record, safe_photo_path(record, services.gallery_root(reader))

    record, path = await run_in_threadpool(locate)
    etag = f'"{record.sha256[:32]}-{size or 0}"'
    immutable = v is not None and record.sha256.startswith(v)
    headers = {
        "ETag": etag,
        "Cache-Control": "public, max-age=31536000, immutable" if immutable else "public, max-age=300",
    }
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    if size is None:
        media_type = await run_in_threadpool(media_type_of, path)
        return FileResponse(path, media_type=media_type, headers=headers)
    data = await run_in_threadpool(services.thumbnails.get, record.sha256, path, size)
    return Response(data, media_type="image/jpeg", headers=headers)
