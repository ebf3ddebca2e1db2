"""Versions: a commit turns replaced and removed photos into tombstones; manifests are small and round-trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from photo_index.backends.folder.segments import SegmentStore
from photo_index.backends.folder.segments.version import INLINE_TOMBSTONES
from photo_index.errors import BuildError, IndexCorruptError
from photo_index.format import current_version

from .segtools import add_segment as add

ENCODER = {"fingerprint": "enc-1"}


def test_replaced_and_removed_photos_become_tombstones_of_the_segment_holding_them(tmp_path):
    store = SegmentStore(tmp_path)
    first = store.commit(None, added=[add(store, range(100), 1)], encoder=ENCODER, fields={"gallery": {"root": "/g"}})
    store.publish(first)
    second = store.commit(first, added=[add(store, [5, 7, 100, 101], 2)], removed=np.array([9, 50, 999]))
    store.publish(second)
    assert current_version(tmp_path) == second.name and second.previous == first.name
    old, new = second.segments
    assert old.tombstones.tolist() == [5, 7, 9, 50]  # replaced 5, 7; removed 9, 50; 999 was never there
    assert (old.live, new.live, second.size, second.deleted) == (96, 4, 100, 4)
    assert second.next_id == 102
    assert second.encoder == ENCODER and second.fields == {"gallery": {"root": "/g"}}
    again = store.read_version(second.name)
    assert [r.tombstones.tolist() for r in again.segments] == [[5, 7, 9, 50], []]
    assert (again.size, again.next_id, again.previous, again.fields) == (100, 102, first.name, second.fields)


def test_a_segment_whose_every_row_is_deleted_leaves_the_version(tmp_path):
    store = SegmentStore(tmp_path)
    first = store.commit(None, added=[add(store, [1, 2], 1), add(store, [3, 4], 2)], encoder=ENCODER)
    second = store.commit(first, removed=np.array([1, 2]))
    assert [ref.name for ref in second.segments] == [first.segments[1].name]


def test_large_tombstone_sets_live_in_a_shared_content_addressed_file(tmp_path):
    store = SegmentStore(tmp_path)
    first = store.commit(None, added=[add(store, range(1000), 1)], encoder=ENCODER)
    removed = np.arange(0, 1000, 5)
    second = store.commit(first, removed=removed)
    store.publish(second)
    third = store.commit(second, added=[add(store, [2000], 2)])  # the big segment's tombstones do not change
    store.publish(third)
    manifest = json.loads(store.version_path(third.name).read_text())
    entry = manifest["segments"][0]["tombstones"]
    assert len(removed) > INLINE_TOMBSTONES and entry["count"] == len(removed)
    assert [p.name for p in store.tombstones_dir.iterdir()] == [entry["file"].split("/")[1]]
    assert store.version_path(third.name).stat().st_size < 2000  # the manifest stays small
    assert np.array_equal(store.read_version(third.name).segments[0].tombstones, removed)


def test_new_segments_sharing_an_id_are_refused(tmp_path):
    store = SegmentStore(tmp_path)
    with pytest.raises(BuildError, match="same photo id"):
        store.commit(None, added=[add(store, [1, 2], 1), add(store, [2, 3], 2)], encoder=ENCODER)


def test_a_version_listing_a_missing_segment_is_not_published(tmp_path):
    store = SegmentStore(tmp_path)
    first = store.commit(None, added=[add(store, [1], 1)], encoder=ENCODER)
    store.publish(first)
    info = add(store, [2], 2)
    second = store.commit(first, added=[info])
    (store.segment_dir(info.name) / "segment.json").unlink()
    with pytest.raises(BuildError, match="not on disk"):
        store.publish(second)
    assert current_version(tmp_path) == first.name


@pytest.mark.parametrize("damage", ["not json", json.dumps({"format": "sbir-index/2"}), json.dumps([1])])
def test_a_damaged_manifest_is_a_corrupt_index(tmp_path, damage):
    store = SegmentStore(tmp_path)
    version = store.commit(None, added=[add(store, [1], 1)], encoder=ENCODER)
    store.publish(version)
    store.version_path(version.name).write_text(damage)
    with pytest.raises(IndexCorruptError):
        store.current()
