"""Index builder: embeds a photo gallery into a versioned FAISS index, and reads it back.

``python -m index_builder build|info|verify``; the app uses :class:`IndexReader`.
"""

from .errors import BuildError, FingerprintMismatchError, IndexCorruptError, IndexNotFoundError
from .layout import current_version
from .metadata import PhotoRecord
from .reader import IndexReader

__all__ = [
    "BuildError",
    "FingerprintMismatchError",
    "IndexCorruptError",
    "IndexNotFoundError",
    "IndexReader",
    "PhotoRecord",
    "current_version",
]
