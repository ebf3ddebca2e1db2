"""The FastAPI application: `create_app(settings)` wires routers, middleware and the lifespan.

Start-up (lifespan) loads the encoder unless one is given, opens the index version `current`
names (the service also starts without one and becomes ready when one is published), warms the
encoder up, and starts the micro-batcher and the index poller; shutdown stops them in reverse.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import numpy as np
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

from encoder import PromptedCLIP, load_encoder
from encoder.errors import BrokenEncoderError
from photo_index import open_source

from .access import Access
from .batching import MicroBatcher
from .body_guard import BodyGuard, BodyLimits
from .builds import BuildRunner
from .errors import install_error_handlers
from .index_holder import IndexHolder
from .key_roles import admin_access
from .metrics import Metrics
from .photos import ThumbnailCache
from .query_sample import QuerySample
from .routers import admin, admin_gallery, health, page, photos, search
from .routers.page import STATIC_DIR
from .search import Query, SearchEngine
from .services import Services
from .settings import MIB, Settings

log = logging.getLogger("app")
DOCS_ASSETS = "/docs-assets"


def load_configured_encoder(settings: Settings) -> PromptedCLIP:
    """The encoder the settings name (checkpoint, or the frozen-CLIP baseline); raises SBIRError."""
    checkpoint = str(settings.checkpoint) if settings.checkpoint else None
    return load_encoder(checkpoint, backbone=settings.backbone, pretrained=settings.pretrained,
                        activation=settings.activation, device=settings.device, precision=settings.precision,
                        lanes=settings.encoder_lanes)


PLAIN_SKETCH = {"strokes": [[[0, 0], [10, 10], [20, 0]]]}


def _warm_up(engine: SearchEngine) -> None:
    """One pass through preprocessing and the encoder (text tower too), so the first user does not pay for
    lazy set-up."""
    tensor = engine.encoder.preprocess.sketch_strokes(PLAIN_SKETCH)
    text = "warm up" if engine.encoder.has_text_tower else None
    _require_finite(engine.query_vectors([Query(1, None, tensor=tensor, text=text)]))


def check_encoder(encoder: PromptedCLIP) -> None:
    """Refuse, before a server starts, an encoder that answers a plain sketch with NaN or infinite numbers (the
    warm-up checks it again inside the app, where a refusal could only end the startup with a traceback)."""
    tensor = encoder.preprocess.sketch_strokes(PLAIN_SKETCH)
    _require_finite(encoder.encode_sketch(tensor.unsqueeze(0)).float().cpu().numpy())


def _require_finite(vectors: np.ndarray) -> None:
    if not np.isfinite(vectors).all():  # else every search would answer 200 with no results, and /readyz 200
        raise BrokenEncoderError("The encoder answers a plain sketch with NaN or infinite numbers: its backbone "
                                 "weights or checkpoint are damaged; the service does not start on it.")


def _save_sample(sample: QuerySample, settings: Settings) -> None:
    """On shutdown: keep the query sample for `index_builder tune` (a failure is logged, never raised)."""
    try:
        saved = sample.save(settings.query_sample_file)
    except OSError as error:
        log.error("could not save the query sample to %s: %s", settings.query_sample_file, error)
    else:
        log.info("saved %d query vectors (of %d seen) to %s", saved, sample.seen, settings.query_sample_file)


def _lifespan(settings: Settings, encoder: PromptedCLIP | None):
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        model = encoder or await asyncio.to_thread(load_configured_encoder, settings)
        metrics: Metrics = app.state.metrics
        fingerprint = model.fingerprint()
        source = open_source(settings.location)
        index = IndexHolder(source, fingerprint=fingerprint, dim=model.embed_dim, device=settings.device,
                            metrics=metrics, precision=model.precision, weights_sample=model.backbone_sample())
        await asyncio.to_thread(index.refresh)
        sample = QuerySample(settings.query_sample, model.embed_dim) if settings.query_sample else None
        engine = SearchEngine(model, index, sample)
        await asyncio.to_thread(_warm_up, engine)
        batcher = MicroBatcher(engine.run_batch, max_batch=settings.max_batch, max_wait_ms=settings.max_wait_ms,
                               metrics=metrics, prepare_threads=settings.decode_threads or None)
        await batcher.start()
        poller = asyncio.create_task(index.poll_forever(settings.reload_interval_s), name="index-poller")
        app.state.services = Services(
            settings=settings, encoder=model, metrics=metrics, index=index, engine=engine, batcher=batcher,
            thumbnails=ThumbnailCache(settings.thumbnail_cache_mb * MIB, settings.max_image_pixels),
            fingerprint=fingerprint, query_sample=sample,
        )
        if model.random_weights:
            log.warning("the encoder has random weights: search results are meaningless")
        try:
            yield
        finally:
            app.state.services = None
            await app.state.builds.stop()
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
            await batcher.stop()
            await asyncio.to_thread(index.close)  # waits for a refresh still opening a version: not on the loop
            if sample is not None and len(sample):
                _save_sample(sample, settings)

    return lifespan


def create_app(settings: Settings | None = None, *, encoder: PromptedCLIP | None = None) -> FastAPI:
    """A ready-to-serve app; pass `encoder` to reuse an already loaded model (tests, benchmarks)."""
    settings = settings or Settings()
    # /docs and /redoc load Swagger UI and ReDoc from fastapi-offline's packaged copy under DOCS_ASSETS, not a CDN:
    # the API docs work on a host without internet.
    app = FastAPIOffline(
        static_url=DOCS_ASSETS,
        title="sketch-search",
        summary="Zero-shot sketch-based image retrieval: draw or upload a sketch, get the closest photos.",
        version="0.1.0",
        lifespan=_lifespan(settings, encoder),
    )
    app.state.settings = settings
    app.state.access = Access.from_settings(settings)
    app.state.admin_access = admin_access(settings)
    app.state.builds = BuildRunner(settings)
    app.state.metrics = Metrics()
    app.state.services = None
    install_error_handlers(app)
    if settings.cors_origin_list:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origin_list, allow_methods=["GET", "POST"],
            allow_headers=["Content-Type", "X-API-Key"], max_age=600,
        )
    # Outermost: it answers slow, surplus and refused uploads before anything else spends on them.
    limits = BodyLimits(settings.body_timeout_s, settings.max_bodies_in_flight, settings.drain_max_bytes,
                        settings.drain_timeout_s, settings.max_bodies_per_client)
    app.add_middleware(BodyGuard, limits=limits, metrics=app.state.metrics, access=app.state.access,
                       admin=app.state.admin_access)
    for router in (search.router, photos.router, health.router, admin.router, admin_gallery.router, page.router):
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
