"""``info``, ``verify`` and the cheap trust checks of any backend: describe a version, check that its parts agree.

:func:`trust_findings` is verify's cheap part, in bounded time (part counts, dimension, fingerprint, stored
file checksums, a sample of stored vectors: finite and found first); the service runs it before every swap
and at start, verify runs it first and then the full checks below.

verify checks: ids strictly increasing and non-negative, as many as the manifest says; vectors finite and
unit-norm; every record with a valid sha256; then the backend's own structures (:meth:`Reader.index_problems`:
e.g. the FAISS index holds exactly those ids and an exact one exactly those vectors); last, every indexed photo's
file still exists (a deleted one is a 404 in the service until a build drops it). An approximate index must
find most stored vectors' own id among their top 10 (:func:`self_recall`).
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .api import Reader, Source, StoredRows
from .errors import IndexNotFoundError

NORM_TOLERANCE = 1e-3
CHUNK = 65_536
RECORD_CHUNK = 10_000  # metadata rows read at once when checking that the gallery files exist
SHA256 = re.compile(r"^[0-9a-f]{64}$")
SELF_RECALL_MIN = 0.9  # share of sampled stored vectors an approximate index must find in their own top 10
SELF_RECALL_SAMPLE = 200
TRUST_SAMPLE = 256  # stored rows the cheap checks read and search (bounded time, whatever the size)
TIE = 1e-5  # scores this close are a tie (an identical vector)
EXACT_SEARCHES = 16  # an exact index scans every vector per search: a few suffice once its copy is compared
HELD_TOLERANCE = 1e-6  # an exact index's copy of a vector against the stored one (verify's own tolerance)


def info(source: Source, version: str | None = None) -> dict:
    """A JSON-friendly description of a version (default: the live one) and of where the index is."""
    reader = source.open_version(version)
    try:
        manifest = reader.manifest
        return {
            "index_dir": source.where,
            "current": _current_or_none(source),
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


@dataclass(frozen=True)
class Finding:
    """One failed check: which (a stable name, for logs and metrics) and what was found."""

    check: str  # dimension | fingerprint | counts | checksums | finite | index_vectors | self_rank
    detail: str

    def __str__(self) -> str:
        return f"{self.check}: {self.detail}"


def trust_findings(reader: Reader, *, fingerprint: str | None = None, dim: int | None = None,
                   sample: int = TRUST_SAMPLE) -> list[Finding]:
    """verify's cheap checks, bounded in time whatever the version's size (the service runs them before it
    swaps a version in): the dimension and encoder fingerprint (when given: the service's encoder), the part
    counts against the manifest, the stored file sizes and checksums, and ``sample`` stored rows: finite, and
    each one found first by a search for its own vector."""
    findings: list[Finding] = []
    if dim is not None and reader.dim != dim:
        findings.append(Finding("dimension", f"version {reader.version} holds {reader.dim}-d vectors but the "
                                f"encoder makes {dim}-d ones; rebuild the index with this encoder"))
    if fingerprint is not None and reader.fingerprint != fingerprint:
        findings.append(Finding("fingerprint", f"version {reader.version} was built with another encoder "
                                f"(fingerprint {reader.fingerprint}, the service runs {fingerprint}); rebuild the "
                                "index with this encoder or start the service with the index's checkpoint"))
    if findings:
        return findings  # nothing else is worth reading
    parts = reader.trust_sample(sample)
    size = int(reader.manifest["size"])
    wrong = {part: count for part, count in parts.counts.items() if count != size}
    if wrong:
        held = ", ".join(f"{part} {count}" for part, count in sorted(wrong.items()))
        findings.append(Finding("counts", f"the manifest says {size} photos; the parts hold {held}"))
    if parts.without_record:
        findings.append(Finding("counts", f"{parts.without_record} of {len(parts.ids)} sampled photos have no record "
                                "in the metadata (metadata of another index?)"))
    findings += [Finding("checksums", problem) for problem in parts.file_problems]
    if findings:
        return findings
    vectors = np.asarray(parts.vectors, dtype=np.float32)
    if vectors.ndim != 2 or (len(vectors) and vectors.shape[1] != reader.dim):
        return [Finding("dimension", f"stored vectors are {list(vectors.shape)}; the manifest says {reader.dim}-d")]
    finite = np.isfinite(vectors).all(axis=1) if len(vectors) else np.ones(0, dtype=bool)
    if not finite.all():
        return [Finding("finite", f"{int((~finite).sum())} of {len(vectors)} sampled stored vectors are not "
                        "finite (NaN/inf)")]
    norms = np.linalg.norm(vectors, axis=1) if len(vectors) else np.ones(0)
    if (np.abs(norms - 1) > NORM_TOLERANCE).any():
        return [Finding("finite", f"{int((np.abs(norms - 1) > NORM_TOLERANCE).sum())} of {len(vectors)} sampled "
                        f"stored vectors are not unit-norm (tolerance {NORM_TOLERANCE})")]
    if parts.held is not None:
        differ = int((~np.isclose(parts.held, vectors, atol=HELD_TOLERANCE).all(axis=1)).sum())
        if differ:
            return [Finding("index_vectors", f"{differ} of {len(vectors)} sampled stored vectors differ from the "
                            "vector index's copy (a damaged vector file, or an index file of another index)")]
    if parts.exact and parts.held is not None:  # the exact index holds these very vectors: a few searches
        parts_ids, vectors = parts.ids[:EXACT_SEARCHES], vectors[:EXACT_SEARCHES]  # confirm it answers
    else:
        parts_ids = parts.ids
    lost = _not_found_first(reader, parts_ids, vectors)
    allowed = 0 if parts.exact else int(len(vectors) * (1 - SELF_RECALL_MIN))
    if lost > allowed:
        findings.append(Finding("self_rank", f"{lost} of {len(vectors)} sampled stored vectors do not find their "
                                "own photo first (the vector index does not hold these vectors)"))
    return findings


def _not_found_first(reader: Reader, ids: np.ndarray, vectors: np.ndarray) -> int:
    """How many stored vectors do not find their own id at rank 1. A tie counts as found: duplicate photos have
    the same vector, and more than 10 of them may push one's own id out of the top 10 at the same score."""
    if not len(vectors):
        return 0
    k = 10
    scores, found = reader.search(np.ascontiguousarray(vectors), k)
    lost = 0
    for own, row_scores, row_ids in zip(ids, scores, found, strict=True):
        at = np.flatnonzero(row_ids == own)
        if len(at):
            lost += bool(row_scores[at[0]] < row_scores[0] - TIE)
        else:  # found only if every hit ties with the first (its own id is among the tied rest)
            lost += bool(row_scores[k - 1] < row_scores[0] - TIE)
    return lost


def verify_reader(reader: Reader) -> list[str]:
    """The cheap checks, then every row (the full checks name each disagreement in detail)."""
    return [str(finding) for finding in trust_findings(reader)] + _full_checks(reader)


def _full_checks(reader: Reader) -> list[str]:
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
    gone = missing_gallery_files(reader, ids) if ids.ndim == 1 else []
    return problems + reader.index_problems(rows) + gone


def _current_or_none(source: Source) -> str | None:
    """The published version, or None when the pointer is damaged or missing (info on a named version still runs)."""
    try:
        return source.current()
    except IndexNotFoundError:
        return None


def reindex_command(manifest: dict) -> str:
    """The build command that brings a version back in line with its gallery, with the encoder it was embedded by
    (another encoder's build is refused): paths are the building host's."""
    kind, _, where = str(manifest.get("gallery", {}).get("source", "")).partition(":")
    flag = {"folder": "--gallery", "manifest": "--manifest"}.get(kind)
    words = ["python", "-m", "index_builder", "build", *([flag, where] if flag and where else [])]
    encoder = manifest.get("encoder") if isinstance(manifest.get("encoder"), dict) else {}
    config = encoder.get("config") if isinstance(encoder.get("config"), dict) else {}
    if encoder.get("checkpoint"):
        words += ["--checkpoint", str(encoder["checkpoint"])]
    else:  # the frozen baseline: its backbone and weights are the whole encoder (and no SBIR_CHECKPOINT applies)
        words += [item for name in ("backbone", "pretrained", "activation") if config.get(name)
                  for item in (f"--{name}", str(config[name]))] + ["--checkpoint", ""]
    return shlex.join(words)


def missing_gallery_files(reader: Reader, ids: np.ndarray) -> list[str]:
    """Indexed photos whose file is gone (deleted or moved since the build): the service answers 404 for them
    until a build drops them from the index."""
    missing, example = 0, None
    for start in range(0, len(ids), RECORD_CHUNK):
        for record in reader.records(ids[start : start + RECORD_CHUNK]):
            if record is not None and not os.path.isfile(record.path):
                missing += 1
                example = example or record.path
    if not missing:
        return []
    return [f"{missing} indexed photo file(s) are gone from the gallery (e.g. {example}); the service answers 404 "
            f"for them: re-index with `{reindex_command(reader.manifest)}` and the same --out (or --engine milvus "
            "and its collection) to drop them"]


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
