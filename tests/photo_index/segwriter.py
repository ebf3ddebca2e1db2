"""A writer process for the crash tests: ``python segwriter.py INDEX add COUNT | compact`` (then SIGKILLed)."""

from __future__ import annotations

import sys

import numpy as np

from photo_index.backends.folder.segments import SegmentStore, compact, write_segment
from tests.photo_index.segtools import records_for, unit_vectors

DIM = 64


def add(store: SegmentStore, count: int) -> None:
    """One change: ``count`` new photos in a new segment, published, then garbage collected."""
    version = store.current()
    ids = np.arange(version.next_id, version.next_id + count, dtype=np.int64)
    info = write_segment(store.segments_dir, unit_vectors(count, seed=count, dim=DIM), ids, records_for(ids))
    store.publish(store.commit(version, added=[info]))
    store.collect_garbage(keep=1)


def compact_all(store: SegmentStore) -> None:
    store.publish(compact(store, store.current()))
    store.collect_garbage(keep=1)


if __name__ == "__main__":
    index, mode = SegmentStore(sys.argv[1]), sys.argv[2]
    add(index, int(sys.argv[3])) if mode == "add" else compact_all(index)
