"""Searching a version's segments as one index: same top-10 as a fresh full build, tombstones never returned,
and k results still come back when a segment's best matches are deleted."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

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


def first_segment_of(tmp_path, factory: str):
    """300 photos in one segment of ``factory``, then 40 new ones in a small exact one; 50 of the first removed."""
    store = SegmentStore(tmp_path / "index")
    ids, more = np.arange(300, dtype=np.int64), np.arange(300, 340, dtype=np.int64)
    big = write_segment(store.segments_dir, unit_vectors(300, 1), ids, records_for(ids), factory=factory)
    version = store.commit(None, added=[big], encoder=ENCODER)
    version = store.commit(version, added=[write_segment(store.segments_dir, unit_vectors(40, 2), more,
                                                         records_for(more))], removed=np.arange(100, 150))
    store.publish(version)
    return store, version


@pytest.mark.parametrize("factory", ["PQ8", "HNSW16"])
def test_segments_of_any_factory_skip_their_deleted_photos(tmp_path, factory):
    # FAISS's PQ takes no search parameters: every search failed once the segment had a deletion (the service then
    # refused every new version); HNSW filters inside FAISS.
    store, version = first_segment_of(tmp_path, factory)
    queries = unit_vectors(20, seed=9)
    with SegmentedView(store, version) as view:
        scores, found = view.search(queries, 10)
        assert (found >= 0).all() and not np.isin(found, np.arange(100, 150)).any()
        assert np.all(np.diff(scores, axis=1) <= 1e-6)  # still ordered by score
        cats = view.ids_of_category("cat")
        filtered = view.search(queries, 10, cats)[1]
        assert (filtered >= 0).all() and np.isin(filtered, cats).all()
        # the whole segment asked for: its live photos once each (HNSW's filtered walk stops early), never the deleted
        everything = view.segments[0].search(queries[:1], 300, None)[1][0]
        everything = everything[everything >= 0].tolist()
        assert len(set(everything)) == len(everything) >= 100 and set(everything) <= {*range(100), *range(150, 300)}


THREADED_SEARCH = """
import threading, numpy as np, sys
from pathlib import Path
from photo_index.backends.folder.segments import SegmentedView, SegmentStore
store = SegmentStore(Path(sys.argv[1]))
view = SegmentedView(store, store.current())
queries = np.random.default_rng(3).standard_normal((8, 32)).astype(np.float32)
expected = view.search(queries, 10)[1]
wrong = []
def search():
    for _ in range(30):
        wrong.append(not np.array_equal(view.search(queries, 10)[1], expected))
threads = [threading.Thread(target=search) for _ in range(3)]
[t.start() for t in threads]; [t.join() for t in threads]
print(sum(wrong))
"""


def test_threads_sharing_a_view_search_an_hnsw_segment_with_deletions(tmp_path):
    # The search parameters were one object per segment, shared: FAISS's IndexIDMap repoints their selector while
    # it searches, and two threads crashed the process (SIGSEGV). A child process, so a crash fails only this test.
    first_segment_of(tmp_path, "HNSW16")
    result = subprocess.run([sys.executable, "-c", THREADED_SEARCH, str(tmp_path / "index")], capture_output=True,
                            text=True, timeout=120, cwd=Path(__file__).parents[2])
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "0"


def test_the_base_of_an_incremental_build_reads_no_faiss_index(tmp_path, monkeypatch):
    # A build needs ids, records and where each vector is: opening a view read the largest index into memory and
    # added the small segments' rows to it, for the whole build.
    from photo_index.backends.folder import segmented
    from photo_index.backends.folder.faiss_index import FaissEngine

    store, version = first_segment_of(tmp_path, "IVF8,Flat")
    opened = []
    real_open = FaissEngine.open
    monkeypatch.setattr(FaissEngine, "open", lambda *args, **kwargs: opened.append(1) or real_open(*args, **kwargs))
    monkeypatch.setattr(segmented, "check_manifest", lambda manifest, where: manifest)  # a bare test version
    previous = segmented.SegmentedPrevious(store, version)
    assert not opened
    assert previous.ids.tolist() == [*range(100), *range(150, 340)]
    with SegmentedView(store, version) as view:  # a view still opens what it searches
        view.search(unit_vectors(1, seed=4), 5)
    assert opened


def test_a_search_deeper_than_gpu_faiss_selects_runs_on_the_cpu_copy(tmp_path):
    """GPU FAISS selects at most 2048 per query and failed the whole batch past it (a deep page, an over-fetch)."""
    import numpy as np

    from photo_index.backends.folder.faiss_index import GPU_MAX_K, FaissEngine

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((50, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(50, dtype=np.int64)
    engine = FaissEngine()
    section = engine.build(vectors, ids, tmp_path, factory="Flat", device="cpu", progress=False)
    index = engine.open(tmp_path, section, vectors, ids, device="cpu")

    class GpuLike:  # what a GPU copy does past its limit
        def search(self, queries, k):
            if k > GPU_MAX_K:
                raise RuntimeError("Error: 'k <= GPU_MAX_SELECTION_K' failed")
            return index.cpu_index.search(queries, k)

    index.search_index = GpuLike()
    shallow, deep = index.search(vectors[:3], 5), index.search(vectors[:3], GPU_MAX_K + 1)
    assert (deep[1][:, :5] == shallow[1]).all() and (deep[1][:, 50:] == -1).all()
