"""Turning an untrusted /search request into a validated query: body size, content type, k, category, and the
query fields beside the picture (:mod:`app.query_fields`).

Reading enforces the byte limit as the body streams in (413 before the rest is read); image types are
sniffed from the bytes (415), never taken from a header; the heavy part (decode, rasterise,
normalise → tensor) is :func:`to_tensor`, run in a worker thread by the router.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from fastapi import Request
from python_multipart.multipart import parse_options_header
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import FormParser, MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

from encoder import Preprocessor, decode_image, load_drawing_json, looks_like_svg
from encoder.errors import InputError, StrokeFormatError
from encoder.imaging import to_rgb

from .body_guard import declared_length
from .errors import APIError, from_input_error
from .query_fields import (
    DEFAULT_TEXT_WEIGHT,
    FIELDS,
    MAX_TEXT_CHARS,
    QueryFields,
    check_combination,
    parse_query_fields,
    query_kind,
    whole_number,
)

IMAGE_TYPES = "PNG, JPEG, WebP, GIF, BMP, TIFF, AVIF or HEIC"
DRAWING_KEYS = ("strokes", "drawing")  # plain strokes, QuickDraw (encoder.strokes)
JSON_TYPES = ("application/json", "application/x-ndjson", "application/ndjson", "application/jsonl")
XML_TYPES = ("text/xml", "application/xml")
MAX_CATEGORY_LENGTH = 200
MAX_FORM_FIELDS = 8


@dataclass
class SearchRequest:
    """A parsed, size-checked /search request; `payload` is image bytes, a decoded strokes object, or None
    when the query is only text and/or a liked photo."""

    kind: Literal["image", "strokes"] | None
    payload: bytes | dict | None  # strokes: a decoded JSON object, or an SVG document's bytes
    k: int
    category: str | None
    fields: QueryFields = field(default_factory=QueryFields)

    @property
    def query_kind(self) -> str:
        return query_kind(self.kind, self.fields)


# ISO media brands of still HEIF images (HEVC-coded, as iPhones save them, or the generic image brand); a
# sequence (hevc, msf1) is a video, not accepted.
HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"mif1"})
# Enough of a file's start to tell its type (an ISO media file lists its brands in its first box).
SNIFF_BYTES = 256


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
    if data.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):  # TIFF, BigTIFF
        return "image/tiff"
    brands = _ftyp_brands(data)
    if brands & {b"avif", b"avis"}:
        return "image/avif"
    if brands & HEIF_BRANDS:
        return "image/heic" if brands & {b"heic", b"heix", b"heim", b"heis"} else "image/heif"
    return None


def _ftyp_brands(data: bytes) -> set[bytes]:
    """The major and compatible brands of an ISO media file's leading ``ftyp`` box (AVIF, HEIF), else none: an
    AVIF may name the generic HEIF brand ``mif1`` as its major one and ``avif`` among the compatible."""
    if data[4:8] != b"ftyp":
        return set()
    end = min(int.from_bytes(data[:4], "big"), len(data), 4096)
    return {data[8:12]} | {data[i:i + 4] for i in range(16, end - 3, 4)}


def _recognised_other(data: bytes) -> str:
    """' (it looks like X)' for common files that are not accepted, to say what was sent; else ''."""
    head = data[:512].lstrip().lower()
    if _ftyp_brands(data) & {b"hevc", b"msf1"}:
        return " (it looks like a HEIF image sequence, a video: send one frame as JPEG or PNG)"
    if head.startswith(b"%pdf"):
        return " (it looks like a PDF document)"
    if data.startswith(b"\x00\x00\x01\x00"):
        return " (it looks like an ICO icon)"
    if data.startswith(b"PK\x03\x04"):
        return " (it looks like a ZIP archive)"
    return ""


def _is_picture(head: bytes) -> bool:
    return sniff_image_type(head) is not None or looks_like_svg(head)


def _looks_like_json(data: bytes) -> bool:
    return data.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] in (b"{", b"[")


async def read_limited(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) as soon as the declared or streamed size passes `limit`."""
    header = request.headers.get("content-length")
    if header is not None:
        declared = declared_length(header)
        if declared is None:
            raise APIError(400, "bad_request", "The Content-Length header is not a number.")
        if declared > limit:
            raise APIError(413, "request_too_large", f"The request body is larger than the {limit:,}-byte limit.")
    chunks, total = [], 0
    try:
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise APIError(413, "request_too_large", f"The request body is larger than the {limit:,}-byte limit.")
            chunks.append(chunk)
    except ClientDisconnect:  # the client went away mid-body: nobody reads the answer, but it is not our fault
        raise APIError(400, "client_disconnected", "The client disconnected before sending the whole body.") from None
    return b"".join(chunks)


def parse_k(value: Any, max_k: int) -> int:
    """k as a positive int no larger than `max_k` (422 otherwise)."""
    if value is None:
        return 10 if max_k >= 10 else max_k
    if value == "":
        raise APIError(422, "bad_k", f"k is empty: give a whole number between 1 and {max_k}, or leave k out.")
    k = whole_number(value)
    if k is None:
        raise APIError(422, "bad_k", f"k must be a whole number between 1 and {max_k}, in plain digits.")
    if not 1 <= k <= max_k:
        got = str(k) if abs(k) < 10**12 else "a number far out of range"
        raise APIError(422, "bad_k", f"k must be between 1 and {max_k} (got {got}).")
    return k


def parse_category(value: Any) -> str | None:
    """An optional category name (checked against the index later); blank means none."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_CATEGORY_LENGTH:
        raise APIError(422, "unknown_category", "category must be a short string.")
    return value.strip() or None


def _json_object(data: bytes | str, *, strokes_field: bool = False) -> dict:
    """The drawing's JSON object (one JSON value, or ndjson whose first line is used). In a form's ``strokes``
    field a bare list is the strokes themselves (the field names what it holds)."""
    try:
        obj = load_drawing_json(data)
    except StrokeFormatError as error:
        raise APIError(422, "bad_json", str(error)) from None
    if strokes_field and isinstance(obj, list):
        obj = {"strokes": obj}
    if not isinstance(obj, dict):
        raise APIError(422, "bad_strokes", 'Strokes must be a JSON object with a "strokes" or "drawing" field.')
    return obj


class _MultiPartParser(MultiPartParser):
    """Starlette's multipart parser, also noting the fields whose bytes are not UTF-8 (it reads those as
    latin-1 without a word, which would turn broken `text` into other words)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.not_utf8: set[str] = set()

    def on_part_end(self) -> None:
        part = self._current_part
        if part.file is None:
            try:
                bytes(part.data).decode("utf-8")
            except UnicodeDecodeError:
                self.not_utf8.add(part.field_name)
        super().on_part_end()


@dataclass
class QueryLimits:
    """What a request may ask for, from the settings."""

    max_k: int
    max_text_chars: int = MAX_TEXT_CHARS
    default_text_weight: float = DEFAULT_TEXT_WEIGHT


def _request(picture: Literal["image", "strokes"] | None, payload: bytes | dict | None, params: Mapping[str, Any],
             limits: QueryLimits, not_utf8: Collection[str] = ()) -> SearchRequest:
    fields = parse_query_fields(params, max_text_chars=limits.max_text_chars,
                                default_weight=limits.default_text_weight, not_utf8=not_utf8)
    k, category = parse_k(params.get("k"), limits.max_k), parse_category(params.get("category"))
    check_combination(picture, fields)
    if picture is None and fields.text is None and fields.like is None:
        raise APIError(422, "missing_sketch",
                       'The request needs a sketch ("strokes" JSON, QuickDraw "drawing", or an image), "text" or '
                       '"like".')
    return SearchRequest(picture, payload, k, category, fields)


def _without_picture(params: Mapping[str, Any]) -> bool:
    """The request names a query of its own (text or a liked photo), so no sketch is needed: a blank one included,
    which its own check then refuses by name ("text is empty") rather than as a missing sketch."""
    return any(params.get(name) is not None for name in ("text", "like"))


async def _parse_form(request: Request, body: bytes, limits: QueryLimits, multipart: bool) -> SearchRequest:
    """A multipart or urlencoded form: a `sketch` file (any single file field is taken as one; a JSON
    file is read as strokes) or a `strokes` field (text or file), plus the query fields."""
    async def replay():
        yield body

    not_utf8: set[str] = set()
    try:
        if multipart:
            parser = _MultiPartParser(request.headers, replay(), max_files=1, max_fields=MAX_FORM_FIELDS,
                                      max_part_size=len(body) + 1)
            form = await parse_whole(parser, request, body)
            not_utf8 = parser.not_utf8
        else:
            form = await FormParser(request.headers, replay()).parse()
    except MultiPartException as error:
        raise APIError(422, "bad_multipart", f"The multipart form is malformed: {error.message}") from None
    try:
        if len(form) > MAX_FORM_FIELDS:
            raise APIError(422, "bad_multipart", f"The form has more than {MAX_FORM_FIELDS} fields.")
        params = {**request.query_params, **{k: v for k, v in form.items() if isinstance(v, str)}}
        picture, payload = await _form_picture(form, required=not _without_picture(params))
        return _request(picture, payload, params, limits, not_utf8)
    finally:
        await form.close()


async def parse_whole(parser: MultiPartParser, request: Request, body: bytes) -> FormData:
    """``parser``'s form of ``body``; a body that ends before its closing boundary is a :class:`MultiPartException`
    (the parser takes a truncated body quietly, without its last part)."""
    form = await parser.parse()
    if not _has_closing_boundary(request, body):
        await form.close()
        raise MultiPartException("it ends before its closing boundary (truncated)")
    return form


def _has_closing_boundary(request: Request, body: bytes) -> bool:
    """The multipart body ends its last part with ``--boundary--`` (the parser takes a truncated body quietly,
    without its last part)."""
    _, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    return not boundary or b"--" + boundary + b"--" in body


async def _form_picture(form: FormData, required: bool) -> tuple[Literal["image", "strokes"] | None, Any]:
    """(kind, payload) of the form's sketch or photo; (None, None) when there is none and none is `required`."""
    sketch, strokes = form.get("sketch"), form.get("strokes")
    if not isinstance(sketch, UploadFile):
        if isinstance(strokes, UploadFile):
            data = await strokes.read()
            return "strokes", data if looks_like_svg(data) else _json_object(data, strokes_field=True)
        if isinstance(strokes, str):
            return "strokes", strokes.encode() if looks_like_svg(strokes) else _json_object(strokes,
                                                                                            strokes_field=True)
        # One image (or SVG drawing) under another name ("file", "image", "photo", ...) is taken as the picture.
        for value in form.values():
            if isinstance(value, UploadFile) and _is_picture(await value.read(4096)):
                await value.seek(0)
                sketch = value
    if isinstance(sketch, UploadFile):
        data = await sketch.read()
        if not data:
            raise APIError(422, "bad_image", "The uploaded sketch file is empty (zero bytes).")
        if sniff_image_type(data) is not None:
            return "image", data
        if _looks_like_json(data):  # a strokes file (QuickDraw ndjson, JSON) sent as the sketch
            return "strokes", _json_object(data)
        if looks_like_svg(data):  # its lines are read as strokes in the worker thread (to_tensor)
            return "strokes", data
        raise APIError(415, "unsupported_type",
                       f"The uploaded file is not a {IMAGE_TYPES} image, an SVG drawing or JSON strokes"
                       f"{_recognised_other(data)}.")
    if required:
        raise APIError(422, "missing_sketch",
                       'The form needs a "sketch" file, a "strokes" JSON field, "text" or "like".')
    return None, None


async def parse_search_request(request: Request, max_bytes: int, limits: QueryLimits) -> SearchRequest:
    """Read and validate a /search request (JSON strokes, multipart file/strokes, a raw image body, or only
    query fields), fields in the body taking precedence over the query string."""
    body = await read_limited(request, max_bytes)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in ("", "application/x-www-form-urlencoded"):
        # No header, or curl's default for --data/--data-binary: an image or JSON body is judged by its bytes.
        if sniff_image_type(body) is not None or looks_like_svg(body):
            content_type = "application/octet-stream"
        elif _looks_like_json(body):
            content_type = "application/json"
    if content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        return await _parse_form(request, body, limits, multipart=content_type == "multipart/form-data")
    if content_type in JSON_TYPES or content_type.endswith("+json"):
        obj = _json_object(body) if body.strip() else {}  # an empty body: the query string's fields alone
        query_keys = ("k", "category", *FIELDS)
        params = {**request.query_params, **{key: obj[key] for key in query_keys if obj.get(key) is not None}}
        unknown = sorted(set(obj) - {*query_keys, *DRAWING_KEYS})
        drawing = any(obj.get(key) is not None for key in DRAWING_KEYS)
        if unknown and _without_picture(params) and not drawing:
            # a text or more-like-this query with a misspelt or foreign field: name it, not the strokes' format
            raise APIError(422, "unknown_field", f"Unknown field(s) {', '.join(repr(key[:40]) for key in unknown[:5])}"
                           f"; a JSON search takes {', '.join(query_keys)} and a drawing (\"strokes\" or \"drawing\").")
        if drawing or unknown:
            return _request("strokes", obj, params, limits)  # a drawing, or keys of some other strokes format
        return _request(None, None, params, limits)
    if content_type in XML_TYPES and looks_like_svg(body):  # an SVG drawing sent as XML
        content_type = "image/svg+xml"
    if content_type.startswith("image/") or content_type in ("application/octet-stream", ""):
        params = request.query_params
        if not body:  # no drawing at all: a text or like query, or missing_sketch, not a broken image
            return _request(None, None, params, limits)
        if sniff_image_type(body) is None and looks_like_svg(body):
            return _request("strokes", body, params, limits)
        if sniff_image_type(body) is None:
            raise APIError(415, "unsupported_type",
                           f"The request body is not a {IMAGE_TYPES} image or an SVG drawing{_recognised_other(body)}.")
        return _request("image", body, params, limits)
    raise APIError(
        415, "unsupported_type",
        f"Content-Type {content_type[:60]!r} is not accepted. Send multipart/form-data with a \"sketch\" file "
        '(or "strokes" field), application/json strokes, or an image body.',
    )


def to_tensor(request: SearchRequest, preprocess: Preprocessor, max_pixels: int, max_points: int) -> torch.Tensor:
    """Decode and normalise the sketch (or photo) into the model's input tensor `[3, S, S]` (blocking; run in a
    thread). A photo goes through the same decoding and transforms as the index's photos."""
    try:
        if request.kind == "image" and request.fields.upload_as == "photo":
            image = decode_image(request.payload, max_pixels=max_pixels, reduce_to=preprocess.image_size)
            return preprocess.photo(to_rgb(image))
        if request.kind == "image":
            return preprocess.sketch(decode_image(request.payload, max_pixels=max_pixels))
        return preprocess.sketch_strokes(request.payload, max_points=max_points)
    except InputError as error:
        raise from_input_error(error) from None
    except (OverflowError, RecursionError, MemoryError):
        if request.kind == "strokes":
            raise APIError(422, "bad_strokes", "The strokes hold numbers or nesting too large to draw.") from None
        raise APIError(422, "bad_image", "The image's shape is too extreme to resize for the model.") from None
