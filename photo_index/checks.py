"""``info`` and ``verify`` of any backend: describe a version, and check that its parts agree.

verify checks: ids strictly increasing and non-negative, as many as the manifest says; vectors finite and
unit-norm; every record with a valid sha256; then the backend's own structures (:meth:`Reader.index_problems`:
e.g. the FAISS index holds exactly those ids and an exact one exactly those vectors). An approximate index must
find most stored vectors' own id among their top 10 (:func:`self_recall`).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np

from .api import Reader, Source, StoredRows

NORM_TOLERANCE = 1e-3
CHUNK = 65_536
SHA256 = re.compile(r"^[0-9a-f]{64}$")
SELF_RECALL_MIN = 0.9  # share of sampled stored vectors an approximate index must find in their own top 10
SELF_RECALL_SAMPLE = 200


def info(source: Source, version: str | None = None) -> dict:
    """A JSON-friendly description of a version (default: the live one) and of where the index is."""
    reader = source.open_version(version)
    try:
        manifest = reader.manifest
        return {
            "index_dir": source.where,
            "current": source.current(),
            "version": reader.version,
            "created_at": manifest["created_at"],
            "size": manifest["size"],
            "dim": manifest["dim"],
            "encoder": manifest["encoder"],
            "gallery": manifest["gallery"],
            "index": manifest["index"],
            "categories": len(reader.categories()),
            "build": manifest["build"],
            "versions": source.versions(),
            "disk_bytes": reader.disk_bytes(),
        }
    finally:
        reader.close()


def verify(source: Source, version: str | None = None) -> list[str]:
    """Problems found in a version (empty list: it is consistent)."""
    reader = source.open_version(version)
    try:
        return verify_reader(reader)
    finally:
        reader.close()


def verify_reader(reader: Reader) -> list[str]:
    rows = reader.stored()
    ids, vectors = rows.ids, rows.vectors
    size, dim = int(reader.manifest["size"]), int(reader.manifest["dim"])
    problems: list[str] = []
    if ids.ndim != 1 or len(ids) != size:
        problems.append(f"the version holds {list(ids.shape)} ids; the manifest says {size}")
    elif size and (ids[0] < 0 or np.any(np.diff(ids) <= 0)):
        problems.append("the ids are not unique, strictly increasing non-negative ids")
    if vectors.shape != (len(ids), dim) or vectors.dtype != np.float32:
        problems.append(f"the vectors are {vectors.dtype}{list(vectors.shape)}; expected float32[{len(ids)}, {dim}]")
        return problems
    problems += check_vectors(vectors)
    bad_hashes = sum(not SHA256.match(sha or "") for sha in rows.sha256)
    if bad_hashes:
        problems.append(f"{bad_hashes} photos without a valid sha256")
    return problems + reader.index_problems(rows)


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


def self_recall(search: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]], rows: StoredRows) -> list[str]:
    """A sample of stored vectors must mostly find their own id in their top 10 (approximate indexes)."""
    ids = rows.ids
    if not len(ids):
        return []
    sample = np.random.default_rng(0).choice(len(ids), size=min(SELF_RECALL_SAMPLE, len(ids)), replace=False)
    _, found = search(np.asarray(rows.vectors[sample], dtype=np.float32), 10)
    recall = float(np.mean([ids[row] in hits for row, hits in zip(sample, found, strict=True)]))
    if recall < SELF_RECALL_MIN:
        return [f"only {recall:.0%} of sampled stored vectors find themselves in their top 10"]
    return []
