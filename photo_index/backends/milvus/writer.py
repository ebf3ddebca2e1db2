"""A build into Milvus: in place (upsert changed photos, delete removed ones) or a new collection + alias switch.

In place when the live collection has the same index type, index params and dimension and ``--rebuild`` is not
given: only changed rows travel, and each upserted row carries its new file size/mtime/hash, so a build killed
half-way leaves a collection the next build simply finishes. Otherwise (``--rebuild``, another index type, the
first build) the rows go into a fresh collection, indexed and loaded before the alias switches to it in one step:
searches see the old collection or the new one, never half of one; a killed build leaves the alias untouched and
an unfinished collection without a manifest, which the next build drops.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ...api import FROM_PREVIOUS, FROM_STAGING, PhotoRecord, PublishOptions, VersionContent
from ...errors import BuildError, EngineUnavailableError, IndexCorruptError, IndexNotFoundError
from ...format import expired, utc_now
from ...location import MilvusLocation
from ...publishing import live_base, version_report
from .client import (
    CATEGORY_MAX,
    PATH_MAX,
    VARCHAR_MAX,
    MilvusConnection,
    builder_alive,
    manifest_parts,
    new_version_name,
    version_age_s,
)
from .reader import checked_manifest, has_details, to_record, to_row, to_row_metadata
from .tuning import tune_collection

DEFAULT_INDEX = "AUTOINDEX"
CHUNK = 1_000  # rows per insert/upsert call (well under Milvus's 64 MB message limit at 512 dims)
BUILD_TIMEOUT_S = 3_600.0  # flush and load of a large collection take long; a dead server still fails fast
# A collection without a manifest whose builder we cannot ask (another host, or made before builds were marked) is
# dropped only when older than a build's longest fill (inserts, flush, index: each up to BUILD_TIMEOUT_S).
UNFINISHED_AFTER_S = 3 * BUILD_TIMEOUT_S


def categories_of(records) -> list[str]:
    return sorted({record.category for record in records if record.category})


def oversized_field(record: PhotoRecord) -> str | None:
    """Which of ``record``'s text fields exceeds its Milvus field (bytes), or None: checked before any row is
    written, as the server refuses the whole insert."""
    limits = {"path": (record.path, PATH_MAX), "category": (record.category or "", CATEGORY_MAX),
              "metadata": (to_row_metadata(record), VARCHAR_MAX)}
    return next((f"{name} is {len(text.encode())} bytes (Milvus holds {limit})"
                 for name, (text, limit) in limits.items() if len(text.encode()) > limit), None)


def check_fields(records: list[PhotoRecord]) -> None:
    """A one-line :class:`BuildError` naming the first photo whose fields Milvus cannot hold."""
    for record in records:
        problem = oversized_field(record)
        if problem is not None:
            raise BuildError(f"Photo {record.path[:200]!r} cannot be stored in Milvus: its {problem}; shorten it "
                             "or leave the photo out.")


class MilvusPrevious:
    """The live collection, as the base of an incremental build (records read from Milvus itself)."""

    def __init__(self, connection: MilvusConnection, version: str) -> None:
        self.connection = connection
        self.name = version
        self.manifest = checked_manifest(connection, version)
        self.fields = connection.record_fields(version)
        pages = connection.query_pages(version, self.fields, missing=f"Milvus collection {version} is gone.")
        rows = [row for page in pages for row in page]
        self.by_path = {row["path"]: to_record(row) for row in rows}
        ids = {int(row["id"]) for row in rows}
        # A build killed between upserting a photo under a new id and deleting its old row left two rows of one
        # path: the one not kept here is stale (the next build deletes it).
        self.stale_ids = sorted(ids - {record.id for record in self.by_path.values()})
        # A build killed after upserting new photos has not written next_id: never hand out an id in use.
        self.manifest["next_id"] = max(int(self.manifest.get("next_id", 0)), max(ids, default=-1) + 1)

    @property
    def fingerprint(self) -> str:
        return self.manifest["encoder"]["fingerprint"]

    def disagreement(self) -> str | None:
        """How the manifest and the rows differ (a build killed between its upserts and its manifest), or None."""
        rows, categories = len(self.by_path), categories_of(self.by_path.values())
        if int(self.manifest.get("size", -1)) != rows:
            return f"the manifest counts {self.manifest.get('size')} photos, the collection holds {rows}"
        if list(self.manifest.get("categories") or []) != categories:
            return "the manifest's categories differ from the collection's"
        return None

    def row_of(self, photo_id: int) -> int:
        return photo_id  # Milvus rows are addressed by id

    def vectors_of(self, ids: list[int]) -> dict[int, np.ndarray]:
        found: dict[int, np.ndarray] = {}
        for start in range(0, len(ids), CHUNK):
            chunk = [int(i) for i in ids[start : start + CHUNK]]
            rows = self.connection.call(lambda chunk=chunk: self.connection.client.query(
                self.name, filter=f"id in {chunk}", output_fields=["id", "vector"],
                timeout=self.connection.timeout), what="read previous vectors")
            found.update((int(row["id"]), np.asarray(row["vector"], dtype=np.float32)) for row in rows)
        if len(found) != len(set(ids)):
            raise BuildError(f"Milvus collection {self.name} lost {len(set(ids)) - len(found)} vectors during the "
                             "build; run again (with --rebuild if it persists).")
        return found


class MilvusWriter:
    """The publishing side of the Milvus backend (see the module docstring)."""

    def __init__(self, location: MilvusLocation, options: PublishOptions) -> None:
        self.options = options
        self.alias = location.collection
        self.connection = MilvusConnection(location.uri, timeout=location.timeout_s, token=location.token)
        self.where = f"Milvus {self.connection.shown_uri} collection {self.alias}"
        self.notes: list[str] = []
        self.index_params = dict(options.index_params or {})
        self.search_params = options.search_params  # None: the type's defaults, or what `tune` chose
        self._replaced: str | None = None  # the collection this build's alias switch took out of service

    def previous(self, rebuild: bool) -> MilvusPrevious | None:
        version = self.connection.alias_target(self.alias)
        if version is None:
            self._refuse_plain_collection()
            return None
        previous = live_base(lambda: MilvusPrevious(self.connection, version), rebuild=rebuild,
                             what=f"The live collection {version} of {self.where}")
        if previous is not None:
            self._repair_manifest(previous)
        return previous

    def _refuse_plain_collection(self) -> None:
        """Before anything is embedded: the alias name must not be a collection of its own (Milvus would refuse
        the alias only at the end, after a whole new collection was filled)."""
        if self.connection.is_plain_collection(self.alias):
            raise BuildError(f"--collection {self.alias} is an existing Milvus collection, not an alias this builder "
                             "manages; choose another name.")

    def _repair_manifest(self, previous: MilvusPrevious) -> None:
        """A build killed between its upserts and its manifest left rows the manifest does not count: the next
        build (also one that changes nothing) rewrites the manifest from the rows, so the service sees them, and
        deletes the stale rows of photos it had upserted under new ids."""
        if previous.stale_ids:
            self._delete(previous.name, previous.stale_ids)
            self.notes.append(f"deleted {len(previous.stale_ids)} stale row(s) of {previous.name} (photos an "
                              "interrupted build had stored again under new ids)")
            previous.stale_ids = []
        problem = previous.disagreement()
        if problem is None:
            return
        previous.manifest = {**previous.manifest, "size": len(previous.by_path),
                             "categories": categories_of(previous.by_path.values()), "updated_at": utc_now()}
        self.connection.write_manifest(previous.name, previous.manifest)
        self.notes.append(f"rewrote the manifest of {previous.name}: {problem} (an earlier build was interrupted)")

    def resolve_factory(self, size: int, dim: int, requested: str | None) -> str:  # noqa: ARG002
        return (requested or DEFAULT_INDEX).upper()

    def write(self, content: VersionContent, previous: MilvusPrevious | None, manifest: Mapping,
              report: Mapping) -> str:
        factory, dim = report["factory"], int(manifest["dim"])
        old = previous.manifest["index"] if previous else {}
        section = {"engine": "milvus", "factory": factory, "metric": "inner_product",
                   "index_params": self.index_params, **self._search_section(old, factory)}
        # A collection made before the detail fields existed is copied into a new one that has them.
        in_place = (previous is not None and not self.options.rebuild and previous.manifest["dim"] == dim
                    and (old.get("factory"), old.get("index_params") or {}) == (factory, self.index_params)
                    and has_details(previous.fields))
        version = previous.name if in_place else new_version_name(self.alias)
        dates = {"created_at": previous.manifest["created_at"], "updated_at": content.now} if in_place else {}
        _, counts = version_report(report, version)
        final = {**manifest, "categories": categories_of(content.records), **dates, "version": version,
                 "index": section, "build": counts}
        # Refused before any row is written: a build that cannot finish must not leave half of itself behind.
        check_fields(content.records)
        manifest_parts(version, final)
        if in_place:
            self._update_in_place(content, previous)
        else:
            self._fill_new(version, content, previous, dim, factory)
        self.connection.write_manifest(version, final)
        if not in_place:  # (what the alias named just before: another build's collection, in a race of two)
            self._replaced = self.connection.switch_alias(self.alias, version)
        return version

    def _search_section(self, old: Mapping, factory: str) -> dict:
        """Search params given for this build; else what `tune` chose for the same index type and params (kept,
        as the folder backend keeps its query sample); else the type's defaults."""
        if self.search_params is not None:
            return {"search_params": dict(self.search_params)}
        if (old.get("factory"), old.get("index_params") or {}) == (factory, self.index_params) and "calibration" in old:
            return {"search_params": dict(old.get("search_params") or {}), "calibration": old["calibration"]}
        return {"search_params": {}}

    def tune(self, queries_path: str | Path, *, keep: int) -> dict:  # noqa: ARG002 - tuning adds no version
        """Recalibrate the live collection's search parameter on the query vectors in ``queries_path`` and record
        it in its manifest (see :mod:`.tuning`)."""
        return tune_collection(self.connection, self.alias, queries_path, recall_target=self.options.recall_target)

    @staticmethod
    def _rows(records: list[PhotoRecord], sources: np.ndarray, previous: MilvusPrevious | None,
              staged: np.ndarray, read_before: dict[int, np.ndarray] | None = None) -> list[dict]:
        """Milvus rows for ``records``: vectors from staging, or from the previous collection (row = old id), or
        from ``read_before`` (old ids' vectors read before any upsert could overwrite them)."""
        read_before = read_before or {}
        wanted = [int(row) for kind, row in sources if kind == FROM_PREVIOUS and int(row) not in read_before]
        reused = previous.vectors_of(wanted) if previous and wanted else {}

        def vector(kind: int, row: int) -> np.ndarray:
            if kind == FROM_STAGING:
                return staged[row]
            return read_before[row] if row in read_before else reused[row]

        return [to_row(record, vector(kind, int(row))) for record, (kind, row) in zip(records, sources, strict=True)]

    def _update_in_place(self, plan: VersionContent, previous: MilvusPrevious) -> None:
        client, timeout = self.connection.client, self.connection.timeout
        changed = [i for i, record in enumerate(plan.records)
                   if plan.sources[i][0] == FROM_STAGING or previous.by_path.get(record.path) != record]
        # Vectors a photo takes from another id that this build also writes (swapped files, a manifest that gave an
        # id to another photo): read now, as an earlier chunk's upsert may write that id's new vector first. Ids only
        # deleted (a renamed folder's) stay readable until the end: read chunk by chunk, as the rest.
        upserted = {plan.records[i].id for i in changed}
        borrowed = [int(plan.sources[i][1]) for i in changed
                    if plan.sources[i][0] == FROM_PREVIOUS and int(plan.sources[i][1]) != plan.records[i].id
                    and int(plan.sources[i][1]) in upserted]
        read_before = previous.vectors_of(borrowed) if borrowed else {}
        for start in range(0, len(changed), CHUNK):
            picked = changed[start : start + CHUNK]
            rows = self._rows([plan.records[i] for i in picked], plan.sources[picked], previous, plan.staged,
                              read_before)
            self.connection.call(lambda rows=rows: client.upsert(previous.name, rows, timeout=timeout),
                                 what="upsert photos")
        kept = {record.id for record in plan.records}
        self._delete(previous.name, sorted(r.id for r in previous.by_path.values() if r.id not in kept))

    def _delete(self, collection: str, ids: list[int]) -> None:
        client, timeout = self.connection.client, self.connection.timeout
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start : start + CHUNK]
            self.connection.call(lambda chunk=chunk: client.delete(collection, filter=f"id in {chunk}",
                                                                   timeout=timeout), what="delete photos")

    def _fill_new(self, name: str, plan: VersionContent, previous: MilvusPrevious | None, dim: int,
                  index_type: str) -> None:
        """Create, load (empty: quick), fill, flush and wait for the index; on a server error drop the half."""
        connection = self.connection
        connection.create_photos(name, dim, index_type, self.index_params)
        try:
            connection.load(name, timeout=BUILD_TIMEOUT_S)
            client, timeout = connection.client, connection.timeout
            for start in range(0, len(plan.records), CHUNK):
                rows = self._rows(plan.records[start : start + CHUNK], plan.sources[start : start + CHUNK],
                                  previous, plan.staged)
                connection.call(lambda rows=rows: client.insert(name, rows, timeout=timeout), what="insert photos")
            connection.call(lambda: client.flush(name, timeout=BUILD_TIMEOUT_S), what="flush")
            connection.wait_indexed(name, len(plan.records), timeout=BUILD_TIMEOUT_S)
        except (EngineUnavailableError, BuildError):  # away, or refusing a row: the half-filled collection goes
            with contextlib.suppress(EngineUnavailableError, BuildError):
                connection.drop(name)
            raise

    def prune(self, keep: int) -> None:
        """Drop all but the newest ``keep`` complete collections (never the live one) and abandoned unfinished ones
        (never one a build may still be filling). The collection this build's switch took out of service stays
        until the next build: a service searches it until its next poll (with ``--keep 1`` its searches failed)."""
        live = self.connection.alias_target(self.alias)
        versions = self.connection.versions(self.alias)
        complete = [v for v in versions if v == live or self._has_manifest(v)]
        doomed = [v for v in versions if v not in complete and self._abandoned(v)] + expired(complete, live, keep)
        if self._replaced in doomed:
            doomed.remove(self._replaced)
            self.notes.append(f"kept {self._replaced} until the next build (services may still search it)")
        for version in doomed:
            self.connection.drop(version)

    def _has_manifest(self, version: str) -> bool:
        try:
            return self.connection.read_manifest(version) is not None
        except IndexCorruptError:  # parts that disagree still mark a finished build: never dropped as unfinished
            return True

    def _abandoned(self, version: str) -> bool:
        """An unfinished collection no build is filling: its builder's process is gone, or (when we cannot ask) it
        is older than any build takes."""
        try:
            alive = builder_alive(self.connection.description(version))
        except IndexNotFoundError:
            return False  # dropped meanwhile
        if alive is None:
            return version_age_s(version) > UNFINISHED_AFTER_S
        return not alive
