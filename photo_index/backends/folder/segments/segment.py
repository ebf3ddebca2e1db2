"""One immutable segment: a folder of vectors, ids, metadata rows and the segment's own FAISS index.

```
segments/<name>/
  vectors.npy      float32 [n, D], rows in ascending id order
  ids.npy          int64 [n], strictly ascending
  metadata.sqlite  the photos' rows (the records schema of ``records.py``)
  index.faiss      exact (IDMap2,Flat) up to FLAT_MAX vectors, else the IVF factory with a calibrated nprobe
  segment.json     written last: size, dim, the index section, and each file's bytes + sha256
```
A segment is written into ``segments/.tmp-<name>-<random>/`` and renamed into place once complete (files and
folder fsynced first), so a folder without the ``.tmp-`` prefix is always whole, and its files never change.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ....api import PhotoRecord, ids_problem
from ....arrays import load_array
from ....atomic import fsync_dir
from ....errors import BuildError, CountsMismatchError, IndexCorruptError
from ....format import IDS, METADATA, VECTORS, malformed_index_section, utc_now
from ....space import naming, reserved_memmap
from ..faiss_index import EXACT_FACTORIES, INDEX_FILE, FaissEngine, FaissIndex
from ..records import MetadataStore, write_metadata

SEGMENT_FORMAT = "sbir-segment/1"
SEGMENT_FILE = "segment.json"
TMP_PREFIX = ".tmp-"
DATA_FILES = (VECTORS, IDS, METADATA, INDEX_FILE)
COPY_CHUNK = 65_536


def new_segment_name() -> str:
    """Sortable by creation time, unique across processes."""
    return datetime.now(UTC).strftime("s%Y%m%dT%H%M%S%fZ") + "-" + secrets.token_hex(3)


def file_sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


@dataclass(frozen=True)
class SegmentInfo:
    """What ``segment.json`` says about a segment."""

    name: str
    size: int
    dim: int
    index: dict  # the engine's manifest section: factory, search_params, calibration, timings
    files: dict  # file name -> {"bytes": int, "sha256": str}
    created_at: str = ""

    @property
    def search_params(self) -> dict:
        return dict(self.index.get("search_params", {}))

    @property
    def bytes(self) -> int:
        return sum(int(entry["bytes"]) for entry in self.files.values())

    def to_json(self) -> dict:
        return {"format": SEGMENT_FORMAT, "name": self.name, "created_at": self.created_at, "size": self.size,
                "dim": self.dim, "index": self.index, "files": self.files}


def read_segment_info(folder: Path) -> SegmentInfo:
    path = folder / SEGMENT_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != SEGMENT_FORMAT:
            raise ValueError(f"format is {data.get('format')!r}, not {SEGMENT_FORMAT}")
        wrong = malformed_fields(data)
        if wrong:  # checked here, so that no reader meets e.g. a number where a file's entry should be
            raise IndexCorruptError(f"{path} is damaged: missing or malformed {', '.join(wrong)}.")
        return SegmentInfo(name=data["name"], size=data["size"], dim=data["dim"], index=dict(data["index"]),
                           files=dict(data["files"]), created_at=data["created_at"])
    except FileNotFoundError as error:
        raise IndexCorruptError(f"Segment {folder} has no {SEGMENT_FILE}.") from error
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise IndexCorruptError(f"{path} is unreadable: {error}") from error


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def malformed_fields(data: dict) -> list[str]:
    """The fields of a segment.json's ``data`` that are missing or of the wrong type (readers rely on them)."""
    wrong = [key for key in ("name", "created_at") if not isinstance(data.get(key), str)]
    wrong += [key for key in ("size", "dim") if not _is_count(data.get(key))]
    index = data.get("index")
    wrong += malformed_index_section(index) if isinstance(index, dict) else ["index"]
    files = data.get("files")
    if not isinstance(files, dict):
        wrong.append("files")
    else:
        wrong += [f"files.{name}" for name, entry in files.items()
                  if name != Path(name).name or not isinstance(entry, dict) or not _is_count(entry.get("bytes"))
                  or not isinstance(entry.get("sha256"), str)]
    return wrong


def check_rows(ids: np.ndarray, vectors: np.ndarray) -> None:
    """Refuse rows a segment cannot hold: ids strictly ascending photo ids (ids_problem), one per vector."""
    if ids.ndim != 1 or vectors.ndim != 2 or len(ids) != len(vectors):
        raise BuildError(f"A segment needs one id per vector; got ids {ids.shape}, vectors {vectors.shape}.")
    if problem := ids_problem(ids):
        raise BuildError(f"A segment's {problem}.")


def _copy_vectors(path: Path, vectors: np.ndarray) -> np.ndarray:
    """Write ``vectors`` (an array, memmap, or anything sliceable in row blocks) as a float32 .npy; its memmap."""
    size, dim = vectors.shape
    if size == 0:
        with naming(path):
            np.save(path, np.zeros((0, dim), dtype=np.float32))
        return np.load(path)
    out = reserved_memmap(path, (size, dim))  # a full disk: ENOSPC here, never a SIGBUS in the copy below
    for start in range(0, size, COPY_CHUNK):
        out[start : start + COPY_CHUNK] = np.asarray(vectors[start : start + COPY_CHUNK], dtype=np.float32)
    out.flush()
    del out
    return np.load(path, mmap_mode="r")


def _seal(tmp: Path, segments_dir: Path, info: SegmentInfo) -> Path:
    """Write segment.json, fsync everything, and rename the temp folder into place."""
    with naming(tmp / SEGMENT_FILE):
        (tmp / SEGMENT_FILE).write_text(json.dumps(info.to_json(), indent=2, sort_keys=True) + "\n",
                                        encoding="utf-8")
    for child in tmp.iterdir():
        with open(child, "rb") as handle:
            os.fsync(handle.fileno())
    fsync_dir(tmp)
    final = segments_dir / info.name
    os.replace(tmp, final)
    fsync_dir(segments_dir)
    return final


def _files_of(folder: Path) -> dict:
    return {name: {"bytes": (folder / name).stat().st_size, "sha256": file_sha256(folder / name)}
            for name in DATA_FILES}


def _temp_folder(segments_dir: Path, name: str) -> Path:
    segments_dir.mkdir(parents=True, exist_ok=True)
    tmp = segments_dir / f"{TMP_PREFIX}{name}-{secrets.token_hex(4)}"
    tmp.mkdir()
    return tmp


def write_segment(segments_dir: Path, vectors: np.ndarray, ids: np.ndarray, records: Iterable[PhotoRecord], *,
                  factory: str | None = None, device: str = "cpu", recall_target: float = 0.95,
                  progress: bool = False) -> SegmentInfo:
    """Write one segment of ``vectors`` [n, D] under ``ids`` (strictly ascending) with their metadata ``records``.

    ``factory``: a FAISS factory string, or None for the choice by size (exact up to FLAT_MAX, else IVF with
    ``nprobe`` calibrated to ``recall_target``). Nothing is visible under ``segments_dir/<name>`` before the
    segment is complete; a failure removes the temp folder."""
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    check_rows(ids, vectors)
    name = new_segment_name()
    tmp = _temp_folder(segments_dir, name)
    try:
        stored = _copy_vectors(tmp / VECTORS, vectors)
        with naming(tmp / IDS):
            np.save(tmp / IDS, ids)
        rows = write_metadata(tmp / METADATA, records)
        if rows != len(ids):
            raise BuildError(f"A segment of {len(ids)} vectors got {rows} metadata rows.")
        section = FaissEngine().build(stored, ids, tmp, factory=factory, device=device, progress=progress,
                                      recall_target=recall_target)
        del stored
        info = SegmentInfo(name=name, size=len(ids), dim=int(vectors.shape[1]), index=section, files=_files_of(tmp),
                           created_at=utc_now())
        _seal(tmp, segments_dir, info)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return info


def adopt_folder(segments_dir: Path, folder: Path, section: dict) -> SegmentInfo:
    """Make a one-copy version folder (vectors.npy, ids.npy, metadata.sqlite, index.faiss; the format before
    segments) a segment without copying: its files are hard-linked (copied where links fail) into a new segment,
    with ``section`` (the old manifest's index section) as the segment's index section."""
    name = new_segment_name()
    tmp = _temp_folder(segments_dir, name)
    try:
        for file in DATA_FILES:
            try:
                os.link(folder / file, tmp / file)
            except OSError:
                shutil.copy2(folder / file, tmp / file)
        ids = np.load(tmp / IDS)
        dim = int(np.load(tmp / VECTORS, mmap_mode="r").shape[1])
        info = SegmentInfo(name=name, size=len(ids), dim=dim, index={**section, "file": INDEX_FILE},
                           files=_files_of(tmp), created_at=utc_now())
        _seal(tmp, segments_dir, info)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return info


def checksum_problems(folder: Path, info: SegmentInfo, hash_max_bytes: int | None = None) -> list[str]:
    """Files of a segment whose size or sha256 differ from segment.json. Every byte is read, except that files
    larger than ``hash_max_bytes`` (when given: the service's cheap checks before a swap) have their size checked
    only."""
    problems = []
    for file, expected in info.files.items():
        path = folder / file
        if not path.is_file():
            problems.append(f"segment {info.name}: {file} is missing")
            continue
        size = path.stat().st_size
        hashed = hash_max_bytes is None or size <= hash_max_bytes
        if size != int(expected["bytes"]) or hashed and file_sha256(path) != expected["sha256"]:
            problems.append(f"segment {info.name}: {file} differs from its checksum")
    return problems


class Segment:
    """An opened segment: ids, memory-mapped vectors, metadata, and its FAISS index, read on first use
    (read-only, thread-safe). ``search_params`` overrides the segment's calibrated ones (a version may carry
    re-tuned values)."""

    def __init__(self, folder: Path, *, device: str = "cpu", search_params: dict | None = None) -> None:
        self.folder = folder
        self.info = read_segment_info(folder)
        self.name = self.info.name
        try:
            self.ids = load_array(folder / IDS)
            self.vectors = load_array(folder / VECTORS, mmap=True)
        except IndexCorruptError as error:
            raise IndexCorruptError(f"Segment {folder} has unreadable vectors or ids: {error}") from error
        if problem := ids_problem(self.ids):  # a wrong id answers searches with another photo
            raise IndexCorruptError(f"Segment {folder} is damaged: its {problem}.")
        if len(self.ids) != self.info.size or self.vectors.shape != (self.info.size, self.info.dim):
            raise CountsMismatchError(f"Segment {folder}: ids {self.ids.shape} and vectors {self.vectors.shape} do not "
                                    f"match segment.json ({self.info.size} x {self.info.dim}).")
        self.metadata = MetadataStore(folder / METADATA)
        section = self.info.index
        if search_params:
            section = {**section, "search_params": {**section.get("search_params", {}), **search_params}}
        self._section, self._device = section, device
        self._index: FaissIndex | None = None
        self._lock = threading.Lock()
        # An approximate segment's index is read on first use but its file is opened now: an open file outlives
        # its name, so a version pruned after this open (`compact`, `--keep`) still searches.
        self._index_file = None if self.exact else _open_or_none(FaissEngine.index_path(folder, section))

    @property
    def search_params(self) -> dict:
        """The search parameters this segment is searched with (calibrated, or the version's override)."""
        return dict(self._section.get("search_params", {}))

    @property
    def exact(self) -> bool:
        """Whether the segment's index is exact (its stored vectors are then all a search needs)."""
        return self.info.index.get("factory") in EXACT_FACTORIES

    @property
    def index(self) -> FaissIndex:
        with self._lock:
            if self._index is None:
                self._index = FaissEngine().open(self.folder, self._section, self.vectors, self.ids,
                                                 device=self._device, source=self._index_file)
                self._close_index_file()
            return self._index

    def _close_index_file(self) -> None:
        if self._index_file is not None:
            self._index_file.close()
            self._index_file = None

    @contextlib.contextmanager
    def index_for_check(self) -> Iterator[FaissIndex]:
        """The segment's index for a one-off check: an approximate segment's own (searches open it anyway); an
        exact segment's opened for the block only, unless open already (searches read an exact segment's live
        rows from memory, never its index: keeping it open would hold a second copy of its vectors)."""
        with self._lock:
            index = self._index
        if index is not None or not self.exact:
            yield index or self.index
            return
        index = FaissEngine().open(self.folder, self._section, self.vectors, self.ids, device="cpu")
        try:
            yield index
        finally:
            index.close()

    def rows_of(self, ids: np.ndarray) -> np.ndarray:
        """Row of each of ``ids`` in this segment, -1 where the segment does not hold it."""
        rows = np.searchsorted(self.ids, ids)
        inside = rows < len(self.ids)
        inside[inside] = self.ids[rows[inside]] == ids[inside]
        return np.where(inside, rows, -1)

    def close(self) -> None:
        with self._lock:
            if self._index is not None:
                self._index.close()
            self._close_index_file()
        self.metadata.close()


def _open_or_none(path: Path) -> BinaryIO | None:
    """``path`` opened for reading; None when it cannot be (the first search then names the problem)."""
    try:
        return open(path, "rb")  # noqa: SIM115 - closed by Segment once read, or by Segment.close
    except OSError:
        return None
