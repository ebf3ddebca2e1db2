"""Turning an untrusted /search request into a validated query: body size, content type, k, category.

Reading enforces the byte limit as the body streams in (413 before the rest is read); image types are
sniffed from the bytes (415), never taken from a header; the heavy part (decode, rasterise,
normalise → tensor) is :func:`to_tensor`, run in a worker thread by the router.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

import torch
from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from encoder import Preprocessor, decode_image
from encoder.errors import InputError

from .errors import APIError, from_input_error

IMAGE_TYPES = "PNG, JPEG, WebP, GIF, BMP or TIFF"
MAX_CATEGORY_LENGTH = 200
MAX_FORM_FIELDS = 8


@dataclass
class SearchRequest:
    """A parsed, size-checked /search request; `payload` is image bytes or a decoded strokes object."""

    kind: Literal["image", "strokes"]
    payload: bytes | dict
    k: int
    category: str | None


def sniff_image_type(data: bytes) -> str | None:
    """The image MIME type from the file's magic bytes, or None when it is not one we accept."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if data.startswith(b"BM"):
        return "image/bmp"
    if data.startswith((b"II*\x00", b"MM\x00*")):
        return "image/tiff"
    return None


async def read_limited(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) as soon as the declared or streamed size passes `limit`."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise APIError(400, "bad_request", "The Content-Length header is not a number.")
        if int(declared) > limit:
            raise APIError(413, "request_too_large", f"The request body is larger than the {limit:,}-byte limit.")
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise APIError(413, "request_too_large", f"The request body is larger than the {limit:,}-byte limit.")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_k(value: Any, max_k: int) -> int:
    """k as a positive int no larger than `max_k` (422 otherwise)."""
    if value is None or value == "":
        return 10 if max_k >= 10 else max_k
    if isinstance(value, bool) or isinstance(value, float) and not value.is_integer():
        raise APIError(422, "bad_k", f"k must be a whole number between 1 and {max_k}.")
    try:
        k = int(value)
    except (TypeError, ValueError, OverflowError):
        raise APIError(422, "bad_k", f"k must be a whole number between 1 and {max_k}.") from None
    if not 1 <= k <= max_k:
        raise APIError(422, "bad_k", f"k must be between 1 and {max_k} (got {k}).")
    return k


def parse_category(value: Any) -> str | None:
    """An optional category name (checked against the index later); blank means none."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_CATEGORY_LENGTH:
        raise APIError(422, "unknown_category", "category must be a short string.")
    return value.strip() or None


def _json_object(data: bytes | str) -> dict:
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError, UnicodeDecodeError) as error:  # JSONDecodeError is a ValueError
        detail = error.msg if isinstance(error, json.JSONDecodeError) else "nested too deeply or not UTF-8"
        raise APIError(422, "bad_json", f"The strokes are not valid JSON ({detail}).") from None
    if not isinstance(obj, dict):
        raise APIError(422, "bad_strokes", 'Strokes must be a JSON object with a "strokes" or "drawing" field.')
    return obj


async def _parse_multipart(request: Request, body: bytes, max_k: int) -> SearchRequest:
    async def replay():
        yield body

    parser = MultiPartParser(request.headers, replay(), max_files=1, max_fields=MAX_FORM_FIELDS,
                             max_part_size=len(body) + 1)
    try:
        form = await parser.parse()
    except MultiPartException as error:
        raise APIError(422, "bad_multipart", f"The multipart form is malformed: {error.message}") from None
    try:
        sketch, strokes = form.get("sketch"), form.get("strokes")
        params = {**request.query_params, **{k: v for k, v in form.items() if isinstance(v, str)}}
        k, category = parse_k(params.get("k"), max_k), parse_category(params.get("category"))
        if isinstance(sketch, UploadFile):
            data = await sketch.read()
            if not data:
                raise APIError(422, "bad_image", "The uploaded sketch file is empty (zero bytes).")
            if sniff_image_type(data) is None:
                raise APIError(415, "unsupported_type", f"The uploaded file is not a {IMAGE_TYPES} image.")
            return SearchRequest("image", data, k, category)
        if isinstance(strokes, str):
            return SearchRequest("strokes", _json_object(strokes), k, category)
        raise APIError(422, "missing_sketch", 'The form needs a "sketch" file or a "strokes" JSON field.')
    finally:
        await form.close()


async def parse_search_request(request: Request, max_bytes: int, max_k: int) -> SearchRequest:
    """Read and validate a /search request (JSON strokes, multipart file/strokes, or a raw image body)."""
    body = await read_limited(request, max_bytes)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        return await _parse_multipart(request, body, max_k)
    if content_type == "application/json" or content_type.endswith("+json"):
        obj = _json_object(body)
        return SearchRequest("strokes", obj, parse_k(obj.get("k"), max_k), parse_category(obj.get("category")))
    if content_type.startswith("image/") or content_type == "application/octet-stream":
        if not body:
            raise APIError(422, "bad_image", "The request body is empty.")
        if sniff_image_type(body) is None:
            raise APIError(415, "unsupported_type", f"The request body is not a {IMAGE_TYPES} image.")
        params = request.query_params
        return SearchRequest("image", body, parse_k(params.get("k"), max_k), parse_category(params.get("category")))
    raise APIError(
        415, "unsupported_type",
        'Send multipart/form-data with a "sketch" file (or "strokes" field), application/json strokes, '
        "or an image body.",
    )


def to_tensor(request: SearchRequest, preprocess: Preprocessor, max_pixels: int, max_points: int) -> torch.Tensor:
    """Decode and normalise the sketch into the model's input tensor `[3, S, S]` (blocking; run in a thread)."""
    try:
        if request.kind == "image":
            return preprocess.sketch(decode_image(request.payload, max_pixels=max_pixels))
        return preprocess.sketch_strokes(request.payload, max_points=max_points)
    except InputError as error:
        raise from_input_error(error) from None
    except (OverflowError, RecursionError):
        raise APIError(422, "bad_strokes", "The strokes hold numbers or nesting too large to draw.") from None
