"""Atomic file replacement: readers see the old content or the new one, never a mix (index files, query samples)."""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from .space import naming

# write_atomic's temporary files: ".<name>.<8 hex>.tmp" beside the file it replaces
TEMP_NAME = re.compile(r"\..+\.[0-9a-f]{8}\.tmp")
DEAD_AFTER_S = 3600.0  # a write takes seconds at most: a temporary file older than this was left by a killed writer


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, content: str | bytes | Callable[[IO[bytes]], None]) -> None:
    """Write ``content`` (text, bytes, or a function writing to a binary handle) to ``path``: aside, flushed to
    disk, then renamed over ``path``; a failure leaves ``path`` as it was and no temporary file behind."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with naming(path), open(tmp, "wb") as handle:
            if callable(content):
                content(handle)
            else:
                handle.write(content.encode("utf-8") if isinstance(content, str) else content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def write_json(path: Path, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def dead_temp_files(folder: Path, older_than_s: float = DEAD_AFTER_S) -> list[Path]:
    """write_atomic's temporary files in ``folder`` that a killed writer left (a kill between the write and the
    rename): old enough that no live writer can still be renaming them (the service writes beside the index's
    files too, without the build lock)."""
    limit = time.time() - older_than_s
    dead = []
    for child in folder.iterdir() if folder.is_dir() else ():
        try:
            if TEMP_NAME.fullmatch(child.name) and child.is_file() and child.stat().st_mtime < limit:
                dead.append(child)
        except OSError:
            continue
    return dead
