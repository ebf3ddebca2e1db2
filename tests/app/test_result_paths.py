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


def record_at(path: str) -> PhotoRecord:
    return PhotoRecord(id=1, path=path, category="c", sha256="0" * 64, size=1, added_at="", metadata={})


def test_the_fast_path_answers_as_purepath_does(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative roots name no real folder holding these paths
    for root, path in itertools.product(ROOTS, PATHS):
        if root == "/g/..":  # its real path is "/", which does hold /g/a.jpg: the symlink test below
            continue
        assert gallery_path(record_at(path), root) == _reference(path, root), (root, path)


def test_a_root_given_relative_with_dots_or_through_a_symlink_names_the_real_folder(tmp_path, monkeypatch):
    # A folder build records real paths: SBIR_GALLERY_ROOT=data/gallery, data/../data/gallery or a link to the
    # gallery must still give each result its path (they were all None).
    gallery = tmp_path / "data" / "gallery"
    (gallery / "cat").mkdir(parents=True)
    (tmp_path / "link").symlink_to(gallery)
    monkeypatch.chdir(tmp_path)
    record = record_at(str(gallery.resolve() / "cat" / "a.jpg"))
    for root in ("data/gallery", f"{tmp_path}/data/../data/gallery", tmp_path / "link", gallery):
        assert gallery_path(record, root) == "cat/a.jpg", root
    # A manifest's path through the link stays relative to the root as given; outside the root is still None
    assert gallery_path(record_at(f"{tmp_path}/link/cat/b.jpg"), tmp_path / "link") == "cat/b.jpg"
    assert gallery_path(record_at(str(tmp_path / "elsewhere.jpg")), "data/gallery") is None


def test_no_root_no_path():
    assert gallery_path(record_at("/g/a.jpg"), None) is None
