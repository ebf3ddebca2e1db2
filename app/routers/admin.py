"""Operator actions that change files on the server: they need an admin key (SBIR_ADMIN_KEYS), and are off
without one (app.key_roles)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool

from photo_index.space import is_disk_full

from ..errors import APIError
from ..key_roles import require_admin_key
from ..schemas import Error, QuerySampleSaved
from ..services import Services, get_services

router = APIRouter(prefix="/admin", tags=["operations"], dependencies=[Depends(require_admin_key)],
                   responses={code: {"model": Error} for code in (401, 403, 409, 507)})


@router.post("/query-sample", response_model=QuerySampleSaved,
             summary="Save the sample of recent query vectors (SBIR_QUERY_SAMPLE) for `index_builder tune`")
async def save_query_sample(services: Services = Depends(get_services)) -> QuerySampleSaved:
    if services.query_sample is None:
        raise APIError(409, "query_sample_off", "The service keeps no query sample (set SBIR_QUERY_SAMPLE=N).")
    try:
        saved = await run_in_threadpool(services.query_sample.save, services.settings.query_sample_file)
    except OSError as error:  # the sample stays in memory, and the previous file (if any) as it was
        status, code = (507, "disk_full") if is_disk_full(error) else (409, "query_sample_not_writable")
        raise APIError(status, code, f"The query sample could not be written ({error.strerror or 'error'}); "
                       "check SBIR_QUERY_SAMPLE_PATH and the space on its disk.") from None
    return QuerySampleSaved(vectors=saved, seen=services.query_sample.seen, capacity=services.query_sample.capacity)
