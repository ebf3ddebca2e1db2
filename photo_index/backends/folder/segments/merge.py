"""Merging segments: a tiered policy that keeps their number bounded, and ``compact`` into one.

The policy (after Lucene's ``TieredMergePolicy``, sizes counted in live photos):

- ``floor_size``: segments smaller than this count as this big when the budget is sized (tiny segments from
  small changes are not allowed to pile up one per change);
- ``segments_per_tier``: how many segments each size tier may hold. The budget is ``segments_per_tier`` per
  tier, tiers growing by ``max_merge_at_once`` from ``floor_size`` up to the index's live size;
- ``max_merge_at_once``: the most segments one merge takes. Over budget, the smallest segments are merged,
  that many at a time (merging a few at once, rather than two, keeps each photo's rewrites logarithmic);
- ``tombstone_ratio``: a segment with this share of its rows deleted is rewritten without them.

A merge reads the live rows of its segments, writes them as one new segment (exact or calibrated IVF by size,
like any segment) and returns the version that lists it instead of them; the old segments stay on disk while a
retained version lists them (garbage collection removes them after).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np

from ....api import PhotoRecord
from ....arrays import load_array
from ....errors import IndexCorruptError, TrainingError
from ....format import new_version_name, utc_now
from ..faiss_index import EXACT_FACTORIES, choose_factory
from ..records import MetadataStore
from .segment import SegmentInfo, checksum_problems, write_segment
from .store import SegmentStore
from .version import SegmentRef, Version


@dataclass(frozen=True)
class TieredMergePolicy:
    segments_per_tier: int = 10
    max_merge_at_once: int = 10
    floor_size: int = 10_000
    tombstone_ratio: float = 0.3

    def allowed_segments(self, live: int) -> int:
        """How many segments an index of ``live`` photos may have before the smallest are merged."""
        level, left, allowed = max(self.floor_size, 1), max(live, 0), 0
        while True:
            count = left / level
            if count < self.segments_per_tier:
                allowed += math.ceil(count)
                break
            allowed += self.segments_per_tier
            left -= self.segments_per_tier * level
            level *= max(self.max_merge_at_once, 2)
        return max(allowed, self.segments_per_tier)

    def plan(self, segments: Sequence[SegmentRef]) -> list[tuple[str, ...]]:
        """The merges to run on a version's segments: groups of names (a group of one is a rewrite)."""
        rest = sorted(segments, key=lambda ref: (-ref.live, ref.name))
        budget = self.allowed_segments(sum(ref.live for ref in segments))
        count, merges = len(segments), []
        while count > budget and len(rest) >= 2:
            take = min(max(self.max_merge_at_once, 2), len(rest))
            merges.append(tuple(ref.name for ref in rest[-take:]))
            rest, count = rest[:-take], count - take + 1
        # Segments not merged above whose deleted share reached the ratio are rewritten alone.
        merges += [(ref.name,) for ref in rest if ref.size and ref.deleted / ref.size >= self.tombstone_ratio]
        return merges


class GatheredRows:
    """Rows picked from several arrays in a given order, read in slices like one array (what a segment copies)."""

    ndim = 2
    dtype = np.dtype(np.float32)

    def __init__(self, sources: Sequence[np.ndarray], which: np.ndarray, rows: np.ndarray, dim: int) -> None:
        self.sources, self.which, self.rows = sources, which, rows
        self.shape = (len(rows), dim)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, part: slice | np.ndarray) -> np.ndarray:
        which, rows = self.which[part], self.rows[part]
        block = np.empty((len(rows), self.shape[1]), dtype=np.float32)
        for number, source in enumerate(self.sources):
            mask = which == number
            if mask.any():
                block[mask] = source[rows[mask]]
        return block


def _live_records(stores: Sequence[MetadataStore], live: Sequence[np.ndarray]) -> Iterator[PhotoRecord]:
    for store, ids in zip(stores, live, strict=True):
        keep = set(ids.tolist())
        yield from (record for record in store.iter_records() if record.id in keep)


def write_merged(store: SegmentStore, refs: Sequence[SegmentRef], *, factory: str | None = None,
                 device: str = "cpu", recall_target: float = 0.95, progress: bool = False) -> SegmentInfo:
    """One new segment holding the live rows of ``refs`` (in id order), once every file of theirs matches its
    checksum: a merge must not turn a damaged row into a new segment's good-looking one."""
    damaged = [problem for ref in refs
               for problem in checksum_problems(store.segment_dir(ref.name), store.segment_info(ref.name))]
    if damaged:
        raise IndexCorruptError(f"Cannot merge damaged segments ({'; '.join(damaged)}); the live version stays as "
                                "it is: check it with `index_builder verify`, then build with --rebuild.")
    vectors, live_ids, rows, metadata = [], [], [], []
    try:
        for ref in refs:
            ids = store.segment_ids(ref.name)
            live = ~np.isin(ids, ref.tombstones, assume_unique=True) if ref.deleted else np.ones(len(ids), bool)
            vectors.append(load_array(store.segment_dir(ref.name) / "vectors.npy", mmap=True))
            live_ids.append(ids[live])
            rows.append(np.flatnonzero(live))
            metadata.append(MetadataStore(store.segment_dir(ref.name) / "metadata.sqlite"))
        which = np.concatenate([np.full(len(r), n, dtype=np.int64) for n, r in enumerate(rows)])
        all_ids, all_rows = np.concatenate(live_ids), np.concatenate(rows)
        order = np.argsort(all_ids, kind="stable")
        dim = int(vectors[0].shape[1])
        gathered = GatheredRows(vectors, which[order], all_rows[order], dim)
        return write_segment(store.segments_dir, gathered, all_ids[order], _live_records(metadata, live_ids),
                             factory=factory, device=device, recall_target=recall_target, progress=progress)
    finally:
        for meta in metadata:
            meta.close()


def merge(store: SegmentStore, version: Version, names: Sequence[str], **options) -> Version:
    """The version after the segments ``names`` of ``version`` are merged into one (written now; not published).

    ``options``: ``factory``, ``device``, ``recall_target``, ``progress`` of :func:`write_merged`."""
    wanted = set(names)
    refs = [ref for ref in version.segments if ref.name in wanted]
    if len(refs) != len(wanted):
        raise ValueError(f"Version {version.name} does not list all of {sorted(wanted)}.")
    info = write_merged(store, refs, **options)
    merged = SegmentRef(name=info.name, size=info.size, search_params=info.search_params)
    segments, placed = [], False
    for ref in version.segments:
        if ref.name not in wanted:
            segments.append(ref)
        elif not placed:
            placed = True
            if info.size:
                segments.append(merged)
    return replace(version, name=new_version_name(), created_at=utc_now(), previous=version.name,
                   segments=tuple(segments))


def apply_policy(store: SegmentStore, version: Version, policy: TieredMergePolicy, **options
                 ) -> tuple[Version, list[tuple[str, ...]]]:
    """``version`` after the merges ``policy`` plans for it (written; not published), and those merges."""
    merges = policy.plan(version.segments)
    for names in merges:
        factory = merge_factory(store, version, names)
        try:
            version = merge(store, version, names, factory=factory, **options)
        except TrainingError:
            if factory is None:
                raise
            # too few live rows to train the explicit factory (its lists or codes): chosen by size, as before
            version = merge(store, version, names, **options)
    return version, merges


def merge_factory(store: SegmentStore, version: Version, names: Sequence[str]) -> str | None:
    """The factory of a merge the policy runs: an explicit ``--index-factory`` sticks to the index, so a merge that
    rewrites a segment built with it, or that is large enough for the choice by size to be approximate, uses it
    (when its rows can train it: see ``apply_policy``); other merges of small change segments are chosen by size
    (exact), as those segments were."""
    requested = version.fields.get("index_factory_option")
    if not requested:
        return None
    refs = [ref for ref in version.segments if ref.name in set(names)]
    if any(store.segment_info(ref.name).index.get("factory") == requested for ref in refs):
        return requested
    return None if choose_factory(sum(ref.live for ref in refs), version.dim) in EXACT_FACTORIES else requested


def needs_compaction(store: SegmentStore, version: Version, factory: str | None) -> bool:
    """Whether ``compact`` would change anything: several segments, deleted rows, or another factory asked for."""
    if len(version.segments) != 1:
        return len(version.segments) > 1
    ref = version.segments[0]
    return ref.deleted > 0 or (factory is not None and factory != store.segment_info(ref.name).index.get("factory"))


def compact(store: SegmentStore, version: Version, *, factory: str | None = None, **options) -> Version:
    """All of ``version``'s live photos in one segment (the factory chosen by size, so a large index gets its IVF
    trained and ``nprobe`` calibrated on everything); ``version`` itself when nothing would change."""
    if not needs_compaction(store, version, factory):
        return version
    return merge(store, version, version.segment_names(), factory=factory, **options)
