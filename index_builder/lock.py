"""One build at a time per index folder: :func:`encoder.folder_lock.folder_lock` on ``INDEX_DIR``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from encoder.folder_lock import LOCK_FILE, FolderBusyError, folder_lock
from photo_index.errors import BuildError, IndexNotFoundError

__all__ = ["LOCK_FILE", "build_lock"]


@contextlib.contextmanager
def build_lock(index_dir: str | Path, *, create: bool = True) -> Iterator[None]:
    """One build at a time per index directory, released by the kernel when the building process dies.

    ``create=False`` (commands that change an existing index): a folder that does not exist is an
    :class:`IndexNotFoundError`, not a new empty folder."""
    root = Path(index_dir).expanduser().absolute()
    if not create and not root.is_dir():
        raise IndexNotFoundError(f"No index in {root} (no such folder; run `index_builder build`).")
    with contextlib.ExitStack() as held:
        try:
            root.mkdir(parents=True, exist_ok=True)
            held.enter_context(folder_lock(root))
        except FolderBusyError as error:
            raise BuildError(f"Another build is running on {root} ({error.holder}).") from error
        except OSError as error:
            raise _unwritable(root, error) from error
        yield


def _unwritable(root: Path, error: OSError) -> BuildError:
    why = "it is not a folder" if root.exists() and not root.is_dir() else error.strerror or error
    return BuildError(f"Cannot write the index folder {root}: {why} "
                      "(--out must be a writable folder, or a path where one can be created).")
