"""Index builder: embeds a photo gallery into a versioned FAISS index (or a Milvus collection), and reads it back.

``python -m index_builder build|info|verify``; the app uses :class:`IndexReader`.
"""

from .errors import BuildError, EngineUnavailableError, FingerprintMismatchError, IndexCorruptError, IndexNotFoundError
from .layout import current_version
from .metadata import PhotoRecord
from .reader import IndexReader

__all__ = [
    "BuildError",
    "EngineUnavailableError",
    "FingerprintMismatchError",
    "IndexCorruptError",
    "IndexNotFoundError",
    "IndexReader",
    "PhotoRecord",
    "current_version",
]
