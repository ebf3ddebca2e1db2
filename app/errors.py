"""HTTP errors of the service: one exception type with a status, a stable `error` code and a message.

Messages are written for the user and never contain server paths or secrets; anything unexpected
becomes a bare 500 whose details go to the log only.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from encoder.errors import (
    EmptySketchError,
    ImageDecodeError,
    ImageTooLargeError,
    InputError,
    StrokeFormatError,
    TooManyPointsError,
)
from photo_index import BuildError, EngineUnavailableError

log = logging.getLogger("app")


class APIError(Exception):
    """A refusal with an HTTP status, a machine-readable code and a human message."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


def from_input_error(error: InputError) -> APIError:
    """Map the encoder's input errors to HTTP: too large → 413, everything else unusable → 422."""
    if isinstance(error, ImageTooLargeError):
        return APIError(413, "image_too_large", str(error))
    if isinstance(error, TooManyPointsError):
        return APIError(413, "too_many_points", str(error))
    if isinstance(error, EmptySketchError):
        return APIError(422, "empty_sketch", str(error))
    if isinstance(error, ImageDecodeError):
        return APIError(422, "bad_image", str(error))
    if isinstance(error, StrokeFormatError):
        return APIError(422, "bad_strokes", str(error))
    return APIError(422, "bad_input", str(error))


def _body(code: str, message: str) -> dict:
    return {"error": code, "detail": message}


def install_error_handlers(app: FastAPI) -> None:
    """Uniform JSON errors `{"error": code, "detail": message}`, counted in the metrics by code."""

    def count(request: Request, code: str) -> None:
        metrics = getattr(request.app.state, "metrics", None)
        if metrics is not None:
            metrics.errors.labels(code).inc()

    @app.exception_handler(APIError)
    async def _api_error(request: Request, error: APIError) -> JSONResponse:
        count(request, error.code)
        # a refusal must not be cached in place of the answer an authorised request gets
        headers = {"WWW-Authenticate": "X-API-Key", "Cache-Control": "no-store"} if error.status == 401 else {}
        headers.update(error.headers or {})
        return JSONResponse(_body(error.code, error.message), status_code=error.status, headers=headers)

    @app.exception_handler(EngineUnavailableError)
    async def _engine_unavailable(request: Request, error: EngineUnavailableError) -> JSONResponse:
        count(request, "index_unavailable")  # a server engine (Milvus) did not answer within its timeout
        log.warning("vector index unavailable on %s: %s", request.url.path, error)
        return JSONResponse(_body("index_unavailable", "The vector index server cannot be reached; retry shortly."),
                            status_code=503, headers={"Retry-After": "2"})

    @app.exception_handler(BuildError)
    async def _engine_refused(request: Request, error: BuildError) -> JSONResponse:
        count(request, "index_refused")  # a server engine (Milvus) refused a read: its reason is for the operator
        log.warning("vector index refused a request on %s: %s", request.url.path, error)
        return JSONResponse(_body("index_refused", "The vector index server refused the request; the reason is in "
                                  "the service's log."), status_code=502)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        count(request, "invalid_request")
        parts = []
        for item in error.errors():
            where = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
            parts.append(f"{where}: {item.get('msg', 'invalid')}" if where else str(item.get("msg", "invalid")))
        return JSONResponse(_body("invalid_request", "; ".join(parts) or "Invalid request."), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}.get(
            error.status_code, f"http_{error.status_code}"
        )
        count(request, code)
        return JSONResponse(_body(code, str(error.detail)), status_code=error.status_code, headers=error.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        count(request, "internal")
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse(_body("internal", "Internal server error."), status_code=500)
