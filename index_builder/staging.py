"""Vectors stream to disk as they are embedded, so a killed build resumes where it stopped.

``staging/`` holds ``vectors.f32`` (raw float32 rows, appended) and ``entries.jsonl`` (one line
per row: which file, at which size/mtime, with which content hash), plus ``failures.jsonl`` for
files that could not be decoded. Rows are written before their entry line, so after a kill at
any byte the consistent prefix is ``min(complete lines, complete rows)``; anything beyond is cut.
A staging folder made with another encoder (fingerprint) or dimension is discarded.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from photo_index.space import naming

from .sources import Skipped, SourcePhoto

STATE = "state.json"
ROWS = "vectors.f32"
ENTRIES = "entries.jsonl"
FAILURES = "failures.jsonl"

UNIT_TOLERANCE = 1e-3  # a staged row's norm may differ from 1 by this (float32 rounding is ~1e-7)
# (path, size, mtime_ns, ctime_ns): the file as it was when embedded. The inode change time moves on any write,
# so a same-size edit that sets the mtime back between a killed run and its resume is not taken as staged.
FileKey = tuple[str, int, int, int]
KEY_FIELDS = ("path", "size", "mtime_ns", "ctime_ns")


def file_key(photo: SourcePhoto) -> FileKey:
    return (photo.path, photo.size, photo.mtime_ns, photo.ctime_ns)


def _key_of(item: dict) -> FileKey:
    """A staged line's key (a line written before ctime_ns was recorded matches no file: it is embedded again)."""
    return tuple(item.get(field, -1) for field in KEY_FIELDS)  # type: ignore[return-value]


def _key_fields(key: FileKey) -> dict:
    return dict(zip(KEY_FIELDS, key, strict=True))


def _complete_lines(path: Path) -> tuple[list[str], int]:
    """Lines ending in a newline and the byte length they cover (a torn last line is dropped)."""
    if not path.is_file():
        return [], 0
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    return data[:end].decode("utf-8").splitlines(), end


def _unit_rows(path: Path, count: int, dim: int, chunk: int = 65536) -> np.ndarray:
    """Which of the first ``count`` rows of ``path`` are finite unit vectors (what the encoder writes)."""
    sound = np.zeros(count, dtype=bool)
    if count:
        rows = np.memmap(path, dtype=np.float32, mode="r", shape=(count, dim))
        for start in range(0, count, chunk):
            with np.errstate(invalid="ignore", over="ignore"):
                norms = np.linalg.norm(rows[start:start + chunk], axis=1)
            sound[start:start + chunk] = np.abs(norms - 1.0) < UNIT_TOLERANCE  # False for NaN and inf
        del rows
    return sound


class Staging:
    """Append-only store of embedded vectors of one (unfinished) build."""

    def __init__(self, folder: Path, fingerprint: str, dim: int, decoding: dict | None = None) -> None:
        """``decoding``: what decides whether a file decodes (known_failures.decoding_identity); the failures an
        interrupted run staged are dropped when it changed (a raised pixel limit reads a too-large file again)."""
        self.folder = folder
        self.dim = dim
        self.row_bytes = 4 * dim
        state = {"fingerprint": fingerprint, "dim": dim, "decoding": decoding}
        try:
            previous = json.loads((folder / STATE).read_text())
        except (OSError, ValueError):
            previous = None
        if not isinstance(previous, dict) or {**previous, "decoding": decoding} != state:
            shutil.rmtree(folder, ignore_errors=True)
        elif previous.get("decoding") != decoding:
            (folder / FAILURES).unlink(missing_ok=True)
        folder.mkdir(parents=True, exist_ok=True)
        with naming(folder / STATE):
            (folder / STATE).write_text(json.dumps(state))
        self.entries: dict[FileKey, tuple[int, str]] = {}  # key -> (row, sha256)
        self.failures: dict[FileKey, Skipped] = {}
        self.rows = 0
        try:
            self._recover()
        except (ValueError, KeyError, TypeError):  # damaged beyond a torn tail: start over rather than stay stuck
            shutil.rmtree(folder)
            folder.mkdir(parents=True)
            (folder / STATE).write_text(json.dumps(state))
            self.entries, self.failures, self.rows = {}, {}, 0
        self._rows = open(folder / ROWS, "ab")  # noqa: SIM115 - kept open for appends, closed in close()
        self._lines = open(folder / ENTRIES, "a", encoding="utf-8")  # noqa: SIM115
        self._failed = open(folder / FAILURES, "a", encoding="utf-8")  # noqa: SIM115

    def _recover(self) -> None:
        lines, _ = _complete_lines(self.folder / ENTRIES)
        rows_path = self.folder / ROWS
        n_rows = rows_path.stat().st_size // self.row_bytes if rows_path.exists() else 0
        keep = min(len(lines), n_rows)
        sound = _unit_rows(rows_path, keep, self.dim)
        self.rows = keep  # rows in the file, those of no entry included (line i of entries.jsonl is row i)
        for row, line in enumerate(lines[:keep]):
            entry = json.loads(line)
            if sound[row]:  # a damaged row (NaN, not unit length) is embedded again rather than published
                self.entries[_key_of(entry)] = (row, entry["sha256"])
        # Cut torn tails so that appends continue from a consistent point.
        with open(rows_path, "ab") as handle:
            handle.truncate(keep * self.row_bytes)
        (self.folder / ENTRIES).write_text("".join(line + "\n" for line in lines[:keep]), encoding="utf-8")
        failure_lines, failure_end = _complete_lines(self.folder / FAILURES)
        for line in failure_lines:
            item = json.loads(line)
            self.failures[_key_of(item)] = Skipped(
                item["path"], item["reason"], item["detail"])
        if (self.folder / FAILURES).exists():
            with open(self.folder / FAILURES, "ab") as handle:
                handle.truncate(failure_end)

    @property
    def count(self) -> int:
        return len(self.entries)

    def append(self, keys: list[FileKey], hashes: list[str], vectors: np.ndarray) -> None:
        """Add a batch of embedded files (rows first, then their entry lines)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        assert vectors.shape == (len(keys), self.dim)
        start = self.rows
        with naming(self.folder / ROWS):
            self._rows.write(vectors.tobytes())
            self._rows.flush()
        text = "".join(json.dumps({**_key_fields(k), "sha256": h}) + "\n"
                       for k, h in zip(keys, hashes, strict=True))
        with naming(self.folder / ENTRIES):
            self._lines.write(text)
            self._lines.flush()
        for offset, (key, sha) in enumerate(zip(keys, hashes, strict=True)):
            self.entries[key] = (start + offset, sha)
        self.rows += len(keys)

    def append_failure(self, key: FileKey, skipped: Skipped) -> None:
        self._failed.write(json.dumps({**_key_fields(key),
                                       "reason": skipped.reason, "detail": skipped.detail}) + "\n")
        self._failed.flush()
        self.failures[key] = skipped

    def keep_failures(self, keep: Callable[[Skipped], bool]) -> None:
        """Forget the staged failures ``keep`` rejects (their files are read again; their lines stay on disk)."""
        self.failures = {key: skipped for key, skipped in self.failures.items() if keep(skipped)}

    def recall(self, failures: dict[FileKey, Skipped]) -> None:
        """Take the failures an earlier build remembered (index_builder.known_failures) as this build's: those
        files are not read again. Not written to staging."""
        self.failures.update({key: skipped for key, skipped in failures.items()
                              if key not in self.failures and key not in self.entries})

    def vectors(self) -> np.ndarray:
        """All staged rows as a read-only memory map ``[rows, dim]`` (``entries`` say which row is whose)."""
        with naming(self.folder / ROWS):
            self._rows.flush()
            os.fsync(self._rows.fileno())
        if self.rows == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.memmap(self.folder / ROWS, dtype=np.float32, mode="r", shape=(self.rows, self.dim))

    def close(self) -> None:
        """Close every file, even when one cannot flush (a full disk): that error is raised after."""
        with contextlib.ExitStack() as handles:
            for handle in (self._rows, self._lines, self._failed):
                handles.callback(handle.close)

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        """The files are closed whatever happens; a failing build's own error is the one reported (on a full disk
        the close's flush fails too)."""
        if kind is None:
            self.close()
            return
        with contextlib.suppress(OSError):
            self.close()

    def discard(self) -> None:
        self.close()
        shutil.rmtree(self.folder, ignore_errors=True)
