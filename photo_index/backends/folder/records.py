"""Photo records in SQLite (``metadata.sqlite``): one row per indexed photo, keyed by its stable int64 id."""

from __future__ import annotations

import errno
import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from ...api import PhotoRecord
from ...errors import IndexCorruptError
from ...space import no_space

SCHEMA = """
CREATE TABLE photos (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    category TEXT,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    added_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    metadata TEXT NOT NULL,
    width INTEGER,
    height INTEGER,
    taken_at TEXT
);
CREATE INDEX photos_category ON photos (category);
"""
BASE_COLUMNS = ("id", "path", "category", "sha256", "size", "mtime_ns", "added_at", "updated_at", "metadata")
DETAIL_COLUMNS = ("width", "height", "taken_at")  # added later: a version written before has none of them
COLUMNS = ", ".join(BASE_COLUMNS + DETAIL_COLUMNS)
_MARKS = ",".join("?" * (len(BASE_COLUMNS) + len(DETAIL_COLUMNS)))


def _row_to_record(row: tuple) -> PhotoRecord:
    photo_id, path, category, sha256, size, mtime_ns, added_at, updated_at, metadata, width, height, taken_at = row
    return PhotoRecord(
        id=int(photo_id), path=path, category=category, sha256=sha256, size=int(size), added_at=added_at,
        metadata=json.loads(metadata), updated_at=updated_at, mtime_ns=int(mtime_ns),
        width=width, height=height, taken_at=taken_at,
    )


# SQLite's primary result codes for the disk (sqlite3.Error.sqlite_errorcode & 0xFF)
SQLITE_IOERR, SQLITE_FULL, SQLITE_CANTOPEN = 10, 13, 14


def write_metadata(path: Path, records: Iterable[PhotoRecord], batch: int = 10_000) -> int:
    """Create ``path`` (must not exist) holding ``records``; returns the row count."""
    conn = sqlite3.connect(path)
    count = 0
    try:
        conn.executescript("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;" + SCHEMA)
        rows = []
        for record in records:
            rows.append((record.id, record.path, record.category, record.sha256, record.size, record.mtime_ns,
                         record.added_at, record.updated_at, json.dumps(record.metadata, sort_keys=True),
                         *record.details))
            if len(rows) >= batch:
                conn.executemany(f"INSERT INTO photos ({COLUMNS}) VALUES ({_MARKS})", rows)
                count += len(rows)
                rows = []
        conn.executemany(f"INSERT INTO photos ({COLUMNS}) VALUES ({_MARKS})", rows)
        count += len(rows)
        conn.commit()
    except sqlite3.Error as error:
        code = getattr(error, "sqlite_errorcode", 0) & 0xFF  # the primary result code
        if code == SQLITE_FULL or "full" in str(error):  # the disk, in SQLite's words
            raise no_space(path, str(error)) from None
        if code in (SQLITE_IOERR, SQLITE_CANTOPEN):
            # SQLite names only ENOSPC as full: a quota or a file-size limit is a "disk I/O error", which callers
            # must see as the OSError it is (the build stops with one line; the live version is untouched)
            raise OSError(errno.EIO, f"SQLite could not write the metadata ({error}; a disk quota or a file-size "
                          "limit?)", str(path)) from None
        raise  # a constraint or misuse: a bug, not the disk
    finally:
        conn.close()
    return count


class MetadataStore:
    """Read-only access to a version's metadata; one connection guarded by a lock (thread-safe)."""

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise IndexCorruptError(f"Metadata file {path} is missing.")
        try:
            self._conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True, check_same_thread=False)
            self._conn.execute("SELECT count(*) FROM photos").fetchone()
            present = {row[1] for row in self._conn.execute("PRAGMA table_info(photos)")}
        except sqlite3.Error as error:
            raise IndexCorruptError(f"Metadata file {path} is unreadable: {error}") from error
        self._lock = threading.Lock()
        # An older version lacks the detail columns: they read as NULL (None) there.
        self._columns = ", ".join([*BASE_COLUMNS, *(c if c in present else f"NULL AS {c}" for c in DETAIL_COLUMNS)])

    def _query(self, sql: str, params: Sequence = ()) -> list[tuple]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def get_many(self, ids: Sequence[int]) -> list[PhotoRecord | None]:
        """Records for ``ids`` in order; None for unknown ids (e.g. FAISS's -1 padding)."""
        wanted = sorted({int(i) for i in ids if int(i) >= 0})
        found: dict[int, PhotoRecord] = {}
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for row in self._query(f"SELECT {self._columns} FROM photos WHERE id IN ({marks})", chunk):
                record = _row_to_record(row)
                found[record.id] = record
        return [found.get(int(i)) for i in ids]

    def categories(self) -> list[str]:
        return [row[0] for row in self._query("SELECT DISTINCT category FROM photos WHERE category IS NOT NULL "
                                              "ORDER BY category")]

    def ids_of_category(self, category: str) -> list[int]:
        return [row[0] for row in self._query("SELECT id FROM photos WHERE category = ? ORDER BY id", (category,))]

    def count(self) -> int:
        return int(self._query("SELECT count(*) FROM photos")[0][0])

    def ids(self) -> list[int]:
        return [row[0] for row in self._query("SELECT id FROM photos ORDER BY id")]

    def iter_records(self) -> Iterator[PhotoRecord]:
        for row in self._query(f"SELECT {self._columns} FROM photos ORDER BY id"):
            yield _row_to_record(row)

    def integrity_errors(self) -> list[str]:
        rows = self._query("PRAGMA integrity_check")
        return [row[0] for row in rows if row[0] != "ok"]

    def close(self) -> None:
        with self._lock:
            self._conn.close()
