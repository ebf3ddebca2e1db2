"""Files that could not be decoded are remembered across builds (index_builder/known_failures.py): an unchanged
broken file is not read again, a changed one is, and anything that could change decoding forgets the list."""

from __future__ import annotations

import json
import os

import pytest

from index_builder import known_failures
from index_builder.known_failures import FAILED_FILE
from index_builder.sources import UNREADABLE, Skipped

from .conftest import write_photo


@pytest.fixture()
def reads(monkeypatch):
    """The paths the build's reader opens (workers=0: the reader runs in this process)."""
    import index_builder.local_distributor as local

    opened: list[str] = []
    real = local.read_photo

    def spy(index, path, *args, **kwargs):
        opened.append(os.path.basename(path))
        return real(index, path, *args, **kwargs)

    monkeypatch.setattr(local, "read_photo", spy)
    return opened


@pytest.fixture()
def broken_gallery(make_gallery):
    gallery = make_gallery({"cat": 3, "dog": 2})
    good = (gallery / "cat" / "cat_0.jpg").read_bytes()
    (gallery / "cat" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (gallery / "dog" / "text.jpg").write_text("not an image at all")
    return gallery


def remembered(index_dir) -> dict[str, str]:
    data = json.loads((index_dir / FAILED_FILE).read_text())
    return {os.path.basename(item["path"]): item["reason"] for item in data["files"]}


def skipped(report) -> dict[str, str]:
    return {os.path.basename(item.path): item.reason for item in report.skipped}


BROKEN = {"truncated.jpg": "truncated", "text.jpg": "not-an-image"}


def test_unchanged_broken_files_are_not_read_again(broken_gallery, build, tmp_path, reads):
    first = build(gallery=broken_gallery)
    assert first.size == 5 and skipped(first) == BROKEN
    assert {"truncated.jpg", "text.jpg"} <= set(reads)
    assert remembered(tmp_path / "index") == BROKEN

    reads.clear()
    second = build(gallery=broken_gallery)

    assert reads == []  # nothing changed: no file opened at all
    assert second.status == "unchanged" and second.size == 5
    assert skipped(second) == BROKEN  # still reported, with their reasons
    assert any("2 file(s) that could not be decoded in an earlier run were not read again" in note
               for note in second.notes)
    assert "not read again" in second.summary()


def test_a_changed_or_deleted_broken_file_is_read_again(broken_gallery, build, tmp_path, reads):
    build(gallery=broken_gallery)
    write_photo(broken_gallery / "dog" / "text.jpg", seed=77)  # mended: now a photo
    (broken_gallery / "cat" / "truncated.jpg").unlink()
    reads.clear()

    report = build(gallery=broken_gallery)

    assert reads == ["text.jpg"]
    assert report.status == "built" and report.added == 1 and report.size == 6 and report.skipped == []
    assert not (tmp_path / "index" / FAILED_FILE).exists()  # nothing left to remember


def test_rebuild_reads_every_file_again(broken_gallery, build, reads):
    build(gallery=broken_gallery)
    reads.clear()

    report = build(gallery=broken_gallery, rebuild=True)

    assert {"truncated.jpg", "text.jpg"} <= set(reads) and skipped(report) == BROKEN


def test_another_pixel_limit_forgets_the_list(broken_gallery, build, tmp_path, reads, monkeypatch, tiny_baseline):
    """A file too large under one limit (SBIR_MAX_IMAGE_PIXELS when the encoder was loaded) may decode under
    another: the list is kept only for the same decoding."""
    big = broken_gallery / "cat" / "big.png"
    write_photo(big, seed=5, size=(120, 100))
    monkeypatch.setattr(tiny_baseline.preprocess, "max_pixels", 10000)
    first = build(gallery=broken_gallery)
    assert skipped(first)["big.png"] == "too-large"

    monkeypatch.setattr(tiny_baseline.preprocess, "max_pixels", 100000)
    reads.clear()
    second = build(gallery=broken_gallery)

    assert {"big.png", "truncated.jpg", "text.jpg"} <= set(reads)
    assert "big.png" not in skipped(second) and second.added == 1
    assert remembered(tmp_path / "index") == BROKEN


@pytest.mark.parametrize("damage", [b"", b"{not json", b"[1, 2]", b'{"decoding": {}, "files": []}'])
def test_a_damaged_list_means_reading_again(broken_gallery, build, tmp_path, reads, damage):
    build(gallery=broken_gallery)
    (tmp_path / "index" / FAILED_FILE).write_bytes(damage)
    reads.clear()

    report = build(gallery=broken_gallery)

    assert {"truncated.jpg", "text.jpg"} <= set(reads) and skipped(report) == BROKEN
    assert remembered(tmp_path / "index") == BROKEN


def test_malformed_entries_are_ignored(tmp_path, tiny_baseline):
    good = {"path": "/g/a.jpg", "size": 3, "mtime_ns": 4, "ctime_ns": 5, "reason": "corrupt", "detail": "x"}
    files = [good, {**good, "size": "3"}, {**good, "mtime_ns": True}, {**good, "reason": UNREADABLE},
             {"path": "/g/b.jpg"}, "a string", None, {**good, "path": 7}]
    identity = known_failures.decoding_identity(tiny_baseline.preprocess)
    (tmp_path / FAILED_FILE).write_text(json.dumps({"decoding": identity, "files": files}))

    loaded = known_failures.load(tmp_path, tiny_baseline.preprocess)
    assert loaded == {("/g/a.jpg", 3, 4, 5): Skipped("/g/a.jpg", "corrupt", "x")}


def test_only_the_files_own_faults_are_remembered(tmp_path, tiny_baseline):
    """An unreadable file (a permission, an I/O error) may read next time; NaN vectors are the encoder's fault."""
    keys = [(f"/g/{name}.jpg", 1, 2, 3) for name in ("corrupt", "unreadable", "nan", "gone")]
    failures = {keys[0]: Skipped(keys[0][0], "corrupt", "bad"), keys[1]: Skipped(keys[1][0], UNREADABLE, "EIO"),
                keys[2]: Skipped(keys[2][0], "not-finite", "NaN"), keys[3]: Skipped(keys[3][0], "corrupt", "bad")}

    preprocess = tiny_baseline.preprocess
    assert known_failures.save(tmp_path, preprocess, failures, keys[:3]) == 1  # "gone" was not scanned: deleted

    assert list(known_failures.load(tmp_path, preprocess)) == [keys[0]]


def test_a_list_that_cannot_be_written_does_not_fail_the_build(broken_gallery, build, tmp_path):
    build(gallery=broken_gallery)
    (tmp_path / "index" / FAILED_FILE).unlink()
    (tmp_path / "index" / FAILED_FILE).mkdir()  # the rename over it fails

    write_photo(broken_gallery / "cat" / "new.jpg", seed=9)
    report = build(gallery=broken_gallery)

    assert report.status == "built" and report.added == 1
    assert any(note.startswith("could not remember the files that failed") for note in report.notes)
    assert not [p for p in (tmp_path / "index").iterdir() if p.name.endswith(".tmp")]


def test_a_file_that_ran_out_of_memory_is_not_remembered(broken_gallery, build, tmp_path, reads, monkeypatch):
    """Running short of memory is the machine's state, not the file's: the next build reads it again."""
    from encoder import ImageDecodeError, Preprocessor

    real = Preprocessor.photo_file_pixels

    def short_of_memory(self, data):
        if data.startswith(b"\x89PNG"):  # the gallery's PNGs: decoding them runs out of memory
            try:
                raise MemoryError
            except MemoryError as error:
                raise ImageDecodeError("The image is corrupt or truncated (MemoryError: ).") from error
        return real(self, data)

    monkeypatch.setattr(Preprocessor, "photo_file_pixels", short_of_memory)
    first = build(gallery=broken_gallery)
    assert {name: reason for name, reason in skipped(first).items() if name.endswith(".png")} == {
        "cat_1.png": "out-of-memory", "dog_1.png": "out-of-memory"}
    assert remembered(tmp_path / "index") == BROKEN  # the broken files only

    monkeypatch.setattr(Preprocessor, "photo_file_pixels", real)
    reads.clear()
    second = build(gallery=broken_gallery)
    assert sorted(reads) == ["cat_1.png", "dog_1.png"] and second.added == 2 and skipped(second) == BROKEN


def test_failures_a_failed_build_staged_are_read_again_under_a_new_limit_or_a_rebuild(make_gallery, build, tmp_path,
                                                                                        reads, monkeypatch,
                                                                                        tiny_baseline):
    """A build whose every photo was too large stops with staging kept; its staged failures held the index
    unbuildable after the limit was raised, even with --rebuild, until staging/ was deleted by hand."""
    from photo_index.errors import BuildError

    gallery = make_gallery({"cat": 2, "dog": 1})
    build(gallery=gallery)
    monkeypatch.setattr(tiny_baseline.preprocess, "max_pixels", 10)
    with pytest.raises(BuildError, match=r"too-large 3\); the live version"):
        build(gallery=gallery, rebuild=True)
    reads.clear()
    with pytest.raises(BuildError, match="too-large 3"):
        build(gallery=gallery, rebuild=True)  # same limit, --rebuild: every file read again
    assert len(reads) == 3

    monkeypatch.setattr(tiny_baseline.preprocess, "max_pixels", 10**8)
    for rebuild in (True, False):
        report = build(gallery=gallery, rebuild=rebuild)
        assert report.size == 3 and not report.skipped


def test_a_staged_failure_that_is_not_the_files_fault_is_read_again_on_resume(broken_gallery, build, tmp_path, reads,
                                                                              tiny_baseline):
    """Out of memory (or a permission) in an interrupted run says nothing about the file: the resume reads it."""
    from index_builder.staging import Staging
    from photo_index.compatibility import embedding_identity
    from photo_index.format import STAGING

    build(gallery=broken_gallery)
    target = broken_gallery / "cat" / "cat_0.jpg"
    target.write_bytes(target.read_bytes())  # written since the build: read again, not reused
    info = target.stat()
    staged = {"path": str(target), "size": info.st_size, "mtime_ns": info.st_mtime_ns, "ctime_ns": info.st_ctime_ns,
              "reason": "out-of-memory", "detail": "the reader ran out of memory"}
    with Staging(tmp_path / "index" / STAGING, embedding_identity(tiny_baseline), tiny_baseline.embed_dim,
                 decoding=known_failures.decoding_identity(tiny_baseline.preprocess)) as interrupted:
        interrupted._failed.write(json.dumps(staged) + "\n")  # what an interrupted run's reader left
    reads.clear()
    report = build(gallery=broken_gallery)
    assert "cat_0.jpg" in reads and "cat_0.jpg" not in skipped(report)
