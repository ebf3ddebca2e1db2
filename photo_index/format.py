"""The folder format of an index: versions, the ``current`` pointer, manifests (staging and the lock: the builder).

```
INDEX_DIR/
  current                 text file naming the live version; replaced atomically (write + rename)
  versions/<name>/        one complete version (manifest.json written last, then renamed into place;
                          files may be hard links shared with the version it was tuned from)
  versions/<name>.partial a version being written; never read, removed by the next build
  staging/                vectors embedded by an unfinished build (resume after a kill)
  .lock                   POSIX record lock (lockf) held by the running build
```
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
import shutil
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .atomic import fsync_dir, write_atomic
from .errors import IndexCorruptError, IndexNotFoundError

FORMAT = "sbir-index/1"
CURRENT = "current"
POINTER_MAX_BYTES = 4096  # ``current`` holds one version name and a newline
MAX_VERSION_NAME = 200  # characters: a folder name every file system takes (ours are ~30)
VERSIONS = "versions"
STAGING = "staging"
PARTIAL_SUFFIX = ".partial"
MANIFEST = "manifest.json"
VECTORS = "vectors.npy"  # float32 [N, D], rows in ascending id order
IDS = "ids.npy"  # int64 [N], ascending
METADATA = "metadata.sqlite"
REPORT = "report.json"
CALIBRATION_QUERIES = "calibration_queries.npy"  # optional: real query vectors the search parameters are tuned on


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def new_version_name() -> str:
    """Sortable by creation time, unique across processes."""
    return datetime.now(UTC).strftime("v%Y%m%dT%H%M%S%fZ") + "-" + secrets.token_hex(3)


def current_version(index_dir: str | Path) -> str | None:
    """The name of the live version (a cheap read, fine for polling); None when there is none, or when the
    pointer is damaged (the builder then publishes a fresh version, which repairs it)."""
    try:
        return read_pointer(index_dir)
    except IndexCorruptError:
        return None


def read_pointer(index_dir: str | Path) -> str | None:
    """The version ``current`` names; None when there is no pointer; :class:`IndexCorruptError` when it cannot be
    read, is empty (it is written whole or not at all, by a rename) or holds no plain version name (a path, absolute
    or relative, is never followed)."""
    path = Path(index_dir) / CURRENT
    try:
        name = _read_small_file(path).decode("utf-8").strip()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None  # not an index folder (e.g. a gallery with a "current" sub-folder)
    except (OSError, UnicodeDecodeError) as error:
        raise IndexCorruptError(f"The index pointer {path} cannot be read ({type(error).__name__}: "
                                f"{getattr(error, 'strerror', None) or error}).") from None
    if not name:
        raise IndexCorruptError(f"The index pointer {path} is empty.")
    if len(name) > MAX_VERSION_NAME or not is_version_name(name):
        raise IndexCorruptError(f"The index pointer {path} holds {name[:80]!r}, which is not a version name "
                                "(a path is never followed).")
    return name


def _read_small_file(path: Path) -> bytes:
    """The bytes of a regular file of at most POINTER_MAX_BYTES: a FIFO is not waited on (O_NONBLOCK), a device
    such as /dev/zero is not read without end; either is an OSError."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, "a folder")
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, "not a regular file")
        data = os.read(fd, POINTER_MAX_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > POINTER_MAX_BYTES:
        raise OSError(errno.EFBIG, f"larger than {POINTER_MAX_BYTES} bytes")
    return data


def is_version_name(name: str) -> bool:
    """A plain folder name under versions/: no path, no dot-folder, no control characters."""
    return (name not in (".", "..") and not name.startswith(".") and "/" not in name and "\\" not in name
            and name.isprintable())


class IndexLayout:
    """Paths and atomic operations on one index directory."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().absolute()

    @property
    def versions_dir(self) -> Path:
        return self.root / VERSIONS

    @property
    def staging_dir(self) -> Path:
        return self.root / STAGING

    def version_dir(self, name: str) -> Path:
        if not is_version_name(name):
            raise IndexNotFoundError(f"{name[:80]!r} is not a version name of {self.root}.")
        return self.versions_dir / name

    def current(self) -> str | None:
        return current_version(self.root)

    def current_dir(self) -> Path:
        """The live version's folder, or :class:`IndexNotFoundError`."""
        name = self.current()
        if name is None:
            raise IndexNotFoundError(f"No index in {self.root}: no '{CURRENT}' version (run `index_builder build`).")
        folder = self.version_dir(name)
        if not (folder / MANIFEST).is_file():
            raise IndexNotFoundError(missing_version(self.root, name))
        return folder

    def versions(self) -> list[str]:
        """Complete versions, oldest first."""
        if not self.versions_dir.is_dir():
            return []
        return sorted(p.name for p in self.versions_dir.iterdir() if p.is_dir() and (p / MANIFEST).is_file()
                      and not p.name.endswith(PARTIAL_SUFFIX))

    def start_version(self) -> tuple[str, Path]:
        """A fresh ``<name>.partial`` folder to write a version into."""
        name = new_version_name()
        folder = self.versions_dir / f"{name}{PARTIAL_SUFFIX}"
        folder.mkdir(parents=True)
        return name, folder

    def publish(self, name: str, partial: Path) -> Path:
        """Rename a finished partial folder into place, then switch ``current`` to it (both atomic)."""
        for child in partial.iterdir():
            if child.is_file():
                with open(child, "rb") as handle:
                    os.fsync(handle.fileno())
        final = self.version_dir(name)
        os.replace(partial, final)
        fsync_dir(self.versions_dir)
        write_atomic(self.root / CURRENT, name + "\n")
        return final

    def prune(self, keep: int) -> list[str]:
        """Delete all but the newest ``keep`` versions (never the current one) and stale partial folders."""
        removed = []
        doomed = expired(self.versions(), self.current(), keep)
        if self.versions_dir.is_dir():
            doomed += [p.name for p in self.versions_dir.iterdir() if p.name.endswith(PARTIAL_SUFFIX)]
        for name in doomed:
            shutil.rmtree(self.versions_dir / name, ignore_errors=True)
            removed.append(name)
        return removed


def expired(complete: list[str], live: str | None, keep: int) -> list[str]:
    """Of ``complete`` versions (oldest first), those beyond the newest ``keep`` (at least 1), never ``live``."""
    return [v for v in complete[: max(len(complete) - max(keep, 1), 0)] if v != live]


def missing_version(root: Path, name: str) -> str:
    """What to say when version ``name`` of ``root`` has neither a segmented manifest nor a version folder."""
    return (f"Index {root} names version {name!r}, but it is gone (neither versions/{name}.json nor "
            f"versions/{name}/{MANIFEST}); point '{CURRENT}' at a version that is there.")


def read_manifest(version_dir: Path) -> dict:
    """The version's manifest.json, checked for our format."""
    path = version_dir / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        if version_dir.parent.name == "versions" and not version_dir.exists():  # neither format's files: it is gone
            raise IndexNotFoundError(missing_version(version_dir.parent.parent, version_dir.name)) from error
        raise IndexNotFoundError(f"{version_dir} has no {MANIFEST}.") from error
    except (OSError, ValueError) as error:
        raise IndexCorruptError(f"{path} is unreadable: {error}") from error
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise IndexCorruptError(f"{path} is not an index manifest of format {FORMAT}.")
    wrong = [key for key, kind in REQUIRED.items() if not isinstance(field_of(manifest, key), kind)
             or isinstance(field_of(manifest, key), bool)] or malformed_optional(manifest)
    if wrong:
        raise IndexCorruptError(f"{path} is damaged: missing or malformed {', '.join(wrong)}.")
    return manifest


# What readers and builders take from a manifest, and its type.
REQUIRED = {"version": str, "created_at": str, "size": int, "dim": int, "encoder.fingerprint": str,
            "encoder.config": dict, "gallery": dict, "gallery.source": str, "index": dict, "index.factory": str,
            "build": dict}


def field_of(manifest: dict, dotted: str) -> Any:
    value: Any = manifest
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


# Files a version records the SHA-256 of (those up to this size: hashing them at every swap stays cheap);
# larger ones record their size only.
CHECKSUM_MAX_BYTES = 16 * 1024 * 1024
# A version's files that are no part of its photos: a build carries the query sample over (checked by load_queries)
# and `tune` replaces it; `tune` before 07 Dec 2026 recorded a stale checksum for it in one-copy versions.
NOT_PHOTO_DATA = (CALIBRATION_QUERIES,)
CHECKSUMS = "checksums"  # the manifest's section: file name -> {"bytes": n, "sha256": hex or absent}


def file_checksums(folder: Path) -> dict[str, dict]:
    """The sizes (and, for small files, SHA-256) of a version's files, for its manifest."""
    return {path.name: file_checksum(path) for path in sorted(folder.iterdir())
            if path.is_file() and path.name != MANIFEST}


def file_checksum(path: Path) -> dict[str, Any]:
    """One file's entry of a manifest's checksums: its size, and its SHA-256 when it is small."""
    entry: dict[str, Any] = {"bytes": path.stat().st_size}
    if entry["bytes"] <= CHECKSUM_MAX_BYTES:
        entry["sha256"] = _sha256(path)
    return entry


def malformed_index_section(index: dict) -> list[str]:
    """The optional fields of an ``index`` section (a version manifest's or a segment.json's) present with a type
    its readers cannot use."""
    return [f"index.{key}" for key, kind in (("search_params", dict), ("file", str))
            if key in index and not isinstance(index[key], kind)]


def malformed_optional(manifest: dict) -> list[str]:
    """Sections an older manifest may lack, present but of a type its readers cannot use (``manifest`` has passed
    the ``REQUIRED`` check)."""
    wrong = malformed_index_section(manifest["index"])
    checksums = manifest.get(CHECKSUMS, {})
    if not isinstance(checksums, dict) or not all(
            isinstance(entry, dict) and type(entry.get("bytes")) is int
            and isinstance(entry.get("sha256", ""), str) for entry in checksums.values()):
        wrong.append(CHECKSUMS)
    return wrong


def checksum_problems(folder: Path, manifest: dict, ignore: tuple[str, ...] = ()) -> list[str]:
    """The version's files that differ from what its manifest recorded (none recorded: an older version, no check),
    but those named in ``ignore``."""
    problems = []
    for name, entry in (manifest.get(CHECKSUMS) or {}).items():
        if name in ignore:
            continue
        path = folder / Path(name).name
        try:
            size = path.stat().st_size
        except OSError:
            problems.append(f"{name} is missing")
            continue
        if size != entry.get("bytes"):
            problems.append(f"{name} holds {size} bytes; the manifest recorded {entry.get('bytes')}")
        elif entry.get("sha256") and _sha256(path) != entry["sha256"]:
            problems.append(f"{name} differs from its recorded SHA-256")
    return problems


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
