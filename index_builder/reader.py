"""The reader of the index format, used by the app: open the live version, search, fetch metadata.

An :class:`IndexReader` is bound to one version (immutable on disk), so it is safe to share between
threads; to follow a rebuild, poll :func:`current_version` and open a new reader when it changes.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .engine import VectorIndex, get_engine
from .errors import IndexCorruptError
from .layout import IDS, METADATA, VECTORS, IndexLayout, current_version, read_manifest
from .metadata import MetadataStore, PhotoRecord

__all__ = ["IndexReader", "PhotoRecord", "current_version"]


def checked_queries(vectors: np.ndarray, dim: int, k: int) -> np.ndarray:
    """``vectors`` as float32 [n, dim] (one vector may be 1-d); ValueError for another shape or k < 1."""
    queries = np.asarray(vectors, dtype=np.float32)
    if queries.ndim == 1:
        queries = queries[None, :]
    if queries.ndim != 2 or queries.shape[1] != dim:
        raise ValueError(f"Query vectors must have shape [n, {dim}], got {list(np.shape(vectors))}.")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}.")
    return queries


def no_hits(n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The all-padding result: scores -inf, ids -1."""
    return np.full((n, k), -np.inf, dtype=np.float32), np.full((n, k), -1, dtype=np.int64)


class IndexReader:
    """A read-only view of one index version."""

    def __init__(self, folder: Path, *, device: str = "cpu") -> None:
        self.folder = folder
        self.manifest = read_manifest(folder)
        self.version: str = self.manifest["version"]
        self.dim: int = int(self.manifest["dim"])
        self.fingerprint: str = self.manifest["encoder"]["fingerprint"]
        self.encoder_config: dict = self.manifest["encoder"]["config"]
        self.gallery_root: str | None = self.manifest["gallery"].get("root")
        try:
            self._ids = np.load(folder / IDS)
            self._vectors = np.load(folder / VECTORS, mmap_mode="r")
        except (OSError, ValueError) as error:
            raise IndexCorruptError(f"Version {folder} has unreadable vectors or ids: {error}") from error
        self._metadata = MetadataStore(folder / METADATA)
        section = self.manifest["index"]
        self._index: VectorIndex = get_engine(section.get("engine", "faiss")).open(
            folder, section, self._vectors, self._ids, device=device)
        self.size: int = int(self._index.size)
        if self._index.dim != self.dim:
            self.close()
            raise IndexCorruptError(f"Version {folder}: the vector index holds {self._index.dim}-dim vectors; "
                                    f"its manifest says {self.dim}.")
        self._category_ids: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    @classmethod
    def open(cls, index_dir: str | Path, *, device: str = "cpu") -> IndexReader:
        """The version ``current`` names; :class:`IndexNotFoundError` when there is none.

        ``device="auto"`` puts the FAISS index on the GPU(s) when faiss has GPU support.
        """
        return cls(IndexLayout(index_dir).current_dir(), device=device)

    def is_current(self) -> bool:
        """False once a build has switched ``current`` to another version (time to open a new reader)."""
        return current_version(self.folder.parent.parent) == self.version

    def __len__(self) -> int:
        return self.size

    def search(
        self, vectors: np.ndarray, k: int, category: str | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` by inner product: (scores [n, k] float32, ids [n, k] int64); id -1 (score -inf) pads.

        ``category`` restricts results to photos of that category exactly (unknown category: all -1).
        """
        queries = checked_queries(vectors, self.dim, k)
        allowed = None if category is None else self._ids_of(category)
        if len(queries) == 0 or self.size == 0 or (allowed is not None and len(allowed) == 0):
            return no_hits(len(queries), k)
        return self._index.search(np.ascontiguousarray(queries), k, allowed)

    def _ids_of(self, category: str) -> np.ndarray:
        with self._lock:
            cached = self._category_ids.get(category)
        if cached is None:
            cached = np.array(self._metadata.ids_of_category(category), dtype=np.int64)
            with self._lock:
                self._category_ids[category] = cached
        return cached

    def records(self, ids: Sequence[int] | np.ndarray) -> list[PhotoRecord | None]:
        """Metadata for ``ids`` in order (None for -1 or unknown ids)."""
        return self._metadata.get_many([int(i) for i in np.asarray(ids).reshape(-1)])

    def record(self, photo_id: int) -> PhotoRecord | None:
        return self.records([photo_id])[0]

    def categories(self) -> list[str]:
        return self._metadata.categories()

    def vector(self, photo_id: int) -> np.ndarray | None:
        """The stored (normalised) vector of photo ``photo_id`` as float32 ``[D]``; None for an unknown id.

        The builder writes ids in ascending order, so the row is a binary search away.
        """
        row = int(np.searchsorted(self._ids, photo_id))
        if photo_id < 0 or row >= len(self._ids) or int(self._ids[row]) != photo_id:
            return None
        return np.array(self._vectors[row], dtype=np.float32)

    @property
    def vector_index(self) -> VectorIndex:
        """The engine's loaded index (for checks and tools)."""
        return self._index

    @property
    def metadata_store(self) -> MetadataStore:
        return self._metadata

    def vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """The stored (ids [N], vectors [N, D]) of this version, memory-mapped (for checks and tools)."""
        return self._ids, self._vectors

    def close(self) -> None:
        self._index.close()
        self._metadata.close()

    def __enter__(self) -> IndexReader:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class FolderSource:
    """The live version of an index folder (FAISS): the ``current`` pointer file names it."""

    def __init__(self, index_dir: str | Path) -> None:
        self.index_dir = Path(index_dir)

    def describe(self) -> str:
        return str(self.index_dir)

    def current(self) -> str | None:
        return current_version(self.index_dir)

    def open(self, device: str = "cpu") -> IndexReader:
        return IndexReader.open(self.index_dir, device=device)

    def info(self, version: str | None = None) -> dict:
        from .checks import info

        return info(self.index_dir, version)

    def verify(self, version: str | None = None) -> list[str]:
        from .checks import verify

        return verify(self.index_dir, version)

    def close(self) -> None:
        """Nothing held between calls."""
