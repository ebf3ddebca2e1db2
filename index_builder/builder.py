"""One build, in named steps: lock → scan → previous version → select → embed → plan → publish → prune.

Everything is published through a :class:`photo_index.Writer` (a new folder version made ``current``, or a
Milvus collection behind its alias); a failure or a kill leaves the live version serving and the embedded
vectors in ``staging/`` for the next run to resume from. :func:`build_index` returns its report as a value.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from encoder import PromptedCLIP
from encoder.precision import log as precision_log
from encoder.precision import precision_note
from photo_index import Location, PublishOptions, Writer, locate, open_writer
from photo_index.api import Previous
from photo_index.backends.folder import INDEX_ENTRIES
from photo_index.compatibility import embedding_identity, encoder_section, preprocessing_mismatch, weights_mismatch
from photo_index.errors import BuildError
from photo_index.format import FORMAT, STAGING
from photo_index.space import disk_full, is_disk_full

from . import known_failures
from .distributors import get_distributor
from .embedding import Distributor, Embedded, embed_files
from .errors import FingerprintMismatchError
from .lock import LOCK_FILE, build_lock
from .plan import Plan, Selection, plan, select
from .report import BuildReport
from .sources import IMAGE_EXTENSIONS, Scan, Skipped, read_manifest_file, scan_folder
from .staging import ENTRIES, FileKey, Staging, file_key

# File timestamps come from the kernel's coarse clock: read the scan start from it, so that a write after the
# scan never looks older than the scan.
SCAN_CLOCK = getattr(time, "CLOCK_REALTIME_COARSE", time.CLOCK_REALTIME)


@dataclass
class BuildOptions:
    index_dir: Path  # the build lock and staging; the index itself too unless ``location`` names another place
    gallery: Path | None = None
    manifest: Path | None = None
    index_factory: str | None = None  # FAISS factory string or Milvus index type; None: as before, else by size
    recall_target: float = 0.95
    rebuild: bool = False
    batch_size: int = 256
    workers: int = 4
    faiss_device: str = "auto"  # where FAISS builds the index (the encoder's device is the encoder's own)
    keep: int = 3
    progress: bool = True
    checkpoint: str | None = None  # recorded in the manifest, for people
    location: Location | None = None  # where the index is published (None: the folder ``index_dir``)
    index_params: dict | None = None  # Milvus index build params (e.g. {"M": 16}); None: the type's defaults
    search_params: dict | None = None  # Milvus search params (e.g. {"ef": 64}); None: the type's defaults
    distributor: Distributor | None = None  # where photos are read and embedded (None: local)

    def writer(self) -> Writer:
        location = self.location or locate("faiss", index_dir=self.index_dir)
        return open_writer(location, PublishOptions(
            rebuild=self.rebuild, recall_target=self.recall_target, faiss_device=self.faiss_device,
            progress=self.progress, index_params=self.index_params, search_params=self.search_params))


def build_index(encoder: PromptedCLIP, options: BuildOptions) -> BuildReport:
    """Build or update the index ``options`` name; returns what was done."""
    started = time.perf_counter()
    writer = options.writer()
    work_dir = Path(options.index_dir).expanduser().absolute()  # the lock and staging, whatever the backend
    if options.gallery is not None:
        check_folders(Path(options.gallery), work_dir)
    photos = [0]  # how many the scan found (for the space a full disk needed)
    created = not work_dir.exists()
    try:
        with build_lock(work_dir):
            try:
                return _build_locked(encoder, options, writer, work_dir, started, photos)
            except OSError as error:
                # A full disk at any stage: no staging stays behind to fill it further (the writer removed its
                # half-written version), the live version is untouched.
                if is_disk_full(error):
                    shutil.rmtree(work_dir / STAGING, ignore_errors=True)
                raise
    except OSError as error:
        if not is_disk_full(error):
            raise
        raise disk_full(error, work_dir, needed_bytes(photos[0], encoder.embed_dim)) from None
    except BaseException:  # refused, or interrupted (Ctrl+C): a first build that staged nothing leaves no folder
        if created:
            _remove_if_empty(work_dir)
        raise


def check_folders(gallery: Path, work_dir: Path) -> None:
    """Refuse a gallery the build would destroy or silently leave out: the index folder itself, a gallery inside
    one of the index folder's own entries (staging, segments, versions: deleted and replaced there), or an index
    folder inside the gallery that holds photos (the scan skips the index folder, so they would never be indexed)."""
    gallery, index = gallery.expanduser().resolve(), work_dir.resolve()
    if gallery == index:
        raise BuildError(f"The index folder {work_dir} is the gallery itself; put the index beside it, or in a "
                         "folder inside it (which the scan skips).")
    owned = gallery.relative_to(index).parts[0] if index in gallery.parents else None
    if owned in INDEX_ENTRIES | {LOCK_FILE, known_failures.FAILED_FILE}:
        raise BuildError(f"The gallery {gallery} is inside the index folder's {owned!r}, which a build removes and "
                         "replaces; put the gallery elsewhere.")
    if gallery in index.parents:
        photo = _a_photo_in(index)
        if photo is not None:
            raise BuildError(f"The index folder {work_dir} lies inside the gallery and holds photos ({photo}), which "
                             "a scan skips with the index folder; give an empty folder for the index.")


def _a_photo_in(folder: Path) -> str | None:
    """The path of an image file under ``folder`` (the first one found), or None; not following links."""
    for parent, _, files in os.walk(folder):
        found = next((name for name in files if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS), None)
        if found is not None:
            return os.path.join(parent, found)
    return None


def _remove_if_empty(work_dir: Path) -> None:
    """Remove the index folder a refused first build created, when it holds only the lock and a staging folder
    with nothing staged ("no index was written" leaves no index folder either)."""
    staged = work_dir / STAGING / ENTRIES
    try:  # never in the way of the error being raised (the folder may not even be one)
        if work_dir.is_dir() and {child.name for child in work_dir.iterdir()} <= {LOCK_FILE, STAGING} and (
                not staged.exists() or staged.stat().st_size == 0):
            shutil.rmtree(work_dir, ignore_errors=True)
    except OSError:
        pass


def needed_bytes(photos: int, dim: int) -> int:
    """About the space a build of ``photos`` needs: staged rows, vectors.npy and an exact index's copy of them,
    and about 1 KiB of metadata and staging entry per photo (a rough bound, for the message of a full disk)."""
    return photos * (3 * 4 * dim + 1024) + 1024 * 1024


def _build_locked(encoder: PromptedCLIP, options: BuildOptions, writer: Writer, work_dir: Path, started: float,
                  photos: list[int]) -> BuildReport:
    """The build, under the build lock (``photos`` gets the scan's count)."""
    scanned_at_ns = time.clock_gettime_ns(SCAN_CLOCK)
    scan = scan_step(options, work_dir)
    photos[0] = len(scan.photos)
    previous = writer.previous(options.rebuild)
    check_fingerprint(previous, encoder, options.rebuild, writer.where)
    # A build that fails keeps its staged rows on disk for the next run to resume, never their open files.
    with Staging(work_dir / STAGING, embedding_identity(encoder), encoder.embed_dim,
                 decoding=known_failures.decoding_identity(encoder.preprocess)) as staging:
        # An interrupted run's failures hold when they are the file's own fault (not out of memory, not a
        # permission); --rebuild reads every file again.
        staging.keep_failures(lambda skipped: not options.rebuild
                              and skipped.reason in known_failures.REMEMBERED_REASONS)
        if not options.rebuild:
            staging.recall(known_failures.load(work_dir, encoder.preprocess))
        recalled = dict(staging.failures)  # known before this run read anything (remembered, or an interrupted run's)
        selection = select(scan, previous, staging, options.rebuild)
        embed_started = time.perf_counter()
        embedded = embed_step(encoder, selection, staging, options)
        embed_s = time.perf_counter() - embed_started
        same, precision = embedded.same, embedded_precision(embedded, encoder, previous, options.rebuild)
        note_precision(previous, precision, options.rebuild, writer.where)
        reused = {**selection.reused, **{key[0]: selection.kept_record(previous, key[0], sha)
                                         for key, sha in same.items()}}
        planned = plan(scan, previous, reused, staging)
        report = BuildReport(
            index_dir=str(work_dir), source=scan.source,
            previous=previous.name if previous else None, skipped=[*scan.skipped, *planned.failed],
            size=planned.size, added=planned.added, updated=planned.updated, removed=planned.removed,
            unchanged=planned.unchanged, embedded=sum(key in staging.entries for key in selection.wanted),
            resumed=selection.resumed, embed_s=embed_s, precision=precision,
            lanes=encoder.lanes, distributor=options.distributor.name if options.distributor else "local",
            notes=held_note(planned.held))
        if planned.size == 0:  # an empty folder or an unmounted volume must not replace a good index
            raise nothing_to_index(scan, report, previous)
        requested = requested_factory(options, previous)
        report = dataclasses.replace(report, factory=writer.resolve_factory(planned.size, encoder.embed_dim,
                                                                            requested))
        if previous and not options.rebuild and not (planned.changed or same) \
                and report.factory == previous.manifest["index"]["factory"]:
            report = dataclasses.replace(report, status="unchanged", version=previous.name)
        else:
            report = dataclasses.replace(report, status="built", elapsed_s=time.perf_counter() - started)
            version = writer.write(planned.content, previous, base_manifest(
                encoder, options, scan, planned, report, scanned_at_ns, requested, precision), report.to_dict())
            report = dataclasses.replace(report, version=version)
        report = dataclasses.replace(report, notes=[*report.notes, *remember_failures(
            work_dir, encoder, scan, staging, recalled)])
        staging.discard()
        writer.prune(options.keep)
        report = dataclasses.replace(report, notes=[*report.notes, *writer.notes])  # repairs and pruning too
    return dataclasses.replace(report, elapsed_s=time.perf_counter() - started)


def held_note(held: int) -> list[str]:
    if not held:
        return []
    return [f"kept {held} photo(s) of the previous version as they were: they could not be read this time (a "
            "permission, an I/O error, a share that went away; skipped as unreadable) and are read again next build"]


def remember_failures(work_dir: Path, encoder: PromptedCLIP, scan: Scan, staging: Staging,
                      recalled: dict[FileKey, Skipped]) -> list[str]:
    """Keep the files that could not be decoded for the next build (index_builder.known_failures); the report's
    notes on it."""
    scanned = [file_key(photo) for photo in scan.photos]
    notes = []
    if again := sum(key in recalled and recalled[key].reason in known_failures.REMEMBERED_REASONS for key in scanned):
        notes.append(f"{again} file(s) that could not be decoded in an earlier run were not read again: they are "
                     "unchanged since (--rebuild reads them)")
    try:
        known_failures.save(work_dir, encoder.preprocess, staging.failures, scanned)
    except OSError as error:  # a cache: the build itself has succeeded
        notes.append(f"could not remember the files that failed ({error.strerror or error}): the next build reads "
                     "them again")
    return notes


def scan_step(options: BuildOptions, work_dir: Path) -> Scan:
    """The photos to index: a gallery folder walk (without the index folder ``work_dir``) or a manifest file."""
    if (options.gallery is None) == (options.manifest is None):
        raise BuildError("Give exactly one of --gallery DIR or --manifest FILE.")
    if options.gallery is not None:
        return scan_folder(options.gallery, progress=options.progress, exclude=work_dir)  # "~" expanded
    return read_manifest_file(options.manifest)


def check_fingerprint(previous: Previous | None, encoder: PromptedCLIP, rebuild: bool, where: str) -> None:
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
    stale = preprocessing_mismatch(previous.manifest) or weights_mismatch(previous.manifest, encoder.backbone_sample())
    if stale:
        raise FingerprintMismatchError(f"{stale} Incremental mode is refused for {where}.")


def embedded_precision(embedded: Embedded, encoder: PromptedCLIP, previous: Previous | None, rebuild: bool) -> str:
    """The precision the new version's vectors were computed in: this run's (its workers', or the encoder's), or
    the previous version's when this run computed no vector (removals, touched files: an fp32 Ray driver must not
    relabel them). Vectors staged by an interrupted run are taken to be in this run's precision."""
    if embedded.computed or previous is None or rebuild:
        return embedded.precision or encoder.precision
    return previous.manifest["encoder"].get("precision") or encoder.precision


def note_precision(previous: Previous | None, precision: str, rebuild: bool, where: str) -> None:
    """Say once when the new photos' vectors were computed in another precision than the kept ones'."""
    if previous is None or rebuild:
        return
    if note := precision_note(previous.manifest["encoder"].get("precision"), precision, "new photos"):
        precision_log.info("index %s: %s", where, note)


def embed_step(encoder: PromptedCLIP, selection: Selection, staging: Staging, options: BuildOptions) -> Embedded:
    """Embed the selected files into staging (what turned out unchanged, the precision the vectors are in)."""
    return embed_files(encoder, selection.wanted, staging, distributor=options.distributor or get_distributor("local"),
                       batch_size=options.batch_size, workers=options.workers, progress=options.progress,
                       known=selection.known)


def nothing_to_index(scan: Scan, report: BuildReport, previous: Previous | None) -> BuildError:
    reasons = ", ".join(f"{reason} {count}" for reason, count in report.skipped_by_reason().items())
    return BuildError(
        f"No photos to index in {scan.source.split(':', 1)[1]}"
        + (f" ({len(report.skipped)} files skipped: {reasons})" if reasons else " (no image files found)")
        + (f"; the live version {previous.name} is unchanged." if previous else "; no index was written."))


def requested_factory(options: BuildOptions, previous: Previous | None) -> str | None:
    """An explicit factory sticks to the index until another is given ("auto": choose by size again)."""
    requested = options.index_factory or (previous.manifest.get("index_factory_option") if previous else None)
    return None if requested == "auto" else requested


def base_manifest(encoder: PromptedCLIP, options: BuildOptions, scan: Scan, planned: Plan, report: BuildReport,
                  scanned_at_ns: int, requested: str | None, precision: str) -> dict:
    """What the build knows of the new version; the writer adds its name, index section and build counts."""
    return {
        "format": FORMAT,
        "created_at": planned.content.now,
        "previous": report.previous,
        "size": planned.size,
        "dim": encoder.embed_dim,
        "next_id": planned.content.next_id,
        "scanned_at_ns": scanned_at_ns,
        "encoder": {**encoder_section(encoder, options.checkpoint), "precision": precision},
        "gallery": {"root": scan.gallery_root, "source": scan.source},
        "index_factory_option": requested,
    }
