"""Indexing through the API (admin key): upload photos into the gallery, build the index, follow the build."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from ..builds import BuildRunner
from ..errors import APIError
from ..inputs import parse_whole, read_limited
from ..key_roles import require_admin_key
from ..schemas import BuildStarted, BuildStatus, Error, UploadedPhotos
from ..services import Services, get_services
from ..uploads import check_photo, store_photo

router = APIRouter(prefix="/admin", tags=["indexing"], dependencies=[Depends(require_admin_key)])
MAX_FILES = 100  # photos in one multipart upload


def _gallery(services: Services) -> Path:
    """The gallery the service serves (SBIR_GALLERY_ROOT, else the folder its index was built from); 409 when
    there is none (an index built from a manifest, no root configured)."""
    root = None
    if services.settings.gallery_root is not None:
        root = services.settings.gallery_root
    elif services.index.ready:
        with services.index.lease() as reader:
            root = services.gallery_root(reader)
    if root is None or not Path(root).is_dir():
        raise APIError(409, "no_gallery", "The service has no gallery folder to add photos to or build from; "
                       "set SBIR_GALLERY_ROOT.")
    return Path(root)


async def _photos_of(request: Request, body: bytes) -> list[bytes]:
    """The uploaded files: every file part of a multipart form, or the raw body as one photo."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "multipart/form-data":
        return [body] if body else []

    async def replay():
        yield body

    try:
        form = await parse_whole(MultiPartParser(request.headers, replay(), max_files=MAX_FILES,
                                                 max_fields=MAX_FILES, max_part_size=len(body) + 1), request, body)
    except MultiPartException as error:
        raise APIError(422, "bad_multipart", f"The multipart form is malformed: {error.message}") from None
    try:
        # multi_items: several files may share a field name ("photo" each); values() keeps only a name's last
        return [await value.read() for _, value in form.multi_items() if isinstance(value, UploadFile)]
    finally:
        await form.close()


@router.post("/photos", status_code=201, response_model=UploadedPhotos,
             responses={code: {"model": Error} for code in (401, 403, 409, 413, 415, 422)},
             summary="Upload photos into the gallery's uploads/ folder (searchable after the next build)")
async def upload_photos(request: Request, services: Services = Depends(get_services)) -> UploadedPhotos:
    """A multipart form with one or more image files (any field names), or one raw image body. Every photo is
    checked to decode whole before any is stored; names are content hashes, so sending one twice stores it once."""
    settings = services.settings
    gallery = _gallery(services)
    photos = await _photos_of(request, await read_limited(request, settings.max_upload_bytes))
    if not photos:
        raise APIError(422, "missing_photo", "Send image files in a multipart form, or one image as the body.")
    extensions = [await run_in_threadpool(check_photo, data, settings.max_image_pixels) for data in photos]
    stored = [await run_in_threadpool(store_photo, data, gallery, ext) for data, ext in zip(photos, extensions,
                                                                                           strict=True)]
    return UploadedPhotos(photos=stored, detail="Stored; they become searchable after the next build "
                          "(POST /admin/builds).")


def _builds(request: Request) -> BuildRunner:
    return request.app.state.builds


@router.post("/builds", status_code=202, response_model=BuildStarted,
             responses={code: {"model": Error} for code in (401, 403, 409)},
             summary="Start an incremental build of the gallery in a child process (one at a time)")
async def start_build(request: Request, services: Services = Depends(get_services)) -> JSONResponse:
    job = _builds(request).start(_gallery(services))
    return JSONResponse({"id": job.id}, status_code=202, headers={"Location": f"/admin/builds/{job.id}"})


@router.get("/builds/{build_id}", response_model=BuildStatus,
            responses={code: {"model": Error} for code in (401, 403, 404)},
            summary="A build's state (queued, running, finished, failed), progress and result")
async def build_status(build_id: str, request: Request) -> BuildStatus:
    job = _builds(request).get(build_id)
    if job is None:
        raise APIError(404, "not_found", "No such build (this service remembers its last 20).")
    return BuildStatus(**job.view())
