"""The seam between the index and everything that uses it: the record type and the ``Reader``, ``Source`` and
``Writer`` protocols every backend implements (``backends/folder``: FAISS + SQLite; ``backends/milvus``).

A :class:`Source` is where a live index is (a folder's ``current`` pointer, a Milvus alias): polled for its
version and opened into a :class:`Reader` bound to one immutable version. A :class:`Writer` publishes a new
version from a build's rows. :mod:`photo_index.registry` picks the backend of a location; nothing here
imports a backend.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Protocol

import numpy as np

# Photo ids run 0..2^52-1: a search keeps the ids above for rows of its own (the folder backend's small segments
# inside its large one's index), and the page's JavaScript numbers hold integers exactly only up to 2^53.
MAX_PHOTO_ID = 2**52 - 1



def ids_problem(ids: np.ndarray) -> str | None:
    """What is wrong with a sorted set of photo ids (a segment's, a version's, its tombstones), or None: int64, one
    dimension, strictly ascending, within 0..MAX_PHOTO_ID (the search's own ids for small segments start above it:
    search.ANNEX_ID_BASE)."""
    if ids.dtype != np.int64 or ids.ndim != 1:
        return f"ids are {ids.dtype} of shape {ids.shape}, not int64 ids"
    if len(ids) and np.any(ids[1:] <= ids[:-1]):  # one byte per id, where np.diff would copy eight
        return "ids are not strictly ascending"
    if len(ids) and (ids[0] < 0 or ids[-1] > MAX_PHOTO_ID):
        return f"ids run from {ids[0]} to {ids[-1]}, outside 0..{MAX_PHOTO_ID}"
    return None


# Where a row of a new version gets its vector: the previous version's row, or the build's staging row.
FROM_PREVIOUS, FROM_STAGING = 0, 1


@dataclass
class PhotoRecord:
    """What the service knows about one indexed photo."""

    id: int
    path: str  # absolute
    category: str | None
    sha256: str
    size: int
    added_at: str
    metadata: dict = field(default_factory=dict)
    updated_at: str = ""
    mtime_ns: int = 0
    # Read from the photo's header at indexing time; None when an older index did not record them (or the photo
    # has no EXIF capture time).
    width: int | None = None  # as shown (after the EXIF orientation)
    height: int | None = None
    taken_at: str | None = None  # EXIF capture time, ISO 8601 as the camera wrote it

    @property
    def details(self) -> tuple[int | None, int | None, str | None]:
        return self.width, self.height, self.taken_at

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class StoredRows:
    """Every row a version stores, for checks: ids ascending, their vectors, content hashes and categories."""

    ids: np.ndarray  # int64 [N]
    vectors: np.ndarray  # float32 [N, D]
    sha256: list[str]
    categories: list[str | None]


@dataclass(frozen=True)
class TrustSample:
    """What the cheap checks read of a version (:func:`photo_index.checks.trust_findings`), in bounded time:
    the rows each part holds, a sample of stored rows, and the stored file sizes/checksums that disagree."""

    counts: dict[str, int]  # part -> rows it holds ("ids", "vectors", "metadata", "index"; what the backend has)
    ids: np.ndarray  # int64 [n]: sampled ids
    vectors: np.ndarray  # float32 [n, D]: their stored vectors
    exact: bool  # the index is exact: every sampled vector must find itself first
    file_problems: list[str] = field(default_factory=list)
    without_record: int = 0  # sampled ids the version has no photo record for
    # an exact index's own copy of the sampled vectors (None: it keeps none; a version of exact and approximate
    # segments gives the stored vector for rows of an approximate one, which keeps no copy)
    held: np.ndarray | None = None


class Reader(Protocol):
    """A read-only view of one index version (thread-safe)."""

    version: str
    dim: int
    size: int
    fingerprint: str
    encoder_config: dict
    gallery_root: str | None
    manifest: dict

    def __len__(self) -> int: ...

    def search(self, vectors: np.ndarray, k: int, category: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` by inner product: (scores [n, k] float32, ids [n, k] int64); id -1 (score -inf) pads.
        ``category`` restricts results to photos of that category exactly (unknown category: all -1)."""
        ...

    def records(self, ids: Sequence[int] | np.ndarray) -> list[PhotoRecord | None]:
        """Records for ``ids`` in order (None for -1 or unknown ids)."""
        ...

    def record(self, photo_id: int) -> PhotoRecord | None: ...

    def vector(self, photo_id: int) -> np.ndarray | None:
        """The stored (normalised) vector of ``photo_id`` as float32 ``[D]``; None for an unknown id."""
        ...

    def categories(self) -> list[str]: ...

    def stored(self) -> StoredRows:
        """Every stored row (for :func:`photo_index.checks.verify`)."""
        ...

    def index_problems(self, rows: StoredRows) -> list[str]:
        """What the backend's own structures disagree on with ``rows`` (for verify)."""
        ...

    def trust_sample(self, size: int) -> TrustSample:
        """Part counts, ``size`` stored rows spread over the version, and file checks (cheap: no full scan)."""
        ...

    def disk_bytes(self) -> int: ...

    def close(self) -> None: ...


class Source(Protocol):
    """Where the live index is: polled for its version, opened into a :class:`Reader`."""

    where: str  # the location, for people (info's ``index_dir``)
    # Whether an open reader keeps serving its version once the version is deleted (a folder's open files do; a
    # Milvus collection dropped on the server does not).
    readers_outlive_deletion: bool

    def describe(self) -> str: ...

    def current(self) -> str | None:
        """The live version's name (cheap, for polling); None when nothing is published yet."""
        ...

    def open(self, device: str = "cpu") -> Reader:
        """A reader of the live version; ``device`` is where a local backend searches (``auto``: GPU if any)."""
        ...

    def open_version(self, version: str | None) -> Reader:
        """A reader of ``version`` (None: the live one); :class:`IndexNotFoundError` when there is no such one."""
        ...

    def versions(self) -> list[str]: ...

    def info(self, version: str | None = None) -> dict: ...

    def verify(self, version: str | None = None) -> list[str]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class VersionContent:
    """A new version's rows: records in ascending id order and where each one's vector comes from."""

    records: list[PhotoRecord]
    sources: np.ndarray  # [N, 2]: (FROM_PREVIOUS | FROM_STAGING, row)
    staged: np.ndarray  # the build's embedded vectors [M, D] (rows that FROM_STAGING names)
    next_id: int
    now: str


class Previous(Protocol):
    """The live version as the base of an incremental build."""

    name: str
    manifest: dict
    by_path: dict[str, PhotoRecord]

    @property
    def fingerprint(self) -> str: ...

    def row_of(self, photo_id: int) -> int:
        """The row that ``FROM_PREVIOUS`` sources name for ``photo_id``."""
        ...


@dataclass(frozen=True)
class PublishOptions:
    """How a writer publishes (backend-specific knobs have a backend's name in theirs)."""

    rebuild: bool = False  # never reuse the live version in place
    recall_target: float = 0.95  # approximate indexes: search parameters tuned to this recall@10
    faiss_device: str = "auto"  # where FAISS trains and fills its index: auto (a GPU when present) | cpu | cuda
    progress: bool = True
    index_params: dict | None = None  # Milvus index build params (e.g. {"M": 16}); None: the type's defaults
    search_params: dict | None = None  # Milvus search params (e.g. {"ef": 64}); None: the type's defaults


class Writer(Protocol):
    """Publishes new versions to one location."""

    where: str
    notes: list[str]  # what the last write did that a person should know (the build's output says it)

    def previous(self, rebuild: bool) -> Previous | None:
        """The live version (None: none yet, or unreadable and ``rebuild``)."""
        ...

    def resolve_factory(self, size: int, dim: int, requested: str | None) -> str:
        """The index type a version of ``size`` vectors gets (``requested``, or chosen by size)."""
        ...

    def write(self, content: VersionContent, previous: Previous | None, manifest: Mapping, report: Mapping) -> str:
        """Publish ``content`` as the live version and return its name. ``manifest`` holds what the build knows
        (format, dim, encoder, gallery, ...); ``report`` is the build's report (its ``factory`` is the index
        type); the writer adds the version name, its index section and the report's counts."""
        ...

    def prune(self, keep: int) -> None:
        """Delete all but the newest ``keep`` complete versions (never the live one) and unfinished ones."""
        ...
