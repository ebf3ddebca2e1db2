"""The client's one implementation of the API, without I/O: each operation is a `Call` (how to ask, how to read
the answer); `Client` and `AsyncClient` differ only in how they send it.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypedDict, TypeVar, Union
from urllib.parse import quote

import httpx

from .errors import InputError, UnexpectedAnswerError, error_for
from .models import BuildStatus, SearchPage, ServiceInfo

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage  # Pillow is optional: only for type checkers here

T = TypeVar("T")
# What a sketch may be: a file path, image bytes, a PIL image, or strokes (a list of [[x, y], ...] strokes, or
# a dict with "strokes" or QuickDraw "drawing").
Sketch = Union[str, os.PathLike, bytes, "PILImage", Sequence, dict]  # noqa: UP007 - a string member needs Union
DEFAULT_THUMBNAIL = 256
_IMAGE_MAGIC = ((b"\x89PNG", "image/png"), (b"\xff\xd8\xff", "image/jpeg"), (b"GIF8", "image/gif"),
                (b"BM", "image/bmp"), (b"II*\x00", "image/tiff"), (b"MM\x00*", "image/tiff"))


class SearchArgs(TypedDict, total=False):
    """Keyword arguments of `search`: a sketch and/or text, or a liked photo (with or without text)."""

    sketch: Sketch
    text: str
    like: int
    category: str
    k: int
    offset: int
    text_weight: float
    as_photo: bool  # the uploaded image is a photo (embedded by the photo branch), not a sketch


@dataclass(frozen=True)
class Call(Generic[T]):
    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    request: dict[str, Any] = field(default_factory=dict)  # httpx's params/json/files/data/content/headers
    ok: tuple[int, ...] = (200,)

    def read(self, response: httpx.Response) -> T:
        """The parsed answer, or the service's refusal raised as a ServiceError subclass."""
        if response.status_code not in self.ok:
            if response.status_code < 400:  # a proxy's page, or a redirect: not the service's answer, nor a refusal
                where = response.headers.get("Location")
                raise UnexpectedAnswerError(response.status_code, "unexpected_answer", (
                    f"a redirect to {where!r} (point the client's URL there)" if where else
                    f"status {response.status_code} where the service answers {self.ok[0]}; it begins "
                    f"{_start_of(response)!r}"))
            raise refusal(response)
        try:
            return self.parse(response)
        except (ValueError, KeyError, TypeError, AttributeError, IndexError) as error:  # JSONDecodeError: ValueError
            raise unexpected_answer(response, error) from error


def _start_of(response: httpx.Response) -> str:
    try:
        return response.text[:200]
    except (UnicodeDecodeError, LookupError, httpx.HTTPError):  # an undecodable body or a bogus charset
        return repr(response.content[:200])


def unexpected_answer(response: httpx.Response, error: Exception) -> UnexpectedAnswerError:
    return UnexpectedAnswerError(response.status_code, "unexpected_answer", f"not the service's answer "
                                 f"({type(error).__name__}: {error}); it begins {_start_of(response)!r}")


def _image_bytes(response: httpx.Response) -> bytes:
    """A photo's bytes; a body that is not an image (a proxy's page, JSON) is not saved as one. The service labels
    a gallery file whose type it cannot tell application/octet-stream."""
    kind = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if not (kind.startswith("image/") or kind == "application/octet-stream"):
        raise ValueError(f"the answer is {kind or 'untyped'}, not an image")
    return response.content


def refusal(response: httpx.Response) -> Exception:
    try:
        body = response.json()
        code, detail = str(body["error"]), str(body["detail"])
    except (ValueError, KeyError, TypeError):
        code, detail = f"http_{response.status_code}", response.text[:200] or response.reason_phrase
    wait = response.headers.get("Retry-After", "").strip()
    return error_for(response.status_code, code, detail,
                     retry_after=float(wait) if wait.isascii() and wait.isdigit() and len(wait) < 10 else None)


def _mime(data: bytes) -> str:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    known = next((mime for magic, mime in _IMAGE_MAGIC if data.startswith(magic)), None)
    if known is None and b"<svg" in data[:4096]:  # a label only: the service tells an SVG drawing by its bytes
        return "image/svg+xml"
    return known or "application/octet-stream"


# What PNG holds; a PIL image of another mode (CMYK, float, LAB, YCbCr from a scanner or a TIFF) goes as a TIFF,
# which holds them all and which the service reads the same way.
_PNG_MODES = frozenset({"1", "L", "LA", "P", "RGB", "RGBA", "I", "I;16"})


def _pil_bytes(image: Any) -> bytes:
    out = io.BytesIO()
    try:
        image.save(out, "PNG" if image.mode in _PNG_MODES else "TIFF")
    except (OSError, ValueError) as error:
        raise InputError(f"cannot encode the {image.mode} image to send it: {error}") from None
    return out.getvalue()


def _json_body(obj: dict[str, Any]) -> dict[str, Any]:
    """httpx's request options for a JSON body: strict JSON (no NaN or Infinity, which the service refuses and
    httpx would raise as a bare ValueError) in UTF-8."""
    try:
        content = json.dumps(obj, allow_nan=False, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:  # before ValueError, its base class
        raise InputError("the query holds text that is not valid Unicode (a lone surrogate)") from None
    except ValueError as error:
        raise InputError(f"the query holds numbers JSON cannot carry (NaN or infinite): {error}") from None
    return {"content": content, "headers": {"Content-Type": "application/json"}}


def _form_fields(fields: dict[str, Any]) -> dict[str, str]:
    """The query fields as form values, refused here when a text is not valid Unicode. A whole float is sent as
    an integer (``k=2.0`` is "2", as JSON's 2.0 is read: the service reads a form's whole numbers in plain digits)."""
    values = {name: str(int(value) if isinstance(value, float) and value.is_integer() else value)
              for name, value in fields.items()}
    for value in values.values():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InputError("the query holds text that is not valid Unicode (a lone surrogate)") from None
    return values


def _read_file(kind: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise InputError(f"cannot read the {kind} {path}: {error.strerror or error}") from None


def _photo_id(photo_id: Any) -> int:
    """A photo id as an int (an int, or a string of plain digits as results print them)."""
    text = str(photo_id)
    # ASCII digits only: int() also reads other scripts' digits ("١٢" is 12), which no result ever prints
    if isinstance(photo_id, bool) or not isinstance(photo_id, int | str) or not (text.isascii() and text.isdecimal()):
        raise InputError(f"a photo id is a non-negative integer, not {photo_id!r}")
    return int(photo_id)


def sketch_payload(sketch: Sketch) -> tuple[str, Any]:
    """("image", bytes) or ("strokes", dict) for a sketch given as a path, bytes, PIL image or strokes."""
    if isinstance(sketch, bytes | bytearray | memoryview):
        return "image", bytes(sketch)
    if isinstance(sketch, dict):
        return "strokes", sketch
    if isinstance(sketch, str | os.PathLike):
        path = Path(sketch)
        data = _read_file("sketch", path)
        if path.suffix.lower() in (".json", ".ndjson"):
            try:
                # UTF-8, -16 or -32 as JSON allows (json.detect_encoding), without a byte-order mark (Windows
                # editors write one), as the service reads it
                text = data.decode(json.detect_encoding(data)).removeprefix("\ufeff")
                obj = json.loads(text.splitlines()[0] if path.suffix.lower() == ".ndjson" else text)
            except (ValueError, IndexError) as error:
                raise InputError(f"{path} is not JSON strokes: {error}") from None
            if not isinstance(obj, dict | list):  # a JSON string is no file name to read: never a second path
                raise InputError(f"{path} is not JSON strokes: it holds a {type(obj).__name__}, not an object or "
                                 "a list of strokes")
            return sketch_payload(obj)
        return "image", data
    if hasattr(sketch, "save") and hasattr(sketch, "size"):  # a PIL image (Pillow is optional)
        return "image", _pil_bytes(sketch)
    if isinstance(sketch, Sequence):
        if not all(isinstance(stroke, Sequence) and not isinstance(stroke, str | bytes) for stroke in sketch):
            raise InputError("strokes are a list of strokes, each a list of [x, y] points (or sketch-rnn rows)")
        return "strokes", {"strokes": [list(stroke) for stroke in sketch]}
    raise InputError(f"a sketch is a path, image bytes, a PIL image or strokes, not {type(sketch).__name__}")


def search(**args: Any) -> Call[SearchPage]:
    """POST /search: the sketch as a multipart file (images) or JSON (strokes, or no sketch)."""
    unknown = set(args) - set(SearchArgs.__annotations__)
    if unknown:
        raise TypeError(f"search() got unexpected arguments: {', '.join(sorted(unknown))}")
    fields = {name: args[name] for name in ("text", "like", "category", "k", "offset", "text_weight")
              if args.get(name) is not None}
    if args.get("as_photo"):
        fields["as"] = "photo"
    sketch = args.get("sketch")
    if sketch is None:
        if args.get("text") is None and args.get("like") is None:
            raise InputError("search() needs a sketch, text or like")
        request: dict[str, Any] = _json_body(fields)
    else:
        kind, payload = sketch_payload(sketch)
        if kind == "strokes":
            request = _json_body({**payload, **fields})
        else:
            request = {"files": {"sketch": ("sketch", payload, _mime(payload))}, "data": _form_fields(fields)}
    return Call("POST", "/search", lambda response: SearchPage.from_json(response.json()), request)


def photo(photo_id: int, size: int | None = None) -> Call[bytes]:
    """GET /photos/{id}: the file, or a JPEG thumbnail fitting size×size."""
    params = {} if size is None else {"size": size}  # size 0 is the service's to refuse, not the full photo
    return Call("GET", f"/photos/{_photo_id(photo_id)}", _image_bytes, {"params": params})


def info() -> Call[ServiceInfo]:
    return Call("GET", "/info", lambda response: ServiceInfo.from_json(response.json()))


def ready() -> Call[bool]:
    """GET /readyz: True when the model and an index are loaded (a 503 is an answer here, not an error)."""
    return Call("GET", "/readyz", lambda response: response.status_code == 200, ok=(200, 503))


def upload_photos(photos: Sequence[str | os.PathLike | bytes]) -> Call[list[dict[str, Any]]]:
    """POST /admin/photos (admin key): files into the gallery's uploads/ folder."""
    if isinstance(photos, str | bytes | bytearray | os.PathLike):  # one photo, not a sequence of characters
        photos = [photos]
    files = []
    for number, item in enumerate(photos):
        data = bytes(item) if isinstance(item, bytes | bytearray) else _read_file("photo", Path(item))
        files.append(("photo", (f"photo-{number}", data, _mime(data))))
    return Call("POST", "/admin/photos", lambda response: response.json()["photos"], {"files": files}, ok=(201,))


def start_build() -> Call[str]:
    """POST /admin/builds (admin key): the id of the build it started."""
    return Call("POST", "/admin/builds", lambda response: response.json()["id"], ok=(202,))


def build_status(build_id: str) -> Call[BuildStatus]:
    if str(build_id) in ("", ".", ".."):  # a URL path would drop them ("/admin/builds/.." is "/admin")
        raise InputError(f"a build id is what start_build returned, not {build_id!r}")
    return Call("GET", f"/admin/builds/{quote(str(build_id), safe='')}",
                lambda response: BuildStatus.from_json(response.json()))
