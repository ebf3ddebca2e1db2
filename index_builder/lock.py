"""One build at a time per index folder: the POSIX record lock ``INDEX_DIR/.lock``."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from photo_index.errors import BuildError, IndexNotFoundError

LOCK_FILE = ".lock"


@contextlib.contextmanager
def build_lock(index_dir: str | Path, *, create: bool = True) -> Iterator[None]:
    """One build at a time per index directory, released by the kernel when the building process dies.

    A POSIX record lock (``lockf``): unlike ``flock`` it belongs to the process, so DataLoader workers
    forked while it is held do not hold it too, and a SIGKILLed build frees it even if one of them
    lingers. Such a lock is also dropped when the process closes *any* descriptor of the file, and it
    never conflicts within one process: a registry of the folders this process is building into
    refuses a second build there without opening the file. ``create=False`` (commands that change an existing
    index): a folder that does not exist is an :class:`IndexNotFoundError`, not a new empty folder."""
    root = Path(index_dir).expanduser().absolute()
    if not create and not root.is_dir():
        raise IndexNotFoundError(f"No index in {root} (no such folder; run `index_builder build`).")
    try:
        root.mkdir(parents=True, exist_ok=True)
        folder = os.stat(root)
    except OSError as error:
        raise _unwritable(root, error) from error
    key = (folder.st_dev, folder.st_ino)
    with _HELD_GUARD:
        if key in _HELD:
            raise BuildError(f"Another build is running on {root} (in this process).")
        _HELD.add(key)
    try:
        try:
            handle = open(root / LOCK_FILE, "a+")  # noqa: SIM115 - closed by the with below
        except OSError as error:
            raise _unwritable(root, error) from error
        with handle:
            try:
                fcntl.lockf(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                if error.errno not in (errno.EACCES, errno.EAGAIN):
                    raise
                raise BuildError(f"Another build is running on {root} (lock {root / LOCK_FILE}).") from error
            try:
                yield
            finally:
                fcntl.lockf(handle.fileno(), fcntl.LOCK_UN)
    finally:
        with _HELD_GUARD:
            _HELD.discard(key)


def _unwritable(root: Path, error: OSError) -> BuildError:
    why = "it is not a folder" if root.exists() and not root.is_dir() else error.strerror or error
    return BuildError(f"Cannot write the index folder {root}: {why} "
                      "(--out must be a writable folder, or a path where one can be created).")


# (st_dev, st_ino) of the index folders this process holds the build lock of (see build_lock).
_HELD: set[tuple[int, int]] = set()
_HELD_GUARD = threading.Lock()
