"""Where an index is, as one typed, validated object: a folder (FAISS + SQLite) or a Milvus alias.

Every entry point (the builder's CLI, the service's settings) turns its flags into a :class:`Location` with
:func:`locate`; the checks happen here, once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from .errors import BuildError

DEFAULT_MILVUS_TIMEOUT_S = 10.0  # the longest wait for one Milvus call, everywhere (CLI, service, library)
# Writes and reads are Strong by default: a search right after a build sees the whole build. Searches wait for the
# server's time tick for that (≈ 200 ms on a standalone 2.3, docs/benchmarks.md); "Bounded" answers at once but may
# miss rows written in the last few seconds (Milvus's graceful time, 5 s by default).
DEFAULT_CONSISTENCY = "Strong"
CONSISTENCIES = ("Strong", "Bounded")
MILVUS_SCHEMES = ("milvus", "http", "https")  # a location string with one of these is a Milvus server
VERSION_SEPARATOR = "__v"  # a Milvus version is the collection ``<alias>__v<time>``
MILVUS_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,180}$")


@dataclass(frozen=True)
class FolderLocation:
    """An index folder of versions (FAISS + SQLite)."""

    path: Path
    engine: ClassVar[str] = "faiss"
    max_depth: ClassVar[int | None] = None  # FAISS ranks as deep as asked

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))


@dataclass(frozen=True)
class MilvusLocation:
    """A Milvus server and the alias the index is served under."""

    uri: str
    collection: str
    token: str = field(default="", repr=False)  # a secret: never in a log line or a traceback's locals
    timeout_s: float = DEFAULT_MILVUS_TIMEOUT_S
    consistency: str = DEFAULT_CONSISTENCY
    engine: ClassVar[str] = "milvus"
    max_depth: ClassVar[int | None] = 16_384  # Milvus's largest search limit (topk): offset + k at most this

    def __post_init__(self) -> None:
        if not self.uri or not isinstance(self.uri, str):
            raise BuildError("A Milvus URI is needed (--milvus-uri or SBIR_MILVUS_URI, e.g. http://127.0.0.1:19530).")
        check_collection(self.collection)
        if not self.timeout_s > 0:
            raise BuildError(f"The Milvus timeout must be > 0 s, got {self.timeout_s}.")
        if self.consistency not in CONSISTENCIES:
            raise BuildError(f"Milvus consistency must be one of {', '.join(CONSISTENCIES)}, not {self.consistency!r}.")


Location = FolderLocation | MilvusLocation


def check_collection(collection: str | None) -> str:
    if not collection or not MILVUS_NAME.match(collection) or VERSION_SEPARATOR in collection:
        raise BuildError(f"--collection {collection!r} is not a valid Milvus name (letters, digits and underscores, "
                         f"starting with a letter or underscore, without {VERSION_SEPARATOR!r}).")
    return collection


def is_milvus_uri(where: str | Path) -> bool:
    return isinstance(where, str) and where.split("://", 1)[0].lower() in MILVUS_SCHEMES and "://" in where
