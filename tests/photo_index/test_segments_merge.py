"""The tiered merge policy keeps segments bounded, merges keep every live photo and drop tombstones, compact
makes one calibrated segment, and garbage collection deletes only what no retained version lists."""

from __future__ import annotations

import numpy as np

from photo_index.backends.folder.segments import (
    SegmentedView,
    SegmentRef,
    SegmentStore,
    TieredMergePolicy,
    apply_policy,
    compact,
    write_segment,
)
from photo_index.backends.folder.segments import merge as merge_segments
from photo_index.backends.folder.segments.merge import merge_factory
from photo_index.backends.folder.segments.segment import TMP_PREFIX
from photo_index.backends.folder.segments.tune import tune_version

from .segtools import add_segment, exact_top_k, records_for, unit_vectors

ENCODER = {"fingerprint": "enc-1"}


def refs(*sizes: int, deleted: dict[int, int] | None = None) -> list[SegmentRef]:
    deleted = deleted or {}
    return [SegmentRef(name=f"s{n:02d}", size=size, tombstones=np.arange(deleted.get(n, 0), dtype=np.int64))
            for n, size in enumerate(sizes)]


def test_under_budget_nothing_is_merged():
    policy = TieredMergePolicy(segments_per_tier=4, max_merge_at_once=4, floor_size=100)
    assert policy.plan(refs(10_000, 100, 100, 100)) == []


def test_over_budget_the_smallest_segments_merge_a_few_at_a_time():
    policy = TieredMergePolicy(segments_per_tier=4, max_merge_at_once=4, floor_size=100)
    segments = refs(100_000, *([10] * 30))  # one big segment, thirty small changes
    budget = policy.allowed_segments(100_300)
    merges = policy.plan(segments)
    assert len(segments) > budget
    assert all(len(group) == 4 and "s00" not in group for group in merges)  # the big segment is left alone
    assert len(segments) - sum(len(g) - 1 for g in merges) <= budget
    assert len({name for group in merges for name in group}) == sum(len(g) for g in merges)


def test_a_segment_with_many_tombstones_is_rewritten():
    policy = TieredMergePolicy(tombstone_ratio=0.3)
    assert policy.plan(refs(1000, 1000, deleted={1: 299})) == []
    assert policy.plan(refs(1000, 1000, deleted={1: 300})) == [("s01",)]


def test_the_budget_grows_by_tiers():
    policy = TieredMergePolicy(segments_per_tier=10, max_merge_at_once=10, floor_size=10_000)
    assert policy.allowed_segments(0) == 10
    assert policy.allowed_segments(1_000_000) == 19  # 10 of 10k + 9 of 100k
    assert policy.allowed_segments(10_000_000) < policy.allowed_segments(100_000_000)


def many_changes(tmp_path, changes: int = 6):
    """A base of 500 photos then ``changes`` small changes (adds, replacements, removals), each published."""
    store = SegmentStore(tmp_path)
    live, rng = {}, np.random.default_rng(0)

    def add(ids, seed):
        ids = np.asarray(sorted(ids), dtype=np.int64)
        vectors = unit_vectors(len(ids), seed)
        live.update(zip(ids.tolist(), vectors, strict=True))
        return write_segment(store.segments_dir, vectors, ids, records_for(ids, str(seed)))

    version = store.commit(None, added=[add(range(500), 0)], encoder=ENCODER)
    store.publish(version)
    for change in range(1, changes + 1):
        replaced = rng.choice(sorted(live), 5, replace=False)
        removed = np.setdiff1d(rng.choice(sorted(live), 5, replace=False), replaced)
        for i in removed.tolist():
            del live[i]
        version = store.commit(version, added=[add([*replaced, *range(500 + 10 * change, 505 + 10 * change)],
                                                   change)], removed=removed)
        store.publish(version)
    return store, version, live


def search_matches_exact(store, version, live) -> None:
    queries = unit_vectors(20, seed=99)
    with SegmentedView(store, version) as view:
        assert view.size == len(live)
        assert np.array_equal(view.ids(), np.array(sorted(live)))
        assert np.array_equal(view.search(queries, 10)[1], exact_top_k(live, queries, 10)[1])


def test_merging_keeps_every_live_photo_and_drops_tombstones(tmp_path):
    store, version, live = many_changes(tmp_path)
    small = version.segment_names()[1:4]
    merged = merge_segments(store, version, small)
    assert len(merged.segments) == len(version.segments) - 2 and merged.previous == version.name
    new = [ref for ref in merged.segments if ref.name not in version.segment_names()]
    assert len(new) == 1 and new[0].deleted == 0
    assert new[0].size == sum(ref.live for ref in version.segments if ref.name in small)
    search_matches_exact(store, merged, live)
    with SegmentedView(store, merged) as view:
        assert [r.metadata["tag"] for r in view.records([510, 520])] == ["1", "2"]


def test_the_policy_at_the_end_of_changes_bounds_segments(tmp_path):
    store, version, live = many_changes(tmp_path, changes=6)
    policy = TieredMergePolicy(segments_per_tier=3, max_merge_at_once=3, floor_size=50)
    merged, merges = apply_policy(store, version, policy)
    assert merges and len(merged.segments) <= policy.allowed_segments(merged.size) < len(version.segments)
    search_matches_exact(store, merged, live)


def test_compact_makes_one_segment_with_a_trained_calibrated_ivf(tmp_path):
    store, version, live = many_changes(tmp_path)
    compacted = compact(store, version, factory="IVF8,Flat")
    assert len(compacted.segments) == 1 and compacted.deleted == 0 and compacted.size == len(live)
    info = store.segment_info(compacted.segments[0].name)
    assert info.index["factory"] == "IVF8,Flat" and "nprobe" in compacted.segments[0].search_params
    assert compact(store, compacted, factory="IVF8,Flat") is compacted  # nothing left to do
    assert compact(store, compacted) is compacted
    exact = compact(store, compacted, factory="Flat")  # another factory asked for: rewritten
    assert store.segment_info(exact.segments[0].name).index["factory"] == "Flat"
    search_matches_exact(store, exact, live)


def test_garbage_collection_deletes_only_what_no_retained_version_lists(tmp_path):
    store, version, live = many_changes(tmp_path, changes=4)
    compacted = compact(store, version)
    store.publish(compacted)
    (store.segments_dir / f"{TMP_PREFIX}s-left-by-a-killed-writer").mkdir()
    before = set(store.versions())
    removed = store.collect_garbage(keep=2)
    assert set(store.versions()) == set(sorted(before)[-2:]) and compacted.name in store.versions()
    listed = {name for v in store.versions() for name in store.read_version(v).segment_names()}
    assert {p.name for p in store.segments_dir.iterdir()} == listed
    assert f"{TMP_PREFIX}s-left-by-a-killed-writer" in removed["segments"]
    search_matches_exact(store, store.current(), live)
    store.collect_garbage(keep=1)
    assert [p.name for p in store.segments_dir.iterdir()] == compacted.segment_names()
    assert not store.tombstones_dir.exists() or list(store.tombstones_dir.iterdir()) == []


def test_tune_recalibrates_approximate_segments_in_a_new_version_and_keeps_the_sample(tmp_path):
    store = SegmentStore(tmp_path)
    ids = np.arange(3000, dtype=np.int64)
    ivf = write_segment(store.segments_dir, unit_vectors(3000, 1), ids, records_for(ids), factory="IVF16,Flat")
    small = write_segment(store.segments_dir, unit_vectors(10, 2), ids[:10] + 5000, records_for(ids[:10] + 5000))
    version = store.commit(None, added=[ivf, small], encoder=ENCODER)
    store.publish(version)
    files_before = {p: p.stat().st_mtime_ns for p in store.segments_dir.rglob("*") if p.is_file()}
    tuned, rows = tune_version(store, version, unit_vectors(64, 3), recall_target=0.99)
    assert [row["segment"] for row in rows] == [ivf.name]  # the exact segment has nothing to tune
    assert rows[0]["calibration"]["source"] == "query vectors"
    assert tuned.segments[0].search_params == rows[0]["after"] and tuned.segments[1].search_params == {}
    assert tuned.previous == version.name and tuned.fields["tuned"]["queries"] == 64
    store.publish(tuned)
    assert np.array_equal(store.queries_of(store.current()), unit_vectors(64, 3))
    assert files_before == {p: p.stat().st_mtime_ns for p in store.segments_dir.rglob("*") if p.is_file()}
    store.collect_garbage(keep=1)
    assert store.queries_of(store.current()) is not None  # the retained version's sample is kept
    exact_only = store.commit(None, added=[small], encoder=ENCODER)
    assert tune_version(store, exact_only, unit_vectors(8, 4)) == (exact_only, [])


def test_an_explicit_factory_sticks_when_the_policy_rewrites_or_merges_large_segments(tmp_path, monkeypatch):
    store = SegmentStore(tmp_path)
    ids = np.arange(3000, dtype=np.int64)
    big = write_segment(store.segments_dir, unit_vectors(3000, 1), ids, records_for(ids), factory="IVF16,SQ8")
    version = store.commit(None, added=[big], encoder=ENCODER, fields={"index_factory_option": "IVF16,SQ8"})
    version = store.commit(version, removed=np.arange(1000))  # a third deleted: the policy rewrites it
    version = store.commit(version, added=[add_segment(store, range(3000, 3040), 2)])
    version = store.commit(version, added=[add_segment(store, range(3040, 3080), 3)])
    merged, merges = apply_policy(store, version, TieredMergePolicy())
    assert (big.name,) in merges
    # It was rewritten with the auto choice by size (exact Flat) while the version said IVF16,SQ8
    factories = {ref.live: store.segment_info(ref.name).index["factory"] for ref in merged.segments}
    assert factories == {2000: "IVF16,SQ8", 40: "Flat"}
    # Small change segments merged together stay exact; past the exact size the explicit factory is used
    assert merge_factory(store, version, version.segment_names()[1:]) is None
    monkeypatch.setenv("SBIR_INDEX_FLAT_MAX", "50")
    assert merge_factory(store, version, version.segment_names()[1:]) == "IVF16,SQ8"


def test_a_merge_too_small_to_train_the_explicit_factory_is_chosen_by_size(tmp_path, monkeypatch):
    # Change segments merged past the exact size, but fewer rows than IVF256's lists: the build failed on every run.
    monkeypatch.setenv("SBIR_INDEX_FLAT_MAX", "50")
    store = SegmentStore(tmp_path)
    version = store.commit(None, added=[add_segment(store, range(40), 1)], encoder=ENCODER,
                           fields={"index_factory_option": "IVF256,Flat"})
    version = store.commit(version, added=[add_segment(store, range(40, 80), 2)])
    version = store.commit(version, added=[add_segment(store, range(80, 120), 3)])
    policy = TieredMergePolicy(segments_per_tier=1, max_merge_at_once=2, floor_size=10_000)
    assert merge_factory(store, version, version.segment_names()[1:]) == "IVF256,Flat"
    merged, merges = apply_policy(store, version, policy)
    assert len(merges) == 1  # the two small segments
    factories = sorted(store.segment_info(ref.name).index["factory"] for ref in merged.segments)
    assert factories == ["Flat", "IVF64,Flat"] and merged.size == 120
