"""``info`` and ``verify``: describe a version, and check that its parts agree.

verify checks: ids strictly increasing and non-negative; vectors finite and unit-norm; metadata
rows = ids; the FAISS index holds exactly those ids; an exact index stores exactly those vectors,
an approximate one finds most stored vectors' own id among their top 10.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .errors import IndexNotFoundError
from .layout import IndexLayout, read_manifest
from .reader import IndexReader

NORM_TOLERANCE = 1e-3
CHUNK = 65_536
SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _folder(index_dir: str | Path, version: str | None) -> Path:
    layout = IndexLayout(index_dir)
    if version is None:
        return layout.current_dir()
    folder = layout.version_dir(version)
    if not folder.is_dir():
        raise IndexNotFoundError(f"{index_dir} has no version {version!r} (versions: {layout.versions()}).")
    return folder


def info(index_dir: str | Path, version: str | None = None) -> dict:
    """A JSON-friendly description of a version (default: the current one) and of the index folder."""
    layout = IndexLayout(index_dir)
    folder = _folder(index_dir, version)
    manifest = read_manifest(folder)
    reader = IndexReader(folder)
    try:
        categories = reader.categories()
    finally:
        reader.close()
    return {
        "index_dir": str(layout.root),
        "current": layout.current(),
        "version": manifest["version"],
        "created_at": manifest["created_at"],
        "size": manifest["size"],
        "dim": manifest["dim"],
        "encoder": manifest["encoder"],
        "gallery": manifest["gallery"],
        "index": manifest["index"],
        "categories": len(categories),
        "build": manifest["build"],
        "versions": layout.versions(),
        "disk_bytes": sum(p.stat().st_size for p in folder.iterdir() if p.is_file()),
    }


def verify(index_dir: str | Path, version: str | None = None) -> list[str]:
    """Problems found in a version (empty list: it is consistent)."""
    folder = _folder(index_dir, version)
    manifest = read_manifest(folder)
    reader = IndexReader(folder)
    problems: list[str] = []
    try:
        ids, vectors = reader.vectors()
        size, dim = int(manifest["size"]), int(manifest["dim"])
        if ids.ndim != 1 or len(ids) != size:
            problems.append(f"ids.npy holds {ids.shape} ids; the manifest says {size}")
        elif size and (ids[0] < 0 or np.any(np.diff(ids) <= 0)):
            problems.append("ids.npy is not strictly increasing non-negative ids")
        if vectors.shape != (size, dim) or vectors.dtype != np.float32:
            problems.append(f"vectors.npy is {vectors.dtype}{list(vectors.shape)}; expected float32[{size}, {dim}]")
            return problems
        problems += check_vectors(vectors)
        meta = reader.metadata_store
        problems += [f"metadata: {line}" for line in meta.integrity_errors()]
        meta_ids = np.array(meta.ids(), dtype=np.int64)
        if not np.array_equal(meta_ids, ids):
            problems.append(f"metadata has {len(meta_ids)} photos; {len(np.setdiff1d(meta_ids, ids))} not in the "
                            f"vectors, {len(np.setdiff1d(ids, meta_ids))} of the vectors without metadata")
        bad_hashes = sum(not SHA256.match(record.sha256 or "") for record in meta.iter_records())
        if bad_hashes:
            problems.append(f"metadata: {bad_hashes} photos without a valid sha256")
        index = reader.vector_index
        if index.size != size:
            problems.append(f"the vector index holds {index.size} vectors; the manifest says {size}")
        index_ids = index.ids()
        if not np.array_equal(index_ids, ids):
            problems.append(f"the vector index's ids differ from ids.npy ({len(np.setdiff1d(index_ids, ids))} extra, "
                            f"{len(np.setdiff1d(ids, index_ids))} missing)")
        elif size:
            problems += index.self_check(ids, vectors)
    finally:
        reader.close()
    return problems


def check_vectors(vectors: np.ndarray) -> list[str]:
    not_finite = not_unit = 0
    for start in range(0, len(vectors), CHUNK):
        block = np.asarray(vectors[start : start + CHUNK])
        finite = np.isfinite(block).all(axis=1)
        not_finite += int((~finite).sum())
        norms = np.linalg.norm(np.where(finite[:, None], block, 0), axis=1)
        not_unit += int((finite & (np.abs(norms - 1) > NORM_TOLERANCE)).sum())
    problems = []
    if not_finite:
        problems.append(f"{not_finite} stored vectors are not finite (NaN/inf)")
    if not_unit:
        problems.append(f"{not_unit} stored vectors are not unit-norm (tolerance {NORM_TOLERANCE})")
    return problems
