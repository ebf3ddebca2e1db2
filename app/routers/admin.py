"""Operator actions that change files on the server: they need the API key, and are off without one."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Header, Request
from fastapi.concurrency import run_in_threadpool

from ..errors import APIError
from ..schemas import Error, QuerySampleSaved
from ..services import Services, get_access, get_services, require_api_key

router = APIRouter(prefix="/admin", tags=["operations"])


def require_admin_key(request: Request, x_api_key: str | None = Header(None, description="an API key")) -> None:
    """403 when no API key is configured (admin actions are never open); 401 when the header does not match."""
    if not get_access(request).required:
        raise APIError(403, "forbidden", "Admin actions need an API key (SBIR_API_KEY or SBIR_API_KEYS) on the "
                       "service.")
    require_api_key(request, x_api_key)


@router.post("/query-sample", response_model=QuerySampleSaved, dependencies=[Depends(require_admin_key)],
             responses={code: {"model": Error} for code in (401, 403, 409)},
             summary="Save the sample of recent query vectors (SBIR_QUERY_SAMPLE) for `index_builder tune`")
async def save_query_sample(services: Services = Depends(get_services)) -> QuerySampleSaved:
    if services.query_sample is None:
        raise APIError(409, "query_sample_off", "The service keeps no query sample (set SBIR_QUERY_SAMPLE=N).")
    saved = await run_in_threadpool(services.query_sample.save, services.settings.query_sample_file)
    return QuerySampleSaved(vectors=saved, seen=services.query_sample.seen, capacity=services.query_sample.capacity)
