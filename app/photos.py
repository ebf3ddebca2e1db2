"""Gallery photos for the browser: only files the index knows, only from inside the gallery root.

Paths come from the index metadata, never from the URL; both the gallery root and the photo path
are resolved (symlinks followed) and the photo must lie inside the root. Thumbnails are made with
the same bomb-safe decoder as uploads and kept in a small LRU cache keyed by content hash.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from pathlib import Path

from PIL import Image

from encoder import decode_image
from encoder.errors import InputError
from encoder.imaging import to_rgb
from photo_index import PhotoRecord

from .errors import APIError
from .inputs import SNIFF_BYTES, sniff_image_type

MIN_THUMBNAIL, MAX_THUMBNAIL = 16, 1024
# A photo URL's `v`: the start of the photo's content hash, so a changed photo gets a new URL (cached forever).
PHOTO_TAG_LENGTH = 16


def safe_photo_path(record: PhotoRecord, gallery_root: Path | None) -> Path:
    """The photo's real path, if it is a file inside the (real) gallery root; 404 otherwise."""
    not_found = APIError(404, "not_found", f"Photo {record.id} is not available.")
    if gallery_root is None:
        raise not_found
    try:
        root = gallery_root.resolve(strict=True)
        path = Path(record.path).resolve(strict=True)
    except FileNotFoundError:  # deleted or moved since the index was built (no path in the message: it is the host's)
        raise APIError(404, "not_found", f"Photo {record.id}'s file is gone from the gallery (deleted or moved since "
                       "the index was built). Re-index the gallery (python -m index_builder build) to drop it from "
                       "results; `python -m index_builder verify` lists such photos.") from None
    except (OSError, RuntimeError):  # unreadable, symlink loop
        raise not_found from None
    if not path.is_relative_to(root) or not path.is_file():
        raise not_found
    return path


def media_type_of(path: Path) -> str:
    with open(path, "rb") as handle:
        return sniff_image_type(handle.read(SNIFF_BYTES)) or "application/octet-stream"


class ThumbnailCache:
    """JPEG thumbnails by (content hash, size), least recently used evicted past `max_bytes`."""

    def __init__(self, max_bytes: int, max_pixels: int) -> None:
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels
        self._items: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: str, path: Path, size: int) -> bytes:
        """The thumbnail of `path` (whose content hash is `key`) fitting in size×size (blocking)."""
        with self._lock:
            cached = self._items.get((key, size))
            if cached is not None:
                self._items.move_to_end((key, size))
                return cached
        data = self._render(path, size)
        with self._lock:
            # Two requests may render the same thumbnail at once: the second replaces the first, counted once
            # (counting both let the byte count drift up until every new thumbnail was evicted at once).
            if (replaced := self._items.pop((key, size), None)) is not None:
                self._bytes -= len(replaced)
            if len(data) <= self.max_bytes:
                self._items[(key, size)] = data
                self._bytes += len(data)
                while self._bytes > self.max_bytes:
                    _, evicted = self._items.popitem(last=False)
                    self._bytes -= len(evicted)
        return data

    def _render(self, path: Path, size: int) -> bytes:
        try:
            image = decode_image(path, max_pixels=self.max_pixels, reduce_to=size)
        except InputError:
            raise APIError(404, "not_found", "The photo cannot be shown (its file does not decode).") from None
        if image.mode != "L" or "transparency" in image.info:  # a grey PNG's colour key goes on white too
            image = to_rgb(image)  # before resizing: Pillow cannot resize 16-bit images
        image.thumbnail((size, size), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        image.save(out, "JPEG", quality=85, optimize=True)
        return out.getvalue()
