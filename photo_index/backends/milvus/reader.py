"""Serving a Milvus photo collection: the reader the app leases, and the source it polls (the alias).

A :class:`MilvusReader` is bound to one photo collection (a version); the alias names the live one, so a rebuild's
alias switch shows up as a new :meth:`MilvusSource.current` and the app opens a new reader beside the old one.
Category filters are Milvus expressions (``category == "..."``); records come from the collection itself.
"""

from __future__ import annotations

import hashlib
import json
import threading
import weakref
from collections.abc import Sequence

import numpy as np

from ... import checks
from ...api import PhotoRecord, StoredRows, TrustSample
from ...errors import EngineUnavailableError, IndexCorruptError, IndexNotFoundError
from ...format import REQUIRED, field_of
from ...location import DEFAULT_CONSISTENCY, MilvusLocation
from ...queries import checked_queries, no_hits
from .client import DETAIL_FIELDS, TOPK_MAX, MilvusConnection

# Search params that bound how many hits a search can return: Milvus refuses a k above them ("ef(64) should be larger
# than k(65)"), so a deeper search raises them to k (HNSW/AUTOINDEX ef, DiskANN search_list, GPU_CAGRA itopk_size).
DEPTH_BOUNDED = ("ef", "search_list", "itopk_size")


def category_filter(category: str) -> str:
    """A Milvus filter expression matching ``category`` exactly (JSON string quoting escapes quotes)."""
    return f"category == {json.dumps(category, ensure_ascii=False)}"


def to_record(row: dict) -> PhotoRecord:
    return PhotoRecord(
        id=int(row["id"]), path=row["path"], category=row["category"] or None, sha256=row["sha256"],
        size=int(row["size"]), added_at=row["added_at"], metadata=json.loads(row["metadata"] or "{}"),
        updated_at=row["updated_at"], mtime_ns=int(row["mtime_ns"]),
        width=_known(row.get("width")), height=_known(row.get("height")), taken_at=row.get("taken_at") or None,
    )


def _known(value: int | None) -> int | None:
    return int(value) if value is not None and int(value) >= 0 else None


def to_row(record: PhotoRecord, vector: np.ndarray) -> dict:
    """A row of a collection made with DETAIL_FIELDS (unknown details as -1 / "")."""
    return {"id": int(record.id), "vector": np.asarray(vector, dtype=np.float32).tolist(), "path": record.path,
            "category": record.category or "", "sha256": record.sha256, "size": int(record.size),
            "mtime_ns": int(record.mtime_ns), "added_at": record.added_at, "updated_at": record.updated_at,
            "metadata": to_row_metadata(record), "width": _unknown_is(record.width),
            "height": _unknown_is(record.height), "taken_at": record.taken_at or ""}


def to_row_metadata(record: PhotoRecord) -> str:
    return json.dumps(record.metadata, sort_keys=True)


def _unknown_is(value: int | None) -> int:
    return -1 if value is None else int(value)


def has_details(fields: list[str]) -> bool:
    return set(DETAIL_FIELDS) <= set(fields)


def search_params_for(params: dict, k: int) -> dict:
    """``params`` for a search of depth ``k`` (at most TOPK_MAX): each depth-bounding param at least ``k``."""
    return {**params, **{name: max(int(params[name]), k) for name in DEPTH_BOUNDED if name in params}}


def revision_of(version: str, manifest: dict) -> str:
    """What :meth:`MilvusSource.current` answers: the collection and a digest of its manifest, so an in-place build
    (same collection, new size and categories) is a new revision the service reopens."""
    digest = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:16]
    return f"{version}@{digest}"


def version_of(revision: str) -> str:
    """The collection a :func:`revision_of` token (or a plain collection name) names."""
    return revision.split("@", 1)[0]


def checked_manifest(connection: MilvusConnection, version: str) -> dict:
    manifest = connection.read_manifest(version)
    if manifest is None:
        raise IndexCorruptError(f"Milvus collection {version} has no manifest in the metadata collection "
                                "(an unfinished build?).")
    wrong = [key for key in REQUIRED if field_of(manifest, key) is None]
    if wrong:
        raise IndexCorruptError(f"The manifest of Milvus collection {version} lacks {', '.join(wrong)}.")
    return manifest


class MilvusReader:
    """A read-only view of one Milvus photo collection (thread-safe: the client is)."""

    def __init__(self, connection: MilvusConnection, version: str, consistency: str = DEFAULT_CONSISTENCY) -> None:
        self.connection = connection
        self.consistency = consistency
        self.manifest = checked_manifest(connection, version)
        self.version: str = version
        self.revision: str = revision_of(version, self.manifest)
        self.dim: int = int(self.manifest["dim"])
        self.size: int = int(self.manifest["size"])
        self.fingerprint: str = self.manifest["encoder"]["fingerprint"]
        self.encoder_config: dict = self.manifest["encoder"]["config"]
        self.gallery_root: str | None = self.manifest["gallery"].get("root")
        self.search_params: dict = dict(self.manifest["index"].get("search_params") or {})
        self._categories = list(self.manifest.get("categories") or [])
        self._loading = threading.Lock()
        self._fields = connection.record_fields(version)  # an older collection lacks the detail fields

    def __len__(self) -> int:
        return self.size

    def search(self, vectors: np.ndarray, k: int, category: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`IndexReader.search`: top-``k`` by inner product, -1 / -inf padded, ``category`` exact."""
        queries = checked_queries(vectors, self.dim, k)
        scores, found = no_hits(len(queries), k)
        if len(queries) == 0 or self.size == 0 or (category is not None and category not in self._categories):
            return scores, found
        expression = category_filter(category) if category is not None else ""
        depth = min(k, TOPK_MAX)  # Milvus returns at most TOPK_MAX hits: a deeper ranking ends there, padded
        params = {"metric_type": "IP", "params": search_params_for(self.search_params, depth)}
        hits = self._call(lambda: self.connection.client.search(
            self.version, data=queries.tolist(), limit=depth, filter=expression, search_params=params,
            output_fields=[], consistency_level=self.consistency, timeout=self.connection.timeout), what="search")
        for row, row_hits in enumerate(hits):
            for column, hit in enumerate(list(row_hits)[:k]):
                found[row, column] = int(hit["id"])
                scores[row, column] = float(hit["distance"])
        return scores, found

    def _call(self, action, *, what: str):
        try:
            return self.connection.call(action, what=what)
        except EngineUnavailableError as error:
            if "not loaded" in str(error).lower():
                self._reload()  # a restarted server reloads by itself; asking makes it sooner
            raise

    def _reload(self) -> None:
        if self._loading.acquire(blocking=False):
            def load() -> None:
                try:
                    self.connection.load(self.version)
                except EngineUnavailableError:
                    pass
                finally:
                    self._loading.release()

            threading.Thread(target=load, daemon=True, name="milvus-load").start()

    def records(self, ids: Sequence[int] | np.ndarray) -> list[PhotoRecord | None]:
        wanted = sorted({int(i) for i in np.asarray(ids).reshape(-1) if int(i) >= 0})
        found: dict[int, PhotoRecord] = {}
        for start in range(0, len(wanted), 1000):
            chunk = wanted[start : start + 1000]
            rows = self._call(lambda chunk=chunk: self.connection.client.query(
                self.version, filter=f"id in {chunk}", output_fields=self._fields,
                timeout=self.connection.timeout), what="read photo records")
            found.update((int(row["id"]), to_record(row)) for row in rows)
        return [found.get(int(i)) for i in np.asarray(ids).reshape(-1)]

    def record(self, photo_id: int) -> PhotoRecord | None:
        return self.records([photo_id])[0]

    def vector(self, photo_id: int) -> np.ndarray | None:
        """The stored (normalised) vector of photo ``photo_id`` as float32 ``[D]``; None for an unknown id."""
        if photo_id < 0:
            return None
        rows = self._call(lambda: self.connection.client.query(
            self.version, filter=f"id in [{int(photo_id)}]", output_fields=["vector"],
            timeout=self.connection.timeout), what="read a stored vector")
        return np.asarray(rows[0]["vector"], dtype=np.float32) if rows else None

    def categories(self) -> list[str]:
        return list(self._categories)

    def stored(self) -> StoredRows:
        """Every stored row, ascending id, read page by page into arrays (never all rows as Python objects)."""
        ids, vectors, sha256, categories = [], [], [], []
        for page in self.connection.query_pages(self.version, ["id", "vector", "category", "sha256"],
                                                missing=f"Milvus collection {self.version} is gone."):
            ids.append(np.fromiter((row["id"] for row in page), dtype=np.int64, count=len(page)))
            vectors.append(np.array([row["vector"] for row in page], dtype=np.float32).reshape(len(page), self.dim))
            sha256 += [row["sha256"] for row in page]
            categories += [row["category"] or None for row in page]
        if not ids:
            return StoredRows(np.zeros(0, np.int64), np.zeros((0, self.dim), np.float32), [], [])
        return StoredRows(np.concatenate(ids), np.concatenate(vectors), sha256, categories)

    def index_problems(self, rows: StoredRows) -> list[str]:
        """The manifest's categories against the collection's; most stored vectors find themselves."""
        problems = []
        held = sorted({category for category in rows.categories if category})
        if held != sorted(self.categories()):
            problems.append(f"the collection's categories {held[:5]} differ from the manifest's")
        return problems + checks.self_recall(self.search, rows)

    def trust_sample(self, size: int) -> TrustSample:
        """The first ``size`` rows by id (one bounded query); the collection's own count is the index's size."""
        rows = self._call(lambda: self.connection.client.query(
            self.version, filter="id >= 0", output_fields=["id", "vector"], limit=max(size, 1),
            timeout=self.connection.timeout), what="read a sample of stored vectors")[:size]
        vectors = np.array([row["vector"] for row in rows], dtype=np.float32).reshape(len(rows), self.dim)
        return TrustSample({}, np.array([row["id"] for row in rows], dtype=np.int64), vectors, exact=False)

    def disk_bytes(self) -> int:
        return 0  # the server's business

    def close(self) -> None:
        """Nothing to free: the connection belongs to the source."""

    def __enter__(self) -> MilvusReader:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class MilvusSource:
    """The live index behind a Milvus alias: polled by the app, described and verified by the CLI."""

    readers_outlive_deletion = False  # a dropped collection is gone for every reader

    def __init__(self, location: MilvusLocation) -> None:
        self.alias = location.collection
        self.consistency = location.consistency
        self.connection = MilvusConnection(location.uri, timeout=location.timeout_s, token=location.token)
        self.where = self.describe()
        self._readers: weakref.WeakSet[MilvusReader] = weakref.WeakSet()  # opened by this source, for the poll

    def describe(self) -> str:
        return f"Milvus {self.connection.shown_uri} collection {self.alias}"

    def current(self) -> str | None:
        """The live collection's revision (:func:`revision_of`): it changes when the alias switches and when a build
        in place rewrites the manifest. Open readers of the collection take up search parameters `tune` wrote into
        its manifest since (a reader not reopened, e.g. the CLI's, searches with them too)."""
        version = self.connection.alias_target(self.alias)
        if version is None:
            return None
        manifest = self.connection.read_manifest(version)
        if manifest is None:
            return version  # opening it says why it cannot be served
        for reader in [reader for reader in list(self._readers) if reader.version == version]:
            reader.search_params = dict(manifest["index"].get("search_params") or {})
        return revision_of(version, manifest)

    def open(self, device: str = "cpu") -> MilvusReader:  # noqa: ARG002 - the server decides where it searches
        return self.open_version(None)

    def open_version(self, version: str | None) -> MilvusReader:
        if version is None:
            version = self.connection.alias_target(self.alias)
            if version is None:
                raise IndexNotFoundError(f"No index in {self.describe()}: the alias does not exist "
                                         "(run `index_builder build --engine milvus`).")
            reader = MilvusReader(self.connection, version, self.consistency)
            self._readers.add(reader)
            return reader
        version = version_of(version)
        if version not in self.versions():
            raise IndexNotFoundError(f"{self.describe()} has no version {version!r}.")
        return MilvusReader(self.connection, version)

    def versions(self) -> list[str]:
        return self.connection.versions(self.alias)

    def info(self, version: str | None = None) -> dict:
        return checks.info(self, version)

    def verify(self, version: str | None = None) -> list[str]:
        return checks.verify(self, version)

    def close(self) -> None:
        self.connection.close()
