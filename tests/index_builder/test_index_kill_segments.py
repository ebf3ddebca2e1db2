"""SIGKILL of a whole real ``python -m index_builder build`` process group while it writes its segment, and while
the tiered merge policy merges segments at the end of the build: the last version stays current, whole and
searchable, the lock is free, nothing of the build survives, and the next build publishes the change.

The kill lands at a known point: ``pausepoint/sitecustomize.py`` (test-only) holds the build just before it seals
the N-th segment, with that segment's files written into ``segments/.tmp-*``; the test reads the hold from the
build's stderr, then kills (no timing involved)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from photo_index import current_version, open_source
from photo_index.backends.folder import IndexReader
from photo_index.backends.folder.segments import SegmentStore
from photo_index.backends.folder.segments.segment import TMP_PREFIX
from photo_index.checks import verify

from .conftest import write_photo
from .killing import build_killed_before_seal, locked_by_another_process, write_distinct_photos

pytestmark = pytest.mark.slow


def queries(dim: int) -> np.ndarray:
    vectors = np.random.default_rng(3).standard_normal((4, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def served(index_dir: Path) -> tuple[str, int, np.ndarray]:
    """(current version, its size, the top-5 ids of fixed queries) as a reader opening the index sees them."""
    with IndexReader.open(index_dir) as reader:
        return current_version(index_dir), reader.size, reader.search(queries(reader.dim), 5)[1]


def temp_folders(index_dir: Path) -> list[str]:
    return [p.name for p in (index_dir / "segments").iterdir() if p.name.startswith(TMP_PREFIX)]


def check_survived_and_next_build_completes(build, gallery: Path, index_dir: Path, tmp: Path, before: tuple,
                                            expected_size: int):
    """After the kill: the last version serves as before and verifies, the lock is free, the killed build's temp
    folder is there (the kill landed mid-write); the next build publishes every photo and clears the leftovers.
    Returns the next build's report."""
    assert tmp.parent == index_dir / "segments" and tmp.is_dir() and not (tmp / "segment.json").exists()
    after = served(index_dir)
    assert after[:2] == before[:2] and np.array_equal(after[2], before[2])
    assert verify(open_source(index_dir)) == []
    assert not locked_by_another_process(index_dir)

    report = build(gallery=gallery)
    assert report.status == "built" and report.previous == before[0] and report.size == expected_size
    assert current_version(index_dir) == report.version
    with IndexReader.open(index_dir) as reader:
        paths = {record.path for record in reader.records(reader.stored().ids)}
    assert len(paths) == expected_size and paths == {str(p) for p in gallery.rglob("*.*")}
    assert verify(open_source(index_dir)) == []
    assert temp_folders(index_dir) == []
    store = SegmentStore(index_dir)
    listed = {name for version in store.versions() for name in store.read_version(version).segment_names()}
    assert {p.name for p in store.segments_dir.iterdir()} == listed  # no orphan of the killed build stays
    return report


def test_a_kill_while_the_build_writes_its_segment(make_gallery, build, tmp_path):
    gallery = make_gallery({"cat": 3, "dog": 3})
    build(gallery=gallery)
    index_dir = tmp_path / "index"
    before = served(index_dir)
    write_distinct_photos(gallery / "dog", 40)

    tmp = build_killed_before_seal(gallery, index_dir, seal=1)
    assert sorted(p.name for p in tmp.iterdir()) == ["ids.npy", "index.faiss", "metadata.sqlite", "vectors.npy"]
    report = check_survived_and_next_build_completes(build, gallery, index_dir, tmp, before, 46)
    assert report.added == 40 and report.resumed == 40  # the killed build's embeddings were kept in staging


def test_a_kill_while_the_build_merges_segments(make_gallery, build, tmp_path):
    gallery = make_gallery({"cat": 2})
    build(gallery=gallery)
    for n in range(9):  # ten small segments: the most the tiered policy allows an index this small
        write_photo(gallery / "dog" / f"dog_{n}.jpg", 500 + n)
        build(gallery=gallery)
    index_dir = tmp_path / "index"
    store = SegmentStore(index_dir)
    assert len(store.current().segments) == 10
    before = served(index_dir)
    write_distinct_photos(gallery / "bird", 3)  # the eleventh segment: the build then merges ten into one

    tmp = build_killed_before_seal(gallery, index_dir, seal=2)
    sealed = [p.name for p in store.segments_dir.iterdir()
              if not p.name.startswith(TMP_PREFIX) and p.name not in store.current().segment_names()]
    assert len(sealed) == 1  # the build's own segment was sealed; the kill came in the merge after it
    report = check_survived_and_next_build_completes(build, gallery, index_dir, tmp, before, 14)
    assert report.added == 3 and "merged 10 segments into 1" in report.notes
    assert len(store.current().segments) == 2
