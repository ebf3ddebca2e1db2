"""Where photos come from: a folder tree or a manifest (CSV/JSONL) → photos to index + what was skipped.

Nothing here reads image bytes: the scan only lists and ``stat``s, so an incremental run over an
unchanged gallery of millions of files stays cheap. Anything that cannot be a photo (zero bytes,
unsupported type, broken symlinks, symlink loops, unreadable folders, bad manifest rows) becomes a
:class:`Skipped` entry with a reason instead of an exception.
"""

from __future__ import annotations

import collections
import contextlib
import csv
import errno
import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from photo_index.api import MAX_PHOTO_ID
from photo_index.errors import BuildError

# The file types Pillow decodes here (AVIF included, Pillow >= 11.3; HEIC/HEIF through pillow-heif), as named by
# cameras, phones and editors; app/uploads.py files an uploaded photo under one of these.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff",
                              ".avif", ".heic", ".heif", ".hif"})
MANIFEST_FIELDS = ("path", "id", "category")
MAX_ID = MAX_PHOTO_ID  # 2^52 - 1 (photo_index.api says why)
# A manifest row's other fields, as JSON with non-ASCII escaped, and its category in UTF-8: what every backend holds
# (a Milvus text field keeps 65,535 bytes, its category field 1,024), and far more than captions or tags need. Every
# search answer carries its photos' metadata: a megabyte cell would ride along with each result.
MAX_METADATA_CHARS = 60_000
MAX_CSV_FIELD_CHARS = 16 * 2**20  # a cell past this (a quote left open for megabytes) stops the manifest
MAX_CATEGORY_BYTES = 1_024


@dataclass
class SourcePhoto:
    """One photo to index, as listed by the scan (content not read yet)."""

    path: str  # absolute
    category: str | None
    size: int
    mtime_ns: int
    photo_id: int | None = None  # given by a manifest, else assigned by the builder
    metadata: dict = field(default_factory=dict)
    ctime_ns: int = 0  # inode change time: moves on any write, even when mtime is set back


# Why a file or folder that exists was not read: a permission, an I/O error (not its content). Photos of a previous
# version skipped for it are kept as they were (plan._unreadable_this_time), not taken for deleted.
UNREADABLE = "unreadable"


@dataclass
class Skipped:
    """A file (or manifest row) that was not indexed, and why."""

    path: str
    reason: str  # short key: zero-byte, corrupt, truncated, not-an-image, unreadable, symlink-loop, ...
    detail: str = ""


@dataclass
class Scan:
    photos: list[SourcePhoto]
    skipped: list[Skipped]
    gallery_root: str | None  # the folder for folder scans; None for manifests
    source: str  # "folder:<root>" or "manifest:<file>"


def _stat_problem(path: str, error: OSError) -> Skipped:
    if error.errno == errno.ELOOP:
        return Skipped(path, "symlink-loop", "too many levels of symbolic links")
    if isinstance(error, FileNotFoundError):
        if os.path.islink(path):
            return Skipped(path, "broken-symlink", f"points to missing {os.readlink(path)}")
        return Skipped(path, "missing", "no such file")
    return Skipped(path, UNREADABLE, f"{type(error).__name__}: {error.strerror or error}")


def _check_file(path: str, info: os.stat_result) -> Skipped | None:
    if not stat.S_ISREG(info.st_mode):
        return Skipped(path, "not-a-file", "not a regular file")
    if info.st_size == 0:
        return Skipped(path, "zero-byte", "empty file")
    return None


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes come back from the OS as lone surrogates
        return False
    return True


def _first_folder(relative: str) -> str | None:
    parts = Path(relative).parts
    return parts[0] if len(parts) > 1 else None


def scan_folder(root: str | Path, *, progress: bool = False, exclude: str | Path | None = None) -> Scan:
    """Walk ``root`` recursively (following symlinks, each real folder once) for image files; the folder
    ``exclude`` (the index being built, when it lies inside the gallery) is not walked. Links to folders are
    followed after every real folder: a folder reached both ways keeps its own path and category, and the link
    is the duplicate."""
    root_path = Path(os.path.abspath(Path(root).expanduser()))  # "a/../a" must name the same photos as "a"
    if not root_path.is_dir():
        raise BuildError(f"Gallery folder {root_path} does not exist or is not a folder.")
    real_root = Path(os.path.realpath(root_path))
    photos: list[SourcePhoto] = []
    skipped: list[Skipped] = []
    seen_dirs: set[tuple[int, int]] = set()
    if exclude is not None and os.path.isdir(exclude):
        excluded = os.stat(exclude)
        seen_dirs.add((excluded.st_dev, excluded.st_ino))
    # Counts photos found (not folder entries), the folders walked beside: "scanning: 651 photos [..., 12 folders]".
    bar = tqdm(desc="scanning", unit=" photos", disable=not progress)
    folders = 0

    def enter(folder: str, ancestors: frozenset[tuple[int, int]]) -> tuple | None:
        """(folder, its entries, ancestors including itself), or None when it is skipped."""
        try:
            info = os.stat(folder)
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as error:
            skipped.append(_stat_problem(folder, error))
            return None
        key = (info.st_dev, info.st_ino)
        if key in ancestors:
            skipped.append(Skipped(folder, "symlink-loop", "folder link back to one of its parents"))
            return None
        if key in seen_dirs:
            if exclude is None or not os.path.samefile(folder, exclude):
                skipped.append(Skipped(folder, "duplicate-folder", "already scanned through another path"))
            return None
        seen_dirs.add(key)
        nonlocal folders
        folders += 1
        bar.set_postfix_str(f"{folders} folders", refresh=False)
        return folder, iter(entries), ancestors | {key}

    # Depth-first in name order with an explicit stack: any nesting depth, no recursion limit.
    stack = [frame for frame in [enter(str(root_path), frozenset())] if frame]
    links: collections.deque[tuple[str, frozenset[tuple[int, int]]]] = collections.deque()  # to folders, for later
    while stack or links:
        if not stack:
            stack = [frame for frame in [enter(*links.popleft())] if frame]
            continue
        folder, entries, ancestors = stack[-1]
        entry = next(entries, None)
        if entry is None:
            stack.pop()
            continue
        if entry.name.startswith("."):
            continue  # hidden files and folders (.DS_Store, .git, ...) are not photos
        path = os.path.join(folder, entry.name)
        if not _is_utf8(entry.name):  # such a path cannot be stored, printed or served
            shown = path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            skipped.append(Skipped(shown, "bad-file-name", "the name is not valid UTF-8; rename it"))
            continue
        try:
            entry_info = os.stat(path)  # follows symlinks
        except OSError as error:
            skipped.append(_stat_problem(path, error))
            continue
        if entry.is_symlink() and not Path(os.path.realpath(path)).is_relative_to(real_root):
            # The service serves files only from inside the gallery, so a photo it could never show
            # is not indexed (a link to a folder outside skips that whole folder).
            skipped.append(Skipped(path, "outside-gallery", f"links to {os.path.realpath(path)}, outside the gallery"))
            continue
        if stat.S_ISDIR(entry_info.st_mode):
            if entry.is_symlink():
                links.append((path, ancestors))
                continue
            frame = enter(path, ancestors)
            if frame:
                stack.append(frame)
            continue
        if os.path.splitext(entry.name)[1].lower() not in IMAGE_EXTENSIONS:
            skipped.append(Skipped(path, "unsupported-type", f"extension {os.path.splitext(entry.name)[1]!r}"))
            continue
        problem = _check_file(path, entry_info)
        if problem:
            skipped.append(problem)
            continue
        relative = os.path.relpath(path, root_path)
        ctime_ns = entry_info.st_ctime_ns
        if entry.is_symlink():  # a link pointed at another file of the same size and mtime is a change too
            with contextlib.suppress(OSError):  # the link removed since: its target's times, as before
                ctime_ns = max(ctime_ns, entry.stat(follow_symlinks=False).st_ctime_ns)
        photos.append(SourcePhoto(path, _first_folder(relative), entry_info.st_size, entry_info.st_mtime_ns,
                                  ctime_ns=ctime_ns))
        bar.update(1)

    bar.close()
    return Scan(photos, skipped, str(root_path), f"folder:{root_path}")


def _manifest_rows(path: Path) -> Iterator[tuple[int, dict | None, str]]:
    """(line number, row or None, error) for each row of a CSV or JSONL manifest."""
    suffix = path.suffix.lower()
    with open(path, newline="", encoding="utf-8-sig") as handle:
        if suffix == ".csv":
            # csv's default limit (131,072 characters) refused the whole manifest over one long cell; a row whose
            # fields are too large to keep is skipped alone, as in JSONL (_unstorable_row)
            csv.field_size_limit(max(csv.field_size_limit(), MAX_CSV_FIELD_CHARS))
            reader = csv.DictReader(handle)
            if not reader.fieldnames or "path" not in reader.fieldnames:
                raise BuildError(f"Manifest {path} has no 'path' column (columns: {reader.fieldnames}).")
            for row in reader:
                clean = {k: v for k, v in row.items() if k is not None and v not in (None, "")}
                yield reader.line_num, clean, ""
        elif suffix in (".jsonl", ".ndjson"):
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as error:
                    yield number, None, f"not JSON: {error}"
                    continue
                if not isinstance(row, dict):
                    yield number, None, "not a JSON object"
                    continue
                yield number, {k: v for k, v in row.items() if v is not None}, ""
        else:
            raise BuildError(f"Manifest {path} must be .csv or .jsonl/.ndjson (got {suffix or 'no extension'}).")


def _parse_id(value: object) -> int:
    if isinstance(value, bool):
        raise ValueError("a boolean is not an id")
    number = int(value) if isinstance(value, int) else int(str(value).strip())
    if not 0 <= number <= MAX_ID:
        raise ValueError(f"id {number} is outside 0..2^52-1")
    return number


def _unstorable_row(category: str | None, metadata: dict) -> str | None:
    """Why a manifest row's category or other fields cannot be kept (too large, not UTF-8), or None."""
    if category is not None and len(category.encode("utf-8", "surrogatepass")) > MAX_CATEGORY_BYTES:
        return f"the category is longer than {MAX_CATEGORY_BYTES:,} bytes"
    if category is not None and not _is_utf8(category):  # a lone surrogate ("\ud800" in JSON): no store holds it
        return "the category is not valid UTF-8"
    if not _is_utf8(json.dumps(metadata, ensure_ascii=False)):
        return "its other fields are not valid UTF-8"
    size = len(json.dumps(metadata, sort_keys=True))
    if size > MAX_METADATA_CHARS:
        return f"its other fields are {size:,} characters as JSON (at most {MAX_METADATA_CHARS:,})"
    return None


def read_manifest_file(manifest: str | Path) -> Scan:
    """Read a manifest: ``path`` (absolute, or relative to the manifest's folder), optional ``id``,
    ``category`` (default: the photo's folder name) and any other fields (kept as the photo's metadata)."""
    manifest_path = Path(manifest).expanduser().absolute()
    if not manifest_path.is_file():
        raise BuildError(f"Manifest {manifest_path} does not exist.")
    base = manifest_path.parent
    photos: list[SourcePhoto] = []
    skipped: list[Skipped] = []
    seen_paths: set[str] = set()
    seen_ids: set[int] = set()
    try:
        rows = list(_manifest_rows(manifest_path))
    except (csv.Error, UnicodeDecodeError) as error:
        raise BuildError(f"Manifest {manifest_path} cannot be read (it must be UTF-8 CSV or JSONL): {error}") from None
    for line, row, error in rows:
        where = f"{manifest_path}:{line}"
        if row is None:
            skipped.append(Skipped(where, "bad-manifest-row", error))
            continue
        raw_path = row.get("path")
        if not isinstance(raw_path, str) or not raw_path.strip():
            skipped.append(Skipped(where, "bad-manifest-row", "no 'path'"))
            continue
        relative = raw_path.strip()
        if not _is_utf8(relative):
            skipped.append(Skipped(where, "bad-manifest-row", "the path is not valid UTF-8"))
            continue
        path = os.path.abspath(os.path.join(base, os.path.expanduser(relative)))
        photo_id = None
        if "id" in row:
            try:
                photo_id = _parse_id(row["id"])
            except (TypeError, ValueError) as bad:
                skipped.append(Skipped(path, "bad-manifest-row", f"line {line}: bad id {row['id']!r} ({bad})"))
                continue
            if photo_id in seen_ids:
                skipped.append(Skipped(path, "duplicate-id", f"line {line}: id {photo_id} is listed twice"))
                continue
        if path in seen_paths:
            skipped.append(Skipped(path, "duplicate-path", f"line {line}: listed twice"))
            continue
        try:
            info = os.stat(path)
        except OSError as problem:
            skipped.append(_stat_problem(path, problem))
            continue
        except ValueError as bad:  # e.g. a NUL byte in the path
            skipped.append(Skipped(where, "bad-manifest-row", f"bad path {relative!r} ({bad})"))
            continue
        problem = _check_file(path, info)
        if problem:
            skipped.append(problem)
            continue
        category = row.get("category")
        category = str(category) if category is not None else os.path.basename(os.path.dirname(path))
        category = category if category.strip() else None  # "" or spaces: no category (as stores read it back)
        metadata = {k: v for k, v in row.items() if k not in MANIFEST_FIELDS}
        unstorable = _unstorable_row(category, metadata)
        if unstorable:
            skipped.append(Skipped(path, "bad-manifest-row", f"line {line}: {unstorable}"))
            continue
        seen_paths.add(path)
        if photo_id is not None:
            seen_ids.add(photo_id)
        photos.append(SourcePhoto(path, category, info.st_size, info.st_mtime_ns, photo_id, metadata, info.st_ctime_ns))
    return Scan(photos, skipped, None, f"manifest:{manifest_path}")
