"""Small helpers for the segment tests: random unit vectors, their records, an exact reference search."""

from __future__ import annotations

import numpy as np

from photo_index.api import PhotoRecord
from photo_index.backends.folder.segments import SegmentInfo, SegmentStore, write_segment

DIM = 32
CATEGORIES = ("cat", "dog", "owl")


def unit_vectors(count: int, seed: int, dim: int = DIM) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((count, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def records_for(ids: np.ndarray, tag: str = "") -> list[PhotoRecord]:
    return [PhotoRecord(id=int(i), path=f"/gallery/{CATEGORIES[int(i) % 3]}/{int(i)}{tag}.jpg",
                        category=CATEGORIES[int(i) % 3], sha256=f"{int(i):064x}", size=100 + int(i),
                        added_at="2026-01-01T00:00:00+00:00", metadata={"tag": tag}) for i in ids]


def exact_top_k(live: dict[int, np.ndarray], queries: np.ndarray, k: int, allowed: set[int] | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """The reference: brute force over the live photos {id: vector}."""
    ids = np.array(sorted(i for i in live if allowed is None or i in allowed), dtype=np.int64)
    matrix = np.stack([live[int(i)] for i in ids])
    scores = queries @ matrix.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), ids[order]


def add_segment(store: SegmentStore, ids, seed: int) -> SegmentInfo:
    """A segment of random unit vectors under ``ids``, written into ``store`` (not yet in any version)."""
    ids = np.asarray(ids, dtype=np.int64)
    return write_segment(store.segments_dir, unit_vectors(len(ids), seed), ids, records_for(ids))
