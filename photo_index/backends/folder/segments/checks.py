"""What ``verify`` checks on a segmented version beyond the rows every backend is checked for: each segment's
files against their checksums, its FAISS index and metadata against its ids, tombstones against what the
segment holds, and that no photo is live in two segments."""

from __future__ import annotations

import sqlite3

import numpy as np

from ....api import StoredRows
from ....errors import IndexNotFoundError
from .segment import Segment, checksum_problems
from .store import SegmentStore
from .version import Version


def segment_problems(store: SegmentStore, version: Version) -> list[str]:
    problems: list[str] = []
    live_ids = []
    for ref in version.segments:
        try:
            segment = store.open_segment(ref)
        except IndexNotFoundError as error:  # IndexCorruptError too
            problems.append(f"segment {ref.name}: {error}")
            continue
        try:
            problems += _one_segment(segment, ref.size, version.dim)
            held = np.isin(ref.tombstones, segment.ids, assume_unique=True)
            if not held.all():
                problems.append(f"segment {ref.name}: {int((~held).sum())} tombstones name ids it does not hold")
            live_ids.append(segment.ids[~np.isin(segment.ids, ref.tombstones, assume_unique=True)])
        finally:
            segment.close()
    if live_ids:
        ids = np.sort(np.concatenate(live_ids))
        twice = int(np.sum(np.diff(ids) == 0))
        if twice:
            problems.append(f"{twice} photo ids are live in two segments")
    return problems


def _one_segment(segment: Segment, listed_size: int, dim: int) -> list[str]:
    name, info = segment.name, segment.info
    problems = checksum_problems(segment.folder, info)
    if info.size != listed_size or info.dim != dim:
        problems.append(f"segment {name} holds {info.size} x {info.dim}; the version lists {listed_size} x {dim}")
    ids = segment.ids
    if len(ids) and (ids[0] < 0 or np.any(np.diff(ids) <= 0)):
        problems.append(f"segment {name}: ids are not strictly increasing non-negative ids")
    try:  # the files may be damaged (a checksum said so above): say what disagrees, never crash
        meta_ids = np.array(segment.metadata.ids(), dtype=np.int64)
        if not np.array_equal(meta_ids, ids):
            problems.append(f"segment {name}: metadata has {len(meta_ids)} photos; "
                            f"{len(np.setdiff1d(meta_ids, ids))} not in the vectors, "
                            f"{len(np.setdiff1d(ids, meta_ids))} of the vectors without metadata")
        index = segment.index
        index_ids = index.ids()
        if not np.array_equal(index_ids, ids):
            problems.append(f"segment {name}: the vector index's ids differ from ids.npy "
                            f"({len(np.setdiff1d(index_ids, ids))} extra, {len(np.setdiff1d(ids, index_ids))} "
                            "missing)")
        elif len(ids):
            problems += [f"segment {name}: {line}" for line in index.self_check(StoredRows(ids, segment.vectors,
                                                                                            [], []))]
    except (RuntimeError, sqlite3.Error, IndexNotFoundError) as error:
        problems.append(f"segment {name}: unreadable ({error})")
    return problems
