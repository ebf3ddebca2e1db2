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
from ...errors import BuildError, EngineUnavailableError
from ...format import expired
from ...location import MilvusLocation
from ...publishing import live_base, version_report
from .client import MilvusConnection, new_version_name
from .reader import checked_manifest, has_details, to_record, to_row
from .tuning import tune_collection

DEFAULT_INDEX = "AUTOINDEX"
CHUNK = 1_000  # rows per insert/upsert call (well under Milvus's 64 MB message limit at 512 dims)
BUILD_TIMEOUT_S = 3_600.0  # flush and load of a large collection take long; a dead server still fails fast


class MilvusPrevious:
    """The live collection, as the base of an incremental build (records read from Milvus itself)."""

    def __init__(self, connection: MilvusConnection, version: str) -> None:
        self.connection = connection
        self.name = version
        self.manifest = checked_manifest(connection, version)
        self.fields = connection.record_fields(version)
        pages = connection.query_pages(version, self.fields, missing=f"Milvus collection {version} is gone.")
        self.by_path = {row["path"]: to_record(row) for page in pages for row in page}
        # A build killed after upserting new photos has not written next_id: never hand out an id in use.
        highest = max((record.id for record in self.by_path.values()), default=-1)
        self.manifest["next_id"] = max(int(self.manifest.get("next_id", 0)), highest + 1)

    @property
    def fingerprint(self) -> str:
        return self.manifest["encoder"]["fingerprint"]

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
        self.where = f"Milvus {location.uri} collection {self.alias}"
        self.notes: list[str] = []
        self.index_params = dict(options.index_params or {})
        self.search_params = options.search_params  # None: the type's defaults, or what `tune` chose

    def previous(self, rebuild: bool) -> MilvusPrevious | None:
        version = self.connection.alias_target(self.alias)
        if version is None:
            return None
        return live_base(lambda: MilvusPrevious(self.connection, version), rebuild=rebuild,
                         what=f"The live collection {version} of {self.where}")

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
        dates = {}
        if in_place:
            version = previous.name
            self._update_in_place(content, previous)
            dates = {"created_at": previous.manifest["created_at"], "updated_at": content.now}
        else:
            version = new_version_name(self.alias)
            self._fill_new(version, content, previous, dim, factory)
        _, counts = version_report(report, version)
        self.connection.write_manifest(version, {
            **manifest, "categories": sorted({r.category for r in content.records if r.category}), **dates,
            "version": version, "index": section, "build": counts})
        if not in_place:
            self.connection.switch_alias(self.alias, version)
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
              staged: np.ndarray) -> list[dict]:
        """Milvus rows for ``records``: vectors from staging, or from the previous collection (row = old id)."""
        reused = previous.vectors_of([int(row) for kind, row in sources if kind == FROM_PREVIOUS]) if previous else {}
        return [to_row(record, staged[row] if kind == FROM_STAGING else reused[int(row)])
                for record, (kind, row) in zip(records, sources, strict=True)]

    def _update_in_place(self, plan: VersionContent, previous: MilvusPrevious) -> None:
        client, timeout = self.connection.client, self.connection.timeout
        changed = [i for i, record in enumerate(plan.records)
                   if plan.sources[i][0] == FROM_STAGING or previous.by_path.get(record.path) != record]
        for start in range(0, len(changed), CHUNK):
            picked = changed[start : start + CHUNK]
            rows = self._rows([plan.records[i] for i in picked], plan.sources[picked], previous, plan.staged)
            self.connection.call(lambda rows=rows: client.upsert(previous.name, rows, timeout=timeout),
                                 what="upsert photos")
        kept = {record.id for record in plan.records}
        doomed = sorted(r.id for r in previous.by_path.values() if r.id not in kept)
        for start in range(0, len(doomed), CHUNK):
            chunk = doomed[start : start + CHUNK]
            self.connection.call(lambda chunk=chunk: client.delete(previous.name, filter=f"id in {chunk}",
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
        except EngineUnavailableError:
            with contextlib.suppress(EngineUnavailableError):
                connection.drop(name)
            raise

    def prune(self, keep: int) -> None:
        """Drop all but the newest ``keep`` complete collections (never the live one) and unfinished ones."""
        live = self.connection.alias_target(self.alias)
        versions = self.connection.versions(self.alias)
        complete = [v for v in versions if v == live or self.connection.read_manifest(v) is not None]
        doomed = [v for v in versions if v not in complete] + expired(complete, live, keep)
        for version in doomed:
            self.connection.drop(version)

