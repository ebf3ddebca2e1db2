"""Publishing to an index folder: a new version folder (vectors.npy, ids.npy, metadata.sqlite, the FAISS
index, manifest.json), written as ``<name>.partial``, renamed into place and made ``current`` atomically."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ...api import FROM_PREVIOUS, FROM_STAGING, PhotoRecord, PublishOptions, VersionContent, ids_problem
from ...arrays import load_array
from ...atomic import write_json
from ...errors import BuildError, IndexCorruptError
from ...format import (
    CALIBRATION_QUERIES,
    CHECKSUMS,
    IDS,
    MANIFEST,
    METADATA,
    NOT_PHOTO_DATA,
    REPORT,
    VECTORS,
    IndexLayout,
    checksum_problems,
    file_checksums,
    read_manifest,
)
from ...location import FolderLocation
from ...publishing import live_base, version_report
from ...space import naming, reserved_memmap
from .calibration import saved_queries
from .faiss_index import FaissEngine
from .records import MetadataStore, write_metadata

COPY_CHUNK = 65_536


class PreviousVersion:
    """The live version, as the base of an incremental build."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.name = folder.name
        self.manifest = read_manifest(folder)
        # Every file against its recorded checksum (the service's check before a swap): a build must not carry
        # damaged ids or records forward, nor bless them with fresh checksums when it converts them to a segment.
        if damaged := checksum_problems(folder, self.manifest, ignore=NOT_PHOTO_DATA):
            raise IndexCorruptError(f"version {self.name}: {'; '.join(damaged)}")
        store = MetadataStore(folder / METADATA)
        try:
            self.by_path: dict[str, PhotoRecord] = {record.path: record for record in store.iter_records()}
        finally:
            store.close()
        self.ids = load_array(folder / IDS)
        self.vectors = load_array(folder / VECTORS, mmap=True)
        if problem := ids_problem(self.ids):
            raise IndexCorruptError(f"version {self.name}: its {problem}")
        if len(self.ids) != len(self.by_path) or self.vectors.shape[0] != len(self.ids):
            raise BuildError(f"Version {self.name} is inconsistent (ids, vectors and metadata differ in size).")

    @property
    def fingerprint(self) -> str:
        return self.manifest["encoder"]["fingerprint"]

    def row_of(self, photo_id: int) -> int:
        return int(np.searchsorted(self.ids, photo_id))


class FolderWriter:
    """Versions as folders with vectors.npy + the FAISS index, switched by the ``current`` file."""

    def __init__(self, location: FolderLocation, options: PublishOptions) -> None:
        self.options = options
        self.layout = IndexLayout(location.path)
        self.engine = FaissEngine()
        self.where = str(self.layout.root)
        self.notes: list[str] = []

    def previous(self, rebuild: bool) -> PreviousVersion | None:
        if self.layout.current() is None:
            return None  # no index yet
        return live_base(lambda: PreviousVersion(self.layout.current_dir()), rebuild=rebuild,
                         what=f"The current version of {self.layout.root}")

    def resolve_factory(self, size: int, dim: int, requested: str | None) -> str:
        return self.engine.resolve_factory(size, dim, requested)

    def write(self, content: VersionContent, previous: PreviousVersion | None, manifest: Mapping,
              report: Mapping) -> str:
        name, partial = self.layout.start_version()
        try:
            return self._write(name, partial, content, previous, manifest, report)
        except BaseException:  # a full disk, a kill (SIGTERM), a bug: leave no half-written version behind
            shutil.rmtree(partial, ignore_errors=True)
            if self.layout.current() != name:
                shutil.rmtree(self.layout.version_dir(name), ignore_errors=True)
            raise

    def _write(self, name: str, partial: Path, content: VersionContent, previous: PreviousVersion | None,
               manifest: Mapping, report: Mapping) -> str:
        options = self.options
        dim = int(manifest["dim"])
        ids = _write_rows(partial, content, previous, dim)
        vectors = np.load(partial / VECTORS, mmap_mode="r")
        section = self.engine.build(vectors, ids, partial, factory=report["factory"], device=options.faiss_device,
                                    progress=options.progress, recall_target=options.recall_target)
        queries = _tuning_queries(previous, manifest["encoder"]["fingerprint"], dim)
        if queries is not None:  # the live version was tuned on real queries: keep calibrating on them
            section = self.engine.tune(partial, section, vectors, ids, queries, recall_target=options.recall_target)
            with naming(partial / CALIBRATION_QUERIES):
                np.save(partial / CALIBRATION_QUERIES, queries)
        del vectors
        full, counts = version_report(report, name)
        write_json(partial / REPORT, full)
        write_json(partial / MANIFEST, {
            **manifest, "version": name, "index": section, "build": counts,
            "files": {"vectors": VECTORS, "ids": IDS, "metadata": METADATA, "report": REPORT},
            CHECKSUMS: file_checksums(partial)})
        self.layout.publish(name, partial)
        return name

    def prune(self, keep: int) -> None:
        self.layout.prune(keep)


def _tuning_queries(previous: PreviousVersion | None, fingerprint: str, dim: int) -> np.ndarray | None:
    """The query sample the live version was tuned on, when its queries come from this very encoder."""
    if previous is None or previous.fingerprint != fingerprint:
        return None
    return saved_queries(previous.folder, dim)


def _write_rows(folder: Path, content: VersionContent, previous: PreviousVersion | None, dim: int) -> np.ndarray:
    """Write vectors.npy, ids.npy and metadata.sqlite of the new version; returns the ids."""
    ids = np.array([record.id for record in content.records], dtype=np.int64)
    _write_vectors(folder / VECTORS, content.sources, previous.vectors if previous else None, content.staged, dim)
    with naming(folder / IDS):
        np.save(folder / IDS, ids)
    write_metadata(folder / METADATA, content.records)
    return ids


def _write_vectors(path: Path, sources: np.ndarray, previous: np.ndarray | None, staged: np.ndarray,
                   dim: int) -> None:
    """Assemble the version's vector file in id order from the previous version's rows and staged rows."""
    if len(sources) == 0:
        np.save(path, np.zeros((0, dim), dtype=np.float32))
        return
    out = reserved_memmap(path, (len(sources), dim))
    for start in range(0, len(sources), COPY_CHUNK):
        kinds, rows = sources[start : start + COPY_CHUNK].T
        block = np.empty((len(kinds), dim), dtype=np.float32)
        for kind, table in ((FROM_PREVIOUS, previous), (FROM_STAGING, staged)):
            mask = kinds == kind
            if mask.any():
                block[mask] = table[rows[mask]]
        out[start : start + len(block)] = block
    out.flush()
    del out

