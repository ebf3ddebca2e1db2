"""The segmented folder index on disk: versions naming segments, ``current`` naming a version.

```
INDEX/
  current                 the live version's name (write temp + fsync + rename)
  versions/<v>.json       a version: its segments, tombstones per segment, fingerprint, search params
  segments/<s>/           immutable segments (segment.py); segments/.tmp-* are unfinished
  tombstones/<sha>.npy    large tombstone sets, content-addressed (small ones are inline in the version)
  queries/<sha>.npy       the query sample `tune` calibrated on (content-addressed; versions name it)
  staging/ .lock          the builder's (resume after a kill, one build at a time)
```
Writing never touches what a published version references: a change writes new segments and a new version file,
then switches ``current`` with one rename. A kill at any point leaves ``current`` and everything it references
intact; what the dead writer left (temp folders, segments no version lists) is removed by :meth:`collect_garbage`.
Writers hold the builder's lock (one build at a time per index folder).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from ....arrays import load_array
from ....atomic import dead_temp_files, write_atomic, write_json
from ....errors import BuildError, IndexCorruptError, IndexNotFoundError
from ....format import CURRENT, current_version, new_version_name, utc_now
from .segment import TMP_PREFIX, Segment, SegmentInfo, read_segment_info
from .version import (
    INLINE_TOMBSTONES,
    TOMBSTONES,
    SegmentRef,
    Version,
    content_name,
    content_name_of,
    npy_bytes,
    read_version_file,
    version_to_json,
)

VERSIONS = "versions"
SEGMENTS = "segments"
QUERIES = "queries"
REPORTS = "reports"  # reports/<version>.json: each build's full report (every skipped file)
UNREADABLE = "unreadable"  # collect_garbage's list of kept versions whose manifest could not be read
QUERY_SAMPLE = "calibration_queries"  # the version field naming the query sample: {"file": ..., "count": ...}
VERSION_SUFFIX = ".json"


def version_created(name: str) -> float | None:
    """When version ``name`` was named (its name begins with the UTC time, ``new_version_name``), in Unix
    seconds; None for a name of another form."""
    try:
        stamp = datetime.strptime(name[1:].split("-", 1)[0], "%Y%m%dT%H%M%S%fZ")
    except ValueError:
        return None
    return stamp.replace(tzinfo=UTC).timestamp()


class SegmentStore:
    """Paths and atomic operations of one segmented index folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().absolute()
        self._ids: dict[str, np.ndarray] = {}

    @property
    def versions_dir(self) -> Path:
        return self.root / VERSIONS

    @property
    def segments_dir(self) -> Path:
        return self.root / SEGMENTS

    @property
    def tombstones_dir(self) -> Path:
        return self.root / TOMBSTONES

    def segment_dir(self, name: str) -> Path:
        return self.segments_dir / name

    def version_path(self, name: str) -> Path:
        return self.versions_dir / f"{name}{VERSION_SUFFIX}"

    # -- reading -------------------------------------------------------------------------------------------------

    def current_name(self) -> str | None:
        return current_version(self.root)

    def is_segmented(self, name: str) -> bool:
        """Whether version ``name`` is a segmented one (else: absent, or a one-copy version folder)."""
        return self.version_path(name).is_file()

    def versions(self) -> list[str]:
        """Segmented versions, oldest first."""
        if not self.versions_dir.is_dir():
            return []
        return sorted(p.name[: -len(VERSION_SUFFIX)] for p in self.versions_dir.iterdir()
                      if p.name.endswith(VERSION_SUFFIX) and not p.name.startswith(".") and p.is_file())

    def read_version(self, name: str) -> Version:
        try:
            return read_version_file(self.version_path(name), self.root)
        except FileNotFoundError as error:
            raise IndexNotFoundError(f"{self.root} has no segmented version {name!r}.") from error

    def current(self) -> Version | None:
        name = self.current_name()
        return None if name is None or not self.is_segmented(name) else self.read_version(name)

    def segment_info(self, name: str) -> SegmentInfo:
        return read_segment_info(self.segment_dir(name))

    def segment_ids(self, name: str) -> np.ndarray:
        """The ids a segment holds (sorted; cached: segments never change)."""
        if name not in self._ids:
            self._ids[name] = load_array(self.segment_dir(name) / "ids.npy")
        return self._ids[name]

    def open_segment(self, ref: SegmentRef, device: str = "cpu") -> Segment:
        return Segment(self.segment_dir(ref.name), device=device, search_params=ref.search_params)

    # -- writing (under the build lock) --------------------------------------------------------------------------

    def commit(self, base: Version | None, *, added: Sequence[SegmentInfo] = (), removed: np.ndarray | None = None,
               dim: int | None = None, next_id: int | None = None, encoder: dict | None = None,
               fields: dict | None = None) -> Version:
        """The version after ``base`` gains the ``added`` segments and loses the photos ``removed``.

        An id an added segment holds replaces the same id in older segments: it, and every removed id, becomes
        a tombstone of the segment that held it live. Segments left with no live row are dropped from the
        version. Nothing is written here (see :meth:`publish`)."""
        added_ids = [self.segment_ids(info.name) for info in added]
        new_ids = np.concatenate(added_ids) if added_ids else np.zeros(0, np.int64)
        if len(np.unique(new_ids)) != len(new_ids):
            raise BuildError("Two new segments hold the same photo id.")
        dead = np.union1d(new_ids, np.zeros(0, np.int64) if removed is None else np.asarray(removed, np.int64))
        refs = []
        for ref in base.segments if base else ():
            ids = self.segment_ids(ref.name)
            hit = ids[np.isin(ids, dead, assume_unique=True)] if len(dead) else ids[:0]
            newly = np.setdiff1d(hit, ref.tombstones, assume_unique=True)
            ref = ref.with_deleted(newly) if len(newly) else ref
            if ref.live > 0:
                refs.append(ref)
        dim = dim if dim is not None else (base.dim if base else (added[0].dim if added else 0))
        for info in added:
            if info.dim != dim:
                raise BuildError(f"Segment {info.name} holds {info.dim}-dim vectors; the index holds {dim}-dim ones.")
            if info.size:
                refs.append(SegmentRef(name=info.name, size=info.size, search_params=info.search_params))
        highest = int(new_ids.max()) + 1 if len(new_ids) else 0
        return Version(
            name=new_version_name(), created_at=utc_now(), previous=base.name if base else self.current_name(), dim=dim,
            next_id=max(highest, next_id if next_id is not None else 0, base.next_id if base else 0),
            encoder=encoder if encoder is not None else (base.encoder if base else {}), segments=tuple(refs),
            fields=fields if fields is not None else (base.fields if base else {}))

    @contextlib.contextmanager
    def undone_on_failure(self, *also: Path) -> Iterator[None]:
        """What a write inside the block adds (segments, their temp folders, tombstone and query files, a version
        manifest, and entries of the folders ``also``) is deleted when it fails before ``current`` names the new
        version (a full disk, a kill, a bug): a full disk must not stay full of it. The live version and all it
        uses existed before the block, so they are never touched."""
        folders = [self.segments_dir, self.versions_dir, self.tombstones_dir, self.root / QUERIES, *also]
        before = {folder: set(os.listdir(folder)) if folder.is_dir() else set() for folder in folders}
        live = current_version(self.root)
        try:
            yield
        except BaseException:
            if current_version(self.root) == live:
                for folder, names in before.items():
                    for child in folder.iterdir() if folder.is_dir() else ():
                        if child.name not in names:
                            shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(
                                missing_ok=True)
                            self._ids.pop(child.name, None)
            raise

    def publish(self, version: Version) -> None:
        """Write ``version``'s manifest, then make it ``current`` (each step atomic; a kill between leaves the old
        version current and an unreferenced manifest that :meth:`collect_garbage` removes)."""
        missing = [ref.name for ref in version.segments if not (self.segment_dir(ref.name) / "segment.json").is_file()]
        if missing:
            raise BuildError(f"Version {version.name} lists segments that are not on disk: {', '.join(missing)}.")
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        write_json(self.version_path(version.name), version_to_json(version, self._write_tombstones))
        write_atomic(self.root / CURRENT, version.name + "\n")

    def _write_tombstones(self, ids: np.ndarray) -> str:
        return self._write_array(TOMBSTONES, ids.astype(np.int64, copy=False))

    def _write_array(self, kind: str, array: np.ndarray) -> str:
        """Store ``array`` content-addressed under ``kind/`` (atomically); its path from the index folder."""
        data = npy_bytes(array)
        folder, name = self.root / kind, content_name_of(data)
        if not _holds(folder / name, data):  # a file of that name with other bytes (damage) is written again
            folder.mkdir(parents=True, exist_ok=True)
            write_atomic(folder / name, data)
        return f"{kind}/{name}"

    def save_queries(self, queries: np.ndarray) -> dict:
        """Store a query sample; the value of a version's ``calibration_queries`` field."""
        return {"file": self._write_array(QUERIES, np.ascontiguousarray(queries, dtype=np.float32)),
                "count": len(queries)}

    def queries_of(self, version: Version) -> np.ndarray | None:
        """The query sample ``version`` was tuned on, or None."""
        entry = version.fields.get(QUERY_SAMPLE)
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
            return None
        try:
            return load_array(self.root / entry["file"])
        except IndexCorruptError:
            return None

    def collect_garbage(self, keep: int) -> dict[str, list[str]]:
        """Delete segmented versions beyond the newest ``keep`` (never the current one), then every segment and
        tombstone file no remaining version references, and what killed writers left behind."""
        current = self.current_name()
        names = self.versions()
        retained = set(names[-max(keep, 1):]) | ({current} & set(names))
        removed: dict[str, list[str]] = {"versions": [], SEGMENTS: [], TOMBSTONES: [], QUERIES: []}
        for name in names:
            if name not in retained:
                self.version_path(name).unlink(missing_ok=True)
                removed["versions"].append(name)
        if self.versions_dir.is_dir():  # a manifest a killed publish left half-written
            for stale in self.versions_dir.glob(f".*{VERSION_SUFFIX}.*.tmp"):
                stale.unlink(missing_ok=True)
        for stale in [*dead_temp_files(self.root), *dead_temp_files(self.root / REPORTS)]:  # killed writes
            stale.unlink(missing_ok=True)
            removed.setdefault("temporary", []).append(stale.name)
        segments, files, unreadable = set(), set(), []
        for name in retained:
            try:
                version = self.read_version(name)
            except IndexNotFoundError:
                unreadable.append(name)
                continue
            segments.update(version.segment_names())
            files.update(content_name(ref.tombstones) for ref in version.segments if ref.deleted > INLINE_TOMBSTONES)
            queries = version.fields.get(QUERY_SAMPLE)
            if isinstance(queries, dict):
                files.add(Path(str(queries.get("file"))).name)
        if unreadable:  # deleting what an unreadable version might use would be a guess: only a killed write's
            removed[UNREADABLE] = sorted(unreadable)  # temp folders go, which no version ever lists
        for folder, used, kind in ((self.segments_dir, segments, SEGMENTS), (self.tombstones_dir, files, TOMBSTONES),
                                   (self.root / QUERIES, files, QUERIES)):
            if not folder.is_dir():
                continue
            for child in folder.iterdir():
                if child.name not in used and (not unreadable or child.name.startswith(TMP_PREFIX)):
                    if child.is_dir():
                        shutil.rmtree(child, ignore_errors=True)
                    else:
                        child.unlink(missing_ok=True)
                    self._ids.pop(child.name, None)
                    removed[kind].append(child.name)
        return removed

    def clear_dead_writes(self) -> dict[str, list[str]]:
        """Remove what killed writers left (temp folders, half-written manifests, versions never published,
        segments and files no version references), keeping every published version. Run before a write, under
        the build lock (so no writer is alive): a build killed mid-way through a large segment must not leave its
        bytes taking the room the next write needs (they were otherwise only collected after the next write
        succeeded), nor a version killed before its switch a ``--keep`` slot of one that served."""
        for name in self.never_published():
            self.version_path(name).unlink(missing_ok=True)
        return self.collect_garbage(keep=len(self.versions()))

    def never_published(self) -> list[str]:
        """Versions written after ``current`` last changed and newer than the one it names: a publish killed
        between its version manifest and the switch. (A version an operator rolled back from was written before
        the pointer changed, so it stays.)"""
        current, pointer = self.current_name(), self.root / CURRENT
        if current is None:
            return []
        switched = pointer.stat().st_mtime
        return [name for name in self.versions()
                if name > current and (created := version_created(name)) is not None and created > switched]

    def disk_bytes(self) -> int:
        """Bytes of every file under the index folder (segments, versions, tombstones, staging)."""
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())


def _holds(path: Path, data: bytes) -> bool:
    """``path`` is a file of exactly ``data`` (tombstone and query files are small)."""
    try:
        return path.stat().st_size == len(data) and path.read_bytes() == data
    except OSError:
        return False
