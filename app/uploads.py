"""Photos uploaded through POST /admin/photos: checked to be whole images, stored under the gallery's
``uploads/`` folder by content hash, so a client never chooses a path and the same photo twice is one file.

A file is written aside and renamed into place (a build never sees half a photo); the gallery's other
files are never touched. The photos become searchable with the next build (POST /admin/builds).
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

from encoder import decode_image
from encoder.errors import InputError

from .errors import APIError, from_input_error
from .inputs import IMAGE_TYPES, sniff_image_type
from .schemas import UploadedPhoto

UPLOADS = "uploads"
EXTENSIONS = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp", "image/gif": ".gif",
              "image/bmp": ".bmp", "image/tiff": ".tif", "image/avif": ".avif",
              "image/heic": ".heic", "image/heif": ".heif"}


def check_photo(data: bytes, max_pixels: int) -> str:
    """The file extension of `data` once it decodes as a whole image of at most `max_pixels` (4xx otherwise)."""
    kind = sniff_image_type(data)
    if kind is None:
        raise APIError(415, "unsupported_type", f"An uploaded photo is not a {IMAGE_TYPES} image.")
    try:
        decode_image(data, max_pixels=max_pixels)  # fully loaded: a truncated file is refused here
    except InputError as error:
        raise from_input_error(error) from None
    return EXTENSIONS[kind]


def store_photo(data: bytes, gallery_root: Path, extension: str) -> UploadedPhoto:
    """Write `data` to GALLERY/uploads/<sha256><extension> unless that file already exists."""
    digest = hashlib.sha256(data).hexdigest()
    folder = gallery_root / UPLOADS
    target = folder / f"{digest}{extension}"
    created = False
    if not target.exists():
        try:
            folder.mkdir(exist_ok=True)
            tmp = folder / f".{digest}.{secrets.token_hex(4)}.tmp"
            try:
                with open(tmp, "xb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
        except OSError as error:
            raise APIError(409, "gallery_not_writable", "The gallery's uploads folder cannot be written "
                           f"({error.strerror or 'error'}); it may be mounted read-only.") from None
        created = True
    return UploadedPhoto(path=f"{UPLOADS}/{target.name}", sha256=digest, bytes=len(data), created=created)
