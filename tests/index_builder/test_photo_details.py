"""Photo details read at indexing time (header only) and stored with the records: width and height as shown,
EXIF capture time; an index written before they existed still opens (None) and the next build fills them."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from PIL import Image

import photo_index.backends.folder as folder_backend
from index_builder.builder import BuildOptions, build_index
from index_builder.photo_header import PhotoHeader, capture_time, read_header
from photo_index import open_source
from photo_index.backends.folder import FolderWriter
from tests.app.support import STROKES, app_client
from tests.imagegen import random_photo

FIXTURE = Path(__file__).parents[1] / "data" / "index-before-split"


def _exif(orientation: int | None = None, original: str | None = None, offset: str | None = None,
          changed: str | None = None) -> Image.Exif:
    exif = Image.Exif()
    if orientation is not None:
        exif[274] = orientation
    if changed is not None:
        exif[306] = changed
    if original is not None:
        exif.get_ifd(0x8769)[36867] = original
    if offset is not None:
        exif.get_ifd(0x8769)[36881] = offset
    return exif


def test_the_header_gives_the_shown_size_and_the_capture_time(tmp_path):
    photo = random_photo((60, 40))
    photo.save(tmp_path / "turned.jpg", exif=_exif(6, "2021:05:06 07:08:09", "+02:00", "2024:01:01 00:00:00"))
    assert read_header(tmp_path / "turned.jpg") == PhotoHeader(40, 60, "2021-05-06T07:08:09+02:00")
    photo.save(tmp_path / "edited.jpg", exif=_exif(1, changed="2020:01:02 03:04:05"))
    assert read_header(tmp_path / "edited.jpg") == PhotoHeader(60, 40, "2020-01-02T03:04:05")  # DateTime fallback
    photo.save(tmp_path / "plain.png")
    assert read_header(tmp_path / "plain.png") == PhotoHeader(60, 40, None)
    (tmp_path / "not-a-photo.jpg").write_bytes(b"\xff\xd8\xff" + bytes(10))
    assert read_header(tmp_path / "not-a-photo.jpg") == PhotoHeader()
    assert capture_time("0000:00:00 00:00:00") is None and capture_time(b"2021") is None
    assert capture_time("2021:05:06 07:08:09\x00", "bogus") == "2021-05-06T07:08:09"


def _gallery(root: Path) -> Path:
    for category in ("apple", "boat"):
        (root / category).mkdir(parents=True)
        for i in range(2):
            random_photo((48 + 8 * i, 40), seed=i).save(root / category / f"{i}.jpg",
                                                        exif=_exif(8 if i else 1, f"2019:0{i + 1}:02 10:20:30"))
    return root


def _build(gallery: Path, index_dir: Path, encoder):
    return build_index(encoder, BuildOptions(index_dir=index_dir, gallery=gallery, workers=0, progress=False))


def _records(index_dir: Path):
    with open_source(index_dir).open() as reader:
        return {Path(r.path).relative_to(r.path.rsplit("/", 2)[0]).as_posix(): r
                for r in reader.records(reader.stored().ids)}



def test_a_turned_tiff_is_not_turned_twice(tmp_path):
    """Pillow already gives a TIFF's size as shown; only other formats' stored size is swapped."""
    random_photo((60, 40), seed=1).save(tmp_path / "turned.tif", exif=_exif(orientation=6).tobytes())
    random_photo((60, 40), seed=1).save(tmp_path / "turned.png", exif=_exif(orientation=6).tobytes())
    assert read_header(tmp_path / "turned.tif") == PhotoHeader(40, 60, None)
    assert read_header(tmp_path / "turned.png") == PhotoHeader(40, 60, None)

def test_a_build_stores_the_details_and_the_service_returns_them(tmp_path, tiny_baseline):
    gallery = _gallery(tmp_path / "gallery")
    _build(gallery, tmp_path / "index", tiny_baseline)
    records = _records(tmp_path / "index")
    assert records["apple/0.jpg"].details == (48, 40, "2019-01-02T10:20:30")
    assert records["boat/1.jpg"].details == (40, 56, "2019-02-02T10:20:30")  # orientation 8: shown turned
    with app_client(tmp_path / "index", tiny_baseline) as client:
        results = client.post("/search", json={**STROKES, "k": 4}).json()["results"]
    shown = {r["path"]: (r["width"], r["height"], r["taken_at"]) for r in results}
    assert shown == {path: record.details for path, record in records.items()}


def _older_index(gallery: Path, index_dir: Path, encoder) -> None:
    """An index as written before the details existed: a one-copy version (the format of that time, written by
    its writer) with no such columns and, like every version of that time, no recorded checksums."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(folder_backend, "open_writer", lambda location, options: FolderWriter(location, options))
        _build(gallery, index_dir, encoder)
    version = index_dir / "versions" / (index_dir / "current").read_text().strip()
    with sqlite3.connect(version / "metadata.sqlite") as conn:
        for column in ("width", "height", "taken_at"):
            conn.execute(f"ALTER TABLE photos DROP COLUMN {column}")
    manifest = json.loads((version / "manifest.json").read_text())
    del manifest["checksums"]
    (version / "manifest.json").write_text(json.dumps(manifest))


def test_an_older_index_opens_without_details_and_the_next_build_fills_them_without_embedding(tmp_path,
                                                                                           tiny_baseline):
    gallery = _gallery(tmp_path / "gallery")
    _older_index(gallery, tmp_path / "index", tiny_baseline)
    assert {r.details for r in _records(tmp_path / "index").values()} == {(None, None, None)}
    with app_client(tmp_path / "index", tiny_baseline) as client:
        result = client.post("/search", json={**STROKES, "k": 1}).json()["results"][0]
    assert (result["width"], result["height"], result["taken_at"]) == (None, None, None) and result["file_size"]

    report = _build(gallery, tmp_path / "index", tiny_baseline)  # converts the version to segments, too
    assert report.status == "built" and report.embedded == 0 and report.updated == 0 and report.unchanged == 4
    assert any("converted the one-copy version" in note for note in report.notes)
    assert _records(tmp_path / "index")["apple/1.jpg"].details == (40, 56, "2019-02-02T10:20:30")
    assert _build(gallery, tmp_path / "index", tiny_baseline).status == "unchanged"  # filled once


def test_the_index_written_before_the_split_reads_no_details(tmp_path):
    shutil.copytree(FIXTURE, tmp_path / "index")
    with open_source(tmp_path / "index").open() as reader:
        records = reader.records(reader.stored().ids)
    assert len(records) == 6 and all(r.details == (None, None, None) and r.size for r in records)
