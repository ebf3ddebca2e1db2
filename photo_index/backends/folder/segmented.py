"""The folder backend on segments (``sbir-index/2``): what a build publishes through, diffs against, and what the
service reads.

A build writes one new segment holding only its new and changed photos (a new file, a changed file, a touched
file's new stat, a manifest's new category), turns removed and replaced photos into tombstones, runs the tiered
merge policy, then publishes the version (one rename of ``current``). ``--rebuild``, the first build and a newly
requested index factory write one fresh segment of everything. A live index in the older one-copy format
(``versions/<v>/``) is taken as the first segment by its first incremental build: its files are hard-linked,
not copied, and the build's output says so. Such indexes keep opening unchanged (:mod:`.reader`).
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np

from ...api import FROM_PREVIOUS, PhotoRecord, PublishOptions, StoredRows, TrustSample, VersionContent
from ...atomic import write_atomic, write_json
from ...errors import BuildError, IndexCorruptError, IndexNotFoundError
from ...format import CHECKSUM_MAX_BYTES, CURRENT, REQUIRED, IndexLayout, expired, field_of, read_pointer, utc_now
from ...location import FolderLocation
from ...publishing import live_base, version_report
from ...queries import checked_queries, no_hits
from .calibration import saved_queries
from .faiss_index import FaissEngine
from .segments import SegmentedView, SegmentStore, TieredMergePolicy, apply_policy, compact, write_segment
from .segments.checks import segment_problems
from .segments.merge import GatheredRows
from .segments.search import open_live_segments
from .segments.segment import adopt_folder, checksum_problems
from .segments.store import REPORTS, UNREADABLE
from .segments.tune import tune_version
from .segments.version import Version
from .writer import PreviousVersion


def versions_of(layout: IndexLayout, store: SegmentStore) -> list[str]:
    """The index folder's versions of either format (one-copy folders, segmented manifests), oldest first."""
    return sorted(layout.versions() + store.versions())


def check_manifest(manifest: dict, where: str) -> dict:
    """A segmented version's manifest, checked for what readers and builds take from it."""
    wrong = [key for key, kind in REQUIRED.items() if not isinstance(field_of(manifest, key), kind)
             or isinstance(field_of(manifest, key), bool)]
    if wrong:
        raise IndexCorruptError(f"Version manifest {where} is damaged: missing or malformed {', '.join(wrong)}.")
    return manifest


class SegmentedPrevious:
    """A live segmented version as the base of an incremental build: its live records, and where each live
    photo's vector is (``row_of`` numbers the live photos in id order)."""

    def __init__(self, store: SegmentStore, version: Version) -> None:
        self.store, self.version, self.name = store, version, version.name
        self.manifest = check_manifest(version.manifest(), str(store.version_path(version.name)))
        self.sources: list[np.ndarray] = []
        ids, which, rows, records = [], [], [], []
        # Opened without the search structures a view builds (a build reads ids, records and vector rows only)
        segments = open_live_segments(store, version)
        try:
            # The service's checks before a swap (every file up to CHECKSUM_MAX_BYTES hashed, the rest sized): a
            # build never carries damaged ids or records into a new version. Merges hash every file they read.
            damaged = [problem for live in segments for problem in checksum_problems(
                live.segment.folder, live.segment.info, hash_max_bytes=CHECKSUM_MAX_BYTES)]
            if damaged:
                raise IndexCorruptError("; ".join(damaged))
            for number, live in enumerate(segments):
                live_rows = live.live_rows()
                self.sources.append(live.segment.vectors)
                ids.append(live.segment.ids[live_rows])
                which.append(np.full(len(live_rows), number, dtype=np.int64))
                rows.append(live_rows)
                keep = set(ids[-1].tolist())
                records += [r for r in live.segment.metadata.iter_records() if r.id in keep]
        finally:
            for live in segments:
                live.segment.close()
        order = np.argsort(np.concatenate(ids) if ids else np.zeros(0, np.int64), kind="stable")
        self.ids = np.concatenate(ids)[order] if ids else np.zeros(0, np.int64)
        self.which = np.concatenate(which)[order] if ids else np.zeros(0, np.int64)
        self.rows = np.concatenate(rows)[order] if ids else np.zeros(0, np.int64)
        self.by_path: dict[str, PhotoRecord] = {record.path: record for record in records}

    @property
    def fingerprint(self) -> str:
        return self.version.fingerprint

    def row_of(self, photo_id: int) -> int:
        return int(np.searchsorted(self.ids, photo_id))


Base = SegmentedPrevious | PreviousVersion


def _where_vectors_are(previous: Base | None, staged: np.ndarray) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """(arrays, which array, row in it) for every previous row number, with the staged rows as the last array."""
    if previous is None:
        return [staged], np.zeros(0, np.int64), np.zeros(0, np.int64)
    if isinstance(previous, SegmentedPrevious):
        return [*previous.sources, staged], previous.which, previous.rows
    return [previous.vectors, staged], np.zeros(len(previous.ids), np.int64), np.arange(len(previous.ids))


def _rows(content: VersionContent, previous: Base | None, picked: np.ndarray, dim: int) -> GatheredRows:
    """The vectors of the content rows ``picked``, read from the previous version or staging."""
    arrays, which, rows = _where_vectors_are(previous, content.staged)
    kinds, numbers = content.sources[picked, 0], content.sources[picked, 1]
    source, row = np.full(len(picked), len(arrays) - 1, dtype=np.int64), numbers.astype(np.int64)
    old = kinds == FROM_PREVIOUS
    source[old], row[old] = which[numbers[old]], rows[numbers[old]]
    return GatheredRows(arrays, source, row, dim)


class SegmentedWriter:
    """Publishes segmented versions into an index folder (the folder backend's writer)."""

    def __init__(self, location: FolderLocation, options: PublishOptions,
                 policy: TieredMergePolicy | None = None) -> None:
        self.options = options
        self.layout = IndexLayout(location.path)
        self.store = SegmentStore(location.path)
        self.policy = policy or TieredMergePolicy()
        self.where = str(self.layout.root)
        self.notes: list[str] = []
        self._base_note: str | None = None  # how the base was found when `current` could not say (a note)

    def previous(self, rebuild: bool) -> Base | None:
        name = self._live_name(rebuild)
        if name is None:
            return None
        what = f"The current version of {self.layout.root}"
        if self.store.is_segmented(name):
            base = live_base(lambda: SegmentedPrevious(self.store, self.store.read_version(name)), rebuild=rebuild,
                             what=what)
        else:
            base = live_base(lambda: PreviousVersion(self.layout.version_dir(name)), rebuild=rebuild, what=what)
        if base is not None and self._base_note:  # the base opened: `current` names it again (even if unchanged)
            write_atomic(self.layout.root / CURRENT, name + "\n")
        return base

    def _live_name(self, rebuild: bool) -> str | None:
        """The version ``current`` names. A damaged pointer (garbage, a path, empty) is refused: a build from
        nothing would hand every photo a new id beside intact versions. With ``rebuild``: None, start over."""
        pointer = self.layout.root / CURRENT
        versions = versions_of(self.layout, self.store)
        try:
            name = read_pointer(self.layout.root)
            if name is None and pointer.is_dir() and versions:
                raise IndexCorruptError(f"The index pointer {pointer} is a folder.")
        except IndexCorruptError as error:
            if rebuild:
                return None
            newest = f" (the newest is {versions[-1]})" if versions else ""
            raise BuildError(f"{error} The versions stay as they are: write the name of the one to serve into "
                             f"{pointer}{newest}, or run with --rebuild to start over with new ids.") from None
        if name is None and versions and not rebuild:
            # No pointer beside versions: a first build killed between its version and the pointer, or a pointer
            # deleted by hand. Building on the newest keeps every id (a build from nothing would renumber them);
            # publishing writes the pointer again.
            self._base_note = (f"{pointer} was missing: it names the newest version, {versions[-1]}, again, and "
                               "this build went on from it")
            return versions[-1]
        return name

    def resolve_factory(self, size: int, dim: int, requested: str | None) -> str:
        return FaissEngine().resolve_factory(size, dim, requested)

    def write(self, content: VersionContent, previous: Base | None, manifest: Mapping, report: Mapping) -> str:
        self._clear_dead_writes()
        with self.store.undone_on_failure(self.layout.root / REPORTS):
            return self._write(content, previous, manifest, report)

    def _write(self, content: VersionContent, previous: Base | None, manifest: Mapping, report: Mapping) -> str:
        self.notes = [self._base_note] if self._base_note else []
        dim = int(manifest["dim"])
        requested = manifest.get("index_factory_option")
        fresh = previous is None or self.options.rebuild or previous.fingerprint != manifest["encoder"]["fingerprint"] \
            or (requested is not None and requested != previous.manifest.get("index_factory_option"))
        if fresh:
            version, new = self._write_all(content, previous, report["factory"], dim)
        else:
            version, new = self._write_changes(content, previous, dim)
        queries = self._tuning_queries(previous, manifest["encoder"]["fingerprint"], dim)
        fields = {k: v for k, v in manifest.items() if k not in ("format", "version", "size", "dim", "next_id",
                                                                  "encoder", "created_at", "previous")}
        if queries is not None:  # the live version was tuned on real queries: keep calibrating on them
            fields["calibration_queries"] = self.store.save_queries(queries)
        version = replace(version, fields=fields, encoder=dict(manifest["encoder"]))
        version, merges = apply_policy(self.store, version, self.policy, device=self.options.faiss_device,
                                       recall_target=self.options.recall_target)
        if merges:
            self.notes.append(f"merged {sum(len(group) for group in merges)} segments into {len(merges)}")
        if queries is not None:
            names = (set(new) | set(version.segment_names())) - set(self._previous_segments(previous))
            version, _ = tune_version(self.store, version, queries, recall_target=self.options.recall_target,
                                      only=names)
        name = version.name
        full, counts = version_report(report, name)
        version = replace(version, previous=self.store.current_name(), fields={
            **version.fields, "index": self._index_section(version, report["factory"], previous.manifest.get("index")
                                                           if isinstance(previous, SegmentedPrevious) else None),
            "build": counts, "report": f"{REPORTS}/{name}.json"})
        (self.layout.root / REPORTS).mkdir(exist_ok=True)
        write_json(self.layout.root / REPORTS / f"{name}.json", full)
        self.store.publish(version)
        return name

    def compact(self, factory: str | None = None) -> tuple[Version, Version]:
        """(live version, the version with all its photos in one segment, published; the same when nothing
        would change). The live version must be segmented."""
        self._clear_dead_writes()
        with self.store.undone_on_failure():
            return self._compact(factory)

    def _compact(self, factory: str | None) -> tuple[Version, Version]:
        base = self.store.current()
        if base is None:
            raise IndexNotFoundError(f"{self.layout.root} has no segmented live version to compact.")
        options = self.options
        # the factory asked for now ("auto": by size again, as for a build), else the one the index was built with
        # on request (--index-factory), else the choice by size; the merged segment says which it got
        requested = None if factory == "auto" else factory or base.fields.get("index_factory_option")
        merged = compact(self.store, base, factory=requested, device=options.faiss_device,
                         recall_target=options.recall_target, progress=options.progress)
        if merged is base:
            return base, base
        queries = self.store.queries_of(base)
        if queries is not None:
            merged, _ = tune_version(self.store, merged, queries, recall_target=options.recall_target,
                                     only=set(merged.segment_names()) - set(base.segment_names()))
        used = self.store.segment_info(merged.segments[0].name).index.get("factory") if merged.segments else None
        merged = replace(merged, previous=base.name, fields={
            **merged.fields, "index": self._index_section(merged, used or requested or "Flat"),
            "index_factory_option": requested,
            "compacted": {"at": utc_now(), "segments_before": len(base.segments), "deleted_before": base.deleted}})
        self.store.publish(merged)
        return base, merged

    def tune(self, queries: np.ndarray, recall_target: float) -> tuple[Version, Version, list[dict]]:
        """(live version, the version with its approximate segments calibrated on ``queries``, one row per
        tuned segment); the new version is published unless no segment had anything to tune."""
        self._clear_dead_writes()
        with self.store.undone_on_failure():
            return self._tune(queries, recall_target)

    def _tune(self, queries: np.ndarray, recall_target: float) -> tuple[Version, Version, list[dict]]:
        base = self.store.current()
        if base is None:
            raise IndexNotFoundError(f"{self.layout.root} has no segmented live version to tune.")
        tuned, rows = tune_version(self.store, base, queries, recall_target=recall_target)
        if rows:
            section = self._index_section(tuned, base.fields.get("index", {}).get("factory", ""))
            main = next((row for row in rows if row["segment"] == section.get("largest")), rows[0])
            tuned = replace(tuned, fields={**tuned.fields, "index": {**section, "calibration": main["calibration"]}})
            self.store.publish(tuned)
        return base, tuned, rows

    def _index_section(self, version: Version, factory: str, before: Mapping | None = None) -> dict:
        """The version's ``index`` section: the factory a full build of it uses, how many segments and deleted
        rows it has, and the largest segment's search parameters and calibration (what searches mostly see; a
        calibration ``tune`` made on it, recorded in ``before``, stays while that segment is the largest)."""
        section = {"engine": "faiss", "factory": factory, "layout": "segments", "segments": len(version.segments),
                   "deleted": version.deleted, "search_params": {}}
        if version.segments:
            largest = max(version.segments, key=lambda ref: ref.live)
            main = self.store.segment_info(largest.name).index
            section.update(largest=largest.name, search_params=dict(largest.search_params),
                           **{k: main[k] for k in ("calibration", "metric", "faiss_version") if k in main})
            if before and before.get("largest") == largest.name and "calibration" in before:
                section["calibration"] = before["calibration"]
        return section

    @staticmethod
    def _previous_segments(previous: Base | None) -> list[str]:
        return previous.version.segment_names() if isinstance(previous, SegmentedPrevious) else []

    def _write_all(self, content: VersionContent, previous: Base | None, factory: str, dim: int
                   ) -> tuple[Version, list[str]]:
        """One fresh segment of every photo (first build, --rebuild, another index factory)."""
        picked = np.arange(len(content.records))
        ids = np.array([record.id for record in content.records], dtype=np.int64)
        info = write_segment(self.store.segments_dir, _rows(content, previous, picked, dim), ids, content.records,
                             factory=factory, device=self.options.faiss_device,
                             recall_target=self.options.recall_target, progress=self.options.progress)
        return self.store.commit(None, added=[info], dim=dim, next_id=content.next_id), [info.name]

    def _write_changes(self, content: VersionContent, previous: Base, dim: int) -> tuple[Version, list[str]]:
        """A segment of the new and changed photos; tombstones for the removed and replaced ones."""
        if isinstance(previous, SegmentedPrevious):
            base = previous.version
        else:  # the one-copy format: its version folder becomes the first segment, by hard links
            adopted = adopt_folder(self.store.segments_dir, previous.folder, previous.manifest["index"])
            base = self.store.commit(None, added=[adopted], dim=dim, next_id=int(previous.manifest.get("next_id", 0)))
            self.notes.append(f"converted the one-copy version {previous.name} to the segment format "
                              f"(its files hard-linked as segment {adopted.name})")
        old = {record.id: record for record in previous.by_path.values()}
        changed = [i for i, record in enumerate(content.records)
                   if content.sources[i][0] != FROM_PREVIOUS or old.get(record.id) != record]
        ids = np.array([content.records[i].id for i in changed], dtype=np.int64)
        kept = {record.id for record in content.records}
        removed = np.array(sorted(set(old) - kept), dtype=np.int64)
        added = []
        if len(changed):
            picked = np.array(changed, dtype=np.int64)
            added.append(write_segment(self.store.segments_dir, _rows(content, previous, picked, dim), ids,
                                       [content.records[i] for i in changed], device=self.options.faiss_device,
                                       recall_target=self.options.recall_target, progress=self.options.progress))
        self.notes.append(f"wrote a segment of {len(changed)} photos, {len(removed)} deleted"
                          if added else f"{len(removed)} photos deleted (no new segment)")
        version = self.store.commit(base, added=added, removed=removed, dim=dim, next_id=content.next_id)
        return version, [info.name for info in added]

    def _tuning_queries(self, previous: Base | None, fingerprint: str, dim: int) -> np.ndarray | None:
        """The query sample the live version was tuned on, when its queries come from this very encoder."""
        if previous is None or previous.fingerprint != fingerprint:
            return None
        if isinstance(previous, SegmentedPrevious):
            return self.store.queries_of(previous.version)
        return saved_queries(previous.folder, dim)

    def _clear_dead_writes(self) -> None:
        if unreadable := self.store.clear_dead_writes().get(UNREADABLE):
            self.notes.append(self._unreadable_note(unreadable))

    @staticmethod
    def _unreadable_note(names: list[str]) -> str:
        return (f"kept every segment and file: the manifest of version(s) {', '.join(names)} cannot be read, and "
                "deleting what it may use would be a guess (`index_builder verify` names the damage; delete that "
                "manifest from versions/ if the version is not needed)")

    def prune(self, keep: int) -> None:
        """Keep the newest ``keep`` versions of either format (never the live one); then delete every segment,
        tombstone file, query sample and report no kept version uses, and what killed builds left."""
        one_copy, segmented = self.layout.versions(), self.store.versions()
        live = self.store.current_name()
        doomed = set(expired(sorted(one_copy + segmented), live, keep))
        for name in one_copy:
            if name in doomed:
                shutil.rmtree(self.layout.version_dir(name), ignore_errors=True)
        self.layout.prune(len(one_copy))  # now only the unfinished (partial) folders
        kept = [name for name in segmented if name not in doomed]
        if unreadable := self.store.collect_garbage(max(len(kept), 1)).get(UNREADABLE):
            self.notes.append(self._unreadable_note(unreadable))
        reports = self.layout.root / REPORTS
        if reports.is_dir():
            for path in reports.iterdir():
                if path.stem not in kept:
                    path.unlink(missing_ok=True)


class SegmentedReader:
    """A read-only view of one segmented version (the folder backend's :class:`photo_index.Reader`)."""

    def __init__(self, store: SegmentStore, version: Version, *, device: str = "cpu") -> None:
        self.store, self._version = store, version
        manifest = check_manifest(version.manifest(), str(store.version_path(version.name)))
        self.version: str = version.name
        self.dim: int = version.dim
        self.fingerprint: str = version.fingerprint
        self.encoder_config: dict = manifest["encoder"]["config"]
        self.gallery_root: str | None = manifest["gallery"].get("root")
        self._view = SegmentedView(store, version, device=device)
        self.size: int = self._view.size
        self.manifest = {**manifest, "index": {**manifest["index"], **self.structure()}}
        self._category_ids: dict[str, np.ndarray] = {}

    def structure(self) -> dict:
        """The version's segments and tombstones (for info, metrics and people)."""
        return {"segments": [{"name": live.segment.name, "size": live.segment.info.size,
                              "deleted": len(live.tombstones), "factory": live.segment.info.index.get("factory"),
                              "search_params": live.segment.search_params} for live in self._view.segments],
                "deleted": self._version.deleted}

    def __len__(self) -> int:
        return self.size

    def search(self, vectors: np.ndarray, k: int, category: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        queries = checked_queries(vectors, self.dim, k)
        allowed = None if category is None else self._ids_of(category)
        if len(queries) == 0 or self.size == 0 or (allowed is not None and len(allowed) == 0):
            return no_hits(len(queries), k)
        return self._view.search(queries, k, allowed)

    def _ids_of(self, category: str) -> np.ndarray:
        cached = self._category_ids.get(category)  # a dict read/write is atomic; a race computes it twice
        if cached is None:
            cached = self._category_ids[category] = self._view.ids_of_category(category)
        return cached

    def records(self, ids) -> list[PhotoRecord | None]:
        return self._view.records(ids)

    def record(self, photo_id: int) -> PhotoRecord | None:
        return self.records([photo_id])[0]

    def vector(self, photo_id: int) -> np.ndarray | None:
        return self._view.vector(photo_id) if photo_id >= 0 else None

    def categories(self) -> list[str]:
        return self._view.categories()

    def vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """The live (ids [N], vectors [N, D]) in id order, read into memory (for checks and tools)."""
        rows = self.stored()
        return rows.ids, rows.vectors[np.arange(len(rows.ids))]

    def stored(self) -> StoredRows:
        """The live rows of every segment in id order (vectors read on demand)."""
        arrays, ids, which, rows, records = [], [], [], [], {}
        for number, live in enumerate(self._view.segments):
            live_rows = live.live_rows()
            arrays.append(live.segment.vectors)
            ids.append(live.segment.ids[live_rows])
            which.append(np.full(len(live_rows), number, dtype=np.int64))
            rows.append(live_rows)
            keep = set(ids[-1].tolist())
            records.update((r.id, r) for r in live.segment.metadata.iter_records() if r.id in keep)
        if not ids:
            return StoredRows(np.zeros(0, np.int64), np.zeros((0, self.dim), np.float32), [], [])
        all_ids = np.concatenate(ids)
        order = np.argsort(all_ids, kind="stable")
        ordered = [records.get(int(i)) for i in all_ids[order]]
        return StoredRows(all_ids[order], GatheredRows(arrays, np.concatenate(which)[order],
                                                       np.concatenate(rows)[order], self.dim),
                          [r.sha256 if r else "" for r in ordered], [r.category if r else None for r in ordered])

    def trust_sample(self, size: int) -> TrustSample:
        """The live rows each part of every segment holds (ids, vectors, FAISS index and metadata, less the
        tombstones), each segment's files against segment.json (sizes; SHA-256 of those up to CHECKSUM_MAX_BYTES),
        and ``size`` live rows spread over the whole version, across segments. ``held``: an exact segment's index
        copy of its sampled vectors; rows of an approximate segment (no copy) carry their stored vector."""
        segments = self._view.segments
        problems = [problem for segment in segments for problem in checksum_problems(
            segment.segment.folder, segment.segment.info, hash_max_bytes=CHECKSUM_MAX_BYTES)]
        empty = np.zeros((0, self.dim), np.float32)
        if problems:  # a damaged file is reason enough: nothing else in it is worth opening
            return TrustSample({}, np.zeros(0, np.int64), empty, True, problems)
        live = [segment.live_rows() for segment in segments]
        counts = {"ids": sum(len(rows) for rows in live), "vectors": 0, "index": 0, "metadata": 0}
        total = counts["ids"]
        picks = np.unique(np.linspace(0, total - 1, num=min(size, total)).astype(np.int64)) if total else \
            np.zeros(0, np.int64)
        starts = np.cumsum([0, *(len(rows) for rows in live)])
        ids, vectors, copies = [], [], []
        for number, segment in enumerate(segments):
            deleted, held = len(segment.tombstones), segment.segment
            counts["vectors"] += int(held.vectors.shape[0]) - deleted
            counts["metadata"] += held.metadata.count() - deleted
            mine = picks[(picks >= starts[number]) & (picks < starts[number + 1])] - starts[number]
            rows = live[number][mine]
            with held.index_for_check() as index:
                counts["index"] += index.size - deleted
                if len(rows):
                    ids.append(held.ids[rows])
                    vectors.append(np.asarray(held.vectors[rows], dtype=np.float32))
                    copy = index.held_vectors(ids[-1])
                    copies.append(vectors[-1] if copy is None else copy)
        if not ids:
            return TrustSample(counts, np.zeros(0, np.int64), empty, True, held=empty)
        sampled = np.concatenate(ids)
        without_record = sum(record is None for record in self.records(sampled))
        exact = all(segment.segment.exact for segment in segments if segment.live)
        return TrustSample(counts, sampled, np.concatenate(vectors), exact, without_record=without_record,
                           held=np.concatenate(copies))

    def index_problems(self, rows: StoredRows) -> list[str]:
        problems = segment_problems(self.store, self._version)
        for live in self._view.segments:
            problems += [f"segment {live.segment.name}: metadata: {line}"
                         for line in live.segment.metadata.integrity_errors()]
        return problems

    def disk_bytes(self) -> int:
        return sum(live.segment.info.bytes for live in self._view.segments) + \
            self.store.version_path(self.version).stat().st_size

    def close(self) -> None:
        self._view.close()

    def __enter__(self) -> SegmentedReader:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def open_version(root: Path, name: str, device: str = "cpu") -> SegmentedReader:
    store = SegmentStore(root)
    return SegmentedReader(store, store.read_version(name), device=device)
