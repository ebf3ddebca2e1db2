"""Searching a version's segments as one index: same top-10 as a fresh full build, tombstones never returned,
and k results still come back when a segment's best matches are deleted."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from photo_index.backends.folder.segments import SegmentedView, SegmentStore, write_segment
from tests.tolerance import assert_same_top_k

from .segtools import exact_top_k, records_for, unit_vectors

ENCODER = {"fingerprint": "enc-1"}


def changed_index(tmp_path, factory: str | None = None, search_params: dict | None = None):
    """A version of three changes: 300 photos; 10 replaced + 50 added; 50 removed. Returns (store, version,
    live {id: vector})."""
    store = SegmentStore(tmp_path / "index")
    live = {}

    def add(ids, seed, tag):
        ids = np.asarray(ids, dtype=np.int64)
        vectors = unit_vectors(len(ids), seed)
        live.update(zip(ids.tolist(), vectors, strict=True))
        return write_segment(store.segments_dir, vectors, ids, records_for(ids, tag), factory=factory)

    version = store.commit(None, added=[add(range(300), 1, "a")], encoder=ENCODER)
    version = store.commit(version, added=[add([*range(10, 20), *range(300, 350)], 2, "b")])
    removed = np.arange(100, 150)
    for i in removed.tolist():
        del live[i]
    version = store.commit(version, removed=removed)
    if search_params:
        version = replace(version, segments=tuple(replace(r, search_params=search_params) for r in version.segments))
    store.publish(version)
    return store, version, live


def test_a_segmented_index_returns_the_top_10_of_a_fresh_full_build(tmp_path):
    store, version, live = changed_index(tmp_path)
    queries = unit_vectors(40, seed=9)
    fresh_store = SegmentStore(tmp_path / "fresh")
    ids = np.array(sorted(live), dtype=np.int64)
    full = write_segment(fresh_store.segments_dir, np.stack([live[i] for i in ids.tolist()]), ids, records_for(ids))
    fresh_store.publish(fresh_store.commit(None, added=[full], encoder=ENCODER))
    with SegmentedView(store, version) as view, SegmentedView(fresh_store, fresh_store.current()) as fresh:
        assert (view.size, fresh.size) == (300, 300)
        scores, found = view.search(queries, 10)
        fresh_scores, fresh_found = fresh.search(queries, 10)
        assert_same_top_k(scores, found, fresh_scores, fresh_found)
        assert_same_top_k(scores, found, *exact_top_k(live, queries, 10))
        cats = view.ids_of_category("cat")
        assert np.array_equal(cats, fresh.ids_of_category("cat"))
        assert_same_top_k(*view.search(queries, 10, cats), *fresh.search(queries, 10, cats))
        assert np.array_equal(view.ids(), ids)


def test_replaced_and_removed_photos_resolve_to_their_live_copy_or_nothing(tmp_path):
    store, version, live = changed_index(tmp_path)
    with SegmentedView(store, version) as view:
        records = view.records([10, 25, 120, 340, -1])
        assert [r.metadata["tag"] if r else None for r in records] == ["b", "a", None, "b", None]
        np.testing.assert_array_equal(view.vector(10), live[10])
        assert view.vector(120) is None
        assert view.categories() == ["cat", "dog", "owl"]


@pytest.mark.parametrize(("factory", "params"), [(None, None), ("IVF8,Flat", {"nprobe": 8})])
def test_deleted_best_matches_are_skipped_inside_faiss_and_k_results_still_come(tmp_path, factory, params):
    store, version, live = changed_index(tmp_path, factory, params)
    big = version.segments[0]
    query = live[200][None, :]
    nearest = exact_top_k(live, query, 30)[1][0]
    deleted = np.array([i for i in nearest.tolist() if i < 300 and not 10 <= i < 20], dtype=np.int64)
    version = store.commit(version, removed=deleted)
    assert len(version.segments[0].tombstones) == big.deleted + len(deleted)
    for i in deleted.tolist():
        del live[i]
    with SegmentedView(store, version) as view:
        scores, found = view.search(query, 10)
        assert (found >= 0).all() and not set(found[0].tolist()) & set(deleted.tolist())
        assert_same_top_k(scores, found, *exact_top_k(live, query, 10))
        # the big segment alone still answers k live photos (the deletions were excluded inside FAISS)
        alone = view.segments[0].search(query, 10, None)[1]
        assert (alone >= 0).all() and not set(alone[0].tolist()) & set(deleted.tolist())


def test_more_results_asked_than_photos_pad_with_minus_one(tmp_path):
    store = SegmentStore(tmp_path)
    ids = np.array([3, 4], dtype=np.int64)
    version = store.commit(None, added=[write_segment(store.segments_dir, unit_vectors(2, 1), ids,
                                                      records_for(ids))], encoder=ENCODER)
    version = store.commit(version, removed=np.array([3]))
    with SegmentedView(store, version) as view:
        scores, found = view.search(unit_vectors(1, 2), 3)
        assert found.tolist() == [[4, -1, -1]] and np.isneginf(scores[0, 1:]).all()


def ivf_and_small_segments(tmp_path, factory: str = "IVF16,Flat"):
    """An approximate segment of 2,000 photos, then three small (exact) ones: 40 new photos each, the first also
    replacing photos 0-9 of the big one, and 20 of the big one's photos removed. Returns (store, version, live)."""
    store = SegmentStore(tmp_path)
    live = {}

    def add(ids, seed, factory=None):
        ids = np.asarray(ids, dtype=np.int64)
        vectors = unit_vectors(len(ids), seed)
        live.update(zip(ids.tolist(), vectors, strict=True))
        return write_segment(store.segments_dir, vectors, ids, records_for(ids), factory=factory)

    version = store.commit(None, added=[add(range(2000), 1, factory)], encoder=ENCODER)
    version = store.commit(version, added=[add([*range(10), *range(2000, 2040)], 2)])
    for n in range(1, 3):
        version = store.commit(version, added=[add(range(2000 + 40 * n, 2040 + 40 * n), 2 + n)])
    removed = np.arange(500, 520)
    for i in removed.tolist():
        del live[i]
    version = store.commit(version, removed=removed)
    return store, version, live


def test_small_segments_are_searched_inside_the_ivf_segment_in_one_call(tmp_path):
    store, version, live = ivf_and_small_segments(tmp_path)
    # every list probed: the search must then be exact, the small rows' included
    version = replace(version, segments=(replace(version.segments[0], search_params={"nprobe": 16}),
                                         *version.segments[1:]))
    queries = np.concatenate([unit_vectors(30, seed=9), np.stack([live[i] for i in (0, 5, 2001, 2100)])])
    with SegmentedView(store, version) as view:
        host = view.segments[0].segment.index
        assert view._small.host is view.segments[0] and view._small.index is None
        # the 130 small rows sit in the host's in-memory index; what it says of its own rows is unchanged
        assert (host.cpu_index.ntotal, host.size, len(host.ids())) == (2130, 2000, 2000)
        scores, found = view.search(queries, 10)
        # photos 0-9: their new copy, never the tombstoned old one
        assert_same_top_k(scores, found, *exact_top_k(live, queries, 10))
        owls = view.ids_of_category("owl")
        assert_same_top_k(*view.search(queries, 10, owls), *exact_top_k(live, queries, 10, set(owls.tolist())))


def test_small_segments_beside_an_index_that_takes_no_rows_are_one_flat_index(tmp_path):
    store, version, live = ivf_and_small_segments(tmp_path, factory="HNSW16")
    version = replace(version, segments=(replace(version.segments[0], search_params={"efSearch": 512}),
                                         *version.segments[1:]))
    queries = unit_vectors(30, seed=9)
    with SegmentedView(store, version) as view:
        assert view._small.host is None and view._small.index.ntotal == 130
        assert np.array_equal(view.search(queries, 10)[1], exact_top_k(live, queries, 10)[1])
