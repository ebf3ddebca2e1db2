"""What a search result says about its photo beyond the score: where it lies, its size in pixels and bytes, when
it was modified and taken. Read from the index record only (the builder stores them; no file access on the
search path); a detail an older index did not record is None."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import PurePath
from typing import Any

from photo_index import PhotoRecord


def gallery_path(record: PhotoRecord, root: str | PurePath | None) -> str | None:
    """The photo's path relative to the gallery root (POSIX separators); None when it lies outside or there is
    no root. Purely lexical: symlinks are the photo route's business."""
    if root is None:
        return None
    try:
        return PurePath(record.path).relative_to(root).as_posix()
    except ValueError:
        return None


def iso_utc(mtime_ns: int | None) -> str | None:
    if not mtime_ns:
        return None
    return datetime.fromtimestamp(mtime_ns / 1e9, tz=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def photo_details(record: PhotoRecord, root: str | PurePath | None, hide_paths: bool) -> dict[str, Any]:
    """The detail fields of a result (app.schemas.Photo): path, width, height, file_size, modified_at, taken_at."""
    return {
        "path": None if hide_paths else gallery_path(record, root),
        "width": record.width,
        "height": record.height,
        "file_size": record.size or None,
        "modified_at": iso_utc(record.mtime_ns),
        "taken_at": record.taken_at,
    }
