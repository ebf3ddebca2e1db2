"""Damage the service must refuse, not serve: a tombstone file changed after it was written, counts that are no
numbers, segment ids a search could confuse with its own, an odd ``current`` pointer; and cleanup that goes on
around a version whose manifest cannot be read."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from photo_index.api import MAX_PHOTO_ID
from photo_index.backends.folder.segments import SegmentStore
from photo_index.backends.folder.segments.segment import TMP_PREFIX, Segment
from photo_index.backends.folder.segments.store import UNREADABLE
from photo_index.errors import BuildError, IndexCorruptError
from photo_index.format import read_pointer

from .segtools import add_segment as add

ENCODER = {"fingerprint": "enc-1"}


def with_tombstone_file(tmp_path):
    """A published version whose first segment's 100 deleted ids live in a tombstone file."""
    store = SegmentStore(tmp_path)
    first = store.commit(None, added=[add(store, range(300), 1)], encoder=ENCODER)
    version = store.commit(first, removed=np.arange(100))
    store.publish(version)
    entry = json.loads(store.version_path(version.name).read_text())["segments"][0]["tombstones"]
    return store, version, tmp_path / entry["file"]


@pytest.mark.parametrize("content", [np.arange(1, 101, dtype=np.int64), np.arange(100, dtype=np.int64)[:, None],
                                     np.arange(100, dtype=np.float64)], ids=["shifted", "2-d", "floats"])
def test_a_tombstone_file_changed_after_it_was_written_is_refused(tmp_path, content):
    """Shifted by one, its ids would bring photo 0 back and hide live photo 100: the name is its content's hash."""
    store, version, file = with_tombstone_file(tmp_path)
    file.chmod(0o644)
    np.save(file, content)
    with pytest.raises(IndexCorruptError, match="does not hold what its name says"):
        store.read_version(version.name)


def test_a_damaged_tombstone_file_is_written_again_by_the_next_publish(tmp_path):
    store, version, file = with_tombstone_file(tmp_path)
    good = file.read_bytes()
    file.write_bytes(good[:-8] + bytes(8))
    store.publish(store.commit(version, added=[add(store, [500], 2)]))  # the same tombstone set
    assert file.read_bytes() == good
    assert np.array_equal(store.current().segments[0].tombstones, np.arange(100))


@pytest.mark.parametrize(("field", "value"), [
    ("dim", "Infinity"), ("next_id", "1e999"), ("dim", "3.5"), ("next_id", "-1"), ("dim", '"32"'),
    ("segments.size", "Infinity"), ("segments.size", "true"), ("segments.tombstones", "[18446744073709551616]"),
    ("segments.tombstones", '["3"]'), ("segments.tombstones", "[1.5]"),
    ("segments.tombstones", f"[{MAX_PHOTO_ID + 1}]"),
    ("segments.tombstones", '{"file": "../../etc/passwd", "count": 1}'),
    ("segments.tombstones", '{"file": "tombstones/x.npy", "count": 1}'),
])
def test_numbers_that_are_no_counts_or_ids_are_a_damaged_manifest(tmp_path, field, value):
    store = SegmentStore(tmp_path)
    version = store.commit(None, added=[add(store, [1, 2, 3], 1)], encoder=ENCODER)
    store.publish(version)
    path = store.version_path(version.name)
    manifest = json.loads(path.read_text())
    marker = "__DAMAGE__"
    if field.startswith("segments."):
        manifest["segments"][0][field.split(".")[1]] = marker
    else:
        manifest[field] = marker
    path.write_text(json.dumps(manifest).replace(f'"{marker}"', value))  # Infinity and huge numbers as JSON has them
    with pytest.raises(IndexCorruptError):
        store.current()


@pytest.mark.parametrize("name", ["../../outside", "/etc", ".hidden", "a/b", 7])
def test_a_segment_name_that_is_no_folder_of_segments_is_a_damaged_manifest(tmp_path, name):
    # Joined to segments/ as it was, "../x" or an absolute path was read outside the index (a manifest without a
    # digest, as older code wrote, is not checked by it).
    store = SegmentStore(tmp_path)
    version = store.commit(None, added=[add(store, [1, 2, 3], 1)], encoder=ENCODER)
    store.publish(version)
    path = store.version_path(version.name)
    manifest = json.loads(path.read_text())
    manifest.pop("segments_digest", None)
    manifest["segments"][0]["name"] = name
    path.write_text(json.dumps(manifest))
    with pytest.raises(IndexCorruptError, match="is not a folder name of segments/"):
        store.current()


@pytest.mark.parametrize("ids", [
    np.array([0, 2, 1], dtype=np.int64), np.array([0, 1, MAX_PHOTO_ID + 2], dtype=np.int64),
    np.array([-1, 0, 1], dtype=np.int64), np.array([0, 1, 2], dtype=np.int32), np.array([0.0, 1.0, 2.0]),
], ids=["unsorted", "above-max", "negative", "int32", "floats"])
def test_a_segment_whose_ids_a_search_could_confuse_is_refused_at_open(tmp_path, ids):
    """Ids out of order answer searches with another photo; ids above MAX_PHOTO_ID collide with the search's own
    ids for small segments (search.ANNEX_ID_BASE)."""
    store = SegmentStore(tmp_path)
    info = add(store, [0, 1, 2], 1)
    np.save(store.segment_dir(info.name) / "ids.npy", ids)
    with pytest.raises(IndexCorruptError, match="ids"):
        Segment(store.segment_dir(info.name))


@pytest.mark.parametrize("part", ["ids.npy", "vectors.npy"])
def test_an_empty_array_file_is_a_damaged_segment_not_a_numpy_error(tmp_path, part):
    """numpy raises EOFError for a 0-byte .npy: it escaped every reader (the service's startup, verify, build)."""
    store = SegmentStore(tmp_path)
    info = add(store, [0, 1, 2], 1)
    (store.segment_dir(info.name) / part).write_bytes(b"")
    with pytest.raises(IndexCorruptError, match=f"{part} cannot be read .EOFError"):
        Segment(store.segment_dir(info.name))


def test_a_segment_is_never_written_with_ids_above_the_photo_id_range(tmp_path):
    with pytest.raises(BuildError, match="outside 0"):
        add(SegmentStore(tmp_path), [1, MAX_PHOTO_ID + 1], 1)


@pytest.mark.parametrize("kind", ["fifo", "device", "long name", "huge", "folder"])
def test_an_odd_current_pointer_is_refused_at_once(tmp_path, kind):
    """A FIFO would block the reload thread forever, /dev/zero would fill memory, a 300-character name fails every
    stat; a folder named current is not an index (no pointer)."""
    pointer = tmp_path / "current"
    if kind == "fifo":
        os.mkfifo(pointer)
    elif kind == "device":
        pointer.symlink_to("/dev/zero")
    elif kind == "long name":
        pointer.write_text("v" * 300 + "\n")
    elif kind == "huge":
        pointer.write_bytes(b"v" * 10**6)
    else:
        pointer.mkdir()
        assert read_pointer(tmp_path) is None
        return
    with pytest.raises(IndexCorruptError, match="index pointer"):
        read_pointer(tmp_path)


def test_an_unreadable_kept_manifest_keeps_its_segments_but_dead_writes_still_go(tmp_path):
    store = SegmentStore(tmp_path)
    first = store.commit(None, added=[add(store, [1, 2], 1)], encoder=ENCODER)
    store.publish(first)
    second = store.commit(first, added=[add(store, [3], 2)])
    store.publish(second)
    store.version_path(first.name).write_text('{"format": "sbir-ind')  # an old manifest, cut short
    dead = store.segments_dir / f"{TMP_PREFIX}s-killed-0000"
    dead.mkdir()
    (dead / "vectors.npy").write_bytes(bytes(1000))
    orphan = add(store, [9], 3)  # a whole segment no readable version lists: the unreadable one might

    removed = store.clear_dead_writes()

    assert removed[UNREADABLE] == [first.name]
    assert not dead.exists() and store.segment_dir(orphan.name).is_dir()
    assert all(store.segment_dir(name).is_dir() for name in second.segment_names())


def test_temporary_files_a_killed_writer_left_in_the_index_folder_go_once_no_writer_can_own_them(tmp_path):
    """A build killed between writing `current` aside and renaming it left `.current.<hex>.tmp` for ever (one more
    per kill); a fresh one may still be a live writer's (the service saves its query sample beside the index)."""
    store = SegmentStore(tmp_path)
    store.publish(store.commit(None, added=[add(store, [1, 2], 1)], encoder=ENCODER))
    (tmp_path / "reports").mkdir()
    dead, fresh = tmp_path / ".current.0a1b2c3d.tmp", tmp_path / ".query_sample.npy.0a1b2c3d.tmp"
    report = tmp_path / "reports" / ".v1.json.0a1b2c3d.tmp"
    for file in (dead, fresh, report):
        file.write_text("v-killed\n")
    os.utime(dead, (1, 1))
    os.utime(report, (1, 1))
    removed = store.clear_dead_writes()
    assert removed["temporary"] == [dead.name, report.name] and not dead.exists() and fresh.exists()
    assert not report.exists()
    assert read_pointer(tmp_path) == store.current_name()


def test_a_flipped_inline_tombstone_is_a_damaged_manifest_not_a_deleted_photo_come_back(tmp_path):
    """Inline tombstones (64 ids or fewer) had no checksum: 1 → 0 brought photo 1 back and hid live photo 0."""
    store = SegmentStore(tmp_path)
    first = store.commit(None, added=[add(store, range(10), 1)], encoder=ENCODER)
    version = store.commit(first, removed=np.array([1]))
    store.publish(version)
    path = store.version_path(version.name)
    good = path.read_text()
    data = json.loads(good)
    assert data["segments"][0]["tombstones"] == [1]
    data["segments"][0]["tombstones"] = [0]
    path.write_text(json.dumps(data))
    with pytest.raises(IndexCorruptError, match="segment list is not what was written"):
        store.read_version(version.name)
    data["segments"][0]["tombstones"], data["next_id"] = [1], 99  # other fields may be edited by hand
    path.write_text(json.dumps(data))
    assert store.read_version(version.name).next_id == 99
    for stale in (first.name, None):  # another version's digest (copied by older code after a rollback), or none
        data["segments_digest"] = f"{stale}:{data['segments_digest'].split(':')[1]}" if stale else None
        data["segments"][0]["tombstones"] = [0]
        path.write_text(json.dumps(data))
        assert store.read_version(version.name).segments[0].tombstones.tolist() == [0]
