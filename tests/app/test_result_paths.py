"""A result's gallery path: the string fast path (app.result_details) answers as PurePath's relative_to does."""

from __future__ import annotations

import itertools
from pathlib import PurePath

from app.result_details import gallery_path
from photo_index import PhotoRecord

ROOTS = ["/g", "/g/", "/", "g", "./g", "/g//sub", "/g/./sub", "/g/sub", ".", "", "/g/..", PurePath("/g")]
PATHS = ["/g/a.jpg", "/g/sub/b.jpg", "/g", "/g/", "/g//a.jpg", "/g/./a.jpg", "/g/a/.", "/g/../x.jpg", "/gallery/a.jpg",
         "/g/.hidden/a.jpg", "g/a.jpg", "./g/a.jpg", "/g/sub//c.jpg", "//g/a.jpg", "/x/a.jpg", "/g/a.jpg/", "/g/é.jpg"]


def _reference(path: str, root) -> str | None:
    try:
        return PurePath(path).relative_to(root).as_posix()
    except ValueError:
        return None


def test_the_fast_path_answers_as_purepath_does():
    for root, path in itertools.product(ROOTS, PATHS):
        record = PhotoRecord(id=1, path=path, category="c", sha256="0" * 64, size=1, added_at="", metadata={})
        assert gallery_path(record, root) == _reference(path, root), (root, path)


def test_no_root_no_path():
    record = PhotoRecord(id=1, path="/g/a.jpg", category="c", sha256="0" * 64, size=1, added_at="", metadata={})
    assert gallery_path(record, None) is None
