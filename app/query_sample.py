"""An opt-in, bounded sample of the query vectors the service embedded, for ``index_builder tune``.

Reservoir sampling (Vitter's algorithm R): after any number of queries it holds a uniform sample of at most
``capacity`` of them, in fixed memory (capacity × dim float32). Saved as ``.npy`` (written aside, then
renamed: a reader never sees half a file) on shutdown and on ``POST /admin/query-sample``.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from photo_index.atomic import write_atomic


class QuerySample:
    """A thread-safe reservoir of query vectors."""

    def __init__(self, capacity: int, dim: int, seed: int | None = None) -> None:
        self.capacity = capacity
        self._rows = np.zeros((capacity, dim), dtype=np.float32)
        self._seen = 0
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()

    @property
    def seen(self) -> int:
        return self._seen

    def __len__(self) -> int:
        return min(self._seen, self.capacity)

    def add(self, vectors: np.ndarray) -> None:
        """Offer query vectors [n, dim]: each one ends up in the sample with probability capacity / seen."""
        with self._lock:
            for vector in np.asarray(vectors, dtype=np.float32).reshape(-1, self._rows.shape[1]):
                self._seen += 1
                slot = self._seen - 1 if self._seen <= self.capacity else int(self._rng.integers(self._seen))
                if slot < self.capacity:
                    self._rows[slot] = vector

    def snapshot(self) -> np.ndarray:
        with self._lock:
            return self._rows[: len(self)].copy()

    def save(self, path: Path) -> int:
        """Write the sample to ``path`` (.npy) atomically; returns how many vectors it holds."""
        rows = self.snapshot()
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, lambda handle: np.save(handle, rows))
        return len(rows)
