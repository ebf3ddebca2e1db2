"""What a search result says about its photo beyond the score: where it lies, its size in pixels and bytes, when
it was modified and taken. Read from the index record only (the builder stores them; no file access on the
search path); a detail an older index did not record is None."""

from __future__ import annotations

import functools
import os
import time
from datetime import UTC, datetime
from pathlib import PurePath, PurePosixPath
from typing import Any

from photo_index import PhotoRecord


def gallery_path(record: PhotoRecord, root: str | PurePath | None) -> str | None:
    """The photo's path relative to the gallery root (POSIX separators); None when it lies outside or there is
    no root. Lexical, against the root as given and then as its real path: a folder build records real paths, so a
    root given relative, with '..' or through a symlink is compared as the real folder it names (a manifest's paths
    are kept as written, so the root as given comes first). Serving the file is the photo route's business."""
    if root is None:
        return None
    root = str(root)
    real = _real_path(root, int(time.monotonic() // REAL_PATH_TTL_S))
    roots = (root,) if real == root else (root, real)
    # Every result of every search passes here, on the event loop: a path spelled as PurePath would spell it is cut
    # by string (~1 µs) under either root first; PurePath's parse + relative_to (~10 µs) is kept for the rest.
    path = record.path
    for candidate in roots:
        prefix = _root_prefix(candidate)
        if prefix is not None and path.startswith(prefix) and _plain(path):
            return path[len(prefix):]
    for candidate in roots:
        if (relative := _relative(path, candidate)) is not None:
            return relative
    return None


REAL_PATH_TTL_S = 30  # a root's symlink pointed elsewhere is followed within this time


@functools.lru_cache(maxsize=64)
def _real_path(root: str, _period: int) -> str:
    """The root's real path, resolved once per root and period (a search must not touch the disk per result)."""
    return os.path.realpath(root)


def _relative(path: str, root: str) -> str | None:
    """``path`` relative to ``root`` as PurePath says (None outside it)."""
    try:
        return PurePath(path).relative_to(root).as_posix()
    except ValueError:
        return None


@functools.lru_cache(maxsize=64)
def _root_prefix(root: str) -> str | None:
    """``root`` with one trailing slash when POSIX PurePath spells it that way (no '//', '.' parts or trailing
    slash), else None."""
    if not isinstance(PurePath(), PurePosixPath) or PurePath(root).as_posix() != root or root == ".":
        return None
    return root if root == "/" else root + "/"


def _plain(path: str) -> bool:
    """PurePath would keep ``path`` as it is: no empty or '.' parts, no trailing slash."""
    return "//" not in path and "/./" not in path and not path.endswith(("/", "/.")) and not path.startswith("./")


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
