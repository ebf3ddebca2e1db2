"""Reading an index's ``.npy`` parts (ids, vectors, query samples): any damage, an empty file included (numpy raises
EOFError for one), is an :class:`IndexCorruptError` naming the file, never a bare numpy error."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import IndexCorruptError

UNREADABLE = (OSError, ValueError, EOFError)  # truncated, empty, not an .npy, or pickled objects (never loaded)


def load_array(path: Path, *, mmap: bool = False) -> np.ndarray:
    """The array in ``path`` (memory-mapped read-only with ``mmap``)."""
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except UNREADABLE as error:
        reason = str(error) or "the file is empty"
        raise IndexCorruptError(f"{path} cannot be read ({type(error).__name__}: {reason})") from error
