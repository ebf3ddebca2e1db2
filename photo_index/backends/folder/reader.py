"""Reading an index folder: the live version (:class:`FolderSource`) and one version (:class:`IndexReader`).

An :class:`IndexReader` is bound to one version (immutable on disk), so it is safe to share between
threads; to follow a rebuild, poll :meth:`FolderSource.current` and open a new reader when it changes.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ... import checks
from ...api import PhotoRecord, Reader, StoredRows, TrustSample
from ...arrays import load_array
from ...errors import IndexCorruptError, IndexNotFoundError
from ...format import (
    CURRENT,
    IDS,
    METADATA,
    VECTORS,
    IndexLayout,
    checksum_problems,
    read_manifest,
    read_pointer,
)
from ...queries import checked_queries, no_hits
from .faiss_index import FaissEngine, FaissIndex
from .records import MetadataStore
from .segmented import open_version, versions_of
from .segments import SegmentStore


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
            self._ids = load_array(folder / IDS)
            self._vectors = load_array(folder / VECTORS, mmap=True)
        except IndexCorruptError as error:
            raise IndexCorruptError(f"Version {folder} has unreadable vectors or ids: {error}") from error
        self._metadata = MetadataStore(folder / METADATA)
        section = self.manifest["index"]
        self._index: FaissIndex = FaissEngine().open(folder, section, self._vectors, self._ids, device=device)
        self.size: int = int(self._index.size)
        if self._index.dim != self.dim:
            self.close()
            raise IndexCorruptError(f"Version {folder}: the vector index holds {self._index.dim}-dim vectors; "
                                    f"its manifest says {self.dim}.")
        self._category_ids: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    @classmethod
    def open(cls, index_dir: str | Path, *, device: str = "cpu") -> Reader:
        """The version ``current`` names, of either format (a segmented one opens as a ``SegmentedReader``);
        :class:`IndexNotFoundError` when there is none.

        ``device="auto"`` puts the FAISS index on the GPU(s) when faiss has GPU support.
        """
        return FolderSource(index_dir).open(device)

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
    def vector_index(self) -> FaissIndex:
        """The loaded FAISS index (for checks and tools)."""
        return self._index

    @property
    def metadata_store(self) -> MetadataStore:
        return self._metadata

    def vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """The stored (ids [N], vectors [N, D]) of this version, memory-mapped (for checks and tools)."""
        return self._ids, self._vectors

    def stored(self) -> StoredRows:
        records = list(self._metadata.iter_records())
        return StoredRows(self._ids, self._vectors, [record.sha256 for record in records],
                          [record.category for record in records])

    def trust_sample(self, size: int) -> TrustSample:
        """Counts of every part, ``size`` rows spread evenly over the version, the recorded file checksums."""
        counts = {"ids": len(self._ids), "vectors": int(self._vectors.shape[0]), "index": int(self._index.size),
                  "metadata": self._metadata.count()}
        rows = np.unique(np.linspace(0, len(self._ids) - 1, num=min(size, len(self._ids))).astype(np.int64))
        if len(self._ids) != self._vectors.shape[0]:
            rows = rows[rows < min(len(self._ids), self._vectors.shape[0])]
        ids = np.asarray(self._ids[rows])
        without_record = sum(record is None for record in self._metadata.get_many(ids.tolist()))
        return TrustSample(counts, ids, np.asarray(self._vectors[rows], dtype=np.float32), self._index.exact,
                           checksum_problems(self.folder, self.manifest), without_record,
                           self._index.held_vectors(ids))

    def index_problems(self, rows: StoredRows) -> list[str]:
        """The records and the FAISS index against ``ids.npy`` / ``vectors.npy``."""
        ids = rows.ids
        problems = [f"metadata: {line}" for line in self._metadata.integrity_errors()]
        meta_ids = np.array(self._metadata.ids(), dtype=np.int64)
        if not np.array_equal(meta_ids, ids):
            problems.append(f"metadata has {len(meta_ids)} photos; {len(np.setdiff1d(meta_ids, ids))} not in the "
                            f"vectors, {len(np.setdiff1d(ids, meta_ids))} of the vectors without metadata")
        index = self._index
        if index.size != len(ids):
            problems.append(f"the vector index holds {index.size} vectors; ids.npy holds {len(ids)}")
        index_ids = index.ids()
        if not np.array_equal(index_ids, ids):
            problems.append(f"the vector index's ids differ from ids.npy ({len(np.setdiff1d(index_ids, ids))} extra, "
                            f"{len(np.setdiff1d(ids, index_ids))} missing)")
        elif len(ids):
            problems += index.self_check(rows)
        return problems

    def disk_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.folder.iterdir() if p.is_file())

    def close(self) -> None:
        self._index.close()
        self._metadata.close()

    def __enter__(self) -> IndexReader:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class FolderSource:
    """The live version of an index folder (FAISS): the ``current`` pointer file names it."""

    readers_outlive_deletion = True  # a reader holds its files open (an unmounted volume does not stop it)

    def __init__(self, index_dir: str | Path) -> None:
        self.index_dir = Path(index_dir)
        self.layout = IndexLayout(index_dir)
        self.where = str(self.layout.root)

    def describe(self) -> str:
        return str(self.index_dir)

    def current(self) -> str | None:
        """The published version; an empty pointer (read_pointer), or none beside versions (deleted by hand, a copy
        that missed it, a first build killed before its switch), is damage: the service then serves the newest good
        version."""
        name = read_pointer(self.index_dir)
        pointer = self.index_dir / CURRENT
        if name is None and not pointer.exists() and self.versions():
            raise IndexCorruptError(f"The index pointer {pointer} is missing, but the index holds versions (a build "
                                    "names the newest again).")
        return name

    def open(self, device: str = "cpu") -> Reader:
        return self._open(self.current(), device)

    def open_version(self, version: str | None) -> Reader:
        if version is not None and version not in self.versions():
            raise IndexNotFoundError(f"{self.index_dir} has no version {version!r} (versions: {self.versions()}).")
        return self._open(version or self.current())

    def _open(self, name: str | None, device: str = "cpu") -> Reader:
        """A segmented version (``versions/<name>.json``) or a one-copy version folder."""
        if name is not None and SegmentStore(self.layout.root).is_segmented(name):
            return open_version(self.layout.root, name, device)
        return IndexReader(self.layout.version_dir(name) if name else self.layout.current_dir(), device=device)

    def versions(self) -> list[str]:
        """Versions of either format, oldest first."""
        return versions_of(self.layout, SegmentStore(self.layout.root))

    def info(self, version: str | None = None) -> dict:
        return checks.info(self, version)

    def verify(self, version: str | None = None) -> list[str]:
        return checks.verify(self, version)

    def close(self) -> None:
        """Nothing held between calls."""
