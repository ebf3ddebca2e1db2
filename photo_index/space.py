"""Disk space: reserve it before a memory-mapped write, and say clearly when it runs out.

A write through a memory map to a file whose blocks are not allocated faults with SIGBUS when the disk is
full (the process dies with exit 135, no message); :func:`reserve` allocates the blocks first
(``posix_fallocate``), so the same condition is an ``OSError(ENOSPC)`` at a known place instead. Libraries that
write on their own (FAISS, SQLite) report a full disk in their own words; :func:`disk_full_from` tells them
apart so every stage ends in one :class:`~photo_index.errors.DiskFullError`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .errors import DiskFullError

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
MIB = 1024 * 1024


def reserve(handle_or_fd, nbytes: int) -> None:
    """Allocate ``nbytes`` of the open file now (``OSError(ENOSPC)`` when they are not there)."""
    fd = handle_or_fd if isinstance(handle_or_fd, int) else handle_or_fd.fileno()
    if nbytes > 0:
        try:
            os.posix_fallocate(fd, 0, nbytes)
        except OSError as error:
            if error.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # a filesystem without it: written as before
                raise


def reserved_memmap(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """A new float32 ``.npy`` file of ``shape``, its blocks allocated before it is mapped (read-write): a full disk
    is an ``OSError(ENOSPC)`` naming ``path`` here, never a SIGBUS in the middle of a copy into the map."""
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False, "shape": shape}
    with naming(path), open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, header)
        offset = handle.tell()
        reserve(handle, offset + shape[0] * shape[1] * 4)
    return np.load(path, mmap_mode="r+")


def is_disk_full(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in NO_SPACE


def no_space(path: str | Path, detail: str = "") -> OSError:
    """An ``OSError(ENOSPC)`` for ``path`` (for libraries that report a full disk in other words)."""
    return OSError(errno.ENOSPC, f"No space left on device{': ' + detail if detail else ''}", str(path))


def free_bytes(path: str | Path) -> int | None:
    """Free bytes on the filesystem of ``path`` (or of its nearest existing parent)."""
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free
    except OSError:
        return None


def disk_full(error: OSError, fallback: str | Path, needed: int) -> DiskFullError:
    """The one-line error of a full disk: the path, the space needed and free, what to do."""
    path = error.filename or fallback
    free = free_bytes(path)
    has = f", {_size(free)} free" if free is not None else ""
    return DiskFullError(f"No space left on device writing {path}: the build needs about {_size(needed)} free "
                         f"there{has}. Free some space (or build into a larger disk) and run it again; the live "
                         "version is untouched.")


def _size(nbytes: int) -> str:
    return f"{nbytes / MIB:,.1f} MiB" if nbytes >= MIB else f"{nbytes:,} bytes"


@contextlib.contextmanager
def naming(path: str | Path) -> Iterator[None]:
    """Errors of writes inside the block name ``path`` (a buffered write's error names no file)."""
    try:
        yield
    except OSError as error:
        if error.filename is None:
            error.filename = str(path)
        raise
