"""What a build does with each scanned photo: which vectors it reuses, which files it embeds, and the new
version's records with stable ids.

Stable ids: a photo (its path, or the id its manifest row gives) keeps its id across runs; new photos get ids
above every id ever handed out (``next_id`` in the manifest), so a deleted photo's id is never reused.
Unchanged photos (same path, size and mtime, not written since the previous scan) are not read at all. A file whose
content is that of a photo whose path is gone or was read again (a moved or renamed file, a renamed folder, two files
swapped, a renumbered series) is read and hashed, not embedded: it takes that photo's vector (and its details), under
its own path's id, or a new one.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from photo_index.api import FROM_PREVIOUS, FROM_STAGING, MAX_PHOTO_ID, PhotoRecord, Previous, VersionContent
from photo_index.format import utc_now

from .photo_header import PhotoHeader, read_header
from .sources import UNREADABLE, Scan, Skipped
from .staging import FileKey, Staging, file_key

MAX_CANDIDATES = 8  # moved photos' hashes a read file is compared with (those of its byte size; more: embedded)


@dataclass(frozen=True)
class Selection:
    """Photos whose previous vector is reused, files that must be read (with the content hash that lets
    them keep their vector), and how many an interrupted run had already staged."""

    reused: dict[str, PhotoRecord]
    wanted: list[FileKey]
    known: dict[str, tuple[str, ...]]  # path -> hashes of indexed contents it may hold (its own, a moved one's)
    resumed: int
    # Content hash -> a previous photo not kept as it was (its path gone, or read again): a wanted file of that
    # content was moved, renamed or swapped, and takes that photo's vector instead of being embedded again.
    by_content: dict[str, PhotoRecord] = field(default_factory=dict)

    def kept_record(self, previous: Previous, path: str, sha256: str) -> PhotoRecord:
        """The previous photo whose vector a read file of content ``sha256`` keeps: its own path's when the content
        is that one's, else the moved photo's."""
        old = previous.by_path.get(path)
        return old if old is not None and old.sha256 == sha256 else self.by_content[sha256]


def select(scan: Scan, previous: Previous | None, staging: Staging, rebuild: bool) -> Selection:
    """Reused: same path, size, mtime, and not written since the previous scan. Wanted: new, changed, or written
    since with their mtime set back, and not already staged by an interrupted run."""
    reused: dict[str, PhotoRecord] = {}
    wanted: list[FileKey] = []
    read_again: dict[str, PhotoRecord] = {}  # listed paths read again (touched or changed) -> their previous photo
    resumed = 0
    since = previous.manifest.get("scanned_at_ns") if previous else None
    for photo in scan.photos:
        old = previous.by_path.get(photo.path) if previous else None
        if old and not rebuild:
            if (old.size, old.mtime_ns) == (photo.size, photo.mtime_ns) and (
                    not isinstance(since, int) or photo.ctime_ns <= since):
                reused[photo.path] = old
                continue
            read_again[photo.path] = old  # touched, or written since with its mtime set back: compare the bytes
        key = file_key(photo)
        if key in staging.entries or key in staging.failures:
            resumed += key in staging.entries
        else:
            wanted.append(key)
    by_content = {} if previous is None or rebuild else movable_photos(scan, previous, read_again)
    by_size: dict[int, list[str]] = {}
    # Gone photos first: a photo read again mostly still holds its own content (touched, chmod -R), which reaches
    # its own path anyway, and must not crowd a moved file's real source out of its few candidates.
    for sha, record in sorted(by_content.items(), key=lambda item: item[1].path in read_again):
        by_size.setdefault(record.size, []).append(sha)
    known = {}
    for path, size, *_ in wanted:
        own = [read_again[path].sha256] if path in read_again else []
        if hashes := tuple(dict.fromkeys([*own, *by_size.get(size, ())[:MAX_CANDIDATES]])):
            known[path] = hashes
    return Selection(reused, wanted, known, resumed, by_content)


def movable_photos(scan: Scan, previous: Previous, read_again: dict[str, PhotoRecord]) -> dict[str, PhotoRecord]:
    """Previous photos whose vector a moved file may take, by content hash: those whose path the scan no longer lists
    (moved, renamed) and those read again (their content may have moved to another path: swaps, renumbering)."""
    listed = {photo.path for photo in scan.photos}
    by_content: dict[str, PhotoRecord] = {}
    for path, record in previous.by_path.items():
        if record.sha256 and (path not in listed or path in read_again):
            by_content.setdefault(record.sha256, record)
    return by_content


@dataclass(frozen=True)
class Plan:
    """The new version's rows, the photo counts, and the files that could not be embedded."""

    content: VersionContent
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    failed: list[Skipped] = field(default_factory=list)
    filled: int = 0  # unchanged photos whose details (size in pixels, capture time) an older version lacked
    held: int = 0  # previous photos kept as they were because they could not be read this time (in ``unchanged``)

    @property
    def size(self) -> int:
        return len(self.content.records)

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.removed or self.filled)


def details(old: PhotoRecord | None, path: str, reused: bool, header: Callable[[str], PhotoHeader]) -> PhotoHeader:
    """The photo's width, height and capture time: the previous record's for reused content, else (new or changed
    content, or a record written before details existed) read from the file's header."""
    if reused and old is not None and old.width is not None:
        return PhotoHeader(old.width, old.height, old.taken_at)
    return header(path)


def plan(scan: Scan, previous: Previous | None, reused: dict[str, PhotoRecord], staging: Staging,
         header: Callable[[str], PhotoHeader] = read_header) -> Plan:
    """Assign stable ids, record each photo's details, and count added / updated / unchanged / removed photos."""
    now = utc_now()
    explicit = {photo.photo_id for photo in scan.photos if photo.photo_id is not None}
    # Above every id the manifest says was handed out, every live id (a manifest's next_id set back by hand or
    # damage must not hand out a live photo's id again) and every id the scan names.
    live = (record.id + 1 for record in previous.by_path.values()) if previous else ()
    next_id = max([int(previous.manifest.get("next_id", 0)) if previous else 0, *live, *(i + 1 for i in explicit)])
    records: list[PhotoRecord] = []
    sources: list[tuple[int, int]] = []
    failed: list[Skipped] = []
    unread: list[PhotoRecord] = []  # previous photos listed but not read this time (an I/O error, a permission)
    added = updated = unchanged = filled = 0
    previous_ids = {record.id for record in previous.by_path.values()} if previous else set()
    for photo in scan.photos:
        old = previous.by_path.get(photo.path) if previous else None
        reused_from = reused.get(photo.path)  # its own previous record, or a moved photo's of the same content
        if reused_from is not None:
            sha, source = reused_from.sha256, (FROM_PREVIOUS, previous.row_of(reused_from.id))
        else:
            key = file_key(photo)
            if key in staging.failures:
                failed.append(staging.failures[key])
                if old is not None and staging.failures[key].reason == UNREADABLE:
                    unread.append(old)
                continue
            row, sha = staging.entries[key]
            source = (FROM_STAGING, row)
        if photo.photo_id is not None:
            photo_id = photo.photo_id
        elif old is not None and old.id not in explicit:
            photo_id = old.id
        elif next_id > MAX_PHOTO_ID:  # a manifest gave ids up to the limit: none is left to hand out
            failed.append(Skipped(photo.path, "no-id-left", f"every id up to {MAX_PHOTO_ID} is taken or was handed "
                                  "out before; give this photo an id in the manifest"))
            continue
        else:
            photo_id, next_id = next_id, next_id + 1
        changed = old is None or (old.sha256, old.category, old.metadata, old.id) != (
            sha, photo.category, photo.metadata, photo_id)
        if old is None:  # a new path: a photo a manifest moved keeps its id, and is an update
            added += photo_id not in previous_ids
            updated += photo_id in previous_ids
        elif changed:
            updated += 1
        else:
            unchanged += 1
        shown = details(reused_from or old, photo.path, reused_from is not None, header)
        filled += reused_from is old is not None and old.width is None and shown.width is not None
        records.append(PhotoRecord(
            id=photo_id, path=photo.path, category=photo.category, sha256=sha, size=photo.size,
            added_at=old.added_at if old else now, metadata=photo.metadata,
            updated_at=now if changed else old.updated_at, mtime_ns=photo.mtime_ns,
            width=shown.width, height=shown.height, taken_at=shown.taken_at,
        ))
        sources.append(source)
    kept = {record.path for record in records}
    # Not the photos' content but their file or folder could not be read: kept as they were until read again.
    held = [old for old in [*unread, *_unreadable_this_time(scan, previous, kept)] if old.id not in explicit]
    records += held
    sources += [(FROM_PREVIOUS, previous.row_of(old.id)) for old in held]
    kept |= {old.path for old in held}
    live_ids = {record.id for record in records}
    removed = sum(path not in kept and old.id not in live_ids for path, old in previous.by_path.items()) \
        if previous else 0
    order = sorted(range(len(records)), key=lambda i: records[i].id)
    content = VersionContent([records[i] for i in order],
                             np.array([sources[i] for i in order], dtype=np.int64).reshape(-1, 2),
                             staging.vectors(), next_id, now)
    return Plan(content, added, updated, unchanged + len(held), removed, failed, filled, len(held))


def _unreadable_this_time(scan: Scan, previous: Previous | None, kept: set[str]) -> list[PhotoRecord]:
    """Previous photos the scan did not list because it could not read them, or a folder above them (a permission,
    an I/O error, a share that went away): they are not deleted photos, and keep their ids and vectors."""
    unreadable = {item.path for item in scan.skipped if item.reason == UNREADABLE}
    if not previous or not unreadable:
        return []
    held = []
    for old in previous.by_path.values():
        if old.path in kept:
            continue
        path = old.path
        while path not in unreadable and os.path.dirname(path) != path:
            path = os.path.dirname(path)
        if path in unreadable:
            held.append(old)
    return held
