"""Acceptance-style regressions: hostile galleries, manifests and index folders give reasons or clear errors."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import sys
import time
import zlib

import numpy as np
import pytest

from index_builder.cli import main
from index_builder.sources import MAX_CSV_FIELD_CHARS
from index_builder.staging import Staging
from photo_index import current_version
from photo_index.backends.folder import IndexReader
from photo_index.errors import IndexCorruptError

from .conftest import manifest_path, write_photo


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels (a decompression-bomb header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_bomb_header_is_skipped_as_too_large(make_gallery, build, tmp_path):
    gallery = make_gallery({"cat": 2})
    (gallery / "cat" / "bomb.png").write_bytes(_png_header(100_000, 100_000))
    report = build(gallery=gallery)
    assert report.size == 2
    assert [(s.path.rsplit("/", 1)[-1], s.reason) for s in report.skipped] == [("bomb.png", "too-large")]


@pytest.fixture()
def built_index(make_gallery, build, tmp_path):
    build(gallery=make_gallery({"cat": 2, "dog": 1}))
    index_dir = tmp_path / "index"
    return index_dir, manifest_path(index_dir)


@pytest.mark.parametrize("damage", [
    lambda m: m.pop("encoder"),
    lambda m: m.pop("index"),
    lambda m: m.update(size="many"),
    lambda m: m.update(dim=m["dim"] + 1),
])
def test_hand_edited_manifest_is_reported_not_a_traceback(built_index, capsys, damage):
    index_dir, path = built_index
    manifest = json.loads(path.read_text())
    damage(manifest)
    path.write_text(json.dumps(manifest))
    with pytest.raises(IndexCorruptError):
        IndexReader.open(index_dir)
    assert main(["verify", str(index_dir)]) == 1
    assert "PROBLEM" in capsys.readouterr().err
    assert main(["info", str(index_dir)]) == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.parametrize("make_out", [
    lambda tmp: (tmp / "a-file").write_text("x") and tmp / "a-file",
    lambda tmp: (tmp / "a-file").write_text("x") and tmp / "a-file" / "sub",
])
def test_out_that_cannot_be_a_folder_is_a_clear_error(make_gallery, tmp_path, capsys, make_out):
    out = make_out(tmp_path)
    args = ["build", "--gallery", str(make_gallery({"cat": 1})), "--out", str(out), "--workers", "0", "--no-progress"]
    assert main(args) == 2
    assert "Cannot write the index folder" in capsys.readouterr().err


def test_folder_with_a_current_subfolder_is_not_an_index(tmp_path, capsys):
    (tmp_path / "gallery" / "current").mkdir(parents=True)
    assert current_version(tmp_path / "gallery") is None
    assert main(["info", str(tmp_path / "gallery")]) == 2
    assert "No index" in capsys.readouterr().err


def test_gallery_that_became_empty_keeps_the_live_version(make_gallery, build, tmp_path, capsys):
    gallery = make_gallery({"cat": 2})
    first = build(gallery=gallery)
    for photo in (gallery / "cat").iterdir():
        photo.unlink()
    (gallery / "cat" / "zero.jpg").write_bytes(b"")
    args = ["build", "--gallery", str(gallery), "--out", str(tmp_path / "index"), "--workers", "0", "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "No photos to index" in err and "zero-byte 1" in err and first.version in err
    assert current_version(tmp_path / "index") == first.version
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["build", "--gallery", str(empty), "--out", str(tmp_path / "other"), "--no-progress"]) == 2
    assert current_version(tmp_path / "other") is None


def test_gallery_spelled_with_dot_dot_keeps_ids(make_gallery, build):
    gallery = make_gallery({"cat": 2})
    first = build(gallery=gallery)
    again = build(gallery=gallery / ".." / gallery.name)
    assert again.status == "unchanged" and again.version == first.version


def test_same_size_content_change_with_mtime_set_back_is_an_update(make_gallery, build, tmp_path):
    gallery = make_gallery({"cat": 3})
    build(gallery=gallery)
    photo = gallery / "cat" / "cat_0.jpg"
    stat = photo.stat()
    data = bytearray(photo.read_bytes())
    data[-3] ^= 0xFF  # same size, other bytes
    photo.write_bytes(bytes(data))
    os.utime(photo, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    os.chmod(gallery / "cat" / "cat_1.png", 0o600)  # inode change only: re-hashed, vector kept
    second = build(gallery=gallery)
    assert (second.updated, second.unchanged, second.embedded) == (1, 2, 1)
    with IndexReader.open(tmp_path / "index") as reader:
        record = next(r for r in reader.records(reader.vectors()[0]) if r.path == str(photo))
        assert record.sha256 == hashlib.sha256(data).hexdigest()
    assert build(gallery=gallery).status == "unchanged"


def test_undecodable_names_and_manifest_rows_are_skipped_not_fatal(make_gallery, build, tmp_path):
    gallery = make_gallery({"cat": 1})
    photo = next((gallery / "cat").iterdir())
    (gallery / "cat" / os.fsdecode(b"\xff\xfe.jpg")).write_bytes(photo.read_bytes())
    report = build(gallery=gallery)
    assert report.size == 1 and [s.reason for s in report.skipped] == ["bad-file-name"]
    assert "\\xff\\xfe.jpg" in report.summary()

    manifest = tmp_path / "photos.csv"
    manifest.write_text(f"path,id\n{photo},1\nbad\0name.jpg,2\n")
    report = build(manifest=manifest, index_dir=tmp_path / "index2")
    assert report.size == 1 and [s.reason for s in report.skipped] == ["bad-manifest-row"]


# a cell past the CSV limit (a quote left open for megabytes); one of 200,000 characters is a row's problem only
@pytest.mark.parametrize("content", [b"path,id\n\"" + b"x" * (MAX_CSV_FIELD_CHARS + 1) + b"\",1\n",
                                     b"path\n\xff\xfe.jpg\n"])
def test_unparseable_manifest_is_a_clear_error(tmp_path, capsys, content):
    manifest = tmp_path / "photos.csv"
    manifest.write_bytes(content)
    assert main(["build", "--manifest", str(manifest), "--out", str(tmp_path / "index"), "--no-progress"]) == 2
    assert f"Manifest {manifest} cannot be read" in capsys.readouterr().err


def test_folders_nested_deeper_than_the_recursion_limit(make_gallery, build):
    gallery = make_gallery({"cat": 1})
    folders = [str(gallery / "cat")]
    for _ in range(sys.getrecursionlimit() + 50):
        folders.append(os.path.join(folders[-1], "d"))
        os.mkdir(folders[-1])
    photo = next(p for p in (gallery / "cat").iterdir() if p.is_file())
    shutil.copy(photo, os.path.join(folders[-1], "deep.jpg"))
    try:
        report = build(gallery=gallery)
        assert report.size == 2 and not report.skipped
    finally:  # shutil.rmtree (pytest's clean-up) recurses too: remove the chain bottom-up
        os.remove(os.path.join(folders[-1], "deep.jpg"))
        for folder in reversed(folders[1:]):
            os.rmdir(folder)


@pytest.mark.parametrize("damage", [("entries.jsonl", "garbage{\n"), ("failures.jsonl", '{"path": 1}\n')])
def test_damaged_staging_is_discarded_not_a_permanent_failure(make_gallery, build, tmp_path, damage):
    gallery = make_gallery({"cat": 2})
    staging = tmp_path / "index" / "staging"
    Staging(staging, tiny_fingerprint := "f" * 8, 4).close()
    name, text = damage
    with open(staging / name, "a") as handle:
        handle.write(text)
    with Staging(staging, tiny_fingerprint, 4) as reopened:
        assert reopened.count == 0
    assert build(gallery=gallery).size == 2


def test_damaged_staged_rows_are_embedded_again_not_published(tmp_path):
    unit = np.eye(4, dtype=np.float32)
    staging = Staging(tmp_path / "staging", "f" * 8, 4)
    keys = [(f"/g/{i}.jpg", 10, 1, 1) for i in range(4)]
    staging.append(keys, ["h"] * 4, unit)
    staging.close()
    rows = np.memmap(tmp_path / "staging" / "vectors.f32", dtype=np.float32, mode="r+", shape=(4, 4))
    rows[1, 0], rows[2] = np.nan, rows[2] * 7  # a NaN; a row not of unit length
    rows.flush()
    del rows
    resumed = Staging(tmp_path / "staging", "f" * 8, 4)
    assert sorted(row for row, _ in resumed.entries.values()) == [0, 3]  # keys 1 and 2 are embedded again
    resumed.append([keys[1]], ["h"], unit[1:2])
    assert resumed.entries[keys[1]][0] == 4 and np.array_equal(resumed.vectors()[4], unit[1])
    resumed.close()


def test_a_staged_file_edited_with_its_mtime_set_back_is_embedded_again_on_resume(make_gallery, tmp_path):
    from index_builder.plan import select
    from index_builder.sources import scan_folder
    from index_builder.staging import file_key

    gallery = make_gallery({"cat": 2})
    photo = gallery / "cat" / "cat_0.jpg"
    staging = Staging(tmp_path / "staging", "f" * 8, 4)
    staged = [file_key(p) for p in scan_folder(gallery).photos]
    staging.append(staged, ["h0", "h1"], np.eye(4, dtype=np.float32)[:2])  # a killed run had embedded both
    assert select(scan_folder(gallery), None, staging, rebuild=False).wanted == []
    before = photo.stat()
    data = bytearray(photo.read_bytes())
    data[-3] ^= 0xFF  # the same size, other content
    time.sleep(0.01)
    photo.write_bytes(bytes(data))
    os.utime(photo, ns=(before.st_atime_ns, before.st_mtime_ns))  # the mtime put back, as a copy tool may
    wanted = select(scan_folder(gallery), None, staging, rebuild=False).wanted
    assert [key[0] for key in wanted] == [str(photo)]
    staging.close()


def test_index_folder_inside_the_gallery_is_not_scanned(make_gallery, build):
    gallery = make_gallery({"cat": 2})
    build(gallery=gallery, index_dir=gallery / "index")
    write_photo(gallery / "cat" / "new.jpg", seed=99)
    report = build(gallery=gallery, index_dir=gallery / "index")
    assert (report.added, report.size, report.skipped) == (1, 3, [])


def test_manifest_ids_stay_below_the_searchs_own_id_range(make_gallery, build, tmp_path):
    from photo_index.api import MAX_PHOTO_ID

    gallery = make_gallery({"cat": 3})
    photos = sorted((gallery / "cat").iterdir())
    manifest = tmp_path / "photos.jsonl"
    rows = [(photos[0], MAX_PHOTO_ID), (photos[1], MAX_PHOTO_ID + 1), (photos[2], 2**63 - 1)]
    manifest.write_text("".join(json.dumps({"path": str(path), "id": photo_id}) + "\n" for path, photo_id in rows))
    report = build(manifest=manifest)
    assert report.size == 1 and [s.reason for s in report.skipped] == ["bad-manifest-row"] * 2
    assert "0..2^52-1" in report.skipped[0].detail
    with IndexReader.open(tmp_path / "index") as reader:
        assert reader.record(MAX_PHOTO_ID).path == str(photos[0])


def test_a_manifest_row_too_large_to_keep_is_skipped_and_the_rest_is_built(make_gallery, build, tmp_path):
    """A megabyte caption rode along with every search result (and stopped a Milvus build); a category of 2 KB
    stopped Milvus too. Both are now a skipped row, for every backend; a caption with room to spare is kept."""
    gallery = make_gallery({"cat": 3})
    photos = sorted((gallery / "cat").iterdir())
    manifest = tmp_path / "photos.jsonl"
    rows = [{"path": str(photos[0]), "caption": "x" * 1_000_000}, {"path": str(photos[1]), "category": "c" * 2_000},
            {"path": str(photos[2]), "caption": "é" * 9_000, "tags": ["a", "b"]}]  # 54,000 characters as JSON
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    report = build(manifest=manifest)
    assert report.size == 1 and [s.reason for s in report.skipped] == ["bad-manifest-row"] * 2
    assert "line 1: its other fields are 1,000,015 characters" in report.skipped[0].detail
    assert "line 2: the category is longer than 1,024 bytes" in report.skipped[1].detail
    with IndexReader.open(tmp_path / "index") as reader:
        kept = reader.record(reader.vectors()[0][0])
        assert kept.path == str(photos[2]) and kept.metadata["tags"] == ["a", "b"]


def test_a_manifest_row_no_store_can_hold_is_skipped_and_an_empty_category_is_none(make_gallery, build, tmp_path):
    """A lone surrogate ("\\ud800" in JSON) in a category or a caption stopped the whole build with an encoder error;
    an empty category was "" here but None read back from Milvus, so every build rewrote that photo."""
    gallery = make_gallery({"cat": 4})
    photos = sorted((gallery / "cat").iterdir())
    manifest = tmp_path / "photos.jsonl"
    manifest.write_text(f'{{"path": "{photos[0]}", "category": "bad\\ud800"}}\n'
                        f'{{"path": "{photos[1]}", "caption": "x\\udfff"}}\n'
                        f'{{"path": "{photos[2]}", "category": ""}}\n'
                        f'{{"path": "{photos[3]}", "category": "  "}}\n')
    report = build(manifest=manifest)
    assert report.size == 2 and [s.reason for s in report.skipped] == ["bad-manifest-row"] * 2
    assert "line 1: the category is not valid UTF-8" in report.skipped[0].detail
    assert "line 2: its other fields are not valid UTF-8" in report.skipped[1].detail
    with IndexReader.open(tmp_path / "index") as reader:
        assert [reader.record(i).category for i in reader.vectors()[0]] == [None, None]
    assert build(manifest=manifest).status == "unchanged"


def test_a_next_id_set_back_never_hands_out_a_live_photos_id_again(make_gallery, build, tmp_path):
    gallery = make_gallery({"cat": 3})
    build(gallery=gallery)
    path = manifest_path(tmp_path / "index")
    path.write_text(json.dumps({**json.loads(path.read_text()), "next_id": 0}))  # by hand, or damage
    write_photo(gallery / "cat" / "new.jpg", 77)
    report = build(gallery=gallery)
    assert (report.added, report.size) == (1, 4)
    with IndexReader.open(tmp_path / "index") as reader:
        ids = reader.vectors()[0]
        assert len(set(ids)) == 4 and reader.record(3).path.endswith("new.jpg")


@pytest.mark.parametrize("pointer", [b"\xff\xfe\x00garbage", b"", b"../../etc\n"])
def test_a_damaged_pointer_stops_the_build_instead_of_renumbering_every_photo(make_gallery, tmp_path, capsys,
                                                                            pointer):
    gallery = make_gallery({"cat": 3})
    index_dir = tmp_path / "index"
    args = ["build", "--gallery", str(gallery), "--out", str(index_dir), "--workers", "0", "--no-progress"]
    assert main(args) == 0
    live = current_version(index_dir)
    capsys.readouterr()
    (index_dir / "current").write_bytes(pointer)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "index pointer" in err and f"the newest is {live}" in err and "--rebuild" in err
    assert (index_dir / "versions" / f"{live}.json").is_file()  # nothing was replaced
    (index_dir / "current").write_text(live + "\n")  # the repair the message names
    assert main(args) == 0 and "unchanged" in capsys.readouterr().out
    (index_dir / "current").write_bytes(pointer)
    assert main([*args, "--rebuild"]) == 0 and current_version(index_dir) not in (None, live)


@pytest.mark.parametrize("changed", [False, True])
def test_a_missing_pointer_beside_versions_is_named_again_and_built_on(make_gallery, tmp_path, capsys, changed):
    """A first build killed between its version and its pointer, or a pointer deleted by hand: the build started
    from nothing and renumbered every photo. It now builds on the newest version and names it again, also when
    nothing changed (no new version is written then)."""
    gallery = make_gallery({"cat": 3})
    index_dir = tmp_path / "index"
    args = ["build", "--gallery", str(gallery), "--out", str(index_dir), "--workers", "0", "--no-progress"]
    assert main(args) == 0
    (gallery / "cat" / "cat_0.jpg").unlink()
    assert main(args) == 0
    live = current_version(index_dir)
    with IndexReader.open(index_dir) as reader:
        ids = {record.path: record.id for record in reader.records(reader.vectors()[0])}
    (index_dir / "current").unlink()
    if changed:
        write_photo(gallery / "cat" / "late.jpg", 55)
    capsys.readouterr()
    assert main(args) == 0
    assert current_version(index_dir) is not None and (current_version(index_dir) == live) is not changed
    with IndexReader.open(index_dir) as reader:
        after = {record.path: record.id for record in reader.records(reader.vectors()[0])}
    assert {path: after[path] for path in ids} == ids  # no photo renumbered, deleted ids not reused
    assert not changed or after[str(gallery / "cat" / "late.jpg")] == 3
