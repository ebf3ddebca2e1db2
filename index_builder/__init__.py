"""The batch job: embeds a photo gallery and publishes it as a new version of a photo index
(:mod:`photo_index`: a FAISS + SQLite folder, or a Milvus collection).

``python -m index_builder build|tune|info|verify``; :func:`build_index` for in-process builds.
"""

from .builder import BuildOptions, build_index
from .errors import FingerprintMismatchError
from .report import BuildReport

__all__ = ["BuildOptions", "BuildReport", "FingerprintMismatchError", "build_index"]
