"""One build: scan → diff against the live version → embed what changed → write a new version → switch.

Stable ids: a photo (its path, or the id its manifest row gives) keeps its id across runs; new
photos get ids above every id ever handed out (``next_id`` in the manifest), so a deleted photo's id
is never reused. Unchanged photos (same path, size and mtime) are not read at all: their vectors are
copied from the previous version. Everything is written into ``versions/<name>.partial`` and only a
complete version is renamed into place and made ``current``; a failure or a kill leaves the live
version serving and the embedded vectors in ``staging/`` for the next run to resume from.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from encoder import PromptedCLIP
from encoder.precision import log as precision_log
from encoder.precision import precision_note

from .compatibility import embedding_identity, encoder_section, preprocessing_mismatch
from .embedding import Distributor, embed_files
from .engine import get_engine
from .errors import BuildError, FingerprintMismatchError, IndexNotFoundError
from .layout import (
    CALIBRATION_QUERIES,
    FORMAT,
    IDS,
    METADATA,
    REPORT,
    VECTORS,
    IndexLayout,
    read_manifest,
    utc_now,
    write_json,
)
from .metadata import MetadataStore, PhotoRecord, write_metadata
from .report import BuildReport
from .sources import Scan, read_manifest_file, scan_folder
from .staging import FileKey, Staging
from .tuning import saved_queries

COPY_CHUNK = 65_536
# File timestamps come from the kernel's coarse clock: read the scan start from it, so that a write after the
# scan never looks older than the scan.
SCAN_CLOCK = getattr(time, "CLOCK_REALTIME_COARSE", time.CLOCK_REALTIME)
FROM_PREVIOUS, FROM_STAGING = 0, 1


@dataclass
class BuildOptions:
    index_dir: Path
    gallery: Path | None = None
    manifest: Path | None = None
    index_factory: str | None = None
    recall_target: float = 0.95
    rebuild: bool = False
    batch_size: int = 256
    workers: int = 4
    device: str = "auto"
    keep: int = 3
    progress: bool = True
    checkpoint: str | None = None  # recorded in the manifest, for people
    engine: str = "faiss"  # faiss (a folder of versions) | milvus (a Milvus alias; index_dir keeps staging + lock)
    milvus_uri: str | None = None
    collection: str | None = None
    index_params: dict | None = None  # Milvus index build params (e.g. {"M": 16}); None: the type's defaults
    search_params: dict | None = None  # Milvus search params (e.g. {"ef": 64}); None: the type's defaults
    milvus_timeout_s: float = 10.0
    distributor: Distributor | None = None  # where photos are read and embedded (None: local)


class PreviousVersion:
    """The live version, as the base of an incremental build."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.name = folder.name
        self.manifest = read_manifest(folder)
        store = MetadataStore(folder / METADATA)
        try:
            self.by_path = {record.path: record for record in store.iter_records()}
        finally:
            store.close()
        self.ids = np.load(folder / IDS)
        self.vectors = np.load(folder / VECTORS, mmap_mode="r")
        if len(self.ids) != len(self.by_path) or self.vectors.shape[0] != len(self.ids):
            raise BuildError(f"Version {self.name} is inconsistent (ids, vectors and metadata differ in size).")

    @property
    def fingerprint(self) -> str:
        return self.manifest["encoder"]["fingerprint"]

    def row_of(self, photo_id: int) -> int:
        return int(np.searchsorted(self.ids, photo_id))


def _scan(options: BuildOptions) -> Scan:
    if (options.gallery is None) == (options.manifest is None):
        raise BuildError("Give exactly one of --gallery DIR or --manifest FILE.")
    if options.gallery is not None:
        return scan_folder(options.gallery, progress=options.progress, exclude=options.index_dir)
    return read_manifest_file(options.manifest)


def check_fingerprint(previous: PreviousVersion | None, encoder: PromptedCLIP, rebuild: bool, where: str) -> None:
    """Refuse an incremental build with another encoder than the live version's (vectors would not compare)."""
    if previous is None or rebuild:
        return
    fingerprint = encoder.fingerprint()
    if previous.fingerprint != fingerprint:
        old = previous.manifest["encoder"]
        raise FingerprintMismatchError(
            f"Index {where} (version {previous.name}) was built with encoder {old['fingerprint']} "
            f"({old.get('config')}, checkpoint {old.get('checkpoint')}); this run's encoder is {fingerprint} "
            f"({encoder.config.to_dict()}). Vectors of different encoders cannot share an index, so incremental "
            "mode is refused: run again with --rebuild to re-embed the whole gallery."
        )
    stale = preprocessing_mismatch(previous.manifest)
    if stale:
        raise FingerprintMismatchError(f"{stale} Incremental mode is refused for {where}.")
    if note := precision_note(previous.manifest["encoder"].get("precision"), encoder.precision, "new photos"):
        precision_log.info("index %s: %s", where, note)


class FolderTarget:
    """Versions as folders with vectors.npy + the engine's files (FAISS), switched by the ``current`` file."""

    def __init__(self, options: BuildOptions) -> None:
        self.options = options
        self.layout = IndexLayout(options.index_dir)
        self.engine = get_engine(options.engine)
        self.where = str(self.layout.root)

    def previous(self, rebuild: bool) -> PreviousVersion | None:
        layout = self.layout
        try:
            return PreviousVersion(layout.current_dir())
        except IndexNotFoundError as error:
            if layout.current() is None or rebuild:
                return None  # no index yet, or the live version is unreadable and we start over without it
            raise BuildError(f"The current version of {layout.root} cannot be read ({error}); run with --rebuild.") \
                from None
        except (BuildError, OSError, ValueError, KeyError) as error:
            if rebuild:
                return None
            raise BuildError(
                f"The current version of {layout.root} cannot be read ({error}); run with --rebuild.") from None

    def resolve_factory(self, size: int, dim: int, requested: str | None) -> str:
        return self.engine.resolve_factory(size, dim, requested)

    def write(self, plan: Plan, previous: PreviousVersion | None, staging: Staging, report: BuildReport,
              manifest: dict, requested: str | None, dim: int) -> None:
        """Write and publish a new version; ``manifest`` lacks what the target adds (version, index, build)."""
        options = self.options
        name, partial = self.layout.start_version()
        report.version = name
        ids = _write_rows(partial, plan, previous, staging, dim)
        vectors = np.load(partial / VECTORS, mmap_mode="r")
        section = self.engine.build(vectors, ids, partial, factory=requested, device=options.device,
                                    progress=options.progress, recall_target=options.recall_target)
        queries = _tuning_queries(previous, manifest["encoder"]["fingerprint"], dim)
        if queries is not None:  # the live version was tuned on real queries: keep calibrating on them
            section = self.engine.tune(partial, section, vectors, ids, queries, recall_target=options.recall_target)
            np.save(partial / CALIBRATION_QUERIES, queries)
        del vectors
        write_json(partial / REPORT, report.to_dict())
        manifest.update(version=name, index=section, build=report.counts(),
                        files={"vectors": VECTORS, "ids": IDS, "metadata": METADATA, "report": REPORT})
        write_json(partial / "manifest.json", manifest)
        self.layout.publish(name, partial)

    def prune(self, keep: int) -> None:
        self.layout.prune(keep)


def build_target(options: BuildOptions):
    """Where this build writes: a folder of versions (FAISS) or a Milvus alias."""
    if options.engine == "milvus":
        from .milvus.target import MilvusTarget

        return MilvusTarget(options)
    return FolderTarget(options)


def build_index(encoder: PromptedCLIP, options: BuildOptions) -> BuildReport:
    """Build or update the index in ``options.index_dir``; returns what was done."""
    started = time.perf_counter()
    layout = IndexLayout(options.index_dir)  # the build lock and the staging folder, for every engine
    report = BuildReport(index_dir=str(layout.root), precision=encoder.precision)
    target = build_target(options)
    with layout.build_lock():
        scanned_at_ns = time.clock_gettime_ns(SCAN_CLOCK)
        scan = _scan(options)
        report.source = scan.source
        report.skipped.extend(scan.skipped)
        previous = target.previous(options.rebuild)
        check_fingerprint(previous, encoder, options.rebuild, target.where)
        report.previous = previous.name if previous else None
        staging = Staging(layout.staging_dir, embedding_identity(encoder), encoder.embed_dim)

        reused, wanted, known = _select(scan, previous, staging, options.rebuild, report)
        embed_started = time.perf_counter()
        same = embed_files(encoder, wanted, staging, distributor=options.distributor, batch_size=options.batch_size,
                           workers=options.workers, progress=options.progress, known=known)
        reused.update((path, previous.by_path[path]) for path, _, _ in same)
        report.embed_s = time.perf_counter() - embed_started
        report.embedded = sum(key in staging.entries for key in wanted)
        plan = _plan(scan, previous, reused, staging, report)
        if report.size == 0:  # an empty folder or an unmounted volume must not replace a good index
            reasons = ", ".join(f"{reason} {count}" for reason, count in report.skipped_by_reason().items())
            staging.close()
            raise BuildError(
                f"No photos to index in {scan.source.split(':', 1)[1]}"
                + (f" ({len(report.skipped)} files skipped: {reasons})" if reasons else " (no image files found)")
                + (f"; the live version {previous.name} is unchanged." if previous else "; no index was written."))

        # An explicit factory sticks to the index until another is given ("auto": choose by size again).
        requested = options.index_factory or (previous.manifest.get("index_factory_option") if previous else None)
        requested = None if requested == "auto" else requested
        report.factory = target.resolve_factory(report.size, encoder.embed_dim, requested)
        if previous and not options.rebuild and not (report.added or report.updated or report.removed or same) \
                and report.factory == previous.manifest["index"]["factory"]:
            report.status, report.version = "unchanged", previous.name
        else:
            report.status, report.elapsed_s = "built", time.perf_counter() - started
            target.write(plan, previous, staging, report, {
                "format": FORMAT,
                "created_at": plan.now,
                "previous": report.previous,
                "size": report.size,
                "dim": encoder.embed_dim,
                "next_id": plan.next_id,
                "scanned_at_ns": scanned_at_ns,
                "encoder": encoder_section(encoder, options.checkpoint),
                "gallery": {"root": scan.gallery_root, "source": scan.source},
                "index_factory_option": requested,
            }, requested, encoder.embed_dim)
        staging.discard()
        target.prune(options.keep)
        report.elapsed_s = time.perf_counter() - started
        return report


def _tuning_queries(previous: PreviousVersion | None, fingerprint: str, dim: int) -> np.ndarray | None:
    """The query sample the live version was tuned on, when its queries come from this very encoder."""
    if previous is None or previous.fingerprint != fingerprint:
        return None
    return saved_queries(previous.folder, dim)


def _select(scan: Scan, previous: PreviousVersion | None, staging: Staging, rebuild: bool, report: BuildReport
            ) -> tuple[dict[str, PhotoRecord], list[FileKey], dict[str, str]]:
    """Photos whose previous vector is reused (same path, size, mtime, and not written since the previous
    scan), files that must be read (new, changed, or written since with their mtime set back; not already
    staged by an interrupted run), and for the latter the content hash that lets them keep their vector."""
    reused: dict[str, PhotoRecord] = {}
    wanted: list[FileKey] = []
    known: dict[str, str] = {}
    since = previous.manifest.get("scanned_at_ns") if previous else None
    for photo in scan.photos:
        old = previous.by_path.get(photo.path) if previous else None
        if old and not rebuild:
            if (old.size, old.mtime_ns) == (photo.size, photo.mtime_ns) and (
                    not isinstance(since, int) or photo.ctime_ns <= since):
                reused[photo.path] = old
                continue
            known[photo.path] = old.sha256  # touched, or written since with its mtime set back: compare the bytes
        key = (photo.path, photo.size, photo.mtime_ns)
        if key in staging.entries or key in staging.failures:
            report.resumed += key in staging.entries
        else:
            wanted.append(key)
    return reused, wanted, known


@dataclass
class Plan:
    """The new version's records (ascending id) and where each one's vector comes from."""

    records: list[PhotoRecord]
    sources: np.ndarray  # [N, 2]: (FROM_PREVIOUS | FROM_STAGING, row)
    next_id: int
    now: str


def _plan(scan: Scan, previous: PreviousVersion | None, reused: dict[str, PhotoRecord], staging: Staging,
          report: BuildReport) -> Plan:
    """Assign stable ids and count added / updated / unchanged / removed photos."""
    now = utc_now()
    explicit = {photo.photo_id for photo in scan.photos if photo.photo_id is not None}
    next_id = max([previous.manifest.get("next_id", 0) if previous else 0, *(i + 1 for i in explicit)])
    records: list[PhotoRecord] = []
    sources: list[tuple[int, int]] = []
    for photo in scan.photos:
        old = previous.by_path.get(photo.path) if previous else None
        if photo.path in reused:
            sha, source = old.sha256, (FROM_PREVIOUS, previous.row_of(old.id))
        else:
            key = (photo.path, photo.size, photo.mtime_ns)
            if key in staging.failures:
                report.skipped.append(staging.failures[key])
                continue
            row, sha = staging.entries[key]
            source = (FROM_STAGING, row)
        if photo.photo_id is not None:
            photo_id = photo.photo_id
        elif old is not None and old.id not in explicit:
            photo_id = old.id
        else:
            photo_id, next_id = next_id, next_id + 1
        changed = old is None or (old.sha256, old.category, old.metadata, old.id) != (
            sha, photo.category, photo.metadata, photo_id)
        if old is None:
            report.added += 1
        elif changed:
            report.updated += 1
        else:
            report.unchanged += 1
        records.append(PhotoRecord(
            id=photo_id, path=photo.path, category=photo.category, sha256=sha, size=photo.size,
            added_at=old.added_at if old else now, metadata=photo.metadata,
            updated_at=now if changed else old.updated_at, mtime_ns=photo.mtime_ns,
        ))
        sources.append(source)
    kept = {record.path for record in records}
    report.removed = sum(path not in kept for path in previous.by_path) if previous else 0
    report.size = len(records)
    order = sorted(range(len(records)), key=lambda i: records[i].id)
    return Plan([records[i] for i in order], np.array([sources[i] for i in order], dtype=np.int64).reshape(-1, 2),
                next_id, now)


def _write_rows(folder: Path, plan: Plan, previous: PreviousVersion | None, staging: Staging, dim: int
                ) -> np.ndarray:
    """Write vectors.npy, ids.npy and metadata.sqlite of the new version; returns the ids."""
    ids = np.array([record.id for record in plan.records], dtype=np.int64)
    _write_vectors(folder / VECTORS, plan.sources, previous.vectors if previous else None, staging.vectors(), dim)
    np.save(folder / IDS, ids)
    write_metadata(folder / METADATA, plan.records)
    return ids


def _write_vectors(path: Path, sources: np.ndarray, previous: np.ndarray | None, staged: np.ndarray,
                   dim: int) -> None:
    """Assemble the version's vector file in id order from the previous version's rows and staged rows."""
    if len(sources) == 0:
        np.save(path, np.zeros((0, dim), dtype=np.float32))
        return
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(len(sources), dim))
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
