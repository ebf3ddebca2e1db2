"""One writer at a time per folder: the POSIX record lock ``FOLDER/.lock`` (index builds, training runs)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from .errors import SBIRError

LOCK_FILE = ".lock"


class FolderBusyError(SBIRError):
    """Another process (or another job of this one) holds the folder's lock; ``holder`` says which."""

    def __init__(self, folder: Path, holder: str) -> None:
        super().__init__(f"{folder} is in use ({holder})")
        self.folder, self.holder = folder, holder


@contextlib.contextmanager
def folder_lock(folder: str | Path) -> Iterator[None]:
    """Hold ``folder``'s lock (the folder must exist), released by the kernel when the holding process dies.

    A POSIX record lock (``lockf``): unlike ``flock`` it belongs to the process, so DataLoader workers
    forked while it is held do not hold it too, and a SIGKILLed holder frees it even if one of them
    lingers. Such a lock is also dropped when the process closes *any* descriptor of the file, and it
    never conflicts within one process: a registry of the folders this process holds refuses a second
    holder there without opening the file. Raises :class:`FolderBusyError` when the lock is taken and
    ``OSError`` when the lock file cannot be opened."""
    root = Path(folder).expanduser().absolute()
    stat = os.stat(root)
    key = (stat.st_dev, stat.st_ino)
    with _HELD_GUARD:
        if key in _HELD:
            raise FolderBusyError(root, "in this process")
        _HELD.add(key)
    try:
        with open(root / LOCK_FILE, "a+") as handle:
            try:
                fcntl.lockf(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                if error.errno not in (errno.EACCES, errno.EAGAIN):
                    raise
                raise FolderBusyError(root, f"lock {root / LOCK_FILE}") from error
            try:
                yield
            finally:
                fcntl.lockf(handle.fileno(), fcntl.LOCK_UN)
    finally:
        with _HELD_GUARD:
            _HELD.discard(key)


# (st_dev, st_ino) of the folders this process holds the lock of (see folder_lock).
_HELD: set[tuple[int, int]] = set()
_HELD_GUARD = threading.Lock()
