"""``tune``: recalibrate the live version's search parameters (IVF nprobe, HNSW efSearch) on real query vectors.

The build calibrates with stored photo vectors as queries; sketches sit farther from the photos, so their recall
at the same setting can be lower. ``tune`` measures it on query vectors the service saw (``SBIR_QUERY_SAMPLE``)
and publishes the result as a new version: the served version is never modified, the new one hard-links its
files (copies where links fail) and adds the manifest and the query sample, and ``current`` switches atomically,
so a running service swaps it in like any build. Later builds calibrate on the sample they find in the version.
A backend that tunes its own index (one with ``tune_live``: Milvus) is handed the work by :func:`tune`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from photo_index import Location
from photo_index.api import PublishOptions
from photo_index.arrays import load_array
from photo_index.atomic import write_json
from photo_index.backends.folder.calibration import load_queries
from photo_index.backends.folder.faiss_index import FaissEngine
from photo_index.backends.folder.segmented import SegmentedWriter
from photo_index.errors import IndexCorruptError
from photo_index.format import (
    CALIBRATION_QUERIES,
    CHECKSUMS,
    IDS,
    MANIFEST,
    NOT_PHOTO_DATA,
    VECTORS,
    IndexLayout,
    checksum_problems,
    file_checksum,
    read_manifest,
    utc_now,
)
from photo_index.location import FolderLocation
from photo_index.registry import tuner

from .lock import build_lock


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # a file system without hard links: a copy is as good, only bigger
        shutil.copy2(source, target)


def tune(location: Location, queries_path: str | Path, *, recall_target: float = 0.95, keep: int = 3) -> dict:
    """Recalibrate the live index at ``location``: by its backend when that tunes its own index, else as a folder."""
    backend_tune = tuner(location)
    if backend_tune is not None:
        return backend_tune(location, queries_path, recall_target=recall_target, keep=keep)
    return tune_index(location.path, queries_path, recall_target=recall_target, keep=keep)


def tune_index(index_dir: str | Path, queries_path: str | Path, *, recall_target: float = 0.95, keep: int = 3
               ) -> dict:
    """Recalibrate the live version on the query vectors in ``queries_path``; returns what was done."""
    layout = IndexLayout(index_dir)
    with build_lock(layout.root, create=False):
        writer = SegmentedWriter(FolderLocation(layout.root), PublishOptions(recall_target=recall_target))
        name = writer.store.current_name()
        if name is not None and writer.store.is_segmented(name):
            return _tune_segmented(writer, queries_path, recall_target, keep)
        folder = layout.current_dir()
        manifest = read_manifest(folder)
        # the files tune links into the new version as they are (the query sample it replaces)
        if damaged := checksum_problems(folder, manifest, ignore=NOT_PHOTO_DATA):
            raise IndexCorruptError(f"version {manifest['version']}: {'; '.join(damaged)}")
        queries = load_queries(queries_path, int(manifest["dim"]))
        section = manifest["index"]
        ids, vectors = load_array(folder / IDS), load_array(folder / VECTORS, mmap=True)
        tuned = FaissEngine().tune(folder, section, vectors, ids, queries, recall_target=recall_target)
        del vectors
        report = {"index_dir": str(layout.root), "previous": manifest["version"], "queries": len(queries),
                  "factory": section["factory"], "before": section.get("search_params", {}),
                  "after": tuned.get("search_params", {}), "calibration": tuned.get("calibration")}
        if tuned == section:
            return {**report, "status": "unchanged", "version": manifest["version"],
                    "reason": f"{section['factory']} is exact: it has no search parameter to tune"}
        name, partial = layout.start_version()
        for child in folder.iterdir():
            if child.is_file() and child.name not in (MANIFEST, CALIBRATION_QUERIES):
                _link_or_copy(child, partial / child.name)
        np.save(partial / CALIBRATION_QUERIES, queries)
        write_json(partial / MANIFEST, {
            **manifest, "version": name, "created_at": utc_now(), "previous": manifest["version"], "index": tuned,
            # the query file is new, the rest linked as they were (their recorded checksums still hold)
            **({CHECKSUMS: {**manifest[CHECKSUMS], CALIBRATION_QUERIES: file_checksum(partial / CALIBRATION_QUERIES)}}
               if CHECKSUMS in manifest else {}),
            "files": {**manifest.get("files", {}), "calibration_queries": CALIBRATION_QUERIES},
            "tuned": {"at": utc_now(), "queries": len(queries), "from": str(Path(queries_path).absolute()),
                      "recall_target": recall_target},
        })
        layout.publish(name, partial)
        layout.prune(keep)
        return {**report, "status": "tuned", "version": name}


def _tune_segmented(writer: SegmentedWriter, queries_path: str | Path, recall_target: float, keep: int) -> dict:
    """Each approximate segment recalibrated; published as a new version listing the same segments."""
    live = writer.store.current()
    queries = load_queries(queries_path, live.dim)
    base, tuned, rows = writer.tune(queries, recall_target)
    section = base.fields.get("index", {})
    report = {"index_dir": writer.where, "previous": base.name, "queries": len(queries),
              "factory": section.get("factory"), "before": section.get("search_params", {}),
              "after": tuned.fields.get("index", {}).get("search_params", {}),
              "calibration": tuned.fields.get("index", {}).get("calibration"), "segments": rows}
    if not rows:
        return {**report, "status": "unchanged", "version": base.name,
                "reason": "every segment is exact: none has a search parameter to tune"}
    writer.prune(keep)
    return {**report, "status": "tuned", "version": tuned.name}
