"""Operational endpoints: liveness, readiness, service info, Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..index_holder import segments_and_deleted
from ..key_roles import require_metrics_key
from ..query_fields import query_kinds
from ..schemas import Health, Info, LockedInfo, Readiness
from ..services import Services, get_access, get_services

router = APIRouter(tags=["operations"])


@router.head("/healthz", include_in_schema=False)
@router.get("/healthz", response_model=Health, summary="The process is alive")
async def healthz() -> Health:
    return Health(status="ok")


@router.head("/readyz", include_in_schema=False)
@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}},
            summary="Model and index loaded (503 until then)")
async def readyz(request: Request) -> JSONResponse:
    services: Services | None = getattr(request.app.state, "services", None)
    index = services.index if services else None
    ready = bool(index and index.ready)
    size, version = 0, index.version if index else None
    if ready:
        try:
            with index.lease() as reader:  # version and size of one reader: a swap between two reads mixed them
                size, version = reader.size, reader.version
        except Exception:  # noqa: BLE001 - a swap to nothing between the two checks: report not ready
            ready = False
    body = Readiness(
        ready=ready, model_loaded=services is not None, index_loaded=ready,
        index_version=version, index_size=size,
        detail=None if ready else (index.reason if index else "The model is loading."),
    )
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get("/info", response_model=Info | LockedInfo,
            summary="Encoder config and fingerprint, index version and size, device (with a key, when one is set)")
async def info(request: Request, services: Services = Depends(get_services),
               x_api_key: str | None = Header(None, description="needed for the details when a key is configured"),
               ) -> Info | LockedInfo:
    access = get_access(request)
    if not access.key_ok(x_api_key):  # the page learns it must ask for a key; nothing about the gallery
        return LockedInfo(detail="This service needs an API key: send it in the X-API-Key header.")
    size, segments, deleted, version = 0, 1, 0, services.index.version
    if services.index.ready:
        try:
            with services.index.lease() as reader:  # one reader's version, size and segments (as /readyz)
                size, version = reader.size, reader.version
                segments, deleted = segments_and_deleted(reader)
        except Exception:  # noqa: BLE001 - a reader that cannot say: reported as size 0
            size = 0
    settings = services.settings
    return Info(
        encoder=services.encoder.describe(),
        fingerprint=services.fingerprint,
        random_weights=bool(services.encoder.random_weights),
        warning=services.warning,
        device=str(services.encoder.device),
        precision=services.encoder.precision,
        index_version=version,
        index_size=size,
        index_refused=services.index.refusal,
        index_segments=segments,
        index_deleted=deleted,
        categories=services.index.categories(),
        api_key_required=access.required,
        max_k=settings.max_k,
        max_upload_bytes=settings.max_upload_bytes,
        max_batch=settings.max_batch,
        max_wait_ms=settings.max_wait_ms,
        query_kinds=query_kinds(services.encoder.has_text_tower),
        text_weight=settings.text_weight,
        max_text_chars=settings.max_text_chars,
    )


@router.get("/metrics", response_class=Response, summary="Prometheus metrics")
async def metrics(request: Request, x_api_key: str | None = Header(None, description="needed when "
                                                                                    "SBIR_METRICS_REQUIRE_KEY is set")
                  ) -> Response:
    if request.app.state.settings.metrics_require_key:
        require_metrics_key(request, x_api_key)
    registry = request.app.state.metrics
    services: Services | None = getattr(request.app.state, "services", None)
    if services is not None:
        registry.queue_depth.set(services.batcher.depth)
    return Response(generate_latest(registry.registry), media_type=CONTENT_TYPE_LATEST)
